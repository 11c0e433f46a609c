"""A whole index built at a local directory in one step, published atomically (``mvstore build``).

The index is written into a sibling directory ``.<name>.mvstore-build-<pid>`` (train on a random sample of the
documents, then stream batches: encode -> pool -> compress -> write, with progress bars) and only moved to the
path once complete. Replacing an index swaps the two directories in one atomic exchange under the old index's
write lock and deletes the old one after: a failed or killed build leaves the old index (or nothing, for a new
path) exactly as it was; a killed build's directory is removed by the next build (docs/LAYOUT.md, "Build").
"""

from __future__ import annotations

import ctypes
import errno
import os
import shutil
import sys
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import pyarrow as pa

from .._checks import check_int
from .._progress import bar
from ..exceptions import IndexExistsError, InvalidArgumentError, InvalidMetadataError
from ..ragged import Ragged
from ._fs import split_uri
from ._layout import MANIFEST, TEXT, write_lock

__all__ = ["build_directory", "encode_texts"]

#: the column an index built from texts stores them in (as Index.add_texts does)
#: texts per encoder call when encoding with a progress bar
TEXT_CHUNK = 256
#: infix of the sibling directory a build writes to: ``.<name>.mvstore-build-<pid>``
BUILDING = ".mvstore-build-"


def encode_texts(encoder: Any, texts: Sequence[str], role: str, progress: bool | None = None) -> Ragged:
    """``encoder.encode_documents`` (``role="doc"``) or ``encode_queries`` of ``texts``, in chunks of
    TEXT_CHUNK with a progress bar when there are more."""
    fn = encoder.encode_documents if role == "doc" else encoder.encode_queries
    if len(texts) <= TEXT_CHUNK:
        return fn(list(texts))
    parts = []
    with bar(len(texts), f"encoding {role}s", unit="text", progress=progress) as b:
        for s in range(0, len(texts), TEXT_CHUNK):
            parts.append(fn(list(texts[s : s + TEXT_CHUNK])))
            b.update(len(parts[-1]))
    return Ragged.concat(parts)


def build_directory(
    root: str,
    *,
    ids: list,
    spec: str | None = None,
    docs: Ragged | None = None,
    texts: list[str] | None = None,
    metadata: pa.Table | None = None,
    encoder: Any = None,
    overwrite: bool = False,
    keep_source: bool = False,
    max_bytes_per_token: float | None = None,
    train_docs: int = 2000,
    batch_size: int = 1024,
    files: Mapping[str, bytes] | None = None,
    progress: bool | None = None,
) -> Any:
    """Build the index at the local directory ``root`` from ``ids`` and either token vectors ``docs`` or
    ``texts`` (encoded by ``encoder``; stored in the ``text`` column), published only once complete.

    ``overwrite``: replace an index already at ``root`` (atomically). ``files``: extra non-Lance files
    (name -> bytes) written into the index before it is published. The codec trains on ``train_docs`` random
    documents; ``batch_size`` documents are written per streamed batch. Returns the opened index."""
    import mvstore.store as ms

    if len(ids) == 0:
        raise InvalidArgumentError("the input has no documents: pass at least one")
    check_int("train_docs", train_docs, what="documents the codec trains on, e.g. 2000")
    check_int("batch_size", batch_size, what="documents per written batch, e.g. 1024")
    if (docs is None) == (texts is None):
        raise InvalidArgumentError(
            "pass token vectors (docs=) or texts (texts=, with encoder=), one of the two"
        )
    root, local = split_uri(root)
    if not local:
        raise InvalidArgumentError(
            f"{root!r}: build_directory builds a local directory; build into an object store "
            "with mvstore.build(...) (the CLI: mvstore build URI --ray)"
        )
    replace = _check_target(root, overwrite)
    parent, name = os.path.split(root)
    os.makedirs(parent, exist_ok=True)
    remove_stale_builds(parent, name)
    tmp = os.path.join(parent, f".{name}{BUILDING}{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    dim = encoder.dim if docs is None else docs.dim
    if texts is not None:  # the encoded texts, as add_texts stores them (eval --index compares them)
        metadata = _with_texts(metadata, texts)
    try:
        idx = ms.create(
            tmp,
            spec=spec,
            dim=dim,
            keep_source=keep_source,
            max_bytes_per_token=max_bytes_per_token,
            encoder=encoder,
        )
        _fill(
            idx,
            ids,
            docs,
            texts,
            metadata,
            encoder,
            auto=spec == "auto",
            train_docs=train_docs,
            batch_size=batch_size,
            progress=progress,
        )
        for rel, data in (files or {}).items():
            idx.loc.write_atomic(rel, data)
        if replace:
            with write_lock(root):  # not in the middle of another process's write to the old index
                exchange_dirs(tmp, root)
        else:
            os.rename(tmp, root)  # onto a missing path or an empty directory
    finally:
        shutil.rmtree(tmp, ignore_errors=True)  # the unfinished build, or the old index swapped out
    return ms.open(root)


def _check_target(root: str, overwrite: bool) -> bool:
    """Whether ``root`` holds an index to replace; IndexExistsError when it holds anything a build may not
    replace."""
    replace = os.path.exists(os.path.join(root, MANIFEST))
    if replace and not overwrite:
        raise IndexExistsError(
            f"an mvstore index already exists at {root!r}: pass overwrite=True (mvstore build --overwrite) to replace "
            "it, or choose another path"
        )
    if os.path.exists(root) and not replace and (not os.path.isdir(root) or os.listdir(root)):
        raise IndexExistsError(
            f"{root!r} exists and is not an empty directory (nor an mvstore index); choose a new path"
        )
    return replace


def _with_texts(metadata: pa.Table | None, texts: list[str]) -> pa.Table:
    if metadata is not None and TEXT in metadata.column_names:
        raise InvalidMetadataError(
            f"the metadata has a {TEXT!r} column, but the index stores the encoded "
            f"texts as {TEXT!r}: leave that column out or rename it"
        )
    col = pa.array(texts, pa.string())
    return pa.table({TEXT: col}) if metadata is None else metadata.append_column(TEXT, col)


def remove_stale_builds(parent: str, name: str) -> None:
    """Delete build directories for ``name`` left by builds that were killed (their pid is gone)."""
    prefix = f".{name}{BUILDING}"
    for entry in os.listdir(parent):
        pid = entry[len(prefix) :]
        if not entry.startswith(prefix) or not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            shutil.rmtree(os.path.join(parent, entry), ignore_errors=True)
        except PermissionError:  # alive, another user's
            pass


def exchange_dirs(a: str, b: str) -> None:
    """Atomically swap two directories (Linux ``renameat2(RENAME_EXCHANGE)``, macOS ``renamex_np(RENAME_SWAP)``):
    at every instant ``b`` is either the old or the new directory. Where the filesystem cannot exchange, ``b`` is
    renamed aside to ``<b>.mvstore-replaced`` first and then replaced (a crash between the two renames leaves
    the old index there, complete)."""
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


def _fill(
    idx: Any,
    ids: list,
    docs: Ragged | None,
    texts: list[str] | None,
    metadata: pa.Table | None,
    encoder: Any,
    *,
    auto: bool,
    train_docs: int,
    batch_size: int,
    progress: bool | None,
) -> None:
    """Train ``idx`` on a random sample of the documents, then add them all in streamed batches."""
    n = len(ids)
    sample_rows = np.sort(np.random.default_rng(0).choice(n, min(n, train_docs), replace=False))
    cached: dict[int, np.ndarray] = {}
    if docs is None:
        assert texts is not None
        sample = encode_texts(encoder, [texts[i] for i in sample_rows], "doc", progress)
        cached = {int(r): sample[j] for j, r in enumerate(sample_rows)}
    else:
        sample = docs.take(sample_rows)
    what = "picking a spec and training" if auto else f"training {idx.spec}"
    with bar(1, what, unit="step", progress=progress) as b:
        idx.train(sample)
        b.update(1)
    del sample

    def batches(b: Any) -> Iterator[tuple]:
        for lo in range(0, n, batch_size):
            hi = min(n, lo + batch_size)
            if docs is None:
                assert texts is not None
                todo = [i for i in range(lo, hi) if i not in cached]
                got: dict[int, np.ndarray] = {}
                if todo:
                    enc = encoder.encode_documents([texts[i] for i in todo])
                    got = {i: enc[j] for j, i in enumerate(todo)}
                part = Ragged.from_list([cached.pop(i) if i in cached else got[i] for i in range(lo, hi)])
            else:
                part = docs[lo:hi]
            yield ids[lo:hi], part, None if metadata is None else metadata.slice(lo, hi - lo)
            b.update(hi - lo)

    with bar(
        n,
        "encoding + pooling + writing" if docs is None else "pooling + writing",
        unit="doc",
        progress=progress,
    ) as b:
        idx.add_batches(batches(b))
