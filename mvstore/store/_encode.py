"""Encoding pooled documents into docs-table columns; the reconstruction error and drift measures."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa

from ..codecs.scalar import check_fp16_range
from ..ragged import Ragged
from ._layout import CODES, N_VECTORS, RECON_ERR, SOURCE, TERMS, binary_column, list_int32_column

if TYPE_CHECKING:  # _state fits codecs with this module's sq_error
    from ._state import CodecState

#: vectors encoded at a time inside one batch (bounds the float temporaries of transform/decode/error)
ENCODE_CHUNK = 1 << 16


def encode_pooled(st: CodecState, pooled: Ragged, keep_source: bool) -> dict[str, pa.Array]:
    """Codes, stage-1 terms, per-document reconstruction error (and fp16 source) of pooled documents, computed
    in chunks of ``ENCODE_CHUNK`` vectors."""
    from ..search.postings import assign_terms

    codec = st.codec
    n = pooled.n_tokens
    codes = np.empty((n, codec.code_size), np.uint8)
    terms = np.empty(0 if codec.has_coarse else n, np.int32)
    vec_err = np.empty(n, np.float64)
    for a in range(0, n, ENCODE_CHUNK):
        x = np.ascontiguousarray(pooled.values[a : a + ENCODE_CHUNK], dtype=np.float32)
        t = codec.transform(x)
        c = codes[a : a + len(x)] = codec.quantizer.encode(t)
        if not codec.has_coarse:  # rq codes carry their centroid id: nothing extra to store
            terms[a : a + len(x)] = assign_terms(t, st.centroids)
        # sparse maps decode into another (V-dim) space: no reconstruction error, and no wasted dense decode
        vec_err[a : a + len(x)] = sq_error(x, t, codec.decode(c)) if codec.dim_out == t.shape[1] else np.nan
    err = np.add.reduceat(vec_err, pooled.offsets[:-1]) / pooled.lengths if n else np.zeros(0)
    cols = {
        N_VECTORS: pa.array(pooled.lengths.astype(np.int32)),
        CODES: binary_column(codes, pooled.offsets * codec.code_size),
        TERMS: list_int32_column(terms, pooled.offsets)
        if not codec.has_coarse
        else list_int32_column(terms[:0], np.zeros(len(pooled) + 1, np.int64)),
        RECON_ERR: pa.array(err.astype(np.float32)),
    }
    if keep_source:
        check_fp16_range(
            pooled.values,
            "keep_source=True (vectors kept as fp16)",
            "create the index without keep_source",
            pooled.offsets,
        )
        src = pooled.values.astype(np.float16)
        cols[SOURCE] = binary_column(src, pooled.offsets * src.shape[1] * 2)
    return cols


def sq_error(x: np.ndarray, t: np.ndarray, dec: np.ndarray) -> np.ndarray:
    """Per-vector squared error of the stored representation: what the transforms drop (``||x||^2 - ||t||^2``,
    exact for the orthonormal projections pca/trunc) plus the quantization error ``||t - decode(codes)||^2``.

    >>> x = np.array([[3.0, 4.0]]); t = x[:, :1]; sq_error(x, t, t + 0.5).tolist()
    [16.25]
    """
    r = t - dec
    out = np.einsum("ij,ij->i", r, r, dtype=np.float64)
    if t.shape[1] != x.shape[1]:
        out += np.maximum(np.einsum("ij,ij->i", x, x, dtype=np.float64) - np.einsum("ij,ij->i", t, t), 0.0)
    return out


def drift(current: float | None, train: float | None, energy: float = 1.0) -> float | None:
    """Drift = mean per-vector reconstruction error of the stored documents / the error on the training sample.

    1.0 means the data looks like the training sample. None when the error cannot be measured, or when both
    errors are below ``1e-6`` of the sample's mean squared norm ``energy`` (a (near) lossless codec, e.g.
    fp16). A training error below that floor with a larger current error is measured against the floor, so
    a codec that fitted its sample exactly still reports data it stores badly.

    >>> drift(0.5, 0.25), drift(1e-8, 1e-9), round(drift(0.1, 1e-9)), drift(None, 0.2)
    (2.0, None, 100000, None)
    """
    if current is None or train is None:
        return None
    floor = 1e-6 * energy
    if current <= floor and train <= floor:
        return None
    return current / max(train, floor)
