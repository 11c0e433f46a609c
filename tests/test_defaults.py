"""Defaults for any dimension (``default_spec``), the pooling floor (``pool<f>min<n>``) and ``spec="auto"``."""

import numpy as np
import pytest

import mvstore
import mvstore.store as ms
from mvstore.exceptions import InvalidArgumentError, InvalidDtypeError, InvalidOperationError, SpecError
from mvstore.pooling import n_clusters, pool
from mvstore.spec import bytes_per_token, default_spec, parse
from mvstore.testing import synthetic_docs
from mvstore.tune import AUTO_MIN_DOCS, ICT_MIN_TOKENS, TuneError, auto_candidates, auto_spec, inverse_cloze


@pytest.mark.parametrize("dim", [96, 128, 384, 768, 1024])
def test_default_spec_builds_and_searches_at_every_common_dim(tmp_path, dim):
    docs = synthetic_docs(60, dim, n_topics=12, min_len=4, max_len=90, seed=dim)
    idx = ms.create(tmp_path / "ix", dim=dim)  # no spec: default_spec(dim)
    assert str(idx.spec) == default_spec(dim)
    idx.add(np.arange(60), docs)
    hits = idx.search(docs[7], k=3)
    assert hits["id"].to_pylist()[0] == 7
    assert idx.stats()["spec"] == default_spec(dim)
    assert bytes_per_token(default_spec(dim), dim) <= dim / 2


def test_default_spec_rejects_bad_dims():
    # dim is an argument, not a spec: the classes store.create uses for it (not SpecError)
    for bad in (0, -3):
        with pytest.raises(InvalidArgumentError, match=f"dim={bad} must be a positive integer"):
            default_spec(bad)
    for bad in (1.5, True, "128"):
        with pytest.raises(InvalidDtypeError, match="dim must be an int"):
            default_spec(bad)


def test_a_spec_that_does_not_fit_the_dim_is_still_an_error(tmp_path):
    with pytest.raises(SpecError, match="trunc368"):
        ms.create(tmp_path / "ix", spec="pool8,trunc368,bin", dim=128)


def test_pooling_floor_keeps_short_documents_whole():
    assert n_clusters(np.array([10, 40, 200]), 4, min_vectors=16).tolist() == [10, 16, 50]
    docs = synthetic_docs(30, 16, n_topics=6, min_len=3, max_len=120, seed=1)
    out = pool(docs, 4, min_vectors=24)
    want = [max(-(-n // 4), min(n, 24)) for n in docs.lengths.tolist()]
    assert out.lengths.tolist() == want
    short = np.flatnonzero(docs.lengths <= 24)
    assert len(short) and all(np.allclose(out[i], docs[i], atol=1e-6) for i in short)  # untouched
    assert parse("pool4min24").pool(docs).lengths.tolist() == want


def test_pooling_floor_spec_grammar():
    sp = parse("kpool1.5min8,sq4")
    assert (sp.pool_factor, sp.pool_method, sp.pool_min_vectors, str(sp)) == (
        1.5,
        "kmeans",
        8,
        "kpool1.5min8,sq4",
    )
    assert parse("pool2").pool_min_vectors == 0
    for bad in ("pool4min0", "pool4min", "pool4min-2", "pool4minx"):
        with pytest.raises(SpecError, match="pooling floor|bad pooling stage"):
            parse(bad)


def test_auto_candidates_fit_the_budget():
    for dim, budget in ((96, 4), (128, 8), (384, 16), (1024, 32)):
        cands = auto_candidates(dim, budget)
        assert cands and all(bytes_per_token(s, dim) <= budget for s in cands)
    with pytest.raises(TuneError, match="raise max_bytes_per_token"):
        auto_spec(synthetic_docs(60, 128, seed=2), 0.1)


def _cloze_docs(n: int, dim: int, seed: int) -> list[np.ndarray]:
    """Documents whose tokens lean on directions of their own, so that a window of one points to it."""
    rng = np.random.default_rng(seed)
    out = []
    for m in rng.integers(20, 60, n):
        x = rng.standard_normal((3, dim))[rng.integers(0, 3, m)] + 0.6 * rng.standard_normal((m, dim))
        out.append((x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32))
    return out


def test_inverse_cloze_cuts_windows_out_of_their_documents():
    docs = mvstore.Ragged.from_list(_cloze_docs(60, 16, seed=1) + [np.ones((4, 16), np.float32)] * 5)
    corpus, q, t = inverse_cloze(docs, 30, 10**6, seed=0)
    assert len(corpus) == len(docs) and len(q) == 30 and corpus.n_tokens + q.n_tokens == docs.n_tokens
    assert (corpus.lengths[t] * 2 >= q.lengths).all() and (
        corpus.lengths[t] + q.lengths >= ICT_MIN_TOKENS
    ).all()
    for j, i in enumerate(t):  # each query is a window of the document it was cut from, not in it any more
        whole = np.concatenate([corpus[i], q[j]])
        assert sorted(map(bytes, whole)) == sorted(map(bytes, np.asarray(docs[i])))
    with pytest.raises(TuneError, match="longer documents"):
        auto_spec([np.ones((4, 16), np.float32)] * 60, 8)
    for bad in ({"n_queries": 0}, {"sample_tokens": -1}, {"fit_vectors": 0}):
        with pytest.raises(InvalidArgumentError, match=f"{next(iter(bad))}=.* must be a positive integer"):
            auto_spec(docs, 8, **bad)
    with pytest.raises(InvalidDtypeError, match="n_queries must be an int"):
        auto_spec(docs, 8, n_queries=2.5)


def test_auto_spec_picks_within_budget_and_beats_a_worse_codec():
    docs = _cloze_docs(120, 64, seed=3)
    res = auto_spec(docs, 16, sample_tokens=4000, n_queries=40)
    assert res.n_queries == 40 and res.exact_fidelity > 0.5  # a window finds its own document
    assert res.spec in [r["spec"] for r in res.table] and "inverse-cloze" in str(res)
    picked = next(r for r in res.table if r["picked"])
    assert picked["within_budget"] and picked["bytes_per_token"] <= 16
    assert res.fidelity == max(r["fidelity"] for r in res.table if r["within_budget"])
    assert res.fidelity > min(r["fidelity"] for r in res.table)  # the pick is measured, not the first row


def test_create_auto_picks_on_first_add_and_keeps_it(tmp_path):
    docs = synthetic_docs(80, 48, n_topics=16, min_len=8, max_len=50, seed=4, spread=0.25)
    idx = ms.create(tmp_path / "ix", dim=48, spec="auto", max_bytes_per_token=12)
    assert idx.spec is None and idx.stats()["spec"] == "auto" and "auto" in repr(idx)
    idx.add(np.arange(70), docs[:70])
    st = idx.stats()
    picked = st["auto"]["spec"]
    assert st["spec"] == picked == str(idx.spec) and picked in [r["spec"] for r in st["auto"]["table"]]
    assert st["auto"]["budget"] == 12 and st["auto"]["seconds"] >= 0 and st["auto"]["table"]
    assert st["bytes_per_token"] <= 12 + 4 / 1  # codes within budget (+ int32 terms per stored vector)
    again = ms.open(tmp_path / "ix")
    assert str(again.spec) == picked
    again.add(np.arange(70, 80), docs[70:])  # later adds encode with the picked spec
    assert str(again.spec) == picked and again.search(docs[75], k=1)["id"].to_pylist() == [75]
    assert (
        ms.create(tmp_path / "ix", dim=48, spec="auto", max_bytes_per_token=12, exist_ok=True).spec
        is not None
    )


def test_auto_errors_name_the_fix(tmp_path):
    with pytest.raises(SpecError, match="max_bytes_per_token="):
        ms.create(tmp_path / "a", dim=32, spec="auto")
    with pytest.raises(SpecError, match='only applies to spec="auto"'):
        ms.create(tmp_path / "b", dim=32, spec="sq8", max_bytes_per_token=8)
    with pytest.raises(TypeError, match=r"dim must be an int .*create\(uri, dim=128\)"):
        ms.create(tmp_path / "c")
    idx = ms.create(tmp_path / "d", dim=32, spec="auto", max_bytes_per_token=8)
    few = synthetic_docs(AUTO_MIN_DOCS - 1, 32, seed=5)
    with pytest.raises(TuneError, match=f"at least {AUTO_MIN_DOCS}.*pass a spec"):
        idx.add(np.arange(len(few)), few)
    assert idx.version == 0 and idx.spec is None  # nothing was written
    with pytest.raises(InvalidOperationError, match="from documents"):
        idx.train(few.values)


def test_explicit_train_with_auto(tmp_path):
    docs = synthetic_docs(70, 32, n_topics=12, min_len=8, max_len=40, seed=6, spread=0.25)
    idx = ms.create(tmp_path / "ix", dim=32, spec="auto", max_bytes_per_token=8)
    idx.train(docs)
    assert idx.spec is not None and idx.stats()["auto"]["spec"] == str(idx.spec)
    idx.add(np.arange(10), docs[:10])
    assert idx.search(docs[3], k=1)["id"].to_pylist() == [3]


def test_top_level_exports():
    assert mvstore.default_spec is default_spec and not hasattr(mvstore, "DEFAULT_SPEC")


def test_default_builds_print_no_kmeans_warning(tmp_path, capfd):
    """faiss warns (on stderr, from C) when k-means gets fewer than 39 points per centroid: the store sizes
    its centroids so that small corpora, the usual first index, build quietly."""
    for n, dim in ((40, 16), (300, 64)):
        docs = synthetic_docs(n, dim, n_topics=12, min_len=4, max_len=60, seed=n)
        idx = ms.create(tmp_path / f"ix{n}", dim=dim)
        idx.add(np.arange(n), docs)
        assert idx.stats()["n_centroids"] >= 1
    assert "WARNING clustering" not in capfd.readouterr().err


def test_tune_grid_shows_the_default_when_it_fits():
    from mvstore.tune import default_candidates

    assert default_spec(128) in default_candidates(128, bytes_per_token(default_spec(128), 128))
    assert default_spec(128) not in default_candidates(128, 8)


def test_pooling_floor_argument_errors():

    docs = synthetic_docs(4, 8, min_len=3, max_len=9, seed=7)
    with pytest.raises(InvalidArgumentError, match="min_vectors=-1 must be >= 0"):
        pool(docs, 2, min_vectors=-1)
    with pytest.raises(InvalidDtypeError, match="min_vectors must be an int"):
        pool(docs, 2, min_vectors=1.5)


def test_tune_skips_a_candidate_the_sample_cannot_fit():
    from mvstore.tune import tune

    docs = synthetic_docs(30, 32, n_topics=8, min_len=4, max_len=8, seed=8)  # ~180 vectors: pq needs 256
    queries = synthetic_docs(5, 32, n_topics=8, min_len=3, max_len=5, seed=9)
    res = tune(docs, queries, max_bytes_per_token=64, candidates=["pq16", "sq8"], k=5)
    assert res.spec == "sq8" and "pq16" in res.skipped and "256" in res.skipped["pq16"]
    with pytest.raises(TuneError, match="could be fit on this sample"):
        tune(docs, queries, max_bytes_per_token=64, candidates=["pq16"], k=5)
