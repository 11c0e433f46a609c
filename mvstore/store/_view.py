"""One index version's read state (:class:`View`), the stage-2 code cache, ``where=`` column checks."""

from __future__ import annotations

import contextlib
import dataclasses
import re
import threading
from collections import OrderedDict
from collections.abc import Iterator
from typing import Any

import lance
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ..exceptions import (
    FilterError,
    IndexCorruptedError,
    InvalidDtypeError,
    MvstoreError,
    NotFittedError,
    VersionCleanedUpError,
)
from ..search.params import SearchParams
from ..search.postings import append_postings, build_postings
from ..search.searcher import make_searcher
from ..search.snapshot import AppendBuffer, Snapshot
from ._integrity import (
    check_record,
    checked_checksums,
    corrupt_file_error,
    fragment_keys,
    lance_failure,
    record_agrees,
    row_sum,
)
from ._layout import (
    CHECKSUMMED,
    CODES,
    DOCS,
    ID,
    INTERNAL_COLUMNS,
    N_TOKENS,
    N_VECTORS,
    ROW_CHECKSUM,
    TERMS,
    binary_values,
    first_duplicate,
    ids_numpy,
    list_values,
    unknown_field,
)
from ._state import CodecState

_SQL_WORDS = {
    "and", "or", "not", "in", "is", "null", "like", "ilike", "between", "true", "false", "cast", "as",
    "case", "when", "then", "else", "end", "date", "timestamp", "interval", "escape", "distinct", "from",
    "int", "integer", "bigint", "smallint", "tinyint", "float", "double", "real", "decimal", "varchar",
    "string", "text", "boolean", "bool", "any",
}  # fmt: skip
_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def _where_tokens(where: str) -> Iterator[tuple[str, str, str]]:
    """Split a SQL filter into ``(kind, text, raw)``: kind "literal" ('...', '' escapes a quote), "quoted"
    ("..." or `...`: a column name, doubled quote escapes it; text is the name), "column" (a bare name that
    is not a keyword or function), or "other" (numbers, keywords, functions, operators, spaces).

    Kept rather than leaving names to Lance: Lance reads a double-quoted name as a string (``"b" = 'x'`` is
    silently false there) and its unknown-column error lists Lance's and the index's internal columns; this
    lexer only finds names, Lance still parses and runs the filter."""
    i, n = 0, len(where)
    while i < n:
        c = where[i]
        if c in "'\"`":
            j = i + 1
            while j < n and not (where[j] == c and (j + 1 >= n or where[j + 1] != c)):
                j += 2 if where[j] == c else 1
            raw = where[i : j + 1]
            if c == "'":
                yield "literal", raw, raw
            else:
                yield "quoted", where[i + 1 : j].replace(c + c, c), raw
            i = j + 1
        elif c.isdigit():
            j = i
            while j < n and (where[j].isalnum() or where[j] in "._"):
                j += 1
            yield "other", where[i:j], where[i:j]
            i = j
        else:
            m = _IDENT.match(where, i)
            if not m:
                yield "other", c, c
                i += 1
                continue
            word, i = m.group(0), m.end()
            rest = where[i:].lstrip()
            is_col = word.lower() not in _SQL_WORDS and not rest.startswith("(")
            yield ("column" if is_col else "other"), word, word


def where_columns(where: str) -> list[str]:
    """Column names a SQL filter refers to (string literals, keywords and function names skipped).

    >>> where_columns("lang = 'en and x' AND year > 2020 OR lower(title) LIKE 'a%' AND \\"My Col\\" IS NULL")
    ['lang', 'year', 'title', 'My Col']
    """
    return list(dict.fromkeys(text for kind, text, _ in _where_tokens(where) if kind in ("column", "quoted")))


def lance_filter(where: str) -> str:
    """``where`` as Lance reads it: a double-quoted name (standard SQL, and how mvstore documents column names
    with spaces) becomes backtick-quoted, since Lance reads double quotes as a string literal.

    >>> print(lance_filter('"My Col" = ' + "'it''s \\"x\\"' AND `a b` > 1"))
    `My Col` = 'it''s "x"' AND `a b` > 1
    """
    return "".join(
        "`" + text.replace("`", "``") + "`" if kind == "quoted" else raw
        for kind, text, raw in _where_tokens(where)
    )


#: an incrementally derived snapshot is loaded in full again once its deleted rows pass this fraction of its rows
MAX_DEAD_FRACTION = 0.25
#: rows per batch of a bounded-memory full load
_BOUNDED_BATCH = 8192
#: the columns a snapshot reads from the docs table
_SNAPSHOT_COLUMNS = [*CHECKSUMMED, ROW_CHECKSUM]


def _present(values: np.ndarray, within: np.ndarray) -> np.ndarray:
    """Whether each of ``values`` is in ``within`` (ascending): binary search, no sort of either.

    >>> _present(np.array([1, 4, 9], np.uint64), np.array([1, 2, 9], np.uint64)).tolist()
    [True, False, True]
    """
    pos = np.searchsorted(within, values)
    ok = pos < len(within)
    ok[ok] = within[pos[ok]] == values[ok]
    return ok


def _mask_written(
    base: _Loaded,
    w: Written | None,
    changed: list[tuple[int, Any, Any]],
    removed: list[int],
    live: np.ndarray,
) -> bool:
    """Mask in ``live`` the rows of ``base`` that hold the ids ``w`` deleted, when that accounts for the
    deletions of every fragment in ``changed`` (its live rows, physical rows less the manifest's deletion
    count), empties each ``removed`` fragment (Lance drops a fragment whose rows are all deleted) and touches
    no other fragment; False, ``live`` untouched, when it does not (the caller reads the version)."""
    if w is None:
        return False
    ids = w.deleted.astype(object) if w.deleted.dtype.kind == "U" else w.deleted
    sid = base.sorted_ids
    pos = np.searchsorted(sid, ids)
    found = pos < len(sid)
    found[found] = sid[pos[found]] == ids[found]
    dead = np.zeros(len(live), bool)
    dead[base.sorted_rows[pos[found]]] = True
    now = live & ~dead
    accounted = 0
    for f, data, dele in changed:
        n_deleted = 0 if dele is None else dele[3]
        rows = base.rows_of_fragment(f)
        if n_deleted is None or int(np.count_nonzero(now[rows])) != data[1] - n_deleted:
            return False
        accounted += int(np.count_nonzero(dead[rows]))
    for f in removed:
        rows = base.rows_of_fragment(f)
        if np.count_nonzero(now[rows]):
            return False  # a fragment removed with live rows: a compaction, not this write
        accounted += int(np.count_nonzero(dead[rows]))
    if accounted != int(np.count_nonzero(dead)):
        return False  # a deleted row in a fragment whose deletions did not change
    live[:] = now
    return True


def _fragment_rows(fr: Any, skip: int) -> pa.Table:
    """The snapshot columns and row addresses of a fragment's rows after its first ``skip`` live ones. A fragment
    without deleted rows is read by offset (``take``: about 4x cheaper than a scan for the few rows of one
    write); its rows' addresses are ``fragment id << 32 | offset``."""
    m = fr.metadata
    if m.deletion_file is not None:
        return fr.to_table(columns=_SNAPSHOT_COLUMNS, with_row_address=True, offset=skip or None)
    offs = np.arange(skip, int(m.physical_rows), dtype=np.uint64)
    tbl = fr.take(offs.astype(np.int64).tolist(), columns=_SNAPSHOT_COLUMNS)
    return tbl.append_column("_rowaddr", pa.array((np.uint64(m.id) << np.uint64(32)) | offs, pa.uint64()))


@dataclasses.dataclass
class _Loaded:
    """A built snapshot and what deriving a later version's snapshot from it needs (:meth:`View._derive`)."""

    snapshot: Snapshot
    state_id: int
    #: fragment id -> (data key, deletion key) of this version (:func:`fragment_keys`), and the ids in order
    frags: dict[int, tuple[Any, Any]]
    order: list[int]
    #: per row: its Lance row address and stored checksum; row addresses sorted and the rows in that order
    rowaddr: np.ndarray
    checksums: np.ndarray
    rowaddr_sorted: np.ndarray
    rowaddr_order: np.ndarray
    #: the ids of the live rows, sorted (the duplicate check of appended rows), and the row of each
    sorted_ids: np.ndarray
    sorted_rows: np.ndarray
    #: the live rows' count and checksum sum (:func:`~mvstore.store._integrity.row_sum`), what the record holds
    n_live: int
    live_sum: int
    #: append storage behind the per-row and per-vector arrays, by name
    buffers: dict[str, AppendBuffer]
    #: rows kept in place because a compaction of the table's tail rewrote them (see :meth:`View._derive`)
    moved: int = 0

    def rows_of_fragment(self, fid: int) -> np.ndarray:
        """Snapshot rows stored in fragment ``fid`` (ascending row address)."""
        lo, hi = np.searchsorted(self.rowaddr_sorted, np.array([fid << 32, (fid + 1) << 32], np.uint64))
        return self.rowaddr_order[lo:hi]


class CodeCache:
    """The stage-2 codes a bounded-memory Index (``open(uri, memory="bounded")``) has read, shared by its
    versions: each document's codes under its Lance row address (an address never names another row, and a
    row is never rewritten in place), the least recently used dropped once they pass ``limit`` bytes."""

    def __init__(self, limit: int):
        self.limit = int(limit)
        self.bytes = 0
        self.hits = self.misses = 0
        self._rows: OrderedDict[int, np.ndarray] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, keys: list[int]) -> list[np.ndarray | None]:
        with self._lock:
            out = [self._rows.get(k) for k in keys]
            for k, v in zip(keys, out):
                if v is not None:
                    self._rows.move_to_end(k)
            n_hit = sum(v is not None for v in out)
            self.hits += n_hit
            self.misses += len(keys) - n_hit
            return out

    def put(self, keys: list[int], values: list[np.ndarray]) -> None:
        with self._lock:
            for k, v in zip(keys, values):
                if k not in self._rows:
                    self._rows[k] = v
                    self.bytes += v.nbytes
            while self.bytes > self.limit and self._rows:
                self.bytes -= self._rows.popitem(last=False)[1].nbytes


class _DiskCodes:
    """A bounded-memory snapshot's code source (:class:`~mvstore.search.snapshot.CodeSource`): the codes of the
    rows asked for, from the Index's :class:`CodeCache` or read from this version with one Lance ``take``."""

    def __init__(self, view: View):
        self.view = view

    def read(self, rows: np.ndarray) -> np.ndarray:
        view, cache = self.view, self.view.code_cache
        assert cache is not None, "only a bounded-memory Index (it has a code cache) keeps codes on disk"
        loaded = view.loaded()
        snap = loaded.snapshot
        cs = snap.codec.code_size
        keys = loaded.rowaddr[rows].tolist()
        got = cache.get(keys)
        miss = sorted({int(r) for r, v in zip(rows.tolist(), got) if v is None})
        if miss:
            m = np.asarray(miss, np.int64)
            pos = view.lance_rows(m).tolist()
            ds = view.docs()
            tbl = view._read_table(lambda: ds.take(pos, columns=[CODES]))
            raw = binary_values(tbl.column(CODES))
            lens = snap.offsets[m + 1] - snap.offsets[m]
            if raw.size != int(lens.sum()) * cs:
                raise IndexCorruptedError(
                    f"docs table version {view.version}: the codes read for {len(m)} rows hold {raw.size} bytes, "
                    f"not the {int(lens.sum()) * cs} their vector counts say; the index is corrupted: rebuild it"
                )
            ends = np.cumsum(lens) * cs
            read = {
                r: raw[e - n * cs : e].reshape(-1, cs).copy()
                for r, n, e in zip(miss, lens.tolist(), ends.tolist())
            }
            cache.put(loaded.rowaddr[m].tolist(), list(read.values()))
            found = [v if v is not None else read[r] for r, v in zip(rows.tolist(), got)]
        else:
            found = [v for v in got if v is not None]  # every row was cached
        return np.concatenate(found) if found else np.zeros((0, cs), np.uint8)


@dataclasses.dataclass
class Written:
    """What this process's own write committed, handed to the view of the version it made so that its snapshot
    is derived without reading the version back (:meth:`View._derive`): the version it committed on
    (``parent``: used only when the base snapshot is that version and the commit came right after it), the
    rows it appended in the order Lance stored them (a table of the docs schema; None when not kept: a large
    add, or an upsert of several rows, which Lance's merge may reorder), and the ids whose rows it deleted
    (a delete's, or an upsert's: each id it wrote replaces the row that held it)."""

    parent: int
    rows: pa.Table | None
    deleted: np.ndarray


#: an add keeps its encoded rows for the next snapshot (:class:`Written`) up to this many bytes
WRITTEN_BYTES = 64 << 20


#: a fragment of a version as :func:`fragment_keys` lists it: (fragment id, data key, deletion key)
_Frag = tuple[int, Any, Any]


def _no_rows(code_size: int) -> dict[str, np.ndarray]:
    """The row arrays of no rows (what :meth:`View._rows` returns)."""
    return {
        "ids": np.zeros(0, np.int64), "offsets": np.zeros(1, np.int64), "codes": np.zeros((0, code_size), np.uint8),
        "terms": np.zeros(0, np.int32), "stored": np.zeros(0, np.uint64), "n_tokens": np.zeros(0, np.int64),
        "rowaddr": np.zeros(0, np.uint64),
    }  # fmt: skip


def _fragment(ds: lance.LanceDataset, fid: int) -> lance.LanceFragment:
    """Fragment ``fid`` of ``ds``, one its manifest lists (:func:`fragment_keys`)."""
    frag = ds.get_fragment(fid)
    assert frag is not None, f"fragment {fid} is not in docs table version {ds.version}"
    return frag


@dataclasses.dataclass
class _Fragments:
    """A version's fragments (``new``, in order) as they follow a base snapshot's (:meth:`View._derive`): the
    base's ``kept`` ones (in the base's order, each unchanged but for deletions), then ``added`` new ones;
    ``removed``: the ids of the base's fragments not kept."""

    new: list[_Frag]
    kept: list[_Frag]
    added: list[_Frag]
    removed: list[int]

    @staticmethod
    def of(base: _Loaded, new: list[_Frag]) -> _Fragments | None:
        """None when ``new`` is not ``base``'s fragments followed by new ones with higher row addresses."""
        kept = [f for f in new if f[0] in base.frags]
        added = new[len(kept) :]
        if new[: len(kept)] != kept or any(base.frags[f][0] != data for f, data, _ in kept):
            return None  # a fragment rewritten, or new fragments before old ones (e.g. compaction mid-table)
        kept_ids = {f for f, _, _ in kept}
        if [f for f in base.order if f in kept_ids] != [f for f, _, _ in kept]:
            return None
        max_frag = int(base.rowaddr_sorted[-1] >> np.uint64(32)) if len(base.rowaddr_sorted) else -1
        if any(f <= max(max_frag, max(base.order, default=-1)) for f, _, _ in added):
            return None  # row addresses of appended rows must follow every held one
        return _Fragments(new, kept, added, [f for f in base.order if f not in kept_ids])


def _address_ordered(rowaddr: np.ndarray, moved_addr: np.ndarray) -> bool:
    """Whether appended rows' addresses ``rowaddr`` ascend, after the new addresses of moved rows."""
    return not (
        len(rowaddr)
        and (
            (np.diff(rowaddr.astype(np.int64)) <= 0).any()
            or (len(moved_addr) and rowaddr[0] <= moved_addr[-1])
        )
    )


@dataclasses.dataclass
class _MergedIds:
    """The sorted ids of a derived snapshot's live rows before the appended ones are inserted (``sorted_ids``,
    ``sorted_rows``: the row of each), and where those go: at ``pos``, ``new_sorted`` (the appended ids
    sorted, ``by_id``: their order)."""

    sorted_ids: np.ndarray
    sorted_rows: np.ndarray
    pos: np.ndarray
    new_sorted: np.ndarray
    by_id: np.ndarray

    def inserted(self, n0: int) -> tuple[np.ndarray, np.ndarray]:
        """The sorted ids with the appended ones (rows from ``n0`` on), and the row of each."""
        if not len(self.new_sorted):
            return self.sorted_ids, self.sorted_rows
        return (
            np.insert(self.sorted_ids, self.pos, self.new_sorted),
            np.insert(self.sorted_rows, self.pos, n0 + self.by_id),
        )


def _merge_ids(base: _Loaded, dead_ids: np.ndarray, new_ids: np.ndarray, version: int) -> _MergedIds:
    """``base``'s sorted ids less ``dead_ids`` (ids it holds), and where ``new_ids`` go among them;
    IndexCorruptedError naming an appended id that is already held or appended twice."""
    sorted_ids, sorted_rows = base.sorted_ids, base.sorted_rows
    if len(dead_ids):
        at = np.searchsorted(sorted_ids, dead_ids)
        sorted_ids, sorted_rows = np.delete(sorted_ids, at), np.delete(sorted_rows, at)
    by_id = np.argsort(new_ids, kind="stable")
    new_sorted = new_ids[by_id]
    pos = np.searchsorted(sorted_ids, new_sorted)
    hit = np.flatnonzero(pos < len(sorted_ids))
    hit = hit[sorted_ids[pos[hit]] == new_sorted[hit]]
    rep = np.flatnonzero(new_sorted[1:] == new_sorted[:-1])
    if len(hit) or len(rep):
        dup = new_sorted[hit[0]] if len(hit) else new_sorted[rep[0]]
        raise duplicate_id_error(dup.item() if isinstance(dup, np.generic) else dup, version)
    return _MergedIds(sorted_ids, sorted_rows, pos, new_sorted, by_id)


class _Buffers:
    """The append buffers of a snapshot derived from a base's (:class:`~mvstore.search.snapshot.AppendBuffer`):
    each array is the base's followed by what this version appended. ``out``: the derived snapshot's buffers."""

    def __init__(self, base: dict[str, AppendBuffer]):
        self.out = dict(base)
        self._from = dict(base)  # the buffer each array is appended to

    def append(self, name: str, n_parent: int, values: np.ndarray) -> np.ndarray:
        """The base's first ``n_parent`` entries of ``name`` followed by ``values``."""
        self.out[name], view = self._from[name].append(n_parent, values)
        return view

    def join(self, name: str, before: np.ndarray, new: np.ndarray) -> np.ndarray:
        """``append_postings``' ``concat``: ``before`` (the base's array ``name``) followed by ``new``."""
        return self.append(name, len(before), new)

    def move(self, base: _Loaded, moved: np.ndarray, moved_addr: np.ndarray) -> None:
        """New row addresses of the rows ``moved`` (a compacted tail), after every other held one, so that the
        sorted addresses stay sorted: the row address arrays start anew."""
        rowaddr = base.rowaddr.copy()
        rowaddr[moved] = moved_addr
        still = np.ones(len(base.rowaddr), bool)
        still[moved] = False
        keep = still[base.rowaddr_order]
        for name, arr in (
            ("rowaddr", rowaddr),
            ("rowaddr_sorted", np.concatenate([base.rowaddr_sorted[keep], moved_addr])),
            ("rowaddr_order", np.concatenate([base.rowaddr_order[keep], moved])),
        ):
            self._from[name] = self.out[name] = AppendBuffer(arr)

    def extras(self, old: Snapshot, r: dict[str, np.ndarray], n_add: int) -> dict[str, Any]:
        """The derived snapshot's extras: the base's posting lists grown by the appended rows' terms, their
        document side in append-only buffers; none when the base has none (a snapshot's posting lists built
        later are not these buffers' arrays)."""
        if "postings" not in old.extras:
            for name in ("doc_offsets", "doc_terms"):
                self.out.pop(name, None)
            return {}
        p = old.extras["postings"]
        for name in ("doc_offsets", "doc_terms"):
            if name not in self._from:
                self._from[name] = AppendBuffer(getattr(p, name))
        return {"postings": append_postings(p, r["terms"], r["offsets"], self.join) if n_add else p}


class View:
    """Everything one version needs for reading; built lazily, never mutated after a write (a write makes a
    new view), so searches running in other threads keep a consistent version.

    ``base``: the view this version follows (the one before a write or refresh). Its snapshot, when built, is
    where this one's is derived from: the rows of appended Lance fragments are read and appended, deleted rows
    masked (:meth:`_derive`); anything else (compaction in the middle of the table, retraining, a restored
    version, many deleted rows) loads the version in full."""

    def __init__(
        self, version: int, ds: lance.LanceDataset | None, state: CodecState | None, loc: Any, base: View | None = None,
        written: Written | None = None, code_cache: CodeCache | None = None,
    ):  # fmt: skip
        self.loc = loc  # the index's _fs.Location (its integrity records)
        self.code_cache = code_cache  # memory="bounded": the Index's CodeCache (the snapshot keeps no codes)
        self._written = (
            written  # what the write that made this version committed (None: another's, or unknown)
        )
        self.version = version
        self.ds = ds
        self.state = state
        self._lock = threading.Lock()
        self._public: Snapshot | None = None
        self._loaded: _Loaded | None = None
        self._base: _Loaded | None = None if base is None else (base._loaded or base._base)
        self._positions: np.ndarray | None = None
        self._searchers: dict[str, Any] = {}
        #: how the snapshot was made: "full" or "incremental" (None until it is)
        self.load_kind: str | None = None

    @property
    def n_docs(self) -> int:
        if self.ds is None:
            return 0
        with self.reading():
            return self.ds.count_rows()

    @contextlib.contextmanager
    def reading(self) -> Any:
        """Around Lance reads of this version: when one fails because ``optimize(cleanup=True)`` (in this or
        another process) deleted this version, raise VersionCleanedUpError instead of Lance's error."""
        try:
            yield
        except (OSError, ValueError, IndexCorruptedError) as e:  # the last: a read already judged unreadable
            try:
                gone = self.version not in {v["version"] for v in self.loc.dataset(DOCS).versions()}
            except (OSError, ValueError):
                gone = False  # the table itself is unreadable: the caller's own error says so
            if gone:
                raise VersionCleanedUpError(
                    f"version {self.version} of this index was deleted by optimize(cleanup=True) while this "
                    "Index still read it; call index.refresh() to read the latest version (or open(uri, "
                    "version=v) for a version that still exists)"
                ) from e
            raise

    def snapshot(self) -> Snapshot:
        """The search state of this version: rows deleted since the last full load are kept and masked
        (``Snapshot.live``)."""
        return self.loaded().snapshot

    def loaded(self) -> _Loaded:
        """The snapshot of this version and what a later version's derivation needs, built on first use."""
        with self._lock:
            if self._loaded is None:
                base, self._base = self._base, None
                loaded = None
                if base is not None:
                    loaded = self._derive(base)
                self.load_kind = "full" if loaded is None else "incremental"
                if loaded is None:
                    loaded = self._read_full()
                self._loaded = loaded
            return self._loaded

    def docs(self) -> lance.LanceDataset:
        """The docs dataset of this version, for reading rows (a view with no dataset has no rows to read)."""
        assert self.ds is not None, f"docs table version {self.version} has no dataset to read rows from"
        return self.ds

    def prepare(self) -> None:
        """Derive this version's snapshot now when the view it follows has one (after this process's write: a
        searching Index); else leave it to the first search. A derivation that fails is the first search's to
        report: it loads the version in full, which raises the same error when the version is unreadable."""
        if self._loaded is None and self._base is not None:
            with contextlib.suppress(MvstoreError, OSError):
                self.snapshot()

    def public_snapshot(self) -> Snapshot:
        """The snapshot without deleted rows (``Index.snapshot()``: row ``i`` is the version's ``i``-th document)."""
        snap = self.snapshot()
        with self._lock:
            if self._public is None:
                self._public = snap.compacted()
            return self._public

    def lance_rows(self, rows: np.ndarray) -> np.ndarray:
        """Positions of snapshot ``rows`` (live ones) among the version's rows, as ``LanceDataset.take`` counts."""
        live = self.snapshot().live
        if live is None:
            return rows
        with self._lock:
            if self._positions is None:
                self._positions = np.cumsum(live, dtype=np.int64) - 1
        return self._positions[rows]

    def _read_table(self, read: Any) -> pa.Table:
        try:
            with self.reading():
                return read()
        except BaseException as e:
            if not lance_failure(e):
                raise
            raise IndexCorruptedError(
                f"docs table version {self.version} cannot be read ({str(e).splitlines()[0][:200]}); the index "
                "is corrupted or its files were cleaned up: restore it from a backup or rebuild it"
            ) from e

    def _rows(self, st: CodecState, tbl: pa.Table) -> dict[str, np.ndarray]:
        """The arrays of docs rows read with ``_SNAPSHOT_COLUMNS`` and ``_rowaddr``, each row's checksum checked."""
        cs = st.codec.code_size
        stored = checked_checksums(self.version, tbl)
        ids = ids_numpy(tbl.column(ID))
        if ids.dtype.kind == "U":
            ids = ids.astype(object)
        n_vec = tbl.column(N_VECTORS).to_numpy().astype(np.int64)
        offsets = np.zeros(len(n_vec) + 1, np.int64)
        np.cumsum(n_vec, out=offsets[1:])
        raw = binary_values(tbl.column(CODES))
        if raw.size != offsets[-1] * cs:
            raise IndexCorruptedError(
                f"docs table version {self.version} holds {raw.size} code bytes but n_vectors says "
                f"{int(offsets[-1])} vectors x {cs} bytes; the index is corrupted: rebuild it"
            )
        codes = raw.reshape(-1, cs) if cs else np.zeros((int(offsets[-1]), 0), np.uint8)
        # rq-style codes carry their stage-1 term (centroid id); other codecs store it per vector
        terms = (
            st.codec.coarse_terms(codes).astype(np.int32)
            if st.codec.has_coarse
            else list_values(tbl.column(TERMS))
        )
        if len(terms) != offsets[-1]:
            raise IndexCorruptedError(
                f"docs table version {self.version} has {len(terms)} terms for {int(offsets[-1])} vectors; "
                "the index is corrupted: rebuild it"
            )
        return {
            "ids": ids, "offsets": offsets, "codes": codes, "terms": terms, "stored": stored,
            "n_tokens": tbl.column(N_TOKENS).to_numpy().astype(np.int64),
            "rowaddr": tbl.column("_rowaddr").to_numpy().astype(np.uint64),
        }  # fmt: skip

    def _read_full(self) -> _Loaded:
        st = self.state
        if st is None:
            raise NotFittedError("this index has no documents yet: call index.add(ids, vectors) first")
        ds = self.ds
        if ds is None:
            r = _no_rows(st.codec.code_size)
            frags: list[_Frag] = []
        elif self.code_cache is None:
            frags = fragment_keys(ds)
            tbl = self._read_table(
                lambda: ds.to_table(columns=_SNAPSHOT_COLUMNS, with_row_address=True, scan_in_order=True)
            )
            r = self._rows(st, tbl)
            check_record(self.loc, self.version, r["stored"])
            check_unique_ids(tbl.column(ID), self.version)
        else:
            frags = fragment_keys(ds)
            r = self._read_table(lambda: self._scan_bounded(ds, st))
            check_record(self.loc, self.version, r["stored"])
        order = np.argsort(r["rowaddr"], kind="stable")
        rowaddr_sorted = r["rowaddr"][order]
        by_id = np.argsort(r["ids"], kind="stable")
        sorted_ids = r["ids"][by_id]
        extras = {}
        codes: np.ndarray | None = None
        terms: np.ndarray | None = None
        if self.code_cache is None:
            codes, terms = r["codes"], r["terms"]
        else:  # bounded: the codes stay on disk, the terms become posting lists
            rep = np.flatnonzero(sorted_ids[1:] == sorted_ids[:-1])
            if len(rep):
                dup = sorted_ids[rep[0]]
                raise duplicate_id_error(dup.item() if isinstance(dup, np.generic) else dup, self.version)
            extras["postings"] = build_postings(r.pop("terms"), r["offsets"], len(st.centroids))
        arrays = {
            "ids": r["ids"], "codes": codes, "offsets": r["offsets"], "n_tokens": r["n_tokens"],
            "terms": terms, "rowaddr": r["rowaddr"], "checksums": r["stored"],
            "rowaddr_sorted": rowaddr_sorted, "rowaddr_order": order,
        }  # fmt: skip
        snap = Snapshot(
            version=self.version, ids=r["ids"], codes=codes, offsets=r["offsets"], codec=st.codec,
            n_tokens=r["n_tokens"], terms=terms, centroids=st.centroids, extras=extras,
            code_source=None if self.code_cache is None else _DiskCodes(self),
        )  # fmt: skip
        return _Loaded(
            snapshot=snap, state_id=st.state_id, frags={f: (d, x) for f, d, x in frags}, order=[f for f, _, _ in frags],
            rowaddr=r["rowaddr"], checksums=r["stored"], rowaddr_sorted=rowaddr_sorted,
            rowaddr_order=order, sorted_ids=sorted_ids, sorted_rows=by_id,
            n_live=len(r["stored"]), live_sum=row_sum(r["stored"]),
            buffers={k: AppendBuffer(v) for k, v in arrays.items() if v is not None},
        )  # fmt: skip

    def _scan_bounded(self, ds: lance.LanceDataset, st: CodecState) -> dict[str, np.ndarray]:
        """A bounded-memory full load: the version's rows read a batch at a time, each checked (row checksums),
        their codes dropped once their terms are taken (no ``codes`` in the result)."""
        parts = []
        for b in ds.to_batches(
            columns=_SNAPSHOT_COLUMNS, with_row_address=True, scan_in_order=True, batch_size=_BOUNDED_BATCH
        ):
            r = self._rows(st, pa.Table.from_batches([b]))
            r["n_vectors"] = np.diff(r.pop("offsets"))
            del r["codes"]
            parts.append(r)
        out = {
            k: np.concatenate([p[k] for p in parts])
            for k in ("ids", "terms", "stored", "n_tokens", "rowaddr", "n_vectors")
        }
        offsets = np.zeros(len(out["ids"]) + 1, np.int64)
        np.cumsum(out.pop("n_vectors"), out=offsets[1:])
        out["offsets"] = offsets
        return out

    def _derive(self, base: _Loaded, use_written: bool = True) -> _Loaded | None:
        """This version's snapshot from ``base``'s, reading only what changed, or None when this version is not
        ``base``'s fragments (each unchanged but for deletions, in the same order, some removed) followed by new
        fragments: then the caller loads it in full.

        Deleted rows and rows of removed fragments are masked (``Snapshot.live``), except rows a compaction of
        the table's tail moved: when the removed fragments all follow the kept ones and the new fragments start
        with their live rows (same ids and row checksums, in order), those rows keep their place and only their
        row addresses change. The new fragments' other rows are read, checked (row checksums, duplicate ids) and
        appended; the row count and checksum sum of the live rows are checked against the version's record.

        After this process's own write (:class:`Written`, when ``base`` is the version it committed on) nothing
        is read back: its deleted ids are found in ``base`` and checked against each fragment's deletion count
        in the manifest, its appended rows are the ones it encoded (checked like read rows); unless the live
        rows' count and checksum sum are then exactly the version's record's, the version is read instead.

        The steps: :meth:`_Fragments.of` (which fragments were kept, added, removed), :meth:`_live_rows` (the
        deletions), :meth:`_moved_rows` (a compacted tail), the appended rows (:meth:`_written_rows` or
        :meth:`_added_rows`) and their ids (:func:`_merge_ids`), then :meth:`_appended` (the buffers, the record
        check and the snapshot)."""
        ds, st = self.ds, self.state
        if ds is None or st is None or base.state_id != st.state_id:
            return None  # no rows or no codec state (the full load says so), or retrained: every code changed
        diff = _Fragments.of(base, fragment_keys(ds))
        if diff is None:
            return None
        old = base.snapshot
        old_live = np.ones(old.n_docs, bool) if old.live is None else old.live
        w = self._written_on(old.version) if use_written else None
        got = self._live_rows(ds, base, diff, w, old_live)
        if got is None:
            return None
        live, by_written = got
        frags = [_fragment(ds, f) for f, _, _ in diff.added]
        moved, moved_addr, heads = self._moved_rows(base, diff, frags, live, old_live, by_written)
        n_new = sum(data[1] for _, data, _ in diff.added) - len(moved)
        if np.count_nonzero(~live) > MAX_DEAD_FRACTION * (len(live) + n_new):
            return None
        dead = np.flatnonzero(~live & old_live)
        r = None if w is None else self._written_rows(st, w, diff.added)
        if r is None:
            r = self._added_rows(st, frags, len(moved), heads)
        if r is None:
            return None
        ids = _merge_ids(base, old.ids[dead], r["ids"], self.version)
        bufs = _Buffers(base.buffers)
        if len(moved):
            bufs.move(base, moved, moved_addr)
        if not _address_ordered(r["rowaddr"], moved_addr):
            return None  # appended rows not in row-address order
        derived = self._appended(base, st, diff, bufs, live, dead, r, ids, len(moved), check=w is not None)
        if derived is None:  # not provably this version: read what changed
            return self._derive(base, use_written=False)
        return derived

    def _written_on(self, base_version: int) -> Written | None:
        """What this process's write committed, when it made this version right after ``base_version``."""
        w = self._written
        if w is not None and (w.parent != base_version or self.version != w.parent + 1):
            return None  # not the commit right after the base version
        return w

    def _live_rows(
        self, ds: lance.LanceDataset, base: _Loaded, diff: _Fragments, w: Written | None, old_live: np.ndarray
    ) -> tuple[np.ndarray, bool] | None:
        """``(live, by_written)``: which of ``base``'s rows are still live after this version's deletions (rows of
        removed fragments not masked yet), found from ``w`` when it accounts for them (``by_written``: nothing
        read) or by reading the row addresses of each fragment whose deletions changed; None when a fragment
        holds rows the base does not, or deleted rows back (a restored version)."""
        live = old_live.copy()
        changed = [(f, data, dele) for f, data, dele in diff.kept if dele != base.frags[f][1]]
        if _mask_written(base, w, changed, diff.removed, live):
            return live, True
        for f, _, _ in changed:
            rows = base.rows_of_fragment(f)
            frag = _fragment(ds, f)
            addr = self._read_table(lambda fr=frag: fr.to_table(columns=[], with_row_address=True)).column(
                "_rowaddr"
            )
            now = _present(base.rowaddr[rows], addr.to_numpy().astype(np.uint64))
            if int(now.sum()) != len(addr) or (now & ~live[rows]).any():
                return None  # rows this snapshot does not hold, or deleted rows back (a restored version)
            live[rows] = now
        return live, False

    def _moved_rows(
        self, base: _Loaded, diff: _Fragments, frags: list[lance.LanceFragment], live: np.ndarray,
        old_live: np.ndarray, by_written: bool,
    ) -> tuple[np.ndarray, np.ndarray, pa.Table | None]:  # fmt: skip
        """Mask in ``live`` the rows of the removed fragments but those a compaction of the table's tail moved
        into the added fragments ``frags`` (the removed fragments all follow the kept ones, and the added ones
        start with those rows: same ids and row checksums, in order) -> ``(moved rows, their new row addresses,
        heads)``; ``heads``: the ids, row checksums and row addresses of ``frags``' rows when they were read."""
        gone = (
            np.sort(np.concatenate([base.rows_of_fragment(f) for f in diff.removed]))
            if diff.removed
            else np.zeros(0, np.int64)
        )
        # rows a compaction of the tail may have rewritten into the added fragments (not: the write deleted them)
        moved = gone[:0] if by_written else gone[old_live[gone]]
        live[gone] = False
        no_addr = np.zeros(0, np.uint64)
        if not (len(moved) and frags and all(base.order.index(f) > len(diff.kept) - 1 for f in diff.removed)):
            return moved[:0], no_addr, None
        heads = self._read_table(
            lambda: pa.concat_tables(
                [f.to_table(columns=[ID, ROW_CHECKSUM], with_row_address=True) for f in frags]
            )
        )
        m = len(moved)
        if not (
            heads.num_rows >= m
            and np.array_equal(heads.column(ROW_CHECKSUM).slice(0, m).to_numpy().astype(np.uint64),
                               base.checksums[moved])
            and ids_numpy(heads.column(ID).slice(0, m)).tolist() == base.snapshot.ids[moved].tolist()
        ):  # fmt: skip
            return moved[:0], no_addr, heads
        live[moved] = True
        return moved, heads.column("_rowaddr").slice(0, m).to_numpy().astype(np.uint64), heads

    def _appended(
        self, base: _Loaded, st: CodecState, diff: _Fragments, bufs: _Buffers, live: np.ndarray, dead: np.ndarray,
        r: dict[str, np.ndarray], ids: _MergedIds, n_moved: int, *, check: bool,
    ) -> _Loaded | None:  # fmt: skip
        """The derived snapshot: ``base``'s arrays followed by the appended rows ``r`` (in ``bufs``), the live
        rows' count and checksum sum kept up to date (O(change)) and checked against the version's record
        (IndexCorruptedError naming the difference); None when ``check`` (after this process's own write) and
        they are not provably the record's."""
        old = base.snapshot
        n0, v0 = old.n_docs, old.n_vectors
        offsets = bufs.append("offsets", n0 + 1, old.offsets[-1] + r["offsets"][1:])
        n_add = len(r["ids"])
        live_all = np.concatenate([live, np.ones(n_add, bool)])
        checksums = bufs.append("checksums", n0, r["stored"])
        n_live = base.n_live - len(dead) + n_add
        live_sum = (base.live_sum - row_sum(base.checksums[dead]) + row_sum(r["stored"])) % 2**64
        agrees = record_agrees(self.loc, self.version, n_live, live_sum)
        if check and not agrees:
            return None
        if agrees is False:
            check_record(self.loc, self.version, checksums[live_all])  # raises, naming the difference
        in_memory = old.codes is not None  # bounded memory: the codes stay on disk, the terms in the postings
        snap = Snapshot(
            version=self.version, ids=bufs.append("ids", n0, r["ids"]), offsets=offsets, codec=st.codec,
            codes=bufs.append("codes", v0, r["codes"]) if in_memory else None,
            terms=bufs.append("terms", v0, r["terms"]) if in_memory and old.terms is not None else None,
            n_tokens=bufs.append("n_tokens", n0, r["n_tokens"]), centroids=st.centroids,
            extras=bufs.extras(old, r, n_add), live=None if live_all.all() else live_all,
            code_source=None if in_memory else _DiskCodes(self),
        )  # fmt: skip
        sorted_ids, sorted_rows = ids.inserted(n0)
        return _Loaded(
            snapshot=snap, state_id=st.state_id, frags={f: (d, x) for f, d, x in diff.new},
            order=[f for f, _, _ in diff.new], rowaddr=bufs.append("rowaddr", n0, r["rowaddr"]), checksums=checksums,
            rowaddr_sorted=bufs.append("rowaddr_sorted", n0, r["rowaddr"]),
            rowaddr_order=bufs.append("rowaddr_order", n0, np.arange(n0, n0 + n_add, dtype=np.int64)),
            sorted_ids=sorted_ids, sorted_rows=sorted_rows, n_live=n_live, live_sum=live_sum,
            buffers=bufs.out, moved=n_moved,
        )  # fmt: skip

    def _written_rows(self, st: CodecState, w: Written, added: list[_Frag]) -> dict[str, np.ndarray] | None:
        """The appended rows as this process wrote them (checked like read rows), their addresses from the
        manifest (``fragment id << 32 | offset``); None when the appended fragments do not hold exactly them."""
        if (
            w.rows is None
            or any(d is not None for _, _, d in added)
            or sum(x[1] for _, x, _ in added) != w.rows.num_rows
        ):
            return None
        addr = [(np.uint64(f) << np.uint64(32)) | np.arange(x[1], dtype=np.uint64) for f, x, _ in added]
        tbl = w.rows.select(_SNAPSHOT_COLUMNS).append_column(
            "_rowaddr", pa.array(np.concatenate(addr) if addr else np.zeros(0, np.uint64), pa.uint64())
        )
        return self._rows(st, tbl)

    def _added_rows(
        self, st: CodecState, frags: list[lance.LanceFragment], skip: int, heads: pa.Table | None
    ) -> dict[str, np.ndarray] | None:
        """The rows of the added fragments ``frags`` after the first ``skip`` (rows a compaction moved, whose
        ids, checksums and addresses ``heads`` holds), read in full and checked; None if the read disagrees
        with ``heads``."""
        parts = []
        first = skip
        for fr in frags:
            n = fr.count_rows()
            if skip >= n:
                skip -= n
                continue
            parts.append((fr, skip))
            skip = 0
        if not parts:
            return _no_rows(st.codec.code_size)
        tbl = self._read_table(lambda: pa.concat_tables([_fragment_rows(fr, o) for fr, o in parts]))
        r = self._rows(st, tbl)
        if heads is not None and not np.array_equal(
            r["rowaddr"], heads.column("_rowaddr").to_numpy().astype(np.uint64)[first:]
        ):
            return None  # a fragment changed between the two reads' views of it (never for one version)
        return r

    def mask(self, where: str) -> np.ndarray:
        """Lance evaluates ``where`` -> boolean mask over snapshot rows."""
        snap = self.snapshot()
        if self.ds is None:
            return np.zeros(0, bool)
        check_where(self.ds.schema, where)
        hit = self._scan(where, "where=", columns=[], filter=lance_filter(where), with_row_address=True)
        m = np.zeros(snap.n_docs, bool)
        m[self.rows_of(hit.column("_rowaddr").to_numpy(), "the where= scan")] = True
        return m

    def text_search(self, text: str, where: str | None, limit: int) -> tuple[np.ndarray, np.ndarray]:
        """BM25 top-``limit`` of ``text`` by Lance's full-text index (every INVERTED-indexed column), among the
        rows ``where`` keeps -> (snapshot rows, BM25 scores), best first."""
        self.snapshot()
        hit = self._scan(
            where,
            "full-text search",
            columns=["_score"],
            full_text_query=text,
            filter=None if where is None else lance_filter(where),
            prefilter=True,
            limit=limit,
            with_row_address=True,
        )
        rows = self.rows_of(hit.column("_rowaddr").to_numpy(), "the full-text search")
        return rows, hit.column("_score").to_numpy().astype(np.float32)

    def text_columns(self) -> list[str]:
        """The columns of this version that have a full-text (INVERTED) index."""
        with self.reading():
            idx = self.ds.describe_indices() if self.ds is not None else []
        return sorted(
            {f for i in idx if str(i.index_type).lower() in ("inverted", "fts") for f in i.field_names}
        )

    def _scan(self, where: str | None, what: str, **kw: Any) -> pa.Table:
        """``ds.to_table(**kw)`` of this version; a failure is IndexCorruptedError for a damaged file,
        FilterError for a ``where=`` Lance cannot evaluate."""
        ds = self.docs()
        try:
            with self.reading():
                return ds.to_table(**kw)
        except BaseException as e:
            if not lance_failure(e):
                raise
            if corrupt_file_error(e):
                raise IndexCorruptedError(
                    f"docs table version {self.version} cannot be read for {what} "
                    f"({str(e).splitlines()[0][:200]}); the index is corrupted: restore it from a backup or "
                    "rebuild it (run `mvstore verify <index>` for a full report)"
                ) from e
            name = unknown_field(e)
            if name is not None:
                check_columns(ds.schema, [name], "where=")
            if where is None:
                raise
            raise FilterError(
                f"where={where!r} could not be evaluated by Lance: {str(e).splitlines()[0][:300]}; "
                f"write a SQL predicate over the columns {user_columns(ds.schema)}, e.g. \"lang = 'en'\""
            ) from e

    def rows_of(self, rowaddr: np.ndarray, what: str) -> np.ndarray:
        """Snapshot rows of Lance row addresses of this version."""
        loaded = self.loaded()
        srt, rowaddr = loaded.rowaddr_sorted, rowaddr.astype(np.uint64)
        pos = np.searchsorted(srt, rowaddr)
        if len(rowaddr) and (
            pos.max() >= len(srt) or (srt[np.minimum(pos, len(srt) - 1)] != rowaddr).any()
        ):  # pragma: no cover - Lance returned a row outside this version
            raise IndexCorruptedError(f"{what} returned rows that are not in this version; reopen the index")
        return loaded.rowaddr_order[pos]

    def searcher(self, params: SearchParams) -> Any:
        key = repr(params)
        with self._lock:
            s = self._searchers.get(key)
        if s is None:
            s = make_searcher(self.snapshot(), params)
            with self._lock:
                if len(self._searchers) > 8:
                    self._searchers.clear()
                s = self._searchers.setdefault(key, s)
        return s


def check_unique_ids(ids: pa.ChunkedArray, version: int) -> None:
    """IndexCorruptedError naming an id stored twice (see :func:`duplicate_id_error`)."""
    if pc.count_distinct(ids).as_py() != len(ids):
        raise duplicate_id_error(first_duplicate(ids.combine_chunks()), version)


def duplicate_id_error(dup: Any, version: int) -> IndexCorruptedError:
    """Rows written to docs.lance directly (e.g. LanceDB's ``tbl.add``, which has no id check) stored ``dup``
    twice: search would return the document twice."""
    return IndexCorruptedError(
        f"id {dup!r} is stored more than once in docs table version {version}: rows were added to docs.lance "
        "directly (e.g. LanceDB's tbl.add), which mvstore does not support (see docs/LAYOUT.md); remove the "
        f"copies with index.delete([{dup!r}]) and add the document again with index.add"
    )


def user_columns(schema: pa.Schema) -> list[str]:
    """The columns ``where=`` and ``columns=`` may name: ``id`` and the metadata."""
    return [n for n in schema.names if n not in INTERNAL_COLUMNS]


def check_where(schema: pa.Schema | None, where: Any) -> None:
    """FilterError / InvalidDtypeError for a ``where=`` that is not a SQL string or names columns ``schema``
    does not have (None: check the type only)."""
    if not isinstance(where, str):
        raise InvalidDtypeError(
            f"where= must be a SQL filter string such as \"lang = 'en'\", got {type(where).__name__} {where!r:.80}"
        )
    if not where.strip():
        raise FilterError(
            "where= is an empty string; pass where=None for no filter, or a predicate like \"lang = 'en'\""
        )
    if schema is None:
        return
    avail = user_columns(schema)
    for kind, name, raw in _where_tokens(where):
        if kind in ("column", "quoted") and name not in avail:
            hint = ""
            if raw.startswith('"'):
                hint = f"; double quotes name a column: write a string value in single quotes ('{name}')"
            raise FilterError(
                f"where= names unknown column {name!r}; available columns: {', '.join(avail)}{hint}"
            )


def check_columns(schema: pa.Schema, names: list[str], what: str) -> None:
    avail = user_columns(schema)
    for n in names:
        if n not in avail:
            raise FilterError(f"{what} names unknown column {n!r}; available columns: {', '.join(avail)}")
