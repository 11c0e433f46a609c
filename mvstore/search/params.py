"""Search-time knobs. They never appear in a spec string."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["SearchParams"]


@dataclass
class SearchParams:
    #: stage-1 generator: "auto" (centroid postings when the index has them), "centroid", "sparse", "exhaustive"
    candidates: str = "auto"
    #: centroids probed per query token (centroid prefilter)
    nprobe: int = 4
    #: candidates kept after stage 1 and reranked by exact MaxSim over decoded vectors
    n_rerank: int = 128
    #: queries processed together
    batch_size: int = 32
    #: "auto" | "cpu" | "cuda[:N]"
    device: str = "auto"
