"""Spec grammar: parse/format round trips, errors with offsets, code sizes, property tests."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mvstore.codecs import REGISTRY
from mvstore.codecs.pipeline import Pipeline
from mvstore.exceptions import InvalidArgumentError, InvalidDtypeError, SpecError
from mvstore.spec import Spec, build_pipeline, bytes_per_token, code_size, known_forms, parse

VALID = [
    "fp32",
    "fp16",
    "sq8",
    "sq4",
    "bin",
    "pca64",
    "trunc128",
    "pool2",
    "kpool3",
    "pool1.5",
    "pool2,pca64,sq8",
    "pool2,pca96,pq16",
    "trunc128,rq2",
    "pca128,rq4c4096",
    "kpool4,pca64,trunc32,bin",
    "pca256,pca64,fp16",
    "pool1.25,rq1",
]


@pytest.mark.parametrize("s", VALID)
def test_round_trip(s):
    sp = parse(s)
    assert str(sp) == s
    assert isinstance(sp, Spec)
    assert parse(sp) is sp
    p = build_pipeline(s, 384)
    assert isinstance(p, Pipeline)
    # the pipeline's own spec is the codec part (fp32 implied when no quantizer is named)
    assert p.spec() == (sp.codec_spec or "fp32")
    assert str(parse(p.spec())) == p.spec()


def test_pool_fields():
    assert parse("pool2,pca64").pool_factor == 2.0 and parse("pool2").pool_method == "ward"
    assert parse("kpool1.5,sq8").pool_factor == 1.5 and parse("kpool1.5,sq8").pool_method == "kmeans"
    assert parse("sq8").pool_factor == 1.0 and parse("sq8").pool_method is None
    assert parse("pca64").quantizer == "fp32" and parse("pca64,sq4").quantizer == "sq4"
    assert [s.offset for s in parse("pool2,pca64,sq8").stages] == [0, 6, 12]
    assert [s.kind for s in parse("pool2,pca64,sq8").stages] == ["pool", "transform", "quantizer"]


@pytest.mark.parametrize(
    "s,dim,size",
    [
        ("fp32", 384, 1536),
        ("fp16", 384, 768),
        ("sq8", 384, 384),
        ("sq4", 384, 192),
        ("sq4", 7, 4),
        ("bin", 384, 48),
        ("bin", 10, 2),
        ("pca64", 384, 256),
        ("pca64,sq8", 384, 64),
        ("pool4,pca64,fp16", 384, 128),
        ("trunc128,bin", 384, 16),
        ("pq16", 384, 16),
        ("pca96,pq48", 384, 48),
        ("rq2", 384, 2 + 96),
        ("pca64,rq1", 384, 2 + 8),
        ("pca64,rq4", 384, 2 + 32),
        ("pca64,rq2c65536", 384, 2 + 16),
        ("pca64,rq2c65537", 384, 4 + 16),
        ("pool2", 384, 1536),
    ],
)
def test_code_size(s, dim, size):
    assert code_size(s, dim) == size
    assert bytes_per_token(s, dim) == size / parse(s).pool_factor


def test_code_size_matches_encoded_width():
    import numpy as np

    x = np.random.default_rng(0).normal(size=(300, 48)).astype(np.float32)
    for s in ["sq4", "bin", "pca24,sq8", "trunc16,fp16", "pca32,pq8", "rq2c8", "pca20,rq4c4"]:
        p = build_pipeline(s, 48).fit(x)
        assert p.encode(x).shape == (300, code_size(s, 48)), s


@pytest.mark.parametrize(
    "s,offset,pattern",
    [
        ("pca64,sq9", 6, r"unknown stage 'sq9'; expected one of pool<f>, kpool<f>, pca<d>"),
        ("pcq64", 0, r"unknown stage 'pcq64'; expected one of"),
        ("pca64,,sq8", 6, r"empty stage"),
        ("sq8,pca64", 4, r"transform after the quantizer 'sq8'"),
        ("fp16,sq8", 5, r"second quantizer"),
        ("pca64,pool2", 6, r"pooling stage 'pool2' must come first"),
        ("pool0.5,sq8", 0, r"below 1"),
        ("pool2.50", 0, r"without trailing zeros"),
        ("pool", 0, r"expected pool<f>"),
        ("kpoolx", 0, r"expected kpool<f>"),
        ("pcaX", 0, r"expected pca<d>"),
        ("pca064", 0, r"expected pca<d>"),
        ("trunc", 0, r"expected trunc<d>"),
        ("pq", 0, r"expected pq<m>"),
        ("rq3", 0, r"rq<b>\[c<n>\].*1, 2 or 4"),
        ("rq2c", 0, r"rq<b>\[c<n>\]"),
        ("pca64, sq8", 6, r"spaces"),
        ("pca64,", 6, r"empty stage"),
    ],
)
def test_parse_errors_name_offset_and_form(s, offset, pattern):
    with pytest.raises(SpecError, match=rf"at offset {offset} in .*{pattern}"):
        parse(s)


@pytest.mark.parametrize(
    "s,dim,pattern",
    [
        ("pca512", 384, r"at offset 0 .*pca512 .* only 384"),
        ("pca64,trunc128", 384, r"at offset 6 .*trunc128 .* only 64"),
        ("pq7", 384, r"at offset 0 .*384 .*not divisible by 7"),
        ("pca64,pq7", 384, r"at offset 6 .*64 .*not divisible by 7"),
    ],
)
def test_dimension_errors(s, dim, pattern):
    parse(s)  # valid syntax
    with pytest.raises(SpecError, match=pattern):
        build_pipeline(s, dim)
    with pytest.raises(SpecError, match=pattern):
        code_size(s, dim)


def test_bad_arguments():
    with pytest.raises(SpecError, match="empty spec"):
        parse("")
    with pytest.raises(SpecError, match="must be a string"):
        parse(64)
    # dim is an argument, not a spec: the classes store.create uses for it
    with pytest.raises(InvalidArgumentError, match="dim=0 must be a positive integer"):
        build_pipeline("sq8", 0)
    with pytest.raises(InvalidDtypeError, match="dim must be an int"):
        build_pipeline("sq8", 3.5)


def test_known_forms_are_registry_driven():
    forms = known_forms()
    assert forms[:2] == ["pool<f>", "kpool<f>"]
    for cls in REGISTRY.values():
        assert cls.form() in forms


def test_new_family_plugs_in_without_editing_spec(monkeypatch):
    import numpy as np

    from mvstore.codecs.base import Codec, int_param

    class Halve(Codec):
        name = "halve"
        token_form = "halve<k>"
        kind = "transform"
        requires_fit = False

        def __init__(self, dim_in, k):
            super().__init__(dim_in)
            self.k = k

        @classmethod
        def parse_token(cls, token):
            k = int_param(token, "halve", cls.form())
            return None if k is None else {"k": k}

        dim_out = property(lambda self: self.dim_in // 2)
        code_size = property(lambda self: 0)

        def spec(self):
            return f"halve{self.k}"

        def _encode(self, x):
            return np.ascontiguousarray(x[:, : self.dim_out])

    monkeypatch.setitem(REGISTRY, "halve", Halve)
    assert str(parse("halve3,sq8")) == "halve3,sq8"
    assert code_size("halve3,sq8", 64) == 32
    assert "halve<k>" in known_forms()
    with pytest.raises(SpecError, match="expected halve<k>"):
        parse("halvex")


# ----------------------------------------------------------------------------- property tests
_pool = st.one_of(
    st.none(),
    st.builds(
        lambda m, f: f"{m}{f}",
        st.sampled_from(["pool", "kpool"]),
        st.sampled_from(["1", "2", "3", "4", "1.5", "2.25", "10"]),
    ),
)
_transform = st.builds(lambda n, d: f"{n}{d}", st.sampled_from(["pca", "trunc"]), st.integers(1, 999))
_quant = st.one_of(
    st.none(),
    st.sampled_from(["fp32", "fp16", "sq8", "sq4", "bin"]),
    st.builds(lambda m: f"pq{m}", st.integers(1, 64)),
    st.builds(lambda b: f"rq{b}", st.sampled_from([1, 2, 4])),
    st.builds(lambda b, c: f"rq{b}c{c}", st.sampled_from([1, 2, 4]), st.integers(1, 100000)),
)


@st.composite
def valid_specs(draw):
    parts = []
    p = draw(_pool)
    if p:
        parts.append(p)
    parts += draw(st.lists(_transform, max_size=3))
    q = draw(_quant)
    if q:
        parts.append(q)
    if not parts:
        parts = ["fp16"]
    return ",".join(parts)


@settings(max_examples=200, deadline=None)
@given(valid_specs())
def test_generated_valid_specs_round_trip(s):
    sp = parse(s)
    assert str(sp) == s
    assert str(parse(str(sp))) == s


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet="poolkcatrunqsbfi0123456789.,x ", max_size=24) | st.text(max_size=16))
def test_random_strings_parse_or_raise_spec_error(s):
    try:
        sp = parse(s)
    except SpecError as e:
        assert re.search(r"offset \d+|empty spec", str(e))
    else:
        assert str(sp) == s


@settings(max_examples=100, deadline=None)
@given(valid_specs(), st.integers(1, 512))
def test_code_size_is_positive_or_spec_error(s, dim):
    try:
        size = code_size(s, dim)
    except SpecError as e:
        assert "at offset" in str(e)
    else:
        assert size > 0
        assert bytes_per_token(s, dim) == size / parse(s).pool_factor
