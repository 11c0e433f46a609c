"""The :class:`Index`: one mvstore directory (Lance docs table + codec state), read at one version."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterable, Iterator
from datetime import timedelta
from typing import Any

import lance
import numpy as np
import pyarrow as pa

from .. import spec as spec_mod
from ..exceptions import (
    DuplicateIdError,
    FilterError,
    IndexCorruptedError,
    InvalidDtypeError,
    InvalidOperationError,
    InvalidVectorsError,
    UnknownIdError,
)
from ..ragged import Ragged, as_ragged
from ..search.params import SearchParams
from ..search.snapshot import Snapshot
from . import _integrity
from ._encode import drift, encode_pooled, sq_error
from ._layout import (
    DOCS,
    DOCS_SYSTEM_COLUMNS,
    STATE,
    STATE_KEY,
    conform_metadata,
    ids_numpy,
    normalize_ids,
    normalize_metadata,
    parse_state,
    sql_literal_list,
    state_table,
)
from ._view import _State, _View, check_columns


def _open_table(uri: str, what: str) -> lance.LanceDataset:
    """Open one of the index's Lance tables; unreadable data is IndexCorruptedError."""
    try:
        return lance.dataset(uri)
    except BaseException as e:
        if not _integrity.lance_failure(e):
            raise
        raise IndexCorruptedError(
            f"the {what} {uri} cannot be opened ({str(e).splitlines()[0][:200]}); "
            "the index is corrupted: restore it from a backup or rebuild it"
        ) from e


# --------------------------------------------------------------------------------------------- index
class Index:
    """An mvstore index directory read at one version. Make one with :func:`mvstore.store.create` or
    :func:`mvstore.store.open`; see the package docstring for the layout and policies."""

    def __init__(self, root: str, manifest: dict[str, Any], version: int | None = None):
        self.root = root
        self.manifest = manifest
        self.spec = spec_mod.parse(manifest["spec"])
        self.dim = int(manifest["dim"])
        self.options = dict(manifest["options"])
        self._write_lock = threading.RLock()
        self._states: dict[int, _State] = {}
        self._ids_cache: tuple[int, Any] | None = None
        self._pinned = version is not None
        self._view = self._make_view(version)

    # ------------------------------------------------------------------------------------ versions
    @property
    def _docs_uri(self) -> str:
        return os.path.join(self.root, DOCS)

    @property
    def _state_uri(self) -> str:
        return os.path.join(self.root, STATE)

    def _docs_exists(self) -> bool:
        vdir = os.path.join(self._docs_uri, "_versions")
        return os.path.isdir(vdir) and any(f.endswith(".manifest") for f in os.listdir(vdir))

    def _latest_docs(self) -> lance.LanceDataset | None:
        if not self._docs_exists():
            return None
        return _open_table(self._docs_uri, "docs table")

    def _make_view(self, version: int | None) -> _View:
        ds = self._latest_docs()
        sds = self._state_ds()
        _integrity.check_open(self.root, STATE, None if sds is None else sds.version)
        if version is not None:
            if ds is None or version == 0:
                if version != 0:
                    raise ValueError(f"version {version} does not exist: this index has no versions yet")
                _integrity.check_open(self.root, DOCS, None)
                return _View(0, None, self._pending_state())
            known = [v["version"] for v in _integrity.read_or_corrupted(ds.versions, "the docs table's versions")]
            if version not in known:
                raise ValueError(f"version {version} does not exist; available versions: {known}")
        _integrity.check_open(self.root, DOCS, version if version is not None or ds is None else ds.version)
        if version is not None:
            ds = _integrity.read_or_corrupted(lambda: ds.checkout_version(version), f"docs table version {version}")
        if ds is None:
            return _View(0, None, self._pending_state())
        raw = (ds.schema.metadata or {}).get(STATE_KEY)
        try:
            sid = int(raw)
        except (TypeError, ValueError):
            raise IndexCorruptedError(
                f"docs table version {ds.version} does not record its codec state ({STATE_KEY.decode()} schema "
                "metadata); the index is corrupted: rebuild it"
            ) from None
        return _View(ds.version, ds, self._load_state(sid))

    @property
    def version(self) -> int:
        """The docs-table version this index reads (0 before the first add)."""
        return self._view.version

    @property
    def latest_version(self) -> int:
        ds = self._latest_docs()
        return 0 if ds is None else ds.latest_version

    def versions(self) -> list[dict[str, Any]]:
        """Every stored version, oldest first: ``{"version", "timestamp", "n_docs"}``."""
        ds = self._latest_docs()
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
        self._view = self._make_view(version)
        self._pinned = version is not None
        return self

    def refresh(self) -> Index:
        """Move to the latest version (e.g. after another process wrote). Returns self."""
        return self.checkout(None)

    # --------------------------------------------------------------------------------- codec state
    def _state_ds(self) -> lance.LanceDataset | None:
        vdir = os.path.join(self._state_uri, "_versions")
        if not os.path.isdir(vdir):
            return None
        return _open_table(self._state_uri, "codec state table")

    def _load_state(self, sid: int) -> _State:
        if sid in self._states:
            return self._states[sid]
        sds = self._state_ds()
        if sds is None:
            raise IndexCorruptedError(
                f"the docs table refers to codec state {sid} but {self._state_uri} is missing; "
                "the index is corrupted: restore it from a backup or rebuild it"
            )
        try:
            tbl = sds.to_table(filter=f"state_id = {int(sid)}")
        except BaseException as e:
            if not _integrity.lance_failure(e):
                raise
            raise IndexCorruptedError(f"codec state {sid} cannot be read ({e}); rebuild the index") from e
        arrays, meta = parse_state(tbl, sid, self._state_uri)
        _integrity.check_state(sid, arrays, meta)
        codec = spec_mod.build_pipeline(self.spec, self.dim)
        try:
            codec.set_state(
                {k[6:]: v for k, v in arrays.items() if k.startswith("codec.")}, meta.get("codec", {})
            )
        except (KeyError, ValueError, TypeError) as e:
            raise IndexCorruptedError(
                f"codec state {sid} does not fit spec {self.spec!s}: {e}; rebuild it"
            ) from e
        cent = arrays.get("index.centroids")
        if cent is None and codec.has_coarse:
            cent = np.ascontiguousarray(codec.coarse_centroids, np.float32)
        if cent is None:
            raise IndexCorruptedError(f"codec state {sid} has no stage-1 centroids; rebuild the index")
        st = _State(sid, codec, cent, meta)
        self._states[sid] = st
        return st

    def _pending_state(self) -> _State | None:
        """Before the first add: the latest state made by an explicit :meth:`train`, if any."""
        sds = self._state_ds()
        if sds is None:
            return None
        meta_rows = sds.to_table(columns=["state_id", "data"], filter="name = '__meta__'")
        best = None
        for sid, data in zip(meta_rows.column("state_id").to_pylist(), meta_rows.column("data").to_pylist()):
            if b'"explicit": true' in data and (best is None or sid > best):
                best = sid
        return None if best is None else self._load_state(best)

    def _next_state_id(self) -> int:
        sds = self._state_ds()
        if sds is None or sds.count_rows() == 0:
            return 1
        return int(pa.compute.max(sds.to_table(columns=["state_id"]).column("state_id")).as_py()) + 1

    def _fit_state(self, vectors: np.ndarray, n_total: int, *, explicit: bool) -> _State:
        """Fit the codec and stage-1 centroids on a sample of (pooled) vectors and store them (one commit)."""
        from ..search.postings import CENTROID_SAMPLE, default_n_centroids, fit_centroids

        opts = self.options
        rng = np.random.default_rng(opts.get("seed", 0))
        everything = vectors
        if len(vectors) > opts["train_size"]:
            vectors = vectors[np.sort(rng.choice(len(vectors), opts["train_size"], replace=False))]
        codec = spec_mod.build_pipeline(self.spec, self.dim).fit(vectors)
        t = codec.transform(vectors)
        train_err = None
        if codec.dim_out == t.shape[1]:  # sparse maps decode into another (V-dim) space: no error to measure
            train_err = float(sq_error(vectors, t, codec.decode(codec.encode(vectors))).mean())
        energy = float(np.einsum("ij,ij->i", vectors, vectors, dtype=np.float64).mean())
        arrays = {"codec." + k: v for k, v in codec.get_state()[0].items()}
        if codec.has_coarse:
            cent, source = None, "codec"
            n_c = int(codec.coarse_centroids.shape[0])
        else:
            n_c = opts.get("n_centroids") or default_n_centroids(max(n_total, 1))
            # k-means wants CENTROID_SAMPLE points per centroid (faiss warns below 39): the codec's sample may
            # be too small for that, so the centroids get their own, larger one (measured on SciFact: 4096
            # centroids fit on 156k instead of 65k vectors recall more of the exhaustive top-10 at equal cost)
            n_fit = min(len(everything), max(len(t), CENTROID_SAMPLE * n_c))
            if n_fit > len(t):
                pick = np.sort(rng.choice(len(everything), n_fit, replace=False)) if n_fit < len(everything) else None
                t = codec.transform(everything if pick is None else everything[pick])
            n_c = int(min(n_c, 2 ** int(np.floor(np.log2(len(t))))))
            cent, source = fit_centroids(t, n_c, seed=opts.get("seed", 0)), "kmeans"
            arrays["index.centroids"] = cent
        meta = {
            "codec": codec.get_state()[1],
            "explicit": explicit,
            "terms": source,
            "n_centroids": n_c,
            "train_vectors": int(len(vectors)),
            "train_error": train_err,
            "train_energy": energy,
        }
        meta["checksum"] = _integrity.state_digest(arrays, meta)
        sid = self._next_state_id()
        tbl = state_table(sid, arrays, meta)
        if self._state_ds() is None:
            lance.write_dataset(tbl, self._state_uri, mode="create")
        else:
            lance.write_dataset(tbl, self._state_uri, mode="append")
        if cent is None:
            cent = np.ascontiguousarray(codec.coarse_centroids, np.float32)
        st = _State(sid, codec, cent, meta)
        self._states[sid] = st
        return st

    def train(self, sample: Any) -> Index:
        """Fit the codec and stage-1 centroids on ``sample`` before the first add: documents (a Ragged or a list
        of ``(n_i, dim)`` arrays, pooled like added documents) or a 2-D ``(n, dim)`` array of vectors as they
        will be stored (after pooling). Returns self."""
        self._check_writable()
        with self._write_lock:
            if self._docs_exists():
                raise InvalidOperationError(
                    "this index already holds documents and a trained codec; to retrain use "
                    "index.optimize(retrain=True) (needs create(..., keep_source=True))"
                )
            if isinstance(sample, np.ndarray) and sample.ndim == 2:
                vecs = Ragged.from_list([sample], dim=self.dim).values
            else:
                vecs = self._pool(as_ragged(sample, dim=self.dim, what="training sample")).values
            if len(vecs) == 0:
                raise InvalidVectorsError("the training sample is empty; pass at least one document")
            st = self._fit_state(np.asarray(vecs, np.float32), len(vecs), explicit=True)
            self._view = _View(0, None, st)
            _integrity.record(self.root)
        return self

    # ------------------------------------------------------------------------------------- writing
    def _check_writable(self) -> None:
        if self._pinned:
            raise InvalidOperationError(
                f"this index was opened at version {self.version} for reading (time travel); call "
                "index.checkout() to move to the latest version before writing"
            )

    def _pool(self, r: Ragged) -> Ragged:
        f = float(self.spec.pool_factor)
        if f <= 1.0 or len(r) == 0:
            return r
        from ..pooling import pool

        return pool(r, f, method=self.spec.pool_method)

    def _prepare(self, ids: Any, vectors: Any, metadata: Any, id_type: pa.DataType | None) -> dict[str, Any]:
        """Validate one batch completely (nothing is written) and pool it."""
        r = as_ragged(vectors, dim=self.dim)
        if len(r) == 0:
            raise InvalidVectorsError("the batch has no documents; pass at least one (ids, vectors) pair")
        ids_arr = normalize_ids(ids, len(r), id_type=id_type)
        meta = normalize_metadata(metadata, len(r))
        return {"ids": ids_arr, "ragged": r, "meta": meta}

    def _encode(
        self, b: dict[str, Any], st: _State, fields: list[pa.Field], keep_source: bool
    ) -> pa.RecordBatch:
        """Pool + encode one validated batch -> one docs record batch."""
        r = b["ragged"]
        cols: dict[str, pa.Array] = {"id": b["ids"]}
        for f, arr in zip(fields, conform_metadata(b["meta"], fields, len(r))):
            cols[f.name] = arr
        cols["n_tokens"] = pa.array(r.lengths.astype(np.int32))
        cols.update(encode_pooled(st, self._pool(r), keep_source))
        cols[_integrity.CHECKSUM_COLUMN] = _integrity.checksum_column(cols)
        return pa.RecordBatch.from_pydict(cols)

    def _existing_ids(self, ds: lance.LanceDataset | None) -> tuple[pa.DataType | None, Any]:
        """The id type and the ids of ``ds`` (sorted int64 array or a set of str), cached per version."""
        if ds is None:
            return None, None
        cached = self._ids_cache
        if cached is not None and cached[0] == ds.version:
            ids = cached[1]
        else:
            vals = ids_numpy(ds.to_table(columns=["id"]).column("id"))
            ids = set(vals.tolist()) if vals.dtype.kind == "U" else np.sort(vals)
            self._ids_cache = (ds.version, ids)
        return ds.schema.field("id").type, (set(ids) if isinstance(ids, set) else ids)

    @staticmethod
    def _check_new(ids: pa.Array, seen: Any) -> Any:
        """DuplicateIdError if any id is in ``seen``; returns ``seen`` extended by ``ids``."""
        vals = ids_numpy(ids)
        if isinstance(seen, set):
            dup = next((v for v in vals.tolist() if v in seen), None)
            if dup is not None:
                raise DuplicateIdError(
                    f"id {dup!r} is already in the index; use index.upsert(ids, vectors) to replace documents"
                )
            seen.update(vals.tolist())
            return seen
        if seen is None:
            return set(vals.tolist()) if vals.dtype.kind == "U" else np.sort(vals)
        hit = np.isin(vals, seen)
        if hit.any():
            dup = vals[np.flatnonzero(hit)[0]].item()
            raise DuplicateIdError(
                f"id {dup!r} is already in the index; use index.upsert(ids, vectors) to replace documents"
            )
        return np.union1d(seen, vals)

    def _docs_schema(self, b: dict[str, Any], st: _State) -> tuple[pa.Schema, list[pa.Field]]:
        meta_fields = [] if b["meta"] is None else list(b["meta"].schema)
        fields = [pa.field("id", b["ids"].type), *meta_fields]
        fields += [
            pa.field("n_tokens", pa.int32()),
            pa.field("n_vectors", pa.int32()),
            pa.field("codes", pa.large_binary()),
            pa.field("terms", pa.list_(pa.int32())),
            pa.field("recon_err", pa.float32()),
        ]
        if self.options.get("keep_source"):
            fields.append(pa.field("source", pa.large_binary()))
        fields.append(pa.field(_integrity.CHECKSUM_COLUMN, pa.uint64()))
        return pa.schema(fields, metadata={STATE_KEY: str(st.state_id).encode()}), meta_fields

    def add(self, ids: Any, vectors: Any = None, metadata: Any = None) -> int:
        """Add documents: ``ids`` (ints or strings, new and unique), ``vectors`` (a Ragged or a list of
        ``(n_i, dim)`` float arrays), optional ``metadata`` (Arrow table, pandas frame, dict of columns or list
        of dicts, one row per document). The whole batch is validated before anything is written; one Lance
        commit. The first add trains the codec on a sample of this batch unless :meth:`train` was called.
        ``add(batches)`` with one iterable of ``(ids, vectors[, metadata])`` tuples is :meth:`add_batches`.
        Returns the new version."""
        if vectors is None:
            if (
                metadata is None
                and hasattr(ids, "__iter__")
                and not isinstance(ids, (str, bytes, np.ndarray))
            ):
                return self.add_batches(ids)
            raise InvalidVectorsError(
                "add() got no vectors: call add(ids, vectors, metadata=None), or add(batches) with an iterable "
                "of (ids, vectors[, metadata]) tuples"
            )
        return self.add_batches([(ids, vectors, metadata)])

    def add_batches(self, batches: Iterable[Any]) -> int:
        """Streaming add: an iterable of ``(ids, vectors)`` or ``(ids, vectors, metadata)`` batches, encoded and
        written one at a time (memory bounded by one batch), committed ONCE at the end: if any batch is invalid
        or the iterable raises, nothing is committed and the previous version stays current. Returns the new
        version."""
        self._check_writable()
        with self._write_lock:
            ds = self._latest_docs()
            id_type, seen = self._existing_ids(ds)
            st = self._view.state if ds is None else self._make_view(None).state
            it = iter(batches)

            def prepared() -> Iterator[dict[str, Any]]:
                nonlocal seen
                for i, item in enumerate(it):
                    if not isinstance(item, (tuple, list)) or len(item) not in (2, 3):
                        raise InvalidDtypeError(
                            f"batch {i} is a {type(item).__name__}; each batch must be (ids, vectors) or "
                            "(ids, vectors, metadata)"
                        )
                    b = self._prepare(item[0], item[1], item[2] if len(item) == 3 else None, id_type)
                    seen = self._check_new(b["ids"], seen)
                    yield b

            gen = prepared()
            first = next(gen, None)
            if first is None:
                raise InvalidVectorsError(
                    "add_batches got no batches; pass at least one (ids, vectors) batch"
                )
            if ds is not None:
                fields = [ds.schema.field(n) for n in ds.schema.names if n not in DOCS_SYSTEM_COLUMNS]
                schema = ds.schema
                conform_metadata(first["meta"], fields, len(first["ragged"]))
            else:
                if st is None:
                    pooled = self._pool(first["ragged"])
                    st = self._fit_state(pooled.values.astype(np.float32), pooled.n_tokens, explicit=False)
                schema, fields = self._docs_schema(first, st)
            keep_source = "source" in schema.names
            failure: list[BaseException] = []

            def record_batches() -> Iterator[pa.RecordBatch]:
                try:
                    yield self._encode(first, st, fields, keep_source).cast(schema)
                    for b in gen:
                        yield self._encode(b, st, fields, keep_source).cast(schema)
                except BaseException as e:  # re-raised below with its own type, after Lance aborts the write
                    failure.append(e)
                    raise

            reader = pa.RecordBatchReader.from_batches(schema, record_batches())
            try:
                out = lance.write_dataset(
                    reader, self._docs_uri, schema=schema, mode="append" if ds is not None else "create"
                )
            except BaseException:
                if (
                    failure
                ):  # our own validation error or the user's iterator's exception, not Lance's wrapper
                    raise failure[0] from None
                raise  # a Lance/IO failure: nothing was committed, the previous version is still current
            self._view = _View(out.version, out, st)
            _integrity.record(self.root)
            if ds is not None and out.version == ds.version + 1:  # nobody else committed in between
                self._ids_cache = (out.version, seen)
            return out.version

    def upsert(self, ids: Any, vectors: Any, metadata: Any = None) -> int:
        """Insert or replace documents by id (whole rows: absent metadata columns become null); one commit.
        Returns the new version."""
        self._check_writable()
        with self._write_lock:
            ds = self._latest_docs()
            if ds is None:
                return self.add(ids, vectors, metadata)
            b = self._prepare(ids, vectors, metadata, ds.schema.field("id").type)
            st = self._make_view(None).state
            fields = [ds.schema.field(n) for n in ds.schema.names if n not in DOCS_SYSTEM_COLUMNS]
            batch = self._encode(b, st, fields, "source" in ds.schema.names).cast(ds.schema)
            ds.merge_insert("id").when_matched_update_all().when_not_matched_insert_all().execute(
                pa.Table.from_batches([batch])
            )
            out = lance.dataset(self._docs_uri)
            self._view = _View(out.version, out, st)
            _integrity.record(self.root)
            return out.version

    def delete(self, ids: Any, *, missing: str = "error") -> int:
        """Delete documents by id (one commit). Unknown ids raise UnknownIdError unless ``missing="ignore"``.
        Other documents keep their ids. Returns the new version."""
        self._check_writable()
        if missing not in ("error", "ignore"):
            raise ValueError(f"missing must be 'error' or 'ignore', got {missing!r}")
        with self._write_lock:
            ds = self._latest_docs()
            _integrity.check_open(self.root, DOCS, None)  # never commit on top of a rolled-back table
            id_type = None if ds is None else ds.schema.field("id").type
            arr = normalize_ids(ids, id_type=id_type)
            vals = ids_numpy(arr)
            if ds is None:
                if missing == "error" and len(vals):
                    raise UnknownIdError(f"id {vals[0].item()!r} is not in the index (it is empty)")
                return 0
            _, existing = self._existing_ids(ds)
            present = (
                np.array([v in existing for v in vals.tolist()], bool)
                if isinstance(existing, set)
                else np.isin(vals, existing)
            )
            if missing == "error" and not present.all():
                bad = vals[~present][:5].tolist()
                raise UnknownIdError(
                    f"{int((~present).sum())} id(s) are not in the index, e.g. {bad}; "
                    "pass missing='ignore' to skip them"
                )
            vals = vals[present]
            if len(vals):
                ds.delete(f"id IN {sql_literal_list(vals)}")
            out = lance.dataset(self._docs_uri)
            self._view = _View(out.version, out, self._view.state if self._view.ds is not None else None)
            if self._view.state is None:
                self._view = self._make_view(None)
            _integrity.record(self.root)
            return out.version

    # ------------------------------------------------------------------------------------- reading
    def __len__(self) -> int:
        return self._view.n_docs

    def snapshot(self) -> Snapshot:
        """The in-memory arrays of this version (built once per version)."""
        return self._view.snapshot()

    def search(
        self,
        queries: Any,
        k: int = 10,
        where: str | None = None,
        params: SearchParams | dict[str, Any] | None = None,
        columns: list[str] | None = None,
    ) -> pa.Table:
        """Top-``k`` documents per query by MaxSim. ``queries``: a Ragged, a list of ``(n_q, dim)`` arrays, or
        one 2-D array (a single query). ``where``: a SQL filter on metadata evaluated by Lance before scoring.
        Returns an Arrow table with ``query`` (int32), ``rank`` (int32, 0-based), ``id``, ``score`` (float32)
        and the requested metadata ``columns``, sorted by query then rank."""
        view = self._view
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
            raise ValueError(f"k must be a positive integer, got {k!r}")
        if isinstance(queries, np.ndarray) and queries.ndim == 2:
            queries = [queries]
        q = as_ragged(queries, dim=self.dim, what="queries")
        if isinstance(params, dict):
            params = SearchParams(**params)
        params = params or SearchParams()
        columns = list(columns or [])
        if view.ds is not None and columns:
            check_columns(view.ds.schema, columns, "columns=")
        id_type = pa.int64() if view.ds is None else view.ds.schema.field("id").type
        if view.state is None or view.ds is None or view.snapshot().n_docs == 0:
            if columns and view.ds is None:
                raise FilterError(f"columns={columns} cannot be read: the index has no documents yet")
            if where is not None and view.ds is not None:
                view.mask(where)  # still report a bad filter on an empty index
            return self._result_table([], [], np.zeros(0, np.int64), id_type, view, columns)
        allowed = view.mask(where) if where is not None else None
        res = view.searcher(params).search(q, int(k), allowed)
        return self._result_table(
            [r for r, _ in res], [s for _, s in res], view.snapshot().ids, id_type, view, columns
        )

    @staticmethod
    def _result_table(rows, scores, ids, id_type, view, columns) -> pa.Table:
        lens = [len(r) for r in rows]
        rows_all = np.concatenate(rows).astype(np.int64) if rows else np.zeros(0, np.int64)
        out = {
            "query": pa.array(np.repeat(np.arange(len(lens), dtype=np.int32), lens)),
            "rank": pa.array(
                np.concatenate([np.arange(n, dtype=np.int32) for n in lens]) if lens else [], pa.int32()
            ),
            "id": pa.array(ids[rows_all].tolist() if ids.dtype == object else ids[rows_all], id_type),
            "score": pa.array(
                np.concatenate(scores).astype(np.float32) if scores else np.zeros(0, np.float32), pa.float32()
            ),
        }
        if columns:
            if len(rows_all):
                uniq, inv = np.unique(rows_all, return_inverse=True)
                meta = _integrity.read_or_corrupted(
                    lambda: view.ds.take(uniq.tolist(), columns=columns), f"docs table version {view.version}"
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
        code_size = st.codec.code_size if st else spec_mod.code_size(self.spec, self.dim)
        n_docs = n_tok = n_vec = 0
        cur_err = None
        disk = 0
        if view.ds is not None:
            t = view.ds.to_table(columns=["n_tokens", "n_vectors", "recon_err"])
            n_docs = t.num_rows
            ntok = t.column("n_tokens").to_numpy().astype(np.int64)
            nvec = t.column("n_vectors").to_numpy().astype(np.int64)
            err = t.column("recon_err").to_numpy(zero_copy_only=False).astype(np.float64)
            n_tok, n_vec = int(ntok.sum()), int(nvec.sum())
            if n_vec and np.isfinite(err).all():
                cur_err = float((err * nvec).sum() / n_vec)
            vinfo = next((v for v in view.ds.versions() if v["version"] == view.version), None)
            disk = int(vinfo["metadata"].get("total_files_size", 0)) if vinfo else 0
        stored = n_vec * (code_size + (0 if st is not None and st.codec.has_coarse else 4))  # + int32 terms
        train_err = st.meta.get("train_error") if st else None
        return {
            "version": view.version,
            "spec": str(self.spec),
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
        older_than: timedelta | None = None,
        retrain: bool | str = "auto",
    ) -> dict[str, Any]:
        """Maintenance, each step only when asked: ``retrain`` (True, False or "auto" = when
        ``stats()["drift"] > drift_threshold``; needs ``keep_source=True``) re-fits the codec on the stored
        source vectors and re-encodes every document (one commit); ``compact`` merges small Lance fragments;
        ``cleanup`` deletes files of versions older than ``older_than`` (default: all but the current one;
        time travel to them stops working). Ids never change. Returns what was done."""
        from ._maintain import optimize

        self._check_writable()
        with self._write_lock:
            report = optimize(self, compact=compact, cleanup=cleanup, older_than=older_than, retrain=retrain)
            _integrity.record(self.root)
            return report

    def verify(self) -> dict[str, Any]:
        """Full integrity check (reads every file): each file of every stored version against the sha256
        recorded when it was committed, each version's rows against its record, the latest version's row
        checksums, each codec state's checksum. Returns ``{"ok": True, "files_checked", "bytes_checked",
        "states_checked", "notes"}``; raises IndexCorruptedError listing every problem. Cheaper checks run on
        every open and snapshot load (docs/LAYOUT.md, "Integrity")."""
        return _integrity.verify(self)

    def __repr__(self) -> str:
        return f"Index({self.root!r}, spec={str(self.spec)!r}, dim={self.dim}, version={self.version})"
