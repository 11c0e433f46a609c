"""Reliability matrix: every group in ``benchmarks/reliability_cases/`` (kill -9 during writes, two-process
writers, a model-based random sequence, corrupted files, user mistakes, ...) run against a fresh working
directory; prints cases tried / ok / not ok per group and outcome, and exits non-zero on any case that is not
"ok" (data loss, an unopenable index, a silent wrong result, or a raw error).

    python benchmarks/reliability.py [--json] [--quick] [--groups crash model] [--seed 0] [--workdir DIR]
"""

from __future__ import annotations

import argparse
import importlib
import json
import pkgutil
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import reliability_cases  # noqa: E402
from benchmarks.reliability_cases import OUTCOMES, result  # noqa: E402


def groups() -> list[str]:
    """Every group module in benchmarks/reliability_cases (names starting with '_' are helpers)."""
    return sorted(
        m.name for m in pkgutil.iter_modules(reliability_cases.__path__) if not m.name.startswith("_")
    )


def run_group(name: str, workdir: Path, *, quick: bool, seed: int = 0) -> list[dict[str, str]]:
    """Run one group; a group that raises or returns malformed rows becomes a "raw_error" row (never ok)."""
    mod = importlib.import_module(f"benchmarks.reliability_cases.{name}")
    group = getattr(mod, "GROUP", name)
    workdir.mkdir(parents=True, exist_ok=True)
    try:
        rows = mod.run(workdir, quick=quick, seed=seed)
    except Exception:
        return [result(group, "<run raised>", "raw_error", traceback.format_exc())]
    bad = [
        r
        for r in rows
        if not isinstance(r, dict)
        or r.get("outcome") not in OUTCOMES
        or r.get("group") != group
        or not r.get("case")
    ]
    if bad or not rows:
        return rows + [
            result(group, "<malformed rows>", "raw_error", f"{len(bad)} malformed of {len(rows)}: {bad[:3]}")
        ]
    return rows


def summarize(rows: list[dict[str, str]]) -> dict[str, Any]:
    """Cases tried / ok / not ok, per group and in total, with the count of each outcome."""
    per: dict[str, dict[str, Any]] = {}
    for r in rows:
        g = per.setdefault(r["group"], {"tried": 0, "ok": 0, "not_ok": 0, "outcomes": {}})
        g["tried"] += 1
        g["ok" if r["outcome"] == "ok" else "not_ok"] += 1
        g["outcomes"][r["outcome"]] = g["outcomes"].get(r["outcome"], 0) + 1
    total = {k: sum(g[k] for g in per.values()) for k in ("tried", "ok", "not_ok")}
    return {"total": total, "groups": per, "not_ok": [r for r in rows if r["outcome"] != "ok"]}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--json", action="store_true", help="print the summary and every not-ok case as JSON")
    ap.add_argument("--quick", action="store_true", help="the small subset that runs in make test")
    ap.add_argument(
        "--groups", nargs="+", default=None, help=f"groups to run (default all: {' '.join(groups())})"
    )
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--workdir", default=None, help="where the groups build their indexes (default: a temp dir)"
    )
    args = ap.parse_args(argv)
    names = args.groups or groups()
    unknown = sorted(set(names) - set(groups()))
    if unknown:
        ap.error(f"unknown group(s) {unknown}; available: {groups()}")
    rows: list[dict[str, str]] = []
    seconds: dict[str, float] = {}
    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        for name in names:
            t = time.perf_counter()
            rows += run_group(name, Path(tmp) / name, quick=args.quick, seed=args.seed)
            seconds[name] = round(time.perf_counter() - t, 1)
    summary = summarize(rows)
    for name, g in summary["groups"].items():
        g["seconds"] = seconds.get(name)
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        for name, g in summary["groups"].items():
            outs = ", ".join(f"{k} {v}" for k, v in sorted(g["outcomes"].items()))
            print(
                f"{name:14s} tried {g['tried']:4d}  ok {g['ok']:4d}  not ok {g['not_ok']:3d}  ({outs}; {g['seconds']} s)"
            )
        t = summary["total"]
        print(f"{'total':14s} tried {t['tried']:4d}  ok {t['ok']:4d}  not ok {t['not_ok']:3d}")
        for r in summary["not_ok"]:
            print(f"NOT OK {r['group']}/{r['case']}: {r['outcome']}: {r['detail'][:500]}")
    return 1 if summary["total"]["not_ok"] else 0


if __name__ == "__main__":
    sys.exit(main())
