"""Compiled (numba, ``nogil``) CPU kernels of one query's search; the callers split them over threads.

Stage 1 computes what :class:`~mvstore.search.candidates.CentroidCandidates` specifies without the
intermediate (posting entry) arrays numpy would need: :func:`top_probes` picks each token's probes in one
pass, :func:`probed_interaction` deduplicates the probed posting lists in place (a slot array over
documents) and keeps the per-candidate, per-token maxima in one small buffer, :func:`full_interaction`
re-scores candidates over every centroid they hold. Candidates come back in ascending row order; the caller
ranks them (score descending, ties by ascending row, as the torch twin does).

Stage 2: :func:`table_maxsim` scores codes through a query's score table (``Codec.score_table``).

The query-centroid product (:func:`similarities`) and the two row folds (max over a document's centroid rows,
sum of table rows per stored vector) keep their running values in SIMD registers
(:mod:`mvstore.search._simd`), one lane per query token.
"""

from __future__ import annotations

import numba
import numpy as np

from ._simd import DOT_ROWS, LANES, MAX_CHUNKS, dot_rows, rows_max, table_fold_max

__all__ = ["similarities", "top_probes", "probed_interaction", "full_interaction", "table_maxsim"]


_DOT_ROWS = np.array([0] + [DOT_ROWS[k] for k in range(1, MAX_CHUNKS + 1)], np.int64)
_R1, _R2, _R3, _R4 = (DOT_ROWS[k] for k in range(1, MAX_CHUNKS + 1))  # compile-time constants below


@numba.njit(cache=True, nogil=True, inline="always")
def _dot(a, bt, row, col, out, chunks, full_block):  # pragma: no cover - compiled
    """:func:`~mvstore.search._simd.dot_rows` with ``chunks`` (1..4) literal, over the chunk count's row block
    (``DOT_ROWS``) when ``full_block``, else over one row."""
    if chunks == 1:
        if full_block:
            dot_rows(a, bt, row, col, out, 1, _R1)
        else:
            dot_rows(a, bt, row, col, out, 1, 1)
    elif chunks == 2:
        if full_block:
            dot_rows(a, bt, row, col, out, 2, _R2)
        else:
            dot_rows(a, bt, row, col, out, 2, 1)
    elif chunks == 3:
        if full_block:
            dot_rows(a, bt, row, col, out, 3, _R3)
        else:
            dot_rows(a, bt, row, col, out, 3, 1)
    else:
        if full_block:
            dot_rows(a, bt, row, col, out, 4, _R4)
        else:
            dot_rows(a, bt, row, col, out, 4, 1)


@numba.njit(cache=True, nogil=True)
def similarities(c, qt, a, b, out):  # pragma: no cover - compiled
    """``out[a:b] = c[a:b] @ qt``: query-centroid similarities of centroid rows ``a..b`` (``c`` (n_c, d)) against
    the transposed, zero-padded query ``qt`` (d, width), width a multiple of 8, all float32 C arrays. Blocks of
    rows and up to 32 columns in registers; ~20% faster than BLAS on one core for a 24-wide query."""
    n_c, d = c.shape
    width = qt.shape[1]
    if width % LANES != 0 or qt.shape[0] != d or out.shape[0] != n_c or out.shape[1] != width:
        raise ValueError("similarities: shapes must be c (n, d), qt (d, w), out (n, w) with w a multiple of 8")
    if a < 0 or b > n_c:
        raise IndexError("similarities: row range outside the centroids")
    for col in range(0, width, LANES * MAX_CHUNKS):
        chunks = min(MAX_CHUNKS, (width - col) // LANES)
        block = _DOT_ROWS[chunks]
        i = a
        while i + block <= b:
            _dot(c, qt, i, col, out, chunks, True)
            i += block
        while i < b:
            _dot(c, qt, i, col, out, chunks, False)
            i += 1


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
def _sort_ids(a):  # pragma: no cover - compiled
    """Non-negative int32 ids, ascending: an LSD radix sort on 11-bit digits (a few thousand candidates in
    ~10 us). numba's ``np.sort`` would do as well but added ~1 s to the first-use compile."""
    src = a.copy()
    dst = np.empty_like(a)
    count = np.empty(2049, np.int64)
    top = 0
    for x in src:
        top = max(top, x)
    shift = 0
    while shift < 32 and (top >> shift) > 0:
        count[:] = 0
        for x in src:
            count[((x >> shift) & 2047) + 1] += 1
        for d in range(2048):
            count[d + 1] += count[d]
        for x in src:
            d = (x >> shift) & 2047
            dst[count[d]] = x
            count[d] += 1
        src, dst = dst, src
        shift += 11
    return src


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
    rows = _sort_ids(rows[:nc])
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


@numba.njit(cache=True, nogil=True, inline="always")
def _fold_rows(mat, rows, a, b, col, mx, chunks):  # pragma: no cover - compiled
    """:func:`~mvstore.search._simd.rows_max` with ``chunks`` (1..4) made a literal."""
    if chunks == 1:
        rows_max(mat, rows, a, b, col, mx, 1)
    elif chunks == 2:
        rows_max(mat, rows, a, b, col, mx, 2)
    elif chunks == 3:
        rows_max(mat, rows, a, b, col, mx, 3)
    else:
        rows_max(mat, rows, a, b, col, mx, 4)


@numba.njit(cache=True, nogil=True, inline="always")
def _fold_table(table, codes, v, col, mx, chunks):  # pragma: no cover - compiled
    """:func:`~mvstore.search._simd.table_fold_max` with ``chunks`` (1..4) made a literal."""
    if chunks == 1:
        table_fold_max(table, codes, v, col, mx, 1)
    elif chunks == 2:
        table_fold_max(table, codes, v, col, mx, 2)
    elif chunks == 3:
        table_fold_max(table, codes, v, col, mx, 3)
    else:
        table_fold_max(table, codes, v, col, mx, 4)


@numba.njit(cache=True, nogil=True)
def full_interaction(st, nq, rows, doc_offsets, doc_terms):  # pragma: no cover - compiled
    """*Full* centroid interaction of documents ``rows``: per query token the max similarity over every
    centroid the document holds (doc -> unique terms CSR, whose terms index rows of ``st``), summed over
    the ``nq`` tokens -> float32. ``st``: C-contiguous, width a multiple of 8 (padding columns ignored)."""
    width = st.shape[1]
    if width % LANES != 0 or nq > width:
        raise ValueError("similarity matrix width must be a multiple of 8 and cover the query tokens")
    out = np.empty(len(rows), np.float32)
    mx = np.empty(width, np.float32)
    for i in range(len(rows)):
        d = rows[i]
        mx[:] = -np.inf
        for col in range(0, width, LANES * MAX_CHUNKS):
            _fold_rows(
                st,
                doc_terms,
                doc_offsets[d],
                doc_offsets[d + 1],
                col,
                mx,
                min(MAX_CHUNKS, (width - col) // LANES),
            )
        acc = np.float32(0.0)
        for t in range(nq):
            acc += mx[t]
        out[i] = acc
    return out


@numba.njit(cache=True, nogil=True)
def table_maxsim(codes, starts, lengths, table, nq):  # pragma: no cover - compiled
    """MaxSim of one query against documents ``i`` = vectors ``codes[starts[i]:starts[i] + lengths[i]]``,
    scored through the query's table (``Codec.score_table``): a vector's similarity to every query token is
    the sum of one table row per code unit (nibble or byte), so nothing is decoded. -> ``(n_docs,)`` float32
    (-inf when empty). Equal to decode-then-multiply up to float rounding (the sum order differs)."""
    n_units, levels, width = table.shape
    if width % LANES != 0 or nq > width:
        raise ValueError("score table width must be a multiple of 8 and cover the query tokens")
    if not (
        (levels == 16 and n_units == 2 * codes.shape[1]) or (levels == 256 and n_units == codes.shape[1])
    ):
        raise ValueError(
            "score table does not match the codes: expected (2 * code_size, 16, w) or (code_size, 256, w)"
        )
    n_docs = len(starts)
    out = np.empty(n_docs, np.float32)
    mx = np.empty(width, np.float32)
    for i in range(n_docs):
        a = starts[i]
        b = a + lengths[i]
        if a < 0 or b > codes.shape[0] or b < a:
            raise IndexError("document vector range outside the codes")
        mx[:] = -np.inf
        for col in range(0, width, LANES * MAX_CHUNKS):
            chunks = min(MAX_CHUNKS, (width - col) // LANES)
            for v in range(a, b):
                _fold_table(table, codes, v, col, mx, chunks)
        total = np.float32(0.0)
        for t in range(nq):
            total += mx[t]
        out[i] = total
    return out
