"""The :class:`Index`: one mvstore directory (Lance docs table + codec state), read at one version."""

from __future__ import annotations

import os
from collections.abc import Iterable
from datetime import timedelta
from typing import Any

import numpy as np
import pyarrow as pa

from .. import spec as spec_mod
from .._progress import check_progress
from ..exceptions import (
    FilterError,
    InvalidArgumentError,
    InvalidDtypeError,
    InvalidVectorsError,
    SearchParamsError,
    UnknownIdError,
)
from ..ragged import Ragged, as_ragged
from ..search.params import SearchParams
from ..search.snapshot import Snapshot
from . import _integrity
from ._encode import drift
from ._fs import Location, at
from ._hybrid import check_hybrid, hybrid_search
from ._layout import (
    DOCS_SYSTEM_COLUMNS,
    ID,
    N_TOKENS,
    N_VECTORS,
    RECON_ERR,
    TEXT,
    ids_numpy,
    normalize_ids,
    sql_literal_list,
)
from ._maintain import RETENTION
from ._tables import Tables
from ._view import CodeCache, View, check_columns, check_where
from ._write import Writer


def check_version(version: Any) -> int | None:
    """``version=`` of open / checkout: None (the latest) or a non-negative int (returned as a Python int)."""
    if version is None:
        return None
    if isinstance(version, bool) or not isinstance(version, (int, np.integer)):
        fix = f"; use version={int(version)}" if isinstance(version, str) and version.isdigit() else ""
        raise InvalidDtypeError(
            f"version must be an int (see index.versions()) or None for the latest, got "
            f"{type(version).__name__} {version!r:.80}{fix}"
        )
    if version < 0:
        raise InvalidArgumentError(
            f"version={version} must be >= 0 (see index.versions()) or None for the latest"
        )
    return int(version)


def _column_list(columns: Any) -> list[str]:
    """The ``columns=`` argument of a search as a list of names."""
    if columns is None:
        return []
    if isinstance(columns, str) or not isinstance(columns, (list, tuple)):
        raise InvalidDtypeError(
            f"columns= must be a list of column names, got {type(columns).__name__} {columns!r:.80}; "
            f"e.g. columns={[columns] if isinstance(columns, str) else ['lang']!r}"
        )
    bad = next((c for c in columns if not isinstance(c, str)), None)
    if bad is not None:
        raise InvalidDtypeError(
            f"columns= must hold column names (str), got {type(bad).__name__} {bad!r:.80}"
        )
    return list(dict.fromkeys(columns))


def _check_k(k: Any) -> None:
    """``k=`` of a search: a positive int."""
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)):
        raise InvalidDtypeError(
            f"k must be an int (results per query), got {type(k).__name__} {k!r}; e.g. k=10"
        )
    if k < 1:
        raise SearchParamsError(f"k={k} must be a positive integer (the number of results per query)")


# --------------------------------------------------------------------------------------------- index
class Index:
    """An mvstore index directory read at one version. Make one with :func:`mvstore.store.create` or
    :func:`mvstore.store.open`; see the package docstring for the layout and policies.

    A facade: it checks the user's arguments and hands the work to its parts, ``_tables``
    (:class:`~mvstore.store._tables.Tables`: the Lance tables and the version read now) and ``_writer``
    (:class:`~mvstore.store._write.Writer`: the write lock and every commit); a search runs on the version's
    :class:`~mvstore.store._view.View`."""

    def __init__(
        self, root: Location | str, manifest: dict[str, Any], version: int | None = None, *,
        code_cache: CodeCache | None = None, encoder: Any = None,
    ):  # fmt: skip
        self.loc = at(root)  # where the index lives (a local directory or an object-store prefix)
        self.root = self.loc.uri
        self.manifest = manifest
        # the spec create() was given; None for spec="auto" (each codec state records the spec it was fit for)
        created_spec = None if manifest["spec"] == "auto" else spec_mod.parse(manifest["spec"])
        self.dim = int(manifest["dim"])
        self.options = dict(manifest["options"])
        self._encoder: Any = (
            encoder  # open/create(encoder=...)'s, or the recorded one once a text call built it
        )
        # code_cache: open(uri, memory="bounded")'s cache of stage-2 codes read from disk (None: codes in memory)
        self._tables = Tables(self.loc, self.dim, self.options, created_spec, version, code_cache)
        self._writer = Writer(self._tables)

    @property
    def _view(self) -> View:
        """The version this object reads now."""
        return self._tables.view

    @property
    def last_maintenance(self) -> dict[str, Any] | None:
        """What the automatic maintenance after this object's last document write did (None: nothing was due)."""
        return self._writer.last_maintenance

    @property
    def memory(self) -> dict[str, Any]:
        """The memory mode: ``{"mode": "full"}`` (every code in memory), or for ``open(uri, memory="bounded")``
        ``{"mode": "bounded", "cache_bytes", "cached_bytes", "hits", "misses"}`` (the stage-2 code cache)."""
        c = self._tables.code_cache
        if c is None:
            return {"mode": "full"}
        return {
            "mode": "bounded",
            "cache_bytes": c.limit,
            "cached_bytes": c.bytes,
            "hits": c.hits,
            "misses": c.misses,
        }

    @property
    def encoder(self) -> Any:
        """The encoder of text calls (:meth:`add_texts`, ``search("...")``): the one ``open(uri, encoder=...)``
        was given, else the one recorded by ``create(uri, encoder=...)``, loaded on first use; None when the
        index records none. ``options["encoder"]`` holds the recorded description."""
        if self._encoder is None and self.options.get("encoder") is None:
            return None
        from ._text import encoder_of

        return encoder_of(self, "index.encoder")

    @property
    def spec(self) -> spec_mod.Spec | None:
        """The spec of this version's codec state; before the first add, the spec given to create() (None for
        ``spec="auto"``, which the first add or :meth:`train` picks)."""
        return self._tables.spec

    @property
    def version(self) -> int:
        """The docs-table version this index reads (0 before the first add)."""
        return self._view.version

    @property
    def latest_version(self) -> int:
        ds = self._tables.latest_docs()
        return 0 if ds is None else ds.latest_version

    def versions(self) -> list[dict[str, Any]]:
        """Every stored version, oldest first: ``{"version", "timestamp", "n_docs"}``."""
        ds = self._tables.latest_docs()
        if ds is None:
            return []
        return [
            {
                "version": v["version"],
                "timestamp": v["timestamp"],
                "n_docs": int(v["metadata"].get("total_rows", -1)),
            }
            for v in _integrity.read_or_corrupted(ds.versions, "the docs table's versions")
        ]

    def checkout(self, version: int | None = None) -> Index:
        """Read ``version`` (None: the latest, and follow writes again). Returns self."""
        self._tables.checkout(check_version(version))
        return self

    def refresh(self) -> Index:
        """Move to the latest version (e.g. after another process wrote). Returns self."""
        return self.checkout(None)

    def train(self, sample: Any, *, progress: bool | None = None) -> Index:
        """Fit the codec and stage-1 centroids on ``sample`` before the first add: documents (a Ragged or a list
        of ``(n_i, dim)`` arrays, pooled like added documents) or a 2-D ``(n, dim)`` array of vectors as they
        will be stored (after pooling). ``progress``: a bar (None: in terminals and notebooks, see
        :mod:`mvstore._progress`). Returns self."""
        self._writer.train(sample, check_progress(progress))
        return self

    def add(
        self, ids: Any, vectors: Any = None, metadata: Any = None, *, progress: bool | None = None
    ) -> int:
        """Add documents: ``ids`` (ints or strings, new and unique), ``vectors`` (a Ragged or a list of
        ``(n_i, dim)`` float arrays), optional ``metadata`` (Arrow table, pandas frame, dict of columns or list
        of dicts, one row per document). The whole batch is validated before anything is written; one Lance
        commit. The first add trains the codec on a sample of this batch unless :meth:`train` was called.
        ``add(batches)`` with one iterable of ``(ids, vectors[, metadata])`` tuples is :meth:`add_batches`.
        ``progress``: a bar (None: in terminals and notebooks, see :mod:`mvstore._progress`). Returns the new
        version. Texts instead of vectors: :meth:`add_texts`."""
        if vectors is None:
            if (
                metadata is None
                and hasattr(ids, "__iter__")
                and not isinstance(ids, (str, bytes, np.ndarray))
            ):
                return self.add_batches(ids, progress=progress)
            raise InvalidVectorsError(
                "add() got no vectors: call add(ids, vectors, metadata=None), or add(batches) with an iterable "
                "of (ids, vectors[, metadata]) tuples (for texts: add_texts(texts, ids=None, metadata=None))"
            )
        total = (
            len(vectors) if isinstance(vectors, (list, tuple, Ragged)) else None
        )  # the bar's; not validation
        return self._writer.add_batches([(ids, vectors, metadata)], check_progress(progress), total)

    def add_texts(
        self,
        texts: Any,
        ids: Any = None,
        metadata: Any = None,
        *,
        text_column: str | None = TEXT,
        batch_size: int = 256,
        progress: bool | None = None,
    ) -> list:
        """Encode ``texts`` (a list of str) with the index's :attr:`encoder` and add them, like :meth:`add`: one
        commit, all validated (ids, metadata against the stored columns) before the first text is encoded, then
        encoded and written ``batch_size`` texts at a time. ``ids`` default to consecutive integers after the
        largest stored id (0 for an empty index); an index with string ids needs them given. Each text is also
        stored in the metadata column ``text_column`` (default ``"text"``, an ordinary column: filterable,
        returned by ``search(..., columns=["text"])``); ``None`` stores no text. Returns the ids added."""
        from ._text import add_texts

        return add_texts(
            self, self._writer, texts, ids, metadata, text_column, batch_size, check_progress(progress)
        )

    def add_batches(self, batches: Iterable[Any], *, progress: bool | None = None) -> int:
        """Streaming add: an iterable of ``(ids, vectors)`` or ``(ids, vectors, metadata)`` batches, encoded and
        written one at a time (memory bounded by one batch), committed ONCE at the end: if any batch is invalid
        or the iterable raises, nothing is committed and the previous version stays current. ``progress``: a
        bar counting documents (None: in terminals and notebooks). Returns the new version."""
        return self._writer.add_batches(batches, check_progress(progress), None)

    def upsert(self, ids: Any, vectors: Any, metadata: Any = None) -> int:
        """Insert or replace documents by id; one commit. The vectors and the metadata columns given replace the
        stored ones; metadata columns not given keep their stored values (null for new ids), so
        ``upsert(ids, vectors)`` keeps every document's metadata. A column given is written for every row of
        the batch (null where a dict of a list of dicts lacks the key). Returns the new version."""
        with self._writer.writing(maintain=True):
            version = self._writer.upsert(ids, vectors, metadata)
            return self.add(ids, vectors, metadata) if version is None else version

    def delete(self, ids: Any, *, missing: str = "error") -> int:
        """Delete documents by id (one commit). Unknown ids raise UnknownIdError unless ``missing="ignore"``.
        Other documents keep their ids. Returns the new version."""
        if missing not in ("error", "ignore"):
            raise InvalidArgumentError(f"missing must be 'error' or 'ignore', got {missing!r}")
        return self._writer.delete(ids, missing)

    # ------------------------------------------------------------------------------------- reading
    def __len__(self) -> int:
        return self._view.n_docs

    @property
    def metadata_columns(self) -> list[str]:
        """The metadata columns of this version (fixed by the first add; empty before it)."""
        ds = self._view.ds
        return [] if ds is None else [n for n in ds.schema.names if n not in DOCS_SYSTEM_COLUMNS]

    def get(self, ids: Any, columns: list[str] | None = None, *, missing: str = "error") -> pa.Table:
        """The stored ``id`` and metadata ``columns`` (default: all) of documents, one row per id in the order
        given. Unknown ids raise UnknownIdError unless ``missing="ignore"`` (their rows are left out)."""
        if missing not in ("error", "ignore"):
            raise InvalidArgumentError(f"missing must be 'error' or 'ignore', got {missing!r}")
        view = self._view
        columns = self.metadata_columns if columns is None else _column_list(columns)
        id_type = None if view.ds is None else view.ds.schema.field(ID).type
        vals = ids_numpy(normalize_ids(ids, id_type=id_type))
        if view.ds is None:
            if len(vals) and missing == "error":
                raise UnknownIdError(f"id {vals[0].item()!r} is not in the index (it is empty)")
            if columns:
                raise FilterError(f"columns={columns} cannot be read: the index has no documents yet")
            return pa.table({ID: pa.array([], id_type or pa.int64())})
        check_columns(view.ds.schema, columns, "columns=")
        cols = [ID, *(c for c in columns if c != ID)]
        if len(vals) == 0:
            return view.ds.schema.empty_table().select(cols)
        with view.reading():
            t = _integrity.read_or_corrupted(
                lambda: view.ds.to_table(columns=cols, filter=f"{ID} IN {sql_literal_list(vals)}"),
                f"docs table version {view.version}",
            )
        where = {v: i for i, v in enumerate(t.column(ID).to_pylist())}
        order = [where.get(v) for v in vals.tolist()]
        if missing == "error" and None in order:
            bad = [v for v, o in zip(vals.tolist(), order) if o is None]
            raise UnknownIdError(
                f"{len(bad)} id(s) are not in the index, e.g. {bad[:5]}; pass missing='ignore' to skip them"
            )
        return t.take(pa.array([o for o in order if o is not None], pa.int64()))

    def __contains__(self, id: Any) -> bool:  # noqa: A002 - the document id
        return len(self.get([id], columns=[], missing="ignore")) == 1

    def export(self, path: str | os.PathLike) -> dict[str, Any]:
        """Write this version's documents to ``path``: ``.npz`` (``ids``, ``vectors``, ``offsets``: what
        ``mvstore build --input`` and ``add`` take back) or ``.parquet`` (``id``, the metadata columns and
        ``vectors``, a list of token vectors per document). The vectors are the pooled source vectors of a
        ``keep_source=True`` index, else the decoded stored vectors when the spec has no pca/trunc projection
        (InvalidOperationError otherwise). Written atomically. Returns ``{"path", "docs", "vectors", "source"}``."""
        from ._export import export

        return export(self, path)

    def snapshot(self) -> Snapshot:
        """The in-memory arrays of this version (built once per version), row ``i`` its ``i``-th document."""
        return self._view.public_snapshot()

    def search(
        self,
        queries: Any,
        k: int = 10,
        where: str | None = None,
        params: SearchParams | dict[str, Any] | None = None,
        columns: list[str] | None = None,
        *,
        text: str | list[str] | None = None,
        hybrid: bool = False,
        fusion: str = "rrf",
    ) -> pa.Table:
        """Top-``k`` documents per query by MaxSim. ``queries``: a Ragged, a list of ``(n_q, dim)`` arrays, or
        one 2-D array (a single query); or a str / list of str, encoded by the index's :attr:`encoder`.
        ``where``: a SQL filter on metadata evaluated by Lance before scoring. ``hybrid=True`` fuses MaxSim with
        BM25 on the full-text index (:meth:`create_fts_index`) of the query ``text`` (one string per query;
        for string queries, the queries themselves unless ``text`` is given), both among the rows ``where``
        keeps, by reciprocal rank fusion (``fusion="rrf"``; ``score`` is then the fused score). Returns an Arrow table with ``query`` (int32), ``rank`` (int32, 0-based), ``id``,
        ``score`` (float32) and the requested metadata ``columns``, sorted by query then rank."""
        view = self._view
        _check_k(k)
        q, text = self._query_vectors(queries, text, hybrid)
        texts = check_hybrid(text, hybrid, fusion, len(q))
        params = SearchParams.of(params)
        columns = _column_list(columns)
        if where is not None:
            check_where(None if view.ds is None else view.ds.schema, where)
        if view.ds is not None and columns:
            check_columns(view.ds.schema, columns, "columns=")
        id_type = pa.int64() if view.ds is None else view.ds.schema.field(ID).type
        if view.state is None or view.ds is None or view.snapshot().n_live == 0:
            if columns and view.ds is None:
                raise FilterError(f"columns={columns} cannot be read: the index has no documents yet")
            if where is not None and view.ds is not None:
                view.mask(where)  # still report a bad filter on an empty index
            return self._result_table([], [], np.zeros(0, np.int64), id_type, view, columns)
        allowed = view.mask(where) if where is not None else None
        if texts is not None:
            rows, scores = hybrid_search(view, q, texts, int(k), allowed, where, params)
            return self._result_table(rows, scores, view.snapshot().ids, id_type, view, columns)
        res = view.searcher(params).search(q, int(k), allowed)
        return self._result_table(
            [r for r, _ in res], [s for _, s in res], view.snapshot().ids, id_type, view, columns
        )

    def _query_vectors(self, queries: Any, text: Any, hybrid: bool) -> tuple[Ragged, Any]:
        """Search queries as a Ragged (one 2-D array is one query; strings are encoded by :attr:`encoder`) and
        the BM25 ``text`` of a hybrid search (for string queries, the queries unless ``text`` is given)."""
        if getattr(queries, "ndim", None) == 2 and (
            isinstance(queries, np.ndarray) or type(queries).__module__.startswith("torch")
        ):
            queries = [queries]  # one query: a (n_q, dim) numpy array or torch tensor
        from ._text import encode_queries, is_text_query

        if is_text_query(queries):
            if hybrid is True and text is None:
                text = queries  # the same string(s) for BM25 as for the encoder
            queries = encode_queries(self, queries)
        return as_ragged(queries, dim=self.dim, what="queries"), text

    def create_fts_index(self, column: str = TEXT, *, replace: bool = True) -> int:
        """Build Lance's full-text (BM25) index on a string metadata ``column``, for ``search(...,
        hybrid=True)``. One commit under the write lock. Rows written later are searched too (Lance scans the
        rows the index does not cover yet) and :meth:`optimize` adds them to the index (and rebuilds it after a
        retraining). ``replace=False`` refuses to rebuild an existing index. Returns the new version."""
        if not isinstance(column, str):
            raise InvalidDtypeError(
                f"column must be a column name (str), got {type(column).__name__} {column!r:.80}"
            )
        return self._writer.create_fts_index(column, replace)

    @staticmethod
    def _result_table(rows, scores, ids, id_type, view, columns) -> pa.Table:
        lens = [len(r) for r in rows]
        rows_all = np.concatenate(rows).astype(np.int64) if rows else np.zeros(0, np.int64)
        out = {
            "query": pa.array(np.repeat(np.arange(len(lens), dtype=np.int32), lens)),
            "rank": pa.array(
                np.concatenate([np.arange(n, dtype=np.int32) for n in lens]) if lens else [], pa.int32()
            ),
            ID: pa.array(ids[rows_all].tolist() if ids.dtype == object else ids[rows_all], id_type),
            "score": pa.array(
                np.concatenate(scores).astype(np.float32) if scores else np.zeros(0, np.float32), pa.float32()
            ),
        }
        if columns:
            if len(rows_all):
                uniq, inv = np.unique(rows_all, return_inverse=True)
                with view.reading():
                    meta = _integrity.read_or_corrupted(
                        lambda: view.ds.take(view.lance_rows(uniq).tolist(), columns=columns),
                        f"docs table version {view.version}",
                    )
                for c in columns:
                    out[c] = meta.column(c).take(pa.array(inv))
            else:
                for c in columns:
                    out[c] = pa.nulls(0, view.ds.schema.field(c).type)
        return pa.table(out)

    # ------------------------------------------------------------------------------------ housekeeping
    def stats(self) -> dict[str, Any]:
        """Size and health of this version: docs, original tokens, stored vectors, stored bytes (codes + terms),
        bytes per original token, data-file bytes on disk, spec, version, codec training error and drift."""
        view = self._view
        st = view.state
        spec = self.spec
        code_size = (
            st.codec.code_size if st else (None if spec is None else spec_mod.code_size(spec, self.dim))
        )
        n_docs = n_tok = n_vec = 0
        cur_err = None
        disk = 0
        if view.ds is not None:
            with view.reading():
                t = view.ds.to_table(columns=[N_TOKENS, N_VECTORS, RECON_ERR])
            n_docs = t.num_rows
            ntok = t.column(N_TOKENS).to_numpy().astype(np.int64)
            nvec = t.column(N_VECTORS).to_numpy().astype(np.int64)
            err = t.column(RECON_ERR).to_numpy(zero_copy_only=False).astype(np.float64)
            n_tok, n_vec = int(ntok.sum()), int(nvec.sum())
            if n_vec and np.isfinite(err).all():
                cur_err = float((err * nvec).sum() / n_vec)
            vinfo = next((v for v in view.ds.versions() if v["version"] == view.version), None)
            disk = int(vinfo["metadata"].get("total_files_size", 0)) if vinfo else 0
        stored = n_vec * (
            (code_size or 0) + (0 if st is not None and st.codec.has_coarse else 4)
        )  # + int32 terms
        train_err = st.meta.get("train_error") if st else None
        return {
            "version": view.version,
            "spec": "auto" if spec is None else str(spec),
            "auto": st.meta.get("auto") if st else None,
            "dim": self.dim,
            "docs": n_docs,
            "tokens": n_tok,
            "vectors": n_vec,
            "code_size": code_size,
            "stored_bytes": stored,
            "bytes_per_token": stored / n_tok if n_tok else None,
            "disk_bytes": disk,
            "n_centroids": None if st is None else int(st.centroids.shape[0]),
            "trained": st is not None,
            "train_error": train_err,
            "current_error": cur_err,
            "drift": drift(cur_err, train_err, st.meta.get("train_energy", 1.0) if st else 1.0),
        }

    def optimize(
        self,
        *,
        compact: bool = True,
        cleanup: bool = False,
        older_than: timedelta = RETENTION,
        retrain: bool | str = "auto",
        progress: bool | None = None,
    ) -> dict[str, Any]:
        """Maintenance, each step only when asked: ``retrain`` (True, False or "auto" = when
        ``stats()["drift"] > drift_threshold``; needs ``keep_source=True``) re-fits the codec on the stored
        source vectors and re-encodes every document (one commit); ``compact`` merges small Lance fragments;
        ``cleanup`` deletes the files of versions older than ``older_than`` (default 7 days, like LanceDB;
        ``timedelta(0)`` keeps only the current version; time travel to deleted versions stops working). The
        current version is always kept. Ids never change. ``progress``: a bar over the steps (None: in
        terminals and notebooks). Returns what was done."""
        from ._maintain import optimize

        if not any(retrain is v for v in (True, False)) and retrain != "auto":
            raise InvalidArgumentError(f"retrain must be True, False or 'auto', got {retrain!r}")
        if not isinstance(older_than, timedelta):
            raise InvalidDtypeError(
                f"older_than must be a datetime.timedelta (e.g. timedelta(days=7), the default; timedelta(0) keeps "
                f"only the current version), got {type(older_than).__name__} {older_than!r:.80}"
            )
        if older_than < timedelta(0):
            raise InvalidArgumentError(f"older_than={older_than!r} is negative; pass timedelta(0) or more")
        if not isinstance(compact, bool) or not isinstance(cleanup, bool):
            raise InvalidDtypeError(
                f"compact and cleanup must be True or False, got {compact!r} and {cleanup!r}"
            )
        check_progress(progress)
        with self._writer.writing():
            return optimize(
                self._tables,
                self.stats,
                compact=compact,
                cleanup=cleanup,
                older_than=older_than,
                retrain=retrain,
                progress=progress,
            )

    def verify(self) -> dict[str, Any]:
        """Full integrity check (reads every file): each file of every stored version against the sha256
        recorded when it was committed, each version's rows against its record, the latest version's row
        checksums, each codec state's checksum. Returns ``{"ok": True, "files_checked", "bytes_checked",
        "states_checked", "notes"}``; raises IndexCorruptedError listing every problem. Cheaper checks run on
        every open and snapshot load (docs/LAYOUT.md, "Integrity")."""
        return _integrity.verify(self._tables)

    def __repr__(self) -> str:
        spec = "auto" if self.spec is None else str(self.spec)
        return f"Index({self.root!r}, spec={spec!r}, dim={self.dim}, version={self.version})"
