"""Product quantization ``pq<m>``: ``m`` sub-quantizers of 256 centroids each (faiss), ``m`` bytes per vector.

The vector is cut into ``m`` contiguous sub-vectors of ``dim / m`` dimensions; each is replaced by the id of
its nearest of 256 k-means centroids learned on the sample (``faiss.ProductQuantizer``, 8 bits per
sub-quantizer). ``dim`` must divide by ``m``. Decoding concatenates the centroids (pure numpy / torch, so
stage-2 decoding runs on the GPU); decoded vectors re-encode to codes that decode to the same vectors.

>>> import numpy as np
>>> x = np.random.default_rng(0).normal(size=(600, 16)).astype(np.float32)
>>> pq = PQ(16, 4, niter=5).fit(x)
>>> codes = pq.encode(x)
>>> codes.shape, pq.code_size, bool((pq.decode(pq.encode(pq.decode(codes))) == pq.decode(codes)).all())
((600, 4), 4, True)
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..exceptions import IndexCorruptedError, InvalidVectorsError, SpecError
from .base import Codec, check_codes_torch, int_param, register, state_array

__all__ = ["PQ"]

#: centroids per sub-quantizer (8 bits)
KSUB = 256
#: at most this many sample vectors train the sub-quantizers
FIT_SAMPLE = 65536


@register
class PQ(Codec):
    """``pq<m>``: product quantization with ``m`` 8-bit sub-quantizers (``dim_in % m == 0``)."""

    name = "pq"
    token_form = "pq<m>"
    kind = "quantizer"

    def __init__(self, dim_in: int, m: int, *, niter: int = 20, seed: int = 1234):
        super().__init__(dim_in)
        if not isinstance(m, (int, np.integer)) or m <= 0:
            raise SpecError(f"pq<m> needs a positive integer m, got {m!r}")
        if self.dim_in % m:
            divisors = [k for k in range(1, self.dim_in + 1) if self.dim_in % k == 0]
            raise SpecError(
                f"pq{m}: input dim {self.dim_in} is not divisible by {m}; use pq<m> with m one of "
                f"{divisors[-12:]} (or project first, e.g. pca{self.dim_in - self.dim_in % m},pq{m})"
            )
        self.m = int(m)
        self.niter = int(niter)
        self.seed = int(seed)

    @classmethod
    def parse_token(cls, token: str) -> dict[str, Any] | None:
        m = int_param(token, "pq", cls.form())
        return None if m is None else {"m": m}

    @property
    def dim_out(self) -> int:
        return self.dim_in

    @property
    def code_size(self) -> int:
        return self.m

    @property
    def dsub(self) -> int:
        return self.dim_in // self.m

    def spec(self) -> str:
        return f"pq{self.m}"

    def _fit(self, x: np.ndarray) -> None:
        import faiss

        if len(x) < KSUB:
            raise InvalidVectorsError(
                f"pq{self.m} needs at least {KSUB} sample vectors to train its 256-centroid sub-quantizers, "
                f"got {len(x)}: fit on a larger sample"
            )
        if len(x) > FIT_SAMPLE:
            x = x[np.sort(np.random.default_rng(self.seed).choice(len(x), FIT_SAMPLE, replace=False))]
        pq = faiss.ProductQuantizer(self.dim_in, self.m, 8)
        pq.cp.niter = self.niter
        pq.cp.seed = self.seed
        pq.cp.max_points_per_centroid = 1 << 30  # we already subsampled
        pq.cp.min_points_per_centroid = 1  # small samples are allowed (>= 256 checked above); no warning spam
        pq.train(np.ascontiguousarray(x, dtype=np.float32))
        self._set_centroids(faiss.vector_to_array(pq.centroids).reshape(self.m, KSUB, self.dsub), pq)

    def _set_centroids(self, centroids: np.ndarray, pq: Any = None) -> None:
        import faiss

        self.centroids_ = np.ascontiguousarray(centroids, dtype=np.float32)
        if pq is None:
            pq = faiss.ProductQuantizer(self.dim_in, self.m, 8)
            faiss.copy_array_to_vector(self.centroids_.ravel(), pq.centroids)
            pq.sync_transposed_centroids()
        self._pq = pq

    def _encode(self, x: np.ndarray) -> np.ndarray:
        if len(x) == 0:
            return np.zeros((0, self.m), np.uint8)
        return self._pq.compute_codes(np.ascontiguousarray(x, dtype=np.float32))

    def _decode(self, codes: np.ndarray) -> np.ndarray:
        sub = self.centroids_[np.arange(self.m), codes]  # (n, m, dsub)
        return sub.reshape(len(codes), self.dim_in)

    def score_table(self, q: np.ndarray) -> np.ndarray | None:
        """ADC lookup table: ``T[j, c, t] = q[t, sub j] . centroids_[j, c]``."""
        from ._bits import table_width

        self._check_fitted()
        q = np.asarray(q, np.float32)
        width = table_width(len(q))
        qs = np.zeros((self.m, self.dsub, width), np.float32)
        qs[:, :, : len(q)] = q.reshape(len(q), self.m, self.dsub).transpose(1, 2, 0)
        return np.ascontiguousarray(np.matmul(self.centroids_, qs), np.float32)  # (m, 256, width)

    def decode_torch(self, codes: Any) -> Any:
        import torch

        self._check_fitted()
        codes = check_codes_torch(codes, self.code_size)
        cent = torch.from_numpy(self.centroids_).to(codes.device)
        sub = cent[torch.arange(self.m, device=codes.device), codes.long()]
        return sub.reshape(len(codes), self.dim_in)

    def _state_arrays(self) -> dict[str, np.ndarray]:
        return {"centroids": self.centroids_}

    def _load_arrays(self, arrays: dict[str, np.ndarray]) -> None:
        c = state_array(arrays, "centroids", (self.m, KSUB, self.dsub), self.spec())
        if not np.isfinite(c).all():
            raise IndexCorruptedError(f"stored {self.spec()} centroids contain NaN/Inf")
        self._set_centroids(c)
