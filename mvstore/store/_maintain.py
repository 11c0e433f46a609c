"""``Index.optimize``: codec retraining on drift, Lance compaction, cleanup of old versions."""

from __future__ import annotations

import contextlib
import time
import warnings
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

import lance
import numpy as np
import pyarrow as pa

from .._progress import bar
from ..exceptions import InvalidOperationError
from ..ragged import Ragged
from ._encode import encode_pooled
from ._fs import LEASE_TABLE, Location
from ._integrity import checksum_column
from ._layout import (
    CODES,
    DOCS,
    N_VECTORS,
    RECON_ERR,
    ROW_CHECKSUM,
    SOURCE,
    STATE,
    STATE_KEY,
    TERMS,
    binary_values,
)
from ._tables import Tables
from ._view import View

#: rows per record batch when streaming the docs table through retraining
_SCAN_ROWS = 2048
#: the automatic maintenance policy (``create(..., auto_optimize=True)``, see :func:`auto_optimize`): the
#: manifest's options override these; an index created before the policy existed uses them as they are
AUTO_DEFAULTS: dict[str, Any] = {
    "auto_optimize": True,
    "compact_fragments": 8,
    "fragment_rows": 16384,
    "deleted_fraction": 0.1,
    "retention_s": 3600.0,
}
#: files that no version references (a crashed write's, or a live writer's not yet committed) are deleted by
#: cleanup only when none of them is younger than this
ORPHAN_GRACE = timedelta(minutes=15)
#: how long ``optimize(cleanup=True)`` keeps old versions by default (LanceDB's default retention)
RETENTION = timedelta(days=7)


def _source_batches(ds: lance.LanceDataset, dim: int, columns: list[str] | None = None) -> Iterator[Any]:
    """(record batch, pooled Ragged of its fp16 source vectors) over the whole table, in order."""
    for rb in ds.to_batches(columns=columns, batch_size=_SCAN_ROWS, scan_in_order=True):
        nvec = rb.column(N_VECTORS).to_numpy().astype(np.int64)
        offsets = np.zeros(len(nvec) + 1, np.int64)
        np.cumsum(nvec, out=offsets[1:])
        vals = binary_values(rb.column(SOURCE)).view(np.float16).reshape(-1, dim).astype(np.float32)
        yield rb, Ragged(vals, offsets)


def _sample_sources(ds: lance.LanceDataset, dim: int, want: int, seed: int) -> tuple[np.ndarray, int]:
    """About ``want`` stored source vectors, drawn from random documents in one streaming pass."""
    total = int(np.asarray(ds.to_table(columns=[N_VECTORS]).column(N_VECTORS).to_numpy(), np.int64).sum())
    p = min(1.0, want / max(total, 1))
    rng = np.random.default_rng(seed)
    parts = []
    for _, r in _source_batches(ds, dim, [N_VECTORS, SOURCE]):
        keep = np.flatnonzero(rng.random(len(r)) < p)
        if len(keep):
            parts.append(r.take(keep).values)
    sample = np.concatenate(parts) if parts else np.zeros((0, dim), np.float32)
    return sample, total


def retrain_codec(tables: Tables) -> int:
    """Refit codec + centroids on the stored source vectors, re-encode every document (one overwrite commit)."""
    ds = tables.latest_docs()
    if ds is None or ds.count_rows() == 0:
        raise InvalidOperationError("the index has no documents to retrain on; add documents first")
    dim, opts = tables.dim, tables.options
    sample, total = _sample_sources(ds, dim, opts["train_size"], opts.get("seed", 0))
    spec = tables.spec
    assert spec is not None  # the view reads a version with documents: it has a codec state
    st = tables.states.fit(sample, total, explicit=False, spec=spec)
    schema = ds.schema.with_metadata({**(ds.schema.metadata or {}), STATE_KEY: str(st.state_id).encode()})
    keep = [n for n in schema.names if n not in (N_VECTORS, CODES, TERMS, RECON_ERR, SOURCE, ROW_CHECKSUM)]

    def batches() -> Iterator[pa.RecordBatch]:
        for rb, pooled in _source_batches(ds, dim):
            cols = {n: rb.column(n) for n in keep}
            cols.update(encode_pooled(st, pooled, keep_source=True))
            cols[ROW_CHECKSUM] = checksum_column(cols)
            yield pa.RecordBatch.from_pydict({n: cols[n] for n in schema.names}).cast(schema)

    out = tables.loc.write_dataset(
        pa.RecordBatchReader.from_batches(schema, batches()), DOCS, mode="overwrite"
    )
    tables.view = tables.new_view(out.version, out, st)
    return out.version


def optimize(
    tables: Tables,
    stats: Callable[[], dict[str, Any]],
    *,
    compact: bool,
    cleanup: bool,
    older_than: timedelta,
    retrain: bool | str,
    progress: bool | None,
) -> dict[str, Any]:
    with bar(1 + int(compact) + int(cleanup), "optimizing", unit="step", progress=progress) as pbar:
        return _optimize(tables, stats, compact, cleanup, older_than, retrain, pbar)


def _optimize(
    tables: Tables, stats: Callable[[], dict[str, Any]], compact: bool, cleanup: bool, older_than: timedelta,
    retrain: bool | str, pbar: Any,
) -> dict[str, Any]:  # fmt: skip
    """``Index.optimize`` (its arguments checked; the caller holds the write lock). ``stats``: the Index's
    :meth:`~mvstore.store.Index.stats` of the version ``tables`` reads."""
    tables.checkout(None)
    before = stats()
    report: dict[str, Any] = {
        "version_before": before["version"],
        "drift": before["drift"],
        "retrained": False,
    }
    # full-text indexes to keep up to date (a retraining drops them)
    text_columns = tables.view.text_columns()
    threshold = float(tables.options.get("drift_threshold", 1.5))
    drifted = before["drift"] is not None and before["drift"] > threshold
    if retrain is True or (retrain == "auto" and drifted):
        if not tables.options.get("keep_source"):
            msg = (
                f"cannot retrain: this index keeps no source vectors (drift {before['drift']}); create the index "
                "with keep_source=True, or rebuild it by adding the vectors to a new index"
            )
            if retrain is True:
                raise InvalidOperationError(msg)
            warnings.warn(msg, RuntimeWarning, stacklevel=3)
            report["retrain_skipped"] = msg
        else:
            retrain_codec(tables)
            report["retrained"] = True
    pbar.update(1)
    ds = tables.latest_docs()
    if compact and ds is not None and ds.count_rows():
        m = ds.optimize.compact_files()
        report["compaction"] = {
            "fragments_removed": m.fragments_removed,
            "fragments_added": m.fragments_added,
        }
    pbar.update(int(compact))
    if text_columns:
        report["fts_index"] = _update_text_index(tables, text_columns)
    if cleanup and ds is not None:
        report["cleanup"] = _cleanup(tables, older_than)
    pbar.update(int(cleanup))
    tables.checkout(None)
    report["version"] = tables.view.version
    return report


def _update_text_index(tables: Tables, columns: list[str]) -> str:
    """Add the rows written since the full-text index was built to it (one commit when there are any), or
    rebuild it on ``columns`` when a retraining's overwrite dropped it."""
    ds = tables.docs()
    have = View(ds.version, ds, None, tables.loc).text_columns()
    if set(columns) - set(have):
        for c in columns:
            ds.create_scalar_index(c, index_type="INVERTED", replace=True)
            ds = tables.docs()
        return "rebuilt"
    before = ds.version
    ds.optimize.optimize_indices()  # commits only when some rows were not indexed yet
    return "updated" if tables.docs().version != before else "up to date"


def _needs_compaction(ds: lance.LanceDataset, opts: dict[str, Any]) -> str | None:
    """Why the latest version should be compacted under the policy, or None: at least ``compact_fragments``
    fragments below ``fragment_rows`` rows that have a small neighbour (Lance merges only adjacent small
    fragments: a lone one between two large ones would make every write retry), or more than
    ``deleted_fraction`` of the stored rows deleted (so some fragment is above Lance's threshold)."""
    rows, deleted = [], []
    for fr in ds.get_fragments():
        m = fr.metadata
        rows.append(int(m.physical_rows))
        deleted.append(0 if m.deletion_file is None else int(m.deletion_file.num_deleted_rows))
    small = [r < opts["fragment_rows"] for r in rows]
    mergeable = sum(
        s and ((i > 0 and small[i - 1]) or (i + 1 < len(small) and small[i + 1])) for i, s in enumerate(small)
    )
    if mergeable >= opts["compact_fragments"]:
        return f"{mergeable} small fragments"
    if rows and sum(deleted) > opts["deleted_fraction"] * sum(rows):
        return f"{sum(deleted)} of {sum(rows)} rows deleted"
    return None


def auto_optimize(tables: Tables) -> dict[str, Any] | None:
    """The maintenance a write runs after it commits, still under its write lock (so it never races another
    writer, and cleanup never meets a writer's uncommitted files): when :func:`_needs_compaction` says so,
    Lance compaction (one more commit; readers keep the versions they read) merges adjacent fragments below
    ``fragment_rows`` rows and rewrites fragments with more than ``deleted_fraction`` of their rows deleted,
    then the files of versions older than ``retention_s`` seconds are deleted (None: never). Returns what it
    did, or None when nothing was due."""
    opts = {**AUTO_DEFAULTS, **tables.options}
    if not opts["auto_optimize"]:
        return None
    ds = tables.latest_docs()
    if ds is None:
        return None
    reason = _needs_compaction(ds, opts)
    if reason is None:
        return None
    m = ds.optimize.compact_files(
        target_rows_per_fragment=int(opts["fragment_rows"]),
        materialize_deletions=True,
        materialize_deletions_threshold=float(opts["deleted_fraction"]),
    )
    report: dict[str, Any] = {
        "reason": reason,
        "fragments_removed": m.fragments_removed,
        "fragments_added": m.fragments_added,
    }
    if opts["retention_s"] is not None:
        report["cleanup"] = _cleanup(tables, timedelta(seconds=float(opts["retention_s"])))
    return report


def _young_orphans(loc: Location, table: str, ds: lance.LanceDataset, grace: timedelta) -> list[str]:
    """Data and deletion files younger than ``grace`` that the latest version does not reference: they may
    belong to a write that has not committed yet (mvstore's own writers hold the write lock during cleanup,
    but a plain Lance writer does not)."""
    used: set[str] = set()
    for frag in ds.get_fragments():
        used.update(f"data/{f.path}" for f in frag.data_files())
        if frag.metadata.deletion_file is not None:
            used.add(frag.metadata.deletion_file.path(frag.fragment_id))
    cutoff = time.time() - grace.total_seconds()
    young = []
    for sub in ("data", "_deletions"):
        for name in loc.listdir(f"{table}/{sub}"):
            rel = f"{sub}/{name}"
            with contextlib.suppress(FileNotFoundError):
                if rel not in used and loc.mtime(f"{table}/{rel}") > cutoff:
                    young.append(rel)
    return young


def _clean_table(loc: Location, table: str, older_than: timedelta) -> Any:
    """Lance cleanup of one table: versions older than ``older_than`` (the latest is always kept). Files no
    version references (a crashed write's) go when older than Lance's own 7 days; with a retention under
    ORPHAN_GRACE they go at once (``delete_unverified``) when none of them is younger than ORPHAN_GRACE,
    never a file a live writer may still commit."""
    ds = loc.dataset(table)
    unverified = older_than < ORPHAN_GRACE and not _young_orphans(loc, table, ds, ORPHAN_GRACE)
    return ds.cleanup_old_versions(older_than=older_than, delete_unverified=unverified)


def _cleanup(tables: Tables, older_than: timedelta) -> dict[str, int]:
    """Delete old docs versions' files (and orphans of crashed writes, see :func:`_clean_table`), then codec
    states no remaining docs version refers to. Runs under the index's write lock: no mvstore writer is
    between writing its files and committing them."""
    loc = tables.loc
    s = _clean_table(loc, DOCS, older_than)
    removed = {"bytes_removed": int(s.bytes_removed), "old_versions": int(s.old_versions)}
    if not loc.local and loc.exists(LEASE_TABLE):  # the lease's past versions (we hold it now)
        removed["bytes_removed"] += int(
            loc.dataset(LEASE_TABLE).cleanup_old_versions(timedelta(0)).bytes_removed
        )
    sds = tables.states.dataset()
    if sds is None:
        return removed
    if sds.count_rows(filter="name = '__meta__'") <= 1:
        removed["states_removed"] = 0  # one codec state: every version uses it (no version needs reading)
        return removed
    ds = loc.dataset(DOCS)
    used: set[int] = set()
    for v in ds.versions():
        meta = ds.checkout_version(v["version"]).schema.metadata or {}
        if STATE_KEY in meta:
            used.add(int(meta[STATE_KEY]))
    if used:
        stale = sds.count_rows(filter=f"state_id NOT IN ({', '.join(str(u) for u in sorted(used))})")
        if stale:
            sds.delete(f"state_id NOT IN ({', '.join(str(u) for u in sorted(used))})")
            removed["bytes_removed"] += int(_clean_table(loc, STATE, older_than).bytes_removed)
        removed["states_removed"] = int(stale)
    return removed
