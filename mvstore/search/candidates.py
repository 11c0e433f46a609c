"""Stage 1: candidate generators. One small interface: ``candidates(queries, n, allowed) -> rows``.

``queries`` are *transformed* query token matrices (``codec.transform_query`` already applied): a
:class:`~mvstore.Ragged` or a list of ``(n_tokens, dim_out)`` matrices. The result is one int64 array
of snapshot rows per query, best first where the generator ranks them. ``allowed`` (a boolean mask over
rows, or None) is applied here, before any scoring: a filtered-out document never becomes a candidate.

* :class:`ExhaustiveCandidates`: every allowed document (the test oracle).
* :class:`CentroidCandidates`: PLAID-style centroid posting lists. Each query token probes its ``nprobe``
  most similar centroids; the documents on those posting lists are scored by *centroid interaction*
  (sum over query tokens of the best query-centroid similarity among the document's centroids) and the
  best ``n`` are kept. ``interaction="probed"`` counts only each token's probed centroids (a token none
  of whose probed centroids the document holds gets its ``(nprobe+1)``-th best similarity, the tightest
  upper bound on what the document's unprobed centroids could score);
  ``interaction="full"`` (PLAID) re-scores the best ``n_full`` of those by the max over every centroid the
  document holds (``doc -> terms`` CSR) and ranks by that. Ranking: score descending, ties by ascending row.
  The CPU path runs compiled kernels (:mod:`mvstore.search._kernels`); the torch twin (CUDA, or ``device``
  a torch CPU device in tests) computes the same with tensor ops.
* ``SearchParams(candidates="sparse")``: the SLIM generator, :class:`mvstore.search.sparse.SparseCandidates`.

>>> import numpy as np
>>> from mvstore import Ragged
>>> cg = CentroidCandidates(terms=np.array([0, 1, 1, 2]), offsets=np.array([0, 2, 3, 4]),
...                         centroids=np.eye(3, dtype=np.float32), nprobe=1)
>>> [r.tolist() for r in cg.candidates([np.array([[0.0, 1.0, 0.0]], np.float32)], n=5)]
[[0, 1]]
>>> [r.tolist() for r in ExhaustiveCandidates(3).candidates([np.ones((1, 3), np.float32)], n=5,
...                                                        allowed=np.array([True, False, True]))]
[[0, 2]]
"""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from typing import Any

import numpy as np

from .._checks import check_int
from .._rank import top_k, top_k_torch
from .._threads import split_run
from ..exceptions import (
    DimensionMismatchError,
    InvalidDtypeError,
    InvalidVectorsError,
)
from ..ragged import Ragged
from .params import INTERACTIONS, SearchParams, SearchParamsError
from .postings import Postings, build_postings

__all__ = [
    "CandidateGenerator",
    "ExhaustiveCandidates",
    "CentroidCandidates",
    "as_query_list",
    "check_allowed",
    "check_n",
    "search_mask",
]


def as_query_list(queries: Any, dim: int | None = None) -> list[np.ndarray]:
    """Transformed queries (Ragged or list of matrices) -> list of float32 ``(n_tokens, dim)`` matrices."""
    if isinstance(queries, Ragged):
        mats = [np.asarray(q, np.float32) for q in queries]
    elif isinstance(queries, (list, tuple)):
        mats = [np.asarray(q.detach().cpu() if hasattr(q, "detach") else q, np.float32) for q in queries]
    else:
        raise InvalidDtypeError(
            f"queries must be a Ragged or a list of (n_tokens, dim) matrices, got {type(queries).__name__}"
        )
    for i, q in enumerate(mats):
        if q.ndim != 2 or len(q) == 0:
            raise InvalidVectorsError(
                f"query {i} has shape {q.shape}; each query needs >= 1 token vector (2-D)"
            )
        if dim is not None and q.shape[1] != dim:
            raise DimensionMismatchError(
                f"query {i} has dim {q.shape[1]} but the index's vectors have dim {dim}; "
                "pass queries through codec.transform_query first"
            )
    return mats


def check_allowed(allowed: Any, n_docs: int) -> np.ndarray | None:
    """Validate an ``allowed`` mask: None or a boolean array with one entry per row."""
    if allowed is None:
        return None
    mask = np.asarray(allowed)
    if mask.dtype != bool:
        raise InvalidDtypeError(
            f"allowed must be a boolean mask over rows, got dtype {mask.dtype}; "
            "for row numbers use mask = np.zeros(n_docs, bool); mask[rows] = True"
        )
    if mask.shape != (n_docs,):
        raise DimensionMismatchError(f"allowed has shape {mask.shape} but the snapshot has {n_docs} rows")
    return mask


def check_n(n: Any) -> int:
    """The candidate count ``n`` of :meth:`CandidateGenerator.candidates` as an int >= 1."""
    return check_int("n", n, what="the number of candidates per query", error=SearchParamsError)


def search_mask(allowed: Any, snapshot: Any) -> np.ndarray | None:
    """The rows a search may return: ``allowed`` (validated by :func:`check_allowed`) and the snapshot's
    ``live`` rows (a snapshot derived incrementally keeps deleted rows, masked here, before stage 1)."""
    mask = check_allowed(allowed, snapshot.n_docs)
    live = snapshot.live
    if live is None:
        return mask
    return live if mask is None else mask & live


class CandidateGenerator(ABC):
    """Stage-1 interface shared by every generator (centroid, sparse, exhaustive)."""

    #: number of rows (documents) the generator covers
    n_docs: int

    @abstractmethod
    def candidates(self, queries: Any, n: int, allowed: np.ndarray | None = None) -> list[np.ndarray]:
        """Per query, at most ``n`` candidate rows (int64), best first where the generator can rank."""


class ExhaustiveCandidates(CandidateGenerator):
    """Every allowed row, for every query (``n`` is ignored: the oracle reranks everything)."""

    def __init__(self, n_docs: int):
        self.n_docs = int(n_docs)

    def candidates(self, queries: Any, n: int, allowed: np.ndarray | None = None) -> list[np.ndarray]:
        qs = as_query_list(queries)
        check_n(n)
        mask = check_allowed(allowed, self.n_docs)
        rows = (
            np.arange(self.n_docs, dtype=np.int64) if mask is None else np.flatnonzero(mask).astype(np.int64)
        )
        return [rows for _ in qs]


class CentroidCandidates(CandidateGenerator):
    """PLAID-style centroid prefilter over ``terms`` (nearest-centroid id of every stored vector).

    Build once per snapshot (:meth:`from_snapshot`); the posting lists are CSR arrays. ``device`` is
    ``"cpu"`` (numpy) or a torch device (the torch twin; CUDA keeps both stages on the GPU).
    """

    def __init__(
        self,
        terms: np.ndarray | None,
        offsets: np.ndarray,
        centroids: np.ndarray,
        *,
        nprobe: int = SearchParams.nprobe,
        interaction: str = SearchParams.interaction,
        n_full: int = SearchParams.n_full,
        threads: int = 1,
        device: Any = "cpu",
        postings: Postings | None = None,
    ):
        c = np.asarray(centroids)
        if c.ndim != 2 or c.dtype.kind != "f":
            raise InvalidDtypeError(
                f"centroids must be a float (n_centroids, dim) matrix, got {c.dtype} {c.shape}"
            )
        if interaction not in INTERACTIONS:
            raise SearchParamsError(f"interaction={interaction!r} is not one of {INTERACTIONS}")
        nprobe = check_int("nprobe", nprobe, what="centroids probed per query token", error=SearchParamsError)
        self.centroids = np.ascontiguousarray(c, dtype=np.float32)
        if postings is None:
            if terms is None:
                raise InvalidVectorsError(
                    "CentroidCandidates needs the terms of the stored vectors or their postings"
                )
            postings = build_postings(terms, offsets, len(c))
        self.postings = postings
        if not isinstance(self.postings, Postings) or self.postings.n_terms != len(c):
            raise DimensionMismatchError(
                f"postings for {getattr(self.postings, 'n_terms', '?')} terms do not fit {len(c)} centroids; "
                "pass the snapshot's own postings (or none: they are built from its terms)"
            )
        self.n_docs = self.postings.n_docs
        self.nprobe = int(min(nprobe, len(c)))
        self.interaction = interaction
        self.n_full = check_int(
            "n_full", n_full, what="candidates re-scored by full interaction", error=SearchParamsError
        )
        self.threads = max(1, int(threads))
        self.device = device
        self._t: dict[str, Any] | None = None
        self._local = threading.local()  # per-thread kernel scratch: concurrent searches share a generator

    @classmethod
    def from_snapshot(cls, snapshot: Any, **kw: Any) -> CentroidCandidates:
        if (snapshot.terms is None and kw.get("postings") is None) or snapshot.centroids is None:
            raise InvalidVectorsError(
                "this snapshot has no stage-1 centroids/terms; build the index with centroids (the store does "
                "this at train time) or search with SearchParams(candidates='exhaustive')"
            )
        return cls(snapshot.terms, snapshot.offsets, snapshot.centroids, **kw)

    @property
    def is_torch(self) -> bool:
        return not (isinstance(self.device, str) and self.device == "cpu")

    def candidates(
        self, queries: Any, n: int, allowed: np.ndarray | None = None, *, min_count: int = 0
    ) -> list[np.ndarray]:
        """Per query, the best ``n`` rows by centroid interaction.

        ``min_count``: when a query's probed posting lists hold fewer allowed documents than
        ``min(min_count, n_allowed)`` (e.g. under a selective filter), its ``nprobe`` is doubled until they
        do or every centroid is probed, so a search for ``k`` results finds ``k`` whenever ``k`` are allowed.
        """
        n = check_n(n)
        mask = check_allowed(allowed, self.n_docs)
        need = min(int(min_count), n, self.n_docs if mask is None else int(mask.sum()))
        if self.is_torch:
            return self._candidates_torch(queries, n, mask, need)
        qs = as_query_list(queries, self.centroids.shape[1])
        out = []
        for q in qs:
            st = self._similarities(q)
            nprobe = self.nprobe
            rows = self._one(st, len(q), n, mask, nprobe)
            while len(rows) < need and nprobe < len(self.centroids):
                nprobe = min(2 * nprobe, len(self.centroids))
                rows = self._one(st, len(q), n, mask, nprobe)
            out.append(rows)
        return out

    # ------------------------------------------------------------------------------ numpy path
    def _similarities(self, q: np.ndarray) -> np.ndarray:
        """``(n_centroids, width)`` query-centroid similarities of one query's tokens, transposed (a centroid's
        similarities to every token are contiguous) and padded with zero columns to a SIMD-friendly width;
        row blocks are computed on ``threads`` threads."""
        from ..codecs._bits import table_width
        from ._kernels import similarities

        c = self.centroids
        qt = np.zeros((c.shape[1], table_width(len(q))), np.float32)
        qt[:, : len(q)] = q.T
        st = np.empty((len(c), qt.shape[1]), np.float32)
        split_run(lambda a, b: similarities(c, qt, a, b, st), len(c), self.threads, min_part=1024)
        return st

    def _one(
        self, st: np.ndarray, nq: int, n: int, mask: np.ndarray | None, nprobe: int, with_scores: bool = False
    ) -> Any:
        """Candidates of one query (and their stage-1 scores if asked) from its transposed similarities
        (:meth:`_similarities`), with the compiled kernels."""
        from ._kernels import full_interaction, probed_interaction, top_probes

        p = self.postings
        slot = getattr(self._local, "slot", None)
        if slot is None:
            slot = self._local.slot = np.full(self.n_docs, -1, np.int32)
        # each token's nprobe best centroids, and its (nprobe+1)-th best similarity: the tightest upper bound
        # on what an unprobed centroid could score for it
        probe, bound = top_probes(st, nq, nprobe)
        rows, scores = probed_interaction(st, probe, bound, p, mask, slot)
        if self.interaction == "full":
            rows = np.sort(top_k(rows, scores, max(self.n_full, n))[0])
            parts = split_run(  # below ~1k rows a thread hand-off costs more than it saves
                lambda a, b: full_interaction(st, nq, rows[a:b], p),
                len(rows),
                self.threads,
                min_part=1024,
            )
            scores = parts[0] if len(parts) == 1 else np.concatenate(parts)
        best = top_k(rows, scores, n)
        return best if with_scores else best[0]

    # ------------------------------------------------------------------------------ torch twin
    def _tensors(self) -> dict[str, Any]:
        if self._t is None:
            import torch

            dev = self.device
            p = self.postings
            self._t = {
                "c": torch.from_numpy(self.centroids).to(dev),
                "ts": torch.from_numpy(p.term_starts).to(dev),
                "te": torch.from_numpy(p.term_ends).to(dev),
                "td": torch.from_numpy(p.term_docs.astype(np.int64)).to(dev),
                "do": torch.from_numpy(p.doc_offsets).to(dev),
                "dt": torch.from_numpy(p.doc_terms.astype(np.int64)).to(dev),
            }
        return self._t

    def _candidates_torch(self, queries: Any, n: int, mask: np.ndarray | None, need: int) -> list[np.ndarray]:
        import torch

        t = self._tensors()
        dev = t["c"].device
        if isinstance(queries, tuple) and len(queries) == 2 and hasattr(queries[0], "device"):
            qv, qoff = queries  # already transformed tensors on the device
            qoff = qoff.cpu().numpy()
        else:
            qs = as_query_list(queries, self.centroids.shape[1])
            qv = torch.from_numpy(np.concatenate(qs)).to(dev)
            qoff = np.concatenate([[0], np.cumsum([len(q) for q in qs])])
        tmask = None if mask is None else torch.from_numpy(mask).to(dev)
        sims = qv.float() @ t["c"].T
        out = []
        for i in range(len(qoff) - 1):
            s = sims[int(qoff[i]) : int(qoff[i + 1])]
            nprobe = self.nprobe
            rows = self._one_torch(s, n, tmask, nprobe)
            while len(rows) < need and nprobe < len(self.centroids):
                nprobe = min(2 * nprobe, len(self.centroids))
                rows = self._one_torch(s, n, tmask, nprobe)
            out.append(rows.cpu().numpy())
        return out

    def _one_torch(self, s: Any, n: int, mask: Any, nprobe: int) -> Any:
        import torch

        t = self._tensors()
        dev = s.device
        nq, n_c = s.shape
        if nprobe < n_c:
            pv, probe = torch.topk(s, nprobe + 1, dim=1)
            bound = pv[:, nprobe]
            pv, probe = pv[:, :nprobe].contiguous(), probe[:, :nprobe].contiguous()
        else:
            pv, probe = torch.topk(s, n_c, dim=1)
            bound = s.min(1).values
        nprobe = probe.shape[1]
        probe, pvf = probe.reshape(-1), pv.reshape(-1)
        starts = t["ts"][probe]
        lens = t["te"][probe] - starts
        docs = t["td"][_ranges_torch(starts, lens)]
        tok = torch.repeat_interleave(torch.arange(nq * nprobe, device=dev) // nprobe, lens)
        val = torch.repeat_interleave(pvf, lens)
        if mask is not None:
            keep = mask[docs]
            docs, tok, val = docs[keep], tok[keep], val[keep]
        cand, inv = torch.unique(docs, return_inverse=True)
        if len(cand) == 0:
            return cand
        m = bound.expand(len(cand), nq).contiguous().reshape(-1)
        m.scatter_reduce_(0, inv * nq + tok, val, reduce="amax", include_self=True)
        probed = m.reshape(len(cand), nq).sum(1)
        if self.interaction == "probed":
            return top_k_torch(cand, probed, n)
        cand = torch.sort(top_k_torch(cand, probed, max(self.n_full, n))).values
        dstarts = t["do"][cand]
        dlens = t["do"][cand + 1] - dstarts
        terms = t["dt"][_ranges_torch(dstarts, dlens)]
        seg = torch.repeat_interleave(torch.arange(len(cand), device=dev), dlens)
        mx = torch.full((len(cand), nq), float("-inf"), device=dev)
        mx.scatter_reduce_(0, seg.unsqueeze(1).expand(-1, nq), s.T[terms], reduce="amax", include_self=True)
        return top_k_torch(cand, mx.sum(1), n)


def _ranges_torch(starts: Any, lengths: Any) -> Any:
    """Torch twin of :func:`mvstore.search.postings.ranges`."""
    import torch

    total = int(lengths.sum())
    if total == 0:
        return torch.zeros(0, dtype=torch.int64, device=starts.device)
    ends = torch.cumsum(lengths, 0)
    shift = starts - (ends - lengths)
    return torch.repeat_interleave(shift, lengths) + torch.arange(total, device=starts.device)
