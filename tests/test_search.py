"""Two-stage search: centroid prefilter + exact MaxSim rerank, against the exhaustive oracle."""

import numpy as np
import pytest
import torch

from mvstore import Ragged
from mvstore.exceptions import (
    DeviceUnavailableError,
    DimensionMismatchError,
    InvalidDtypeError,
    InvalidVectorsError,
)
from mvstore.ragged import ranges
from mvstore.search import searcher as searcher_mod
from mvstore.search.candidates import CentroidCandidates, ExhaustiveCandidates
from mvstore.search.maxsim import maxsim_batch
from mvstore.search.params import SearchParams, SearchParamsError
from mvstore.search.postings import assign_terms, build_postings, fit_centroids
from mvstore.search.searcher import Searcher
from mvstore.search.snapshot import Snapshot
from mvstore.spec import build_pipeline
from mvstore.testing import queries_from, topic_docs

DIM = 32
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def clustered_docs(n_docs: int, dim: int = DIM, **kw):
    return topic_docs(n_docs, dim, **kw)


def make_snapshot(
    docs: Ragged, spec: str = "sq8", n_centroids: int = 32, with_terms: bool = True
) -> Snapshot:
    codec = build_pipeline(spec, docs.dim).fit(docs.values)
    codes = codec.encode(docs.values)
    terms = centroids = None
    if with_terms:
        dec = codec.decode(codes)
        centroids = fit_centroids(dec, n_centroids, seed=0)
        terms = assign_terms(dec, centroids)
    return Snapshot(
        version=1,
        ids=np.arange(len(docs), dtype=np.int64),
        codes=codes,
        offsets=docs.offsets,
        codec=codec,
        n_tokens=docs.lengths,
        terms=terms,
        centroids=centroids,
    )


@pytest.fixture(scope="module")
def corpus():
    docs = clustered_docs(300)
    snap = make_snapshot(docs)
    queries = queries_from(docs, 12)
    return docs, snap, queries


def brute_force(snap: Snapshot, queries: Ragged, k: int, allowed=None):
    """Independent reference: exact MaxSim over every decoded document, top-k by (-score, row)."""
    dec = Ragged(snap.codec.decode(snap.codes), snap.offsets)
    qt = Ragged(snap.codec.transform_query(queries.values), queries.offsets)
    scores = maxsim_batch(qt, dec)
    out = []
    for row in scores:
        rows = np.arange(len(row)) if allowed is None else np.flatnonzero(allowed)
        order = np.lexsort((rows, -row[rows]))[:k]
        out.append((rows[order], row[rows[order]]))
    return out


def same_ranking(a, b, atol=1e-4):
    """Per query, the same rows with the same scores, best first. Rows may differ only among near-equal scores
    (within ``atol``): where the rows differ, each row must sit in the other result at a score within ``atol``
    of its own, or, if the other result lacks it, tie with that result's last score (a tie at the cut)."""
    for q, ((ra, sa), (rb, sb)) in enumerate(zip(a, b, strict=True)):
        ra, rb = np.asarray(ra), np.asarray(rb)
        assert len(ra) == len(rb), f"query {q}: {len(ra)} vs {len(rb)} results"
        np.testing.assert_allclose(sa, sb, atol=atol, err_msg=f"query {q}: scores")
        for rows, scores, other_rows, other_scores in ((ra, sa, rb, sb), (rb, sb, ra, sa)):
            at = {int(r): j for j, r in enumerate(other_rows)}
            for i in np.flatnonzero(ra != rb):
                j = at.get(int(rows[i]))
                ref = other_scores[-1] if j is None else other_scores[j]
                where = (
                    "is missing from the other result, whose last score is"
                    if j is None
                    else f"at rank {j} scores"
                )
                assert abs(float(scores[i]) - float(ref)) <= atol, (
                    f"query {q}: row {int(rows[i])} scores {float(scores[i])} at rank {i} but {where} {float(ref)}: "
                    f"the rows differ beyond ties\n{ra}\n{rb}"
                )


# ----------------------------------------------------------------------------------- postings
def test_ranges_and_postings_match_naive(rng):
    assert ranges(np.array([3, 10]), np.array([2, 3])).tolist() == [3, 4, 10, 11, 12]
    assert ranges(np.array([1]), np.array([0])).tolist() == []
    offsets = np.array([0, 4, 4 + 7, 11 + 1, 12 + 5])
    terms = rng.integers(0, 6, offsets[-1])
    p = build_postings(terms, offsets, 6)
    for d in range(4):
        got = p.doc_terms[p.doc_offsets[d] : p.doc_offsets[d + 1]].tolist()
        assert got == sorted(set(terms[offsets[d] : offsets[d + 1]].tolist()))
    for t in range(6):
        want = [d for d in range(4) if t in terms[offsets[d] : offsets[d + 1]]]
        assert p.docs_of(t).tolist() == want


def test_postings_bad_terms():
    with pytest.raises(InvalidVectorsError, match=r"terms must lie in \[0, 3\)"):
        build_postings(np.array([0, 5]), np.array([0, 2]), 3)
    with pytest.raises(DimensionMismatchError, match="one entry per stored vector"):
        build_postings(np.array([0, 1, 2]), np.array([0, 2]), 3)
    with pytest.raises(InvalidDtypeError, match="integer centroid ids"):
        build_postings(np.array([0.0, 1.0]), np.array([0, 2]), 3)


# ----------------------------------------------------------------------------------- params
@pytest.mark.parametrize(
    "kw, err, match",
    [
        ({"candidates": "centroids"}, SearchParamsError, "candidates='centroids' is not one of"),
        ({"nprobe": 0}, SearchParamsError, "nprobe=0 must be a positive integer"),
        ({"n_rerank": -3}, SearchParamsError, "n_rerank=-3 must be a positive integer"),
        ({"batch_size": 0}, SearchParamsError, "batch_size=0 must be a positive integer"),
        ({"nprobe": 2.5}, InvalidDtypeError, "nprobe must be an int"),
        ({"n_rerank": True}, InvalidDtypeError, "n_rerank must be an int"),
        ({"interaction": "maxsim"}, SearchParamsError, "interaction='maxsim'.*use 'probed'"),
        ({"n_full": 0}, SearchParamsError, "n_full=0 must be a positive integer"),
        ({"threads": 0}, SearchParamsError, "threads=0 must be a positive integer"),
        ({"threads": 1.5}, InvalidDtypeError, "threads must be an int"),
        ({"device": "gpu"}, SearchParamsError, "device='gpu' is not a device; use 'auto'"),
    ],
)
def test_bad_params(kw, err, match):
    with pytest.raises(err, match=match):
        SearchParams(**kw)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU error")
def test_explicit_cuda_without_gpu_raises(corpus):
    _, snap, _ = corpus
    with pytest.raises(DeviceUnavailableError, match="CUDA is not available.*use device='cpu'"):
        Searcher(snap, SearchParams(device="cuda"))


def test_bad_search_inputs(corpus):
    _, snap, queries = corpus
    s = Searcher(snap, SearchParams(device="cpu"))
    with pytest.raises(SearchParamsError, match="k=0 must be a positive integer"):
        s.search(queries, 0)
    # a k of the wrong type is a type error here as in Index.search (it was a SearchParamsError here)
    with pytest.raises(InvalidDtypeError, match="k must be an int"):
        s.search(queries, 2.0)
    with pytest.raises(InvalidDtypeError, match="boolean mask over rows"):
        s.search(queries, 5, allowed=np.arange(snap.n_docs))
    with pytest.raises(DimensionMismatchError, match="allowed has shape"):
        s.search(queries, 5, allowed=np.ones(3, bool))
    with pytest.raises(DimensionMismatchError, match="dim 16 but dim 32 is expected"):
        s.search(Ragged.from_list([np.ones((2, 16), np.float32)]), 5)
    with pytest.raises(InvalidVectorsError, match="NaN or Inf"):
        s.search(Ragged.from_list([np.full((2, DIM), np.nan, np.float32)], check_finite=False), 5)
    with pytest.raises(InvalidDtypeError, match="params must be a SearchParams"):
        Searcher(snap, {"nprobe": 3})
    with pytest.raises(SearchParamsError, match="backend='cuda' must be None"):
        Searcher(snap, SearchParams(device="cpu"), backend="cuda")


def test_centroid_search_needs_terms():
    docs = clustered_docs(20, seed=3)
    snap = make_snapshot(docs, with_terms=False)
    q = queries_from(docs, 2)
    with pytest.raises(InvalidVectorsError, match="no stage-1 centroids.*candidates='exhaustive'"):
        Searcher(snap, SearchParams(candidates="centroid", device="cpu")).search(q, 3)
    # "auto" picks the exhaustive oracle for such a snapshot
    s = Searcher(snap, SearchParams(device="cpu"))
    assert s.candidate_kind == "exhaustive"
    same_ranking(s.search(q, 3), brute_force(snap, q, 3))


def test_assign_terms_exact_then_inverted(rng):
    """Up to EXACT_ASSIGN_MAX centroids terms are the exact nearest; beyond, an inverted index over the
    centroids finds the exact nearest for most vectors and a near-best centroid for the rest."""
    from mvstore.search.postings import EXACT_ASSIGN_MAX

    dim = 32
    cent = rng.standard_normal((EXACT_ASSIGN_MAX * 2, dim)).astype(np.float32)
    cent /= np.linalg.norm(cent, axis=1, keepdims=True)
    x = cent[rng.integers(0, len(cent), 5000)] + 0.3 * rng.standard_normal((5000, dim)).astype(
        np.float32
    ) / np.sqrt(dim)
    exact = np.argmax(x @ cent.T, axis=1)
    small = assign_terms(x, cent[:EXACT_ASSIGN_MAX])
    assert np.array_equal(small, np.argmax(x @ cent[:EXACT_ASSIGN_MAX].T, axis=1))
    got = assign_terms(x, cent)
    assert got.dtype == np.int32 and got.min() >= 0
    agree = float(np.mean(got == exact))
    best = (x * cent[exact]).sum(1)
    mine = (x * cent[got]).sum(1)
    assert agree >= 0.9, agree
    assert np.all(mine <= best + 1e-5) and np.mean(best - mine) < 0.02


# ----------------------------------------------------------------------------------- ranking
def test_oracle_is_exact_maxsim(corpus):
    _, snap, queries = corpus
    got = Searcher(snap, SearchParams(candidates="exhaustive", device="cpu")).search(queries, 10)
    same_ranking(got, brute_force(snap, queries, 10))


@pytest.mark.parametrize("interaction", ["probed", "full"])
@pytest.mark.parametrize("backend", [None, "torch"])
def test_full_probe_equals_oracle(corpus, interaction, backend):
    _, snap, queries = corpus
    n_c = len(snap.centroids)
    p = SearchParams(
        candidates="centroid", nprobe=n_c, n_rerank=snap.n_docs, interaction=interaction, device="cpu"
    )
    got = Searcher(snap, p, backend=backend).search(queries, 10)
    same_ranking(got, brute_force(snap, queries, 10))


@pytest.fixture(scope="module")
def table_snapshots():
    """Snapshots whose codecs score through per-query tables (bin, pq) on the CPU path."""
    docs = clustered_docs(200, seed=3)
    return {spec: make_snapshot(docs, spec=spec) for spec in ("bin", "pca16,pq4")}, queries_from(
        docs, 10, seed=4
    )


@pytest.mark.parametrize("spec", ["bin", "pca16,pq4"])
@pytest.mark.parametrize("threads", [1, 3])
def test_table_scoring_equals_oracle(table_snapshots, spec, threads):
    """CPU stage 2 through the codec's score table (no decoding), split over threads, ranks like exact
    MaxSim over decoded vectors; so does the torch twin (which decodes)."""
    snaps, queries = table_snapshots
    snap = snaps[spec]
    oracle = brute_force(snap, queries, 10)
    p = SearchParams(
        candidates="centroid", nprobe=len(snap.centroids), n_rerank=snap.n_docs, device="cpu", threads=threads
    )
    cpu = Searcher(snap, p)
    assert cpu.has_tables
    same_ranking(cpu.search(queries, 10), oracle)
    same_ranking(Searcher(snap, p, backend="torch").search(queries, 10), oracle)
    # a realistic operating point: threads never change the result
    p1 = SearchParams(nprobe=2, n_rerank=30, n_full=60, device="cpu", threads=1)
    pn = SearchParams(nprobe=2, n_rerank=30, n_full=60, device="cpu", threads=threads)
    for a, b in zip(
        Searcher(snap, p1).search(queries, 10), Searcher(snap, pn).search(queries, 10), strict=True
    ):
        np.testing.assert_array_equal(a[0], b[0])
        np.testing.assert_array_equal(a[1], b[1])


def test_concurrent_searches_share_a_searcher(table_snapshots):
    """Many threads searching one Searcher (shared kernels scratch is per thread, the pool is shared) get
    exactly the sequential results; an error inside a split part reaches the caller."""
    from concurrent.futures import ThreadPoolExecutor

    from mvstore._threads import split_run

    snaps, queries = table_snapshots
    s = Searcher(snaps["bin"], SearchParams(nprobe=2, n_rerank=20, n_full=40, device="cpu", threads=2))
    seq = [s.search(queries[i : i + 1], 5)[0] for i in range(len(queries))]
    with ThreadPoolExecutor(6) as ex:
        par = list(ex.map(lambda i: s.search(queries[i : i + 1], 5)[0], list(range(len(queries))) * 4))
    for i, (rows, scores) in enumerate(par):
        np.testing.assert_array_equal(rows, seq[i % len(queries)][0])
        np.testing.assert_array_equal(scores, seq[i % len(queries)][1])

    def boom(a, b):
        if a > 0:
            raise ValueError("part failed")
        return b - a

    with pytest.raises(ValueError, match="part failed"):
        split_run(boom, 100, 2)
    # chunks cover the range in order whichever thread ran them
    assert [r for chunk in split_run(lambda a, b: list(range(a, b)), 1000, 2) for r in chunk] == list(
        range(1000)
    )


def test_searches_never_touch_the_blas_thread_limit(monkeypatch):
    """Regression: every CPU search limited BLAS to one thread (threadpoolctl, process-wide) and restored the
    limit on exit, so two overlapping searches restored each other's limit of 1 and left the whole process at
    one BLAS thread. Searches (centroid, sparse) now leave it alone: inside overlapping searches and after
    them it is what the process set."""
    from concurrent.futures import ThreadPoolExecutor

    from threadpoolctl import threadpool_info, threadpool_limits

    from mvstore.search.sparse import SparseSearcher, attach_sparse_map

    def blas():  # an OpenMP-threaded BLAS (faiss-cpu's) reports the calling thread's OpenMP team size: another
        # thread shows its own (16 on a 16-core machine, in a plain thread too), so only pthreads builds compare
        return {
            i["filepath"]: i["num_threads"]
            for i in threadpool_info()
            if i["user_api"] == "blas" and i.get("threading_layer") != "openmp"
        }

    docs = clustered_docs(80, seed=9)
    snap = make_snapshot(docs, spec="sq8", n_centroids=16)  # decode-and-multiply stage 2: numpy products
    attach_sparse_map(snap, "spk32t4")
    queries = queries_from(docs, 8, seed=10)
    seen = []
    transform = snap.codec.transform_query
    monkeypatch.setattr(snap.codec, "transform_query", lambda x: (seen.append(blas()), transform(x))[1])
    searchers = [
        Searcher(snap, SearchParams(nprobe=2, n_rerank=20, device="cpu", threads=2)),
        SparseSearcher(snap, SearchParams(candidates="sparse", n_rerank=20)),
    ]
    with threadpool_limits(limits=2, user_api="blas"):  # above 1 on any machine, so a limit of 1 would show
        before = blas()
        assert before and set(before.values()) == {2}, before
        with ThreadPoolExecutor(4) as ex:
            list(ex.map(lambda i: searchers[i % 2].search(queries[i % 8 : i % 8 + 1], 5), range(32)))
        # (libraries loaded meanwhile, e.g. scipy's BLAS by the sparse searcher, come with their own setting)
        assert len(seen) == 32 and all({f: x[f] for f in before} == before for x in seen), (before, seen)
        assert {f: n for f, n in blas().items() if f in before} == before


@pytest.mark.skipif(not hasattr(__import__("os"), "fork"), reason="needs os.fork")
def test_search_in_a_forked_child(table_snapshots):
    """A child forked after the parent searched (pool threads started) searches with its own pool."""
    import multiprocessing as mp

    snaps, queries = table_snapshots
    s = Searcher(snaps["bin"], SearchParams(nprobe=2, n_rerank=20, n_full=40, device="cpu", threads=2))
    expect = s.search(queries[:2], 5)[0][0].tolist()
    _FORKED.update(searcher=s, queries=queries[:2])  # inherited by the forked child, not pickled
    ctx = mp.get_context("fork")
    with ctx.Pool(1) as pool:
        got = pool.apply_async(_child_search).get(timeout=60)
    assert got == expect


_FORKED: dict = {}


def _child_search():
    return _FORKED["searcher"].search(_FORKED["queries"], 5)[0][0].tolist()


def test_full_interaction_reranks_the_best_probed(corpus):
    """interaction='full': the n_full best documents by probed interaction, re-scored by the max over every
    centroid each holds, best n by that (ties by row) -- checked against a direct implementation."""
    _, snap, queries = corpus
    q = snap.codec.transform_query(queries[2])
    probed = CentroidCandidates.from_snapshot(snap, nprobe=2, interaction="probed")
    rows, scores = probed._one(probed._similarities(q), len(q), snap.n_docs, None, 2, with_scores=True)
    pool_rows = np.sort(rows[:25])
    sims = q @ snap.centroids.T
    full = np.array(
        [
            sims[:, np.unique(snap.terms[snap.offsets[d] : snap.offsets[d + 1]])].max(1).sum()
            for d in pool_rows
        ]
    )
    expect = pool_rows[np.lexsort((pool_rows, -full))][:10]
    gen = CentroidCandidates.from_snapshot(snap, nprobe=2, interaction="full", n_full=25)
    got, got_scores = gen._one(gen._similarities(q), len(q), 10, None, 2, with_scores=True)
    same_ranking([(got, got_scores)], [(expect, np.sort(full)[::-1][:10])], atol=1e-5)
    # torch twin: same candidates
    tgen = CentroidCandidates.from_snapshot(
        snap, nprobe=2, interaction="full", n_full=25, device=torch.device("cpu")
    )
    assert tgen.candidates([q], 10)[0].tolist() == gen.candidates([q], 10)[0].tolist()


@pytest.mark.parametrize("backend", [None, "torch"])
def test_filtered_search_equals_oracle_on_subset(corpus, backend):
    _, snap, queries = corpus
    allowed = np.zeros(snap.n_docs, bool)
    allowed[::3] = True
    oracle = brute_force(snap, queries, 10, allowed=allowed)
    full = SearchParams(candidates="centroid", nprobe=len(snap.centroids), n_rerank=snap.n_docs, device="cpu")
    for params in (full, SearchParams(candidates="exhaustive", device="cpu")):
        got = Searcher(snap, params, backend=backend).search(queries, 10, allowed=allowed)
        assert all(allowed[rows].all() for rows, _ in got)
        same_ranking(got, oracle)
    # at a moderate operating point filtered docs still never appear
    got = Searcher(snap, SearchParams(nprobe=2, n_rerank=20, device="cpu"), backend=backend).search(
        queries, 10, allowed=allowed
    )
    assert all(allowed[rows].all() and len(rows) == 10 for rows, _ in got)


@pytest.mark.parametrize("backend", [None, "torch"])
def test_selective_filter_still_fills_k(corpus, backend):
    """Few allowed docs: the prefilter widens its probes instead of returning fewer than k results."""
    _, snap, queries = corpus
    allowed = np.zeros(snap.n_docs, bool)
    allowed[[5, 77, 150, 299]] = True
    got = Searcher(snap, SearchParams(nprobe=1, n_rerank=8, device="cpu"), backend=backend).search(
        queries, 3, allowed=allowed
    )
    assert all(len(rows) == 3 and allowed[rows].all() for rows, _ in got)
    got = Searcher(snap, SearchParams(nprobe=1, device="cpu")).search(queries, 10, allowed=allowed)
    assert all(sorted(rows.tolist()) == [5, 77, 150, 299] for rows, _ in got)


@pytest.mark.parametrize("interaction", ["probed", "full"])
def test_recall_vs_oracle_at_moderate_nprobe(interaction):
    docs = clustered_docs(1500, seed=7)
    snap = make_snapshot(docs, n_centroids=64)
    queries = queries_from(docs, 40, seed=8)
    oracle = brute_force(snap, queries, 10)
    p = SearchParams(nprobe=4, n_rerank=64, interaction=interaction, device="cpu")
    got = Searcher(snap, p).search(queries, 10)
    recall = np.mean([len(np.intersect1d(g[0], o[0])) / 10 for g, o in zip(got, oracle)])
    assert recall >= 0.95, recall
    # a starved operating point must do measurably worse: the test can fail
    starved = Searcher(snap, SearchParams(nprobe=1, n_rerank=10, interaction=interaction, device="cpu"))
    r1 = np.mean([len(np.intersect1d(g[0], o[0])) / 10 for g, o in zip(starved.search(queries, 10), oracle)])
    assert r1 < recall


def test_batch_size_and_chunking_do_not_change_results(corpus, monkeypatch):
    _, snap, queries = corpus
    base = Searcher(snap, SearchParams(nprobe=3, n_rerank=40, batch_size=1, device="cpu")).search(queries, 10)
    monkeypatch.setattr(searcher_mod, "MAX_DECODED_VECTORS", 2000)
    for backend in (None, "torch"):
        for cand in ("centroid", "exhaustive"):
            p = SearchParams(candidates=cand, nprobe=3, n_rerank=40, batch_size=5, device="cpu")
            got = Searcher(snap, p, backend=backend).search(queries, 10)
            if cand == "centroid":
                same_ranking(got, base)
            else:
                same_ranking(got, brute_force(snap, queries, 10))


@pytest.mark.parametrize("interaction", ["probed", "full"])
def test_torch_twin_candidates_equal_numpy(corpus, interaction):
    _, snap, queries = corpus
    qt = Ragged(snap.codec.transform_query(queries.values), queries.offsets)
    allowed = np.arange(snap.n_docs) % 4 != 1
    kw = {"nprobe": 3, "interaction": interaction}
    gen_np = CentroidCandidates.from_snapshot(snap, **kw)
    a = gen_np.candidates(qt, 30, allowed)
    b = CentroidCandidates.from_snapshot(snap, device=torch.device("cpu"), **kw).candidates(qt, 30, allowed)
    # each generator's own scores for every candidate, to compare up to float ties at the cut
    for i, (x, y) in enumerate(zip(a, b, strict=True)):
        assert len(x) == len(y) == 30 and allowed[x].all() and allowed[y].all()
        q = qt[i]
        cand, score = gen_np._one(gen_np._similarities(q), len(q), snap.n_docs, allowed, 3, with_scores=True)
        by_row = dict(zip(cand.tolist(), score.tolist()))
        cut = score[29]
        assert min(by_row[r] for r in y) >= cut - 1e-4 and min(by_row[r] for r in x) >= cut - 1e-4
        assert x[:10].tolist() == cand[:10].tolist()
        # the torch twin's best 10, scored by the numpy kernels, are numpy's best 10 (rows differ only in ties)
        same_ranking([(y[:10], np.array([by_row[r] for r in y[:10]], np.float32))], [(cand[:10], score[:10])])


def test_probed_scores_match_definition(corpus):
    """Probed interaction: per token, max over the doc's probed centroids, else the (nprobe+1)-th sim."""
    _, snap, queries = corpus
    q = snap.codec.transform_query(queries[0])
    gen = CentroidCandidates.from_snapshot(snap, nprobe=2, interaction="probed")
    rows = gen.candidates([q], snap.n_docs)[0]
    s = q @ snap.centroids.T
    order = np.argsort(-s, axis=1)
    probe = order[:, :2]
    expect = {}
    for d in range(snap.n_docs):
        dt = set(snap.terms[snap.offsets[d] : snap.offsets[d + 1]].tolist())
        hit = False
        total = 0.0
        for i in range(len(q)):
            vals = [s[i, c] for c in probe[i] if c in dt]
            hit |= bool(vals)
            total += max(vals) if vals else s[i, order[i, 2]]
        if hit:
            expect[d] = total
    assert sorted(rows.tolist()) == sorted(expect)
    got_scores = np.array([expect[r] for r in rows])
    assert np.all(np.diff(got_scores) <= 1e-4)  # best first by the definition's scores


@pytest.mark.parametrize(
    "kw, match",
    [
        ({"nprobe": 0}, "nprobe=0 must be a positive integer"),
        ({"n_full": 0}, "n_full=0 must be a positive integer"),
        ({"interaction": "maxsim"}, "interaction='maxsim' is not one of"),
        ({"nprobe": 2.5}, "nprobe must be an int"),
    ],
)
def test_centroid_generator_rejects_bad_knobs(corpus, kw, match):
    """The generator validates its own knobs when built directly (not through SearchParams), with the
    classes SearchParams uses: a wrong type is InvalidDtypeError, a wrong value SearchParamsError."""
    _, snap, _ = corpus
    with pytest.raises(InvalidDtypeError if "an int" in match else SearchParamsError, match=match):
        CentroidCandidates.from_snapshot(snap, **kw)


def test_exhaustive_candidates_interface():
    gen = ExhaustiveCandidates(4)
    q = [np.ones((2, 3), np.float32)]
    assert [r.tolist() for r in gen.candidates(q, 2)] == [[0, 1, 2, 3]]
    with pytest.raises(SearchParamsError, match="n=0 must be a positive integer"):
        gen.candidates(q, 0)
    with pytest.raises(InvalidDtypeError, match="Ragged or a list"):
        gen.candidates(np.ones((2, 3), np.float32), 2)


class _CodesRead:
    """A code source over in-memory codes, as ``memory="bounded"`` reads them from Lance (counts the reads)."""

    def __init__(self, snap: Snapshot):
        self.snap, self.rows_read = snap, 0

    def read(self, rows: np.ndarray) -> np.ndarray:
        self.rows_read += len(rows)
        return self.snap.codes[
            ranges(self.snap.offsets[rows], self.snap.offsets[rows + 1] - self.snap.offsets[rows])
        ]


@pytest.mark.parametrize("memory", ["full", "bounded"])
@pytest.mark.parametrize(
    "device, backend",
    [("cpu", None), ("cpu", "torch"), pytest.param("cuda", None, marks=[needs_cuda, pytest.mark.gpu])],
)
def test_rows_a_live_snapshot_masks_never_return(corpus, device, backend, memory):
    """A snapshot derived for a new version keeps its deleted rows and masks them (``Snapshot.live``): on every
    backend (numpy kernels, torch on the CPU, CUDA), with codes in memory or read per candidate (bounded
    memory), they never come back, alone or under a filter, and the exhaustive ranking is exact MaxSim over the
    live rows."""
    from dataclasses import replace

    _, snap, queries = corpus
    live = np.ones(snap.n_docs, bool)
    live[::3] = False
    source = _CodesRead(snap)
    masked = (
        replace(snap, live=live, extras={})
        if memory == "full"
        else replace(snap, live=live, extras={}, codes=None, code_source=source)
    )
    params = SearchParams(device=device, nprobe=len(snap.centroids), n_rerank=snap.n_docs)
    s = Searcher(masked, params, backend=backend)
    for allowed in (None, np.arange(snap.n_docs) % 2 == 0):
        keep = live if allowed is None else live & allowed
        got = s.search(queries, 10, allowed=allowed)
        assert all(keep[r].all() and len(r) == 10 for r, _ in got)
        same_ranking(got, brute_force(snap, queries, 10, allowed=keep), atol=1e-3)
    assert (source.rows_read > 0) == (memory == "bounded")


# ----------------------------------------------------------------------------------- GPU
@needs_cuda
@pytest.mark.gpu
@pytest.mark.parametrize("interaction", ["probed", "full"])
def test_cuda_ranking_equals_cpu(corpus, interaction):
    _, snap, queries = corpus
    for nprobe, n_rerank in ((3, 40), (len(snap.centroids), snap.n_docs)):
        kw = {"nprobe": nprobe, "n_rerank": n_rerank, "interaction": interaction}
        cpu = Searcher(snap, SearchParams(device="cpu", **kw)).search(queries, 10)
        gpu = Searcher(snap, SearchParams(device="cuda", **kw)).search(queries, 10)
        same_ranking(gpu, cpu, atol=1e-3)


@needs_cuda
@pytest.mark.gpu
def test_cuda_filtered_and_auto_device(corpus):
    _, snap, queries = corpus
    allowed = np.arange(snap.n_docs) % 2 == 0
    s = Searcher(snap, SearchParams(device="auto"))
    assert s.device.type == "cuda"
    got = s.search(queries, 10, allowed=allowed)
    assert all(allowed[r].all() for r, _ in got)
    same_ranking(
        got, Searcher(snap, SearchParams(device="cpu")).search(queries, 10, allowed=allowed), atol=1e-3
    )


def test_postings_are_built_once_per_snapshot():
    docs = clustered_docs(40, seed=5)
    snap = make_snapshot(docs, n_centroids=8)
    a = Searcher(snap, SearchParams(nprobe=2, device="cpu"))
    b = Searcher(snap, SearchParams(nprobe=3, interaction="full", device="cpu"))
    assert a.generator.postings is b.generator.postings is snap.extras["postings"]


def test_nprobe_one_still_ranks(corpus):
    """Regression: at nprobe=1 the probed interaction must still separate documents (not all tie)."""
    _, snap, queries = corpus
    q = snap.codec.transform_query(queries[0])
    gen = CentroidCandidates.from_snapshot(snap, nprobe=1, interaction="probed")
    _, scores = gen._one(gen._similarities(q), len(q), snap.n_docs, None, 1, with_scores=True)
    assert len(np.unique(np.round(scores, 5))) > 3
