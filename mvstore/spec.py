"""Compression spec strings: ``"pool2,pca96,rq2"`` read left to right.

Grammar: comma-separated stages, no spaces::

    spec      := [pool ","] {transform ","} [quantizer]     (at least one stage)
    pool      := ("pool" | "kpool") F ["min" M]             (Ward / k-means token pooling, F >= 1)
    F         := integer or decimal without trailing zeros, e.g. 2, 1.5
    M         := positive integer: a document keeps at least min(n, M) of its n vectors
    transform := pca<d> | trunc<d> | ...                   (registered codecs of kind "transform")
    quantizer := fp32 | fp16 | sq8 | sq4 | bin | pq<m> | rq<b>[c<n>] | ...  (kind "quantizer")

No quantizer means ``fp32``. The codec stages are whatever is in :data:`mvstore.codecs.REGISTRY`: each codec
class parses its own token (``parse_token``) and formats it (``spec()``), so new families plug in without
editing this module. Each stage passes its output dimension to the next; the bytes per stored vector follow
from the string and the input dimension alone.

>>> s = parse("pool2,pca64,sq8")
>>> str(s), s.pool_factor, s.pool_method, s.codec_spec
('pool2,pca64,sq8', 2.0, 'ward', 'pca64,sq8')
>>> code_size("pool2,pca64,sq8", 384), bytes_per_token("pool2,pca64,sq8", 384)
(64, 32.0)
>>> code_size("pca64", 384), code_size("fp16", 384)
(256, 768)
>>> parse("pool4min32,sq4").pool_min_vectors
32
>>> parse("pca64,sq9")
Traceback (most recent call last):
...
mvstore.exceptions.SpecError: at offset 6 in 'pca64,sq9': unknown stage 'sq9'; expected one of ...
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from ._checks import check_int
from .exceptions import SpecError

__all__ = [
    "default_spec",
    "Spec",
    "Stage",
    "parse",
    "build_pipeline",
    "code_size",
    "bytes_per_token",
    "known_forms",
]

_POOL = re.compile(r"(k?pool)(.*?)(?:min([0-9]*))?")
_FACTOR = re.compile(r"[1-9][0-9]*(\.[0-9]*[1-9])?|0\.[0-9]*[1-9]")
_POOL_METHODS = {"pool": "ward", "kpool": "kmeans"}


def _registry() -> dict[str, type]:
    from .codecs import REGISTRY  # importing the package registers every codec module

    return REGISTRY


def known_forms() -> list[str]:
    """Every stage form the grammar accepts, pooling first, e.g. ``['pool<f>', 'kpool<f>', 'pca<d>', ...]``."""
    reg = _registry()
    transforms = sorted(c.form() for c in reg.values() if c.kind == "transform")
    quantizers = sorted(c.form() for c in reg.values() if c.kind != "transform")
    return ["pool<f>", "kpool<f>", *transforms, *quantizers]


@dataclass(frozen=True)
class Stage:
    """One parsed stage: its token as written, where it starts, its kind and (for codecs) class + params."""

    token: str
    offset: int
    kind: str  # "pool" | "transform" | "quantizer"
    cls: Any = None
    params: dict[str, Any] = field(default_factory=dict)

    def __str__(self) -> str:
        return self.token


@dataclass(frozen=True)
class Spec:
    """A parsed spec; ``str(spec)`` is the string it was parsed from."""

    stages: tuple[Stage, ...]

    def __str__(self) -> str:
        return ",".join(s.token for s in self.stages)

    @property
    def pool_stage(self) -> Stage | None:
        return self.stages[0] if self.stages and self.stages[0].kind == "pool" else None

    @property
    def pool_factor(self) -> float:
        """Token pooling factor (1.0 when the spec has no pooling stage)."""
        p = self.pool_stage
        return float(p.params["factor"]) if p else 1.0

    @property
    def pool_method(self) -> str | None:
        """``"ward"`` (``pool<f>``), ``"kmeans"`` (``kpool<f>``) or None without pooling."""
        p = self.pool_stage
        return p.params["method"] if p else None

    @property
    def pool_min_vectors(self) -> int:
        """The floor on vectors kept per document (``pool4min32``: 32); 0 without one."""
        p = self.pool_stage
        return p.params["min_vectors"] if p else 0

    def pool(self, docs: Any, **kwargs: Any) -> Any:
        """Pool a :class:`~mvstore.Ragged` as this spec's pooling stage says (unchanged without one);
        ``kwargs`` go to :func:`mvstore.pooling.pool` (``device``, ``workers``, ...)."""
        from .pooling import pool

        if self.pool_factor == 1.0:
            return docs
        return pool(
            docs, self.pool_factor, method=self.pool_method, min_vectors=self.pool_min_vectors, **kwargs
        )

    @property
    def codec_stages(self) -> tuple[Stage, ...]:
        return tuple(s for s in self.stages if s.kind != "pool")

    @property
    def codec_spec(self) -> str:
        """The codec part (what :meth:`Pipeline.spec` returns), e.g. ``"pca64,sq8"``; ``""`` for a bare pool."""
        return ",".join(s.token for s in self.codec_stages)

    @property
    def quantizer(self) -> str:
        """The quantizer token, ``"fp32"`` when the spec names none."""
        q = [s for s in self.stages if s.kind == "quantizer"]
        return q[0].token if q else "fp32"


def _err(s: str, offset: int, msg: str) -> SpecError:
    return SpecError(f"at offset {offset} in {s!r}: {msg}")


def _parse_codec_token(s: str, token: str, offset: int) -> tuple[type, dict[str, Any]]:
    reg = _registry()
    matches: list[tuple[type, dict[str, Any]]] = []
    errors: list[tuple[int, str]] = []
    for cls in reg.values():
        try:
            params = cls.parse_token(token)
        except SpecError as e:
            errors.append((len(cls.name), str(e)))
            continue
        if params is not None:
            matches.append((cls, params))
    if len(matches) > 1:
        names = ", ".join(c.__name__ for c, _ in matches)
        raise _err(s, offset, f"stage {token!r} is claimed by several registered codecs ({names})")
    if matches:
        return matches[0]
    if errors:  # a family recognised the token but found it malformed: its message is the most specific
        raise _err(s, offset, max(errors)[1])
    raise _err(s, offset, f"unknown stage {token!r}; expected one of {', '.join(known_forms())}")


def _parse_pool_token(s: str, token: str, offset: int, m: re.Match[str]) -> Stage:
    """The pooling stage of ``token`` (matched by ``_POOL`` as ``m``), or a SpecError naming what is wrong."""
    if not _FACTOR.fullmatch(m.group(2)):
        raise _err(
            s,
            offset,
            f"bad pooling stage {token!r}; expected {m.group(1)}<f> with f a number "
            f"without trailing zeros, e.g. {m.group(1)}2 or {m.group(1)}1.5",
        )
    if m.group(3) is not None and not re.fullmatch(r"[1-9][0-9]*", m.group(3)):
        raise _err(
            s,
            offset,
            f"bad pooling floor in {token!r}; expected {m.group(1)}<f>min<n> with n a positive "
            f"integer, e.g. {m.group(1)}4min32",
        )
    factor = float(m.group(2))
    if factor < 1:
        raise _err(
            s,
            offset,
            f"pool factor {m.group(2)} is below 1; use a factor >= 1 (e.g. pool2 keeps "
            "half the tokens) or drop the stage",
        )
    params = {"factor": factor, "method": _POOL_METHODS[m.group(1)], "min_vectors": int(m.group(3) or 0)}
    return Stage(token, offset, "pool", None, params)


def _parse_codec_stage(s: str, token: str, offset: int, before: list[Stage]) -> Stage:
    """The codec stage of ``token``; a SpecError when it follows the quantizer (one, and last)."""
    cls, params = _parse_codec_token(s, token, offset)
    kind = "transform" if cls.kind == "transform" else "quantizer"
    prev_q = [st for st in before if st.kind == "quantizer"]
    if prev_q:
        what = "a second quantizer" if kind == "quantizer" else "a transform"
        raise _err(
            s,
            offset,
            f"{token!r} is {what} after the quantizer {prev_q[0].token!r}; the quantizer "
            "must be the last stage and there is at most one",
        )
    return Stage(token, offset, kind, cls, params)


def parse(s: str | Spec) -> Spec:
    """Parse a spec string (a :class:`Spec` passes through). Raises :class:`SpecError` naming the offset."""
    if isinstance(s, Spec):
        return s
    if not isinstance(s, str):
        raise SpecError(f"a spec must be a string like 'pool2,pca64,sq8', got {type(s).__name__}")
    if not s:
        raise SpecError("empty spec; give at least one stage, e.g. 'fp16' or 'pool2,pca64,sq8'")
    stages: list[Stage] = []
    offset = 0
    for i, token in enumerate(s.split(",")):
        if not token:
            raise _err(s, offset, "empty stage; stages are separated by single commas, e.g. 'pca64,sq8'")
        if not token.isascii() or not token.isprintable() or any(c.isspace() for c in token):
            raise _err(
                s, offset, f"stage {token!r} contains spaces or non-ASCII characters; write e.g. 'pca64,sq8'"
            )
        m = _POOL.fullmatch(token)
        if m:
            if i != 0:
                raise _err(s, offset, f"pooling stage {token!r} must come first, e.g. '{token},pca64,sq8'")
            stages.append(_parse_pool_token(s, token, offset, m))
        else:
            stages.append(_parse_codec_stage(s, token, offset, stages))
        offset += len(token) + 1
    return Spec(tuple(stages))


def build_pipeline(spec: str | Spec, dim: int):
    """An unfitted :class:`~mvstore.codecs.pipeline.Pipeline` for the spec's codec stages at input ``dim``
    (pooling is not a codec: read it from :attr:`Spec.pool_factor`). Dims flow left to right; a stage that
    does not fit its input dim (``pca512`` at 384, ``pq7`` at 64) raises :class:`SpecError`."""
    from .codecs.pipeline import Pipeline
    from .codecs.scalar import FP32

    sp = parse(spec)
    dim = check_int("dim", dim, what="the token vectors' dimension, e.g. dim=128")
    stages = []
    d = dim
    for st in sp.codec_stages:
        try:
            codec = st.cls.from_token(st.token, d)
        except SpecError as e:
            raise _err(str(sp), st.offset, f"{e} (stage input dim is {d})") from None
        stages.append(codec)
        d = codec.dim_out
    if not stages:
        stages.append(FP32(d))
    return Pipeline(stages)


def code_size(spec: str | Spec, dim: int) -> int:
    """Bytes per stored (pooled) vector, from the spec and input dim alone (nothing is fitted)."""
    return build_pipeline(spec, dim).code_size


def bytes_per_token(spec: str | Spec, dim: int) -> float:
    """Stored bytes per *original* token: ``code_size / pool_factor`` (with a floor, ``pool4min32``, documents
    shorter than ``factor * min`` tokens keep more vectors: the measured figure is then higher)."""
    sp = parse(spec)
    return code_size(sp, dim) / sp.pool_factor


#: :func:`default_spec`'s pieces (chosen in benchmarks/robustness.py; README "Defaults" has the measurements)
DEFAULT_POOL = "pool2min32"
DEFAULT_QUANTIZER = "sq4"


def default_spec(dim: int) -> str:
    """The spec ``mvstore.create(uri, dim=dim)`` uses when none is given, for token vectors of any dimension.

    The rule: Ward-pool each document by 2 but keep at least 32 vectors (short documents stay unpooled), then
    quantize every dimension to 4 bits with a learned per-dimension range (``sq4``); no dimension is dropped,
    since a trained late-interaction model (96-128-d) leaves none to spare. Bytes per original token:
    ``dim / 4`` for long documents, up to ``dim / 2`` for documents of 32 tokens or fewer.

    >>> default_spec(128), default_spec(384)
    ('pool2min32,sq4', 'pool2min32,sq4')
    >>> bytes_per_token(default_spec(128), 128)
    32.0
    """
    dim = check_int("dim", dim, what="the token vectors' dimension, e.g. dim=128")
    return f"{DEFAULT_POOL},{DEFAULT_QUANTIZER}"
