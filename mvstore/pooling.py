"""Token pooling: fewer vectors per document with little retrieval loss (Clavié et al., 2024).

:func:`pool` clusters each document's token vectors and keeps one re-normalized mean per cluster,
``ceil(n / factor)`` clusters for ``n`` poolable tokens. The default is hierarchical clustering with
Ward linkage **on the token vectors themselves** (the widely copied reference code instead feeds an
``n x n`` distance matrix to ``scipy.cluster.hierarchy.linkage`` as if its rows were vectors).
:func:`pool_patches` does the same for ColPali-style patch grids, or merges neighbouring patches.

The Ward clusters are exactly those of ``linkage(X, "ward")`` + ``fcluster(Z, k, "maxclust")``
(up to label names, on data without exact distance ties):

* On the CPU (``mvstore._ward``): scipy's own nearest-neighbour-chain algorithm, step for step, compiled
  with numba, on distances from a float64 Gram matrix (single-threaded BLAS per document); documents are
  spread over ``workers`` threads (default: all cores) that run without the GIL; no per-merge Python loop
  (throughput: ``benchmarks/pooling.py``).
* On CUDA (and as its CPU twin in the tests) a batched torch path: Ward is *reducible*, so every pair of
  reciprocal nearest neighbours can be merged in the same step and the dendrogram is unchanged. Each step
  merges all reciprocal pairs of all documents of a padded batch with vectorized Lance-Williams updates;
  a document stops as soon as its ``n - k`` lowest merges are known. Distances come from a float64 Gram
  matrix with rigorous error bounds; a nearest neighbour the bounds cannot decide is re-scored exactly from
  the clusters' member tokens.

Protected tokens (e.g. ``[CLS]`` or a query-marker prefix) are the first ``protected`` tokens of each
document; they are kept unchanged, in front, and never clustered. Output order is deterministic:
protected tokens, then clusters ordered by their first token.

>>> import numpy as np
>>> from mvstore import Ragged
>>> x = np.array([[1, 0], [0.96, 0.28], [0, 1], [0.28, 0.96], [-1, 0]], np.float32)
>>> docs = Ragged.from_list([x])
>>> pooled = pool(docs, 2)
>>> pooled.lengths.tolist(), pool_labels(docs, 2).tolist()
([3], [0, 0, 1, 1, 2])
>>> np.round(pooled[0].astype(float), 2).tolist()
[[0.99, 0.14], [0.14, 0.99], [-1.0, 0.0]]
>>> pool(docs, 2, protected=1)[0][0].tolist()  # the first token is kept as it was
[1.0, 0.0]
"""

from __future__ import annotations

import math
import threading
from contextlib import contextmanager
from numbers import Real
from typing import Any

import numpy as np

from ._checks import check_int
from .device import device_name, resolve_device
from .exceptions import InvalidArgumentError, InvalidDtypeError, InvalidVectorsError
from .ragged import Ragged, as_ragged

__all__ = ["pool", "pool_labels", "pool_patches", "n_clusters", "METHODS", "PATCH_MODES"]

#: pooling methods accepted by :func:`pool`
METHODS = ("ward", "kmeans")
#: modes accepted by :func:`pool_patches`
PATCH_MODES = ("spatial", "semantic")

#: bound on the distance matrices of one padded batch (elements): 2**22 (16 MiB in float32)
_BATCH_ELEMS = 1 << 22
_INF = float("inf")


# --------------------------------------------------------------------------------------- arguments
def n_clusters(n: Any, factor: float, min_vectors: int = 0) -> Any:
    """Clusters kept for ``n`` poolable tokens: ``ceil(n / factor)``, at least 1 when ``n >= 1``, and at
    least ``min(n, min_vectors)``: a floor that leaves short documents (almost) unpooled, where every
    vector carries more of the document.

    A quotient within ``1e-9`` of an integer counts as that integer, so ``n_clusters(6, 1.2) == 5``
    even though ``6 / 1.2 == 5.000000000000001`` in floating point. Works on ints and int arrays.

    >>> n_clusters(240, 2), n_clusters(5, 2), n_clusters(1, 4), n_clusters(0, 2), n_clusters(6, 1.2)
    (120, 3, 1, 0, 5)
    >>> n_clusters(np.array([3, 4]), 3).tolist()
    [1, 2]
    >>> n_clusters(np.array([10, 40, 200]), 4, min_vectors=16).tolist()
    [10, 16, 50]
    """
    q = np.asarray(n, dtype=np.float64) / float(factor)
    k = np.ceil(q - 1e-9 * np.maximum(1.0, q)).astype(np.int64)
    k = np.where(np.asarray(n) > 0, np.maximum(k, 1), 0)
    if min_vectors:
        k = np.maximum(k, np.minimum(np.asarray(n), int(min_vectors)))
    return int(k) if np.ndim(k) == 0 else k


def _check_factor(factor: Any) -> float:
    if isinstance(factor, bool) or not isinstance(factor, Real):
        raise InvalidDtypeError(
            f"pooling factor must be a real number >= 1 (e.g. 2 keeps half the tokens), got {type(factor).__name__}"
        )
    f = float(factor)
    if not math.isfinite(f) or f < 1:
        raise InvalidArgumentError(
            f"pooling factor must be a finite number >= 1, got {factor!r}; use 1 for no pooling, "
            "2 to keep about half of each document's vectors"
        )
    return f


def _check_protected(protected: Any) -> int:
    return check_int("protected", protected, lo=0, what="number of leading tokens kept unpooled")


def _check_min_vectors(min_vectors: Any) -> int:
    return check_int(
        "min_vectors", min_vectors, lo=0, what="the fewest vectors a document keeps; 0: no floor"
    )


def _check_workers(workers: Any) -> int | None:
    if workers is None:
        return None
    return check_int("workers", workers, what="CPU threads, or None for the default")


def _check_method(method: Any, allowed: tuple[str, ...], what: str) -> str:
    if method not in allowed:
        raise InvalidArgumentError(f"unknown {what} {method!r}; use one of {', '.join(map(repr, allowed))}")
    return method


# ------------------------------------------------------------------------------------ Ward engine
class _Workspace:
    """Reusable scratch tensors: fresh multi-MiB allocations cost page faults on every call, which
    dominate the merge loop otherwise. ``get(name, shape, dtype)`` returns a view of a buffer kept
    across steps and batches (contents undefined)."""

    def __init__(self, device):
        self.device = device
        self._bufs: dict[str, Any] = {}

    def get(self, name, shape, dtype):
        import torch

        n = math.prod(shape)
        buf = self._bufs.get(name)
        if buf is None or buf.dtype != dtype or buf.numel() < n:
            buf = torch.empty(max(n, 1), dtype=dtype, device=self.device)
            self._bufs[name] = buf
        return buf[:n].view(shape)


def _exact_ward(si, sj, ni, nj, tmp):
    """Exact float64 Ward merge costs ``|c_i - c_j|^2 / (1/n_i + 1/n_j)`` of clusters with sums ``si``, ``sj``
    (P, d) and sizes ``ni``, ``nj`` (P,): ``|n_j s_i - n_i s_j|^2 / (n_i n_j (n_i + n_j))``. Half of scipy's
    squared merge height (same order). ``tmp`` is (P, d) float64 scratch."""
    import torch

    torch.mul(si, nj[:, None], out=tmp)
    tmp.addcmul_(sj, ni[:, None], value=-1.0)
    return tmp.square_().sum(1) / (ni * nj * (ni + nj))


def _two_smallest(rows):
    """(smallest value, its column, second smallest value) of each row: two min passes (faster than
    ``topk(2)`` on CPU); ``rows`` is left as it was."""
    import torch

    v1, best = rows.min(1)
    if rows.shape[1] < 2:
        return v1, best, torch.full_like(v1, _INF)
    hold = rows.gather(1, best[:, None])
    rows.scatter_(1, best[:, None], _INF)
    v2 = rows.min(1).values
    rows.scatter_(1, best[:, None], hold)
    return v1, best, v2


class _WardChain:
    """Batched Ward state of a padded batch ``x`` (B, N, d) with ``lengths`` (B,) real tokens and ``ks`` (B,)
    clusters wanted; :func:`_ward_batch` runs its steps. Torch tensors, all on one device, float64 throughout.

    State per document: ``cd[i, j] = |c_i - c_j|^2`` between the centroids of active clusters (inf at
    inactive columns), updated on a merge of i and j by the centroid Lance-Williams formula
    ``cd[i+j, k] = a cd[i, k] + b cd[j, k] - a b cd[i, j]`` (a, b = n_i, n_j over n_i + n_j); the Ward
    merge cost is ``cd / (1/n_i + 1/n_j)``. ``cd`` is an exact linear function of the initial squared
    distances (absolute weights summing to <= 2), so initial errors <= e leave every ``cd`` off by <= 2e;
    rounding in the updates adds <= 2 x (sum of per-step roundings), since later values are again such a
    combination of any earlier state. Where these bounds cannot tell a row's nearest neighbour, it is
    re-scored exactly from the clusters' member tokens.
    """

    def __init__(self, x, lengths, ks, ws: _Workspace):
        import torch

        self.dev = dev = x.device
        self.ws = ws
        self.B, self.N, self.d = B, N, d = x.shape
        f64 = torch.float64
        self.ar = ar = torch.arange(N, device=dev)
        self.valid = valid = ar[None, :] < lengths[:, None]
        self.need = (lengths - ks).to(torch.int64)  # merges to keep per document
        self.xflat = x.reshape(B * N, d)
        self.member = ar.expand(B, N).clone()  # cluster (representative index) of every token
        self.counts = valid.to(f64).view(-1)
        self.invc = self.counts.clone()  # 1 / n for active clusters, 0 elsewhere
        self.active = valid.clone()
        self.parent = ar.expand(B, N).clone()
        self.height = torch.full(
            (B, N), _INF, dtype=f64, device=dev
        )  # approximate cost of the merge absorbing j
        self.hslack = torch.zeros((B, N), dtype=f64, device=dev)  # ... and its error bound
        self.nnv = torch.full(
            (B, N), _INF, dtype=f64, device=dev
        )  # approximate cost to the nearest neighbour
        self.nns = torch.zeros((B, N), dtype=f64, device=dev)  # ... and its error bound
        self.nn = ar.expand(B, N).clone()
        self.low = torch.full((B, N), _INF, dtype=f64, device=dev)  # lower bound of each row's exact NN cost
        self.live = self.need > 0
        self.stats = {"steps": 0, "merges": 0, "resolved_rows": 0, "rescored_rows": 0}
        self._distances(x.to(f64))

    def _distances(self, xw) -> None:
        """Initial squared distances ``cd`` (B, N, N) from the float64 Gram matrix, and their error bounds."""
        import torch

        B, N, d = self.B, self.N, self.d
        self.u = u = 2.0**-53  # unit roundoff of float64
        gamma = (d + 2) * u / (1.0 - (d + 2) * u)
        sq = (xw * xw).sum(-1)
        maxsq = sq.max(1).values.clamp_min(1e-300)
        sq_inf = sq.masked_fill(~self.valid, _INF)  # padding rows/columns become inf distances
        self.cd = cd = self.ws.get("cd", (B, N, N), xw.dtype)
        torch.add(sq_inf[:, :, None], sq_inf[:, None, :], out=cd)
        cd.baddbmm_(xw, xw.transpose(1, 2), alpha=-2.0)
        cd.diagonal(dim1=1, dim2=2).fill_(_INF)
        self.cd2 = cd.view(B * N, N)
        # Error bound on every cd entry (any summation order, FMA or not): the initial squared distances are
        # off by <= 4 gamma maxsq + 3 u M (M = 4 maxsq bounds every centroid distance); each merge step
        # rounds values <= M about 6 times, twice where pairs of new clusters meet; all weighted by <= 2
        err0 = 2.0 * (4.0 * gamma + 12.0 * u) * maxsq  # (B,)
        self.err_step = 2.0 * 12.0 * u * 4.0 * maxsq
        self.err = err0 + self.err_step

    def cluster_sums(self, f):
        """Exact float64 sums of the current clusters ``f`` (flat indices), from their member tokens."""
        import torch

        B, N, dev = self.B, self.N, self.dev
        uniq, inv = torch.unique(f, return_inverse=True)
        wanted = torch.zeros(B * N, dtype=torch.bool, device=dev)
        wanted[uniq] = True
        owner = (self.member + (torch.arange(B, device=dev) * N)[:, None]).view(-1)
        tok = torch.nonzero(wanted[owner] & self.valid.view(-1)).squeeze(1)
        slot = torch.searchsorted(uniq, owner[tok])
        out = torch.zeros((len(uniq), self.d), dtype=torch.float64, device=dev)
        out.index_add_(0, slot, self.xflat.index_select(0, tok).to(torch.float64))
        return out[inv]

    def first_neighbours(self) -> None:
        """Every token's nearest neighbour while all clusters are singletons (cost = cd / 2)."""
        import torch

        if self.N > 1:
            v1, best, v2 = _two_smallest(self.cd2)
            rows = torch.arange(self.B * self.N, device=self.dev)
            self.resolve(rows, self.cd2, (v1 * 0.5, best, v2 * 0.5), 0.5)

    def resolve(self, fq, cost, v12=None, scale=1.0) -> None:
        """Exact nearest neighbour (by Ward cost ``scale * cost``) of flat rows ``fq``: from the two smallest
        costs and their error bounds, re-scoring exactly the rows where the bounds cannot decide."""
        import torch

        N = self.N
        bq = torch.div(fq, N, rounding_mode="floor")
        if v12 is None:
            v1, best, v2 = _two_smallest(cost)
            v1, v2 = v1 * scale, v2 * scale
        else:
            v1, best, v2 = v12
        fin = torch.isfinite(v1)
        slack = self.err[bq] / self.invc[fq] + 4.0 * self.u * v1.abs()
        self.low.view(-1)[fq] = torch.where(fin, v1 - slack, _INF)
        self.nnv.view(-1)[fq] = v1
        self.nns.view(-1)[fq] = slack
        amb = fin & (v2 - slack <= v1 + slack) & torch.isfinite(v2)
        self.stats["resolved_rows"] += len(fq)
        if bool(amb.any()):
            best = self._rescore(fq, bq, cost, scale, v1, slack, torch.nonzero(amb).squeeze(1), best)
        self.nn.view(-1)[fq] = torch.where(fin, best, fq - bq * N)

    def _rescore(self, fq, bq, cost, scale, v1, slack, qa, best):
        """Exact Ward costs of the ambiguous rows ``fq[qa]`` to every column within their bounds -> ``best``
        with those rows' exact nearest neighbours (ties: lowest column)."""
        import torch

        N, dev = self.N, self.dev
        self.stats["rescored_rows"] += len(qa)
        lim = (v1[qa] + slack[qa])[:, None]
        cand = cost.index_select(0, qa).mul_(scale).sub_(slack[qa, None]) <= lim
        sub, col = torch.nonzero(cand, as_tuple=True)
        q = qa[sub]
        fa, fb = fq[q], bq[q] * N + col
        sab = self.cluster_sums(torch.cat([fa, fb]))
        si, sj = sab[: len(fa)], sab[len(fa) :]
        ex = _exact_ward(si, sj, self.counts[fa], self.counts[fb], torch.empty_like(si))
        rowmin = torch.full((len(qa),), _INF, dtype=torch.float64, device=dev).scatter_reduce(
            0, sub, ex, "amin"
        )
        key = torch.where(ex == rowmin[sub], col, N)
        pick = torch.full((len(qa),), N, dtype=torch.int64, device=dev).scatter_reduce(0, sub, key, "amin")
        best = best.clone()
        best[qa] = pick
        self.nnv.view(-1)[fq[qa]] = rowmin
        self.nns.view(-1)[fq[qa]] = 0.0
        return best

    def step(self) -> None:
        """One round: merge every reciprocal-nearest-neighbour pair of every live document, then refresh the
        neighbours the merges touched and retire the documents whose cut is known."""
        import torch

        B, N, ar, nn = self.B, self.N, self.ar, self.nn
        self.stats["steps"] += 1
        mutual = self.active & self.live[:, None] & (nn.gather(1, nn) == ar) & (ar < nn)
        bi, ii = torch.nonzero(mutual, as_tuple=True)
        if len(bi) == 0:  # pragma: no cover - the globally closest pair is always reciprocal
            raise RuntimeError("Ward pooling found no reciprocal nearest neighbours; please report this bug")
        self.stats["merges"] += len(bi)
        jj = nn[bi, ii]
        self._merge(bi, ii, jj)
        touched = torch.zeros(B * N, dtype=torch.bool, device=self.dev)
        touched[bi * N + ii] = True
        touched[bi * N + jj] = True
        touched = touched.view(B, N)
        redo = self.active & self.live[:, None] & (touched | touched.gather(1, self.nn))
        self._refresh(torch.nonzero(redo.view(-1)).squeeze(1))
        # no future merge costs less than the smallest current distance (reducibility), so a document
        # is done once `need` of its merges are at or below that floor
        floor = self.low.min(1).values
        self.live = self.live & ((self.height + self.hslack <= floor[:, None]).sum(1) < self.need)

    def _merge(self, bi, ii, jj) -> None:
        """Merge cluster ``jj`` into ``ii`` in documents ``bi`` (one pair per entry): record the merge height
        and its bound, update ``cd`` by Lance-Williams, the counts, parents and token membership."""
        import torch

        N, ws, cd, cd2 = self.N, self.ws, self.cd, self.cd2
        P = len(bi)
        base = bi * N
        fi, fj = base + ii, base + jj
        ni, nj = self.counts[fi], self.counts[fj]
        nnv_f = self.nnv.view(-1)
        self.height.view(-1)[fj] = nnv_f[fi]
        # pair bound err / (1/n_i + 1/n_j) (tighter than the row's); 0 where the cost was computed exactly
        pair = self.err[bi] / (1.0 / ni + 1.0 / nj) + 4.0 * self.u * nnv_f[fi].abs()
        self.hslack.view(-1)[fj] = torch.where(self.nns.view(-1)[fi] == 0, 0.0, pair)
        a = ni / (ni + nj)
        b = nj / (ni + nj)
        ri = torch.index_select(cd2, 0, fi, out=ws.get("ri", (P, N), cd.dtype))
        rj = torch.index_select(cd2, 0, fj, out=ws.get("rj", (P, N), cd.dtype))
        g = a * b * ri.gather(1, jj[:, None]).squeeze(1)
        # new cluster i+j against every old cluster (inactive columns stay inf)
        rows = ri.mul_(a[:, None]).add_(rj.mul_(b[:, None])).sub_(g[:, None])
        rows = self._new_against_new(bi, ii, jj, a, b, g, rows)
        cd2.index_copy_(0, fi, rows)
        cd[bi, :, ii] = rows
        cd[bi, :, jj] = _INF
        self.counts[fi] = ni + nj
        self.counts[fj] = 0.0
        self.invc[fi] = 1.0 / (ni + nj)
        self.invc[fj] = 0.0
        self.active[bi, jj] = False
        self.parent[bi, jj] = ii
        step_map = self.ar.expand(self.B, N).clone()
        step_map[bi, jj] = ii
        self.member = step_map.gather(1, self.member)
        self.low.view(-1)[fj] = _INF
        self.nn.view(-1)[fj] = jj
        self.err = self.err + self.err_step

    def _new_against_new(self, bi, ii, jj, a, b, g, rows):
        """``rows`` with the distances between the new clusters of one document, when it merges several pairs
        at once (written for p < q from row p, mirrored); unchanged when every document merges one pair."""
        import torch

        B, N, dev = self.B, self.N, self.dev
        per_doc = torch.bincount(bi, minlength=B)
        pm = int(per_doc.max())
        if pm <= 1:
            return rows
        P = len(bi)
        loc = torch.arange(P, device=dev) - (torch.cumsum(per_doc, 0) - per_doc)[bi]
        cols_i = torch.full((B, pm), N, dtype=torch.int64, device=dev)  # padding slots: trash column N
        cols_j = torch.full((B, pm), N, dtype=torch.int64, device=dev)
        cols_i[bi, loc] = ii
        cols_j[bi, loc] = jj
        coef = torch.zeros((3, B, pm), dtype=rows.dtype, device=dev)
        coef[0, bi, loc], coef[1, bi, loc], coef[2, bi, loc] = a, b, g
        rpad = self.ws.get("rpad", (B, pm, N + 1), rows.dtype)
        rpad[bi, loc, :N] = rows
        gi = rpad.gather(2, cols_i[:, None, :].expand(B, pm, pm))
        gj = rpad.gather(2, cols_j[:, None, :].expand(B, pm, pm))
        val = gi.mul_(coef[0][:, None, :]).add_(gj.mul_(coef[1][:, None, :])).sub_(coef[2][:, None, :])
        upper = torch.ones((pm, pm), dtype=torch.bool, device=dev).triu_(1)
        val = torch.where(upper, val, val.transpose(1, 2))
        val.diagonal(dim1=1, dim2=2).fill_(_INF)
        rpad.scatter_(2, cols_i[:, None, :].expand(B, pm, pm), val)
        return rpad[bi, loc, :N]

    def _refresh(self, fq) -> None:
        """Nearest neighbours of flat rows ``fq`` by their current Ward costs ``cd / (1/n_i + 1/n_j)``."""
        import torch

        if not len(fq):
            return
        B, N, ws = self.B, self.N, self.ws
        bq = torch.div(fq, N, rounding_mode="floor")
        den = torch.index_select(self.invc.view(B, N), 0, bq, out=ws.get("den", (len(fq), N), self.cd.dtype))
        den.add_(self.invc[fq][:, None])
        cost = torch.index_select(self.cd2, 0, fq, out=ws.get("cost", (len(fq), N), self.cd.dtype)).div_(den)
        self.resolve(fq, cost)

    def labels(self):
        """Cut: keep each document's ``need`` lowest merges, follow parents to the roots -> (B, N) int64 cluster
        ordinal of each token, ordered by first token, -1 on padding."""
        import torch

        ar, B, N = self.ar, self.B, self.N
        order = torch.sort(self.height, dim=1, stable=True).indices
        rank = torch.empty_like(order).scatter_(1, order, ar.expand(B, N).contiguous())
        keep = rank < self.need[:, None]
        root = torch.where(keep, self.parent, ar[None, :])
        while True:
            nxt = root.gather(1, root)
            if bool((nxt == root).all()):
                break
            root = nxt
        is_root = (root == ar) & self.valid
        ordinal = torch.cumsum(is_root.to(torch.int64), 1) - 1
        return torch.where(self.valid, ordinal.gather(1, root), -1)


def _ward_batch(x, lengths, ks, *, ws: _Workspace | None = None):
    """Ward clusters of a padded batch ``x`` (B, N, d) with ``lengths`` (B,) real tokens and ``ks`` (B,)
    clusters wanted -> ((B, N) int64 cluster ordinal of each token, ordered by first token, -1 on padding;
    dict of counters): merge reciprocal nearest neighbours round by round until every document's ``n - k``
    lowest merges are known (:class:`_WardChain`)."""
    chain = _WardChain(x, lengths, ks, ws or _Workspace(x.device))
    chain.first_neighbours()
    while bool(chain.live.any()):
        chain.step()
    return chain.labels(), chain.stats


# ---------------------------------------------------------------------------------- k-means engine
def _kmeans_batch(x, lengths, ks, *, seed: int, iters: int):
    """k-means (k-means++ seeding with a fixed seed, then Lloyd) of a padded batch -> (B, N) cluster
    ordinals ordered by first token (-1 on padding). Every wanted cluster ends non-empty."""
    import torch

    dev = x.device
    N = x.shape[1]
    valid = torch.arange(N, device=dev)[None, :] < lengths[:, None]
    xf = x.float()
    centres = _kmeans_pp(xf, valid, ks, seed)
    lab, centres = _lloyd(xf, valid, ks, centres, iters)
    lab = torch.from_numpy(_fill_empty_clusters(lab, xf, centres, lengths, ks)).to(dev)
    return _ordinals_by_first_token(lab, valid, int(ks.max()))


def _kmeans_pp(xf, valid, ks, seed: int):
    """k-means++ centres (B, K, d): each next centre drawn with probability proportional to the squared
    distance to the chosen ones (Gumbel-max over log weights; uniform over unchosen tokens when all weights
    are 0, e.g. duplicates); slots past a document's ``k`` stay zero."""
    import torch

    dev = xf.device
    B, N, d = xf.shape
    K = int(ks.max())
    sq = (xf * xf).sum(-1)
    gen = torch.Generator(device="cpu").manual_seed(seed)
    gumbel = -torch.log(
        -torch.log(torch.rand((K, B, N), generator=gen, dtype=torch.float64).clamp_(1e-300, 1.0))
    )
    gumbel = gumbel.to(dev)
    chosen = torch.zeros((B, N), dtype=torch.bool, device=dev)
    centres = torch.zeros((B, K, d), dtype=torch.float32, device=dev)
    mind = torch.full((B, N), float("inf"), dtype=torch.float64, device=dev)
    bidx = torch.arange(B, device=dev)
    gram = torch.bmm(xf, xf.transpose(1, 2))  # distances to a chosen token come from its Gram row
    for t in range(K):
        w = torch.where(torch.isinf(mind), torch.ones_like(mind), mind.clamp_min(0.0))
        zero = (w.masked_fill(~valid | chosen, 0.0).sum(1) <= 0)[:, None]
        logw = torch.where(zero, torch.zeros_like(w), w.log())
        logw = logw.masked_fill(~valid | chosen, -float("inf"))
        pick = (logw + gumbel[t]).argmax(1)
        todo = t < ks
        chosen[bidx[todo], pick[todo]] = True
        c = xf[bidx, pick]
        centres[:, t] = torch.where(todo[:, None], c, centres[:, t])
        row = gram[bidx, pick]  # (B, N)
        dist = (sq - 2.0 * row + sq[bidx, pick][:, None]).to(torch.float64)
        mind = torch.where(todo[:, None], torch.minimum(mind, dist.clamp_min(0.0)), mind)
    return centres


def _lloyd(xf, valid, ks, centres, iters: int):
    """Lloyd iterations from ``centres`` until no label changes (at most ``iters``) -> (labels (B, N) on
    the device, centres); an empty cluster keeps its centre."""
    import torch

    B, N, _ = xf.shape
    K = centres.shape[1]
    slot_ok = torch.arange(K, device=xf.device)[None, :] < ks[:, None]  # (B, K)

    def assign(c):
        dist = (c * c).sum(-1)[:, None, :] - 2.0 * torch.bmm(xf, c.transpose(1, 2))  # (B, N, K) minus |x|^2
        return dist.masked_fill(~slot_ok[:, None, :], float("inf")).argmin(2)

    lab = assign(centres)
    for _ in range(iters):
        onehot = torch.zeros((B, N, K), dtype=torch.float32, device=xf.device)
        onehot.scatter_(2, lab[:, :, None], valid[:, :, None].float())
        cnt = onehot.sum(1)  # (B, K)
        new = torch.bmm(onehot.transpose(1, 2), xf) / cnt.clamp_min(1.0)[:, :, None]
        centres = torch.where((cnt > 0)[:, :, None], new, centres)
        nxt = assign(centres)
        if bool(((nxt == lab) | ~valid).all()):
            break
        lab = nxt
    return lab, centres


def _fill_empty_clusters(lab, xf, centres, lengths, ks) -> np.ndarray:
    """Labels (numpy) where each empty cluster took the token farthest from its centre among clusters with
    >= 2 tokens."""
    lab = lab.cpu().numpy().copy()
    xs, cs = xf.cpu().numpy(), centres.cpu().numpy()
    lens, kk = lengths.cpu().numpy(), ks.cpu().numpy()
    for b in range(len(lab)):
        n, k = int(lens[b]), int(kk[b])
        lb = lab[b, :n]
        cnt = np.bincount(lb, minlength=k)
        for e in np.flatnonzero(cnt[:k] == 0):
            far = ((xs[b, :n] - cs[b, lb]) ** 2).sum(1)
            far[cnt[lb] < 2] = -1.0
            t = int(np.argmax(far))
            cnt[lb[t]] -= 1
            lb[t] = e
            cnt[e] = 1
    return lab


def _ordinals_by_first_token(lab, valid, K: int):
    """Cluster labels (B, N) renumbered in order of each cluster's first token; -1 on padding."""
    import torch

    B, N = lab.shape
    ar = torch.arange(N, device=lab.device)
    first = torch.full((B, K), N, dtype=torch.int64, device=lab.device)
    first.scatter_reduce_(1, lab.clamp_min(0), ar.expand(B, N).masked_fill(~valid, N), "amin")
    order = torch.argsort(first, dim=1)
    rank = torch.empty_like(order).scatter_(
        1, order, torch.arange(K, device=lab.device).expand(B, K).contiguous()
    )
    return torch.where(valid, rank.gather(1, lab.clamp_min(0)), -1)


# --------------------------------------------------------------------------------------- public API
def _batches(lengths: np.ndarray, max_elems: int, parts: int = 1):
    """Group document indices (sorted by length, longest first) into padded batches of bounded size,
    at least ``parts`` batches when there are enough documents."""
    order = np.argsort(-lengths, kind="stable")
    cap = max(1, -(-len(order) // max(1, parts)))
    i = 0
    while i < len(order):
        n = int(lengths[order[i]])
        size = min(cap, max(1, max_elems // max(n * n, 1)))
        yield order[i : i + size]
        i += size


@contextmanager
def _intra_op_threads(n: int):
    """Temporarily set torch's intra-op thread count (process-wide), restoring it afterwards."""
    import torch

    old = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def _cluster_labels(
    values: np.ndarray,
    starts: np.ndarray,
    lengths: np.ndarray,
    ks: np.ndarray,
    method: str,
    device: Any,
    *,
    seed: int = 0,
    iters: int = 20,
    max_elems: int = _BATCH_ELEMS,
    workers: int | None = None,
    backend: str | None = None,
) -> np.ndarray:
    """Cluster ordinal (within its document) of every token of the segments ``values[starts[i]:+lengths[i]]``
    -> one int64 array, segments concatenated. Segments with ``ks >= lengths`` keep every token."""
    name = device_name(device)
    if backend is None:
        backend = "compiled" if (method == "ward" and name == "cpu") else "torch"
    if backend == "compiled":  # scipy's nearest-neighbour chain, compiled, documents over `workers` threads
        from ._ward import ward_labels

        return ward_labels(values, starts, lengths, ks, workers=workers)
    # the torch path: batched reciprocal-nearest-neighbour merges; on CUDA, and its CPU twin in the tests;
    # k-means runs on torch only
    what = "k-means pooling (method='kmeans')" if method == "kmeans" else "Ward pooling on torch"
    dev = resolve_device(name, feature=what)
    out_off = np.zeros(len(lengths) + 1, np.int64)
    np.cumsum(lengths, out=out_off[1:])
    labels = np.empty(int(out_off[-1]), np.int64)
    todo = np.flatnonzero(ks < lengths)
    for i in np.flatnonzero(ks >= lengths):
        labels[out_off[i] : out_off[i + 1]] = np.arange(lengths[i])
    if not len(todo):
        return labels
    workers = workers or 1
    batches = list(_batches(lengths[todo], max_elems, workers if dev.type == "cpu" else 1))
    vt = np.ascontiguousarray(values, dtype=np.float32)

    def run(sel, ws):
        docs = todo[sel]
        lens = lengths[docs]
        xt, within, pos = _padded_batch(vt, starts[docs], lens, dev)
        lt = _tensor(lens.astype(np.int64), dev)
        kt = _tensor(ks[docs].astype(np.int64), dev)
        if method == "ward":
            lab = _ward_batch(xt, lt, kt, ws=ws)[0]
        else:
            lab = _kmeans_batch(xt, lt, kt, seed=seed, iters=iters)
        labels[np.repeat(out_off[docs], lens) + within] = lab.cpu().numpy().reshape(-1)[pos]

    _run_batches(run, batches, dev, workers)
    return labels


def _tensor(a: np.ndarray, dev: Any) -> Any:
    import torch

    return torch.from_numpy(a).to(dev)


def _padded_batch(
    vt: np.ndarray, starts: np.ndarray, lens: np.ndarray, dev: Any
) -> tuple[Any, np.ndarray, np.ndarray]:
    """The documents ``vt[starts[i]:+lens[i]]`` zero-padded into one (B, max len, d) float32 tensor on ``dev``
    -> (tensor, each token's index within its document, each token's flat position in the batch)."""
    import torch

    n_max = int(lens.max())
    within = np.arange(lens.sum()) - np.repeat(np.cumsum(lens) - lens, lens)
    tok = np.repeat(starts, lens) + within
    pos = np.repeat(np.arange(len(lens)), lens) * n_max + within
    x = torch.zeros((len(lens) * n_max, vt.shape[1]), dtype=torch.float32)
    x.index_copy_(0, torch.from_numpy(pos), torch.from_numpy(vt).index_select(0, torch.from_numpy(tok)))
    return x.view(len(lens), n_max, -1).to(dev), within, pos


def _run_batches(run: Any, batches: list[np.ndarray], dev: Any, workers: int) -> None:
    """``run(batch, workspace)`` for every batch: in order on CUDA; on the CPU with single-threaded torch ops,
    the batches spread over ``workers`` Python threads (ops release the GIL; the merge loop is many small ops,
    and OpenMP barriers between them stall badly on a busy machine)."""
    if dev.type != "cpu":
        ws = _Workspace(dev)
        for sel in batches:
            run(sel, ws)
        return
    with _intra_op_threads(1):
        if workers <= 1 or len(batches) == 1:
            ws = _Workspace(dev)
            for sel in batches:
                run(sel, ws)
            return
        from concurrent.futures import ThreadPoolExecutor

        local = threading.local()

        def job(sel):
            if not hasattr(local, "ws"):
                local.ws = _Workspace(dev)
            run(sel, local.ws)

        with ThreadPoolExecutor(workers) as ex:
            list(ex.map(job, batches))


def _pool_from_labels(docs: Ragged, protected: int, n_out: np.ndarray, labels: np.ndarray) -> Ragged:
    """Output batch from per-token labels (protected tokens are their own, unnormalized, outputs)."""
    from scipy.sparse import csr_matrix

    out_off = np.zeros(len(docs) + 1, np.int64)
    np.cumsum(n_out, out=out_off[1:])
    seg = docs.segment_ids()
    dest = out_off[seg] + labels
    # each output's sum of its tokens: one sparse (outputs x tokens) membership product, float32 (few per output)
    total = int(out_off[-1])
    indptr = np.zeros(total + 1, np.int64)
    np.cumsum(np.bincount(dest, minlength=total), out=indptr[1:])
    member = csr_matrix(
        (np.ones(len(dest), np.float32), np.argsort(dest, kind="stable"), indptr),
        shape=(total, docs.n_tokens),
    )
    res = np.asarray(member @ np.asarray(docs.values, dtype=np.float32), dtype=np.float32)
    res /= np.maximum(np.linalg.norm(res, axis=1, keepdims=True), np.float32(1e-30))
    if protected:
        local = np.arange(docs.n_tokens) - docs.offsets[seg]
        prot = local < protected
        res[dest[prot]] = docs.values[prot]
    return Ragged(res.astype(docs.values.dtype, copy=False), out_off)


def _labels(
    docs: Ragged,
    factor: float,
    method: str,
    protected: int,
    device: Any,
    seed: int,
    workers: int | None = None,
    min_vectors: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """(labels of every token within its document's output, output count per document)."""
    lengths = docs.lengths
    p = np.minimum(lengths, protected)
    n = lengths - p
    ks = n_clusters(n, factor, min_vectors)
    starts = docs.offsets[:-1] + p
    lab = _cluster_labels(docs.values, starts, n, ks, method, device, seed=seed, workers=workers)
    seg = docs.segment_ids()
    local = np.arange(docs.n_tokens) - docs.offsets[seg]
    labels = local.copy()
    rest = local >= p[seg]
    labels[rest] = p[seg][rest] + lab
    return labels, p + ks


def _prepare(
    docs: Any, factor: Any, method: Any, protected: Any, min_vectors: Any
) -> tuple[Ragged, float, str, int, int]:
    method = _check_method(method, METHODS, "pooling method")
    f = _check_factor(factor)
    protected = _check_protected(protected)
    return as_ragged(docs), f, method, protected, _check_min_vectors(min_vectors)


def _identity_labels(docs: Ragged) -> np.ndarray:
    """Labels of an unpooled batch: each token is its own output vector (its index within its document)."""
    return np.arange(docs.n_tokens) - np.repeat(docs.offsets[:-1], docs.lengths)


def pool(
    docs: Any,
    factor: float,
    *,
    method: str = "ward",
    protected: int = 0,
    min_vectors: int = 0,
    device: Any = "cpu",
    seed: int = 0,
    workers: int | None = None,
    return_labels: bool = False,
) -> Any:
    """Pool each document's token vectors into ``ceil(n / factor)`` re-normalized cluster means
    (at least ``min(n, min_vectors)``: see :func:`n_clusters`).

    ``docs`` is a :class:`~mvstore.Ragged` (or a list of ``(n_i, dim)`` arrays). ``method="ward"`` is
    hierarchical Ward clustering on the vectors (exactly scipy's ``linkage(x, "ward")`` cut with
    ``fcluster(..., k, "maxclust")``); ``"kmeans"`` is k-means++ seeded with ``seed`` then Lloyd. The first
    ``protected`` tokens of each document are kept unchanged in front and ``n`` counts the others; a
    document with ``n >= 1`` keeps at least one cluster. ``factor=1`` returns ``docs`` unchanged.
    ``device`` is ``"cpu"``, ``"cuda[:N]"`` or ``"auto"`` (CPU and CUDA give the same Ward clusters).
    ``workers``: CPU threads (Ward: default all cores; k-means: default 1).

    Returns a Ragged with the same number of documents; with ``return_labels=True`` also the
    ``(n_tokens,)`` int64 index of each input token's output vector within its document.
    """
    docs, f, method, protected, min_vectors = _prepare(docs, factor, method, protected, min_vectors)
    if f == 1.0:
        return (docs, _identity_labels(docs)) if return_labels else docs
    labels, n_out = _labels(
        docs, f, method, protected, device, seed, workers=_check_workers(workers), min_vectors=min_vectors
    )
    out = _pool_from_labels(docs, protected, n_out, labels)
    return (out, labels) if return_labels else out


def pool_labels(
    docs: Any,
    factor: float,
    *,
    method: str = "ward",
    protected: int = 0,
    min_vectors: int = 0,
    device: Any = "cpu",
    seed: int = 0,
    workers: int | None = None,
) -> np.ndarray:
    """The ``(n_tokens,)`` int64 output index (within its document) that :func:`pool` gives each token:
    protected tokens ``0..protected-1``, then clusters numbered in order of their first token."""
    docs, f, method, protected, min_vectors = _prepare(docs, factor, method, protected, min_vectors)
    if f == 1.0:
        return _identity_labels(docs)
    return _labels(
        docs, f, method, protected, device, seed, workers=_check_workers(workers), min_vectors=min_vectors
    )[0]


def _check_grid(grid: Any) -> tuple[int, int]:
    ok = isinstance(grid, (tuple, list)) and len(grid) == 2
    ok = ok and all(isinstance(g, (int, np.integer)) and not isinstance(g, bool) and g >= 1 for g in grid)
    if not ok:
        raise InvalidArgumentError(
            f"grid must be a (rows, cols) pair of positive ints, e.g. (32, 32) for ColPali; got {grid!r}"
        )
    return int(grid[0]), int(grid[1])


def pool_patches(
    docs: Any,
    grid: tuple[int, int],
    *,
    factor: float | None = None,
    mode: str = "spatial",
    protected: int = 0,
    block: tuple[int, int] | None = None,
    device: Any = "cpu",
    return_labels: bool = False,
) -> Any:
    """Pool image-patch documents laid out as ``protected`` leading tokens then a row-major ``grid`` of
    patches (every document must have exactly ``protected + rows * cols`` tokens).

    ``mode="spatial"`` averages neighbouring patches in ``block = (bh, bw)`` tiles (default from a square
    ``factor``: 4 -> 2x2; tiles at the right/bottom edges are smaller when the grid does not divide),
    outputs in row-major tile order. ``mode="semantic"`` is Ward clustering of each document's patches
    (Light-ColPali), ``ceil(rows * cols / factor)`` clusters (default factor 4). Means are re-normalized;
    protected tokens are kept unchanged in front. ``return_labels`` as in :func:`pool`.
    """
    mode = _check_method(mode, PATCH_MODES, "patch pooling mode")
    rows, cols = _check_grid(grid)
    protected = _check_protected(protected)
    docs = as_ragged(docs)
    expect = protected + rows * cols
    bad = np.flatnonzero(docs.lengths != expect)
    if len(bad):
        i = int(bad[0])
        raise InvalidVectorsError(
            f"document {i} has {int(docs.lengths[i])} tokens but grid {rows}x{cols} with protected={protected} "
            f"needs {expect}; pass the grid the encoder used (and protected= for extra leading tokens)"
        )
    if mode == "semantic":
        if block is not None:
            raise InvalidArgumentError(
                "block= only applies to mode='spatial'; semantic pooling takes factor="
            )
        return pool(
            docs,
            4.0 if factor is None else factor,
            method="ward",
            protected=protected,
            device=device,
            return_labels=return_labels,
        )
    if block is None:
        f = 4.0 if factor is None else _check_factor(factor)
        s = math.isqrt(int(round(f)))
        if s * s != f:
            raise InvalidArgumentError(
                f"spatial factor {factor!r} is not a square number; pass block=(bh, bw), e.g. (1, 2)"
            )
        block = (s, s)
    bh, bw = _check_grid(block)
    if factor is not None and _check_factor(factor) != bh * bw:
        raise InvalidArgumentError(
            f"factor={factor!r} does not match block={block!r} (factor must be bh * bw = {bh * bw})"
        )
    tiles_w = -(-cols // bw)
    r, c = np.divmod(np.arange(rows * cols), cols)
    tile = (r // bh) * tiles_w + (c // bw)
    n_tiles = int(tile.max()) + 1
    local = np.concatenate([np.arange(protected), protected + tile])
    labels = np.tile(local, len(docs))
    n_out = np.full(len(docs), protected + n_tiles, np.int64)
    out = _pool_from_labels(docs, protected, n_out, labels)
    return (out, labels) if return_labels else out
