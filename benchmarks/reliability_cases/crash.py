"""kill -9 at a random point of every write: add, add_batches, upsert, delete, optimize (compact + cleanup),
retrain, the first add (which trains the codec) and ``mvstore build --overwrite``. After each kill the index
must open and hold exactly the old or the new version, and take a further write."""

from __future__ import annotations

import os
import shutil
import signal
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np

from . import fingerprint, is_mvstore_error, result, spawn, unit_docs

GROUP = "crash"
DIM = 16
#: writes whose committed codes come from a codec trained inside the write (faiss k-means need not be bitwise
#: reproducible from run to run): their versions are compared by ids and token counts only
TRAINS = {"first_add", "retrain", "build_overwrite"}
OPS = ("add", "add_batches", "upsert", "delete", "optimize", "retrain", "first_add", "build_overwrite")
#: kills at the instant a table's ``_versions/`` changes (Lance writing or renaming the new manifest): the
#: first add's codec state commit runs in quick mode, the others only in the full matrix
AT_COMMIT = {
    "first_add": "codec.lance",
    "add": "docs.lance",
    "upsert": "docs.lance",
    "delete": "docs.lance",
    "optimize": "docs.lance",
    "retrain": "codec.lance",
}

CHILD = """
import sys, time
from benchmarks.reliability_cases.crash import prepare
fn = prepare(sys.argv[1], sys.argv[2])
print("go", flush=True)
t = time.perf_counter()
fn()
print("done", time.perf_counter() - t, flush=True)
"""


def make_base(root: Path) -> tuple[Path, Path]:
    """The index every write starts from (3 fragments, a deletion, keep_source) and an empty one."""
    import mvstore.store as ms

    base = root / "base"
    idx = ms.create(base, spec="sq8", dim=DIM, n_centroids=8, keep_source=True)
    docs = unit_docs(120, DIM, seed=1)
    for a in range(0, 120, 40):
        idx.add(np.arange(a, a + 40), docs[a : a + 40], metadata={"part": [a // 40] * 40})
    idx.delete(np.arange(0, 120, 7))
    empty = root / "empty"
    ms.create(empty, spec="sq8", dim=DIM, n_centroids=8)
    docs = unit_docs(150, DIM, seed=2)
    lens = np.array([len(d) for d in docs])
    np.savez(
        root / "build.npz",
        vectors=np.concatenate(docs),
        offsets=np.concatenate([[0], np.cumsum(lens)]),
        ids=np.arange(5000, 5150),
    )
    return base, empty


def prepare(uri: str, op: str) -> Callable[[], Any]:
    """The write ``op`` on the index at ``uri``, ready to run (inputs made, index opened)."""
    import mvstore.store as ms

    if op == "build_overwrite":
        from mvstore import cli

        npz = str(Path(uri).parent.parent / "build.npz")
        return lambda: cli.main(["-q", "build", uri, "--input", npz, "--spec", "sq8", "--overwrite"])
    idx = ms.open(uri)
    docs = unit_docs(240, DIM, seed=3)
    if op == "add":
        return lambda: idx.add(np.arange(1000, 1150), docs[:150], metadata={"part": [9] * 150})
    if op == "first_add":
        return lambda: idx.add(np.arange(1000, 1150), docs[:150])
    if op == "add_batches":
        return lambda: idx.add_batches(
            (np.arange(1000 + 40 * b, 1040 + 40 * b), docs[40 * b : 40 * b + 40]) for b in range(6)
        )
    if op == "upsert":
        return lambda: idx.upsert(np.arange(50, 150), docs[:100])
    if op == "delete":
        return lambda: idx.delete(np.arange(1, 100, 2), missing="ignore")
    if op == "optimize":
        return lambda: idx.optimize(compact=True, cleanup=True, older_than=timedelta(0), retrain=False)
    if op == "retrain":
        return lambda: idx.optimize(compact=False, retrain=True)
    raise ValueError(f"unknown op {op!r}")


def _version(uri: Path, op: str) -> Any:
    """The version's content, as compared before/after a kill (see TRAINS)."""
    import mvstore.store as ms

    fp = fingerprint(ms.open(uri))
    return {k: v[0] for k, v in fp.items()} if op in TRAINS else fp


def _wait_for_commit(child: Any, vdir: Path, seconds: float) -> str:
    """Poll ``vdir`` until its entries change (a manifest appears), or the child exits; returns what happened."""

    def entries() -> set[str]:
        try:
            return set(os.listdir(vdir))
        except FileNotFoundError:
            return set()

    before, deadline = entries(), time.monotonic() + 30 + 10 * seconds
    while child.poll() is None and time.monotonic() < deadline:
        now = entries()
        if now != before:
            return f"killed as {sorted(now - before)[:1]} appeared in {vdir.parent.name}/_versions"
        time.sleep(0.0003)
    return "the commit was not seen before the write ended"


def _kill_once(
    src: Path,
    work: Path,
    op: str,
    seconds: float,
    old: Any,
    new: Any,
    rng: np.random.Generator,
    case: str,
    at_commit: str | None = None,
) -> dict[str, str]:
    import mvstore.store as ms

    uri = work / "ix"
    shutil.copytree(src, uri)
    child = spawn(CHILD, uri, op)
    try:
        line = child.stdout.readline().strip()
        if line != "go":
            child.kill()
            return result(
                GROUP, case, "raw_error", f"the writer did not start: {line!r} {child.stderr.read()[-800:]}"
            )
        if at_commit:
            how = _wait_for_commit(child, uri / at_commit / "_versions", seconds)
        else:
            delay = float(rng.uniform(0, 1.3 * seconds))
            time.sleep(delay)
            how = f"killed {delay:.3f} s into a {seconds:.3f} s write"
        child.send_signal(signal.SIGKILL)
        rc = child.wait(60)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait(60)
    when = f"{how} ({'it finished first' if rc == 0 else 'killed'})"
    try:
        got = _version(uri, op)
    except Exception as e:
        return result(GROUP, case, "unopenable", f"{when}: open/read raised {type(e).__name__}: {e}")
    if got != old and got != new:
        lost = set(old) - set(got) - set(new)
        kind = "data_loss" if lost or not got else "silent_wrong"
        return result(
            GROUP,
            case,
            kind,
            f"{when}: {len(got)} docs, neither the old ({len(old)}) nor the new "
            f"({len(new)}) version; ids lost: {sorted(map(str, lost))[:5]}",
        )
    try:  # the index keeps working: one more write and a cleanup of what the killed writer left
        idx = ms.open(uri)
        # enough vectors to train the codec when the killed write was the first add (sq8 needs 32)
        idx.add(list(range(777_777, 777_785)), unit_docs(8, DIM, seed=9, lo=8))
        idx.optimize(cleanup=True, older_than=timedelta(0), retrain=False)
        if len(ms.open(uri)) != len(got) + 8:
            return result(GROUP, case, "data_loss", f"{when}: the write after the crash did not land")
    except Exception as e:
        kind = "unopenable" if not is_mvstore_error(e) else "raw_error"
        return result(GROUP, case, kind, f"{when}: a write after the crash raised {type(e).__name__}: {e}")
    return result(GROUP, case, "ok", when + ("; old version" if got == old else "; new version"))


def _calibrate(src: Path, work: Path, op: str) -> tuple[float, Any]:
    """Run ``op`` to the end in a child process like the killed ones: its duration there and the new version."""
    uri = work / "ix"
    shutil.copytree(src, uri)
    out, err = spawn(CHILD, uri, op).communicate(timeout=600)
    done = [line for line in out.splitlines() if line.startswith("done ")]
    if not done:
        raise RuntimeError(f"the calibration run of {op} failed: {err[-1500:]}")
    return float(done[0].split()[1]), _version(uri, op)


def run(workdir: Path, *, quick: bool, seed: int = 0) -> list[dict[str, str]]:
    base, empty = make_base(workdir)
    rng = np.random.default_rng(seed)
    kills = 1 if quick else 12
    src = {op: empty if op == "first_add" else base for op in OPS}
    with ThreadPoolExecutor(max_workers=3) as ex:
        calib = dict(zip(OPS, ex.map(lambda op: _calibrate(src[op], workdir / f"calib-{op}", op), OPS)))
        jobs = []
        for op in OPS:
            seconds, new = calib[op]
            old = _version(src[op], op)
            for k in range(kills):
                jobs.append(
                    (
                        src[op],
                        workdir / f"{op}-{k}",
                        op,
                        seconds,
                        old,
                        new,
                        np.random.default_rng(rng.integers(2**32)),
                        f"{op}#{k}",
                    )
                )
            if op in AT_COMMIT and (not quick or op == "first_add"):
                for k in range(1 if quick else 3):
                    jobs.append(
                        (
                            src[op],
                            workdir / f"{op}-commit-{k}",
                            op,
                            seconds,
                            old,
                            new,
                            None,
                            f"{op}@{AT_COMMIT[op]}-commit#{k}",
                            AT_COMMIT[op],
                        )
                    )
        return list(ex.map(lambda j: _kill_once(*j), jobs))
