"""Search-time knobs. They never appear in a spec string.

>>> SearchParams(nprobe=8, n_rerank=64).nprobe
8
>>> SearchParams(candidates="centroids")
Traceback (most recent call last):
...
mvstore.exceptions.SearchParamsError: SearchParams.candidates='centroids' is not one of 'auto', 'centroid', 'sparse', 'exhaustive'; pick one of those (e.g. candidates='centroid')
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

from .._checks import check_int
from ..exceptions import InvalidDtypeError, SearchParamsError

__all__ = ["SearchParams", "SearchParamsError", "CANDIDATE_KINDS", "INTERACTIONS", "check_k"]

#: stage-1 generators SearchParams.candidates may name
CANDIDATE_KINDS = ("auto", "centroid", "sparse", "exhaustive")
#: how the centroid prefilter scores a candidate (see mvstore.search.candidates.CentroidCandidates)
INTERACTIONS = ("probed", "full")


def _positive_int(name: str, value: object) -> int:
    return check_int(f"SearchParams.{name}", value, error=SearchParamsError)


def check_k(k: object) -> int:
    """``k``, the number of results per query, as an int >= 1 (every search entry point checks it here)."""
    return check_int("k", k, what="the number of results per query, e.g. k=10", error=SearchParamsError)


@dataclass
class SearchParams:
    """How to search (never how data is stored).

    * ``candidates``: stage-1 generator: ``"auto"`` (centroid postings when the index has them, else
      exhaustive), ``"centroid"``, ``"sparse"`` (SLIM posting lists), ``"exhaustive"`` (every document).
    * ``nprobe``: centroids probed per query token by the centroid prefilter.
    * ``n_rerank``: candidates kept after stage 1 and rescored by exact MaxSim over decoded vectors.
    * ``interaction``: how the centroid prefilter ranks candidates: ``"probed"`` counts, per query token,
      only the similarity of that token's probed centroids (cheap: read off the posting lists);
      ``"full"`` re-scores the best ``n_full`` of those by the max over every centroid the document holds
      (PLAID's centroid interaction), a closer estimate of MaxSim.
    * ``n_full``: candidates re-scored by full centroid interaction (``interaction="full"`` only).
    * ``batch_size``: queries processed together.
    * ``threads``: CPU threads one query's heavy steps are split over (query-centroid product, stage-2
      scoring); None: every core this process may use. Ignored on CUDA.
    * ``device``: ``"auto"`` | ``"cpu"`` | ``"cuda[:N]"``.

    The defaults are chosen to hold stage-1 recall@10 vs exhaustive search on every model and collection of
    ``benchmarks/robustness.py`` (figures: README, "Defaults that hold"); latency: ``benchmarks/search_bench.py``
    (README, "Two-stage search").
    """

    candidates: str = "auto"
    nprobe: int = 8
    n_rerank: int = 256
    interaction: str = "full"
    n_full: int = 768
    batch_size: int = 32
    threads: int | None = None
    device: str = "auto"

    def __post_init__(self) -> None:
        if self.candidates not in CANDIDATE_KINDS:
            raise SearchParamsError(
                f"SearchParams.candidates={self.candidates!r} is not one of "
                f"{', '.join(repr(c) for c in CANDIDATE_KINDS)}; pick one of those (e.g. candidates='centroid')"
            )
        if self.interaction not in INTERACTIONS:
            raise SearchParamsError(
                f"SearchParams.interaction={self.interaction!r} is not one of "
                f"{', '.join(repr(c) for c in INTERACTIONS)}; use 'probed' (fast) or 'full' (PLAID-style)"
            )
        _positive_int("nprobe", self.nprobe)
        _positive_int("n_rerank", self.n_rerank)
        _positive_int("n_full", self.n_full)
        _positive_int("batch_size", self.batch_size)
        if self.threads is not None:
            _positive_int("threads", self.threads)
        dev = str(self.device) if type(self.device).__module__.startswith("torch") else self.device
        if not isinstance(dev, str) or not (dev in ("auto", "cpu", "cuda") or dev.startswith("cuda:")):
            raise SearchParamsError(
                f"SearchParams.device={self.device!r} is not a device; use 'auto', 'cpu' or 'cuda[:N]'"
            )
        self.device = dev

    @classmethod
    def of(cls, params: Any) -> SearchParams:
        """The ``params=`` argument of a search: None (the defaults), a SearchParams, or a dict of its fields.

        >>> SearchParams.of({"nprobe": 4}).nprobe, SearchParams.of(None) == SearchParams()
        (4, True)
        """
        if params is None:
            return cls()
        if isinstance(params, cls):
            return params
        if isinstance(params, dict):
            names = [f.name for f in fields(cls)]
            unknown = [k for k in params if k not in names]
            if unknown:
                raise SearchParamsError(
                    f"params has no field {unknown[0]!r}; SearchParams fields are {', '.join(names)}"
                )
            return cls(**params)
        key, val = (
            ("candidates", params) if isinstance(params, str) and params in CANDIDATE_KINDS else ("nprobe", 8)
        )
        raise InvalidDtypeError(
            f"params must be a SearchParams or a dict of its fields, got {type(params).__name__} {params!r:.80}; "
            f"e.g. params=SearchParams({key}={val!r}) or params={{{key!r}: {val!r}}}"
        )
