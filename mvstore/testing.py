"""Synthetic token vectors for tests, benchmarks and examples (the one place they are generated).

Every generator is seeded and returns unit-norm float32 token vectors shaped like a late-interaction
model's: documents whose tokens cluster around shared centres. Numpy only; nothing here is used by the
library itself.

* :func:`token_docs`: a list of ``(n_tokens, dim)`` documents, tokens around a fixed bank of centres (or
  plain Gaussian with ``n_centers=0``); what the store, integrity and reliability tests add to an index.
* :func:`synthetic_docs`: a :class:`~mvstore.Ragged` batch, tokens around ``n_topics`` topics, the
  benchmarks' stand-in for real token vectors.
* :func:`synthetic_batches`: ``(ids, Ragged)`` batches of :func:`synthetic_docs`-like documents generated
  lazily, for builds of millions of documents.
* :func:`topic_docs` / :func:`queries_from`: documents drawing on a few topics each, and queries made of
  noisy tokens of random documents (each query has a few clearly relevant documents): the search tests'.
* :func:`clustered_vectors`: a flat ``(n, dim)`` matrix of clustered vectors, for codec tests.

>>> docs = token_docs(3, 8, seed=0)
>>> [d.shape[1] for d in docs], docs[0].dtype.name, bool(np.allclose(np.linalg.norm(docs[0], axis=1), 1))
([8, 8, 8], 'float32', True)
>>> synthetic_docs(4, 16, min_len=2, max_len=5).lengths.tolist()
[5, 3, 3, 3]
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from .ragged import Ragged

__all__ = [
    "unit",
    "token_docs",
    "synthetic_docs",
    "synthetic_batches",
    "topic_docs",
    "queries_from",
    "clustered_vectors",
]


def unit(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit norm, as float32."""
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


def token_docs(
    n: int,
    dim: int,
    *,
    seed: int = 0,
    lo: int = 30,
    hi: int = 80,
    n_centers: int = 24,
    center_seed: int = 123,
    noise: float = 0.35,
    unit_centers: bool = True,
    shift: np.ndarray | None = None,
) -> list[np.ndarray]:
    """``n`` documents of ``lo`` to ``hi - 1`` unit token vectors: ``unit(center + noise * N(0, 1) [+ shift])``
    with centres drawn once from ``center_seed`` (unit norm unless ``unit_centers=False``), or plain Gaussian
    tokens when ``n_centers=0``. ``shift`` moves every token before normalizing (a drifted collection)."""
    rng = np.random.default_rng(seed)
    centers = None
    if n_centers:
        centers = np.random.default_rng(center_seed).normal(size=(n_centers, dim))
        centers = unit(centers) if unit_centers else centers
    out = []
    for m in rng.integers(lo, hi, n):
        m = int(m)
        if centers is None:
            x = rng.normal(size=(m, dim))
        else:
            x = centers[rng.integers(0, n_centers, m)] + noise * rng.normal(size=(m, dim))
        if shift is not None:
            x = x + shift
        out.append(unit(x))
    return out


def synthetic_docs(
    n_docs: int,
    dim: int = 128,
    *,
    n_topics: int = 256,
    min_len: int = 30,
    max_len: int = 300,
    seed: int = 0,
    spread: float = 0.35,
) -> Ragged:
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


def synthetic_batches(
    n_docs: int, dim: int, batch: int, seed: int = 0, n_clusters: int = 256
) -> Iterator[tuple[np.ndarray, Ragged]]:
    """``(ids, Ragged)`` batches of clustered unit-norm docs, 30-300 tokens each, generated lazily.

    Noise comes from a fixed bank of Gaussian rows (gathering is much cheaper than drawing 50M x dim
    normals), each token = normalize(center + 0.35 * noise row)."""
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(n_clusters, dim)).astype(np.float32)
    centers /= np.linalg.norm(centers, axis=1, keepdims=True)
    bank = (0.35 * rng.normal(size=(1 << 16, dim))).astype(np.float32)
    for start in range(0, n_docs, batch):
        n = min(batch, n_docs - start)
        lengths = rng.integers(30, 301, n)
        offsets = np.zeros(n + 1, np.int64)
        np.cumsum(lengths, out=offsets[1:])
        topic = np.repeat(rng.integers(0, n_clusters, n), lengths)  # each doc leans on a few clusters
        jitter = rng.integers(0, 4, offsets[-1])
        x = centers[(topic + jitter) % n_clusters] + bank[rng.integers(0, len(bank), offsets[-1])]
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        yield np.arange(start, start + n, dtype=np.int64), Ragged(x, offsets)


def topic_docs(
    n_docs: int, dim: int = 32, n_topics: int = 24, seed: int = 0, lo: int = 30, hi: int = 80
) -> Ragged:
    """Clustered unit-norm token vectors; each document draws its tokens from a few topics."""
    rng = np.random.default_rng(seed)
    topics = rng.standard_normal((n_topics, dim)).astype(np.float32)
    topics /= np.linalg.norm(topics, axis=1, keepdims=True)
    lengths = rng.integers(lo, hi + 1, n_docs)
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    doc_topics = rng.integers(0, n_topics, (n_docs, 3))
    t = doc_topics[np.repeat(np.arange(n_docs), lengths), rng.integers(0, 3, offsets[-1])]
    v = topics[t] + 0.6 * rng.standard_normal((offsets[-1], dim)).astype(np.float32) / np.sqrt(dim)
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    return Ragged(v.astype(np.float32), offsets)


def queries_from(docs: Ragged, n: int, seed: int = 1, n_tok: int = 8) -> Ragged:
    """Queries made of noisy tokens of random documents (so each has a few clearly relevant docs)."""
    rng = np.random.default_rng(seed)
    qs = []
    for d in rng.integers(0, len(docs), n):
        toks = docs[d][rng.integers(0, len(docs[d]), n_tok)]
        q = toks + 0.3 * rng.standard_normal(toks.shape).astype(np.float32) / np.sqrt(docs.dim)
        qs.append(q / np.linalg.norm(q, axis=1, keepdims=True))
    return Ragged.from_list(qs)


def clustered_vectors(n: int, dim: int, seed: int = 0, k: int = 24) -> np.ndarray:
    """``(n, dim)`` unit-norm token-like vectors around ``k`` cluster centres."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(k, dim))
    x = centres[rng.integers(0, k, n)] + 0.6 * rng.normal(size=(n, dim))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x.astype(np.float32)
