"""Distributed build (``mvstore.build`` on Ray) vs ``Index.add``: documents/s and peak RSS per worker.

One local Ray cluster (``ray.init(num_cpus=max workers)``) builds the same corpus (``--files`` Parquet shards)
with 1 and 2 workers (so the scaling ratio is visible) after one unreported warm-up build (worker processes,
imports, the model), and a separate subprocess builds it with ``Index.add_batches`` (its own peak RSS). Two inputs: precomputed token vectors (synthetic clustered unit vectors, Parquet), and texts encoded on
the workers by the bundled MiniLM (a smaller subset: encoding dominates). Each build trains on the same first
``--train-docs`` documents; seconds cover training, encoding, writing and the commit.

    python benchmarks/distributed_build.py --docs 4000 --text-docs 200 --json

Prints one JSON object per row (``--json``) or a table: input, builder, workers, docs, seconds, docs/s,
speedup vs 1 worker, worker processes that ran tasks, peak RSS per worker (MiB: the largest worker's ``ru_maxrss``; for Index.add the
process's), and the machine's load average at the start (the numbers are only comparable on an idle machine).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

WORDS = (
    "protein cell gene expression tumor patient study effect increase risk model data analysis level "
    "signal response treatment clinical trial receptor pathway mutation immune virus infection dose"
).split()


def vector_table(n: int, dim: int, seed: int) -> pa.Table:
    from benchmarks.data import synthetic_docs

    docs = synthetic_docs(n, dim, min_len=30, max_len=120, seed=seed)
    tokens = pa.FixedSizeListArray.from_arrays(pa.array(docs.values.reshape(-1)), dim)
    vecs = pa.ListArray.from_arrays(pa.array(docs.offsets.astype(np.int32)), tokens)
    return pa.table({"id": pa.array(np.arange(n), pa.int64()), "vectors": vecs})


def text_table(n: int, seed: int) -> pa.Table:
    rng = np.random.default_rng(seed)
    texts = [" ".join(rng.choice(WORDS, int(rng.integers(40, 120)))) for _ in range(n)]
    return pa.table({"id": pa.array(np.arange(n), pa.int64()), "text": texts})


_ADD = """
import json, resource, sys, time
import pyarrow.parquet as pq
import mvstore.store as ms
from mvstore.distributed import _vectors
path, out, spec, train_docs, batch = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
tbl = pq.read_table(path).combine_chunks()
t = time.perf_counter()
texts = "text" in tbl.column_names
if texts:
    from mvstore.encoders import HFTokenEncoder
    enc = HFTokenEncoder(None)
    docs_of = lambda s: enc.encode_documents(s.column("text").to_pylist())
    dim = enc.dim
else:
    dim = len(tbl.column("vectors")[0][0])
    docs_of = lambda s: _vectors(s.column("vectors"), dim)
idx = ms.create(out, spec=spec, dim=dim)
idx.train(docs_of(tbl.slice(0, train_docs)))
ids = tbl.column("id").to_numpy()
idx.add_batches((ids[a:a + batch], docs_of(tbl.slice(a, batch))) for a in range(0, tbl.num_rows, batch))
print(json.dumps({"seconds": time.perf_counter() - t, "rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}))
"""


def index_add(path: str, out: str, spec: str, train_docs: int, batch: int) -> dict:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    p = subprocess.run([sys.executable, "-c", _ADD, path, out, spec, str(train_docs), str(batch)], env=env,
                       capture_output=True, text=True, check=False)  # fmt: skip
    if p.returncode:
        raise RuntimeError(p.stderr[-3000:])
    return json.loads(p.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--docs", type=int, default=4000, help="documents of precomputed vectors")
    ap.add_argument("--text-docs", type=int, default=200, help="documents of text (encoded by MiniLM)")
    ap.add_argument("--dim", type=int, default=128)
    ap.add_argument("--spec", default="pool2,pca64,sq8")
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--batch-size", type=int, default=256, help="documents per task and fragment (vectors)")
    ap.add_argument("--text-batch-size", type=int, default=16, help="documents per task and fragment (texts)")
    ap.add_argument("--files", type=int, default=8, help="Parquet shards the corpus is written as")
    ap.add_argument("--train-docs", type=int, default=500)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import ray

    import mvstore

    load = os.getloadavg()[0]
    ray.init(num_cpus=max(args.workers), include_dashboard=False, log_to_driver=False)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        inputs = [("vectors", vector_table(args.docs, args.dim, 0))]
        if args.text_docs:
            inputs.append(("texts", text_table(args.text_docs, 1)))
        for kind, tbl in inputs:
            # the corpus as --files Parquet shards (Ray reads one block per shard: the workers' units of work)
            path = os.path.join(tmp, kind)
            os.makedirs(path)
            n = tbl.num_rows
            step = -(-n // args.files)
            for i, a in enumerate(range(0, n, step)):
                pq.write_table(tbl.slice(a, step), os.path.join(path, f"part-{i:04d}.parquet"))
            spec = args.spec
            batch = args.text_batch_size if kind == "texts" else args.batch_size
            enc = (
                (lambda: __import__("mvstore.encoders").encoders.HFTokenEncoder(None))
                if kind == "texts"
                else None
            )
            # warm-up (not reported): worker processes started, imports and the model loaded once
            mvstore.build(os.path.join(path, "part-0000.parquet"), os.path.join(tmp, f"warm-{kind}"), spec,
                          ray=True, num_workers=max(args.workers), batch_size=8, train_docs=min(step, 64),
                          progress=False, encoder=enc)  # fmt: skip
            add = index_add(path, os.path.join(tmp, f"add-{kind}"), spec, args.train_docs, batch)
            rows.append({"input": kind, "builder": "Index.add", "workers": 1, "docs": n,
                         "seconds": round(add["seconds"], 2), "docs_per_s": round(n / add["seconds"], 1),
                         "peak_rss_mib_per_worker": round(add["rss"] / 2**20, 1)})  # fmt: skip
            base = None
            for w in args.workers:
                rep: dict = {}
                mvstore.build(path, os.path.join(tmp, f"ray-{kind}-{w}"), spec, ray=True, num_workers=w,
                              batch_size=batch, train_docs=args.train_docs, progress=False, report=rep,
                              encoder=enc)  # fmt: skip
                dps = n / rep["seconds"]
                base = base or dps
                rows.append({"input": kind, "builder": "mvstore.build (ray)", "workers": w, "docs": n,
                             "seconds": round(rep["seconds"], 2), "docs_per_s": round(dps, 1),
                             "speedup": round(dps / base, 2), "workers_seen": len(rep["workers"]),
                             "peak_rss_mib_per_worker": round(max(rep["workers"].values()) / 2**20, 1)})  # fmt: skip
    ray.shutdown()
    for r in rows:
        r["load_avg_at_start"] = round(load, 1)
        r["cpus"] = os.cpu_count()
    if args.json:
        for r in rows:
            print(json.dumps(r))
    else:
        from mvstore.report import format_table

        print(format_table(rows))


if __name__ == "__main__":
    main()
