"""``Index.export``: an index version's documents out as ``.npz`` (what ``mvstore build --input`` reads) or
``.parquet`` (ids, metadata and token vectors)."""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import pyarrow as pa

from ..exceptions import InvalidArgumentError, InvalidOperationError
from ..ragged import Ragged
from . import _integrity
from ._layout import ID, N_VECTORS, SOURCE, binary_values


def stored_vectors(idx: Any) -> tuple[pa.Table, Ragged]:
    """(ids + metadata table, the documents' stored token vectors as float32) of the version ``idx`` reads, in
    stored order. The vectors are the pooled fp16 source vectors when the index keeps them
    (``keep_source=True``), else the codec's decoded vectors when they live in the input space (no pca/trunc
    projection, no sparse map); otherwise InvalidOperationError names the fix."""
    view = idx._view
    if view.ds is None:
        return pa.table({ID: pa.array([], pa.int64())}), Ragged(
            np.zeros((0, idx.dim), np.float32), np.zeros(1, np.int64)
        )
    keep = SOURCE in view.ds.schema.names
    cols = [ID, *idx.metadata_columns, *([N_VECTORS, SOURCE] if keep else [])]
    with view.reading():
        t = _integrity.read_or_corrupted(
            lambda: view.ds.to_table(columns=cols, scan_in_order=True), f"docs table version {view.version}"
        )
    if keep:
        nvec = t.column(N_VECTORS).to_numpy().astype(np.int64)
        offsets = np.concatenate([[0], np.cumsum(nvec)])
        vals = binary_values(t.column(SOURCE)).view(np.float16).reshape(-1, idx.dim).astype(np.float32)
        return t.drop_columns([N_VECTORS, SOURCE]), Ragged(vals, offsets)
    snap = view.snapshot()
    codec = snap.codec
    if codec.dim_out != idx.dim:
        raise InvalidOperationError(
            f"this index stores {codec.dim_out}-d codes of {idx.dim}-d vectors (spec {idx.spec}): its vectors "
            "cannot be given back in the input space; create the index with keep_source=True to export them"
        )
    return t, Ragged(np.ascontiguousarray(codec.decode(snap.codes), np.float32), snap.offsets)


def export(idx: Any, path: str | os.PathLike) -> dict[str, Any]:
    """Write the documents to ``path`` (``.npz``: ``ids``, ``vectors`` (n_vectors, dim) float32, ``offsets``;
    ``.parquet``: ``id``, the metadata columns and ``vectors`` (list of dim-float lists per document)),
    atomically (temp file + rename). Returns ``{"path", "docs", "vectors", "source"}``."""
    path = os.fspath(path)
    kind = os.path.splitext(path)[1].lower()
    if kind not in (".npz", ".parquet"):
        raise InvalidArgumentError(f"export path {path!r} must end in .npz or .parquet (the format written)")
    meta, docs = stored_vectors(idx)
    tmp = f"{path}.{os.getpid()}.tmp{kind}"
    try:
        if kind == ".npz":
            ids = meta.column(ID).to_numpy(zero_copy_only=False)
            np.savez(
                tmp,
                ids=ids.astype(str) if ids.dtype == object else ids,
                vectors=docs.values,
                offsets=docs.offsets,
            )
        else:
            import pyarrow.parquet as pq

            flat = pa.FixedSizeListArray.from_arrays(pa.array(docs.values.reshape(-1)), idx.dim)
            vectors = pa.ListArray.from_arrays(pa.array(docs.offsets.astype(np.int32)), flat)
            pq.write_table(meta.append_column("vectors", vectors), tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return {
        "path": path,
        "docs": len(docs),
        "vectors": int(docs.offsets[-1]),
        "source": "keep_source"
        if SOURCE in (idx._view.ds.schema.names if idx._view.ds else [])
        else "decoded",
    }
