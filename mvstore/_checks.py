"""Argument checks shared across the package (a leaf module: exceptions and numpy only).

One rule for counts: an ``int`` (numpy integers too, never ``bool``) or :class:`InvalidDtypeError`, within
its bounds or the caller's error class (:class:`InvalidArgumentError` by default; search knobs such as ``k``
raise :class:`SearchParamsError`, codec parameters :class:`SpecError`).

>>> check_int("k", 3)
3
>>> check_int("k", 0, what="results per query, e.g. k=10")
Traceback (most recent call last):
...
mvstore.exceptions.InvalidArgumentError: k=0 must be a positive integer (results per query, e.g. k=10)
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .exceptions import InvalidArgumentError, InvalidDtypeError

__all__ = ["check_int"]


def check_int(
    name: str,
    value: Any,
    *,
    lo: int = 1,
    hi: int | None = None,
    what: str = "",
    error: type[Exception] = InvalidArgumentError,
) -> int:
    """``value`` as a Python int: :class:`InvalidDtypeError` when it is not an integer (bools included),
    ``error`` when it lies outside ``[lo, hi]``. ``what`` says what the value means (and an example)."""
    about = f" ({what})" if what else ""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise InvalidDtypeError(f"{name} must be an int{about}, got {type(value).__name__} {value!r:.80}")
    if value < lo or (hi is not None and value > hi):
        bounds = ("a positive integer" if lo == 1 else f">= {lo}") if hi is None else f"in [{lo}, {hi}]"
        raise error(f"{name}={int(value)} must be {bounds}{about}")
    return int(value)
