"""What the framework integrations (LangChain, LlamaIndex) share: an mvstore index of passages that encodes
them with its own encoder (``create(uri, encoder=...)`` records it; ``Index.add_texts`` and text queries use
it), the passage text kept as the metadata column ``text``; metadata filters as ``where=`` SQL; MaxSim
reranking of passages by a token encoder.

Passages get their ids from the caller or ``uuid4`` strings.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Sequence
from typing import Any

import numpy as np

from ..exceptions import FilterError, InvalidDtypeError, InvalidMetadataError, InvalidOperationError
from ..search.maxsim import maxsim
from ..store._layout import TEXT

_OPS = {"$eq": "=", "$ne": "!=", "$gt": ">", "$gte": ">=", "$lt": "<", "$lte": "<="}


def _literal(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float, np.integer, np.floating)):
        return repr(v.item() if isinstance(v, np.generic) else v)
    if isinstance(v, str):
        return "'" + v.replace("'", "''") + "'"
    raise FilterError(
        f"filter value {v!r} is a {type(v).__name__}; compare columns with str, int, float or bool values"
    )


def _column(name: Any) -> str:
    if not isinstance(name, str) or not name:
        raise FilterError(f"filter key {name!r} is not a column name (str)")
    return '"' + name.replace('"', '""') + '"'


def _comparison(key: str, op: Any, v: Any) -> str:
    """One ``{key: {op: v}}`` condition as SQL."""
    if op in _OPS:
        return f"{_column(key)} {_OPS[op]} {_literal(v)}"
    if op in ("$in", "$nin"):
        if not isinstance(v, (list, tuple)) or not v:
            raise FilterError(f"{op} takes a non-empty list of values, got {v!r:.80}")
        neg = "NOT " if op == "$nin" else ""
        return f"{_column(key)} {neg}IN ({', '.join(_literal(x) for x in v)})"
    raise FilterError(
        f"filter operator {op!r} on {key!r} is not supported; use one of {', '.join([*_OPS, '$in', '$nin'])}, "
        "or pass a SQL string"
    )


def where_from_filter(filter: Any) -> str | None:  # noqa: A002 - LangChain's name
    """A metadata filter -> an mvstore ``where=`` string. A str is SQL already; a dict is LangChain's (and
    Chroma's) form: ``{"source": "a.md"}`` (equality; several keys: AND), ``{"year": {"$gt": 2020}}``
    (``$eq $ne $gt $gte $lt $lte $in $nin``), ``{"$and": [...]}`` / ``{"$or": [...]}``.

    >>> where_from_filter({"source": "a.md", "year": {"$gte": 2020}})
    '("source" = \\'a.md\\') AND ("year" >= 2020)'
    >>> where_from_filter({"$or": [{"lang": {"$in": ["en", "fr"]}}, {"draft": False}]})
    '((("lang" IN (\\'en\\', \\'fr\\'))) OR (("draft" = false)))'
    """
    if filter is None or isinstance(filter, str):
        return filter
    if not isinstance(filter, dict):
        raise FilterError(
            f"filter is a {type(filter).__name__}; pass a dict like {{'source': 'a.md'}} or a SQL string"
        )
    if not filter:
        return None
    parts: list[str] = []
    for key, cond in filter.items():
        if key in ("$and", "$or"):
            if not isinstance(cond, (list, tuple)) or not cond:
                raise FilterError(f"{key} takes a non-empty list of filters, got {cond!r:.80}")
            subs = [where_from_filter(c) for c in cond]
            parts.append(f" {key[1:].upper()} ".join(f"({s})" for s in subs if s))
        elif isinstance(key, str) and key.startswith("$"):
            raise FilterError(
                f"filter operator {key!r} is not supported here; use $and or $or at the top level"
            )
        elif isinstance(cond, dict):
            parts += [_comparison(key, op, v) for op, v in cond.items()]
        else:
            parts.append(f"{_column(key)} = {_literal(cond)}")
    return " AND ".join(f"({p})" for p in parts)


def check_encoder(encoder: Any) -> Any:
    """The encoder of a reranker: a token encoder, or None for the bundled MiniLM (loaded here)."""
    if encoder is None:
        from ..encoders import default_encoder

        return default_encoder()
    if not (hasattr(encoder, "encode_documents") and hasattr(encoder, "encode_queries")):
        raise InvalidDtypeError(
            f"encoder is a {type(encoder).__name__}; mvstore needs a token encoder with encode_documents / "
            "encode_queries (e.g. mvstore.encoders.HFTokenEncoder(), or None for the bundled MiniLM), not a "
            "single-vector embedding model"
        )
    return encoder


class TextIndex:
    """An mvstore index of passages, encoded by the index's own encoder: the one it recorded, or ``encoder``
    (any token encoder, e.g. one the index could not record) for this object, as ``mvstore.open(uri,
    encoder=...)`` takes it."""

    def __init__(self, index: Any, encoder: Any = None):
        import mvstore

        if isinstance(index, (str, os.PathLike)):
            index = mvstore.open(index, encoder=encoder)
        elif not isinstance(index, mvstore.Index):
            raise InvalidDtypeError(
                f"index is a {type(index).__name__}; pass an mvstore index (mvstore.open(uri) / mvstore.create) "
                "or its path"
            )
        elif encoder is not None:  # the same index, its text calls encoded by ``encoder``
            index = mvstore.open(index.root, encoder=encoder, storage_options=index.loc.storage_options)
        if index.encoder is None:
            raise InvalidOperationError(
                f"the index at {index.root!r} records no encoder (it was created without encoder=): pass the token "
                "encoder its vectors came from, e.g. encoder='hf' (the bundled MiniLM) or an encoder object"
            )
        self.index = index

    @property
    def encoder(self) -> Any:
        return self.index.encoder

    @classmethod
    def create(cls, uri: Any, encoder: Any = None, **create_kwargs: Any) -> TextIndex:
        """A new index at ``uri`` for ``encoder``'s vectors (None: the bundled MiniLM), recorded in the index
        when mvstore can describe it (then reopening needs no encoder); ``create_kwargs``: spec, keep_source, ..."""
        import mvstore

        from ..encoders import describable, make_encoder

        enc = make_encoder("hf" if encoder is None else encoder)
        if describable(enc):
            return cls(mvstore.create(uri, encoder=enc, **create_kwargs))
        return cls(mvstore.create(uri, dim=enc.dim, **create_kwargs), enc)  # not recorded: given on each open

    def add(
        self, texts: Sequence[str], metadatas: Sequence[dict] | None, ids: Sequence[Any] | None
    ) -> list[Any]:
        """Encode and add passages in one commit (``Index.add_texts``: the text goes to the ``text`` column,
        ids and metadata are checked before anything is encoded). Returns the ids."""
        texts = list(texts)
        if metadatas is not None and len(metadatas) != len(texts):
            raise InvalidMetadataError(
                f"got {len(metadatas)} metadata dicts for {len(texts)} texts; pass one per text"
            )
        rows = list(metadatas or [{}] * len(texts))
        for i, m in enumerate(rows):
            if not isinstance(m, dict):
                raise InvalidMetadataError(f"metadata {i} is a {type(m).__name__}; pass one dict per text")
            if TEXT in m:
                raise InvalidMetadataError(
                    f"metadata {i} has the key {TEXT!r}, where the passage text is kept; rename the key "
                    "(e.g. 'doc_text')"
                )
        if not texts:
            return []
        ids = [uuid.uuid4().hex for _ in texts] if ids is None else list(ids)
        self.index.add_texts(texts, ids=ids, metadata=rows if any(rows) else None, text_column=TEXT)
        return ids

    def search(
        self, query: str, k: int, where: str | None = None, *, hybrid: bool = False
    ) -> list[dict[str, Any]]:
        """Top-``k`` passages for ``query``: dicts with ``id``, ``score``, ``text`` and the metadata.
        ``hybrid``: fuse with BM25 on the same query text (needs ``index.create_fts_index()``)."""
        if not isinstance(query, str):
            raise InvalidDtypeError(f"query must be a str, got {type(query).__name__}")
        return self._hits(query, k, where, hybrid)

    def relevance_search(self, query: str, k: int, where: str | None = None) -> list[dict[str, Any]]:
        """:meth:`search` with the score divided by the query's token count: for L2-normalized token vectors
        (the bundled MiniLM, ColBERT models) the mean best cosine per query token, in [-1, 1]."""
        if not isinstance(query, str):
            raise InvalidDtypeError(f"query must be a str, got {type(query).__name__}")
        q = self.encoder.encode_queries([query])  # encoded here: its token count scales the score
        n_q = len(q.values)
        return [{**h, "score": h["score"] / n_q} for h in self._hits(q, k, where, False)]

    def _hits(self, query: Any, k: int, where: str | None, hybrid: bool) -> list[dict[str, Any]]:
        cols = self.index.metadata_columns
        table = self.index.search(query, k=k, where=where, columns=cols, hybrid=hybrid)
        return table.drop_columns(["query", "rank"]).to_pylist()

    def get(self, ids: Sequence[Any]) -> list[dict[str, Any]]:
        return self.index.get(list(ids), missing="ignore").to_pylist()

    def delete(self, ids: Sequence[Any]) -> None:
        self.index.delete(list(ids))


def split_hit(hit: dict[str, Any]) -> tuple[Any, float, str, dict[str, Any]]:
    """A :meth:`TextIndex.search` row -> (id, score, text, metadata without nulls)."""
    meta = {k: v for k, v in hit.items() if k not in ("id", "score", TEXT) and v is not None}
    return hit["id"], float(hit["score"]), hit[TEXT], meta


def maxsim_scores(encoder: Any, query: str, texts: Sequence[str]) -> np.ndarray:
    """Exact MaxSim of ``query`` against each text, both encoded by ``encoder`` -> ``(len(texts),)`` float32."""
    if not texts:
        return np.zeros(0, np.float32)
    q = encoder.encode_queries([query])[0]
    return maxsim(np.ascontiguousarray(q, np.float32), encoder.encode_documents(list(texts))).astype(
        np.float32
    )
