"""Exact Ward clustering of many small documents on the CPU: scipy's nearest-neighbour-chain algorithm,
compiled with numba, one document per call inside a parallel loop.

It follows ``scipy.cluster.hierarchy.linkage(X, "ward")`` step by step (same chain, same strict-``<``
tie-breaking, same Lance-Williams update on Euclidean distances), then cuts the dendrogram like
``fcluster(Z, k, "maxclust")``: the ``n - k`` lowest merges (stable order) are applied. The pairwise
distances come from a float64 Gram matrix (BLAS) instead of ``pdist``: equal up to rounding, which only
matters for exact ties.
"""

from __future__ import annotations

import numba
import numpy as np

from ._threads import cpu_threads

__all__ = ["ward_labels"]


# one compiled loop nest, kept whole: split into calls it would leave the hot loop (issue 17 keeps the measured kernels)
@numba.njit(cache=True, nogil=True)
def nn_chain_labels(d, k, out):  # noqa: C901, PLR0912, PLR0915  # pragma: no cover - compiled
    """d: (n, n) float64 Euclidean distances (overwritten); k clusters; out: (n,) int64 cluster ordinals
    numbered by first token."""
    n = d.shape[0]
    size = np.ones(n, np.int64)
    zx = np.empty(n - 1, np.int64)
    zy = np.empty(n - 1, np.int64)
    zd = np.empty(n - 1, np.float64)
    chain = np.empty(n, np.int64)
    clen = 0
    for step in range(n - 1):
        if clen == 0:
            for i in range(n):
                if size[i] > 0:
                    chain[0] = i
                    clen = 1
                    break
        while True:
            x = chain[clen - 1]
            if clen > 1:
                y = chain[clen - 2]
                cur = d[x, y]
            else:
                y = -1
                cur = np.inf
            for i in range(n):
                if size[i] == 0 or i == x:
                    continue
                if d[x, i] < cur:
                    cur = d[x, i]
                    y = i
            if clen > 1 and y == chain[clen - 2]:
                break
            chain[clen] = y
            clen += 1
        clen -= 2
        if x > y:
            x, y = y, x
        nx = size[x]
        ny = size[y]
        zx[step] = x
        zy[step] = y
        zd[step] = cur
        size[x] = 0
        size[y] = nx + ny
        c2 = cur * cur
        for i in range(n):
            ni = size[i]
            if ni == 0 or i == y:
                continue
            v = ((ni + nx) * d[i, x] * d[i, x] + (ni + ny) * d[i, y] * d[i, y] - ni * c2) / (ni + nx + ny)
            v = np.sqrt(v) if v > 0.0 else 0.0
            d[i, y] = v
            d[y, i] = v
    # apply the n - k lowest merges (stable order, as scipy sorts Z) with a union-find over points;
    # scipy's node ids are replaced by the representative points x/y the chain merged
    order = np.argsort(zd, kind="mergesort")
    parent = np.arange(n)
    for s in range(n - k):
        m = order[s]
        a = zx[m]
        while parent[a] != a:
            a = parent[a]
        b = zy[m]
        while parent[b] != b:
            b = parent[b]
        if a < b:
            parent[b] = a
        else:
            parent[a] = b
    lab = np.full(n, -1, np.int64)
    nxt = 0
    for i in range(n):
        r = i
        while parent[r] != r:
            r = parent[r]
        if lab[r] < 0:
            lab[r] = nxt
            nxt += 1
        out[i] = lab[r]


@numba.njit(cache=True, nogil=True)
def labels_from_gram(g, k, out):  # pragma: no cover - compiled
    """Ward labels from a float64 Gram matrix ``g`` (turned into Euclidean distances in place)."""
    n = g.shape[0]
    diag = np.empty(n, np.float64)
    for a in range(n):
        diag[a] = g[a, a]
    for a in range(n):
        for b in range(n):
            v = diag[a] + diag[b] - 2.0 * g[a, b]
            g[a, b] = np.sqrt(v) if v > 0.0 else 0.0
        g[a, a] = 0.0
    nn_chain_labels(g, k, out)


def ward_labels(
    values: np.ndarray, starts: np.ndarray, lengths: np.ndarray, ks: np.ndarray, *, workers: int | None = None
) -> np.ndarray:
    """Cluster ordinal (numbered by first token, within its segment) of every token of the segments
    ``values[starts[i]:starts[i] + lengths[i]]`` cut into ``ks[i]`` Ward clusters; segments concatenated.

    Documents are spread over ``workers`` threads (default: all cores); each computes its float64 Gram
    matrix with single-threaded BLAS (nested BLAS threads only contend) and runs the compiled chain
    without the GIL.
    """
    from concurrent.futures import ThreadPoolExecutor

    from threadpoolctl import threadpool_limits

    starts = np.asarray(starts, np.int64)
    lengths = np.asarray(lengths, np.int64)
    ks = np.minimum(np.asarray(ks, np.int64), lengths)
    out_off = np.zeros(len(lengths) + 1, np.int64)
    np.cumsum(lengths, out=out_off[1:])
    out = np.empty(int(out_off[-1]), np.int64)
    workers = max(1, min(workers or cpu_threads(), len(lengths)))

    def job(part: np.ndarray) -> None:
        for j in part:
            if ks[j] >= lengths[j]:  # nothing to merge (also empty segments)
                out[out_off[j] : out_off[j + 1]] = np.arange(lengths[j])
                continue
            x = values[starts[j] : starts[j] + lengths[j]].astype(np.float64)
            labels_from_gram(x @ x.T, ks[j], out[out_off[j] : out_off[j + 1]])

    parts = [np.arange(w, len(lengths), workers) for w in range(workers)]
    with threadpool_limits(1, user_api="blas"):
        if workers == 1:
            job(parts[0])
        else:
            with ThreadPoolExecutor(workers) as ex:
                list(ex.map(job, parts))
    return out
