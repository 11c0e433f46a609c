"""Top-k with mvstore's one tie-break: score descending, ties by ascending row (or column) number.

Every ranking in the package goes through here: a searcher's final top-``k`` and a candidate generator's best
``n`` (:func:`top_k`), a sparse codec's top-``t`` terms per vector (:func:`top_k_each`), and the torch twin of
stage 1 (:func:`top_k_torch`, which must agree with :func:`top_k`: ``tests/test_rank.py``). A leaf module
(numpy only; torch is imported by the twin alone), so codecs and search both use it.

>>> top_k(np.array([7, 3, 5]), np.array([0.5, 0.9, 0.5], np.float32), 2)
(array([3, 5]), array([0.9, 0.5], dtype=float32))
>>> ids, vals = top_k_each(np.array([[0.1, 0.9, 0.5, 0.9]], np.float32), 3)
>>> ids.tolist(), vals.astype(float).round(3).tolist()
([[1, 3, 2]], [[0.9, 0.9, 0.5]])
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["top_k", "top_k_each", "top_k_torch"]


def top_k(rows: np.ndarray, scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Best ``k`` of ``rows`` by ``scores`` -> ``(rows int64, scores float32)``, best first, ties by ascending row.

    ``rows`` may come in any order (a searcher's candidates arrive best first by their stage-1 score).
    """
    rows = np.asarray(rows, np.int64)
    scores = np.asarray(scores, np.float32)
    if len(rows) > k:
        # argpartition may drop a tie at the k-th score that has a smaller row: pull every tie back in
        kth = scores[np.argpartition(-scores, k - 1)[:k]].min()
        keep = np.flatnonzero(scores >= kth)
        rows, scores = rows[keep], scores[keep]
    if len(rows) < 2 or (rows[1:] > rows[:-1]).all():
        order = np.argsort(-scores, kind="stable")[
            :k
        ]  # ascending rows: a stable sort keeps them in row order
    else:
        order = np.lexsort((rows, -scores))[:k]
    return rows[order], scores[order]


def top_k_each(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Per row of ``scores`` ``(n, m)``, its ``min(k, m)`` largest entries -> ``(columns int64, values float32)``,
    each ``(n, min(k, m))``, largest first, ties by ascending column: :func:`top_k` over each row's columns,
    vectorized for the rows without a tie at the cut (the others, rare for real-valued scores, go one by one)."""
    n, m = scores.shape
    k = min(int(k), m)
    if k < m:
        part = np.argpartition(-scores, k - 1, axis=1)[:, :k]
        kth = np.take_along_axis(scores, part, axis=1).min(1) if n else np.zeros(0, scores.dtype)
        for r in np.flatnonzero((scores >= kth[:, None]).sum(1) > k):  # a tie at the cut: the row decides
            part[r] = top_k(np.arange(m), scores[r], k)[0]
    else:
        part = np.broadcast_to(np.arange(m), (n, m)).copy()
    vals = np.take_along_axis(scores, part, axis=1)
    order = np.lexsort((part, -vals), axis=1) if n else np.zeros((0, k), np.int64)
    ids = np.take_along_axis(part, order, axis=1)
    return ids.astype(np.int64), np.take_along_axis(vals, order, axis=1).astype(np.float32)


def top_k_torch(rows: Any, scores: Any, k: int) -> Any:
    """Torch twin of :func:`top_k` for ``rows`` in ascending order (as ``torch.unique`` returns them): the
    best ``k`` rows, best first, ties by ascending row."""
    import torch

    # a stable descending sort keeps ascending-row order among equal scores
    return rows[torch.sort(scores, descending=True, stable=True).indices[:k]]
