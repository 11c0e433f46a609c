"""SciFact (BEIR) with cached all-MiniLM-L6-v2 token vectors, for benchmarks and data-backed tests.

The data stays in ``../shared/data/scifact`` (CC BY-NC, never copied into the repo); embeddings are cached
outside the repo (``$MVSTORE_CACHE`` or ``~/.cache/mvstore``). Encoding all 5,183 docs takes ~3 min on 2 cores
once; later loads take seconds.

Settings match ``shared/data/scifact/derived``: ``title + " " + text``, max length 256 for documents and
queries, [CLS]/[SEP] kept, L2-normalized last hidden states. Exact MaxSim scores nDCG@10 = 0.707 there.
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
SCIFACT_DIR = Path(os.environ.get("MVSTORE_SCIFACT", REPO.parent / "shared" / "data" / "scifact"))
CACHE = Path(os.environ.get("MVSTORE_CACHE", Path.home() / ".cache" / "mvstore"))
MAX_LENGTH = 256


def scifact_available() -> bool:
    return (SCIFACT_DIR / "corpus.jsonl.gz").exists()


@dataclass
class SciFact:
    doc_ids: list[str]
    docs: Ragged
    query_ids: list[str]
    queries: Ragged
    qrels: dict[str, dict[str, int]]
    doc_texts: list[str] = field(repr=False, default_factory=list)
    query_texts: list[str] = field(repr=False, default_factory=list)

    def exact_run(self, k: int = 100, scores: np.ndarray | None = None) -> dict[str, list[str]]:
        """Top-k of exact uncompressed MaxSim (fp32, all tokens), cached on disk per doc subset.
        ``scores``: the already computed ``(n_queries, n_docs)`` exact scores, to fill the cache."""
        key = hashlib.sha256(("\n".join(self.doc_ids) + f"|{k}|{MAX_LENGTH}").encode()).hexdigest()[:16]
        path = CACHE / "runs" / f"scifact_exact_{key}.json.gz"
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


def _encoder():
    from mvstore.encoders import CachedEncoder, HFTokenEncoder

    enc = HFTokenEncoder(None, query_max_length=MAX_LENGTH, doc_max_length=MAX_LENGTH)
    return CachedEncoder(enc, CACHE / "embeddings", progress=True)


def load_scifact(max_docs: int | None = None, split: str = "test") -> SciFact:
    """SciFact test split with token vectors. ``max_docs`` keeps every document judged relevant for a test
    query, then fills up with the others in corpus order (as the shared measuring script does)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if not scifact_available():
        raise FileNotFoundError(f"SciFact not found at {SCIFACT_DIR}; set MVSTORE_SCIFACT to the BEIR directory")
    ds = load_beir(SCIFACT_DIR, split)
    doc_ids = list(ds.corpus)
    if max_docs:
        rel = {d for q in ds.qrels.values() for d in q}
        keep = [d for d in doc_ids if d in rel]
        rest = [d for d in doc_ids if d not in rel]
        doc_ids = keep + rest[: max(0, max_docs - len(keep))]
    query_ids = sorted(ds.qrels, key=int)
    enc = _encoder()
    # encode the whole corpus once (cached per text), then select the subset
    doc_texts = [ds.corpus[d] for d in doc_ids]
    docs = enc.encode_documents(doc_texts)
    query_texts = [ds.queries[q] for q in query_ids]
    queries = enc.encode_queries(query_texts)
    return SciFact(doc_ids, docs, query_ids, queries, ds.qrels, doc_texts, query_texts)


def synthetic_docs(n_docs: int, dim: int = 128, *, n_topics: int = 256, min_len: int = 30, max_len: int = 300,
                   seed: int = 0, spread: float = 0.35) -> Ragged:
    """Documents drawn to look like real token vectors: clustered, unit norm, ``min_len``-``max_len`` tokens."""
    rng = np.random.default_rng(seed)
    topics = rng.standard_normal((n_topics, dim)).astype(np.float32)
    topics /= np.linalg.norm(topics, axis=1, keepdims=True)
    lengths = rng.integers(min_len, max_len + 1, n_docs)
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    t = rng.integers(0, n_topics, offsets[-1])
    v = topics[t] + spread * rng.standard_normal((offsets[-1], dim)).astype(np.float32) / np.sqrt(dim) * 3
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    return Ragged(v.astype(np.float32), offsets)


if __name__ == "__main__":
    import time

    t0 = time.time()
    d = load_scifact()
    print(json.dumps({"docs": len(d.docs), "tokens": d.docs.n_tokens, "queries": len(d.queries),
                      "load_s": round(time.time() - t0, 1)}))
