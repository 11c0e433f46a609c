"""Scalar quantizers: ``fp32``, ``fp16``, ``sq8``, ``sq4`` and ``bin``.

Every dimension is coded on its own:

* ``fp32`` / ``fp16``: the float bits themselves (4 / 2 bytes per dimension), no fitting.
* ``sq8`` / ``sq4``: uniform levels between per-dimension bounds ``lo``/``hi`` learned from the sample
  (8 / 4 bits per dimension). The bounds are the sample's quantiles at ``q`` / ``1 - q``, with ``q``
  picked per dimension from a small grid to minimise the reconstruction error on the sample (min/max
  wastes levels on outliers; clipping too hard distorts the tails). Values outside are clipped.
* ``bin``: 1 bit per dimension; a bit decodes to one of two per-dimension levels (a 1-D two-means
  quantizer, i.e. "scaled signs" around a learned centre), so float queries score asymmetrically
  against decoded documents.

Decoding lands exactly on the levels, so re-encoding a decoded vector gives the same code.

>>> import numpy as np
>>> x = np.random.default_rng(0).normal(size=(1000, 8)).astype(np.float32)
>>> c = SQ8(8).fit(x)
>>> codes = c.encode(x)
>>> codes.dtype, codes.shape, bool((c.encode(c.decode(codes)) == codes).all())
(dtype('uint8'), (1000, 8), True)
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..exceptions import IndexCorruptedError, InvalidVectorsError
from . import _bits
from .base import Codec, check_codes_torch, register, state_array

__all__ = ["FP32", "FP16", "SQ8", "SQ4", "Binary"]

#: at most this many sample vectors are used to fit bounds/levels
FIT_SAMPLE = 65536


def _subsample(x: np.ndarray, n: int, seed: int = 0) -> np.ndarray:
    if len(x) <= n:
        return x
    idx = np.random.default_rng(seed).choice(len(x), n, replace=False)
    return x[np.sort(idx)]


class _FloatCodec(Codec):
    kind = "quantizer"
    requires_fit = False
    _dtype: Any = np.float32

    @property
    def dim_out(self) -> int:
        return self.dim_in

    @property
    def code_size(self) -> int:
        return self.dim_in * np.dtype(self._dtype).itemsize

    def spec(self) -> str:
        return self.name

    def _encode(self, x: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(x.astype(np.dtype(self._dtype).newbyteorder("<"))).view(np.uint8)

    def _decode(self, codes: np.ndarray) -> np.ndarray:
        dt = np.dtype(self._dtype).newbyteorder("<")
        return np.ascontiguousarray(codes).view(dt).astype(np.float32)

    def decode_torch(self, codes: Any) -> Any:
        import torch

        self._check_fitted()
        codes = check_codes_torch(codes, self.code_size)
        tdt = torch.float32 if self._dtype == np.float32 else torch.float16
        return codes.view(tdt).float()


@register
class FP32(_FloatCodec):
    """Uncompressed float32 (4 bytes per dimension)."""

    name = "fp32"
    _dtype = np.float32


@register
class FP16(_FloatCodec):
    """Half precision (2 bytes per dimension). Values beyond float16's range (±65504) would become ±inf, so
    encoding them is an error (:func:`check_fp16_range`): normalise the embeddings or use ``fp32``."""

    name = "fp16"
    _dtype = np.float16

    def _encode(self, x: np.ndarray) -> np.ndarray:
        check_fp16_range(x, "spec 'fp16'", "use spec 'fp32'")
        return super()._encode(x)


#: the largest finite float16
FP16_MAX = float(np.finfo(np.float16).max)


def check_fp16_range(x: np.ndarray, who: str, alternative: str, offsets: np.ndarray | None = None) -> None:
    """InvalidVectorsError when a value of ``x`` is beyond float16's range, which ``who`` would store as inf;
    with the ``offsets`` of a Ragged the message names the document instead of the row.

    >>> check_fp16_range(np.array([[1.0, -7e4]]), "spec 'fp16'", "use spec 'fp32'")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    mvstore.exceptions.InvalidVectorsError: vector 0 has the value -7e+04 at dimension 1, beyond float16's ...
    """
    if x.size == 0:
        return
    big = np.abs(x) > FP16_MAX
    if big.any():
        row, col = (int(v[0]) for v in np.nonzero(big))
        where = (
            f"vector {row}"
            if offsets is None
            else f"document {int(np.searchsorted(offsets, row, 'right')) - 1}"
        )
        raise InvalidVectorsError(
            f"{where} has the value {x[row, col]:.3g} at dimension {col}, beyond float16's range of ±65504 "
            f"that {who} stores it in (it would become inf): normalise the vectors (e.g. L2, as ColBERT-style "
            f"encoders do) or {alternative}"
        )


#: smallest training sample of the learned scalar quantizers (sq8, sq4, bin): their per-dimension ranges or
#: levels need values on both sides of each dimension's centre; one vector (or a handful) gives zero-width
#: ranges that decode every other vector wrongly
MIN_SCALAR_FIT = 32


class _UniformSQ(Codec):
    kind = "quantizer"
    min_fit_vectors = MIN_SCALAR_FIT
    bits: int = 8
    #: candidate clipping quantiles (per tail) tried per dimension at fit time
    clip_grid: tuple[float, ...] = (0.0, 0.0005, 0.002, 0.005, 0.01, 0.02, 0.04)

    @property
    def dim_out(self) -> int:
        return self.dim_in

    @property
    def code_size(self) -> int:
        return _bits.packed_size(self.dim_in, self.bits)

    @property
    def levels(self) -> int:
        return (1 << self.bits) - 1

    def spec(self) -> str:
        return self.name

    def _fit(self, x: np.ndarray) -> None:
        x = _subsample(x, FIT_SAMPLE)
        best_err = np.full(self.dim_in, np.inf)
        lo_best = np.zeros(self.dim_in, np.float32)
        hi_best = np.zeros(self.dim_in, np.float32)
        for q in self.clip_grid:
            lo = np.quantile(x, q, axis=0).astype(np.float32)
            hi = np.quantile(x, 1 - q, axis=0).astype(np.float32)
            step = self._step(lo, hi)
            rec = lo + np.clip(np.rint((x - lo) / step), 0, self.levels) * step
            err = ((rec - x) ** 2).mean(axis=0)
            better = err < best_err
            best_err[better], lo_best[better], hi_best[better] = err[better], lo[better], hi[better]
        self.lo_ = lo_best
        self.step_ = self._step(lo_best, hi_best)

    def _step(self, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
        return np.maximum((hi - lo) / self.levels, 1e-8).astype(np.float32)

    def _encode(self, x: np.ndarray) -> np.ndarray:
        q = np.clip(np.rint((x - self.lo_) / self.step_), 0, self.levels).astype(np.uint8)
        return _bits.pack(q, self.bits)

    def _decode(self, codes: np.ndarray) -> np.ndarray:
        q = _bits.unpack(codes, self.dim_in, self.bits)
        return (self.lo_ + q.astype(np.float32) * self.step_).astype(np.float32)

    def score_table(self, q: np.ndarray) -> np.ndarray | None:
        """Nibble tables for codes of at most 4 bits per dimension; 8-bit codes decode and multiply (a table
        per dimension byte would be 256 rows per dimension, far from any cache)."""
        self._check_fitted()
        if self.bits > 4:
            return None
        return _bits.affine_score_table(q, self.lo_, self.step_, self.bits)

    def decode_torch(self, codes: Any) -> Any:
        import torch

        self._check_fitted()
        codes = check_codes_torch(codes, self.code_size)
        q = _bits.unpack_torch(codes, self.dim_in, self.bits).float()
        lo = torch.from_numpy(self.lo_).to(codes.device)
        step = torch.from_numpy(self.step_).to(codes.device)
        return lo + q * step

    def _state_arrays(self) -> dict[str, np.ndarray]:
        return {"lo": self.lo_, "step": self.step_}

    def _load_arrays(self, arrays: dict[str, np.ndarray]) -> None:
        self.lo_ = state_array(arrays, "lo", (self.dim_in,), self.spec()).astype(np.float32)
        self.step_ = state_array(arrays, "step", (self.dim_in,), self.spec()).astype(np.float32)
        if not (np.isfinite(self.lo_).all() and (self.step_ > 0).all()):
            raise IndexCorruptedError(
                f"stored {self.spec()} state has non-finite bounds or non-positive steps"
            )


@register
class SQ8(_UniformSQ):
    """8-bit uniform scalar quantization per dimension (1 byte per dimension)."""

    name = "sq8"
    bits = 8


@register
class SQ4(_UniformSQ):
    """4-bit uniform scalar quantization per dimension (half a byte per dimension)."""

    name = "sq4"
    bits = 4


@register
class Binary(Codec):
    """1 bit per dimension; each bit decodes to one of two learned per-dimension levels."""

    name = "bin"
    kind = "quantizer"
    n_iter = 8
    min_fit_vectors = MIN_SCALAR_FIT

    @property
    def dim_out(self) -> int:
        return self.dim_in

    @property
    def code_size(self) -> int:
        return _bits.packed_size(self.dim_in, 1)

    def spec(self) -> str:
        return self.name

    def _fit(self, x: np.ndarray) -> None:
        x = _subsample(x, FIT_SAMPLE).astype(np.float64)
        t = x.mean(axis=0)
        for _ in range(self.n_iter):  # 1-D two-means (Lloyd) per dimension
            above = x > t
            n_hi = above.sum(0)
            n_lo = len(x) - n_hi
            s_hi = (x * above).sum(0)
            s_lo = x.sum(0) - s_hi
            hi = np.where(n_hi > 0, s_hi / np.maximum(n_hi, 1), t)
            lo = np.where(n_lo > 0, s_lo / np.maximum(n_lo, 1), t)
            t = (hi + lo) / 2
        gap = np.maximum(hi - lo, 1e-6)  # keep the two levels distinct so decode -> encode is stable
        centre = (hi + lo) / 2
        self.low_ = (centre - gap / 2).astype(np.float32)
        self.high_ = (centre + gap / 2).astype(np.float32)

    def _encode(self, x: np.ndarray) -> np.ndarray:
        thr = (self.low_ + self.high_) / 2
        return _bits.pack((x > thr).astype(np.uint8), 1)

    def _decode(self, codes: np.ndarray) -> np.ndarray:
        # low + bit * (high - low), with numpy's C bit unpacking: faster than selecting per element, and
        # stage-2 search decodes every candidate. decode_torch computes the very same float32 operations.
        out = np.unpackbits(codes, axis=1, count=self.dim_in, bitorder="little") * (self.high_ - self.low_)
        out += self.low_
        return out

    def score_table(self, q: np.ndarray) -> np.ndarray | None:
        self._check_fitted()
        return _bits.affine_score_table(q, self.low_, self.high_ - self.low_, 1)

    def decode_torch(self, codes: Any) -> Any:
        import torch

        self._check_fitted()
        codes = check_codes_torch(codes, self.code_size)
        b = _bits.unpack_torch(codes, self.dim_in, 1)
        gap = torch.from_numpy(self.high_ - self.low_).to(codes.device)
        return b * gap + torch.from_numpy(self.low_).to(codes.device)

    def _state_arrays(self) -> dict[str, np.ndarray]:
        return {"low": self.low_, "high": self.high_}

    def _load_arrays(self, arrays: dict[str, np.ndarray]) -> None:
        low = state_array(arrays, "low", (self.dim_in,), self.spec()).astype(np.float32)
        high = state_array(arrays, "high", (self.dim_in,), self.spec()).astype(np.float32)
        if not (np.isfinite(low).all() and np.isfinite(high).all() and (high > low).all()):
            raise IndexCorruptedError(
                "stored bin state needs finite levels with high > low in every dimension"
            )
        self.low_, self.high_ = low, high
