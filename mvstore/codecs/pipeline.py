"""A chain of transforms ending in exactly one quantizer, itself a codec producing ``uint8`` codes.

``Pipeline([PCA(384, 64), SQ8(64)])`` maps 384-d vectors to 64 bytes; decoded vectors (and transformed
queries) live in the 64-d PCA space. With no quantizer, ``fp32`` is appended (and left out of
:meth:`Pipeline.spec`, so ``spec()`` reproduces what the user wrote). Usually built from a spec string
with :func:`mvstore.spec.build_pipeline`.

>>> import numpy as np
>>> from mvstore.codecs.scalar import FP16, SQ8
>>> from mvstore.codecs.transforms import PCA
>>> x = np.random.default_rng(0).normal(size=(500, 16)).astype(np.float32)
>>> p = Pipeline([PCA(16, 8), SQ8(8)]).fit(x)
>>> p.spec(), p.dim_in, p.dim_out, p.code_size, p.encode(x).shape
('pca8,sq8', 16, 8, 8, (500, 8))
>>> Pipeline([FP16(16)]).spec(), Pipeline([PCA(16, 8)]).spec(), Pipeline([PCA(16, 8)]).code_size
('fp16', 'pca8', 32)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, cast

import numpy as np

from ..exceptions import DimensionMismatchError, IndexCorruptedError, NotFittedError, SpecError
from .base import Codec, check_vectors
from .scalar import FP32

__all__ = ["Pipeline"]


class Pipeline(Codec):
    """Transforms (``kind == "transform"``) then exactly one quantizer; ``fp32`` if none is given."""

    name = "pipeline"
    kind = "quantizer"

    def __init__(self, stages: Sequence[Codec]):
        stages = list(stages)
        if not stages:
            raise SpecError("a Pipeline needs at least one stage, e.g. Pipeline([FP32(dim)])")
        for i, st in enumerate(stages):
            if not isinstance(st, Codec) or isinstance(st, Pipeline):
                raise SpecError(
                    f"pipeline stage {i} is {type(st).__name__}; stages must be (non-pipeline) codecs"
                )
        for i, st in enumerate(stages[:-1]):
            if st.kind != "transform":
                raise SpecError(
                    f"pipeline stage {i} ({st.spec()}) is a quantizer but is not last: "
                    "put transforms first and exactly one quantizer at the end"
                )
        for i in range(1, len(stages)):
            if stages[i].dim_in != stages[i - 1].dim_out:
                raise DimensionMismatchError(
                    f"pipeline stage {i} ({stages[i].spec()}) takes dim {stages[i].dim_in} but stage {i - 1} "
                    f"({stages[i - 1].spec()}) outputs dim {stages[i - 1].dim_out}"
                )
        self.implicit_quantizer = stages[-1].kind == "transform"
        if self.implicit_quantizer:
            stages.append(FP32(stages[-1].dim_out))
        super().__init__(stages[0].dim_in)
        self.stages: list[Codec] = stages

    # ---- structure
    @property
    def transforms(self) -> list[Codec]:
        return self.stages[:-1]

    @property
    def quantizer(self) -> Codec:
        return self.stages[-1]

    @property
    def dim_out(self) -> int:
        return self.quantizer.dim_out

    @property
    def code_size(self) -> int:
        return self.quantizer.code_size

    @property
    def requires_fit(self) -> bool:  # type: ignore[override]
        return any(st.requires_fit for st in self.stages)

    @property
    def is_fitted(self) -> bool:
        return all(st.is_fitted for st in self.stages)

    def spec(self) -> str:
        shown = self.transforms if self.implicit_quantizer else self.stages
        return ",".join(st.spec() for st in shown)

    def _check_fitted(self) -> None:
        for st in self.stages:
            if not st.is_fitted:
                raise NotFittedError(
                    f"Pipeline {self.spec()!r} is not fitted yet (stage {st.spec()!r} is not): call .fit(sample) "
                    f"with a (n, {self.dim_in}) sample of token vectors first"
                )

    # ---- fitting and coding
    def _fit(self, x: np.ndarray) -> None:
        for st in self.transforms:
            st.fit(x)
            x = st.encode(x)
        self.quantizer.fit(x)

    def _transform(self, x: np.ndarray) -> np.ndarray:
        for st in self.transforms:
            x = st._encode(x)
        return x

    def _encode(self, x: np.ndarray) -> np.ndarray:
        return self.quantizer._encode(self._transform(x))

    def _decode(self, codes: np.ndarray) -> np.ndarray:
        return self.quantizer._decode(codes)

    def decode_torch(self, codes: Any) -> Any:
        self._check_fitted()
        return self.quantizer.decode_torch(codes)

    def score_table(self, q: np.ndarray) -> np.ndarray | None:
        """The quantizer's table for already transformed query tokens (see :meth:`Codec.score_table`)."""
        self._check_fitted()
        return self.quantizer.score_table(q)

    def transform_query(self, q: np.ndarray) -> np.ndarray:
        """Apply the transforms (and the quantizer's query mapping, the identity for dense quantizers)."""
        self._check_fitted()
        q = self._transform(check_vectors(q, self.dim_in, "query vectors"))
        return self.quantizer.transform_query(q)

    def transform(self, x: np.ndarray) -> np.ndarray:
        """Apply only the transforms: ``(n, dim_in)`` -> float32 ``(n, quantizer.dim_in)``."""
        self._check_fitted()
        return self._transform(check_vectors(x, self.dim_in))

    # ---- stage-1 hooks of the quantizer, when it has coarse centroids (e.g. rq)
    @property
    def has_coarse(self) -> bool:
        return hasattr(self.quantizer, "coarse_terms")

    @property
    def coarse_centroids(self) -> np.ndarray:
        """``(n_c, dim_out)`` coarse centroids of the quantizer (in the space transformed queries live in)."""
        if not self.has_coarse:
            raise AttributeError(
                f"quantizer {self.quantizer.spec()!r} has no coarse centroids (only rq<b> does)"
            )
        self._check_fitted()
        return cast(Any, self.quantizer).coarse_centroids  # an optional codec attribute (has_coarse)

    def coarse_terms(self, codes: np.ndarray) -> np.ndarray:
        """int64 ``(n,)`` coarse centroid id of each code (the stage-1 inverted-list term)."""
        if not self.has_coarse:
            raise AttributeError(
                f"quantizer {self.quantizer.spec()!r} has no coarse centroids (only rq<b> does)"
            )
        self._check_fitted()
        return cast(Any, self.quantizer).coarse_terms(codes)

    # ---- state: each stage's arrays under "<i>.<key>", metas in a JSON list
    def get_state(self) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        self._check_fitted()
        arrays: dict[str, np.ndarray] = {}
        metas = []
        for i, st in enumerate(self.stages):
            a, m = st.get_state()
            arrays.update({f"{i}.{k}": v for k, v in a.items()})
            metas.append(m)
        return arrays, {"spec": self.spec(), "dim_in": self.dim_in, "stages": metas}

    def set_state(self, arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> Pipeline:
        if meta.get("spec") != self.spec() or meta.get("dim_in") != self.dim_in:
            raise IndexCorruptedError(
                f"stored codec state is for {meta.get('spec')!r} at dim {meta.get('dim_in')}, "
                f"not {self.spec()!r} at dim {self.dim_in}"
            )
        metas = meta.get("stages")
        if not isinstance(metas, list) or len(metas) != len(self.stages):
            raise IndexCorruptedError(
                f"stored pipeline state should list {len(self.stages)} stage states, got {metas!r:.200}"
            )
        known = {f"{i}." for i in range(len(self.stages))}
        stray = [k for k in arrays if k.split(".", 1)[0] + "." not in known]
        if stray:
            raise IndexCorruptedError(f"stored pipeline state has arrays of no stage: {stray[:5]}")
        for i, (st, m) in enumerate(zip(self.stages, metas)):
            prefix = f"{i}."
            st.set_state({k[len(prefix) :]: v for k, v in arrays.items() if k.startswith(prefix)}, m)
        self.fitted_ = True
        return self

    def __repr__(self) -> str:
        state = "fitted" if self.is_fitted else "not fitted"
        return f"Pipeline({self.spec()!r}, dim_in={self.dim_in}, dim_out={self.dim_out}, {state})"
