"""Two-stage search on SciFact: operating points (nprobe, n_full, n_rerank, interaction, threads) of the
centroid prefilter + exact MaxSim rerank, side by side with LanceDB's own multivector search on the same
vectors. The row marked ``recommended`` is ``SearchParams()``'s defaults.

    python benchmarks/search_bench.py [--spec SPEC (default BENCH_SPEC)] [--max-docs N] [--no-lancedb] [--json]

One JSON object per row. Every row: system, spec, ndcg10, recall10_vs_exhaustive (top-10 overlap with
exhaustive exact MaxSim over the SAME index's decoded vectors), recall10_vs_exact (overlap with uncompressed
exact MaxSim over all original tokens), p50_ms / p95_ms (single-query latency, query encoding excluded, one
query at a time on the CPU), bytes_per_token (stored bytes per ORIGINAL token). The index is built through
``mvstore.store`` (pooling, codec and stage-1 terms exactly as users get them).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault(
    "LANCE_LOG", "error"
)  # LanceDB warns on every multivector query (scoring autoprojection)

from mvstore.eval import ndcg_at_k, recall_vs_reference  # noqa: E402
from mvstore.ragged import Ragged  # noqa: E402
from mvstore.search.params import SearchParams  # noqa: E402
from mvstore.search.searcher import Searcher  # noqa: E402

#: the spec of the README's latency tables (mvstore's default before default_spec(dim); --spec for others)
BENCH_SPEC = "pool8,trunc368,bin"
#: (nprobe, n_rerank, interaction, n_full, threads) operating points; threads None = every core
DEFAULT_POINTS = [
    (2, 32, "probed", None, None),
    (4, 64, "probed", None, None),
    (8, 128, "probed", None, None),
    (4, 64, "full", 256, None),
    (8, 128, "full", 512, None),
    (8, 160, "full", 768, None),
    (8, 192, "full", 768, None),
    (8, 256, "full", 768, None),
    (8, 256, "full", 768, 1),
    (16, 256, "full", 1024, None),
]
_DEFAULT = SearchParams()
#: SearchParams' defaults, the recommended operating point (measured below; see the report)
RECOMMENDED = (_DEFAULT.nprobe, _DEFAULT.n_rerank, _DEFAULT.interaction, _DEFAULT.n_full, None)


def _latency(fn, queries: Ragged, n: int) -> tuple[float, float]:
    fn(queries[0:1])
    times = []
    for i in range(min(n, len(queries))):
        q = queries[i : i + 1]
        t = time.perf_counter()
        fn(q)
        times.append((time.perf_counter() - t) * 1e3)
    return float(np.percentile(times, 50)), float(np.percentile(times, 95))


def _run(results, query_ids, doc_ids, k: int = 10) -> dict[str, list[str]]:
    return {q: [doc_ids[r] for r in rows[:k]] for q, (rows, _) in zip(query_ids, results)}


def build_index(pooled: Ragged, doc_ids, codec_spec: str, workdir: str, store=None):
    """Build the index through the store from already pooled documents (pooling once serves both the index and
    the LanceDB baseline; the store pools with the same function). ``store``: the ``mvstore.store`` module to
    build with (another revision's, in search_ab). Returns (index, snapshot, build_s)."""
    if store is None:
        from mvstore import store

    t = time.perf_counter()
    idx = store.create(str(Path(workdir) / "index"), spec=codec_spec, dim=pooled.dim)
    ids = list(doc_ids)
    # train on the whole corpus's pooled vectors (the store samples them), not on the first batch alone:
    # a representative sample gives the stage-1 centroids their full count
    idx.train(pooled.values)
    step = 500  # streaming add: memory bounded by one batch
    idx.add_batches((ids[a : a + step], pooled[a : a + step]) for a in range(0, len(ids), step))
    snap = idx.snapshot()
    return idx, snap, time.perf_counter() - t


def lancedb_rows(
    data,
    snap,
    pooled: Ragged,
    workdir: str,
    *,
    exhaustive_run,
    exact_run,
    n_latency: int,
    base: dict,
    n_tok: int,
):
    """LanceDB multivector search over the index's (pooled, transformed, unquantized) vectors: flat (exact
    MaxSim, cosine) and with an IVF_PQ index (per-token ANN, LanceDB's default approximation)."""
    import lancedb
    import pyarrow as pa
    from lancedb.index import IvfPq

    vecs = np.ascontiguousarray(snap.codec.transform(pooled.values), np.float32)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)  # LanceDB multivector is cosine-only
    d = vecs.shape[1]
    fsl = pa.FixedSizeListArray.from_arrays(pa.array(vecs.ravel()), d)
    col = pa.ListArray.from_arrays(pa.array(pooled.offsets.astype(np.int32)), fsl)
    db = lancedb.connect(str(Path(workdir) / "lancedb"))
    tbl = db.create_table("docs", pa.table({"row": pa.array(np.arange(len(pooled))), "vector": col}))
    qt = [snap.codec.transform_query(q) for q in data.queries]
    qt = [q / np.linalg.norm(q, axis=1, keepdims=True) for q in qt]

    def search(q, nprobes=None):
        s = tbl.search(q).limit(10).select(["row"])
        if nprobes:
            s = s.nprobes(nprobes)
        return s.to_arrow()["row"].to_numpy()

    for label, nprobes in (("lancedb-flat", None), ("lancedb-ivfpq", 20), ("lancedb-ivfpq", 80)):
        build_s = 0.0
        if label == "lancedb-ivfpq" and not tbl.list_indices():
            t = time.perf_counter()
            n_part = int(2 ** np.floor(np.log2(np.sqrt(len(vecs)))))
            tbl.create_index(
                "vector", config=IvfPq(distance_type="cosine", num_partitions=n_part, num_sub_vectors=d // 8)
            )
            build_s = time.perf_counter() - t
        res = [search(q, nprobes) for q in qt]
        run = {q: [data.doc_ids[r] for r in rr] for q, rr in zip(data.query_ids, res)}
        lat = []
        for q in qt[:n_latency]:
            t = time.perf_counter()
            search(q, nprobes)
            lat.append((time.perf_counter() - t) * 1e3)
        stored = len(vecs) * d * 4 + (len(vecs) * (d // 8) if label != "lancedb-flat" else 0)
        yield {
            **base,
            "system": label,
            "spec": f"{snap.codec.spec()} vectors as float32" + (", IVF_PQ" if nprobes else ""),
            "nprobe": nprobes,
            "n_rerank": None,
            "ndcg10": round(ndcg_at_k(run, data.qrels, 10), 4),
            "recall10_vs_exhaustive": round(recall_vs_reference(run, exhaustive_run, 10), 4),
            "recall10_vs_exact": round(recall_vs_reference(run, exact_run, 10), 4),
            "p50_ms": round(float(np.percentile(lat, 50)), 2),
            "p95_ms": round(float(np.percentile(lat, 95)), 2),
            "bytes_per_token": round(stored / n_tok, 2),
            "index_build_s": round(build_s, 1),
        }


def search_rows(
    data,
    spec: str = BENCH_SPEC,
    operating_points=None,
    *,
    exact_run=None,
    n_latency: int = 300,
    with_lancedb: bool = True,
) -> list[dict]:
    """Rows for the exhaustive oracle, each operating point, and LanceDB side by side."""
    return list(
        iter_search_rows(
            data, spec, operating_points, exact_run=exact_run, n_latency=n_latency, with_lancedb=with_lancedb
        )
    )


def iter_search_rows(
    data,
    spec: str = BENCH_SPEC,
    operating_points=None,
    *,
    exact_run=None,
    n_latency: int = 300,
    with_lancedb: bool = True,
    drop_raw: bool = False,
):
    """:func:`search_rows`, one row at a time (so a long run prints what it has). ``drop_raw`` releases
    ``data.docs`` (the raw float tokens, ~2 GB) once pooled, to keep peak memory down."""
    from mvstore.spec import parse

    points = list(operating_points or DEFAULT_POINTS)
    exact_run = exact_run if exact_run is not None else data.exact_run(100)
    sp = parse(spec)
    n_tok = int(data.docs.n_tokens)
    t = time.perf_counter()
    pooled = sp.pool(data.docs)
    pool_s = time.perf_counter() - t
    if drop_raw:
        data.docs = None
    codec_spec = ",".join(str(st) for st in sp.codec_stages) or "fp32"
    with tempfile.TemporaryDirectory(prefix="mvstore_search_bench_") as work:
        idx, snap, build_s = build_index(pooled, data.doc_ids, codec_spec, work)
        bpt = float(idx.stats()["stored_bytes"]) / n_tok  # per ORIGINAL token
        base = {
            "spec": spec,
            "docs": snap.n_docs,
            "vectors": snap.n_vectors,
            "centroids": int(len(snap.centroids)),
            "queries": len(data.queries),
        }

        t = time.perf_counter()
        oracle = Searcher(
            snap, SearchParams(candidates="exhaustive", device="cpu", batch_size=len(data.queries))
        )
        ex = oracle.search(data.queries, 10)
        ex_s = time.perf_counter() - t
        exhaustive_run = _run(ex, data.query_ids, data.doc_ids)
        p50, p95 = _latency(lambda q: oracle.search(q, 10), data.queries, min(n_latency, 10))
        yield {
            **base,
            "system": "mvstore-exhaustive",
            "nprobe": None,
            "n_rerank": None,
            "interaction": None,
            "ndcg10": round(ndcg_at_k(exhaustive_run, data.qrels, 10), 4),
            "recall10_vs_exhaustive": 1.0,
            "recall10_vs_exact": round(recall_vs_reference(exhaustive_run, exact_run, 10), 4),
            "p50_ms": round(p50, 2),
            "p95_ms": round(p95, 2),
            "bytes_per_token": round(bpt, 2),
            "pool_s": round(pool_s, 1),
            "build_s": round(build_s, 1),
            "batch_search_s": round(ex_s, 1),
        }
        for nprobe, n_rerank, inter, n_full, threads in points:
            params = SearchParams(
                candidates="centroid",
                nprobe=nprobe,
                n_rerank=n_rerank,
                interaction=inter,
                n_full=n_full or _DEFAULT.n_full,
                threads=threads,
                device="cpu",
            )
            s = Searcher(snap, params)
            t = time.perf_counter()
            res = s.search(data.queries, 10)
            batch_s = time.perf_counter() - t
            run = _run(res, data.query_ids, data.doc_ids)
            c0 = time.process_time()
            p50, p95 = _latency(lambda q, s=s: s.search(q, 10), data.queries, n_latency)
            cpu_ms = (time.process_time() - c0) / (min(n_latency, len(data.queries)) + 1) * 1e3
            yield {
                **base,
                "system": "mvstore",
                "nprobe": nprobe,
                "n_rerank": n_rerank,
                "interaction": inter,
                "n_full": n_full,
                "threads": s.threads,
                "ndcg10": round(ndcg_at_k(run, data.qrels, 10), 4),
                "recall10_vs_exhaustive": round(recall_vs_reference(run, exhaustive_run, 10), 4),
                "recall10_vs_exact": round(recall_vs_reference(run, exact_run, 10), 4),
                "p50_ms": round(p50, 2),
                "p95_ms": round(p95, 2),
                "cpu_ms_per_query": round(cpu_ms, 2),
                "bytes_per_token": round(bpt, 2),
                "batch_qps": round(len(data.queries) / batch_s, 1),
                "recommended": (nprobe, n_rerank, inter, n_full, threads) == RECOMMENDED,
            }
        # end to end through Index.search (Arrow result) with the default SearchParams
        params = SearchParams(device="cpu")
        p50, p95 = _latency(lambda q: idx.search(q, 10, params=params), data.queries, n_latency)
        yield {
            **base,
            "system": "mvstore-Index.search",
            "nprobe": params.nprobe,
            "n_rerank": params.n_rerank,
            "interaction": params.interaction,
            "n_full": params.n_full,
            "threads": Searcher(snap, params).threads,
            "p50_ms": round(p50, 2),
            "p95_ms": round(p95, 2),
            "bytes_per_token": round(bpt, 2),
        }
        if with_lancedb:
            yield from lancedb_rows(
                data,
                snap,
                pooled,
                work,
                exhaustive_run=exhaustive_run,
                exact_run=exact_run,
                n_latency=min(n_latency, 30),
                base=base,
                n_tok=n_tok,
            )


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--spec", default=BENCH_SPEC)
    ap.add_argument("--max-docs", type=int, default=None)
    ap.add_argument("--no-lancedb", action="store_true", help="skip the LanceDB rows")
    ap.add_argument("--latency-queries", type=int, default=300)
    ap.add_argument(
        "--model",
        choices=("minilm", "colbert128"),
        default="minilm",
        help="token vectors: bundled MiniLM hidden states or the ColBERT model of train_colbert.py",
    )
    ap.add_argument("--json", action="store_true", help="print JSON lines only")
    args = ap.parse_args(argv)
    from benchmarks.data import load_scifact

    data = load_scifact(args.max_docs, model=args.model)
    exact = data.exact_run(100)
    for row in iter_search_rows(
        data,
        args.spec,
        exact_run=exact,
        n_latency=args.latency_queries,
        with_lancedb=not args.no_lancedb,
        drop_raw=True,
    ):
        print(json.dumps(row) if args.json else "  ".join(f"{k}={v}" for k, v in row.items()), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
