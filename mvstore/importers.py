"""Move existing indexes in: :func:`import_plaid` reads a PLAID index, decodes every document's token vectors
and adds them to an mvstore index (``mvstore import-plaid``). Two layouts, both read-only:

**fast-plaid** (`github.com/lightonai/fast-plaid`, the backend of PyLate's ``indexes.PLAID`` since PyLate
1.3), read with numpy alone (fast-plaid is not imported), as fast-plaid 1.x writes it:

* ``metadata.json`` (``num_chunks``, ``nbits``), the codec: ``centroids.npy`` ``(K, dim)``,
  ``bucket_weights.npy`` ``(2**nbits,)``; per chunk ``i``: ``doclens.{i}.json`` (tokens of each document);
* the payload, per chunk: ``{i}.codes.npy`` (int64 centroid id of each token) and ``{i}.residuals.npy``
  (uint8 ``(tokens, dim * nbits / 8)``) when present (before fast-plaid 1.7, or staged by an update), else
  the chunk's rows of ``merged_codes.npy`` / ``merged_residuals.npy`` at the offsets their
  ``merged_*.manifest.json`` records (in doclens order without a manifest), as fast-plaid's loader does;
* fast-plaid's ``metadata.db`` (SQLite table ``METADATA`` keyed by ``_subset_``), opened read-only, becomes
  mvstore metadata columns (INTEGER -> int64, REAL -> float64, TEXT -> string, BLOB -> binary);
* PyLate keeps the fast-plaid index in ``<index_folder>/<index_name>/fast_plaid_index``.

**Stanford ColBERT** (PyLate < 1.3's ``indexes.PLAID``, ``use_fast=False`` later; needs torch): ``metadata.json``
(``num_chunks``, ``config.nbits``, ``config.dim``), ``centroids.pt``, ``buckets.pt`` (cutoffs, weights), per
chunk ``doclens.{i}.json``, ``{i}.codes.pt``, ``{i}.residuals.pt``: torch archives, loaded with
``weights_only=True`` (tensors only, no code). A document PyLate removed keeps its number with 0 tokens.

Ids: PyLate's ``plaid_ids_to_documents_ids`` mapping in ``<index_folder>/<index_name>`` when there is one
(``.pkl``: a pickled dict, PyLate >= 1.3; ``.sqlite``: a SqliteDict of pickled values, PyLate 1.2), else the
PLAID document numbers ``0..n-1``. Pickles are read by an unpickler that builds only plain values (dict, list,
str, int, float, numpy scalars): a crafted file cannot run code. Documents with 0 tokens and no id (removed by
PyLate) are skipped.

Both layouts quantize alike (Stanford's ``ResidualCodec``, which fast-plaid ported): a token vector decodes as
``centroids[code] + bucket_weights[b]`` per dimension, ``b`` the dimension's ``nbits``-bit bucket (bits packed
most significant first, each bucket's bits least significant first), normalized to unit length; fast-plaid
rounds centroids and weights to float16 when it loads them, and so does the importer for its layout. The
vectors are that reconstruction, not the original embeddings: the PLAID index's residual quantization error
stays.
"""

from __future__ import annotations

import contextlib
import fcntl
import io
import json
import os
import pickle
import sqlite3
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from . import spec as spec_mod
from .codecs.base import default_n_centroids
from .device import TORCH_CPU_HINT
from .exceptions import (
    DimensionMismatchError,
    IndexBusyError,
    InvalidArgumentError,
    InvalidDtypeError,
    MissingDependencyError,
    PlaidFormatError,
    SpecError,
)
from .ragged import Ragged

__all__ = ["PlaidIndex", "read_plaid", "import_plaid"]

#: the fast-plaid directory inside a PyLate index folder
PYLATE_SUBDIR = "fast_plaid_index"
#: token vectors decoded per streamed batch (the memory bound of an import: one batch as float32)
BATCH_VECTORS = 65536
#: seconds an import waits for fast-plaid's lock (held by a running update, delete or merge of the index)
PLAID_LOCK_WAIT_S = 600.0
#: most (stored) vectors an import trains on: the codec's ``train_size`` and 40 per stage-1 centroid, up to this
TRAIN_VECTORS_MAX = 1 << 20


def _fail(path: Path | str, problem: str, fix: str) -> PlaidFormatError:
    return PlaidFormatError(f"{path}: {problem}; {fix}")


# --------------------------------------------------------------------------------------------- ids
class _PlainUnpickler(pickle.Unpickler):
    """Builds plain values only: dicts, lists, tuples, str, int, float, and numpy scalars (ids a user passed as
    numpy values). Any other global (the way a pickle runs code) is refused."""

    _ALLOWED = {
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"),
        ("numpy", "dtype"),
    }

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in self._ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}")


def _plain(v: Any) -> Any:
    return v.item() if isinstance(v, np.generic) else v


def _unpickle(data: bytes) -> Any:
    return _PlainUnpickler(io.BytesIO(data)).load()


_MAPPING_ERRORS = (
    pickle.UnpicklingError,
    EOFError,
    ValueError,
    TypeError,
    AttributeError,
    ImportError,
    IndexError,
)
_IDS_FIX = 'pass ids="plaid" to import with the PLAID document numbers 0..n-1 instead, or ids=[...]'


def _read_mapping(path: Path) -> dict:
    """PyLate's ``plaid_ids_to_documents_ids``: a pickled dict (``.pkl``) or a SqliteDict (``.sqlite``: table
    ``unnamed``, the document number as text, the id pickled)."""
    try:
        if path.suffix == ".pkl":
            mapping = _unpickle(path.read_bytes())
        else:
            con = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
            try:
                mapping = {
                    int(k): _unpickle(bytes(v)) for k, v in con.execute('SELECT key, value FROM "unnamed"')
                }
            finally:
                con.close()
    except (*_MAPPING_ERRORS, sqlite3.Error) as e:
        raise _fail(path, f"is not a PyLate id mapping ({e})", _IDS_FIX) from None
    if not isinstance(mapping, dict):
        raise _fail(path, f"holds a {type(mapping).__name__}, not PyLate's dict of ids", _IDS_FIX)
    return {_plain(k): _plain(v) for k, v in mapping.items()}


def _pylate_ids(path: Path, doclens: np.ndarray) -> list:
    """The user's id of each PLAID document (None for one PyLate removed: 0 tokens, no id)."""
    mapping = _read_mapping(path)
    missing = [i for i in np.flatnonzero(doclens).tolist() if i not in mapping]
    extra = [k for k in mapping if not (isinstance(k, int) and 0 <= k < len(doclens))]
    if missing or extra:
        raise _fail(
            path,
            f"maps {len(mapping)} documents but the PLAID index holds {len(doclens)}"
            + (f" (no id for document {missing[0]})" if missing else f" (no document {extra[0]!r})"),
            _IDS_FIX,
        )
    return [mapping.get(i) for i in range(len(doclens))]


# --------------------------------------------------------------------------------------------- files
def _json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise _fail(path, "is missing", "the PLAID index is incomplete: re-create it") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise _fail(path, f"is not valid JSON ({e})", "the file is damaged: re-create the index") from None


def _npy(path: Path, mmap: bool = False) -> np.ndarray:
    try:
        return np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
    except FileNotFoundError:
        raise _fail(path, "is missing", "the PLAID index is incomplete: re-create it") from None
    except (ValueError, OSError, EOFError) as e:
        raise _fail(
            path, f"is not a readable .npy array ({e})", "the file is damaged: re-create the index"
        ) from None


def _torch_load(path: Path) -> Any:
    """A torch archive of tensors (``weights_only=True``: no code runs)."""
    try:
        import torch
    except ImportError as e:
        raise MissingDependencyError(
            f"{path} is a torch archive (a Stanford ColBERT PLAID index): reading it needs torch, which is not "
            f"installed ({e}): run `pip install torch` (on a machine without a GPU: {TORCH_CPU_HINT})"
        ) from e
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise _fail(path, "is missing", "the PLAID index is incomplete: re-create it") from None
    except (RuntimeError, pickle.UnpicklingError, EOFError, ValueError, OSError) as e:
        raise _fail(path, f"is not a readable torch tensor archive ({' '.join(str(e).split())[:200]})",
                    "the file is damaged: re-create the index") from None  # fmt: skip


def _tensor(path: Path, value: Any = None) -> np.ndarray:
    t = _torch_load(path) if value is None else value
    if not hasattr(t, "numpy"):
        raise _fail(path, f"holds a {type(t).__name__}, not a tensor", "re-create the index")
    return t.numpy()


FAST_PLAID, STANFORD = "fast-plaid", "stanford"
#: PyLate's id mapping in <index_folder>/<index_name>: PLAID document number -> the user's id (>= 1.3, 1.2)
PYLATE_ID_FILES = ("plaid_ids_to_documents_ids.pkl", "plaid_ids_to_documents_ids.sqlite")


def _find_root(path: Path) -> tuple[Path, str, Path | None]:
    """(the PLAID directory, its layout, PyLate's id mapping file or None) for a PLAID or a PyLate index path."""
    if not path.is_dir():
        raise _fail(path, "is not a directory", "pass the directory of a fast-plaid or PyLate PLAID index")
    if (path / PYLATE_SUBDIR / "metadata.json").is_file():  # PyLate >= 1.3: <index_folder>/<index_name>
        root, kind, folder = path / PYLATE_SUBDIR, FAST_PLAID, path
    elif (path / "metadata.json").is_file() and (
        path / "centroids.npy"
    ).is_file():  # fast-plaid's own directory
        root, kind, folder = path, FAST_PLAID, path.parent if path.name == PYLATE_SUBDIR else None
    elif (path / "metadata.json").is_file() and (
        path / "centroids.pt"
    ).is_file():  # Stanford ColBERT (PyLate 1.2)
        root, kind, folder = path, STANFORD, path
    else:
        raise _fail(
            path,
            "holds no PLAID index (neither fast-plaid's metadata.json and centroids.npy, nor a fast_plaid_index/ "
            "folder, nor Stanford ColBERT's metadata.json and centroids.pt)",
            "pass the folder fast-plaid wrote (FastPlaid(index=...)) or PyLate's <index_folder>/<index_name>",
        )
    ids = next((folder / f for f in PYLATE_ID_FILES if (folder / f).is_file()), None) if folder else None
    return root, kind, ids


@dataclass
class _Chunk:
    load: Callable[
        [], tuple[np.ndarray, np.ndarray]
    ]  # its codes (rows,) and residuals (rows, dim * nbits / 8)
    offsets: np.ndarray  # (n_docs + 1,) row offsets of the chunk's documents
    first_doc: int


def _merged_layout(root: Path, suffix: str, rows: list[int], frozen: bool) -> list[int | None]:
    """Row offset of each chunk inside ``merged_{suffix}.npy`` as fast-plaid's loader finds it: the doclens order
    for an immutable frozen index or one without a manifest; else the row counts the manifest records, in chunk
    order, and None for a chunk the manifest does not record as merged (its rows must come from a shard file)."""
    path = root / f"merged_{suffix}.manifest.json"
    if frozen or not path.is_file():
        return np.concatenate([[0], np.cumsum(rows)[:-1]]).astype(int).tolist() if rows else []
    manifest = _json(path)
    if not isinstance(manifest, dict):
        raise _fail(path, "is not a JSON object", "re-create the index with fast-plaid")
    out: list[int | None] = []
    at = 0
    for i, n in enumerate(rows):
        entry = manifest.get(f"{i}.{suffix}.npy")
        ok = isinstance(entry, dict) and entry.get("merged") and entry.get("rows") == n
        out.append(at if ok else None)
        if isinstance(entry, dict) and isinstance(entry.get("rows"), int):
            at += entry["rows"]
    return out


def _payload(root: Path, suffix: str, rows: list[int], frozen: bool) -> list[np.ndarray]:
    """Each chunk's ``suffix`` rows, where fast-plaid's loader takes them from: its shard file when there is one
    (before 1.7, or staged by an update or delete), else its slice of the merged file."""
    merged_path = root / f"merged_{suffix}.npy"
    merged: np.ndarray | None = None
    layout: list[int | None] | None = None
    out = []
    for i, n in enumerate(rows):
        shard = root / f"{i}.{suffix}.npy"
        if shard.is_file() and not frozen:
            arr, where = _npy(shard, mmap=True), shard
        else:
            if merged is None:
                merged, layout = _npy(merged_path, mmap=True), _merged_layout(root, suffix, rows, frozen)
            assert layout is not None
            at = layout[i]
            if at is None:
                raise _fail(
                    merged_path.with_suffix(".manifest.json"),
                    f"does not record chunk {i}'s {n} rows as merged and {shard.name} is missing",
                    "the index is damaged or was being written: open it once with fast-plaid (which finishes an "
                    "interrupted merge) or re-create it",
                )
            arr, where = merged[at : at + n], merged_path
        if len(arr) != n:
            raise _fail(
                where,
                f"holds {len(arr)} rows for chunk {i}, whose doclens.{i}.json counts {n} tokens",
                "the index is damaged or was being written: open it once with fast-plaid (which finishes an "
                "interrupted merge) or re-create it",
            )
        out.append(arr)
    return out


def _decode(
    codes: np.ndarray, packed: np.ndarray, centroids: np.ndarray, weights: np.ndarray, nbits: int
) -> np.ndarray:
    """fast-plaid's reconstruction of token vectors (``decompress_residuals``), in float32."""
    n, dim = len(codes), centroids.shape[1]
    bits = np.unpackbits(np.ascontiguousarray(packed), axis=1).reshape(n, dim, nbits)  # MSB-first bit stream
    buckets = np.zeros((n, dim), np.intp)
    for k in range(nbits):  # a dimension's bucket is written least significant bit first
        buckets |= bits[:, :, k].astype(np.intp) << k
    out = centroids[codes] + weights[buckets]
    norms = np.sqrt(np.einsum("ij,ij->i", out, out))
    out /= np.maximum(norms, 1e-12)[:, None]
    return out


@dataclass
class PlaidIndex:
    """A PLAID index on disk, read-only: its documents' token vectors decode on demand (:meth:`decode`,
    :meth:`batches`). Made by :func:`read_plaid`. ``ids[i]`` is document ``i``'s id (None: removed by PyLate)."""

    path: Path
    layout: str  # "fast-plaid" | "stanford"
    dim: int
    nbits: int
    ids: list
    id_source: str  # "pylate" | "plaid" | "given"
    doclens: np.ndarray
    metadata_db: Path | None
    _centroids: np.ndarray = field(repr=False)
    _weights: np.ndarray = field(repr=False)
    _chunks: list[_Chunk] = field(repr=False)
    _loaded: tuple[int, np.ndarray, np.ndarray] | None = field(default=None, repr=False)

    @property
    def n_docs(self) -> int:
        return len(self.doclens)

    @property
    def n_vectors(self) -> int:
        return int(self.doclens.sum())

    def kept(self) -> np.ndarray:
        """The documents an import adds: those with tokens and an id."""
        return np.flatnonzero((self.doclens > 0) & np.array([i is not None for i in self.ids], bool))

    def _arrays(self, c: int) -> tuple[np.ndarray, np.ndarray]:
        """Chunk ``c``'s codes and residuals, checked (one chunk is held at a time)."""
        if self._loaded is None or self._loaded[0] != c:
            codes, res = self._chunks[c].load()
            rows, width = int(self._chunks[c].offsets[-1]), self.dim * self.nbits // 8
            if codes.ndim != 1 or len(codes) != rows or not np.issubdtype(codes.dtype, np.integer):
                raise _fail(self.path, f"chunk {c} holds {codes.dtype} codes of shape {codes.shape} for the {rows} "
                            f"tokens its doclens.{c}.json counts", "the index is damaged: re-create it")  # fmt: skip
            if res.dtype != np.uint8 or res.shape != (rows, width):
                raise _fail(self.path, f"chunk {c}'s residuals are {res.dtype} of shape {res.shape}, not ({rows}, "
                            f"{width}) uint8 for dim {self.dim} and nbits {self.nbits}",
                            "the payload does not match the centroids and nbits: re-create the index")  # fmt: skip
            self._loaded = (c, codes, res)
        return self._loaded[1], self._loaded[2]

    def decode(self, docs: Sequence[int] | np.ndarray) -> Ragged:
        """Token vectors of PLAID documents ``docs`` (numbers ``0..n_docs-1``), float32, in that order."""
        docs = np.asarray(docs, np.int64).reshape(-1)
        if len(docs) and (docs.min() < 0 or docs.max() >= self.n_docs):
            raise InvalidArgumentError(f"document numbers must lie in 0..{self.n_docs - 1}")
        starts = np.array([c.first_doc for c in self._chunks], np.int64)
        chunk_of = np.searchsorted(starts, docs, side="right") - 1
        codes: list[Any] = [None] * len(docs)
        packed: list[Any] = [None] * len(docs)
        for c in np.unique(chunk_of).tolist():  # chunk by chunk: each is loaded once
            cc, rr = self._arrays(c)
            ch = self._chunks[c]
            for pos in np.flatnonzero(chunk_of == c).tolist():
                a, b = ch.offsets[docs[pos] - ch.first_doc], ch.offsets[docs[pos] - ch.first_doc + 1]
                codes[pos], packed[pos] = np.asarray(cc[a:b], np.int64), np.asarray(rr[a:b])
        offsets = np.zeros(len(docs) + 1, np.int64)
        np.cumsum(self.doclens[docs], out=offsets[1:])
        if not len(docs):
            return Ragged(np.zeros((0, self.dim), np.float32), offsets)
        codes_a = np.concatenate(codes)
        if len(codes_a) and (codes_a.min() < 0 or codes_a.max() >= len(self._centroids)):
            raise _fail(self.path, f"a token's centroid id is outside 0..{len(self._centroids) - 1}",
                        "the codes do not belong to these centroids: re-create the index")  # fmt: skip
        return Ragged(
            _decode(codes_a, np.concatenate(packed), self._centroids, self._weights, self.nbits), offsets
        )

    def batches(self, max_vectors: int = BATCH_VECTORS) -> Iterator[np.ndarray]:
        """The kept documents (:meth:`kept`) in order, in runs of about ``max_vectors`` tokens (a longer document
        is a run of its own)."""
        docs = self.kept()
        start, total = 0, 0
        for i, n in enumerate(self.doclens[docs].tolist()):
            if total and total + n > max_vectors:
                yield docs[start:i]
                start, total = i, 0
            total += n
        if start < len(docs):
            yield docs[start:]

    def metadata(self, docs: np.ndarray) -> pa.Table | None:
        """The ``metadata.db`` columns of documents ``docs`` (nulls for documents without a row), or None without
        a ``metadata.db``."""
        if self.metadata_db is None or not len(docs):
            return None
        lo, hi = int(docs.min()), int(docs.max())
        con = sqlite3.connect(f"{self.metadata_db.resolve().as_uri()}?mode=ro", uri=True)
        try:
            cols = [
                (r[1], str(r[2]).upper())
                for r in con.execute("PRAGMA table_info(METADATA)")
                if r[1] != "_subset_"
            ]
            quoted = "".join(', "' + c.replace('"', '""') + '"' for c, _ in cols)
            rows = con.execute(
                f'SELECT "_subset_"{quoted} FROM METADATA WHERE "_subset_" BETWEEN ? AND ?',  # noqa: S608 - names from its schema
                (lo, hi),
            ).fetchall()
        except sqlite3.Error as e:
            raise _fail(self.metadata_db, f"cannot be read as fast-plaid's metadata ({e})",
                        "pass metadata=False (--no-metadata) to import without it") from None  # fmt: skip
        finally:
            con.close()
        from .store._layout import reserved_name

        taken = next((c for c, _ in cols if reserved_name(c)), None)
        if taken is not None:
            raise _fail(self.metadata_db, f"has a column {taken!r}, a name mvstore reserves (search results' columns "
                        "query, rank, id, score, and names starting with '_')",
                        f'rename it in metadata.db (ALTER TABLE METADATA RENAME COLUMN "{taken}" TO "doc_'
                        f'{taken.lstrip("_")}") or pass metadata=False (--no-metadata)')  # fmt: skip
        types = {"INTEGER": pa.int64(), "REAL": pa.float64(), "TEXT": pa.string(), "BLOB": pa.binary()}
        at = {r[0]: r for r in rows}
        table = {}
        for j, (name, decl) in enumerate(cols, start=1):
            values = [at[d][j] if d in at else None for d in docs.tolist()]
            try:
                table[name] = pa.array(values, type=types.get(decl))
            except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError) as e:
                raise _fail(self.metadata_db, f"column {name!r} ({decl}) holds values of mixed types ({e})",
                            "pass metadata=False (--no-metadata) to import without it") from None  # fmt: skip
        return pa.table(table) if table else None


def _nbits(where: Path, nbits: Any) -> int:
    if isinstance(nbits, bool) or nbits not in (1, 2, 4, 8):
        raise _fail(where, f"nbits is {nbits!r}", "PLAID writes 1, 2, 4 or 8: re-create the index")
    return int(nbits)


def _codec_arrays(
    root: Path, nbits: int, centroids: np.ndarray, weights: np.ndarray, names: tuple[str, str]
) -> None:
    if centroids.ndim != 2 or not np.issubdtype(centroids.dtype, np.floating):
        raise _fail(root / names[0], f"is a {centroids.dtype} array of shape {centroids.shape}",
                    "PLAID writes a float (n_centroids, dim) array: re-create the index")  # fmt: skip
    if weights.ndim != 1 or len(weights) != 2**nbits:
        raise _fail(root / names[1], f"holds {weights.size} bucket weights, not 2**nbits = {2**nbits}",
                    "it belongs to another index: re-create the index")  # fmt: skip
    if centroids.shape[1] * nbits % 8:
        raise _fail(
            root,
            f"dim {centroids.shape[1]} * nbits {nbits} is not a whole number of bytes",
            "re-create the index",
        )


def _doclens(root: Path, n_chunks: Any) -> list[np.ndarray]:
    if isinstance(n_chunks, bool) or not isinstance(n_chunks, int) or n_chunks < 0:
        raise _fail(root / "metadata.json", f"num_chunks is {n_chunks!r}", "re-create the index")
    out = []
    for i in range(n_chunks):
        lens = _json(root / f"doclens.{i}.json")
        if not isinstance(lens, list) or not all(
            isinstance(x, int) and not isinstance(x, bool) and x >= 0 for x in lens
        ):
            raise _fail(root / f"doclens.{i}.json", "is not a list of token counts", "re-create the index")
        out.append(np.asarray(lens, np.int64))
    return out


def _ids(ids: Any, ids_file: Path | None, doclens: np.ndarray, root: Path) -> tuple[list, str]:
    n_docs = len(doclens)
    if isinstance(ids, str) and ids == "plaid" or ids is None and ids_file is None:
        return list(range(n_docs)), "plaid"
    if ids is None:
        assert ids_file is not None
        return _pylate_ids(ids_file, doclens), "pylate"
    if isinstance(ids, (str, bytes)) or not hasattr(ids, "__len__"):
        raise InvalidDtypeError(f'ids must be None, "plaid" or a sequence of {n_docs} ids, got {ids!r:.80}')
    if len(ids) != n_docs:
        raise InvalidArgumentError(
            f"{len(ids)} ids given for the {n_docs} documents of {root}; pass one id per document"
        )
    return [_plain(x) for x in ids], "given"


_Read = tuple[
    int, np.ndarray, np.ndarray, list[np.ndarray], list[Callable[[], tuple[np.ndarray, np.ndarray]]]
]


def _read_fast_plaid(root: Path, meta: Any) -> _Read:
    """nbits, centroids and weights (float16-rounded, as fast-plaid loads them), doclens and payload loaders."""
    if not isinstance(meta, dict) or "num_chunks" not in meta or "nbits" not in meta:
        raise _fail(root / "metadata.json", "has no num_chunks / nbits: it is not fast-plaid's metadata",
                    "pass the directory of a fast-plaid index")  # fmt: skip
    nbits = _nbits(root / "metadata.json", meta["nbits"])
    centroids, weights = _npy(root / "centroids.npy"), _npy(root / "bucket_weights.npy")
    _codec_arrays(root, nbits, centroids, weights, ("centroids.npy", "bucket_weights.npy"))
    doclens = _doclens(root, meta["num_chunks"])
    rows = [int(x.sum()) for x in doclens]
    frozen = bool(meta.get("frozen")) and not meta.get(
        "mutable"
    )  # fast-plaid reads only the merged files then
    codes, residuals = _payload(root, "codes", rows, frozen), _payload(root, "residuals", rows, frozen)
    loads = [lambda c=c, r=r: (c, r) for c, r in zip(codes, residuals)]
    return (
        nbits,
        centroids.astype(np.float16).astype(np.float32),
        weights.astype(np.float16).astype(np.float32),
        doclens,
        loads,
    )


def _read_stanford(root: Path, meta: Any) -> _Read:
    """The same for a Stanford ColBERT index (centroids and weights as stored: float16 and float32)."""
    config = meta.get("config") if isinstance(meta, dict) else None
    if not isinstance(config, dict) or "num_chunks" not in meta:
        raise _fail(root / "metadata.json", "has no config / num_chunks: it is not a ColBERT index's metadata",
                    "pass the directory of a PLAID index")  # fmt: skip
    nbits = _nbits(root / "metadata.json", config.get("nbits"))
    centroids = _tensor(root / "centroids.pt")
    buckets = _torch_load(root / "buckets.pt")
    if not isinstance(buckets, (tuple, list)) or len(buckets) != 2:
        raise _fail(
            root / "buckets.pt", "is not a (bucket_cutoffs, bucket_weights) pair", "re-create the index"
        )
    weights = _tensor(root / "buckets.pt", buckets[1])
    _codec_arrays(root, nbits, centroids, weights, ("centroids.pt", "buckets.pt"))
    if config.get("dim") not in (None, centroids.shape[1]):
        raise _fail(root / "centroids.pt", f"holds {centroids.shape[1]}-d centroids but the config says dim "
                    f"{config['dim']}", "re-create the index")  # fmt: skip
    loads = [
        lambda i=i: (_tensor(root / f"{i}.codes.pt"), _tensor(root / f"{i}.residuals.pt"))
        for i in range(meta["num_chunks"] if isinstance(meta["num_chunks"], int) else 0)
    ]
    return (
        nbits,
        centroids.astype(np.float32),
        weights.astype(np.float32),
        _doclens(root, meta["num_chunks"]),
        loads,
    )


def read_plaid(path: str | os.PathLike, *, ids: Any = None, metadata: bool = True) -> PlaidIndex:
    """Open a PLAID index for reading (nothing is written to it): the directory fast-plaid wrote
    (``FastPlaid(index=...)``), PyLate's ``<index_folder>/<index_name>`` (fast-plaid inside since PyLate 1.3,
    Stanford ColBERT before), or a Stanford ColBERT index directory. ``ids``: None (PyLate's id mapping when
    there is one, else the PLAID document numbers), ``"plaid"`` (document numbers ``0..n-1``) or a sequence of
    one id per document. ``metadata=False`` ignores fast-plaid's ``metadata.db``. Raises
    :class:`~mvstore.exceptions.PlaidFormatError` for what it cannot read."""
    root, layout, ids_file = _find_root(Path(path))
    meta = _json(root / "metadata.json")
    read = _read_fast_plaid if layout == FAST_PLAID else _read_stanford
    nbits, centroids, weights, doclens_per_chunk, loads = read(root, meta)
    chunks, first = [], 0
    for lens, load in zip(doclens_per_chunk, loads):
        offsets = np.zeros(len(lens) + 1, np.int64)
        np.cumsum(lens, out=offsets[1:])
        chunks.append(_Chunk(load, offsets, first))
        first += len(lens)
    doclens = np.concatenate(doclens_per_chunk) if doclens_per_chunk else np.zeros(0, np.int64)
    id_list, source = _ids(ids, ids_file, doclens, root)
    db = root / "metadata.db"
    plaid = PlaidIndex(
        path=root, layout=layout, dim=int(centroids.shape[1]), nbits=nbits, ids=id_list, id_source=source,
        doclens=doclens, metadata_db=db if metadata and layout == FAST_PLAID and db.is_file() else None,
        _centroids=centroids, _weights=weights, _chunks=chunks,
    )  # fmt: skip
    if layout == FAST_PLAID:  # memory maps: every chunk's shapes are checked now, without reading the payload
        for c in range(len(chunks)):
            plaid._arrays(c)
    return plaid


# --------------------------------------------------------------------------------------------- import
@contextlib.contextmanager
def _fast_plaid_lock(root: Path) -> Iterator[None]:
    """fast-plaid's ``plaid.lock`` (the ``filelock`` its writers hold exclusively: ``flock``), held shared while
    an import reads, so no fast-plaid process rewrites the files under it; opened read-only (nothing is
    created). Waits up to :data:`PLAID_LOCK_WAIT_S` seconds, then raises IndexBusyError."""
    try:
        fd = os.open(root / "plaid.lock", os.O_RDONLY)
    except FileNotFoundError:  # no fast-plaid process has opened this index here
        yield
        return
    try:
        deadline = time.monotonic() + PLAID_LOCK_WAIT_S
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise IndexBusyError(
                        f"fast-plaid has held {root / 'plaid.lock'} for more than {PLAID_LOCK_WAIT_S:g} s (an "
                        "update, delete or merge of that index is running); import once it has finished"
                    ) from None
                time.sleep(0.05)
        yield
    finally:
        os.close(fd)


def _train_sample(plaid: PlaidIndex, n_vectors: int, seed: int) -> Ragged:
    """Random kept documents (whole) holding about ``n_vectors`` tokens, decoded."""
    order = np.random.default_rng(seed).permutation(plaid.kept())
    take = int(np.searchsorted(np.cumsum(plaid.doclens[order]), n_vectors)) + 1
    return plaid.decode(np.sort(order[:take]))


def _target(
    plaid: PlaidIndex, uri: Any, spec: Any, exist_ok: bool, storage_options: Any, create_options: dict
) -> Any:
    """The index at ``uri`` (``exist_ok``: an existing one, its dim and spec checked) or a new one."""
    from . import store
    from .store._fs import Location
    from .store._layout import MANIFEST

    if exist_ok and Location(uri, storage_options).exists(MANIFEST):
        idx = store.open(uri, storage_options=storage_options)
        if idx.dim != plaid.dim:
            raise DimensionMismatchError(
                f"the index at {str(uri)!r} holds {idx.dim}-d vectors but the PLAID index {plaid.path} holds "
                f"{plaid.dim}-d ones; import it into a new index (another uri)"
            )
        if spec is not None and idx.manifest["spec"] != str(spec):
            raise SpecError(
                f"the index at {str(uri)!r} has spec {idx.manifest['spec']!r}, not {spec!r}; drop spec= to add "
                "with its spec, or import into a new index"
            )
        return idx
    if create_options.get("n_centroids") is None and (
        spec is None or isinstance(spec, str) and spec != "auto"
    ):
        # stage-1 centroids sized for the whole collection, as one first add of it would be
        pool_factor = spec_mod.parse(spec or spec_mod.default_spec(plaid.dim)).pool_factor
        n_stored = max(1, int(plaid.doclens[plaid.kept()].sum() / pool_factor))
        create_options = {**create_options, "n_centroids": default_n_centroids(n_stored)}
    return store.create(uri, spec, plaid.dim, storage_options=storage_options, **create_options)


def import_plaid(
    plaid_dir: str | os.PathLike,
    uri: str | os.PathLike,
    spec: str | None = None,
    *,
    ids: Any = None,
    metadata: bool = True,
    exist_ok: bool = False,
    batch_vectors: int = BATCH_VECTORS,
    progress: bool | None = None,
    storage_options: dict[str, str] | None = None,
    **create_options: Any,
) -> Any:
    """Import a PLAID index (fast-plaid, PyLate, Stanford ColBERT: :func:`read_plaid`) into the mvstore index
    at ``uri``: each document's token vectors as PLAID reconstructs them (see :mod:`mvstore.importers`), its id
    (PyLate's mapping, or the PLAID document number; ``ids=`` as :func:`read_plaid`) and fast-plaid's
    ``metadata.db`` columns (``metadata=False``: not). Documents with no token vectors are skipped: silently
    when PyLate removed them (no id), with a warning otherwise.

    A new index is created with ``spec`` (None: :func:`mvstore.default_spec` of the PLAID dim) and
    ``create_options`` (``n_centroids``, ``train_size``, ``seed``, ``keep_source``, ... as
    :func:`mvstore.create`; ``n_centroids`` defaults to what one first add of every PLAID vector would get, and
    is recorded), and trained on random documents from the whole PLAID index (not its first ones):
    ``train_size`` stored vectors, or 40 per stage-1 centroid when that is more, at most 2**20.
    ``exist_ok=True`` adds to an existing index instead (same dim; ``spec``, if given, must be its spec). The
    documents are decoded and written ``batch_vectors`` tokens at a time (memory: one batch, and the training
    sample before it) and committed once (:meth:`Index.add_batches`), while fast-plaid's ``plaid.lock`` is held
    shared (no fast-plaid update or delete rewrites the files meanwhile; they wait, and an import waits for
    them): a failed import adds nothing (a new index it created stays, trained and empty: remove it, or import
    again with ``exist_ok=True``). Returns the :class:`~mvstore.Index`."""
    from ._checks import check_int

    check_int("batch_vectors", batch_vectors, lo=1, what="token vectors decoded per written batch",
              error=InvalidArgumentError)  # fmt: skip
    with _fast_plaid_lock(_find_root(Path(plaid_dir))[0]):
        return _import(read_plaid(plaid_dir, ids=ids, metadata=metadata), uri, spec, exist_ok, batch_vectors,
                       progress, storage_options, create_options)  # fmt: skip


def _import(plaid: PlaidIndex, uri: Any, spec: Any, exist_ok: bool, batch_vectors: int, progress: bool | None,
            storage_options: Any, create_options: dict) -> Any:  # fmt: skip
    from .search.postings import CENTROID_SAMPLE

    kept = plaid.kept()
    if not len(kept):
        raise _fail(
            plaid.path, "holds no documents with token vectors", "nothing to import: pass another index"
        )
    empty = [plaid.ids[i] for i in np.flatnonzero(plaid.doclens == 0).tolist() if plaid.ids[i] is not None]
    if empty:
        warnings.warn(
            f"{len(empty)} documents of {plaid.path} have no token vectors and are not imported (ids "
            f"{', '.join(map(repr, empty[:5]))}{', ...' if len(empty) > 5 else ''}): mvstore stores at least one "
            "per document; a Stanford ColBERT index keeps a removed document that way",
            stacklevel=3,
        )
    plaid.metadata(kept[:1])  # metadata.db's columns checked before anything is created
    idx = _target(plaid, uri, spec, exist_ok, storage_options, create_options)
    if idx._view.state is None:  # untrained: fit on documents drawn from the whole PLAID index
        pool_factor = idx.spec.pool_factor if idx.spec is not None else 1.0
        want = max(idx.options["train_size"], CENTROID_SAMPLE * (idx.options.get("n_centroids") or 1))
        n_train = int(min(want, TRAIN_VECTORS_MAX) * pool_factor)
        idx.train(_train_sample(plaid, n_train, idx.options.get("seed", 0)), progress=progress)

    def batches() -> Iterator[tuple]:
        for docs in plaid.batches(batch_vectors):
            batch_ids, meta = [plaid.ids[i] for i in docs.tolist()], plaid.metadata(docs)
            vectors = plaid.decode(docs)
            yield (batch_ids, vectors) if meta is None else (batch_ids, vectors, meta)

    idx.add_batches(batches(), progress=progress)
    return idx
