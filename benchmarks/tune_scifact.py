"""Does ``mvstore.tune`` pick a good spec? Tune on a small sample, then check on the full SciFact test set.

1. Tune (no relevance labels): a random sample of ``--sample-docs`` SciFact documents (default 1,000) and
   ``--sample-queries`` queries from the **train** split (default 100; disjoint from the test queries), the
   default candidate grid within ``--budget`` bytes per original token. Fidelity = recall@10 vs exact MaxSim
   on the sample.
2. Evaluate the picked spec with all 300 test queries (nDCG@10) on the full corpus, or with ``--max-docs N`` on
   the frontier's subset (every judged document + others up to N), with the same exhaustive protocol as
   ``benchmarks/frontier.py`` (pool, fit on ``--fit-sample`` vectors, encode/decode, exact MaxSim over all).
3. Compare with the best spec within the budget from the frontier: rows read from ``--frontier-rows`` (a
   ``frontier.py --json`` output) when given, else the frontier's default specs within the budget are
   evaluated here; the tune's next-best candidates (``--also-top``) are evaluated too.

Rows (JSON lines with ``--json``): ``kind="tune"`` (the pick on the sample), ``kind="candidate"`` (the tune's
table: every candidate's sample fidelity and bytes per token), ``kind="eval"`` (full test set,
one per spec, ``source`` = picked | frontier | tune-top), then ``kind="summary"`` with
``delta_points = 100 * (best frontier nDCG@10 - picked nDCG@10)`` and ``within_1_point``.

    python benchmarks/tune_scifact.py --budget 20 --json [--max-docs 1500] [--frontier-rows /tmp/frontier.jsonl]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.data import SCIFACT_DIR, encoder, load_scifact  # noqa: E402
from benchmarks.frontier import DEFAULT_SPECS, iter_frontier_rows  # noqa: E402
from mvstore.eval import load_beir, ndcg_at_k  # noqa: E402
from mvstore.report import load_rows  # noqa: E402
from mvstore.spec import bytes_per_token  # noqa: E402
from mvstore.tune import tune  # noqa: E402


def _tune_on_sample(args: argparse.Namespace, emit) -> Any:
    """Phase 1: tune on a sample of SciFact (only the sampled documents are encoded) -> the TuneResult."""
    # phase 1 needs only the sample: encode (cache hits) just those documents, not the whole corpus
    rng = np.random.default_rng(args.seed)
    test = load_beir(SCIFACT_DIR, "test")
    corpus_ids = list(test.corpus)
    doc_rows = np.sort(rng.choice(len(corpus_ids), min(args.sample_docs, len(corpus_ids)), replace=False))
    enc = encoder(args.model)
    sample_docs = enc.encode_documents([test.corpus[corpus_ids[i]] for i in doc_rows])
    split = test if args.query_split == "test" else load_beir(SCIFACT_DIR, args.query_split)
    qids = sorted(split.queries, key=int)
    pick = np.sort(rng.choice(len(qids), min(args.sample_queries, len(qids)), replace=False))
    tune_queries = enc.encode_queries([split.queries[qids[i]] for i in pick])
    del enc

    t = time.perf_counter()
    res = tune(
        sample_docs,
        tune_queries,
        max_bytes_per_token=args.budget,
        progress=not args.json,
        sample_docs=args.sample_docs,
        sample_queries=args.sample_queries,
        seed=args.seed,
    )
    emit(
        {
            "kind": "tune",
            "spec": res.spec,
            "fidelity": res.fidelity,
            "bytes_per_token": res.bytes_per_token,
            "budget": args.budget,
            "sample_docs": res.n_docs,
            "sample_queries": res.n_queries,
            "query_split": args.query_split,
            "candidates": len(res.table),
            "tune_s": round(time.perf_counter() - t, 1),
        }
    )
    if args.json:
        for r in res.table:
            emit({"kind": "candidate", **r})
    else:
        print(res.to_text())
    return res


def _specs_to_evaluate(args: argparse.Namespace, res: Any, dim: int) -> tuple[dict[str, str], list[dict]]:
    """``{spec: source}`` to evaluate on the corpus (the pick, the tune's next best, the frontier specs) and the
    frontier rows given with ``--frontier-rows`` (empty: they come from this run)."""
    ranked = sorted((r for r in res.table if r["within_budget"]), key=lambda r: -r["fidelity"])
    to_eval = {res.spec: "picked"}
    for r in ranked[1 : 1 + args.also_top]:
        to_eval.setdefault(r["spec"], "tune-top")
    frontier: list[dict] = []
    if args.frontier_rows:
        frontier = [
            r
            for r in load_rows(args.frontier_rows)
            if isinstance(r.get("bytes_per_token"), (int, float))
            and r["bytes_per_token"] <= args.budget
            and r.get("spec") != "exact-fp32"
            and "ndcg10" in r
        ]
        if not frontier:
            raise SystemExit(f"{args.frontier_rows} has no row within {args.budget} bytes per token")
    else:
        for s in DEFAULT_SPECS:
            if bytes_per_token(s, dim) <= args.budget:  # nominal; rows report the measured value
                to_eval.setdefault(s, "frontier")
    return to_eval, frontier


def _evaluate(
    args: argparse.Namespace, res: Any, data: Any, to_eval: dict[str, str], frontier: list[dict], emit
) -> None:
    """Phase 2: each spec's row on the corpus, then the summary (the pick against the best frontier spec)."""
    exact = data.exact_run(100)
    emit(
        {
            "kind": "eval",
            "source": "exact",
            "spec": "exact-fp32",
            "ndcg10": round(ndcg_at_k(exact, data.qrels, 10), 4),
            "recall10_vs_exact": 1.0,
            "bytes_per_token": data.docs.dim * 4,
            "docs": len(data.docs),
            "orig_tokens": data.docs.n_tokens,
        }
    )
    evals = {}
    for row in iter_frontier_rows(
        data, list(to_eval), exact_run=exact, latency_queries=5, fit_sample=args.fit_sample
    ):
        row = {"kind": "eval", "source": to_eval[row["spec"]], **row}
        if row["spec"] in {r["spec"] for r in res.table}:
            row["tune_fidelity"] = next(r["fidelity"] for r in res.table if r["spec"] == row["spec"])
        evals[row["spec"]] = row
        emit(row)
    if not args.frontier_rows:
        frontier = [
            r for r in evals.values() if r["source"] == "frontier" and r["bytes_per_token"] <= args.budget
        ]
    best = max(frontier, key=lambda r: r["ndcg10"])
    picked = evals[res.spec]
    delta = round(100 * (best["ndcg10"] - picked["ndcg10"]), 2)
    emit(
        {
            "kind": "summary",
            "budget": args.budget,
            "eval_docs": len(data.docs),
            "eval_queries": len(data.queries),
            "picked": res.spec,
            "picked_ndcg10": picked["ndcg10"],
            "picked_bytes_per_token": picked["bytes_per_token"],
            "best_frontier_spec": best["spec"],
            "best_frontier_ndcg10": best["ndcg10"],
            "best_frontier_bytes_per_token": best["bytes_per_token"],
            "frontier_specs_within_budget": len(frontier),
            "frontier_source": args.frontier_rows or "frontier.DEFAULT_SPECS evaluated here",
            "delta_points": delta,
            "within_1_point": delta <= 1.0,
        }
    )


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--budget", type=float, default=20.0, help="max bytes per original token")
    ap.add_argument("--sample-docs", type=int, default=1000)
    ap.add_argument("--sample-queries", type=int, default=100)
    ap.add_argument(
        "--query-split", default="train", help="split the tuning queries come from (train or test)"
    )
    ap.add_argument(
        "--max-docs",
        type=int,
        default=None,
        help="evaluate on a corpus subset (all judged docs + others up to N; all 300 test queries)",
    )
    ap.add_argument(
        "--frontier-rows", default=None, help="frontier.py --json output to take the frontier from"
    )
    ap.add_argument("--also-top", type=int, default=1, help="also evaluate the tune's next-best N candidates")
    ap.add_argument(
        "--fit-sample",
        type=int,
        default=65536,
        help="vectors each evaluated codec is fitted on (the store's default train_size)",
    )
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--model",
        choices=("minilm", "colbert128"),
        default="minilm",
        help="token vectors: bundled MiniLM hidden states or the ColBERT model of train_colbert.py",
    )
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)

    def emit(row: dict) -> None:
        print(json.dumps(row) if args.json else "  ".join(f"{k}={v}" for k, v in row.items()), flush=True)

    res = _tune_on_sample(args, emit)
    data = load_scifact(
        args.max_docs, model=args.model
    )  # phase 2: the corpus (or subset) and the 300 test queries
    to_eval, frontier = _specs_to_evaluate(args, res, data.docs.dim)
    _evaluate(args, res, data, to_eval, frontier, emit)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
