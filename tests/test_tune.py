"""tune(): picks the best-fidelity spec within budget from a Pareto-consistent table."""

import numpy as np
import pytest

from mvstore.exceptions import DimensionMismatchError, InvalidArgumentError, InvalidDtypeError, SpecError
from mvstore.spec import bytes_per_token
from mvstore.testing import synthetic_docs
from mvstore.tune import TuneError, default_candidates, tune

DIM = 32
CANDIDATES = ["fp32", "sq8", "sq4", "bin", "pca16,sq8", "pca8,sq8", "pool2,sq8", "pool2,sq4", "pool3,bin"]


@pytest.fixture(scope="module")
def data():
    docs = synthetic_docs(160, DIM, n_topics=24, min_len=10, max_len=40, seed=0, spread=0.25)
    queries = synthetic_docs(24, DIM, n_topics=24, min_len=4, max_len=8, seed=1, spread=0.25)
    return docs, queries


@pytest.fixture(scope="module")
def result(data):
    return tune(*data, max_bytes_per_token=16, candidates=CANDIDATES, k=5, fit_vectors=2048)


def dominates(a, b):
    return (
        a["bytes_per_token"] <= b["bytes_per_token"]
        and a["fidelity"] >= b["fidelity"]
        and (a["bytes_per_token"] < b["bytes_per_token"] or a["fidelity"] > b["fidelity"])
    )


def test_picks_best_fidelity_within_budget(result):
    assert {r["spec"] for r in result.table} == set(CANDIDATES)
    picked = [r for r in result.table if r["picked"]]
    assert len(picked) == 1 and picked[0]["spec"] == result.spec
    assert result.bytes_per_token <= 16 and picked[0]["within_budget"]
    fitting = [r for r in result.table if r["bytes_per_token"] <= 16]
    assert result.fidelity == max(r["fidelity"] for r in fitting)
    assert all(r["within_budget"] == (r["bytes_per_token"] <= 16) for r in result.table)
    # over-budget candidates given explicitly are measured and shown but never picked
    assert any(not r["within_budget"] for r in result.table)


def test_table_is_pareto_consistent(result):
    rows = result.table
    assert [r["bytes_per_token"] for r in rows] == sorted(r["bytes_per_token"] for r in rows)
    for r in rows:
        dominated = any(dominates(o, r) for o in rows if o is not r)
        if r["pareto"]:
            assert not dominated, r
        else:  # off the front: dominated, or a duplicate of a front point
            assert dominated or any(
                o["pareto"]
                and o["bytes_per_token"] == r["bytes_per_token"]
                and o["fidelity"] == r["fidelity"]
                for o in rows
            ), r
    assert result.front == [r for r in rows if r["pareto"]]
    text = result.to_text()
    assert text.splitlines()[0].startswith(f"picked {result.spec!r}") and "pareto" in text


def test_measurements_are_real(result, data):
    by = {r["spec"]: r for r in result.table}
    # fp32 is lossless: the compressed ranking is the exact one
    assert by["fp32"]["fidelity"] == 1.0 and by["fp32"]["bytes_per_token"] == DIM * 4
    assert by["sq8"]["fidelity"] > by["bin"]["fidelity"]
    # pooling is charged for the vectors it actually keeps: ceil(n / 2) per document
    lengths = data[0].lengths
    assert by["pool2,sq8"]["vectors_per_token"] == pytest.approx(
        np.ceil(lengths / 2).sum() / lengths.sum(), abs=1e-4
    )
    assert by["pool2,sq8"]["bytes_per_token"] == pytest.approx(
        DIM * by["pool2,sq8"]["vectors_per_token"], abs=1e-2
    )
    assert by["pool2,sq8"]["bytes_per_token"] > by["pool2,sq8"]["nominal_bytes_per_token"]


def test_default_grid_fits_budget():
    specs = default_candidates(384, 20)
    assert specs and len(specs) == len(set(specs))
    assert all(bytes_per_token(s, 384) <= 20 for s in specs)
    assert {s.split(",")[0] for s in specs} >= {"pool2", "pool3", "pool4"}
    assert any(s.startswith("pca") for s in specs) and any(s.endswith("rq2") for s in specs)


def test_default_grid_runs(data):
    # the default grid on a tiny budget (few, cheap candidates)
    res = tune(*data, max_bytes_per_token=2.2, k=5, fit_vectors=1024)
    assert res.bytes_per_token <= 2.2
    assert {r["spec"] for r in res.table} == set(default_candidates(DIM, 2.2))


def test_errors(data):
    docs, queries = data
    with pytest.raises(TuneError, match="must be a positive number of bytes"):
        tune(docs, queries, max_bytes_per_token=0)
    with pytest.raises(InvalidDtypeError, match="must be a number"):
        tune(docs, queries, max_bytes_per_token="20")
    with pytest.raises(
        TuneError, match="none of the 2 candidate specs fits within 4 bytes.*raise max_bytes_per_token"
    ):
        tune(docs, queries, max_bytes_per_token=4, candidates=["sq8", "fp16"], fit_vectors=512)
    with pytest.raises(TuneError, match="no spec of the default grid fits within 0.5 bytes"):
        tune(docs, queries, max_bytes_per_token=0.5)
    with pytest.raises(SpecError, match="candidate 'pca16,sq9'.*unknown stage"):
        tune(docs, queries, max_bytes_per_token=16, candidates=["pca16,sq9"])
    with pytest.raises(InvalidDtypeError, match="list of spec strings"):
        tune(docs, queries, max_bytes_per_token=16, candidates="sq8")
    with pytest.raises(DimensionMismatchError, match="same model"):
        tune(docs, synthetic_docs(3, DIM + 1), max_bytes_per_token=16)
    with pytest.raises(TuneError, match="k=10 needs a sample of more than 10 documents"):
        tune(docs[:8], queries, max_bytes_per_token=16, candidates=["sq8"])
    with pytest.raises(InvalidArgumentError, match="sample_docs=0 must be a positive integer"):
        tune(docs, queries, max_bytes_per_token=16, sample_docs=0)
