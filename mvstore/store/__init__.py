"""Lance-backed multi-vector index: create, open (time travel), add / stream / upsert / delete, search.

>>> import tempfile, numpy as np, mvstore.store as ms
>>> rng = np.random.default_rng(0)
>>> docs = [rng.normal(size=(int(n), 16)).astype(np.float32) for n in rng.integers(5, 20, 40)]
>>> idx = ms.create(tempfile.mkdtemp() + "/ix", spec="fp16", dim=16)
>>> idx.add(np.arange(40), docs, metadata=[{"lang": "en" if i % 2 else "fr"} for i in range(40)])
1
>>> t = idx.search(docs[3], k=2, columns=["lang"])
>>> t.column_names, t["id"].to_pylist()[0], t["lang"].to_pylist()[0]
(['query', 'rank', 'id', 'score', 'lang'], 3, 'en')
>>> idx.search(docs[3], k=2, where="lang = 'fr'")["id"].to_pylist()[0] != 3
True

The on-disk layout (the manifest, the docs and codec tables and their columns, versions, the codec state's
meta, training, drift and retraining, integrity records) is written once, in docs/LAYOUT.md; this package
implements it (``_fs.py``: ``Location``, where the index lives, its non-Lance files and the write lock;
``_layout.py``: paths and schemas; ``_index.py``: the :class:`Index` facade; ``_tables.py``: its tables and the
version it reads; ``_state.py``: codec states; ``_write.py``: the writes and their commits; ``_view.py``: one
version's reads; ``_integrity.py``: checksums and records).

Crash safety and concurrency. Every write (add, add_batches, upsert, delete, optimize) validates its whole
input first and becomes visible in ONE Lance commit, under the index's cross-process write lock; an
:class:`Index` reads one version (an in-memory :class:`~mvstore.search.snapshot.Snapshot`) until its own write
or :meth:`Index.refresh`. The guarantees and their limits: docs/LAYOUT.md ("Versions", "Writers"). An index
is a local directory or an object-store prefix (``s3://``, ``gs://``, ``az://`` with Lance's ``storage_options``),
where the write lock is a lease committed through Lance's conditional commit (``lock.lance``).

Live index. A version's search state is derived from the previous one's when only appended fragments and
deletions separate them (the new rows read and checked, deleted rows masked), else loaded in full; with
``auto_optimize`` (the default) a document write then compacts the table under the same write lock once its
thresholds are passed (:func:`mvstore.store._maintain.auto_optimize`; docs/LAYOUT.md, "Automatic compaction").
"""

from __future__ import annotations

import contextlib
import os
from datetime import timedelta
from typing import Any

import numpy as np

from .. import spec as spec_mod
from .._checks import check_int
from ..exceptions import (
    FilterError,
    IndexCorruptedError,
    IndexExistsError,
    InvalidArgumentError,
    InvalidDtypeError,
    InvalidMetadataError,
    InvalidOperationError,
    MvstoreError,
    SpecError,
    StorageUnreachableError,
    UnknownIdError,
)
from . import _integrity
from ._encode import drift
from ._fs import Location
from ._index import Index, check_version
from ._layout import (
    DOCS,
    FORMAT_VERSION,
    INTERNAL_COLUMNS,
    MANIFEST,
    ROW_CHECKSUM,
    STATE,
    V2_NAMES,
    has_versions,
    read_manifest,
    rewrite_manifest,
    write_manifest,
)
from ._view import CodeCache, where_columns

__all__ = [
    "create",
    "open",
    "upgrade",
    "Index",
    "drift",
    "where_columns",
    "FilterError",
    "IndexExistsError",
    "InvalidMetadataError",
    "InvalidOperationError",
    "UnknownIdError",
]


@contextlib.contextmanager
def _reaching(loc: Location):
    """Around create/open's first touches of an object store: a failure to reach it is
    StorageUnreachableError naming the URI and what to check."""
    if loc.local:
        yield
        return
    try:
        yield
    except OSError as e:
        if isinstance(e, MvstoreError):
            raise
        raise StorageUnreachableError(
            f"{loc.uri} cannot be reached ({str(e).splitlines()[0][:200]}); check the bucket exists and "
            "storage_options (e.g. aws_endpoint, aws_region, aws_access_key_id/aws_secret_access_key, "
            "allow_http='true' for an http endpoint)"
        ) from e


def create(
    uri: str | os.PathLike,
    spec: str | None = None,
    dim: int | None = None,
    *,
    max_bytes_per_token: float | None = None,
    exist_ok: bool = False,
    n_centroids: int | None = None,
    train_size: int = 65536,
    seed: int = 0,
    keep_source: bool = False,
    drift_threshold: float = 1.5,
    encoder: Any = None,
    storage_options: dict[str, str] | None = None,
    auto_optimize: bool = True,
    compact_fragments: int = 8,
    fragment_rows: int = 16384,
    deleted_fraction: float = 0.1,
    retention: timedelta | None = timedelta(hours=1),
) -> Index:
    """Create an empty index at ``uri`` (a local directory, or an object-store URI such as
    ``s3://bucket/indexes/ix`` with Lance's ``storage_options``: credentials, region, endpoint) for ``dim``-dimensional token vectors compressed by ``spec``
    (e.g. ``"fp16"``, ``"pool2,pca64,sq8"``; None: :func:`mvstore.default_spec` of ``dim``; ``"auto"``: picked
    on the first add as the spec closest to exact MaxSim within ``max_bytes_per_token``, see
    :func:`mvstore.tune.auto_spec`, reported by ``stats()["auto"]``). ``exist_ok=True`` opens an existing
    index with the same spec and dim instead of failing. ``n_centroids`` fixes the stage-1 centroid count
    (default: derived from the first add); ``train_size`` caps the codec training sample; ``keep_source`` also
    stores the pooled vectors (fp16) so :meth:`Index.optimize` can retrain the codec; ``drift_threshold`` is the
    drift above which ``optimize(retrain="auto")`` retrains.

    ``encoder`` (``"hf"`` = the bundled MiniLM, ``"hf:MODEL"``, ``"st:MODEL"``, ``"pylate:MODEL"``,
    ``"colbert:PATH"``, or such an encoder object, see :func:`mvstore.encoders.make_encoder`) is recorded in the
    index (``options["encoder"]``, JSON) for :meth:`Index.add_texts` and ``search("text")``; ``dim`` then
    defaults to its output dim and must equal it.

    ``auto_optimize`` (default on) maintains the table after every document write, under the write's lock: once
    ``compact_fragments`` adjacent fragments hold fewer than ``fragment_rows`` rows each, or more than
    ``deleted_fraction`` of the stored rows are deleted, Lance compaction merges the small fragments and
    rewrites those with deleted rows (one more commit), then the files of versions older than ``retention``
    are deleted (None: kept until ``optimize(cleanup=True)``; time travel to a deleted version stops working)."""
    loc = Location(uri, storage_options)
    root = loc.uri
    enc = recorded = None
    if encoder is not None:
        enc, dim, recorded = _create_encoder(encoder, dim, root)
    dim = check_int(
        "dim", dim, lo=1, what="the token vectors' dimension, e.g. create(uri, dim=128), or pass encoder="
    )
    sp_text = _spec_text(spec, dim, max_bytes_per_token)
    _check_create_options(
        train_size, n_centroids, seed, drift_threshold, (exist_ok, keep_source, auto_optimize),
        compact_fragments, fragment_rows, deleted_fraction, retention,
    )  # fmt: skip
    with _reaching(loc):
        exists = loc.exists(MANIFEST)
        occupied = not exists and (
            (loc.local and os.path.exists(root) and not os.path.isdir(root)) or bool(loc.listdir())
        )
    if exists:
        if not exist_ok:
            raise IndexExistsError(
                f"an mvstore index already exists at {root!r}: open it with mvstore.store.open(uri), pass "
                "exist_ok=True, or choose another path"
            )
        return _open_existing(root, storage_options, sp_text, dim, enc, recorded)
    if occupied:
        raise IndexExistsError(
            f"{root!r} exists and is not an empty directory (nor an mvstore index); choose a new path"
        )
    loc.makedirs()
    _integrity.init(loc)  # before the manifest, which marks the directory as an index
    options: dict[str, Any] = {
        "n_centroids": None if n_centroids is None else int(n_centroids),
        "train_size": int(train_size),
        "seed": int(seed),
        "keep_source": bool(keep_source),
        "drift_threshold": float(drift_threshold),
        "auto_optimize": auto_optimize,
        "compact_fragments": int(compact_fragments),
        "fragment_rows": int(fragment_rows),
        "deleted_fraction": float(deleted_fraction),
        "retention_s": None if retention is None else retention.total_seconds(),
    }
    if max_bytes_per_token is not None:
        options["max_bytes_per_token"] = float(max_bytes_per_token)
    if enc is not None:
        options["encoder"] = recorded
    return Index(loc, write_manifest(loc, sp_text, dim, options), encoder=enc)


def _create_encoder(encoder: Any, dim: Any, root: str) -> tuple[Any, int, dict[str, Any]]:
    """create(encoder=): the encoder object, the dim (its output dim, checked against ``dim`` when given) and
    what the manifest records of it."""
    from ._text import record, resolve

    if dim is not None:
        check_int("dim", dim, lo=1, what="the token vectors' dimension, e.g. create(uri, dim=128)")
    enc, enc_dim = resolve(encoder, dim, f"create({root!r})")
    return enc, enc_dim, record(enc)


def _spec_text(spec: Any, dim: int, max_bytes_per_token: Any) -> str:
    """The spec create() records: ``spec`` parsed and checked against ``dim`` (None: the default spec of
    ``dim``), or "auto" with its byte budget checked."""
    from ..tune import _check_budget

    if spec is None:
        spec = spec_mod.default_spec(dim)
    if not isinstance(spec, str):
        raise InvalidDtypeError(
            f"spec must be a string such as 'fp16' or 'pool2,pca64,sq8', got {type(spec).__name__}"
        )
    if spec == "auto":
        if max_bytes_per_token is None:
            raise SpecError(
                'spec="auto" picks the spec with the best fidelity within a size budget: pass '
                'max_bytes_per_token=, e.g. create(uri, dim=128, spec="auto", max_bytes_per_token=16)'
            )
        _check_budget(max_bytes_per_token)
        return "auto"
    if max_bytes_per_token is not None:
        raise SpecError(
            f'max_bytes_per_token only applies to spec="auto"; spec {spec!r} fixes the size already: '
            "drop one of the two"
        )
    sp = spec_mod.parse(spec)
    spec_mod.build_pipeline(sp, dim)  # validates the spec against dim (e.g. pca96 on 64-d vectors)
    return str(sp)


def _check_create_options(
    train_size: Any, n_centroids: Any, seed: Any, drift_threshold: Any, flags: tuple[Any, Any, Any],
    compact_fragments: Any, fragment_rows: Any, deleted_fraction: Any, retention: Any,
) -> None:  # fmt: skip
    """create()'s training and maintenance options (``flags``: exist_ok, keep_source, auto_optimize)."""
    check_int("train_size", train_size, lo=1, what="vectors sampled to train the codec")
    if n_centroids is not None:
        check_int(
            "n_centroids", n_centroids, lo=1, what="stage-1 centroids; None derives it from the first add"
        )
    check_int("seed", seed, lo=0, hi=2**31 - 1, what="the training random seed")  # faiss takes a C int
    if (
        isinstance(drift_threshold, bool)
        or not isinstance(drift_threshold, (int, float))
        or not drift_threshold > 1.0
        or not np.isfinite(drift_threshold)
    ):
        raise InvalidArgumentError(
            f"drift_threshold must be a finite number > 1.0 (1.0 = no drift), got {drift_threshold!r}"
        )
    if not all(isinstance(b, bool) for b in flags):
        exist_ok, keep_source, auto_optimize = flags
        raise InvalidDtypeError(
            f"exist_ok, keep_source and auto_optimize must be True or False, got {exist_ok!r}, {keep_source!r} "
            f"and {auto_optimize!r}"
        )
    check_int("compact_fragments", compact_fragments, lo=2, what="small fragments that trigger a compaction")
    check_int("fragment_rows", fragment_rows, lo=1, what="rows below which a fragment counts as small")
    if (
        isinstance(deleted_fraction, bool)
        or not isinstance(deleted_fraction, (int, float))
        or not 0.0 < deleted_fraction < 1.0
    ):
        raise InvalidArgumentError(
            f"deleted_fraction must be a number in (0, 1) (the deleted share of rows that triggers a compaction), "
            f"got {deleted_fraction!r}"
        )
    if retention is not None and not isinstance(retention, timedelta):
        raise InvalidDtypeError(
            f"retention must be a datetime.timedelta (e.g. timedelta(hours=1)) or None, got "
            f"{type(retention).__name__} {retention!r:.80}"
        )
    if retention is not None and retention < timedelta(0):
        raise InvalidArgumentError(f"retention={retention!r} must not be negative; e.g. timedelta(hours=1)")


def _open_existing(
    root: str, storage_options: Any, sp_text: str, dim: int, enc: Any, recorded: dict[str, Any] | None
) -> Index:
    """create(exist_ok=True) on an index: open it when it has this spec and dim (and, given an encoder, records
    the same one or none)."""
    idx = open(root, storage_options=storage_options)
    if idx.manifest["spec"] != sp_text or idx.dim != dim:
        raise SpecError(
            f"the index at {root!r} was created with spec {idx.manifest['spec']!r} and dim {idx.dim}, not "
            f"{sp_text!r} and dim {dim}; open it with mvstore.store.open(uri) or create a new index at another path"
        )
    if enc is not None:
        assert recorded is not None  # recorded with the encoder
        had = idx.options.get("encoder")
        if had is not None and {k: v for k, v in had.items() if k != "name"} != {
            k: v for k, v in recorded.items() if k != "name"
        }:
            raise InvalidArgumentError(
                f"the index at {root!r} records encoder {had.get('name')!r}, not {recorded['name']!r}; open it "
                "with mvstore.open(uri, encoder=...) to use another encoder for this session"
            )
        idx._encoder = enc
    return idx


#: open(uri, memory="bounded")'s default cache of stage-2 codes
DEFAULT_CACHE_BYTES = 256 << 20


def _code_cache(memory: Any, cache_bytes: Any) -> CodeCache | None:
    """The Index's code cache for ``open(memory=, cache_bytes=)``: None in memory="full" mode."""
    if memory not in ("full", "bounded"):
        raise InvalidArgumentError(
            f'memory must be "full" (every stored code in memory, the default) or "bounded" (codes read from disk '
            f"for each search's candidates, through a cache of cache_bytes), got {memory!r}"
        )
    if memory == "full":
        if cache_bytes is not None:
            raise InvalidArgumentError(
                f'cache_bytes={cache_bytes!r} sizes the code cache of memory="bounded"; pass memory="bounded" too, '
                "or drop cache_bytes"
            )
        return None
    if cache_bytes is None:
        return CodeCache(DEFAULT_CACHE_BYTES)
    check_int("cache_bytes", cache_bytes, lo=0, what='bytes of stage-2 codes memory="bounded" keeps cached')
    return CodeCache(int(cache_bytes))


def open(  # noqa: A001 - mirrors lance/lancedb
    uri: str | os.PathLike,
    version: int | None = None,
    *,
    encoder: Any = None,
    storage_options: dict[str, str] | None = None,
    memory: str = "full",
    cache_bytes: int | None = None,
) -> Index:
    """Open the index at ``uri`` (a local directory or an object-store URI, reached with ``storage_options``):
    its latest version, or ``version`` (time travel, read-only until :meth:`Index.checkout`).
    IndexCorruptedError if the path is not an mvstore index or its state is damaged. ``encoder`` (as in
    :func:`create`) replaces the recorded one for this object's text calls (not stored); without it the
    recorded encoder is loaded on the first text call, so opening needs no torch.

    ``memory="bounded"`` keeps only stage 1 in memory (centroids, posting lists, ids and offsets): the codes that
    stage 2 scores are read from the docs table for each search's candidates, through a least-recently-used
    cache of ``cache_bytes`` (default 256 MiB) shared by this object's versions. Rankings are the same as with
    ``memory="full"`` (the default: every code in memory); each search pays the reads of the codes not cached.
    Dense codecs only (a sparse codec's posting lists are built from every code)."""
    loc = Location(uri, storage_options)
    version = check_version(version)
    code_cache = _code_cache(memory, cache_bytes)
    with _reaching(loc):
        manifest = read_manifest(loc)
    try:
        idx = Index(loc, manifest, version, code_cache=code_cache)
    except SpecError as e:
        raise IndexCorruptedError(f"the manifest at {loc.table(MANIFEST)} has an invalid spec: {e}") from e
    if encoder is not None:
        from ._text import resolve

        idx._encoder, _ = resolve(encoder, idx.dim, f"open({loc.uri!r})")
    return idx


def upgrade(uri: str | os.PathLike, *, storage_options: dict[str, str] | None = None) -> dict[str, Any]:
    """Upgrade the index at ``uri`` (a local directory or an object-store URI, reached with
    ``storage_options``) in place to this mvstore's on-disk format (3: the index's own docs columns renamed to
    ``_mv_*``, so metadata may use names such as ``source`` or ``n_tokens``). One metadata-only Lance commit
    renames the columns (no data file is rewritten), then the manifest is rewritten; both under the write
    lock. A crash in between leaves an index that asks for ``upgrade`` again, which finishes it; an index
    already in format 3 is left as it is. Versions written before the upgrade stay on disk for ``verify`` but
    cannot be opened (time travel starts at the upgrade's version). Returns
    ``{"format_version_before", "format_version", "renamed", "version"}``."""
    loc = Location(uri, storage_options)
    with _reaching(loc):
        read_manifest(loc, upgrading=True)  # not an index, damaged or from an unknown format: say so first
    with loc.write_lock():
        m = read_manifest(loc, upgrading=True)  # again under the lock: another upgrade may have finished
        renamed: list[str] = []
        version = 0
        if has_versions(loc, DOCS):
            for table in (DOCS, STATE):
                _integrity.check_open(loc, table, None)
            ds = loc.dataset(DOCS)
            _integrity.check_open(loc, DOCS, ds.version)
            names = ds.schema.names
            if ROW_CHECKSUM not in names:
                if V2_NAMES[ROW_CHECKSUM] not in names:
                    raise IndexCorruptedError(
                        f"{loc.table(DOCS)} has neither the format-3 nor the format-2 row checksum column (columns: "
                        f"{names}); it is not an mvstore docs table: restore the index from a backup or rebuild it"
                    )
                renames = [{"path": V2_NAMES[c], "name": c} for c in INTERNAL_COLUMNS if V2_NAMES[c] in names]
                ds.alter_columns(*renames)  # one commit renames them all: a crash leaves all or none renamed
                renamed = [r["path"] for r in renames]
            version = loc.dataset(DOCS).version
        _integrity.record(loc)  # the rename's version (and any a killed writer left unrecorded)
        before = m["format_version"]
        if before != FORMAT_VERSION:
            rewrite_manifest(loc, {**m, "format_version": FORMAT_VERSION})
    return {
        "format_version_before": before,
        "format_version": FORMAT_VERSION,
        "renamed": renamed,
        "version": version,
    }
