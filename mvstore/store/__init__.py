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

Layout (also in docs/LAYOUT.md). An index is a local directory::

    <uri>/mvstore.json   manifest, written once by create(): {"format": "mvstore", "format_version": 2,
                         "spec", "dim", "options": {n_centroids, train_size, seed, keep_source, drift_threshold,
                         auto_optimize, compact_fragments, fragment_rows, deleted_fraction, retention_s},
                         "checksum"}
    <uri>/docs.lance     Lance table "docs", one row per document:
                           id          int64 or string: the user's id, unique, never renumbered
                           <metadata>  the user's columns, fixed by the first add (later batches may omit some:
                                       those become null, upsert keeps their stored values; unknown columns
                                       and struct fields are an error)
                           n_tokens    int32: original (pre-pooling) token count
                           n_vectors   int32: stored (pooled) vector count
                           codes       large_binary: n_vectors x code_size bytes, the codec's codes
                           terms       list<int32>: each stored vector's stage-1 centroid id (empty for
                                       rq, whose codes carry it)
                           recon_err   float32: mean squared reconstruction error of the doc's vectors
                           source      large_binary (only with keep_source=True): pooled vectors as fp16
                           row_checksum uint64: hash of id, n_tokens, n_vectors, codes, terms
                         schema metadata "mvstore.state_id" = the codec state the codes were written with
    <uri>/codec.lance    Lance table "codec": state_id, name, dtype, shape, data (raw array bytes), plus one
                         "__meta__" row per state holding JSON (codec meta, centroid source, training error,
                         checksum of the state)
    <uri>/integrity/     HEAD.json + one record per committed table version: files with sizes and sha256,
                         docs row count and row-checksum sum (checked on open / first search; verify() hashes all)

Both tables open with plain ``lancedb.connect(uri).open_table("docs")``. Nothing is pickled: state is raw
numeric bytes + dtype + shape + JSON. One index version = one docs-table Lance version; its schema metadata
names its codec state, so ``open(uri, version=v)`` decodes old versions with the state they were written with.

Training policy. The codec pipeline (spec minus pooling) and the stage-1 centroids are fitted ONCE: on a random
sample (``train_size`` vectors, default 65536) of the pooled vectors of the first add (or of an explicit
``train(sample)`` before it). Later adds encode with that state; nothing is rebuilt. Stage-1 terms: when the
quantizer has coarse centroids (``rq``) its ``coarse_terms`` are used; otherwise faiss k-means centroids
(``n_centroids``, default the power of two at or below ``16 * sqrt(n_vectors of the first add)``, at most the
sample size) are fitted on the transformed, pre-quantization sample and each vector's term is its nearest
centroid (max inner product). Terms are stored in the docs row, so one Lance commit covers codes and terms.

Drift. Every document row stores ``recon_err``, the mean over its stored vectors of the squared error of the
stored representation, ``(||x||^2 - ||transform(x)||^2) + ||transform(x) - decode(encode(x))||^2`` (what the
orthonormal pca/trunc projections drop plus the quantization error); ``stats()["drift"]`` is the
vector-weighted mean of it over the index divided by the same error on the training sample (1.0 = the data
looks like the training data; None for a lossless codec such as fp32/fp16). ``optimize(retrain="auto")``
refits the codec when drift exceeds ``drift_threshold`` (default 1.5); retraining needs the pooled vectors,
so it is available only for indexes created with ``keep_source=True`` (otherwise it warns and reports why it
did not retrain).

Crash safety and concurrency. A write (add, add_batches, upsert, delete, optimize) validates its whole input
first and becomes visible in ONE Lance commit; a failure or a SIGKILL before the commit leaves the previous
version current (orphan data files are removed by ``optimize(cleanup=True)``). An :class:`Index` object reads
one version (a per-version in-memory :class:`~mvstore.search.snapshot.Snapshot`) until its own write or
:meth:`Index.refresh`; searches in other threads or processes during a write see one consistent version. A
version's snapshot is derived from the previous one's when only appended fragments and deletions separate
them (the new rows read and checked, deleted rows masked), else loaded in full. With ``auto_optimize`` (the
default) a document write then compacts the table under its write lock once its thresholds are passed
(:func:`mvstore.store._maintain.auto_optimize`), and deletes versions older than ``retention``.
Writers in several threads or processes are safe: every write holds the index's cross-process write lock
(``flock`` on ``<uri>/mvstore.lock``, dropped by the kernel when its holder dies) from reading the latest version
to its commit, so writes run one after the other and each id check sees every earlier commit; a write waits up
to 10 minutes for another one, then raises IndexBusyError. ``optimize(cleanup=True)`` holds the lock too and
never deletes files a writer may still commit. An Index still reading a version that a cleanup deleted raises
VersionCleanedUpError: call :meth:`Index.refresh`. Only local directories are supported.
"""

from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path

import numpy as np

from .. import spec as spec_mod
from ..exceptions import (
    FilterError,
    IndexCorruptedError,
    IndexExistsError,
    InvalidArgumentError,
    InvalidDtypeError,
    InvalidMetadataError,
    InvalidOperationError,
    SpecError,
    UnknownIdError,
)
from . import _integrity
from ._encode import drift
from ._index import Index, check_version
from ._layout import MANIFEST, read_manifest, write_manifest
from ._view import where_columns

__all__ = [
    "create",
    "open",
    "Index",
    "drift",
    "where_columns",
    "FilterError",
    "IndexExistsError",
    "InvalidMetadataError",
    "InvalidOperationError",
    "UnknownIdError",
]


def _root(uri: str | os.PathLike) -> str:
    if not isinstance(uri, (str, os.PathLike)):
        raise InvalidDtypeError(f"uri must be a local directory path (str or Path), got {type(uri).__name__}")
    s = os.fspath(uri)
    if not isinstance(s, str):
        raise InvalidDtypeError(f"uri must be a str path, got {type(s).__name__} {s!r:.80}; decode it (os.fsdecode)")
    if "://" in s and not s.startswith("file://"):
        raise InvalidArgumentError(f"uri {s!r}: only local directories are supported; pass a filesystem path")
    if not s.strip():
        raise InvalidArgumentError("uri is an empty string; pass the index's directory path")
    return os.path.abspath(s.removeprefix("file://"))


def _check_int(name: str, value: object, lo: int, hi: int | None, what: str) -> None:
    """InvalidDtypeError for a non-int (bools included), InvalidArgumentError outside [lo, hi]."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise InvalidDtypeError(f"{name} must be an int ({what}), got {type(value).__name__} {value!r:.80}")
    if value < lo or (hi is not None and value > hi):
        bounds = f">= {lo}" if hi is None else f"in [{lo}, {hi}]"
        raise InvalidArgumentError(f"{name}={value} must be {bounds} ({what})")


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
    auto_optimize: bool = True,
    compact_fragments: int = 8,
    fragment_rows: int = 16384,
    deleted_fraction: float = 0.1,
    retention: timedelta | None = timedelta(hours=1),
) -> Index:
    """Create an empty index directory at ``uri`` for ``dim``-dimensional token vectors compressed by ``spec``
    (e.g. ``"fp16"``, ``"pool2,pca64,sq8"``; None: :func:`mvstore.default_spec` of ``dim``; ``"auto"``: picked
    on the first add as the spec closest to exact MaxSim within ``max_bytes_per_token``, see
    :func:`mvstore.tune.auto_spec`, reported by ``stats()["auto"]``). ``exist_ok=True`` opens an existing
    index with the same spec and dim instead of failing. ``n_centroids`` fixes the stage-1 centroid count
    (default: derived from the first add); ``train_size`` caps the codec training sample; ``keep_source`` also
    stores the pooled vectors (fp16) so :meth:`Index.optimize` can retrain the codec; ``drift_threshold`` is the
    drift above which ``optimize(retrain="auto")`` retrains.

    ``auto_optimize`` (default on) maintains the table after every document write, under the write's lock: once
    ``compact_fragments`` adjacent fragments hold fewer than ``fragment_rows`` rows each, or more than
    ``deleted_fraction`` of the stored rows are deleted, Lance compaction merges the small fragments and
    rewrites those with deleted rows (one more commit), then the files of versions older than ``retention``
    are deleted (None: kept until ``optimize(cleanup=True)``; time travel to a deleted version stops working)."""
    from ..tune import _check_budget

    root = _root(uri)
    _check_int("dim", dim, 1, None, "the token vectors' dimension, e.g. create(uri, dim=128)")
    dim = int(dim)
    if spec is None:
        spec = spec_mod.default_spec(dim)
    if not isinstance(spec, str):
        raise InvalidDtypeError(f"spec must be a string such as 'fp16' or 'pool2,pca64,sq8', got {type(spec).__name__}")
    if spec == "auto":
        if max_bytes_per_token is None:
            raise SpecError(
                'spec="auto" picks the spec with the best fidelity within a size budget: pass '
                "max_bytes_per_token=, e.g. create(uri, dim=128, spec=\"auto\", max_bytes_per_token=16)"
            )
        _check_budget(max_bytes_per_token)
        sp_text = "auto"
    else:
        if max_bytes_per_token is not None:
            raise SpecError(
                f'max_bytes_per_token only applies to spec="auto"; spec {spec!r} fixes the size already: '
                "drop one of the two"
            )
        sp = spec_mod.parse(spec)
        spec_mod.build_pipeline(sp, dim)  # validates the spec against dim (e.g. pca96 on 64-d vectors)
        sp_text = str(sp)
    _check_int("train_size", train_size, 1, None, "vectors sampled to train the codec")
    if n_centroids is not None:
        _check_int("n_centroids", n_centroids, 1, None, "stage-1 centroids; None derives it from the first add")
    _check_int("seed", seed, 0, 2**31 - 1, "the training random seed")  # faiss takes a C int
    if (
        isinstance(drift_threshold, bool)
        or not isinstance(drift_threshold, (int, float))
        or not drift_threshold > 1.0
        or not np.isfinite(drift_threshold)
    ):
        raise InvalidArgumentError(
            f"drift_threshold must be a finite number > 1.0 (1.0 = no drift), got {drift_threshold!r}"
        )
    if not all(isinstance(b, bool) for b in (exist_ok, keep_source, auto_optimize)):
        raise InvalidDtypeError(
            f"exist_ok, keep_source and auto_optimize must be True or False, got {exist_ok!r}, {keep_source!r} "
            f"and {auto_optimize!r}"
        )
    _check_int("compact_fragments", compact_fragments, 2, None, "small fragments that trigger a compaction")
    _check_int("fragment_rows", fragment_rows, 1, None, "rows below which a fragment counts as small")
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
    if os.path.exists(os.path.join(root, MANIFEST)):
        if not exist_ok:
            raise IndexExistsError(
                f"an mvstore index already exists at {root!r}: open it with mvstore.store.open(uri), pass "
                "exist_ok=True, or choose another path"
            )
        idx = open(root)
        if idx.manifest["spec"] != sp_text or idx.dim != dim:
            raise SpecError(
                f"the index at {root!r} was created with spec {idx.manifest['spec']!r} and dim {idx.dim}, not "
                f"{sp_text!r} and dim {dim}; open it with mvstore.store.open(uri) or create a new index at another path"
            )
        return idx
    if os.path.exists(root) and (not os.path.isdir(root) or os.listdir(root)):
        raise IndexExistsError(
            f"{root!r} exists and is not an empty directory (nor an mvstore index); choose a new path"
        )
    os.makedirs(root, exist_ok=True)
    _integrity.init(root)  # before the manifest, which marks the directory as an index
    options = {
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
    return Index(root, write_manifest(root, sp_text, dim, options))


def open(uri: str | os.PathLike, version: int | None = None) -> Index:  # noqa: A001 - mirrors lance/lancedb
    """Open the index at ``uri``: its latest version, or ``version`` (time travel, read-only until
    :meth:`Index.checkout`). IndexCorruptedError if the path is not an mvstore index or its state is damaged."""
    root = _root(uri)
    version = check_version(version)
    manifest = read_manifest(root)
    try:
        return Index(root, manifest, version)
    except SpecError as e:
        raise IndexCorruptedError(f"the manifest at {Path(root) / MANIFEST} has an invalid spec: {e}") from e
