"""LanceDB plug-in: rerank any LanceDB result (vector, full-text or hybrid) by late-interaction MaxSim.

:class:`MaxSimReranker` is a ``lancedb.rerankers.Reranker``: pass it to ``.rerank(...)`` of a LanceDB
query. The query string is encoded into token vectors by ``encoder`` (default: the bundled
all-MiniLM-L6-v2); each result row's document token vectors come either

* from an **mvstore index** (``index=``), looked up by the row's ``id_column`` value and decoded from the
  index's compressed codes (the same vectors mvstore search scores), or
* from the **text column** (``column=``), encoded on the fly by ``encoder`` (wrap it in
  :class:`~mvstore.encoders.CachedEncoder` to encode each text once).

The reranker adds ``_relevance_score`` (the MaxSim score, float32) and sorts by it, best first; ties
keep LanceDB's order. With ``return_score="relevance"`` (default) LanceDB's own ``_distance`` /
``_score`` columns are dropped, with ``"all"`` they are kept.

Example (LanceDB FTS, reranked from the text column)::

    import lancedb
    from mvstore.integrations.lancedb import MaxSimReranker

    tbl = lancedb.connect("db").open_table("docs")
    tbl.create_fts_index("text")
    hits = tbl.search("solar panels", query_type="fts").rerank(MaxSimReranker()).limit(10).to_arrow()
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pyarrow as pa

from ..exceptions import DimensionMismatchError, InvalidDtypeError, RerankerError, require
from ..ragged import Ragged
from ..search.maxsim import maxsim

require("lancedb", pip_name="lancedb")
from lancedb.rerankers import Reranker  # noqa: E402

__all__ = ["MaxSimReranker", "RerankerError"]


class MaxSimReranker(Reranker):
    """Rerank LanceDB results by exact MaxSim between the query's and each row's token vectors.

    Parameters
    ----------
    encoder : a token encoder (``encode_queries`` / ``encode_documents``, e.g.
        :class:`~mvstore.encoders.HFTokenEncoder`); ``None`` = the bundled all-MiniLM-L6-v2, loaded on
        first use. With ``index=`` it must be the encoder the index was built with.
    index : an :class:`mvstore.store.Index` holding the documents' token vectors, or ``None`` to encode
        the ``column`` text of each row instead.
    column : text column encoded when ``index`` is None.
    id_column : column of the LanceDB result holding the mvstore ids when ``index`` is given.
    return_score : ``"relevance"`` (keep only ``_relevance_score``) or ``"all"`` (keep LanceDB's scores too).
    """

    def __init__(
        self,
        encoder: Any = None,
        *,
        index: Any = None,
        column: str = "text",
        id_column: str = "id",
        return_score: str = "relevance",
    ):
        if return_score not in ("relevance", "all"):
            raise RerankerError(f"return_score={return_score!r} must be 'relevance' or 'all'")
        super().__init__(return_score)
        if encoder is not None and not (
            hasattr(encoder, "encode_queries") and hasattr(encoder, "encode_documents")
        ):
            raise InvalidDtypeError(
                f"encoder is a {type(encoder).__name__}; pass a token encoder with encode_queries/encode_documents "
                "(e.g. mvstore.encoders.HFTokenEncoder()) or None for the bundled MiniLM"
            )
        if index is not None and not (hasattr(index, "snapshot") and hasattr(index, "dim")):
            raise InvalidDtypeError(
                f"index is a {type(index).__name__}; pass an mvstore index (mvstore.store.open(uri)) or None"
            )
        for name, val in (("column", column), ("id_column", id_column)):
            if not isinstance(val, str) or not val:
                raise InvalidDtypeError(f"{name} must be a column name (str), got {val!r}")
        self._encoder = encoder
        self.index = index
        self.column = column
        self.id_column = id_column
        self._rows_of: dict[Any, int] | None = None
        self._rows_version: int | None = None

    def __str__(self) -> str:
        src = (
            f"index={self.index!r}, id_column={self.id_column!r}"
            if self.index is not None
            else f"column={self.column!r}"
        )
        return f"MaxSimReranker({src})"

    # ------------------------------------------------------------------------------------ scoring
    @property
    def encoder(self) -> Any:
        if self._encoder is None:
            from ..encoders import default_encoder

            self._encoder = default_encoder()
        return self._encoder

    def _query_vectors(self, query: Any) -> np.ndarray:
        if not isinstance(query, str) or not query.strip():
            raise RerankerError(
                f"MaxSimReranker needs the query text, got {query!r}; for a vector query pass it as "
                "`.rerank(reranker, query_string='...')`"
            )
        return self.encoder.encode_queries([query])[0]

    def _row_map(self, snap: Any) -> dict[Any, int]:
        if self._rows_of is None or self._rows_version != snap.version:
            self._rows_of = {v: i for i, v in enumerate(snap.ids.tolist())}
            self._rows_version = snap.version
        return self._rows_of

    def _index_docs(self, ids: Sequence[Any]) -> tuple[Ragged, Any]:
        """Decoded stored vectors of ``ids`` (in order) and the index codec (for the query transform)."""
        snap = self.index.snapshot()
        rows_of = self._row_map(snap)
        rows = []
        missing = []
        for v in ids:
            r = rows_of.get(v)
            if r is None:
                missing.append(v)
            else:
                rows.append(r)
        if missing:
            raise RerankerError(
                f"{len(missing)} result id(s) are not in the mvstore index (first: {missing[0]!r}); the LanceDB "
                f"column {self.id_column!r} must hold the ids the documents were added to the index with"
            )
        codes, offs = snap.gather(np.asarray(rows, np.int64))
        return Ragged(snap.codec.decode(codes), offs), snap.codec

    def scores(self, query: str, table: pa.Table) -> np.ndarray:
        """MaxSim score of ``query`` against every row of ``table`` -> ``(num_rows,)`` float32."""
        q = self._query_vectors(query)
        if table.num_rows == 0:
            return np.zeros(0, np.float32)
        if self.index is not None:
            if self.id_column not in table.column_names:
                raise RerankerError(
                    f"the LanceDB result has no id column {self.id_column!r} (columns: {table.column_names}); "
                    "pass id_column= naming the column holding the mvstore ids, and do not .select() it away"
                )
            ids = table.column(self.id_column).to_pylist()
            if any(v is None for v in ids):
                raise RerankerError(f"column {self.id_column!r} has null ids; every result row needs an id")
            docs, codec = self._index_docs(ids)
            if q.shape[1] != self.index.dim:
                raise DimensionMismatchError(
                    f"the encoder makes {q.shape[1]}-d query vectors but the index holds {self.index.dim}-d "
                    "vectors; use the encoder the index was built with"
                )
            q = codec.transform_query(np.ascontiguousarray(q, np.float32))
        else:
            if self.column not in table.column_names:
                raise RerankerError(
                    f"the LanceDB result has no text column {self.column!r} (columns: {table.column_names}); "
                    "pass column= naming the text column, or index= to read vectors from an mvstore index"
                )
            texts = table.column(self.column).to_pylist()
            bad = [i for i, t in enumerate(texts) if not isinstance(t, str) or not t.strip()]
            if bad:
                raise RerankerError(
                    f"row {bad[0]} of column {self.column!r} is {texts[bad[0]]!r}; every row needs non-empty text"
                )
            docs = self.encoder.encode_documents(texts)
        return maxsim(q, docs).astype(np.float32)

    def _rerank(self, query: str, table: pa.Table) -> pa.Table:
        if table.num_rows == 0:
            self._query_vectors(query)  # still report a missing query string
            return self._handle_empty_results(table)
        s = self.scores(query, table)
        if "_relevance_score" in table.column_names:
            table = table.drop_columns(["_relevance_score"])
        table = table.append_column("_relevance_score", pa.array(s, pa.float32()))
        order = np.lexsort((np.arange(len(s)), -s))  # best first, ties keep LanceDB's order
        return table.take(pa.array(order))

    # --------------------------------------------------------------------------- Reranker interface
    def rerank_vector(self, query: str, vector_results: pa.Table) -> pa.Table:
        out = self._rerank(query, vector_results)
        if self.score == "relevance" and "_distance" in out.column_names:
            out = out.drop_columns(["_distance"])
        return out

    def rerank_fts(self, query: str, fts_results: pa.Table) -> pa.Table:
        out = self._rerank(query, fts_results)
        if self.score == "relevance" and "_score" in out.column_names:
            out = out.drop_columns(["_score"])
        return out

    def rerank_hybrid(self, query: str, vector_results: pa.Table, fts_results: pa.Table) -> pa.Table:
        if self.score == "all":
            combined = self._merge_and_keep_scores(vector_results, fts_results)
        else:
            combined = self.merge_results(vector_results, fts_results)
        out = self._rerank(query, combined)
        return self._keep_relevance_score(out)
