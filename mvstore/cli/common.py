"""What several commands share: the encoder and search flag groups as library arguments, opening an index,
the CLI's record in an index (``mvstore-cli.json``), and printing rows (a table, or JSON lines)."""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from ..exceptions import UsageError

#: the CLI's record in an index it built: the input it read and when (the encoder is in the index's options)
CLI_META = "mvstore-cli.json"


def progress(quiet: bool) -> bool | None:
    """The library's ``progress=`` for ``-q``: no bars; otherwise bars on a terminal (:mod:`mvstore._progress`)."""
    return False if quiet else None


# ------------------------------------------------------------------------------------------ output
def emit(rows: Sequence[dict], as_json: bool, columns: Sequence[str] | None = None) -> None:
    """``rows`` as one JSON object per line, or as a table (long strings shortened)."""
    if as_json:
        for r in rows:
            print(json.dumps(r, default=jsonable))
    else:
        from ..report import format_table

        print(format_table([{k: _short(v) for k, v in r.items()} for r in rows], columns))


def jsonable(v: Any) -> Any:
    if isinstance(v, np.generic):
        return v.item()
    if hasattr(v, "isoformat"):
        return v.isoformat()
    return str(v)


def _short(v: Any, n: int = 60) -> Any:
    return v if not isinstance(v, str) or len(v) <= n else v[: n - 1] + "…"


# ---------------------------------------------------------------------------------------- encoders
def encoder_named(args: argparse.Namespace) -> bool:
    """Whether the encoder flags name an encoder (else: the index's recorded one, or the default)."""
    return any(v is not None for v in (args.encoder, args.model, args.query_max_length, args.doc_max_length))


def encoder_spec(encoder: str | None, model: str | None) -> str:
    """The encoder's short form the flags name (``--encoder``, or ``--model M`` = ``hf:M``; default ``hf``)."""
    if encoder is not None and model is not None:
        raise UsageError("--model MODEL is short for --encoder hf:MODEL: pass one of the two")
    return str(encoder or ("hf:" + model if model else "hf"))


def flags_encoder(args: argparse.Namespace) -> Any:
    """The encoder the flags name (``--encoder``, ``--model``, the max lengths), in a cache with ``--cache``."""
    from ..encoders import make_encoder

    enc = make_encoder(
        encoder_spec(args.encoder, args.model),
        query_max_length=args.query_max_length,
        doc_max_length=args.doc_max_length,
        progress=progress(args.quiet),
    )
    return cached(enc, args.cache)


def cached(enc: Any, cache: str | None) -> Any:
    from ..encoders import CachedEncoder

    return CachedEncoder(enc, cache, progress=False) if cache else enc


def index_encoder(idx: Any, args: argparse.Namespace) -> Any:
    """The encoder of text queries: the flags' (``--encoder`` ...), else the one the index records."""
    from ..exceptions import DimensionMismatchError

    if encoder_named(args):
        enc = flags_encoder(args)
        if enc.dim != idx.dim:
            raise DimensionMismatchError(
                f"--encoder {enc.name} outputs {enc.dim}-d vectors but the index holds "
                f"{idx.dim}-d ones: pass the encoder the index was built with"
            )
        return enc
    if idx.options.get("encoder") is not None:
        return cached(idx.encoder, args.cache)
    legacy = legacy_encoder(idx)
    if legacy is not None:
        from ..encoders import encoder_from_config

        return cached(encoder_from_config(legacy), args.cache)
    raise UsageError(
        "the index records no encoder (it was built from vectors): pass --encoder (e.g. hf, "
        "colbert:PATH, pylate:MODEL: the one its vectors came from) or query with vectors "
        "(--query-file queries.npz)"
    )


# ------------------------------------------------------------------------------------ index record
def cli_meta(input_path: str) -> dict[str, bytes]:
    """The files a CLI build adds to its index: ``mvstore-cli.json`` (the input it read and when)."""
    meta = {"input": input_path, "built_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    return {CLI_META: json.dumps(meta, indent=2).encode()}


def _index_meta(idx: Any) -> dict[str, Any]:
    try:
        return json.loads(idx.loc.read(CLI_META))
    except FileNotFoundError:
        return {}


def legacy_encoder(idx: Any) -> dict[str, Any] | None:
    """The encoder description of an index an older CLI built (its settings were in ``mvstore-cli.json``)."""
    old = _index_meta(idx).get("encoder")
    if not isinstance(old, dict):
        return None
    return {
        "kind": "hf",
        "model": old.get("model"),
        "query_max_length": int(old.get("query_max_length") or 64),
        "doc_max_length": int(old.get("doc_max_length") or 256),
    }


# -------------------------------------------------------------------------------------- the index
def storage_options(pairs: list[str] | None) -> dict[str, str] | None:
    """``--storage-option KEY=VALUE`` flags as a dict (None when there are none)."""
    bad = next((p for p in pairs or [] if "=" not in p), None)
    if bad is not None:
        raise UsageError(
            f"--storage-option {bad!r} must be KEY=VALUE, e.g. --storage-option aws_region=us-east-1"
        )
    return dict(p.split("=", 1) for p in pairs or []) or None


def open_index(path: str, version: int | None = None, options: list[str] | None = None) -> Any:
    """The index at ``path`` (a directory or an s3:// / gs:// / az:// URI, with ``--storage-option`` pairs
    ``options``), at ``version``, with messages for a missing path, a non-index, a bad version."""
    import mvstore.store as ms

    from ..exceptions import InvalidArgumentError
    from ..store._fs import Location
    from ..store._layout import MANIFEST

    opts = storage_options(options)
    loc = Location(path, opts)
    if not loc.exists():
        raise FileNotFoundError(f"no index at {path!r}; build one with `mvstore build {path} --input FILE`")
    if not loc.exists(MANIFEST):
        raise UsageError(
            f"{path!r} is not an mvstore index (no {MANIFEST}); build one with "
            f"`mvstore build {path} --input FILE`"
        )
    try:
        return ms.open(path, version=version, storage_options=opts)
    except InvalidArgumentError:
        if version is None:
            raise
        known = [v["version"] for v in ms.open(path, storage_options=opts).versions()]
        raise UsageError(
            f"--version {version} does not exist; the index has versions {known} "
            f"(`mvstore info {path}` lists them)"
        ) from None


def tree_bytes(loc: Any, rel: str = "") -> int:
    """Bytes of every file under ``rel`` of a Location (local or object store)."""
    if not loc.isdir(rel):
        return loc.size(rel)
    return sum(tree_bytes(loc, f"{rel}/{n}" if rel else n) for n in loc.listdir(rel))


def search_params(args: argparse.Namespace) -> dict[str, Any]:
    """The search flags as ``SearchParams`` fields, checked here so that a message names the flag."""
    from ..exceptions import SearchParamsError
    from ..search.params import SearchParams

    p = {"candidates": args.candidates, "device": args.device}
    for name in ("nprobe", "n_rerank", "n_full", "threads"):
        if getattr(args, name) is not None:
            p[name] = getattr(args, name)
    try:
        SearchParams.of(p)
    except SearchParamsError as e:
        msg = str(e)
        for name, value in p.items():
            msg = msg.replace(f"SearchParams.{name}={value!r}", f"--{name.replace('_', '-')} {value}")
            msg = msg.replace(f"SearchParams.{name}={value}", f"--{name.replace('_', '-')} {value}")
        raise UsageError(msg) from e
    return p
