"""The compiled search kernels (mvstore.search._kernels): their checked entry points, the SIMD kernels against
numpy and against the plain numba reference kernels (``MVSTORE_DISABLE_SIMD=1``), and the reference kernels
under ``NUMBA_BOUNDSCHECK=1``.

Tests named ``test_core_*`` are the kernels' core cases: :func:`test_core_cases_under_boundscheck` reruns their
reference-kernel variants (``-k "core and ref"``) in a subprocess with numba's bounds checks on. The SIMD
variants are left out there: the intrinsics read raw pointers, which bounds checking cannot see.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numba
import numpy as np
import pytest

from mvstore.codecs._bits import table_units
from mvstore.exceptions import DimensionMismatchError, InvalidDtypeError, InvalidVectorsError
from mvstore.search import _kernels as K
from mvstore.search.postings import Postings, build_postings


@pytest.fixture(params=[True, False], ids=["simd", "ref"])
def simd(request, monkeypatch):
    """Run a test with the SIMD kernels, then with the plain numba reference kernels."""
    monkeypatch.setattr(K, "SIMD", request.param)
    return request.param


def _postings(rng, n_docs=40, n_terms=50, lo=1, hi=20):
    lengths = rng.integers(lo, hi, n_docs)
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    terms = rng.integers(0, n_terms, offsets[-1]).astype(np.int32)
    return build_postings(terms, offsets, n_terms), terms, offsets


# ----------------------------------------------------------------------------------- core cases (both paths)
@pytest.mark.parametrize("width", [8, 24, 32, 40, 72])
def test_core_kernels_match_numpy(rng, simd, width):
    """Each kernel against numpy, at widths below, at and above one column block (32 lanes): query-centroid
    similarities over a row range that leaves a remainder below the row block, MaxSim through byte and nibble
    tables, and the max over a document's centroid rows."""
    c = rng.standard_normal((50, 37)).astype(np.float32)
    qt = rng.standard_normal((37, width)).astype(np.float32)
    out = np.full((50, width), np.nan, np.float32)
    K.similarities(c, qt, 3, 48, out)
    np.testing.assert_allclose(out[3:48], c[3:48] @ qt, rtol=1e-5, atol=1e-5)
    assert np.isnan(out[:3]).all() and np.isnan(out[48:]).all()  # rows outside the range untouched

    nq = width - 5 if width > 8 else 3
    codes = rng.integers(0, 256, (300, 7), dtype=np.uint8)
    starts, lengths = np.array([0, 40, 41, 120, 299]), np.array([40, 1, 0, 150, 1])
    for levels in (16, 256):
        n_units = 7 * (2 if levels == 16 else 1)
        table = rng.standard_normal((n_units, levels, width)).astype(np.float32)
        sims = table[np.arange(n_units)[None, :], table_units(codes, levels)].sum(1)  # (300, width)
        expect = [sims[a : a + n, :nq].max(0).sum() if n else -np.inf for a, n in zip(starts, lengths)]
        np.testing.assert_allclose(
            K.table_maxsim(codes, starts, lengths, table, nq), expect, rtol=1e-5, atol=1e-4
        )

    p, terms, offsets = _postings(rng)
    st = rng.standard_normal((50, width)).astype(np.float32)
    rows = np.array([2, 0, 1, 39, 17])
    expect = [st[np.unique(terms[offsets[d] : offsets[d + 1]]), :nq].max(0).sum() for d in rows]
    np.testing.assert_allclose(K.full_interaction(st, nq, rows, p), expect, rtol=1e-5)


def test_core_top_probes_match_sorting(rng, simd):
    st = rng.standard_normal((50, 8)).astype(np.float32)
    st[7, :] = st[3, :]  # ties: the smaller centroid id comes first
    for nprobe in (1, 3, 49, 50, 80):
        probe, bound = K.top_probes(st, 5, nprobe)
        for t in range(5):
            order = np.lexsort((np.arange(50), -st[:, t]))
            assert probe[t].tolist() == order[: min(nprobe, 50)].tolist()
            assert bound[t] == (st[order[nprobe], t] if nprobe < 50 else -np.inf)


@pytest.mark.parametrize("masked", [False, True])
def test_core_probed_interaction_matches_definition(rng, simd, masked):
    """Candidates = documents on a probed list (allowed by the mask); score = per token the max similarity
    over the document's probed centroids, else the token's bound; rows ascending; the slot scratch is restored."""
    p, terms, offsets = _postings(rng)
    nq = 5
    st = rng.standard_normal((50, 8)).astype(np.float32)
    probe, bound = K.top_probes(st, nq, 4)
    mask = rng.random(p.n_docs) < 0.6 if masked else None
    slot = np.full(p.n_docs, -1, np.int32)
    rows, scores = K.probed_interaction(st, probe, bound, p, mask, slot)
    assert (slot == -1).all()
    expect = {}
    for d in range(p.n_docs):
        held = set(terms[offsets[d] : offsets[d + 1]].tolist())
        per_tok = [[st[c, t] for c in probe[t] if c in held] for t in range(nq)]
        if any(per_tok) and (mask is None or mask[d]):
            expect[d] = sum(max(v) if v else bound[t] for t, v in enumerate(per_tok))
    assert rows.tolist() == sorted(expect)
    np.testing.assert_allclose(scores, [expect[d] for d in rows.tolist()], rtol=1e-5)


def test_core_candidate_ids_sort(rng, simd):
    for a in (
        np.zeros(0, np.int32),
        np.array([7], np.int32),
        rng.integers(0, 5000, 3000).astype(np.int32),
        rng.integers(0, 2**31 - 1, 1000).astype(np.int32),
        np.array([2**31 - 1, 0, 2048, 2047], np.int32),
    ):
        np.testing.assert_array_equal(K._sort_ids(a), np.sort(a))


@pytest.mark.skipif(numba.config.BOUNDSCHECK != 1, reason="only meaningful with NUMBA_BOUNDSCHECK=1")
def test_core_boundscheck_is_active_ref():
    """Run under NUMBA_BOUNDSCHECK=1 (the subprocess below): a reference kernel called around its entry point
    with a document id past the CSR arrays raises IndexError instead of reading memory it does not own. The
    subprocess also sets MVSTORE_DISABLE_SIMD=1: the entry points use the reference kernels."""
    assert K.SIMD is (os.environ.get("MVSTORE_DISABLE_SIMD") != "1")
    st = np.zeros((4, 8), np.float32)
    with pytest.raises(IndexError):
        K._full_interaction_ref(st, 3, np.array([5]), np.array([0, 1]), np.array([0], np.int32))


def test_core_cases_under_boundscheck(tmp_path):
    """The core cases on the reference kernels with numba's bounds checks on, in a fresh process with an
    empty numba cache (cached machine code would be reused without the checks)."""
    env = dict(
        os.environ, NUMBA_BOUNDSCHECK="1", MVSTORE_DISABLE_SIMD="1", NUMBA_CACHE_DIR=str(tmp_path / "numba")
    )
    root = Path(__file__).resolve().parents[1]
    env["PYTHONPATH"] = os.pathsep.join([str(root), env.get("PYTHONPATH", "")])
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "-rs",
            "-k",
            "core and ref and not under_boundscheck",
            str(Path(__file__)),
        ],
        env=env,
        cwd=root,
        capture_output=True,
        text=True,
        timeout=600,
    )
    out = proc.stdout + proc.stderr
    # every case passed, including test_core_boundscheck_is_active_ref (it skips when the checks are off)
    assert proc.returncode == 0 and " passed" in out and "skipped" not in out, out[-4000:]
    assert int(out.split(" passed")[0].split()[-1]) >= 10, out[-4000:]


# ----------------------------------------------------------------------------------- SIMD == reference
def test_simd_and_reference_kernels_agree(rng, monkeypatch):
    """Same inputs through both paths: the folds (max, table sums) are bitwise equal (same summation order);
    the product differs by fused multiply-add rounding only."""
    width, nq = 40, 33
    c = rng.standard_normal((300, 64)).astype(np.float32)
    qt = rng.standard_normal((64, width)).astype(np.float32)
    codes = rng.integers(0, 256, (500, 16), dtype=np.uint8)
    starts, lengths = np.array([0, 10, 10, 200, 499]), np.array([10, 0, 190, 299, 1])
    p, _, _ = _postings(rng, n_docs=60, n_terms=300)
    rows = np.arange(60)
    got = {}
    for flag in (True, False):
        monkeypatch.setattr(K, "SIMD", flag)
        st = np.empty((300, width), np.float32)
        K.similarities(c, qt, 0, 300, st)
        tables = [
            K.table_maxsim(codes, starts, lengths, rng_table, nq)
            for rng_table in (
                np.random.default_rng(1).standard_normal((32, 16, width)).astype(np.float32),
                np.random.default_rng(2).standard_normal((16, 256, width)).astype(np.float32),
            )
        ]
        st_ref = (c @ qt).astype(np.float32)  # one similarity matrix for both paths' folds
        got[flag] = (st, K.full_interaction(st_ref, nq, rows, p), tables)
    np.testing.assert_allclose(got[True][0], got[False][0], rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(got[True][1], got[False][1])
    for a, b in zip(got[True][2], got[False][2]):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("spec", ["bin", "pca16,pq4", "sq8"])
def test_search_with_simd_disabled_gives_the_same_ranking(monkeypatch, spec):
    """Whole searches (table and decode stage 2) with the SIMD kernels and with the reference kernels return the
    same rows and scores, rows differing only among near-equal scores."""
    from mvstore.search.params import SearchParams
    from mvstore.search.searcher import Searcher
    from tests.test_search import clustered_docs, make_snapshot, queries_from, same_ranking

    docs = clustered_docs(200, seed=11)
    snap = make_snapshot(docs, spec=spec)
    queries = queries_from(docs, 10, seed=12)
    params = SearchParams(nprobe=3, n_rerank=40, n_full=80, device="cpu", threads=2)
    res = {}
    for flag in (True, False):
        monkeypatch.setattr(K, "SIMD", flag)
        res[flag] = Searcher(snap, params).search(queries, 10)
    same_ranking(res[True], res[False], atol=1e-5)


def test_simd_switch_reads_the_environment(monkeypatch):
    """MVSTORE_DISABLE_SIMD=1 selects the reference kernels (read at import: the boundscheck subprocess checks
    that it took effect there); an unknown value is an error that says which values work."""
    for value, expect in (("1", False), ("0", True), ("", True)):
        monkeypatch.setenv("MVSTORE_DISABLE_SIMD", value)
        assert K._simd_from_env() is expect
    monkeypatch.delenv("MVSTORE_DISABLE_SIMD")
    assert K._simd_from_env() is True
    monkeypatch.setenv("MVSTORE_DISABLE_SIMD", "yes")
    with pytest.raises(
        InvalidVectorsError, match="MVSTORE_DISABLE_SIMD='yes' is not understood; set it to 1"
    ):
        K._simd_from_env()


# ----------------------------------------------------------------------------------- the checked entry points
def test_strided_codes_are_refused_not_misread(rng):
    """Regression: a non-contiguous view of the codes was read as if it were contiguous (wrong scores, no
    error). The entry point refuses it with the fix; the intrinsics refuse non-C layouts at typing time."""
    codes = rng.integers(0, 256, (40, 8), dtype=np.uint8)
    table = rng.standard_normal((8, 16, 8)).astype(np.float32)  # nibble table of 4-byte codes
    view = codes[:, ::2]  # (40, 4) with byte stride 2
    with pytest.raises(InvalidDtypeError, match=r"strided view.*np.ascontiguousarray\(codes\)"):
        K.table_maxsim(view, np.array([0]), np.array([5]), table, 3)
    good = K.table_maxsim(np.ascontiguousarray(view), np.array([0]), np.array([5]), table, 3)
    sims = table[np.arange(8)[None, :], table_units(np.ascontiguousarray(view), 16)].sum(1)
    np.testing.assert_allclose(good, [sims[:5, :3].max(0).sum()], rtol=1e-5)
    with pytest.raises(numba.core.errors.TypingError):
        K._table_maxsim_simd(view, np.array([0]), np.array([5]), table, 3)
    with pytest.raises(InvalidDtypeError, match="strided view"):
        K.similarities(
            np.zeros((8, 16), np.float32)[:, ::2],
            np.zeros((8, 8), np.float32),
            0,
            8,
            np.zeros((8, 8), np.float32),
        )


def test_out_of_range_terms_are_refused_when_postings_are_built(rng):
    """Regression: a document term >= n_centroids made the full interaction read outside the similarity
    matrix (SIGSEGV). Terms are checked once, when the postings are built; every kernel call then only checks
    that its similarity matrix has the postings' term count."""
    p, _, _ = _postings(rng, n_docs=5, n_terms=10)
    bad = p.doc_terms.copy()
    bad[3] = 10
    with pytest.raises(InvalidVectorsError, match=r"term ids outside \[0, 10\).*build_postings"):
        Postings(p.term_starts, p.term_ends, p.term_docs, p.doc_offsets, bad)
    bad_docs = p.term_docs.copy()
    bad_docs[0] = 5
    with pytest.raises(InvalidVectorsError, match=r"document ids outside \[0, 5\)"):
        Postings(p.term_starts, p.term_ends, bad_docs, p.doc_offsets, p.doc_terms)
    with pytest.raises(InvalidVectorsError, match="inside term_docs"):
        Postings(p.term_ends, p.term_starts, p.term_docs, p.doc_offsets, p.doc_terms)  # start > end
    with pytest.raises(InvalidVectorsError, match="inside term_docs"):
        Postings(p.term_starts, p.term_ends + 1, p.term_docs, p.doc_offsets, p.doc_terms)  # past the array
    with pytest.raises(InvalidVectorsError, match="must rise from 0"):
        Postings(p.term_starts, p.term_ends, p.term_docs, p.doc_offsets[::-1].copy(), p.doc_terms)
    with pytest.raises(InvalidDtypeError, match="int32"):
        Postings(p.term_starts, p.term_ends, p.term_docs.astype(np.int64), p.doc_offsets, p.doc_terms)
    with pytest.raises(InvalidVectorsError, match=r"terms must lie in \[0, 10\)"):
        build_postings(np.array([0, 10]), np.array([0, 2]), 10)
    st = np.zeros((9, 8), np.float32)  # one row short of the postings' 10 terms
    with pytest.raises(DimensionMismatchError, match="st has 9 rows but the postings have 10 terms"):
        K.full_interaction(st, 3, np.array([0]), p)


def test_entry_points_check_per_query_arrays(rng):
    p, _, _ = _postings(rng, n_docs=6, n_terms=10)
    st = np.zeros((10, 8), np.float32)
    codes = np.zeros((10, 4), np.uint8)
    one = (np.array([0]), np.array([3]))
    cases = [
        (
            lambda: K.full_interaction(st, 3, np.array([0, 6]), p),
            InvalidVectorsError,
            r"rows holds ids in \[0, 6\]",
        ),
        (lambda: K.full_interaction(st, 9, np.array([0]), p), DimensionMismatchError, r"nq=9 .* \[1, 8\]"),
        (
            lambda: K.full_interaction(np.zeros((10, 12), np.float32), 3, np.array([0]), p),
            DimensionMismatchError,
            "multiple of 8",
        ),
        (lambda: K.full_interaction(st, 3, np.array([0.0]), p), InvalidDtypeError, "1-D integer"),
        (lambda: K.full_interaction(st, 3, np.array([0]), "p"), InvalidDtypeError, "must be a Postings"),
        (
            lambda: K.probed_interaction(
                st, np.array([[10]]), np.zeros(1, np.float32), p, None, np.full(6, -1, np.int32)
            ),
            InvalidVectorsError,
            "probe holds ids",
        ),
        (
            lambda: K.probed_interaction(
                st, np.array([[1]]), np.zeros(1, np.float32), p, np.ones(5, bool), np.full(6, -1, np.int32)
            ),
            DimensionMismatchError,
            "mask has 5 entries",
        ),
        (
            lambda: K.probed_interaction(
                st, np.array([[1]]), np.zeros(1, np.float32), p, None, np.full(5, -1, np.int32)
            ),
            DimensionMismatchError,
            r"slot \(6,\)",
        ),
        (
            lambda: K.table_maxsim(codes, *one, np.zeros((8, 16, 12), np.float32), 3),
            DimensionMismatchError,
            "multiple of 8",
        ),
        (
            lambda: K.table_maxsim(codes, *one, np.zeros((4, 16, 8), np.float32), 3),
            DimensionMismatchError,
            "does not match codes of 4 bytes",
        ),
        (
            lambda: K.table_maxsim(codes, np.array([8]), np.array([3]), np.zeros((4, 256, 8), np.float32), 3),
            InvalidVectorsError,
            "outside the 10 codes",
        ),
        (
            lambda: K.table_maxsim(
                codes, np.array([2]), np.array([-1]), np.zeros((4, 256, 8), np.float32), 3
            ),
            InvalidVectorsError,
            "outside the 10 codes",
        ),
        (
            lambda: K.table_maxsim(codes.astype(np.int8), *one, np.zeros((4, 256, 8), np.float32), 3),
            InvalidDtypeError,
            "2-D uint8",
        ),
        (
            lambda: K.table_maxsim(codes, *one, np.zeros((4, 256, 8), np.float64), 3),
            InvalidDtypeError,
            "3-D float32",
        ),
        (
            lambda: K.similarities(
                np.zeros((5, 4), np.float32),
                np.zeros((4, 12), np.float32),
                0,
                5,
                np.zeros((5, 12), np.float32),
            ),
            DimensionMismatchError,
            "multiple of 8",
        ),
        (
            lambda: K.similarities(
                np.zeros((5, 4), np.float32), np.zeros((4, 8), np.float32), 0, 6, np.zeros((5, 8), np.float32)
            ),
            InvalidVectorsError,
            "outside the 5 centroids",
        ),
        (lambda: K.top_probes(st, 9, 2), DimensionMismatchError, r"nq=9"),
        (lambda: K.top_probes(st, 3, 0), InvalidVectorsError, "nprobe >= 1"),
    ]
    for call, err, match in cases:
        with pytest.raises(err, match=match):
            call()


def test_generator_refuses_postings_of_other_centroids(rng):
    """The generator's centroids fix the rows of every similarity matrix its kernels index with the postings'
    terms: postings built for another centroid count are refused up front."""
    from mvstore.search.candidates import CentroidCandidates

    p, terms, offsets = _postings(rng, n_docs=5, n_terms=10)
    with pytest.raises(DimensionMismatchError, match="postings for 10 terms do not fit 8 centroids"):
        CentroidCandidates(terms, offsets, np.eye(8, 4, dtype=np.float32), postings=p)
    with pytest.raises(DimensionMismatchError, match="postings for \\? terms"):
        CentroidCandidates(terms, offsets, np.eye(10, 4, dtype=np.float32), postings=object())
    gen = CentroidCandidates(terms, offsets, np.eye(10, 4, dtype=np.float32), postings=p)
    assert gen.postings is p
