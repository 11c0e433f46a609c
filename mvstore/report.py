"""Quality/footprint reports: the Pareto front of benchmark rows, a PNG plot of it, plain-text tables.

Rows are dicts (one JSON object per line in the benchmarks' ``--json`` output), e.g.
``{"spec": "pool2,pca96,rq2", "bytes_per_token": 13.0, "ndcg10": 0.69}``. Smaller ``x`` (footprint) and
larger ``y`` (quality) are better; a row is on the Pareto front when no other row is at least as good on
both and strictly better on one.

>>> rows = [{"spec": "a", "bytes_per_token": 8, "ndcg10": 0.60},
...         {"spec": "b", "bytes_per_token": 16, "ndcg10": 0.58},   # dominated by a
...         {"spec": "c", "bytes_per_token": 32, "ndcg10": 0.70}]
>>> [rows[i]["spec"] for i in pareto_front(rows)]
['a', 'c']
>>> print(format_table(rows, ["spec", "ndcg10"]))
spec  ndcg10
a     0.6000
b     0.5800
c     0.7000
"""

from __future__ import annotations

import json
import math
import os
import warnings
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from .exceptions import ReportError, require

__all__ = ["ReportError", "load_rows", "pareto_front", "format_table", "plot_frontier"]


def load_rows(source: str | os.PathLike | Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Rows from a JSONL file (one object per line; blank lines skipped) or an iterable of dicts.

    A line that is not a JSON object raises :class:`ReportError` naming the file and line.
    """
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if not path.is_file():
            raise FileNotFoundError(
                f"no rows file {str(path)!r}; write one with e.g. `python benchmarks/frontier.py --json > {path}`"
            )
        try:
            text = path.read_bytes().decode("utf-8")
        except UnicodeDecodeError as e:
            raise ReportError(
                f"{path} is not UTF-8 text ({e}); pass the JSONL rows a benchmark's --json wrote"
            ) from None
        rows = []
        for n, line in enumerate(text.split("\n"), 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise ReportError(
                    f"{path}:{n} is not JSON ({e.msg}); the file must hold one JSON object per line "
                    "(run the benchmark with --json)"
                ) from None
            if not isinstance(row, dict):
                raise ReportError(f"{path}:{n} holds a {type(row).__name__}, expected a JSON object per line")
            rows.append(row)
        return rows
    rows = []
    for i, row in enumerate(source):
        if not isinstance(row, Mapping):
            raise ReportError(
                f"row {i} is a {type(row).__name__}; rows must be dicts like {{'spec': ..., ...}}"
            )
        rows.append(dict(row))
    return rows


def _number(v: Any) -> float | None:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return None
    v = float(v)
    return v if math.isfinite(v) else None


def pareto_front(
    rows: Sequence[Mapping[str, Any]], x: str = "bytes_per_token", y: str = "ndcg10"
) -> list[int]:
    """Indices of the rows on the Pareto front (minimize ``x``, maximize ``y``), sorted by ``x``.

    Rows without a finite number in ``x`` or ``y`` are never on the front. Of exact duplicates
    (same ``x`` and ``y``) only the first is kept.

    >>> pareto_front([{"b": 1, "q": 0.5}, {"b": 2, "q": 0.5}, {"b": 2, "q": 0.9}, {"b": 1, "q": 0.5}], "b", "q")
    [0, 2]
    """
    pts = [(i, _number(r.get(x)), _number(r.get(y))) for i, r in enumerate(rows)]
    pts = [(i, a, b) for i, a, b in pts if a is not None and b is not None]
    # by x ascending, then y descending, then original order: a point is on the front iff its y beats
    # every y seen before it
    pts.sort(key=lambda t: (t[1], -t[2], t[0]))
    front, best = [], -math.inf
    for i, _a, b in pts:
        if b > best:
            front.append(i)
            best = b
    return front


def _fmt(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, bool):
        return "yes" if v else ""
    if isinstance(v, float):
        if not math.isfinite(v) or v == 0:
            return str(v)
        a = abs(v)
        return f"{v:.1f}" if a >= 100 else f"{v:.2f}" if a >= 1 else f"{v:.4f}" if a >= 1e-3 else f"{v:.3g}"
    return str(v)


def format_table(rows: Sequence[Mapping[str, Any]], columns: Sequence[str] | None = None) -> str:
    """A plain-text, column-aligned table (numbers right-aligned); ``columns`` default to the first row's keys."""
    if columns is None:
        columns = list(rows[0]) if rows else []
    cells = [[_fmt(r.get(c)) for c in columns] for r in rows]
    numeric = [all(_number(r.get(c)) is not None or r.get(c) is None for r in rows) for c in columns]
    widths = [max([len(c)] + [len(row[j]) for row in cells]) for j, c in enumerate(columns)]

    def line(vals: Sequence[str]) -> str:
        parts = [v.rjust(w) if num else v.ljust(w) for v, w, num in zip(vals, widths, numeric)]
        return "  ".join(parts).rstrip()

    header = "  ".join(
        c.rjust(w) if num else c.ljust(w) for c, w, num in zip(columns, widths, numeric)
    ).rstrip()
    return "\n".join([header] + [line(r) for r in cells])


def plot_frontier(
    rows: str | os.PathLike | Iterable[Mapping[str, Any]],
    path: str | os.PathLike,
    x: str = "bytes_per_token",
    y: str = "ndcg10",
    *,
    label: str = "spec",
    title: str | None = None,
    reference: str | None = "exact-fp32",
) -> Path:
    """Write a PNG of the quality/footprint trade-off: every row as a grey dot, the Pareto front
    highlighted, connected and labelled (``label`` column), log-scaled ``x``. The row whose ``label`` is
    ``reference`` (the exact uncompressed baseline) is drawn as a dashed horizontal line.

    ``rows``: dicts or a JSONL path (a benchmark's ``--json`` output). Rows lacking a number in ``x`` or
    ``y`` (e.g. rows of another benchmark mixed in) are left out with a warning; none left raises
    :class:`ReportError`. Returns the written path. Needs matplotlib (``pip install "mvstore[plot]"``).
    """
    out = Path(path)
    if out.suffix.lower() != ".png":
        raise ReportError(f"plot path {str(out)!r} must end in .png, e.g. frontier.png")
    if not out.parent.exists():
        raise FileNotFoundError(f"directory {str(out.parent)!r} does not exist; create it first")
    rows = load_rows(rows)
    require("matplotlib", extra="plot")
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import NullFormatter

    usable = [r for r in rows if _number(r.get(x)) is not None and _number(r.get(y)) is not None]
    if not usable:
        keys = sorted({k for r in rows for k in r})
        raise ReportError(
            f"none of the {len(rows)} rows has numbers in both {x!r} and {y!r}; the rows have columns {keys}: "
            "pass x=/y= (CLI: --x/--y) naming two numeric columns"
        )
    if len(usable) < len(rows):
        warnings.warn(
            f"{len(rows) - len(usable)} of {len(rows)} rows lack {x!r} or {y!r} and are not plotted",
            stacklevel=2,
        )
    if any(float(r[x]) <= 0 for r in usable):
        raise ReportError(f"{x!r} must be positive for a log-scaled axis; got a row with {x} <= 0")
    ref_rows = [r for r in usable if reference is not None and r.get(label) == reference]
    pts = [r for r in usable if r not in ref_rows]
    front = [pts[i] for i in pareto_front(pts, x, y)]

    fig = Figure(figsize=(8, 5.5), dpi=130)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    ax.scatter(
        [float(r[x]) for r in pts],
        [float(r[y]) for r in pts],
        s=22,
        color="0.65",
        zorder=2,
        label=f"all configurations ({len(pts)})",
    )
    fx, fy = [float(r[x]) for r in front], [float(r[y]) for r in front]
    ax.step(fx, fy, where="post", color="tab:blue", lw=1.2, alpha=0.6, zorder=3)
    ax.scatter(
        fx,
        fy,
        s=46,
        color="tab:blue",
        edgecolor="black",
        lw=0.6,
        zorder=4,
        label=f"Pareto front ({len(front)})",
    )
    for r in front:
        ax.annotate(
            str(r.get(label, "")),
            (float(r[x]), float(r[y])),
            textcoords="offset points",
            xytext=(5, -10),
            fontsize=7.5,
            color="tab:blue",
        )
    for r in ref_rows:
        ax.axhline(
            float(r[y]),
            color="tab:red",
            ls="--",
            lw=1,
            zorder=1,
            label=f"{r.get(label)} ({float(r[y]):.3f} at {float(r[x]):g} {x})",
        )
    ax.set_xscale("log")
    xs = [float(r[x]) for r in usable]
    lo, hi = min(xs), max(xs)
    ticks = [2.0**e for e in range(math.floor(math.log2(lo)), math.ceil(math.log2(hi)) + 1)]
    ax.set_xticks(ticks, [f"{t:g}" for t in ticks])
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.margins(x=0.06, y=0.08)
    ax.set_xlabel(f"{x} (log scale)")
    ax.set_ylabel(y)
    ax.grid(True, which="both", alpha=0.3)
    ax.set_title(title or f"{y} vs {x}")
    ax.legend(loc="best", fontsize=8)
    fig.tight_layout()
    fig.savefig(out, format="png")
    return out
