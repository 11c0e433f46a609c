"""``open(uri, memory="bounded")``: stage 1 in memory, stage-2 codes read from disk for each search's candidates
through a bounded cache; the rankings are the in-memory ones."""

from __future__ import annotations

import numpy as np
import pytest

import mvstore
import mvstore.store as ms
from mvstore.exceptions import InvalidArgumentError, InvalidDtypeError, InvalidOperationError

DIM = 16


def docs_of(rng, n):
    centers = np.random.default_rng(7).normal(size=(12, DIM))
    out = []
    for m in rng.integers(3, 40, n):
        x = centers[rng.integers(0, 12, m)] + 0.6 * rng.normal(size=(m, DIM))
        out.append((x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32))
    return out


QS = docs_of(np.random.default_rng(99), 6)
PARAMS = [None, {"candidates": "exhaustive"}, {"interaction": "full", "nprobe": 2}, {"n_rerank": 7}]


def rankings(idx):
    out = []
    for p in PARAMS:
        out.append(idx.search(QS, k=10, params=p).to_pydict())
    out.append(idx.search(QS, k=5, where="lang = 'en'", columns=["lang"]).to_pydict())
    return out


@pytest.mark.parametrize("spec", ["pool2,sq4", "fp16", "rq2c16"])
def test_bounded_memory_ranks_like_memory_through_writes(tmp_path, spec):
    rng = np.random.default_rng(0)
    uri = str(tmp_path / "ix")
    w = ms.create(uri, spec=spec, dim=DIM, n_centroids=16, compact_fragments=3, fragment_rows=16)
    w.add(np.arange(200), docs_of(rng, 200), metadata=[{"lang": "en" if i % 3 else "fr"} for i in range(200)])
    bounded = mvstore.open(uri, memory="bounded", cache_bytes=4096)
    assert rankings(bounded) == rankings(ms.open(uri))
    snap = bounded._view.snapshot()
    assert snap.codes is None and snap.terms is None and "postings" in snap.extras
    # its own writes (derived), another writer's (refresh), automatic compactions, time travel
    for step in range(6):
        bounded.add([1000 + step], docs_of(rng, 1), metadata=[{"lang": "en"}])
        bounded.upsert([step], docs_of(rng, 1))
        bounded.delete([100 + step])
        assert rankings(bounded) == rankings(ms.open(uri)), step
        assert bounded._view.load_kind == "incremental"
    w.refresh().add([2000], docs_of(rng, 1), metadata=[{"lang": "fr"}])
    bounded.refresh()
    assert rankings(bounded) == rankings(ms.open(uri))
    v = bounded.version - 3
    assert rankings(mvstore.open(uri, version=v, memory="bounded")) == rankings(ms.open(uri, version=v))
    m = bounded.memory
    assert m["mode"] == "bounded" and 0 < m["cached_bytes"] <= 4096 and m["misses"] > 0
    assert bounded.verify()["ok"]


def test_the_cache_is_bounded_and_reused(tmp_path):
    rng = np.random.default_rng(1)
    uri = str(tmp_path / "ix")
    ms.create(uri, spec="fp16", dim=DIM, n_centroids=8).add(np.arange(300), docs_of(rng, 300))
    small = mvstore.open(uri, memory="bounded", cache_bytes=10_000)
    big = mvstore.open(uri, memory="bounded", cache_bytes=1 << 30)
    for idx in (small, big):
        for _ in range(3):
            idx.search(QS, k=10, params={"candidates": "exhaustive"})
    assert small.memory["cached_bytes"] <= 10_000
    # everything fits the large cache: the second and third pass read nothing
    assert big.memory["misses"] == 300 and big.memory["hits"] == 600
    assert (
        mvstore.open(uri, memory="bounded", cache_bytes=0).search(QS, k=3).num_rows == 18
    )  # no cache at all
    assert ms.open(uri).memory == {"mode": "full"}


def test_memory_arguments_are_checked(tmp_path):
    uri = str(tmp_path / "ix")
    ms.create(uri, spec="fp16", dim=DIM).add([1], docs_of(np.random.default_rng(2), 1))
    with pytest.raises(InvalidArgumentError, match='memory must be "full".*or "bounded"'):
        mvstore.open(uri, memory="small")
    with pytest.raises(InvalidArgumentError, match='pass memory="bounded" too'):
        mvstore.open(uri, cache_bytes=1000)
    with pytest.raises(InvalidArgumentError, match="cache_bytes=-1 must be >= 0"):
        mvstore.open(uri, memory="bounded", cache_bytes=-1)
    with pytest.raises(InvalidDtypeError, match="cache_bytes must be an int"):
        mvstore.open(uri, memory="bounded", cache_bytes="1GB")


def test_a_sparse_codec_needs_its_codes_in_memory(tmp_path):
    uri = str(tmp_path / "ix")
    ms.create(uri, spec="spk64t4", dim=DIM).add(np.arange(30), docs_of(np.random.default_rng(3), 30))
    with pytest.raises(InvalidOperationError, match="open the index without memory='bounded'"):
        mvstore.open(uri, memory="bounded").search(QS, k=3)
    dense = str(tmp_path / "dense")
    ms.create(dense, spec="fp16", dim=DIM).add(np.arange(30), docs_of(np.random.default_rng(3), 30))
    with pytest.raises(InvalidOperationError, match="candidates='sparse'"):
        mvstore.open(dense, memory="bounded").search(QS, k=3, params={"candidates": "sparse"})


def test_a_snapshot_without_codes_needs_a_code_source():
    from mvstore.search.snapshot import Snapshot

    snap = Snapshot(version=1, ids=np.arange(2), codes=None, offsets=np.array([0, 2, 3]), codec=None,
                    n_tokens=np.array([2, 1]))  # fmt: skip
    with pytest.raises(InvalidOperationError, match="no code_source"):
        snap.gather(np.array([1]))
