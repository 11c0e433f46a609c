"""Hybrid search: MaxSim fused with Lance's full-text (BM25) index by reciprocal rank fusion."""

import os

import numpy as np
import pytest

import mvstore.store as ms
from mvstore.exceptions import (
    FilterError,
    IndexCorruptedError,
    InvalidArgumentError,
    InvalidDtypeError,
    InvalidOperationError,
)
from mvstore.store._hybrid import HYBRID_DEPTH, RRF_K, rrf

DIM = 16
WORDS = ["apple", "banana", "cherry", "delta", "echo", "falcon", "guitar", "harbor", "island", "jungle"]


def _corpus(n=40, seed=0):
    rng = np.random.default_rng(seed)
    docs = [rng.normal(size=(int(k), DIM)).astype(np.float32) for k in rng.integers(4, 12, n)]
    texts = [f"{WORDS[i % 10]} {WORDS[(i * 3 + 1) % 10]} passage number {i}" for i in range(n)]
    texts[17] = "the zebra crossing"  # the only document with "zebra"
    lang = ["en" if i % 2 else "fr" for i in range(n)]
    return docs, texts, lang


@pytest.fixture
def index(tmp_path):
    docs, texts, lang = _corpus()
    idx = ms.create(tmp_path / "ix", spec="fp16", dim=DIM, keep_source=True)
    idx.add(np.arange(len(docs)), docs, metadata={"text": texts, "lang": lang})
    idx.create_fts_index("text")
    return idx, docs


def _expected(idx, q, text, k, where=None):
    """RRF computed here from the two rankings search gives on its own: MaxSim and Lance FTS."""
    dense = idx.search(q, k=HYBRID_DEPTH, where=where)["id"].to_pylist()
    ds = idx._view.ds
    flt = {} if where is None else {"filter": where, "prefilter": True}
    bm25 = ds.to_table(columns=["id", "_score"], full_text_query=text, limit=HYBRID_DEPTH, **flt)[
        "id"
    ].to_pylist()
    score = {}
    for ranked in (dense, bm25):
        for r, i in enumerate(ranked):
            score[i] = score.get(i, 0.0) + 1.0 / (RRF_K + r + 1)
    return sorted(score, key=lambda i: -score[i])[:k], score


def test_rrf_fuses_ranks():
    rows, s = rrf([np.array([7, 3, 5]), np.array([3, 9])], k=10)
    assert rows.tolist() == [3, 7, 9, 5]
    np.testing.assert_allclose(s, [1 / 61 + 1 / 62, 1 / 61, 1 / 62, 1 / 63], rtol=1e-6)
    assert rrf([np.zeros(0, np.int64)], k=3)[0].tolist() == []


def test_hybrid_finds_the_keyword_match_maxsim_misses(index):
    idx, docs = index
    q = docs[3]
    plain = idx.search(q, k=5)["id"].to_pylist()
    assert plain[0] == 3 and 17 not in plain
    hits = idx.search(q, k=5, text="zebra", hybrid=True, columns=["text"])
    want, score = _expected(idx, q, "zebra", 5)
    assert hits["id"].to_pylist() == want
    assert set(hits["id"].to_pylist()[:2]) == {3, 17}  # the MaxSim best and the only BM25 match
    np.testing.assert_allclose(hits["score"].to_numpy(), [score[i] for i in want], rtol=1e-6)
    assert hits["text"].to_pylist()[hits["id"].to_pylist().index(17)] == "the zebra crossing"
    # several queries, one text each
    two = idx.search([docs[3], docs[8]], k=3, text=["zebra", "cherry"], hybrid=True)
    assert two["query"].to_pylist() == [0, 0, 0, 1, 1, 1]
    assert (
        two.filter(two["query"].to_numpy() == 1)["id"].to_pylist() == _expected(idx, docs[8], "cherry", 3)[0]
    )


def test_a_string_query_is_also_the_bm25_text(tmp_path, minilm):
    """search("question", hybrid=True): the index's encoder encodes the string for MaxSim and the same string
    goes to BM25; the result is the one of passing the encoded query and the text by hand."""
    import mvstore

    passages = ["Tides follow the gravitational pull of the moon.", "Solar panels convert sunlight into power.",
                "The zebra crossing is painted white.", "Wind turbines turn moving air into electricity.",
                "Magma rises through the crust before an eruption."]  # fmt: skip
    idx = mvstore.create(tmp_path / "ix", encoder=minilm, spec="fp16")
    idx.add_texts(passages, metadata=[{"lang": "en" if i % 2 else "fr"} for i in range(5)])
    idx.create_fts_index()
    for q, where in (
        ("zebra stripes", None),
        ("why does the sea rise and fall", None),
        ("zebra", "lang = 'fr'"),
    ):
        got = idx.search(q, k=3, hybrid=True, where=where)
        by_hand = idx.search(minilm.encode_queries([q]), k=3, text=q, hybrid=True, where=where)
        assert got.to_pylist() == by_hand.to_pylist()
    assert idx.search("zebra", k=1, hybrid=True)["id"].to_pylist() == [2]
    two = idx.search(["zebra", "magma eruption"], k=1, hybrid=True)
    assert two["id"].to_pylist() == [2, 4]
    # an explicit text= still wins over the query string
    q = minilm.encode_queries(["renewable energy"])
    assert (
        idx.search("renewable energy", k=5, text="magma", hybrid=True).to_pylist()
        == idx.search(q, k=5, text="magma", hybrid=True).to_pylist()
    )


def test_where_filters_both_sides(index):
    idx, docs = index
    hits = idx.search(docs[3], k=5, text="zebra", hybrid=True, where="lang = 'en'", columns=["lang"])
    assert set(hits["lang"].to_pylist()) == {"en"} and 17 in hits["id"].to_pylist()
    hits = idx.search(docs[3], k=5, text="zebra", hybrid=True, where="lang = 'fr'")
    assert (
        17 not in hits["id"].to_pylist()
        and hits["id"].to_pylist() == _expected(idx, docs[3], "zebra", 5, "lang = 'fr'")[0]
    )
    with pytest.raises(FilterError, match="unknown column 'genre'"):
        idx.search(docs[3], text="zebra", hybrid=True, where="genre = 'x'")


def test_rows_written_later_are_found_and_optimize_indexes_them(index):
    idx, docs = index
    rng = np.random.default_rng(5)
    idx.add(
        [100],
        [rng.normal(size=(6, DIM)).astype(np.float32)],
        metadata={"text": ["okapi zebra"], "lang": ["en"]},
    )
    assert 100 in idx.search(docs[3], k=5, text="okapi", hybrid=True)["id"].to_pylist()[:2]
    rep = idx.optimize()
    assert rep["fts_index"] == "updated" and idx.optimize()["fts_index"] == "up to date"
    assert 100 in idx.search(docs[3], k=5, text="okapi", hybrid=True)["id"].to_pylist()[:2]
    idx.upsert([17], [docs[17]], metadata={"text": ["no stripes here"]})
    assert 17 not in idx.search(docs[3], k=40, text="zebra", hybrid=True)["id"].to_pylist()[:2]
    idx.delete([100])
    assert 100 not in idx.search(docs[3], k=40, text="okapi", hybrid=True)["id"].to_pylist()


def test_retraining_keeps_the_full_text_index(index):
    idx, docs = index
    rep = idx.optimize(retrain=True)
    assert rep["retrained"] and rep["fts_index"] == "rebuilt"
    assert idx.search(docs[3], k=2, text="zebra", hybrid=True)["id"].to_pylist()[:2] in ([3, 17], [17, 3])
    assert idx.verify()["ok"]


def test_full_text_index_files_are_under_integrity(index):
    idx, _ = index
    root = idx.root
    files = [
        os.path.join(dp, f) for dp, _, fs in os.walk(os.path.join(root, "docs.lance", "_indices")) for f in fs
    ]
    assert files
    assert idx.verify()["ok"]
    with open(files[0], "ab") as f:
        f.write(b"x")
    with pytest.raises(IndexCorruptedError, match="_indices/.*has .* bytes"):
        ms.open(root)


def test_hybrid_mistakes_say_what_to_do(tmp_path, index):
    idx, docs = index
    with pytest.raises(
        InvalidArgumentError, match=r"needs the query text.*search\('question', hybrid=True\).*text='...'"
    ):
        idx.search(docs[0], hybrid=True)
    with pytest.raises(InvalidArgumentError, match="pass hybrid=True with it"):
        idx.search(docs[0], text="zebra")
    with pytest.raises(InvalidArgumentError, match="2 texts for 1 queries"):
        idx.search(docs[0], text=["a", "b"], hybrid=True)
    with pytest.raises(InvalidDtypeError, match="text= must be a string or a list of strings"):
        idx.search(docs[0], text=3, hybrid=True)
    with pytest.raises(InvalidArgumentError, match="fusion='linear'.*use fusion='rrf'"):
        idx.search(docs[0], text="zebra", hybrid=True, fusion="linear")
    with pytest.raises(InvalidDtypeError, match="hybrid must be True or False"):
        idx.search(docs[0], text="zebra", hybrid="yes")
    assert (
        idx.search(docs[0], k=3, text="   ", hybrid=True)["id"].to_pylist()
        == idx.search(docs[0], k=3)["id"].to_pylist()
    )
    with pytest.raises(InvalidArgumentError, match="column 'id' holds int64, not text metadata"):
        idx.create_fts_index("id")
    with pytest.raises(FilterError, match="unknown column 'body'"):
        idx.create_fts_index("body")
    with pytest.raises(InvalidOperationError, match="already has a full-text index; pass replace=True"):
        idx.create_fts_index("text", replace=False)
    plain = ms.create(tmp_path / "plain", spec="fp16", dim=DIM)
    with pytest.raises(InvalidOperationError, match="no documents yet"):
        plain.create_fts_index("text")
    plain.add([1, 2], docs[:2], metadata={"text": ["a", "b"]})
    with pytest.raises(InvalidOperationError, match=r"index.create_fts_index\('text'\)"):
        plain.search(docs[0], text="a", hybrid=True)
    assert plain.version == 1  # nothing was written by the failed calls
