"""Two-stage search over a :class:`~mvstore.search.snapshot.Snapshot`.

Stage 1 (:mod:`mvstore.search.candidates`) picks candidate rows per query, with the ``allowed`` mask
applied before any scoring. Stage 2 scores the candidates' packed codes by exact MaxSim and keeps the top
``k``. On the CPU, codecs whose decode is a sum of one term per code nibble or byte (``bin``, ``sq4``,
``pq``) are scored through a per-query table (``Codec.score_table``) by a compiled kernel, without
decoding; others are decoded and multiplied (numpy); on CUDA, ``codec.decode_torch`` and a matrix product.
Decoding is chunked over vectors so memory stays bounded for any candidate count (the exhaustive oracle
reranks the whole corpus this way).

On CUDA both stages run on the GPU (torch); the CPU path is numpy. Both give the same ranking (ties
aside); ``backend="torch"`` runs the GPU code path on the CPU, which is how the tests check it without
a GPU.

The one place a snapshot's searcher and its stage-1 generator are chosen: :func:`make_searcher` (the store's
entry) and :func:`make_generator` (the :class:`Searcher`'s), at the end of this module; both searchers
(:class:`Searcher`, :class:`~mvstore.search.sparse.SparseSearcher`) satisfy :class:`SnapshotSearcher`.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import numpy as np

from .._rank import top_k
from .._threads import cpu_threads, split_run
from ..codecs.sparse import is_sparse_codec
from ..device import device_name, resolve_device
from ..exceptions import InvalidDtypeError, InvalidOperationError, InvalidVectorsError
from ..ragged import Ragged, as_ragged, take_index
from .candidates import (
    CandidateGenerator,
    CentroidCandidates,
    ExhaustiveCandidates,
    search_mask,
)
from .maxsim import doc_chunks, maxsim_batch, maxsim_torch_tensors
from .params import SearchParams, SearchParamsError, check_k
from .snapshot import Snapshot
from .sparse import SparseCandidates, SparseSearcher

__all__ = ["Searcher", "SnapshotSearcher", "candidate_kind", "make_generator", "make_searcher"]

#: decoded vectors held at once in stage 2 (per chunk), bounding memory for large candidate sets
MAX_DECODED_VECTORS = 1 << 17


class Searcher:
    """Search one snapshot. ``search(queries, k, allowed)`` -> per query ``(rows, scores)`` best first.

    ``params.candidates``: ``"auto"`` uses centroid posting lists when the snapshot has terms and
    centroids, else every document (``"exhaustive"``, the oracle). ``backend``: ``None`` (numpy on the CPU,
    torch on CUDA) or ``"torch"`` (force the torch path, e.g. to test the GPU code on a CPU).
    """

    def __init__(self, snapshot: Snapshot, params: SearchParams | None = None, *, backend: str | None = None):
        if params is not None and not isinstance(params, SearchParams):
            raise InvalidDtypeError(
                f"params must be a SearchParams, got {type(params).__name__}; e.g. SearchParams(nprobe=8)"
            )
        if backend not in (None, "numpy", "torch"):
            raise SearchParamsError(f"backend={backend!r} must be None, 'numpy' or 'torch'")
        self.snapshot = snapshot
        self.params = params or SearchParams()
        name = device_name(self.params.device)
        if backend == "numpy" and name != "cpu":
            raise SearchParamsError("backend='numpy' runs on the CPU only; use device='cpu' or backend=None")
        self.use_torch = backend == "torch" or name != "cpu"
        #: the torch.device of the torch path; "cpu" on the numpy path (which never imports torch)
        self.device = (
            resolve_device(name, feature="the torch search backend (backend='torch')")
            if self.use_torch
            else "cpu"
        )
        #: CPU threads one query's heavy steps are split over
        self.threads = self.params.threads or cpu_threads()
        self._generator: CandidateGenerator | None = None
        self._has_tables: bool | None = None
        self._codes_t: Any = None

    # ------------------------------------------------------------------------------- stage 1
    @property
    def candidate_kind(self) -> str:
        return candidate_kind(self.snapshot, self.params)

    @property
    def generator(self) -> CandidateGenerator:
        """The stage-1 generator (built once per Searcher; posting lists are built here)."""
        if self._generator is None:
            self._generator = make_generator(
                self.snapshot, self.params, threads=self.threads, device=self.device
            )
        return self._generator

    # ------------------------------------------------------------------------------- search
    def search(
        self, queries: Any, k: int, allowed: np.ndarray | None = None
    ) -> list[tuple[np.ndarray, np.ndarray]]:
        """Top-``k`` rows and exact MaxSim scores (over decoded vectors) per query, best first.

        ``queries``: raw query token vectors (Ragged or list of ``(n, dim_in)`` arrays).
        ``allowed``: boolean mask over rows; disallowed rows never become candidates.
        """
        s = self.snapshot
        k = check_k(k)
        queries = as_ragged(queries, dim=s.codec.dim_in, what="queries")
        mask = search_mask(allowed, s)
        if len(queries) and (queries.lengths == 0).any():
            raise InvalidVectorsError("a query has no token vectors; every query needs at least one")
        out: list[tuple[np.ndarray, np.ndarray]] = []
        if s.n_docs == 0:
            return [(np.zeros(0, np.int64), np.zeros(0, np.float32)) for _ in range(len(queries))]
        bs = self.params.batch_size
        # no BLAS thread limit here: it is process-wide state (overlapping searches would leave it set, and it
        # slows the caller's own numpy); the steps split over the search pool call no BLAS
        for a in range(0, len(queries), bs):
            batch = queries[a : a + bs]
            qt = Ragged(
                np.ascontiguousarray(s.codec.transform_query(batch.values), np.float32), batch.offsets
            )
            cands = self.stage1(qt, k, mask)
            scores = self._score_torch(qt, cands) if self.use_torch else self._score_numpy(qt, cands)
            out.extend(top_k(c, sc, k) for c, sc in zip(cands, scores))
        return out

    def stage1(self, qt: Ragged, k: int, mask: np.ndarray | None) -> list[np.ndarray]:
        """Candidate rows per transformed query (at least ``k`` whenever ``k`` rows are allowed)."""
        gen = self.generator
        n = max(self.params.n_rerank, k)
        if isinstance(gen, CentroidCandidates):
            return gen.candidates(qt, n, mask, min_count=k)
        return gen.candidates(qt, n, mask)

    # ------------------------------------------------------------------------------- stage 2
    def _plan(self, qt: Ragged, cands: list[np.ndarray]) -> np.ndarray | None:
        """The union of candidates when scoring every query against it costs at most twice the
        per-query work (e.g. exhaustive search), else None (score each query on its own candidates)."""
        lengths = np.diff(self.snapshot.offsets)
        if len(cands) == 1:
            return None
        union = np.unique(np.concatenate(cands)) if cands else np.zeros(0, np.int64)
        per_query = sum(int(lengths[c].sum()) * len(q) for c, q in zip(cands, qt))
        batched = int(lengths[union].sum()) * qt.n_tokens
        return union if batched <= 2 * per_query else None

    def _gather(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Packed code rows of documents ``rows`` and their offsets (no padding)."""
        return take_index(self.snapshot.offsets, rows)

    def _codes_of(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(codes, starts, lengths)``: document ``rows[i]``'s codes are ``codes[starts[i]:][:lengths[i]]`` (the
        snapshot's own codes, or for a bounded-memory snapshot the rows' codes read and packed)."""
        s = self.snapshot
        if s.codes is not None:
            starts = s.offsets[rows]
            return s.codes, starts, s.offsets[rows + 1] - starts
        codes, offs = s.gather(rows)
        return codes, offs[:-1], np.diff(offs)

    @property
    def has_tables(self) -> bool:
        """Whether the codec scores codes through per-query tables (``Codec.score_table``) on the CPU."""
        if self._has_tables is None:
            s = self.snapshot
            self._has_tables = s.codec.score_table(np.zeros((1, s.codec.dim_out), np.float32)) is not None
        return self._has_tables

    @property
    def _uses_tables(self) -> bool:
        """Stage 2 scores through tables, except for the exhaustive oracle, which stays on decode-and-multiply
        (an independent check of the tables)."""
        return self.candidate_kind != "exhaustive" and self.has_tables

    def _score_numpy(self, qt: Ragged, cands: list[np.ndarray]) -> list[np.ndarray]:
        union = self._plan(qt, cands)
        if union is not None:
            scores = self._maxsim_rows_numpy(qt, union)
            return [scores[i, np.searchsorted(union, c)] for i, c in enumerate(cands)]
        if not self._uses_tables:
            return [self._maxsim_rows_numpy(qt[i : i + 1], c)[0] for i, c in enumerate(cands)]
        codec = self.snapshot.codec
        return [self._maxsim_table(len(q), codec.score_table(q), c) for q, c in zip(qt, cands)]

    def _maxsim_table(self, nq: int, table: np.ndarray, rows: np.ndarray) -> np.ndarray:
        """One query's MaxSim over ``rows`` through its score table (no decoding: one table row per code
        nibble or byte), the rows split over this searcher's threads."""
        from ._kernels import table_maxsim

        codes, starts, lengths = self._codes_of(rows)
        parts = split_run(
            lambda a, b: table_maxsim(codes, starts[a:b], lengths[a:b], table, nq),
            len(rows),
            self.threads,
            min_part=32,
        )
        return parts[0] if len(parts) == 1 else np.concatenate(parts)

    def _maxsim_rows_numpy(self, qt: Ragged, rows: np.ndarray) -> np.ndarray:
        s = self.snapshot
        out = np.empty((len(qt), len(rows)), np.float32)
        if len(rows) == 0:
            return out
        lens = s.offsets[rows + 1] - s.offsets[rows]
        cum = np.zeros(len(rows) + 1, np.int64)
        np.cumsum(lens, out=cum[1:])
        for a, b in doc_chunks(cum, MAX_DECODED_VECTORS):
            codes, offs = s.gather(rows[a:b])
            out[:, a:b] = maxsim_batch(qt, Ragged(s.codec.decode(codes), offs))
        return out

    def _score_torch(self, qt: Ragged, cands: list[np.ndarray]) -> list[np.ndarray]:
        import torch

        dev = self.device
        qv, qoff = qt.torch(dev)
        union = self._plan(qt, cands)
        if union is not None:
            scores = self._maxsim_rows_torch(qv, qoff, union)
            return [scores[i, np.searchsorted(union, c)] for i, c in enumerate(cands)]
        out = []
        for i, c in enumerate(cands):
            a, b = int(qt.offsets[i]), int(qt.offsets[i + 1])
            qo = torch.tensor([0, b - a], device=dev)
            out.append(self._maxsim_rows_torch(qv[a:b], qo, c)[0])
        return out

    def _codes_tensor(self) -> Any:
        """The snapshot's codes on the device (uploaded once per Searcher; a view on the CPU); None for a
        bounded-memory snapshot (each chunk's codes are read and uploaded)."""
        if self._codes_t is None and self.snapshot.codes is not None:
            import torch

            self._codes_t = torch.from_numpy(np.ascontiguousarray(self.snapshot.codes)).to(self.device)
        return self._codes_t

    def _maxsim_rows_torch(self, qv: Any, qoff: Any, rows: np.ndarray) -> np.ndarray:
        import torch

        s = self.snapshot
        out = np.empty((len(qoff) - 1, len(rows)), np.float32)
        if len(rows) == 0:
            return out
        codes = self._codes_tensor()
        lens = s.offsets[rows + 1] - s.offsets[rows]
        cum = np.zeros(len(rows) + 1, np.int64)
        np.cumsum(lens, out=cum[1:])
        for a, b in doc_chunks(cum, MAX_DECODED_VECTORS):
            if codes is None:
                packed, offs = s.gather(rows[a:b])
                chunk = torch.from_numpy(packed).to(self.device)
            else:
                idx, offs = self._gather(rows[a:b])
                chunk = codes[torch.from_numpy(idx).to(self.device)]
            dec = s.codec.decode_torch(chunk)
            sc = maxsim_torch_tensors(qv, qoff, dec, torch.from_numpy(offs).to(self.device))
            out[:, a:b] = sc.cpu().numpy()
        return out


# ----------------------------------------------------------------------------------- the one factory
@runtime_checkable
class SnapshotSearcher(Protocol):
    """What the store asks of a searcher (:class:`Searcher`, :class:`~mvstore.search.sparse.SparseSearcher`)."""

    snapshot: Snapshot
    params: SearchParams

    def search(
        self, queries: Any, k: int, allowed: np.ndarray | None = None
    ) -> list[tuple[np.ndarray, np.ndarray]]: ...


def make_searcher(snapshot: Snapshot, params: SearchParams | None = None) -> SnapshotSearcher:
    """The searcher serving ``snapshot`` under ``params``: an index of sparse codes is searched by SLIM
    (posting-list stage 1 + exact sparse MaxSim on the codes, no ``V``-dim dense decode) unless ``params``
    asks for another stage 1; every other index by the dense two-stage :class:`Searcher`."""
    params = params or SearchParams()
    if params.candidates in ("auto", "sparse") and is_sparse_codec(snapshot.codec):
        _needs_codes(snapshot, "the sparse searcher of a sparse codec")
        return SparseSearcher(snapshot, params)
    if params.candidates == "sparse":
        _needs_codes(snapshot, "candidates='sparse'")
    return Searcher(snapshot, params)


def _needs_codes(snapshot: Snapshot, what: str) -> None:
    """InvalidOperationError when ``what`` builds its stage 1 from every code and ``snapshot`` keeps them on disk."""
    if snapshot.codes is None:
        raise InvalidOperationError(
            f"{what} builds its posting lists from every stored code, which memory='bounded' keeps on disk: "
            "open the index without memory='bounded' (or search it with candidates='auto' on a dense codec)"
        )


def candidate_kind(snapshot: Snapshot, params: SearchParams) -> str:
    """``params.candidates`` with ``"auto"`` resolved: centroid posting lists when the snapshot has terms (or
    their posting lists) and centroids, else every document (``"exhaustive"``, the oracle)."""
    if params.candidates == "auto":
        has_terms = (
            snapshot.terms is not None or "postings" in snapshot.extras
        ) and snapshot.centroids is not None
        return "centroid" if has_terms else "exhaustive"
    return params.candidates


def make_generator(
    snapshot: Snapshot, params: SearchParams, *, threads: int = 1, device: Any = "cpu"
) -> CandidateGenerator:
    """The stage-1 generator of ``params.candidates`` over ``snapshot`` (``threads``/``device``: the centroid
    generator's; posting lists are cached on the snapshot, so every searcher of one version shares them)."""
    kind = candidate_kind(snapshot, params)
    if kind == "exhaustive":
        return ExhaustiveCandidates(snapshot.n_docs)
    if kind == "sparse":
        return SparseCandidates.from_snapshot(snapshot)
    gen = CentroidCandidates.from_snapshot(
        snapshot,
        nprobe=params.nprobe,
        interaction=params.interaction,
        n_full=params.n_full,
        threads=threads,
        device=device,
        postings=snapshot.extras.get("postings"),
    )
    snapshot.extras.setdefault("postings", gen.postings)
    return gen
