"""Streaming index build: throughput and peak memory vs corpus size.

Each corpus size is built in a FRESH subprocess (so its peak RSS is its own) from synthetic clustered
unit-norm token vectors, 30-300 tokens per document, fed to ``Index.add_batches`` one batch at a time (the
generator never holds more than one batch). Memory should stay flat as the corpus grows: the index keeps
one batch plus the ids seen so far, and Lance streams the rows to disk, committing once at the end.

    python benchmarks/streaming_build.py --docs 100000 300000 --json

Prints one JSON object per size (``--json``) or a table: docs, tokens, build seconds (synthetic data
generation timed separately and excluded), docs/s, tokens/s,
peak RSS (MiB, ``ru_maxrss`` of the child), RSS after imports, stored bytes per original token.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


class _Timed:
    """Wrap an iterator and add up the time spent producing its items (synthetic data generation)."""

    def __init__(self, it):
        self.it, self.seconds = iter(it), 0.0

    def __iter__(self):
        return self

    def __next__(self):
        t = time.perf_counter()
        try:
            return next(self.it)
        finally:
            self.seconds += time.perf_counter() - t


def child(args: argparse.Namespace) -> dict:
    import mvstore.store as ms
    from mvstore.testing import synthetic_batches

    rss_imports = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    tmp = tempfile.mkdtemp(prefix="mvstore-stream-", dir=args.tmp)
    try:
        idx = ms.create(os.path.join(tmp, "ix"), spec=args.spec, dim=args.dim, n_centroids=args.n_centroids)
        gen = _Timed(synthetic_batches(args.n, args.dim, args.batch, seed=args.seed))
        t0 = time.perf_counter()
        version = idx.add_batches(gen)
        secs = time.perf_counter() - t0 - gen.seconds  # index build only, data generation excluded
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        s = idx.stats()
        return {
            "bench": "streaming_build",
            "docs": s["docs"],
            "tokens": s["tokens"],
            "dim": args.dim,
            "spec": args.spec,
            "batch_docs": args.batch,
            "n_centroids": s["n_centroids"],
            "version": version,
            "seconds": round(secs, 2),
            "generation_seconds": round(gen.seconds, 2),
            "docs_per_s": round(s["docs"] / secs, 1),
            "tokens_per_s": round(s["tokens"] / secs),
            "peak_rss_mb": round(peak, 1),
            "rss_after_imports_mb": round(rss_imports, 1),
            "stored_bytes_per_token": round(s["bytes_per_token"], 2),
            "disk_bytes": s["disk_bytes"],
        }
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--docs", type=int, nargs="+", default=[100_000, 300_000], help="corpus sizes to build")
    p.add_argument("--dim", type=int, default=128)
    p.add_argument("--spec", default="pca64,sq4", help="compression spec (default: 32 bytes per vector)")
    p.add_argument(
        "--n-centroids", type=int, default=256, help="stage-1 centroids (fixed for a fair comparison)"
    )
    p.add_argument("--batch", type=int, default=1000, help="documents per streamed batch")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--tmp", default=None, help="directory for the temporary indexes")
    p.add_argument("--json", action="store_true", help="print one JSON object per line")
    p.add_argument("--child", type=int, default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child is not None:
        args.n = args.child
        print(json.dumps(child(args)), flush=True)
        return
    rows = []
    for n in args.docs:
        cmd = [sys.executable, __file__, "--child", str(n), "--dim", str(args.dim), "--spec", args.spec]
        cmd += ["--n-centroids", str(args.n_centroids), "--batch", str(args.batch), "--seed", str(args.seed)]
        if args.tmp:
            cmd += ["--tmp", args.tmp]
        env = dict(os.environ, PYTHONPATH=str(ROOT), HF_HUB_OFFLINE="1")
        out = subprocess.run(cmd, env=env, check=True, capture_output=True, text=True).stdout
        row = json.loads(out.strip().splitlines()[-1])
        rows.append(row)
        if args.json:
            print(json.dumps(row), flush=True)
    if not args.json:
        cols = [
            "docs",
            "tokens",
            "seconds",
            "docs_per_s",
            "tokens_per_s",
            "peak_rss_mb",
            "rss_after_imports_mb",
        ]
        print(" ".join(f"{c:>20}" for c in cols))
        for r in rows:
            print(" ".join(f"{r[c]:>20}" for c in cols))


if __name__ == "__main__":
    main()
