"""SLIM sparse late interaction on SciFact: one JSON object per configuration.

    python benchmarks/slim_bench.py --json [--max-docs N] [--counts 32 64 128 256]

Two kinds of rows (every row: spec, mode, ndcg10, recall10_vs_exact, bytes_per_token, build_s, p50_ms,
p95_ms, peak_rss_mb; latency is single-query wall time, query encoding excluded, stage 1 + stage 2):

(a) ``mode="sparse-only"``: the index stores ONLY sparse codes (``spk<V>t<t>``, optionally after pooling);
    stage 1 ranks documents by SLIM's posting-list bounds, stage 2 rescores ``n_rerank`` of them by exact
    sparse MaxSim. ``recall10_vs_exhaustive`` compares with exhaustive sparse MaxSim over the same codes
    (what stage 1 loses); ``recall10_vs_exact`` with uncompressed dense MaxSim (what sparsification loses).
(b) ``mode="sparse-prefilter"`` vs ``mode="centroid-prefilter"``: the same dense index (``--dense-spec``)
    reranked by exact MaxSim over decoded vectors, candidates from SLIM posting lists (a ``spk`` side map
    fitted on the index's decoded vectors) or from the search engineer's PLAID-style centroid posting lists
    (``CentroidCandidates``), at EQUAL candidate counts. ``recall10_vs_exhaustive`` is against exhaustive
    MaxSim over the same decoded vectors (what the prefilter loses).

``bytes_per_token`` is stored code bytes / ORIGINAL token count; in-memory posting lists are reported apart
(``postings_mb``). Figures come from the run; nothing is typed in.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import PeakRSS, latency_ms  # noqa: E402
from mvstore import Ragged  # noqa: E402
from mvstore.eval import ndcg_at_k, recall_vs_reference  # noqa: E402
from mvstore.search.snapshot import Snapshot  # noqa: E402

DEFAULT_SPARSE = ("pool2,spk4096t8", "spk4096t8")
#: the search benchmark's default dense spec, so the centroid rows line up with benchmarks/search_bench.py
DEFAULT_DENSE = "pool2,pca128,rq2"
DEFAULT_COUNTS = (32, 64, 128, 256)
#: stage-1 mixes compared at one candidate count: alpha * upper + (1 - alpha) * lower
ALPHAS = (0.0, 0.5, 1.0)


def build_snapshot(data, spec: str, *, train_size: int = 65536, seed: int = 0, centroids: bool = True):
    """Pool (if the spec says so), fit the pipeline on a sample, encode every document; for dense specs also
    stage-1 centroids + terms (the codec's coarse terms when it has them, else faiss k-means as the store
    does). Returns ``(snapshot, build_s)``."""
    from mvstore.codecs.sparse import is_sparse_codec
    from mvstore.search.postings import assign_terms, default_n_centroids, fit_centroids
    from mvstore.spec import build_pipeline, parse

    t0 = time.perf_counter()
    sp = parse(spec)
    docs = data.docs
    if sp.pool_stage is not None:  # pooled once per corpus and factor, cached like the frontier benchmark
        from benchmarks.data import CACHE
        from benchmarks.frontier import _pooled

        docs, pool_s, cached = _pooled(data, sp, CACHE / "pooled")
        t0 -= pool_s if cached else 0.0  # build time includes pooling, as measured when it was computed
    rng = np.random.default_rng(seed)
    n = docs.n_tokens
    sample = docs.values[np.sort(rng.choice(n, min(n, train_size), replace=False))]
    codec = build_pipeline(sp, docs.dim).fit(np.ascontiguousarray(sample, np.float32))
    codes = np.concatenate([codec.encode(docs.values[a : a + 65536]) for a in range(0, n, 65536)])
    terms = cents = None
    if centroids and not is_sparse_codec(codec):
        if codec.has_coarse:
            cents = np.ascontiguousarray(codec.coarse_centroids, np.float32)
            terms = codec.coarse_terms(codes).astype(np.int32)
        else:
            t = codec.transform(sample)
            cents = fit_centroids(t, min(default_n_centroids(n), len(t)), seed=seed)
            terms = np.concatenate(
                [assign_terms(codec.transform(docs.values[a : a + 65536]), cents) for a in range(0, n, 65536)]
            )
    snap = Snapshot(0, np.arange(len(docs)), codes, docs.offsets, codec, data.docs.lengths, terms, cents)
    return snap, time.perf_counter() - t0


def _run(results, data, k: int = 100) -> dict[str, list[str]]:
    return {
        qid: [data.doc_ids[r] for r in rows[:k]]
        for qid, (rows, _) in zip(data.query_ids, results, strict=True)
    }


def _quality(results, data, exact_run, reference=None) -> dict:
    run = _run(results, data)
    row = {
        "ndcg10": round(ndcg_at_k(run, data.qrels, 10), 4),
        "recall10_vs_exact": round(recall_vs_reference(run, exact_run, 10), 4),
    }
    if reference is not None:
        row["recall10_vs_exhaustive"] = round(recall_vs_reference(run, _run(reference, data), 10), 4)
    return row


def _timed(searcher, data, latency_queries: int) -> tuple[list, float, float]:
    results = searcher.search(data.queries, 10)
    qs = [Ragged(q, np.array([0, len(q)])) for q in data.queries]
    p50, p95 = latency_ms(lambda q: searcher.search(q, 10), qs, latency_queries)
    return results, p50, p95


def _bytes_per_token(snap: Snapshot) -> float:
    return round(snap.codes.nbytes / float(snap.n_tokens.sum()), 2)


def _exhaustive_sparse(snap: Snapshot, data) -> list:
    """Exact sparse MaxSim of every query against every document of a sparse-only snapshot (the oracle)."""
    from mvstore.codecs.sparse import _sparse_stage
    from mvstore.search.sparse import sparse_maxsim_codes

    m = _sparse_stage(snap.codec)
    qd = snap.codec.transform_query(data.queries.values)
    ids, w = m.sparse_decode(snap.codes)
    scores = sparse_maxsim_codes(qd, data.queries.offsets, ids, w, snap.offsets)
    out = []
    for row in scores:
        top = np.lexsort((np.arange(len(row)), -row))[:100]
        out.append((top, row[top]))
    return out


def sparse_only_rows(data, exact_run, specs, counts, *, latency_queries: int = 100, alpha: float = 1.0):
    """Rows (a): sparse-only indexes, SLIM two-stage search at each candidate count (and, at the second
    count, each stage-1 mix in ``ALPHAS``)."""
    from mvstore.search.params import SearchParams
    from mvstore.search.sparse import SparseCandidates, SparseSearcher

    for spec in specs:
        with PeakRSS() as mem:
            snap, build_s = build_snapshot(data, spec)
            t = time.perf_counter()
            gen = SparseCandidates.from_snapshot(snap, alpha=alpha)
            postings_s = time.perf_counter() - t
            full = _exhaustive_sparse(snap, data)
        base = {
            "mode": "sparse-only",
            "spec": spec,
            "bytes_per_token": _bytes_per_token(snap),
            "build_s": round(build_s + postings_s, 1),
            "postings_mb": round(gen.postings.nbytes / 2**20, 1),
            "docs": snap.n_docs,
            "stored_vectors": snap.n_vectors,
        }
        yield {
            **base,
            "n_rerank": "all",
            **_quality(full, data, exact_run, full),
            "p50_ms": None,
            "p95_ms": None,
            "peak_rss_mb": mem.mb,
        }
        points = [(n, alpha) for n in counts]
        if len(counts) > 1:
            points += [(counts[1], a) for a in ALPHAS if a != alpha]
        for n, a in points:
            with PeakRSS() as mem:
                s = SparseSearcher(snap, SearchParams(n_rerank=n), alpha=a)
                res, p50, p95 = _timed(s, data, latency_queries)
            yield {
                **base,
                "n_rerank": n,
                "alpha": a,
                **_quality(res, data, exact_run, full),
                "p50_ms": round(p50, 2),
                "p95_ms": round(p95, 2),
                "peak_rss_mb": mem.mb,
            }


def prefilter_rows(
    data, exact_run, dense_spec, side_map, counts, *, nprobe: int = 4, latency_queries: int = 100
):
    """Rows (b): one dense index, sparse vs centroid prefilter at equal candidate counts, same dense rerank."""
    from mvstore.search.params import SearchParams
    from mvstore.search.searcher import Searcher
    from mvstore.search.sparse import SparseCandidates, attach_sparse_map

    with PeakRSS() as mem:
        snap, build_s = build_snapshot(data, dense_spec)
        t = time.perf_counter()
        attach_sparse_map(snap, side_map)
        gen = SparseCandidates.from_snapshot(snap)
        side_s = time.perf_counter() - t
        oracle = Searcher(snap, SearchParams(candidates="exhaustive", device="cpu")).search(data.queries, 10)
    base = {"spec": dense_spec, "bytes_per_token": _bytes_per_token(snap), "docs": snap.n_docs}
    yield {
        **base,
        "mode": "exhaustive-dense",
        "n_rerank": "all",
        **_quality(oracle, data, exact_run, oracle),
        "build_s": round(build_s, 1),
        "p50_ms": None,
        "p95_ms": None,
        "peak_rss_mb": mem.mb,
    }
    for n in counts:
        for mode, params, extra in (
            (
                "centroid-prefilter",
                SearchParams(candidates="centroid", nprobe=nprobe, n_rerank=n, device="cpu"),
                {"nprobe": nprobe, "n_centroids": int(len(snap.centroids))},
            ),
            (
                "sparse-prefilter",
                SearchParams(candidates="sparse", n_rerank=n, device="cpu"),
                {
                    "side_map": side_map,
                    "side_map_build_s": round(side_s, 1),
                    "postings_mb": round(gen.postings.nbytes / 2**20, 1),
                },
            ),
        ):
            with PeakRSS() as mem:
                res, p50, p95 = _timed(Searcher(snap, params), data, latency_queries)
            yield {
                **base,
                "mode": mode,
                "n_rerank": n,
                **_quality(res, data, exact_run, oracle),
                "build_s": round(build_s, 1),
                "p50_ms": round(p50, 2),
                "p95_ms": round(p95, 2),
                "peak_rss_mb": mem.mb,
                **extra,
            }


def slim_rows(
    data,
    exact_run=None,
    *,
    sparse_specs=DEFAULT_SPARSE,
    dense_spec=DEFAULT_DENSE,
    side_map="spk4096t8",
    counts=DEFAULT_COUNTS,
    latency_queries: int = 100,
):
    """All SLIM rows for ``benchmarks/scifact.py --slim`` and this script."""
    exact_run = exact_run if exact_run is not None else data.exact_run(100)
    yield from sparse_only_rows(data, exact_run, sparse_specs, counts, latency_queries=latency_queries)
    if dense_spec:
        yield from prefilter_rows(
            data, exact_run, dense_spec, side_map, counts, latency_queries=latency_queries
        )


def main(argv=None) -> int:
    from benchmarks.data import load_scifact

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--max-docs", type=int, default=None, help="subset: all judged docs + others up to N")
    ap.add_argument("--sparse-spec", action="append", default=[], help="sparse-only spec (repeatable)")
    ap.add_argument(
        "--dense-spec", default=DEFAULT_DENSE, help="dense index for the prefilter comparison ('' to skip)"
    )
    ap.add_argument("--side-map", default="spk4096t8", help="sparse map fitted on the dense index's vectors")
    ap.add_argument("--counts", type=int, nargs="+", default=list(DEFAULT_COUNTS), help="candidate counts")
    ap.add_argument("--latency-queries", type=int, default=100)
    ap.add_argument("--parts", default="ab", help="'a' sparse-only rows, 'b' prefilter rows (default both)")
    ap.add_argument(
        "--model",
        choices=("minilm", "colbert128"),
        default="minilm",
        help="token vectors: bundled MiniLM hidden states or the ColBERT model of train_colbert.py",
    )
    ap.add_argument("--json", action="store_true", help="print JSON lines only")
    args = ap.parse_args(argv)
    data = load_scifact(args.max_docs, model=args.model)
    sparse_specs = (args.sparse_spec or DEFAULT_SPARSE) if "a" in args.parts else ()
    dense_spec = args.dense_spec if "b" in args.parts else ""
    for row in slim_rows(
        data,
        sparse_specs=sparse_specs,
        dense_spec=dense_spec,
        side_map=args.side_map,
        counts=args.counts,
        latency_queries=args.latency_queries,
    ):
        print(json.dumps(row) if args.json else "  ".join(f"{k}={v}" for k, v in row.items()), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
