"""SLIM two-stage search over sparse term posting lists (Li et al. 2023, "SLIM: Sparsified Late Interaction").

Every stored vector ``d_j`` of a document has a sparse non-negative vector ``s(d_j)`` over ``V`` terms (its
codes, when the index's codec is sparse: ``spk<V>t<t>`` / ``slim<V>t<t>``; or a *side map* applied to the
decoded vectors of a dense index). The sparsified late interaction of a query is

    ``exact(d) = sum_i max_j <s(q_i), s(d_j)>``.

Posting lists store, per term ``v``, each document's max weight ``M_dv = max_j s(d_j)_v``. Because every
weight is non-negative they bound the exact score from both sides (SLIM's approximation):

    ``lower(d) = sum_i max_v q_iv M_dv  <=  exact(d)  <=  upper(d) = sum_i sum_v q_iv M_dv``

(the upper bound moves the max over tokens inside the sum over terms; the lower bound keeps one term per
query token, which some token of the document attains). Stage 1 ranks documents by
``alpha * upper + (1 - alpha) * lower`` read off the posting lists; stage 2 rescores the best ``n`` exactly:
sparse MaxSim from the stored codes (a sparse-only index), or dense MaxSim over decoded vectors when the
index stores dense codes and the sparse map is only the candidate generator ("sparse prefilter + dense
rerank").

>>> import numpy as np
>>> p = build_sparse_postings(np.array([[0, 1], [1, 2], [2, 0]]),
...                           np.array([[.5, .5], [.9, .1], [.4, 0.]], np.float32),
...                           np.array([0, 2, 3]), vocab=3)
>>> lo, up = bounds(p, np.array([0, 0]), np.array([1, 2]), np.array([1., 1.], np.float32), n_query_tokens=1)
>>> up.astype(float).round(2).tolist(), lo.astype(float).round(2).tolist()  # doc 0: M_1 .9, M_2 .1
([1.0, 0.4], [0.9, 0.4])
>>> q = np.array([[0, 0, 1, 1]], np.float32)   # one query of one token: weight 1 on terms 2 and 3
>>> sparse_maxsim_codes(q, np.array([0, 1]), np.array([[1, 2], [2, 0], [3, 1]]),
...                     np.array([[.5, .5], [.9, .1], [.4, 0.]], np.float32), np.array([0, 2, 3])).astype(float).round(2).tolist()
[[0.9, 0.4]]
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from .._rank import top_k
from ..codecs.base import REGISTRY
from ..codecs.sparse import SparseCodec, _sparse_stage
from ..exceptions import (
    DimensionMismatchError,
    InvalidDtypeError,
    InvalidVectorsError,
    NotFittedError,
    SpecError,
)
from ..ragged import Ragged, as_ragged, ranges
from .candidates import CandidateGenerator, as_query_list, check_allowed, check_n, search_mask
from .maxsim import doc_chunks, maxsim_batch
from .params import SearchParams, SearchParamsError, check_k

__all__ = [
    "SparsePostings",
    "build_sparse_postings",
    "bounds",
    "sparse_maxsim_codes",
    "SparseCandidates",
    "SparseSearcher",
    "attach_sparse_map",
    "sparse_map_of",
]

#: (doc, term) pairs handled at once when building posting lists; gathered elements per stage-2 block
_BLOCK = 1 << 22
#: key under which a snapshot caches its sparse posting lists
_EXTRAS_KEY = "sparse_postings"


@dataclass(frozen=True, eq=False)
class SparsePostings:
    """``term -> (docs, max weight of the doc on the term)`` in CSR form, built once per snapshot."""

    #: (V + 1,) int64 offsets into ``docs`` / ``weights``
    term_offsets: np.ndarray
    #: (n_pairs,) int32 documents holding the term, ascending within a term
    docs: np.ndarray
    #: (n_pairs,) float32 ``M_dv``: the document's max weight on the term
    weights: np.ndarray
    n_docs: int

    @property
    def vocab(self) -> int:
        return len(self.term_offsets) - 1

    @property
    def nbytes(self) -> int:
        return self.term_offsets.nbytes + self.docs.nbytes + self.weights.nbytes


def build_sparse_postings(
    term_ids: np.ndarray, weights: np.ndarray, offsets: np.ndarray, vocab: int
) -> SparsePostings:
    """Posting lists from every stored vector's ``(term_ids (n, t), weights (n, t))`` and the documents'
    ``offsets`` (n_docs + 1,). Zero weights (unused slots) are skipped; per (doc, term) the max weight is kept.
    """
    term_ids = np.asarray(term_ids)
    weights = np.asarray(weights, np.float32)
    offsets = np.asarray(offsets, np.int64)
    if term_ids.shape != weights.shape or term_ids.ndim != 2 or len(term_ids) != offsets[-1]:
        raise DimensionMismatchError(
            f"term ids {term_ids.shape} and weights {weights.shape} must both be (n_vectors, t) with "
            f"n_vectors = offsets[-1] = {int(offsets[-1])}"
        )
    if term_ids.size and (term_ids.min() < 0 or term_ids.max() >= vocab):
        raise InvalidVectorsError(
            f"term ids must lie in [0, {vocab}); got [{term_ids.min()}, {term_ids.max()}]"
        )
    n_docs = len(offsets) - 1
    seg = np.repeat(np.arange(n_docs, dtype=np.int64), np.diff(offsets))
    keys_parts, w_parts = [], []
    rows_per_block = max(1, _BLOCK // max(term_ids.shape[1], 1))
    for a in range(0, len(term_ids), rows_per_block):
        ids, w = term_ids[a : a + rows_per_block], weights[a : a + rows_per_block]
        used = w > 0
        key = (ids.astype(np.int64) * n_docs + seg[a : a + rows_per_block, None])[used]
        keys_parts.append(key)
        w_parts.append(w[used])
    keys = np.concatenate(keys_parts) if keys_parts else np.zeros(0, np.int64)
    w = np.concatenate(w_parts) if w_parts else np.zeros(0, np.float32)
    order = np.argsort(keys, kind="stable")
    keys, w = keys[order], w[order]
    if len(keys):
        first = np.flatnonzero(np.concatenate([[True], keys[1:] != keys[:-1]]))
        w = np.maximum.reduceat(w, first)
        keys = keys[first]
    terms = keys // max(n_docs, 1)
    term_offsets = np.zeros(vocab + 1, np.int64)
    np.cumsum(np.bincount(terms, minlength=vocab), out=term_offsets[1:])
    return SparsePostings(
        term_offsets, (keys % max(n_docs, 1)).astype(np.int32), w.astype(np.float32), n_docs
    )


def bounds(
    postings: SparsePostings,
    q_tok: np.ndarray,
    q_terms: np.ndarray,
    q_weights: np.ndarray,
    n_query_tokens: int,
    *,
    lower: bool = True,
    block: int = 1 << 23,
) -> tuple[np.ndarray | None, np.ndarray]:
    """SLIM's bounds of the sparse MaxSim of one query against every document -> ``(lower, upper)``,
    each ``(n_docs,)`` float32. The query is given as its non-zero entries: token index ``q_tok``, term
    ``q_terms`` and weight ``q_weights`` (all 1-D, same length; weights non-negative; each (token, term)
    at most once, as in a sparse vector). ``lower=False`` skips the lower bound (returned as None): the upper
    bound is one ``bincount``, the lower bound a max per query token and costs about as much again."""
    p = postings
    q_tok = np.asarray(q_tok, np.int64)
    q_terms = np.asarray(q_terms, np.int64)
    q_weights = np.asarray(q_weights, np.float32)
    if len(q_tok) and (q_tok[1:] < q_tok[:-1]).any():
        order = np.argsort(q_tok, kind="stable")
        q_tok, q_terms, q_weights = q_tok[order], q_terms[order], q_weights[order]
    starts = p.term_offsets[q_terms]
    lens = p.term_offsets[q_terms + 1] - starts
    idx = ranges(starts, lens)
    docs = p.docs[idx].astype(np.int64)
    val = np.repeat(q_weights, lens) * p.weights[idx]
    tok = np.repeat(q_tok, lens)
    upper = np.bincount(docs, weights=val, minlength=p.n_docs).astype(np.float32)
    if not lower:
        return None, upper
    lo = np.zeros(p.n_docs, np.float32)
    # per query token, the max over its terms. Entry e of a token is its slot-th term; within one slot the
    # (token, doc) pairs are unique, so a gather/max/scatter per slot needs no unbuffered ufunc.at.
    slot = np.repeat(np.arange(len(q_tok)) - np.searchsorted(q_tok, q_tok), lens)
    tok_per_chunk = max(1, block // max(p.n_docs, 1))  # tokens per (tokens, n_docs) buffer
    cuts = np.searchsorted(tok, np.arange(0, n_query_tokens + tok_per_chunk, tok_per_chunk))
    for c, (a, b) in enumerate(zip(cuts[:-1], cuts[1:])):
        if a == b:
            continue
        t0 = c * tok_per_chunk
        buf = np.zeros((min(tok_per_chunk, n_query_tokens - t0), p.n_docs), np.float32)
        tk, dk, vk, sk = tok[a:b] - t0, docs[a:b], val[a:b], slot[a:b]
        for sl in range(int(sk.max()) + 1):
            sel = sk == sl
            ti, di = tk[sel], dk[sel]
            buf[ti, di] = np.maximum(buf[ti, di], vk[sel])
        lo += buf.sum(0)
    return lo, upper


def _nonzero_entries(q: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    tok, term = np.nonzero(q)
    w = q[tok, term].astype(np.float32)
    if (w < 0).any():
        raise InvalidVectorsError(
            "sparse query vectors have negative weights; SLIM bounds need non-negative sparse vectors "
            "(pass queries through the sparse codec's transform_query)"
        )
    return tok, term, w


def sparse_maxsim_codes(
    q_dense: np.ndarray,
    q_offsets: np.ndarray,
    term_ids: np.ndarray,
    weights: np.ndarray,
    offsets: np.ndarray,
    *,
    block: int = _BLOCK,
) -> np.ndarray:
    """Exact sparse MaxSim of every query against every document, from the documents' sparse entries.

    ``q_dense``: ``(n_query_tokens, V)`` dense sparse vectors of all queries packed (boundaries in
    ``q_offsets``, ``(n_queries + 1,)``); ``term_ids``/``weights``: ``(n_vectors, t)`` of the documents packed by ``offsets``.
    Returns ``(n_queries, n_docs)`` float32: a scipy CSR product per chunk of document vectors (``block``
    bounds the ``(vectors, query tokens)`` similarity block).
    """
    from scipy.sparse import csr_matrix

    q_dense = np.asarray(q_dense, np.float32)
    offsets = np.asarray(offsets, np.int64)
    q_offsets = np.asarray(q_offsets, np.int64)
    n_docs = len(offsets) - 1
    qt = np.ascontiguousarray(q_dense.T)  # (V, n_query_tokens): row v = every query token's weight on term v
    vocab, nq = qt.shape
    out = np.empty((len(q_offsets) - 1, n_docs), np.float32)
    lengths = np.diff(offsets)
    t = term_ids.shape[1]
    for a, b in doc_chunks(offsets, max(1, block // max(t, nq, 1))):
        lo, hi = offsets[a], offsets[b]
        n = int(hi - lo)
        # <s(q_i), s(d_j)> = sum over d_j's slots k of w_jk * q_i[term_jk]: a CSR (vectors x V) product
        mat = csr_matrix(
            (weights[lo:hi].ravel(), term_ids[lo:hi].ravel(), np.arange(0, n * t + 1, t)), shape=(n, vocab)
        )
        sim = np.asarray(mat @ qt, np.float32)  # (n, n_query_tokens)
        mx = np.zeros((b - a, nq), np.float32)
        nonempty = lengths[a:b] > 0
        if nonempty.any():
            mx[nonempty] = np.maximum.reduceat(sim, (offsets[a:b] - lo)[nonempty], axis=0)
        out[:, a:b] = np.add.reduceat(mx, q_offsets[:-1], axis=1).T
    return out


# ------------------------------------------------------------------------------------------ the sparse map
def sparse_map_of(snapshot: Any, sparse_map: Any = None) -> tuple[Any, bool]:
    """The sparse map serving ``snapshot`` and whether it is the snapshot's own codec (codes are sparse).

    Order: the snapshot's codec when it ends in a sparse codec; else ``sparse_map``; else
    ``snapshot.extras["sparse_map"]`` (see :func:`attach_sparse_map`). Raises a clear error otherwise.
    """
    own = _sparse_stage(snapshot.codec)
    if own is not None:
        return own, True
    m = sparse_map if sparse_map is not None else snapshot.extras.get("sparse_map")
    if m is None:
        raise NotFittedError(
            f"this index stores dense codes ({snapshot.codec.spec()!r}), so sparse candidates need a sparse map "
            "of its decoded vectors: call mvstore.search.sparse.attach_sparse_map(snapshot, 'spk4096t8') once, "
            "or build the index with a sparse spec such as 'spk4096t8'"
        )
    stage = _sparse_stage(m)
    if stage is None:
        raise InvalidDtypeError(f"sparse_map must be a sparse codec (spk.../slim...), got {type(m).__name__}")
    m = stage
    if m.dim_in != snapshot.codec.dim_out:
        raise DimensionMismatchError(
            f"sparse map {m.spec()!r} takes dim {m.dim_in} but the index decodes to dim {snapshot.codec.dim_out}; "
            "fit the map on the index's decoded vectors (attach_sparse_map does)"
        )
    m._check_fitted()
    return m, False


def attach_sparse_map(
    snapshot: Any, sparse_map: Any = "spk4096t8", *, sample: int = 200_000, seed: int = 0
) -> Any:
    """Give a dense-code snapshot a sparse map for ``candidates="sparse"`` (sparse prefilter + dense rerank).

    ``sparse_map`` is a fitted sparse codec taking the index's decoded dim, or a spec token
    (``spk<V>t<t>[p<thr>]``) to fit on up to ``sample`` decoded vectors of the snapshot (seeded). The map is
    stored in ``snapshot.extras["sparse_map"]``; posting lists are built on first use. Returns the map.
    """
    if _sparse_stage(snapshot.codec) is not None:
        raise SpecError(
            f"the index codec {snapshot.codec.spec()!r} is already sparse: its codes are the posting-list terms"
        )
    if isinstance(sparse_map, str):
        params = None
        for cls in REGISTRY.values():
            if issubclass(cls, SparseCodec):
                params = cls.parse_token(sparse_map)
                if params is not None:
                    break
        if params is None:
            raise SpecError(f"{sparse_map!r} is not a sparse map token; expected e.g. 'spk4096t8'")
        codec = cls(snapshot.codec.dim_out, **params)
        rng = np.random.default_rng(seed)
        n = snapshot.n_vectors
        rows = np.sort(rng.choice(n, min(n, sample), replace=False))
        codec.fit(snapshot.codec.decode(snapshot.codes[rows]))
        sparse_map = codec
    snapshot.extras.pop(_EXTRAS_KEY, None)
    snapshot.extras["sparse_map"] = sparse_map
    sparse_map_of(snapshot)  # validates dims / fitted state
    return sparse_map


def _postings_for(snapshot: Any, m: Any, own: bool) -> SparsePostings:
    """Posting lists of ``snapshot`` under map ``m``, cached in ``snapshot.extras`` (one build per snapshot)."""
    cached = snapshot.extras.get(_EXTRAS_KEY)
    if cached is not None and cached[0] is m:
        return cached[1]
    n = snapshot.n_vectors
    ids = np.zeros((n, m.top), np.int64)
    w = np.zeros((n, m.top), np.float32)
    step = max(1, _BLOCK // max(m.top, m.dim_in))
    for a in range(0, n, step):
        codes = snapshot.codes[a : a + step]
        if own:
            ids[a : a + step], w[a : a + step] = m.sparse_decode(codes)
        else:
            ids[a : a + step], w[a : a + step] = m.sparse_transform(snapshot.codec.decode(codes))
    p = build_sparse_postings(ids, w, snapshot.offsets, m.vocab)
    snapshot.extras[_EXTRAS_KEY] = (m, p)
    return p


# ------------------------------------------------------------------------------------------ stage 1
class SparseCandidates(CandidateGenerator):
    """Stage 1 over sparse posting lists: the best ``n`` documents by ``alpha * upper + (1 - alpha) * lower``.

    ``queries`` given to :meth:`candidates` are *transformed* by the snapshot's codec (the searcher's
    convention): the ``(n, V)`` sparse vectors for a sparse index, dense ``(n, dim_out)`` vectors for a dense
    index with a side map (the map is applied here). ``alpha=1`` (the default) ranks by the upper bound
    alone, SLIM's first stage and the cheapest (how much of the exhaustive sparse top 10 it keeps:
    ``benchmarks/slim_bench.py``); ``alpha=0`` by the lower bound.
    """

    def __init__(self, postings: SparsePostings, sparse_map: Any, *, own: bool, alpha: float = 1.0):
        if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not 0.0 <= alpha <= 1.0:
            raise SearchParamsError(
                f"alpha={alpha!r} must be a number in [0, 1] (1 = upper bound, 0 = lower)"
            )
        self.postings = postings
        self.sparse_map = sparse_map
        self.own = own
        self.alpha = float(alpha)
        self.n_docs = postings.n_docs

    @classmethod
    def from_snapshot(cls, snapshot: Any, *, sparse_map: Any = None, alpha: float = 1.0) -> SparseCandidates:
        """Generator for ``snapshot`` (posting lists cached in ``snapshot.extras``)."""
        m, own = sparse_map_of(snapshot, sparse_map)
        return cls(_postings_for(snapshot, m, own), m, own=own, alpha=alpha)

    def sparse_queries(self, queries: Any) -> list[tuple[np.ndarray, np.ndarray, np.ndarray, int]]:
        """Transformed queries -> per query its non-zero entries ``(token, term, weight)`` and token count."""
        m = self.sparse_map
        qs = as_query_list(queries, m.vocab if self.own else m.dim_in)
        out = []
        for q in qs:
            if self.own:
                tok, term, w = _nonzero_entries(q)
            else:
                ids, wt = m.sparse_transform(np.ascontiguousarray(q, np.float32))
                used = wt > 0
                tok = np.broadcast_to(np.arange(len(q))[:, None], ids.shape)[used]
                term, w = ids[used], wt[used]
            out.append((tok, term, w, len(q)))
        return out

    def scores(self, queries: Any, *, lower: bool = True) -> list[tuple[np.ndarray | None, np.ndarray]]:
        """Per query ``(lower, upper)`` bounds for every document (``lower`` None when not asked for)."""
        return [
            bounds(self.postings, t, v, w, nq, lower=lower) for t, v, w, nq in self.sparse_queries(queries)
        ]

    def candidates(self, queries: Any, n: int, allowed: np.ndarray | None = None) -> list[np.ndarray]:
        n = check_n(n)
        mask = check_allowed(allowed, self.n_docs)
        rows = (
            np.arange(self.n_docs, dtype=np.int64) if mask is None else np.flatnonzero(mask).astype(np.int64)
        )
        out = []
        for lower, upper in self.scores(queries, lower=self.alpha < 1.0):
            s = (upper if lower is None else self.alpha * upper + (1.0 - self.alpha) * lower)[rows]
            out.append(top_k(rows, s, int(n))[0])
        return out


# ------------------------------------------------------------------------------------------ two stages
class SparseSearcher:
    """SLIM two-stage search on one snapshot; same ``search(queries, k, allowed)`` as
    :class:`~mvstore.search.searcher.Searcher`.

    Stage 1: :class:`SparseCandidates` keeps ``params.n_rerank`` documents. Stage 2 (``rerank``):
    ``"sparse"`` = exact sparse MaxSim from the stored sparse codes (needs a sparse index); ``"dense"`` =
    exact MaxSim over the snapshot's decoded vectors (needs a dense index with a side map); ``"auto"`` picks
    the one the index supports.
    """

    def __init__(
        self,
        snapshot: Any,
        params: SearchParams | None = None,
        *,
        sparse_map: Any = None,
        alpha: float = 1.0,
        rerank: str = "auto",
    ):
        if params is not None and not isinstance(params, SearchParams):
            raise InvalidDtypeError(f"params must be a SearchParams, got {type(params).__name__}")
        self.snapshot = snapshot
        self.params = params or SearchParams(candidates="sparse")
        if str(self.params.device).startswith("cuda"):
            raise SearchParamsError(
                f"device={self.params.device!r}: SLIM sparse search runs on the CPU only; use device='cpu' or 'auto'"
            )
        self.generator = SparseCandidates.from_snapshot(snapshot, sparse_map=sparse_map, alpha=alpha)
        own = self.generator.own
        if rerank == "auto":
            rerank = "sparse" if own else "dense"
        if rerank not in ("sparse", "dense"):
            raise SearchParamsError(f"rerank={rerank!r} must be 'auto', 'sparse' or 'dense'")
        if rerank == "sparse" and not own:
            raise SearchParamsError(
                "rerank='sparse' needs sparse codes, but this index stores dense codes; use rerank='dense'"
            )
        if rerank == "dense" and own:
            raise SearchParamsError(
                "rerank='dense' needs dense codes, but this index stores only sparse codes; use rerank='sparse'"
            )
        self.rerank = rerank

    def search(
        self, queries: Any, k: int, allowed: np.ndarray | None = None
    ) -> list[tuple[np.ndarray, np.ndarray]]:
        s = self.snapshot
        k = check_k(k)
        queries = as_ragged(queries, dim=s.codec.dim_in, what="queries")
        mask = search_mask(allowed, s)
        out: list[tuple[np.ndarray, np.ndarray]] = []
        n = max(self.params.n_rerank, k)
        bs = self.params.batch_size
        for a in range(0, len(queries), bs):
            batch = queries[a : a + bs]
            qt = Ragged(
                np.ascontiguousarray(s.codec.transform_query(batch.values), np.float32), batch.offsets
            )
            cands = self.generator.candidates(qt, n, mask)
            out.extend(
                top_k(rows, self.score_rows(qt[i : i + 1], rows)[0], k) for i, rows in enumerate(cands)
            )
        return out

    def score_rows(self, qt: Ragged, rows: np.ndarray) -> np.ndarray:
        """Exact stage-2 scores ``(n_queries, len(rows))`` of transformed queries against documents ``rows``."""
        s = self.snapshot
        codes, offs = s.gather(rows)
        if self.rerank == "dense":
            return maxsim_batch(qt, Ragged(s.codec.decode(codes), offs))
        ids, w = self.generator.sparse_map.sparse_decode(codes)
        return sparse_maxsim_codes(qt.values, qt.offsets, ids, w, offs)
