#!/usr/bin/env bash
# CPU/GPU agreement and GPU latency/throughput of the two-stage search, as JSON lines. Installs nothing.
#
#   bash benchmarks/gpu_check.sh                 # needs CUDA; exits 2 with a message when there is none
#   DOCS=50000 DIM=128 SPEC=pool4,sq8 bash benchmarks/gpu_check.sh
#   bash benchmarks/gpu_check.sh --dry-run-cpu   # runs the GPU code path (torch) on the CPU, to test the script
#
# Steps: (1) the GPU tests of tests/test_search.py (pytest -m gpu); (2) a synthetic corpus (benchmarks/scaling.py
# generator, streaming build) searched on the CPU (numpy) and on the GPU (torch) at several operating points:
# top-10 agreement and score differences; (3) GPU single-query p50/p95 latency and batched throughput.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-.venv/bin/python}"
[ -x "$PY" ] || PY=python3
export HF_HUB_OFFLINE=1
DRY=0
if [ "${1:-}" = "--dry-run-cpu" ]; then DRY=1; fi

if [ "$DRY" = 0 ]; then
  if ! "$PY" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)'; then
    echo '{"error": "CUDA is not available (torch.cuda.is_available() is False): run this on a machine with an NVIDIA GPU and a CUDA build of torch, or use --dry-run-cpu to test the script"}'
    exit 2
  fi
  "$PY" -m pytest -q -m gpu tests/test_search.py -p no:cacheprovider
fi

DRY="$DRY" DOCS="${DOCS:-20000}" DIM="${DIM:-128}" SPEC="${SPEC:-pool8,bin}" "$PY" - <<'EOF'
import json, os, sys, time
import numpy as np
import torch

sys.path.insert(0, os.getcwd())
from benchmarks.scaling import Corpus, build
from mvstore.search.params import SearchParams
from mvstore.search.searcher import Searcher

dry = os.environ["DRY"] == "1"
docs, dim, spec = int(os.environ["DOCS"]), int(os.environ["DIM"]), os.environ["SPEC"]
dev = "cpu" if dry else "cuda"
corpus = Corpus(docs, dim)
t = time.perf_counter()
snap, _ = build(corpus, spec, 4096)
queries = corpus.queries(200)
info = {"check": "setup", "docs": docs, "dim": dim, "spec": spec, "vectors": int(snap.n_vectors),
        "build_s": round(time.perf_counter() - t, 1), "dry_run_cpu": dry,
        "device_name": "cpu (dry run)" if dry else torch.cuda.get_device_name(0)}
print(json.dumps(info), flush=True)


def sync():
    if not dry:
        torch.cuda.synchronize()


failed = False
points = [(4, 64, "probed"), (8, 128, "probed"), (8, 160, "full"), (len(snap.centroids), 256, "probed")]
for nprobe, n_rerank, inter in points:
    kw = dict(nprobe=nprobe, n_rerank=n_rerank, interaction=inter, batch_size=32)  # n_full: the default
    cpu = Searcher(snap, SearchParams(device="cpu", **kw)).search(queries, 10)
    gpu_s = Searcher(snap, SearchParams(device=dev, **kw), backend="torch")
    gpu = gpu_s.search(queries, 10)
    overlap = np.mean([len(np.intersect1d(a[0], b[0])) / max(len(a[0]), 1) for a, b in zip(cpu, gpu)])
    same_order = np.mean([np.array_equal(a[0], b[0]) for a, b in zip(cpu, gpu)])
    max_diff = max(float(np.abs(a[1] - b[1]).max()) for a, b in zip(cpu, gpu) if len(a[1]) == len(b[1]))
    # filtered search on the device never returns disallowed rows
    allowed = np.arange(snap.n_docs) % 3 == 0
    filt = gpu_s.search(queries[:50], 10, allowed=allowed)
    filt_ok = all(allowed[r].all() for r, _ in filt)
    ok = overlap >= 0.99 and max_diff < 1e-2 and filt_ok
    failed |= not ok
    # single-query latency on the device
    gpu_s.search(queries[0:1], 10)
    lat = []
    for i in range(100):
        sync(); t = time.perf_counter()
        gpu_s.search(queries[i : i + 1], 10)
        sync(); lat.append((time.perf_counter() - t) * 1e3)
    # batched throughput
    thr = {}
    for bs in (32, 200):
        s = Searcher(snap, SearchParams(device=dev, **{**kw, "batch_size": bs}), backend="torch")
        s.search(queries[:bs], 10)
        sync(); t = time.perf_counter()
        s.search(queries, 10)
        sync(); thr[f"qps_batch{bs}"] = round(len(queries) / (time.perf_counter() - t), 1)
    print(json.dumps({"check": "cpu_vs_gpu", "nprobe": nprobe, "n_rerank": n_rerank, "interaction": inter,
                      "top10_overlap": round(float(overlap), 4), "same_order_frac": round(float(same_order), 4),
                      "max_score_diff": round(max_diff, 6), "filter_ok": filt_ok, "ok": bool(ok),
                      "p50_ms": round(float(np.percentile(lat, 50)), 2),
                      "p95_ms": round(float(np.percentile(lat, 95)), 2), **thr}), flush=True)
print(json.dumps({"check": "summary", "ok": not failed}), flush=True)
sys.exit(1 if failed else 0)
EOF
