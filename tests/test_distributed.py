"""mvstore.build on a local Ray cluster (started here): the distributed build gives the index Index.add gives,
and a failure anywhere leaves the previous version current."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import mvstore
import mvstore.store as ms
from mvstore.exceptions import DuplicateIdError, InvalidVectorsError

ray = pytest.importorskip(
    "ray", reason="ray is not installed: pip install 'mvstore[ray]' (the dev extra has it)"
)
pytest.importorskip("ray.data", reason="ray.data is not installed: pip install 'mvstore[ray]'")

DIM = 32
SPEC = "pca16,sq8"


def unit(x):
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


def corpus(n, seed, start=0):
    rng = np.random.default_rng(seed)
    centers = unit(np.random.default_rng(123).normal(size=(24, DIM)))
    docs = [
        unit(centers[rng.integers(0, 24, m)] + 0.35 * rng.normal(size=(m, DIM)))
        for m in rng.integers(8, 30, n)
    ]
    ids = np.arange(start, start + n)
    lang = ["en" if i % 3 else "fr" for i in ids]
    return ids, docs, lang


def table(ids, docs, lang):
    vec = pa.array([d.tolist() for d in docs], pa.list_(pa.list_(pa.float32())))
    return pa.table({"id": pa.array(ids, pa.int64()), "vectors": vec, "lang": lang})


@pytest.fixture(scope="module")
def cluster():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        yield ray
    finally:
        ray.shutdown()


def results(idx, queries):
    t = idx.search(queries, k=10)
    return t["query"].to_pylist(), t["id"].to_pylist(), t["score"].to_numpy().tolist()


def test_distributed_build_equals_index_add(cluster, tmp_path):
    ids, docs, lang = corpus(240, 0)
    ids2, docs2, lang2 = corpus(60, 1, start=1000)
    queries = [d[:6] for d in corpus(12, 9)[1]]
    single = ms.create(tmp_path / "single", spec=SPEC, dim=DIM)
    single.train(docs[:100])
    single.add(ids, docs, metadata={"lang": lang})
    single.add(ids2, docs2, metadata={"lang": lang2})

    report = {}
    path = tmp_path / "corpus.parquet"
    pq.write_table(table(ids, docs, lang), path, row_group_size=50)
    dist = mvstore.build(str(path), str(tmp_path / "dist"), SPEC, train_docs=100, batch_size=64, num_workers=2,
                         progress=False, report=report)  # fmt: skip
    assert dist.version == 1 and len(dist) == 240
    assert report["docs"] == 240 and report["fragments"] >= 4 and len(report["workers"]) >= 1
    # a second build appends to the existing index (one more commit) with the state it already has
    dist = mvstore.build(cluster.data.from_arrow(table(ids2, docs2, lang2)), str(tmp_path / "dist"),
                         batch_size=16, progress=False)  # fmt: skip
    # its 4 small fragments and the first build's 4 make 8: the automatic compaction ran after the commit
    assert len(dist) == 300 and dist.last_maintenance is not None and dist.version > 2
    assert len(ms.open(tmp_path / "dist", version=2)) == 300
    assert results(dist, queries) == results(single, queries)  # same ids, same scores, exactly
    assert dist.snapshot().ids.tolist() == single.snapshot().ids.tolist()  # same rows, same order
    assert (
        dist.search(queries[0], k=5, where="lang = 'fr'", columns=["lang"])["lang"].to_pylist() == ["fr"] * 5
    )
    assert dist.verify()["ok"]


def test_a_failed_build_leaves_the_previous_version(cluster, tmp_path):
    ids, docs, lang = corpus(120, 2)
    uri = str(tmp_path / "ix")
    idx = mvstore.build(cluster.data.from_arrow(table(ids, docs, lang)), uri, SPEC, train_docs=60, batch_size=40,
                        progress=False)  # fmt: skip
    q = [d[:5] for d in docs[:4]]
    before = results(idx, q)

    def explode(batch):
        if 1050 in batch["id"].to_pylist():
            raise RuntimeError("worker lost its disk")
        return batch

    more = table(*corpus(100, 3, start=1000))
    with pytest.raises(Exception, match="worker lost its disk"):
        mvstore.build(cluster.data.from_arrow(more).map_batches(explode, batch_format="pyarrow", batch_size=25), uri,
                      batch_size=25, progress=False)  # fmt: skip
    bad = corpus(30, 4, start=2000)
    bad[1][17] = bad[1][17].copy()
    bad[1][17][2, 3] = np.nan
    with pytest.raises(InvalidVectorsError, match="NaN"):
        mvstore.build(cluster.data.from_arrow(table(*bad)), uri, batch_size=10, progress=False)
    dup = corpus(20, 5, start=110)  # ids 110..129: 110..119 are in the index
    with pytest.raises(DuplicateIdError, match="already in the index"):
        mvstore.build(cluster.data.from_arrow(table(*dup)), uri, batch_size=10, progress=False)
    again = ms.open(uri)
    assert again.version == 1 and len(again) == 120
    assert results(again, q) == before
    assert again.verify()["ok"]


def test_cli_build_with_ray(cluster, tmp_path, capsys):
    import json

    from mvstore.cli import main

    ids, docs, lang = corpus(80, 6)
    path = tmp_path / "in.parquet"
    pq.write_table(table(ids, docs, lang), path)
    out = str(tmp_path / "ix")
    assert main(["build", out, "--input", str(path), "--ray", "--workers", "1", "--spec", "sq8", "--batch-size",
                 "32", "--train-docs", "40", "-q", "--json"]) == 0  # fmt: skip
    row = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert row["docs"] == 80 and row["version"] == 1
    idx = ms.open(out)
    assert idx.options.get("encoder") is None  # vectors in, no --encoder: no encoder recorded
    assert json.loads(idx.loc.read("mvstore-cli.json"))["input"] == str(path)
    assert idx.search(docs[5][:4], k=1)["id"].to_pylist() == [5]
    assert main(["build", out, "--input", str(path), "--ray", "-q"]) == 2  # an index is there already
    assert "--ray builds a new index" in capsys.readouterr().err


def test_cli_build_with_ray_from_texts_records_the_encoder(cluster, tmp_path, capsys):
    """A --ray build from texts records its encoder in the index (as a local build does), so the index answers
    text queries with no flags."""
    import json

    from mvstore.cli import main

    texts = [f"{w} is a word about topic {i}" for i, w in enumerate(["apple", "river", "guitar", "planet", "castle",
                                                                     "violin", "desert", "harbor"])]  # fmt: skip
    path = tmp_path / "in.parquet"
    pq.write_table(pa.table({"id": pa.array(range(len(texts)), pa.int64()), "text": texts}), path)
    out = str(tmp_path / "ix")
    assert main(["build", out, "--input", str(path), "--ray", "--workers", "1", "--spec", "fp16", "-q",
                 "--json"]) == 0  # fmt: skip
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["docs"] == len(texts)
    idx = ms.open(out)
    assert idx.options["encoder"]["kind"] == "hf"
    assert idx.search("guitar is a word about topic 2", k=1)["id"].to_pylist() == [2]
