"""SciFact benchmark harness: one JSON object per configuration.

    python benchmarks/scifact.py [--max-docs N] [--json]               # exact uncompressed MaxSim row
    python benchmarks/scifact.py --spec pool2,pca96,rq2 [--spec ...]   # + exhaustive rows for these specs
    python benchmarks/scifact.py --frontier --json                     # compression frontier (issue 3)
    python benchmarks/scifact.py --search --json                       # two-stage search (issue 5)
    python benchmarks/scifact.py --slim --json                         # SLIM sparse rows (issue 6)

Every row has at least: spec, ndcg10, recall10_vs_exact, bytes_per_token (index bytes / ORIGINAL token
count), build_s, p50_ms, p95_ms (single-query latency, query encoding excluded), peak_rss_mb. The first row
is always exact uncompressed MaxSim (fp32, all tokens).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import PeakRSS, latency_ms  # noqa: E402
from benchmarks.data import load_scifact  # noqa: E402
from mvstore.eval import ndcg_at_k  # noqa: E402
from mvstore.search.maxsim import maxsim, maxsim_batch  # noqa: E402


def exact_row(data, latency_queries: int = 20) -> tuple[dict, dict]:
    """The reference row, and the exact top-100 run (which it also caches for the other rows)."""
    with PeakRSS() as mem:
        t = time.perf_counter()
        scores = maxsim_batch(data.queries, data.docs)
        batch_s = time.perf_counter() - t
        run = data.exact_run(100, scores=scores)
        p50, p95 = latency_ms(lambda q: maxsim(q, data.docs), data.queries, latency_queries)
    return run, {
        "spec": "exact-fp32",
        "ndcg10": round(ndcg_at_k(run, data.qrels, 10), 4),
        "recall10_vs_exact": 1.0,
        "bytes_per_token": data.docs.dim * 4,
        "build_s": 0.0,
        "p50_ms": round(p50, 2),
        "p95_ms": round(p95, 2),
        "peak_rss_mb": mem.mb,
        "docs": len(data.docs),
        "tokens": data.docs.n_tokens,
        "queries": len(data.queries),
        "batch_search_s": round(batch_s, 1),
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--spec", action="append", default=[], help="exhaustive row for this spec (repeatable)")
    ap.add_argument("--max-docs", type=int, default=None, help="subset: all judged docs + others up to N")
    ap.add_argument("--frontier", action="store_true", help="compression frontier rows")
    ap.add_argument("--search", action="store_true", help="two-stage search rows and LanceDB side by side")
    ap.add_argument("--slim", action="store_true", help="SLIM sparse rows")
    ap.add_argument("--no-exact", action="store_true", help="skip the exact row (it is first by default)")
    ap.add_argument(
        "--model",
        choices=("minilm", "colbert128"),
        default="minilm",
        help="token vectors: bundled MiniLM hidden states or the ColBERT model of train_colbert.py",
    )
    ap.add_argument("--json", action="store_true", help="print JSON lines only")
    args = ap.parse_args(argv)

    data = load_scifact(args.max_docs, model=args.model)

    def emit(row: dict) -> None:
        if args.json:
            print(json.dumps(row), flush=True)
        else:
            print("  ".join(f"{k}={v}" for k, v in row.items()), flush=True)

    if args.no_exact:
        exact = data.exact_run(100)
    else:
        exact, row = exact_row(data)
        emit(row)
    if args.spec or args.frontier:
        from benchmarks.frontier import DEFAULT_SPECS, frontier_rows

        for row in frontier_rows(data, args.spec or DEFAULT_SPECS, exact_run=exact):
            emit(row)
    if args.search:
        from benchmarks.search_bench import search_rows

        for row in search_rows(data, exact_run=exact):
            emit(row)
    if args.slim:
        from benchmarks.slim_bench import slim_rows

        for row in slim_rows(data, exact_run=exact):
            emit(row)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
