"""Search: exact MaxSim kernels, stage-1 candidate generators and the two-stage searcher.

Importing this package touches no GPU and imports no torch. Modules, leaves first: ``candidates`` (the
stage-1 interface, the exhaustive and centroid generators), ``sparse`` (SLIM posting lists, its generator and
searcher), ``searcher`` (the dense two-stage :class:`Searcher` and the one factory, :func:`make_searcher` /
:func:`make_generator`, that picks a snapshot's searcher and stage-1 generator). Rankings: :mod:`mvstore._rank`.
"""

from .._rank import top_k
from .candidates import CandidateGenerator, CentroidCandidates, ExhaustiveCandidates
from .maxsim import maxsim, maxsim_batch, maxsim_torch
from .params import SearchParams, SearchParamsError
from .postings import Postings, build_postings
from .searcher import Searcher, SnapshotSearcher, make_generator, make_searcher
from .snapshot import Snapshot

__all__ = [
    "maxsim",
    "maxsim_batch",
    "maxsim_torch",
    "SearchParams",
    "SearchParamsError",
    "Searcher",
    "SnapshotSearcher",
    "make_generator",
    "make_searcher",
    "Snapshot",
    "CandidateGenerator",
    "CentroidCandidates",
    "ExhaustiveCandidates",
    "Postings",
    "build_postings",
    "top_k",
]
