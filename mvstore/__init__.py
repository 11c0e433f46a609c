"""mvstore: compressed multi-vector (late-interaction) retrieval on Lance tables."""

from .exceptions import (
    DeviceUnavailableError,
    DimensionMismatchError,
    DuplicateIdError,
    IndexCorruptedError,
    InvalidDtypeError,
    InvalidVectorsError,
    MissingDependencyError,
    MvstoreError,
    NotFittedError,
    SpecError,
)
from .ragged import Ragged, as_ragged
from .search.maxsim import maxsim, maxsim_batch

__version__ = "0.1.0"

__all__ = [
    "Ragged",
    "as_ragged",
    "maxsim",
    "maxsim_batch",
    "MvstoreError",
    "InvalidVectorsError",
    "DimensionMismatchError",
    "InvalidDtypeError",
    "SpecError",
    "NotFittedError",
    "DuplicateIdError",
    "IndexCorruptedError",
    "DeviceUnavailableError",
    "MissingDependencyError",
]
