"""The :class:`Index`: one mvstore directory (Lance docs table + codec state), read at one version."""

from __future__ import annotations

import contextlib
import json
import os
import threading
from collections.abc import Iterable, Iterator
from datetime import timedelta
from typing import Any

import lance
import numpy as np
import pyarrow as pa

from .. import spec as spec_mod
from .._progress import bar, check_progress
from ..exceptions import (
    DuplicateIdError,
    FilterError,
    IndexCorruptedError,
    InvalidArgumentError,
    InvalidDtypeError,
    InvalidOperationError,
    InvalidVectorsError,
    SearchParamsError,
    UnknownIdError,
    UpgradeRequiredError,
)
from ..ragged import Ragged, as_ragged
from ..search.params import SearchParams
from ..search.snapshot import Snapshot
from . import _integrity
from ._encode import drift, encode_pooled, sq_error
from ._fs import Location, at
from ._hybrid import check_hybrid, hybrid_search
from ._layout import (
    CODES,
    DOCS,
    DOCS_SYSTEM_COLUMNS,
    ID,
    N_TOKENS,
    N_VECTORS,
    RECON_ERR,
    ROW_CHECKSUM,
    SOURCE,
    STATE,
    STATE_KEY,
    TERMS,
    TEXT,
    checksum_column_of,
    conform_metadata,
    has_versions,
    ids_in,
    ids_numpy,
    ids_with,
    ids_without,
    new_metadata_fields,
    normalize_ids,
    normalize_metadata,
    parse_state,
    sql_literal_list,
    state_table,
)
from ._maintain import RETENTION
from ._view import WRITTEN_BYTES, CodeCache, Written, _State, _View, check_columns, check_where


def _open_table(loc: Location, name: str, what: str) -> lance.LanceDataset:
    """Open one of the index's Lance tables; unreadable data is IndexCorruptedError."""
    uri = loc.table(name)
    try:
        return loc.dataset(name)
    except BaseException as e:
        if not _integrity.lance_failure(e):
            raise
        raise IndexCorruptedError(
            f"the {what} {uri} cannot be opened ({str(e).splitlines()[0][:200]}); "
            "the index is corrupted: restore it from a backup or rebuild it"
        ) from e


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


def state_from_arrays(sid: int, arrays: dict[str, np.ndarray], meta: dict[str, Any], dim: int) -> _State:
    """A stored codec state (its arrays and meta, checksum checked) -> the fitted codec and stage-1 centroids."""
    _integrity.check_state(sid, arrays, meta)
    try:  # each state records its spec (spec="auto" picks one per index)
        spec = spec_mod.parse(meta["spec"])
        codec = spec_mod.build_pipeline(spec, dim)
        codec.set_state(
            {k[6:]: v for k, v in arrays.items() if k.startswith("codec.")}, meta.get("codec", {})
        )
    except (KeyError, ValueError, TypeError) as e:
        raise IndexCorruptedError(
            f"codec state {sid} does not fit its spec {meta.get('spec')!r}: {e}; rebuild it"
        ) from e
    cent = arrays.get("index.centroids")
    if cent is None and codec.has_coarse:
        cent = np.ascontiguousarray(codec.coarse_centroids, np.float32)
    if cent is None:
        raise IndexCorruptedError(f"codec state {sid} has no stage-1 centroids; rebuild the index")
    return _State(sid, codec, cent, meta, spec)


def prepare_batch(
    dim: int, ids: Any, vectors: Any, metadata: Any, id_type: pa.DataType | None
) -> dict[str, Any]:
    """Validate one batch of documents completely (nothing is written)."""
    r = as_ragged(vectors, dim=dim)
    if len(r) == 0:
        raise InvalidVectorsError("the batch has no documents; pass at least one (ids, vectors) pair")
    ids_arr = normalize_ids(ids, len(r), id_type=id_type)
    meta = normalize_metadata(metadata, len(r))
    return {"ids": ids_arr, "ragged": r, "meta": meta}


# --------------------------------------------------------------------------------------------- index
class Index:
    """An mvstore index directory read at one version. Make one with :func:`mvstore.store.create` or
    :func:`mvstore.store.open`; see the package docstring for the layout and policies."""

    def __init__(
        self, root: Location | str, manifest: dict[str, Any], version: int | None = None, *,
        code_cache: CodeCache | None = None,
    ):  # fmt: skip
        self.loc = at(root)  # where the index lives (a local directory or an object-store prefix)
        self.root = self.loc.uri
        self.manifest = manifest
        # the spec create() was given; None for spec="auto" (each codec state records the spec it was fit for)
        self._created_spec = None if manifest["spec"] == "auto" else spec_mod.parse(manifest["spec"])
        self.dim = int(manifest["dim"])
        self.options = dict(manifest["options"])
        self._write_lock = threading.RLock()
        self._lock_depth = 0  # nesting of _writing() in this object (the file lock is taken once)
        self._states: dict[int, _State] = {}
        self._ids_cache: tuple[int, Any] | None = None
        #: what the automatic maintenance after this object's last document write did (None: nothing was due)
        self.last_maintenance: dict[str, Any] | None = None
        self._pinned = version is not None
        self._encoder: Any = None  # open(uri, encoder=...)'s, or the recorded one once a text call built it
        #: open(uri, memory="bounded"): the cache of stage-2 codes read from disk (None: codes in memory)
        self._code_cache = code_cache
        self._view = self._make_view(version)

    @property
    def memory(self) -> dict[str, Any]:
        """The memory mode: ``{"mode": "full"}`` (every code in memory), or for ``open(uri, memory="bounded")``
        ``{"mode": "bounded", "cache_bytes", "cached_bytes", "hits", "misses"}`` (the stage-2 code cache)."""
        c = self._code_cache
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
        st = self._view.state
        return st.spec if st is not None else self._created_spec

    # ------------------------------------------------------------------------------------ versions
    @property
    def _docs_uri(self) -> str:
        return self.loc.table(DOCS)

    @property
    def _state_uri(self) -> str:
        return self.loc.table(STATE)

    def _docs_exists(self) -> bool:
        return has_versions(self.loc, DOCS)

    def _latest_docs(self) -> lance.LanceDataset | None:
        if not self._docs_exists():
            return None
        return _open_table(self.loc, DOCS, "docs table")

    def _new_view(
        self, version: int, ds: lance.LanceDataset | None, state: _State | None, base: _View | None = None,
        written: Written | None = None,
    ) -> _View:  # fmt: skip
        """The read state of ``version`` (derived from ``base``'s when it can be, see :class:`_View`), in this
        object's memory mode."""
        return _View(version, ds, state, self.loc, base, written, self._code_cache)

    def _make_view(self, version: int | None, base: _View | None = None) -> _View:
        ds = self._latest_docs()
        sds = self._state_ds()
        _integrity.check_open(self.loc, STATE, None if sds is None else sds.version)
        if version is not None:
            if ds is None or version == 0:
                if version != 0:
                    raise InvalidArgumentError(
                        f"version {version} does not exist: this index has no versions yet; open it with version=None"
                    )
                _integrity.check_open(self.loc, DOCS, None)
                return self._new_view(0, None, self._pending_state())
            known = [
                v["version"] for v in _integrity.read_or_corrupted(ds.versions, "the docs table's versions")
            ]
            if version not in known:
                raise InvalidArgumentError(
                    f"version {version} does not exist; available versions: {known} (index.versions())"
                )
        _integrity.check_open(self.loc, DOCS, version if version is not None or ds is None else ds.version)
        if version is not None:
            ds = _integrity.read_or_corrupted(
                lambda: ds.checkout_version(version), f"docs table version {version}"
            )
        if ds is None:
            return self._new_view(0, None, self._pending_state())
        if ROW_CHECKSUM not in ds.schema.names and checksum_column_of(ds.schema) is not None:
            if version is not None and version != ds.latest_version:
                raise InvalidArgumentError(
                    f"version {version} was written in format 2, before this index was upgraded, and this mvstore "
                    "cannot read it; open a version written since the upgrade (index.versions())"
                )
            raise UpgradeRequiredError(
                f"the docs table of {self.root!r} still has format-2 column names (an upgrade was interrupted?): "
                f"run `mvstore upgrade {self.root}` or mvstore.upgrade(uri) to finish it"
            )
        raw = (ds.schema.metadata or {}).get(STATE_KEY)
        try:
            sid = int(raw)
        except (TypeError, ValueError):
            raise IndexCorruptedError(
                f"docs table version {ds.version} does not record its codec state ({STATE_KEY.decode()} schema "
                "metadata); the index is corrupted: rebuild it"
            ) from None
        return self._new_view(ds.version, ds, self._load_state(sid), base)

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
        version = check_version(version)
        self._view = self._make_view(version, self._view)
        self._pinned = version is not None
        return self

    def refresh(self) -> Index:
        """Move to the latest version (e.g. after another process wrote). Returns self."""
        return self.checkout(None)

    # --------------------------------------------------------------------------------- codec state
    def _state_ds(self) -> lance.LanceDataset | None:
        if not has_versions(self.loc, STATE):  # absent, or its first commit was killed: no state was stored
            return None
        return _open_table(self.loc, STATE, "codec state table")

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
        st = self._states[sid] = state_from_arrays(sid, arrays, meta, self.dim)
        return st

    def _pending_state(self) -> _State | None:
        """Before the first add: the latest state made by an explicit :meth:`train`, if any."""
        sds = self._state_ds()
        if sds is None:
            return None
        meta_rows = sds.to_table(columns=["state_id", "data"], filter="name = '__meta__'")
        best = None
        for sid, data in zip(meta_rows.column("state_id").to_pylist(), meta_rows.column("data").to_pylist()):
            if json.loads(data).get("explicit") is True and (best is None or sid > best):
                best = sid
        return None if best is None else self._load_state(best)

    def _next_state_id(self) -> int:
        sds = self._state_ds()
        if sds is None or sds.count_rows() == 0:
            return 1
        return int(pa.compute.max(sds.to_table(columns=["state_id"]).column("state_id")).as_py()) + 1

    def _pick_spec(self, docs: Ragged) -> tuple[spec_mod.Spec, dict[str, Any] | None]:
        """The spec a first codec state is fit for: create()'s, or for ``spec="auto"`` the pick of
        :func:`mvstore.tune.auto_spec` on ``docs`` (with what it measured, kept in the state)."""
        if self._created_spec is not None:
            return self._created_spec, None
        from ..tune import auto_spec

        res = auto_spec(docs, self.options["max_bytes_per_token"], seed=self.options.get("seed", 0))
        info = {
            "budget": res.budget, "spec": res.spec, "fidelity": res.fidelity, "bytes_per_token": res.bytes_per_token,
            "seconds": res.seconds, "sample_docs": res.n_docs, "sample_tokens": res.n_tokens,
            "pseudo_queries": res.n_queries, "measure": res.measure, "exact_fidelity": res.exact_fidelity,
            "table": [{k: r[k] for k in ("spec", "bytes_per_token", "fidelity", "agreement", "known_item", "within_budget")}
                      for r in res.table],
        }  # fmt: skip
        return spec_mod.parse(res.spec), info

    def _fit_state(
        self,
        vectors: np.ndarray,
        n_total: int,
        *,
        explicit: bool,
        spec: spec_mod.Spec | None = None,
        auto: dict[str, Any] | None = None,
    ) -> _State:
        """Fit the codec and stage-1 centroids for ``spec`` (default: the current one) on a sample of (pooled)
        vectors and store them (one commit)."""
        from ..search.postings import (
            CENTROID_SAMPLE,
            MIN_POINTS_PER_CENTROID,
            default_n_centroids,
            fit_centroids,
        )

        spec = spec or self.spec
        opts = self.options
        rng = np.random.default_rng(opts.get("seed", 0))
        everything = vectors
        if len(vectors) > opts["train_size"]:
            vectors = vectors[np.sort(rng.choice(len(vectors), opts["train_size"], replace=False))]
        codec = spec_mod.build_pipeline(spec, self.dim).fit(vectors)
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
                pick = (
                    np.sort(rng.choice(len(everything), n_fit, replace=False))
                    if n_fit < len(everything)
                    else None
                )
                t = codec.transform(everything if pick is None else everything[pick])
            n_c = int(min(n_c, 2 ** int(np.floor(np.log2(max(len(t) // MIN_POINTS_PER_CENTROID, 1))))))
            cent, source = fit_centroids(t, n_c, seed=opts.get("seed", 0)), "kmeans"
            arrays["index.centroids"] = cent
        meta = {
            "spec": str(spec),
            "auto": auto,
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
        self.loc.write_dataset(tbl, STATE, mode="create" if self._state_ds() is None else "append")
        if cent is None:
            cent = np.ascontiguousarray(codec.coarse_centroids, np.float32)
        st = _State(sid, codec, cent, meta, spec)
        self._states[sid] = st
        return st

    def train(self, sample: Any, *, progress: bool | None = None) -> Index:
        """Fit the codec and stage-1 centroids on ``sample`` before the first add: documents (a Ragged or a list
        of ``(n_i, dim)`` arrays, pooled like added documents) or a 2-D ``(n, dim)`` array of vectors as they
        will be stored (after pooling). ``progress``: a bar (None: in terminals and notebooks, see
        :mod:`mvstore._progress`). Returns self."""
        check_progress(progress)
        with self._writing(), bar(1, "training", unit="codec", progress=progress) as pbar:
            if self._docs_exists():
                raise InvalidOperationError(
                    "this index already holds documents and a trained codec; to retrain use "
                    "index.optimize(retrain=True) (needs create(..., keep_source=True))"
                )
            if isinstance(sample, np.ndarray) and sample.ndim == 2:
                if self.spec is None:
                    raise InvalidOperationError(
                        'spec="auto" picks its spec (pooling included) from documents: pass train() a Ragged '
                        "or a list of (n_i, dim) arrays, not one 2-D array of vectors"
                    )
                spec, auto = self.spec, None
                vecs = Ragged.from_list([sample], dim=self.dim).values
            else:
                docs = as_ragged(sample, dim=self.dim, what="training sample")
                spec, auto = self._pick_spec(docs) if len(docs) else (self.spec, None)
                vecs = spec.pool(docs).values if len(docs) else docs.values
            if len(vecs) == 0:
                raise InvalidVectorsError("the training sample is empty; pass at least one document")
            st = self._fit_state(np.asarray(vecs, np.float32), len(vecs), explicit=True, spec=spec, auto=auto)
            self._view = self._new_view(0, None, st)
            pbar.update(1)
        return self

    # ------------------------------------------------------------------------------------- writing
    @contextlib.contextmanager
    def _writing(self, maintain: bool = False) -> Iterator[None]:
        """One write: this object's thread lock, then the index's cross-process write lock
        (:func:`~mvstore.store._layout.write_lock`); nested writes (upsert -> add) take it once. A write that
        succeeds records what it committed (:func:`~mvstore.store._integrity.record`) before the lock is released;
        a document write (``maintain``) then runs the automatic maintenance policy
        (:func:`~mvstore.store._maintain.auto_optimize`) under the same lock and records its commit too. Once the
        lock is released, the new version's search state is derived (:meth:`_View.prepare`), so the writer pays
        for its write becoming searchable, not its next search."""
        self._check_writable()
        with self._write_lock:
            with self.loc.write_lock() if self._lock_depth == 0 else contextlib.nullcontext():
                self._lock_depth += 1
                try:
                    yield
                finally:
                    self._lock_depth -= 1
                if self._lock_depth == 0:
                    _integrity.record(self.loc)
                    if maintain:
                        self._maintain()
            if self._lock_depth == 0:
                self._view.prepare()

    def _maintain(self) -> None:
        """Automatic maintenance after a committed write. The write stands whatever happens here: a failure is a
        warning (naming the fix), not the write's error."""
        import warnings

        from ._maintain import auto_optimize

        try:
            report = auto_optimize(self)
        except Exception as e:
            warnings.warn(
                f"the write committed, but the automatic compaction after it failed ({str(e).splitlines()[0][:200]}); "
                "the index is intact: run index.optimize() to retry, or create the index with auto_optimize=False",
                RuntimeWarning,
                stacklevel=4,
            )
            return
        self.last_maintenance = report
        if report is not None:
            _integrity.record(self.loc)
            before = self._view.version
            self._view = self._make_view(None, self._view)
            cached = self._ids_cache
            # compaction (a commit reserving fragment ids, then the rewrite) keeps every id: the cache stays
            # exact unless a plain Lance writer slipped in between (the row count would show a LanceDB delete)
            if cached is not None and cached[0] == before and self._view.n_docs == len(cached[1]):
                self._ids_cache = (self._view.version, cached[1])

    def _check_writable(self) -> None:
        if self._pinned:
            raise InvalidOperationError(
                f"this index was opened at version {self.version} for reading (time travel); call "
                "index.checkout() to move to the latest version before writing"
            )

    def _prepare(self, ids: Any, vectors: Any, metadata: Any, id_type: pa.DataType | None) -> dict[str, Any]:
        return prepare_batch(self.dim, ids, vectors, metadata, id_type)

    @staticmethod
    def _encode(b: dict[str, Any], st: _State, fields: list[pa.Field], keep_source: bool) -> pa.RecordBatch:
        """Pool + encode one validated batch -> one docs record batch (also run by distributed build workers)."""
        r = b["ragged"]
        cols: dict[str, pa.Array] = {ID: b["ids"]}
        for f, arr in zip(fields, conform_metadata(b["meta"], fields, len(r))):
            cols[f.name] = arr
        cols[N_TOKENS] = pa.array(r.lengths.astype(np.int32))
        pooled = b.pop("pooled", None)  # the first add's first batch was pooled to fit the codec
        cols.update(encode_pooled(st, st.spec.pool(r) if pooled is None else pooled, keep_source))
        cols[ROW_CHECKSUM] = _integrity.checksum_column(cols)
        return pa.RecordBatch.from_pydict(cols)

    def _existing_ids(self, ds: lance.LanceDataset | None) -> tuple[pa.DataType | None, Any]:
        """The id type and the ids of ``ds`` (sorted int64 array or a set of str), cached per version."""
        if ds is None:
            return None, None
        cached = self._ids_cache
        if cached is not None and cached[0] == ds.version:
            ids = cached[1]
        else:
            ids = np.sort(ids_numpy(ds.to_table(columns=[ID]).column(ID)))
            self._ids_cache = (ds.version, ids)
        return ds.schema.field(ID).type, ids

    @staticmethod
    def _check_new(ids: pa.Array, seen: np.ndarray | None) -> np.ndarray:
        """DuplicateIdError if any id is in ``seen`` (sorted); returns a sorted ``seen`` with ``ids``, O(n)
        copying and O(len(ids) log n) search per write (the ids of one write are checked unique when read)."""
        vals = ids_numpy(ids)
        if seen is None:
            return np.sort(vals)
        hit = ids_in(seen, vals)
        if hit.any():
            dup = vals[np.flatnonzero(hit)[0]].item()
            raise DuplicateIdError(
                f"id {dup!r} is already in the index; use index.upsert(ids, vectors) to replace documents"
            )
        return ids_with(seen, vals)

    def _docs_schema(
        self, id_type: pa.DataType, meta_fields: list[pa.Field], st: _State
    ) -> tuple[pa.Schema, list[pa.Field]]:
        fields = [pa.field(ID, id_type), *meta_fields]
        fields += [
            pa.field(N_TOKENS, pa.int32()),
            pa.field(N_VECTORS, pa.int32()),
            pa.field(CODES, pa.large_binary()),
            pa.field(TERMS, pa.list_(pa.int32())),
            pa.field(RECON_ERR, pa.float32()),
        ]
        if self.options.get("keep_source"):
            fields.append(pa.field(SOURCE, pa.large_binary()))
        fields.append(pa.field(ROW_CHECKSUM, pa.uint64()))
        return pa.schema(fields, metadata={STATE_KEY: str(st.state_id).encode()}), meta_fields

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
        return self._add_batches([(ids, vectors, metadata)], progress, total)

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

        return add_texts(self, texts, ids, metadata, text_column, batch_size, check_progress(progress))

    def add_batches(self, batches: Iterable[Any], *, progress: bool | None = None) -> int:
        """Streaming add: an iterable of ``(ids, vectors)`` or ``(ids, vectors, metadata)`` batches, encoded and
        written one at a time (memory bounded by one batch), committed ONCE at the end: if any batch is invalid
        or the iterable raises, nothing is committed and the previous version stays current. ``progress``: a
        bar counting documents (None: in terminals and notebooks). Returns the new version."""
        return self._add_batches(batches, progress, None)

    def _add_batches(self, batches: Iterable[Any], progress: bool | None, total: int | None) -> int:
        check_progress(progress)
        with self._writing(maintain=True), bar(total, "adding", unit="doc", progress=progress) as pbar:
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
                            "(ids, vectors, metadata); to add one batch call add(ids, vectors)"
                        )
                    b = self._prepare(item[0], item[1], item[2] if len(item) == 3 else None, id_type)
                    seen = self._check_new(b["ids"], seen)
                    yield b
                    pbar.update(len(b["ids"]))

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
                meta_fields = new_metadata_fields(first["meta"])  # checked before anything is trained
                if st is None:
                    spec, auto = self._pick_spec(first["ragged"])
                    first["pooled"] = pooled = spec.pool(first["ragged"])
                    st = self._fit_state(
                        pooled.values.astype(np.float32),
                        pooled.n_tokens,
                        explicit=False,
                        spec=spec,
                        auto=auto,
                    )
                schema, fields = self._docs_schema(first["ids"].type, meta_fields, st)
            keep_source = SOURCE in schema.names
            failure: list[BaseException] = []
            kept: list[pa.RecordBatch] | None = []  # the encoded rows, for the next snapshot (Written)

            def keep(rb: pa.RecordBatch) -> pa.RecordBatch:
                nonlocal kept
                if kept is not None:
                    kept.append(rb)
                    if sum(b.nbytes for b in kept) > WRITTEN_BYTES:
                        kept = None  # a large add: the snapshot reads its rows back instead
                return rb

            def record_batches() -> Iterator[pa.RecordBatch]:
                try:
                    yield keep(self._encode(first, st, fields, keep_source).cast(schema))
                    for b in gen:
                        yield keep(self._encode(b, st, fields, keep_source).cast(schema))
                except BaseException as e:  # re-raised below with its own type, after Lance aborts the write
                    failure.append(e)
                    raise

            reader = pa.RecordBatchReader.from_batches(schema, record_batches())
            try:
                out = self.loc.write_dataset(
                    reader, DOCS, schema=schema, mode="append" if ds is not None else "create"
                )
            except BaseException:
                if (
                    failure
                ):  # our own validation error or the user's iterator's exception, not Lance's wrapper
                    raise failure[0] from None
                raise  # a Lance/IO failure: nothing was committed, the previous version is still current
            written = None
            if ds is not None and out.version == ds.version + 1:  # nobody else committed in between
                self._ids_cache = (out.version, seen)
                if kept is not None:
                    written = Written(ds.version, pa.Table.from_batches(kept, schema), np.zeros(0, np.int64))
            self._view = self._new_view(out.version, out, st, self._view, written)
            return out.version

    def upsert(self, ids: Any, vectors: Any, metadata: Any = None) -> int:
        """Insert or replace documents by id; one commit. The vectors and the metadata columns given replace the
        stored ones; metadata columns not given keep their stored values (null for new ids), so
        ``upsert(ids, vectors)`` keeps every document's metadata. A column given is written for every row of
        the batch (null where a dict of a list of dicts lacks the key). Returns the new version."""
        with self._writing(maintain=True):
            ds = self._latest_docs()
            if ds is None:
                return self.add(ids, vectors, metadata)
            b = self._prepare(ids, vectors, metadata, ds.schema.field(ID).type)
            st = self._make_view(None).state
            fields = [ds.schema.field(n) for n in ds.schema.names if n not in DOCS_SYSTEM_COLUMNS]
            batch = self._encode(b, st, fields, SOURCE in ds.schema.names).cast(ds.schema)
            given = set(DOCS_SYSTEM_COLUMNS) | set([] if b["meta"] is None else b["meta"].column_names)
            pre = ds.version  # the merge moves ``ds`` to the version it commits
            # Lance's merge keeps the stored values of the columns the source leaves out
            ds.merge_insert(ID).when_matched_update_all().when_not_matched_insert_all().execute(
                pa.Table.from_batches([batch]).select([n for n in ds.schema.names if n in given])
            )
            out = self.loc.dataset(DOCS)
            vals = ids_numpy(b["ids"])
            # one row is stored as written; Lance's merge may reorder several (their snapshot reads them back)
            rows = pa.Table.from_batches([batch]) if len(vals) == 1 else None
            written = Written(pre, rows, vals) if out.version == pre + 1 else None
            self._view = self._new_view(out.version, out, st, self._view, written)
            cached = self._ids_cache
            if cached is not None and cached[0] == pre and out.version == pre + 1:
                # nobody else committed in between: the ids are the cached ones + these
                self._ids_cache = (out.version, ids_with(cached[1], vals[~ids_in(cached[1], vals)]))
            return out.version

    def delete(self, ids: Any, *, missing: str = "error") -> int:
        """Delete documents by id (one commit). Unknown ids raise UnknownIdError unless ``missing="ignore"``.
        Other documents keep their ids. Returns the new version."""
        if missing not in ("error", "ignore"):
            raise InvalidArgumentError(f"missing must be 'error' or 'ignore', got {missing!r}")
        with self._writing(maintain=True):
            ds = self._latest_docs()
            _integrity.check_open(self.loc, DOCS, None)  # never commit on top of a rolled-back table
            id_type = None if ds is None else ds.schema.field(ID).type
            arr = normalize_ids(ids, id_type=id_type)
            vals = ids_numpy(arr)
            if ds is None:
                if missing == "error" and len(vals):
                    raise UnknownIdError(f"id {vals[0].item()!r} is not in the index (it is empty)")
                return 0
            _, existing = self._existing_ids(ds)
            present = ids_in(existing, vals)
            if missing == "error" and not present.all():
                bad = vals[~present][:5].tolist()
                raise UnknownIdError(
                    f"{int((~present).sum())} id(s) are not in the index, e.g. {bad}; "
                    "pass missing='ignore' to skip them"
                )
            vals = vals[present]
            pre = ds.version  # the delete moves ``ds`` to the version it commits
            if len(vals):
                ds.delete(f"{ID} IN {sql_literal_list(vals)}")
            out = self.loc.dataset(DOCS)
            if out.version == pre + 1 and self._ids_cache is not None and self._ids_cache[0] == pre:
                self._ids_cache = (out.version, ids_without(existing, np.unique(vals)))
            st = self._view.state if self._view.ds is not None else None
            written = Written(pre, None, vals) if out.version == pre + 1 else None
            self._view = self._new_view(out.version, out, st, self._view, written)
            if self._view.state is None:
                self._view = self._make_view(None)
            return out.version

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
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)):
            raise InvalidDtypeError(
                f"k must be an int (results per query), got {type(k).__name__} {k!r}; e.g. k=10"
            )
        if k < 1:
            raise SearchParamsError(f"k={k} must be a positive integer (the number of results per query)")
        if getattr(queries, "ndim", None) == 2 and (
            isinstance(queries, np.ndarray) or type(queries).__module__.startswith("torch")
        ):
            queries = [queries]  # one query: a (n_q, dim) numpy array or torch tensor
        from ._text import encode_queries, is_text_query

        if is_text_query(queries):
            if hybrid is True and text is None:
                text = queries  # the same string(s) for BM25 as for the encoder
            queries = encode_queries(self, queries)
        q = as_ragged(queries, dim=self.dim, what="queries")
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

    def create_fts_index(self, column: str = TEXT, *, replace: bool = True) -> int:
        """Build Lance's full-text (BM25) index on a string metadata ``column``, for ``search(...,
        hybrid=True)``. One commit under the write lock. Rows written later are searched too (Lance scans the
        rows the index does not cover yet) and :meth:`optimize` adds them to the index (and rebuilds it after a
        retraining). ``replace=False`` refuses to rebuild an existing index. Returns the new version."""
        if not isinstance(column, str):
            raise InvalidDtypeError(
                f"column must be a column name (str), got {type(column).__name__} {column!r:.80}"
            )
        with self._writing():
            ds = self._latest_docs()
            if ds is None:
                raise InvalidOperationError(
                    "the index has no documents yet: add documents with a text column first, then build the "
                    "full-text index"
                )
            _integrity.check_open(self.loc, DOCS, None)  # never commit on top of a rolled-back table
            check_columns(ds.schema, [column], "create_fts_index")
            t = ds.schema.field(column).type
            if column == ID or not (pa.types.is_string(t) or pa.types.is_large_string(t)):
                raise InvalidArgumentError(
                    f"column {column!r} holds {t}, not text metadata; build the full-text index on a string "
                    "metadata column (e.g. the passages' 'text')"
                )
            if not replace and column in _View(ds.version, ds, None, self.loc).text_columns():
                raise InvalidOperationError(
                    f"column {column!r} already has a full-text index; pass replace=True to rebuild it"
                )
            ds.create_scalar_index(column, index_type="INVERTED", replace=True)
            self._view = self._make_view(None)
            return self._view.version

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
        with self._writing():
            return optimize(
                self,
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
        return _integrity.verify(self)

    def __repr__(self) -> str:
        spec = "auto" if self.spec is None else str(self.spec)
        return f"Index({self.root!r}, spec={spec!r}, dim={self.dim}, version={self.version})"
