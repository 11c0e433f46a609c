"""Hybrid search on a BEIR collection: nDCG@10 of MaxSim alone, BM25 alone (Lance's full-text index) and
their reciprocal rank fusion (``Index.search(..., text=..., hybrid=True)``), one JSON row each.

    python benchmarks/hybrid.py [--collection scifact] [--model minilm] [--spec SPEC] [--max-docs N] [--json]

One mvstore index (``--spec``, default ``mvstore.default_spec(dim)``) holds the documents' token vectors and
their text (``title + " " + text``, the text the encoder saw) with a full-text index on it. MaxSim rows
come from the index's default two-stage search, BM25 rows from Lance's full-text search over the same
table (English stemming and stop words, Lance's defaults), the fused rows from one hybrid search call.
The first row is exact uncompressed MaxSim (the cached run of ``benchmarks/data.py``) for reference. Token
vectors come from the embedding cache (``benchmarks/data.py``): nothing is encoded when it is warm.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import mvstore  # noqa: E402
from benchmarks.data import load_collection  # noqa: E402
from mvstore.eval import ndcg_at_k, recall_at_k  # noqa: E402


def _run(table, query_ids: list[str]) -> dict[str, list[str]]:
    run: dict[str, list[str]] = {q: [] for q in query_ids}
    for qi, did in zip(table["query"].to_pylist(), table["id"].to_pylist()):
        run[query_ids[qi]].append(did)
    return run


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--collection", default="scifact")
    ap.add_argument("--model", default="minilm")
    ap.add_argument("--spec", default=None, help="index spec (default: mvstore.default_spec(dim))")
    ap.add_argument("--max-docs", type=int, default=None, help="subset: all judged docs + others up to N")
    ap.add_argument("-k", type=int, default=10)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)

    data = load_collection(args.collection, args.model, max_docs=args.max_docs)
    rows = []

    def emit(row: dict) -> None:
        rows.append(row)
        print(json.dumps(row) if args.json else "  ".join(f"{k}={v}" for k, v in row.items()), flush=True)

    common = {
        "collection": args.collection,
        "model": args.model,
        "docs": len(data.docs),
        "queries": len(data.queries),
    }
    exact = data.exact_run(100)
    emit(
        {
            "method": "exact-maxsim",
            "spec": "exact-fp32",
            "ndcg10": round(ndcg_at_k(exact, data.qrels, 10), 4),
            "recall100": round(recall_at_k(exact, data.qrels, 100), 4),
            **common,
        }
    )
    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        idx = mvstore.create(Path(tmp) / "ix", spec=args.spec, dim=data.docs.dim)
        idx.add(data.doc_ids, data.docs, metadata={"text": data.doc_texts})
        idx.create_fts_index("text")
        build_s = round(time.perf_counter() - t, 1)
        spec = str(idx.spec)
        k = max(args.k, 100)  # deep enough for recall@100
        dense = idx.search(data.queries, k=k)
        ds = idx._view.ds  # BM25 alone: Lance's full-text search over the same table
        bm25 = {
            q: ds.to_table(columns=["id", "_score"], full_text_query=text, limit=k)["id"].to_pylist()
            for q, text in zip(data.query_ids, data.query_texts)
        }
        fused = idx.search(data.queries, k=k, text=data.query_texts, hybrid=True)
        for method, run in (
            ("maxsim", _run(dense, data.query_ids)),
            ("bm25", bm25),
            ("hybrid-rrf", _run(fused, data.query_ids)),
        ):
            emit(
                {
                    "method": method,
                    "spec": spec if method != "bm25" else "lance-fts",
                    "ndcg10": round(ndcg_at_k(run, data.qrels, 10), 4),
                    "recall100": round(recall_at_k(run, data.qrels, 100), 4),
                    "build_s": build_s,
                    **common,
                }
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
