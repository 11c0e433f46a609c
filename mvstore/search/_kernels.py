"""Compiled (numba, ``nogil``) CPU kernels of one query's search; the callers split them over threads.

Stage 1 computes what :class:`~mvstore.search.candidates.CentroidCandidates` specifies without the
intermediate (posting entry) arrays numpy would need: :func:`top_probes` picks each token's probes in one
pass, :func:`probed_interaction` deduplicates the probed posting lists in place (a slot array over
documents) and keeps the per-candidate, per-token maxima in one small buffer, :func:`full_interaction`
re-scores candidates over every centroid they hold. Candidates come back in ascending row order; the caller
ranks them (score descending, ties by ascending row, as the torch twin does).

Stage 2: :func:`table_maxsim` scores codes through a query's score table (``Codec.score_table``).
"""

from __future__ import annotations

import numba
import numpy as np

__all__ = ["top_probes", "probed_interaction", "full_interaction", "table_maxsim"]


@numba.njit(cache=True, nogil=True)
def top_probes(st, nq, nprobe):  # pragma: no cover - compiled
    """Per query token ``t < nq`` (column of ``st`` (n_c, width)): the ``nprobe`` most similar centroids (best
    first, ties by centroid id) and the ``(nprobe+1)``-th best similarity (``-inf`` when every centroid is
    probed). One pass over ``st`` keeping a sorted top list per token: ~n_c comparisons when nprobe << n_c."""
    n_c = st.shape[0]
    k = min(nprobe + 1, n_c)
    vals = np.empty((nq, k), np.float32)
    cols = np.empty((nq, k), np.int64)
    m = np.zeros(nq, np.int64)
    for c in range(n_c):
        for t in range(nq):
            v = st[c, t]
            mt = m[t]
            if mt == k and v <= vals[t, k - 1]:
                continue
            i = mt if mt < k else k - 1
            while i > 0 and vals[t, i - 1] < v:  # strict: an equal value keeps the smaller centroid id first
                vals[t, i] = vals[t, i - 1]
                cols[t, i] = cols[t, i - 1]
                i -= 1
            vals[t, i] = v
            cols[t, i] = c
            if mt < k:
                m[t] = mt + 1
    n_probe = min(nprobe, n_c)
    probe = np.empty((nq, n_probe), np.int64)
    bound = np.full(nq, -np.inf, np.float32)
    for t in range(nq):
        for p in range(n_probe):
            probe[t, p] = cols[t, p]
        if nprobe < n_c:
            bound[t] = vals[t, k - 1]
    return probe, bound


@numba.njit(cache=True, nogil=True)
def probed_interaction(
    st, probe, bound, term_offsets, term_docs, mask, use_mask, slot
):  # pragma: no cover - compiled
    """One query's candidates (the documents on its probed posting lists) and their *probed* interaction.

    st: (n_c, width) float32 query-centroid similarities, one column per query token (columns beyond
    ``nq = probe.shape[0]`` are padding); probe: (nq, nprobe) probed centroid ids per token; bound: (nq,)
    similarity given to a token none of whose probed centroids a document holds; term_offsets/term_docs:
    the term -> docs CSR posting lists; mask: bool per row, used when ``use_mask``; slot: int32 scratch per
    row, all -1 on entry and on exit (it deduplicates the posting lists in place).
    -> ``(rows int32 ascending, scores float32)``.
    """
    nq, nprobe = probe.shape
    total = 0
    for t in range(nq):
        for p in range(nprobe):
            c = probe[t, p]
            total += term_offsets[c + 1] - term_offsets[c]
    rows = np.empty(total, np.int32)
    nc = 0
    for t in range(nq):
        for p in range(nprobe):
            c = probe[t, p]
            for i in range(term_offsets[c], term_offsets[c + 1]):
                d = term_docs[i]
                if slot[d] < 0 and (not use_mask or mask[d]):
                    slot[d] = 0
                    rows[nc] = d
                    nc += 1
    rows = np.sort(rows[:nc])
    for i in range(nc):
        slot[rows[i]] = i
    m = np.empty((nc, nq), np.float32)
    for i in range(nc):
        for t in range(nq):
            m[i, t] = bound[t]
    for t in range(nq):
        for p in range(nprobe):
            c = probe[t, p]
            v = st[c, t]
            for i in range(term_offsets[c], term_offsets[c + 1]):
                k = slot[term_docs[i]]
                if k >= 0 and m[k, t] < v:
                    m[k, t] = v
    for i in range(nc):
        slot[rows[i]] = -1
    scores = np.zeros(nc, np.float32)
    for i in range(nc):
        acc = np.float32(0.0)
        for t in range(nq):
            acc += m[i, t]
        scores[i] = acc
    return rows, scores


@numba.njit(cache=True, nogil=True)
def full_interaction(st, nq, rows, doc_offsets, doc_terms):  # pragma: no cover - compiled
    """*Full* centroid interaction of documents ``rows``: per query token the max similarity over every
    centroid the document holds (doc -> unique terms CSR), summed over the ``nq`` tokens -> float32."""
    width = st.shape[1]
    out = np.empty(len(rows), np.float32)
    mx = np.empty(width, np.float32)
    for i in range(len(rows)):
        d = rows[i]
        mx[:] = -np.inf
        for j in range(doc_offsets[d], doc_offsets[d + 1]):
            row = st[doc_terms[j]]
            for t in range(width):
                mx[t] = max(mx[t], row[t])
        acc = np.float32(0.0)
        for t in range(nq):
            acc += mx[t]
        out[i] = acc
    return out


@numba.njit(cache=True, nogil=True, fastmath=True)
def table_maxsim(codes, starts, lengths, table, nq):  # pragma: no cover - compiled
    """MaxSim of one query against documents ``i`` = vectors ``codes[starts[i]:starts[i] + lengths[i]]``,
    scored through the query's table (``Codec.score_table``): a vector's similarity to every query token is
    the sum of one table row per code byte, so nothing is decoded. -> ``(n_docs,)`` float32 (-inf when empty).
    ``fastmath`` lets the row sums vectorize; they equal decode-then-multiply up to float rounding."""
    n_docs = len(starts)
    n_bytes, _, width = table.shape
    out = np.empty(n_docs, np.float32)
    acc = np.empty(width, np.float32)
    mx = np.empty(width, np.float32)
    for i in range(n_docs):
        mx[:] = -np.inf
        for v in range(starts[i], starts[i] + lengths[i]):
            acc[:] = 0.0
            for j in range(n_bytes):
                row = table[j, codes[v, j]]
                for t in range(width):
                    acc[t] += row[t]
            for t in range(width):
                mx[t] = max(mx[t], acc[t])
        total = np.float32(0.0)
        for t in range(nq):
            total += mx[t]
        out[i] = total
    return out
