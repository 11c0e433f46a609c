"""Data out of an index by id: ``Index.get``, ``id in index``, ``metadata_columns``."""

import numpy as np
import pytest

import mvstore.store as ms
from mvstore.exceptions import FilterError, InvalidArgumentError, InvalidDtypeError, UnknownIdError

DIM = 8


@pytest.fixture
def index(tmp_path):
    rng = np.random.default_rng(0)
    docs = [rng.normal(size=(int(n), DIM)).astype(np.float32) for n in rng.integers(3, 9, 40)]
    idx = ms.create(tmp_path / "ix", spec="fp16", dim=DIM)
    idx.add([f"d{i}" for i in range(40)], docs, metadata={"text": [f"t{i}" for i in range(40)], "n": list(range(40))})
    return idx


def test_get_returns_rows_in_the_order_asked(index):
    assert index.metadata_columns == ["text", "n"]
    assert index.get(["d7", "d2"]).to_pylist() == [{"id": "d7", "text": "t7", "n": 7}, {"id": "d2", "text": "t2", "n": 2}]
    assert index.get(["d3"], columns=["n"]).to_pylist() == [{"id": "d3", "n": 3}]
    assert index.get([]).column_names == ["id", "text", "n"] and index.get([]).num_rows == 0
    assert index.get(["d1", "nope"], missing="ignore")["id"].to_pylist() == ["d1"]
    index.delete(["d1"])
    assert "d1" not in index and "d2" in index


def test_get_mistakes(index, tmp_path):
    with pytest.raises(UnknownIdError, match=r"\['nope'\]; pass missing='ignore'"):
        index.get(["d1", "nope"])
    with pytest.raises(FilterError, match="unknown column 'body'"):
        index.get(["d1"], columns=["body"])
    with pytest.raises(FilterError, match="unknown column '_mv_codes'"):
        index.get(["d1"], columns=["_mv_codes"])
    with pytest.raises(InvalidDtypeError, match="stores string ids but got integer ids"):
        index.get([1])
    with pytest.raises(InvalidArgumentError, match="'error' or 'ignore'"):
        index.get(["d1"], missing="skip")
    empty = ms.create(tmp_path / "empty", spec="fp16", dim=DIM)
    assert 5 not in empty and empty.metadata_columns == []
    with pytest.raises(UnknownIdError, match="it is empty"):
        empty.get([5])
