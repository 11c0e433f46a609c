"""The codec interface: fitted on a sample, then ``encode(vectors) -> codes``, ``decode(codes) -> vectors``.

Conventions (scikit-learn's): constructor arguments are parameters stored as given; everything learned
by :meth:`Codec.fit` lives in attributes ending in ``_``. State is saved as numpy arrays + a JSON-able
dict (:meth:`Codec.get_state` / :meth:`Codec.set_state`), never pickle, so opening an index from an
untrusted source cannot run code.

Two kinds of codec:

* ``transform`` (``pca<d>``, ``trunc<d>``): float vectors -> float vectors of ``dim_out``; queries go
  through the same :meth:`Codec.transform_query`. ``encode`` returns float32, ``code_size`` is 0.
* ``quantizer`` (``fp16``, ``sq8``, ``rq2``, ...): float vectors -> fixed-size ``uint8`` codes of
  ``code_size`` bytes per vector; ``decode`` returns float32 in the same space (``dim_out == dim_in``
  unless the codec says otherwise); ``transform_query`` is the identity for dense quantizers.

A :class:`~mvstore.codecs.pipeline.Pipeline` chains transforms and ends in exactly one quantizer
(``fp32`` when the spec names none), and is itself a codec producing ``uint8`` codes.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, ClassVar

import numpy as np

from .._checks import check_int
from ..exceptions import (
    DimensionMismatchError,
    InvalidDtypeError,
    InvalidVectorsError,
    NotFittedError,
    SpecError,
)

__all__ = [
    "Codec",
    "REGISTRY",
    "register",
    "check_vectors",
    "check_codes",
    "check_codes_torch",
    "int_param",
    "state_array",
    "default_n_centroids",
]

#: input dim used to check the token of a family that only overrides ``Codec.from_token``
_PROBE_DIM = 1 << 12

#: spec-token prefix -> codec class; filled by @register
REGISTRY: dict[str, type[Codec]] = {}


def default_n_centroids(n: int, *, points_per_centroid: int = 1, max_centroids: int | None = None) -> int:
    """The k-means centroid count for ``n`` vectors (PLAID / ColBERTv2): the power of two at or below
    ``16 * sqrt(n)``, with at least ``points_per_centroid`` vectors per centroid, at most ``max_centroids``,
    at least 1. The index's stage-1 centroids use the defaults over every stored vector; ``rq`` takes
    ``points_per_centroid=32, max_centroids=65536`` over its training sample.

    >>> default_n_centroids(780_000), default_n_centroids(10)
    (8192, 8)
    >>> [default_n_centroids(n, points_per_centroid=32, max_centroids=65536) for n in (1_300_000, 200_000, 1000)]
    [16384, 4096, 16]
    """
    k = 2 ** int(np.floor(np.log2(16 * np.sqrt(max(n, 1)))))
    k = min(k, 2 ** int(np.floor(np.log2(max(1, n // points_per_centroid)))))
    if max_centroids is not None:
        k = min(k, max_centroids)
    return max(k, 1)


def register(cls: type[Codec]) -> type[Codec]:
    """Class decorator: make a codec available to the spec grammar under ``cls.name``."""
    if cls.name in REGISTRY and REGISTRY[cls.name] is not cls:
        raise ValueError(f"codec name {cls.name!r} is registered twice")
    REGISTRY[cls.name] = cls
    return cls


def check_vectors(x: Any, dim: int, what: str = "vectors") -> np.ndarray:
    """Validate a ``(n, dim)`` float matrix (dtype, shape, NaN/Inf) and return it as float32."""
    if type(x).__module__.startswith("torch"):
        x = x.detach().cpu().numpy()
    if not isinstance(x, np.ndarray):
        raise InvalidDtypeError(f"{what} must be a numpy array of shape (n, {dim}), got {type(x).__name__}")
    if x.dtype.kind != "f":
        raise InvalidDtypeError(
            f"{what} have dtype {x.dtype}; expected floating point: use .astype(np.float32)"
        )
    if x.ndim != 2:
        raise InvalidVectorsError(f"{what} must be 2-D (n, {dim}), got shape {x.shape}")
    if x.shape[1] != dim:
        raise DimensionMismatchError(f"{what} have dim {x.shape[1]} but this codec expects dim {dim}")
    if x.size and not np.isfinite(x).all():
        row = int(np.flatnonzero(~np.isfinite(x).all(axis=1))[0])
        raise InvalidVectorsError(f"{what} contain NaN or Inf (first at row {row}); clean the input first")
    return np.ascontiguousarray(x, dtype=np.float32)


def check_codes_torch(codes: Any, code_size: int) -> Any:
    """Validate a ``(n, code_size)`` uint8 torch tensor of codes (for ``decode_torch`` overrides)."""
    import torch

    if not isinstance(codes, torch.Tensor) or codes.dtype != torch.uint8:
        raise InvalidDtypeError(
            f"codes must be a uint8 torch tensor of shape (n, {code_size}), got "
            f"{getattr(codes, 'dtype', type(codes).__name__)}"
        )
    if codes.ndim != 2 or codes.shape[1] != code_size:
        raise DimensionMismatchError(f"codes must have shape (n, {code_size}), got {tuple(codes.shape)}")
    return codes.contiguous()


def int_param(token: str, prefix: str, form: str) -> int | None:
    """The positive integer after ``prefix`` in a spec token, None if ``token`` does not start with
    ``prefix``; a :class:`SpecError` naming ``form`` if it does but the rest is not a plain integer.

    >>> int_param("pca64", "pca", "pca<d>"), int_param("sq8", "pca", "pca<d>")
    (64, None)
    """
    if not token.startswith(prefix):
        return None
    rest = token[len(prefix) :]
    if not rest.isascii() or not rest.isdigit() or rest.startswith("0"):
        raise SpecError(f"bad stage {token!r}: expected {form} with a positive integer, e.g. {prefix}64")
    return int(rest)


def state_array(arrays: dict[str, np.ndarray], key: str, shape: tuple[int, ...], who: str) -> np.ndarray:
    """Fetch one stored state array for ``set_state``, checking it exists and has ``shape``."""
    from ..exceptions import IndexCorruptedError

    if key not in arrays:
        raise IndexCorruptedError(f"stored state of {who} lacks array {key!r} (has {sorted(arrays)})")
    a = np.asarray(arrays[key])
    if a.shape != tuple(shape):
        raise IndexCorruptedError(
            f"stored array {key!r} of {who} has shape {a.shape}, expected {tuple(shape)}"
        )
    return a


def check_codes(codes: Any, code_size: int) -> np.ndarray:
    """Validate a ``(n, code_size)`` uint8 code matrix."""
    if not isinstance(codes, np.ndarray) or codes.dtype != np.uint8:
        raise InvalidDtypeError(
            f"codes must be a uint8 numpy array of shape (n, {code_size}), got "
            f"{getattr(codes, 'dtype', type(codes).__name__)}"
        )
    if codes.ndim != 2 or codes.shape[1] != code_size:
        raise DimensionMismatchError(f"codes must have shape (n, {code_size}), got {codes.shape}")
    return codes


class Codec(ABC):
    """Base class of every codec. Subclasses set ``name`` and ``kind`` and implement the abstract methods."""

    #: spec-token prefix, e.g. "pca" for "pca64"
    name: ClassVar[str] = ""
    #: "transform" or "quantizer"
    kind: ClassVar[str] = "quantizer"
    #: whether fit() must be called before encode()
    requires_fit: ClassVar[bool] = True
    #: how the spec token is written, for error messages (e.g. "pca<d>"); defaults to ``name``
    token_form: ClassVar[str] = ""

    # ---- the spec grammar is registry-driven: each class says how its own token parses
    # A family either overrides ``parse_token`` (dim-independent params; ``from_token`` then builds
    # ``cls(dim_in, **params)``) or overrides ``from_token`` alone (its token is then checked without a dim
    # by building it at a probe dim). The parser (mvstore.spec) uses ``parse_token`` to check a spec string
    # and ``from_token`` to build each stage at the dim flowing into it.
    @classmethod
    def parse_token(cls, token: str) -> dict[str, Any] | None:
        """Constructor params encoded in spec ``token`` (dim-independent), or None if the token is not this
        codec's. Raise :class:`SpecError` (no offset; the parser adds it) for a token of this family that is
        malformed. The default serves parameterless codecs whose token is exactly ``name``, and families
        that override only :meth:`from_token`."""
        if cls.from_token.__func__ is not Codec.from_token.__func__:  # type: ignore[attr-defined]
            return {} if cls.from_token(token, _PROBE_DIM) is not None else None
        return {} if token == cls.name else None

    @classmethod
    def from_token(cls, token: str, dim_in: int) -> Codec | None:
        """Build this codec for input dim ``dim_in`` from its spec token, or None if it is not this codec's."""
        params = cls.parse_token(token)
        return None if params is None else cls(dim_in, **params)

    @classmethod
    def form(cls) -> str:
        """The token's written form for error messages, e.g. ``"pca<d>"``."""
        return cls.token_form or getattr(cls, "_FORM", "") or cls.name

    def __init__(self, dim_in: int):
        self.dim_in = check_int("dim_in", dim_in, what="the input vectors' dimension")

    # ---- what every codec must say about itself
    @property
    @abstractmethod
    def dim_out(self) -> int:
        """Dimension of decoded vectors (and of transformed queries)."""

    @property
    @abstractmethod
    def code_size(self) -> int:
        """Bytes per stored vector (0 for transforms, which do not store anything themselves)."""

    @abstractmethod
    def spec(self) -> str:
        """This codec's spec token, e.g. ``"pca64"``; ``parse(codec.spec())`` rebuilds it."""

    # ---- fitting
    def fit(self, x: np.ndarray) -> Codec:
        """Learn the codec's state from a sample ``(n, dim_in)``. Returns self."""
        x = check_vectors(x, self.dim_in, "training vectors")
        if len(x) == 0:
            raise InvalidVectorsError("cannot fit a codec on an empty sample")
        need = self.min_fit_vectors
        if self.requires_fit and len(x) < need:
            raise InvalidVectorsError(
                f"{self.spec()} learns its state from the sample and needs at least {need} sample vectors, got "
                f"{len(x)}: fit on more vectors (an index trains on its first add: add more documents at once, "
                "or call index.train(sample) with a larger sample first)"
            )
        self._fit(x)
        self.fitted_ = True
        return self

    def _fit(self, x: np.ndarray) -> None:  # codecs without state need not override
        return None

    @property
    def min_fit_vectors(self) -> int:
        """The smallest sample :meth:`fit` accepts: below it the learned state describes the sample, not the
        data (e.g. one vector gives every scalar quantizer a zero-width range), and rankings go wrong."""
        return 1

    @property
    def is_fitted(self) -> bool:
        return not self.requires_fit or bool(getattr(self, "fitted_", False))

    def _check_fitted(self) -> None:
        if not self.is_fitted:
            raise NotFittedError(
                f"{type(self).__name__} ({self.spec()}) is not fitted yet: call .fit(sample) with a "
                f"(n, {self.dim_in}) sample of token vectors first"
            )

    # ---- coding
    def encode(self, x: np.ndarray) -> np.ndarray:
        """``(n, dim_in)`` float -> codes (``uint8 (n, code_size)``; float32 ``(n, dim_out)`` for transforms)."""
        self._check_fitted()
        return self._encode(check_vectors(x, self.dim_in))

    def decode(self, codes: np.ndarray) -> np.ndarray:
        """codes -> ``(n, dim_out)`` float32 approximations of the encoded vectors."""
        self._check_fitted()
        if self.kind == "transform":
            return check_vectors(codes, self.dim_out, "transformed vectors")
        return self._decode(check_codes(codes, self.code_size))

    def decode_torch(self, codes: Any) -> Any:
        """Decode a ``uint8`` torch tensor of codes on its own device -> float32 tensor ``(n, dim_out)``.

        The default goes through numpy on the CPU; quantizers override it with pure torch ops so stage-2
        decoding runs on the GPU. Overrides must equal :meth:`decode` (tested in the conformance suite).
        """
        import torch

        return torch.from_numpy(self.decode(codes.cpu().numpy())).to(codes.device)

    def score_table(self, q: np.ndarray) -> np.ndarray | None:
        """Asymmetric scoring table for transformed query tokens ``q`` ``(nq, dim_out)``, or None.

        When ``q[t] . decode(code)`` is a sum of one term per code *unit*, returns ``T`` of shape
        ``(n_units, levels, width)`` float32 (``width`` = nq rounded up to 8, padding zero) with
        ``q[t] . decode(code) == sum_u T[u, unit_u(code), t]``. Units are the code's bytes
        (``levels=256``, ``n_units = code_size``) or its nibbles, low nibble first (``levels=16``,
        ``n_units = 2 * code_size``), see :func:`mvstore.codecs._bits.table_units`. Search then scores
        codes without decoding them (:func:`mvstore.search._kernels.table_maxsim`). None (the default):
        search decodes and multiplies.
        """
        return None

    def transform_query(self, q: np.ndarray) -> np.ndarray:
        """Map query token vectors into the space decoded vectors live in (identity for quantizers)."""
        self._check_fitted()
        q = check_vectors(q, self.dim_in, "query vectors")
        return self._encode(q) if self.kind == "transform" else q

    @abstractmethod
    def _encode(self, x: np.ndarray) -> np.ndarray: ...

    def _decode(self, codes: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    # ---- state, as arrays + JSON (never pickle)
    def get_state(self) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        """Fitted state: ``(arrays, meta)``; ``meta`` is JSON-serializable. Saved by the index."""
        self._check_fitted()
        return self._state_arrays(), {"spec": self.spec(), "dim_in": self.dim_in}

    def set_state(self, arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> Codec:
        """Restore what :meth:`get_state` returned (validating it). Returns self."""
        if meta.get("spec") != self.spec() or meta.get("dim_in") != self.dim_in:
            from ..exceptions import IndexCorruptedError

            raise IndexCorruptedError(
                f"stored codec state is for {meta.get('spec')!r} at dim {meta.get('dim_in')}, "
                f"not {self.spec()!r} at dim {self.dim_in}"
            )
        self._load_arrays(arrays)
        self.fitted_ = True
        return self

    def _state_arrays(self) -> dict[str, np.ndarray]:
        """Fitted arrays by name (attribute names without the trailing underscore)."""
        return {}

    def _load_arrays(self, arrays: dict[str, np.ndarray]) -> None:
        return None

    def __repr__(self) -> str:
        state = "fitted" if self.is_fitted else "not fitted"
        return f"{type(self).__name__}({self.spec()!r}, dim_in={self.dim_in}, {state})"
