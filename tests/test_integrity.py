"""Integrity: row checksums, version records, verify(), the verify CLI; too-small codec training samples."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from datetime import timedelta

import lance
import numpy as np
import pyarrow as pa
import pytest

import mvstore
import mvstore.store as ms
from mvstore import cli
from mvstore.exceptions import IndexCorruptedError, InvalidVectorsError
from mvstore.search.params import SearchParams
from mvstore.spec import build_pipeline
from mvstore.store import _integrity
from mvstore.testing import token_docs

DIM = 32
EXACT = SearchParams(candidates="exhaustive")


def make_docs(n, seed=0, lo=20, hi=40):
    return token_docs(n, DIM, seed=seed, lo=lo, hi=hi, n_centers=0)


def rows(t: pa.Table):
    return list(
        zip(t["query"].to_pylist(), t["id"].to_pylist(), np.round(np.asarray(t["score"]), 5).tolist())
    )


@pytest.fixture
def uri(tmp_path):
    return str(tmp_path / "ix")


@pytest.fixture
def built(uri):
    docs = make_docs(120)
    idx = ms.create(uri, spec="sq8", dim=DIM, n_centroids=16)
    idx.add(np.arange(100), docs[:100])
    idx.add(np.arange(100, 120), docs[100:])
    idx.delete([3, 4, 5])
    return idx, docs


def data_files(uri, table="docs.lance"):
    d = os.path.join(uri, table, "data")
    return sorted((os.path.join(d, f) for f in os.listdir(d)), key=os.path.getmtime)


# ---------------------------------------------------------------------------------- item 7 regressions
def test_flipped_code_bytes_fail_search_and_verify_instead_of_changing_results(built, uri):
    idx, docs = built
    doc = 50
    codes = (
        idx.snapshot().codes[idx.snapshot().offsets[doc - 3] : idx.snapshot().offsets[doc - 3 + 1]].tobytes()
    )
    assert idx.snapshot().ids[doc - 3] == doc
    path = data_files(uri)[0]
    blob = bytearray(open(path, "rb").read())
    at = blob.find(codes)
    assert at > 0, "sq8 codes are stored verbatim in the data file"
    blob[at : at + 64] = bytes(b ^ 0xFF for b in blob[at : at + 64])
    open(path, "wb").write(bytes(blob))
    reopened = ms.open(uri)  # open stays cheap: sizes match, no data file is read
    with pytest.raises(IndexCorruptedError, match="1 row\\(s\\) do not match their checksum"):
        reopened.search(docs[doc], k=10)
    with pytest.raises(IndexCorruptedError, match="data/\\S+ does not match its sha256"):
        reopened.verify()


def test_deleting_the_latest_manifest_does_not_reopen_the_previous_version(built, uri):
    idx, docs = built
    assert idx.version == 3
    os.remove(os.path.join(uri, "docs.lance", _integrity.manifest_path(uri, "docs.lance", 3)))
    assert (
        lance.dataset(os.path.join(uri, "docs.lance")).version == 2
    )  # Lance alone reopens version 2 (ids 3-5 back)
    with pytest.raises(IndexCorruptedError, match="ends at version 2 but version 3 was committed"):
        ms.open(uri)
    for write in (
        lambda: idx.delete([7]),
        lambda: idx.add([500], [docs[0]]),
        lambda: idx.upsert([8], [docs[0]]),
    ):
        with pytest.raises(IndexCorruptedError, match="ends at version 2"):  # no write on top of the rollback
            write()
    assert _integrity.latest_on_disk(uri, "docs.lance") == 2


def test_deleting_the_docs_table_is_not_an_empty_index(built, uri):
    shutil.rmtree(os.path.join(uri, "docs.lance"))
    with pytest.raises(
        IndexCorruptedError, match="docs.lance is missing entirely but version 3 was committed"
    ):
        ms.open(uri)


def test_changed_rows_of_a_version_are_detected_at_load(built, uri):
    idx, docs = built
    path = os.path.join(uri, _integrity._record_path("docs.lance", 3))
    rec = json.load(open(path))
    rec.pop("checksum")
    rec["row_sum"] = format(
        int(rec["row_sum"], 16) ^ 1, "016x"
    )  # the rows Lance now reads differ from those committed
    _integrity._write_json(_integrity.at(uri), _integrity._record_path("docs.lance", 3), rec)
    with pytest.raises(IndexCorruptedError, match="its record says 117"):
        ms.open(uri).search(docs[0], k=3)


def test_edited_manifest_json_is_detected(built, uri):
    path = os.path.join(uri, "mvstore.json")
    m = json.load(open(path))
    m["options"]["train_size"] = 10
    json.dump(m, open(path, "w"))
    with pytest.raises(IndexCorruptedError, match="does not match its checksum"):
        ms.open(uri)


def test_codec_state_rewritten_with_other_values_is_detected(built, uri):
    curi = os.path.join(uri, "codec.lance")
    tbl = lance.dataset(curi).to_table()
    names = tbl.column("name").to_pylist()
    data = tbl.column("data").to_pylist()
    i = next(k for k, n in enumerate(names) if n.startswith("codec."))
    arr = bytearray(data[i])
    arr[0] ^= 0x01
    data[i] = bytes(arr)
    lance.write_dataset(tbl.set_column(4, "data", pa.array(data, pa.large_binary())), curi, mode="overwrite")
    with pytest.raises(IndexCorruptedError, match="codec state 1 does not match its checksum"):
        ms.open(uri)


# ----------------------------------------------------------------------------------- legitimate states
def test_writer_killed_between_commit_and_record_leaves_a_working_index(built, uri):
    idx, docs = built
    before = rows(idx.search(docs[:4], k=7, params=EXACT))
    code = (
        "import os, signal, numpy as np, mvstore.store as ms\n"
        "from mvstore.store import _integrity\n"
        "_integrity.record = lambda root: os.kill(os.getpid(), signal.SIGKILL)\n"
        f"ms.open({uri!r}).delete([10, 11])\n"
    )
    repo = os.path.dirname(os.path.dirname(os.path.abspath(mvstore.__file__)))  # the mvstore under test
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([repo, os.environ.get("PYTHONPATH", "")])}
    p = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True)
    assert p.returncode == -9, p.stderr.decode()[-2000:]
    idx = ms.open(uri)  # version 4 is committed but not recorded: accepted, its rows are still checked
    assert idx.version == 4 and 10 not in idx.search(docs[10], k=3)["id"].to_pylist()
    after = rows(idx.search(docs[:4], k=5, params=EXACT))
    kept = [r for r in before if r[1] not in (10, 11)]
    assert all([r for r in kept if r[0] == q][:5] == [r for r in after if r[0] == q] for q in range(4))
    rep = idx.verify()
    assert any("version 4 is not recorded" in n for n in rep["notes"])
    idx.delete([12])  # the next write records what the killed one could not
    assert idx.verify()["notes"] == []
    assert sorted(_integrity.recorded_versions(uri, "docs.lance")) == [1, 2, 3, 4, 5]


def test_every_write_path_keeps_verify_clean(tmp_path):
    uri = str(tmp_path / "ix")
    docs = make_docs(90, seed=2)
    idx = ms.create(uri, spec="pca16,sq4", dim=DIM, n_centroids=8, keep_source=True)
    idx.add(np.arange(60), docs[:60], metadata={"lang": ["en", "fr"] * 30})
    idx.add_batches([(np.arange(60, 70), docs[60:70]), (np.arange(70, 80), docs[70:80])])
    idx.upsert(np.arange(75, 90), docs[75:90])
    idx.delete([0, 1, 2])
    assert idx.verify()["files_checked"] > 0
    rep = idx.optimize(retrain=True, compact=True, cleanup=True, older_than=timedelta(0))
    assert rep["retrained"]
    assert idx.verify()["notes"] == []
    assert _integrity.recorded_versions(uri, "docs.lance") == [
        idx.version
    ]  # cleaned versions' records dropped
    exact = rows(idx.search(docs[80:84], k=3, params=EXACT))
    assert [r[1] for r in exact if r[2] == max(x[2] for x in exact if x[0] == r[0])] == [80, 81, 82, 83]


def test_time_travel_checks_the_version_it_opens(built, uri):
    idx, docs = built
    rec = _integrity.read_record(uri, "docs.lance", 1)
    victim = next(r for r in rec["files"] if r.startswith("data/"))
    with open(os.path.join(uri, "docs.lance", victim), "r+b") as f:
        f.truncate(100)
    with pytest.raises(IndexCorruptedError, match="docs.lance version 1: data/\\S+ has 100 bytes"):
        ms.open(uri, version=1)


# --------------------------------------------------------------------------------------------------- CLI
def test_verify_cli_exit_codes(built, uri, capsys):
    assert cli.main(["verify", uri]) == 0
    assert capsys.readouterr().out.startswith("ok: ")
    path = data_files(uri)[-1]
    blob = bytearray(open(path, "rb").read())
    blob[10] ^= 0xFF
    open(path, "wb").write(bytes(blob))
    assert cli.main(["verify", uri, "--json"]) == 1
    out = json.loads(capsys.readouterr().out)
    assert out["ok"] is False and "does not match its sha256" in out["problems"]


# ------------------------------------------------------------------------------ item 9: tiny samples
@pytest.mark.parametrize("spec", ["bin", "sq8", "sq4", "pca16,sq8"])
def test_a_one_token_first_add_is_refused_and_commits_nothing(uri, spec):
    idx = ms.create(uri, spec=spec, dim=DIM)
    one = np.random.default_rng(0).normal(size=(1, DIM)).astype(np.float32)
    with pytest.raises(
        InvalidVectorsError, match=r"needs at least (32|16) sample vectors, got 1: fit on more"
    ):
        idx.add([0], [one])
    assert idx.version == 0 and len(ms.open(uri)) == 0
    idx.add(np.arange(20), make_docs(20))  # enough vectors: trains and commits
    assert len(idx) == 20


def test_pca_needs_as_many_vectors_as_components():
    x = np.random.default_rng(0).normal(size=(15, DIM)).astype(np.float32)
    with pytest.raises(
        InvalidVectorsError, match="pca16 learns its state from the sample and needs at least 16"
    ):
        build_pipeline("pca16", DIM).fit(x)
    build_pipeline("pca16", DIM).fit(np.concatenate([x, x[:1] + 1]))


def test_drift_is_measured_when_the_codec_fits_its_sample_exactly(uri):
    # sq8 fitted on a sample with one value per dimension stores it exactly: training error 0. Data unlike
    # the sample must still show drift (it was None before, so retrain="auto" never fired)
    rng = np.random.default_rng(0)
    sample = np.repeat(rng.normal(size=(1, DIM)).astype(np.float32), 64, axis=0)
    idx = ms.create(uri, spec="sq8", dim=DIM, n_centroids=1)
    idx.train(sample)
    assert idx.add(np.arange(30), make_docs(30)) == 1
    st = idx.stats()
    assert st["train_error"] < 1e-9 and st["drift"] is not None and st["drift"] > 1e3
    with pytest.warns(RuntimeWarning, match="cannot retrain"):
        assert idx.optimize(retrain="auto")["retrain_skipped"]


def test_damaged_old_manifest_is_an_index_error_in_versions_and_time_travel(built, uri):
    idx, docs = built
    path = os.path.join(uri, "docs.lance", _integrity.manifest_path(uri, "docs.lance", 1))
    blob = bytearray(open(path, "rb").read())
    mid = len(blob) // 2
    blob[mid : mid + 64] = bytes(b ^ 0xFF for b in blob[mid : mid + 64])
    open(path, "wb").write(bytes(blob))
    reopened = ms.open(uri)  # the latest version does not read version 1's manifest
    assert rows(reopened.search(docs[:2], k=3)) == rows(idx.search(docs[:2], k=3))
    for call in (reopened.versions, lambda: ms.open(uri, version=1), reopened.verify):
        with pytest.raises(IndexCorruptedError):
            call()


def test_a_write_s_record_reads_only_the_fragments_it_touched(tmp_path, monkeypatch):
    """Each version record's row count and checksum sum equal the whole version's, while a write reads the
    checksums of the fragments it added or deleted from, not of the whole table; a record written before
    per-fragment shares existed is read in full once."""
    uri = str(tmp_path / "ix")
    idx = ms.create(uri, dim=DIM, auto_optimize=False)
    for a in range(0, 200, 40):
        idx.add(list(range(a, a + 40)), make_docs(40, seed=a))
    reads = []
    real = lance.fragment.LanceFragment.to_table

    def counting(self, *a, **kw):
        if kw.get("columns") == [_integrity.ROW_CHECKSUM]:
            reads.append(self.fragment_id)
        return real(self, *a, **kw)

    monkeypatch.setattr(lance.fragment.LanceFragment, "to_table", counting)
    idx.add([500], make_docs(1, seed=9))
    assert len(reads) == 1  # the new fragment only
    reads.clear()
    idx.delete([45])  # a row of the second fragment
    assert reads == [1]
    reads.clear()
    last = _integrity.recorded_versions(uri, "docs.lance")[-1]
    rec = _integrity.read_record(uri, "docs.lance", last)
    del rec["fragments"]
    _integrity._write_json(_integrity.at(uri), _integrity._record_path("docs.lance", last), rec)
    idx.upsert([7], make_docs(1, seed=10))
    assert len(reads) >= 6  # the legacy record: every fragment read once
    ds = lance.dataset(os.path.join(uri, "docs.lance"))
    for v in _integrity.recorded_versions(uri, "docs.lance"):
        rec = _integrity.read_record(uri, "docs.lance", v)
        sums = ds.checkout_version(v).to_table(columns=[_integrity.ROW_CHECKSUM]).column(0).to_numpy()
        assert (rec["rows"], rec["row_sum"]) == (len(sums), _integrity._row_sum(sums.astype(np.uint64)))
    assert mvstore.open(uri).verify()["ok"]
