"""ColBERTv2-style residual compression ``rq<b>[c<n>]``: a coarse centroid id + ``b``-bit residual buckets.

Each vector ``x`` is stored as the id of its nearest of ``n`` k-means centroids ``C`` (faiss) plus, per
dimension, the ``b``-bit bucket (``b`` in 1, 2, 4) of its residual ``r = x - C[id]``. As in ColBERTv2 the
bucket cutoffs are quantiles of the sample's residuals (``2^b`` equally populated buckets), here *per
dimension*, since after a projection the dimensions' spreads differ; a bucket decodes to the mean residual
that fell into it on the sample (the ColBERTv2 weights are the bucket-midpoint quantiles; the conditional
mean has lower error and still lies inside the bucket). Decoding is ``C[id] + weights[dim, bucket]``.

Code layout: centroid id (little-endian ``uint16`` when ``n <= 65536``, else ``uint32``) then the packed
residual bits, so ``code_size = 2 (or 4) + ceil(dim * b / 8)`` bytes.

``n`` defaults (spec ``rq2``) to ColBERTv2's rule from the sample size, ``2^floor(log2(16 sqrt(N)))``,
capped at ``N / 32`` and 65536 (so ids always fit ``uint16``); ``rq2c4096`` fixes it. k-means runs on at most
``max_train`` vectors for ``niter`` iterations. The centroid id is also the stage-1 inverted-list term:
:attr:`coarse_centroids`, :meth:`coarse_terms`.

>>> import numpy as np
>>> x = np.random.default_rng(0).normal(size=(3000, 16)).astype(np.float32)
>>> rq = RQ(16, 2, 64).fit(x)
>>> codes = rq.encode(x)
>>> codes.shape, rq.spec(), rq.coarse_terms(codes).dtype
((3000, 6), 'rq2c64', dtype('int64'))
>>> err = np.linalg.norm(rq.decode(codes) - x, axis=1).mean() / np.linalg.norm(x, axis=1).mean()
>>> bool(err < 0.5)
True
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np

from ..exceptions import IndexCorruptedError, InvalidVectorsError, SpecError
from . import _bits
from .base import Codec, check_codes, check_codes_torch, default_n_centroids, register, state_array

__all__ = ["RQ"]

_TOKEN = re.compile(r"rq(.*?)(?:c(.*))?")
_INT = re.compile(r"[1-9][0-9]*")
#: residual statistics (cutoffs, weights) are estimated from at most this many vectors
STATS_SAMPLE = 65536
#: rows per chunk when assigning vectors to centroids
_CHUNK = 65536


@register
class RQ(Codec):
    """``rq<b>[c<n>]``: coarse centroid + ``b``-bit per-dimension residual buckets (see module docstring)."""

    name = "rq"
    token_form = "rq<b>[c<n>]"
    kind = "quantizer"

    def __init__(
        self,
        dim_in: int,
        bits: int,
        n_centroids: int | None = None,
        *,
        niter: int = 10,
        max_train: int = 200_000,
        seed: int = 1234,
    ):
        super().__init__(dim_in)
        if bits not in (1, 2, 4):
            raise SpecError(
                f"rq{bits}: residual bits must be 1, 2 or 4; write rq<b>[c<n>], e.g. rq2 or rq4c4096"
            )
        if n_centroids is not None and (not isinstance(n_centroids, (int, np.integer)) or n_centroids < 1):
            raise SpecError(f"rq<b>c<n> needs a positive number of centroids n, got {n_centroids!r}")
        if n_centroids is not None and n_centroids > 1 << 32:
            raise SpecError(f"rq{bits}c{n_centroids}: at most 2**32 centroids are supported")
        self.bits = int(bits)
        self.n_centroids = None if n_centroids is None else int(n_centroids)
        self.niter = int(niter)
        self.max_train = int(max_train)
        self.seed = int(seed)

    @classmethod
    def parse_token(cls, token: str) -> dict[str, Any] | None:
        if not token.startswith("rq"):
            return None
        m = _TOKEN.fullmatch(token)
        bad = SpecError(
            f"bad stage {token!r}: expected rq<b>[c<n>] with b = 1, 2 or 4 residual bits per dimension and "
            "optionally n centroids, e.g. rq2 or rq4c4096"
        )
        if (
            not m
            or not _INT.fullmatch(m.group(1))
            or (m.group(2) is not None and not _INT.fullmatch(m.group(2)))
        ):
            raise bad
        if int(m.group(1)) not in (1, 2, 4):
            raise bad
        return {"bits": int(m.group(1)), "n_centroids": None if m.group(2) is None else int(m.group(2))}

    # ---- sizes
    @property
    def dim_out(self) -> int:
        return self.dim_in

    @property
    def id_bytes(self) -> int:
        return 2 if (self.n_centroids or 0) <= 65536 else 4

    @property
    def code_size(self) -> int:
        return self.id_bytes + _bits.packed_size(self.dim_in, self.bits)

    @property
    def n_buckets(self) -> int:
        return 1 << self.bits

    def spec(self) -> str:
        return f"rq{self.bits}" + ("" if self.n_centroids is None else f"c{self.n_centroids}")

    # ---- fitting
    def _fit(self, x: np.ndarray) -> None:
        import faiss

        # ColBERTv2's rule: at least 32 sample vectors per centroid, at most 65536 centroids
        k = self.n_centroids or default_n_centroids(len(x), points_per_centroid=32, max_centroids=65536)
        if len(x) < k:
            raise InvalidVectorsError(
                f"{self.spec()} needs at least {k} sample vectors to fit {k} centroids, got {len(x)}: "
                f"fit on more vectors or choose fewer centroids (rq{self.bits}c<n>)"
            )
        rng = np.random.default_rng(self.seed)
        train = (
            x if len(x) <= self.max_train else x[np.sort(rng.choice(len(x), self.max_train, replace=False))]
        )
        km = faiss.Kmeans(self.dim_in, k, niter=self.niter, seed=self.seed, verbose=False)
        km.cp.max_points_per_centroid = max(256, -(-len(train) // k))  # we already subsampled
        km.cp.min_points_per_centroid = 1  # n >= k is checked above; small samples need no warning
        km.train(np.ascontiguousarray(train, dtype=np.float32))
        assert km.centroids is not None  # faiss sets them in train
        self._set_centroids(km.centroids)
        sample = x if len(x) <= STATS_SAMPLE else x[np.sort(rng.choice(len(x), STATS_SAMPLE, replace=False))]
        r = sample - self.centroids_[self._assign(sample)]
        nb = self.n_buckets
        qs = np.arange(1, nb) / nb
        cutoffs = np.quantile(r, qs, axis=0).T.astype(np.float32)  # (dim, nb - 1)
        mids = np.quantile(r, (np.arange(nb) + 0.5) / nb, axis=0).T.astype(np.float32)  # (dim, nb)
        b = self._buckets(r, cutoffs)
        weights = np.empty((self.dim_in, nb), np.float32)
        for j in range(nb):
            mask = b == j
            cnt = mask.sum(0)
            mean = np.where(mask, r, 0).sum(0) / np.maximum(cnt, 1)
            weights[:, j] = np.where(cnt > 0, mean, mids[:, j])
        self.cutoffs_ = cutoffs
        self.weights_ = weights

    def _set_centroids(self, c: np.ndarray) -> None:
        import faiss

        self.centroids_ = np.ascontiguousarray(c, dtype=np.float32)
        self._index = faiss.IndexFlatL2(self.dim_in)
        self._index.add(self.centroids_)

    def _assign(self, x: np.ndarray) -> np.ndarray:
        out = np.empty(len(x), np.int64)
        for a in range(0, len(x), _CHUNK):
            _, idx = self._index.search(np.ascontiguousarray(x[a : a + _CHUNK], dtype=np.float32), 1)
            out[a : a + _CHUNK] = idx[:, 0]
        return out

    @staticmethod
    def _buckets(r: np.ndarray, cutoffs: np.ndarray) -> np.ndarray:
        b = np.zeros(r.shape, np.uint8)
        for k in range(cutoffs.shape[1]):
            b += r > cutoffs[:, k]
        return b

    # ---- coding
    def _encode(self, x: np.ndarray) -> np.ndarray:
        ids = self._assign(x)
        r = x - self.centroids_[ids]
        out = np.empty((len(x), self.code_size), np.uint8)
        dt = "<u2" if self.id_bytes == 2 else "<u4"
        out[:, : self.id_bytes] = ids.astype(dt).view(np.uint8).reshape(len(x), self.id_bytes)
        out[:, self.id_bytes :] = _bits.pack(self._buckets(r, self.cutoffs_), self.bits)
        return out

    def _ids(self, codes: np.ndarray) -> np.ndarray:
        dt = "<u2" if self.id_bytes == 2 else "<u4"
        ids = np.ascontiguousarray(codes[:, : self.id_bytes]).view(dt)[:, 0].astype(np.int64)
        if len(ids) and ids.max() >= len(self.centroids_):
            raise InvalidVectorsError(
                f"codes hold centroid id {int(ids.max())} but {self.spec()} has {len(self.centroids_)} centroids: "
                "these codes were not produced by this codec"
            )
        return ids

    def _decode(self, codes: np.ndarray) -> np.ndarray:
        ids = self._ids(codes)
        b = _bits.unpack(codes[:, self.id_bytes :], self.dim_in, self.bits)
        res = self.weights_[np.arange(self.dim_in), b]  # (n, dim)
        return (self.centroids_[ids] + res).astype(np.float32)

    def decode_torch(self, codes: Any) -> Any:
        import torch

        self._check_fitted()
        codes = check_codes_torch(codes, self.code_size)
        dev = codes.device
        ids = torch.zeros(len(codes), dtype=torch.int64, device=dev)
        for i in range(self.id_bytes):
            ids |= codes[:, i].long() << (8 * i)
        if len(ids) and int(ids.max()) >= len(self.centroids_):
            raise InvalidVectorsError(
                f"codes hold centroid id {int(ids.max())} but {self.spec()} has {len(self.centroids_)} centroids"
            )
        b = _bits.unpack_torch(codes[:, self.id_bytes :], self.dim_in, self.bits)
        w = torch.from_numpy(self.weights_).to(dev)
        res = w[torch.arange(self.dim_in, device=dev), b]
        return torch.from_numpy(self.centroids_).to(dev)[ids] + res

    # ---- stage-1 hooks
    @property
    def coarse_centroids(self) -> np.ndarray:
        """``(n_centroids, dim)`` float32 k-means centroids (the stage-1 vocabulary)."""
        self._check_fitted()
        return self.centroids_

    def coarse_terms(self, codes: np.ndarray) -> np.ndarray:
        """int64 ``(n,)`` centroid id of each code, read from its first bytes (no decoding)."""
        self._check_fitted()
        return self._ids(check_codes(codes, self.code_size))

    # ---- state
    def _state_arrays(self) -> dict[str, np.ndarray]:
        return {"centroids": self.centroids_, "cutoffs": self.cutoffs_, "weights": self.weights_}

    def _load_arrays(self, arrays: dict[str, np.ndarray]) -> None:
        if "centroids" not in arrays or np.ndim(arrays["centroids"]) != 2:
            raise IndexCorruptedError(f"stored state of {self.spec()} lacks a 2-D 'centroids' array")
        k = len(arrays["centroids"])
        if (
            (self.n_centroids is not None and k != self.n_centroids)
            or k < 1
            or k > (1 << (8 * self.id_bytes))
        ):
            raise IndexCorruptedError(f"stored {self.spec()} state has {k} centroids")
        c = state_array(arrays, "centroids", (k, self.dim_in), self.spec())
        cut = state_array(arrays, "cutoffs", (self.dim_in, self.n_buckets - 1), self.spec())
        w = state_array(arrays, "weights", (self.dim_in, self.n_buckets), self.spec())
        if not (np.isfinite(c).all() and np.isfinite(cut).all() and np.isfinite(w).all()):
            raise IndexCorruptedError(f"stored {self.spec()} state contains NaN/Inf")
        self.cutoffs_ = cut.astype(np.float32)
        self.weights_ = w.astype(np.float32)
        self._set_centroids(c)
