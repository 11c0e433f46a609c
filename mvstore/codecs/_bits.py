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

import numba
import numpy as np

__all__ = [
    "packed_size",
    "pack",
    "unpack",
    "unpack_torch",
    "affine_score_table",
    "table_units",
    "table_width",
]

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
    groups = padded.reshape(n, nb, per)
    out = np.zeros((n, nb), np.uint8)
    for k in range(per):
        out |= groups[:, :, k] << np.uint8(k * bits)
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


def table_units(codes: np.ndarray, levels: int) -> np.ndarray:
    """The units a score table with ``levels`` rows per unit indexes (``Codec.score_table``):
    ``(n, code_size)`` uint8 codes -> their bytes (``levels=256``) or their nibbles, low nibble first
    (``levels=16``, ``(n, 2 * code_size)``). The reference for the compiled table kernel.

    >>> table_units(np.array([[0x2F, 0x01]], np.uint8), 16).tolist()
    [[15, 2, 1, 0]]
    """
    codes = np.asarray(codes, np.uint8)
    if levels == 256:
        return codes
    if levels != 16:
        raise ValueError(f"a score table has 16 (nibble) or 256 (byte) levels per unit, got {levels}")
    return np.stack([codes & 15, codes >> 4], axis=2).reshape(len(codes), -1)


def affine_score_table(q: np.ndarray, low: np.ndarray, step: np.ndarray, bits: int) -> np.ndarray:
    """Score table of per-dimension affine codes (``decode = low + level * step``, levels packed by
    :func:`pack`, ``bits`` 1, 2 or 4): ``T`` of shape ``(2 * packed_size(d, bits), 16, table_width(nq))``
    float32, one unit per nibble of the code (:func:`table_units`), with
    ``q[t] . decode(code) == sum_u T[u, nibble_u(code), t]`` (up to float rounding). A code is then scored
    against every query token by one table row per nibble instead of being decoded; nibble tables are 16x
    smaller than byte tables, so they stay in the core's cache. Built by a compiled kernel that releases
    the GIL, cheap enough for a search to build it inline.

    >>> q = np.array([[1.0, -2.0, 0.5]], np.float32)
    >>> low, step = np.array([0.1, 0.2, 0.3], np.float32), np.array([1.0, 0.5, 0.25], np.float32)
    >>> code = pack(np.array([[1, 0, 1]], np.uint8), 1)
    >>> t = affine_score_table(q, low, step, 1)
    >>> dec = low + unpack(code, 3, 1) * step
    >>> units = table_units(code, 16)[0]
    >>> bool(np.isclose(t[np.arange(t.shape[0]), units, 0].sum(), float(q[0] @ dec[0])))
    True
    """
    if bits not in (1, 2, 4):
        raise ValueError(f"nibble score tables need 1, 2 or 4 bits per value, got {bits}")
    q = np.ascontiguousarray(q, np.float32)
    low = np.ascontiguousarray(low, np.float32)
    step = np.ascontiguousarray(step, np.float32)
    if q.ndim != 2 or low.shape != (q.shape[1],) or step.shape != low.shape:
        raise ValueError(
            f"query tokens {q.shape} must be (nq, d) with low/step of shape (d,), got {low.shape}"
        )
    return _affine_nibble_table(q, low, step, bits, 2 * packed_size(q.shape[1], bits), table_width(len(q)))


# one compiled loop nest, kept whole: split into calls it would leave the hot loop (issue 17 keeps the measured kernels)
@numba.njit(cache=True, nogil=True)
def _affine_nibble_table(q, low, step, bits, n_units, width):  # noqa: C901  # pragma: no cover - compiled
    nq, d = q.shape
    per = 4 // bits  # values per nibble: value k sits in nibble k // per, at bit (k % per) * bits
    mask = (1 << bits) - 1
    w = np.zeros((n_units * per, width), np.float32)  # w[k, t] = q[t, k] * step[k]
    for k in range(d):
        for t in range(nq):
            w[k, t] = q[t, k] * step[k]
    table = np.zeros((n_units, 16, width), np.float32)
    for u in range(n_units):
        for lv in range(16):
            row = table[u, lv]
            for p in range(per):
                level = np.float32((lv >> (p * bits)) & mask)
                if level != 0:
                    wk = w[u * per + p]
                    for t in range(width):
                        row[t] += level * wk[t]
    for t in range(nq):  # the constant part q . low, once per code (on unit 0)
        c = np.float32(0.0)
        for k in range(d):
            c += q[t, k] * low[k]
        for lv in range(16):
            table[0, lv, t] += c
    return table
