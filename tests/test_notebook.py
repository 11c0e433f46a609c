"""examples/notebook.ipynb executes top to bottom in a kernel running this interpreter (the venv)."""

import sys
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")

NOTEBOOK = Path(__file__).resolve().parents[1] / "examples" / "notebook.ipynb"


def test_notebook_runs(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    nb = nbformat.read(NOTEBOOK, as_version=4)
    assert nb.metadata["kernelspec"]["name"] == "python3"
    # jupyter_client starts the "python3" kernel with sys.executable, i.e. the venv's interpreter
    client = nbclient.NotebookClient(
        nb, kernel_name="python3", timeout=600, resources={"metadata": {"path": str(tmp_path)}}
    )
    client.execute()  # raises CellExecutionError on the first failing cell
    code = [c for c in nb.cells if c.cell_type == "code"]
    first = "".join(o.get("text", "") for o in code[0].outputs if o.output_type == "stream")
    assert first.strip().splitlines()[-1] == sys.executable
    assert not [o for c in code for o in c.outputs if o.output_type == "error"]
    text = "\n".join(o.get("text", "") for c in code for o in c.outputs if o.output_type == "stream")
    assert "pool2,pca96,sq8" in text and "recall5_vs_exact" in text
    assert "image/png" in code[-1].outputs[-1]["data"]
