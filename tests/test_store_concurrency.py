"""mvstore.store under stress: SIGKILL mid-write, readers in other threads/processes during writes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

import mvstore.store as ms

DIM = 32
ROOT = str(Path(__file__).resolve().parents[1])


def unit(x):
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


def make_docs(n, seed):
    rng = np.random.default_rng(seed)
    centers = unit(np.random.default_rng(123).normal(size=(24, DIM)))
    return [
        unit(centers[rng.integers(0, 24, m)] + 0.35 * rng.normal(size=(m, DIM)))
        for m in rng.integers(20, 60, n)
    ]


def rows(t):
    return [t["query"].to_pylist(), t["id"].to_pylist(), np.round(t["score"].to_numpy(), 4).tolist()]


def _env():
    env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONPATH=ROOT, OMP_NUM_THREADS="1")
    return env


KILL_CHILD = """
import sys, numpy as np
import mvstore.store as ms
uri, marker = sys.argv[1], sys.argv[2]
idx = ms.open(uri)
rng = np.random.default_rng(1)
def batches():
    for b in range(1_000_000):  # effectively endless: the parent kills us mid-stream
        docs = [rng.normal(size=(40, DIM)).astype(np.float32) for _ in range(50)]
        yield np.arange(10**6 + 50 * b, 10**6 + 50 * (b + 1)), docs
        if b == 8:
            open(marker, "w").close()
idx.add_batches(batches())
""".replace("DIM", str(DIM))


@pytest.mark.parametrize("first_add", [False, True], ids=["append", "first-add"])
def test_sigkill_during_add_leaves_previous_version(tmp_path, first_add):
    uri = str(tmp_path / "ix")
    docs = make_docs(40, seed=0)
    idx = ms.create(uri, spec="sq8", dim=DIM, n_centroids=16)
    queries = [d[:5] for d in docs[:4]]
    if not first_add:
        idx.add(np.arange(40), docs)
    before = rows(idx.search(queries, k=5))
    version, n_files = (
        idx.version,
        len(os.listdir(os.path.join(uri, "docs.lance", "data"))) if not first_add else 0,
    )
    marker = str(tmp_path / "writing")
    child = subprocess.Popen([sys.executable, "-c", KILL_CHILD, uri, marker], env=_env(), cwd=ROOT)
    deadline = time.time() + 120
    while not os.path.exists(marker):
        assert child.poll() is None, f"the writer exited early with {child.returncode}"
        assert time.time() < deadline, "the writer never got going"
        time.sleep(0.05)
    time.sleep(0.3)
    child.send_signal(signal.SIGKILL)
    assert child.wait(30) == -signal.SIGKILL  # killed mid-write, not finished
    data_dir = os.path.join(uri, "docs.lance", "data")
    assert len(os.listdir(data_dir)) > n_files  # it really was writing data files when it died
    after = ms.open(uri)
    assert after.version == version and len(after) == (0 if first_add else 40)
    assert rows(after.search(queries, k=5)) == before
    if first_add:
        assert not after.stats()["trained"]  # the state fitted by the killed first add is not adopted
    # the index keeps working after the crash, and cleanup removes the orphaned files
    after.add(np.arange(500, 510), docs[:10])
    after.optimize(cleanup=True)
    assert len(ms.open(uri)) == (10 if first_add else 50)


def test_threads_read_one_consistent_version_during_writes(tmp_path):
    uri = str(tmp_path / "ix")
    docs = make_docs(40, seed=0)
    idx = ms.create(uri, spec="fp16", dim=DIM, n_centroids=16)
    idx.add(np.arange(40), docs)
    batches = [(np.arange(1000 + 20 * j, 1020 + 20 * j), make_docs(20, seed=10 + j)) for j in range(5)]
    queries = [b[1][0][:6] for b in batches] + [docs[0][:6]]
    pinned = ms.open(uri)  # keeps reading version 1 until refresh()
    base = rows(pinned.search(queries, k=3))
    seen, errors = [], []
    stop = threading.Event()

    def reader():
        try:
            while not stop.is_set():
                assert rows(pinned.search(queries, k=3)) == base
                seen.append(rows(idx.search(queries, k=3)))  # the writer's own Index, swapped per commit
        except Exception as e:  # surfaced below
            errors.append(e)

    threads = [threading.Thread(target=reader) for _ in range(2)]
    for t in threads:
        t.start()
    for b in batches:
        idx.add(*b)
        time.sleep(0.05)
    stop.set()
    for t in threads:
        t.join(60)
    assert not errors, errors[0]
    assert pinned.version == 1 and pinned.refresh().version == 6
    per_version = [rows(ms.open(uri, version=v).search(queries, k=3)) for v in range(1, 7)]
    assert len(seen) >= 2 and all(s in per_version for s in seen)
    assert per_version[-1][1][0] == 1000  # the last version finds the first added doc


READER_CHILD = """
import sys, json, time, numpy as np
import mvstore.store as ms
uri, qfile, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
q = np.load(qfile)
queries = [q[i] for i in range(len(q))]
print("ready", flush=True)
for _ in range(n):
    ix = ms.open(uri)
    t = ix.search(queries, k=3)
    print(json.dumps([ix.version, t["id"].to_pylist(), np.round(t["score"].to_numpy(), 4).tolist()]), flush=True)
    time.sleep(0.02)
"""


def test_other_process_reads_consistent_versions_during_writes(tmp_path):
    uri = str(tmp_path / "ix")
    docs = make_docs(40, seed=0)
    idx = ms.create(uri, spec="fp16", dim=DIM, n_centroids=16)
    idx.add(np.arange(40), docs)
    batches = [(np.arange(1000 + 20 * j, 1020 + 20 * j), make_docs(20, seed=10 + j)) for j in range(6)]
    q = np.stack([b[1][0][:6] for b in batches[:3]])
    np.save(tmp_path / "q.npy", q)
    child = subprocess.Popen(
        [sys.executable, "-c", READER_CHILD, uri, str(tmp_path / "q.npy"), "40"],
        env=_env(),
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert child.stdout.readline().strip() == "ready"
    for b in batches:
        idx.add(*b)
        time.sleep(0.1)
    out, _ = child.communicate(timeout=120)
    assert child.returncode == 0
    seen = [json.loads(line) for line in out.splitlines()]
    assert len(seen) == 40
    queries = [q[i] for i in range(len(q))]
    expected = {}
    for v, ids, scores in seen:
        if v not in expected:
            t = ms.open(uri, version=v).search(queries, k=3)
            expected[v] = [t["id"].to_pylist(), np.round(t["score"].to_numpy(), 4).tolist()]
        assert [ids, scores] == expected[v], f"reader saw a mixed state at version {v}"
    assert len(expected) >= 2  # it did read across several commits
