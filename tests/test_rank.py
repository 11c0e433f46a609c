"""The one ranking rule (mvstore._rank): score descending, ties by ascending row or column."""

import numpy as np
import pytest
import torch

from mvstore._rank import top_k, top_k_each, top_k_torch


def reference(labels: np.ndarray, scores: np.ndarray, k: int) -> np.ndarray:
    """Sort everything: the definition top_k's partition must agree with."""
    return labels[np.lexsort((labels, -scores))][:k]


def test_top_k_orders_ties_by_row():
    rows, scores = top_k(np.array([9, 4, 6, 1]), np.array([1.0, 2.0, 1.0, 1.0], np.float32), 3)
    assert rows.tolist() == [4, 1, 6] and scores.tolist() == [2.0, 1.0, 1.0]


@pytest.mark.parametrize("ascending", [True, False])
def test_top_k_matches_a_full_sort(ascending):
    rng = np.random.default_rng(0)
    for _ in range(300):
        n = int(rng.integers(1, 60))
        rows = rng.choice(1000, n, replace=False)
        rows = np.sort(rows) if ascending else rows
        scores = rng.integers(0, 4, n).astype(np.float32)  # many ties, at the cut too
        k = int(rng.integers(1, n + 3))
        got, sc = top_k(rows, scores, k)
        assert got.tolist() == reference(rows, scores, k).tolist()
        assert sc.dtype == np.float32 and got.dtype == np.int64


def test_top_k_each_keeps_the_lower_column_among_ties_at_the_cut():
    # argpartition alone kept column 23 over 11 here (the old codecs.sparse.top_terms did)
    x = np.array(
        [
            [
                1,
                1,
                0,
                0,
                0,
                0,
                0,
                0,
                2,
                1,
                2,
                1,
                1,
                2,
                2,
                1,
                1,
                1,
                2,
                0,
                2,
                2,
                0,
                1,
                2,
                1,
                0,
                2,
                2,
                2,
                0,
                0,
                2,
                0,
            ]
        ],
        np.float32,
    )
    ids, vals = top_k_each(x, 18)
    assert ids[0].tolist() == reference(np.arange(x.shape[1]), x[0], 18).tolist()
    assert vals[0].tolist() == sorted(x[0].tolist(), reverse=True)[:18]


def test_top_k_each_rows_match_top_k():
    rng = np.random.default_rng(1)
    x = rng.integers(0, 3, (200, 17)).astype(np.float32)
    x[::3] += rng.random((67, 17)).astype(np.float32)  # some rows without ties
    for k in (1, 5, 17, 30):
        ids, vals = top_k_each(x, k)
        assert ids.shape == (200, min(k, 17)) and vals.dtype == np.float32
        for r in range(len(x)):
            assert ids[r].tolist() == top_k(np.arange(17), x[r], k)[0].tolist()
    assert top_k_each(np.zeros((0, 5), np.float32), 3)[0].shape == (0, 3)


def test_torch_twin_agrees_with_top_k():
    rng = np.random.default_rng(2)
    for _ in range(200):
        n = int(rng.integers(1, 80))
        rows = np.sort(rng.choice(5000, n, replace=False))  # the twin's contract: rows ascending
        scores = (rng.integers(0, 5, n) / 4).astype(np.float32)
        k = int(rng.integers(1, n + 3))
        twin = top_k_torch(torch.from_numpy(rows), torch.from_numpy(scores), k).numpy()
        assert twin.tolist() == top_k(rows, scores, k)[0].tolist()
