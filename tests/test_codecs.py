"""Codec conformance suite: every registered codec and several pipelines pass the same checks.

New codec families are covered automatically: ``REGISTRY`` is iterated, and a family whose token is not its
bare name must add an example token to ``EXAMPLES`` (the test fails until it does).
"""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
import torch

from mvstore.codecs import REGISTRY, Pipeline, _bits
from mvstore.codecs.base import Codec
from mvstore.exceptions import (
    DimensionMismatchError,
    IndexCorruptedError,
    InvalidDtypeError,
    InvalidVectorsError,
    NotFittedError,
    SpecError,
)
from mvstore.spec import build_pipeline
from mvstore.testing import clustered_vectors

DIM = 32
#: example token per registered family (bare-name families need none)
EXAMPLES = {
    "pca": "pca16",
    "trunc": "trunc16",
    "pq": "pq8",
    "rq": "rq2c16",
    "spk": "spk64t4",
    "slim": "slim64t4",
}
#: families that need something beyond fit() before use
SETUP = {
    "slim": lambda c: c.set_head(
        np.random.default_rng(3).normal(size=(c.vocab, c.dim_in)).astype(np.float32)
    ),
}
#: codecs whose decode -> encode returns exactly the same reconstruction
STABLE = {"fp32", "fp16", "sq8", "sq4", "bin", "pq"}
PIPELINES = [
    "pca64,sq8",
    "trunc96,rq2",
    "pool2,pca96,pq16",
    "pca32,bin",
    "trunc64,sq4",
    "pca48,rq4c32",
    "pca64",
    "fp16",
]
PDIM = 128


X = clustered_vectors(2000, DIM)
XP = clustered_vectors(3000, PDIM, seed=1)


@pytest.fixture(autouse=True, scope="module")
def _one_faiss_thread():
    """faiss's OpenMP threads spin badly on a shared 2-core box; one thread is several times faster here."""
    import faiss

    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    yield
    faiss.omp_set_num_threads(before)


def example_token(cls: type[Codec]) -> str:
    token = EXAMPLES.get(cls.name, cls.name)
    if cls.parse_token(token) is None:
        pytest.fail(f"add an example spec token for {cls.__name__} ({cls.form()}) to EXAMPLES")
    return token


def make(token: str, dim: int = DIM) -> Codec:
    for cls in REGISTRY.values():
        c = cls.from_token(token, dim) if cls.parse_token(token) is not None else None
        if c is not None:
            SETUP.get(cls.name, lambda c: c)(c)
            return c
    raise AssertionError(token)


def _names():
    return sorted(REGISTRY)


def _case(param):
    """(fresh codec factory, sample) for a registry name or a pipeline spec."""
    if param in REGISTRY:
        token = example_token(REGISTRY[param])
        return (lambda: make(token)), X
    return (lambda: build_pipeline(param, PDIM)), XP


CASES = [*_names(), *PIPELINES]


@pytest.fixture(scope="module")
def fitted():
    cache: dict[str, Codec] = {}

    def get(param):
        if param not in cache:
            factory, x = _case(param)
            cache[param] = factory().fit(x)
        return cache[param]

    return get


def _is_sparse(c: Codec) -> bool:
    q = c.quantizer if isinstance(c, Pipeline) else c
    return hasattr(q, "sparse_decode")


def _family(c: Codec) -> str:
    return (c.quantizer if isinstance(c, Pipeline) else c).name


@pytest.mark.parametrize("param", CASES)
def test_shapes_and_dtypes(param, fitted):
    c = fitted(param)
    _, x = _case(param)
    codes = c.encode(x[:100])
    if c.kind == "transform":
        assert codes.dtype == np.float32 and codes.shape == (100, c.dim_out) and c.code_size == 0
    else:
        assert codes.dtype == np.uint8 and codes.shape == (100, c.code_size) and c.code_size > 0
    dec = c.decode(codes)
    assert dec.dtype == np.float32 and dec.shape == (100, c.dim_out)
    q = c.transform_query(x[:7])
    assert q.dtype == np.float32 and q.shape == (7, c.dim_out)
    assert c.encode(x[:0]).shape[0] == 0
    assert c.is_fitted and c.spec() in repr(c)


@pytest.mark.parametrize("param", CASES)
def test_reencode_stability(param, fitted):
    c = fitted(param)
    _, x = _case(param)
    if isinstance(c, Pipeline):  # decoded vectors live in the quantizer's input space
        x, c = c.transform(x), c.quantizer
    if c.kind == "transform" or _is_sparse(c) or c.dim_out != c.dim_in:
        pytest.skip("decoded vectors live in another space than the input: nothing to re-encode")
    codes = c.encode(x)
    dec = c.decode(codes)
    dec2 = c.decode(c.encode(dec))
    if _family(c) in STABLE:
        np.testing.assert_array_equal(dec2, dec)
        if _family(c) != "pq":  # pq may hold duplicate centroids; everything else is code-exact
            np.testing.assert_array_equal(c.encode(dec), codes)
    else:  # bounded drift: re-encoding moves a reconstruction less than the original quantization error
        err1 = np.linalg.norm(dec - x, axis=1).mean()
        drift = np.linalg.norm(dec2 - dec, axis=1).mean()
        assert drift <= err1, (drift, err1)


@pytest.mark.parametrize("param", CASES)
def test_state_round_trip(param, fitted):
    c = fitted(param)
    factory, x = _case(param)
    arrays, meta = c.get_state()
    meta2 = json.loads(json.dumps(meta))
    arrays2 = {}
    for k, v in arrays.items():
        assert isinstance(v, np.ndarray), k
        buf = io.BytesIO()
        np.save(buf, v, allow_pickle=False)
        buf.seek(0)
        arrays2[k] = np.load(buf, allow_pickle=False)
    fresh = factory()
    restored = fresh.set_state(arrays2, meta2)
    assert restored is fresh and fresh.is_fitted
    codes = c.encode(x[:200])
    np.testing.assert_array_equal(fresh.encode(x[:200]), codes)
    np.testing.assert_array_equal(fresh.decode(codes), c.decode(codes))
    np.testing.assert_array_equal(fresh.transform_query(x[:5]), c.transform_query(x[:5]))
    a3, m3 = fresh.get_state()
    assert m3 == meta2 and sorted(a3) == sorted(arrays)


@pytest.mark.parametrize("param", CASES)
def test_state_validation(param, fitted):
    c = fitted(param)
    factory, _ = _case(param)
    arrays, meta = c.get_state()
    with pytest.raises(IndexCorruptedError, match="stored codec state is for"):
        factory().set_state(arrays, {**meta, "spec": "sq8,nonsense"})
    with pytest.raises(IndexCorruptedError, match="stored codec state is for"):
        factory().set_state(arrays, {**meta, "dim_in": c.dim_in + 1})
    if arrays:
        key = sorted(arrays)[0]
        broken = {k: v for k, v in arrays.items() if k != key}
        with pytest.raises(IndexCorruptedError):
            factory().set_state(broken, meta)
        bad_shape = {**arrays, key: np.zeros((3, 5, 7), np.float32)}
        with pytest.raises(IndexCorruptedError):
            factory().set_state(bad_shape, meta)


@pytest.mark.parametrize("param", CASES)
def test_decode_torch_matches_decode(param, fitted):
    c = fitted(param)
    _, x = _case(param)
    codes = c.encode(x[:300])
    if c.kind == "transform":
        pytest.skip("transforms store float vectors, not codes")
    got = c.decode_torch(torch.from_numpy(codes))
    assert isinstance(got, torch.Tensor) and got.dtype == torch.float32
    np.testing.assert_allclose(got.numpy(), c.decode(codes), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("param", CASES)
def test_score_table_scores_like_decode(param, fitted):
    """A codec that offers a score table must score every code exactly like decode-then-multiply."""
    c = fitted(param)
    _, x = _case(param)
    if c.kind == "transform":
        pytest.skip("transforms store float vectors, not codes")
    codes = c.encode(x[:200])
    q = c.transform_query(x[200:213])
    table = c.score_table(q)
    fam = _family(c)
    if table is None:
        assert fam not in ("bin", "pq", "sq4"), f"{fam} decodes unit by unit and should offer a score table"
        return
    # bit codes get nibble tables (16 rows per unit, cache-resident), product codes one table per byte
    assert table.shape[1] == (16 if fam in ("bin", "sq4") else 256)
    assert table.dtype == np.float32 and table.flags.c_contiguous
    levels = table.shape[1]
    n_units = {16: 2 * c.code_size, 256: c.code_size}[levels]
    assert table.shape == (n_units, levels, 16)  # 13 query tokens padded to a multiple of 8
    assert not table[:, :, 13:].any()  # padding columns are zero
    units = _bits.table_units(codes, levels)
    via_table = table[np.arange(n_units)[None, :], units].sum(1)[:, :13]  # (n_codes, n_tokens)
    np.testing.assert_allclose(via_table, c.decode(codes) @ q.T, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("param", CASES)
def test_bad_inputs(param, fitted):
    c = fitted(param)
    factory, x = _case(param)
    fresh = factory()
    if fresh.requires_fit:
        with pytest.raises(NotFittedError, match=r"call \.fit"):
            fresh.encode(x[:3])
        with pytest.raises(NotFittedError, match=r"call \.fit"):
            fresh.get_state()
    with pytest.raises(DimensionMismatchError, match=f"expects dim {c.dim_in}"):
        c.encode(np.zeros((3, c.dim_in + 1), np.float32))
    with pytest.raises(DimensionMismatchError):
        c.transform_query(np.zeros((3, c.dim_in - 1), np.float32))
    bad = x[:4].copy()
    bad[2, 1] = np.nan
    with pytest.raises(InvalidVectorsError, match="NaN or Inf .*row 2"):
        c.encode(bad)
    with pytest.raises(InvalidVectorsError, match="NaN or Inf"):
        factory().fit(np.concatenate([x, bad]))
    with pytest.raises(InvalidDtypeError, match="expected floating point"):
        c.encode(np.zeros((3, c.dim_in), np.int64))
    with pytest.raises(InvalidDtypeError, match="numpy array"):
        c.encode([[0.0] * c.dim_in])
    with pytest.raises(InvalidVectorsError, match="2-D"):
        c.encode(np.zeros(c.dim_in, np.float32))
    with pytest.raises(InvalidVectorsError, match="empty sample"):
        factory().fit(x[:0])
    if c.kind != "transform":
        with pytest.raises(InvalidDtypeError, match="uint8"):
            c.decode(np.zeros((2, c.code_size), np.float32))
        with pytest.raises(DimensionMismatchError, match=f"shape \\(n, {c.code_size}\\)"):
            c.decode(np.zeros((2, c.code_size + 1), np.uint8))
        with pytest.raises(InvalidDtypeError, match="uint8"):
            c.decode_torch(torch.zeros((2, c.code_size), dtype=torch.float32))


def test_every_registered_codec_is_covered():
    assert {"fp32", "fp16", "sq8", "sq4", "bin", "pca", "trunc", "pq", "rq"} <= set(REGISTRY)
    for cls in REGISTRY.values():
        token = example_token(cls)
        assert make(token).spec() == token


# ------------------------------------------------------------------------------- quality, real thresholds
def _cos(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1) + 1e-12)


XQ = clustered_vectors(4000, 64, seed=5)
_QUALITY: dict[str, Codec] = {}


def _quality_codec(spec: str) -> Codec:
    if spec not in _QUALITY:
        _QUALITY[spec] = build_pipeline(spec, 64).fit(XQ[:3000])
    return _QUALITY[spec]


@pytest.mark.parametrize(
    "spec,min_cos",
    [("fp32", 1 - 1e-6), ("fp16", 0.99999), ("sq8", 0.9995), ("sq4", 0.98), ("bin", 0.75),
     ("pq8", 0.75), ("pq16", 0.85), ("rq1c64", 0.8), ("rq2c64", 0.9), ("rq4c64", 0.97)],
)  # fmt: skip
def test_reconstruction_quality(spec, min_cos):
    test = XQ[3000:]
    c = _quality_codec(spec)
    cos = _cos(c.decode(c.encode(test)), test)
    assert cos.mean() > min_cos, (spec, float(cos.mean()))


def test_more_bits_and_centroids_reduce_error():
    test = XQ[3000:]
    err = {}
    for s in ["sq4", "sq8", "rq1c64", "rq2c64", "rq4c64", "pq8", "pq16", "bin"]:
        c = _quality_codec(s)
        err[s] = float(((c.decode(c.encode(test)) - test) ** 2).sum(1).mean())
    assert err["sq8"] < err["sq4"] < err["bin"]
    assert err["rq4c64"] < err["rq2c64"] < err["rq1c64"]
    assert err["pq16"] < err["pq8"]


def test_pca_preserves_inner_products():
    x = clustered_vectors(3000, 64, seed=7)
    full = build_pipeline("pca64", 64).fit(x)
    y = full.transform(x[:100])
    np.testing.assert_allclose(y @ y.T, x[:100] @ x[:100].T, atol=1e-4)  # orthonormal basis: exact
    comps = full.transforms[0].components_
    np.testing.assert_allclose(comps.T @ comps, np.eye(64), atol=1e-4)
    half = build_pipeline("pca32", 64).fit(x)
    z = half.transform(x[:200])
    ip_err = np.abs(z @ z.T - x[:200] @ x[:200].T).mean()
    rnd = np.linalg.qr(np.random.default_rng(0).normal(size=(64, 32)))[0].astype(np.float32)
    r = x[:200] @ rnd
    assert ip_err < 0.5 * np.abs(r @ r.T - x[:200] @ x[:200].T).mean()  # far better than a random projection
    assert np.all(np.diff(half.transforms[0].explained_) <= 1e-7)


def test_trunc_keeps_leading_dims_without_fitting():
    c = build_pipeline("trunc8", 32)
    assert c.is_fitted and not c.requires_fit
    np.testing.assert_array_equal(c.transform_query(X[:3]), X[:3, :8])
    np.testing.assert_array_equal(c.decode(c.encode(X[:3])), X[:3, :8])


def test_maxsim_ranking_survives_compression():
    from mvstore.ragged import Ragged
    from mvstore.search.maxsim import maxsim_batch

    rng = np.random.default_rng(11)
    x = clustered_vectors(12000, 128, seed=11, k=64)
    lengths = rng.integers(20, 70, 200)
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    docs = Ragged(x[: offsets[-1]], offsets)
    q = Ragged(x[offsets[-1] : offsets[-1] + 20 * 8], np.arange(21) * 8)
    exact = maxsim_batch(q, docs)
    top_exact = np.argsort(-exact, axis=1)[:, :10]
    for spec, min_recall in [
        ("sq8", 0.95),
        ("pca64,sq8", 0.85),
        ("pca64,rq4c256", 0.85),
        ("pca64,pq16", 0.75),
    ]:
        c = build_pipeline(spec, 128).fit(docs.values[::2])
        dec = Ragged(c.decode(c.encode(docs.values)), offsets)
        approx = maxsim_batch(Ragged(c.transform_query(q.values), q.offsets), dec)
        top = np.argsort(-approx, axis=1)[:, :10]
        recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(top, top_exact)])
        assert recall >= min_recall, (spec, recall)


# ------------------------------------------------------------------------------- pipeline specifics
def test_pipeline_structure_and_errors():
    from mvstore.codecs import FP16, PCA, SQ8

    p = Pipeline([PCA(32, 16), SQ8(16)])
    assert p.spec() == "pca16,sq8" and p.dim_out == 16 and p.code_size == 16 and not p.is_fitted
    assert Pipeline([PCA(32, 16)]).quantizer.spec() == "fp32"
    with pytest.raises(SpecError, match="is a quantizer but is not last"):
        Pipeline([SQ8(32), PCA(32, 16)])
    with pytest.raises(DimensionMismatchError, match="takes dim 32 but stage 0 .* outputs dim 16"):
        Pipeline([PCA(32, 16), FP16(32)])
    with pytest.raises(SpecError, match="at least one stage"):
        Pipeline([])
    with pytest.raises(SpecError, match="must be \\(non-pipeline\\) codecs"):
        Pipeline([p])
    with pytest.raises(NotFittedError, match=r"stage 'pca16' is not.*call \.fit"):
        p.transform_query(X[:2])


def test_pipeline_fits_stages_on_transformed_sample():
    p = build_pipeline("pca16,sq8", DIM).fit(X)
    pca, sq = p.stages
    y = pca.encode(X)
    np.testing.assert_allclose(sq.lo_, build_pipeline("sq8", 16).fit(y).quantizer.lo_, atol=1e-6)
    np.testing.assert_array_equal(p.encode(X[:10]), sq.encode(y[:10]))


def test_pipeline_state_is_namespaced_per_stage():
    p = build_pipeline("pca16,rq2c16", DIM).fit(X)
    arrays, meta = p.get_state()
    assert set(arrays) == {"0.components", "0.explained", "1.centroids", "1.cutoffs", "1.weights"}
    assert [m["spec"] for m in meta["stages"]] == ["pca16", "rq2c16"] and meta["spec"] == "pca16,rq2c16"
    with pytest.raises(IndexCorruptedError, match="arrays of no stage"):
        build_pipeline("pca16,rq2c16", DIM).set_state({**arrays, "7.x": np.zeros(1)}, meta)
    with pytest.raises(IndexCorruptedError, match="stage states"):
        build_pipeline("pca16,rq2c16", DIM).set_state(arrays, {**meta, "stages": meta["stages"][:1]})


def test_rq_coarse_terms_and_centroids():
    p = build_pipeline("pca16,rq2c16", DIM).fit(X)
    codes = p.encode(X)
    terms = p.coarse_terms(codes)
    assert terms.dtype == np.int64 and terms.min() >= 0 and terms.max() < 16
    assert p.has_coarse and p.coarse_centroids.shape == (16, 16)
    # the term is the nearest centroid of the transformed vector
    y = p.transform(X)
    d = ((y[:, None, :] - p.coarse_centroids[None]) ** 2).sum(-1)
    assert (terms == d.argmin(1)).mean() > 0.99
    assert not build_pipeline("pca16,sq8", DIM).has_coarse
    with pytest.raises(AttributeError, match="only rq"):
        build_pipeline("sq8", DIM).coarse_centroids  # noqa: B018
    bad = codes.copy()
    bad[:, :2] = 255  # centroid id 65535 does not exist
    with pytest.raises(InvalidVectorsError, match="not produced by this codec"):
        p.decode(bad)


def test_rq_default_centroids_and_wide_ids():
    from mvstore.codecs.base import default_n_centroids
    from mvstore.codecs.residual import RQ

    rq = RQ(DIM, 2).fit(X)
    assert (
        rq.spec() == "rq2"
        and len(rq.centroids_)
        == default_n_centroids(len(X), points_per_centroid=32, max_centroids=65536)
        == 32
    )
    assert RQ(DIM, 2, 70000).code_size == 4 + 8
    with pytest.raises(InvalidVectorsError, match="needs at least 5000 sample vectors"):
        RQ(DIM, 2, 5000).fit(X)
    with pytest.raises(SpecError, match="must be 1, 2 or 4"):
        RQ(DIM, 3)


def test_pq_needs_enough_samples():
    with pytest.raises(InvalidVectorsError, match="at least 256 sample vectors"):
        build_pipeline("pq8", DIM).fit(X[:100])


# ------------------------------------------------------------------------------- the frontier benchmark
def test_frontier_rows_on_synthetic_data(tmp_path):
    import sys
    from pathlib import Path
    from types import SimpleNamespace

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from benchmarks.frontier import frontier_rows
    from mvstore.eval import run_from_scores
    from mvstore.ragged import Ragged
    from mvstore.search.maxsim import maxsim_batch

    rng = np.random.default_rng(2)
    x = clustered_vectors(3000, 32, seed=2, k=16)
    lengths = rng.integers(10, 30, 60)
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    docs = Ragged(x[: offsets[-1]], offsets)
    queries = Ragged(x[offsets[-1] : offsets[-1] + 40], np.arange(11) * 4)
    doc_ids = [f"d{i}" for i in range(len(docs))]
    query_ids = [f"q{i}" for i in range(len(queries))]
    exact = run_from_scores(maxsim_batch(queries, docs), query_ids, doc_ids, 100)
    qrels = {q: {exact[q][0]: 1} for q in query_ids}  # the exact top-1 is "relevant"
    data = SimpleNamespace(docs=docs, queries=queries, doc_ids=doc_ids, query_ids=query_ids, qrels=qrels)
    specs = ["fp32", "pool2,pca16,sq8", "pool2,rq2c16"]
    rows = frontier_rows(data, specs, exact_run=exact, latency_queries=2, cache_dir=tmp_path)
    assert [r["spec"] for r in rows] == specs
    assert (
        rows[0]["ndcg10"] == 1.0 and rows[0]["recall10_vs_exact"] == 1.0 and rows[0]["bytes_per_token"] == 128
    )
    pooled = rows[1]
    assert pooled["bytes_per_token"] == pytest.approx(16 * docs.n_tokens / 2 / docs.n_tokens, rel=0.1)
    assert pooled["pool_tokens_per_s"] > 0 and pooled["pool_time_from_cache"] is False
    assert rows[2]["pool_time_from_cache"] is False  # reused in memory within the run
    assert 0.5 < pooled["recall10_vs_exact"] <= 1.0
    again = frontier_rows(data, specs[1:2], exact_run=exact, latency_queries=1, cache_dir=tmp_path)
    assert again[0]["pool_time_from_cache"] is True and again[0]["ndcg10"] == pooled["ndcg10"]


def test_score_table_helpers_reject_bad_input():
    q = np.ones((2, 4), np.float32)
    low, step = np.zeros(4, np.float32), np.ones(4, np.float32)
    with pytest.raises(ValueError, match="need 1, 2 or 4 bits per value, got 8"):
        _bits.affine_score_table(q, low, step, 8)
    with pytest.raises(ValueError, match=r"must be \(nq, d\) with low/step of shape \(d,\)"):
        _bits.affine_score_table(q, low[:3], step, 1)
    with pytest.raises(ValueError, match="16 \\(nibble\\) or 256 \\(byte\\) levels per unit, got 4"):
        _bits.table_units(np.zeros((1, 2), np.uint8), 4)


def test_fp16_refuses_values_beyond_its_range():
    """float16 tops out at 65504: a larger value would be stored as inf, so encoding it is an error."""
    from mvstore.codecs import FP16

    c = FP16(4).fit(np.zeros((1, 4), np.float32))
    ok = np.array([[65504.0, -65504.0, 1.0, 0.0]], np.float32)
    assert np.isfinite(c.decode(c.encode(ok))).all()
    with pytest.raises(
        InvalidVectorsError, match="vector 1 has the value 7e\\+04 at dimension 2.*spec 'fp32'"
    ):
        c.encode(np.vstack([ok, [[0.0, 0.0, 7e4, 0.0]]]).astype(np.float32))
    p = build_pipeline("pca2,fp16", 4).fit(np.random.default_rng(0).normal(size=(50, 4)).astype(np.float32))
    with pytest.raises(InvalidVectorsError, match="beyond float16's range"):  # also after a transform
        p.encode(np.full((1, 4), 1e5, np.float32))
