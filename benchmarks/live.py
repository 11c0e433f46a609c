"""A live index under a write soak: single-document adds, upserts and deletes interleaved with searches.

One index of synthetic clustered documents (64-d unit token vectors, 8-40 tokens each, a ``lang`` metadata
column) is built with the default spec (``mvstore.default_spec(64)``) and default options, streamed in
10,000-document batches (the codec and the stage-1 centroids are fitted on the first batch, so the centroid
count is the store's rule for that batch), with ``retention=`` ``--retention-s`` seconds (default 60, so that
one soak shows the disk bound; create's default is an hour). The built directory is copied once per mode, then each mode runs
the same shuffled sequence of writes, each followed by one search (the "first search after a write"):

* ``live``: this code: a version's search state derived from the previous one (after the writer's own write
  from what it wrote, without reading the version back), automatic compaction on;
* ``reread``: the same, but every derivation reads the changed fragments back from Lance (as the live index
  did before a writer handed its written rows to the next snapshot);
* ``baseline``: the behaviour before the live index, forced: every version loaded in full, no automatic
  compaction (the index only grows fragments). Its soak runs the first ``--baseline-ops`` of the same writes
  (a full load per write is slow at 100k).

Every search is checked against a dict oracle (id -> current version of the document): a search with a
just-written document's tokens must return it, one with a just-deleted document's tokens must not, and no
search may return an id the oracle does not hold. Reported per mode: quiet single-query p50 before the soak,
p50 of the first search after a write, write p50, quiet p50 (plain and ``where=``) at the end, then the same
after ``optimize()`` on a freshly opened index (compacted), fragments and disk bytes during and after the
soak, open + first search time of the built index, and the oracle violations (must be 0).

Memory modes (``--memory``): the built index opened in a fresh process with ``memory="full"`` and with
``memory="bounded"`` (``--cache-mb``), each running the same ``--quiet-queries`` single-query searches:
open + first search, search p50, peak RSS (``VmHWM`` of the child, the interpreter and libraries included;
``ru_maxrss`` would carry the parent's peak across fork + exec), and whether the bounded top-10 equals the
in-memory one for every query.

    python benchmarks/live.py [--json] [--quick] [--docs 100000] [--adds 2000 --upserts 500 --deletes 500]
                              [--modes live reread baseline] [--memory] [--built DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

DIM = 64
N_TOPICS = 1024
BATCH = 10_000
K = 10


class Docs:
    """Document ``i`` at version ``v`` is drawn from its own seed: any document can be regenerated alone."""

    def __init__(self, seed: int, dim: int = DIM):
        rng = np.random.default_rng(seed)
        t = rng.standard_normal((N_TOPICS, dim)).astype(np.float32)
        self.topics = t / np.linalg.norm(t, axis=1, keepdims=True)
        self.seed, self.dim = seed, dim

    def doc(self, i: int, v: int = 0) -> np.ndarray:
        rng = np.random.default_rng([self.seed, i, v])
        n = int(rng.integers(8, 41))
        x = self.topics[rng.integers(0, N_TOPICS, 4)][rng.integers(0, 4, n)]
        x = x + rng.standard_normal((n, self.dim)).astype(np.float32) * np.float32(0.8 / np.sqrt(self.dim))
        return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)

    def query(self, i: int, v: int, rng: np.random.Generator, n_tok: int = 16) -> np.ndarray:
        """Noisy tokens of document ``i`` at version ``v``."""
        d = self.doc(i, v)
        q = d[rng.integers(0, len(d), n_tok)] + rng.standard_normal((n_tok, self.dim)).astype(
            np.float32
        ) * np.float32(0.3 / np.sqrt(self.dim))
        return (q / np.linalg.norm(q, axis=1, keepdims=True)).astype(np.float32)

    @staticmethod
    def lang(i: int, v: int = 0) -> str:
        return "en" if (i + v) % 3 else "fr"


def build(uri: str, docs: Docs, n_docs: int, retention_s: float) -> float:
    from datetime import timedelta

    import mvstore.store as ms

    idx = ms.create(uri, dim=DIM, retention=timedelta(seconds=retention_s))
    t = time.perf_counter()

    def batches():
        for a in range(0, n_docs, BATCH):
            ids = np.arange(a, min(a + BATCH, n_docs))
            yield ids, [docs.doc(int(i)) for i in ids], {"lang": [docs.lang(int(i)) for i in ids]}

    idx.add_batches(batches())
    took = time.perf_counter() - t
    rng = np.random.default_rng(12345)
    for i in range(20):  # compile and load the search kernels before anything is timed
        idx.search(docs.query(i, 0, rng), k=K)
    return took


def dir_bytes(path: str) -> int:
    total = 0
    for root, _, files in os.walk(path):
        for f in files:
            try:
                total += os.path.getsize(os.path.join(root, f))
            except FileNotFoundError:
                pass
    return total


def fragments(uri: str) -> int:
    import lance

    return len(lance.dataset(os.path.join(uri, "docs.lance")).get_fragments())


def quiet_p50(
    idx: Any, docs: Docs, oracle: dict[int, int], n: int, seed: int, where: str | None = None
) -> float:
    rng = np.random.default_rng(seed)
    ids = list(oracle)
    qs = [docs.query(i, oracle[i], rng) for i in (ids[int(j)] for j in rng.integers(0, len(ids), n + 1))]
    idx.search(qs[0], k=K, where=where)  # warm: the snapshot and the searcher exist
    times = []
    for q in qs[1:]:
        t = time.perf_counter()
        idx.search(q, k=K, where=where)
        times.append(time.perf_counter() - t)
    return round(float(np.median(times)) * 1e3, 3)


def schedule(adds: int, upserts: int, deletes: int, seed: int) -> list[str]:
    ops = ["add"] * adds + ["upsert"] * upserts + ["delete"] * deletes
    return [ops[i] for i in np.random.default_rng(seed).permutation(len(ops))]


class _Oracle:
    """id -> the version of the document the index must hold, and the ids in a list for random picks."""

    def __init__(self, n_docs: int):
        self.v = {i: 0 for i in range(n_docs)}
        self.ids = list(self.v)
        self.pos = {i: i for i in self.ids}
        self.next_id = n_docs

    def pick(self, op: str, rng: np.random.Generator) -> tuple[int, int]:
        """The id a write touches and the document version it writes."""
        if op == "add":
            self.next_id += 1
            return self.next_id - 1, 0
        i = self.ids[int(rng.integers(len(self.ids)))]
        return i, self.v[i] + 1

    def apply(self, op: str, i: int, v: int) -> None:
        if op == "delete":
            del self.v[i]
            last = self.ids.pop()  # swap-remove
            if last != i:
                self.ids[self.pos[i]] = last
                self.pos[last] = self.pos[i]
            del self.pos[i]
            return
        if op == "add":
            self.pos[i] = len(self.ids)
            self.ids.append(i)
        self.v[i] = v


def _write(idx: Any, docs: Docs, op: str, i: int, v: int) -> float:
    """One write; its milliseconds."""
    t = time.perf_counter()
    if op == "add":
        idx.add([i], [docs.doc(i, v)], metadata=[{"lang": docs.lang(i, v)}])
    elif op == "upsert":
        idx.upsert([i], [docs.doc(i, v)], metadata=[{"lang": docs.lang(i, v)}])
    else:
        idx.delete([i])
    return (time.perf_counter() - t) * 1e3


def _run_ops(
    idx: Any, uri: str, docs: Docs, ops: list[str], oracle: _Oracle, rng: np.random.Generator
) -> dict:
    """The writes, each followed by one timed search checked against the oracle."""
    write_ms: dict[str, list[float]] = {"add": [], "upsert": [], "delete": []}
    first_ms, second_ms, frag_counts, disk = [], [], [], []
    violations = {"deleted_returned": 0, "unknown_returned": 0, "written_missing": 0}
    kinds: dict[str, int] = {}
    compactions = 0
    for step, op in enumerate(ops):
        i, v = oracle.pick(op, rng)
        write_ms[op].append(_write(idx, docs, op, i, v))
        compactions += idx.last_maintenance is not None
        q = docs.query(i, oracle.v[i] if op == "delete" else v, rng)
        oracle.apply(op, i, v)
        t = time.perf_counter()
        res = idx.search(q, k=K)["id"].to_pylist()
        first_ms.append((time.perf_counter() - t) * 1e3)
        # a second search of the same version: its quiet twin
        j = oracle.ids[int(rng.integers(len(oracle.ids)))]
        q2 = docs.query(j, oracle.v[j], rng)
        t = time.perf_counter()
        idx.search(q2, k=K)
        second_ms.append((time.perf_counter() - t) * 1e3)
        kinds[idx._view.load_kind] = kinds.get(idx._view.load_kind, 0) + 1
        violations["unknown_returned"] += sum(r not in oracle.v for r in res)
        if op == "delete":
            violations["deleted_returned"] += i in res
        else:
            violations["written_missing"] += i not in res
        if step % 25 == 0 or step == len(ops) - 1:
            frag_counts.append(fragments(uri))
            disk.append(dir_bytes(uri))
    add_first = [m for m, o in zip(first_ms, ops) if o == "add"]
    return dict(
        ops=len(ops),
        first_search_after_write_p50_ms=round(float(np.median(first_ms)), 3),
        first_search_after_write_p95_ms=round(float(np.percentile(first_ms, 95)), 3),
        first_search_after_write_max_ms=round(float(np.max(first_ms)), 3),
        second_search_after_write_p50_ms=round(float(np.median(second_ms)), 3),
        write_p50_ms={k: round(float(np.median(v)), 3) for k, v in write_ms.items() if v},
        add_to_searchable_p50_ms=round(float(np.median(np.array(write_ms["add"]) + np.array(add_first))), 3)
        if add_first
        else None,
        loads=kinds,
        auto_compactions=compactions,
        fragments_max=max(frag_counts),
        fragments_end=frag_counts[-1],
        disk_mb_max=round(max(disk) / 2**20, 1),
        disk_mb_end=round(disk[-1] / 2**20, 1),
        violations=violations,
    )


def soak(
    uri: str, docs: Docs, n_docs: int, ops: list[str], mode: str, n_quiet: int, seed: int
) -> dict[str, Any]:
    import mvstore.store as ms
    from mvstore.store import _view

    derive, written_rows, mask_written = _view.View._derive, _view.View._written_rows, _view._mask_written
    prepare = _view.View.prepare
    # baseline: the behaviour before the live index, every version loaded in full by the next search
    if mode == "baseline":
        _view.View._derive = lambda self, base, use_written=True: None
        _view.View.prepare = lambda self: None
    if mode == "reread":  # what a write committed is read back, not taken from the writer
        _view.View._written_rows = lambda self, st, w, added: None
        _view._mask_written = lambda *a: False
    try:
        t = time.perf_counter()
        idx = ms.open(uri)
        if mode == "baseline":
            idx.options["auto_optimize"] = (
                False  # and no automatic compaction (the option is fixed at create)
            )
        oracle = _Oracle(n_docs)
        rng = np.random.default_rng(seed)
        idx.search(docs.query(0, 0, rng), k=K)
        out: dict[str, Any] = {"mode": mode, "open_first_search_s": round(time.perf_counter() - t, 3)}
        out["quiet_p50_ms"] = quiet_p50(idx, docs, oracle.v, n_quiet, seed)
        out["quiet_where_p50_ms"] = quiet_p50(idx, docs, oracle.v, n_quiet, seed, where="lang = 'en'")
        out.update(_run_ops(idx, uri, docs, ops, oracle, rng))
        out["end_quiet_p50_ms"] = quiet_p50(idx, docs, oracle.v, n_quiet, seed + 1)
        out["end_quiet_where_p50_ms"] = quiet_p50(idx, docs, oracle.v, n_quiet, seed + 1, where="lang = 'en'")
        _view.View._derive, _view.View.prepare = derive, prepare
        idx.optimize(compact=True, cleanup=True, retrain=False)
        fresh = ms.open(uri)
        out["compacted_quiet_p50_ms"] = quiet_p50(fresh, docs, oracle.v, n_quiet, seed + 1)
        out["compacted_quiet_where_p50_ms"] = quiet_p50(
            fresh, docs, oracle.v, n_quiet, seed + 1, where="lang = 'en'"
        )
        out["compacted_fragments"] = fragments(uri)
        out["compacted_disk_mb"] = round(dir_bytes(uri) / 2**20, 1)
        out["after_write_vs_quiet"] = round(out["first_search_after_write_p50_ms"] / out["quiet_p50_ms"], 2)
        out["after_write_vs_second"] = round(
            out["first_search_after_write_p50_ms"] / out["second_search_after_write_p50_ms"], 2
        )
        out["end_vs_compacted"] = round(out["end_quiet_p50_ms"] / out["compacted_quiet_p50_ms"], 2)
        return out
    finally:
        _view.View._derive, _view.View._written_rows, _view._mask_written = (
            derive,
            written_rows,
            mask_written,
        )
        _view.View.prepare = prepare


def peak_rss_mb() -> float:
    """This process's peak resident set (Linux ``VmHWM``, reset by exec), in MiB."""
    with open("/proc/self/status") as f:
        kb = next(int(line.split()[1]) for line in f if line.startswith("VmHWM:"))
    return round(kb / 1024, 1)


def memory_child(uri: str, memory: str, n: int, seed: int, cache_mb: float) -> dict[str, Any]:
    """In a fresh process: open ``uri`` in ``memory`` mode, ``n`` single-query searches -> figures and top-10s."""
    import mvstore

    docs = Docs(seed)
    kw = {"memory": memory} if memory == "full" else {"memory": memory, "cache_bytes": int(cache_mb * 2**20)}
    rng = np.random.default_rng(seed + 7)
    t = time.perf_counter()
    idx = mvstore.open(uri, **kw)
    n_docs = len(idx)
    ids = idx.search(docs.query(0, 0, rng), k=K)["id"].to_pylist()
    first = time.perf_counter() - t
    qs = [docs.query(int(i), 0, rng) for i in rng.integers(0, n_docs, n)]
    times, tops = [], []
    for q in qs:
        t = time.perf_counter()
        tops.append(idx.search(q, k=K)["id"].to_pylist())
        times.append(time.perf_counter() - t)
    return {
        "memory": memory, "cache_mb": None if memory == "full" else cache_mb, "open_first_search_s": round(first, 3),
        "search_p50_ms": round(float(np.median(times)) * 1e3, 3), "search_p95_ms": round(float(np.percentile(times, 95)) * 1e3, 3),
        "peak_rss_mb": peak_rss_mb(), "cache": idx.memory,
        "tops": [ids, *tops],
    }  # fmt: skip


def memory_modes(uri: str, n: int, seed: int, cache_mb: float) -> list[dict[str, Any]]:
    """:func:`memory_child` for ``memory="full"`` and ``"bounded"``, each in its own process."""
    out = []
    for memory in ("full", "bounded"):
        cmd = [sys.executable, __file__, "--memory-child", uri, memory, str(n), str(seed), str(cache_mb)]
        p = subprocess.run(cmd, capture_output=True, text=True, check=True)
        out.append(json.loads(p.stdout.strip().splitlines()[-1]))
    same = out[0].pop("tops") == out[1].pop("tops")
    for r in out:
        r["same_top10_as_full"] = same
    return out


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--quick", action="store_true", help="2,000 docs, 100 adds, 25 upserts, 25 deletes")
    ap.add_argument("--docs", type=int, default=100_000)
    ap.add_argument("--adds", type=int, default=2000)
    ap.add_argument("--upserts", type=int, default=500)
    ap.add_argument("--deletes", type=int, default=500)
    ap.add_argument("--baseline-ops", type=int, default=100, help="writes in the baseline soak (same mix)")
    ap.add_argument(
        "--modes", nargs="*", default=["live", "reread", "baseline"], choices=["live", "reread", "baseline"]
    )
    ap.add_argument("--memory", action="store_true", help='also measure memory="full" vs memory="bounded"')
    ap.add_argument("--cache-mb", type=float, default=64.0, help='memory="bounded"\'s cache_bytes, in MiB')
    ap.add_argument("--quiet-queries", type=int, default=50)
    ap.add_argument(
        "--retention-s",
        type=float,
        default=60.0,
        help="create(retention=): versions older than this are removed after an automatic compaction "
        "(the default of create is 3600 s; a shorter one shows the disk bound within one soak)",
    )
    ap.add_argument(
        "--built",
        default=None,
        help="the built index: reused when the directory exists (the build is skipped), else built and kept there",
    )
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--workdir", default=None)
    return ap


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--memory-child"]:  # one memory mode, in the fresh process memory_modes started
        uri, memory, n, seed, cache_mb = argv[1:6]
        print(json.dumps(memory_child(uri, memory, int(n), int(seed), float(cache_mb))))
        return 0
    args = _parser().parse_args(argv)
    if args.quick:
        args.docs, args.adds, args.upserts, args.deletes, args.baseline_ops = 2000, 100, 25, 25, 150
        args.quiet_queries = 20
    import mvstore

    work = tempfile.mkdtemp(prefix="mvstore-live-", dir=args.workdir)
    try:
        docs = Docs(args.seed)
        built = args.built or os.path.join(work, "built")
        build_s = None if os.path.exists(built) else round(build(built, docs, args.docs, args.retention_s), 1)
        report: dict[str, Any] = {
            "docs": args.docs, "dim": DIM, "spec": mvstore.default_spec(DIM), "build_s": build_s,
            "retention_s": args.retention_s,
            "built_fragments": fragments(built), "built_disk_mb": round(dir_bytes(built) / 2**20, 1),
            "load_avg": [round(x, 2) for x in os.getloadavg()], "modes": [],
        }  # fmt: skip
        if args.memory:
            report["memory"] = memory_modes(built, args.quiet_queries, args.seed, args.cache_mb)
            if not args.json:
                print(json.dumps(report["memory"], indent=1), flush=True)
        ops = schedule(args.adds, args.upserts, args.deletes, args.seed)
        for mode in args.modes:
            uri = os.path.join(work, mode)
            shutil.copytree(built, uri)
            mode_ops = (
                ops[: args.baseline_ops] if mode == "baseline" else ops
            )  # the same writes, fewer of them
            res = soak(uri, docs, args.docs, mode_ops, mode, args.quiet_queries, args.seed)
            res["load_avg_end"] = [round(x, 2) for x in os.getloadavg()]
            report["modes"].append(res)
            if not args.json:
                print(json.dumps(res, indent=1), flush=True)
            shutil.rmtree(uri)
        report["load_avg_end"] = [round(x, 2) for x in os.getloadavg()]
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if args.json:
        print(json.dumps(report, indent=1))
    bad = sum(sum(m["violations"].values()) for m in report["modes"])
    bad += sum(not m["same_top10_as_full"] for m in report.get("memory", []))
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())
