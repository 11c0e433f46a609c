"""MaxSimReranker through real LanceDB tables: FTS, hybrid and vector queries, text- and index-backed."""

import numpy as np
import pyarrow as pa
import pytest

lancedb = pytest.importorskip("lancedb")

from lancedb.index import FTS  # noqa: E402

import mvstore.store as ms  # noqa: E402
from mvstore.encoders import CachedEncoder  # noqa: E402
from mvstore.exceptions import InvalidDtypeError  # noqa: E402
from mvstore.integrations.lancedb import MaxSimReranker, RerankerError  # noqa: E402
from mvstore.search.maxsim import maxsim  # noqa: E402

TEXTS = [
    "Solar panels convert sunlight into electricity using photovoltaic cells.",
    "The solar system has eight planets orbiting the sun.",
    "Wind turbines generate electricity from moving air.",
    "Photovoltaic panels on rooftops lower household electricity bills.",
    "Panels of experts discussed the economy at the summit.",
    "Sunlight exposure helps the body produce vitamin D.",
    "Electricity prices rose sharply during the winter.",
    "Battery storage smooths out the output of solar farms.",
    "A solar eclipse happens when the moon blocks the sun.",
    "Hydroelectric dams turn flowing water into electric power.",
]
QUERY = "how do solar panels make electricity"


@pytest.fixture(scope="module")
def enc(minilm, tmp_path_factory):
    """The bundled MiniLM behind an on-disk cache: each text is encoded once for the whole module."""
    return CachedEncoder(minilm, tmp_path_factory.mktemp("emb"), progress=False)


@pytest.fixture(scope="module")
def setup(enc, tmp_path_factory):
    docs = enc.encode_documents(TEXTS)
    mean = np.stack([d.mean(0) / np.linalg.norm(d.mean(0)) for d in docs]).astype(np.float32)
    db = lancedb.connect(tmp_path_factory.mktemp("lancedb"))
    tbl = db.create_table(
        "docs",
        pa.table(
            {
                "id": pa.array(range(100, 100 + len(TEXTS)), pa.int64()),
                "text": TEXTS,
                "vector": pa.array(mean.tolist(), pa.list_(pa.float32(), mean.shape[1])),
            }
        ),
    )
    tbl.create_index("text", config=FTS())
    qv = enc.encode_queries([QUERY])[0]
    qmean = qv.mean(0) / np.linalg.norm(qv.mean(0))
    return {"tbl": tbl, "docs": docs, "qv": qv, "qmean": qmean.tolist()}


def maxsim_order(setup, ids):
    """Ids sorted by exact MaxSim of the raw (uncompressed) vectors, best first."""
    s = maxsim(setup["qv"], setup["docs"][np.asarray(ids) - 100])
    return [ids[i] for i in np.lexsort((np.arange(len(s)), -s))], np.sort(s)[::-1]


def test_fts_rerank_equals_maxsim_order_and_changes_it(setup, enc):
    tbl = setup["tbl"]
    plain = tbl.search(QUERY, query_type="fts").limit(10).to_arrow()
    out = tbl.search(QUERY, query_type="fts").rerank(MaxSimReranker(enc)).limit(10).to_arrow()
    ids = out["id"].to_pylist()
    assert sorted(ids) == sorted(plain["id"].to_pylist())  # same rows, reordered
    expected, scores = maxsim_order(setup, plain["id"].to_pylist())
    assert ids == expected
    assert ids != plain["id"].to_pylist()
    np.testing.assert_allclose(out["_relevance_score"].to_numpy(), scores, rtol=1e-5)
    assert out.schema.field("_relevance_score").type == pa.float32()
    assert "_score" not in out.column_names  # return_score="relevance" drops LanceDB's own score


def test_fts_rerank_return_all_keeps_scores(setup, enc):
    out = (
        setup["tbl"]
        .search(QUERY, query_type="fts")
        .rerank(MaxSimReranker(enc, return_score="all"))
        .to_arrow()
    )
    assert {"_score", "_relevance_score"} <= set(out.column_names)
    rel = out["_relevance_score"].to_numpy()
    assert (np.diff(rel) <= 0).all()


def test_hybrid_rerank_equals_maxsim_order(setup, enc):
    tbl = setup["tbl"]
    q = tbl.search(query_type="hybrid").vector(setup["qmean"]).text(QUERY).limit(10)
    plain = q.to_arrow()  # LanceDB's default (RRF) fusion
    out = (
        tbl.search(query_type="hybrid")
        .vector(setup["qmean"])
        .text(QUERY)
        .rerank(MaxSimReranker(enc))
        .limit(10)
        .to_arrow()
    )
    ids = out["id"].to_pylist()
    assert sorted(ids) == sorted(plain["id"].to_pylist())
    assert ids == maxsim_order(setup, ids)[0]
    assert ids != plain["id"].to_pylist()


def test_vector_rerank_with_query_string(setup, enc):
    tbl = setup["tbl"]
    out = tbl.search(setup["qmean"]).limit(6).rerank(MaxSimReranker(enc), query_string=QUERY).to_arrow()
    ids = out["id"].to_pylist()
    assert len(ids) == 6 and ids == maxsim_order(setup, ids)[0]
    assert "_distance" not in out.column_names


def test_index_backed_rerank_uses_stored_vectors(setup, enc, tmp_path):
    idx = ms.create(tmp_path / "ix", spec="fp16", dim=enc.dim)
    idx.add(np.arange(100, 100 + len(TEXTS)), setup["docs"])
    rr = MaxSimReranker(enc, index=idx, id_column="id")
    out = setup["tbl"].search(QUERY, query_type="fts").rerank(rr).limit(10).to_arrow()
    ids = out["id"].to_pylist()
    expected, scores = maxsim_order(setup, ids)
    assert ids == expected  # fp16 storage keeps the order on this corpus
    np.testing.assert_allclose(out["_relevance_score"].to_numpy(), scores, rtol=2e-3)
    # the scores are those of mvstore's own search over the index
    res = idx.search(setup["qv"], k=len(TEXTS), params={"candidates": "exhaustive"})
    by_id = dict(zip(res["id"].to_pylist(), res["score"].to_pylist()))
    np.testing.assert_allclose(out["_relevance_score"].to_numpy(), [by_id[i] for i in ids], rtol=1e-5)


def test_empty_result_gets_score_column(setup, enc):
    out = setup["tbl"].search("zzzqqq", query_type="fts").rerank(MaxSimReranker(enc)).to_arrow()
    assert out.num_rows == 0 and "_relevance_score" in out.column_names


def test_errors(setup, enc, tmp_path):
    res = setup["tbl"].search(QUERY, query_type="fts").limit(5).to_arrow()
    with pytest.raises(RerankerError, match="no text column 'body'.*pass column="):
        MaxSimReranker(enc, column="body").rerank_fts(QUERY, res)
    with pytest.raises(RerankerError, match="needs the query text.*query_string="):
        MaxSimReranker(enc).rerank_vector(None, res)
    with pytest.raises(RerankerError, match="return_score='best' must be 'relevance' or 'all'"):
        MaxSimReranker(enc, return_score="best")
    with pytest.raises(InvalidDtypeError, match="pass a token encoder"):
        MaxSimReranker("enc")
    with pytest.raises(InvalidDtypeError, match="pass an mvstore index"):
        MaxSimReranker(enc, index="path/to/index")
    idx = ms.create(tmp_path / "ix", spec="fp16", dim=enc.dim)
    idx.add(np.arange(100, 103), setup["docs"][:3])
    with pytest.raises(RerankerError, match="not in the mvstore index.*must hold the ids"):
        MaxSimReranker(enc, index=idx).rerank_fts(QUERY, res)
    with pytest.raises(RerankerError, match="no id column 'doc_id'.*pass id_column="):
        MaxSimReranker(enc, index=idx, id_column="doc_id").rerank_fts(QUERY, res)
