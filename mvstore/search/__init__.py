"""Search: exact MaxSim kernels, stage-1 candidate generators and the two-stage searcher.

Importing this package touches no GPU and imports no torch; the sparse (SLIM) generator lives in
:mod:`mvstore.search.sparse` and is loaded when ``SearchParams(candidates="sparse")`` asks for it.
"""

from .candidates import CandidateGenerator, CentroidCandidates, ExhaustiveCandidates
from .maxsim import maxsim, maxsim_batch, maxsim_torch
from .params import SearchParams, SearchParamsError
from .postings import Postings, build_postings
from .searcher import Searcher, top_k
from .snapshot import Snapshot

__all__ = [
    "maxsim",
    "maxsim_batch",
    "maxsim_torch",
    "SearchParams",
    "SearchParamsError",
    "Searcher",
    "Snapshot",
    "CandidateGenerator",
    "CentroidCandidates",
    "ExhaustiveCandidates",
    "Postings",
    "build_postings",
    "top_k",
]
