"""examples/visual_documents.py runs in a subprocess and its numbers hang together."""

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_visual_documents_example():
    p = subprocess.run(
        [sys.executable, "examples/visual_documents.py", "--pages", "30", "--queries", "20", "--json"],
        cwd=REPO, capture_output=True, text=True, timeout=600,
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
