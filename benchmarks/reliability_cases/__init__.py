"""Groups of the reliability matrix (driven by ``benchmarks/reliability.py``). Each module ``<group>.py`` defines
``GROUP = "<group>"`` and ``run(workdir: pathlib.Path, *, quick: bool, seed: int = 0) -> list[dict]``, each dict
``{"group", "case", "outcome", "detail"}`` with outcome one of :data:`OUTCOMES`. Modules whose name starts with
``_`` are not groups. The helpers below are shared by the crash, concurrency and model groups."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np

from mvstore.testing import token_docs

#: "raw_error": a failure that surfaced as a non-mvstore exception or a message without a fix
OUTCOMES = ("ok", "data_loss", "unopenable", "silent_wrong", "raw_error")
REPO = Path(__file__).resolve().parents[2]


def result(group: str, case: str, outcome: str, detail: str = "") -> dict[str, str]:
    assert outcome in OUTCOMES, outcome
    return {"group": group, "case": case, "outcome": outcome, "detail": detail[:2000]}


def child_env() -> dict[str, str]:
    """Environment of a child Python process that imports this checkout's mvstore (one BLAS thread)."""
    path = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p)
    return dict(
        os.environ, PYTHONPATH=path, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false"
    )


def spawn(code: str, *args: Any, **kw: Any) -> subprocess.Popen:
    """Start ``python -c code args...`` with stdout piped (text)."""
    return subprocess.Popen(
        [sys.executable, "-c", code, *map(str, args)],
        env=child_env(),
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **kw,
    )


def unit_docs(n: int, dim: int, seed: int, lo: int = 4, hi: int = 16) -> list[np.ndarray]:
    """``n`` documents of clustered unit token vectors (distinct enough that a doc's own tokens find it)."""
    return token_docs(
        n, dim, seed=seed, lo=lo, hi=hi, n_centers=16, center_seed=12345, noise=0.5, unit_centers=False
    )


def fingerprint(idx: Any) -> dict[Any, tuple[int, bytes]]:
    """What one version holds: id -> (n_tokens, stored codes) for every document (reads the whole snapshot)."""
    if idx.version == 0:
        return {}
    snap = idx.snapshot()
    out = {}
    for i, doc_id in enumerate(snap.ids.tolist()):
        out[doc_id] = (int(snap.n_tokens[i]), snap.codes[snap.offsets[i] : snap.offsets[i + 1]].tobytes())
    if len(out) != snap.n_docs:
        out["__duplicate_ids__"] = (snap.n_docs - len(out), b"")
    return out


def is_mvstore_error(e: BaseException) -> bool:
    from mvstore.exceptions import MvstoreError

    return isinstance(e, MvstoreError)
