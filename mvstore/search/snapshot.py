"""The in-memory view of one index version that search runs on.

The store (``mvstore.store``) builds a :class:`Snapshot` from the Lance tables once per version and
keeps it; search (``mvstore.search``) only reads it. Codes stay packed: document ``i``'s stored
vectors are ``codes[offsets[i]:offsets[i + 1]]``.

A version derived incrementally from the previous one (``mvstore.store``: appended Lance fragments read and
appended, deleted rows masked) keeps the rows deleted since its last full load: ``live`` says which rows are
in the version, and search never returns the others. Its arrays are views of :class:`AppendBuffer` storage
shared with the version it was derived from.

A bounded-memory snapshot (``mvstore.open(uri, memory="bounded")``) holds no codes (``codes`` is None): stage 1
runs on its in-memory posting lists and centroids, and :meth:`Snapshot.gather` reads the codes of the rows
stage 2 scores through its ``code_source`` (the store's: Lance reads behind a bounded cache).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

import numpy as np

__all__ = ["Snapshot", "AppendBuffer", "CodeSource"]


class CodeSource(Protocol):
    """Where a bounded-memory snapshot's codes are read from."""

    def read(self, rows: np.ndarray) -> np.ndarray:
        """The codes of documents ``rows`` (any order), packed in that order: ``(sum of their vectors, code_size)``."""
        ...


@dataclass(frozen=True, eq=False)
class Snapshot:
    #: Lance version this snapshot was read from
    version: int
    #: the user's ids in row order (int64 numpy array or numpy array of str objects)
    ids: np.ndarray
    #: (n_vectors, code_size) uint8: every stored (pooled) vector's code, documents packed; None: bounded
    #: memory, the codes stay on disk (:meth:`gather`)
    codes: np.ndarray | None
    #: (n_docs + 1,) int64 offsets of each document's vectors in ``codes``
    offsets: np.ndarray
    #: fitted codec pipeline (``mvstore.codecs.Pipeline``): decode(codes), transform_query(q)
    codec: Any
    #: (n_docs,) int64 original (pre-pooling) token counts
    n_tokens: np.ndarray
    #: (n_vectors,) int32 stage-1 term (nearest centroid) of each stored vector, or None
    terms: np.ndarray | None = None
    #: (n_centroids, codec.dim_out) float32 stage-1 centroids, or None
    centroids: np.ndarray | None = None
    #: free-form extras a candidate generator may need (e.g. sparse postings), by name
    extras: dict[str, Any] = field(default_factory=dict)
    #: (n_docs,) bool: rows that are in this version (deleted rows are kept until the next full load); None: all
    live: np.ndarray | None = None
    #: bounded memory: reads the codes of given rows (``codes`` is None)
    code_source: CodeSource | None = None

    @property
    def n_docs(self) -> int:
        """Rows, deleted ones included (what row numbers and masks refer to)."""
        return len(self.offsets) - 1

    @property
    def n_live(self) -> int:
        """Documents in this version."""
        return self.n_docs if self.live is None else int(np.count_nonzero(self.live))

    @property
    def n_vectors(self) -> int:
        return int(self.offsets[-1])

    def gather(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The codes of documents ``rows`` (any order) packed in that order, and their offsets: from memory,
        or read through ``code_source`` (bounded memory)."""
        from ..ragged import take_index

        idx, offs = take_index(self.offsets, rows)
        if self.codes is not None:
            return self.codes[idx], offs
        if self.code_source is None:
            from ..exceptions import InvalidOperationError

            raise InvalidOperationError(
                "this snapshot holds no codes (codes=None) and no code_source to read them from; build it with one"
            )
        return self.code_source.read(np.asarray(rows, np.int64)), offs

    def compacted(self) -> Snapshot:
        """The same version without its deleted rows (itself when it has none): row ``i`` is the ``i``-th
        document of the version, as a full load gives it."""
        if self.live is None or self.live.all():
            return self if self.live is None else replace(self, live=None)
        rows = np.flatnonzero(self.live)
        starts, lens = self.offsets[rows], self.offsets[rows + 1] - self.offsets[rows]
        offsets = np.zeros(len(rows) + 1, np.int64)
        np.cumsum(lens, out=offsets[1:])
        from ..ragged import ranges

        vec = ranges(starts, lens)
        source = None if self.code_source is None else _RowsOf(self.code_source, rows)
        return replace(
            self, ids=self.ids[rows], codes=None if self.codes is None else self.codes[vec], offsets=offsets,
            n_tokens=self.n_tokens[rows], terms=None if self.terms is None else self.terms[vec], extras={}, live=None,
            code_source=source,
        )  # fmt: skip


@dataclass(frozen=True)
class _RowsOf:
    """The code source of a compacted snapshot: its row ``i`` is row ``rows[i]`` of the source's."""

    source: CodeSource
    rows: np.ndarray

    def read(self, rows: np.ndarray) -> np.ndarray:
        return self.source.read(self.rows[rows])


class AppendBuffer:
    """Append-only storage behind a chain of snapshots: an array with spare capacity of which each snapshot
    views a prefix. Appending writes only past the longest prefix handed out, so what an older snapshot reads
    never changes; a second child of the same parent (the buffer already extended past it) gets a copy. The
    first array may be read-only (Arrow memory): the first append copies it into storage of its own.

    >>> b = AppendBuffer(np.arange(3))
    >>> b2, v = b.append(3, np.array([7, 8]))
    >>> b2 is b, v.tolist()
    (True, [0, 1, 2, 7, 8])
    >>> b3, w = b.append(3, np.array([9]))  # a sibling: 3 is no longer the end
    >>> b3 is b, w.tolist(), v.tolist()
    (False, [0, 1, 2, 9], [0, 1, 2, 7, 8])
    """

    def __init__(self, array: np.ndarray):
        self._data = array
        self._n = len(array)
        self._lock = threading.Lock()

    def view(self) -> np.ndarray:
        return self._data[: self._n]

    def append(self, n_parent: int, new: np.ndarray) -> tuple[AppendBuffer, np.ndarray]:
        """``(buffer, view)``: the first ``n_parent`` entries followed by ``new``."""
        with self._lock:
            if len(new) == 0 and n_parent <= self._n:
                return self, self._data[:n_parent]
            if n_parent == self._n:
                need = self._n + len(new)
                if need > len(self._data):  # grow by an eighth: an append copies the array once per n/8 rows
                    data = np.empty((need + max(need // 8, 1024),) + self._data.shape[1:], self._data.dtype)
                    data[: self._n] = self._data[: self._n]
                    self._data = data
                self._data[self._n : need] = new
                self._n = need
                return self, self._data[:need]
        fresh = AppendBuffer(np.concatenate([self._data[:n_parent], new]))
        return fresh, fresh.view()
