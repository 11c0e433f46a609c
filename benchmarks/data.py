"""BEIR collections (``../shared/data/<name>``) with cached token vectors, for benchmarks and data-backed tests.

The data stays in ``../shared/data`` (never copied into the repo); embeddings are cached outside the repo
(``$MVSTORE_CACHE`` or ``~/.cache/mvstore``). Encoding all 5,183 SciFact docs takes ~3 min on 2 cores once;
later loads take seconds.

Models (``--model``):

* ``minilm``: the bundled all-MiniLM-L6-v2's L2-normalized last hidden states, 384-d, ``title + " " + text``,
  max length 256 for documents and queries, [CLS]/[SEP] kept (the settings of
  ``shared/data/scifact/derived``: exact MaxSim nDCG@10 = 0.707 on SciFact). Not trained for late interaction.
* ``colbert128``: a ColBERT model trained here by ``benchmarks/train_colbert.py`` (MiniLM backbone, 128-d
  projection, SciFact *train* split only), loaded from ``$MVSTORE_CACHE/models/colbert128-scifact`` with its saved
  settings (queries: 32 tokens with [MASK] expansion; documents: 180 tokens, the length it was trained at:
  exact MaxSim nDCG@10 = 0.7016 on SciFact; 0.7200 at 256 tokens).
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mvstore import Ragged
from mvstore.eval import load_beir, run_from_scores
from mvstore.search.maxsim import maxsim_batch

REPO = Path(__file__).resolve().parents[1]
DATA_DIR = Path(os.environ.get("MVSTORE_DATA", REPO.parent / "shared" / "data"))
SCIFACT_DIR = Path(os.environ.get("MVSTORE_SCIFACT", DATA_DIR / "scifact"))
CACHE = Path(os.environ.get("MVSTORE_CACHE", Path.home() / ".cache" / "mvstore"))
MAX_LENGTH = 256
MODELS = ("minilm", "colbert128")
COLBERT_DIR = CACHE / "models" / "colbert128-scifact"


def collection_dir(name: str) -> Path:
    return SCIFACT_DIR if name == "scifact" else DATA_DIR / name


def collections() -> list[str]:
    """The BEIR collections present in the data directory (each a folder with a corpus file)."""
    if not DATA_DIR.is_dir():
        return []
    return sorted(p.name for p in DATA_DIR.iterdir() if any(p.glob("corpus.jsonl*")))


def collection_available(name: str) -> bool:
    return any(collection_dir(name).glob("corpus.jsonl*"))


def scifact_available() -> bool:
    return collection_available("scifact")


@dataclass
class Collection:
    doc_ids: list[str]
    docs: Ragged
    query_ids: list[str]
    queries: Ragged
    qrels: dict[str, dict[str, int]]
    doc_texts: list[str] = field(repr=False, default_factory=list)
    query_texts: list[str] = field(repr=False, default_factory=list)
    name: str = "scifact"
    model: str = "minilm"

    def exact_run(self, k: int = 100, scores: np.ndarray | None = None) -> dict[str, list[str]]:
        """Top-k of exact uncompressed MaxSim (fp32, all tokens), cached on disk per collection, model, split
        and doc subset. ``scores``: the already computed ``(n_queries, n_docs)`` exact scores, to fill the cache."""
        key = hashlib.sha256(
            ("\n".join(self.doc_ids) + "\t" + "\n".join(self.query_ids) + f"|{k}|{MAX_LENGTH}").encode()
        ).hexdigest()[:16]
        path = CACHE / "runs" / f"{self.name}_{self.model}_exact_{key}.json.gz"
        if path.exists() and scores is None:
            with gzip.open(path, "rt") as f:
                return json.load(f)
        if scores is None:
            scores = maxsim_batch(self.queries, self.docs)
        run = run_from_scores(scores, self.query_ids, self.doc_ids, k)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        with gzip.open(tmp, "wt") as f:
            json.dump(run, f)
        os.replace(tmp, path)
        return run


SciFact = Collection  # the name older benchmarks use


def encoder(model: str = "minilm"):
    """The cached token encoder of a benchmark model (see the module docstring)."""
    from mvstore.encoders import CachedEncoder, HFTokenEncoder

    if model == "minilm":
        enc = HFTokenEncoder(None, query_max_length=MAX_LENGTH, doc_max_length=MAX_LENGTH)
    elif model == "colbert128":
        from mvstore.encoders import ColBERTEncoder

        if not (COLBERT_DIR / "config.json").exists():
            raise FileNotFoundError(
                f"no trained ColBERT model at {COLBERT_DIR}: run `python benchmarks/train_colbert.py` first"
            )
        enc = ColBERTEncoder(COLBERT_DIR)
    else:
        raise ValueError(f"unknown model {model!r}; expected one of {', '.join(MODELS)}")
    # float32: the published figures reproduce from the vectors they were measured on
    return CachedEncoder(enc, CACHE / "embeddings", dtype="float32", progress=True)


def load_collection(
    name: str = "scifact", model: str = "minilm", split: str = "test", max_docs: int | None = None
) -> Collection:
    """A BEIR collection's judged queries of ``split`` and its corpus, as token vectors of ``model``.
    ``max_docs`` keeps every document judged relevant for a query of the split, then fills up with the
    others in corpus order (as the shared SciFact measuring script does)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    root = collection_dir(name)
    if not collection_available(name):
        raise FileNotFoundError(
            f"{name} not found at {root}; set MVSTORE_DATA to the folder of BEIR collections"
        )
    ds = load_beir(root, split)
    doc_ids = list(ds.corpus)
    if max_docs:
        rel = {d for q in ds.qrels.values() for d in q}
        keep = [d for d in doc_ids if d in rel]
        rest = [d for d in doc_ids if d not in rel]
        doc_ids = keep + rest[: max(0, max_docs - len(keep))]
    query_ids = sorted(ds.qrels, key=lambda q: (len(q), q))  # numeric ids in numeric order
    enc = encoder(model)
    # encode the whole corpus once (cached per text), then select the subset
    doc_texts = [ds.corpus[d] for d in doc_ids]
    docs = enc.encode_documents(doc_texts)
    query_texts = [ds.queries[q] for q in query_ids]
    queries = enc.encode_queries(query_texts)
    return Collection(doc_ids, docs, query_ids, queries, ds.qrels, doc_texts, query_texts, name, model)


def load_scifact(max_docs: int | None = None, split: str = "test", model: str = "minilm") -> Collection:
    """SciFact with token vectors (see :func:`load_collection`)."""
    return load_collection("scifact", model, split, max_docs)


if __name__ == "__main__":
    import time

    t0 = time.time()
    import argparse

    ap = argparse.ArgumentParser(description="encode (and cache) collections; print their sizes")
    ap.add_argument("--collections", nargs="+", default=None)
    ap.add_argument("--model", choices=MODELS, default="minilm")
    ap.add_argument("--split", default="test")
    args = ap.parse_args()
    for name in args.collections or collections():
        t0 = time.time()
        d = load_collection(name, args.model, args.split)
        print(
            json.dumps(
                {
                    "collection": name,
                    "model": args.model,
                    "docs": len(d.docs),
                    "tokens": d.docs.n_tokens,
                    "tokens_per_doc": round(d.docs.n_tokens / len(d.docs), 1),
                    "queries": len(d.queries),
                    "load_s": round(time.time() - t0, 1),
                }
            ),
            flush=True,
        )
