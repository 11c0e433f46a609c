"""Threading helpers, a leaf module: ``cpu_threads()`` (the cores this process may run on: the default thread
count of search and Ward pooling) and ``split_run`` (one shared pool that splits one query's heavy search steps,
the query-centroid product, the full centroid interaction and the stage-2 table scoring, into contiguous parts).
The parts are numba ``nogil`` kernels (:mod:`mvstore.search._kernels`), which release the GIL, so threads run
them in parallel. Parts must not call BLAS: BLAS runs its own threads, and keeping it to one thread per part
would need a process-wide limit (threadpoolctl), which overlapping searches would leave set and which
would slow the caller's own numpy code.

Parts never submit work themselves (no nesting), so the shared pool cannot deadlock.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

__all__ = ["cpu_threads", "split_run"]

T = TypeVar("T")

_POOL: ThreadPoolExecutor | None = None
_POOL_LOCK = threading.Lock()


def _forget_pool_in_child() -> None:
    """A forked child inherits the pool object but not its threads: give it a fresh pool on first use."""
    global _POOL, _POOL_LOCK
    _POOL = None
    _POOL_LOCK = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_pool_in_child)


def cpu_threads() -> int:
    """CPU cores this process may run on (its affinity mask where the OS has one)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - macOS / Windows
        return max(1, os.cpu_count() or 1)


def _pool() -> ThreadPoolExecutor:
    global _POOL
    with _POOL_LOCK:
        if _POOL is None:
            _POOL = ThreadPoolExecutor(max_workers=cpu_threads(), thread_name_prefix="mvstore-search")
        return _POOL


def split_run(fn: Callable[[int, int], T], n: int, parts: int, min_part: int = 1) -> list[T]:
    """``[fn(a0, b0), fn(a1, b1), ...]`` over ``parts`` contiguous ranges covering ``[0, n)``, each at least
    ``min_part`` long (fewer parts when ``n`` is small). The first part runs in the calling thread, the others
    on the shared pool.

    >>> split_run(lambda a, b: (a, b), 10, 3)
    [(0, 3), (3, 6), (6, 10)]
    >>> split_run(lambda a, b: (a, b), 10, 3, min_part=8)
    [(0, 10)]
    """
    parts = max(1, min(int(parts), n // max(1, int(min_part))))
    if parts <= 1:
        return [fn(0, n)]
    bounds = [n * i // parts for i in range(parts + 1)]
    futures = [_pool().submit(fn, bounds[i], bounds[i + 1]) for i in range(1, parts)]
    try:
        first = fn(bounds[0], bounds[1])
    finally:
        rest = [f.result() for f in futures]  # wait for every part, even when the first one failed
    return [first] + rest
