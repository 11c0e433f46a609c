"""Two processes on one index at once: adding the same or different new ids, upserting the same ids,
optimize(cleanup=True) while another process writes, and a reader that keeps reading (with where= and
columns=) while another process writes and cleans up. Nothing may be stored twice or lost, and every error a
process sees must be an mvstore error."""

from __future__ import annotations

import json
import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from . import result, spawn, unit_docs

GROUP = "concurrency"
DIM = 16

CHILD = """
import json, os, sys, time
from datetime import timedelta
import numpy as np
import mvstore.store as ms
from mvstore.exceptions import MvstoreError, VersionCleanedUpError
from benchmarks.reliability_cases import unit_docs
uri, go, plan = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
idx = ms.open(uri)
q = unit_docs(1, DIM, seed=99)[0]
print("ready", flush=True)
while not os.path.exists(go):
    time.sleep(0.002)
out = []
for step in plan:
    op = step["op"]
    try:
        if op in ("add", "upsert"):
            ids = np.arange(step["lo"], step["hi"])
            getattr(idx, op)(ids, unit_docs(len(ids), DIM, step["seed"]), metadata={"part": [step["seed"]] * len(ids)})
        elif op == "optimize":
            idx.optimize(compact=True, cleanup=True, older_than=timedelta(0), retrain=False)
        elif op == "read":
            refreshed = 0
            for _ in range(step["n"]):
                try:
                    t = idx.search(q, k=5, where="part >= 0", columns=["part"])
                    assert t.num_rows == 5 and None not in t["part"].to_pylist(), t
                except VersionCleanedUpError:
                    refreshed += 1
                    idx.refresh()
                time.sleep(0.01)
            out.append(["ok", True, f"refreshed {refreshed}x"])
            continue
        out.append(["ok", True, ""])
    except Exception as e:
        out.append([type(e).__name__, isinstance(e, MvstoreError), str(e)[:400]])
print(json.dumps(out), flush=True)
""".replace("DIM", str(DIM))


def make_base(uri: Path) -> None:
    import mvstore.store as ms

    idx = ms.create(uri, spec="sq8", dim=DIM, n_centroids=8)
    idx.add(np.arange(100), unit_docs(100, DIM, seed=1), metadata={"part": [0] * 100})


def _race(
    base: Path, work: Path, plans: list[list[dict[str, Any]]]
) -> tuple[Path, list[list[list[Any]]], str]:
    """Copy the base index, start one child per plan, release them together; (uri, each child's step results,
    stderr of failed children)."""
    uri = work / "ix"
    shutil.copytree(base, uri)
    go = work / "go"
    kids = [spawn(CHILD, uri, go, json.dumps(p)) for p in plans]
    for k in kids:
        k.stdout.readline()
    go.touch()
    outs, errs = [], ""
    for k in kids:
        out, err = k.communicate(timeout=300)
        lines = out.strip().splitlines()
        outs.append(json.loads(lines[-1]) if k.returncode == 0 and lines else [])
        if k.returncode != 0:
            errs += f"child exited {k.returncode}: {err[-1500:]}\n"
    return uri, outs, errs


def _check(
    case: str,
    uri: Path,
    outs: list[list[list[Any]]],
    errs: str,
    want_ids: set[int],
    allowed: dict[str, int] | None = None,
) -> dict[str, str]:
    """Every step ok (or an mvstore error listed in ``allowed`` with its exact count); the index holds
    ``want_ids`` each once and reads."""
    import mvstore.store as ms

    if errs:
        return result(GROUP, case, "raw_error", errs)
    steps = [s for o in outs for s in o]
    raw = [s for s in steps if s[0] != "ok" and not s[1]]
    if raw:
        return result(GROUP, case, "raw_error", f"non-mvstore errors: {raw[:3]}")
    try:
        ids = ms.open(uri).snapshot().ids.tolist()
    except Exception as e:
        return result(GROUP, case, "unopenable", f"{type(e).__name__}: {e}")
    if len(ids) != len(set(ids)):
        return result(GROUP, case, "silent_wrong", f"{len(ids) - len(set(ids))} ids stored twice")
    if set(ids) != want_ids:
        return result(
            GROUP,
            case,
            "data_loss",
            f"missing {sorted(want_ids - set(ids))[:5]}, unexpected {sorted(set(ids) - want_ids)[:5]}",
        )
    failed: dict[str, int] = {}
    for s in steps:
        if s[0] != "ok":
            failed[s[0]] = failed.get(s[0], 0) + 1
    if failed != (allowed or {}):
        return result(
            GROUP, case, "silent_wrong", f"steps failed {failed}, expected {allowed or {}}: {steps}"
        )
    notes = "; ".join(s[2] for s in steps if s[2] and s[0] == "ok")
    return result(GROUP, case, "ok", f"{len(ids)} docs{'; ' + notes if notes else ''}")


def _upsert_winner(uri: Path, lo: int, hi: int, seeds: tuple[int, int]) -> str | None:
    """Each upserted id must hold one writer's document whole (its metadata and token count)."""
    import mvstore.store as ms
    from mvstore.store._layout import N_TOKENS

    idx = ms.open(uri)
    t = idx._view.ds.to_table(columns=["id", "part", N_TOKENS], filter=f"id >= {lo} AND id < {hi}")
    lens = {s: [len(d) for d in unit_docs(hi - lo, DIM, s)] for s in seeds}
    for i, part, n in zip(t["id"].to_pylist(), t["part"].to_pylist(), t[N_TOKENS].to_pylist()):
        if part not in lens or lens[part][i - lo] != n:
            return f"id {i} holds part={part}, {n} tokens: neither writer's document"
    return None


def _round(base: Path, w: Path, r: int, s: int) -> list[Any]:
    """The five races of one round, each a thunk returning its result row."""
    base_ids = set(range(100))

    def add_same() -> dict[str, str]:  # the same new ids from two processes: one wins, the other is told
        uri, outs, errs = _race(
            base,
            w / "add_same",
            [
                [{"op": "add", "lo": 1000, "hi": 1060, "seed": s}],
                [{"op": "add", "lo": 1000, "hi": 1060, "seed": s + 1}],
            ],
        )
        return _check(
            f"add_same_ids#{r}", uri, outs, errs, base_ids | set(range(1000, 1060)), {"DuplicateIdError": 1}
        )

    def add_different() -> dict[str, str]:
        plans = [
            [{"op": "add", "lo": a + 200 * j, "hi": a + 200 * j + 60, "seed": s + j} for j in (0, 1)]
            for a in (1000, 1100)
        ]
        uri, outs, errs = _race(base, w / "add_diff", plans)
        return _check(
            f"add_different_ids#{r}",
            uri,
            outs,
            errs,
            base_ids | {i for a in (1000, 1100, 1200, 1300) for i in range(a, a + 60)},
        )

    def upsert_same() -> dict[str, str]:
        uri, outs, errs = _race(
            base,
            w / "upsert_same",
            [
                [{"op": "upsert", "lo": 50, "hi": 150, "seed": s}],
                [{"op": "upsert", "lo": 50, "hi": 150, "seed": s + 1}],
            ],
        )
        row = _check(f"upsert_same_ids#{r}", uri, outs, errs, set(range(150)))
        bad = _upsert_winner(uri, 50, 150, (s, s + 1)) if row["outcome"] == "ok" else None
        return result(GROUP, row["case"], "silent_wrong", bad) if bad else row

    def optimize() -> dict[str, str]:  # optimize(cleanup=True) while another process writes
        uri, outs, errs = _race(
            base,
            w / "optimize",
            [
                [{"op": "add", "lo": 2000 + 20 * j, "hi": 2020 + 20 * j, "seed": s + j} for j in range(4)],
                [{"op": "optimize"} for _ in range(3)],
            ],
        )
        return _check(
            f"optimize_cleanup_during_writes#{r}", uri, outs, errs, base_ids | set(range(2000, 2080))
        )

    def reader() -> dict[str, str]:  # a reader keeps searching while another process writes and cleans up
        uri, outs, errs = _race(
            base,
            w / "reader",
            [
                [{"op": "read", "n": 40}],
                [
                    x
                    for j in range(3)
                    for x in (
                        {"op": "add", "lo": 3000 + 20 * j, "hi": 3020 + 20 * j, "seed": s + j},
                        {"op": "optimize"},
                    )
                ],
            ],
        )
        return _check(f"reader_during_cleanup#{r}", uri, outs, errs, base_ids | set(range(3000, 3060)))

    return [add_same, add_different, upsert_same, optimize, reader]


def run(workdir: Path, *, quick: bool, seed: int = 0) -> list[dict[str, str]]:
    base = workdir / "base"
    make_base(base)
    thunks = [
        t
        for r in range(1 if quick else 5)
        for t in _round(base, workdir / f"r{r}", r, seed * 100 + 10 * r + 2)
    ]
    with ThreadPoolExecutor(max_workers=5) as ex:  # the races are independent (each on its own copy)
        return list(ex.map(lambda t: t(), thunks))
