"""LangChain and LlamaIndex integrations against the real packages (skipped with the reason when missing)."""

import pytest

from mvstore.exceptions import (
    FilterError,
    InvalidArgumentError,
    InvalidDtypeError,
    InvalidMetadataError,
    InvalidOperationError,
)
from mvstore.integrations._text import where_from_filter

PASSAGES = [
    (
        "Lance is a columnar data format built for machine learning workloads.",
        {"source": "lance.md", "year": 2022},
    ),
    (
        "MaxSim scores every query token against its most similar document token.",
        {"source": "maxsim.md", "year": 2020},
    ),
    (
        "Photosynthesis converts sunlight into chemical energy in plants.",
        {"source": "biology.md", "year": 2015},
    ),
    (
        "The write lock lets several processes write to one index safely.",
        {"source": "lance.md", "year": 2024},
    ),
    ("Volcanoes erupt when magma rises through the crust.", {"source": "geology.md", "year": 2019}),
]


class Counting:
    """A token encoder that counts the documents it encodes."""

    def __init__(self, enc):
        self.enc, self.name, self.dim, self.docs = enc, enc.name, enc.dim, 0

    def encode_documents(self, texts):
        self.docs += len(texts)
        return self.enc.encode_documents(texts)

    def encode_queries(self, texts):
        return self.enc.encode_queries(texts)


def test_filters_become_where():
    assert where_from_filter({"source": "a'b.md"}) == "(\"source\" = 'a''b.md')"
    assert where_from_filter({"year": {"$gte": 2020, "$lt": 2024}}) == '("year" >= 2020) AND ("year" < 2024)'
    assert where_from_filter({"tag": {"$nin": ["x"]}}) == "(\"tag\" NOT IN ('x'))"
    assert where_from_filter("year > 1") == "year > 1" and where_from_filter({}) is None
    with pytest.raises(FilterError, match=r"operator '\$regex' on 'source' is not supported; use one of"):
        where_from_filter({"source": {"$regex": "a.*"}})
    with pytest.raises(FilterError, match=r"\$in takes a non-empty list"):
        where_from_filter({"source": {"$in": "a"}})
    with pytest.raises(FilterError, match="pass a dict like"):
        where_from_filter(["source"])


# ------------------------------------------------------------------------------------------- LangChain
@pytest.fixture
def store(tmp_path, minilm):
    pytest.importorskip(
        "langchain_core", reason="langchain-core is not installed: pip install 'mvstore[langchain]'"
    )
    from mvstore.integrations.langchain import MvstoreVectorStore

    texts, metas = zip(*PASSAGES)
    return MvstoreVectorStore.from_texts(
        list(texts), minilm, list(metas), ids=[f"p{i}" for i in range(5)], uri=tmp_path / "ix", spec="fp16"
    )


def test_langchain_store_search_filter_retriever(store):
    from langchain_core.documents import Document

    doc, score = store.similarity_search_with_score("how is each query token scored?", k=1)[0]
    assert doc.id == "p1" and doc.metadata == {"source": "maxsim.md", "year": 2020} and score > 0
    assert doc.page_content == PASSAGES[1][0]
    lance_only = store.similarity_search("index", k=5, filter={"source": "lance.md"})
    assert {d.id for d in lance_only} == {"p0", "p3"}
    assert [
        d.id
        for d in store.similarity_search(
            "plants", k=5, filter={"$or": [{"year": {"$lt": 2016}}, {"source": "geology.md"}]}
        )
    ][:1] == ["p2"]
    assert {d.id for d in store.similarity_search("x", k=5, filter="year >= 2022")} == {"p0", "p3"}
    retriever = store.as_retriever(search_kwargs={"k": 2, "filter": {"year": {"$gte": 2020}}})
    got = retriever.invoke("which process may write to the index?")
    assert got[0].id == "p3" and all(d.metadata["year"] >= 2020 for d in got)
    rel = store.similarity_search_with_relevance_scores("volcano magma", k=2)
    assert rel[0][0].id == "p4" and all(0.0 <= s <= 1.0 for _, s in rel) and rel[0][1] > rel[1][1]
    # documents in, by id out, deleted
    ids = store.add_documents(
        [
            Document(
                page_content="Tides follow the moon.", metadata={"source": "sea.md", "year": 2021}, id="t1"
            )
        ]
    )
    assert ids == ["t1"] and [d.page_content for d in store.get_by_ids(["t1", "nope", "p0"])] == [
        "Tides follow the moon.",
        PASSAGES[0][0],
    ]
    store.delete(["t1"])
    assert store.get_by_ids(["t1"]) == []


def test_langchain_store_uses_the_index_encoder(store, minilm, tmp_path):
    """from_texts records the encoder in the index: reopened by its path, the store needs nothing else, and its
    passages went in through Index.add_texts (text column, ids given) like any text index's."""
    import mvstore
    from mvstore.integrations.langchain import MvstoreVectorStore

    assert store.index.options["encoder"]["kind"] == "hf" and store.encoder is store.index.encoder
    again = MvstoreVectorStore(store.index.root)
    q = "how is each query token scored?"
    assert [(d.id, s) for d, s in again.similarity_search_with_score(q, k=3)] == [
        (d.id, s) for d, s in store.similarity_search_with_score(q, k=3)
    ]
    raw = mvstore.open(store.index.root).search(q, k=1, columns=["text"]).to_pylist()[0]
    assert raw["id"] == "p1" and raw["text"] == PASSAGES[1][0]
    # an encoder mvstore cannot describe is not recorded: given to the store, and again on each open
    counting = Counting(minilm)
    own = MvstoreVectorStore.from_texts(
        ["Tides follow the moon."], counting, uri=tmp_path / "own", spec="fp16"
    )
    assert counting.docs == 1 and "encoder" not in own.index.options
    assert [d.page_content for d in own.similarity_search("moon", k=1)] == ["Tides follow the moon."]
    with pytest.raises(
        InvalidOperationError, match=r"records no encoder.*pass the token encoder its vectors came from"
    ):
        MvstoreVectorStore(tmp_path / "own")
    assert MvstoreVectorStore(tmp_path / "own", counting).similarity_search("moon", k=1)[0].page_content == (
        "Tides follow the moon."
    )


def test_langchain_hybrid(store):
    store.index.create_fts_index("text")
    hits = store.similarity_search_with_score("magma crust", k=2, hybrid=True)
    assert hits[0][0].id == "p4" and hits[0][1] == pytest.approx(2 / 61)  # first in both rankings


def test_langchain_mistakes_before_encoding(store, minilm, tmp_path):
    from mvstore.integrations.langchain import MvstoreVectorStore

    counting = Counting(minilm)
    s = MvstoreVectorStore(store.index, counting)
    with pytest.raises(InvalidMetadataError, match="key 'text', where the passage text is kept"):
        s.add_texts(["a"], [{"text": "dup"}])
    with pytest.raises(InvalidMetadataError, match="'author' is not in this index.*drop the column"):
        s.add_texts(["a"], [{"author": "me"}])
    with pytest.raises(InvalidMetadataError, match="'score' is reserved"):
        s.add_texts(["a"], [{"score": 1}])
    assert counting.docs == 0 and len(store.index) == 5
    with pytest.raises(InvalidArgumentError, match="from_texts needs uri="):
        MvstoreVectorStore.from_texts(["a"], minilm)
    with pytest.raises(InvalidDtypeError, match="is no encoder; an encoder is 'hf'"):
        MvstoreVectorStore(store.index, object())
    with pytest.raises(InvalidArgumentError, match="delete needs the ids"):
        store.delete()


def test_maxsim_compressor_reranks(minilm):
    pytest.importorskip(
        "langchain_core", reason="langchain-core is not installed: pip install 'mvstore[langchain]'"
    )
    from langchain_core.documents import Document

    from mvstore.integrations.langchain import MaxSimCompressor

    docs = [Document(page_content=t, metadata=m) for t, m in PASSAGES]
    out = MaxSimCompressor(encoder=minilm, top_n=2).compress_documents(docs, "sunlight and plants")
    assert [d.metadata["source"] for d in out][0] == "biology.md" and len(out) == 2
    assert out[0].metadata["relevance_score"] >= out[1].metadata["relevance_score"]
    with pytest.raises(InvalidArgumentError, match="top_n=0 must be a positive int"):
        MaxSimCompressor(encoder=minilm, top_n=0)


# ------------------------------------------------------------------------------------------ LlamaIndex
def test_llamaindex_retriever_filters_postprocessor(tmp_path, minilm):
    pytest.importorskip(
        "llama_index.core", reason="llama-index-core is not installed: pip install 'mvstore[llamaindex]'"
    )
    from llama_index.core.schema import Document
    from llama_index.core.vector_stores.types import FilterCondition, MetadataFilter, MetadataFilters

    from mvstore.integrations.llamaindex import MaxSimNodePostprocessor, MvstoreRetriever

    nodes = [Document(text=t, metadata=m, id_=f"n{i}") for i, (t, m) in enumerate(PASSAGES)]
    r = MvstoreRetriever.from_nodes(
        nodes, uri=tmp_path / "ix", encoder=minilm, create_kwargs={"spec": "fp16"}, similarity_top_k=2
    )
    got = r.retrieve("how is each query token scored?")
    assert got[0].node.node_id == "n1" and got[0].node.metadata["source"] == "maxsim.md" and got[0].score > 0
    f = MetadataFilters(
        filters=[
            MetadataFilter(key="source", value="lance.md"),
            MetadataFilter(key="year", value=2023, operator=">"),
        ]
    )
    assert [n.node.node_id for n in MvstoreRetriever(tmp_path / "ix", filters=f).retrieve("anything")] == [
        "n3"
    ]
    either = MetadataFilters(
        filters=[
            MetadataFilter(key="year", value=[2015, 2019], operator="in"),
            MetadataFilter(key="source", value="maxsim.md"),
        ],
        condition=FilterCondition.OR,
    )
    assert {
        n.node.node_id for n in MvstoreRetriever(r.index, filters=either, similarity_top_k=5).retrieve("x")
    } == {"n1", "n2", "n4"}
    bad = MetadataFilters(filters=[MetadataFilter(key="source", value="lance", operator="text_match")])
    with pytest.raises(FilterError, match="'text_match' on 'source' is not supported"):
        MvstoreRetriever(r.index, filters=bad)
    pp = MaxSimNodePostprocessor(encoder=minilm, top_n=1)
    wide = MvstoreRetriever(r.index, similarity_top_k=5).retrieve("sunlight in plants")
    best = pp.postprocess_nodes(list(reversed(wide)), query_str="sunlight in plants")
    assert [n.node.node_id for n in best] == ["n2"]
    r.delete(["n2"])
    assert "n2" not in r.index
