"""Token pooling speed, side by side with scipy's per-document Ward, and a check that the clusters agree.

    python benchmarks/pooling.py [--docs 600] [--factor 2 --factor 3] [--method ward --method kmeans] [--json]

Rows (one JSON object per line with --json): ``impl`` ("mvstore" or "scipy"), ``method``, ``factor``,
``tokens_per_s`` (wall), ``cpu_tokens_per_s`` (per second of process CPU time, all threads summed: the
steadier figure on a shared machine), ``seconds``, ``docs``, ``tokens``, ``data`` ("scifact" or
"synthetic"), ``threads``; Ward rows of mvstore add ``scipy_tokens_per_s``, ``scipy_cpu_tokens_per_s``,
``speedup_vs_scipy``, ``cpu_speedup_vs_scipy`` and ``same_clusters_as_scipy`` (every measured document's
partition compared with ``linkage(x, "ward")`` + ``fcluster(..., k, "maxclust")``).
Uses SciFact MiniLM token vectors (``benchmarks/data.py``) when present, else synthetic ones with a note.

Other benchmarks time pooling with :func:`time_pooling` (they report it as ``pool_tokens_per_s``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mvstore import Ragged  # noqa: E402
from mvstore.pooling import n_clusters, pool, pool_labels  # noqa: E402

__all__ = ["time_pooling", "scipy_ward_labels", "same_partitions", "load_docs", "pooling_rows"]


def time_pooling(
    docs: Ragged,
    factor: float,
    *,
    method: str = "ward",
    device: str = "cpu",
    protected: int = 0,
    repeats: int = 1,
    workers: int | None = None,
) -> dict:
    """Pool ``docs`` ``repeats`` times (after one warm-up on a few documents); best wall time.

    Returns ``{"pool_tokens_per_s", "pool_cpu_tokens_per_s", "pool_s", "docs", "tokens", "pooled_vectors"}``
    (``pool_cpu_tokens_per_s``: tokens per second of process CPU time, all threads summed; steadier than
    wall time on a shared machine).
    """
    pool(docs[: min(4, len(docs))], factor, method=method, device=device, protected=protected)
    best, best_cpu, out = float("inf"), float("inf"), None
    for _ in range(max(1, repeats)):
        t, c = time.perf_counter(), time.process_time()
        out = pool(docs, factor, method=method, device=device, protected=protected, workers=workers)
        best = min(best, time.perf_counter() - t)
        best_cpu = min(best_cpu, time.process_time() - c)
    return {
        "pool_tokens_per_s": round(docs.n_tokens / best),
        "pool_cpu_tokens_per_s": round(docs.n_tokens / best_cpu),
        "pool_s": round(best, 3),
        "docs": len(docs),
        "tokens": docs.n_tokens,
        "pooled_vectors": out.n_tokens,
    }


def scipy_ward_labels(docs: Ragged, factor: float) -> tuple[list[np.ndarray], float, float]:
    """scipy's Ward (on the vectors, float64) cut at ``ceil(n / factor)`` clusters, one document at a time:
    (labels per document, wall seconds, CPU seconds)."""
    from scipy.cluster.hierarchy import fcluster, linkage

    out = []
    t, c = time.perf_counter(), time.process_time()
    for x in docs:
        if len(x) == 1:
            out.append(np.ones(1, np.int32))
        else:
            out.append(
                fcluster(linkage(x.astype(np.float64), "ward"), n_clusters(len(x), factor), "maxclust")
            )
    return out, time.perf_counter() - t, time.process_time() - c


def _canon(labels: np.ndarray) -> np.ndarray:
    _, first, inv = np.unique(labels, return_index=True, return_inverse=True)
    rank = np.empty(len(first), np.int64)
    rank[np.argsort(first)] = np.arange(len(first))
    return rank[inv]


def same_partitions(docs: Ragged, labels: np.ndarray, reference: list[np.ndarray]) -> tuple[bool, int]:
    """(all documents equal as partitions, number of documents that differ)."""
    bad = 0
    for i, ref in enumerate(reference):
        mine = labels[docs.offsets[i] : docs.offsets[i + 1]]
        bad += not np.array_equal(_canon(mine), _canon(ref))
    return bad == 0, bad


def load_docs(n_docs: int) -> tuple[Ragged, str]:
    """SciFact document token vectors (first ``n_docs`` of the benchmark subset), or synthetic ones."""
    try:
        from benchmarks.data import load_scifact, scifact_available
    except ImportError:  # pragma: no cover - data module missing
        scifact_available = None
    if scifact_available is not None and scifact_available():
        return load_scifact(max_docs=n_docs).docs[:n_docs], "scifact"
    from mvstore.testing import synthetic_docs

    print(
        json.dumps({"note": "SciFact not found: using synthetic 384-d token vectors (200-256 tokens/doc)"}),
        flush=True,
    )
    return synthetic_docs(n_docs, 384, min_len=200, max_len=256, seed=0), "synthetic"


def pooling_rows(
    docs: Ragged,
    data: str,
    factors=(2.0,),
    methods=("ward",),
    device: str = "cpu",
    repeats: int = 2,
    check: bool = True,
    workers: int | None = None,
):
    import torch

    threads = torch.get_num_threads()
    workers = workers or (os.cpu_count() or 1)
    for factor in factors:
        ref, scipy_s, scipy_cpu = (None, None, None)
        if "ward" in methods:
            ref, scipy_s, scipy_cpu = scipy_ward_labels(docs, factor)
            yield {
                "impl": "scipy",
                "method": "ward",
                "factor": factor,
                "tokens_per_s": round(docs.n_tokens / scipy_s),
                "cpu_tokens_per_s": round(docs.n_tokens / scipy_cpu),
                "seconds": round(scipy_s, 3),
                "docs": len(docs),
                "tokens": docs.n_tokens,
                "data": data,
            }
        for method in methods:
            t = time_pooling(docs, factor, method=method, device=device, repeats=repeats, workers=workers)
            row = {
                "impl": "mvstore",
                "method": method,
                "factor": factor,
                "tokens_per_s": t["pool_tokens_per_s"],
                "cpu_tokens_per_s": t["pool_cpu_tokens_per_s"],
                "seconds": t["pool_s"],
                "docs": len(docs),
                "tokens": docs.n_tokens,
                "data": data,
                "pooled_vectors": t["pooled_vectors"],
                "device": device,
                "threads": threads,
                "workers": workers,
            }
            if method == "ward":
                row["scipy_tokens_per_s"] = round(docs.n_tokens / scipy_s)
                row["scipy_cpu_tokens_per_s"] = round(docs.n_tokens / scipy_cpu)
                row["speedup_vs_scipy"] = round(scipy_s / t["pool_s"], 2)
                row["cpu_speedup_vs_scipy"] = round(t["pool_cpu_tokens_per_s"] * scipy_cpu / docs.n_tokens, 2)
                if check:
                    same, bad = same_partitions(docs, pool_labels(docs, factor, device=device), ref)
                    row["same_clusters_as_scipy"] = same
                    row["docs_differing_from_scipy"] = bad
            yield row


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--docs", type=int, default=600, help="number of documents to pool")
    ap.add_argument("--factor", type=float, action="append", help="pooling factor (repeatable; default 2)")
    ap.add_argument(
        "--method", action="append", choices=["ward", "kmeans"], help="(repeatable; default ward)"
    )
    ap.add_argument("--device", default="cpu", help="cpu | cuda | auto")
    ap.add_argument("--repeats", type=int, default=2, help="timed runs per row (best is reported)")
    ap.add_argument("--workers", type=int, default=None, help="CPU worker threads (default: all cores)")
    ap.add_argument("--json", action="store_true", help="print JSON lines only")
    args = ap.parse_args(argv)

    docs, data = load_docs(args.docs)
    for row in pooling_rows(
        docs,
        data,
        args.factor or [2.0],
        args.method or ["ward"],
        args.device,
        args.repeats,
        workers=args.workers,
    ):
        print(json.dumps(row) if args.json else "  ".join(f"{k}={v}" for k, v in row.items()), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
