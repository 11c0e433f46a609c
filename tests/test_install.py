"""The install footprint: ``pip install mvstore`` brings no torch, and the CPU paths run without it.

The no-torch runs happen in a fresh interpreter where ``sys.modules["torch"] = None``: there ``import torch``
raises ModuleNotFoundError and ``importlib.util.find_spec("torch")`` is None, exactly as when torch is not
installed (lance probes torch the same way).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# create / add / search / delete / optimize / open, then the CLI's build / search / info from vectors, then
# each torch feature asked for explicitly; prints one JSON report line
SCRIPT = textwrap.dedent(
    """
    import json, sys
    if sys.argv[2] == "hide":
        sys.modules["torch"] = None
    import numpy as np
    import mvstore
    from mvstore import Ragged, SearchParams
    from mvstore.cli import main as cli
    from mvstore.exceptions import MissingDependencyError

    work = sys.argv[1]
    rng = np.random.default_rng(0)
    docs = [rng.standard_normal((int(rng.integers(3, 12)), 32)).astype(np.float32) for _ in range(200)]
    cpu = SearchParams(device="cpu")
    idx = mvstore.create(work + "/ix", dim=32)
    idx.add(list(range(200)), docs)
    first = idx.search(docs[5], k=3, params=cpu).column("id").to_pylist()
    idx.delete([5])
    idx.optimize()
    again = mvstore.open(work + "/ix").search(docs[5], k=3, params=cpu).column("id").to_pylist()
    # device="auto" (the default) asks torch for a GPU when torch is installed: only run it without torch
    auto = idx.search(docs[6], k=1).column("id").to_pylist() if sys.argv[2] == "hide" else None

    flat = Ragged.from_list(docs)
    np.savez(work + "/docs.npz", vectors=flat.values, offsets=flat.offsets)
    q = Ragged.from_list(docs[7:8])
    np.savez(work + "/q.npz", vectors=q.values, offsets=q.offsets)
    rcs = [
        cli(["-q", "build", work + "/cli-ix", "--input", work + "/docs.npz"]),
        cli(["search", work + "/cli-ix", "--query-file", work + "/q.npz", "-k", "2", "--device", "cpu"]),
        cli(["info", work + "/cli-ix"]),
    ]

    errors = {}
    if sys.argv[2] == "hide":
        from mvstore.encoders import HFTokenEncoder
        from mvstore.pooling import pool
        from mvstore.search import maxsim_torch

        asks = {
            "cuda": lambda: idx.search(docs[1], k=1, params=SearchParams(device="cuda")),
            "backend": lambda: mvstore.search.Searcher(idx.snapshot(), cpu, backend="torch"),
            "kmeans": lambda: pool(flat, 2, method="kmeans"),
            "maxsim_torch": lambda: maxsim_torch(docs[0], flat),
            "ragged": lambda: flat.torch(),
            "encoder": lambda: HFTokenEncoder(None),
        }
        for name, ask in asks.items():
            try:
                ask()
                errors[name] = None
            except MissingDependencyError as e:
                errors[name] = str(e)
    loaded = sorted(m for m in sys.modules if m == "torch" or m.startswith("torch."))
    print(json.dumps({"first": first, "again": again, "auto": auto, "rcs": rcs, "errors": errors,
                      "torch_loaded": [m for m in loaded if sys.modules[m] is not None]}))
    """
)


def _run(tmp_path: Path, mode: str) -> dict:
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(tmp_path), mode],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_cpu_search_runs_without_torch_installed(tmp_path):
    out = _run(tmp_path, "hide")
    assert out["torch_loaded"] == []
    assert out["first"][0] == 5 and 5 not in out["again"] and out["auto"] == [6]
    assert out["rcs"] == [0, 0, 0]
    errors = out["errors"]
    assert '`pip install "mvstore[gpu]"`' in errors["cuda"] and "device='cuda'" in errors["cuda"]
    assert '`pip install "mvstore[encoders]"`' in errors["encoder"]
    for name, what in [
        ("backend", "backend='torch'"),
        ("kmeans", "method='kmeans'"),
        ("maxsim_torch", "maxsim_torch"),
        ("ragged", "Ragged.torch"),
    ]:
        assert errors[name] is not None, f"{name} ran without torch"
        assert what in errors[name] and "`pip install torch`" in errors[name], errors[name]
        assert "--index-url https://download.pytorch.org/whl/cpu" in errors[name]


def test_cpu_paths_never_import_torch_when_it_is_installed(tmp_path):
    """device='cpu' (and the CLI with --device cpu) must not import torch even where it is installed."""
    out = _run(tmp_path, "installed")
    assert out["rcs"] == [0, 0, 0] and out["first"][0] == 5
    assert out["torch_loaded"] == []


def test_core_dependencies_hold_no_torch_nor_cuda():
    tomllib = pytest.importorskip("tomllib", reason="tomllib is in the standard library from Python 3.11")
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]

    def names(reqs):
        return {
            r.split(";")[0].split("[")[0].split("<")[0].split(">")[0].split("=")[0].strip().lower()
            for r in reqs
        }

    core = names(project["dependencies"])
    assert not {n for n in core if n == "torch" or n.startswith(("nvidia", "triton"))}, core
    extras = {k: names(v) for k, v in project["optional-dependencies"].items()}
    for extra in ("encoders", "gpu"):  # the extras that import torch list it themselves
        assert "torch" in extras[extra], extra
    assert "pandas" in extras["pandas"]  # hits.to_pandas() in the README
