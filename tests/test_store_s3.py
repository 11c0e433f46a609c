"""mvstore.store on an object store: a real S3 API (moto's server) started on 127.0.0.1 by these tests.

Skipped, with the reason, where the server cannot start (moto not installed).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest

import mvstore.store as ms
from mvstore.exceptions import DuplicateIdError, IndexBusyError, StorageUnreachableError
from mvstore.store import _fs

DIM = 32
ROOT = str(Path(__file__).resolve().parents[1])
BUCKET = "mvstore-test"


def unit(x):
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


def make_docs(n, seed):
    rng = np.random.default_rng(seed)
    centers = unit(np.random.default_rng(123).normal(size=(24, DIM)))
    return [
        unit(centers[rng.integers(0, 24, m)] + 0.35 * rng.normal(size=(m, DIM)))
        for m in rng.integers(10, 30, n)
    ]


def rows(t):
    return [t["query"].to_pylist(), t["id"].to_pylist(), np.round(t["score"].to_numpy(), 5).tolist()]


def _moto_command(port: int) -> list[str] | None:
    """moto's standalone S3 server: this interpreter's ``moto.server``, else a ``moto_server`` on PATH."""
    try:
        import moto.server  # noqa: F401

        return [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)]
    except ImportError:
        exe = shutil.which("moto_server")
        return None if exe is None else [exe, "-H", "127.0.0.1", "-p", str(port)]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    """(storage_options, base URI) of a bucket on a moto S3 server on 127.0.0.1, stopped after the module."""
    port = _free_port()
    cmd = _moto_command(port)
    if cmd is None:
        pytest.skip("no S3 server: install moto[server] (the dev extra) to run the object-store tests")
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    log = tmp_path_factory.mktemp("moto") / "server.log"  # it logs every request: never into a pipe
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env)
    deadline = time.monotonic() + 30
    while True:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5):
            break
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            err = log.read_text(errors="replace")[-500:]
            pytest.skip(f"the moto S3 server did not start ({' '.join(cmd)}): {err}")
        time.sleep(0.2)
    opts = {
        "aws_endpoint": f"http://127.0.0.1:{port}",
        "aws_access_key_id": "testing",
        "aws_secret_access_key": "testing",
        "aws_region": "us-east-1",
        "allow_http": "true",
    }
    import pyarrow.fs as pfs

    pfs.S3FileSystem(
        endpoint_override=f"127.0.0.1:{port}",
        scheme="http",
        access_key="testing",
        secret_key="testing",
        region="us-east-1",
        allow_bucket_creation=True,
    ).create_dir(BUCKET)
    try:
        yield opts, f"s3://{BUCKET}"
    finally:
        proc.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(10)
        if proc.poll() is None:
            proc.kill()


@pytest.fixture
def uri(s3):
    return f"{s3[1]}/ix-{uuid.uuid4().hex[:8]}"


def _child(code: str, *args: str, **kw) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": ROOT + os.pathsep + os.environ.get("PYTHONPATH", "")}
    return subprocess.Popen([sys.executable, "-c", code, *args], env=env, **kw)


def test_create_add_search_delete_time_travel_on_s3(s3, uri, tmp_path):
    opts, _ = s3
    docs = make_docs(60, 0)
    q = docs[:5]
    idx = ms.create(uri, spec="pca16,sq8", dim=DIM, storage_options=opts)
    assert idx.root == uri and not idx.loc.local
    v1 = idx.add(np.arange(40), docs[:40], metadata=[{"lang": "en" if i % 2 else "fr"} for i in range(40)])
    v2 = idx.add(np.arange(40, 60), docs[40:])
    at_v2 = rows(idx.search(q, k=5))
    # the same index built in a local directory gives the same results
    local = ms.create(tmp_path / "local", spec="pca16,sq8", dim=DIM)
    local.add(np.arange(40), docs[:40], metadata=[{"lang": "en" if i % 2 else "fr"} for i in range(40)])
    local.add(np.arange(40, 60), docs[40:])
    assert rows(local.search(q, k=5)) == at_v2
    assert (
        idx.search(q[0], k=3, where="lang = 'en'")["id"].to_pylist()
        == local.search(q[0], k=3, where="lang = 'en'")["id"].to_pylist()
    )
    v3 = idx.delete([0, 1, 2])
    assert (v1, v2, v3) == (1, 2, 3)
    assert not {0, 1, 2} & set(idx.search(q, k=10)["id"].to_pylist())
    # time travel, and a fresh open of the latest version
    assert rows(ms.open(uri, version=2, storage_options=opts).search(q, k=5)) == at_v2
    assert len(ms.open(uri, version=1, storage_options=opts)) == 40
    again = ms.open(uri, storage_options=opts)
    assert again.version == 3 and len(again) == 57
    assert again.verify()["ok"]
    # everything of the index is in the bucket: manifest, tables, integrity records, the lease table
    names = set(idx.loc.listdir())
    assert {"mvstore.json", "docs.lance", "codec.lance", "integrity", "lock.lance"} <= names
    assert {"HEAD.json", "docs-00000000000000000003.json"} <= set(idx.loc.listdir("integrity"))
    assert ms.create(uri, spec="pca16,sq8", dim=DIM, exist_ok=True, storage_options=opts).version == 3
    # compaction and cleanup on the object store: old versions (and the lease's) go, the latest reads the same
    latest = rows(again.search(q, k=5))
    rep = again.optimize(cleanup=True, older_than=timedelta(0))
    assert rep["cleanup"]["old_versions"] >= 3
    assert rows(again.search(q, k=5)) == latest and [v["version"] for v in again.versions()] == [
        again.version
    ]
    assert again.verify()["ok"]


def test_automatic_compaction_on_s3_runs_under_the_lease(s3, uri, monkeypatch):
    """create(auto_optimize=True) on an object store: small appended fragments are compacted after a write,
    through the index's Location (storage_options) and while the writer holds the lease; the incremental
    search state ranks like a fresh open."""
    from mvstore.store import _maintain

    opts, _ = s3
    docs = make_docs(40, 4)
    idx = ms.create(uri, spec="sq8", dim=DIM, n_centroids=16, compact_fragments=3, fragment_rows=100,
                    retention=timedelta(0), storage_options=opts)  # fmt: skip
    idx.add(np.arange(20), docs[:20])
    holders = []
    real = _maintain.auto_optimize

    def spy(ix):
        _, holder, expires = _fs.LeaseLock(ix.loc)._read()
        holders.append(bool(holder) and expires > time.time())
        return real(ix)

    monkeypatch.setattr(_maintain, "auto_optimize", spy)
    reports = []
    for i in range(20, 26):
        idx.add([i], docs[i : i + 1])
        reports.append(idx.last_maintenance)
        idx.search(docs[:3], k=5)
    assert holders == [True] * 6  # every write's maintenance ran while its lease was held
    done = [r for r in reports if r is not None]
    assert done and all(r["fragments_removed"] > r["fragments_added"] for r in done)
    assert len(idx.loc.dataset("docs.lance").get_fragments()) < 7
    assert [v["version"] for v in idx.versions()][0] > 1  # retention 0: older versions were removed
    fresh = ms.open(uri, storage_options=opts)
    assert rows(idx.search(docs[:5], k=5)) == rows(fresh.search(docs[:5], k=5))
    assert idx._view.load_kind == "incremental" and fresh.verify()["ok"]


def test_reader_of_a_version_cleaned_up_on_s3_is_told_to_refresh(s3, uri):
    """The check that a failed read's version was deleted lists the table's versions on the object store
    (with storage_options), so the reader gets VersionCleanedUpError, not the store's raw error."""
    from mvstore.exceptions import VersionCleanedUpError

    opts, _ = s3
    docs = make_docs(40, 3)
    w = ms.create(uri, spec="fp16", dim=DIM, n_centroids=16, storage_options=opts)
    w.add(np.arange(20), docs[:20], metadata=[{"lang": "en" if i % 2 else "fr"} for i in range(20)])
    w.add(np.arange(20, 40), docs[20:], metadata=[{"lang": "en" if i % 2 else "fr"} for i in range(20, 40)])
    cold = ms.open(uri, storage_options=opts)
    w.optimize(compact=True, cleanup=True, older_than=timedelta(0))
    with pytest.raises(VersionCleanedUpError, match=r"refresh\(\)"):
        cold.search(docs[0][:4], k=2)
    assert cold.refresh().search(docs[1][:4], k=1)["id"].to_pylist() == [1]


def test_opened_from_a_second_process(s3, uri):
    opts, _ = s3
    docs = make_docs(30, 1)
    idx = ms.create(uri, spec="sq8", dim=DIM, storage_options=opts)
    idx.add(np.arange(30), docs)
    code = (
        "import json, sys, numpy as np, mvstore.store as ms\n"
        "idx = ms.open(sys.argv[1], storage_options=json.loads(sys.argv[2]))\n"
        "q = [np.asarray(x, np.float32) for x in json.loads(sys.argv[3])]\n"
        "t = idx.search(q, k=5)\n"
        "idx.add([100], [q[0]])\n"
        "print(json.dumps([t['id'].to_pylist(), t['score'].to_pylist()]))\n"
    )
    qs = json.dumps([d.tolist() for d in docs[:3]])
    p = _child(code, uri, json.dumps(opts), qs, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out, err = p.communicate(timeout=240)
    assert p.returncode == 0, err.decode()[-2000:]
    ids, scores = json.loads(out)
    t = idx.search(docs[:3], k=5)
    assert ids == t["id"].to_pylist()
    np.testing.assert_allclose(scores, t["score"].to_numpy(), rtol=1e-6)
    assert idx.refresh().version == 2 and len(idx) == 31  # the child's write is visible here


_KILLED_WRITER = """
import sys, json, time, numpy as np
import mvstore.store as ms
from mvstore.store import _fs
_fs.LEASE_S = 3.0
idx = ms.open(sys.argv[1], storage_options=json.loads(sys.argv[2]))
rng = np.random.default_rng(5)
def batches():
    for b in range(100):
        yield np.arange(1000 + 10 * b, 1010 + 10 * b), [rng.normal(size=(12, 32)).astype(np.float32) for _ in range(10)]
        if b == 2:
            open(sys.argv[3], "w").close()  # data files are being written: the parent kills us now
            time.sleep(60)
idx.add_batches(batches())
"""


def test_kill_9_during_a_write_leaves_the_previous_version(s3, uri, tmp_path):
    opts, _ = s3
    docs = make_docs(30, 2)
    idx = ms.create(uri, spec="sq8", dim=DIM, storage_options=opts)
    idx.add(np.arange(30), docs)
    before = rows(idx.search(docs[:4], k=5))
    flag = tmp_path / "writing"
    p = _child(_KILLED_WRITER, uri, json.dumps(opts), str(flag), stderr=subprocess.PIPE)
    deadline = time.monotonic() + 180
    while not flag.exists():
        assert p.poll() is None, p.stderr.read().decode()[-2000:]
        assert time.monotonic() < deadline, "the writer never started writing"
        time.sleep(0.1)
    os.kill(p.pid, signal.SIGKILL)
    p.wait()
    again = ms.open(uri, storage_options=opts)
    assert again.version == 1 and len(again) == 30
    assert rows(again.search(docs[:4], k=5)) == before
    # the killed writer's lease expires (3 s here) and the next write takes the lock
    t = time.monotonic()
    assert again.add([500], docs[:1]) == 2
    assert time.monotonic() - t < 60
    assert again.verify()["ok"]


def test_concurrent_writers_on_s3_serialize_and_never_duplicate(s3, uri):
    opts, _ = s3
    docs = make_docs(40, 3)
    ms.create(uri, spec="fp16", dim=DIM, storage_options=opts).add(np.arange(10), docs[:10])
    results: dict[str, object] = {}

    def write(name, ids):
        try:
            results[name] = ms.open(uri, storage_options=opts).add(ids, [docs[i % 40] for i in ids])
        except Exception as e:  # recorded, asserted below
            results[name] = e

    # disjoint ids: both commit, one after the other, nothing lost
    ths = [threading.Thread(target=write, args=(n, ids)) for n, ids in (("a", [10, 11, 12]), ("b", [13, 14]))]
    [t.start() for t in ths]
    [t.join() for t in ths]
    assert sorted(results.values()) == [2, 3], results
    # the same ids from two writers: exactly one commits, the other fails loudly
    results.clear()
    ths = [threading.Thread(target=write, args=(n, [20, 21, 22])) for n in ("c", "d")]
    [t.start() for t in ths]
    [t.join() for t in ths]
    errors = [r for r in results.values() if isinstance(r, Exception)]
    assert len(errors) == 1 and isinstance(errors[0], DuplicateIdError), results
    idx = ms.open(uri, storage_options=opts)
    ids = idx.snapshot().ids.tolist()
    assert sorted(ids) == list(range(15)) + [20, 21, 22]


def test_a_writer_whose_lease_expired_fails_loudly(s3, uri, monkeypatch):
    opts, _ = s3
    monkeypatch.setattr(_fs, "LEASE_S", 1.0)
    loc = _fs.Location(uri, opts)
    first = _fs.LeaseLock(loc)
    first.__enter__()
    first._stop.set()  # this holder freezes: no more heartbeats
    first._thread.join()
    time.sleep(1.2)
    with _fs.LeaseLock(loc):  # the next writer takes the expired lease
        pass
    with pytest.raises(IndexBusyError, match="lease on the write lock .* expired while it wrote"):
        first.__exit__(None, None, None)


def test_an_unreachable_store_is_a_clear_error():
    port = _free_port()  # nothing listens there
    opts = {"aws_endpoint": f"http://127.0.0.1:{port}", "aws_access_key_id": "x", "aws_secret_access_key": "x",
            "aws_region": "us-east-1", "allow_http": "true"}  # fmt: skip
    with pytest.raises(
        StorageUnreachableError, match="cannot be reached .* check the bucket exists and storage_options"
    ):
        ms.open(f"s3://{BUCKET}/nothing", storage_options=opts)


def test_distributed_build_into_s3_equals_index_add(s3, uri, tmp_path):
    ray = pytest.importorskip(
        "ray", reason="ray is not installed: pip install 'mvstore[ray]' (the dev extra has it)"
    )
    pytest.importorskip("ray.data", reason="ray.data is not installed: pip install 'mvstore[ray]'")
    import pyarrow as pa

    import mvstore

    opts, _ = s3
    docs = make_docs(90, 7)
    src = pa.table(
        {
            "id": np.arange(90),
            "vectors": pa.array([d.tolist() for d in docs], pa.list_(pa.list_(pa.float32()))),
        }
    )
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        idx = mvstore.build(ray.data.from_arrow(src), uri, "pca16,sq8", train_docs=40, batch_size=20,
                            storage_options=opts, progress=False)  # fmt: skip
    finally:
        ray.shutdown()
    local = ms.create(tmp_path / "local", spec="pca16,sq8", dim=DIM)
    local.train(docs[:40])
    local.add(np.arange(90), docs)
    assert idx.version == 1 and rows(idx.search(docs[:5], k=10)) == rows(local.search(docs[:5], k=10))
    assert ms.open(uri, storage_options=opts).verify()["ok"]


def _upload(loc, local_dir: Path) -> None:
    """Copy a local index directory into the bucket prefix ``loc`` names (file by file, as a sync would)."""
    for p in sorted(local_dir.rglob("*")):
        if p.is_file():
            loc.write_atomic(p.relative_to(local_dir).as_posix(), p.read_bytes())


def test_upgrade_a_format2_index_on_s3(s3, uri):
    """mvstore.upgrade goes through Location and the lease lock: a format-2 index in a bucket upgrades in place
    and searches as the format-2 mvstore did (the CLI takes the same storage options)."""
    import mvstore
    from mvstore.exceptions import UpgradeRequiredError
    from tests.data.make_v2_index import QUERIES, fixture_vectors

    opts, _ = s3
    data = Path(ROOT) / "tests" / "data"
    loc = _fs.Location(uri, opts)
    _upload(loc, data / "v2_index")
    with pytest.raises(UpgradeRequiredError, match=f"mvstore upgrade {uri}"):
        ms.open(uri, storage_options=opts)
    expected = json.loads((data / "v2_expected.json").read_text())
    rep = mvstore.upgrade(uri, storage_options=opts)
    assert rep["format_version_before"] == 2 and rep["version"] == expected["version"] + 1 and rep["renamed"]
    idx = ms.open(uri, storage_options=opts)
    assert idx.verify()["ok"] and "lock.lance" in set(loc.listdir())  # the lease lock was taken
    _, queries = fixture_vectors()
    for (where, columns), want in zip(QUERIES, expected["searches"]):
        assert idx.search(queries, k=5, where=where, columns=columns).to_pylist() == want["result"]
    args = ["upgrade", uri, "--json", *(a for k, v in opts.items() for a in ("--storage-option", f"{k}={v}"))]
    p = subprocess.run([sys.executable, "-m", "mvstore.cli", *args], capture_output=True, text=True, cwd=ROOT,
                       env={**os.environ, "PYTHONPATH": ROOT})  # fmt: skip
    assert p.returncode == 0 and json.loads(p.stdout)["renamed"] == [], p.stderr


def test_full_text_index_files_are_recorded_on_s3(s3, uri):
    """The integrity record of a version with a full-text index lists its _indices/ files (listed through
    Location: on an object store there is no local directory to list) and verify hashes them."""
    opts, _ = s3
    docs = make_docs(20, 3)
    words = ["tide moon sea", "volcano magma", "photosynthesis light", "write lock lease"]
    idx = ms.create(uri, spec="fp16", dim=DIM, storage_options=opts)
    idx.add(np.arange(20), docs, metadata=[{"text": words[i % 4]} for i in range(20)])
    v = idx.create_fts_index("text")
    rec = json.loads(idx.loc.read(f"integrity/docs-{v:020d}.json"))
    assert any(f.startswith("_indices/") for f in rec["files"]), sorted(rec["files"])
    hits = idx.search(docs[1], k=3, text="magma", hybrid=True)
    assert hits["id"].to_pylist()[0] == 1
    assert ms.open(uri, storage_options=opts).verify()["ok"]


def test_cli_info_search_verify_on_s3(s3, uri, tmp_path):
    """`mvstore info / search / verify` read an index on an object store (--storage-option), as they read a
    local one: the file sizes come from the store's listing, the hits equal the SDK's."""
    opts, _ = s3
    docs = make_docs(30, 7)
    idx = ms.create(uri, spec="sq8", dim=DIM, storage_options=opts)
    idx.add(np.arange(30), docs, metadata=[{"lang": "en" if i % 2 else "fr"} for i in range(30)])
    np.savez(tmp_path / "q.npz", vectors=docs[4], offsets=np.array([0, len(docs[4])]))
    flags = [a for k, v in opts.items() for a in ("--storage-option", f"{k}={v}")]

    def cli(*args):
        p = subprocess.run([sys.executable, "-m", "mvstore.cli", *args, *flags], capture_output=True, text=True,
                           cwd=ROOT, env={**os.environ, "PYTHONPATH": ROOT})  # fmt: skip
        assert p.returncode == 0, p.stderr
        return p.stdout

    info = json.loads(cli("info", uri, "--json"))
    assert info["docs"] == 30 and info["columns"] == ["lang"]
    assert info["files"]["docs.lance"] > 0 and info["files"]["mvstore.json"] == idx.loc.size("mvstore.json")
    hits = [
        json.loads(line)
        for line in cli(
            "search",
            uri,
            "--query-file",
            str(tmp_path / "q.npz"),
            "-k",
            "3",
            "--where",
            "lang = 'fr'",
            "--json",
        ).splitlines()
    ]
    want = idx.search(docs[4], k=3, where="lang = 'fr'", columns=["lang"]).to_pylist()
    assert [h["id"] for h in hits] == [w["id"] for w in want] and hits[0]["id"] == 4
    assert json.loads(cli("verify", uri, "--json"))["ok"]
