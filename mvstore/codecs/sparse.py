"""Sparse "lexical" codecs for SLIM-style sparsified late interaction (Li et al. 2023).

Each token vector ``x`` is mapped to a non-negative sparse vector ``s(x)`` over a vocabulary of ``V`` terms,
and only its top ``t`` terms are stored. The score of a query against a document becomes the sparsified
late interaction ``sum_i max_j <s(q_i), s(d_j)>``, which inverted (term -> document) posting lists can
bound from above and below (see :mod:`mvstore.search.sparse`).

Two maps, both quantizers of the codec contract (``dim_out == V``; :meth:`~SparseCodec.decode` returns the
dense ``V``-dim sparse vector, :meth:`~SparseCodec.sparse_decode` the ``(term ids, weights)`` pairs search
uses, and :meth:`~SparseCodec.transform_query` maps query tokens to their sparse vectors):

* ``slim<V>t<t>[p<thr>]`` -- :class:`SlimHead`: a user-supplied linear head as in SLIM/SPLADE,
  ``s(x) = log(1 + relu(W x + b))`` with ``W`` of shape ``(V, dim)``; keep the top ``t`` terms, drop weights
  ``<= thr``. Load the head with :meth:`SlimHead.from_file` (safetensors, ``.npz`` or ``.npy``; never pickle)
  or :meth:`SlimHead.set_head`, then ``fit`` a sample to calibrate the weight quantization.
* ``spk<V>t<t>[p<thr>]`` -- :class:`SparseKMeans`: an unsupervised map for models without a head, learned
  from the corpus's own token vectors: ``V`` spherical k-means centroids (faiss) are the vocabulary; a
  vector's weights are its top ``t`` cosine similarities to them, shifted by the similarity of its
  ``(t+1)``-th nearest centroid (``relu(cos_v - cos_(t+1))``, so the weights fade to zero at the edge of
  the neighbourhood and are comparable between tokens), then L2-normalized so ``<s(x), s(x)> = 1``;
  weights ``<= thr`` are dropped.

Codes are fixed size per vector: ``t`` term ids (little-endian ``uint16`` when ``V <= 65536``, else ``uint32``)
followed by ``t`` weights quantized to ``uint8`` (``weight ~= code * scale``, ``scale`` fitted on the sample and
saved with the state). A zero weight marks an unused slot (fewer than ``t`` terms survived the threshold);
used slots come first, by decreasing weight. So ``code_size = t * (2 or 4) + t`` bytes, computable from the
spec token alone:

>>> SparseKMeans(384, 4096, 8).code_size
24
>>> SlimHead(384, 30522, 16, 0.1).code_size
48
>>> SlimHead(384, 100_000, 8).code_size  # uint32 ids past 65536 terms
40
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from .._checks import check_int
from .._rank import top_k_each
from ..exceptions import (
    DimensionMismatchError,
    IndexCorruptedError,
    InvalidDtypeError,
    InvalidVectorsError,
    NotFittedError,
    SpecError,
)
from .base import Codec, check_codes, check_vectors, register

__all__ = ["SparseCodec", "SlimHead", "SparseKMeans", "log1p_relu", "is_sparse_codec"]

#: rows per chunk when computing scores against the whole vocabulary (bounds memory to ~chunk * V floats)
_CHUNK_ELEMS = 1 << 23


def log1p_relu(z: np.ndarray) -> np.ndarray:
    """SPLADE/SLIM activation ``log(1 + max(z, 0))``, elementwise, float32.

    >>> log1p_relu(np.array([-1.0, 0.0, np.e - 1.0])).round(6).tolist()
    [0.0, 0.0, 1.0]
    """
    return np.log1p(np.maximum(np.asarray(z, dtype=np.float32), 0.0))


def is_sparse_codec(codec: Any) -> bool:
    """Whether ``codec`` (or the last stage of a pipeline) is a sparse codec with ``sparse_decode``."""
    return _sparse_stage(codec) is not None


def _sparse_stage(codec: Any) -> SparseCodec | None:
    if isinstance(codec, SparseCodec):
        return codec
    for attr in ("quantizer",):
        q = getattr(codec, attr, None)
        if isinstance(q, SparseCodec):
            return q
    stages = getattr(codec, "stages", None)
    if stages:
        last = list(stages)[-1]
        if isinstance(last, SparseCodec):
            return last
    return None


def _positive(name: str, value: Any, cls: str) -> int:
    return check_int(f"{cls}: {name}", value, error=SpecError)


class SparseCodec(Codec):
    """Shared machinery of sparse codecs: top-``t`` term ids + ``uint8`` weights per vector.

    Subclasses implement :meth:`_activations` (``(n, dim_in)`` float32 -> top-``t`` term ids and non-negative
    weights, largest first) and the spec token. Weights ``<= threshold`` are dropped.
    """

    kind: ClassVar[str] = "quantizer"
    #: spec prefix; subclasses override
    name: ClassVar[str] = ""
    _TOKEN: ClassVar[re.Pattern] = re.compile(r"(?!)")
    #: an example token for error messages
    _EXAMPLE: ClassVar[str] = ""

    def __init__(self, dim_in: int, vocab: int, top: int, threshold: float = 0.0):
        super().__init__(dim_in)
        cls = type(self).__name__
        self.vocab = _positive("vocab (V)", vocab, cls)
        self.top = _positive("top (t)", top, cls)
        if self.vocab > 1 << 32:
            raise SpecError(f"{cls}: vocab {vocab} exceeds 2**32 terms; use a smaller vocabulary")
        if self.top > self.vocab:
            raise SpecError(f"{cls}: top t={top} exceeds the vocabulary V={vocab}; use t <= V")
        if isinstance(threshold, bool) or not isinstance(threshold, (int, float, np.floating)):
            raise SpecError(f"{cls}: threshold must be a number, got {threshold!r}")
        if not np.isfinite(threshold) or threshold < 0:
            raise SpecError(f"{cls}: threshold must be finite and >= 0, got {threshold!r}")
        self.threshold = float(threshold)

    # ---- spec grammar (registry-driven: see mvstore.spec)
    @classmethod
    def parse_token(cls, token: str) -> dict[str, Any] | None:
        """Params of a ``<name><V>t<t>[p<thr>]`` token, or None when the token is not this family's.

        A token with this family's prefix that does not fit the form raises :class:`SpecError`.

        >>> SparseKMeans.parse_token("spk4096t8p0.05"), SparseKMeans.parse_token("sq8")
        ({'vocab': 4096, 'top': 8, 'threshold': 0.05}, None)
        """
        if not token.startswith(cls.name):
            return None
        m = cls._TOKEN.fullmatch(token)
        if not m:
            raise SpecError(
                f"bad sparse stage {token!r}; expected {cls.token_form} (e.g. {cls._EXAMPLE!r}): V terms, top t "
                "terms per vector, optional p<threshold> below which weights are dropped"
            )
        v, t, p = int(m.group(1)), int(m.group(2)), m.group(3)
        return {"vocab": v, "top": t, "threshold": float(p) if p is not None else 0.0}

    def spec(self) -> str:
        p = ""
        if self.threshold > 0:
            p = "p" + np.format_float_positional(self.threshold, trim="-")
        return f"{self.name}{self.vocab}t{self.top}{p}"

    # ---- sizes
    @property
    def dim_out(self) -> int:
        return self.vocab

    @property
    def id_dtype(self) -> np.dtype:
        return np.dtype("<u2") if self.vocab <= 65536 else np.dtype("<u4")

    @property
    def code_size(self) -> int:
        return self.top * self.id_dtype.itemsize + self.top

    # ---- the map
    def _activations(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:  # pragma: no cover - abstract
        raise NotImplementedError

    def _pruned(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Top-t ids and float weights in chunks (bounded memory); pruned slots get id 0, weight 0."""
        n = len(x)
        ids = np.zeros((n, self.top), np.int64)
        w = np.zeros((n, self.top), np.float32)
        step = max(1, _CHUNK_ELEMS // max(self.vocab, 1))
        for a in range(0, n, step):
            i, v = self._activations(x[a : a + step])
            keep = v > self.threshold
            ids[a : a + step] = np.where(keep, i, 0)
            w[a : a + step] = np.where(keep, v, 0.0)
        return ids, w

    def _fit_scale(self, x: np.ndarray) -> None:
        _, w = self._pruned(x)
        top = float(w.max()) if w.size else 0.0
        if not top > 0:
            raise InvalidVectorsError(
                f"{type(self).__name__} ({self.spec()}) maps every training vector to an empty sparse vector "
                f"(all weights <= threshold {self.threshold}); lower the threshold or check the head/sample"
            )
        self.scale_ = np.float32(top / 255.0)

    # ---- coding
    def _encode(self, x: np.ndarray) -> np.ndarray:
        ids, w = self._pruned(x)
        return self._pack(ids, w)

    def _pack(self, ids: np.ndarray, w: np.ndarray) -> np.ndarray:
        n, t = ids.shape
        q = np.clip(np.rint(w / self.scale_), 0, 255).astype(np.uint8)
        q[(w > 0) & (q == 0)] = 1  # a kept term never becomes an unused slot
        # used slots first by decreasing weight; unused slots (q == 0) carry id 0
        order = np.lexsort((ids, -q.astype(np.int16)), axis=1) if n else np.zeros((0, t), np.int64)
        q = np.take_along_axis(q, order, axis=1)
        ids = np.where(q > 0, np.take_along_axis(ids, order, axis=1), 0).astype(self.id_dtype)
        out = np.empty((n, self.code_size), np.uint8)
        nb = t * self.id_dtype.itemsize
        out[:, :nb] = ids.view(np.uint8).reshape(n, nb)
        out[:, nb:] = q
        return out

    def sparse_decode(self, codes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """codes -> ``(term_ids (n, t) int64, weights (n, t) float32)``; unused slots have weight 0."""
        self._check_fitted()
        codes = check_codes(codes, self.code_size)
        n, t = len(codes), self.top
        nb = t * self.id_dtype.itemsize
        ids = np.ascontiguousarray(codes[:, :nb]).view(self.id_dtype).reshape(n, t).astype(np.int64)
        w = codes[:, nb:].astype(np.float32) * self.scale_
        if n and int(ids.max()) >= self.vocab:
            raise IndexCorruptedError(
                f"codes hold term id {int(ids.max())} but the vocabulary has {self.vocab} terms: "
                "the codes do not belong to this codec"
            )
        return ids, w

    def _decode(self, codes: np.ndarray) -> np.ndarray:
        return self._densify(*self.sparse_decode(codes))

    def _densify(self, ids: np.ndarray, w: np.ndarray) -> np.ndarray:
        """``(ids, weights)`` -> dense ``(n, V)``; unused slots (weight 0) write nothing."""
        out = np.zeros((len(ids), self.vocab), np.float32)
        used = w > 0
        rows = np.broadcast_to(np.arange(len(ids))[:, None], ids.shape)
        out[rows[used], ids[used]] = w[used]
        return out

    def sparse_transform(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Vectors ``(n, dim_in)`` (query tokens, or a dense index's decoded vectors) -> their sparse map,
        unquantized: ``(term_ids (n, t), weights (n, t))``, pruned slots with weight 0."""
        self._check_fitted()
        return self._pruned(check_vectors(x, self.dim_in, "vectors"))

    def transform_query(self, q: np.ndarray) -> np.ndarray:
        """Query tokens -> their dense ``(n, V)`` sparse vectors (unquantized weights: asymmetric scoring)."""
        return self._densify(*self.sparse_transform(q))

    # ---- state
    def _check_state_array(self, arrays: dict[str, np.ndarray], key: str, shape: tuple) -> np.ndarray:
        if key not in arrays:
            raise IndexCorruptedError(
                f"{type(self).__name__} ({self.spec()}) state is missing array {key!r}; has {sorted(arrays)}"
            )
        a = np.asarray(arrays[key])
        if a.shape != shape or a.dtype.kind != "f" or not np.isfinite(a).all():
            raise IndexCorruptedError(
                f"{type(self).__name__} ({self.spec()}) state array {key!r} has shape {a.shape} dtype {a.dtype}; "
                f"expected finite floats of shape {shape}"
            )
        return np.ascontiguousarray(a, dtype=np.float32)

    def _state_arrays(self) -> dict[str, np.ndarray]:
        return {"scale": np.array([self.scale_], np.float32)}

    def _load_arrays(self, arrays: dict[str, np.ndarray]) -> None:
        scale = self._check_state_array(arrays, "scale", (1,))
        if not scale[0] > 0:
            raise IndexCorruptedError(f"{self.spec()} state has a non-positive weight scale {scale[0]}")
        self.scale_ = np.float32(scale[0])


# ------------------------------------------------------------------------------------------------ SLIM head
def _read_head_file(path: Path, weight_key: str, bias_key: str) -> tuple[np.ndarray, np.ndarray | None]:
    suffix = path.suffix.lower()
    if not path.exists():
        raise FileNotFoundError(f"head file {str(path)!r} does not exist")
    try:
        if suffix == ".safetensors":
            from safetensors import SafetensorError
            from safetensors.numpy import load_file

            try:
                arrays = dict(load_file(str(path)))
            except SafetensorError as e:
                raise ValueError(str(e)) from e
        elif suffix == ".npz":
            with np.load(path, allow_pickle=False) as z:
                arrays = {k: z[k] for k in z.files}
        elif suffix == ".npy":
            arrays = {weight_key: np.load(path, allow_pickle=False)}
        else:
            raise InvalidDtypeError(
                f"head file {str(path)!r} has suffix {suffix!r}; use .safetensors, .npz or .npy"
            )
    except (OSError, ValueError) as e:
        raise IndexCorruptedError(
            f"cannot read head file {str(path)!r} ({e}); it must be a safetensors file or a numpy .npz/.npy "
            "saved without pickled objects"
        ) from e
    if weight_key not in arrays:
        raise IndexCorruptedError(
            f"head file {str(path)!r} has no array {weight_key!r} (found {sorted(arrays)}); "
            "save the (V, dim) head matrix under that key or pass weight_key="
        )
    bias = arrays.get(bias_key)
    return arrays[weight_key], bias


@register
class SlimHead(SparseCodec):
    """SLIM/SPLADE sparse head ``log(1 + relu(W x + b))``, top-``t`` terms, weights ``<= threshold`` dropped.

    Spec ``slim<V>t<t>[p<thr>]``. The head ``W (V, dim_in)``, ``b (V,)`` is supplied by the user
    (:meth:`from_file` or :meth:`set_head`), e.g. a model's MLM vocabulary projection; :meth:`fit` then only
    calibrates the weight quantization on a sample. The head is part of the saved state.

    >>> head = SlimHead(4, 6, 2).set_head(np.eye(6, 4, dtype=np.float32), np.zeros(6, np.float32))
    >>> x = np.array([[2.0, 0.5, -1.0, 0.0]], np.float32)
    >>> ids, w = head.fit(x).sparse_transform(x)   # logits (2, .5, -1, 0, 0, 0): terms 0 and 1
    >>> ids.tolist(), w.astype(float).round(4).tolist()  # log(3), log(1.5)
    ([[0, 1]], [[1.0986, 0.4055]])
    """

    name: ClassVar[str] = "slim"
    _TOKEN: ClassVar[re.Pattern] = re.compile(
        r"slim([1-9]\d*)t([1-9]\d*)(?:p(0\.\d*[1-9]|[1-9]\d*(?:\.\d*[1-9])?))?"
    )
    token_form: ClassVar[str] = "slim<V>t<t>[p<thr>]"
    _EXAMPLE: ClassVar[str] = "slim30522t16"

    def __init__(self, dim_in: int, vocab: int, top: int, threshold: float = 0.0):
        super().__init__(dim_in, vocab, top, threshold)
        self.weight_: np.ndarray | None = None
        self.bias_: np.ndarray | None = None

    def set_head(self, weight: Any, bias: Any = None) -> SlimHead:
        """Install the head ``weight (V, dim_in)`` and optional ``bias (V,)`` (validated). Returns self."""
        w = self._check_head_array(weight, (self.vocab, self.dim_in), "weight")
        b = (
            np.zeros(self.vocab, np.float32)
            if bias is None
            else self._check_head_array(bias, (self.vocab,), "bias")
        )
        self.weight_, self.bias_ = w, b
        self.fitted_ = False  # the weight scale belongs to the previous head
        return self

    def _check_head_array(self, a: Any, shape: tuple, what: str) -> np.ndarray:
        if type(a).__module__.startswith("torch"):
            a = a.detach().float().cpu().numpy()
        if not isinstance(a, np.ndarray) or a.dtype.kind != "f":
            raise InvalidDtypeError(
                f"SlimHead {what} must be a floating-point numpy array of shape {shape}, got "
                f"{getattr(a, 'dtype', type(a).__name__)}"
            )
        if a.shape != shape:
            hint = " (transposed? the head is (V, dim))" if a.shape == shape[::-1] else ""
            raise DimensionMismatchError(
                f"SlimHead {what} has shape {a.shape} but {self.spec()} at dim {self.dim_in} needs {shape}{hint}"
            )
        if not np.isfinite(a).all():
            raise InvalidVectorsError(f"SlimHead {what} contains NaN or Inf values; the head file is damaged")
        return np.ascontiguousarray(a, dtype=np.float32)

    @classmethod
    def from_file(
        cls,
        path: str | os.PathLike,
        *,
        top: int = 16,
        threshold: float = 0.0,
        weight_key: str = "weight",
        bias_key: str = "bias",
    ) -> SlimHead:
        """Load a head from ``.safetensors`` / ``.npz`` (arrays ``weight`` (V, dim) and optional ``bias`` (V,))
        or ``.npy`` (the weight matrix alone). Never unpickles. Call :meth:`fit` on a sample afterwards."""
        w, b = _read_head_file(Path(path), weight_key, bias_key)
        if w.ndim != 2:
            raise DimensionMismatchError(
                f"head {weight_key!r} in {str(path)!r} has shape {w.shape}; expected a 2-D (V, dim) matrix"
            )
        return cls(int(w.shape[1]), int(w.shape[0]), top, threshold).set_head(w, b)

    def save_head(self, path: str | os.PathLike) -> None:
        """Write the head to ``.safetensors`` or ``.npz`` (keys ``weight``, ``bias``)."""
        path = Path(path)
        arrays = self._head()
        if path.suffix == ".safetensors":
            from safetensors.numpy import save_file

            save_file(arrays, str(path))
        elif path.suffix == ".npz":
            np.savez(path, weight=arrays["weight"], bias=arrays["bias"])
        else:
            raise InvalidDtypeError(f"save_head writes .safetensors or .npz, not {path.suffix!r}")

    def _require_head(self) -> None:
        self._head()

    def _head(self) -> dict[str, np.ndarray]:
        """``{"weight", "bias"}``, or NotFittedError when no head was loaded."""
        if self.weight_ is None or self.bias_ is None:
            raise NotFittedError(
                f"SlimHead ({self.spec()}) has no head weights: load them with SlimHead.from_file(path) or "
                ".set_head(weight, bias) first, then call .fit(sample)"
            )
        return {"weight": self.weight_, "bias": self.bias_}

    def _fit(self, x: np.ndarray) -> None:
        self._require_head()
        self._fit_scale(x)

    def _activations(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        head = self._head()
        logits = x @ head["weight"].T
        logits += head["bias"]
        ids, z = top_k_each(logits, self.top)
        return ids, log1p_relu(z)

    def _state_arrays(self) -> dict[str, np.ndarray]:
        return {**super()._state_arrays(), **self._head()}

    def _load_arrays(self, arrays: dict[str, np.ndarray]) -> None:
        super()._load_arrays(arrays)
        self.weight_ = self._check_state_array(arrays, "weight", (self.vocab, self.dim_in))
        self.bias_ = self._check_state_array(arrays, "bias", (self.vocab,))


# --------------------------------------------------------------------------------- unsupervised k-means map
@register
class SparseKMeans(SparseCodec):
    """Unsupervised sparse map: ``V`` spherical k-means centroids of the corpus's tokens are the terms.

    Spec ``spk<V>t<t>[p<thr>]``. A vector's weights on its top ``t`` centroids are
    ``relu(cos_v - cos_(t+1))`` (its similarity to each, minus the similarity of the next-nearest centroid),
    L2-normalized; weights ``<= thr`` are dropped after normalization. Fitted on a sample (at most
    ``max_train`` vectors, ``niter`` k-means iterations, seeded).
    """

    name: ClassVar[str] = "spk"
    _TOKEN: ClassVar[re.Pattern] = re.compile(
        r"spk([1-9]\d*)t([1-9]\d*)(?:p(0\.\d*[1-9]|[1-9]\d*(?:\.\d*[1-9])?))?"
    )
    token_form: ClassVar[str] = "spk<V>t<t>[p<thr>]"
    _EXAMPLE: ClassVar[str] = "spk4096t8"

    def __init__(
        self,
        dim_in: int,
        vocab: int,
        top: int,
        threshold: float = 0.0,
        *,
        niter: int = 12,
        max_train: int = 200_000,
        seed: int = 0,
    ):
        super().__init__(dim_in, vocab, top, threshold)
        if top >= vocab:
            raise SpecError(
                f"SparseKMeans: t={top} must be smaller than V={vocab} (the (t+1)-th centroid is the "
                "zero point of the weights); use t < V"
            )
        self.niter = int(niter)
        self.max_train = int(max_train)
        self.seed = int(seed)

    def _fit(self, x: np.ndarray) -> None:
        import faiss

        if len(x) < self.vocab:
            raise InvalidVectorsError(
                f"{self.spec()} learns {self.vocab} centroids but the sample has only {len(x)} vectors; "
                f"fit on at least {self.vocab} vectors or use a smaller V"
            )
        rng = np.random.default_rng(self.seed)
        sample = (
            x if len(x) <= self.max_train else x[np.sort(rng.choice(len(x), self.max_train, replace=False))]
        )
        sample = _unit(sample)
        km = faiss.Kmeans(
            self.dim_in,
            self.vocab,
            niter=self.niter,
            spherical=True,
            seed=self.seed,
            verbose=False,
            max_points_per_centroid=max(1, -(-len(sample) // self.vocab)),
        )
        km.train(sample)
        c = np.ascontiguousarray(km.centroids, dtype=np.float32)
        self.centroids_ = _unit(c)
        self._fit_scale(x)

    def _search(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        # a BLAS product + argpartition: faiss' flat search is no faster here and its OpenMP start-up
        # dominates single-query latency on a busy machine
        return top_k_each(_unit(x) @ self.centroids_.T, self.top + 1)

    def _activations(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        ids, sims = self._search(x)
        w = np.maximum(sims[:, : self.top] - sims[:, self.top : self.top + 1], 0.0)
        norm = np.linalg.norm(w, axis=1, keepdims=True)
        # a vector equidistant to its t+1 nearest centroids has no preferred term: keep the nearest one
        flat = norm[:, 0] == 0
        w[flat, 0] = 1.0
        norm[flat] = 1.0
        return ids[:, : self.top], (w / norm).astype(np.float32)

    def _state_arrays(self) -> dict[str, np.ndarray]:
        return {**super()._state_arrays(), "centroids": self.centroids_}

    def _load_arrays(self, arrays: dict[str, np.ndarray]) -> None:
        super()._load_arrays(arrays)
        self.centroids_ = self._check_state_array(arrays, "centroids", (self.vocab, self.dim_in))


def _unit(x: np.ndarray) -> np.ndarray:
    n = np.linalg.norm(x, axis=1, keepdims=True)
    return np.ascontiguousarray(x / np.where(n > 0, n, 1.0), dtype=np.float32)
