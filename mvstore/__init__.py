"""mvstore: compressed multi-vector (late-interaction) retrieval on Lance tables.

>>> import mvstore
>>> mvstore.code_size("pool2,pca64,sq8", 384), mvstore.bytes_per_token("pool2,pca64,sq8", 384)
(64, 32.0)
"""

from . import codecs, exceptions
from .distributed import build
from .exceptions import *  # noqa: F403 - every error class, listed in exceptions.__all__
from .importers import import_plaid
from .pooling import pool, pool_patches
from .ragged import Ragged, as_ragged
from .search import Searcher, SearchParams, maxsim, maxsim_batch
from .spec import build_pipeline, bytes_per_token, code_size, default_spec, parse
from .store import Index, create, open, upgrade
from .tune import tune

__version__ = "0.1.0"

__all__ = [
    "Index",
    "Ragged",
    "SearchParams",
    "Searcher",
    "as_ragged",
    "build",
    "build_pipeline",
    "bytes_per_token",
    "code_size",
    "codecs",
    "create",
    "default_spec",
    "import_plaid",
    "maxsim",
    "maxsim_batch",
    "open",
    "parse",
    "pool",
    "pool_patches",
    "tune",
    "upgrade",
] + exceptions.__all__
