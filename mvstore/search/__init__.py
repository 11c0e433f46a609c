"""Search: exact MaxSim kernels, stage-1 candidate generators and the two-stage searcher."""

from .maxsim import maxsim, maxsim_batch, maxsim_torch

__all__ = ["maxsim", "maxsim_batch", "maxsim_torch"]
