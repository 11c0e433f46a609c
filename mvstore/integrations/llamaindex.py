"""LlamaIndex integration (``pip install "mvstore[llamaindex]"``): a late-interaction retriever and a MaxSim
node postprocessor.

* :class:`MvstoreRetriever` — a LlamaIndex ``BaseRetriever`` over an mvstore index of passages:
  :meth:`MvstoreRetriever.from_nodes` (or :meth:`add_nodes`) encodes nodes / documents into token vectors with
  the index's own encoder (``from_nodes`` records it, default the bundled all-MiniLM-L6-v2, so
  ``MvstoreRetriever("rag_index")`` reopens the index with nothing else), keeping the text in the metadata column
  ``text`` and the node's metadata as filterable columns; ``retrieve("question")`` returns ``NodeWithScore``
  (MaxSim scores). ``filters=`` takes LlamaIndex ``MetadataFilters``, a dict or a SQL string, evaluated by
  Lance before scoring; ``hybrid=True`` fuses MaxSim with BM25 on the same query (``index.create_fts_index()``
  first).
* :class:`MaxSimNodePostprocessor` — a ``BaseNodePostprocessor`` that reranks any retriever's nodes by exact
  MaxSim with a token encoder (like RAGatouille's reranker) and keeps the best ``top_n``.

Example::

    from llama_index.core import SimpleDirectoryReader
    from llama_index.core.node_parser import SentenceSplitter
    from mvstore.integrations.llamaindex import MvstoreRetriever

    nodes = SentenceSplitter(chunk_size=256).get_nodes_from_documents(SimpleDirectoryReader("docs").load_data())
    retriever = MvstoreRetriever.from_nodes(nodes, uri="rag_index", similarity_top_k=4)
    retriever.retrieve("how do I filter?")
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .._checks import check_int
from ..exceptions import FilterError, InvalidArgumentError, InvalidDtypeError, require
from ._text import TextIndex, check_encoder, maxsim_scores, split_hit, where_from_filter

require("llama_index.core", pip_name="llama-index-core", extra="llamaindex")
from llama_index.core.postprocessor.types import BaseNodePostprocessor  # noqa: E402
from llama_index.core.retrievers import BaseRetriever  # noqa: E402
from llama_index.core.schema import BaseNode, NodeWithScore, QueryBundle, TextNode  # noqa: E402
from llama_index.core.vector_stores.types import MetadataFilters  # noqa: E402

__all__ = ["MvstoreRetriever", "MaxSimNodePostprocessor", "filters_to_where"]

_LI_OPS = {
    "==": "$eq",
    "!=": "$ne",
    ">": "$gt",
    ">=": "$gte",
    "<": "$lt",
    "<=": "$lte",
    "in": "$in",
    "nin": "$nin",
}


def filters_to_where(filters: Any) -> str | None:
    """LlamaIndex ``MetadataFilters`` (operators ``== != > >= < <= in nin``, conditions and/or, nested), a
    LangChain-style dict or a SQL string -> an mvstore ``where=`` string."""
    if filters is None or isinstance(filters, (str, dict)):
        return where_from_filter(filters)
    if not isinstance(filters, MetadataFilters):
        raise InvalidDtypeError(
            f"filters is a {type(filters).__name__}; pass llama_index MetadataFilters, a dict or a SQL string"
        )
    parts = []
    for f in filters.filters:
        if isinstance(f, MetadataFilters):
            parts.append(filters_to_where(f))
            continue
        op = _LI_OPS.get(f.operator.value)
        if op is None:
            raise FilterError(
                f"filter operator {f.operator.value!r} on {f.key!r} is not supported; use one of "
                f"{', '.join(_LI_OPS)}, or pass a SQL string"
            )
        parts.append(where_from_filter({f.key: {op: f.value}}))
    cond = filters.condition.value.lower() if filters.condition is not None else "and"
    if cond not in ("and", "or"):
        raise FilterError(f"filter condition {cond!r} is not supported; use 'and' or 'or'")
    parts = [p for p in parts if p]
    return f" {cond.upper()} ".join(f"({p})" for p in parts) or None


class MvstoreRetriever(BaseRetriever):
    """Retrieve passages from an mvstore index (``index``: an :class:`mvstore.Index` or its path), encoded by
    the index's own encoder (recorded by ``from_nodes`` / ``mvstore.create(uri, encoder=...)``), or by
    ``encoder`` when given (a token encoder the index could not record; the one the index was built with)."""

    def __init__(
        self,
        index: Any,
        encoder: Any = None,
        *,
        similarity_top_k: int = 4,
        filters: Any = None,
        hybrid: bool = False,
        **kwargs: Any,
    ):
        check_int("similarity_top_k", similarity_top_k, what="nodes retrieved")
        self._text = TextIndex(index, encoder)
        self._k = similarity_top_k
        self._where = filters_to_where(filters)
        self._hybrid = hybrid
        super().__init__(**kwargs)

    @property
    def index(self) -> Any:
        return self._text.index

    @classmethod
    def from_nodes(
        cls,
        nodes: Sequence[BaseNode],
        *,
        uri: Any,
        encoder: Any = None,
        create_kwargs: dict | None = None,
        **kwargs: Any,
    ) -> MvstoreRetriever:
        """A new index at ``uri`` holding ``nodes`` (or documents), encoded by ``encoder`` (``"hf"``,
        ``"colbert:PATH"``, an encoder object; None = the bundled MiniLM), recorded in the index when mvstore
        can describe it; ``create_kwargs`` go to :func:`mvstore.create`, ``kwargs`` to the retriever."""
        text = TextIndex.create(uri, encoder, **(create_kwargs or {}))
        r = cls(text.index, **kwargs)  # the index knows its encoder (recorded, or given to this object)
        r.add_nodes(nodes)
        return r

    def add_nodes(self, nodes: Sequence[BaseNode]) -> list[str]:
        """Encode and add nodes (one commit): ids are the node ids, text their content."""
        nodes = list(nodes)
        bad = next((n for n in nodes if not isinstance(n, BaseNode)), None)
        if bad is not None:
            raise InvalidDtypeError(
                f"add_nodes takes llama_index nodes or documents, got a {type(bad).__name__}"
            )
        return [
            str(i)
            for i in self._text.add(
                [n.get_content() for n in nodes],
                [dict(n.metadata) for n in nodes],
                [n.node_id for n in nodes],
            )
        ]

    def delete(self, node_ids: Sequence[str]) -> None:
        self._text.delete(node_ids)

    def _retrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        hits = self._text.search(query_bundle.query_str, self._k, self._where, hybrid=self._hybrid)
        out = []
        for h in hits:
            i, score, text, meta = split_hit(h)
            out.append(NodeWithScore(node=TextNode(id_=str(i), text=text, metadata=meta), score=score))
        return out


class MaxSimNodePostprocessor(BaseNodePostprocessor):
    """Rerank nodes by exact MaxSim between the query's and each node's token vectors (both from ``encoder``;
    None = the bundled MiniLM) and keep the best ``top_n`` (the node's score becomes its MaxSim score)."""

    encoder: Any = None
    top_n: int = 4

    def __init__(self, encoder: Any = None, top_n: int = 4, **kwargs: Any):
        check_int("top_n", top_n, what="nodes kept")
        super().__init__(encoder=check_encoder(encoder), top_n=top_n, **kwargs)

    @classmethod
    def class_name(cls) -> str:
        return "MaxSimNodePostprocessor"

    def _postprocess_nodes(
        self, nodes: list[NodeWithScore], query_bundle: QueryBundle | None = None
    ) -> list[NodeWithScore]:
        if query_bundle is None:
            raise InvalidArgumentError(
                "MaxSimNodePostprocessor needs the query: call postprocess_nodes(nodes, query_str=...)"
            )
        scores = maxsim_scores(self.encoder, query_bundle.query_str, [n.node.get_content() for n in nodes])
        order = sorted(range(len(nodes)), key=lambda i: (-scores[i], i))[: self.top_n]
        return [NodeWithScore(node=nodes[i].node, score=float(scores[i])) for i in order]
