"""Shared measuring helpers for the benchmark scripts: peak RSS of a block, single-query latency."""

from __future__ import annotations

import threading
import time

import numpy as np

__all__ = ["PeakRSS", "latency_ms"]


class PeakRSS:
    """Peak resident memory (MiB) of this process while the block runs, sampled every 20 ms."""

    def __enter__(self):
        import psutil

        self._proc = psutil.Process()
        self.peak = self._proc.memory_info().rss
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()
        return self

    def _run(self):
        while not self._stop.wait(0.02):
            self.peak = max(self.peak, self._proc.memory_info().rss)

    def __exit__(self, *exc):
        self._stop.set()
        self._t.join()
        self.peak = max(self.peak, self._proc.memory_info().rss)
        self.mb = round(self.peak / 2**20, 1)


def latency_ms(fn, queries, n: int) -> tuple[float, float]:
    """p50/p95 of single-query wall time over the first ``n`` queries (after one warm-up call)."""
    fn(queries[0])
    times = []
    for i in range(min(n, len(queries))):
        t = time.perf_counter()
        fn(queries[i])
        times.append((time.perf_counter() - t) * 1e3)
    return float(np.percentile(times, 50)), float(np.percentile(times, 95))
