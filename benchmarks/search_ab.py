"""Interleaved A/B of single-query search latency on SciFact: the working tree against a base git revision.

    python benchmarks/search_ab.py --base REV [--spec SPEC] [--max-docs N] [--rounds 3] [--json]

The base revision's ``mvstore`` package is extracted with ``git archive`` into a temporary directory and
imported as a second package (``mvstore_base``); each version builds its own index from the same pooled
vectors (so the two may differ in on-disk format; equal rankings then show they also trained alike).
Latency is measured alternating between the two versions query by query, so a busy shared machine slows both
alike and the ratio stays meaningful where absolute figures do not. Variants: ``SearchParams()``,
``SearchParams(threads=1)`` and ``Index.search`` (Arrow result), each with the version's own defaults.

One JSON object per variant and version (nDCG@10, p50/p95 ms), then one per variant with the p50 ratio
(current / base) and the top-10 agreement between the two versions.
"""

from __future__ import annotations

import argparse
import importlib
import io
import json
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.search_bench import build_index  # noqa: E402
from mvstore.eval import ndcg_at_k, recall_vs_reference  # noqa: E402


def import_revision(rev: str, into: Path):
    """``mvstore`` as of git revision ``rev``, imported as the package ``mvstore_base``."""
    try:
        tar = subprocess.run(
            ["git", "-C", str(ROOT), "archive", rev, "mvstore"], check=True, capture_output=True
        ).stdout
    except subprocess.CalledProcessError as e:
        msg = e.stderr.decode().strip()
        raise SystemExit(f"git archive {rev} failed: {msg}; pass a commit of this repository") from e
    safe = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}  # Python >= 3.10.12
    with tarfile.open(fileobj=io.BytesIO(tar)) as t:
        t.extractall(into, **safe)
    (into / "mvstore").rename(into / "mvstore_base")  # the package imports itself relatively
    sys.path.insert(0, str(into))
    return importlib.import_module("mvstore_base")


def _searcher_top(searcher):
    return lambda q: searcher.search([q], 10)[0][0]


def _index_top(idx):
    return lambda q: idx.search(q, 10).column("id").to_pylist()


def main(argv=None) -> int:
    from benchmarks.search_bench import BENCH_SPEC

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--base", required=True, help="git revision to compare the working tree against")
    ap.add_argument("--spec", default=BENCH_SPEC, help="index spec (default: the README's latency spec)")
    ap.add_argument("--max-docs", type=int, default=None)
    ap.add_argument("--rounds", type=int, default=3, help="passes over the queries (samples per query)")
    ap.add_argument(
        "--model",
        choices=("minilm", "colbert128"),
        default="minilm",
        help="token vectors: bundled MiniLM hidden states or the ColBERT model of train_colbert.py",
    )
    ap.add_argument("--json", action="store_true", help="print JSON lines only")
    args = ap.parse_args(argv)

    import mvstore
    from benchmarks.data import load_scifact
    from mvstore.spec import parse

    data = load_scifact(args.max_docs, model=args.model)
    queries = [np.asarray(q, np.float32) for q in data.queries]
    sp = parse(args.spec)
    pooled = sp.pool(data.docs)
    codec_spec = ",".join(str(st) for st in sp.codec_stages)
    with tempfile.TemporaryDirectory(prefix="mvstore_search_ab_") as work:
        base = import_revision(args.base, Path(work) / "base")
        # each version builds its own index from the same pooled vectors (the on-disk format may differ between
        # them); the same training sample and seed give the same codec and centroids where the code agrees
        versions = {
            "current": (mvstore, build_index(pooled, data.doc_ids, codec_spec, f"{work}/current")[0]),
            "base": (base, build_index(pooled, data.doc_ids, codec_spec, f"{work}/base_ix", base.store)[0]),
        }
        fns = {}
        for name, (pkg, idx) in versions.items():
            for label, params in (
                ("default", pkg.SearchParams()),
                ("threads=1", pkg.SearchParams(threads=1)),
            ):
                fns[(label, name)] = _searcher_top(idx._view.searcher(params))
            fns[("Index.search", name)] = _index_top(idx)
        tops = {key: [f(q) for q in queries] for key, f in fns.items()}  # warms every kernel too
        times = {key: [] for key in fns}
        for _ in range(args.rounds):
            for q in queries:
                for key, f in fns.items():
                    t = time.perf_counter()
                    f(q)
                    times[key].append((time.perf_counter() - t) * 1e3)
        rows = []
        for (label, name), t in times.items():
            row = {
                "variant": label,
                "version": name if name == "current" else f"base {args.base}",
                "p50_ms": round(float(np.percentile(t, 50)), 2),
                "p95_ms": round(float(np.percentile(t, 95)), 2),
            }
            if label != "Index.search":
                found = tops[(label, name)]
                run = {q: [data.doc_ids[r] for r in top[:10]] for q, top in zip(data.query_ids, found)}
                row["ndcg10"] = round(ndcg_at_k(run, data.qrels, 10), 4)
            rows.append(row)
        for label in ("default", "threads=1", "Index.search"):
            cur, old = times[(label, "current")], times[(label, "base")]
            a = {q: [str(x) for x in r] for q, r in zip(data.query_ids, tops[(label, "current")])}
            b = {q: [str(x) for x in r] for q, r in zip(data.query_ids, tops[(label, "base")])}
            rows.append(
                {
                    "variant": label,
                    "p50_ratio_current_over_base": round(
                        float(np.percentile(cur, 50) / np.percentile(old, 50)), 3
                    ),
                    "top10_agreement": round(recall_vs_reference(a, b, 10), 4),
                }
            )
    for row in rows:
        print(json.dumps(row) if args.json else "  ".join(f"{k}={v}" for k, v in row.items()), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
