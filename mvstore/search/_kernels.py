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
(:mod:`mvstore.search._simd`), one lane per query token. None of the kernels calls BLAS, so the search pool
can run them on every core without touching the process's BLAS threads.

**Checked entry points.** The public functions here are the only way in: each checks its arguments once per
call (dtypes, C-contiguity, shapes; the per-query index arrays against their ranges) and then runs a
compiled kernel that reads raw pointers without bounds checks. What holds for a whole snapshot is checked
once where it is built: :class:`~mvstore.search.postings.Postings` validates its ids (every document id
``< n_docs``, every term ``< n_terms``) at construction, and the entry points only check that the arrays
they are given belong to it (``n_terms`` rows of similarities, ``n_docs`` slots).

**Reference kernels.** Each SIMD kernel has a plain numba twin (``_*_ref``: straight loops, same summation
order) used when the environment sets ``MVSTORE_DISABLE_SIMD=1`` (read once, at import; :data:`SIMD`). The
tests run both on the same inputs, and run the reference kernels under ``NUMBA_BOUNDSCHECK=1``, which cannot
see through the intrinsics' raw pointer reads.
"""

from __future__ import annotations

import os
from typing import Any

import numba
import numpy as np

from ..exceptions import DimensionMismatchError, InvalidDtypeError, InvalidVectorsError
from ._simd import DOT_ROWS, LANES, MAX_CHUNKS, dot_rows, rows_max, table_fold_max
from .postings import Postings

__all__ = ["SIMD", "similarities", "top_probes", "probed_interaction", "full_interaction", "table_maxsim"]


def _simd_from_env() -> bool:
    value = os.environ.get("MVSTORE_DISABLE_SIMD", "").strip()
    if value in ("", "0"):
        return True
    if value == "1":
        return False
    raise InvalidVectorsError(
        f"MVSTORE_DISABLE_SIMD={value!r} is not understood; set it to 1 (plain numba kernels) or 0 / unset "
        "(SIMD kernels)"
    )


#: whether the search kernels use the SIMD intrinsics (False when ``MVSTORE_DISABLE_SIMD=1`` at import)
SIMD = _simd_from_env()


_DOT_ROWS = np.array([0] + [DOT_ROWS[k] for k in range(1, MAX_CHUNKS + 1)], np.int64)
_R1, _R2, _R3, _R4 = (DOT_ROWS[k] for k in range(1, MAX_CHUNKS + 1))  # compile-time constants below


# ------------------------------------------------------------------------------------------ argument checks
def _array(name: str, x: Any, dtype: Any, ndim: int) -> np.ndarray:
    """``x`` if it is a C-contiguous ``ndim``-D numpy array of ``dtype`` (``"int"``: any integer dtype)."""
    ok = isinstance(x, np.ndarray) and x.ndim == ndim
    ok = ok and (x.dtype.kind in "iu" if dtype == "int" else x.dtype == dtype)
    if not ok:
        want = "integer" if dtype == "int" else np.dtype(dtype).name
        got = f"{x.dtype} array of shape {x.shape}" if isinstance(x, np.ndarray) else type(x).__name__
        raise InvalidDtypeError(f"{name} must be a {ndim}-D {want} numpy array, got a {got}")
    if not x.flags.c_contiguous:
        raise InvalidDtypeError(
            f"{name} is a strided view (shape {x.shape}, strides {x.strides}); the search kernels read C-contiguous "
            f"arrays only: pass np.ascontiguousarray({name})"
        )
    return x


def _width(name: str, width: int, nq: Any) -> None:
    if width == 0 or width % LANES != 0:
        raise DimensionMismatchError(f"{name} has {width} columns; it needs a positive multiple of {LANES}")
    if isinstance(nq, bool) or not isinstance(nq, (int, np.integer)) or not 1 <= nq <= width:
        raise DimensionMismatchError(
            f"nq={nq!r} query tokens must be an int in [1, {width}] (the {name} columns)"
        )


@numba.njit(cache=True, nogil=True)
def _outside(ids, n):  # pragma: no cover - compiled
    """Whether any of the integer ``ids`` (any shape) lies outside ``[0, n)``: one pass, no temporaries."""
    for x in ids.flat:
        if x < 0 or x >= n:
            return True
    return False


@numba.njit(cache=True, nogil=True)
def _ranges_outside(starts, lengths, n):  # pragma: no cover - compiled
    """Whether any range ``[starts[i], starts[i] + lengths[i])`` is reversed or reaches outside ``[0, n)``."""
    for i in range(len(starts)):
        if starts[i] < 0 or lengths[i] < 0 or starts[i] + lengths[i] > n:
            return True
    return False


def _ids_in(name: str, ids: np.ndarray, n: int, what: str) -> None:
    if _outside(ids, n):
        raise InvalidVectorsError(
            f"{name} holds ids in [{int(ids.min())}, {int(ids.max())}] but {what} has {n}; take them from the "
            "same snapshot"
        )


_NO_MASK = np.ones(1, bool)  # placeholder the kernel never reads (use_mask=False)


def _postings(postings: Any) -> Postings:
    if not isinstance(postings, Postings):
        raise InvalidDtypeError(
            f"postings must be a Postings (build_postings), got {type(postings).__name__}"
        )
    return postings


# ------------------------------------------------------------------------------------------ compiled kernels
# Unchecked: reached only through the entry points at the end of this module.
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
def _similarities_simd(c, qt, a, b, out):  # pragma: no cover - compiled
    """:func:`similarities` with :func:`~mvstore.search._simd.dot_rows`: blocks of rows and up to 32 columns
    in registers."""
    width = qt.shape[1]
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
def _top_probes(st, nq, nprobe):  # pragma: no cover - compiled
    """:func:`top_probes`: one pass over ``st`` keeping a sorted top list per token (~n_c comparisons when
    nprobe << n_c)."""
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
    """Non-negative int32 ids, ascending: an LSD radix sort on 11-bit digits. numba's ``np.sort`` would do as
    well but lengthens the first-use compile."""
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


# one compiled loop nest, kept whole: split into calls it would leave the hot loop (issue 17 keeps the measured kernels)
@numba.njit(cache=True, nogil=True)
def _probed_interaction(  # noqa: C901, PLR0912
    st, probe, bound, term_starts, term_ends, term_docs, mask, use_mask, slot
):  # pragma: no cover - compiled
    """:func:`probed_interaction` on the term -> docs lists; ``mask`` is read only when ``use_mask``."""
    nq, nprobe = probe.shape
    total = 0
    for t in range(nq):
        for p in range(nprobe):
            c = probe[t, p]
            total += term_ends[c] - term_starts[c]
    rows = np.empty(total, np.int32)
    nc = 0
    for t in range(nq):
        for p in range(nprobe):
            c = probe[t, p]
            for i in range(term_starts[c], term_ends[c]):
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
            for i in range(term_starts[c], term_ends[c]):
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
def _full_interaction_simd(st, nq, rows, doc_offsets, doc_terms):  # pragma: no cover - compiled
    """:func:`full_interaction` with :func:`~mvstore.search._simd.rows_max` (column blocks of 32 lanes)."""
    width = st.shape[1]
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
def _table_maxsim_simd(codes, starts, lengths, table, nq):  # pragma: no cover - compiled
    """:func:`table_maxsim` with :func:`~mvstore.search._simd.table_fold_max` (column blocks of 32 lanes)."""
    width = table.shape[2]
    n_docs = len(starts)
    out = np.empty(n_docs, np.float32)
    mx = np.empty(width, np.float32)
    for i in range(n_docs):
        a = starts[i]
        b = a + lengths[i]
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


# ------------------------------------------------------------------------------------------ reference kernels
@numba.njit(cache=True, nogil=True)
def _similarities_ref(c, qt, a, b, out):  # pragma: no cover - compiled
    """:func:`similarities` as plain loops (no intrinsics, no BLAS), summed in order of the shared dimension."""
    d = c.shape[1]
    width = qt.shape[1]
    for i in range(a, b):
        for j in range(width):
            out[i, j] = 0.0
        for k in range(d):
            x = c[i, k]
            for j in range(width):
                out[i, j] += x * qt[k, j]


@numba.njit(cache=True, nogil=True)
def _full_interaction_ref(st, nq, rows, doc_offsets, doc_terms):  # pragma: no cover - compiled
    """:func:`full_interaction` as plain loops; the same maxima summed in the same order as the SIMD kernel."""
    out = np.empty(len(rows), np.float32)
    mx = np.empty(nq, np.float32)
    for i in range(len(rows)):
        d = rows[i]
        mx[:] = -np.inf
        for j in range(doc_offsets[d], doc_offsets[d + 1]):
            c = doc_terms[j]
            for t in range(nq):
                if st[c, t] > mx[t]:
                    mx[t] = st[c, t]
        acc = np.float32(0.0)
        for t in range(nq):
            acc += mx[t]
        out[i] = acc
    return out


@numba.njit(cache=True, nogil=True)
def _table_maxsim_ref(codes, starts, lengths, table, nq):  # pragma: no cover - compiled
    """:func:`table_maxsim` as plain loops; each vector's table rows summed in the SIMD kernel's order."""
    levels = table.shape[1]
    code_size = codes.shape[1]
    out = np.empty(len(starts), np.float32)
    mx = np.empty(nq, np.float32)
    for i in range(len(starts)):
        mx[:] = -np.inf
        for v in range(starts[i], starts[i] + lengths[i]):
            for t in range(nq):
                s = np.float32(0.0)
                for j in range(code_size):
                    byte = codes[v, j]
                    if levels == 16:
                        s += table[2 * j, byte & 15, t]
                        s += table[2 * j + 1, byte >> 4, t]
                    else:
                        s += table[j, byte, t]
                if s > mx[t]:
                    mx[t] = s
        total = np.float32(0.0)
        for t in range(nq):
            total += mx[t]
        out[i] = total
    return out


# ------------------------------------------------------------------------------------------ checked entry points
def similarities(c: np.ndarray, qt: np.ndarray, a: int, b: int, out: np.ndarray) -> None:
    """``out[a:b] = c[a:b] @ qt``: query-centroid similarities of centroid rows ``a..b`` (``c`` (n_c, d)) against
    the transposed, zero-padded query ``qt`` (d, width), width a multiple of 8; all float32 C arrays.

    The SIMD kernel streams ``c`` as is and never calls BLAS, so the search pool runs it without a BLAS thread
    limit (process-wide state). Measured on a busy 2-core AVX-512 machine (300 interleaved reps, p50): one BLAS
    thread takes 0.83-0.89x its time for 4096 x 368 centroids, 0.97x for 8192 x 128 and 1.1x for 4096 x 64;
    one BLAS call on the process's default (2) BLAS threads, the way to use BLAS without a limit, takes
    2.3-6.9x the time of this kernel split over the 2-thread pool."""
    c = _array("c", c, np.float32, 2)
    qt = _array("qt", qt, np.float32, 2)
    out = _array("out", out, np.float32, 2)
    n_c, d = c.shape
    width = qt.shape[1]
    if width == 0 or width % LANES != 0 or qt.shape[0] != d or out.shape != (n_c, width):
        raise DimensionMismatchError(
            f"similarities needs c (n, d), qt (d, w), out (n, w) with w a positive multiple of {LANES}; got c "
            f"{c.shape}, qt {qt.shape}, out {out.shape}"
        )
    if not 0 <= a <= b <= n_c:
        raise InvalidVectorsError(f"row range [{a}, {b}) lies outside the {n_c} centroids")
    (_similarities_simd if SIMD else _similarities_ref)(c, qt, a, b, out)


def top_probes(st: np.ndarray, nq: int, nprobe: int) -> tuple[np.ndarray, np.ndarray]:
    """Per query token ``t < nq`` (column of ``st`` (n_c, width) float32): the ``nprobe`` most similar
    centroids (best first, ties by centroid id) -> ``(nq, min(nprobe, n_c))`` int64, and the
    ``(nprobe+1)``-th best similarity (``-inf`` when every centroid is probed) -> ``(nq,)`` float32."""
    st = _array("st", st, np.float32, 2)
    if isinstance(nq, bool) or not isinstance(nq, (int, np.integer)) or not 1 <= nq <= st.shape[1]:
        raise DimensionMismatchError(
            f"nq={nq!r} query tokens must be an int in [1, {st.shape[1]}] (the columns)"
        )
    if isinstance(nprobe, bool) or not isinstance(nprobe, (int, np.integer)) or nprobe < 1 or len(st) == 0:
        raise InvalidVectorsError(
            f"top_probes needs nprobe >= 1 and at least one centroid, got {nprobe!r}, {len(st)}"
        )
    return _top_probes(st, nq, nprobe)


def probed_interaction(
    st: np.ndarray,
    probe: np.ndarray,
    bound: np.ndarray,
    postings: Any,
    mask: np.ndarray | None,
    slot: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """One query's candidates (the documents on its probed posting lists) and their *probed* interaction.

    st: (n_terms, width) float32 query-centroid similarities, one column per query token (columns beyond
    ``nq = probe.shape[0]`` are padding); probe: (nq, nprobe) probed centroid ids per token; bound: (nq,)
    similarity given to a token none of whose probed centroids a document holds; postings: the snapshot's
    :class:`~mvstore.search.postings.Postings`; mask: None or bool per row; slot: int32 scratch per row, all -1
    on entry and on exit (it deduplicates the posting lists in place).
    -> ``(rows int32 ascending, scores float32)``.
    """
    p = _postings(postings)
    st = _array("st", st, np.float32, 2)
    probe = _array("probe", probe, "int", 2)
    bound = _array("bound", bound, np.float32, 1)
    slot = _array("slot", slot, np.int32, 1)
    nq = probe.shape[0]
    if (
        st.shape[0] != p.n_terms
        or not 1 <= nq <= st.shape[1]
        or bound.shape != (nq,)
        or len(slot) != p.n_docs
    ):
        raise DimensionMismatchError(
            f"probed_interaction needs st ({p.n_terms}, >= nq), probe (nq, nprobe), bound (nq,), slot ({p.n_docs},); "
            f"got st {st.shape}, probe {probe.shape}, bound {bound.shape}, slot {slot.shape}"
        )
    _ids_in("probe", probe, p.n_terms, "the postings' term count")
    if mask is not None:
        mask = _array("mask", mask, np.bool_, 1)
        if len(mask) != p.n_docs:
            raise DimensionMismatchError(
                f"mask has {len(mask)} entries but the postings have {p.n_docs} documents"
            )
    return _probed_interaction(
        st,
        probe,
        bound,
        p.term_starts,
        p.term_ends,
        p.term_docs,
        _NO_MASK if mask is None else mask,
        mask is not None,
        slot,
    )


def full_interaction(st: np.ndarray, nq: int, rows: np.ndarray, postings: Any) -> np.ndarray:
    """*Full* centroid interaction of documents ``rows``: per query token the max similarity over every
    centroid the document holds (the postings' doc -> terms CSR, whose terms index rows of ``st``), summed
    over the ``nq`` tokens -> float32. ``st`` (n_terms, width) float32, width a multiple of 8 (padding
    columns ignored)."""
    p = _postings(postings)
    st = _array("st", st, np.float32, 2)
    rows = _array("rows", rows, "int", 1)
    _width("st", st.shape[1], nq)
    if st.shape[0] != p.n_terms:
        raise DimensionMismatchError(f"st has {st.shape[0]} rows but the postings have {p.n_terms} terms")
    _ids_in("rows", rows, p.n_docs, "the postings' document count")
    kernel = _full_interaction_simd if SIMD else _full_interaction_ref
    return kernel(st, nq, rows, p.doc_offsets, p.doc_terms)


def table_maxsim(
    codes: np.ndarray, starts: np.ndarray, lengths: np.ndarray, table: np.ndarray, nq: int
) -> np.ndarray:
    """MaxSim of one query against documents ``i`` = vectors ``codes[starts[i]:starts[i] + lengths[i]]``,
    scored through the query's table (``Codec.score_table``): a vector's similarity to every query token is
    the sum of one table row per code unit (nibble or byte), so nothing is decoded. -> ``(n_docs,)`` float32
    (-inf when empty). Equal to decode-then-multiply up to float rounding (the sum order differs).

    codes: (n, code_size) uint8; table: (2 * code_size, 16, width) or (code_size, 256, width) float32, width a
    multiple of 8; starts, lengths: integer (n_docs,)."""
    codes = _array("codes", codes, np.uint8, 2)
    table = _array("table", table, np.float32, 3)
    starts = _array("starts", starts, "int", 1)
    lengths = _array("lengths", lengths, "int", 1)
    n_units, levels, width = table.shape
    _width("table", width, nq)
    if not (
        (levels == 16 and n_units == 2 * codes.shape[1]) or (levels == 256 and n_units == codes.shape[1])
    ):
        raise DimensionMismatchError(
            f"score table {table.shape} does not match codes of {codes.shape[1]} bytes: expected "
            "(2 * code_size, 16, w) or (code_size, 256, w)"
        )
    if starts.shape != lengths.shape:
        raise DimensionMismatchError(
            f"starts {starts.shape} and lengths {lengths.shape} must have one entry per document"
        )
    if _ranges_outside(starts, lengths, len(codes)):
        raise InvalidVectorsError(
            f"document vector ranges reach outside the {len(codes)} codes; take starts/lengths from the same snapshot"
        )
    return (_table_maxsim_simd if SIMD else _table_maxsim_ref)(codes, starts, lengths, table, nq)
