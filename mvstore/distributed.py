"""Offline index builds on a Ray cluster: :func:`build`.

The driver opens (or creates) the index, takes the write lock, trains the codec and the stage-1 centroids once
on the first ``train_docs`` documents (:meth:`mvstore.store.Index.train`) unless the index already has a
state, and puts that state into Ray's object store. Workers (Ray Data ``map_batches`` tasks, at most
``num_workers`` at a time, each process loading the state and the encoder once) read the source in blocks, encode texts when the source has no vectors, then validate, pool, codec-encode and assign
stage-1 terms with the store's own code (``_write.prepare_batch`` + ``encode_batch``), and write each batch as Lance
fragments straight into the index's ``docs.lance``. Nothing is visible until the driver, still holding the
write lock, checks every id (unique in the build and new to the index) and commits ALL fragments in ONE Lance
operation, then records the version (integrity). A worker that fails, or a driver killed before the commit,
leaves the previous version current; the uncommitted fragment files are orphans that
``optimize(cleanup=True)`` removes (see docs/LAYOUT.md, "Versions").

For the same input, trained state and spec the result is the index ``Index.add`` builds: the same rows, in
the same order, with the same codes.

>>> import mvstore  # doctest: +SKIP
>>> mvstore.build("s3://bucket/corpus/", "s3://bucket/indexes/ix", spec="pool2,pca96,rq2",
...               encoder=lambda: mvstore.encoders.HFTokenEncoder(None, device="cuda"), ray="ray://head:10001",
...               storage_options={"aws_region": "us-east-1"}, num_workers=8, num_gpus=1)  # doctest: +SKIP
"""

from __future__ import annotations

import json
import os
import resource
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import pyarrow as pa

from ._progress import bar
from .exceptions import (
    DimensionMismatchError,
    DuplicateIdError,
    InvalidArgumentError,
    InvalidDtypeError,
    InvalidMetadataError,
    InvalidVectorsError,
    MvstoreError,
    require,
)
from .store._layout import TEXT

__all__ = ["build"]

_SCALAR = (pa.types.is_string, pa.types.is_large_string, pa.types.is_integer, pa.types.is_floating,
           pa.types.is_boolean, pa.types.is_timestamp, pa.types.is_date)  # fmt: skip


def build(
    source: Any,
    uri: str | os.PathLike,
    spec: str | None = None,
    *,
    encoder: Any = None,
    ray: bool | str = True,
    storage_options: dict[str, str] | None = None,
    id_column: str = "id",
    vectors_column: str = "vectors",
    text_column: str = TEXT,
    metadata_columns: list[str] | None = None,
    train_docs: int = 4096,
    batch_size: int = 512,
    num_workers: int = 2,
    num_gpus: float = 0,
    progress: bool | None = None,
    report: dict[str, Any] | None = None,
    **create_options: Any,
) -> Any:
    """Build (or extend) the index at ``uri`` from ``source`` on a Ray cluster, in one commit.

    ``source``: a ``ray.data.Dataset``, or a path/URI of JSONL or Parquet files, one row per document with
    ``id_column`` and either ``vectors_column`` (a list of token vectors) or ``text_column`` (encoded on the
    workers by ``encoder``: an encoder object, or a zero-argument callable making one, e.g. on each GPU
    worker). ``metadata_columns``: the columns stored as metadata (None: every scalar column but the id and
    vectors). ``ray``: True (the cluster ``RAY_ADDRESS`` names, else a local one) or a cluster address.
    ``num_workers`` actors each take ``num_gpus`` GPUs and write ``batch_size`` documents per fragment.
    A new index is created with ``spec`` and ``create_options`` (see :func:`mvstore.store.create`); the first
    ``train_docs`` documents train it unless it already holds a trained state; built from texts, it records
    the encoder for ``add_texts`` / ``search("text")`` (as ``create(encoder=)``) when the encoder can describe
    itself (mvstore's encoders; another one is passed to ``mvstore.open(uri, encoder=obj)`` instead).
    ``progress``: the driver's bar, as everywhere (None: in terminals and notebooks). ``report``, when given,
    is filled with ``docs``, ``fragments``, ``seconds``, ``workers`` ({pid: peak RSS bytes}) and ``texts``
    (whether the workers encoded texts). After the commit, still under the write lock, the index's automatic
    maintenance (``create(auto_optimize=True)``, the default) compacts the small fragments when they are due,
    as after any document write. Returns the index at its new version."""
    from .store._layout import DOCS

    for name, v in (("train_docs", train_docs), ("batch_size", batch_size), ("num_workers", num_workers)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise InvalidArgumentError(f"{name} must be a positive int, got {v!r}")
    rd = _connect(ray)
    t0 = time.perf_counter()
    ds = _dataset(rd, source)
    texts = _holds_texts(ds.schema().names, id_column, vectors_column, text_column)
    local_encoder = _local_encoder(encoder, text_column) if texts else None
    sample = _first_rows(ds, train_docs)
    meta_cols = _metadata_columns(sample.schema, metadata_columns, {id_column, vectors_column})
    if texts:
        dim = int(local_encoder.dim)
        sample_docs = local_encoder.encode_documents(sample.column(text_column).to_pylist())
    else:
        dim = _vector_dim(sample.column(vectors_column))
        sample_docs = _vectors(sample.column(vectors_column), dim)
    idx = _target(uri, storage_options, spec, dim, local_encoder, create_options)
    writer = idx._writer  # the store's write path, which this build drives (lock, ids, commit)
    with writer.writing(maintain=True):
        docs = writer.tables.latest_docs()
        _, existing = writer.existing_ids(docs)
        st, schema, fields = _table_schema(idx, writer, docs, sample, sample_docs, id_column, meta_cols)
        if "target_num_rows_per_block" in _params(ds.repartition):
            # streaming split into blocks of batch_size rows: each is one task (a few large files or blocks
            # would otherwise keep all but one worker idle and hold a whole block in a worker's memory)
            ds = ds.repartition(target_num_rows_per_block=batch_size)
        mapped = ds.map_batches(
            _encode_and_write,
            fn_kwargs={
                "state": rd.put(_stored_state(writer, st.state_id)), "dim": dim, "schema": schema, "fields": fields,
                "table_uri": idx.loc.table(DOCS), "storage_options": idx.loc.storage_options,
                "id_column": id_column, "vectors_column": None if texts else vectors_column,
                "text_column": text_column if texts else None, "metadata_columns": meta_cols,
                "encoder": encoder if texts else None,
            },
            batch_size=batch_size,
            batch_format="pyarrow",
            num_gpus=num_gpus or None,
            **_task_pool(rd, num_workers),
        )  # fmt: skip
        frags, ids, workers, n_docs = _collect(mapped, progress)
        _commit(writer, docs, st, schema, frags, ids, existing, n_docs)
    if report is not None:
        report.update(
            docs=n_docs, fragments=len(frags), seconds=time.perf_counter() - t0, workers=workers, texts=texts
        )
    return idx.refresh()


def _holds_texts(names: list[str], id_column: str, vectors_column: str, text_column: str) -> bool:
    """Whether the source's documents are texts (no vectors column); InvalidArgumentError for missing columns."""
    if id_column not in names:
        raise InvalidArgumentError(
            f"the source has no id column {id_column!r} (columns: {names}); pass id_column="
        )
    texts = vectors_column not in names
    if texts and text_column not in names:
        raise InvalidArgumentError(
            f"the source has neither a vectors column {vectors_column!r} nor a text column {text_column!r} "
            f"(columns: {names}); pass vectors_column= or text_column="
        )
    return texts


def _local_encoder(encoder: Any, text_column: str) -> Any:
    """The driver's encoder (for the training sample): ``encoder`` itself, or what its factory makes."""
    if encoder is None:
        raise InvalidArgumentError(
            f"the source holds texts ({text_column!r}) but no encoder was given: pass encoder= (an encoder, "
            "or a callable making one on each worker, e.g. lambda: HFTokenEncoder(None))"
        )
    return encoder if hasattr(encoder, "encode_documents") else encoder()


def _target(
    uri: Any, storage_options: dict[str, str] | None, spec: str | None, dim: int, local_encoder: Any,
    create_options: dict[str, Any],
) -> Any:  # fmt: skip
    """The index at ``uri`` (its dim checked), or a new one; a new one built from texts records the encoder
    when the encoder can describe itself."""
    import mvstore.store as ms

    if _is_index(uri, storage_options):
        idx = ms.open(uri, storage_options=storage_options)
        if idx.dim != dim:
            raise DimensionMismatchError(
                f"the index at {idx.root} holds {idx.dim}-d vectors but the source has {dim}-d ones; build a new index"
            )
        return idx
    from .encoders import describable

    recorded = local_encoder if local_encoder is not None and describable(local_encoder) else None
    return ms.create(
        uri, spec=spec, dim=dim, storage_options=storage_options, encoder=recorded, **create_options
    )


def _table_schema(
    idx: Any, writer: Any, docs: Any, sample: pa.Table, sample_docs: Any, id_column: str, meta_cols: list[str]
) -> tuple[Any, pa.Schema, list[pa.Field]]:
    """The codec state the workers encode with (trained on the sample for an untrained index), the docs
    table's schema and its user fields (the id and metadata columns)."""
    from .store._layout import DOCS_SYSTEM_COLUMNS, new_metadata_fields, normalize_ids, normalize_metadata

    if docs is None:
        if writer.latest_state(docs) is None:
            idx.train(sample_docs)
        st = writer.latest_state(docs)
        id_type = normalize_ids(sample.column(id_column).combine_chunks()).type
        sample_meta = normalize_metadata(sample.select(meta_cols), sample.num_rows) if meta_cols else None
        schema, fields = writer.docs_schema(id_type, new_metadata_fields(sample_meta), st)
        return st, schema, fields
    st = writer.latest_state(docs)
    schema = docs.schema
    unknown = [c for c in meta_cols if c not in schema.names]
    if unknown:
        raise InvalidMetadataError(
            f"metadata column {unknown[0]!r} is not in this index (its columns are fixed by the first add); "
            "leave it out with metadata_columns="
        )
    return st, schema, [schema.field(n) for n in schema.names if n not in DOCS_SYSTEM_COLUMNS]


def _collect(mapped: Any, progress: bool | None) -> tuple[list[dict], list[pa.Array], dict[int, int], int]:
    """Run the workers' tasks: their fragments, ids, peak RSS per worker pid and the document count."""
    frags: list[dict] = []
    ids: list[pa.Array] = []
    workers: dict[int, int] = {}
    n_docs = 0
    ctx = mapped.context  # the build's own execution context (the global one may be shared: restored below)
    keep_order, ctx.execution_options.preserve_order = ctx.execution_options.preserve_order, True
    keep_raise = getattr(ctx, "raise_original_map_exception", None)
    if keep_raise is not None:  # a worker's own error (e.g. InvalidVectorsError), not Ray's wrapper
        ctx.raise_original_map_exception = True
    try:
        with bar(None, "build (ray)", unit="doc", progress=progress) as pbar:
            for out in mapped.iter_batches(batch_size=None, batch_format="pyarrow"):
                for i in range(out.num_rows):
                    frags += json.loads(out.column("fragments")[i].as_py())
                    ids.append(out.column("ids")[i].values)
                    pid, rss = out.column("pid")[i].as_py(), out.column("rss")[i].as_py()
                    workers[pid] = max(workers.get(pid, 0), rss)
                    n = out.column("n")[i].as_py()
                    n_docs += n
                    pbar.update(n)
    except Exception as e:
        cause = _mvstore_cause(e)
        if cause is None:
            raise
        raise cause from e
    finally:
        ctx.execution_options.preserve_order = keep_order
        if keep_raise is not None:
            ctx.raise_original_map_exception = keep_raise
    return frags, ids, workers, n_docs


def _commit(
    writer: Any, docs: Any, st: Any, schema: pa.Schema, frags: list[dict], ids: list[pa.Array], existing: Any,
    n_docs: int,
) -> None:  # fmt: skip
    """Check the ids (unique in the build, new to the index) and commit every fragment in ONE Lance operation
    (the caller holds the write lock)."""
    import lance

    from .store._layout import ID, first_duplicate
    from .store._write import check_new

    if not n_docs:
        raise InvalidVectorsError("the source holds no documents; nothing was committed")
    all_ids = pa.concat_arrays([a.cast(schema.field(ID).type) for a in ids])
    dup = first_duplicate(all_ids)
    if dup is not None:
        raise DuplicateIdError(
            f"id {dup!r} appears more than once in the source; ids must be unique: drop the repeat"
        )
    check_new(all_ids, existing)
    writer.commit_fragments(
        docs, st, schema, [lance.fragment.FragmentMetadata.from_json(json.dumps(f)) for f in frags]
    )


#: per worker process: the codec state and encoder of the build running there (Ray reuses worker processes
#: across tasks, so a state and a model are loaded once per process, not once per batch)
_WORKER: dict[str, Any] = {}


def _encode_and_write(
    batch: pa.Table, *, state: Any, dim: int, schema: pa.Schema, fields: list[pa.Field], table_uri: str,
    storage_options: dict[str, str] | None, id_column: str, vectors_column: str | None, text_column: str | None,
    metadata_columns: list[str], encoder: Any,
) -> pa.Table:  # fmt: skip
    """One Ray task: a batch of source rows -> validate, (encode texts), pool, codec-encode, stage-1 terms
    (the store's own ``prepare_batch`` + ``encode_batch``) -> Lance fragments written into the docs table.
    Returns one row: the fragments' metadata (JSON), the ids, the count, the worker's pid and peak RSS."""
    import lance
    import ray

    from .store._layout import ID, SOURCE
    from .store._state import state_from_arrays
    from .store._write import encode_batch, prepare_batch

    key = state.hex() if isinstance(state, ray.ObjectRef) else repr(state[0])
    if _WORKER.get("key") != key:
        sid, arrays, meta = ray.get(state) if isinstance(state, ray.ObjectRef) else state
        enc = encoder if encoder is None or hasattr(encoder, "encode_documents") else encoder()
        _WORKER.clear()
        _WORKER.update(key=key, state=state_from_arrays(sid, arrays, meta, dim), encoder=enc)
    st = _WORKER["state"]
    if vectors_column is not None:
        vectors = _vectors(batch.column(vectors_column), dim)
    else:
        vectors = _WORKER["encoder"].encode_documents(batch.column(text_column).to_pylist())
    meta_tbl = batch.select(metadata_columns) if metadata_columns else None
    b = prepare_batch(dim, batch.column(id_column).combine_chunks(), vectors, meta_tbl, schema.field(ID).type)
    rb = encode_batch(b, st, fields, SOURCE in schema.names).cast(schema)
    frags = lance.fragment.write_fragments(
        pa.Table.from_batches([rb]), table_uri, schema=schema, storage_options=storage_options
    )
    return pa.table({
        "fragments": [json.dumps([f.to_json() for f in frags])],
        "ids": pa.ListArray.from_arrays(pa.array([0, len(b["ids"])], pa.int32()), b["ids"]),
        "n": [len(b["ragged"])],
        "pid": [os.getpid()],
        "rss": [resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024],  # Linux: KiB
    })  # fmt: skip


def _task_pool(rd: Any, n: int) -> dict[str, Any]:
    """``map_batches`` arguments for at most ``n`` concurrent tasks (``compute=`` on newer Ray, else
    ``concurrency=``). Tasks, not actors: a read fuses with its task, so ``n`` workers need ``n`` CPUs."""
    strategy = getattr(rd.data, "TaskPoolStrategy", None)
    if strategy is not None and "size" in _params(strategy):
        return {"compute": strategy(size=n)}
    return {"concurrency": n}


# ---------------------------------------------------------------------------------------------- helpers


def _connect(ray: bool | str) -> Any:
    """The ``ray`` module, connected: to ``ray`` (an address), or the running/``RAY_ADDRESS``/a local cluster."""
    rd = require("ray", "ray[data]", extra="ray")
    require("ray.data", "ray[data]", extra="ray")
    if ray is False or ray is None:
        raise InvalidArgumentError(
            "mvstore.build runs on Ray: pass ray=True (a local or RAY_ADDRESS cluster) or ray='ADDRESS'; "
            "for a single-process build use index.add_batches(...) or `mvstore build` without --ray"
        )
    if not (ray is True or isinstance(ray, str)):
        raise InvalidDtypeError(
            f"ray must be True or a cluster address (str), got {type(ray).__name__} {ray!r:.80}"
        )
    if not rd.is_initialized():
        rd.init(address=None if ray is True else ray, include_dashboard=False, log_to_driver=False)
    return rd


def _dataset(rd: Any, source: Any) -> Any:
    """``source`` as a ``ray.data.Dataset``."""
    if isinstance(source, rd.data.Dataset):
        return source
    if not isinstance(source, (str, os.PathLike)):
        raise InvalidDtypeError(
            f"source must be a ray.data.Dataset or a path of JSONL / Parquet files, got {type(source).__name__}"
        )
    path = os.fspath(source)
    low = path.lower().rstrip("/")
    if low.endswith((".jsonl", ".json", ".ndjson", ".jsonl.gz")):
        return (
            rd.data.read_json(path, lines=True)
            if "lines" in _params(rd.data.read_json)
            else rd.data.read_json(path)
        )
    if low.endswith(".parquet") or "://" in path or os.path.isdir(path):
        return rd.data.read_parquet(path)
    raise InvalidArgumentError(
        f"cannot read {path!r}: pass a .jsonl / .json / .parquet file, a directory or URI of Parquet files, or a "
        "ray.data.Dataset"
    )


def _params(fn: Callable) -> set[str]:
    import inspect

    try:
        return set(inspect.signature(fn).parameters)
    except (TypeError, ValueError):
        return set()


def _first_rows(ds: Any, n: int) -> pa.Table:
    """The first ``n`` rows of the source (the training sample), as one Arrow table."""
    batches = list(ds.limit(n).iter_batches(batch_size=None, batch_format="pyarrow"))
    if not batches:
        raise InvalidVectorsError("the source holds no documents")
    return pa.concat_tables(batches).combine_chunks()


def _metadata_columns(schema: pa.Schema, given: list[str] | None, skip: set[str]) -> list[str]:
    if given is not None:
        unknown = [c for c in given if c not in schema.names]
        if unknown:
            raise InvalidMetadataError(
                f"metadata_columns names unknown column(s) {unknown}; the source has {schema.names}"
            )
        return list(given)
    return [
        f.name
        for f in schema
        if f.name not in skip and not f.name.startswith("_") and any(t(f.type) for t in _SCALAR)
    ]


def _vector_dim(col: pa.ChunkedArray | pa.Array) -> int:
    col = col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col
    if not (
        pa.types.is_list(col.type)
        or pa.types.is_large_list(col.type)
        or pa.types.is_fixed_size_list(col.type)
    ):
        raise InvalidDtypeError(
            f"the vectors column has type {col.type}; it must hold a list of token vectors per row"
        )
    tokens = col.flatten()
    if len(tokens) == 0:
        raise InvalidVectorsError("the first documents of the source have no token vectors")
    return len(tokens[0].as_py())


def _vectors(col: pa.ChunkedArray | pa.Array, dim: int) -> list[np.ndarray]:
    """A list<list<float>> column -> one (n_i, dim) float32 array per row (validated later by as_ragged)."""
    col = col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col
    tokens = col.flatten()
    lens = pa.compute.list_value_length(tokens).to_numpy(zero_copy_only=False)
    if len(lens) and (lens != dim).any():
        bad = int(np.flatnonzero(lens != dim)[0])
        raise DimensionMismatchError(
            f"a token vector of the source has {int(lens[bad])} values, the others {dim}; every vector needs {dim}"
        )
    values = tokens.flatten().to_numpy(zero_copy_only=False).astype(np.float32, copy=False).reshape(-1, dim)
    offs = col.offsets.to_numpy() if not pa.types.is_fixed_size_list(col.type) else None
    if offs is None:
        return list(values.reshape(len(col), -1, dim))
    offs = offs - offs[0]
    return np.split(values, offs[1:-1])


def _stored_state(writer: Any, sid: int) -> tuple[int, dict[str, np.ndarray], dict[str, Any]]:
    """(state id, arrays, meta) of a codec state as stored in codec.lance: what the workers rebuild it from."""
    arrays, meta = writer.tables.states.stored(sid)
    return sid, arrays, meta


def _is_index(uri: Any, storage_options: dict[str, str] | None) -> bool:
    from .store._fs import Location
    from .store._layout import MANIFEST

    return Location(uri, storage_options).exists(MANIFEST)


def _mvstore_cause(e: BaseException) -> BaseException | None:
    """The mvstore error a worker raised, from the Ray exception that carries it (None if there is none)."""
    todo, seen = [e], set()
    while todo:
        e = todo.pop(0)
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        if isinstance(e, MvstoreError):
            return e
        todo += [e.__cause__, e.__context__, getattr(e, "cause", None)]  # Ray's RayTaskError.cause
    return None
