"""The packed batch of documents every stage takes and returns.

A :class:`Ragged` is one ``(n_tokens, dim)`` float array plus ``offsets`` of shape ``(n_docs + 1,)``:
document ``i`` is ``values[offsets[i]:offsets[i + 1]]``. Never a Python list of small arrays on a hot
path; numpy and torch views of it are free.

>>> import numpy as np
>>> r = Ragged.from_list([np.ones((2, 3), np.float32), np.zeros((1, 3), np.float32)])
>>> len(r), r.n_tokens, r.dim, r.lengths.tolist()
(2, 3, 3, [2, 1])
>>> r[1].tolist()
[[0.0, 0.0, 0.0]]
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .device import require_torch
from .exceptions import DimensionMismatchError, InvalidDtypeError, InvalidVectorsError

__all__ = ["Ragged", "as_ragged", "ranges", "take_index"]

_FLOAT_DTYPES = (np.float16, np.float32, np.float64)


def _to_numpy(x: Any, what: str) -> np.ndarray:
    """Torch tensors (any device, incl. bfloat16) and array-likes to a numpy array, without copying numpy."""
    if isinstance(x, np.ndarray):
        return x
    mod = type(x).__module__
    if mod.startswith("torch"):
        import torch

        if not torch.is_floating_point(x):
            raise InvalidDtypeError(
                f"{what} has dtype {x.dtype}; token vectors must be floating point: use tensor.float()"
            )
        return x.detach().to("cpu", dtype=torch.float32).numpy()
    if isinstance(x, (list, tuple)):
        arr = np.asarray(x)
        if arr.dtype.kind in "iub" and arr.size:
            raise InvalidDtypeError(
                f"{what} holds {arr.dtype} values; token vectors must be floating point: "
                "pass np.asarray(x, dtype=np.float32)"
            )
        return arr.astype(np.float32) if arr.dtype == object or arr.size == 0 else arr
    raise InvalidDtypeError(
        f"{what} is a {type(x).__name__}; expected a numpy array or torch tensor of shape (n_tokens, dim)"
    )


def _check_float(arr: np.ndarray, what: str) -> None:
    if arr.dtype not in _FLOAT_DTYPES:
        raise InvalidDtypeError(
            f"{what} has dtype {arr.dtype}; token vectors must be float16/float32/float64: "
            "use .astype(np.float32)"
        )


def _check_finite(values: np.ndarray, offsets: np.ndarray, what: str) -> None:
    finite = np.isfinite(values).all(axis=1) if values.size else np.ones(len(values), bool)
    if not finite.all():
        tok = int(np.flatnonzero(~finite)[0])
        doc = int(np.searchsorted(offsets, tok, side="right") - 1)
        raise InvalidVectorsError(
            f"{what}: document {doc} has a NaN or Inf value at token {tok - int(offsets[doc])} (or one beyond "
            "float32's range ±3.4e38); clean or drop that document before adding it"
        )


@dataclass(frozen=True, eq=False)
class Ragged:
    """A packed batch of variable-length documents of token vectors.

    Construct with :meth:`from_list`, :meth:`from_padded` or directly from ``values`` and ``offsets``
    (both are validated). ``values`` keeps its float dtype (float16/32/64).
    """

    values: np.ndarray
    offsets: np.ndarray

    def __post_init__(self) -> None:
        values = _to_numpy(self.values, "values")
        offsets = np.asarray(self.offsets)
        _check_float(values, "values")
        if values.ndim != 2:
            raise InvalidVectorsError(
                f"values must be 2-D (n_tokens, dim), got shape {values.shape}; "
                "for a single document use Ragged.from_list([matrix])"
            )
        if offsets.ndim != 1 or len(offsets) < 1 or offsets.dtype.kind not in "iu":
            raise InvalidVectorsError(
                f"offsets must be a 1-D integer array of length n_docs + 1, got shape {offsets.shape} "
                f"dtype {offsets.dtype}"
            )
        offsets = offsets.astype(np.int64, copy=False)
        if offsets[0] != 0 or offsets[-1] != len(values) or (np.diff(offsets) < 0).any():
            raise InvalidVectorsError(
                f"offsets must start at 0, be non-decreasing and end at n_tokens={len(values)}; "
                f"got first={offsets[0]} last={offsets[-1]}"
            )
        object.__setattr__(self, "values", values)
        object.__setattr__(self, "offsets", offsets)

    # ----------------------------------------------------------------------------- constructors
    @classmethod
    def from_list(
        cls,
        docs: Sequence[Any],
        *,
        dim: int | None = None,
        dtype: Any = np.float32,
        check_finite: bool = True,
        allow_empty: bool = False,
    ) -> Ragged:
        """Pack a sequence of ``(n_i, dim)`` arrays or tensors.

        Raises a clear error for non-float dtypes, non-2-D documents, mixed or unexpected dims,
        empty documents (unless ``allow_empty``) and NaN/Inf values.
        """
        if isinstance(docs, np.ndarray) or type(docs).__module__.startswith("torch"):
            raise InvalidDtypeError(
                "from_list takes a sequence of (n_tokens, dim) matrices, one per document; "
                "for a padded (batch, length, dim) tensor use Ragged.from_padded(tensor, mask)"
            )
        arrays = []
        for i, d in enumerate(docs):
            a = _to_numpy(d, f"document {i}")
            _check_float(a, f"document {i}")
            if a.ndim != 2:
                raise InvalidVectorsError(
                    f"document {i} has shape {a.shape}; each document must be a 2-D (n_tokens, dim) matrix "
                    "(one token vector: x.reshape(1, -1))"
                )
            if a.shape[0] == 0 and not allow_empty:
                raise InvalidVectorsError(
                    f"document {i} has no token vectors; every document needs at least one: "
                    "drop empty documents (or encode a placeholder text) before adding them"
                )
            expected = dim if dim is not None else (arrays[0].shape[1] if arrays else None)
            if expected is not None and a.shape[1] != expected:
                src = "the index" if dim is not None else "document 0"
                raise DimensionMismatchError(
                    f"document {i} has dim {a.shape[1]} but {src} has dim {expected}; "
                    "all token vectors must come from the same encoder/projection"
                )
            arrays.append(a)
        if not arrays:
            d = dim or 0
            return cls(np.zeros((0, d), dtype), np.zeros(1, np.int64))
        lengths = np.fromiter((a.shape[0] for a in arrays), np.int64, len(arrays))
        offsets = np.zeros(len(arrays) + 1, np.int64)
        np.cumsum(lengths, out=offsets[1:])
        with np.errstate(over="ignore"):  # a value beyond the dtype's range becomes inf: reported just below
            values = np.concatenate(arrays, axis=0).astype(dtype, copy=False)
        out = cls(values, offsets)
        if check_finite:
            _check_finite(out.values, out.offsets, "token vectors")
        return out

    @classmethod
    def from_padded(
        cls, padded: Any, mask: Any, *, dtype: Any = np.float32, check_finite: bool = True
    ) -> Ragged:
        """Pack a padded ``(batch, length, dim)`` tensor/array using a ``(batch, length)`` mask
        (nonzero = real token). Padding is dropped; the order of real tokens is kept."""
        p = _to_numpy(padded, "padded")
        m = np.asarray(mask.cpu() if hasattr(mask, "cpu") else mask)
        _check_float(p, "padded")
        if p.ndim != 3:
            raise InvalidVectorsError(f"padded must be 3-D (batch, length, dim), got shape {p.shape}")
        if m.shape != p.shape[:2]:
            raise InvalidVectorsError(
                f"mask shape {m.shape} does not match padded (batch, length) {p.shape[:2]}"
            )
        m = m.astype(bool)
        lengths = m.sum(1)
        if (lengths == 0).any():
            i = int(np.flatnonzero(lengths == 0)[0])
            raise InvalidVectorsError(f"document {i} has an all-zero mask: it has no token vectors")
        offsets = np.zeros(len(lengths) + 1, np.int64)
        np.cumsum(lengths, out=offsets[1:])
        out = cls(p[m].astype(dtype, copy=False), offsets)
        if check_finite:
            _check_finite(out.values, out.offsets, "token vectors")
        return out

    @classmethod
    def concat(cls, parts: Sequence[Ragged]) -> Ragged:
        """Concatenate batches (documents of ``parts[0]`` first)."""
        parts = list(parts)
        if not parts:
            raise InvalidVectorsError("concat needs at least one Ragged batch")
        dims = {p.dim for p in parts if p.n_tokens}
        if len(dims) > 1:
            raise DimensionMismatchError(f"cannot concatenate batches of different dims {sorted(dims)}")
        values = np.concatenate([p.values for p in parts], axis=0)
        offs = [parts[0].offsets]
        base = parts[0].offsets[-1]
        for p in parts[1:]:
            offs.append(p.offsets[1:] + base)
            base += p.offsets[-1]
        return cls(values, np.concatenate(offs))

    # ------------------------------------------------------------------------------- properties
    def __len__(self) -> int:
        return len(self.offsets) - 1

    @property
    def n_docs(self) -> int:
        return len(self)

    @property
    def n_tokens(self) -> int:
        return int(self.values.shape[0])

    @property
    def dim(self) -> int:
        return int(self.values.shape[1])

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    def segment_ids(self) -> np.ndarray:
        """``(n_tokens,)`` index of the document each token belongs to."""
        return np.repeat(np.arange(len(self), dtype=np.int64), self.lengths)

    def __getitem__(self, i: Any) -> Any:
        """``r[i]`` is document i's ``(n_i, dim)`` view; ``r[slice]`` / ``r[index_array]`` a new Ragged."""
        if isinstance(i, (int, np.integer)):
            n = len(self)
            if not -n <= i < n:
                raise IndexError(f"document index {i} out of range for {n} documents")
            i = int(i) % n
            return self.values[self.offsets[i] : self.offsets[i + 1]]
        if isinstance(i, slice):
            idx = np.arange(len(self))[i]
        else:
            idx = np.asarray(i)
            if idx.dtype == bool:
                idx = np.flatnonzero(idx)
        return self.take(idx)

    def take(self, idx: np.ndarray) -> Ragged:
        """Select documents by index (any order, repeats allowed), packed into a new batch."""
        tok, offsets = take_index(self.offsets, idx)
        return Ragged(self.values[tok], offsets)

    def __iter__(self) -> Iterator[np.ndarray]:
        for i in range(len(self)):
            yield self.values[self.offsets[i] : self.offsets[i + 1]]

    def with_values(self, values: np.ndarray) -> Ragged:
        """Same document boundaries, new per-token values (e.g. after a projection)."""
        return Ragged(values, self.offsets)

    def astype(self, dtype: Any) -> Ragged:
        return Ragged(self.values.astype(dtype, copy=False), self.offsets)

    def torch(self, device: Any = "cpu") -> tuple[Any, Any]:
        """``(values, offsets)`` as torch tensors (a zero-copy view on CPU)."""
        torch = require_torch("Ragged.torch()")

        return (
            torch.from_numpy(np.ascontiguousarray(self.values)).to(device),
            torch.from_numpy(self.offsets).to(device),
        )

    def check_finite(self) -> Ragged:
        """Raise InvalidVectorsError naming the first document with NaN/Inf; return self otherwise."""
        _check_finite(self.values, self.offsets, "token vectors")
        return self

    def __repr__(self) -> str:
        return (
            f"Ragged(n_docs={len(self)}, n_tokens={self.n_tokens}, dim={self.dim}, dtype={self.values.dtype})"
        )


def as_ragged(x: Any, *, dim: int | None = None, what: str = "token vectors") -> Ragged:
    """Coerce user input (a Ragged, or a sequence of ``(n_i, dim)`` arrays/tensors) to a validated Ragged.

    Checks float dtype, dims (against ``dim`` if given), empty documents and NaN/Inf.
    """
    if isinstance(x, Ragged):
        if dim is not None and x.dim != dim and len(x):
            raise DimensionMismatchError(f"{what} have dim {x.dim} but dim {dim} is expected")
        if len(x) and (x.lengths == 0).any():
            i = int(np.flatnonzero(x.lengths == 0)[0])
            raise InvalidVectorsError(
                f"document {i} has no token vectors; every document needs at least one: drop it first"
            )
        return x.check_finite()
    if isinstance(x, np.ndarray) or type(x).__module__.startswith("torch"):
        if getattr(x, "ndim", 0) < 2:
            raise InvalidVectorsError(
                f"{what}: got a {x.ndim}-D array of shape {tuple(x.shape)}, not a list of (n_tokens, dim) "
                "matrices; one token vector is a (1, dim) matrix: pass [x.reshape(1, -1)]"
            )
        if getattr(x, "ndim", 0) == 2:
            raise InvalidVectorsError(
                f"{what}: got one 2-D matrix of shape {tuple(x.shape)}; pass a list of per-document "
                "matrices (e.g. [matrix] for one document) or a Ragged"
            )
        if getattr(x, "ndim", 0) == 3:
            raise InvalidVectorsError(
                f"{what}: got a 3-D padded array; use Ragged.from_padded(tensor, mask) so padding is dropped"
            )
    if isinstance(x, (str, bytes)) or not hasattr(x, "__iter__"):
        raise InvalidDtypeError(
            f"{what} must be a Ragged or a sequence of (n_tokens, dim) arrays, got {type(x).__name__}"
        )
    return Ragged.from_list(list(x), dim=dim)


def ranges(starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Concatenate the integer ranges ``[starts[i], starts[i] + lengths[i])`` without a Python loop.

    >>> ranges(np.array([5, 0, 9]), np.array([2, 0, 3])).tolist()
    [5, 6, 9, 10, 11]
    """
    lengths = np.asarray(lengths, np.int64)
    total = int(lengths.sum())
    if total == 0:
        return np.zeros(0, np.int64)
    ends = np.cumsum(lengths)
    shift = np.asarray(starts, np.int64) - (ends - lengths)
    return np.repeat(shift, lengths) + np.arange(total, dtype=np.int64)


def take_index(offsets: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The one row gather of packed per-token arrays (token vectors, a snapshot's codes): for documents
    ``rows`` (any order, repeats allowed) of a batch with ``offsets``, the int64 token index into its packed
    array and the gathered batch's offsets. ``Ragged.take`` is ``values[index]``; the searchers gather code
    rows (or index a device tensor) with it.

    >>> take_index(np.array([0, 2, 3, 6]), np.array([2, 0]))
    (array([3, 4, 5, 0, 1]), array([0, 3, 5]))
    """
    rows = np.asarray(rows, np.int64)
    starts = offsets[rows]
    lengths = offsets[rows + 1] - starts
    out = np.zeros(len(rows) + 1, np.int64)
    np.cumsum(lengths, out=out[1:])
    return ranges(starts, lengths), out
