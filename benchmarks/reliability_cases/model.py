"""Model-based random sequences: add (sometimes with an id that exists), upsert, delete (sometimes of an
unknown id), optimize (compaction, cleanup), reopen and time travel, checked after every step against a dict
oracle: the stored ids, each document's codes (equal to the codec's encoding of the oracle's vectors), and
exhaustive search (with and without where=) against brute-force MaxSim on the decoded stored vectors."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np

from . import is_mvstore_error, result, unit_docs

GROUP = "model"
DIM = 16


class Mismatch(Exception):
    def __init__(self, outcome: str, detail: str):
        super().__init__(detail)
        self.outcome = outcome


def _check(idx: Any, oracle: dict[int, tuple[np.ndarray, int]], rng: np.random.Generator, where: str) -> None:
    """The version ``idx`` reads must be exactly ``oracle`` (id -> (vectors, part))."""
    snap = idx.snapshot() if oracle or idx.version else None
    ids = [] if snap is None else snap.ids.tolist()
    if len(ids) != len(set(ids)):
        raise Mismatch("silent_wrong", f"{where}: {len(ids) - len(set(ids))} ids stored twice")
    if set(ids) != set(oracle):
        lost, extra = set(oracle) - set(ids), set(ids) - set(oracle)
        raise Mismatch("data_loss" if lost else "silent_wrong",
                       f"{where}: ids lost {sorted(lost)[:5]}, ids that should not be there {sorted(extra)[:5]}")
    if not oracle:
        return
    codec = snap.codec
    row = {d: i for i, d in enumerate(ids)}
    decoded = []
    for d in ids:
        i = row[d]
        codes = snap.codes[snap.offsets[i] : snap.offsets[i + 1]]
        if not np.array_equal(codes, codec.encode(oracle[d][0])):
            raise Mismatch("silent_wrong", f"{where}: id {d} stores other vectors than the last write gave it")
        decoded.append(codec.decode(codes))
    parts = idx._view.ds.to_table(columns=["id", "part"])
    if dict(zip(parts["id"].to_pylist(), parts["part"].to_pylist())) != {d: p for d, (_, p) in oracle.items()}:
        raise Mismatch("silent_wrong", f"{where}: metadata differs from the last write of each id")
    for _ in range(2):
        src = oracle[ids[int(rng.integers(len(ids)))]][0]
        q = src[: max(1, len(src) // 2)] + 0.2 * rng.normal(size=(max(1, len(src) // 2), DIM)).astype(np.float32)
        tq = codec.transform_query(q)
        brute = np.array([float((tq @ x.T).max(axis=1).sum()) for x in decoded])
        part = int(rng.integers(3))
        for flt, mask in ((None, np.ones(len(ids), bool)), (f"part = {part}", np.array([oracle[d][1] == part for d in ids]))):
            n = int(mask.sum())
            k = min(5, len(ids))
            t = idx.search(q, k=k, where=flt, params={"candidates": "exhaustive", "n_rerank": max(len(ids), 1)})
            got = t["id"].to_pylist()
            scores = t["score"].to_numpy()
            if len(got) != min(k, n):
                raise Mismatch("silent_wrong", f"{where}: where={flt} returned {len(got)} of {min(k, n)} documents")
            if any(not mask[row[g]] for g in got):
                raise Mismatch("silent_wrong", f"{where}: where={flt} returned a document it excludes")
            want = np.sort(brute[mask])[::-1][: len(got)]
            if not np.allclose(scores, want, atol=1e-3) or not np.allclose(brute[[row[g] for g in got]], scores, atol=1e-3):
                raise Mismatch("silent_wrong", f"{where}: where={flt} top-{k} scores {scores} ids {got}, brute force {want}")


def _sequence(uri: Path, spec: str, steps: int, seed: int) -> dict[str, str]:
    import mvstore.store as ms
    from mvstore.exceptions import DuplicateIdError, UnknownIdError

    case = f"{spec}#seed{seed}"
    rng = np.random.default_rng(seed)
    idx = ms.create(uri, spec=spec, dim=DIM, n_centroids=8)
    if spec.startswith("pq"):  # 256 centroids per sub-quantizer: more vectors than a first add of <= 14 docs
        idx.train(unit_docs(80, DIM, seed=seed + 10_000, lo=4, hi=12))
    oracle: dict[int, tuple[np.ndarray, int]] = {}
    history: dict[int, dict[int, tuple[np.ndarray, int]]] = {}
    next_id, done = 0, []

    def docs(n: int) -> list[np.ndarray]:
        return unit_docs(n, DIM, seed=int(rng.integers(2**31)), lo=2, hi=12)

    for step in range(steps):
        op = "add" if not oracle else str(rng.choice(["add", "add", "upsert", "delete", "optimize", "reopen", "travel"]))
        where = f"step {step} ({op})"
        try:
            if op == "add":
                n = int(rng.integers(1, 15))
                ids = list(range(next_id, next_id + n))
                clash = bool(oracle) and rng.random() < 0.2
                if clash:
                    ids[-1] = int(rng.choice(list(oracle)))
                ds, parts = docs(n), rng.integers(0, 3, n).tolist()
                try:
                    idx.add(ids, ds, metadata={"part": parts})
                    if clash:
                        raise Mismatch("silent_wrong", f"{where}: adding existing id {ids[-1]} succeeded")
                    oracle.update({i: (d, p) for i, d, p in zip(ids, ds, parts)})
                except DuplicateIdError:
                    if not clash:
                        raise
                next_id += n
            elif op == "upsert":
                old = rng.choice(list(oracle), size=min(len(oracle), int(rng.integers(1, 6))), replace=False).tolist()
                ids = old + list(range(next_id, next_id + int(rng.integers(0, 4))))
                next_id += len(ids) - len(old)
                ds, parts = docs(len(ids)), rng.integers(0, 3, len(ids)).tolist()
                idx.upsert(ids, ds, metadata={"part": parts})
                oracle.update({i: (d, p) for i, d, p in zip(ids, ds, parts)})
            elif op == "delete":
                ids = rng.choice(list(oracle), size=min(len(oracle), int(rng.integers(1, 5))), replace=False).tolist()
                if rng.random() < 0.2:
                    try:
                        idx.delete(ids + [10**9])
                        raise Mismatch("silent_wrong", f"{where}: deleting unknown id 10**9 succeeded")
                    except UnknownIdError:
                        pass  # nothing deleted
                else:
                    idx.delete(ids)
                    for i in ids:
                        oracle.pop(i)
            elif op == "optimize":
                idx.optimize(compact=True, cleanup=bool(rng.random() < 0.5), older_than=timedelta(0), retrain=False)
                history = {v: h for v, h in history.items() if v in {x["version"] for x in idx.versions()}}
            elif op == "reopen":
                idx = ms.open(uri)
            elif op == "travel" and history:
                v = int(rng.choice(list(history)))
                _check(ms.open(uri, version=v), history[v], rng, where + f" version {v}")
            history[idx.version] = dict(oracle)
            _check(idx, oracle, rng, where)
            done.append(op)
        except Mismatch as e:
            return result(GROUP, case, e.outcome, f"after {done[-8:]}: {e}")
        except Exception as e:
            kind = "raw_error" if not is_mvstore_error(e) else "data_loss"
            return result(GROUP, case, kind, f"{where} after {done[-8:]}: {type(e).__name__}: {e}")
    counts = {o: done.count(o) for o in sorted(set(done))}
    return result(GROUP, case, "ok", f"{steps} steps {counts}, {len(oracle)} docs at the end")


def run(workdir: Path, *, quick: bool, seed: int = 0) -> list[dict[str, str]]:
    specs = ("fp32", "sq8") if quick else ("fp32", "fp16", "sq8", "sq4", "bin", "pq4")
    seeds = [seed] if quick else [seed + s for s in range(6)]
    steps = 25 if quick else 120
    return [_sequence(workdir / f"{spec}-{s}", spec, steps, s) for spec in specs for s in seeds]
