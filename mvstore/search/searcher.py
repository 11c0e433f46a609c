"""Two-stage search over a :class:`~mvstore.search.snapshot.Snapshot`.

Stage 1 picks candidate documents; stage 2 decodes their codes and scores them by exact MaxSim.
"""

from __future__ import annotations

import numpy as np

from ..ragged import Ragged
from .maxsim import maxsim_batch
from .params import SearchParams
from .snapshot import Snapshot

__all__ = ["Searcher"]


class Searcher:
    """Search one snapshot. ``search(queries, k, allowed)`` -> per query ``(rows, scores)`` best first."""

    def __init__(self, snapshot: Snapshot, params: SearchParams | None = None):
        self.snapshot = snapshot
        self.params = params or SearchParams()
        self._decoded: Ragged | None = None

    def _all_decoded(self) -> Ragged:
        if self._decoded is None:
            s = self.snapshot
            self._decoded = Ragged(s.codec.decode(s.codes), s.offsets)
        return self._decoded

    def search(
        self, queries: Ragged, k: int, allowed: np.ndarray | None = None
    ) -> list[tuple[np.ndarray, np.ndarray]]:
        """Exhaustive exact MaxSim over every decoded document (the oracle)."""
        s = self.snapshot
        q = Ragged(s.codec.transform_query(queries.values), queries.offsets)
        scores = maxsim_batch(q, self._all_decoded())
        if allowed is not None:
            scores[:, ~allowed] = -np.inf
        out = []
        for row in scores:
            valid = np.flatnonzero(np.isfinite(row))
            kk = min(k, len(valid))
            top = valid[np.argpartition(-row[valid], kk - 1)[:kk]] if kk else valid[:0]
            top = top[np.lexsort((top, -row[top]))]
            out.append((top, row[top]))
        return out
