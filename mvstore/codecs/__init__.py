"""Codecs: fitted on a sample, then ``encode(vectors) -> uint8 codes`` and ``decode(codes) -> vectors``.

Importing this package imports every module in it, so each codec family registers itself in
:data:`REGISTRY` (and thereby in the spec grammar) without any central list to edit.
"""

from __future__ import annotations

import importlib
import pkgutil

from .base import REGISTRY, Codec, register
from .pipeline import Pipeline
from .pq import PQ
from .residual import RQ
from .scalar import FP16, FP32, SQ4, SQ8, Binary
from .transforms import PCA, Trunc

__all__ = [
    "Codec",
    "REGISTRY",
    "register",
    "Pipeline",
    "FP32",
    "FP16",
    "SQ8",
    "SQ4",
    "Binary",
    "PCA",
    "Trunc",
    "PQ",
    "RQ",
]


def _import_all() -> None:
    for info in pkgutil.iter_modules(__path__):
        importlib.import_module(f"{__name__}.{info.name}")


_import_all()
