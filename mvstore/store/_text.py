"""Texts in, passages out: the encoder an index records, :meth:`Index.add_texts`, string queries.

``create(uri, encoder=...)`` stores the encoder's JSON description (:func:`mvstore.encoders.encoder_config`)
plus its ``name`` under ``options.encoder`` of ``mvstore.json``; nothing is pickled. An opened index rebuilds
the encoder from it on the first text call only, so an install without torch/transformers still opens and
searches the index with vectors. ``open(uri, encoder=...)`` overrides it for that :class:`Index` object.
"""

from __future__ import annotations

import threading
import warnings
from typing import Any

import numpy as np
import pyarrow as pa

from .._progress import bar
from ..exceptions import (
    DimensionMismatchError,
    InvalidArgumentError,
    InvalidDtypeError,
    InvalidMetadataError,
    InvalidOperationError,
)
from ._layout import (
    DOCS_SYSTEM_COLUMNS,
    conform_metadata,
    ids_numpy,
    new_metadata_fields,
    normalize_ids,
    normalize_metadata,
    reserved_name,
)
from ._write import Writer, check_new

#: texts encoded and written per streamed batch of add_texts
TEXT_BATCH = 256
_BUILD_LOCK = threading.Lock()


def resolve(encoder: Any, dim: int | None, where: str) -> tuple[Any, int]:
    """An encoder object for ``create`` / ``open`` (built from a short form or description) and the dim,
    checked against the encoder's output dim."""
    from ..encoders import make_encoder

    enc = make_encoder(encoder)
    enc_dim = getattr(enc, "dim", None)
    if isinstance(enc_dim, bool) or not isinstance(enc_dim, (int, np.integer)) or enc_dim < 1:
        raise InvalidArgumentError(f"the encoder {type(enc).__name__} has no int .dim (its output dimension)")
    if dim is not None and int(dim) != int(enc_dim):
        raise DimensionMismatchError(
            f"{where}: the encoder {getattr(enc, 'name', type(enc).__name__)} outputs {enc_dim}-d vectors but the "
            f"index holds {dim}-d vectors; pass the encoder the index was built with (or drop dim= in create)"
        )
    return enc, int(enc_dim)


def record(encoder: Any) -> dict[str, Any]:
    """What ``options.encoder`` of the manifest holds: the description plus the encoder's ``name``."""
    from ..encoders import encoder_config

    return {**encoder_config(encoder), "name": str(encoder.name)}


def rebuild(recorded: dict[str, Any], dim: int) -> Any:
    """The encoder an index recorded, loaded now. Its output dim must be the index's; a different ``name``
    (e.g. a ColBERT model directory whose files changed) is a warning."""
    from ..encoders import encoder_from_config

    config = {k: v for k, v in recorded.items() if k != "name"}
    enc = encoder_from_config(config)
    if enc.dim != dim:
        raise DimensionMismatchError(
            f"the index's recorded encoder {recorded.get('name')} now outputs {enc.dim}-d vectors, the index holds "
            f"{dim}-d ones: the model changed on disk; open the index with mvstore.open(uri, encoder=...) naming "
            "the model it was built with"
        )
    if recorded.get("name") and enc.name != recorded["name"]:
        warnings.warn(
            f"the index was built with encoder {recorded['name']!r}; the model rebuilt from its description is "
            f"{enc.name!r} (its files or settings changed), so text queries may not match the stored documents: "
            "rebuild the index, or open it with mvstore.open(uri, encoder=...) naming the model it was built with",
            RuntimeWarning,
            stacklevel=4,
        )
    return enc


def encoder_of(idx: Any, what: str) -> Any:
    """The index's encoder (the override, else the recorded one, built once); InvalidOperationError naming the
    fix when it has none."""
    if idx._encoder is None:
        recorded = idx.options.get("encoder")
        if recorded is None:
            raise InvalidOperationError(
                f"{what} needs an encoder, and this index records none (it was created without encoder=): open it "
                "with mvstore.open(uri, encoder='hf') (or 'colbert:PATH', 'pylate:MODEL', an encoder object: the "
                "one its vectors came from), or pass token vectors instead of texts"
            )
        with _BUILD_LOCK:
            if idx._encoder is None:
                idx._encoder = rebuild(recorded, idx.dim)
    return idx._encoder


def is_text_query(queries: Any) -> bool:
    """A str, or a non-empty list/tuple of str only."""
    return isinstance(queries, str) or (
        isinstance(queries, (list, tuple)) and len(queries) > 0 and all(isinstance(q, str) for q in queries)
    )


def encode_queries(idx: Any, queries: Any) -> Any:
    return encoder_of(idx, "search with text").encode_queries(
        [queries] if isinstance(queries, str) else list(queries)
    )


def add_texts(
    idx: Any,
    writer: Writer,
    texts: Any,
    ids: Any,
    metadata: Any,
    text_column: str | None,
    batch_size: int,
    progress: bool | None,
) -> list:
    """:meth:`Index.add_texts` (see there; ``writer``: its write path). Everything is validated before the
    first text is encoded."""
    from ..encoders import _check_texts

    _check_text_args(batch_size, text_column)
    texts = _check_texts(texts)
    if not texts:
        raise InvalidArgumentError("add_texts got no texts; pass at least one")
    n = len(texts)
    enc = encoder_of(idx, "add_texts")
    with writer.writing(maintain=True):  # the policy runs once, after the nested add
        ds = writer.tables.latest_docs()
        id_type, existing = writer.existing_ids(ds)
        if ids is None:
            if id_type is not None and not pa.types.is_integer(id_type):
                raise InvalidArgumentError(
                    "this index has string ids, so add_texts cannot number the new texts: pass ids=[...]"
                )
            start = 0 if existing is None or len(existing) == 0 else int(existing[-1]) + 1
            ids = np.arange(start, start + n, dtype=np.int64)
        ids_arr = normalize_ids(ids, n, id_type=id_type)
        check_new(ids_arr, existing)
        meta = _with_texts(normalize_metadata(metadata, n), texts, text_column, ds)
        with bar(n, "adding texts", unit="text", progress=progress) as pbar:

            def batches():
                for a in range(0, n, batch_size):
                    b = min(n, a + batch_size)
                    vecs = enc.encode_documents(texts[a:b])
                    yield ids_arr.slice(a, b - a), vecs, None if meta is None else meta.slice(a, b - a)
                    pbar.update(b - a)

            idx.add_batches(batches())
    out = ids_numpy(ids_arr)
    return out.tolist()


def _check_text_args(batch_size: Any, text_column: Any) -> None:
    """add_texts' ``batch_size`` and ``text_column``."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise InvalidArgumentError(
            f"batch_size={batch_size!r} must be a positive int (texts per written batch)"
        )
    if text_column is not None and not isinstance(text_column, str):
        raise InvalidDtypeError(
            f"text_column must be a column name (str) or None, got {type(text_column).__name__}"
        )
    if text_column is not None and reserved_name(text_column):
        raise InvalidMetadataError(
            f"text_column={text_column!r} is reserved (a search result's column, or a name starting with '_' like "
            "the index's own _mv_* columns); pick another name, e.g. 'text'"
        )


def _with_texts(meta: pa.Table | None, texts: list[str], text_column: str | None, ds: Any) -> pa.Table | None:
    """The metadata add_texts writes: ``meta`` with the texts in ``text_column`` (None: not stored), checked
    against the stored columns of ``ds`` (the latest docs version; None before the first add)."""
    if text_column is not None:
        if meta is not None and text_column in meta.column_names:
            raise InvalidMetadataError(
                f"metadata has a {text_column!r} column, and add_texts stores the texts there: pass "
                f"text_column=None to keep yours (texts not stored), or another text_column name"
            )
        col = pa.array(texts, pa.string())
        meta = pa.table({text_column: col}) if meta is None else meta.append_column(text_column, col)
    if ds is not None and text_column is not None and text_column not in ds.schema.names:
        raise InvalidMetadataError(
            f"this index has no {text_column!r} column (its columns are fixed by the first add, which stored no "
            "texts): pass text_column=None to add the texts without storing them, or build a new index"
        )
    if ds is not None:  # the stored columns: check before encoding, not after
        conform_metadata(
            meta, [ds.schema.field(c) for c in ds.schema.names if c not in DOCS_SYSTEM_COLUMNS], len(texts)
        )
    else:
        new_metadata_fields(meta)
    return meta
