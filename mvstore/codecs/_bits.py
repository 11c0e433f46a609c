"""Packing small unsigned integers (1, 2, 4 or 8 bits each) into bytes, numpy and torch twins.

Value ``k`` of a row lands in byte ``k // (8 // bits)`` at bit offset ``(k % (8 // bits)) * bits``
(little-endian within the byte), so both implementations agree bit for bit.

>>> import numpy as np
>>> v = np.array([[1, 2, 3, 0, 1]], np.uint8)
>>> packed = pack(v, 2)
>>> packed.shape, unpack(packed, 5, 2).tolist()
((1, 2), [[1, 2, 3, 0, 1]])
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["packed_size", "pack", "unpack", "unpack_torch", "affine_score_table", "table_width"]

BITS = (1, 2, 4, 8)


def packed_size(n_values: int, bits: int) -> int:
    """Bytes needed for ``n_values`` values of ``bits`` bits each."""
    per = 8 // bits
    return -(-n_values // per)


def pack(values: np.ndarray, bits: int) -> np.ndarray:
    """``(n, d)`` integers in ``[0, 2**bits)`` -> ``(n, packed_size(d, bits))`` uint8."""
    if bits not in BITS:
        raise ValueError(f"bits must be one of {BITS}, got {bits}")
    values = np.asarray(values, np.uint8)
    if bits == 8:
        return np.ascontiguousarray(values)
    n, d = values.shape
    per = 8 // bits
    nb = packed_size(d, bits)
    padded = np.zeros((n, nb * per), np.uint8)
    padded[:, :d] = values
    padded = padded.reshape(n, nb, per)
    out = np.zeros((n, nb), np.uint8)
    for k in range(per):
        out |= padded[:, :, k] << np.uint8(k * bits)
    return out


def unpack(codes: np.ndarray, d: int, bits: int) -> np.ndarray:
    """Inverse of :func:`pack`: ``(n, packed_size(d, bits))`` uint8 -> ``(n, d)`` uint8."""
    if bits == 8:
        return codes[:, :d]
    per = 8 // bits
    mask = np.uint8((1 << bits) - 1)
    n = len(codes)
    out = np.empty((n, codes.shape[1], per), np.uint8)
    for k in range(per):
        out[:, :, k] = (codes >> np.uint8(k * bits)) & mask
    return out.reshape(n, -1)[:, :d]


def unpack_torch(codes: Any, d: int, bits: int) -> Any:
    """Torch twin of :func:`unpack` (runs on the codes' device); returns an int64 tensor ``(n, d)``."""
    import torch

    if bits == 8:
        return codes[:, :d].long()
    per = 8 // bits
    shifts = torch.arange(per, device=codes.device, dtype=torch.int32) * bits
    vals = (codes.to(torch.int32).unsqueeze(-1) >> shifts) & ((1 << bits) - 1)
    return vals.reshape(len(codes), -1)[:, :d].long()


def table_width(n_queries_tokens: int) -> int:
    """Columns of a score table: the query token count rounded up to 8 (SIMD-friendly; padding is zero)."""
    return max(8, -(-n_queries_tokens // 8) * 8)


def affine_score_table(q: np.ndarray, low: np.ndarray, step: np.ndarray, bits: int) -> np.ndarray:
    """Score table of per-dimension affine codes (``decode = low + level * step``, levels packed by
    :func:`pack`): ``T`` of shape ``(packed_size(d, bits), 256, table_width(nq))`` float32 with
    ``q[t] . decode(code) == sum_j T[j, code[j], t]`` (up to float rounding), so a code is scored against
    every query token by one table row per byte instead of decoding it.

    >>> q = np.array([[1.0, -2.0, 0.5]], np.float32)
    >>> low, step = np.array([0.1, 0.2, 0.3], np.float32), np.array([1.0, 0.5, 0.25], np.float32)
    >>> code = pack(np.array([[1, 0, 1]], np.uint8), 1)
    >>> t = affine_score_table(q, low, step, 1)
    >>> dec = low + unpack(code, 3, 1) * step
    >>> bool(np.isclose(t[np.arange(t.shape[0]), code[0], 0].sum(), float(q[0] @ dec[0])))
    True
    """
    q = np.asarray(q, np.float32)
    nq, d = q.shape
    per = 8 // bits
    nb = packed_size(d, bits)
    width = table_width(nq)
    w = np.zeros((nb * per, width), np.float32)
    w[:d, :nq] = (q * step).T
    byte = np.arange(256, dtype=np.uint16)[:, None]
    levels = ((byte >> (np.arange(per, dtype=np.uint16) * bits)) & ((1 << bits) - 1)).astype(np.float32)
    table = np.matmul(levels[None], w.reshape(nb, per, width))  # (nb, 256, width)
    table[0, :, :nq] += q @ low  # the constant part, once per code
    return np.ascontiguousarray(table, np.float32)
