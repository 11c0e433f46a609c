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
    idx.add(
        [f"d{i}" for i in range(40)],
        docs,
        metadata={"text": [f"t{i}" for i in range(40)], "n": list(range(40))},
    )
    return idx


def test_get_returns_rows_in_the_order_asked(index):
    assert index.metadata_columns == ["text", "n"]
    assert index.get(["d7", "d2"]).to_pylist() == [
        {"id": "d7", "text": "t7", "n": 7},
        {"id": "d2", "text": "t2", "n": 2},
    ]
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


@pytest.mark.parametrize("spec, keep_source", [("fp16", False), ("pool2,sq8", True)])
def test_export_round_trips_through_npz_and_parquet(tmp_path, spec, keep_source):
    import pyarrow.parquet as pq

    from mvstore.cli import main

    rng = np.random.default_rng(1)
    docs = [rng.normal(size=(int(n), DIM)).astype(np.float32) for n in rng.integers(3, 9, 40)]
    idx = ms.create(tmp_path / "ix", spec=spec, dim=DIM, keep_source=keep_source)
    idx.add([f"d{i}" for i in range(40)], docs, metadata={"text": [f"t{i}" for i in range(40)]})
    idx.delete(["d3"])
    rep = idx.export(tmp_path / "out.npz")
    assert rep["docs"] == 39 and rep["source"] == ("keep_source" if keep_source else "decoded")
    with np.load(tmp_path / "out.npz") as z:
        ids, vecs, offs = z["ids"].tolist(), z["vectors"], z["offsets"]
    assert sorted(ids) == sorted(f"d{i}" for i in range(40) if i != 3) and len(offs) == 40
    first = vecs[offs[0] : offs[1]]
    if spec == "fp16":  # decoded fp16 codes: the added vectors to fp16 precision
        np.testing.assert_allclose(first, docs[int(ids[0][1:])], atol=2e-3)
    else:  # the pooled fp16 source vectors: what a new index gets and encodes again
        assert len(first) == (len(docs[int(ids[0][1:])]) + 1) // 2
    # the npz is mvstore build's input: the rebuilt index ranks the same top document
    assert (
        main(["-q", "build", str(tmp_path / "re"), "--input", str(tmp_path / "out.npz"), "--spec", "fp16"])
        == 0
    )
    re = ms.open(tmp_path / "re")
    assert len(re) == 39 and re.search(first, k=1)["id"].to_pylist() == [ids[0]]
    idx.export(tmp_path / "out.parquet")
    t = pq.read_table(tmp_path / "out.parquet")
    assert t.column_names == ["id", "text", "vectors"] and t.num_rows == 39
    row = t.slice(0, 1).to_pylist()[0]
    assert row["text"] == "t" + row["id"][1:] and np.allclose(np.array(row["vectors"], np.float32), first)


def test_export_mistakes(tmp_path):
    from mvstore.exceptions import InvalidOperationError

    rng = np.random.default_rng(2)
    docs = [rng.normal(size=(8, DIM)).astype(np.float32) for _ in range(40)]
    idx = ms.create(tmp_path / "ix", spec="pca4,sq8", dim=DIM)
    idx.add(np.arange(40), docs)
    with pytest.raises(InvalidOperationError, match="4-d codes of 8-d vectors.*keep_source=True"):
        idx.export(tmp_path / "out.npz")
    with pytest.raises(InvalidArgumentError, match=r"must end in .npz or .parquet"):
        idx.export(tmp_path / "out.csv")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ix"]  # nothing half-written
