"""Input files of the command line into plain values: documents (JSONL, Parquet, ``.npz``), query texts, BEIR
datasets. Errors name the file and the flag or form to use instead (:class:`~mvstore.exceptions.UsageError`)."""

from __future__ import annotations

import json
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa

from ..exceptions import UsageError
from ..ragged import Ragged
from ..store._layout import TEXT

#: file name endings read as one JSON object per line
JSONL = (".jsonl", ".jsonl.gz", ".json", ".ndjson")


def _existing(path: str, what: str = "input file") -> Path:
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"{what} {path!r} does not exist")
    return p


def read_table(path: str) -> pa.Table:
    """A JSONL or Parquet file as an Arrow table."""
    p = _existing(path)
    name = p.name.lower()
    if name.endswith(".parquet"):
        import pyarrow.parquet as pq

        try:
            return pq.read_table(p)
        except pa.ArrowInvalid as e:
            raise UsageError(
                f"{path} is not a readable Parquet file ({e}); write it with pyarrow.parquet.write_table "
                "or pass a .jsonl file"
            ) from None
    if name.endswith(JSONL):
        return _read_jsonl(p)
    raise UsageError(f"cannot read {path!r}: use a .jsonl, .jsonl.gz, .parquet or .npz file")


def _read_jsonl(path: Path) -> pa.Table:
    """One JSON object per line (``.gz``: decompressed) as a table, by ``pyarrow.json``: columns are the fields of
    all records (a record without one holds null). Where pyarrow alone would differ from the file, the lines are
    scanned (:func:`_scan_jsonl`): to name a bad line (its error counts rows within a block), to read records
    longer than its block, and to name a line that is not UTF-8 (pyarrow keeps the bytes); strings it infers as
    timestamps are re-read as the strings they are."""
    import pyarrow.json as pj

    block = pj.ReadOptions().block_size
    try:
        tbl = pj.read_json(path)
    except pa.ArrowInvalid as e:
        longest = _scan_jsonl(path)  # a line that is not a JSON object: UsageError naming it
        if longest < block:
            raise UsageError(_not_a_table(path, e)) from None
        block = 2 * longest  # a record pyarrow's block cannot hold
        try:
            tbl = pj.read_json(path, read_options=pj.ReadOptions(block_size=block))
        except pa.ArrowInvalid as e2:
            raise UsageError(_not_a_table(path, e2)) from None
    if tbl.num_rows == 0:
        raise UsageError(f"{path} holds no records")
    try:
        tbl.validate(full=True)  # pyarrow keeps invalid UTF-8 bytes in its strings
    except pa.ArrowInvalid as e:
        _scan_jsonl(path)  # names the line
        raise UsageError(f"{path}: {e}; save the file as UTF-8") from None
    stamps = [f.name for f in tbl.schema if pa.types.is_timestamp(f.type)]
    if stamps:
        strings = pj.ParseOptions(explicit_schema=pa.schema([(c, pa.string()) for c in stamps]))
        tbl = pj.read_json(path, read_options=pj.ReadOptions(block_size=block), parse_options=strings).select(
            tbl.column_names
        )
    return tbl


def _scan_jsonl(path: Path) -> int:
    """The length in bytes of the longest line of a JSONL file; UsageError naming the first line that is not
    UTF-8 or not a JSON object, or when there is no record."""
    import gzip

    longest, n_records = 0, 0
    with (gzip.open if path.name.lower().endswith(".gz") else open)(path, "rb") as f:
        for n, raw in enumerate(f, 1):
            longest = max(longest, len(raw))
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise UsageError(f"{path}:{n} is not UTF-8 text ({e}); save the file as UTF-8") from None
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as e:
                raise UsageError(
                    f"{path}:{n} is not valid JSON ({e.msg}); expected one object per line"
                ) from None
            if not isinstance(rec, dict):
                raise UsageError(
                    f"{path}:{n} holds a {type(rec).__name__}; expected one JSON object per line"
                )
            n_records += 1
    if n_records == 0:
        raise UsageError(f"{path} holds no records")
    return longest


def _not_a_table(path: Path, e: Exception) -> str:
    why = re.sub(r" in row \d+$", "", str(e).strip())  # pyarrow's row counts within a block: not the line
    return f"{path}: the records do not form a table ({why}); give each field the same type on every line"


def read_npz(path: str) -> tuple[list, Ragged]:
    """The ids and token vectors of an ``.npz`` input (``vectors``, ``offsets``, optional ``ids``)."""
    _existing(path)
    try:
        return _npz_arrays(path)
    except (
        ValueError,
        EOFError,
        zipfile.BadZipFile,
    ) as e:  # not an .npz, or Python objects (allow_pickle=False)
        raise UsageError(
            f"{path} is not an .npz of numeric arrays ({e}); save it with "
            "np.savez(path, vectors=..., offsets=..., ids=...)"
        ) from None


def _npz_arrays(path: str) -> tuple[list, Ragged]:
    with np.load(path, allow_pickle=False) as z:
        missing = [k for k in ("vectors", "offsets") if k not in z.files]
        if missing:
            raise UsageError(
                f"{path} lacks array(s) {missing}; an .npz input holds 'vectors' (n_tokens, dim), 'offsets' "
                f"(n_docs + 1,) and optionally 'ids' (n_docs,); it has {z.files}"
            )
        docs = Ragged(np.asarray(z["vectors"]), np.asarray(z["offsets"]))
        ids = z["ids"].tolist() if "ids" in z.files else list(range(len(docs)))
    if len(ids) != len(docs):
        raise UsageError(
            f"{path}: 'ids' has {len(ids)} entries but 'offsets' describes {len(docs)} documents"
        )
    return ids, docs


@dataclass
class Documents:
    """Documents of an input file: ids, and texts or token vectors, plus a metadata table."""

    ids: list
    texts: list[str] | None = None
    vectors: Ragged | None = None
    metadata: pa.Table | None = None

    def __len__(self) -> int:
        return len(self.ids)


def read_documents(
    path: str,
    *,
    id_column: str = "id",
    text_column: str = TEXT,
    title_column: str | None = None,
    vectors_column: str = "vectors",
    metadata_columns: list[str] | None = None,
) -> Documents:
    """The documents of ``path``: an ``.npz`` (vectors), or a JSONL / Parquet table whose ``vectors_column``
    holds token vectors or whose ``text_column`` holds texts (``title_column`` prepended). Metadata: the named
    ``metadata_columns``, else every scalar column but the id and vectors (the texts themselves are stored as
    the index's ``text`` column)."""
    if path.lower().endswith(".npz"):
        ids, vectors = read_npz(path)
        return Documents(ids, vectors=vectors)
    tbl = read_table(path)
    cols = tbl.column_names
    if id_column not in cols:
        raise UsageError(f"{path} has no id column {id_column!r} (columns: {cols}); pass --id-column NAME")
    docs = Documents(tbl.column(id_column).to_pylist())
    if vectors_column in cols:
        docs.vectors = _vectors(path, tbl.column(vectors_column).to_pylist(), docs.ids, vectors_column)
    elif text_column in cols:
        docs.texts = _texts(path, tbl, docs.ids, text_column, title_column)
    else:
        raise UsageError(
            f"{path} has neither a vectors column {vectors_column!r} nor a text column "
            f"{text_column!r} (columns: {cols}); pass --text-column or --vectors-column"
        )
    names = _metadata_names(tbl, metadata_columns, skip={id_column, vectors_column})
    if docs.texts is not None and TEXT in names:
        if text_column != TEXT:
            raise UsageError(
                f"the input has a {TEXT!r} column besides --text-column {text_column!r}; "
                f"the index stores the encoded texts as {TEXT!r}: leave that column out with "
                "--metadata COL,COL,... or rename it"
            )
        names.remove(TEXT)  # the texts themselves: stored as the index's text column
    docs.metadata = tbl.select(names) if names else None
    return docs


def _vectors(path: str, mats: list, ids: list, column: str) -> Ragged:
    arrays = []
    for i, m in enumerate(mats):
        try:
            arrays.append(np.asarray(m, np.float32))
        except (ValueError, TypeError) as e:  # ragged rows, strings, nested nulls
            raise UsageError(
                f"{path}: record {i} (id {ids[i]!r}) has a {column!r} value that is not a list of "
                f"equal-length lists of numbers ({e}); fix that record or drop it"
            ) from None
    return Ragged.from_list(arrays)


def _texts(path: str, tbl: pa.Table, ids: list, text_column: str, title_column: str | None) -> list[str]:
    texts = tbl.column(text_column).to_pylist()
    if title_column:
        if title_column not in tbl.column_names:
            raise UsageError(f"{path} has no title column {title_column!r} (columns: {tbl.column_names})")
        titles = tbl.column(title_column).to_pylist()
        texts = [f"{t or ''} {x or ''}".strip() for t, x in zip(titles, texts)]
    bad = [i for i, t in enumerate(texts) if not isinstance(t, str) or not t.strip()]
    if bad:
        raise UsageError(f"record {bad[0]} (id {ids[bad[0]]!r}) has an empty text; drop it first")
    return texts


def _metadata_names(tbl: pa.Table, given: list[str] | None, skip: set[str]) -> list[str]:
    if given is not None:
        unknown = [c for c in given if c not in tbl.column_names]
        if unknown:
            raise UsageError(
                f"--metadata names unknown column(s) {unknown}; the input has {tbl.column_names}"
            )
        names = list(given)
    else:
        scalar = (
            pa.types.is_string,
            pa.types.is_large_string,
            pa.types.is_integer,
            pa.types.is_floating,
            pa.types.is_boolean,
            pa.types.is_timestamp,
            pa.types.is_date,
        )
        names = [f.name for f in tbl.schema if f.name not in skip and any(t(f.type) for t in scalar)]
    return [c for c in names if not c.startswith("_")]


def read_lines(path: str, what: str) -> list[str]:
    """The non-empty lines of a text file, stripped (``what``: the file's role, for the messages)."""
    p = _existing(path, what)
    try:
        text = p.read_bytes().decode("utf-8")
    except UnicodeDecodeError as e:
        raise UsageError(
            f"{what} {path!r} is not UTF-8 text ({e}); give one query per line, or an .npz of query vectors"
        ) from None
    return [ln.strip() for ln in text.splitlines() if ln.strip()]


def read_query_texts(path: str, text_column: str = TEXT) -> list[str]:
    """Query texts: the ``text_column`` of a JSONL / Parquet file, else the non-empty lines of a text file."""
    _existing(path, "queries file")
    if path.lower().endswith((".jsonl", ".parquet", ".jsonl.gz")):
        tbl = read_table(path)
        if text_column not in tbl.column_names:
            raise UsageError(
                f"queries file {path} has no text column {text_column!r} (columns: {tbl.column_names}); "
                "pass --text-column NAME"
            )
        return tbl.column(text_column).to_pylist()
    return read_lines(path, "queries file")


@dataclass
class Beir:
    """A BEIR dataset as the commands use it: documents and queries in order, with the split's qrels."""

    doc_ids: list[str]
    doc_texts: list[str]
    query_ids: list[str]
    query_texts: list[str]
    qrels: dict[str, dict[str, int]]


def read_beir(root: str, split: str = "test", max_docs: int | None = None) -> Beir:
    """The BEIR directory ``root``; ``max_docs``: the judged documents first, then others, up to that many."""
    from ..eval import load_beir

    if not Path(root).is_dir():
        raise FileNotFoundError(f"BEIR directory {root!r} does not exist")
    ds = load_beir(root, split)
    doc_ids = list(ds.corpus)
    if max_docs:
        rel = {d for q in ds.qrels.values() for d in q}
        doc_ids = [d for d in doc_ids if d in rel] + [d for d in doc_ids if d not in rel]
        doc_ids = doc_ids[: max(max_docs, 1)]
    qids = [q for q in ds.qrels if q in ds.queries]
    return Beir(doc_ids, [ds.corpus[d] for d in doc_ids], qids, [ds.queries[q] for q in qids], ds.qrels)
