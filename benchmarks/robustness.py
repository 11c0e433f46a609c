"""Does the default hold for every model and collection? Quality of compressed search against exact MaxSim.

For each model (``minilm``: all-MiniLM-L6-v2 hidden states, 384-d; ``colbert128``: the ColBERT model trained
by ``benchmarks/train_colbert.py``) and each BEIR collection in ``../shared/data``:

* ``--part default``: exact uncompressed MaxSim nDCG@10, then an index built the way a user builds one
  (``mvstore.create(uri, dim=d)``: ``default_spec(d)``, default training, default ``SearchParams``):
  nDCG@10 through default two-stage search and exhaustively over the same codes, recall@10 of the default
  search vs that exhaustive search and vs exact MaxSim, stored bytes per original token (codes + stage-1
  terms), build seconds.
* ``--part grid``: exhaustive MaxSim over the decoded codes of every spec in ``--grid`` (pooling and codec
  alone, no prefilter), and per row the fewest-bytes spec within 1 nDCG@10 point of exact: the price of quality.
* ``--part auto``: for each ``--budgets`` B, the spec ``create(uri, dim=d, spec="auto", max_bytes_per_token=B)``
  picks when the collection is its first add (no labels: inverse-cloze pseudo-queries on a ~100k-token
  sample), the pick time (wall and CPU seconds), and the picked spec's nDCG@10 exhaustively over its codes.

    python benchmarks/robustness.py --json [--models minilm colbert128] [--collections cacm cisi scifact]
                                    [--part default grid auto] [--split test]

One JSON line per row, then a ``summary`` line per part (the worst row of each). ``--split train`` is for
choosing (SciFact is the only collection with a train split); the README quotes ``test``.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import mvstore  # noqa: E402
from benchmarks.data import CACHE, MODELS, collections, load_collection  # noqa: E402
from benchmarks.frontier import iter_frontier_rows  # noqa: E402
from mvstore.eval import ndcg_at_k, recall_vs_reference  # noqa: E402

#: specs measured by ``--part grid`` (valid at every even dim >= 64): pooling with and without a floor,
#: every bit width from 1 to 8 per dimension
GRID = (
    "sq8",
    "sq4",
    "bin",
    "pool2,sq8",
    "pool2,sq4",
    "pool2,bin",
    "pool2min32,sq4",
    "pool3min32,sq4",
    "pool4min32,sq4",
    "pool4min32,bin",
    "pool4,sq4",
    "pool8,bin",
)
WITHIN = 0.01  # "within 1 nDCG@10 point"


def _run(table, data) -> dict[str, list[str]]:
    """``{query id: [doc id, ...]}`` from an ``Index.search`` result."""
    q = table.column("query").to_numpy()
    ids = table.column("id").to_pylist()
    run: dict[str, list[str]] = {qid: [] for qid in data.query_ids}
    for qi, d in zip(q, ids):
        run[data.query_ids[qi]].append(d)
    return run


def _exact(data) -> tuple[dict[str, list[str]], float]:
    run = data.exact_run(100)
    return run, ndcg_at_k(run, data.qrels, 10)


def _build(data, workdir: str, **create_kwargs: Any) -> tuple[Any, float]:
    t = time.perf_counter()
    idx = mvstore.create(workdir, dim=data.docs.dim, **create_kwargs)
    idx.add(data.doc_ids, data.docs)
    return idx, time.perf_counter() - t


def _search_row(idx, data, exact_run) -> dict[str, Any]:
    t = time.perf_counter()
    default = _run(idx.search(data.queries, k=100), data)
    search_s = time.perf_counter() - t
    exhaustive = _run(
        idx.search(data.queries, k=100, params=mvstore.SearchParams(candidates="exhaustive")), data
    )
    st = idx.stats()
    return {
        "spec": st["spec"],
        "ndcg10_search": round(ndcg_at_k(default, data.qrels, 10), 4),
        "ndcg10_exhaustive": round(ndcg_at_k(exhaustive, data.qrels, 10), 4),
        "recall10_vs_exhaustive": round(recall_vs_reference(default, exhaustive, 10), 4),
        "recall10_vs_exact": round(recall_vs_reference(default, exact_run, 10), 4),
        "bytes_per_token": round(st["bytes_per_token"], 2),
        "vectors_per_doc": round(st["vectors"] / st["docs"], 1),
        "search_ms_per_query": round(search_s * 1e3 / len(data.queries), 2),
    }


def default_rows(data, exact_run, exact_ndcg, spec: str | None = None) -> Iterator[dict]:
    with tempfile.TemporaryDirectory(dir=CACHE) as tmp:
        idx, build_s = _build(data, tmp + "/ix", spec=spec)
        row = _search_row(idx, data, exact_run)
    row["loss_points"] = round(100 * (exact_ndcg - row["ndcg10_search"]), 2)
    yield {"part": "default", **row, "build_s": round(build_s, 1)}


def auto_rows(data, exact_run, exact_ndcg, budgets: Sequence[float]) -> Iterator[dict]:
    """What ``spec="auto"`` picks for the whole collection as one first add (:func:`mvstore.tune.auto_spec`,
    the function ``Index.add`` calls), its pick time, and the picked spec's nDCG@10 exhaustively over its codes
    (building a full index per budget would add a stage-1 k-means each: the default rows cover stage 1)."""
    from mvstore.tune import auto_spec

    for b in budgets:
        cpu = time.process_time()
        res = auto_spec(data.docs, b)
        cpu = (
            time.process_time() - cpu
        )  # all threads' CPU seconds: the pick's cost apart from other jobs' load
        r = next(
            iter_frontier_rows(
                data, [res.spec], exact_run=exact_run, latency_queries=0, cache_dir=CACHE / "pooled"
            )
        )
        yield {
            "part": "auto",
            "budget": b,
            "spec": res.spec,
            "pick_s": res.seconds,
            "pick_cpu_s": round(cpu, 1),
            "pick_fidelity": res.fidelity,
            "pick_sample_tokens": res.n_tokens,
            "candidates": len(res.table) + len(res.skipped),
            "ndcg10_exhaustive": r["ndcg10"],
            "loss_points": round(100 * (exact_ndcg - r["ndcg10"]), 2),
            "recall10_vs_exact": r["recall10_vs_exact"],
            "bytes_per_token": r["bytes_per_token"],
        }


def grid_rows(data, exact_run, exact_ndcg, specs: Sequence[str]) -> Iterator[dict]:
    rows = []
    for r in iter_frontier_rows(
        data, specs, exact_run=exact_run, latency_queries=0, cache_dir=CACHE / "pooled"
    ):
        row = {
            "part": "grid",
            "spec": r["spec"],
            "ndcg10_exhaustive": r["ndcg10"],
            "loss_points": round(100 * (exact_ndcg - r["ndcg10"]), 2),
            "recall10_vs_exact": r["recall10_vs_exact"],
            "bytes_per_token": r["bytes_per_token"],
            "vectors_per_doc": r["vectors_per_doc"],
        }
        rows.append(row)
        yield row
    ok = [r for r in rows if r["ndcg10_exhaustive"] >= exact_ndcg - WITHIN]
    best = min(ok, key=lambda r: r["bytes_per_token"]) if ok else None
    yield {
        "part": "grid-smallest-within-1pt",
        "spec": best and best["spec"],
        "bytes_per_token": best and best["bytes_per_token"],
        "ndcg10_exhaustive": best and best["ndcg10_exhaustive"],
    }


def _collection_rows(model: str, name: str, args: argparse.Namespace, emit: Callable[[dict], None]) -> None:
    """The exact row and every asked part's rows of one model on one collection."""
    data = load_collection(name, model, args.split)
    if args.max_queries and len(data.query_ids) > args.max_queries:
        keep = np.arange(args.max_queries)
        data.query_ids = [data.query_ids[i] for i in keep]
        data.queries = data.queries.take(keep)
    exact_run, exact_ndcg = _exact(data)
    head = {
        "model": model,
        "collection": name,
        "split": args.split,
        "dim": data.docs.dim,
        "docs": len(data.docs),
        "queries": len(data.queries),
        "tokens_per_doc": round(data.docs.n_tokens / len(data.docs), 1),
        "exact_ndcg10": round(exact_ndcg, 4),
    }
    emit({"part": "exact", **head})
    for part in args.part:
        if part == "default":
            part_rows = default_rows(data, exact_run, exact_ndcg, args.spec)
        elif part == "grid":
            part_rows = grid_rows(data, exact_run, exact_ndcg, args.grid)
        else:
            part_rows = auto_rows(data, exact_run, exact_ndcg, args.budgets)
        for row in part_rows:
            emit({**head, **row})


def _summary(part: str, mine: list[dict]) -> dict:
    """The worst loss over a part's rows (and the default's lowest stage-1 recall)."""
    worst = max(mine, key=lambda r: r["loss_points"])
    summary = {
        "part": f"summary-{part}",
        "rows": len(mine),
        "worst_loss_points": worst["loss_points"],
        "worst": f"{worst['model']}/{worst['collection']}",
    }
    if part == "default":
        summary["min_recall10_vs_exhaustive"] = min(r["recall10_vs_exhaustive"] for r in mine)
    return summary


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", choices=MODELS, default=list(MODELS))
    ap.add_argument(
        "--collections", nargs="+", default=None, help="default: every collection in ../shared/data"
    )
    ap.add_argument(
        "--part", nargs="+", choices=("default", "grid", "auto"), default=["default", "grid", "auto"]
    )
    ap.add_argument("--grid", nargs="+", default=list(GRID), help="specs for --part grid")
    ap.add_argument("--spec", default=None, help="--part default with this spec instead of default_spec(dim)")
    ap.add_argument(
        "--budgets", nargs="+", type=float, default=[4.0, 8.0, 16.0], help="bytes/token for --part auto"
    )
    ap.add_argument("--split", default="test")
    ap.add_argument(
        "--max-queries", type=int, default=None, help="first N judged queries (choosing on train)"
    )
    ap.add_argument("--json", action="store_true", help="print JSON lines only")
    args = ap.parse_args(argv)

    rows: list[dict] = []

    def emit(row: dict) -> None:
        rows.append(row)
        print(json.dumps(row) if args.json else "  ".join(f"{k}={v}" for k, v in row.items()), flush=True)

    for model in args.models:
        for name in args.collections or collections():
            _collection_rows(model, name, args, emit)
    for part in ("default", "auto"):
        mine = [r for r in rows if r["part"] == part]
        if mine:
            emit(_summary(part, mine))
    return 0


if __name__ == "__main__":
    sys.exit(main())
