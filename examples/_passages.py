"""Passages of this project's own documentation (README.md, docs/*.md), for the RAG examples."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
FILES = ("README.md", "docs/LAYOUT.md", "docs/ARCHITECTURE.md")


#: what both RAG examples ask
QUESTIONS = [
    "How do I upgrade an index written by an older version of mvstore?",
    "What happens to the index if a writer process is killed in the middle of a write?",
    "Which metadata column names are reserved?",
]


def passages(max_words: int = 120) -> list[tuple[str, dict]]:
    """(text, {"source": file, "section": heading}) per passage: each file split at its headings, each section
    into paragraphs, consecutive paragraphs joined up to ``max_words`` words."""
    out = []
    for rel in FILES:
        section, buf = rel, []
        for para in re.split(r"\n\s*\n", (REPO / rel).read_text(encoding="utf-8")) + ["# end"]:
            para = " ".join(para.split())
            if not para:
                continue
            heading = para.startswith("#")
            if buf and (heading or len(" ".join(buf).split()) + len(para.split()) > max_words):
                out.append((" ".join(buf), {"source": rel, "section": section}))
                buf = []
            if heading:
                section = para.lstrip("#").strip()
            else:
                buf.append(para)
    return out
