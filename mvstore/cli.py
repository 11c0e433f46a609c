"""The ``mvstore`` command line: build, search, eval, info, verify, upgrade, bench, tune, report.

::

    mvstore build INDEX --input docs.jsonl --spec pool2,pca96,rq2      # texts, encoded by the bundled MiniLM
    mvstore build INDEX --input vectors.npz --spec pq16                # precomputed token vectors
    mvstore search INDEX "what causes tides" -k 5 --where "year > 2020" [--json]
    mvstore eval BEIR_DIR --index INDEX | --spec SPEC [--max-docs N] [--json]
    mvstore info INDEX [--json]
    mvstore upgrade INDEX [--storage-option K=V] [--json]   # an index of an older format, in place
    mvstore bench BEIR_DIR --spec fp16 --spec pool2,pca96,rq2 [--json]
    mvstore tune BEIR_DIR --budget 20 [--json]          (or: tune docs.jsonl --queries queries.txt)
    mvstore report frontier.jsonl -o frontier.png

Inputs: JSONL (one object per line), Parquet, or ``.npz`` with packed token vectors (``ids`` (n,),
``vectors`` (n_tokens, dim) float, ``offsets`` (n + 1,) int). A row's token vectors come from the
``--vectors-column`` (a list of vectors) when present, else its ``--text-column`` is encoded. Other scalar
columns are stored as metadata (filterable with ``--where``).

User mistakes print one line ``mvstore: error: ...`` on stderr and exit with code 2 (``--debug`` shows the
traceback). ``--encoder`` picks the text encoder: ``hf`` (default: the bundled MiniLM), ``hf:MODEL``,
``st:MODEL``, ``pylate:MODEL`` or ``colbert:PATH`` (a PyLate-saved ColBERT model, run without PyLate); MODEL is
a hub id or a local path. ``build`` records it in the index (``options.encoder`` of ``mvstore.json``, as
``mvstore.create(uri, encoder=...)`` does) and ``search`` / ``eval`` encode text queries with the recorded one
(``--encoder`` overrides it). An index built from texts stores each encoded text in its ``text`` column.
Indexes built by older versions recorded the encoder in ``INDEX/mvstore-cli.json``, which is still read.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .store._layout import TEXT as TEXT_COLUMN  # the column an index built from texts stores them in

__all__ = ["main", "build_parser"]

CLI_META = "mvstore-cli.json"
TEXT_CHUNK = 256


class UsageError(ValueError):
    """A command-line input that cannot work (the message says what to pass instead)."""


def _progress(total: int | None, desc: str, unit: str, quiet: bool) -> Any:
    """A progress bar (``-q``: none; otherwise on a terminal, see :mod:`mvstore._progress`)."""
    from ._progress import bar

    return bar(total, desc, unit=unit, progress=False if quiet else None)


def _emit(rows: Sequence[dict], as_json: bool, columns: Sequence[str] | None = None) -> None:
    if as_json:
        for r in rows:
            print(json.dumps(r, default=_jsonable))
    else:
        from .report import format_table

        print(format_table([{k: _short(v) for k, v in r.items()} for r in rows], columns))


def _jsonable(v: Any) -> Any:
    if isinstance(v, np.generic):
        return v.item()
    if hasattr(v, "isoformat"):
        return v.isoformat()
    return str(v)


def _short(v: Any, n: int = 60) -> Any:
    return v if not isinstance(v, str) or len(v) <= n else v[: n - 1] + "…"


# ------------------------------------------------------------------------------------------ inputs
def _read_table(path: str) -> Any:
    """A JSONL or Parquet file as an Arrow table."""
    import pyarrow as pa

    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"input file {path!r} does not exist")
    name = p.name.lower()
    if name.endswith(".parquet"):
        import pyarrow.parquet as pq

        return pq.read_table(p)
    if name.endswith((".jsonl", ".jsonl.gz", ".json", ".ndjson")):
        import gzip

        rows = []
        opener = gzip.open if name.endswith(".gz") else open
        with opener(p, "rt", encoding="utf-8") as f:
            for n, line in enumerate(f, 1):
                if line.strip():
                    try:
                        rows.append(json.loads(line))
                    except json.JSONDecodeError as e:
                        raise UsageError(f"{path}:{n} is not valid JSON ({e.msg}); expected one object per line") from None
        if not rows:
            raise UsageError(f"{path} holds no records")
        try:
            return pa.Table.from_pylist(rows)
        except (pa.ArrowInvalid, pa.ArrowTypeError) as e:
            raise UsageError(f"{path}: records do not form a table ({e}); give every line the same fields") from e
    raise UsageError(f"cannot read {path!r}: use a .jsonl, .jsonl.gz, .parquet or .npz file")


def _read_npz(path: str) -> tuple[list, Any]:
    from .ragged import Ragged

    if not Path(path).is_file():
        raise FileNotFoundError(f"input file {path!r} does not exist")
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
        raise UsageError(f"{path}: 'ids' has {len(ids)} entries but 'offsets' describes {len(docs)} documents")
    return ids, docs


class Source:
    """Documents of an input file: ids, optional texts, optional vectors, metadata table."""

    def __init__(self, path: str, args: argparse.Namespace):
        self.texts: list[str] | None = None
        self.vectors = None
        self.metadata = None
        if path.lower().endswith(".npz"):
            self.ids, self.vectors = _read_npz(path)
            return
        tbl = _read_table(path)
        cols = tbl.column_names
        if args.id_column not in cols:
            raise UsageError(f"{path} has no id column {args.id_column!r} (columns: {cols}); pass --id-column NAME")
        self.ids = tbl.column(args.id_column).to_pylist()
        if args.vectors_column in cols:
            from .ragged import Ragged

            mats = tbl.column(args.vectors_column).to_pylist()
            self.vectors = Ragged.from_list([np.asarray(m, np.float32) for m in mats])
        elif args.text_column in cols:
            texts = tbl.column(args.text_column).to_pylist()
            if args.title_column:
                if args.title_column not in cols:
                    raise UsageError(f"{path} has no title column {args.title_column!r} (columns: {cols})")
                titles = tbl.column(args.title_column).to_pylist()
                texts = [f"{t or ''} {x or ''}".strip() for t, x in zip(titles, texts)]
            bad = [i for i, t in enumerate(texts) if not isinstance(t, str) or not t.strip()]
            if bad:
                raise UsageError(f"record {bad[0]} (id {self.ids[bad[0]]!r}) has an empty text; drop it first")
            self.texts = texts
        else:
            raise UsageError(
                f"{path} has neither a vectors column {args.vectors_column!r} nor a text column "
                f"{args.text_column!r} (columns: {cols}); pass --text-column or --vectors-column"
            )
        self.metadata = self._metadata(tbl, args)

    @staticmethod
    def _metadata(tbl: Any, args: argparse.Namespace) -> Any:
        import pyarrow as pa

        skip = {args.id_column, args.vectors_column}
        if args.metadata is not None:
            names = [c for c in args.metadata.split(",") if c]
            unknown = [c for c in names if c not in tbl.column_names]
            if unknown:
                raise UsageError(f"--metadata names unknown column(s) {unknown}; the input has {tbl.column_names}")
        else:
            scalar = (pa.types.is_string, pa.types.is_large_string, pa.types.is_integer, pa.types.is_floating,
                      pa.types.is_boolean, pa.types.is_timestamp, pa.types.is_date)
            names = [f.name for f in tbl.schema if f.name not in skip and any(t(f.type) for t in scalar)]
        names = [c for c in names if not c.startswith("_")]
        return tbl.select(names) if names else None

    def __len__(self) -> int:
        return len(self.ids)


# ---------------------------------------------------------------------------------------- encoders
def _encoder_given(args: argparse.Namespace) -> bool:
    return any(getattr(args, a, None) is not None for a in ("encoder", "model", "query_max_length", "doc_max_length"))


def _make_encoder(args: argparse.Namespace) -> Any:
    """The encoder the flags name (``--encoder``, ``--model``, the max lengths), in a cache with ``--cache``."""
    from .encoders import make_encoder

    enc = make_encoder(_encoder_spec(args), query_max_length=args.query_max_length,
                       doc_max_length=args.doc_max_length, progress=False if args.quiet else None)
    return _cached(enc, args)


def _encoder_spec(args: argparse.Namespace) -> str:
    """The encoder's short form the flags name (``--encoder``, or ``--model M`` = ``hf:M``; default ``hf``)."""
    if args.encoder is not None and args.model is not None:
        raise UsageError("--model MODEL is short for --encoder hf:MODEL: pass one of the two")
    return str(args.encoder or ("hf:" + args.model if args.model else "hf"))


def _cached(enc: Any, args: argparse.Namespace) -> Any:
    from .encoders import CachedEncoder

    return CachedEncoder(enc, args.cache, progress=False) if getattr(args, "cache", None) else enc


def _encode(encoder: Any, texts: Sequence[str], role: str, quiet: bool) -> Any:
    from .ragged import Ragged

    fn = encoder.encode_documents if role == "doc" else encoder.encode_queries
    if len(texts) <= TEXT_CHUNK:
        return fn(list(texts))
    parts = []
    with _progress(len(texts), f"encoding {role}s", "text", quiet) as bar:
        for s in range(0, len(texts), TEXT_CHUNK):
            parts.append(fn(list(texts[s : s + TEXT_CHUNK])))
            bar.update(len(parts[-1]))
    return Ragged.concat(parts)


def _index_meta(idx: Any) -> dict[str, Any]:
    try:
        return json.loads(idx.loc.read(CLI_META))
    except FileNotFoundError:
        return {}


def _legacy_encoder(idx: Any) -> dict[str, Any] | None:
    """The encoder description of an index an older CLI built (its settings were in ``mvstore-cli.json``)."""
    old = _index_meta(idx).get("encoder")
    if not isinstance(old, dict):
        return None
    return {"kind": "hf", "model": old.get("model"), "query_max_length": int(old.get("query_max_length") or 64),
            "doc_max_length": int(old.get("doc_max_length") or 256)}


def _index_encoder(idx: Any, args: argparse.Namespace) -> Any:
    """The encoder of text queries: the flags' (``--encoder`` ...), else the one the index records."""
    from .exceptions import DimensionMismatchError

    if _encoder_given(args):
        enc = _make_encoder(args)
        if enc.dim != idx.dim:
            raise DimensionMismatchError(f"--encoder {enc.name} outputs {enc.dim}-d vectors but the index holds "
                                         f"{idx.dim}-d ones: pass the encoder the index was built with")
        return enc
    if idx.options.get("encoder") is not None:
        return _cached(idx.encoder, args)
    legacy = _legacy_encoder(idx)
    if legacy is not None:
        from .encoders import encoder_from_config

        return _cached(encoder_from_config(legacy), args)
    raise UsageError("the index records no encoder (it was built from vectors): pass --encoder (e.g. hf, "
                     "colbert:PATH, pylate:MODEL: the one its vectors came from) or query with vectors "
                     "(--query-file queries.npz)")


# -------------------------------------------------------------------------------------------- build
def _build(root: str, spec: str, ids: list, docs: Any, metadata: Any, args: argparse.Namespace,
           texts: list[str] | None = None, encoder: Any = None) -> Any:
    """Build the index for ``root`` in a sibling directory (train on a random sample of documents, then stream
    batches: encode -> pool -> compress -> write, with progress bars), and only once it is complete move it
    to ``root``. With ``--overwrite`` the old index is swapped out in one atomic exchange and deleted after:
    a failed or killed build leaves the old index (or nothing, for a new path) exactly as it was."""
    import shutil

    import mvstore.store as ms

    from .exceptions import IndexExistsError
    from .store._layout import MANIFEST, write_lock

    n = len(ids)
    if n == 0:
        raise UsageError("the input has no documents")
    root = os.path.abspath(root)
    replace = os.path.exists(os.path.join(root, MANIFEST))
    if replace and not getattr(args, "overwrite", False):
        raise IndexExistsError(
            f"an mvstore index already exists at {root!r}: pass --overwrite to replace it, or choose another path"
        )
    if os.path.exists(root) and not replace and (not os.path.isdir(root) or os.listdir(root)):
        raise IndexExistsError(f"{root!r} exists and is not an empty directory (nor an mvstore index); choose a new path")
    parent, name = os.path.split(root)
    os.makedirs(parent, exist_ok=True)
    _remove_stale_builds(parent, name)
    tmp = os.path.join(parent, f".{name}{_BUILDING}{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    dim = encoder.dim if docs is None else docs.dim
    if texts is not None:  # the encoded texts, as add_texts stores them (eval --index compares them)
        import pyarrow as pa

        if metadata is not None and TEXT_COLUMN in metadata.column_names and getattr(args, "text_column", None) == TEXT_COLUMN:
            metadata = metadata.drop_columns([TEXT_COLUMN]) if metadata.num_columns > 1 else None  # stored below
        if metadata is not None and TEXT_COLUMN in metadata.column_names:
            raise UsageError(f"the input has a {TEXT_COLUMN!r} column besides --text-column {args.text_column!r}; "
                             f"the index stores the encoded texts as {TEXT_COLUMN!r}: leave that column out with "
                             "--metadata COL,COL,... or rename it")
        col = pa.array(texts, pa.string())
        metadata = pa.table({TEXT_COLUMN: col}) if metadata is None else metadata.append_column(TEXT_COLUMN, col)
    try:
        idx = ms.create(tmp, spec=spec, dim=dim, keep_source=getattr(args, "keep_source", False),
                        max_bytes_per_token=getattr(args, "max_bytes_per_token", None), encoder=encoder)
        _fill(idx, spec, ids, docs, metadata, args, texts, encoder)
        if replace:
            with write_lock(root):  # not in the middle of another process's write to the old index
                _exchange_dirs(tmp, root)
        else:
            os.rename(tmp, root)  # onto a missing path or an empty directory
    finally:
        shutil.rmtree(tmp, ignore_errors=True)  # the unfinished build, or the old index swapped out
    return ms.open(root)


#: infix of the sibling directory a build writes to: ``.<name>.mvstore-build-<pid>``
_BUILDING = ".mvstore-build-"


def _remove_stale_builds(parent: str, name: str) -> None:
    """Delete build directories for ``name`` left by builds that were killed (their pid is gone)."""
    import shutil

    prefix = f".{name}{_BUILDING}"
    for entry in os.listdir(parent):
        pid = entry[len(prefix):]
        if not entry.startswith(prefix) or not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            shutil.rmtree(os.path.join(parent, entry), ignore_errors=True)
        except PermissionError:  # alive, another user's
            pass


def _exchange_dirs(a: str, b: str) -> None:
    """Atomically swap two directories (Linux ``renameat2(RENAME_EXCHANGE)``, macOS ``renamex_np(RENAME_SWAP)``):
    at every instant ``b`` is either the old or the new directory. Where the filesystem cannot exchange, ``b`` is
    renamed aside to ``<b>.mvstore-replaced`` first and then replaced (a crash between the two renames leaves
    the old index there, complete)."""
    import ctypes
    import errno

    libc = ctypes.CDLL(None, use_errno=True)
    fa, fb = os.fsencode(a), os.fsencode(b)
    rc, err = -1, errno.ENOSYS
    if sys.platform.startswith("linux") and hasattr(libc, "renameat2"):
        fn = libc.renameat2
        fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
        rc = fn(-100, fa, -100, fb, 2)  # AT_FDCWD, RENAME_EXCHANGE
        err = ctypes.get_errno()
    elif sys.platform == "darwin" and hasattr(libc, "renamex_np"):
        fn = libc.renamex_np
        fn.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_uint]
        rc = fn(fa, fb, 2)  # RENAME_SWAP
        err = ctypes.get_errno()
    if rc == 0:
        return
    if err not in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP):
        raise OSError(err, f"cannot swap the new index into place: {os.strerror(err)}", b)
    aside = b + ".mvstore-replaced"
    os.rename(b, aside)
    os.rename(a, b)
    os.rename(aside, a)


def _fill(idx: Any, spec: str, ids: list, docs: Any, metadata: Any, args: argparse.Namespace,
          texts: list[str] | None, encoder: Any) -> Any:
    from .ragged import Ragged

    quiet = args.quiet
    n = len(ids)
    rng = np.random.default_rng(0)
    sample_rows = np.sort(rng.choice(n, min(n, args.train_docs), replace=False))
    cached: dict[int, np.ndarray] = {}
    if docs is None:
        sample = _encode(encoder, [texts[i] for i in sample_rows], "doc", quiet)
        cached = {int(r): sample[j] for j, r in enumerate(sample_rows)}
    else:
        sample = docs.take(sample_rows)
    what = "picking a spec and training" if spec == "auto" else f"training {idx.spec}"
    with _progress(1, what, "step", quiet) as bar:
        idx.train(sample)
        bar.update(1)
    del sample

    bs = args.batch_size

    def batches(bar: Any) -> Iterator[tuple]:
        for a in range(0, n, bs):
            b = min(n, a + bs)
            if docs is None:
                todo = [i for i in range(a, b) if i not in cached]
                enc = encoder.encode_documents([texts[i] for i in todo]) if todo else None
                got = {i: enc[j] for j, i in enumerate(todo)}
                part = Ragged.from_list([cached.pop(i) if i in cached else got[i] for i in range(a, b)])
            else:
                part = docs[a:b]
            meta = None if metadata is None else metadata.slice(a, b - a)
            yield ids[a:b], part, meta
            bar.update(b - a)

    with _progress(n, "encoding + pooling + writing" if docs is None else "pooling + writing", "doc", quiet) as bar:
        idx.add_batches(batches(bar))
    meta = {"input": getattr(args, "input", None), "built_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    _write_meta(idx, meta)
    return idx


def _write_meta(idx: Any, meta: dict[str, Any]) -> None:
    """``mvstore-cli.json``: the input a CLI build read and when (the encoder is in the index's options)."""
    idx.loc.write_atomic(CLI_META, json.dumps(meta, indent=2).encode())


def _storage_options(args: argparse.Namespace) -> dict[str, str] | None:
    pairs = getattr(args, "storage_option", None) or []
    bad = next((p for p in pairs if "=" not in p), None)
    if bad is not None:
        raise UsageError(f"--storage-option {bad!r} must be KEY=VALUE, e.g. --storage-option aws_region=us-east-1")
    return dict(p.split("=", 1) for p in pairs) or None


def _build_ray(args: argparse.Namespace) -> Any:
    """``mvstore build IDX --input ... --ray [ADDRESS]``: :func:`mvstore.build` on a Ray cluster."""
    import functools

    import mvstore
    import mvstore.store as ms
    from mvstore.store._fs import Location

    from .encoders import make_encoder
    from .exceptions import IndexExistsError
    from .store._layout import MANIFEST

    if args.input.lower().endswith(".npz"):
        raise UsageError("--ray reads JSONL or Parquet (the workers read it in blocks); convert the .npz to Parquet")
    if args.title_column:
        raise UsageError("--title-column is not available with --ray: put the full text in one column first")
    opts = _storage_options(args)
    if Location(args.index, opts).exists(MANIFEST):
        raise IndexExistsError(
            f"an mvstore index already exists at {args.index!r}: --ray builds a new index; choose another path "
            "(mvstore.build() in Python adds to an existing one)"
        )
    # each worker makes its own encoder (a picklable factory); a new index built from texts records it
    make = functools.partial(make_encoder, _encoder_spec(args), query_max_length=args.query_max_length,
                             doc_max_length=args.doc_max_length, progress=False)
    create_options: dict[str, Any] = {"keep_source": args.keep_source}
    if args.max_bytes_per_token is not None:
        create_options["max_bytes_per_token"] = args.max_bytes_per_token
    if _encoder_given(args):  # named: recorded for text queries even over a vectors source, as without --ray
        ms.create(args.index, args.spec, encoder=make(), storage_options=opts, **create_options)
    idx = mvstore.build(
        args.input, args.index, args.spec, ray=True if args.ray is True else args.ray, storage_options=opts,
        encoder=make, id_column=args.id_column, vectors_column=args.vectors_column, text_column=args.text_column,
        metadata_columns=None if args.metadata is None else [c for c in args.metadata.split(",") if c],
        train_docs=args.train_docs, batch_size=args.batch_size, num_workers=args.workers,
        num_gpus=args.gpus_per_worker, progress=False if args.quiet else None, **create_options,
    )  # fmt: skip
    _write_meta(idx, {"input": args.input, "built_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})
    return idx


def cmd_build(args: argparse.Namespace) -> int:
    import mvstore.spec as spec_mod

    if args.spec != "auto" and args.max_bytes_per_token is not None:
        raise UsageError("--max-bytes-per-token only applies to --spec auto; drop one of the two")
    if args.spec == "auto" and args.max_bytes_per_token is None:
        raise UsageError("--spec auto needs --max-bytes-per-token B (e.g. 16): the size budget it picks within")
    if args.spec not in (None, "auto"):
        spec_mod.parse(args.spec)
    if args.ray is not None:
        t = time.perf_counter()
        idx = _build_ray(args)
        return _build_row(idx, args, t)
    src = Source(args.input, args)
    # texts need an encoder; vectors get one only when named (recorded for text queries)
    encoder = _make_encoder(args) if src.vectors is None or _encoder_given(args) else None
    t = time.perf_counter()
    idx = _build(args.index, args.spec, src.ids, src.vectors, src.metadata, args, src.texts, encoder)
    return _build_row(idx, args, t)


def _build_row(idx: Any, args: argparse.Namespace, t: float) -> int:
    st = idx.stats()
    row = {"index": idx.root, "spec": st["spec"], "docs": st["docs"], "tokens": st["tokens"],
           "vectors": st["vectors"], "bytes_per_token": round(st["bytes_per_token"], 2),
           "version": st["version"], "build_s": round(time.perf_counter() - t, 1)}
    if st["auto"]:  # what --spec auto measured when it picked (fidelity: recall@10 vs exact MaxSim, no labels)
        row.update({f"auto_{k}": st["auto"][k] for k in ("budget", "fidelity", "seconds", "sample_tokens")})
    _emit([row], args.json)
    return 0


# ------------------------------------------------------------------------------------------- search
def _search_params(args: argparse.Namespace) -> dict[str, Any]:
    p = {"candidates": args.candidates, "device": args.device}
    if args.nprobe is not None:
        p["nprobe"] = args.nprobe
    for name in ("n_rerank", "n_full", "threads"):
        if getattr(args, name) is not None:
            p[name] = getattr(args, name)
    from .exceptions import SearchParamsError
    from .search.params import SearchParams

    try:  # checked here so that the message names the flag, not the Python field
        SearchParams.of(p)
    except SearchParamsError as e:
        msg = str(e)
        for name, value in p.items():
            msg = msg.replace(f"SearchParams.{name}={value!r}", f"--{name.replace('_', '-')} {value}")
            msg = msg.replace(f"SearchParams.{name}={value}", f"--{name.replace('_', '-')} {value}")
        raise UsageError(msg) from e
    return p


def _open(path: str, version: int | None = None) -> Any:
    import mvstore.store as ms

    from .exceptions import InvalidArgumentError
    from .store._layout import MANIFEST

    if not os.path.exists(path):
        raise FileNotFoundError(f"no index at {path!r}; build one with `mvstore build {path} --input FILE`")
    if not os.path.exists(os.path.join(path, MANIFEST)):
        raise UsageError(f"{path!r} is not an mvstore index (no {MANIFEST}); build one with "
                         f"`mvstore build {path} --input FILE`")
    try:
        return ms.open(path, version=version)
    except InvalidArgumentError:
        if version is None:
            raise
        known = [v["version"] for v in ms.open(path).versions()]
        raise UsageError(f"--version {version} does not exist; the index has versions {known} "
                         f"(`mvstore info {path}` lists them)") from None


def cmd_search(args: argparse.Namespace) -> int:
    idx = _open(args.index, args.version)
    if args.query_file and args.query_file.lower().endswith(".npz"):
        if args.queries:
            raise UsageError("give query texts or --query-file, not both")
        _, queries = _read_npz(args.query_file)
        labels = [f"q{i}" for i in range(len(queries))]
    else:
        texts = list(args.queries)
        if args.query_file:
            if not Path(args.query_file).is_file():
                raise FileNotFoundError(f"query file {args.query_file!r} does not exist")
            texts += [ln.strip() for ln in Path(args.query_file).read_text(encoding="utf-8").splitlines() if ln.strip()]
        if not texts:
            raise UsageError("no query: pass query texts, or --query-file (text lines or .npz vectors)")
        queries = _index_encoder(idx, args).encode_queries(texts)
        labels = texts
    columns = args.columns.split(",") if args.columns else idx.metadata_columns
    t = time.perf_counter()
    res = idx.search(queries, k=args.k, where=args.where, params=_search_params(args), columns=columns)
    elapsed = time.perf_counter() - t
    rows = res.to_pylist()
    for r in rows:
        r["query"] = labels[r["query"]]
        r["score"] = round(float(r["score"]), 4)
    if args.json:
        _emit(rows, True)
    else:
        _emit(rows, False)
        print(f"({len(rows)} results for {len(labels)} queries in {elapsed * 1e3:.0f} ms)", file=sys.stderr)
    return 0


# --------------------------------------------------------------------------------------------- info
def cmd_info(args: argparse.Namespace) -> int:
    idx = _open(args.index, args.version)
    st = idx.stats()
    files = {}
    for sub in sorted(Path(idx.root).iterdir()):
        size = sum(f.stat().st_size for f in sub.rglob("*") if f.is_file()) if sub.is_dir() else sub.stat().st_size
        files[sub.name] = size
    info = {
        **st,
        "path": idx.root,
        "options": idx.options,
        "columns": idx.metadata_columns,
        "versions": idx.versions(),
        "files": files,
        "encoder": idx.options.get("encoder") or _legacy_encoder(idx),
    }
    if args.json:
        print(json.dumps(info, default=_jsonable))
        return 0
    print(f"{'index':<16} {idx.root}")
    for k in ("spec", "dim", "version", "docs", "tokens", "vectors", "code_size", "stored_bytes",
              "bytes_per_token", "disk_bytes", "n_centroids", "train_error", "drift"):
        v = st.get(k)
        print(f"{k:<16} {round(v, 4) if isinstance(v, float) else v}")
    print(f"{'columns':<16} {', '.join(info['columns']) or '-'}")
    print(f"{'encoder':<16} {(info['encoder'] or {}).get('name') or info['encoder'] or '-'}")
    print(f"{'files':<16} " + ", ".join(f"{k} {v / 2**20:.2f} MiB" for k, v in files.items()))
    print("versions")
    from .report import format_table

    print(format_table([{k: _jsonable(v) if k == "timestamp" else v for k, v in r.items()} for r in info["versions"]]))
    return 0


# ------------------------------------------------------------------------------------------- verify
def cmd_verify(args: argparse.Namespace) -> int:
    """Full integrity check (Index.verify): exit 0 with a summary when every file of every version matches
    what was recorded at its commit, 1 with the list of problems when not."""
    from .exceptions import IndexCorruptedError

    try:
        rep = _open(args.index).verify()
    except IndexCorruptedError as e:
        if args.json:
            print(json.dumps({"ok": False, "problems": str(e)}))
        else:
            print(f"CORRUPTED: {e}")
        return 1
    if args.json:
        print(json.dumps(rep))
    else:
        print(f"ok: {rep['files_checked']} files ({rep['bytes_checked'] / 2**20:.2f} MiB) and "
              f"{rep['states_checked']} codec state(s) match their checksums")
        for n in rep["notes"]:
            print(f"note: {n}")
    return 0


# ------------------------------------------------------------------------------------------ upgrade
def cmd_upgrade(args: argparse.Namespace) -> int:
    """Upgrade an index of an older on-disk format in place (mvstore.upgrade)."""
    import mvstore.store as ms

    if "://" not in args.index and not os.path.exists(args.index):
        raise FileNotFoundError(f"no index at {args.index!r}; pass the directory (or s3:// URI) of an mvstore index")
    rep = ms.upgrade(args.index, storage_options=_storage_options(args))
    if args.json:
        print(json.dumps(rep))
    elif rep["format_version_before"] == rep["format_version"] and not rep["renamed"]:
        print(f"{args.index}: already format version {rep['format_version']}, nothing to do")
    else:
        print(f"{args.index}: upgraded from format version {rep['format_version_before']} to "
              f"{rep['format_version']} (renamed {', '.join(rep['renamed']) or 'no columns'}; version {rep['version']})")
    return 0


# --------------------------------------------------------------------------------------- eval/bench
def _beir(args: argparse.Namespace) -> tuple[list, list, list, list, dict]:
    from .eval import load_beir

    if not Path(args.beir).is_dir():
        raise FileNotFoundError(f"BEIR directory {args.beir!r} does not exist")
    ds = load_beir(args.beir, args.split)
    doc_ids = list(ds.corpus)
    if args.max_docs:
        rel = {d for q in ds.qrels.values() for d in q}
        doc_ids = [d for d in doc_ids if d in rel] + [d for d in doc_ids if d not in rel]
        doc_ids = doc_ids[: max(args.max_docs, 1)]
    qids = [q for q in ds.qrels if q in ds.queries]
    return doc_ids, [ds.corpus[d] for d in doc_ids], qids, [ds.queries[q] for q in qids], ds.qrels


def _run(res: Any, qids: list) -> dict[str, list[str]]:
    run: dict[str, list[str]] = {q: [] for q in qids}
    for qi, did in zip(res.column("query").to_pylist(), res.column("id").to_pylist()):
        run[qids[qi]].append(str(did))
    return run


def _metrics(run: dict, qrels: dict, k: int) -> dict[str, float]:
    from .eval import ndcg_at_k, recall_at_k

    qrels = {q: r for q, r in qrels.items() if q in run}
    return {f"ndcg{k}": round(ndcg_at_k(run, qrels, k), 4), f"recall{k}": round(recall_at_k(run, qrels, k), 4),
            "recall100": round(recall_at_k(run, qrels, 100), 4)}


def cmd_eval(args: argparse.Namespace) -> int:
    if (args.index is None) == (args.spec is None):
        raise UsageError("pass --index INDEX (evaluate an existing index) or --spec SPEC (build one), not both")
    doc_ids, doc_texts, qids, qtexts, qrels = _beir(args)
    warning = None
    with tempfile.TemporaryDirectory(prefix="mvstore-eval-") as tmp:
        if args.index is not None:
            idx = _open(args.index)
            warning = _corpus_mismatch(idx, doc_ids, doc_texts, subset=bool(args.max_docs))
            if warning:
                print(f"mvstore: warning: {warning}", file=sys.stderr)
            encoder = _index_encoder(idx, args)
        else:
            encoder = _make_encoder(args)
            args.input = args.beir
            root = args.index_dir or os.path.join(tmp, "index")
            idx = _build(root, args.spec, doc_ids, None, None, args, doc_texts, encoder)
        queries = _encode(encoder, qtexts, "query", args.quiet)
        t = time.perf_counter()
        res = idx.search(queries, k=max(100, args.k), params=_search_params(args))
        row = {"spec": str(idx.spec), **_metrics(_run(res, qids), qrels, args.k),
               "bytes_per_token": round(idx.stats()["bytes_per_token"], 2), "docs": len(idx), "queries": len(qids),
               "search_s": round(time.perf_counter() - t, 2)}
        if args.index is not None or args.index_dir:
            row["index"] = idx.root
        if warning:
            row["warning"] = warning
    _emit([row], args.json)
    return 0


def _corpus_mismatch(idx: Any, doc_ids: list, doc_texts: list[str], subset: bool) -> str | None:
    """Why the index's documents may not be the corpus eval scores against (its stored ``text`` column against
    the corpus texts, title included as eval encodes them), or None when they match."""
    from .store._layout import DOCS

    if idx.version == 0:
        return "the index is empty"
    ds = idx.loc.dataset(DOCS, version=idx.version)
    if TEXT_COLUMN not in ds.schema.names:
        return (f"the index stores no {TEXT_COLUMN!r} column, so eval cannot check that it was built from this corpus "
                "(rebuild it with `mvstore build` from texts, or mvstore.create(uri, encoder=...).add_texts)")
    tbl = ds.to_table(columns=["id", TEXT_COLUMN])
    stored = dict(zip(map(str, tbl.column("id").to_pylist()), tbl.column(TEXT_COLUMN).to_pylist()))
    missing = [d for d in doc_ids if str(d) not in stored]
    differ = [d for d, t in zip(doc_ids, doc_texts) if str(d) in stored and stored[str(d)] != t]
    extra = 0 if subset else len(stored) - (len(doc_ids) - len(missing))
    if not (missing or differ or extra):
        return None
    parts = []
    if differ:
        parts.append(f"{len(differ)} of {len(doc_ids)} documents have other texts in the index than in the corpus "
                     f"(e.g. {differ[0]!r}; eval encodes 'title text')")
    if missing:
        parts.append(f"{len(missing)} corpus documents are not in the index (e.g. {missing[0]!r})")
    if extra:
        parts.append(f"the index holds {extra} documents that are not in the corpus")
    return ("; ".join(parts) + ": the scores do not measure this corpus; rebuild the index from it "
            "(`mvstore build INDEX --input corpus.jsonl --id-column _id --title-column title`) or use --spec")


def cmd_bench(args: argparse.Namespace) -> int:
    import resource

    from .eval import recall_vs_reference, run_from_scores
    from .search.maxsim import maxsim_batch

    doc_ids, doc_texts, qids, qtexts, qrels = _beir(args)
    encoder = _make_encoder(args)
    docs = _encode(encoder, doc_texts, "doc", args.quiet)
    queries = _encode(encoder, qtexts, "query", args.quiet)

    def rss_mb() -> float:
        return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)

    def latency(fn) -> tuple[float, float]:
        n = min(args.latency_queries, len(queries))
        fn(queries[0:1])
        times = []
        for i in range(n):
            t = time.perf_counter()
            fn(queries[i : i + 1])
            times.append((time.perf_counter() - t) * 1e3)
        return round(float(np.percentile(times, 50)), 2), round(float(np.percentile(times, 95)), 2)

    scores = maxsim_batch(queries, docs)
    exact = run_from_scores(scores, qids, doc_ids, 100)
    p50, p95 = latency(lambda q: maxsim_batch(q, docs))
    rows = [{"spec": "exact-fp32", **_metrics(exact, qrels, 10), "recall10_vs_exact": 1.0,
             "bytes_per_token": docs.dim * 4, "build_s": 0.0, "p50_ms": p50, "p95_ms": p95,
             "peak_rss_mb": rss_mb()}]
    if args.json:
        _emit(rows[-1:], True)
    for spec in args.spec:
        with tempfile.TemporaryDirectory(prefix="mvstore-bench-") as tmp:
            t = time.perf_counter()
            idx = _build(os.path.join(tmp, "ix"), spec, doc_ids, docs, None, args)
            build_s = time.perf_counter() - t
            params = _search_params(args)
            res = idx.search(queries, k=100, params=params)
            run = _run(res, qids)
            p50, p95 = latency(lambda q, idx=idx, params=params: idx.search(q, k=10, params=params))
            rows.append({"spec": spec, **_metrics(run, qrels, 10),
                         "recall10_vs_exact": round(recall_vs_reference(run, exact, 10), 4),
                         "bytes_per_token": round(idx.stats()["bytes_per_token"], 2), "build_s": round(build_s, 1),
                         "p50_ms": p50, "p95_ms": p95, "peak_rss_mb": rss_mb()})
        if args.json:
            _emit(rows[-1:], True)
    if not args.json:
        _emit(rows, False)
    return 0


# ------------------------------------------------------------------------------------- tune/report
def cmd_tune(args: argparse.Namespace) -> int:
    from .tune import tune

    rng = np.random.default_rng(args.seed)
    if Path(args.input).is_dir():
        args.beir, args.max_docs = args.input, None
        doc_ids, doc_texts, qids, qtexts, _ = _beir(args)
        keep = np.sort(rng.choice(len(doc_texts), min(len(doc_texts), args.sample_docs), replace=False))
        encoder = _make_encoder(args)
        docs = _encode(encoder, [doc_texts[i] for i in keep], "doc", args.quiet)
        qkeep = np.sort(rng.choice(len(qtexts), min(len(qtexts), args.sample_queries), replace=False))
        queries = _encode(encoder, [qtexts[i] for i in qkeep], "query", args.quiet)
    else:
        if not args.queries:
            raise UsageError("tune on a documents file needs --queries (text lines, .jsonl with --text-column, "
                             "or .npz vectors); or pass a BEIR directory")
        src = Source(args.input, args)
        keep = np.sort(rng.choice(len(src), min(len(src), args.sample_docs), replace=False))
        encoder = None
        if src.vectors is not None:
            docs = src.vectors.take(keep)
        else:
            encoder = _make_encoder(args)
            docs = _encode(encoder, [src.texts[i] for i in keep], "doc", args.quiet)
        if args.queries.lower().endswith(".npz"):
            _, queries = _read_npz(args.queries)
        else:
            if not Path(args.queries).is_file():
                raise FileNotFoundError(f"queries file {args.queries!r} does not exist")
            if args.queries.lower().endswith((".jsonl", ".parquet", ".jsonl.gz")):
                qtexts = _read_table(args.queries).column(args.text_column).to_pylist()
            else:
                qtexts = [ln.strip() for ln in Path(args.queries).read_text(encoding="utf-8").splitlines() if ln.strip()]
            if encoder is None:
                raise UsageError("text queries need text documents; with vector documents pass --queries queries.npz")
            queries = _encode(encoder, qtexts[: args.sample_queries], "query", args.quiet)
    cands = args.candidates.split(";") if args.candidates else None
    res = tune(docs, queries, max_bytes_per_token=args.budget, candidates=cands, k=args.k,
               sample_docs=args.sample_docs, sample_queries=args.sample_queries, progress=False if args.quiet else None)
    if args.json:
        _emit(res.table, True)
    else:
        print(res.to_text(pareto_only=args.pareto_only))
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from .report import format_table, load_rows, pareto_front, plot_frontier

    rows = load_rows(args.rows)
    if args.y is None:  # benchmark rows carry ndcg10; `mvstore tune --json` rows carry fidelity
        args.y = next((y for y in ("ndcg10", "fidelity") if any(y in r for r in rows)), "ndcg10")
    out = plot_frontier(rows, args.output, x=args.x, y=args.y, title=args.title)
    front = [rows[i] for i in pareto_front(rows, args.x, args.y)]
    cols = [c for c in ("spec", args.x, args.y) if any(c in r for r in front)]
    if args.json:
        _emit(front, True)
    else:
        print(format_table(front, cols))
    print(f"wrote {out}", file=sys.stderr)
    return 0


# ------------------------------------------------------------------------------------------- parser
def _encoder_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--encoder", default=None,
                   help="hf (default: bundled all-MiniLM-L6-v2) | hf:MODEL | st:MODEL | pylate:MODEL | colbert:PATH "
                        "(MODEL: hub id or local path); search/eval default to the index's recorded encoder")
    p.add_argument("--model", default=None, help="short for --encoder hf:MODEL")
    p.add_argument("--query-max-length", type=int, default=None,
                   help="query tokens (default: hf 64; colbert/pylate: the model's query_length)")
    p.add_argument("--doc-max-length", type=int, default=None,
                   help="document tokens (default: hf 256; colbert/pylate: the model's document_length)")
    p.add_argument("--cache", default=None, help="directory of an on-disk embedding cache (encode each text once)")


def _input_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--id-column", default="id")
    p.add_argument("--text-column", default=TEXT_COLUMN)
    p.add_argument("--title-column", default=None, help="prepended to the text (e.g. 'title' for BEIR corpora)")
    p.add_argument("--vectors-column", default="vectors", help="column of precomputed token vectors (list of lists)")
    p.add_argument("--metadata", default=None, help="comma-separated metadata columns (default: all scalar columns)")


def _search_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--candidates", default="auto", help="stage 1: auto | centroid | sparse | exhaustive")
    p.add_argument("--nprobe", type=int, default=None)
    p.add_argument("--n-rerank", type=int, default=None, help="candidates scored by exact MaxSim")
    p.add_argument("--n-full", type=int, default=None, help="candidates re-ranked by full centroid interaction")
    p.add_argument("--threads", type=int, default=None, help="CPU threads per query (default: all cores)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda[:N]")


def _build_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--batch-size", type=int, default=1024, help="documents per streamed write batch")
    p.add_argument("--train-docs", type=int, default=2000, help="random documents the codec is trained on")


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="mvstore", description=__doc__.split("\n")[0].replace("``", ""))
    ap.add_argument("--debug", action="store_true", help="show tracebacks")
    ap.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    # the same two flags after the command name (SUPPRESS: absent there, the top-level value stays)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="show tracebacks")
    common.add_argument("-q", "--quiet", action="store_true", default=argparse.SUPPRESS, help="no progress bars")
    sub = ap.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add = sub.add_parser

    def add_parser(name: str, **kw: Any) -> argparse.ArgumentParser:
        return _add(name, parents=[common], **kw)

    sub.add_parser = add_parser  # type: ignore[method-assign]

    p = sub.add_parser("build", help="build an index from texts or token vectors")
    p.add_argument("index", help="index directory to create")
    p.add_argument("--input", "-i", required=True, help=".jsonl / .parquet (texts or vectors) or .npz (vectors)")
    p.add_argument("--spec", default=None,
                   help="compression spec, or 'auto' with --max-bytes-per-token (default: mvstore.default_spec(dim))")
    p.add_argument("--max-bytes-per-token", type=float, default=None,
                   help="with --spec auto: the size budget the picked spec fits (bytes per original token)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing index at that path")
    p.add_argument("--keep-source", action="store_true", help="also store pooled vectors (fp16) for retraining")
    p.add_argument("--json", action="store_true")
    p.add_argument("--ray", nargs="?", const=True, default=None, metavar="ADDRESS",
                   help="build on a Ray cluster (ADDRESS, e.g. ray://head:10001; none: RAY_ADDRESS or a local one)")
    p.add_argument("--workers", type=int, default=2, help="--ray: worker actors")
    p.add_argument("--gpus-per-worker", type=float, default=0, help="--ray: GPUs per worker (text encoding)")
    p.add_argument("--storage-option", action="append", default=None, metavar="KEY=VALUE",
                   help="object-store option for an s3:// / gs:// / az:// index (repeatable), e.g. aws_region=us-east-1")
    _input_args(p), _encoder_args(p), _build_args(p)
    p.set_defaults(fn=cmd_build)

    p = sub.add_parser("search", help="search an index with query texts or vectors")
    p.add_argument("index")
    p.add_argument("queries", nargs="*", help="query texts")
    p.add_argument("--query-file", default=None, help="text lines, or .npz query vectors (vectors, offsets)")
    p.add_argument("-k", type=int, default=10)
    p.add_argument("--where", default=None, help="SQL filter on metadata, e.g. \"lang = 'en'\"")
    p.add_argument("--columns", default=None, help="metadata columns to show (default: all)")
    p.add_argument("--version", type=int, default=None, help="search an older version (time travel)")
    p.add_argument("--json", action="store_true", help="one JSON object per result")
    _encoder_args(p), _search_args(p)
    p.set_defaults(fn=cmd_search)

    p = sub.add_parser("eval", help="nDCG/recall on a BEIR dataset, of an index or of a spec")
    p.add_argument("beir", help="BEIR directory (corpus.jsonl, queries.jsonl, qrels/<split>.tsv)")
    p.add_argument("--index", default=None, help="evaluate this index (built from the BEIR corpus)")
    p.add_argument("--spec", default=None, help="build an index with this spec first")
    p.add_argument("--index-dir", default=None, help="where to build (default: a temporary directory)")
    p.add_argument("--overwrite", action="store_true", help="with --index-dir: replace an index already there")
    p.add_argument("--split", default="test")
    p.add_argument("--max-docs", type=int, default=None, help="judged documents + others up to N")
    p.add_argument("-k", type=int, default=10)
    p.add_argument("--json", action="store_true")
    _encoder_args(p), _search_args(p), _build_args(p)
    p.set_defaults(fn=cmd_eval)

    p = sub.add_parser("info", help="layout, versions and footprint of an index")
    p.add_argument("index")
    p.add_argument("--version", type=int, default=None)
    p.add_argument("--json", action="store_true")
    p.set_defaults(fn=cmd_info)

    p = sub.add_parser("verify", help="check every file of an index against its recorded checksums")
    p.add_argument("index")
    p.add_argument("--json", action="store_true")
    p.set_defaults(fn=cmd_verify)

    p = sub.add_parser("upgrade", help="upgrade an index written by an older mvstore to this one's format, in place")
    p.add_argument("index")
    p.add_argument("--json", action="store_true")
    p.add_argument("--storage-option", action="append", default=None, metavar="KEY=VALUE",
                   help="object-store option for an s3:// / gs:// / az:// index (repeatable), e.g. aws_region=us-east-1")
    p.set_defaults(fn=cmd_upgrade)

    p = sub.add_parser("bench", help="benchmark rows (quality, footprint, latency) on a BEIR dataset")
    p.add_argument("beir")
    p.add_argument("--spec", action="append", default=[], help="spec to benchmark (repeatable)")
    p.add_argument("--split", default="test")
    p.add_argument("--max-docs", type=int, default=None)
    p.add_argument("--latency-queries", type=int, default=20)
    p.add_argument("--json", action="store_true")
    _encoder_args(p), _search_args(p), _build_args(p)
    p.set_defaults(fn=cmd_bench)

    p = sub.add_parser("tune", help="pick the best spec within a bytes-per-token budget on a sample")
    p.add_argument("input", help="a BEIR directory, or a documents file (.jsonl/.parquet/.npz) with --queries")
    p.add_argument("--budget", type=float, required=True, help="max bytes per original token, e.g. 20")
    p.add_argument("--queries", default=None, help="query texts (one per line, .jsonl) or .npz vectors")
    p.add_argument("--candidates", default=None, help="';'-separated specs (default: a grid within budget)")
    p.add_argument("--sample-docs", type=int, default=1000)
    p.add_argument("--sample-queries", type=int, default=100)
    p.add_argument("--split", default="test")
    p.add_argument("-k", type=int, default=10)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--pareto-only", action="store_true", help="print only the Pareto rows")
    p.add_argument("--json", action="store_true")
    _input_args(p), _encoder_args(p)
    p.set_defaults(fn=cmd_tune)

    p = sub.add_parser("report", help="plot the quality/footprint Pareto front of benchmark JSON rows")
    p.add_argument("rows", help="JSONL rows (a benchmark's --json output)")
    p.add_argument("-o", "--output", default="frontier.png", help="PNG to write")
    p.add_argument("--x", default="bytes_per_token")
    p.add_argument("--y", default=None,
                   help="quality column (default: ndcg10, or fidelity for `mvstore tune --json` rows)")
    p.add_argument("--title", default=None)
    p.add_argument("--json", action="store_true")
    p.set_defaults(fn=cmd_report)
    return ap


def main(argv: Sequence[str] | None = None) -> int:
    from .exceptions import MvstoreError

    args = build_parser().parse_args(argv)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    try:
        return int(args.fn(args) or 0)
    except KeyboardInterrupt:
        print("mvstore: interrupted", file=sys.stderr)
        return 130
    except (MvstoreError, ValueError, TypeError, OSError, ImportError, KeyError) as e:
        if args.debug:
            raise
        msg = " ".join(str(e).split()) or type(e).__name__
        if isinstance(e, KeyError):
            msg = f"missing key {msg}"
        print(f"mvstore: error: {msg}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
