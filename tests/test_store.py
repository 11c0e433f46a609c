"""mvstore.store: lifecycle, layout, time travel, filters, stable ids, errors."""

from __future__ import annotations

import json
import os
import shutil
from datetime import timedelta

import lancedb
import numpy as np
import pyarrow as pa
import pytest

import mvstore.store as ms
from mvstore import Ragged
from mvstore.exceptions import (
    DimensionMismatchError,
    DuplicateIdError,
    IndexCorruptedError,
    InvalidArgumentError,
    InvalidDtypeError,
    InvalidIdError,
    InvalidVectorsError,
    SearchParamsError,
    SpecError,
)
from mvstore.search.maxsim import maxsim_batch
from mvstore.search.params import SearchParams
from mvstore.store import (
    FilterError,
    IndexExistsError,
    InvalidMetadataError,
    InvalidOperationError,
    UnknownIdError,
)
from mvstore.testing import token_docs, unit

DIM = 32
EXACT = SearchParams(candidates="exhaustive")


def make_docs(n, seed=0, lo=30, hi=80, dim=DIM, shift=None):
    return token_docs(n, dim, seed=seed, lo=lo, hi=hi, shift=shift)


def meta(ids):
    return {"lang": ["en" if i % 2 else "fr" for i in ids], "year": [2000 + i % 30 for i in ids]}


@pytest.fixture
def uri(tmp_path):
    return str(tmp_path / "ix")


@pytest.fixture(scope="module")
def docs():
    return make_docs(120)


def build(uri, docs, spec="fp16", n=None, **kw):
    kw.setdefault("n_centroids", 16)
    idx = ms.create(uri, spec=spec, dim=DIM, **kw)
    n = len(docs) if n is None else n
    idx.add(np.arange(n), docs[:n], metadata=meta(range(n)))
    return idx


def as_rows(t: pa.Table):
    return list(zip(t["query"].to_pylist(), t["id"].to_pylist(), np.round(t["score"].to_numpy(), 4).tolist()))


# ----------------------------------------------------------------------------------------- lifecycle
def test_layout_readable_by_plain_lancedb(uri, docs):
    idx = build(uri, docs)
    assert sorted(os.listdir(uri)) == [
        "codec.lance",
        "docs.lance",
        "integrity",
        "mvstore.json",
        "mvstore.lock",
    ]
    m = json.load(open(os.path.join(uri, "mvstore.json")))
    assert (m["format"], m["spec"], m["dim"]) == ("mvstore", "fp16", DIM)
    tbl = lancedb.connect(uri).open_table("docs").to_arrow()
    assert tbl.num_rows == len(docs)
    assert m["format_version"] == 3
    assert tbl.column_names == [
        "id", "lang", "year", "_mv_n_tokens", "_mv_n_vectors", "_mv_codes", "_mv_terms", "_mv_recon_err",
        "_mv_row_checksum",
    ]  # fmt: skip
    assert tbl.schema.field("_mv_terms").type == pa.list_(pa.int32())
    row = tbl.slice(0, 1).to_pylist()[0]
    assert row["_mv_n_tokens"] == len(docs[0]) == row["_mv_n_vectors"] == len(row["_mv_terms"])
    assert len(row["_mv_codes"]) == len(docs[0]) * DIM * 2  # fp16
    assert tbl.schema.metadata[b"mvstore.state_id"] == b"1"
    assert idx.version == 1 and len(idx) == len(docs)
    assert idx.stats()["drift"] is None  # fp16 is (near) lossless: no drift to measure


def test_search_equals_exact_maxsim_and_result_schema(uri, docs):
    idx = build(uri, docs)
    queries = [d[:8] for d in docs[:5]]
    t = idx.search(queries, k=4, params=EXACT, columns=["lang", "year"])
    assert t.schema.field("query").type == pa.int32() and t.schema.field("rank").type == pa.int32()
    assert t.schema.field("id").type == pa.int64() and t.schema.field("score").type == pa.float32()
    assert t.column_names == ["query", "rank", "id", "score", "lang", "year"]
    ref = maxsim_batch(Ragged.from_list(queries), Ragged.from_list(docs))  # fp16 codes: scores within 1e-2
    for qi in range(5):
        sub = t.filter(pa.compute.equal(t["query"], qi))
        assert sub["rank"].to_pylist() == [0, 1, 2, 3]
        best = np.argsort(-ref[qi])[:4]
        assert sub["id"].to_pylist()[0] == qi
        np.testing.assert_allclose(sub["score"].to_numpy(), ref[qi][best], atol=2e-2)
        assert sub["lang"].to_pylist() == ["en" if i % 2 else "fr" for i in sub["id"].to_pylist()]
    df = t.to_pandas()
    assert list(df.columns[:4]) == ["query", "rank", "id", "score"] and len(df) == 20
    # a single 2-D query matrix is one query
    assert idx.search(docs[7], k=1)["id"].to_pylist() == [7]


def test_string_ids_and_reopen_gives_same_results(uri, docs):
    idx = ms.create(uri, spec="sq8", dim=DIM, n_centroids=16)
    ids = [f"doc-{i}'x" for i in range(60)]  # quote in ids: SQL escaping in delete
    idx.add(ids, docs[:60])
    t1 = idx.search(docs[:3], k=5)
    assert t1.schema.field("id").type == pa.string() and t1["id"].to_pylist()[0] == "doc-0'x"
    again = ms.open(uri)
    assert as_rows(again.search(docs[:3], k=5)) == as_rows(t1)
    again.delete(["doc-0'x"])
    assert "doc-0'x" not in again.search(docs[0], k=5)["id"].to_pylist()


def test_later_adds_reuse_the_trained_codec(uri, docs):
    idx = build(uri, docs, spec="sq8", n=60)
    state_rows = lancedb.connect(uri).open_table("codec").count_rows()
    v = idx.add(np.arange(60, 120), docs[60:], metadata=meta(range(60, 120)))
    assert v == 2 and len(idx) == 120
    assert lancedb.connect(uri).open_table("codec").count_rows() == state_rows  # no retraining
    assert lancedb.connect(uri).open_table("docs").schema.metadata[b"mvstore.state_id"] == b"1"
    assert idx.search(docs[100], k=1)["id"].to_pylist() == [100]
    s = idx.stats()
    assert s["docs"] == 120 and s["tokens"] == sum(len(d) for d in docs) == s["vectors"]
    assert s["code_size"] == DIM and s["bytes_per_token"] == DIM + 4  # sq8 codes + int32 term
    assert s["stored_bytes"] == s["vectors"] * (DIM + 4) and s["disk_bytes"] > s["stored_bytes"] * 0.5
    assert s["spec"] == "sq8" and s["version"] == 2 and s["n_centroids"] == 16
    assert 0.5 < s["drift"] < 1.5  # same distribution as the training batch: below the retrain threshold


def test_pooling_spec_stores_original_token_counts(uri, docs):
    idx = build(uri, docs[:30], spec="pool2,sq8")
    tbl = lancedb.connect(uri).open_table("docs").to_arrow()
    n_tok, n_vec = tbl["_mv_n_tokens"].to_numpy(), tbl["_mv_n_vectors"].to_numpy()
    np.testing.assert_array_equal(n_tok, [len(d) for d in docs[:30]])
    np.testing.assert_array_equal(n_vec, np.ceil(n_tok / 2))
    s = idx.stats()
    assert s["tokens"] == n_tok.sum() and s["vectors"] == n_vec.sum()
    assert s["bytes_per_token"] == pytest.approx((DIM + 4) * n_vec.sum() / n_tok.sum())
    assert idx.search(docs[4], k=1)["id"].to_pylist() == [4]


def test_rq_terms_come_from_the_codec_coarse_centroids(uri, docs):
    idx = build(uri, docs[:60], spec="rq2c16", n_centroids=None)
    snap = idx.snapshot()
    np.testing.assert_array_equal(snap.terms, snap.codec.coarse_terms(snap.codes))
    np.testing.assert_array_equal(snap.centroids, snap.codec.coarse_centroids)
    assert "index.centroids" not in lancedb.connect(uri).open_table("codec").to_arrow()["name"].to_pylist()
    assert idx.stats()["n_centroids"] == 16
    t = idx.search(docs[:3], k=3)
    assert t["id"].to_pylist()[::3] == [0, 1, 2] and as_rows(ms.open(uri).search(docs[:3], k=3)) == as_rows(t)


def test_explicit_train_before_first_add(uri, docs):
    idx = ms.create(uri, spec="sq8", dim=DIM, n_centroids=8)
    idx.train(docs[:30])
    assert idx.stats()["trained"] and idx.version == 0
    reopened = ms.open(uri)  # the explicit state survives a reopen before any add
    assert reopened.stats()["trained"] and reopened.stats()["n_centroids"] == 8
    reopened.add(np.arange(10), docs[50:60])
    snap = reopened.snapshot()
    assert snap.centroids.shape == (8, DIM) and snap.terms.max() < 8 and len(snap.terms) == snap.n_vectors
    with pytest.raises(InvalidOperationError, match="optimize\\(retrain=True\\)"):
        reopened.train(docs[:5])


def test_streaming_add_batches_is_one_commit(uri, docs):
    idx = ms.create(uri, spec="fp16", dim=DIM, n_centroids=16)
    batches = ((np.arange(i, i + 20), docs[i : i + 20], meta(range(i, i + 20))) for i in range(0, 120, 20))
    assert idx.add_batches(batches) == 1
    assert len(idx) == 120 and idx.versions()[-1]["n_docs"] == 120
    assert idx.add((np.arange(i, i + 2) + 500, docs[i : i + 2]) for i in range(0, 6, 2)) == 2  # add(iterable)
    assert len(idx) == 126
    with pytest.raises(InvalidVectorsError, match="add\\(\\) got no vectors"):
        idx.add(np.arange(3))
    with pytest.raises(InvalidDtypeError, match="batch 0 is a int"):
        idx.add([1, 2])
    assert idx.search(docs[111], k=1, columns=["year"]).to_pylist()[0]["year"] == 2000 + 111 % 30
    with pytest.raises(DuplicateIdError, match="id 0 is already in the index.*upsert"):
        idx.add_batches([(np.arange(200, 210), docs[:10]), (np.arange(0, 10), docs[:10])])
    with pytest.raises(DuplicateIdError, match="id 300 is already"):  # repeated across batches of one stream
        idx.add_batches([(np.arange(300, 305), docs[:5]), (np.arange(300, 305), docs[:5])])
    assert idx.version == 2 and len(ms.open(uri)) == 126


def test_delete_keeps_ids_stable_through_compaction_and_cleanup(uri, docs):
    idx = build(uri, docs, n=60)
    idx.add(np.arange(60, 120), docs[60:], metadata=meta(range(60, 120)))
    queries = [d[:6] for d in docs[::7]]
    before = idx.search(queries, k=5, params=EXACT, columns=["lang"])
    gone = [0, 7, 14, 61, 119]
    idx.delete(gone)
    assert len(idx) == 115
    after = idx.search(queries, k=5, params=EXACT)
    assert not set(gone) & set(after["id"].to_pylist())
    kept = before.filter(pa.compute.invert(pa.compute.is_in(before["id"], pa.array(gone, pa.int64()))))
    # every surviving hit keeps its id and score
    got = {(q, i): s for q, i, s in as_rows(after)}
    for q, i, s in as_rows(kept):
        if (q, i) in got:
            assert got[(q, i)] == s
    report = idx.optimize(compact=True, cleanup=True, older_than=timedelta(0))
    assert report["compaction"]["fragments_removed"] >= 2 and report["cleanup"]["old_versions"] >= 2
    assert as_rows(idx.search(queries, k=5, params=EXACT)) == as_rows(after)
    assert as_rows(ms.open(uri).search(queries, k=5, params=EXACT)) == as_rows(after)
    assert [v["version"] for v in idx.versions()] == [idx.version]  # old versions cleaned, only when asked
    with pytest.raises(UnknownIdError, match="missing='ignore'"):
        idx.delete([0, 1])
    assert (
        idx.delete([0, 1], missing="ignore") == idx.version
        and 1 not in idx.search(docs[1], k=3)["id"].to_pylist()
    )


def test_metadata_as_arrow_pandas_dicts_or_columns(uri, docs):
    pd = pytest.importorskip("pandas")
    idx = ms.create(uri, spec="fp16", dim=DIM, n_centroids=8)
    idx.add([0, 1], docs[:2], metadata=pa.table({"lang": ["en", "fr"], "score_x": [0.5, 1.5]}))
    idx.add(
        [2, 3], docs[2:4], metadata=pd.DataFrame({"lang": ["de", "it"], "score_x": [2.5, 3.5]}, index=[7, 8])
    )
    idx.add([4], docs[4:5], metadata=[{"lang": "es", "score_x": 4.5}])
    idx.add([5], docs[5:6], metadata={"score_x": [5.5]})
    got = lancedb.connect(uri).open_table("docs").to_arrow().select(["id", "lang", "score_x"]).to_pylist()
    assert got == [
        {"id": i, "lang": lang, "score_x": i + 0.5}
        for i, lang in enumerate(["en", "fr", "de", "it", "es", None])
    ]
    df = idx.search(docs[:2], k=6, columns=["lang", "score_x"], where="score_x > 2").to_pandas()
    assert len(df) == 8 and set(df["id"]) == {2, 3, 4, 5}


def test_upsert_replaces_vectors_and_metadata(uri, docs):
    idx = build(uri, docs, n=50)
    idx.upsert(
        [3, 500], [docs[60], docs[61]], metadata=[{"lang": "de", "year": 1999}, {"lang": "xx", "year": 1}]
    )
    assert len(idx) == 51
    t = idx.search(docs[60], k=1, params=EXACT, columns=["lang", "year"]).to_pylist()[0]
    assert (t["id"], t["lang"], t["year"]) == (3, "de", 1999)
    assert 3 not in idx.search(docs[3], k=1, params=EXACT)["id"].to_pylist()
    assert idx.search(docs[61], k=1, params=EXACT)["id"].to_pylist() == [500]


def test_time_travel_and_pinned_versions(uri, docs):
    idx = build(uri, docs, n=40)
    v1 = as_rows(idx.search(docs[:4], k=3))
    idx.add(np.arange(40, 80), [d.copy() for d in docs[:40]])  # exact duplicates of the first 40
    idx.delete([1, 2])
    assert [v["version"] for v in idx.versions()] == [1, 2, 3]
    assert [v["n_docs"] for v in idx.versions()] == [40, 80, 78]
    old = ms.open(uri, version=1)
    assert old.version == 1 and len(old) == 40 and as_rows(old.search(docs[:4], k=3)) == v1
    assert ms.open(uri, version=2).search(docs[1], k=2)["id"].to_pylist() in ([1, 41], [41, 1])
    with pytest.raises(InvalidOperationError, match="checkout"):
        old.add([1000], [docs[0]])
    with pytest.raises(ValueError, match="available versions: \\[1, 2, 3\\]"):
        ms.open(uri, version=9)
    old.checkout()
    assert old.version == 3 and old.add([1000], [docs[0]]) == 4
    idx.refresh()
    assert idx.version == 4


def test_where_filters_before_scoring(uri, docs):
    idx = build(uri, docs)
    q = [d[:5] for d in docs[:3]]
    t = idx.search(q, k=200, where="lang = 'en' AND year > 2020", columns=["lang", "year"])
    expected = {i for i in range(len(docs)) if i % 2 and 2000 + i % 30 > 2020}
    for qi in range(3):  # every allowed doc is scored (k > matches), nothing else appears
        sub = t.filter(pa.compute.equal(t["query"], qi))
        assert set(sub["id"].to_pylist()) == expected
    assert set(t["lang"].to_pylist()) == {"en"} and min(t["year"].to_pylist()) > 2020
    # the best allowed doc, not the global best: query 0's own doc is 'fr', so it never shows up
    assert 0 not in idx.search(q[0], k=1, where="lang = 'en'")["id"].to_pylist()
    assert idx.search(q, k=5, where="year > 3000").num_rows == 0
    assert idx.search(q, k=3, where="id IN (4, 9)")["id"].to_pylist()[:2] in ([4, 9], [9, 4])
    with pytest.raises(FilterError, match="unknown column 'langg'.*available columns: id, lang, year"):
        idx.search(q, where="langg = 'en'")
    with pytest.raises(FilterError, match="unknown column 'colour'"):
        idx.search(q, where="year > 1 AND colour = 'red'")
    with pytest.raises(FilterError, match="could not be evaluated"):
        idx.search(q, where="lang = ")
    with pytest.raises(FilterError, match="columns= names unknown column 'title'"):
        idx.search(q, columns=["title"])
    with pytest.raises(SearchParamsError, match="k=0 must be a positive integer"):
        idx.search(q, k=0)


def test_empty_index_search_returns_empty_table(uri):
    idx = ms.create(uri, spec="fp16", dim=DIM)
    t = idx.search([np.ones((3, DIM), np.float32)], k=5)
    assert t.num_rows == 0 and t.column_names == ["query", "rank", "id", "score"]
    assert idx.stats()["docs"] == 0 and idx.versions() == []


# ------------------------------------------------------------------------------------------- errors
def test_bad_vectors_and_ids_are_rejected_before_writing(uri, docs):
    idx = build(uri, docs, n=20)
    n_files = len(os.listdir(os.path.join(uri, "docs.lance", "data")))
    bad_nan = [d.copy() for d in docs[20:25]]
    bad_nan[3][2, 5] = np.nan
    cases = [
        (DuplicateIdError, "id 21 appears more than once", ([20, 21, 21], docs[20:23])),
        (DuplicateIdError, "id 5 is already in the index; use index.upsert", ([30, 5], docs[20:22])),
        (DimensionMismatchError, "document 1 has dim 16", ([30, 31], [docs[0], docs[1][:, :16]])),
        (InvalidVectorsError, "document 3 has a NaN", (list(range(30, 35)), bad_nan)),
        (InvalidVectorsError, "document 1 has no token vectors", ([30, 31], [docs[0], docs[0][:0]])),
        (
            InvalidDtypeError,
            "dtype int64; token vectors must be float",
            ([30], [np.ones((3, DIM), np.int64)]),
        ),
        (InvalidDtypeError, "got 1 ids for 2 documents", ([30], docs[:2])),
        (InvalidDtypeError, "integer ids but got string", (["a"], docs[:1])),
        (InvalidDtypeError, "ids have dtype float64", (np.array([1.5]), docs[:1])),
    ]
    for err, msg, (ids, vecs) in cases:
        with pytest.raises(err, match=msg):
            idx.add(ids, vecs)
    with pytest.raises(InvalidMetadataError, match="metadata has 1 rows but there are 2 documents"):
        idx.add([30, 31], docs[:2], metadata=[{"lang": "en"}])
    with pytest.raises(InvalidMetadataError, match="column 'genre' is not in this index.*'lang', 'year'"):
        idx.add([30], docs[:1], metadata={"genre": ["x"]})
    with pytest.raises(InvalidMetadataError, match="'score' is reserved"):
        idx.add([30], docs[:1], metadata={"score": [3]})
    with pytest.raises(InvalidMetadataError, match="has type string but the index stores int64"):
        idx.add([30], docs[:1], metadata={"year": ["nineteen"]})
    assert idx.version == 1 and len(ms.open(uri)) == 20
    assert len(os.listdir(os.path.join(uri, "docs.lance", "data"))) == n_files  # nothing was written
    # a batch that omits metadata columns stores nulls for them
    idx.add([30], docs[30:31])
    assert idx.search(docs[30], k=1, columns=["lang"]).to_pylist()[0]["lang"] is None


def test_create_errors(uri, tmp_path, docs):
    with pytest.raises(SpecError, match="sq9|unknown|expected"):
        ms.create(uri, spec="sq9", dim=DIM)
    with pytest.raises(
        InvalidArgumentError, match=r"dim=0 must be a positive integer \(the token vectors' dimension"
    ):
        ms.create(uri, spec="fp16", dim=0)
    build(uri, docs, n=10)
    with pytest.raises(IndexExistsError, match="already exists.*exist_ok=True"):
        ms.create(uri, spec="fp16", dim=DIM)
    assert len(ms.create(uri, spec="fp16", dim=DIM, exist_ok=True)) == 10
    with pytest.raises(SpecError, match="created with spec 'fp16' and dim 32, not 'sq8'"):
        ms.create(uri, spec="sq8", dim=DIM, exist_ok=True)
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("hi")
    with pytest.raises(IndexExistsError, match="not an empty directory"):
        ms.create(str(other), spec="fp16", dim=DIM)


def test_opening_non_index_or_corrupted_index(uri, tmp_path, docs):
    with pytest.raises(IndexCorruptedError, match="does not exist"):
        ms.open(str(tmp_path / "nowhere"))
    (tmp_path / "plain").mkdir()
    with pytest.raises(IndexCorruptedError, match="is not an mvstore index"):
        ms.open(str(tmp_path / "plain"))
    build(uri, docs, n=10)
    for name in ("a", "b"):
        shutil.copytree(uri, str(tmp_path / name))
    with open(os.path.join(uri, "mvstore.json"), "w") as f:
        f.write("{not json")
    with pytest.raises(IndexCorruptedError, match="cannot be read as JSON"):
        ms.open(uri)
    shutil.rmtree(tmp_path / "a" / "codec.lance")
    with pytest.raises(IndexCorruptedError, match="codec.lance is missing"):
        ms.open(str(tmp_path / "a"))
    data_dir = tmp_path / "b" / "codec.lance" / "data"
    for f in os.listdir(data_dir):
        (data_dir / f).write_bytes(b"garbage" * 10)
    with pytest.raises(IndexCorruptedError, match=r"codec.lance version 1: data/\S+ has 70 bytes"):
        ms.open(str(tmp_path / "b"))
    shutil.copytree(uri, str(tmp_path / "c"))
    with open(tmp_path / "c" / "mvstore.json", "w") as f:
        f.write((tmp_path / "a" / "mvstore.json").read_text())
    docs_data = tmp_path / "c" / "docs.lance" / "data"
    for f in os.listdir(docs_data):
        (docs_data / f).write_bytes(b"garbage" * 10)
    with pytest.raises(IndexCorruptedError, match=r"docs.lance version 1: data/\S+ has 70 bytes"):
        ms.open(str(tmp_path / "c"))


# -------------------------------------------------------------------------------------- crash safety
def test_failures_mid_batch_or_mid_stream_leave_previous_version(uri, docs):
    idx = build(uri, docs, n=40)
    before = as_rows(idx.search(docs[:3], k=5))

    def stream(fail):
        yield np.arange(100, 120), docs[40:60]
        yield np.arange(120, 140), docs[60:80]
        if fail == "user":
            raise KeyError("user code failed")
        bad = [d.copy() for d in docs[80:90]]
        bad[4][0, 0] = np.inf
        yield np.arange(140, 150), bad

    with pytest.raises(KeyError, match="user code failed"):
        idx.add_batches(stream("user"))
    with pytest.raises(InvalidVectorsError, match="document 4 has a NaN or Inf"):
        idx.add_batches(stream("bad"))
    for ix in (idx, ms.open(uri)):
        assert ix.version == 1 and len(ix) == 40
        assert as_rows(ix.search(docs[:3], k=5)) == before
    assert idx.add(np.arange(100, 110), docs[40:50]) == 2  # the index still takes writes


def two_subspaces(rng, n, length, first):
    """Docs whose energy lies in dims 0-3 (first=True) or dims 4-7, plus faint noise elsewhere."""
    out = []
    for _ in range(n):
        x = 0.05 * rng.normal(size=(length, DIM))
        x[:, 0:4] += rng.normal(size=(length, 4)) if first else 0
        x[:, 4:8] += 0 if first else rng.normal(size=(length, 4))
        out.append(unit(x))
    return out


def test_retrain_on_drift_with_sources(uri):
    rng = np.random.default_rng(5)
    train_docs, drifted = two_subspaces(rng, 40, 30, True), two_subspaces(rng, 40, 30, False)
    idx = ms.create(uri, spec="pca8,sq8", dim=DIM, n_centroids=8, keep_source=True)
    idx.add(np.arange(40), train_docs)
    assert 0.9 < idx.stats()["drift"] < 1.1
    idx.add(np.arange(40, 80), drifted)
    d = idx.stats()["drift"]
    assert d > 3, d  # the new data lives in directions the trained PCA mostly dropped
    v_before = idx.version
    before_old = as_rows(idx.search(drifted[:3], k=3))
    rep = idx.optimize(retrain="auto", compact=False)
    assert rep["retrained"] and rep["drift"] == d
    assert idx.stats()["drift"] < 1.5 and len(idx) == 80
    assert idx.snapshot().codec is not ms.open(uri, version=v_before).snapshot().codec
    assert as_rows(ms.open(uri, version=v_before).search(drifted[:3], k=3)) == before_old  # old state kept
    assert idx.search(drifted[5], k=1)["id"].to_pylist() == [45]


def test_retrain_without_sources_is_reported_not_silent(uri):
    rng = np.random.default_rng(5)
    a, b = two_subspaces(rng, 30, 20, True), two_subspaces(rng, 30, 20, False)
    idx = ms.create(uri, spec="pca8,sq8", dim=DIM, n_centroids=8)
    idx.add(np.arange(30), a)
    idx.add(np.arange(30, 60), b)
    with pytest.warns(RuntimeWarning, match="keeps no source vectors"):
        rep = idx.optimize(retrain="auto", compact=False)
    assert not rep["retrained"] and "keep_source=True" in rep["retrain_skipped"]
    with pytest.raises(InvalidOperationError, match="keep_source=True"):
        idx.optimize(retrain=True)


def test_where_columns_parser():
    assert ms.where_columns("a = 'x''y' AND b IN (1, 2) AND NOT c IS NULL") == ["a", "b", "c"]
    assert ms.where_columns("lower(name) LIKE '%x%' OR `odd col` > 2.5e3") == ["name", "odd col"]
    assert ms.where_columns('"My ""x"" col" = 1 AND `a``b` = 2') == ['My "x" col', "a`b"]


# ------------------------------------------------------------------------------------------- user inputs
def stored(uri, columns):
    t = lancedb.connect(uri).open_table("docs").to_arrow().select(["id", *columns]).sort_by("id")
    return t.to_pylist()


def test_metadata_rows_take_the_union_of_keys(uri, docs):
    idx = ms.create(uri, spec="fp16", dim=DIM, n_centroids=8)
    idx.add([0, 1, 2], docs[:3], metadata=[{"lang": "en"}, {"lang": "fr", "year": 2001}, {"year": 2002}])
    assert stored(uri, ["lang", "year"]) == [
        {"id": 0, "lang": "en", "year": None},
        {"id": 1, "lang": "fr", "year": 2001},
        {"id": 2, "lang": None, "year": 2002},
    ]
    idx.upsert([1, 3], docs[3:5], metadata=[{"lang": "de"}, {"lang": "it", "year": 1999}])
    assert stored(uri, ["lang", "year"])[1:] == [
        {"id": 1, "lang": "de", "year": None},  # the batch gives "year": a row without it is null
        {"id": 2, "lang": None, "year": 2002},
        {"id": 3, "lang": "it", "year": 1999},
    ]
    version = idx.version
    # a key that only a later row has is never dropped: it is an error naming it, on add and on upsert
    for write in (idx.add, idx.upsert):
        with pytest.raises(InvalidMetadataError, match="column 'genre' is not in this index.*'lang', 'year'"):
            write([5, 6], docs[5:7], metadata=[{"lang": "en"}, {"lang": "en", "genre": "x"}])
    # null of a known type is stored as null; a first add cannot type an all-null column
    idx.add([7], docs[7:8], metadata=[{"year": None}])
    assert stored(uri, ["lang", "year"])[-1] == {"id": 7, "lang": None, "year": None}
    assert idx.version == version + 1
    with pytest.raises(InvalidMetadataError, match="'note' holds only nulls in the first add.*pa.string"):
        ms.create(uri + "2", spec="fp16", dim=DIM).add([0], docs[:1], metadata=[{"note": None}])
    assert not os.path.exists(os.path.join(uri + "2", "codec.lance"))  # refused before training


def test_metadata_struct_fields_are_never_dropped(uri, docs):
    idx = ms.create(uri, spec="fp16", dim=DIM, n_centroids=8)
    src = [{"src": {"page": i}, "tags": [{"k": "a"}]} for i in range(3)]
    idx.add([0, 1, 2], docs[:3], metadata=src)
    with pytest.raises(InvalidMetadataError, match=r"field 'src.line' is not in this index's column 'src'"):
        idx.add([3], docs[3:4], metadata=[{"src": {"page": 3, "line": 7}}])
    with pytest.raises(
        InvalidMetadataError, match=r"field 'tags\[\].v' is not in this index's column 'tags'"
    ):
        idx.upsert([0], docs[3:4], metadata=[{"tags": [{"k": "b", "v": 1}]}])
    assert idx.version == 1
    for name in ("a.b", "a`b", ""):  # Lance refuses a '.'; a '`' would break every filter on the table
        with pytest.raises(InvalidMetadataError, match="without '.' or '`'; rename it"):
            idx.add([3], docs[3:4], metadata={name: [1]})
    with pytest.raises(InvalidMetadataError, match="column name 3 is a int; use a str name"):
        idx.add([3], docs[3:4], metadata=[{3: "x"}])
    idx.add([3], docs[3:4], metadata=[{"src": {"page": 3}}])  # a subset of the fields is fine
    assert stored(uri, ["src"])[-1] == {"id": 3, "src": {"page": 3}}


def test_upsert_keeps_the_metadata_columns_it_is_not_given(uri, docs):
    idx = build(uri, docs, n=10)
    idx.upsert([3, 70], [docs[60], docs[61]])
    idx.upsert([4], [docs[62]], metadata={"year": [1]})
    rows = {r["id"]: r for r in stored(uri, ["lang", "year"])}
    assert rows[3] == {"id": 3, "lang": "en", "year": 2003}
    assert rows[4] == {"id": 4, "lang": "fr", "year": 1}
    assert rows[70] == {"id": 70, "lang": None, "year": None}
    assert idx.search(docs[60], k=1, params=EXACT)["id"].to_pylist() == [3]  # the vectors were replaced
    assert ms.open(uri).search(docs[62], k=1, params=EXACT, columns=["lang"]).to_pylist()[0]["lang"] == "fr"


def test_where_double_quotes_name_a_column(uri, docs):
    idx = ms.create(uri, spec="fp16", dim=DIM, n_centroids=8)
    idx.add(
        np.arange(20), docs[:20], metadata={"My Col": [f"v{i % 3}" for i in range(20)], **meta(range(20))}
    )
    want = {i for i in range(20) if i % 3 == 1}
    for where in ("\"My Col\" = 'v1'", "`My Col` = 'v1'", '"My Col" = \'v1\' AND "year" >= 2000'):
        assert set(idx.search(docs[0], k=20, where=where, params=EXACT)["id"].to_pylist()) == want, where
    with pytest.raises(FilterError, match="unknown column 'en'.*write a string value in single quotes"):
        idx.search(docs[0], where='lang = "en"')


def test_ids_and_metadata_outside_what_can_be_stored(uri, docs):
    idx = ms.create(uri, spec="fp16", dim=DIM, n_centroids=8)
    lo, hi = -(2**63), 2**63 - 1
    idx.add([lo, hi, 0], docs[:3])
    assert set(idx.search(docs[0], k=3)["id"].to_pylist()) == {lo, hi, 0}
    idx.delete([lo])  # Lance reads the literal -9223372036854775808 as a float: it must still match
    assert sorted(ms.open(uri).search(docs[0], k=3)["id"].to_pylist()) == [0, hi]
    committed = idx.version  # the delete, or the compaction after it (auto_optimize: 1 of 3 rows deleted)
    for ids in ([2**70], [-(2**63) - 1], np.array([2**64 - 1], np.uint64), pa.array([2**63], pa.uint64())):
        with pytest.raises(
            InvalidIdError, match="outside the int64 range|exceed the int64 range.*string ids"
        ):
            idx.add(ids, docs[3:4])
    with pytest.raises(InvalidMetadataError, match="'n' cannot be stored.*outside the int64 range"):
        idx.add([3], docs[3:4], metadata=[{"n": 2**70}])
    s_idx = ms.create(uri + "s", spec="fp16", dim=DIM, n_centroids=8)
    with pytest.raises(InvalidIdError, match=r"lone surrogate '\\udc80' at position 1.*'replace'"):
        s_idx.add(["a\udc80"], docs[:1])
    with pytest.raises(InvalidMetadataError, match=r"column 'text'.*lone surrogate '\\ud800' at position 0"):
        s_idx.add(["a"], docs[:1], metadata={"text": ["\ud800x"]})
    with pytest.raises(
        InvalidDtypeError, match=r"types \['int', 'str'\]; ids must be all ints or all strings"
    ):
        s_idx.add([1, "a"], docs[:2])  # numpy would have made them the strings "1" and "a"
    assert idx.version == committed == idx.latest_version and s_idx.version == 0


def test_fp16_values_beyond_its_range_are_an_error(uri, docs):
    idx = ms.create(uri, spec="fp16", dim=DIM, n_centroids=8)
    big = docs[1] * 1e6  # unit vectors: the largest entries become ~1e5
    with pytest.raises(InvalidVectorsError, match="beyond float16's range of ±65504.*or use spec 'fp32'"):
        idx.add([0, 1], [docs[0], big])
    assert idx.version == 0
    src = ms.create(uri + "k", spec="sq8", dim=DIM, n_centroids=8, keep_source=True)
    with pytest.raises(InvalidVectorsError, match="document 1 has the value.*without keep_source"):
        src.add([0, 1], [docs[0], big])
    ms.create(uri + "f", spec="fp32", dim=DIM, n_centroids=8).add([0, 1], [docs[0], big])  # fp32 takes them


def test_search_argument_errors(uri, docs):
    torch = pytest.importorskip("torch")
    idx = build(uri, docs, n=20)
    q = docs[2]
    cases = [
        (dict(where=5), InvalidDtypeError, "where= must be a SQL filter string"),
        (dict(where="  "), FilterError, "empty string; pass where=None"),
        (dict(columns="lang"), InvalidDtypeError, r"columns= must be a list.*columns=\['lang'\]"),
        (dict(columns=[1]), InvalidDtypeError, "must hold column names"),
        (dict(params="exhaustive"), InvalidDtypeError, r"params=SearchParams\(candidates='exhaustive'\)"),
        (dict(params={"nprob": 2}), SearchParamsError, "no field 'nprob'; SearchParams fields are"),
        (dict(k=2.0), InvalidDtypeError, "k must be an int"),
        (dict(k=0), SearchParamsError, "k=0 must be a positive integer"),
    ]
    for kw, err, match in cases:
        with pytest.raises(err, match=match):
            idx.search(q, **kw)
    with pytest.raises(InvalidVectorsError, match=r"1-D array of shape \(32,\).*reshape\(1, -1\)"):
        idx.search(q[0])
    want = idx.search(q, k=3)
    assert idx.search(torch.from_numpy(q), k=3).equals(want)  # one query as a 2-D tensor, like numpy
    assert idx.search([q], k=3, params={"candidates": "exhaustive"})["id"].to_pylist()[0] == 2
    empty = ms.create(uri + "e", spec="fp16", dim=DIM)
    with pytest.raises(InvalidDtypeError, match="where= must be a SQL filter string"):
        empty.search(q, where=5)


def test_create_and_open_argument_errors(uri, docs):
    cases = [
        (dict(seed=-1), InvalidArgumentError, r"seed=-1 must be in \[0, 2147483647\]"),
        (dict(seed=2**40), InvalidArgumentError, "seed=1099511627776 must be in"),
        (dict(seed=1.5), InvalidDtypeError, "seed must be an int"),
        (dict(n_centroids=0), InvalidArgumentError, "n_centroids=0 must be a positive integer"),
        (dict(train_size=True), InvalidDtypeError, "train_size must be an int"),
        (dict(drift_threshold=float("nan")), InvalidArgumentError, "drift_threshold must be a finite number"),
        (dict(keep_source="yes"), InvalidDtypeError, "must be True or False"),
    ]
    for kw, err, match in cases:
        with pytest.raises(err, match=match):
            ms.create(uri, spec="fp16", dim=DIM, **kw)
    assert not os.path.exists(uri)
    with pytest.raises(InvalidDtypeError, match="uri must be a directory path or an object-store URI"):
        ms.create(3, spec="fp16", dim=DIM)
    with pytest.raises(
        InvalidArgumentError, match="scheme 'ftp' is not supported; use a local path or one of s3://"
    ):
        ms.open("ftp://host/ix")
    with pytest.raises(InvalidArgumentError, match="names no path inside the bucket; pass e.g. s3://bucket/"):
        ms.create("s3://bucket", spec="fp16", dim=DIM)
    with pytest.raises(InvalidDtypeError, match="storage_options must be a dict of str to str"):
        ms.open("s3://bucket/ix", storage_options={"allow_http": True})
    idx = build(uri, docs, n=10, seed=7)
    idx.add([10], docs[10:11])
    for version, err, match in [
        ("1", InvalidDtypeError, "version must be an int.*got str '1'; use version=1"),
        (True, InvalidDtypeError, "version must be an int.*got bool True"),
        (-1, InvalidArgumentError, "version=-1 must be >= 0"),
        (9, InvalidArgumentError, r"version 9 does not exist; available versions: \[1, 2\]"),
    ]:
        with pytest.raises(err, match=match):
            ms.open(uri, version=version)
        with pytest.raises(err, match=match):
            idx.checkout(version)
    assert ms.open(uri, version=np.int64(1)).version == 1 and idx.version == 2
    with pytest.raises(InvalidArgumentError, match="missing must be 'error' or 'ignore'"):
        idx.delete([1], missing="skip")
    for kw, err, match in [
        (dict(retrain="yes"), InvalidArgumentError, "retrain must be True, False or 'auto'"),
        (dict(older_than=7), InvalidDtypeError, r"timedelta\(days=7\)"),
        (dict(cleanup="all"), InvalidDtypeError, "compact and cleanup must be True or False"),
    ]:
        with pytest.raises(err, match=match):
            idx.optimize(**kw)
    assert idx.version == 2


def test_writes_through_plain_lancedb(uri, docs):
    """docs/LAYOUT.md: LanceDB's delete and metadata updates are supported; an added row that repeats an id
    is reported at search, never returned twice."""
    idx = build(uri, docs, n=10)
    tbl = lancedb.connect(uri).open_table("docs")
    tbl.delete("id = 4")
    tbl.update(where="id = 5", values={"lang": "xx"})
    ix = ms.open(uri)
    assert ix.search(docs[4], k=10, params=EXACT)["id"].to_pylist().count(4) == 0
    assert ix.search(docs[5], k=1, params=EXACT, columns=["lang"]).to_pylist()[0]["lang"] == "xx"
    tbl.add(idx.refresh()._view.ds.to_table(filter="id = 1"))
    with pytest.raises(IndexCorruptedError, match=r"id 1 is stored more than once.*index.delete\(\[1\]\)"):
        ms.open(uri).search(docs[1], k=5)
    ix = ms.open(uri)
    ix.delete([1])
    ix.add([1], docs[1:2])
    assert ix.search(docs[1], k=10, params=EXACT)["id"].to_pylist().count(1) == 1
