"""mvstore.store under stress: SIGKILL mid-write, readers in other threads/processes during writes."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest

import mvstore.store as ms
from mvstore.testing import token_docs

DIM = 32
ROOT = str(Path(__file__).resolve().parents[1])


def make_docs(n, seed):
    return token_docs(n, DIM, seed=seed, lo=20, hi=60)


def rows(t):
    return [t["query"].to_pylist(), t["id"].to_pylist(), np.round(t["score"].to_numpy(), 4).tolist()]


def _env():
    env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONPATH=ROOT, OMP_NUM_THREADS="1")
    return env


KILL_CHILD = """
import sys, numpy as np
import mvstore.store as ms
from mvstore.testing import token_docs
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
    # the index keeps working after the crash (a cleanup deletes the orphaned files once older than ORPHAN_GRACE)
    after.add(np.arange(500, 510), docs[:10])
    after.optimize(cleanup=True, older_than=timedelta(0))
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
from mvstore.testing import token_docs
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


# ------------------------------------------------------------------------ issue 12: crash and writer safety
def _npz(path, docs, ids):
    lens = np.array([len(d) for d in docs])
    np.savez(
        path,
        vectors=np.concatenate(docs),
        offsets=np.concatenate([[0], np.cumsum(lens)]),
        ids=np.asarray(ids),
    )
    return str(path)


@pytest.mark.parametrize("bad", ["duplicate-id", "spec-misfit"])
def test_cli_overwrite_keeps_the_old_index_when_the_new_build_fails(tmp_path, bad):
    from mvstore import cli

    docs = make_docs(30, seed=0)
    uri = str(tmp_path / "ix")
    assert (
        cli.main(
            ["-q", "build", uri, "--input", _npz(tmp_path / "a.npz", docs, np.arange(30)), "--spec", "fp16"]
        )
        == 0
    )
    before = rows(ms.open(uri).search([d[:4] for d in docs[:3]], k=3))
    ids, spec = (
        (np.array([0, 1, 1] + list(range(3, 30))), "sq8")
        if bad == "duplicate-id"
        else (np.arange(30), "pca64")
    )
    args = ["-q", "build", uri, "--input", _npz(tmp_path / "b.npz", docs, ids), "--spec", spec, "--overwrite"]
    assert cli.main(args) == 2  # the new build is refused ...
    after = ms.open(uri)  # ... and the old index is still there, unchanged
    assert str(after.spec) == "fp16" and len(after) == 30
    assert rows(after.search([d[:4] for d in docs[:3]], k=3)) == before
    assert sorted(os.listdir(tmp_path)) == ["a.npz", "b.npz", "ix"]  # no build directory left behind
    # a valid overwrite replaces it
    assert (
        cli.main(["-q", "build", uri, "--input", str(tmp_path / "a.npz"), "--spec", "sq8", "--overwrite"])
        == 0
    )
    assert str(ms.open(uri).spec) == "sq8" and len(ms.open(uri)) == 30


def test_killed_first_codec_commit_is_an_absent_state(tmp_path):
    """A kill -9 at the codec table's first commit leaves only a temporary manifest in codec.lance/_versions:
    no state was stored, so the index opens as untrained and the next add trains it."""
    uri = str(tmp_path / "ix")
    docs = make_docs(20, seed=0)
    idx = ms.create(uri, spec="sq8", dim=DIM, n_centroids=8)
    shutil.copytree(os.path.join(uri, "integrity"), str(tmp_path / "integrity-before"))
    idx.train(docs)
    # killed before the commit completed, the writer never recorded it either (records follow commits)
    shutil.rmtree(os.path.join(uri, "integrity"))
    shutil.copytree(str(tmp_path / "integrity-before"), os.path.join(uri, "integrity"))
    vdir = os.path.join(uri, "codec.lance", "_versions")
    for f in os.listdir(vdir):  # what Lance leaves when killed between writing and renaming the manifest
        if f.endswith(".manifest"):
            os.rename(os.path.join(vdir, f), os.path.join(vdir, f + "-3f2a9c1e.tmp"))
        else:
            os.remove(os.path.join(vdir, f))
    idx = ms.open(uri)
    assert idx.version == 0 and not idx.stats()["trained"]
    assert idx.add(np.arange(20), docs) == 1
    assert ms.open(uri).search(docs[5][:4], k=1)["id"].to_pylist() == [5]


CLEANUP_RACE_CHILD = """
import os, sys, time, numpy as np
import mvstore.store as ms
from mvstore.testing import token_docs
uri, marker, go = sys.argv[1:4]
idx = ms.open(uri)
rng = np.random.default_rng(1)
def batches():
    for b in range(6):
        docs = [rng.normal(size=(30, DIM)).astype(np.float32) for _ in range(20)]
        yield np.arange(1000 + 20 * b, 1020 + 20 * b), [d / np.linalg.norm(d, axis=1, keepdims=True) for d in docs]
        if b == 3:  # data files written, not yet committed: let the parent clean up now
            open(marker, "w").close()
            while not os.path.exists(go):
                time.sleep(0.02)
print(idx.add_batches(batches()), flush=True)
""".replace("DIM", str(DIM))


def test_cleanup_never_deletes_a_live_writers_files(tmp_path):
    uri = str(tmp_path / "ix")
    docs = make_docs(40, seed=0)
    idx = ms.create(uri, spec="fp16", dim=DIM, n_centroids=16)
    idx.add(np.arange(40), docs)
    idx.add(np.arange(40, 60), make_docs(20, seed=1))
    marker, go = str(tmp_path / "written"), str(tmp_path / "go")
    child = subprocess.Popen(
        [sys.executable, "-c", CLEANUP_RACE_CHILD, uri, marker, go],
        env=_env(),
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    deadline = time.time() + 120
    while not os.path.exists(marker):
        assert child.poll() is None and time.time() < deadline, "the writer never got going"
        time.sleep(0.05)
    done = []
    cleaner = threading.Thread(
        target=lambda: done.append(ms.open(uri).optimize(cleanup=True, older_than=timedelta(0)))
    )
    cleaner.start()
    time.sleep(1.5)  # cleanup runs now (old code) or waits for the writer's lock (fixed code)
    open(go, "w").close()
    out, _ = child.communicate(timeout=120)
    cleaner.join(120)
    assert child.returncode == 0 and done
    latest = ms.open(uri)
    assert len(latest) == 180 and latest.snapshot().n_docs == 180  # every file of the latest version is there
    t = latest.search(docs[7][:5], k=1)
    assert t["id"].to_pylist() == [7]


RACE_CHILD = """
import os, sys, time, json, numpy as np
import mvstore.store as ms
from mvstore.testing import token_docs
from mvstore.exceptions import DuplicateIdError
uri, go, op, seed = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
idx = ms.open(uri)
rng = np.random.default_rng(seed)
out = []
print("ready", flush=True)
for r in range(3):
    ids = np.arange(10_000 * (r + 1), 10_000 * (r + 1) + 50)
    docs = [rng.normal(size=(20, DIM)).astype(np.float32) for _ in range(50)]
    while not os.path.exists(go + str(r)):
        time.sleep(0.002)
    try:
        getattr(idx, op)(ids, docs)
        out.append("ok")
    except DuplicateIdError:
        out.append("duplicate")
print(json.dumps(out), flush=True)
""".replace("DIM", str(DIM))


@pytest.mark.parametrize("op", ["add", "upsert"])
def test_two_processes_writing_the_same_new_ids_never_store_duplicates(tmp_path, op):
    uri = str(tmp_path / "ix")
    idx = ms.create(uri, spec="fp16", dim=DIM, n_centroids=16)
    idx.add(np.arange(40), make_docs(40, seed=0))
    go = str(tmp_path / "go")
    kids = [
        subprocess.Popen(
            [sys.executable, "-c", RACE_CHILD, uri, go, op, str(s)],
            env=_env(),
            cwd=ROOT,
            stdout=subprocess.PIPE,
            text=True,
        )
        for s in (1, 2)
    ]
    assert [k.stdout.readline().strip() for k in kids] == ["ready", "ready"]
    for r in range(3):
        open(go + str(r), "w").close()
        time.sleep(1.0)
    results = [json.loads(k.communicate(timeout=180)[0].splitlines()[-1]) for k in kids]
    assert all(k.returncode == 0 for k in kids)
    ids = ms.open(uri).snapshot().ids
    assert len(ids) == len(set(ids.tolist())) == 40 + 3 * 50  # every id once
    if op == "add":  # per round exactly one add wins, the other is told the ids exist
        assert all(sorted(pair) == ["duplicate", "ok"] for pair in zip(*results))


def test_reader_of_a_cleaned_up_version_is_told_to_refresh(tmp_path):
    from mvstore.exceptions import VersionCleanedUpError

    uri = str(tmp_path / "ix")
    docs = make_docs(40, seed=0)
    meta = [{"lang": "en" if i % 2 else "fr"} for i in range(40)]
    w = ms.create(uri, spec="fp16", dim=DIM, n_centroids=16)
    w.add(np.arange(20), docs[:20], metadata=meta[:20])
    w.add(np.arange(20, 40), docs[20:], metadata=meta[20:])
    w.delete([3])
    warm, cold = ms.open(uri), ms.open(uri)
    warm.search(docs[0][:4], k=2)  # its snapshot is in memory; cold has read nothing yet
    w.optimize(
        compact=True, cleanup=True, older_than=timedelta(0)
    )  # rewrites the fragments and deletes the old versions' files
    for reader, call in [
        (warm, lambda ix: ix.search(docs[0][:4], k=2, where="lang = 'en'")),
        (warm, lambda ix: ix.search(docs[0][:4], k=2, columns=["lang"])),
        (cold, lambda ix: ix.search(docs[0][:4], k=2)),
        (cold, lambda ix: ix.stats()),
    ]:
        with pytest.raises(VersionCleanedUpError, match=r"refresh\(\)"):
            call(reader)
    for reader in (warm, cold):
        t = reader.refresh().search(docs[1][:4], k=1, where="lang = 'en'", columns=["lang"])
        assert t["id"].to_pylist() == [1] and t["lang"].to_pylist() == ["en"]


LOCK_HOLDER = """
import sys, time
from mvstore.store._layout import write_lock
with write_lock(sys.argv[1]):
    print("locked", flush=True)
    time.sleep(600)
"""


def test_write_lock_waits_for_a_live_writer_and_not_for_a_killed_one(tmp_path, monkeypatch):
    from mvstore.exceptions import IndexBusyError
    from mvstore.store import _layout

    uri = str(tmp_path / "ix")
    docs = make_docs(10, seed=0)
    idx = ms.create(uri, spec="fp16", dim=DIM, n_centroids=4)
    holder = subprocess.Popen(
        [sys.executable, "-c", LOCK_HOLDER, uri], env=_env(), cwd=ROOT, stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        monkeypatch.setattr(_layout, "WRITE_LOCK_TIMEOUT_S", 0.5)
        with pytest.raises(IndexBusyError, match=f"pid {holder.pid}.*retry"):
            idx.add(np.arange(10), docs)
        assert idx.version == 0 and ms.open(uri).version == 0
        holder.send_signal(signal.SIGKILL)  # dies holding the lock: the kernel releases it
        holder.wait(30)
        assert idx.add(np.arange(10), docs) == 1
    finally:
        holder.kill()
        holder.wait(30)


def test_cleanup_keeps_young_unreferenced_files(tmp_path):
    """Files no version references may belong to a write that has not committed yet (a plain Lance writer does
    not take mvstore's lock): cleanup deletes them only once they are older than ORPHAN_GRACE."""
    from mvstore.store._maintain import ORPHAN_GRACE

    uri = str(tmp_path / "ix")
    idx = ms.create(uri, spec="fp16", dim=DIM, n_centroids=4)
    idx.add(np.arange(10), make_docs(10, seed=0))
    data = os.path.join(uri, "docs.lance", "data")
    orphan = os.path.join(data, "0000inflight.lance")
    with open(orphan, "wb") as f:
        f.write(b"\0" * 64)
    idx.optimize(cleanup=True, older_than=timedelta(0))
    assert os.path.exists(orphan)  # young: kept
    old = time.time() - ORPHAN_GRACE.total_seconds() - 60
    for name in os.listdir(data):
        os.utime(os.path.join(data, name), (old, old))
    idx.optimize(cleanup=True, older_than=timedelta(0))
    assert not os.path.exists(orphan)  # a crashed write's leftover: removed
    assert len(ms.open(uri)) == 10
