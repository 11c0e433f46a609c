"""Format 3 (the index's own columns named ``_mv_*``) and the in-place upgrade of a format-2 index.

``tests/data/v2_index`` was built by the format-2 mvstore (tests/data/make_v2_index.py), which also saved what
its search returned (``v2_expected.json``)."""

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import lance
import numpy as np
import pytest

import mvstore
import mvstore.store as ms
from mvstore.exceptions import (
    IndexCorruptedError,
    InvalidArgumentError,
    InvalidMetadataError,
    UpgradeRequiredError,
)
from mvstore.store import _integrity
from mvstore.store._layout import DOCS, INTERNAL_COLUMNS, V2_NAMES
from tests.data.make_v2_index import QUERIES, fixture_vectors

DATA = Path(__file__).resolve().parent / "data"
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def v2(tmp_path):
    root = tmp_path / "v2"
    shutil.copytree(DATA / "v2_index", root)
    return root


def _docs(n=30, dim=16, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.normal(size=(int(k), dim)).astype(np.float32) for k in rng.integers(4, 16, n)]


# ------------------------------------------------------------------------------- metadata names
def test_metadata_may_use_the_index_column_names(tmp_path):
    """LangChain's `source`, a `text` column and every format-2 internal name are metadata like any other."""
    docs = _docs()
    names = [
        "source",
        "text",
        "n_tokens",
        "n_vectors",
        "codes",
        "terms",
        "recon_err",
        "row_checksum",
        "doc_id",
    ]
    meta = [{n: f"{n}{i % 3}" for n in names} for i in range(30)]
    idx = ms.create(tmp_path / "ix", spec="sq8", dim=16, keep_source=True)
    idx.add(np.arange(30), docs, metadata=meta)
    hits = idx.search(docs[4], k=3, where="source = 'source1' AND n_tokens = 'n_tokens1'", columns=names)
    assert hits["id"].to_pylist()[0] == 4 and set(hits["source"].to_pylist()) == {"source1"}
    assert hits.select(names).to_pylist()[0] == meta[4]
    # upsert without metadata keeps them, retraining re-encodes from _mv_source and keeps them too
    idx.upsert([4], [docs[4]])
    idx.optimize(retrain=True)
    again = idx.search(docs[4], k=1, columns=names)
    assert again["id"].to_pylist() == [4] and again.select(names).to_pylist()[0] == meta[4]
    assert idx.verify()["ok"]
    schema = lance.dataset(str(tmp_path / "ix" / DOCS)).schema.names
    assert schema[: 1 + len(names)] == ["id", *names] and set(INTERNAL_COLUMNS) <= set(schema)


@pytest.mark.parametrize("name", ["query", "rank", "id", "score", "_mv_codes", "_rowid", "_x"])
def test_reserved_metadata_names_say_what_to_do(tmp_path, name):
    idx = ms.create(tmp_path / "ix", spec="fp16", dim=16)
    with pytest.raises(InvalidMetadataError, match=f"'{name}' is reserved.*rename it, e.g. to 'doc_"):
        idx.add([1], _docs(1), metadata=[{name: 1}])
    assert idx.version == 0


def test_internal_columns_are_not_filterable(tmp_path):
    idx = ms.create(tmp_path / "ix", spec="fp16", dim=16)
    idx.add(np.arange(30), _docs(), metadata={"lang": ["en"] * 30})
    with pytest.raises(
        mvstore.FilterError, match="unknown column '_mv_n_tokens'; available columns: id, lang"
    ):
        idx.search(_docs(1)[0], where="_mv_n_tokens > 3")


# -------------------------------------------------------------------------------------- upgrade
def test_a_format2_index_asks_for_the_upgrade(v2):
    with pytest.raises(
        UpgradeRequiredError, match=f"format version 2.*`mvstore upgrade {v2}`.*mvstore.upgrade"
    ):
        ms.open(v2)
    assert issubclass(
        UpgradeRequiredError, IndexCorruptedError
    )  # `except IndexCorruptedError` still catches it


def test_upgrade_keeps_every_search_result(v2):
    expected = json.loads((DATA / "v2_expected.json").read_text())
    before = {p: p.stat().st_size for p in (v2 / DOCS / "data").iterdir()}
    rep = mvstore.upgrade(v2)
    assert rep == {
        "format_version_before": 2,
        "format_version": 3,
        "renamed": [V2_NAMES[c] for c in INTERNAL_COLUMNS],
        "version": expected["version"] + 1,
    }
    assert {p: p.stat().st_size for p in (v2 / DOCS / "data").iterdir()} == before  # no data file rewritten
    idx = ms.open(v2)
    assert len(idx) == expected["docs"] and idx.verify()["ok"]
    _, queries = fixture_vectors()
    for (where, columns), want in zip(QUERIES, expected["searches"]):
        got = idx.search(queries, k=5, where=where, columns=columns).to_pylist()
        assert got == want["result"]
    # the upgraded index takes writes, and metadata that format 2 refused
    docs, _ = fixture_vectors()
    idx.upsert(["d1"], [docs[1]], metadata=[{"lang": "en", "year": 2011}])
    assert idx.search(queries[0], k=1)["id"].to_pylist() == ["d1"]
    assert mvstore.upgrade(v2)["renamed"] == []  # a second upgrade has nothing to do
    assert ms.open(v2).verify()["ok"]


def test_versions_before_the_upgrade_are_refused_by_name(v2):
    mvstore.upgrade(v2)
    with pytest.raises(InvalidArgumentError, match="version 3 was written in format 2.*index.versions()"):
        ms.open(v2, version=3)
    assert ms.open(v2, version=5).version == 5


def test_an_interrupted_upgrade_opens_as_format2_and_finishes(v2, monkeypatch):
    """Killed after the column rename, before the manifest: the index still asks for the upgrade (never a raw
    Lance error), and the next upgrade finishes without renaming again."""
    import mvstore.store as store_mod

    def killed(*a, **k):
        raise KeyboardInterrupt("killed before the manifest was rewritten")

    monkeypatch.setattr(store_mod, "rewrite_manifest", killed)
    with pytest.raises(KeyboardInterrupt):
        mvstore.upgrade(v2)
    monkeypatch.undo()
    assert "_mv_codes" in lance.dataset(str(v2 / DOCS)).schema.names
    with pytest.raises(UpgradeRequiredError, match="mvstore upgrade"):
        ms.open(v2)
    rep = mvstore.upgrade(v2)
    assert rep["format_version_before"] == 2 and rep["renamed"] == []
    assert ms.open(v2).verify()["ok"]


def test_upgrade_killed_at_any_point_in_a_subprocess(v2, tmp_path):
    """SIGKILL while the upgrade runs (about 30 ms; killed 0 to 40 ms in, at whatever step it reached): the
    index opens as format 3 or asks for the upgrade, and upgrading again always gives the full index."""
    code = "import sys, mvstore; print('ready', flush=True); mvstore.upgrade(sys.argv[1])"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    for delay in (0.0, 0.005, 0.01, 0.02, 0.04):
        root = tmp_path / f"k{delay}"
        shutil.copytree(v2, root)
        p = subprocess.Popen(
            [sys.executable, "-c", code, str(root)], env=env, stdout=subprocess.PIPE, text=True
        )
        assert p.stdout.readline() == "ready\n"
        time.sleep(delay)
        p.kill()
        p.wait()
        p.stdout.close()
        try:
            ms.open(root)
        except UpgradeRequiredError:
            pass  # killed before the manifest was rewritten: the index asks for the upgrade
        mvstore.upgrade(root)
        idx = ms.open(root)
        assert len(idx) == 40 and idx.verify()["ok"]


def test_upgrade_records_integrity_and_refuses_damage(v2):
    m = json.loads((v2 / "mvstore.json").read_text())
    mvstore.upgrade(v2)
    head = _integrity.read_head(str(v2))
    assert head["docs.lance"] == 5 and _integrity.read_record(str(v2), DOCS, 5)["rows"] == 40
    assert json.loads((v2 / "mvstore.json").read_text()) == {
        **m,
        "format_version": 3,
        "checksum": mvstore.open(v2).manifest["checksum"],
    }


def test_upgrade_of_a_damaged_format2_index_fails_before_renaming(v2):
    # roll the docs table back one version: the integrity head says version 4 was committed
    manifests = sorted((v2 / DOCS / "_versions").glob("*.manifest"))
    manifests[0].unlink()  # v2 naming: the smallest name is the newest version
    with pytest.raises(IndexCorruptedError, match="rolled back"):
        mvstore.upgrade(v2)
    assert "codes" in lance.dataset(str(v2 / DOCS)).schema.names  # nothing renamed


def test_upgrade_cli(v2):
    p = subprocess.run(
        [sys.executable, "-m", "mvstore.cli", "search", str(v2), "--query-file", "x.npz"],
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    assert p.returncode == 2 and f"mvstore upgrade {v2}" in p.stderr
    p = subprocess.run(
        [sys.executable, "-m", "mvstore.cli", "upgrade", str(v2)], capture_output=True, text=True, cwd=REPO
    )
    assert p.returncode == 0 and "upgraded from format version 2 to 3" in p.stdout, p.stderr
    p = subprocess.run(
        [sys.executable, "-m", "mvstore.cli", "upgrade", str(v2)], capture_output=True, text=True, cwd=REPO
    )
    assert p.returncode == 0 and "nothing to do" in p.stdout
