"""Integrity of an index's files: per-row checksums, per-version records, cheap checks on open and at snapshot
load, and the full :func:`verify`.

Three layers (docs/LAYOUT.md, "Integrity"):

* **Row checksums** (atomic with the data): every docs row stores ``row_checksum``, a 64-bit hash of its id,
  ``n_tokens``, ``n_vectors``, codes and terms, written in the same Lance commit as the row (so compaction,
  deletes and upserts keep it right). Loading a snapshot (the first search of a version) recomputes them.
* **Version records** (``integrity/<table>-<version>.json``, one per committed version of ``docs.lance`` and
  ``codec.lance``): the version's manifest and every file it references, with size and sha256, and for docs
  the row count and the sum of its row checksums (so a deleted, restored or corrupted deletion file changes
  it). Written right after each commit by :func:`record` (a commit and its record cannot be one atomic step:
  a writer killed in between leaves the newest version(s) unrecorded, which is allowed above ``HEAD``).
* **HEAD** (``integrity/HEAD.json``): the newest recorded version of each table, rewritten after the
  records. A table whose latest version is below HEAD lost committed versions (a deleted or rolled-back
  manifest, a deleted table); a recorded version whose record is gone is a deleted record.

Open checks HEAD, the opened version's record, its manifest's sha256 and every referenced file's size (no
data file is read); the snapshot load checks the row checksums, row count and row-checksum sum;
:func:`verify` hashes every file of every version. All failures raise IndexCorruptedError.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import sys
import time
from typing import Any

import numba
import numpy as np
import pyarrow as pa

from ..exceptions import IndexCorruptedError, MvstoreError
from ._fs import Location, at
from ._layout import (
    CHECKSUMMED,
    CODES,
    ID,
    N_TOKENS,
    N_VECTORS,
    ROW_CHECKSUM,
    STATE_KEY,
    TERMS,
    checksum_column_of,
)

INTEGRITY = "integrity"
HEAD = "HEAD.json"
TABLES = ("docs.lance", "codec.lance")
_FIX = "restore the index from a backup or rebuild it (run `mvstore verify <index>` for a full report)"
_U64 = np.uint64


def lance_failure(e: BaseException) -> bool:
    """Whether ``e`` is how Lance reports an unreadable file: any Exception (OSError, ArrowInvalid, ...) but
    mvstore's own (e.g. VersionCleanedUpError, already precise), or a Rust panic (pyo3's PanicException derives
    from BaseException and is not importable)."""
    return (isinstance(e, Exception) and not isinstance(e, MvstoreError)) or type(
        e
    ).__name__ == "PanicException"


def corrupt_file_error(e: BaseException) -> bool:
    """Whether a Lance read failed on a damaged file (a panic, or Lance's own "corrupt file" report) rather
    than on the request (e.g. a bad filter)."""
    return type(e).__name__ == "PanicException" or "corrupt file" in str(e).lower()


def read_or_corrupted(fn: Any, what: str) -> Any:
    """``fn()`` (a Lance read); a failure is IndexCorruptedError naming ``what``."""
    try:
        return fn()
    except BaseException as e:
        if not lance_failure(e):
            raise
        raise IndexCorruptedError(f"{what} cannot be read ({str(e).splitlines()[0][:200]}); {_FIX}") from e


# ------------------------------------------------------------------------------------------ row checksums
@numba.njit(cache=True, nogil=True, inline="always")
def _mix(h, w):
    # xor then an invertible multiply-xorshift: for a fixed h each w gives a different result and vice versa,
    # so a change confined to one 8-byte word of one row always changes that row's checksum
    h = (h ^ w) * _U64(0x9E3779B97F4A7C15)
    return h ^ (h >> _U64(29))


@numba.njit(cache=True, nogil=True)
def _hash_bytes(h, buf, words, a, b):
    """Mix bytes ``buf[a:b]`` into ``h`` as little-endian 8-byte words, then the tail and the length. ``words``
    is ``buf`` viewed as uint64 (empty when the buffer is not 8-byte aligned): whole words are read from it
    when ``a`` is a multiple of 8, about 5x faster than assembling them from bytes."""
    i = a
    if len(words) and (a & 7) == 0:
        j = a >> 3
        while i + 8 <= b:
            h = _mix(h, words[j])
            j += 1
            i += 8
    while i + 8 <= b:
        w = _U64(0)
        for k in range(8):
            w |= _U64(buf[i + k]) << _U64(8 * k)
        h = _mix(h, w)
        i += 8
    w = _U64(0)
    s = _U64(0)
    while i < b:
        w |= _U64(buf[i]) << s
        s += _U64(8)
        i += 1
    h = _mix(h, w)
    return _mix(h, _U64(b - a))


@numba.njit(cache=True, nogil=True)
def _row_checksums(
    int_ids, id_bytes, id_offs, n_tokens, n_vectors, codes, codes64, code_offs, terms, terms64, term_offs
):
    n = len(n_tokens)
    out = np.empty(n, np.uint64)
    for r in range(n):
        h = _U64(0x6D7673746F726531)  # "mvstore1"
        if len(int_ids):
            h = _mix(h, _U64(int_ids[r]))
        else:
            h = _hash_bytes(h, id_bytes, codes64[:0], id_offs[r], id_offs[r + 1])  # byte-wise: ids are short
        h = _mix(h, _U64(n_tokens[r]))
        h = _mix(h, _U64(n_vectors[r]))
        h = _hash_bytes(h, codes, codes64, code_offs[r], code_offs[r + 1])
        h = _hash_bytes(h, terms, terms64, 4 * term_offs[r], 4 * term_offs[r + 1])
        out[r] = h ^ (h >> _U64(31))
    return out


def _words(buf: np.ndarray) -> np.ndarray:
    """``buf`` (uint8) as native uint64 words when that equals little-endian reading and it is aligned."""
    if sys.byteorder != "little" or buf.ctypes.data % 8:
        return np.zeros(0, np.uint64)
    return buf[: len(buf) // 8 * 8].view(np.uint64)


def _var_bytes(arr: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """(data bytes, int64 offsets into them, n + 1) of a (large_)binary or (large_)string array."""
    _, obuf, dbuf = arr.buffers()[:3]
    large = pa.types.is_large_binary(arr.type) or pa.types.is_large_string(arr.type)
    offs = np.frombuffer(obuf, np.int64 if large else np.int32)[arr.offset : arr.offset + len(arr) + 1]
    data = np.frombuffer(dbuf, np.uint8) if dbuf is not None else np.zeros(0, np.uint8)
    return data, offs.astype(np.int64)


def row_checksums(batch: pa.RecordBatch | pa.Table) -> np.ndarray:
    """uint64 checksum of each row's id, n_tokens, n_vectors, codes and terms (the columns search reads)."""
    parts = []
    for rb in batch.to_batches() if isinstance(batch, pa.Table) else [batch]:
        if rb.num_rows == 0:
            continue
        ids = rb.column(ID)
        if pa.types.is_integer(ids.type):
            int_ids, id_bytes, id_offs = (
                ids.to_numpy(zero_copy_only=False).astype(np.int64),
                np.zeros(0, np.uint8),
                np.zeros(1, np.int64),
            )
        else:
            int_ids = np.zeros(0, np.int64)
            id_bytes, id_offs = _var_bytes(ids)
        codes, code_offs = _var_bytes(rb.column(CODES))
        terms_col = rb.column(TERMS)
        term_offs = terms_col.offsets.to_numpy().astype(np.int64)
        terms = terms_col.values.to_numpy(zero_copy_only=False).astype(np.int32, copy=False).view(np.uint8)
        parts.append(
            _row_checksums(
                int_ids,
                id_bytes,
                id_offs,
                rb.column(N_TOKENS).to_numpy(zero_copy_only=False).astype(np.int64),
                rb.column(N_VECTORS).to_numpy(zero_copy_only=False).astype(np.int64),
                codes,
                _words(codes),
                code_offs,
                terms,
                _words(terms),
                term_offs,
            )
        )
    return np.concatenate(parts) if parts else np.zeros(0, np.uint64)


def checksum_column(cols: dict[str, pa.Array]) -> pa.Array:
    """The ``row_checksum`` column of docs columns about to be written."""
    return pa.array(row_checksums(pa.RecordBatch.from_pydict({n: cols[n] for n in CHECKSUMMED})), pa.uint64())


def _sum_hex(total: int) -> str:
    """A checksum sum as a record holds it: modulo 2**64, 16 hex digits."""
    return format(total % 2**64, "016x")


def _row_sum(checksums: np.ndarray) -> str:
    return _sum_hex(row_sum(checksums))


def check_rows(root: Any, version: int, tbl: pa.Table) -> None:
    """At snapshot load: recompute the row checksums of ``tbl`` (a whole docs version read with
    ``row_checksum``) and compare them, the row count and their sum with what was stored and recorded."""
    check_record(root, version, checked_checksums(version, tbl))


def checked_checksums(version: int, tbl: pa.Table) -> np.ndarray:
    """The stored row checksums of ``tbl`` (docs rows read with ``row_checksum``), each checked against the
    row's recomputed one."""
    stored = tbl.column(ROW_CHECKSUM)
    if stored.null_count:
        raise IndexCorruptedError(
            f"docs table version {version} has {stored.null_count} row(s) without a row checksum (written "
            f"outside mvstore?); {_FIX}"
        )
    stored = stored.to_numpy().astype(np.uint64, copy=False)
    bad = np.flatnonzero(row_checksums(tbl) != stored)
    if len(bad):
        raise IndexCorruptedError(
            f"docs table version {version}: {len(bad)} row(s) do not match their checksum (first at row "
            f"{int(bad[0])}): a data file is corrupted; {_FIX}"
        )
    return stored


def row_sum(checksums: np.ndarray) -> int:
    """The sum of row checksums modulo 2**64 (what a version's record holds, in hex)."""
    return int(checksums.sum(dtype=np.uint64))


def record_agrees(root: Any, version: int, rows: int, total: int) -> bool | None:
    """Whether ``rows`` and ``total`` (:func:`row_sum` of their checksums) are a version's row count and
    checksum sum as its record holds them; None when it has no record (a version above HEAD)."""
    rec = read_record(root, "docs.lance", version)
    if rec is None:
        return None
    return bool(rec["rows"] == rows and rec["row_sum"] == _sum_hex(total))


def check_record(root: Any, version: int, stored: np.ndarray) -> None:
    """The row count and checksum sum of a version's rows (``stored``: their checksums) against its record,
    or IndexCorruptedError (no record: accepted)."""
    if record_agrees(root, version, len(stored), row_sum(stored)) is False:
        rec = read_record(root, "docs.lance", version) or {}
        raise IndexCorruptedError(
            f"docs table version {version} reads {len(stored)} rows but its record says {rec['rows']} (or the "
            f"rows differ): a deletion file or manifest is corrupted; {_FIX}"
        )


# ----------------------------------------------------------------------------------------- codec state
def state_digest(arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> str:
    """sha256 of a codec state's arrays (name, dtype, shape, bytes) and its meta (without the digest)."""
    h = hashlib.sha256()
    for name in sorted(arrays):
        a = np.ascontiguousarray(arrays[name])
        h.update(f"{name}|{a.dtype.str}|{list(a.shape)}|".encode())
        h.update(a.tobytes())
    h.update(json.dumps({k: v for k, v in meta.items() if k != "checksum"}, sort_keys=True).encode())
    return h.hexdigest()


def check_state(sid: int, arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> None:
    if meta.get("checksum") != state_digest(arrays, meta):
        raise IndexCorruptedError(
            f"codec state {sid} does not match its checksum (codec.lance is corrupted); {_FIX}"
        )


# ------------------------------------------------------------------------------------- records and HEAD
def _digest(obj: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()


def _write_json(loc: Location, rel: str, obj: dict[str, Any]) -> None:
    """Atomically (:meth:`Location.write_atomic`), with a checksum of the content."""
    obj = {**obj, "checksum": _digest(obj)}
    loc.write_atomic(rel, json.dumps(obj, sort_keys=True).encode())


def _read_json(loc: Location, rel: str, what: str) -> dict[str, Any]:
    try:
        obj = json.loads(loc.read(rel))
        ok = isinstance(obj, dict) and obj.pop("checksum", None) == _digest(obj)
    except (OSError, ValueError) as e:
        raise IndexCorruptedError(f"{what} {loc.table(rel)} cannot be read ({e}); {_FIX}") from e
    if not ok:
        raise IndexCorruptedError(f"{what} {loc.table(rel)} does not match its checksum; {_FIX}")
    return obj


def _record_path(table: str, version: int) -> str:
    """The record of a table version, relative to the index root."""
    return f"{INTEGRITY}/{table.split('.')[0]}-{version:020d}.json"


def init(root: Any) -> None:
    """At create: the integrity directory and a HEAD with nothing recorded."""
    loc = at(root)
    loc.makedirs(INTEGRITY)
    _write_json(loc, f"{INTEGRITY}/{HEAD}", {t: 0 for t in TABLES})


def read_head(root: Any) -> dict[str, Any]:
    loc = at(root)
    rel = f"{INTEGRITY}/{HEAD}"
    if not loc.exists(rel):
        raise IndexCorruptedError(f"{loc.table(rel)} is missing (every index has one from create); {_FIX}")
    head = _read_json(loc, rel, "integrity head")
    if not all(isinstance(head.get(t), int) for t in TABLES):
        raise IndexCorruptedError(f"integrity head {loc.table(rel)} is malformed; {_FIX}")
    return head


def read_record(root: Any, table: str, version: int) -> dict[str, Any] | None:
    loc = at(root)
    rel = _record_path(table, version)
    if not loc.exists(rel):
        return None
    rec = _read_json(loc, rel, "integrity record")
    if rec.get("version") != version or not isinstance(rec.get("files"), dict):
        raise IndexCorruptedError(f"integrity record {loc.table(rel)} is malformed; {_FIX}")
    return rec


def recorded_versions(root: Any, table: str) -> list[int]:
    prefix = table.split(".")[0] + "-"
    return sorted(
        int(f[len(prefix) : -5])
        for f in at(root).listdir(INTEGRITY)
        if f.startswith(prefix) and f.endswith(".json") and f[len(prefix) : -5].isdigit()
    )


def _has_manifest(loc: Location, table: str, version: int) -> bool:
    try:
        manifest_path(loc, table, version)
    except IndexCorruptedError:
        return False
    return True


def manifest_path(root: Any, table: str, version: int) -> str:
    """Path of a Lance version's manifest relative to its table (v2 naming: u64::MAX - version; v1: the
    version)."""
    loc = at(root)
    for name in (f"{(1 << 64) - 1 - version:020d}.manifest", f"{version}.manifest"):
        if loc.exists(f"{table}/_versions/{name}"):
            return f"_versions/{name}"
    raise IndexCorruptedError(f"the manifest of version {version} of {loc.table(table)} is missing; {_FIX}")


def version_files(loc: Location, table: str, ds: Any) -> list[str]:
    """Relative paths (to the table) of every file a checked-out Lance version of ``table`` reads: data,
    deletion, index (the full-text index of ``create_fts_index``, listed through ``loc``) and transaction
    files."""
    out = []
    for fr in ds.get_fragments():
        m = fr.metadata
        out += [f"data/{f.path}" for f in m.files]
        if m.deletion_file is not None:
            out.append(m.deletion_file.path(m.id))
    for index in ds.describe_indices():
        for seg in index.segments:
            out += [f"_indices/{seg.uuid}/{f}" for f in loc.listdir(f"{table}/_indices/{seg.uuid}")]
    with contextlib.suppress(Exception):  # a version written without a transaction file has none to check
        t = ds.read_transaction(ds.version)
        if t is not None:
            out.append(f"_transactions/{t.read_version}-{t.uuid}.txn")
    return sorted(set(out))


def fragment_keys(ds: Any) -> list[tuple[int, Any, Any]]:
    """``(fragment id, data key, deletion key)`` of each fragment of a version, in manifest (row) order: the data
    key changes when a fragment's rows are rewritten, the deletion key when rows of it are deleted."""
    out = []
    for fr in ds.get_fragments():
        m = fr.metadata
        d = m.deletion_file
        data = (tuple(f.path for f in m.files), int(m.physical_rows), repr(getattr(m, "overlays", None)))
        out.append(
            (int(m.id), data, None if d is None else (d.read_version, d.id, d.file_type, d.num_deleted_rows))
        )
    return out


def _fragment_sums(ds: Any, col: str, before: dict[str, list]) -> dict[str, list]:
    """Per fragment of ``ds``: ``[key, live rows, checksum sum (hex)]``, taken from ``before`` (the previous
    record's) for a fragment whose files and deletions are unchanged, else read: a write reads the checksums of
    the fragments it touched, not of the whole table."""
    out = {}
    for fid, data, dele in fragment_keys(ds):
        key = json.loads(json.dumps([data, dele], default=str))
        old = before.get(str(fid))
        if old is None or old[0] != key:
            tbl = ds.get_fragment(fid).to_table(columns=[col])
            sums = tbl.column(col).to_numpy().astype(np.uint64)
            old = [key, len(sums), _row_sum(sums)]
        out[str(fid)] = old
    return out


def _make_record(
    loc: Location, table: str, ds: Any, known: dict[str, list], sums: dict[str, list]
) -> dict[str, Any]:
    v = ds.version
    files = {}
    for rel in version_files(loc, table, ds):
        try:
            size = loc.size(f"{table}/{rel}")
        except FileNotFoundError:
            continue  # e.g. a transaction file Lance did not write
        old = known.get(rel)
        files[rel] = old if old is not None and old[0] == size else [size, loc.sha256(f"{table}/{rel}")]
    mpath = manifest_path(loc, table, v)
    mfull = f"{table}/{mpath}"
    rec: dict[str, Any] = {
        "version": v,
        "manifest": [mpath, loc.size(mfull), loc.sha256(mfull)],
        "files": files,
    }
    col = checksum_column_of(ds.schema)
    if col is not None:
        frags = _fragment_sums(ds, col, sums)
        rec["rows"] = sum(f[1] for f in frags.values())
        rec["row_sum"] = _sum_hex(sum(int(f[2], 16) for f in frags.values()))
        rec["fragments"] = frags
    return rec


def record(root: Any) -> None:
    """After a commit (the writer holds the write lock): record every not-yet-recorded version of both tables,
    drop records of versions cleanup removed, then move HEAD. Idempotent; a crash anywhere leaves at worst
    unrecorded versions above HEAD (accepted) or stale records below the oldest version (ignored)."""
    loc = at(root)
    head = read_head(loc)
    new_head = dict(head)
    for table in TABLES:
        latest = _record_table(loc, table, head[table])
        if latest is not None:
            new_head[table] = latest
    if loc.local:  # temp files of killed writers (an object store has none: a PUT is whole or absent)
        _remove_stale_temp_files(loc)
    if new_head != head:
        _write_json(loc, f"{INTEGRITY}/{HEAD}", new_head)


def _record_table(loc: Location, table: str, head_version: int) -> int | None:
    """Record every version of ``table`` above its newest record and drop the records of versions cleanup
    removed -> its latest version (None when it has none)."""
    live = versions_on_disk(loc, table)
    if not live:
        return None
    if head_version > live[-1]:
        raise IndexCorruptedError(
            f"{table} ends at version {live[-1]} but version {head_version} was committed; {_FIX}"
        )
    ds = loc.dataset(table, version=live[-1])
    have = recorded_versions(loc, table)
    known: dict[str, list] = {}
    sums: dict[str, list] = {}
    if have:
        prev = read_record(loc, table, have[-1]) or {}
        known, sums = prev.get("files", {}), prev.get("fragments", {})
    for v in live:
        if v > (have[-1] if have else 0):
            rec = _make_record(loc, table, ds.checkout_version(v), known, sums)
            _write_json(loc, _record_path(table, v), rec)
            known, sums = rec["files"], rec.get("fragments", {})
    for v in have:
        if v < live[0]:  # its version was cleaned up
            loc.remove(_record_path(table, v))
    return live[-1]


def _remove_stale_temp_files(loc: Location) -> None:
    """Remove temp files of the integrity directory older than 10 minutes (left by killed writers)."""
    for f in loc.listdir(INTEGRITY):
        rel = f"{INTEGRITY}/{f}"
        with contextlib.suppress(FileNotFoundError):
            if f.endswith(".tmp") and time.time() - loc.mtime(rel) > 600:
                loc.remove(rel)


# -------------------------------------------------------------------------------------------- open check
def versions_on_disk(root: Any, table: str) -> list[int]:
    """The committed versions of a Lance table by its manifest names, listed now (no manifest is read)."""
    out = []
    for f in at(root).listdir(f"{table}/_versions"):
        stem = f[: -len(".manifest")]
        if f.endswith(".manifest") and stem.isdigit():
            out.append((1 << 64) - 1 - int(stem) if len(stem) == 20 else int(stem))  # v2 names: u64::MAX - v
    return sorted(out)


def latest_on_disk(root: Any, table: str) -> int:
    """The newest committed version of a Lance table (0 if none), listed now."""
    return max(versions_on_disk(root, table), default=0)


def check_open(root: Any, table: str, version: int | None) -> None:
    """Cheap checks when a table is opened: no committed version is missing; at ``version`` (None or 0: only
    that) the version's record, its manifest's sha256 and every referenced file's presence and size."""
    loc = at(root)
    head = read_head(loc)
    # listed after HEAD was read: a writer records and moves HEAD only after its commit, so a concurrent
    # write can never make HEAD look ahead of the table
    latest = latest_on_disk(loc, table)
    if head[table] > latest:
        what = "is missing entirely" if latest == 0 else f"ends at version {latest}"
        raise IndexCorruptedError(
            f"{table} {what} but version {head[table]} was committed: its newest version(s) were deleted or "
            f"rolled back; {_FIX}"
        )
    if not version:
        return
    rec = read_record(loc, table, version)
    if rec is None:
        # above HEAD: committed by a writer killed before it could record it (the row checksums still apply);
        # without its manifest: cleaned up meanwhile by another process (reading it fails on its own)
        if version <= head[table] and _has_manifest(loc, table, version):
            raise IndexCorruptedError(f"the integrity record of {table} version {version} is missing; {_FIX}")
        return
    mpath, msize, msha = rec["manifest"]
    problems = _check_file(loc, table, mpath, msize, msha)
    for rel, (size, _) in rec["files"].items():
        problems += _check_file(loc, table, rel, size, None)
    if problems:
        raise IndexCorruptedError(f"{table} version {version}: {'; '.join(problems[:5])}; {_FIX}")


def _check_file(loc: Location, table: str, rel: str, size: int, sha: str | None) -> list[str]:
    path = f"{table}/{rel}"
    try:
        actual = loc.size(path)
    except OSError:
        return [f"{rel} is missing"]
    if actual != size:
        return [f"{rel} has {actual} bytes, {size} were written"]
    if sha is not None and loc.sha256(path) != sha:
        return [f"{rel} does not match its sha256"]
    return []


# ---------------------------------------------------------------------------------------------- verify
def _finding(e: BaseException) -> str:
    return str(e).replace("; " + _FIX, "")


def _verify_rows(
    root: Location, ds: Any, v: int, rec: dict | None, *, latest: bool, states: set[int]
) -> list[str]:
    """Rows of docs version ``v`` against its record (all row checksums recomputed for the latest version);
    adds the codec state it uses to ``states``."""
    try:
        old = ds.checkout_version(v)
        states.add(int((old.schema.metadata or {}).get(STATE_KEY, b"-1")))
        if latest:
            check_rows(
                root,
                v,
                old.to_table(columns=[*CHECKSUMMED, ROW_CHECKSUM]),
            )
        elif rec is not None:
            col = checksum_column_of(old.schema) or ROW_CHECKSUM
            sums = old.to_table(columns=[col]).column(col).to_numpy().astype(np.uint64)
            if rec.get("rows") != len(sums) or rec.get("row_sum") != _row_sum(sums):
                return [f"docs.lance version {v}: its rows differ from its record"]
    except IndexCorruptedError as e:
        return [_finding(e)]
    except BaseException as e:
        if not lance_failure(e):
            raise
        return [f"docs.lance version {v} cannot be read: {str(e).splitlines()[0][:200]}"]
    return []


class _Verification:
    """What :func:`verify` found so far: problems, notes, the files hashed (each once: data files are shared
    by versions) and the codec states the docs versions use."""

    def __init__(self, loc: Location):
        self.loc = loc
        self.problems: list[str] = []
        self.notes: list[str] = []
        self.n_files = self.n_bytes = 0
        self.hashed: dict[str, tuple[str, list[str]]] = {}
        self.states: set[int] = set()

    def table(self, table: str, head_version: int) -> None:
        """Every version of ``table`` and every record of it."""
        opened = self._open(table)
        if opened is None:
            return
        ds, live = opened
        if head_version > (live[-1] if live else 0):
            self.problems.append(
                f"{table}: version {head_version} was committed but the table ends at "
                f"{live[-1] if live else 'nothing'} (versions deleted or rolled back)"
            )
        for v in recorded_versions(self.loc, table):
            if live and v not in live:
                self._unlisted(table, v, live)
        for v in live:
            try:
                rec = read_record(self.loc, table, v)
            except IndexCorruptedError as e:
                self.problems.append(_finding(e))
                continue
            self._version(table, v, rec, head_version)
            if table == "docs.lance":
                self.problems += _verify_rows(self.loc, ds, v, rec, latest=v == live[-1], states=self.states)

    def _open(self, table: str) -> tuple[Any, list[int]] | None:
        """``(dataset, its versions)`` of ``table`` (``(None, [])``: no version); None when it cannot be opened."""
        if not versions_on_disk(self.loc, table):
            return None, []
        try:
            ds = self.loc.dataset(table)
            return ds, [v["version"] for v in ds.versions()]
        except BaseException as e:
            if not lance_failure(e):
                raise
            self.problems.append(f"{table} cannot be opened: {str(e).splitlines()[0][:200]}")
            return None

    def _unlisted(self, table: str, v: int, live: list[int]) -> None:
        """A recorded version ``v`` the table does not list."""
        if v > live[0]:
            self.problems.append(f"{table}: the manifest of recorded version {v} is missing")
            return
        # below the oldest version: cleaned up (and the record's removal interrupted) unless the files
        # cleanup deletes with a version, its transaction file, are still there
        rec = read_record(self.loc, table, v)
        txn = [r for r in (rec or {}).get("files", {}) if r.startswith("_transactions/")]
        if any(self.loc.exists(f"{table}/{r}") for r in txn):
            self.problems.append(
                f"{table}: the manifest of version {v} is missing but its files remain (not a cleanup)"
            )
        else:
            self.notes.append(f"{table}: stale record of cleaned-up version {v}")

    def _version(self, table: str, v: int, rec: dict | None, head_version: int) -> None:
        """The files of version ``v`` against its record ``rec`` (None: it has none)."""
        if rec is None:
            if v > head_version:
                self.notes.append(
                    f"{table} version {v} is not recorded (its writer was interrupted after committing)"
                )
            else:
                self.problems.append(f"{table} version {v}: its integrity record is missing")
            return
        mpath, msize, msha = rec["manifest"]
        self.problems += [
            f"{table} version {v}: {p}" for p in _check_file(self.loc, table, mpath, msize, msha)
        ]
        for rel, (size, sha) in rec["files"].items():
            key = f"{table}/{rel}"
            if key not in self.hashed:  # data files are shared by versions: hash each once
                self.hashed[key] = (sha, _check_file(self.loc, table, rel, size, sha))
                self.n_files, self.n_bytes = self.n_files + 1, self.n_bytes + size
            first_sha, found = self.hashed[key]
            self.problems += [f"{table} version {v}: {p}" for p in found]
            if first_sha != sha:
                self.problems.append(f"{table} version {v}: {rel} was recorded with two different checksums")


def verify(tables: Any) -> dict[str, Any]:
    """Check every file of every version of both tables against its recorded sha256, every docs version's
    rows against its record, the latest version's row checksums and every codec state's checksum. Returns a
    report; raises IndexCorruptedError listing every problem found."""
    from ._layout import read_manifest

    loc = tables.loc
    try:
        read_manifest(loc)
        head = read_head(loc)
    except IndexCorruptedError as e:
        raise IndexCorruptedError(f"verify: {e}") from None
    found = _Verification(loc)
    for table in TABLES:
        found.table(table, head[table])
    for sid in sorted(found.states):
        try:
            tables.states.reload(sid)
        except IndexCorruptedError as e:
            found.problems.append(_finding(e))
    if found.problems:
        raise IndexCorruptedError(
            f"the index at {loc.uri} is corrupted ({len(found.problems)} problem(s)):\n  - "
            + "\n  - ".join(found.problems)
            + "\nrestore it from a backup or rebuild it"
        )
    return {
        "ok": True,
        "files_checked": found.n_files,
        "bytes_checked": found.n_bytes,
        "states_checked": len(found.states),
        "notes": found.notes,
    }
