"""Reliability group "corruption": damage one file (or one directory) of a built index and check that mvstore
reports IndexCorruptedError (on open, on search or from ``verify()``) and never a different search result.

Each case copies a small index (several adds, a delete, an upsert: several data files, a deletion file,
several manifests), damages one file, then opens it, searches (top-10 ids, scores and a metadata column,
with and without a ``where=`` filter on that column), and runs ``Index.verify()``. Outcomes: "ok" when an
IndexCorruptedError came before any differing result; "silent_wrong" when a search result differed without
an error, or when nothing (not even verify) noticed the damage; "unopenable" when open raised something
other than an mvstore error; "raw_error" when a later step did. Damage: 64 bytes flipped (XOR 0xFF) at one
offset (quick) or several (full), truncation to half the size, deletion. Lance's
``latest_version_hint.json`` is only a hint: its cases pass when nothing changes and a later write works.
"""

from __future__ import annotations

import pathlib
import shutil
from collections.abc import Callable
from typing import Any

import numpy as np

GROUP = "corruption"
DIM = 32


def _build(root: pathlib.Path, seed: int) -> list[np.ndarray]:
    import mvstore.store as ms

    rng = np.random.default_rng(seed)
    docs = [rng.normal(size=(int(n), DIM)).astype(np.float32) for n in rng.integers(4, 24, 260)]
    idx = ms.create(root, spec="pca16,sq8", dim=DIM, n_centroids=16)
    meta = [{"lang": ("en", "fr", "de")[i % 3]} for i in range(len(docs))]
    idx.add(np.arange(200), docs[:200], metadata=meta[:200])  # v1: the codec is trained here
    idx.add(np.arange(200, 240), docs[200:240], metadata=meta[200:240])  # v2
    idx.delete(np.arange(0, 30, 3))  # v3: a deletion file
    idx.upsert(np.arange(240, 260), docs[240:260], metadata=meta[240:260])  # v4
    return [d[:6] + 0.05 * rng.normal(size=(min(6, len(d)), DIM)).astype(np.float32) for d in docs[::37]]


def _results(idx: Any, queries: list[np.ndarray]) -> list[Any]:
    """Top-10 (query, id, score, lang) rows, unfiltered and with a metadata filter."""
    out = []
    for where in (None, "lang = 'en'"):
        t = idx.search(queries, k=10, columns=["lang"], where=where)
        out += zip(
            t["query"].to_pylist(),
            t["id"].to_pylist(),
            np.round(np.asarray(t["score"]), 5).tolist(),
            t["lang"].to_pylist(),
        )
    return out


def _targets(root: pathlib.Path) -> list[tuple[str, pathlib.Path]]:
    """(kind, path) of every file kind in the index, the newest of each where there are several."""

    def newest(d: pathlib.Path, pattern: str) -> list[pathlib.Path]:
        return sorted(d.glob(pattern), key=lambda p: p.stat().st_mtime_ns)

    out: list[tuple[str, pathlib.Path]] = []
    for table in ("docs", "codec"):
        t = root / f"{table}.lance"
        data = newest(t, "data/*.lance")
        out += [(f"{table}_data{i}", p) for i, p in enumerate(data)]
        mans = sorted(t.glob("_versions/*.manifest"))  # v2 names sort newest first
        out.append((f"{table}_manifest_latest", mans[0]))
        if len(mans) > 1:
            out.append((f"{table}_manifest_oldest", mans[-1]))
        out += [(f"{table}_deletions{i}", p) for i, p in enumerate(newest(t, "_deletions/*"))]
        txn = newest(t, "_transactions/*.txn")
        if txn:
            out.append((f"{table}_txn_latest", txn[-1]))
        hint = t / "_versions" / "latest_version_hint.json"
        if hint.exists():
            out.append((f"{table}_version_hint", hint))
    out.append(("mvstore_json", root / "mvstore.json"))
    integ = root / "integrity"
    out.append(("integrity_head", integ / "HEAD.json"))
    recs = sorted(integ.glob("docs-*.json"))
    out += [("integrity_docs_record_latest", recs[-1]), ("integrity_docs_record_oldest", recs[0])]
    out.append(("integrity_codec_record", sorted(integ.glob("codec-*.json"))[-1]))
    return out


def _flip(offset_frac: float) -> Callable[[pathlib.Path], None]:
    def apply(p: pathlib.Path) -> None:
        b = bytearray(p.read_bytes())
        n = min(64, len(b))
        at = min(int(len(b) * offset_frac), len(b) - n)
        b[at : at + n] = bytes(x ^ 0xFF for x in b[at : at + n])
        p.write_bytes(bytes(b))

    return apply


def _truncate(p: pathlib.Path) -> None:
    with open(p, "r+b") as f:
        f.truncate(p.stat().st_size // 2)


def _delete(p: pathlib.Path) -> None:
    if p.is_dir():
        shutil.rmtree(p)
    else:
        p.unlink()


def _probe(root: pathlib.Path, queries: list[np.ndarray], baseline: list[Any]) -> tuple[str, str]:
    """(outcome, detail) of opening, searching and verifying a damaged index."""
    import mvstore.store as ms
    from mvstore.exceptions import IndexCorruptedError, MvstoreError

    try:
        idx = ms.open(root)
    except IndexCorruptedError as e:
        return "ok", f"open: {str(e)[:160]}"
    except BaseException as e:  # any other error (even a Rust panic) is the finding
        if isinstance(e, (KeyboardInterrupt, SystemExit)):
            raise
        kind = "raw_error" if isinstance(e, MvstoreError) else "unopenable"
        return kind, f"open: {type(e).__name__}: {e}"[:300]
    for step in ("search", "verify"):
        try:
            if step == "search":
                got = _results(idx, queries)
                if got != baseline:
                    n = sum(a != b for a, b in zip(got, baseline)) + abs(len(got) - len(baseline))
                    return "silent_wrong", f"search returned {n} differing result rows without an error"
            else:
                idx.verify()
        except IndexCorruptedError as e:
            return "ok", f"{step}: {str(e)[:160]}"
        except BaseException as e:  # any other error (even a Rust panic) is the finding
            if isinstance(e, (KeyboardInterrupt, SystemExit)):
                raise
            return "raw_error", f"{step}: {type(e).__name__}: {e}"[:300]
    return "silent_wrong", "undetected: search unchanged and verify() passed"


def _probe_hint(root: pathlib.Path, queries: list[np.ndarray], baseline: list[Any]) -> tuple[str, str]:
    """Lance's ``latest_version_hint.json`` is a hint, not index state (no version refers to it; the next
    commit rewrites it): damage must change nothing, and the index must stay writable and consistent."""
    import mvstore.store as ms

    outcome, detail = _probe(root, queries, baseline)
    if outcome != "silent_wrong" or not detail.startswith("undetected"):
        return outcome, detail
    try:
        idx = ms.open(root)
        v = idx.add([10**6], [queries[0]])
        idx = ms.open(root)
        ok = idx.version == v and 10**6 in idx.search(queries[0], k=1)["id"].to_pylist()
        idx.verify()
    except Exception as e:  # noqa: BLE001 - any error is the finding
        return "raw_error", f"write after hint damage: {type(e).__name__}: {e}"[:300]
    return (
        ("ok", "hint ignored: results unchanged, verify passed, later write consistent")
        if ok
        else ("silent_wrong", "write after hint damage is not visible on reopen")
    )


def run(workdir: pathlib.Path, *, quick: bool, seed: int = 0) -> list[dict]:
    workdir = pathlib.Path(workdir)
    base = workdir / "corruption_base"
    if base.exists():
        shutil.rmtree(base)
    queries = _build(base, seed)
    import mvstore.store as ms

    baseline = _results(ms.open(base), queries)
    rng = np.random.default_rng(seed)
    flips = [0.5] if quick else [0.0, 0.25, 0.5, 0.75, 0.999, *rng.random(3).tolist()]
    damages: list[tuple[str, Callable[[pathlib.Path], None]]] = [(f"flip64@{f:.2f}", _flip(f)) for f in flips]
    damages += [("truncate_half", _truncate), ("delete", _delete)]
    cases: list[tuple[str, pathlib.Path, Callable[[pathlib.Path], None]]] = []
    for kind, path in _targets(base):
        for name, fn in damages:
            cases.append((f"{kind}:{name}", path, fn))
        if "version_hint" in kind:  # a stale hint (an older version number)
            cases.append((f"{kind}:stale", path, lambda p: p.write_text('{"version":2}')))
    for d in ("docs.lance", "codec.lance", "integrity"):
        cases.append((f"{d}_dir:delete", base / d, _delete))
    out = []
    for i, (case, path, fn) in enumerate(cases):
        root = workdir / f"corruption_{i}"
        if root.exists():
            shutil.rmtree(root)
        shutil.copytree(base, root)
        fn(root / path.relative_to(base))
        probe = _probe_hint if "version_hint" in case else _probe
        outcome, detail = probe(root, queries, baseline)
        out.append({"group": GROUP, "case": case, "outcome": outcome, "detail": detail})
        shutil.rmtree(root)
    shutil.rmtree(base)
    return out
