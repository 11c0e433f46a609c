"""One index version's read state (:class:`_View`), the loaded codec state, ``where=`` column checks."""

from __future__ import annotations

import contextlib
import dataclasses
import re
import threading
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
    NotFittedError,
    VersionCleanedUpError,
)
from ..search.params import SearchParams
from ..search.searcher import make_searcher
from ..search.snapshot import Snapshot
from ._integrity import check_rows, corrupt_file_error, lance_failure
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
        "`" + text.replace("`", "``") + "`" if kind == "quoted" else raw for kind, text, raw in _where_tokens(where)
    )


@dataclasses.dataclass
class _State:
    """A loaded codec state: the fitted pipeline, stage-1 centroids and training facts."""

    state_id: int
    codec: Any
    centroids: np.ndarray | None
    meta: dict[str, Any]
    spec: Any  # the parsed spec (mvstore.spec.Spec) the codec was fit for: pooling + codec stages


class _View:
    """Everything one version needs for reading; built lazily, never mutated after a write (a write makes a
    new view), so searches running in other threads keep a consistent version."""

    def __init__(self, version: int, ds: lance.LanceDataset | None, state: _State | None, loc: Any):
        self.loc = loc  # the index's _fs.Location (its integrity records)
        self.version = version
        self.ds = ds
        self.state = state
        self._lock = threading.Lock()
        self._snapshot: Snapshot | None = None
        self._rowaddr_sorted: np.ndarray | None = None
        self._rowaddr_order: np.ndarray | None = None
        self._searchers: dict[str, Any] = {}

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
        with self._lock:
            if self._snapshot is None:
                self._snapshot = self._read_snapshot()
            return self._snapshot

    def _read_snapshot(self) -> Snapshot:
        st = self.state
        if st is None:
            raise NotFittedError("this index has no documents yet: call index.add(ids, vectors) first")
        cs = st.codec.code_size
        if self.ds is None:
            ids = np.zeros(0, np.int64)
            codes, offsets, n_tok = np.zeros((0, cs), np.uint8), np.zeros(1, np.int64), np.zeros(0, np.int64)
            terms, rowaddr = np.zeros(0, np.int32), np.zeros(0, np.uint64)
        else:
            try:
                with self.reading():
                    tbl = self.ds.to_table(
                        columns=[*CHECKSUMMED, ROW_CHECKSUM],
                        with_row_address=True,
                        scan_in_order=True,
                    )
            except BaseException as e:
                if not lance_failure(e):
                    raise
                raise IndexCorruptedError(
                    f"docs table version {self.version} cannot be read ({str(e).splitlines()[0][:200]}); the index "
                    "is corrupted or its files were cleaned up: restore it from a backup or rebuild it"
                ) from e
            check_rows(self.loc, self.version, tbl)
            id_col = tbl.column(ID)
            check_unique_ids(id_col, self.version)
            ids = ids_numpy(id_col)
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
            terms = st.codec.coarse_terms(codes).astype(np.int32) if st.codec.has_coarse else list_values(tbl.column(TERMS))
            if len(terms) != offsets[-1]:
                raise IndexCorruptedError(
                    f"docs table version {self.version} has {len(terms)} terms for {int(offsets[-1])} vectors; "
                    "the index is corrupted: rebuild it"
                )
            n_tok = tbl.column(N_TOKENS).to_numpy().astype(np.int64)
            rowaddr = tbl.column("_rowaddr").to_numpy()
        order = np.argsort(rowaddr, kind="stable")
        self._rowaddr_order, self._rowaddr_sorted = order, rowaddr[order]
        return Snapshot(
            version=self.version,
            ids=ids,
            codes=codes,
            offsets=offsets,
            codec=st.codec,
            n_tokens=n_tok,
            terms=terms,
            centroids=st.centroids,
        )

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
        return sorted({f for i in idx if str(i.index_type).lower() in ("inverted", "fts") for f in i.field_names})

    def _scan(self, where: str | None, what: str, **kw: Any) -> pa.Table:
        """``ds.to_table(**kw)`` of this version; a failure is IndexCorruptedError for a damaged file,
        FilterError for a ``where=`` Lance cannot evaluate."""
        try:
            with self.reading():
                return self.ds.to_table(**kw)
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
                check_columns(self.ds.schema, [name], "where=")
            if where is None:
                raise
            raise FilterError(
                f"where={where!r} could not be evaluated by Lance: {str(e).splitlines()[0][:300]}; "
                f"write a SQL predicate over the columns {user_columns(self.ds.schema)}, e.g. \"lang = 'en'\""
            ) from e

    def rows_of(self, rowaddr: np.ndarray, what: str) -> np.ndarray:
        """Snapshot rows of Lance row addresses of this version (the snapshot must be loaded)."""
        srt = self._rowaddr_sorted
        pos = np.searchsorted(srt, rowaddr)
        if len(rowaddr) and (
            pos.max() >= len(srt) or (srt[np.minimum(pos, len(srt) - 1)] != rowaddr).any()
        ):  # pragma: no cover - Lance returned a row outside this version
            raise IndexCorruptedError(f"{what} returned rows that are not in this version; reopen the index")
        return self._rowaddr_order[pos]

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
    """IndexCorruptedError naming an id stored twice: rows written to docs.lance directly (e.g. LanceDB's
    ``tbl.add``, which has no id check) would make search return the document twice."""
    if pc.count_distinct(ids).as_py() != len(ids):
        dup = first_duplicate(ids.combine_chunks())
        raise IndexCorruptedError(
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
