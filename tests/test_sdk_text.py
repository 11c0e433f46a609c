"""Texts in, passages out: an index that records its encoder, add_texts, string queries, progress bars,
version retention, the CLI's --encoder (hf / colbert / pylate) and its smaller points."""

import json
import os
import subprocess
import sys
import warnings
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest

import mvstore
from mvstore import _progress
from mvstore.encoders import ColBERTEncoder, encoder_config, make_encoder
from mvstore.exceptions import (
    DimensionMismatchError,
    DuplicateIdError,
    InvalidArgumentError,
    InvalidDtypeError,
    InvalidMetadataError,
    InvalidOperationError,
)
from tests.test_encoders import build_pylate_dir

REPO = Path(__file__).resolve().parents[1]
PASSAGES = [
    "Tides are caused by the gravitational pull of the moon.",
    "Solar panels convert sunlight into electricity.",
    "Vaccines train the immune system to recognise a virus.",
    "Wind turbines generate electricity from moving air.",
]
TOPICS = [{"topic": "space"}, {"topic": "energy"}, {"topic": "health"}, {"topic": "energy"}]


@pytest.fixture(scope="module")
def colbert_dir(tmp_path_factory):
    """The bundled MiniLM plus a fresh random 128-d projection, saved in PyLate's on-disk layout."""
    return build_pylate_dir(tmp_path_factory.mktemp("colbert") / "model")


def test_create_records_the_encoder_and_texts_go_in_and_out(minilm, tmp_path):
    idx = mvstore.create(tmp_path / "ix", encoder=minilm, spec="fp16")
    assert idx.dim == 384 and idx.encoder is minilm
    rec = json.loads((tmp_path / "ix" / "mvstore.json").read_text())["options"]["encoder"]
    assert rec == {
        "kind": "hf",
        "model": None,
        "query_max_length": 64,
        "doc_max_length": 256,
        "keep_special_tokens": True,
        "normalize": True,
        "name": minilm.name,
    }
    assert idx.add_texts(PASSAGES[:3], metadata=TOPICS[:3]) == [0, 1, 2]  # fresh ids from 0
    assert idx.add_texts(PASSAGES[3:], metadata=TOPICS[3:]) == [3]  # after the largest stored id
    hit = idx.search("what causes ocean tides", k=2, columns=["text", "topic"]).to_pylist()[0]
    assert hit["id"] == 0 and hit["text"] == PASSAGES[0] and hit["topic"] == "space"
    assert idx.search(["wind power", "immune response to vaccines"], k=1)["id"].to_pylist() == [3, 2]
    res = idx.search(
        ["wind power", "immune response to vaccines"], k=1, where="topic = 'energy'", columns=["topic"]
    )
    assert res["id"].to_pylist()[0] == 3 and res["topic"].to_pylist() == ["energy", "energy"]
    # the same as encoding by hand: vectors keep working
    manual = idx.search(minilm.encode_queries(["what causes ocean tides"]), k=2)
    assert manual["id"].to_pylist() == [0, idx.search("what causes ocean tides", k=2)["id"].to_pylist()[1]]
    np.testing.assert_allclose(manual["score"].to_numpy()[0], hit["score"], rtol=1e-6)
    with pytest.raises(DuplicateIdError):
        idx.add_texts(["another text"], ids=[2])
    assert idx.version == 2  # nothing was committed by the failed call


def test_add_texts_options_and_errors(minilm, tmp_path):
    idx = mvstore.create(tmp_path / "ix", encoder=minilm, spec="fp16")
    with pytest.raises(InvalidMetadataError, match="text_column=None"):
        idx.add_texts(PASSAGES[:1], metadata=[{"text": "mine"}])
    with pytest.raises(InvalidDtypeError, match="wrap it in a list"):
        idx.add_texts("one string")
    with pytest.raises(InvalidArgumentError, match="empty or whitespace"):
        idx.add_texts(["ok", "  "])
    assert idx.add_texts(PASSAGES[:2], ids=["a", "b"], text_column="passage", metadata=TOPICS[:2]) == [
        "a",
        "b",
    ]
    assert idx.search("tides", k=1, columns=["passage"])["passage"].to_pylist() == [PASSAGES[0]]
    with pytest.raises(InvalidArgumentError, match="string ids.*pass ids="):
        idx.add_texts(PASSAGES[2:3])
    # a stored column is checked before anything is encoded: an unknown one fails at once
    with pytest.raises(InvalidMetadataError, match="year"):
        idx.add_texts(PASSAGES[2:3], ids=["c"], metadata=[{"year": 2020}], text_column="passage")
    other = mvstore.create(tmp_path / "no_text", encoder=minilm, spec="fp16")
    other.add_texts(PASSAGES[:2], text_column=None)
    assert "text" not in other.search("tides", k=1, columns=None).column_names
    with pytest.raises(mvstore.FilterError):
        other.search("tides", k=1, columns=["text"])


@pytest.mark.parametrize("name", ["_mv_text", "_text", "score", "id"])
def test_add_texts_text_column_follows_the_metadata_name_rules(minilm, tmp_path, name):
    """The passage text is metadata: its column may not take a reserved name (format 3's `_` prefix included)."""
    idx = mvstore.create(tmp_path / "ix", encoder=minilm, spec="fp16")
    with pytest.raises(InvalidMetadataError, match=f"text_column='{name}' is reserved.*pick another name"):
        idx.add_texts(PASSAGES[:1], text_column=name)
    assert idx.version == 0


def test_an_index_without_encoder_says_how_to_get_one(tmp_path, minilm):
    idx = mvstore.create(tmp_path / "ix", dim=384, spec="fp16")
    assert idx.encoder is None
    for call in (lambda: idx.search("tides"), lambda: idx.add_texts(["tides"])):
        with pytest.raises(InvalidOperationError, match=r"records none.*mvstore.open\(uri, encoder="):
            call()
    idx.add([7], minilm.encode_documents(PASSAGES[:1]))
    # the override: open(uri, encoder=...) for this object (nothing stored)
    over = mvstore.open(tmp_path / "ix", encoder=minilm)
    assert over.search("moon tides", k=1)["id"].to_pylist() == [7]
    with pytest.raises(InvalidMetadataError, match="no 'text' column.*text_column=None"):
        over.add_texts(PASSAGES[1:2])
    assert over.add_texts(PASSAGES[1:2], text_column=None) == [8]
    assert "encoder" not in mvstore.open(tmp_path / "ix").options
    with pytest.raises(DimensionMismatchError, match="384-d"):
        mvstore.open(tmp_path / "ix", encoder=FakeEncoder(16))
    with pytest.raises(DimensionMismatchError, match="outputs 384-d"):
        mvstore.create(tmp_path / "ix2", dim=128, encoder=minilm)
    with pytest.raises(InvalidArgumentError, match=r"cannot be recorded.*mvstore.open\(uri, encoder=obj\)"):
        mvstore.create(tmp_path / "ix3", encoder=FakeEncoder(16))
    with pytest.raises(InvalidArgumentError, match="unknown kind 'bert'"):
        mvstore.create(tmp_path / "ix4", encoder="bert:x")
    with pytest.raises(InvalidArgumentError, match="'st:NAME_OR_PATH'"):
        make_encoder("st")


class FakeEncoder:
    """An encoder of random unit vectors that cannot describe itself (not recordable)."""

    def __init__(self, dim):
        self.dim, self.name = dim, f"fake{dim}"

    def encode_queries(self, texts):
        return mvstore.Ragged.from_list([np.eye(self.dim, dtype=np.float32)[:2] for _ in texts])

    encode_documents = encode_queries


def test_the_recorded_encoder_is_rebuilt_lazily(minilm, tmp_path):
    idx = mvstore.create(tmp_path / "ix", encoder="hf", spec="fp16")
    idx.add_texts(PASSAGES, metadata=TOPICS)
    again = mvstore.open(tmp_path / "ix")
    assert again._encoder is None  # opening loads no model
    assert again.search(minilm.encode_queries(["moon"]), k=1)["id"].to_pylist() == [0]  # vectors: still none
    assert again._encoder is None
    assert again.search("electricity from the wind", k=1)["id"].to_pylist() == [3]
    assert again.encoder.name == minilm.name and again.encoder.config() == encoder_config(minilm)
    # exist_ok with another encoder is refused; with the same one it opens
    assert mvstore.create(tmp_path / "ix", spec="fp16", encoder=minilm, exist_ok=True).encoder is minilm
    other = make_encoder("hf", query_max_length=16)
    with pytest.raises(InvalidArgumentError, match=r"records encoder.*mvstore.open\(uri, encoder="):
        mvstore.create(tmp_path / "ix", spec="fp16", encoder=other, exist_ok=True)


def test_opening_and_vector_search_need_no_torch(minilm, tmp_path):
    idx = mvstore.create(tmp_path / "ix", encoder=minilm, spec="fp16")
    idx.add_texts(PASSAGES)
    np.save(tmp_path / "q.npy", minilm.encode_queries(["moon"])[0])
    code = (
        "import sys; sys.modules['torch'] = None; sys.modules['transformers'] = None\n"
        "import numpy as np, mvstore\n"
        f"idx = mvstore.open({str(tmp_path / 'ix')!r})\n"
        f"print(idx.search(np.load({str(tmp_path / 'q.npy')!r}), k=1)['id'].to_pylist())\n"
        "try:\n    idx.search('moon')\nexcept mvstore.MissingDependencyError as e:\n    print('missing', e)\n"
    )
    p = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=300,
        env=dict(os.environ, PYTHONPATH=str(REPO)),
    )
    assert p.returncode == 0, p.stderr
    out = p.stdout.splitlines()
    assert out[0] == "[0]" and out[1].startswith("missing") and "mvstore[encoders]" in out[1]


def test_colbert_model_recorded_and_rebuilt(colbert_dir, tmp_path):
    idx = mvstore.create(tmp_path / "ix", encoder=f"colbert:{colbert_dir}", spec="fp16")
    assert idx.dim == 128 and isinstance(idx.encoder, ColBERTEncoder)
    assert idx.options["encoder"]["kind"] == "colbert" and idx.options["encoder"]["path"] == str(colbert_dir)
    idx.add_texts(PASSAGES)
    direct = ColBERTEncoder(colbert_dir)
    want = idx.search(direct.encode_queries(["moon and tides"]), k=4)
    again = mvstore.open(tmp_path / "ix")
    got = again.search("moon and tides", k=4)
    assert got["id"].to_pylist() == want["id"].to_pylist()
    np.testing.assert_allclose(got["score"].to_numpy(), want["score"].to_numpy(), rtol=1e-5)
    # the model's files changed since the index was built: the rebuilt encoder says so
    cfg = colbert_dir / "config_sentence_transformers.json"
    saved = cfg.read_text()
    try:
        cfg.write_text(json.dumps({**json.loads(saved), "query_length": 24}))
        with pytest.warns(RuntimeWarning, match="files or settings changed"):
            mvstore.open(tmp_path / "ix").search("moon", k=1)
    finally:
        cfg.write_text(saved)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        mvstore.open(tmp_path / "ix").search("moon", k=1)  # restored: no warning


def test_pylate_model_through_pylate(colbert_dir, tmp_path):
    """``pylate:PATH`` loads the model with PyLate (the ``pylate`` extra; run in a venv that has it) and gives
    the rankings of ColBERTEncoder, which reads the same directory without PyLate. It needs PyLate and mvstore
    in one process, so it skips in `make test`'s venv (PyLate 1.2 pins an older transformers; its own venv,
    .venv-pylate, holds no mvstore); test_encoders checks ColBERTEncoder against PyLate 1.2's recorded output."""
    pytest.importorskip(
        "pylate", reason="PyLate is not in this venv (pip install 'mvstore[pylate]' to run this test)"
    )
    idx = mvstore.create(tmp_path / "ix", encoder=f"pylate:{colbert_dir}", spec="fp32")
    assert idx.dim == 128 and idx.options["encoder"] == {
        "kind": "pylate",
        "model": str(colbert_dir),
        "name": f"pylate:{colbert_dir}",
    }
    idx.add_texts(PASSAGES)
    ref = mvstore.create(tmp_path / "ref", encoder=f"colbert:{colbert_dir}", spec="fp32")
    ref.add_texts(PASSAGES)
    a = mvstore.open(tmp_path / "ix").search(
        ["moon and tides", "vaccines"], k=4, params={"candidates": "exhaustive"}
    )
    b = ref.search(["moon and tides", "vaccines"], k=4, params={"candidates": "exhaustive"})
    assert a["id"].to_pylist() == b["id"].to_pylist()
    np.testing.assert_allclose(a["score"].to_numpy(), b["score"].to_numpy(), atol=1e-3)


# ---------------------------------------------------------------------------------------- progress
def test_progress_bars_shown_forced_or_silenced(minilm, tmp_path, capsys, monkeypatch):
    rng = np.random.default_rng(0)
    docs = [rng.normal(size=(int(n), 16)).astype(np.float32) for n in rng.integers(4, 12, 300)]
    idx = mvstore.create(tmp_path / "ix", dim=16, spec="pca8,sq8", keep_source=True)
    idx.train(docs, progress=True)
    assert "training" in capsys.readouterr().err
    idx.add(np.arange(100), docs[:100], progress=False)
    assert capsys.readouterr().err == ""
    idx.add(np.arange(100, 200), docs[100:200])  # auto: stderr is no terminal here
    assert capsys.readouterr().err == ""
    idx.add(np.arange(200, 250), docs[200:250], progress=True)
    err = capsys.readouterr().err
    assert "adding" in err and "50/50" in err
    idx.optimize(cleanup=True, retrain=True, progress=True)
    assert "optimizing" in capsys.readouterr().err
    monkeypatch.setattr(_progress, "interactive", lambda: True)  # a terminal or notebook
    monkeypatch.setattr(_progress, "AUTO_DELAY", 0.0)
    idx.add_batches([(np.arange(250, 300), docs[250:])])
    assert "adding" in capsys.readouterr().err
    mvstore.tune(docs, docs[:20], max_bytes_per_token=8, candidates=["fp16", "pca8,sq8"], sample_docs=100)
    assert "tuning specs" in capsys.readouterr().err
    minilm.encode_documents(PASSAGES)
    assert "encoding" in capsys.readouterr().err
    # add_texts shows one bar, not one per encoded batch
    t = mvstore.create(tmp_path / "t", encoder=minilm, spec="fp16")
    t.add_texts(PASSAGES, batch_size=2)
    err = capsys.readouterr().err
    assert "adding texts" in err and "encoding" not in err
    t.add_texts(["more text"], progress=False)
    assert capsys.readouterr().err == ""
    with pytest.raises(InvalidDtypeError, match="progress must be True"):
        idx.add([1000], docs[:1], progress="yes")


# ---------------------------------------------------------------------------------------- retention
def test_cleanup_keeps_recent_versions_like_lancedb(tmp_path, rng):
    docs = [rng.normal(size=(6, 8)).astype(np.float32) for _ in range(40)]
    idx = mvstore.create(tmp_path / "ix", dim=8, spec="fp16")
    for a in range(0, 40, 10):
        idx.add(np.arange(a, a + 10), docs[a : a + 10])
    before = [v["version"] for v in idx.versions()]
    rep = idx.optimize(cleanup=True)  # default retention: 7 days
    assert (
        rep["cleanup"]["old_versions"] == 0
        and [v["version"] for v in idx.versions()][: len(before)] == before
    )
    assert len(mvstore.open(tmp_path / "ix", version=before[0])) == 10  # time travel still works
    rep = idx.optimize(cleanup=True, older_than=timedelta(0))
    assert rep["cleanup"]["old_versions"] >= len(before) and [v["version"] for v in idx.versions()] == [
        idx.version
    ]
    assert len(idx) == 40
    with pytest.raises(InvalidDtypeError, match=r"timedelta\(0\) keeps only the current version"):
        idx.optimize(cleanup=True, older_than=None)
    with pytest.raises(InvalidArgumentError, match="negative"):
        idx.optimize(cleanup=True, older_than=timedelta(days=-1))


# --------------------------------------------------------------------------------------------- CLI
def mvstore_cli(*args, check_rc=0):
    e = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", PYTHONPATH=str(REPO))
    p = subprocess.run(
        [sys.executable, "-m", "mvstore.cli", *map(str, args)],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=e,
        timeout=600,
    )
    assert p.returncode == check_rc, f"rc={p.returncode}\nstdout:\n{p.stdout}\nstderr:\n{p.stderr}"
    return p


def write_beir(root, texts):
    root.mkdir()
    with open(root / "corpus.jsonl", "w") as f:
        for i, t in enumerate(texts):
            f.write(json.dumps({"_id": f"d{i}", "title": "", "text": t}) + "\n")
    with open(root / "queries.jsonl", "w") as f:
        f.write(json.dumps({"_id": "q1", "text": "what causes tides"}) + "\n")
    (root / "qrels").mkdir()
    (root / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td0\t1\n")
    return root


def test_cli_colbert_encoder_recorded_and_used(colbert_dir, tmp_path):
    beir = write_beir(tmp_path / "beir", PASSAGES)
    ix = tmp_path / "ix"
    mvstore_cli(
        "-q",
        "build",
        ix,
        "--input",
        beir / "corpus.jsonl",
        "--id-column",
        "_id",
        "--spec",
        "fp16",
        "--encoder",
        f"colbert:{colbert_dir}",
    )
    assert mvstore.open(ix).options["encoder"]["path"] == str(colbert_dir)
    info = json.loads(mvstore_cli("info", ix, "--json").stdout)
    assert info["encoder"]["kind"] == "colbert" and info["dim"] == 128 and "text" in info["columns"]
    rows = [
        json.loads(r)
        for r in mvstore_cli("search", ix, "moon and tides", "-k", "1", "--json").stdout.splitlines()
    ]
    assert rows[0]["id"] == "d0" and rows[0]["text"] == PASSAGES[0]
    ev = json.loads(mvstore_cli("-q", "eval", beir, "--index", ix, "--json").stdout)
    assert ev["ndcg10"] == 1.0 and "warning" not in ev
    # the index was built from other texts than the corpus eval scores: said on stderr and in the JSON row
    other = write_beir(tmp_path / "other", [PASSAGES[0] + " Extra words."] + PASSAGES[1:])
    p = mvstore_cli("-q", "eval", other, "--index", ix, "--json")
    assert (
        "warning" in json.loads(p.stdout)
        and "mvstore: warning: 1 of 4 documents have other texts" in p.stderr
    )
    # an explicit encoder of another dim is refused in CLI words
    err = mvstore_cli("search", ix, "moon", "--encoder", "hf", check_rc=2).stderr
    assert "384-d" in err and "128-d" in err


def test_cli_old_and_encoderless_indexes(minilm, tmp_path):
    vecs = minilm.encode_documents(PASSAGES)
    np.savez(tmp_path / "v.npz", vectors=vecs.values, offsets=vecs.offsets, ids=np.arange(4))
    mvstore_cli("-q", "build", tmp_path / "ix", "--input", tmp_path / "v.npz", "--spec", "fp16")
    err = mvstore_cli("search", tmp_path / "ix", "moon", check_rc=2).stderr
    assert "records no encoder" in err and "--encoder" in err
    hit = json.loads(
        mvstore_cli(
            "search", tmp_path / "ix", "moon", "--encoder", "hf", "--json", "-k", "1"
        ).stdout.splitlines()[0]
    )
    assert hit["id"] == 0
    # an index an older CLI built: its encoder settings in mvstore-cli.json
    (tmp_path / "ix" / "mvstore-cli.json").write_text(
        json.dumps({"encoder": {"model": None, "query_max_length": 64, "doc_max_length": 256}})
    )
    hit = json.loads(
        mvstore_cli("search", tmp_path / "ix", "moon", "--json", "-k", "1").stdout.splitlines()[0]
    )
    assert hit["id"] == 0
    assert json.loads(mvstore_cli("info", tmp_path / "ix", "--json").stdout)["encoder"]["kind"] == "hf"
    # CLI words: the existing index names the CLI flag, search knobs and versions their flags
    err = mvstore_cli("build", tmp_path / "ix", "--input", tmp_path / "v.npz", check_rc=2).stderr
    assert "--overwrite" in err and "exist_ok" not in err
    q = minilm.encode_queries(["moon"])
    np.savez(tmp_path / "q.npz", vectors=q.values, offsets=q.offsets)
    err = mvstore_cli(
        "search", tmp_path / "ix", "--query-file", tmp_path / "q.npz", "--nprobe", "0", check_rc=2
    ).stderr
    assert "--nprobe 0 must be a positive integer" in err and "SearchParams" not in err
    err = mvstore_cli(
        "search", tmp_path / "ix", "--query-file", tmp_path / "q.npz", "--version", "9", check_rc=2
    ).stderr
    assert "--version 9 does not exist; the index has versions [1]" in err and "index.versions()" not in err
    (tmp_path / "plain").mkdir()
    err = mvstore_cli("info", tmp_path / "plain", check_rc=2).stderr
    assert "is not an mvstore index" in err and "mvstore build" in err and "mvstore.store.create" not in err


def test_cli_report_reads_tune_output(tmp_path):
    pytest.importorskip("matplotlib")
    rows = [
        {"spec": "fp16", "bytes_per_token": 8.0, "fidelity": 1.0, "pareto": True},
        {"spec": "pca8,sq8", "bytes_per_token": 2.0, "fidelity": 0.9, "pareto": True},
    ]
    (tmp_path / "tune.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    p = mvstore_cli("report", tmp_path / "tune.jsonl", "-o", tmp_path / "f.png", "--json")
    assert sorted(json.loads(r)["spec"] for r in p.stdout.splitlines()) == ["fp16", "pca8,sq8"]
    assert (tmp_path / "f.png").stat().st_size > 0
