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
    _check_ids(ids, oracle, where)
    if not oracle:
        return
    decoded = _check_codes(snap, ids, oracle, where)
    parts = idx._view.ds.to_table(columns=["id", "part"])
    if dict(zip(parts["id"].to_pylist(), parts["part"].to_pylist())) != {
        d: p for d, (_, p) in oracle.items()
    }:
        raise Mismatch("silent_wrong", f"{where}: metadata differs from the last write of each id")
    for _ in range(2):
        _check_search(idx, snap.codec, ids, decoded, oracle, rng, where)


def _check_ids(ids: list[int], oracle: dict[int, tuple[np.ndarray, int]], where: str) -> None:
    if len(ids) != len(set(ids)):
        raise Mismatch("silent_wrong", f"{where}: {len(ids) - len(set(ids))} ids stored twice")
    if set(ids) != set(oracle):
        lost, extra = set(oracle) - set(ids), set(ids) - set(oracle)
        raise Mismatch(
            "data_loss" if lost else "silent_wrong",
            f"{where}: ids lost {sorted(lost)[:5]}, ids that should not be there {sorted(extra)[:5]}",
        )


def _check_codes(
    snap: Any, ids: list[int], oracle: dict[int, tuple[np.ndarray, int]], where: str
) -> list[np.ndarray]:
    """Each document's stored codes must be the codec's encoding of its last written vectors -> decoded."""
    decoded = []
    for i, d in enumerate(ids):
        codes = snap.codes[snap.offsets[i] : snap.offsets[i + 1]]
        if not np.array_equal(codes, snap.codec.encode(oracle[d][0])):
            raise Mismatch(
                "silent_wrong", f"{where}: id {d} stores other vectors than the last write gave it"
            )
        decoded.append(snap.codec.decode(codes))
    return decoded


def _check_search(
    idx: Any,
    codec: Any,
    ids: list[int],
    decoded: list[np.ndarray],
    oracle: dict[int, tuple[np.ndarray, int]],
    rng: np.random.Generator,
    where: str,
) -> None:
    """Exhaustive search of a noisy half of a stored document, unfiltered and filtered on a random part, must
    return brute-force MaxSim's top 5 over the decoded stored vectors."""
    row = {d: i for i, d in enumerate(ids)}
    src = oracle[ids[int(rng.integers(len(ids)))]][0]
    q = src[: max(1, len(src) // 2)] + 0.2 * rng.normal(size=(max(1, len(src) // 2), DIM)).astype(np.float32)
    tq = codec.transform_query(q)
    brute = np.array([float((tq @ x.T).max(axis=1).sum()) for x in decoded])
    part = int(rng.integers(3))
    for flt, mask in (
        (None, np.ones(len(ids), bool)),
        (f"part = {part}", np.array([oracle[d][1] == part for d in ids])),
    ):
        n = int(mask.sum())
        k = min(5, len(ids))
        t = idx.search(q, k=k, where=flt, params={"candidates": "exhaustive", "n_rerank": max(len(ids), 1)})
        got = t["id"].to_pylist()
        scores = t["score"].to_numpy()
        if len(got) != min(k, n):
            raise Mismatch(
                "silent_wrong", f"{where}: where={flt} returned {len(got)} of {min(k, n)} documents"
            )
        if any(not mask[row[g]] for g in got):
            raise Mismatch("silent_wrong", f"{where}: where={flt} returned a document it excludes")
        want = np.sort(brute[mask])[::-1][: len(got)]
        if not np.allclose(scores, want, atol=1e-3) or not np.allclose(
            brute[[row[g] for g in got]], scores, atol=1e-3
        ):
            raise Mismatch(
                "silent_wrong", f"{where}: where={flt} top-{k} scores {scores} ids {got}, brute force {want}"
            )


class _Run:
    """One random sequence's state: the index, the oracle of its latest version and of older ones."""

    def __init__(self, uri: Path, spec: str, seed: int):
        import mvstore.store as ms

        self.uri = uri
        self.rng = np.random.default_rng(seed)
        self.idx = ms.create(uri, spec=spec, dim=DIM, n_centroids=8)
        if spec.startswith(
            "pq"
        ):  # 256 centroids per sub-quantizer: more vectors than a first add of <= 14 docs
            self.idx.train(unit_docs(80, DIM, seed=seed + 10_000, lo=4, hi=12))
        self.oracle: dict[int, tuple[np.ndarray, int]] = {}
        self.history: dict[int, dict[int, tuple[np.ndarray, int]]] = {}
        self.next_id = 0
        self.where = ""

    def docs(self, n: int) -> list[np.ndarray]:
        return unit_docs(n, DIM, seed=int(self.rng.integers(2**31)), lo=2, hi=12)

    def add(self, where: str) -> None:
        from mvstore.exceptions import DuplicateIdError

        rng, oracle = self.rng, self.oracle
        n = int(rng.integers(1, 15))
        ids = list(range(self.next_id, self.next_id + n))
        clash = bool(oracle) and rng.random() < 0.2
        if clash:
            ids[-1] = int(rng.choice(list(oracle)))
        ds, parts = self.docs(n), rng.integers(0, 3, n).tolist()
        try:
            self.idx.add(ids, ds, metadata={"part": parts})
            if clash:
                raise Mismatch("silent_wrong", f"{where}: adding existing id {ids[-1]} succeeded")
            oracle.update({i: (d, p) for i, d, p in zip(ids, ds, parts)})
        except DuplicateIdError:
            if not clash:
                raise
        self.next_id += n

    def upsert(self, where: str) -> None:
        rng, oracle = self.rng, self.oracle
        old = rng.choice(list(oracle), size=min(len(oracle), int(rng.integers(1, 6))), replace=False).tolist()
        ids = old + list(range(self.next_id, self.next_id + int(rng.integers(0, 4))))
        self.next_id += len(ids) - len(old)
        ds, parts = self.docs(len(ids)), rng.integers(0, 3, len(ids)).tolist()
        self.idx.upsert(ids, ds, metadata={"part": parts})
        oracle.update({i: (d, p) for i, d, p in zip(ids, ds, parts)})

    def delete(self, where: str) -> None:
        from mvstore.exceptions import UnknownIdError

        rng, oracle = self.rng, self.oracle
        ids = rng.choice(list(oracle), size=min(len(oracle), int(rng.integers(1, 5))), replace=False).tolist()
        if rng.random() < 0.2:
            try:
                self.idx.delete(ids + [10**9])
                raise Mismatch("silent_wrong", f"{where}: deleting unknown id 10**9 succeeded")
            except UnknownIdError:
                pass  # nothing deleted
        else:
            self.idx.delete(ids)
            for i in ids:
                oracle.pop(i)

    def optimize(self, where: str) -> None:
        self.idx.optimize(
            compact=True, cleanup=bool(self.rng.random() < 0.5), older_than=timedelta(0), retrain=False
        )
        kept = {x["version"] for x in self.idx.versions()}
        self.history = {v: h for v, h in self.history.items() if v in kept}

    def reopen(self, where: str) -> None:
        import mvstore.store as ms

        self.idx = ms.open(self.uri)

    def travel(self, where: str) -> None:
        import mvstore.store as ms

        if self.history:
            v = int(self.rng.choice(list(self.history)))
            _check(ms.open(self.uri, version=v), self.history[v], self.rng, where + f" version {v}")

    def step(self, step: int) -> str:
        """One random operation, then the check of the version it leaves -> the operation's name."""
        ops = ["add", "add", "upsert", "delete", "optimize", "reopen", "travel"]
        op = "add" if not self.oracle else str(self.rng.choice(ops))
        where = self.where = f"step {step} ({op})"
        getattr(self, op)(where)
        self.history[self.idx.version] = dict(self.oracle)
        _check(self.idx, self.oracle, self.rng, where)
        return op


def _sequence(uri: Path, spec: str, steps: int, seed: int) -> dict[str, str]:
    case = f"{spec}#seed{seed}"
    state = _Run(uri, spec, seed)
    done: list[str] = []
    for step in range(steps):
        try:
            done.append(state.step(step))
        except Mismatch as e:
            return result(GROUP, case, e.outcome, f"after {done[-8:]}: {e}")
        except Exception as e:
            kind = "raw_error" if not is_mvstore_error(e) else "data_loss"
            return result(GROUP, case, kind, f"{state.where} after {done[-8:]}: {type(e).__name__}: {e}")
    counts = {o: done.count(o) for o in sorted(set(done))}
    return result(GROUP, case, "ok", f"{steps} steps {counts}, {len(state.oracle)} docs at the end")


def run(workdir: Path, *, quick: bool, seed: int = 0) -> list[dict[str, str]]:
    specs = ("fp32", "sq8") if quick else ("fp32", "fp16", "sq8", "sq4", "bin", "pq4")
    seeds = [seed] if quick else [seed + s for s in range(6)]
    steps = 25 if quick else 120
    return [_sequence(workdir / f"{spec}-{s}", spec, steps, s) for spec in specs for s in seeds]
