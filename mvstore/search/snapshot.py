"""The in-memory view of one index version that search runs on.

The store (``mvstore.store``) builds a :class:`Snapshot` from the Lance tables once per version and
keeps it; search (``mvstore.search``) only reads it. Codes stay packed: document ``i``'s stored
vectors are ``codes[offsets[i]:offsets[i + 1]]``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["Snapshot"]


@dataclass(frozen=True, eq=False)
class Snapshot:
    #: Lance version this snapshot was read from
    version: int
    #: the user's ids in row order (int64 numpy array or numpy array of str objects)
    ids: np.ndarray
    #: (n_vectors, code_size) uint8: every stored (pooled) vector's code, documents packed
    codes: np.ndarray
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

    @property
    def n_docs(self) -> int:
        return len(self.offsets) - 1

    @property
    def n_vectors(self) -> int:
        return int(self.codes.shape[0])
