"""The compression frontier on SciFact: retrieval quality vs stored bytes per original token, per spec.

For each spec: pool the documents (``mvstore.pooling.pool``), fit the codec pipeline on a sample of the
pooled tokens, encode + decode every document, then score all queries (through ``transform_query``) against
all decoded documents with exhaustive exact MaxSim. There is no candidate prefilter, so the rows isolate
what compression alone costs.

    python benchmarks/frontier.py --json [--max-docs 1500] [--spec pool2,pca96,rq2 ...]

Row fields: ``spec, ndcg10, recall10_vs_exact`` (top-10 overlap with exact uncompressed MaxSim),
``bytes_per_token`` (stored code bytes / ORIGINAL token count), ``code_size`` (bytes per stored vector),
``vectors_per_doc``, ``build_s`` (pooling + fit + encode), ``pool_s``, ``fit_s``, ``encode_s``, ``p50_ms`` /
``p95_ms`` (one query: transform + exhaustive MaxSim over the decoded corpus), ``peak_rss_mb`` (of this process
during the spec) and ``pool_tokens_per_s`` (original tokens pooled per second; null without pooling).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import PeakRSS, latency_ms  # noqa: E402
from mvstore.eval import ndcg_at_k, recall_vs_reference, run_from_scores  # noqa: E402
from mvstore.ragged import Ragged  # noqa: E402
from mvstore.search.maxsim import maxsim, maxsim_batch  # noqa: E402
from mvstore.spec import build_pipeline, parse  # noqa: E402

#: pool factors 1-4, PCA/trunc dims and every quantizer; grouped by pooling so each pooled corpus is built once
DEFAULT_SPECS = [
    "pool4",
    "pool4,fp16",
    "pool4,sq4",
    "pool4,pq96",
    "pool4,pq48",
    "pool4,trunc368,pq46",
    "pool4,pca184,rq2",
    "pool4,pca128,rq2",
    "pool4,pq32",
    "pool4,pca176,rq1",
    "pool4,pca192,bin",
    "pool4,pq16",
    "pool2",
    "pool8",
    "pool8,trunc368,pq46",
    "pool8,trunc368,bin",
    "pool8,pca184,bin",
    "pool8,trunc368,pq23",
    "pool16,trunc368,pq46",
]


def _pooled(data: Any, spec: Any, cache_dir: Path | None) -> tuple[Ragged, float, bool]:
    """Pool ``data.docs`` as ``spec`` says (or read the result cached by an earlier run); returns
    ``(docs, pool_s, cached)``. ``pool_s`` is the measured pooling time of the run that computed it (stored
    with the cache)."""
    sp = parse(spec)
    path = None
    if cache_dir is not None:
        model = getattr(data, "model", "minilm")
        key = hashlib.sha256(
            ("\n".join(map(str, data.doc_ids)) + f"|{sp.pool_stage}|{model}").encode()
        ).hexdigest()[:16]
        path = cache_dir / f"pooled_{key}"
        if (path / "values.npy").exists():
            meta = json.loads((path / "meta.json").read_text())
            values = np.load(path / "values.npy", allow_pickle=False)
            offsets = np.load(path / "offsets.npy", allow_pickle=False)
            return Ragged(values, offsets), float(meta["pool_s"]), True
    t = time.perf_counter()
    docs = sp.pool(data.docs)
    pool_s = time.perf_counter() - t
    if path is not None:
        tmp = path.with_name(path.name + f".{os.getpid()}.tmp")
        tmp.mkdir(parents=True, exist_ok=True)
        np.save(tmp / "values.npy", docs.values, allow_pickle=False)
        np.save(tmp / "offsets.npy", docs.offsets, allow_pickle=False)
        (tmp / "meta.json").write_text(json.dumps({"pool_s": pool_s, "pool": str(sp.pool_stage)}))
        if not path.exists():
            os.replace(tmp, path)
    return docs, pool_s, False


def _sample(values: np.ndarray, n: int, seed: int) -> np.ndarray:
    if len(values) <= n:
        return values
    return values[np.sort(np.random.default_rng(seed).choice(len(values), n, replace=False))]


def iter_frontier_rows(
    data: Any,
    specs: Sequence[str],
    *,
    exact_run: dict[str, list[str]] | None = None,
    fit_sample: int = 200_000,
    latency_queries: int = 20,
    seed: int = 0,
    cache_dir: Path | None = None,
) -> Iterator[dict]:
    """Yield one row per spec as soon as it is measured (see :func:`frontier_rows`)."""
    if exact_run is None:
        exact_run = data.exact_run(100)
    n_orig = data.docs.n_tokens
    pooled_cache: dict[str, tuple[Ragged, float, bool]] = {}
    for spec in specs:
        sp = parse(spec)
        with PeakRSS() as mem:
            key = str(sp.pool_stage)
            if key not in pooled_cache:
                pooled_cache.clear()  # hold one pooled corpus at a time (group specs by pooling to reuse it)
                if sp.pool_factor == 1:
                    pooled_cache[key] = (data.docs, 0.0, False)
                else:
                    pooled_cache[key] = _pooled(data, sp, cache_dir)
            docs, pool_s, pool_cached = pooled_cache[key]
            t = time.perf_counter()
            codec = build_pipeline(sp, data.docs.dim).fit(_sample(docs.values, fit_sample, seed))
            fit_s = time.perf_counter() - t
            t = time.perf_counter()
            codes = codec.encode(docs.values)
            encode_s = time.perf_counter() - t
            decoded = Ragged(codec.decode(codes), docs.offsets)
            queries = Ragged(codec.transform_query(data.queries.values), data.queries.offsets)
            scores = maxsim_batch(queries, decoded)
            run = run_from_scores(scores, data.query_ids, data.doc_ids, 100)
            p50 = p95 = None
            if latency_queries:
                p50, p95 = latency_ms(
                    lambda q, c=codec, d=decoded: maxsim(c.transform_query(q), d),
                    data.queries,
                    latency_queries,
                )
        yield {
            "spec": spec,
            "ndcg10": round(ndcg_at_k(run, data.qrels, 10), 4),
            "recall10_vs_exact": round(recall_vs_reference(run, exact_run, 10), 4),
            "bytes_per_token": round(codes.nbytes / n_orig, 3),
            "code_size": codec.code_size,
            "vectors_per_doc": round(docs.n_tokens / len(docs), 1),
            "build_s": round(pool_s + fit_s + encode_s, 2),
            "pool_s": round(pool_s, 2),
            "fit_s": round(fit_s, 2),
            "encode_s": round(encode_s, 2),
            "p50_ms": None if p50 is None else round(p50, 2),
            "p95_ms": None if p95 is None else round(p95, 2),
            "peak_rss_mb": mem.mb,
            "pool_tokens_per_s": round(n_orig / pool_s) if sp.pool_factor > 1 and pool_s > 0 else None,
            "pool_time_from_cache": pool_cached,
            "docs": len(docs),
            "orig_tokens": n_orig,
        }


def frontier_rows(data: Any, specs: Sequence[str] = DEFAULT_SPECS, **kwargs: Any) -> list[dict]:
    """One row per spec (fields in the module docstring). ``data`` is ``benchmarks.data.load_scifact(...)``'s
    result; ``exact_run`` (top-100 of exact MaxSim) is computed when not given. Keywords: ``fit_sample``
    (tokens the codec is fitted on), ``latency_queries``, ``seed``, ``cache_dir`` (reuse pooled documents across
    runs; ``pool_s`` is then the time measured when they were pooled)."""
    return list(iter_frontier_rows(data, specs, **kwargs))


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--spec", action="append", default=[], help="spec to measure (repeatable); default: the table"
    )
    ap.add_argument("--max-docs", type=int, default=None, help="subset: all judged docs + others up to N")
    ap.add_argument("--fit-sample", type=int, default=200_000, help="pooled tokens the codec is fitted on")
    ap.add_argument("--latency-queries", type=int, default=20)
    ap.add_argument("--threads", type=int, default=None, help="faiss OpenMP threads (default: faiss's own)")
    ap.add_argument(
        "--no-pool-cache", action="store_true", help="pool again instead of reusing cached pooling"
    )
    ap.add_argument(
        "--model",
        choices=("minilm", "colbert128"),
        default="minilm",
        help="token vectors: bundled MiniLM hidden states or the ColBERT model of train_colbert.py",
    )
    ap.add_argument("--json", action="store_true", help="print JSON lines only")
    args = ap.parse_args(argv)

    from benchmarks.data import CACHE, load_scifact

    if args.threads:
        import faiss

        faiss.omp_set_num_threads(args.threads)

    data = load_scifact(args.max_docs, model=args.model)
    exact = data.exact_run(100)
    for row in iter_frontier_rows(
        data,
        args.spec or DEFAULT_SPECS,
        exact_run=exact,
        fit_sample=args.fit_sample,
        latency_queries=args.latency_queries,
        cache_dir=None if args.no_pool_cache else CACHE / "pooled",
    ):
        print(json.dumps(row) if args.json else "  ".join(f"{k}={v}" for k, v in row.items()), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
