"""Hybrid search: MaxSim and Lance's full-text (BM25) index, fused by reciprocal rank fusion.

``Index.search(queries, text=..., hybrid=True)`` (or ``Index.search("question", hybrid=True)``: the same string
for BM25 and the encoder) takes each query's top ``max(k, HYBRID_DEPTH)`` by MaxSim
and by BM25 over the INVERTED-indexed text column(s) (both among the rows ``where=`` keeps) and ranks the
union by RRF: ``sum over the two lists of 1 / (RRF_K + rank)`` (rank 1 = best), the fusion that needs no
score calibration between BM25 and MaxSim (Cormack et al., 2009; ``RRF_K = 60`` as there). A document
missing from one list gets nothing from it.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..exceptions import InvalidArgumentError, InvalidDtypeError, InvalidOperationError

#: the constant of reciprocal rank fusion
RRF_K = 60
#: candidates taken from each of MaxSim and BM25 per query (at least k)
HYBRID_DEPTH = 100
FUSIONS = ("rrf",)


def rrf(ranked: list[np.ndarray], k: int, c: int = RRF_K) -> tuple[np.ndarray, np.ndarray]:
    """Reciprocal rank fusion of ranked row lists (best first) -> top-``k`` (rows, fused scores), best first;
    ties go to the row with the better best rank, then the smaller row.

    >>> rows, s = rrf([np.array([7, 3, 5]), np.array([3, 9])], k=3, c=0)
    >>> rows.tolist(), [round(float(x), 3) for x in s]
    ([3, 7, 9], [1.5, 1.0, 0.5])
    """
    parts = [np.asarray(r, np.int64) for r in ranked if len(r)]
    if not parts:
        return np.zeros(0, np.int64), np.zeros(0, np.float32)
    rows = np.concatenate(parts)
    rank = np.concatenate([np.arange(1, len(r) + 1) for r in parts])
    uniq, inv = np.unique(rows, return_inverse=True)
    score = np.bincount(inv, weights=1.0 / (c + rank), minlength=len(uniq))
    best = np.full(len(uniq), np.iinfo(np.int64).max)
    np.minimum.at(best, inv, rank)
    order = np.lexsort((uniq, best, -score))[:k]
    return uniq[order], score[order].astype(np.float32)


def check_hybrid(text: Any, hybrid: Any, fusion: Any, n_queries: int) -> list[str] | None:
    """The query texts of a hybrid search (None when ``hybrid`` is False); errors name the fix."""
    if not isinstance(hybrid, bool):
        raise InvalidDtypeError(f"hybrid must be True or False, got {type(hybrid).__name__} {hybrid!r:.80}")
    if fusion not in FUSIONS:
        raise InvalidArgumentError(f"fusion={fusion!r} is not one of {FUSIONS}; use fusion='rrf'")
    if not hybrid:
        if text is not None:
            raise InvalidArgumentError(
                "text= is the query text of a hybrid search: pass hybrid=True with it, or drop text="
            )
        return None
    if text is None:
        raise InvalidArgumentError(
            "hybrid=True needs the query text for the full-text side: search('question', hybrid=True) (the index's "
            "encoder encodes it), or search(vectors, text='...', hybrid=True) (a list of texts, one per query, for "
            "several queries)"
        )
    texts = [text] if isinstance(text, str) else text
    if not isinstance(texts, (list, tuple)) or not all(isinstance(t, str) for t in texts):
        raise InvalidDtypeError(
            f"text= must be a string or a list of strings (one per query), got {type(text).__name__} {text!r:.80}"
        )
    if len(texts) != n_queries:
        raise InvalidArgumentError(
            f"text= holds {len(texts)} texts for {n_queries} queries; pass exactly one text per query"
        )
    return list(texts)


def hybrid_search(
    view: Any,
    queries: Any,
    texts: list[str],
    k: int,
    allowed: np.ndarray | None,
    where: str | None,
    params: Any,
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Per query: (snapshot rows, RRF scores) of the fused top ``k`` (see the module docstring)."""
    if not view.text_columns():
        raise InvalidOperationError(
            "hybrid=True needs a full-text index on the text column: build it once with "
            "index.create_fts_index('text') (later writes are searched too), or call index.refresh() if "
            "another process built it"
        )
    depth = max(int(k), HYBRID_DEPTH)
    dense = view.searcher(params).search(queries, depth, allowed)
    rows_out, scores_out = [], []
    for (rows, _), text in zip(dense, texts):
        bm25_rows = view.text_search(text, where, depth)[0] if text.strip() else np.zeros(0, np.int64)
        r, s = rrf([np.asarray(rows), bm25_rows], k)
        rows_out.append(r)
        scores_out.append(s)
    return rows_out, scores_out
