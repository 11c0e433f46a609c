"""Linear transforms that shrink the dimension before quantization: ``pca<d>`` and ``trunc<d>``.

Both are applied identically to document and query tokens, so MaxSim is computed in the reduced space.

* ``pca<d>`` is an *uncentered* PCA: the top-``d`` eigenvectors of the second-moment matrix
  ``E[x xᵀ]`` of the sample's token vectors, an orthonormal basis ``V`` (``dim_in x d``). Projecting both
  sides gives ``<Vᵀq, Vᵀx> = <q, VVᵀx>``, the best rank-``d`` approximation of the inner products MaxSim
  sums (centering would drop the mean direction, which for embedding models carries a large, shared
  part of every inner product; leaving it in keeps scores on their original scale). Vectors are not
  re-normalized: the projection is one fixed linear map, so query and document tokens stay consistent.
* ``trunc<d>`` keeps the first ``d`` coordinates (Matryoshka-style models put the most information
  there). No re-normalization, for the same reason; it needs no fitting.

>>> import numpy as np
>>> x = np.random.default_rng(0).normal(size=(400, 6)).astype(np.float32) * [5, 3, 1, .1, .1, .1]
>>> p = PCA(6, 3).fit(x.astype(np.float32))
>>> y = p.encode(x.astype(np.float32))
>>> y.shape, bool(np.abs((y * y).sum() / (x * x).sum() - 1) < 0.01)
((400, 3), True)
>>> Trunc(6, 2).encode(np.arange(12, dtype=np.float32).reshape(2, 6)).tolist()
[[0.0, 1.0], [6.0, 7.0]]
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..exceptions import SpecError
from .base import Codec, int_param, register, state_array

__all__ = ["PCA", "Trunc"]

#: the second-moment matrix is estimated from at most this many sample vectors
FIT_SAMPLE = 262144


class _DimReduce(Codec):
    kind = "transform"

    def __init__(self, dim_in: int, d: int):
        super().__init__(dim_in)
        if not isinstance(d, (int, np.integer)) or d <= 0:
            raise SpecError(f"{self.name}<d> needs a positive integer d, got {d!r}")
        if d > self.dim_in:
            raise SpecError(
                f"{self.name}{d} asks for {d} dimensions but its input has only {self.dim_in}: "
                f"use {self.name}<d> with d <= {self.dim_in}"
            )
        self.d = int(d)

    @classmethod
    def parse_token(cls, token: str) -> dict[str, Any] | None:
        d = int_param(token, cls.name, cls.form())
        return None if d is None else {"d": d}

    @property
    def dim_out(self) -> int:
        return self.d

    @property
    def code_size(self) -> int:
        return 0

    def spec(self) -> str:
        return f"{self.name}{self.d}"


@register
class PCA(_DimReduce):
    """Uncentered PCA to ``d`` dimensions (see the module docstring)."""

    name = "pca"
    token_form = "pca<d>"

    @property
    def min_fit_vectors(self) -> int:
        return self.d  # fewer vectors span fewer than d directions: the rest of the basis would be arbitrary

    def _fit(self, x: np.ndarray) -> None:
        if len(x) > FIT_SAMPLE:
            x = x[np.sort(np.random.default_rng(0).choice(len(x), FIT_SAMPLE, replace=False))]
        m = np.zeros((self.dim_in, self.dim_in), np.float64)
        for a in range(0, len(x), 65536):
            xb = x[a : a + 65536].astype(np.float64)
            m += xb.T @ xb
        m /= len(x)
        w, v = np.linalg.eigh(m)
        order = np.argsort(w)[::-1][: self.d]
        v = v[:, order]
        # deterministic signs: the largest-magnitude entry of each component is positive
        sign = np.sign(v[np.abs(v).argmax(axis=0), np.arange(self.d)])
        sign[sign == 0] = 1
        self.components_ = np.ascontiguousarray(v * sign, dtype=np.float32)
        self.explained_ = (w[order] / max(w.sum(), 1e-30)).astype(np.float32)

    def _encode(self, x: np.ndarray) -> np.ndarray:
        return x @ self.components_

    def _state_arrays(self) -> dict[str, np.ndarray]:
        return {"components": self.components_, "explained": self.explained_}

    def _load_arrays(self, arrays: dict[str, np.ndarray]) -> None:
        c = state_array(arrays, "components", (self.dim_in, self.d), self.spec()).astype(np.float32)
        e = state_array(arrays, "explained", (self.d,), self.spec()).astype(np.float32)
        if not np.isfinite(c).all():
            from ..exceptions import IndexCorruptedError

            raise IndexCorruptedError(f"stored {self.spec()} components contain NaN/Inf")
        self.components_, self.explained_ = np.ascontiguousarray(c), e


@register
class Trunc(_DimReduce):
    """Keep the first ``d`` dimensions (Matryoshka truncation); no fitting, no re-normalization."""

    name = "trunc"
    token_form = "trunc<d>"
    requires_fit = False

    def _encode(self, x: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(x[:, : self.d])
