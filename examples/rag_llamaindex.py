"""Retrieval for RAG with LlamaIndex on mvstore: this project's own docs (README.md, docs/*.md), split into
passages, answered with sources (retrieval only, no LLM).

    pip install "mvstore[encoders,llamaindex]"
    python examples/rag_llamaindex.py [--index DIR] [--json]

Shows: ``MvstoreRetriever.from_nodes`` (LlamaIndex documents encoded by the bundled MiniLM into token
vectors, their metadata kept as filterable columns; the index records its encoder, so ``MvstoreRetriever(path)``
opens it with nothing else), ``MetadataFilters`` evaluated by Lance before scoring, hybrid search (MaxSim +
BM25 over Lance's full-text index, on the same question) and the ``MaxSimNodePostprocessor`` reranker.
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

    from llama_index.core.schema import Document
    from llama_index.core.vector_stores.types import MetadataFilter, MetadataFilters

    from mvstore.integrations.llamaindex import MaxSimNodePostprocessor, MvstoreRetriever

    docs = [Document(text=t, metadata=m, id_=f"p{i}") for i, (t, m) in enumerate(passages())]
    with tempfile.TemporaryDirectory() as tmp:
        uri = args.index or str(Path(tmp) / "rag_index")
        retriever = MvstoreRetriever.from_nodes(docs, uri=uri, similarity_top_k=args.k)  # the bundled MiniLM
        retriever.index.create_fts_index()  # BM25 over the passages' text column, for hybrid=True
        runs = [(q, "retriever", retriever.retrieve(q)) for q in QUESTIONS]
        # more retrievers on the same index, opened by path: the index knows its encoder
        q = "Which files does an index directory hold?"
        layout = MetadataFilters(filters=[MetadataFilter(key="source", value="docs/LAYOUT.md")])
        runs.append(
            (
                q,
                "filter source=docs/LAYOUT.md",
                MvstoreRetriever(uri, similarity_top_k=args.k, filters=layout).retrieve(q),
            )
        )
        q = "mvstore upgrade"
        runs.append((q, "hybrid", MvstoreRetriever(uri, similarity_top_k=args.k, hybrid=True).retrieve(q)))
        q = "How are the stage-1 centroids trained?"
        wide = MvstoreRetriever(uri, similarity_top_k=10).retrieve(q)
        rerank = MaxSimNodePostprocessor(encoder=retriever.index.encoder, top_n=args.k)
        runs.append((q, "MaxSimNodePostprocessor(top 10)", rerank.postprocess_nodes(wide, query_str=q)))
        for question, how, nodes in runs:
            answer = {
                "question": question,
                "how": how,
                "passages": len(docs),
                "sources": [
                    {
                        "source": n.node.metadata["source"],
                        "section": n.node.metadata["section"],
                        "id": n.node.node_id,
                        "score": n.score,
                        "text": n.node.get_content(),
                    }
                    for n in nodes
                ],
            }
            if args.json:
                print(json.dumps(answer))
            else:
                print(f"\nQ: {question}  [{how}]")
                for i, s in enumerate(answer["sources"], 1):
                    print(f"  {i}. {s['source']} § {s['section']} ({s['score']:.3f}): {s['text'][:150]}...")
    return 0


if __name__ == "__main__":
    sys.exit(main())
