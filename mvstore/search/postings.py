"""Posting lists for the centroid prefilter, as CSR arrays built once per snapshot (vectorized numpy).

Every stored vector has a *term*: the id of its nearest stage-1 centroid. From ``terms`` and the
documents' ``offsets`` we build two CSR views of the same set of unique ``(doc, term)`` pairs:

* ``term -> docs`` (the posting lists probed at query time), docs sorted ascending within each term;
* ``doc -> terms`` (each document's unique centroids, used to score the PLAID "centroid interaction").

>>> import numpy as np
>>> p = build_postings(np.array([2, 0, 2, 1, 1]), np.array([0, 3, 5]), n_terms=3)
>>> [p.docs_of(t).tolist() for t in range(3)]
[[0], [1], [0]]
>>> [p.doc_terms[p.doc_offsets[d]:p.doc_offsets[d + 1]].tolist() for d in range(2)]
[[0, 2], [1]]
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..codecs.base import default_n_centroids
from ..exceptions import DimensionMismatchError, InvalidDtypeError, InvalidVectorsError
from ..ragged import ranges

__all__ = [
    "Postings",
    "build_postings",
    "append_postings",
    "default_n_centroids",
    "fit_centroids",
    "assign_terms",
    "CENTROID_SAMPLE",
    "MIN_POINTS_PER_CENTROID",
]

#: training vectors per stage-1 centroid the store fits k-means on (when it has that many)
CENTROID_SAMPLE = 40
#: fewest training vectors per centroid: the store sizes centroids to keep at least this many (faiss's own
#: floor, 39, only prints a warning, and did on every default build under ~160k vectors)
MIN_POINTS_PER_CENTROID = 16


@dataclass(frozen=True, eq=False)
class Postings:
    """Both CSR views of the unique ``(doc, term)`` pairs of one snapshot. Term ``t``'s documents are
    ``term_docs[term_starts[t]:term_ends[t]]``: :func:`build_postings` lays the lists out back to back,
    :func:`append_postings` grows them in place where there is room (see :class:`_Arena`)."""

    #: (n_terms,) int64 start and end of each term's list in ``term_docs``
    term_starts: np.ndarray
    term_ends: np.ndarray
    #: int32 documents of each term, ascending within a term; positions outside every list are unused
    term_docs: np.ndarray
    #: (n_docs + 1,) int64 offsets into ``doc_terms``
    doc_offsets: np.ndarray
    #: (n_pairs,) int32 unique terms of each document, ascending within a document
    doc_terms: np.ndarray
    #: the slack bookkeeping of appended versions (None for a built one, until its first append)
    arena: _Arena | None = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        """Check, once per build, what the compiled search kernels rely on without bounds checks: C-contiguous
        int64 bounds, each term's list inside ``term_docs``, ``doc_offsets`` from 0 to the pair count,
        non-decreasing, and int32 ids inside ``[0, n_docs)`` / ``[0, n_terms)`` (:mod:`mvstore.search._kernels`
        only checks per-query arrays against these counts)."""
        for what, a, want in (
            ("term_starts", self.term_starts, np.int64),
            ("term_ends", self.term_ends, np.int64),
            ("term ids", self.term_docs, np.int32),
            ("doc_offsets", self.doc_offsets, np.int64),
            ("doc ids", self.doc_terms, np.int32),
        ):
            if not (isinstance(a, np.ndarray) and a.dtype == want and a.ndim == 1 and a.flags.c_contiguous):
                raise InvalidDtypeError(
                    f"Postings {what} must be a C-contiguous 1-D {np.dtype(want)} array; build postings with build_postings"
                )
        s, e = self.term_starts, self.term_ends
        if len(s) != len(e) or (len(s) and (s.min() < 0 or (e < s).any() or e.max() > len(self.term_docs))):
            raise InvalidVectorsError(
                f"Postings term lists must lie inside term_docs ({len(self.term_docs)} entries), start <= end; "
                "build postings with build_postings"
            )
        off = self.doc_offsets
        if len(off) == 0 or off[0] != 0 or off[-1] != len(self.doc_terms) or (np.diff(off) < 0).any():
            raise InvalidVectorsError(
                f"Postings doc_offsets must rise from 0 to {len(self.doc_terms)}; build postings with build_postings"
            )
        if self.n_pairs != len(self.doc_terms):
            raise DimensionMismatchError(
                "Postings term -> docs and doc -> terms views hold different pair counts; "
                "build postings with build_postings"
            )
        for ids, n, what in (
            (self.term_docs[ranges(s, e - s)], self.n_docs, "document"),
            (self.doc_terms, self.n_terms, "term"),
        ):
            if len(ids) and (int(ids.min()) < 0 or int(ids.max()) >= n):
                raise InvalidVectorsError(
                    f"Postings hold {what} ids outside [0, {n}); build postings with "
                    "build_postings from terms inside [0, n_terms)"
                )

    @property
    def n_terms(self) -> int:
        return len(self.term_starts)

    @property
    def n_docs(self) -> int:
        return len(self.doc_offsets) - 1

    @property
    def n_pairs(self) -> int:
        return int((self.term_ends - self.term_starts).sum())

    def docs_of(self, term: int) -> np.ndarray:
        """The documents of ``term``, ascending."""
        return self.term_docs[self.term_starts[term] : self.term_ends[term]]

    @property
    def nbytes(self) -> int:
        return sum(
            a.nbytes
            for a in (self.term_starts, self.term_ends, self.term_docs, self.doc_offsets, self.doc_terms)
        )


def build_postings(terms: np.ndarray, offsets: np.ndarray, n_terms: int) -> Postings:
    """CSR posting lists from per-vector ``terms`` (n_vectors,) and document ``offsets`` (n_docs + 1,).

    One ``np.unique`` over ``doc * n_terms + term`` keys gives the doc-major view; a stable argsort by
    term gives the term-major one.
    """
    terms = np.asarray(terms)
    offsets = np.asarray(offsets, np.int64)
    if terms.dtype.kind not in "iu":
        raise InvalidDtypeError(f"terms have dtype {terms.dtype}; expected integer centroid ids (int32)")
    if terms.ndim != 1 or len(terms) != offsets[-1]:
        raise DimensionMismatchError(
            f"terms must be 1-D with one entry per stored vector ({int(offsets[-1])}), got shape {terms.shape}"
        )
    if len(terms) and (terms.min() < 0 or terms.max() >= n_terms):
        raise InvalidVectorsError(
            f"terms must lie in [0, {n_terms}) (one id per centroid), got range "
            f"[{int(terms.min())}, {int(terms.max())}]; recompute terms against the snapshot's centroids"
        )
    n_docs = len(offsets) - 1
    seg = np.repeat(np.arange(n_docs, dtype=np.int64), np.diff(offsets))
    keys = np.unique(seg * np.int64(n_terms) + terms.astype(np.int64))
    doc = (keys // n_terms).astype(np.int32)
    doc_terms = (keys % n_terms).astype(np.int32)
    doc_offsets = np.zeros(n_docs + 1, np.int64)
    np.cumsum(np.bincount(doc, minlength=n_docs), out=doc_offsets[1:])
    order = np.argsort(doc_terms, kind="stable")
    term_docs = doc[order]
    term_offsets = np.zeros(n_terms + 1, np.int64)
    np.cumsum(np.bincount(doc_terms, minlength=n_terms), out=term_offsets[1:])
    return Postings(term_offsets[:-1].copy(), term_offsets[1:].copy(), term_docs, doc_offsets, doc_terms)


#: an arena is repacked once its array passes twice the pairs of the version appended to plus this many
REPACK_SLACK = 1 << 16


class _Arena:
    """The term lists of a chain of appended snapshots, in one growing int32 array with room after each list.

    A version's lists are ranges of the array that are never written again: an append writes a term's new
    documents right after its list when no other version has written there and its region has room (in
    place, O(new documents)); otherwise it first moves the list to the end of the array with a quarter more
    room (O(list)). The array is replaced by a larger copy when full (older versions keep the old one), and
    repacked without holes once holes are most of it."""

    def __init__(self, p: Postings):
        self.data = p.term_docs
        self.top = len(p.term_docs)
        #: per term: where its region ends, and the furthest any version's list reaches
        self.caps = p.term_ends.copy()
        self.filled = p.term_ends.copy()
        self.lock = threading.Lock()

    def append(self, p: Postings, q: Postings) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(term_docs, term_starts, term_ends)`` of ``p`` plus ``q``'s pairs (documents after ``p``'s)."""
        k = q.term_ends - q.term_starts
        touched = np.flatnonzero(k)
        kt = k[touched]
        with self.lock:
            starts, ends = p.term_starts.copy(), p.term_ends.copy()
            room = (self.filled[touched] == ends[touched]) & (ends[touched] + kt <= self.caps[touched])
            move = touched[~room]
            if len(move):
                lens = ends[move] - starts[move]
                size = lens + k[move]
                cap = size + np.maximum(size // 4, 4)
                need = self.top + int(cap.sum())
                if need > len(self.data):
                    self._grow(need)
                at = self.top + np.concatenate([[0], np.cumsum(cap)[:-1]])
                self.data[ranges(at, lens)] = self.data[ranges(starts[move], lens)]
                starts[move], ends[move], self.caps[move] = at, at + lens, at + cap
                self.top = need
            self.data[ranges(ends[touched], kt)] = q.term_docs + np.int32(p.n_docs)
            ends[touched] += kt
            self.filled[touched] = ends[touched]
            return self.data, starts, ends

    def _grow(self, need: int) -> None:
        data = np.empty(max(need, len(self.data) + len(self.data) // 4), np.int32)
        data[: self.top] = self.data[: self.top]
        self.data = data


def append_postings(p: Postings, terms: np.ndarray, offsets: np.ndarray, concat: Any = None) -> Postings:
    """``p`` plus the pairs of documents appended after its last one: ``terms`` and ``offsets`` (from 0) of
    the new documents only. Equal to :func:`build_postings` over all documents: the new documents' rows are
    larger than every old one, so their pairs go at the end of each term's list, written in place
    (:class:`_Arena`: O(new pairs), nothing of ``p`` is copied or changed); only the new pairs are sorted and
    checked. The document side only grows: ``concat(name, old, new)`` joins each of its arrays
    (``doc_offsets``, ``doc_terms``; default: :func:`numpy.concatenate`, the store passes append-only buffers
    that copy nothing).

    >>> old = build_postings(np.array([2, 0, 2]), np.array([0, 2, 3]), n_terms=3)
    >>> new = append_postings(old, np.array([0, 0, 1]), np.array([0, 3]))
    >>> full = build_postings(np.array([2, 0, 2, 0, 0, 1]), np.array([0, 2, 3, 6]), n_terms=3)
    >>> all((new.docs_of(t) == full.docs_of(t)).all() for t in range(3))
    True
    """
    q = build_postings(terms, offsets, p.n_terms)  # checks the new terms
    arena = p.arena
    if arena is None or arena.top > 2 * (p.n_pairs + q.n_pairs) + REPACK_SLACK:
        if arena is not None:  # holes are most of the array: repack the lists back to back (O(n) once per n)
            lens = p.term_ends - p.term_starts
            packed = p.term_docs[ranges(p.term_starts, lens)]
            ends = np.cumsum(lens)
            p = Postings(ends - lens, ends, packed, p.doc_offsets, p.doc_terms)
        arena = _Arena(p)
    term_docs, starts, ends = arena.append(p, q)
    join = concat or (lambda name, old, new: np.concatenate([old, new]))
    merged = object.__new__(Postings)  # both parts were checked when made; the merge keeps every invariant
    for name, value in (
        ("term_starts", starts),
        ("term_ends", ends),
        ("term_docs", term_docs),
        ("doc_offsets", join("doc_offsets", p.doc_offsets, p.doc_offsets[-1] + q.doc_offsets[1:])),
        ("doc_terms", join("doc_terms", p.doc_terms, q.doc_terms)),
        ("arena", arena),
    ):
        object.__setattr__(merged, name, value)
    return merged


def fit_centroids(
    sample: np.ndarray, n_centroids: int, *, niter: int = 10, seed: int = 0, spherical: bool = True
) -> np.ndarray:
    """k-means centroids ``(n_centroids, dim)`` float32 of a sample of stored (decoded) vectors (faiss)."""
    import faiss

    x = np.ascontiguousarray(sample, dtype=np.float32)
    if x.ndim != 2 or len(x) < n_centroids:
        raise InvalidVectorsError(
            f"k-means needs a 2-D sample with at least n_centroids={n_centroids} rows, got shape {x.shape}; "
            "use fewer centroids or a larger sample"
        )
    km = faiss.Kmeans(
        x.shape[1], int(n_centroids), niter=niter, seed=seed, spherical=spherical, verbose=False
    )
    km.cp.max_points_per_centroid = 256
    km.cp.min_points_per_centroid = MIN_POINTS_PER_CENTROID
    km.train(x)
    return np.ascontiguousarray(km.centroids, dtype=np.float32)


#: above this many centroids, terms are assigned through an inverted index over the centroids
EXACT_ASSIGN_MAX = 4096


def assign_terms(vectors: np.ndarray, centroids: np.ndarray, *, batch: int = 1 << 16) -> np.ndarray:
    """Nearest centroid (max inner product) of each vector -> ``(n,)`` int32, in bounded-memory batches.

    Up to :data:`EXACT_ASSIGN_MAX` centroids the search is exact (flat). Beyond that (large corpora, where
    a flat search would cost ``n_vectors x n_centroids`` dot products) the centroids are grouped by an
    inverted index of ``sqrt(n_centroids)`` lists and each vector searches its 16 nearest lists: the term
    is then the best centroid of those, nearly always the exact nearest (a term only has to be a good
    stage-1 posting list, exact MaxSim is stage 2's job)."""
    import faiss

    c = np.ascontiguousarray(centroids, dtype=np.float32)
    if vectors.ndim != 2 or vectors.shape[1] != c.shape[1]:
        raise DimensionMismatchError(
            f"vectors of shape {vectors.shape} do not match centroids of dim {c.shape[1]}"
        )
    index: faiss.Index
    if len(c) <= EXACT_ASSIGN_MAX:
        index = faiss.IndexFlatIP(c.shape[1])
    else:
        nlist = int(2 ** round(np.log2(np.sqrt(len(c)))))
        ivf = faiss.IndexIVFFlat(faiss.IndexFlatIP(c.shape[1]), c.shape[1], nlist, faiss.METRIC_INNER_PRODUCT)
        ivf.cp.min_points_per_centroid = 1
        ivf.train(c)
        ivf.nprobe = 16
        index = ivf
    index.add(c)
    out = np.empty(len(vectors), np.int32)
    for a in range(0, len(vectors), batch):
        x = np.ascontiguousarray(vectors[a : a + batch], dtype=np.float32)
        _, i = index.search(x, 1)
        miss = np.flatnonzero(i[:, 0] < 0)  # every probed list empty: fall back to the exact search
        if len(miss):
            i[miss, 0] = np.argmax(x[miss] @ c.T, axis=1)
        out[a : a + batch] = i[:, 0]
    return out
