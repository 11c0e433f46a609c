"""On-disk layout of an mvstore index and the Arrow conversions around it: paths, the manifest, the docs and
codec table schemas, id and metadata normalization, and the cross-process write lock (:func:`write_lock`).

The layout itself (files, columns, schema metadata, the codec state's meta) is documented once, in
docs/LAYOUT.md; keep it true when this module changes. The docs table's column names are spelled only here
(``ID`` and the ``_mv_*`` constants below).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import pyarrow as pa

from ..exceptions import (
    DuplicateIdError,
    IndexBusyError,
    IndexCorruptedError,
    InvalidDtypeError,
    InvalidIdError,
    InvalidMetadataError,
    UpgradeRequiredError,
)

FORMAT = "mvstore"
#: 2: row checksums, integrity records, manifest checksum; 3: the index's own docs columns named ``_mv_*``
FORMAT_VERSION = 3
MANIFEST = "mvstore.json"
DOCS = "docs.lance"
STATE = "codec.lance"
STATE_KEY = b"mvstore.state_id"
LOCK = "mvstore.lock"
#: how long a write waits for another process's write to finish before raising IndexBusyError
WRITE_LOCK_TIMEOUT_S = 600.0

# The docs table's column names: the one place they are spelled. ``id`` is the user's id, the name search
# results, ``where=`` filters and plain LanceDB readers use; the index's own columns carry the ``_mv_``
# prefix, so user metadata may use any other name (``source``, ``text``, ``n_tokens``, ...).
ID = "id"
#: the default column of the passage text (``add_texts``, the builds from texts, ``create_fts_index``, the
#: LangChain / LlamaIndex integrations): user metadata, not an internal column (docs/LAYOUT.md says why)
TEXT = "text"
N_TOKENS = "_mv_n_tokens"  # int32: original (pre-pooling) token count
N_VECTORS = "_mv_n_vectors"  # int32: stored (pooled) vector count
CODES = "_mv_codes"  # large_binary: the codec's codes of the pooled vectors
TERMS = "_mv_terms"  # list<int32>: each stored vector's stage-1 term
RECON_ERR = "_mv_recon_err"  # float32: mean squared reconstruction error (drift)
SOURCE = "_mv_source"  # large_binary: pooled vectors as fp16 (keep_source=True only)
ROW_CHECKSUM = "_mv_row_checksum"  # uint64: hash of id, n_tokens, n_vectors, codes, terms
#: the index's own columns (never metadata, never filterable)
INTERNAL_COLUMNS = (N_TOKENS, N_VECTORS, CODES, TERMS, RECON_ERR, SOURCE, ROW_CHECKSUM)
#: every column of the docs table that is not user metadata
DOCS_SYSTEM_COLUMNS = (ID, *INTERNAL_COLUMNS)
#: a search result's columns; ``columns=`` adds metadata columns next to them, so metadata cannot take these
RESULT_COLUMNS = ("query", "rank", ID, "score")
#: the columns a row's checksum covers (what search reads), in hashing order
CHECKSUMMED = (ID, N_TOKENS, N_VECTORS, CODES, TERMS)
#: the format-2 name of each internal column (``upgrade`` renames them)
V2_NAMES = {
    N_TOKENS: "n_tokens",
    N_VECTORS: "n_vectors",
    CODES: "codes",
    TERMS: "terms",
    RECON_ERR: "recon_err",
    SOURCE: "source",
    ROW_CHECKSUM: "row_checksum",
}

STATE_SCHEMA = pa.schema(
    [
        ("state_id", pa.int64()),
        ("name", pa.string()),
        ("dtype", pa.string()),
        ("shape", pa.list_(pa.int64())),
        ("data", pa.large_binary()),
    ]
)
_META_ROW = "__meta__"


# ----------------------------------------------------------------------------------------- manifest
def write_manifest(loc: Any, spec: str, dim: int, options: dict[str, Any]) -> dict[str, Any]:
    """Write ``mvstore.json`` atomically (``Location.write_atomic``) and return it."""
    manifest = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "spec": spec,
        "dim": int(dim),
        "options": options,
    }
    return rewrite_manifest(loc, manifest)


def rewrite_manifest(loc: Any, manifest: dict[str, Any]) -> dict[str, Any]:
    """Write ``manifest`` (its checksum recomputed) as ``mvstore.json`` of the index at ``loc`` atomically
    (``Location.write_atomic``: a crash leaves the old or the new manifest, never a torn one)."""
    manifest = {k: v for k, v in manifest.items() if k != "checksum"}
    manifest["checksum"] = _manifest_digest(manifest)
    loc.write_atomic(MANIFEST, json.dumps(manifest, indent=2, sort_keys=True).encode())
    return manifest


def _manifest_digest(m: dict[str, Any]) -> str:
    return hashlib.sha256(
        json.dumps({k: v for k, v in m.items() if k != "checksum"}, sort_keys=True).encode()
    ).hexdigest()


def read_manifest(loc: Any, *, upgrading: bool = False) -> dict[str, Any]:
    """Read and validate ``mvstore.json`` of the index at ``loc`` (a ``_fs.Location``); IndexCorruptedError if
    missing, garbled or not ours, UpgradeRequiredError for format version 2 unless ``upgrading``
    (:func:`mvstore.store.upgrade`)."""
    root = loc.uri
    path = loc.table(MANIFEST)
    if loc.local and not os.path.isdir(root):
        raise IndexCorruptedError(
            f"{root!r} does not exist or is not a directory: open an index made with mvstore.store.create(uri, ...)"
        )
    try:
        raw = loc.read(MANIFEST)
    except FileNotFoundError:
        raise IndexCorruptedError(
            f"{root!r} is not an mvstore index (no {MANIFEST}): create one with mvstore.store.create(uri, spec, dim)"
        ) from None
    except OSError as e:
        if not loc.local:
            raise  # the store, not the file: create/open report it as StorageUnreachableError
        raise IndexCorruptedError(
            f"{path} cannot be read as JSON ({e}); the index is corrupted: restore it from a backup or rebuild it"
        ) from e
    try:
        m = json.loads(raw)
    except ValueError as e:
        raise IndexCorruptedError(
            f"{path} cannot be read as JSON ({e}); the index is corrupted: restore it from a backup or rebuild it"
        ) from e
    ok = (
        isinstance(m, dict)
        and m.get("format") == FORMAT
        and isinstance(m.get("spec"), str)
        and isinstance(m.get("dim"), int)
        and isinstance(m.get("options"), dict)
    )
    if not ok:
        raise IndexCorruptedError(
            f"{path} is not a valid mvstore manifest (needs format={FORMAT!r}, spec, dim, options); "
            "the index is corrupted: restore it from a backup or rebuild it"
        )
    if m.get("format_version") not in (2, FORMAT_VERSION):  # 2: upgradable in place, below
        raise IndexCorruptedError(
            f"{path} has format_version {m.get('format_version')!r}; this mvstore reads version {FORMAT_VERSION}: "
            "use the mvstore that wrote it, or rebuild the index with this one"
        )
    if m.get("checksum") != _manifest_digest(m):
        raise IndexCorruptedError(
            f"{path} does not match its checksum (it was changed or corrupted); restore it from a backup or "
            "rebuild the index"
        )
    if m.get("format_version") == 2 and not upgrading:
        raise UpgradeRequiredError(
            f"the index at {root!r} has format version 2; this mvstore reads version {FORMAT_VERSION} (its own "
            f"columns renamed to _mv_*, so metadata may use any name): upgrade it in place with "
            f"`mvstore upgrade {root}` or mvstore.upgrade(uri) (a metadata-only commit, seconds)"
        )
    return m


def reserved_name(name: str) -> bool:
    """Whether metadata may not use ``name``: a search result's column, or a name starting with "_" (the
    index's own ``_mv_*`` columns and Lance's ``_rowid``, ``_distance``, ...)."""
    return name in RESULT_COLUMNS or name.startswith("_")


def checksum_column_of(schema: pa.Schema) -> str | None:
    """The row-checksum column of a docs version: format 3's, or format 2's in a version written before
    :func:`mvstore.store.upgrade` (time travel keeps those), or None (not an mvstore docs table)."""
    for name in (ROW_CHECKSUM, V2_NAMES[ROW_CHECKSUM]):
        if name in schema.names:
            return name
    return None


def has_versions(loc: Any, table: str) -> bool:
    """Whether the Lance table ``table`` of the index at ``loc`` holds at least one committed version. A writer
    killed at its very first commit leaves ``_versions/`` with only a temporary manifest: that table was never
    created."""
    return any(f.endswith(".manifest") for f in loc.listdir(f"{table}/_versions"))


# ------------------------------------------------------------------------------------------ writing
@contextlib.contextmanager
def write_lock(root: str) -> Iterator[None]:
    """Hold the index's cross-process write lock: an exclusive ``flock`` on ``<root>/mvstore.lock``. Every
    write (add, upsert, delete, train, optimize) holds it from reading the latest version to its commit, so
    writers in several processes (or several Index objects) run one after the other and each one's id checks
    see every earlier commit. The kernel drops the lock when its holder dies (even by SIGKILL): a crashed
    writer never leaves a stale lock. Waits up to WRITE_LOCK_TIMEOUT_S seconds, then raises IndexBusyError."""
    path = os.path.join(root, LOCK)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        timeout = WRITE_LOCK_TIMEOUT_S
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
                    raise IndexBusyError(
                        f"another writer (pid {holder}) has held the write lock of {root!r} for more than "
                        f"{timeout:g} s; wait for it to finish "
                        "(or stop it) and retry the write"
                    ) from None
                time.sleep(0.02)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the lock


# -------------------------------------------------------------------------------------- codec state
def state_table(state_id: int, arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> pa.Table:
    """Named arrays + a JSON meta row -> rows of the codec table (no pickle: raw bytes + dtype + shape)."""
    rows: dict[str, list] = {k: [] for k in STATE_SCHEMA.names}
    for name, a in arrays.items():
        a = np.ascontiguousarray(a)
        if a.dtype.kind not in "biuf":
            raise InvalidDtypeError(
                f"codec state array {name!r} has dtype {a.dtype}; only numeric arrays are stored"
            )
        rows["state_id"].append(state_id)
        rows["name"].append(name)
        rows["dtype"].append(a.dtype.str)
        rows["shape"].append(list(a.shape))
        rows["data"].append(a.tobytes())
    rows["state_id"].append(state_id)
    rows["name"].append(_META_ROW)
    rows["dtype"].append("json")
    rows["shape"].append([])
    rows["data"].append(json.dumps(meta, sort_keys=True).encode())
    return pa.table(rows, schema=STATE_SCHEMA)


def parse_state(tbl: pa.Table, state_id: int, where: str) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Rows of one state -> (arrays, meta); IndexCorruptedError on anything malformed."""
    if tbl.num_rows == 0:
        raise IndexCorruptedError(
            f"codec state {state_id} is missing from {where}; the index is corrupted: restore it or rebuild it"
        )
    arrays: dict[str, np.ndarray] = {}
    meta = None
    try:
        for name, dtype, shape, data in zip(
            tbl.column("name").to_pylist(),
            tbl.column("dtype").to_pylist(),
            tbl.column("shape").to_pylist(),
            tbl.column("data").to_pylist(),
        ):
            if name == _META_ROW:
                meta = json.loads(data)
                continue
            dt = np.dtype(dtype)
            if dt.kind not in "biuf":
                raise ValueError(f"array {name!r} has non-numeric dtype {dtype!r}")
            arrays[name] = np.frombuffer(data, dtype=dt).reshape(shape).copy()
    except (ValueError, TypeError) as e:
        raise IndexCorruptedError(
            f"codec state {state_id} in {where} is garbled ({e}); restore the index from a backup or rebuild it"
        ) from e
    if not isinstance(meta, dict):
        raise IndexCorruptedError(
            f"codec state {state_id} in {where} has no JSON meta row; rebuild the index"
        )
    return arrays, meta


# ---------------------------------------------------------------------------------------------- ids
def normalize_ids(ids: Any, n: int | None = None, *, id_type: pa.DataType | None = None) -> pa.Array:
    """User ids (list / numpy / Arrow / pandas) -> int64 or string Arrow array; checks length, type, nulls,
    duplicates within the batch.

    >>> normalize_ids([3, 1, 2]).type, normalize_ids(["a", "b"]).to_pylist()
    (DataType(int64), ['a', 'b'])
    """
    if isinstance(ids, (str, bytes)) or not hasattr(ids, "__len__"):
        raise InvalidDtypeError(
            f"ids must be a sequence of ints or strings (one per document), got {type(ids).__name__}"
        )
    if isinstance(ids, pa.ChunkedArray):
        ids = ids.combine_chunks()
    arr = _id_type(ids if isinstance(ids, pa.Array) else _ids_arrow(ids, id_type))
    if arr.null_count:
        raise InvalidDtypeError("ids contain nulls; every document needs an id")
    if id_type is not None and arr.type != id_type and len(arr):
        raise InvalidDtypeError(
            f"this index stores {_type_word(id_type)} ids but got {_type_word(arr.type)} ids; "
            f"convert them (e.g. {'str(i)' if pa.types.is_string(id_type) else 'int(i)'})"
        )
    if n is not None and len(arr) != n:
        raise InvalidDtypeError(f"got {len(arr)} ids for {n} documents; pass exactly one id per document")
    dup = first_duplicate(arr)
    if dup is not None:
        raise DuplicateIdError(
            f"id {dup!r} appears more than once in this batch; ids must be unique: drop or rename the repeat"
        )
    return arr


_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1


def _ids_arrow(ids: Any, id_type: pa.DataType | None) -> pa.Array:
    """Ids given as a Python sequence, numpy or pandas -> an Arrow array (ints or strings)."""
    if hasattr(ids, "to_numpy") and not isinstance(ids, np.ndarray):  # pandas
        ids = ids.to_numpy()
    # a Python sequence is read element by element: numpy would turn [1, "a"] into the strings "1", "a"
    a = np.asarray(ids, dtype=object) if isinstance(ids, (list, tuple)) and len(ids) else np.asarray(ids)
    if a.dtype == object:
        a = _object_ids(a)
    if a.ndim != 1:
        raise InvalidDtypeError(f"ids must be 1-D (one per document), got shape {a.shape}")
    if a.dtype.kind in "iu":
        if a.dtype.kind == "u" and len(a) and a.max() > _INT64_MAX:
            raise InvalidIdError(
                f"id {a.max()} is outside the int64 range [-2**63, 2**63 - 1]; use string ids (str(i)) instead"
            )
        return pa.array(a.astype(np.int64), pa.int64())
    if a.dtype.kind == "U":
        try:
            return pa.array(a.tolist(), pa.string())
        except UnicodeEncodeError as e:
            raise InvalidIdError(surrogate_message(e, "id")) from None
    if len(a) == 0:
        return pa.array([], id_type or pa.int64())
    raise InvalidDtypeError(
        f"ids have dtype {a.dtype}; ids must be integers or strings (e.g. np.arange(n) or ['doc1', ...])"
    )


def _object_ids(a: np.ndarray) -> np.ndarray:
    """Python ids (an object array) -> a str or int64 array: all strings or all ints (within int64)."""
    kinds = {type(x) for x in a.reshape(-1).tolist()}
    if kinds <= {str}:
        return a.astype(str)
    if all(issubclass(k, (int, np.integer)) and not issubclass(k, (bool, np.bool_)) for k in kinds):
        big = next((x for x in a.reshape(-1).tolist() if not _INT64_MIN <= x <= _INT64_MAX), None)
        if big is not None:
            raise InvalidIdError(
                f"id {big} is outside the int64 range [-2**63, 2**63 - 1]; use string ids (str(i)) instead"
            )
        return a.astype(np.int64)
    raise InvalidDtypeError(
        f"ids have the types {sorted(k.__name__ for k in kinds)}; ids must be all ints or all strings "
        "(e.g. np.arange(n) or ['doc1', ...])"
    )


def _id_type(arr: pa.Array) -> pa.Array:
    """An Arrow id array as int64 or string; InvalidIdError / InvalidDtypeError for any other type."""
    if pa.types.is_integer(arr.type):
        try:
            return arr.cast(pa.int64())
        except pa.ArrowInvalid:
            raise InvalidIdError(
                f"ids of Arrow type {arr.type} exceed the int64 range [-2**63, 2**63 - 1] (largest "
                f"{pa.compute.max(arr).as_py()}); use string ids (str(i)) instead"
            ) from None
    if pa.types.is_string(arr.type) or pa.types.is_large_string(arr.type):
        return arr.cast(pa.string())
    raise InvalidDtypeError(f"ids have Arrow type {arr.type}; ids must be integers or strings")


def surrogate_message(e: UnicodeEncodeError, what: str) -> str:
    """The message for a string that UTF-8 (Arrow, Lance) cannot store: a lone surrogate, e.g. from
    ``open(errors="surrogateescape")`` or a bad JSON escape."""
    return (
        f"the {what} {e.object!r:.80} holds a lone surrogate {e.object[e.start]!r} at position {e.start}, which "
        "UTF-8 cannot store; repair the text first, e.g. s.encode('utf-8', 'replace').decode()"
    )


def _type_word(t: pa.DataType) -> str:
    return "integer" if pa.types.is_integer(t) else "string"


def first_duplicate(arr: pa.Array) -> Any:
    """First (smallest) repeated value of an id array, or None."""
    if len(arr) < 2:
        return None
    vals = np.sort(ids_numpy(arr))
    rep = np.flatnonzero(vals[1:] == vals[:-1])
    return _py(vals[rep[0]]) if len(rep) else None


def ids_numpy(arr: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """int64 numpy array for integer ids, a numpy str array for string ids."""
    if pa.types.is_integer(arr.type):
        return np.asarray(arr.to_numpy(zero_copy_only=False), dtype=np.int64)
    return np.asarray(arr.to_pylist(), dtype=str) if len(arr) else np.zeros(0, dtype=str)


def ids_in(seen: np.ndarray, vals: np.ndarray) -> np.ndarray:
    """Whether each of ``vals`` is in ``seen`` (sorted ids, :func:`ids_numpy`'s types): a binary search each.

    >>> ids_in(np.array(["a", "c"]), np.array(["c", "bb"])).tolist(), ids_in(np.array([], np.int64), np.array([1]))
    ([True, False], array([False]))
    """
    if len(seen) == 0:
        return np.zeros(len(vals), bool)
    pos = np.minimum(np.searchsorted(seen, vals), len(seen) - 1)
    return seen[pos] == vals


def ids_with(seen: np.ndarray, vals: np.ndarray) -> np.ndarray:
    """Sorted ``seen`` with ``vals`` (none of them in it) merged in: O(n) copying, no hashing or re-sorting of
    ``seen``; string ids widen to the longest.

    >>> ids_with(np.array(["a", "c"]), np.array(["bbb"])).tolist()
    ['a', 'bbb', 'c']
    """
    v = np.sort(vals)
    out = np.empty(len(seen) + len(v), np.result_type(seen.dtype, v.dtype))
    at = np.searchsorted(seen, v) + np.arange(len(v))
    rest = np.ones(len(out), bool)
    rest[at] = False
    out[at], out[rest] = v, seen
    return out


def ids_without(seen: np.ndarray, vals: np.ndarray) -> np.ndarray:
    """Sorted ``seen`` without ``vals`` (each of them in it)."""
    return np.delete(seen, np.searchsorted(seen, vals))


def _py(x: Any) -> Any:
    return x.item() if isinstance(x, np.generic) else x


def sql_literal_list(ids: np.ndarray) -> str:
    """``(1, 2)`` or ``('a', 'b''s')``: ids quoted for a Lance SQL predicate.

    >>> sql_literal_list(np.array([1, -2**63])), sql_literal_list(np.array(["a", "b's"]))
    ('(1, (-9223372036854775807 - 1))', "('a', 'b''s')")
    """
    if ids.dtype.kind in "iu":  # Lance parses -9223372036854775808 as a float: write it as an expression
        return (
            "(" + ", ".join(str(int(i)) if i != _INT64_MIN else f"({_INT64_MIN + 1} - 1)" for i in ids) + ")"
        )
    return "(" + ", ".join("'" + str(s).replace("'", "''") + "'" for s in ids) + ")"


# ----------------------------------------------------------------------------------------- metadata
def normalize_metadata(metadata: Any, n: int) -> pa.Table | None:
    """Arrow table / record batch / pandas frame / list of dicts / dict of columns -> Arrow table of n rows.

    A list of dicts takes the union of the keys of every row (a key a row lacks is null there). A column that
    holds only nulls keeps Arrow's null type here; :func:`conform_metadata` gives it the index's type.

    >>> normalize_metadata([{"a": 1}, {"b": "x"}], 2).to_pylist()
    [{'a': 1, 'b': None}, {'a': None, 'b': 'x'}]
    """
    if metadata is None:
        return None
    tbl = _metadata_table(metadata)
    if tbl.num_rows != n and tbl.num_columns:
        raise InvalidMetadataError(
            f"metadata has {tbl.num_rows} rows but there are {n} documents; pass exactly one row per document"
        )
    odd = next((c for c in tbl.column_names if not c or "." in c or "`" in c), None)
    if odd is not None:  # Lance refuses '.' in a column name; a '`' breaks every filter on the table
        raise InvalidMetadataError(
            f"metadata column name {odd!r} cannot be stored: names must be non-empty without '.' or '`'; "
            "rename it (e.g. " + repr(odd.replace(".", "_").replace("`", "") or "col") + ")"
        )
    reserved = [c for c in tbl.column_names if reserved_name(c)]
    if reserved:
        raise InvalidMetadataError(
            f"metadata column {reserved[0]!r} is reserved (the search results' columns {', '.join(RESULT_COLUMNS)}, "
            "and names starting with '_': the index's own _mv_* columns and Lance's _rowid, _distance, ...): "
            "rename it, e.g. to 'doc_" + reserved[0].lstrip("_") + "'"
        )
    if len(set(tbl.column_names)) != tbl.num_columns:
        raise InvalidMetadataError(f"metadata has repeated column names {tbl.column_names}; make them unique")
    return tbl.replace_schema_metadata(None) if tbl.num_columns else None


def _metadata_table(metadata: Any) -> pa.Table:
    """User metadata in any of :func:`normalize_metadata`'s forms -> an Arrow table."""
    if isinstance(metadata, pa.Table):
        return metadata
    if isinstance(metadata, pa.RecordBatch):
        return pa.Table.from_batches([metadata])
    if type(metadata).__module__.startswith("pandas"):
        try:
            return pa.Table.from_pandas(metadata, preserve_index=False)
        except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError, UnicodeEncodeError) as e:
            raise InvalidMetadataError(f"metadata cannot be converted to an Arrow table: {_why(e)}") from e
    if isinstance(metadata, dict):
        return _columns_table(metadata)
    if isinstance(metadata, (list, tuple)):
        bad = next((i for i, r in enumerate(metadata) if not isinstance(r, dict)), None)
        if bad is not None:
            raise InvalidMetadataError(
                f"metadata row {bad} is a {type(metadata[bad]).__name__}; metadata given as a list must hold "
                "one dict per document, e.g. [{'lang': 'en'}, ...]"
            )
        keys = dict.fromkeys(k for r in metadata for k in r)  # every row's keys, in order of appearance
        return _columns_table({k: [r.get(k) for r in metadata] for k in keys})
    raise InvalidMetadataError(
        f"metadata is a {type(metadata).__name__}; pass an Arrow table, a pandas DataFrame, a dict of "
        "columns or a list of dicts (one per document)"
    )


def _columns_table(columns: dict[Any, Any]) -> pa.Table:
    """A dict of columns -> Arrow table, converting (and blaming) one column at a time."""
    arrays = {}
    for name, values in columns.items():
        if not isinstance(name, str):
            raise InvalidMetadataError(
                f"metadata column name {name!r} is a {type(name).__name__}; use a str name"
            )
        if isinstance(values, (pa.Array, pa.ChunkedArray)):
            arrays[name] = values
            continue
        if isinstance(values, (str, bytes)) or not hasattr(values, "__len__"):
            raise InvalidMetadataError(
                f"metadata[{name!r}] is a {type(values).__name__}; a dict of columns needs one value per "
                f"document, e.g. {{{name!r}: [{values!r:.40}]}}, or pass a list of dicts (one per document)"
            )
        try:
            if isinstance(values, np.ndarray) and values.dtype == object:
                values = values.tolist()  # Arrow infers Python objects, not numpy's object dtype
            arrays[name] = pa.array(values)
        except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError, UnicodeEncodeError) as e:
            raise InvalidMetadataError(f"metadata column {name!r} cannot be stored: {_why(e)}") from e
    try:
        return pa.table(arrays) if arrays else pa.table({})
    except (pa.ArrowInvalid, ValueError) as e:
        raise InvalidMetadataError(
            f"metadata columns cannot form one table ({e}); give every column one value per document"
        ) from e


def _why(e: BaseException) -> str:
    """What went wrong converting metadata, with the fix."""
    if isinstance(e, OverflowError):
        return "it holds an integer outside the int64 range; store such numbers as strings or floats"
    if isinstance(e, UnicodeEncodeError):
        return surrogate_message(e, "value")
    return f"{e}; give each column values of one type (e.g. all str or all int)"


def new_metadata_fields(meta: pa.Table | None) -> list[pa.Field]:
    """The metadata fields of a new docs table (the first add): every column needs a known type."""
    if meta is None:
        return []
    for f in meta.schema:
        if pa.types.is_null(f.type):
            raise InvalidMetadataError(
                f"metadata column {f.name!r} holds only nulls in the first add, so its type is unknown; pass an "
                f"Arrow table with a typed column (e.g. pa.array([None, ...], pa.string())) or leave it out"
            )
    return list(meta.schema)


def conform_metadata(meta: pa.Table | None, fields: list[pa.Field], n: int) -> list[pa.Array]:
    """Metadata columns in the docs table's order and types; absent columns become nulls. Unknown columns, and
    struct fields the index's column lacks, are errors (never silently dropped)."""
    names = [f.name for f in fields]
    if meta is not None:
        unknown = [c for c in meta.column_names if c not in names]
        if unknown:
            raise InvalidMetadataError(
                f"metadata column {unknown[0]!r} is not in this index; its metadata columns are "
                f"{names or '(none)'}, fixed by the first add: drop the column or build a new index"
            )
    out = []
    for f in fields:
        if meta is None or f.name not in meta.column_names:
            out.append(pa.nulls(n, f.type))
            continue
        col = meta.column(f.name).combine_chunks()
        if col.type != f.type:
            extra = _extra_field(col.type, f.type, f.name)
            if extra is not None:
                raise InvalidMetadataError(
                    f"metadata field {extra!r} is not in this index's column {f.name!r} (type {f.type}), fixed by "
                    "the first add: drop the field or build a new index"
                )
            try:
                col = col.cast(f.type)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError) as e:
                raise InvalidMetadataError(
                    f"metadata column {f.name!r} has type {col.type} but the index stores {f.type}; "
                    f"convert it first ({e})"
                ) from e
        out.append(col)
    return out


def _extra_field(src: pa.DataType, dst: pa.DataType, path: str) -> str | None:
    """The dotted path of the first struct field of ``src`` that ``dst`` lacks (Arrow's cast drops it)."""
    if pa.types.is_struct(src) and pa.types.is_struct(dst):
        for i in range(src.num_fields):
            name = src.field(i).name
            j = dst.get_field_index(name)
            if j < 0:
                return f"{path}.{name}"
            deeper = _extra_field(src.field(i).type, dst.field(j).type, f"{path}.{name}")
            if deeper is not None:
                return deeper
    elif hasattr(src, "value_type") and hasattr(dst, "value_type"):  # list, large_list, fixed_size_list
        return _extra_field(src.value_type, dst.value_type, path + "[]")
    return None


# ------------------------------------------------------------------------------ packed binary columns
def binary_column(data: np.ndarray, row_offsets: np.ndarray) -> pa.Array:
    """Packed bytes ``data`` split at byte ``row_offsets`` (n + 1,) -> large_binary array (zero copy)."""
    data = np.ascontiguousarray(data).view(np.uint8).reshape(-1)
    offs = np.ascontiguousarray(row_offsets, dtype=np.int64)
    return pa.LargeBinaryArray.from_buffers(
        pa.large_binary(), len(offs) - 1, [None, pa.py_buffer(offs), pa.py_buffer(data)]
    )


def list_int32_column(values: np.ndarray, row_offsets: np.ndarray) -> pa.Array:
    """int32 ``values`` split at ``row_offsets`` -> list<int32> array."""
    return pa.ListArray.from_arrays(
        pa.array(np.asarray(row_offsets, np.int32)), pa.array(np.asarray(values, np.int32), pa.int32())
    )


def binary_values(col: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """The concatenated bytes of a (large_)binary column as one uint8 array (rows in order)."""
    chunks = col.chunks if isinstance(col, pa.ChunkedArray) else [col]
    parts = []
    for c in chunks:
        if len(c) == 0:
            continue
        if c.null_count:
            raise IndexCorruptedError("the docs table has null codes; the index is corrupted: rebuild it")
        _, obuf, dbuf = c.buffers()
        odt = np.int64 if pa.types.is_large_binary(c.type) else np.int32
        offs = np.frombuffer(obuf, odt)[c.offset : c.offset + len(c) + 1]
        parts.append(np.frombuffer(dbuf, np.uint8)[int(offs[0]) : int(offs[-1])])
    return np.concatenate(parts) if parts else np.zeros(0, np.uint8)


def list_values(col: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """The flattened values of a list<int32> column (rows in order)."""
    chunks = col.chunks if isinstance(col, pa.ChunkedArray) else [col]
    parts = [c.flatten().to_numpy(zero_copy_only=False) for c in chunks if len(c)]
    return np.concatenate(parts).astype(np.int32, copy=False) if parts else np.zeros(0, np.int32)


_UNKNOWN_FIELD = re.compile(r"No field named ([^\s.,]+)")


def unknown_field(err: BaseException) -> str | None:
    """The column name in a Lance/DataFusion "No field named x" error, else None."""
    m = _UNKNOWN_FIELD.search(str(err))
    return m.group(1).strip("\"'`") if m else None
