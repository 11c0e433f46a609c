"""A live index: a write's search state derived from the previous version's (appended fragments read, deleted
rows masked), identical to a full load; the automatic compaction policy (``create(..., auto_optimize=)``)."""

from __future__ import annotations

import fcntl
import os
import subprocess
import sys
import textwrap
from datetime import timedelta

import lance
import lancedb
import numpy as np
import pyarrow as pa
import pytest

import mvstore.store as ms
from mvstore.exceptions import IndexCorruptedError, InvalidArgumentError, InvalidDtypeError
from mvstore.search import postings as postings_mod
from mvstore.search.postings import append_postings, build_postings
from mvstore.search.snapshot import AppendBuffer

DIM = 16
QUERY_SEED = 99


def docs_of(rng, n, dim=DIM):
    centers = np.random.default_rng(7).normal(size=(12, dim))
    out = []
    for m in rng.integers(3, 40, n):
        x = centers[rng.integers(0, 12, m)] + 0.6 * rng.normal(size=(m, dim))
        out.append((x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32))
    return out


def queries(n=6):
    return docs_of(np.random.default_rng(QUERY_SEED), n)


def results(idx, qs):
    """Every query's top-10 as (id, score) lists, with and without a filter and a metadata column."""
    plain = idx.search(qs, k=10)
    filt = idx.search(qs, k=10, where="lang = 'en'", columns=["lang"])
    return plain.to_pydict(), filt.to_pydict()


def random_writes(idx, rng, oracle, next_id, steps, make_id=int):
    """``steps`` single-document adds, upserts and deletes; ``oracle`` (id -> lang) follows them."""
    for _ in range(steps):
        op = rng.choice(["add", "add", "upsert", "delete"]) if oracle else "add"
        if op == "add":
            i = make_id(next_id)
            next_id += 1
            lang = "en" if rng.random() < 0.5 else "fr"
            idx.add([i], docs_of(rng, 1), metadata=[{"lang": lang}])
            oracle[i] = lang
        else:
            i = list(oracle)[int(rng.integers(len(oracle)))]
            if op == "upsert":
                idx.upsert([i], docs_of(rng, 1))
            else:
                idx.delete([i])
                del oracle[i]
    return next_id


def check_against_full_load(idx, uri, oracle, qs):
    """The incrementally derived state ranks exactly like a fresh full load of the same version, returns only
    ids the oracle holds, and every oracle id is in the index."""
    fresh = ms.open(uri, version=idx.version)
    assert results(idx, qs) == results(fresh, qs)
    assert sorted(idx.snapshot().ids.tolist(), key=str) == sorted(oracle, key=str)
    got = idx.search(qs, k=len(oracle) + 5, params={"candidates": "exhaustive"})["id"].to_pylist()
    assert set(got) == set(oracle)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_incremental_state_ranks_like_a_full_load_after_random_writes(tmp_path, seed):
    rng = np.random.default_rng(seed)
    uri = str(tmp_path / "ix")
    idx = ms.create(
        uri, dim=DIM, n_centroids=16, auto_optimize=seed != 2, compact_fragments=4, fragment_rows=8
    )
    n0 = 120
    idx.add(np.arange(n0), docs_of(rng, n0), metadata=[{"lang": "en" if i % 2 else "fr"} for i in range(n0)])
    oracle = {i: ("en" if i % 2 else "fr") for i in range(n0)}
    qs = queries()
    idx.search(qs, k=10)
    kinds = []
    next_id = n0
    for _ in range(12):
        next_id = random_writes(idx, rng, oracle, next_id, int(rng.integers(1, 4)))
        check_against_full_load(idx, uri, oracle, qs)
        kinds.append(idx._view.load_kind)
    # deletes and appends never load the table in full; only a compaction in the middle of it may
    assert kinds.count("incremental") >= len(kinds) - 3, kinds
    if seed == 2:
        assert kinds == ["incremental"] * len(kinds)


def test_string_ids_and_where_masks_follow_appends_and_deletes(tmp_path):
    rng = np.random.default_rng(5)
    uri = str(tmp_path / "ix")
    idx = ms.create(uri, dim=DIM, n_centroids=8, auto_optimize=False)
    idx.add([f"d{i}" for i in range(40)], docs_of(rng, 40), metadata=[{"lang": "en"} for _ in range(40)])
    qs = queries(3)
    idx.search(qs, k=5)
    oracle = {f"d{i}": "en" for i in range(40)}
    random_writes(idx, rng, oracle, 40, 15, make_id=lambda i: f"d{i}")
    check_against_full_load(idx, uri, oracle, qs)
    assert idx._view.load_kind == "incremental"
    assert idx._view.snapshot().live is not None  # deleted rows are masked, not dropped


def test_a_reader_refresh_reads_only_what_another_process_wrote(tmp_path):
    rng = np.random.default_rng(3)
    uri = str(tmp_path / "ix")
    idx = ms.create(uri, dim=DIM, n_centroids=16, compact_fragments=3, fragment_rows=4)
    idx.add(np.arange(80), docs_of(rng, 80), metadata=[{"lang": "en" if i % 2 else "fr"} for i in range(80)])
    reader = ms.open(uri)
    qs = queries()
    reader.search(qs, k=10)
    writer = textwrap.dedent(
        f"""
        import sys, numpy as np
        sys.path.insert(0, {os.path.dirname(__file__)!r})
        import mvstore.store as ms
        from test_live import docs_of
        rng = np.random.default_rng(int(sys.argv[1]))
        idx = ms.open({uri!r})
        up, *gone = rng.choice(sorted(idx.snapshot().ids.tolist()), 3, replace=False).tolist()
        idx.upsert([up], docs_of(rng, 1))
        for i in gone:
            idx.delete([i])
        start = int(sys.argv[2])
        for j in range(start, start + 4):
            idx.add([j], docs_of(rng, 1), metadata=[{{"lang": "en"}}])
        """
    )
    env = dict(
        os.environ, PYTHONPATH=os.pathsep.join(filter(None, [os.getcwd(), os.environ.get("PYTHONPATH")]))
    )
    kinds = []
    for rnd in range(3):
        subprocess.run(
            [sys.executable, "-c", writer, str(rnd), str(1000 + 10 * rnd)], check=True, env=env, timeout=300
        )
        reader.refresh()
        fresh = ms.open(uri)
        assert results(reader, qs) == results(fresh, qs)
        assert sorted(reader.snapshot().ids.tolist()) == sorted(fresh.snapshot().ids.tolist())
        kinds.append(reader._view.load_kind)
    assert "incremental" in kinds, kinds


def test_appended_rows_are_checked_like_a_full_load(tmp_path):
    """The row checksums cover rows an incremental refresh reads, and a duplicate id written around mvstore is
    caught there too."""
    rng = np.random.default_rng(1)
    uri = str(tmp_path / "ix")
    idx = ms.create(uri, spec="sq8", dim=DIM, n_centroids=8, auto_optimize=False)
    idx.add(np.arange(30), docs_of(rng, 30))
    reader = ms.open(uri)
    reader.search(queries(1), k=3)
    idx.add([100], docs_of(rng, 1))
    frag = lance.dataset(os.path.join(uri, "docs.lance")).get_fragments()[-1]
    path = os.path.join(uri, "docs.lance", "data", frag.data_files()[0].path)
    codes = idx.snapshot().codes[idx.snapshot().offsets[-2] : idx.snapshot().offsets[-1]].tobytes()
    blob = bytearray(open(path, "rb").read())
    at = blob.find(codes)
    assert at > 0
    blob[at : at + 8] = bytes(b ^ 0xFF for b in blob[at : at + 8])
    open(path, "wb").write(bytes(blob))
    reader.refresh()
    with pytest.raises(IndexCorruptedError, match="do not match their checksum") as err:
        reader.search(queries(1), k=3)
    assert any(e.name == "_derive" for e in err.traceback)  # caught reading only the appended fragment

    uri2 = str(tmp_path / "ix2")
    idx2 = ms.create(uri2, spec="sq8", dim=DIM, n_centroids=8, auto_optimize=False)
    idx2.add(np.arange(30), docs_of(rng, 30))
    idx2.search(queries(1), k=3)
    tbl = lancedb.connect(uri2).open_table("docs")
    tbl.add(tbl.to_arrow().slice(4, 1))  # id 4 again, written around mvstore (no id check)
    idx2.refresh()
    with pytest.raises(IndexCorruptedError, match="id 4 is stored more than once") as err:
        idx2.search(queries(1), k=3)
    assert any(e.name == "_derive" for e in err.traceback)


def test_lancedb_delete_and_time_travel_back(tmp_path):
    rng = np.random.default_rng(2)
    uri = str(tmp_path / "ix")
    idx = ms.create(uri, dim=DIM, n_centroids=8, auto_optimize=False)
    idx.add(np.arange(50), docs_of(rng, 50), metadata=[{"lang": "en" if i % 2 else "fr"} for i in range(50)])
    qs = queries()
    before = results(idx, qs)
    v1 = idx.version
    lancedb.connect(uri).open_table("docs").delete("id < 10")
    idx.refresh()
    assert results(idx, qs) == results(ms.open(uri), qs) and idx._view.load_kind == "incremental"
    assert not set(idx.search(qs, k=50)["id"].to_pylist()) & set(range(10))
    idx.add([100, 101], docs_of(rng, 2), metadata=[{"lang": "en"}, {"lang": "fr"}])
    after_delete = idx.version - 1
    want = results(ms.open(uri, version=after_delete), qs)
    idx.checkout(after_delete)  # back before the add: its rows are masked
    assert results(idx, qs) == want and idx._view.load_kind == "incremental"
    idx.checkout(v1)  # deleted rows come back: a full load
    assert results(idx, qs) == before and idx._view.load_kind == "full"


def test_auto_optimize_bounds_fragments_and_keeps_versions_younger_than_retention(tmp_path):
    rng = np.random.default_rng(4)
    uri = str(tmp_path / "ix")
    idx = ms.create(uri, dim=DIM, n_centroids=8, compact_fragments=4, fragment_rows=64)
    idx.add(np.arange(100), docs_of(rng, 100), metadata=[{"lang": "en"} for _ in range(100)])
    qs = queries(2)
    idx.search(qs, k=5)
    first = idx.version
    reports, kinds, moved = [], [], []
    for i in range(100, 130):
        idx.add([i], docs_of(rng, 1), metadata=[{"lang": "en"}])
        reports.append(idx.last_maintenance)
        idx.search(qs, k=5)
        kinds.append(idx._view.load_kind)
        moved.append(idx._view._loaded.moved)
    # compacting the tail rewrote the small fragments: their rows stay in place, with new row addresses
    assert kinds == ["incremental"] * 30 and max(moved) > 0
    assert idx._view.snapshot().n_docs == 130  # no second copy of a rewritten row
    assert results(idx, qs) == results(ms.open(uri), qs)
    ds = lance.dataset(os.path.join(uri, "docs.lance"))
    assert len(ds.get_fragments()) <= 1 + 4 + 1  # the first add, merged runs, the small ones not yet due
    done = [r for r in reports if r is not None]
    assert done and all(r["fragments_removed"] > r["fragments_added"] for r in done)
    assert idx.version == idx.latest_version  # the writer follows the compaction commit
    assert ms.open(uri, version=first).search(qs, k=5)["id"].to_pylist()  # younger than an hour: kept
    assert idx.verify()["ok"]
    for i in range(100, 130, 3):
        idx.delete([i])
    assert sorted(idx.snapshot().ids.tolist()) == sorted(set(range(130)) - set(range(100, 130, 3)))
    assert results(idx, qs) == results(ms.open(uri), qs)


def test_auto_optimize_retention_and_off(tmp_path):
    rng = np.random.default_rng(6)
    uri = str(tmp_path / "ix")
    idx = ms.create(
        uri, dim=DIM, n_centroids=8, compact_fragments=3, fragment_rows=64, retention=timedelta(0)
    )
    idx.add(np.arange(50), docs_of(rng, 50))
    for i in range(50, 60):
        idx.add([i], docs_of(rng, 1))
    versions = [v["version"] for v in idx.versions()]
    assert versions[0] > 1 and len(versions) < 11  # versions older than the retention (0 s) were removed
    assert idx.verify()["ok"]

    off = ms.create(str(tmp_path / "off"), dim=DIM, n_centroids=8, auto_optimize=False)
    off.add(np.arange(50), docs_of(rng, 50))
    for i in range(50, 60):
        off.add([i], docs_of(rng, 1))
        assert off.last_maintenance is None
    assert len(lance.dataset(os.path.join(str(tmp_path / "off"), "docs.lance")).get_fragments()) == 11
    assert [v["version"] for v in off.versions()] == list(range(1, 12))


def test_deletions_past_the_threshold_are_materialized(tmp_path):
    rng = np.random.default_rng(8)
    uri = str(tmp_path / "ix")
    idx = ms.create(uri, dim=DIM, n_centroids=8, deleted_fraction=0.2)
    idx.add(np.arange(50), docs_of(rng, 50))
    idx.delete(list(range(10)))  # 10 of 50: not above 0.2
    assert idx.last_maintenance is None
    idx.delete([10])
    assert "rows deleted" in idx.last_maintenance["reason"]
    frags = lance.dataset(os.path.join(uri, "docs.lance")).get_fragments()
    assert all(f.metadata.deletion_file is None for f in frags) and sum(f.count_rows() for f in frags) == 39


@pytest.mark.parametrize(
    "kw, err, match",
    [
        ({"auto_optimize": "yes"}, InvalidDtypeError, "auto_optimize must be True or False"),
        ({"compact_fragments": 1}, InvalidArgumentError, "compact_fragments=1 must be >= 2"),
        ({"fragment_rows": 0}, InvalidArgumentError, "fragment_rows=0 must be a positive integer"),
        ({"deleted_fraction": 1.0}, InvalidArgumentError, "deleted_fraction must be a number in \\(0, 1\\)"),
        ({"retention": 3600}, InvalidDtypeError, "retention must be a datetime.timedelta"),
        ({"retention": timedelta(seconds=-1)}, InvalidArgumentError, "must not be negative"),
    ],
)
def test_auto_optimize_arguments_are_checked(tmp_path, kw, err, match):
    with pytest.raises(err, match=match):
        ms.create(str(tmp_path / "ix"), dim=DIM, **kw)


def _same_postings(p, full):
    assert p.n_terms == full.n_terms and p.n_pairs == full.n_pairs
    for t in range(full.n_terms):
        np.testing.assert_array_equal(p.docs_of(t), full.docs_of(t))
    for f in ("doc_offsets", "doc_terms"):
        np.testing.assert_array_equal(getattr(p, f), getattr(full, f))


def test_append_postings_equals_a_full_build():
    rng = np.random.default_rng(0)
    n_terms = 13
    lens = rng.integers(0, 9, 60)
    offsets = np.concatenate([[0], np.cumsum(lens)])
    terms = rng.integers(0, n_terms, offsets[-1]).astype(np.int32)
    p = build_postings(terms[: offsets[40]], offsets[:41], n_terms)
    p = append_postings(p, terms[offsets[40] :], offsets[40:] - offsets[40])
    _same_postings(p, build_postings(terms, offsets, n_terms))


def test_appended_postings_grow_in_place_and_never_change_an_older_version(monkeypatch):
    """The term lists of a chain of appends share one array with room after each list: every version, old
    ones and a second child of one parent (two Index objects deriving from one snapshot) included, still reads
    exactly the postings a full build of its documents gives, across array growth and repacking."""
    monkeypatch.setattr(postings_mod, "REPACK_SLACK", 64)
    rng = np.random.default_rng(1)
    n_terms = 7  # few terms: lists are touched often, moved, the array grown and repacked
    lens = rng.integers(1, 6, 1500)
    offsets = np.concatenate([[0], np.cumsum(lens)])
    terms = rng.integers(0, n_terms, offsets[-1]).astype(np.int32)

    def full(n):
        return build_postings(terms[: offsets[n]], offsets[: n + 1], n_terms)

    def grow(p, a, b):
        return append_postings(p, terms[offsets[a] : offsets[b]], offsets[a : b + 1] - offsets[a])

    versions = {10: full(10)}
    n = 10
    while n < 1500:
        m = min(n + int(rng.integers(1, 4)), 1500)
        versions[m] = grow(versions[n], n, m)
        if rng.random() < 0.1:  # a sibling: another child of an older version
            old = int(rng.choice(sorted(versions)))
            if old < m - 1:
                sib = grow(versions[old], old, old + 1)
                _same_postings(sib, full(old + 1))
        n = m
    chain = [versions[n].arena for n in sorted(versions) if n > 10]
    assert any(a is not b for a, b in zip(chain, chain[1:])), "the lists were never repacked"
    for n, p in versions.items():
        _same_postings(p, full(n))
    last = versions[1500]
    assert last.arena.top <= 2 * last.n_pairs + 64 + 4 * len(lens)


def test_append_buffer_never_changes_what_an_older_snapshot_reads():
    ro = np.arange(4, dtype=np.int64)
    ro.flags.writeable = False  # Arrow memory is read-only
    b = AppendBuffer(ro)
    b1, v1 = b.append(4, np.array([10, 11]))
    b2, v2 = b1.append(6, np.array([12]))
    sib, vs = b.append(4, np.array([20]))  # a second child of the first version
    assert v1.tolist() == [0, 1, 2, 3, 10, 11] and v2.tolist() == [0, 1, 2, 3, 10, 11, 12]
    assert vs.tolist() == [0, 1, 2, 3, 20] and sib is not b
    assert b.append(6, np.zeros(0, np.int64))[1].tolist() == [0, 1, 2, 3, 10, 11]
    assert pa.array(v2).to_pylist()[-1] == 12


def test_live_benchmark_soak_holds_the_oracle(tmp_path, capsys):
    """benchmarks/live.py at a tiny size: every search of both modes agrees with the dict oracle (exit 0)."""
    import json

    from benchmarks import live

    args = ["--json", "--docs", "300", "--adds", "24", "--upserts", "8", "--deletes", "8", "--baseline-ops", "12",
            "--quiet-queries", "3", "--workdir", str(tmp_path), "--memory", "--cache-mb", "0.01"]  # fmt: skip
    assert live.main(args) == 0
    report = json.loads(capsys.readouterr().out)
    modes = {m["mode"]: m for m in report["modes"]}
    assert modes["live"]["ops"] == modes["reread"]["ops"] == 40 and modes["baseline"]["ops"] == 12
    assert modes["live"]["loads"].get("incremental", 0) > 0 and modes["baseline"]["loads"] == {"full": 12}
    assert all(v == 0 for m in modes.values() for v in m["violations"].values())
    full, bounded = report["memory"]
    assert (full["memory"], bounded["memory"]) == ("full", "bounded") and bounded["same_top10_as_full"]
    assert bounded["cache"]["cached_bytes"] <= 0.01 * 2**20 and full["peak_rss_mb"] > 0


def test_id_checks_stay_exact_through_upserts_deletes_and_compactions(tmp_path):
    """The writer's id cache follows its own upserts, deletes and automatic compactions (no re-read of every
    id per write) and stays exact."""
    from mvstore.exceptions import DuplicateIdError, UnknownIdError

    rng = np.random.default_rng(9)
    idx = ms.create(str(tmp_path / "ix"), dim=DIM, n_centroids=8, compact_fragments=3, fragment_rows=64)
    idx.add(np.arange(70), docs_of(rng, 70))
    compacted = 0
    for i in range(70, 76):
        idx.add([i], docs_of(rng, 1))
        compacted += idx.last_maintenance is not None
    assert compacted and idx._writer.ids_cache[0] == idx.version
    idx.upsert([3, 500], docs_of(rng, 2))
    assert idx._writer.ids_cache[0] == idx.version
    idx.delete([4])
    assert idx._writer.ids_cache[0] == idx.version
    with pytest.raises(DuplicateIdError, match="500"):
        idx.add([500], docs_of(rng, 1))
    with pytest.raises(DuplicateIdError, match="72"):
        idx.add([72], docs_of(rng, 1))
    with pytest.raises(UnknownIdError):
        idx.delete([4])
    idx.add([4], docs_of(rng, 1))  # a deleted id may come back
    assert sorted(idx.snapshot().ids.tolist()) == sorted([*range(76), 500])


def test_string_id_checks_follow_writes_of_longer_ids(tmp_path):
    """The sorted string ids of the writer's cache widen for a longer id (a fixed-width copy would cut it and
    miss the duplicate)."""
    from mvstore.exceptions import DuplicateIdError, UnknownIdError

    rng = np.random.default_rng(4)
    idx = ms.create(str(tmp_path / "ix"), dim=DIM, n_centroids=8)
    idx.add(["b", "d"], docs_of(rng, 2))
    idx.add(["a-much-longer-id"], docs_of(rng, 1))
    idx.upsert(["c", "an-even-longer-id-than-that"], docs_of(rng, 2))
    assert idx._writer.ids_cache[0] == idx.version
    for dup in ("a-much-longer-id", "an-even-longer-id-than-that", "c"):
        with pytest.raises(DuplicateIdError, match=dup):
            idx.add([dup], docs_of(rng, 1))
    idx.delete(["a-much-longer-id"])
    with pytest.raises(UnknownIdError):
        idx.delete(["a-much-longer-id"])
    idx.add(["a-much-longer-id"], docs_of(rng, 1))
    assert sorted(idx.snapshot().ids.tolist()) == [
        "a-much-longer-id",
        "an-even-longer-id-than-that",
        "b",
        "c",
        "d",
    ]


def test_a_failed_automatic_compaction_is_a_warning_and_the_write_stands(tmp_path, monkeypatch):
    rng = np.random.default_rng(10)
    uri = str(tmp_path / "ix")
    idx = ms.create(uri, dim=DIM, n_centroids=8, deleted_fraction=0.05)
    idx.add(np.arange(40), docs_of(rng, 40))

    def broken(self, **kw):
        raise OSError("No space left on device")

    monkeypatch.setattr(
        type(lance.dataset(os.path.join(uri, "docs.lance")).optimize), "compact_files", broken
    )
    with pytest.warns(
        RuntimeWarning,
        match="the write committed, but the automatic compaction.*No space left.*"
        "run index.optimize\\(\\) to retry",
    ):
        v = idx.delete([1, 2, 3])
    assert v == idx.version == idx.latest_version
    assert sorted(ms.open(uri).snapshot().ids.tolist()) == [0, *range(4, 40)]
    assert idx.verify()["ok"]


class _TextEncoder:
    """Random unit token vectors per text (an encoder object given to ``open(uri, encoder=)``)."""

    def __init__(self, dim):
        self.dim, self.name = dim, f"texts{dim}"

    def encode_documents(self, texts):
        rng = np.random.default_rng(len(texts))
        return docs_of(rng, len(texts), self.dim)

    encode_queries = encode_documents


def test_add_texts_and_nested_writes_run_the_policy_once(tmp_path, monkeypatch):
    """add_texts holds the write lock around its nested add: the policy runs after it, once, still under the
    lock (it ran neither for the nested add nor not at all)."""
    from mvstore.store import _maintain

    uri = str(tmp_path / "ix")
    ms.create(uri, dim=DIM, n_centroids=8, compact_fragments=2, fragment_rows=64).add(
        np.arange(20), docs_of(np.random.default_rng(1), 20), metadata=[{"text": "x"} for _ in range(20)]
    )
    idx = ms.open(uri, encoder=_TextEncoder(DIM))
    calls = []
    real = _maintain.auto_optimize

    def held() -> bool:
        fd = os.open(os.path.join(uri, "mvstore.lock"), os.O_RDWR)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return False
        except BlockingIOError:
            return True
        finally:
            os.close(fd)

    monkeypatch.setattr(_maintain, "auto_optimize", lambda ix: calls.append(held()) or real(ix))
    idx.add_texts(["a", "b"], ids=[100, 101])
    assert calls == [True]  # once, after the outermost write, under its lock
    idx.add_texts(["c"], ids=[102])
    assert calls == [True, True] and idx.last_maintenance is not None  # 3 small fragments -> compacted
    assert idx.version == idx.latest_version and len(idx) == 23
    assert sorted(idx.snapshot().ids.tolist()) == list(range(20)) + [100, 101, 102]


def _count_reads(monkeypatch):
    """Calls of ``View._read_table`` (every Lance read of a snapshot's rows goes through it)."""
    from mvstore.store import _view

    calls = []
    real = _view.View._read_table
    monkeypatch.setattr(_view.View, "_read_table", lambda self, read: calls.append(1) or real(self, read))
    return calls


@pytest.mark.parametrize("ids", ["int", "str"])
def test_a_writers_own_writes_are_derived_without_reading_them_back(tmp_path, monkeypatch, ids):
    """After this process's own add, one-row upsert or delete (the commit right after the version its snapshot
    holds), the next snapshot is its previous one plus the rows it encoded, less the ids it deleted: no Lance
    read, and exactly what a fresh open of the version holds."""
    rng = np.random.default_rng(11)
    make = (lambda i: i) if ids == "int" else (lambda i: f"d{i:03d}")
    uri = str(tmp_path / "ix")
    idx = ms.create(uri, dim=DIM, n_centroids=8, auto_optimize=False)
    idx.add(
        [make(i) for i in range(60)],
        docs_of(rng, 60),
        metadata=[{"lang": "en" if i % 2 else "fr"} for i in range(60)],
    )
    qs = queries(4)
    idx.search(qs, k=5)
    reads = _count_reads(monkeypatch)
    writes = [
        lambda: idx.add([make(100)], docs_of(rng, 1), metadata=[{"lang": "en"}]),
        lambda: idx.add([make(i) for i in range(101, 106)], docs_of(rng, 5), metadata=[{"lang": "fr"}] * 5),
        lambda: idx.upsert([make(3)], docs_of(rng, 1), metadata=[{"lang": "en"}]),
        lambda: idx.upsert([make(100)], docs_of(rng, 1)),
        lambda: idx.delete([make(4), make(101), make(3)]),
        lambda: idx.add_batches([([make(200)], docs_of(rng, 1)), ([make(201), make(202)], docs_of(rng, 2))]),
    ]
    for w in writes:
        w()
        got = results(idx, qs)
        assert idx._view.load_kind == "incremental" and reads == [], writes.index(w)
        assert got == results(ms.open(uri), qs)
        reads.clear()  # the fresh open's full load
    want = sorted(
        {make(i) for i in [*range(60), 100, *range(101, 106), 200, 201, 202]} - {make(3), make(4), make(101)}
    )
    assert sorted(idx.snapshot().ids.tolist()) == want
    # an upsert of several rows (which Lance's merge may store in another order) reads its rows back
    idx.upsert([make(5), make(6)], docs_of(rng, 2))
    got = results(idx, qs)
    assert len(reads) == 1 and got == results(ms.open(uri), qs)


@pytest.mark.parametrize("recorded", [True, False])
def test_a_written_record_that_does_not_fit_the_version_is_not_used(tmp_path, monkeypatch, recorded):
    """What a write says it committed is used only for the commit right after the snapshot's version, and
    only when the manifest's deletion counts agree: otherwise the snapshot reads the version."""
    from mvstore.store import _integrity
    from mvstore.store._view import View, Written

    rng = np.random.default_rng(12)
    uri = str(tmp_path / "ix")
    idx = ms.create(uri, dim=DIM, n_centroids=8, auto_optimize=False)
    idx.add(np.arange(40), docs_of(rng, 40), metadata=[{"lang": "en"}] * 40)
    qs = queries(3)
    idx.search(qs, k=5)
    other = ms.open(uri)
    other.add([50], docs_of(rng, 1), metadata=[{"lang": "en"}])  # another writer commits first
    reads = _count_reads(monkeypatch)
    idx.add([51], docs_of(rng, 1), metadata=[{"lang": "en"}])  # on top of that commit, not of idx's version
    got = results(idx, qs)
    assert len(reads) == 1 and got == results(ms.open(uri), qs)
    assert sorted(idx.snapshot().ids.tolist()) == [*range(40), 50, 51]
    # a record naming the wrong deleted id: the manifest's deletion count of the fragment disagrees
    before = idx._view
    before.snapshot()
    ds = lance.dataset(os.path.join(uri, "docs.lance"))
    pre = ds.version
    ds.delete("id = 7")
    if recorded:  # the version's record (row count and checksum sum) exists, as after any mvstore write
        _integrity.record(idx.loc)
    out = lance.dataset(os.path.join(uri, "docs.lance"))
    wrong = View(out.version, out, before.state, before.loc, before, Written(pre, None, np.array([8])))
    assert sorted(wrong.public_snapshot().ids.tolist()) == sorted(set(range(40)) - {7} | {50, 51})
    assert wrong.load_kind == "incremental" and len(reads) == 3  # the fresh open's, then this one's


def test_the_writer_derives_its_write_s_state_and_a_failed_derivation_is_the_next_search_s(
    tmp_path, monkeypatch
):
    """A write by an Index that searches leaves the new version's search state derived (the next search pays
    nothing for it); one that never searched derives nothing. When the derivation fails, the write still
    stands and the next search loads the version in full."""
    from mvstore.store import _view

    rng = np.random.default_rng(3)
    idx = ms.create(str(tmp_path / "ix"), dim=DIM)
    idx.add(list(range(40)), docs_of(rng, 40))
    idx.add([40], docs_of(rng, 1))
    assert idx._view.load_kind is None  # nothing searched yet: nothing derived
    idx.search(queries(1), k=3)
    new = docs_of(rng, 1)
    idx.add([41], new)
    assert idx._view.load_kind == "incremental"

    def broken(self, base, use_written=True):
        raise IndexCorruptedError("derivation failed (test)")

    monkeypatch.setattr(_view.View, "_derive", broken)
    new = docs_of(rng, 1)
    idx.add([42], new)  # the write stands
    assert idx._view.load_kind is None
    assert idx.search(new[0], k=1)["id"].to_pylist() == [42]
    assert idx._view.load_kind == "full"
