"""The examples run in a subprocess and their results hang together."""

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def test_visual_documents_example():
    p = subprocess.run(
        [sys.executable, "examples/visual_documents.py", "--pages", "30", "--queries", "20", "--json"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert p.returncode == 0, p.stderr
    rows = [json.loads(line) for line in p.stdout.splitlines() if line.strip()]
    exact, spatial, index, filtered = rows
    assert exact["vectors_per_page"] == 1024 and exact["recall5_vs_exact"] == 1.0
    # the synthetic queries target one region of one page: exact MaxSim finds that page
    assert exact["top1_is_source_page"] >= 0.9
    # 2x2 patch merging keeps a quarter of the vectors and most of the exact top-5
    assert spatial["vectors_per_page"] == 256 and 0.5 <= spatial["recall5_vs_exact"] < 1.0
    assert spatial["top1_is_source_page"] >= 0.9
    # the sq8 index of the merged pages ranks like the merged fp32 pages, at 1/15 of fp32's bytes per patch
    assert abs(index["recall5_vs_exact"] - spatial["recall5_vs_exact"]) <= 0.05
    assert index["bytes_per_patch"] == (256 * (128 + 4)) / 1024 and index["fp32_bytes_per_patch"] == 512
    assert filtered["ids"][0] == filtered["source_page"]
    assert len(set(filtered["kinds"])) == 1 and filtered["variant"].endswith(f"'{filtered['kinds'][0]}'")


@pytest.mark.parametrize(
    "script, package",
    [("examples/rag_langchain.py", "langchain_core"), ("examples/rag_llamaindex.py", "llama_index.core")],
)
def test_rag_examples_answer_from_the_docs(script, package):
    """The RAG examples index this project's docs and answer with sources: retriever, filter, hybrid, rerank."""
    if importlib.util.find_spec(package.split(".")[0]) is None:
        pytest.skip(
            f"{package} is not installed (pip install 'mvstore[{'langchain' if 'lang' in package else 'llamaindex'}]')"
        )
    p = subprocess.run(
        [sys.executable, script, "--json", "-k", "3"], cwd=REPO, capture_output=True, text=True, timeout=900
    )
    assert p.returncode == 0, p.stderr
    answers = [json.loads(line) for line in p.stdout.splitlines() if line.strip()]
    assert [a["how"].split(" ")[0] for a in answers] == ["retriever"] * 3 + [
        "filter",
        "hybrid",
        answers[5]["how"].split(" ")[0],
    ]
    for a in answers:
        assert len(a["sources"]) == 3 and all(s["text"] and s["source"] for s in a["sources"])
        assert len({s["id"] for s in a["sources"]}) == 3
    assert {s["source"] for s in answers[3]["sources"]} == {"docs/LAYOUT.md"}  # the filter held
    assert "upgrade" in answers[4]["sources"][0]["text"]  # BM25 side of the hybrid search
    # the reserved-names question is answered from the passage that lists them
    assert any("reserved" in s["text"] or "may not use" in s["text"] for s in answers[2]["sources"])
