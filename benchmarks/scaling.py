"""Search scaling on synthetic corpora drawn to look like real token vectors (clustered, unit norm, 30-300
tokens per document): build time, stored bytes, single-query p50/p95 latency and peak RSS per corpus size,
at FIXED search params (``SearchParams()`` defaults). Each size runs in a fresh subprocess so its peak RSS is
its own.

    python benchmarks/scaling.py [--sizes 10000 100000 1000000] [--dim 128] [--spec pool8,bin] [--json]

Documents are generated, pooled and encoded in streaming batches (never the whole float corpus in memory):
the codec and the stage-1 centroids are fitted on the first batch (centroid count by the store's rule,
capped by ``--max-centroids`` so k-means stays affordable on a laptop), every batch is pooled, encoded to
uint8 codes and assigned its stage-1 terms, and the in-memory snapshot holds only codes, offsets and terms:
exactly what ``Index.snapshot()`` holds. ``build_s`` is that pipeline (synthetic generation excluded); the
Lance write path is measured by ``benchmarks/streaming_build.py``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

DEFAULT_SIZES = (10_000, 100_000, 1_000_000)
DEFAULT_SPEC = "pool8,bin"
BATCH_DOCS = 4_000


class Corpus:
    """A reproducible synthetic corpus: ``n_topics`` unit topic directions; each document mixes 4 topics and
    its tokens are noisy copies of them (per-token noise ~ the spread of real contextual embeddings). Noise
    rows are drawn from a fixed bank of 65,536 Gaussian rows: gathering is ~10x cheaper than drawing
    165M x dim normals for a million documents."""

    def __init__(self, n_docs: int, dim: int, *, n_topics: int = 4096, seed: int = 0, noise: float = 0.8):
        self.n_docs, self.dim, self.seed, self.noise = n_docs, dim, seed, noise
        rng = np.random.default_rng(seed)
        t = rng.standard_normal((n_topics, dim)).astype(np.float32)
        self.topics = t / np.linalg.norm(t, axis=1, keepdims=True)
        self.bank = rng.standard_normal((1 << 16, dim), dtype=np.float32) * np.float32(noise / np.sqrt(dim))

    def batch(self, a: int, b: int):
        from mvstore.ragged import Ragged

        rng = np.random.default_rng([self.seed, a])
        lengths = rng.integers(30, 301, b - a)
        offsets = np.zeros(b - a + 1, np.int64)
        np.cumsum(lengths, out=offsets[1:])
        mix = rng.integers(0, len(self.topics), (b - a, 4))
        pick = mix[np.repeat(np.arange(b - a), lengths), rng.integers(0, 4, offsets[-1])]
        v = self.topics[pick]
        v += self.bank[rng.integers(0, len(self.bank), offsets[-1])]
        v /= np.linalg.norm(v, axis=1, keepdims=True)
        return Ragged(v, offsets)

    def queries(self, n: int, n_tok: int = 24):
        """Queries: noisy tokens of random documents (regenerated from their batches)."""
        from mvstore.ragged import Ragged

        rng = np.random.default_rng([self.seed, 10**9])
        picks = rng.integers(0, self.n_docs, n)
        self.query_sources = picks  # the document each query was drawn from
        out: list = [None] * n
        for a in np.unique((picks // BATCH_DOCS) * BATCH_DOCS):  # each needed batch is generated once
            batch = self.batch(int(a), min(int(a) + BATCH_DOCS, self.n_docs))
            for i in np.flatnonzero((picks // BATCH_DOCS) * BATCH_DOCS == a):
                doc = batch[int(picks[i] - a)]
                q = doc[rng.integers(0, len(doc), n_tok)] + rng.standard_normal((n_tok, self.dim)).astype(
                    np.float32
                ) * (0.5 / np.sqrt(self.dim))
                out[i] = q / np.linalg.norm(q, axis=1, keepdims=True)
        return Ragged.from_list(out)


def build(corpus: Corpus, spec: str, max_centroids: int):
    """Stream the corpus through pooling and the codec -> (Snapshot, seconds spent generating data)."""
    from mvstore.search.postings import CENTROID_SAMPLE, assign_terms, default_n_centroids, fit_centroids
    from mvstore.search.snapshot import Snapshot
    from mvstore.spec import build_pipeline, parse

    sp = parse(spec)
    codec_spec = ",".join(str(st) for st in sp.codec_stages) or "fp32"

    gen_s = 0.0

    def pooled_batch(a: int):
        nonlocal gen_s
        t = time.perf_counter()
        raw = corpus.batch(a, min(a + BATCH_DOCS, corpus.n_docs))
        gen_s += time.perf_counter() - t
        return raw.lengths, sp.pool(raw)

    first_tokens, first = pooled_batch(0)
    est_vectors = int(first.n_tokens * corpus.n_docs / len(first))
    n_c = min(default_n_centroids(est_vectors), max_centroids)
    n_fit = max(65_536, CENTROID_SAMPLE * n_c)
    # batches pooled before the codec and the centroids are fitted on them (enough for the centroid sample)
    pending = [(first_tokens, first)]
    next_doc = BATCH_DOCS
    while next_doc < corpus.n_docs and sum(p.n_tokens for _, p in pending) < n_fit:
        pending.append(pooled_batch(next_doc))
        next_doc += BATCH_DOCS
    pooled_values = np.concatenate([p.values for _, p in pending])
    rng = np.random.default_rng(0)
    sample = pooled_values[
        np.sort(rng.choice(len(pooled_values), min(n_fit, len(pooled_values)), replace=False))
    ]
    del pooled_values
    codec = build_pipeline(codec_spec, corpus.dim).fit(sample[:65_536])
    centroids = fit_centroids(codec.transform(sample), n_c)
    del sample, first
    codes, terms, lengths, n_tokens = [], [], [], []

    def encode(raw_lengths, r) -> None:
        codes.append(codec.encode(r.values))
        terms.append(assign_terms(codec.transform(r.values), centroids))
        lengths.append(r.lengths)
        n_tokens.append(raw_lengths)

    for raw_lengths, r in pending:
        encode(raw_lengths, r)
    pending.clear()
    for a in range(next_doc, corpus.n_docs, BATCH_DOCS):
        encode(*pooled_batch(a))
    lengths = np.concatenate(lengths)
    offsets = np.zeros(len(lengths) + 1, np.int64)
    np.cumsum(lengths, out=offsets[1:])
    snap = Snapshot(
        version=1,
        ids=np.arange(corpus.n_docs),
        codes=np.concatenate(codes),
        offsets=offsets,
        codec=codec,
        n_tokens=np.concatenate(n_tokens),
        terms=np.concatenate(terms),
        centroids=centroids,
    )
    return snap, gen_s


def measure(n_docs: int, dim: int, spec: str, n_queries: int, check_recall: bool, max_centroids: int) -> dict:
    from mvstore.search.params import SearchParams
    from mvstore.search.searcher import Searcher

    corpus = Corpus(n_docs, dim)
    t = time.perf_counter()
    snap, gen_s = build(corpus, spec, max_centroids)
    encode_s = time.perf_counter() - t - gen_s
    t = time.perf_counter()
    params = SearchParams(device="cpu")
    searcher = Searcher(snap, params)
    _ = searcher.generator  # posting lists (built once per snapshot)
    postings_s = time.perf_counter() - t
    queries = corpus.queries(n_queries)
    for i in range(min(10, len(queries))):  # warm-up (compiled kernels, caches)
        searcher.search(queries[i : i + 1], 10)
    lat = []
    results = []
    for i in range(len(queries)):
        t = time.perf_counter()
        results.append(searcher.search(queries[i : i + 1], 10)[0])
        lat.append((time.perf_counter() - t) * 1e3)
    stored = snap.codes.nbytes + snap.terms.nbytes
    row = {
        "docs": n_docs,
        "tokens": int(snap.n_tokens.sum()),
        "vectors": snap.n_vectors,
        "dim": dim,
        "spec": spec,
        "nprobe": params.nprobe,
        "n_rerank": params.n_rerank,
        "n_full": params.n_full,
        "threads": searcher.threads,
        "centroids": int(len(snap.centroids)),
        "build_s": round(encode_s + postings_s, 1),
        "generate_s": round(gen_s, 1),
        "stored_bytes": int(stored),
        "bytes_per_token": round(stored / snap.n_tokens.sum(), 2),
        "postings_bytes": int(searcher.generator.postings.nbytes),
        "p50_ms": round(float(np.percentile(lat, 50)), 2),
        "p95_ms": round(float(np.percentile(lat, 95)), 2),
        "queries": len(queries),
        "source_doc_in_top10": round(
            float(np.mean([src in r[0] for src, r in zip(corpus.query_sources, results)])), 4
        ),
    }
    if check_recall:
        oracle = Searcher(snap, SearchParams(candidates="exhaustive", device="cpu", batch_size=len(queries)))
        ex = oracle.search(queries, 10)
        row["recall10_vs_exhaustive"] = round(
            float(np.mean([len(np.intersect1d(a[0], b[0])) / 10 for a, b in zip(results, ex)])), 4
        )
    row["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    return row


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=list(DEFAULT_SIZES))
    ap.add_argument("--dim", type=int, default=128)
    ap.add_argument("--spec", default=DEFAULT_SPEC)
    ap.add_argument("--queries", type=int, default=100)
    ap.add_argument(
        "--recall-up-to",
        type=int,
        default=100_000,
        help="also measure recall vs the exhaustive oracle for sizes up to this",
    )
    ap.add_argument("--max-centroids", type=int, default=8192, help="cap on the stage-1 centroid count")
    ap.add_argument("--timeout", type=float, default=3600, help="seconds per size")
    ap.add_argument("--one", action="store_true", help=argparse.SUPPRESS)  # child mode: one size, here
    ap.add_argument("--json", action="store_true", help="print JSON lines only")
    args = ap.parse_args(argv)
    if args.one:
        n = args.sizes[0]
        print(
            json.dumps(
                measure(n, args.dim, args.spec, args.queries, n <= args.recall_up_to, args.max_centroids)
            ),
            flush=True,
        )
        return 0
    rows = []
    for n in args.sizes:
        cmd = [
            sys.executable,
            __file__,
            "--one",
            "--sizes",
            str(n),
            "--dim",
            str(args.dim),
            "--spec",
            args.spec,
            "--queries",
            str(args.queries),
            "--recall-up-to",
            str(args.recall_up_to),
            "--max-centroids",
            str(args.max_centroids),
        ]
        t = time.perf_counter()
        try:
            p = subprocess.run(
                cmd,
                capture_output=True,
                text=True,
                timeout=args.timeout,
                env={**os.environ, "HF_HUB_OFFLINE": "1"},
            )
        except subprocess.TimeoutExpired:
            row = {"docs": n, "error": f"did not finish within --timeout {args.timeout:.0f}s"}
        else:
            if p.returncode != 0:
                row = {
                    "docs": n,
                    "error": (p.stderr.strip().splitlines() or ["?"])[-1][:300],
                    "returncode": p.returncode,
                }
            else:
                row = json.loads(p.stdout.strip().splitlines()[-1])
        row["wall_s"] = round(time.perf_counter() - t, 1)
        rows.append(row)
        print(json.dumps(row) if args.json else "  ".join(f"{k}={v}" for k, v in row.items()), flush=True)
    ok = [r for r in rows if "p50_ms" in r]
    if len(ok) >= 2:
        a, b = ok[0], ok[-1]
        growth = (b["p50_ms"] / a["p50_ms"]) / (b["docs"] / a["docs"])
        summary = {
            "summary": "latency growth vs corpus growth",
            "from_docs": a["docs"],
            "to_docs": b["docs"],
            "p50_ratio": round(b["p50_ms"] / a["p50_ms"], 2),
            "docs_ratio": b["docs"] / a["docs"],
            "sublinear": bool(growth < 1.0),
        }
        print(json.dumps(summary) if args.json else summary, flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
