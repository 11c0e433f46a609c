"""mvstore quick start: encode a small license-clean corpus, build a compressed index, search it.

The corpus is CPython's own help topics (``pydoc_data.topics``, shipped with every Python, PSF license),
split into paragraphs. The encoder is the bundled all-MiniLM-L6-v2 (offline). Run with ``make demo`` or
``python examples/quickstart.py [--spec SPEC] [--dir DIR]``.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import mvstore  # noqa: E402
from mvstore.encoders import default_encoder  # noqa: E402


def pydoc_passages(min_words: int = 25, max_passages: int = 400) -> tuple[list[str], list[str], list[str]]:
    """(ids, topics, texts): paragraphs of the interpreter's help topics."""
    from pydoc_data.topics import topics

    ids, names, texts = [], [], []
    for name in sorted(topics):
        for j, para in enumerate(re.split(r"\n\s*\n", topics[name])):
            text = " ".join(para.split())
            if len(text.split()) >= min_words:
                ids.append(f"{name}#{j}")
                names.append(name)
                texts.append(text)
    return ids[:max_passages], names[:max_passages], texts[:max_passages]


QUERIES = [
    "how do I leave a loop early",
    "what happens when an exception is raised inside a with block",
    "difference between a list and a tuple",
    "how are default argument values evaluated",
]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--spec", default=None, help="compression spec (default: mvstore.default_spec(dim))")
    ap.add_argument("--dir", default=".mvstore-demo/pydoc", help="where to write the index")
    args = ap.parse_args()

    ids, names, texts = pydoc_passages()
    print(f"corpus: {len(texts)} paragraphs of CPython's help topics ({len(set(names))} topics)")
    # embeddings are cached next to the index, so a second run skips the encoding
    enc = default_encoder(
        doc_max_length=256, query_max_length=64, cache=os.path.join(args.dir, "..", "cache")
    )

    t0 = time.perf_counter()
    docs = enc.encode_documents(texts)
    t_enc = time.perf_counter() - t0
    print(f"encoded {docs.n_tokens:,} token vectors ({docs.dim}-d) in {t_enc:.1f}s")

    shutil.rmtree(args.dir, ignore_errors=True)
    t0 = time.perf_counter()
    index = mvstore.create(args.dir, spec=args.spec, dim=docs.dim)
    index.add(ids, docs, metadata=[{"topic": n, "text": t} for n, t in zip(names, texts)])
    print(f"built index {args.dir!r} with spec {str(index.spec)!r} in {time.perf_counter() - t0:.1f}s")

    qv = enc.encode_queries(QUERIES)
    t0 = time.perf_counter()
    index.search(qv[:1], k=3)  # loads the in-memory snapshot; compiles the search kernels once per install
    print(
        f"first search (loads the index; compiles the search kernels, cached on disk): "
        f"{time.perf_counter() - t0:.1f}s"
    )
    t0 = time.perf_counter()
    hits = index.search(qv, k=3, columns=["topic", "text"])
    t_search = (time.perf_counter() - t0) / len(QUERIES) * 1e3
    rows = hits.to_pylist()
    for qi, q in enumerate(QUERIES):
        print(f"\nQ: {q}")
        for row in (r for r in rows if r["query"] == qi):
            print(f"  {row['rank'] + 1}. [{row['score']:6.2f}] {row['id']:<28} {row['text'][:80]}...")

    only = index.search(qv[1:2], k=3, where="topic = 'compound'", columns=["topic"])
    print(f"\nQ2 restricted to where=\"topic = 'compound'\": {only['id'].to_pylist()}")

    s = index.stats()
    fp32 = docs.dim * 4
    print(
        f"\nfootprint: {s['stored_bytes']:,} stored bytes for {s['tokens']:,} original tokens = "
        f"{s['bytes_per_token']:.1f} bytes/token; {fp32 / s['bytes_per_token']:.0f}x smaller than fp32 "
        f"({fp32} B/token), {fp32 / 2 / s['bytes_per_token']:.0f}x smaller than fp16; "
        f"search {t_search:.1f} ms/query"
    )


if __name__ == "__main__":
    main()
