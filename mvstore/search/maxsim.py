"""Exact late-interaction (MaxSim) scoring as pure functions, numpy and torch (CPU or CUDA).

``score(q, d) = sum_i max_j <q_i, d_j>`` over the query's tokens ``i`` and the document's tokens ``j``.
Documents are packed (:class:`~mvstore.Ragged`), never padded; work is chunked over document tokens so
memory stays bounded for any corpus size.

>>> import numpy as np
>>> from mvstore import Ragged
>>> q = np.array([[1.0, 0.0], [0.0, 1.0]], np.float32)
>>> docs = Ragged.from_list([np.array([[1.0, 0.0], [0.6, 0.8]], np.float32),
...                          np.array([[0.0, 1.0]], np.float32)])
>>> [round(float(s), 3) for s in maxsim(q, docs)]  # doc 0: max(1, .6) + max(0, .8); doc 1: 0 + 1
[1.8, 1.0]
>>> [round(float(s), 3) for s in maxsim_torch(q, docs)]
[1.8, 1.0]
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np

from ..ragged import Ragged, as_ragged

__all__ = ["maxsim", "maxsim_batch", "maxsim_torch", "doc_chunks"]

#: default bound on the similarity block, in float32 elements (64 MiB)
DEFAULT_BLOCK = 1 << 24


def doc_chunks(offsets: np.ndarray, max_tokens: int) -> Iterator[tuple[int, int]]:
    """Split documents into consecutive ranges ``[a, b)`` holding at most ``max_tokens`` tokens each
    (a single longer document forms a range of its own)."""
    n = len(offsets) - 1
    a = 0
    while a < n:
        b = int(np.searchsorted(offsets, offsets[a] + max_tokens, side="right")) - 1
        b = min(max(b, a + 1), n)
        yield a, b
        a = b


def _as_query(q: Any) -> np.ndarray:
    if type(q).__module__.startswith("torch"):
        q = q.detach().cpu().float().numpy()
    q = np.asarray(q)
    if q.ndim != 2:
        raise ValueError(f"query must be a 2-D (n_query_tokens, dim) matrix, got shape {q.shape}")
    return q


def maxsim(query: Any, docs: Ragged, *, block: int = DEFAULT_BLOCK) -> np.ndarray:
    """MaxSim scores of one query ``(nq, dim)`` against every document of ``docs`` -> ``(n_docs,)`` float32."""
    q = _as_query(query)
    return maxsim_batch(Ragged(q, np.array([0, len(q)])), docs, block=block)[0]


def maxsim_batch(queries: Any, docs: Ragged, *, block: int = DEFAULT_BLOCK) -> np.ndarray:
    """MaxSim scores of every query against every document -> ``(n_queries, n_docs)`` float32 (numpy).

    All query tokens are scored in one matrix product per chunk of documents; the per-document max
    is a segmented reduction (``np.maximum.reduceat``), the per-query sum another.
    """
    queries = as_ragged(queries, what="queries")
    if queries.dim != docs.dim:
        from ..exceptions import DimensionMismatchError

        raise DimensionMismatchError(f"queries have dim {queries.dim} but documents have dim {docs.dim}")
    qv = np.ascontiguousarray(queries.values, dtype=np.float32)
    tq = len(qv)
    out = np.empty((len(queries), len(docs)), np.float32)
    if len(docs) == 0:
        return out
    lengths = docs.lengths
    max_tokens = max(1, block // max(tq, 1))
    for a, b in doc_chunks(docs.offsets, max_tokens):
        lo, hi = docs.offsets[a], docs.offsets[b]
        dv = docs.values[lo:hi]
        sim = dv.astype(np.float32, copy=False) @ qv.T  # (tokens, tq)
        starts = docs.offsets[a:b] - lo
        nonempty = lengths[a:b] > 0
        mx = np.full((b - a, tq), -np.inf, np.float32)
        if nonempty.any():
            mx[nonempty] = np.maximum.reduceat(sim, starts[nonempty], axis=0)
        out[:, a:b] = np.add.reduceat(mx, queries.offsets[:-1], axis=1).T
    return out


def maxsim_torch(
    queries: Any, docs: Ragged | tuple[Any, Any], *, device: Any = "cpu", block: int = DEFAULT_BLOCK
) -> np.ndarray:
    """Torch twin of :func:`maxsim_batch` (runs on ``device``; CPU and CUDA give the same ranking).

    ``queries`` is one ``(nq, dim)`` matrix (returns ``(n_docs,)``) or a Ragged/list of queries
    (returns ``(n_queries, n_docs)``). ``docs`` is a Ragged or ``(values, offsets)`` tensors already on
    the device (e.g. decoded candidates), so nothing is copied back and forth.
    """

    from ..device import resolve_device

    dev = resolve_device(device, feature="maxsim_torch")
    single = not isinstance(queries, Ragged) and getattr(queries, "ndim", 0) == 2
    if single:
        q = _as_query(queries)
        queries = Ragged(q, np.array([0, len(q)]))
    else:
        queries = as_ragged(queries, what="queries")
    if isinstance(docs, Ragged):
        dv, doff = docs.torch(dev)
    else:
        dv, doff = docs
    qv, qoff = queries.torch(dev)
    scores = maxsim_torch_tensors(qv, qoff, dv, doff, block=block)
    out = scores.float().cpu().numpy()
    return out[0] if single else out


def maxsim_torch_tensors(qv, qoff, dv, doff, *, block: int = DEFAULT_BLOCK):
    """MaxSim on tensors already on one device -> ``(n_queries, n_docs)`` tensor on that device."""
    import torch

    n_docs = len(doff) - 1
    nq = len(qoff) - 1
    tq = qv.shape[0]
    half = (torch.float16, torch.bfloat16)
    compute = dv.dtype if (dv.device.type == "cuda" and dv.dtype in half) else torch.float32
    qv = qv.to(compute)
    qseg = torch.repeat_interleave(torch.arange(nq, device=qv.device), (qoff[1:] - qoff[:-1]).long())
    out = torch.empty((nq, n_docs), dtype=torch.float32, device=qv.device)
    offs_np = doff.cpu().numpy()
    max_tokens = max(1, block // max(tq, 1))
    for a, b in doc_chunks(offs_np, max_tokens):
        lo, hi = int(offs_np[a]), int(offs_np[b])
        sim = (dv[lo:hi].to(compute) @ qv.T).float()  # (tokens, tq)
        seg = torch.repeat_interleave(
            torch.arange(b - a, device=sim.device), (doff[a + 1 : b + 1] - doff[a:b]).long()
        )
        mx = torch.full((b - a, tq), float("-inf"), dtype=torch.float32, device=sim.device)
        mx.scatter_reduce_(0, seg.unsqueeze(1).expand(-1, tq), sim, reduce="amax", include_self=True)
        summed = torch.zeros((b - a, nq), dtype=torch.float32, device=sim.device).index_add_(1, qseg, mx)
        out[:, a:b] = summed.T
    return out
