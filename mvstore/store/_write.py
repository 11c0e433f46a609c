"""Every document write of an index, and where each commits: :class:`Writer` (one per
:class:`~mvstore.store.Index` object) holds the write lock and commits ``add_batches`` (``lance.write_dataset``),
``upsert`` (``merge_insert``), ``delete`` (``ds.delete``), ``train`` (a codec state), ``create_fts_index``
and a distributed build's fragments (``commit_fragments``), one Lance commit each, under the index's
cross-process write lock (:meth:`Writer.writing`). The batch steps the distributed build's workers run too
(:func:`prepare_batch`, :func:`encode_batch`) live here, so both write paths encode alike."""

from __future__ import annotations

import contextlib
import itertools
import threading
import warnings
from collections.abc import Iterable, Iterator
from typing import Any

import lance
import numpy as np
import pyarrow as pa

from .._progress import bar
from ..exceptions import (
    DuplicateIdError,
    InvalidArgumentError,
    InvalidDtypeError,
    InvalidOperationError,
    InvalidVectorsError,
    UnknownIdError,
)
from ..ragged import Ragged, as_ragged
from . import _integrity
from ._encode import encode_pooled
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
    STATE_KEY,
    TERMS,
    conform_metadata,
    ids_in,
    ids_numpy,
    ids_with,
    ids_without,
    new_metadata_fields,
    normalize_ids,
    normalize_metadata,
    sql_literal_list,
)
from ._state import CodecState
from ._tables import Tables
from ._view import WRITTEN_BYTES, View, Written, check_columns


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


def encode_batch(
    b: dict[str, Any], st: CodecState, fields: list[pa.Field], keep_source: bool
) -> pa.RecordBatch:
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


def check_new(ids: pa.Array, seen: np.ndarray | None) -> np.ndarray:
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


def user_fields(schema: pa.Schema) -> list[pa.Field]:
    """The id and metadata fields of a docs schema (what a batch's metadata is conformed to)."""
    return [schema.field(n) for n in schema.names if n not in DOCS_SYSTEM_COLUMNS]


class _Seen:
    """The ids one add has met so far: the stored ones and its own batches' (:func:`check_new`'s ``seen``)."""

    def __init__(self, ids: Any):
        self.ids = ids

    def add(self, new: pa.Array) -> None:
        self.ids = check_new(new, self.ids)


class _Encoded:
    """The record batches of one add, each encoded when Lance asks for it; keeps them for the next snapshot
    (:class:`Written`) up to WRITTEN_BYTES, and the exception that stopped them (``failure``)."""

    def __init__(
        self, batches: Iterator[dict[str, Any]], st: CodecState, fields: list[pa.Field], schema: pa.Schema
    ):
        self.batches, self.st, self.fields, self.schema = batches, st, fields, schema
        self.keep_source = SOURCE in schema.names
        self.kept: list[pa.RecordBatch] | None = []
        self.failure: BaseException | None = None

    def _keep(self, rb: pa.RecordBatch) -> pa.RecordBatch:
        if self.kept is not None:
            self.kept.append(rb)
            if sum(b.nbytes for b in self.kept) > WRITTEN_BYTES:
                self.kept = None  # a large add: the snapshot reads its rows back instead
        return rb

    def __iter__(self) -> Iterator[pa.RecordBatch]:
        try:
            for b in self.batches:
                yield self._keep(encode_batch(b, self.st, self.fields, self.keep_source).cast(self.schema))
        except BaseException as e:  # re-raised by the add with its own type, after Lance aborts the write
            self.failure = e
            raise


class Writer:
    """The write path of one Index object over ``tables``: its write lock (:meth:`writing`), the ids of the
    latest version it knows (``ids_cache``) and every document write; each write replaces ``tables.view``
    with the version it committed."""

    def __init__(self, tables: Tables):
        self.tables = tables
        self._lock = threading.RLock()
        self._depth = 0  # nesting of writing() in this object (the file lock is taken once)
        self.ids_cache: tuple[int, Any] | None = None
        #: what the automatic maintenance after the last document write did (None: nothing was due)
        self.last_maintenance: dict[str, Any] | None = None

    # ------------------------------------------------------------------------------------- the lock
    @contextlib.contextmanager
    def writing(self, maintain: bool = False) -> Iterator[None]:
        """One write: this object's thread lock, then the index's cross-process write lock
        (:func:`~mvstore.store._layout.write_lock`); nested writes (upsert -> add) take it once. A write that
        succeeds records what it committed (:func:`~mvstore.store._integrity.record`) before the lock is released;
        a document write (``maintain``) then runs the automatic maintenance policy
        (:func:`~mvstore.store._maintain.auto_optimize`) under the same lock and records its commit too. Once the
        lock is released, the new version's search state is derived (:meth:`View.prepare`), so the writer pays
        for its write becoming searchable, not its next search."""
        self.check_writable()
        loc = self.tables.loc
        with self._lock:
            with loc.write_lock() if self._depth == 0 else contextlib.nullcontext():
                self._depth += 1
                try:
                    yield
                finally:
                    self._depth -= 1
                if self._depth == 0:
                    _integrity.record(loc)
                    if maintain:
                        self._maintain()
            if self._depth == 0:
                self.tables.view.prepare()

    def _maintain(self) -> None:
        """Automatic maintenance after a committed write. The write stands whatever happens here: a failure is a
        warning (naming the fix), not the write's error."""
        from ._maintain import auto_optimize

        try:
            report = auto_optimize(self.tables)
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
            _integrity.record(self.tables.loc)
            before = self.tables.view.version
            self.tables.view = view = self.tables.make_view(None, self.tables.view)
            cached = self.ids_cache
            # compaction (a commit reserving fragment ids, then the rewrite) keeps every id: the cache stays
            # exact unless a plain Lance writer slipped in between (the row count would show a LanceDB delete)
            if cached is not None and cached[0] == before and view.n_docs == len(cached[1]):
                self.ids_cache = (view.version, cached[1])

    def check_writable(self) -> None:
        if self.tables.pinned:
            raise InvalidOperationError(
                f"this index was opened at version {self.tables.view.version} for reading (time travel); call "
                "index.checkout() to move to the latest version before writing"
            )

    # ------------------------------------------------------------------------------------ the ids
    def existing_ids(self, ds: lance.LanceDataset | None) -> tuple[pa.DataType | None, np.ndarray | None]:
        """The id type and the ids of ``ds`` (sorted int64 or str array), cached per version."""
        if ds is None:
            return None, None
        cached = self.ids_cache
        if cached is not None and cached[0] == ds.version:
            ids = cached[1]
        else:
            ids = np.sort(ids_numpy(ds.to_table(columns=[ID]).column(ID)))
            self.ids_cache = (ds.version, ids)
        return ds.schema.field(ID).type, ids

    def docs_schema(
        self, id_type: pa.DataType, meta_fields: list[pa.Field], st: CodecState
    ) -> tuple[pa.Schema, list[pa.Field]]:
        """The schema of a new docs table (its first add) and its user fields."""
        fields = [pa.field(ID, id_type), *meta_fields]
        fields += [
            pa.field(N_TOKENS, pa.int32()),
            pa.field(N_VECTORS, pa.int32()),
            pa.field(CODES, pa.large_binary()),
            pa.field(TERMS, pa.list_(pa.int32())),
            pa.field(RECON_ERR, pa.float32()),
        ]
        if self.tables.options.get("keep_source"):
            fields.append(pa.field(SOURCE, pa.large_binary()))
        fields.append(pa.field(ROW_CHECKSUM, pa.uint64()))
        return pa.schema(fields, metadata={STATE_KEY: str(st.state_id).encode()}), meta_fields

    def latest_state(self, ds: lance.LanceDataset | None) -> CodecState | None:
        """The codec state a write encodes with: the latest version's (``ds``), or before the first add the
        one :meth:`train` made (None: the first add trains)."""
        return self.tables.view.state if ds is None else self.tables.make_view(None).state

    # ------------------------------------------------------------------------------------- train
    def train(self, sample: Any, progress: bool | None) -> None:
        """:meth:`Index.train <mvstore.store.Index.train>`: fit and store a codec state before the first add."""
        tables = self.tables
        with self.writing(), bar(1, "training", unit="codec", progress=progress) as pbar:
            if tables.docs_exists():
                raise InvalidOperationError(
                    "this index already holds documents and a trained codec; to retrain use "
                    "index.optimize(retrain=True) (needs create(..., keep_source=True))"
                )
            spec = tables.spec
            if isinstance(sample, np.ndarray) and sample.ndim == 2:
                if spec is None:
                    raise InvalidOperationError(
                        'spec="auto" picks its spec (pooling included) from documents: pass train() a Ragged '
                        "or a list of (n_i, dim) arrays, not one 2-D array of vectors"
                    )
                auto = None
                vecs = Ragged.from_list([sample], dim=tables.dim).values
            else:
                docs = as_ragged(sample, dim=tables.dim, what="training sample")
                auto, vecs = None, docs.values
                if len(docs):
                    spec, auto = tables.states.pick_spec(docs)
                    vecs = spec.pool(docs).values
            if len(vecs) == 0:
                raise InvalidVectorsError("the training sample is empty; pass at least one document")
            assert (
                spec is not None
            )  # an empty sample (the only way to keep spec="auto" unpicked) raised above
            st = tables.states.fit(
                np.asarray(vecs, np.float32), len(vecs), explicit=True, spec=spec, auto=auto
            )
            tables.view = tables.new_view(0, None, st)
            pbar.update(1)

    # ------------------------------------------------------------------------------------- add
    def add_batches(self, batches: Iterable[Any], progress: bool | None, total: int | None) -> int:
        """:meth:`Index.add_batches <mvstore.store.Index.add_batches>`: every batch validated and encoded as
        Lance writes it, ONE commit at the end (``lance.write_dataset``)."""
        tables = self.tables
        with self.writing(maintain=True), bar(total, "adding", unit="doc", progress=progress) as pbar:
            ds = tables.latest_docs()
            id_type, stored = self.existing_ids(ds)
            st = self.latest_state(ds)
            seen = _Seen(stored)
            gen = self._prepared(iter(batches), id_type, seen, pbar)
            first = next(gen, None)
            if first is None:
                raise InvalidVectorsError(
                    "add_batches got no batches; pass at least one (ids, vectors) batch"
                )
            st, schema, fields = self._add_schema(ds, first, st)
            encoded = _Encoded(itertools.chain([first], gen), st, fields, schema)
            reader = pa.RecordBatchReader.from_batches(schema, iter(encoded))
            try:
                out = tables.loc.write_dataset(
                    reader, DOCS, schema=schema, mode="append" if ds is not None else "create"
                )
            except BaseException:
                if encoded.failure is not None:
                    # our own validation error or the user's iterator's exception, not Lance's wrapper
                    raise encoded.failure from None
                raise  # a Lance/IO failure: nothing was committed, the previous version is still current
            written = None
            if ds is not None and out.version == ds.version + 1:  # nobody else committed in between
                self.ids_cache = (out.version, seen.ids)
                if encoded.kept is not None:
                    written = Written(
                        ds.version, pa.Table.from_batches(encoded.kept, schema), np.zeros(0, np.int64)
                    )
            tables.view = tables.new_view(out.version, out, st, tables.view, written)
            return out.version

    def _prepared(
        self, it: Iterator[Any], id_type: pa.DataType | None, seen: _Seen, pbar: Any
    ) -> Iterator[dict[str, Any]]:
        """The batches of an add, each validated (its ids new to ``seen``) before it is encoded."""
        for i, item in enumerate(it):
            if not isinstance(item, (tuple, list)) or len(item) not in (2, 3):
                raise InvalidDtypeError(
                    f"batch {i} is a {type(item).__name__}; each batch must be (ids, vectors) or "
                    "(ids, vectors, metadata); to add one batch call add(ids, vectors)"
                )
            b = prepare_batch(self.tables.dim, item[0], item[1], item[2] if len(item) == 3 else None, id_type)
            seen.add(b["ids"])
            yield b
            pbar.update(len(b["ids"]))

    def _add_schema(
        self, ds: lance.LanceDataset | None, first: dict[str, Any], st: CodecState | None
    ) -> tuple[CodecState, pa.Schema, list[pa.Field]]:
        """The codec state (``st``: :meth:`latest_state`), docs schema and user fields an add writes with, its
        first batch checked against the stored columns; the first add of an untrained index trains on its
        first batch (one commit of the codec-state table)."""
        if ds is not None:
            fields = user_fields(ds.schema)
            conform_metadata(first["meta"], fields, len(first["ragged"]))
            assert st is not None  # a docs version always records its state
            return st, ds.schema, fields
        meta_fields = new_metadata_fields(first["meta"])  # checked before anything is trained
        if st is None:
            spec, auto = self.tables.states.pick_spec(first["ragged"])
            first["pooled"] = pooled = spec.pool(first["ragged"])
            st = self.tables.states.fit(
                pooled.values.astype(np.float32), pooled.n_tokens, explicit=False, spec=spec, auto=auto
            )
        schema, fields = self.docs_schema(first["ids"].type, meta_fields, st)
        return st, schema, fields

    # ------------------------------------------------------------------------------------- upsert, delete
    def upsert(self, ids: Any, vectors: Any, metadata: Any) -> int | None:
        """:meth:`Index.upsert <mvstore.store.Index.upsert>` (one ``merge_insert`` commit); None, nothing
        written, when the index has no documents yet (the caller adds them). The caller holds :meth:`writing`."""
        tables = self.tables
        ds = tables.latest_docs()
        if ds is None:
            return None
        b = prepare_batch(tables.dim, ids, vectors, metadata, ds.schema.field(ID).type)
        st = tables.make_view(None).state
        assert st is not None  # a docs version always records its state
        batch = encode_batch(b, st, user_fields(ds.schema), SOURCE in ds.schema.names).cast(ds.schema)
        given = set(DOCS_SYSTEM_COLUMNS) | set([] if b["meta"] is None else b["meta"].column_names)
        pre = ds.version  # the merge moves ``ds`` to the version it commits
        # Lance's merge keeps the stored values of the columns the source leaves out
        ds.merge_insert(ID).when_matched_update_all().when_not_matched_insert_all().execute(
            pa.Table.from_batches([batch]).select([n for n in ds.schema.names if n in given])
        )
        out = tables.loc.dataset(DOCS)
        vals = ids_numpy(b["ids"])
        # one row is stored as written; Lance's merge may reorder several (their snapshot reads them back)
        rows = pa.Table.from_batches([batch]) if len(vals) == 1 else None
        written = Written(pre, rows, vals) if out.version == pre + 1 else None
        tables.view = tables.new_view(out.version, out, st, tables.view, written)
        cached = self.ids_cache
        if cached is not None and cached[0] == pre and out.version == pre + 1:
            # nobody else committed in between: the ids are the cached ones + these
            self.ids_cache = (out.version, ids_with(cached[1], vals[~ids_in(cached[1], vals)]))
        return out.version

    def delete(self, ids: Any, missing: str) -> int:
        """:meth:`Index.delete <mvstore.store.Index.delete>` (one ``ds.delete`` commit)."""
        tables = self.tables
        with self.writing(maintain=True):
            ds = tables.latest_docs()
            _integrity.check_open(tables.loc, DOCS, None)  # never commit on top of a rolled-back table
            id_type = None if ds is None else ds.schema.field(ID).type
            vals = ids_numpy(normalize_ids(ids, id_type=id_type))
            if ds is None:
                if missing == "error" and len(vals):
                    raise UnknownIdError(f"id {vals[0].item()!r} is not in the index (it is empty)")
                return 0
            _, existing = self.existing_ids(ds)
            vals = self._present(vals, existing, missing)
            pre = ds.version  # the delete moves ``ds`` to the version it commits
            if len(vals):
                ds.delete(f"{ID} IN {sql_literal_list(vals)}")
            out = tables.loc.dataset(DOCS)
            if (
                out.version == pre + 1
                and existing is not None
                and self.ids_cache is not None
                and self.ids_cache[0] == pre
            ):
                self.ids_cache = (out.version, ids_without(existing, np.unique(vals)))
            st = tables.view.state if tables.view.ds is not None else None
            written = Written(pre, None, vals) if out.version == pre + 1 else None
            tables.view = tables.new_view(out.version, out, st, tables.view, written)
            if tables.view.state is None:
                tables.view = tables.make_view(None)
            return out.version

    @staticmethod
    def _present(vals: np.ndarray, existing: Any, missing: str) -> np.ndarray:
        """The ids of ``vals`` that are stored; UnknownIdError for the others unless ``missing="ignore"``."""
        present = ids_in(existing, vals)
        if missing == "error" and not present.all():
            bad = vals[~present][:5].tolist()
            raise UnknownIdError(
                f"{int((~present).sum())} id(s) are not in the index, e.g. {bad}; "
                "pass missing='ignore' to skip them"
            )
        return vals[present]

    # ------------------------------------------------------------------------------------- other commits
    def create_fts_index(self, column: str, replace: bool) -> int:
        """:meth:`Index.create_fts_index <mvstore.store.Index.create_fts_index>` (one index commit)."""
        tables = self.tables
        with self.writing():
            ds = tables.latest_docs()
            if ds is None:
                raise InvalidOperationError(
                    "the index has no documents yet: add documents with a text column first, then build the "
                    "full-text index"
                )
            _integrity.check_open(tables.loc, DOCS, None)  # never commit on top of a rolled-back table
            check_columns(ds.schema, [column], "create_fts_index")
            t = ds.schema.field(column).type
            if column == ID or not (pa.types.is_string(t) or pa.types.is_large_string(t)):
                raise InvalidArgumentError(
                    f"column {column!r} holds {t}, not text metadata; build the full-text index on a string "
                    "metadata column (e.g. the passages' 'text')"
                )
            if not replace and column in View(ds.version, ds, None, tables.loc).text_columns():
                raise InvalidOperationError(
                    f"column {column!r} already has a full-text index; pass replace=True to rebuild it"
                )
            ds.create_scalar_index(column, index_type="INVERTED", replace=True)
            tables.view = tables.make_view(None)
            return tables.view.version

    def commit_fragments(
        self, docs: lance.LanceDataset | None, st: CodecState, schema: pa.Schema, frags: list[Any]
    ) -> None:
        """Commit Lance fragments written straight into the docs table (a distributed build's) in ONE Lance
        operation: the new table (``docs`` None) or an append to ``docs``. The caller holds :meth:`writing`
        and has checked every id."""
        loc = self.tables.loc
        op: Any
        if docs is None:
            op, read_version = lance.LanceOperation.Overwrite(schema, frags), None
        else:
            op, read_version = lance.LanceOperation.Append(frags), docs.version
        out = lance.LanceDataset.commit(
            loc.table(DOCS), op, read_version=read_version, storage_options=loc.storage_options
        )
        self.tables.view = self.tables.new_view(out.version, out, st)
