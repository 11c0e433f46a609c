"""LangChain integration (``pip install "mvstore[langchain]"``): a late-interaction ``VectorStore`` and a
MaxSim document compressor.

* :class:`MvstoreVectorStore` — a LangChain ``VectorStore`` over an mvstore index: ``add_texts`` /
  ``add_documents`` / ``from_texts`` encode passages into token vectors with the index's own encoder
  (``from_texts`` records it, default the bundled all-MiniLM-L6-v2, so ``MvstoreVectorStore("rag_index")``
  reopens the index with nothing else) and keep the text in the metadata column ``text``; ``similarity_search``
  (``_with_score``, ``_with_relevance_scores``), ``as_retriever()``, ``delete``, ``get_by_ids``. Metadata
  filters: ``filter={"source": "a.md", "year": {"$gte": 2020}}`` (or a SQL string), evaluated by Lance before
  scoring; ``hybrid=True`` fuses MaxSim with BM25 on the same query (``index.create_fts_index()`` first).
* :class:`MaxSimCompressor` — a ``BaseDocumentCompressor`` that reranks any retriever's documents by exact
  MaxSim with a token encoder (like RAGatouille's compressor), for ``ContextualCompressionRetriever``.

Example::

    from mvstore.integrations.langchain import MvstoreVectorStore

    store = MvstoreVectorStore.from_texts(texts, metadatas=[{"source": p} for p in paths], uri="rag_index")
    store.similarity_search("how do I filter?", k=4, filter={"source": "README.md"})
    retriever = store.as_retriever(search_kwargs={"k": 4})
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from .._checks import check_int
from ..exceptions import InvalidArgumentError, require
from ..store._layout import TEXT
from ._text import TextIndex, check_encoder, maxsim_scores, split_hit, where_from_filter

require("langchain_core", extra="langchain")
from langchain_core.documents import BaseDocumentCompressor, Document  # noqa: E402
from langchain_core.vectorstores import VectorStore  # noqa: E402

__all__ = ["MvstoreVectorStore", "MaxSimCompressor"]


def _document(hit: dict[str, Any]) -> tuple[Document, float]:
    i, score, text, meta = split_hit(hit)
    return Document(page_content=text, metadata=meta, id=str(i)), score


class MvstoreVectorStore(VectorStore):
    """A LangChain vector store on an mvstore index (``index``: an :class:`mvstore.Index` or its path) whose
    passages and queries are encoded by the index's own encoder (recorded by ``from_texts`` /
    ``mvstore.create(uri, encoder=...)``), or by ``encoder`` when given (a token encoder the index could not
    record; it must be the one the index was built with). Scores are MaxSim (higher is closer)."""

    def __init__(self, index: Any, encoder: Any = None):
        self._text = TextIndex(index, encoder)

    @property
    def index(self) -> Any:
        """The mvstore :class:`~mvstore.Index`."""
        return self._text.index

    @property
    def encoder(self) -> Any:
        """The token encoder of the index (for a :class:`MaxSimCompressor` over the same vectors, say)."""
        return self._text.encoder

    @property
    def embeddings(self) -> None:
        """None: the store encodes with its token encoder (:attr:`encoder`), not a LangChain ``Embeddings``."""
        return None

    # -------------------------------------------------------------------------------------------- writing
    def add_texts(
        self,
        texts: Iterable[str],
        metadatas: list[dict[str, Any]] | None = None,
        *,
        ids: list[str] | None = None,
        **kwargs: Any,
    ) -> list[str]:
        """Encode and add passages in one commit; returns their ids (``uuid4`` hex strings unless given).
        Metadata keys become filterable columns, fixed by the first add."""
        if kwargs:
            raise InvalidArgumentError(
                f"add_texts got unknown arguments {sorted(kwargs)}; it takes texts, metadatas, ids"
            )
        return [str(i) for i in self._text.add(list(texts), metadatas, ids)]

    def add_documents(self, documents: list[Document], **kwargs: Any) -> list[str]:
        ids = kwargs.pop("ids", None)
        if ids is None and all(d.id is not None for d in documents):
            ids = [d.id for d in documents]
        return self.add_texts(
            [d.page_content for d in documents], [dict(d.metadata) for d in documents], ids=ids, **kwargs
        )

    @classmethod
    def from_texts(
        cls,
        texts: list[str],
        embedding: Any = None,
        metadatas: list[dict[str, Any]] | None = None,
        *,
        ids: list[str] | None = None,
        uri: Any = None,
        **create_kwargs: Any,
    ) -> MvstoreVectorStore:
        """A new index at ``uri`` (required: the index is a directory) filled with ``texts``. ``embedding``:
        the mvstore token encoder (LangChain's name for it: ``"hf"``, ``"colbert:PATH"``, an encoder object;
        None = the bundled MiniLM), recorded in the index when mvstore can describe it; ``create_kwargs`` go
        to :func:`mvstore.create` (``spec``, ``keep_source``, ...)."""
        if uri is None:
            raise InvalidArgumentError(
                "from_texts needs uri=, the directory the mvstore index is created in, e.g. "
                "MvstoreVectorStore.from_texts(texts, uri='rag_index')"
            )
        store = cls.__new__(cls)
        store._text = TextIndex.create(uri, embedding, **create_kwargs)
        store.add_texts(texts, metadatas, ids=ids)
        return store

    def delete(self, ids: list[str] | None = None, **kwargs: Any) -> bool:
        """Delete passages by id (one commit); unknown ids are an error unless ``missing="ignore"``."""
        if ids is None:
            raise InvalidArgumentError("delete needs the ids to delete, e.g. store.delete(['id1', 'id2'])")
        self.index.delete(list(ids), **kwargs)
        return True

    def get_by_ids(self, ids: Sequence[str], /) -> list[Document]:
        """The stored passages with these ids (unknown ids are left out), in the order given."""
        out = []
        for row in self._text.get(ids):
            meta = {k: v for k, v in row.items() if k not in ("id", TEXT) and v is not None}
            out.append(Document(page_content=row[TEXT], metadata=meta, id=str(row["id"])))
        return out

    # ------------------------------------------------------------------------------------------ searching
    def similarity_search_with_score(
        self,
        query: str,
        k: int = 4,
        filter: Any = None,
        *,
        hybrid: bool = False,
        **kwargs: Any,  # noqa: A002
    ) -> list[tuple[Document, float]]:
        """Top-``k`` passages and their MaxSim scores (the fused RRF score with ``hybrid=True``). ``filter``:
        a dict (``{"source": "a.md"}``, ``{"year": {"$gt": 2020}}``, ``$in``, ``$and``/``$or``, ...) or a
        SQL ``where`` string."""
        if kwargs:
            raise InvalidArgumentError(
                f"similarity_search got unknown arguments {sorted(kwargs)}; it takes query, k, filter, hybrid"
            )
        hits = self._text.search(query, k, where_from_filter(filter), hybrid=hybrid)
        return [_document(h) for h in hits]

    def similarity_search(self, query: str, k: int = 4, **kwargs: Any) -> list[Document]:
        return [d for d, _ in self.similarity_search_with_score(query, k, **kwargs)]

    def _similarity_search_with_relevance_scores(
        self, query: str, k: int = 4, **kwargs: Any
    ) -> list[tuple[Document, float]]:
        """Relevance in [0, 1]: (mean best cosine per query token + 1) / 2, for L2-normalized token vectors."""
        filter_ = kwargs.pop("filter", None)
        if kwargs:
            raise InvalidArgumentError(f"unknown arguments {sorted(kwargs)}; pass k and filter")
        hits = self._text.relevance_search(query, k, where_from_filter(filter_))
        return [(d, (s + 1.0) / 2.0) for d, s in map(_document, hits)]


class MaxSimCompressor(BaseDocumentCompressor):
    """Rerank documents by exact MaxSim between the query's and each document's token vectors (both from
    ``encoder``; None = the bundled MiniLM) and keep the best ``top_n``; each kept document gets
    ``metadata["relevance_score"]``. Use with LangChain's ``ContextualCompressionRetriever``."""

    encoder: Any = None
    top_n: int = 4

    model_config = {"arbitrary_types_allowed": True}

    def __init__(self, encoder: Any = None, top_n: int = 4, **kwargs: Any):
        check_int("top_n", top_n, what="documents kept")
        super().__init__(encoder=check_encoder(encoder), top_n=top_n, **kwargs)

    def compress_documents(
        self, documents: Sequence[Document], query: str, callbacks: Any = None
    ) -> Sequence[Document]:
        docs = list(documents)
        scores = maxsim_scores(self.encoder, query, [d.page_content for d in docs])
        order = sorted(range(len(docs)), key=lambda i: (-scores[i], i))[: self.top_n]
        return [
            Document(
                page_content=docs[i].page_content,
                id=docs[i].id,
                metadata={**docs[i].metadata, "relevance_score": float(scores[i])},
            )
            for i in order
        ]
