"""mvstore.import_plaid / `mvstore import-plaid`: a PLAID index (fast-plaid, PyLate, Stanford ColBERT) moved in.

Two kinds of fixtures:

* ``write_fast_plaid`` / ``write_stanford`` write the files fast-plaid 1.7 / PyLate 1.2 write, transliterated
  from their sources (fast-plaid ``rust/index/create.rs``: bucket cutoffs/weights as residual quantiles,
  ``bucketize``, bits of each bucket least significant first, ``packbits`` most significant first;
  ``python/fast_plaid/search/storage.py``: tch-style shard headers, the 192-byte merged-file header, the merge
  manifest; PyLate ``stanford_nlp``: ``ResidualCodec.save``/``binarize``, removed documents kept with 0
  tokens, the SqliteDict id mapping). Decoding is checked against the buckets the writer chose and against
  ``decompress_lut``, fast-plaid's own table-driven decoder (``decompress_residuals`` in
  ``rust/search/search.rs``) transliterated, a different algorithm from the importer's ``unpackbits``.
* the real writers, skipped where they are not installed: fast-plaid's ``FastPlaid.create`` (its wheel pins
  the torch it was built for, 1.7.0.2110: torch==2.11.0; with another torch its extension crashes, so the
  test checks the pin and skips), PyLate >= 1.3's ``indexes.PLAID`` (fast-plaid inside), and PyLate 1.2's
  Stanford ``indexes.PLAID`` (the ``pylate`` extra; it runs in ``make test``, on the CPU, in the Makefile's
  own PyLate venv, whose index and decompressed embeddings this suite reads), each compared with the library's
  own decoding.
"""

import json
import os
import pickle
import sqlite3
import subprocess
from pathlib import Path

import numpy as np
import pytest

import mvstore
from mvstore.exceptions import (
    DimensionMismatchError,
    DuplicateIdError,
    InvalidArgumentError,
    PlaidFormatError,
    SpecError,
)
from mvstore.importers import PYLATE_ID_FILES, read_plaid

from .test_cli import mvstore as run_cli

PYLATE_IDS = PYLATE_ID_FILES[0]
DIM = 32
MERGED_HEADER_LEN = 192  # fast-plaid storage.MERGED_HEADER_LEN


# ------------------------------------------------------------------------------- a fast-plaid writer
def _tch_npy(path: Path, arr: np.ndarray) -> None:
    """``tch::Tensor::write_npy``'s format (fast-plaid storage.write_tch_npy)."""
    arr = np.ascontiguousarray(arr)
    shape = f"({arr.shape[0]},)" if arr.ndim == 1 else "(" + ",".join(map(str, arr.shape)) + ",)"
    body = f"{{'descr': '<{arr.dtype.kind}{arr.dtype.itemsize}', 'fortran_order': False, 'shape': {shape}, }}"
    target = ((10 + len(body) + 1 + 15) // 16) * 16
    header = (body + " " * (target - 10 - len(body) - 1) + "\n").encode()
    path.write_bytes(b"\x93NUMPY\x01\x00" + len(header).to_bytes(2, "little") + header + arr.tobytes())


def _merged_npy(path: Path, arr: np.ndarray, padding: int) -> None:
    """A merged file: the fixed 192-byte header (storage._header_bytes) and ``padding`` zero rows at the end."""
    full = np.concatenate([arr, np.zeros((padding, *arr.shape[1:]), arr.dtype)])
    shape = f"({full.shape[0]},)" if full.ndim == 1 else "(" + ", ".join(map(str, full.shape)) + ")"
    body = f"{{'descr': '{np.lib.format.dtype_to_descr(full.dtype)}', 'fortran_order': False, 'shape': {shape}, }}"
    header = (body + " " * (MERGED_HEADER_LEN - 10 - len(body) - 1) + "\n").encode()
    path.write_bytes(b"\x93NUMPY\x01\x00" + len(header).to_bytes(2, "little") + header + full.tobytes())


def write_fast_plaid(path, docs, *, nbits=2, n_centroids=16, chunk_docs=50, layout="merged", seed=0):
    """A fast-plaid index of ``docs`` (list of (n_i, DIM) float32). ``layout``: "shards" (before 1.7, or
    ``FAST_PLAID_KEEP_SHARDS=1``), "merged" (1.7: merged files + manifest, shards dropped), "merged-no-manifest"
    (a lost manifest: rows in doclens order). Returns the bucket of every token's every dimension."""
    path = Path(path)
    path.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    x = np.concatenate(docs).astype(np.float16)
    centroids = x[rng.choice(len(x), n_centroids, replace=False)].astype(np.float32)
    centroids = (centroids / np.linalg.norm(centroids, axis=1, keepdims=True)).astype(np.float16)
    codes = (x.astype(np.float32) @ centroids.astype(np.float32).T).argmax(1).astype(np.int64)
    res = (x - centroids[codes]).astype(np.float32)
    n_opt = 2**nbits
    flat = res.reshape(-1)
    cutoffs = np.quantile(flat, [i / n_opt for i in range(1, n_opt)]).astype(np.float32)
    weights = np.quantile(flat, [(i + 0.5) / n_opt for i in range(n_opt)]).astype(np.float32)
    buckets = np.searchsorted(cutoffs, res, side="left")  # torch.bucketize(right=False)
    bits = (buckets[..., None] >> np.arange(nbits)) & 1  # create.rs: bitwise_right_shift(bit_helper) & 1
    packed = np.packbits(bits.reshape(len(x), -1).astype(np.uint8), axis=1)  # packbits: first bit -> 128
    for name, arr in [("centroids", centroids), ("bucket_cutoffs", cutoffs.astype(np.float16)),
                      ("bucket_weights", weights.astype(np.float16)),
                      ("avg_residual", np.abs(res).mean(0).astype(np.float16))]:  # fmt: skip
        _tch_npy(path / f"{name}.npy", arr)
    lens = np.array([len(d) for d in docs])
    n_chunks = -(-len(docs) // chunk_docs)
    (path / "plan.json").write_text(json.dumps({"nbits": nbits, "num_chunks": n_chunks}))
    starts = np.concatenate([[0], np.cumsum(lens)])
    chunk_rows = []
    for i in range(n_chunks):
        d0, d1 = i * chunk_docs, min((i + 1) * chunk_docs, len(docs))
        a, b = starts[d0], starts[d1]
        _tch_npy(path / f"{i}.codes.npy", codes[a:b])
        _tch_npy(path / f"{i}.residuals.npy", packed[a:b])
        (path / f"doclens.{i}.json").write_text(json.dumps(lens[d0:d1].tolist()))
        (path / f"{i}.metadata.json").write_text(
            json.dumps(
                {"num_documents": int(d1 - d0), "num_embeddings": int(b - a), "embedding_offset": int(a)}
            )
        )
        chunk_rows.append(int(b - a))
    meta = {"num_chunks": n_chunks, "nbits": nbits, "num_partitions": n_centroids, "num_embeddings": int(len(x)),
            "avg_doclen": float(lens.mean()), "num_documents": len(docs), "compress_only": False}  # fmt: skip
    if layout != "shards":
        padding = int(lens.max() - lens[-1])  # _load_index_tensors_cpu's padding_needed
        for suffix, arr in (("codes", codes), ("residuals", packed)):
            _merged_npy(path / f"merged_{suffix}.npy", arr, padding)
            if layout == "merged":
                manifest = {f"{i}.{suffix}.npy": {"rows": r, "merged": True, "mtime": None}
                            for i, r in enumerate(chunk_rows)}  # fmt: skip
                (path / f"merged_{suffix}.manifest.json").write_text(json.dumps(manifest))
            for i in range(n_chunks):
                os.remove(path / f"{i}.{suffix}.npy")
        meta.update(frozen=True, mutable=True)  # storage.mark_single_copy
    (path / "metadata.json").write_text(json.dumps(meta, indent=2))
    return codes, buckets, centroids.astype(np.float32), weights.astype(np.float16).astype(np.float32)


def decompress_lut(packed, codes, centroids, weights, nbits):
    """fast-plaid's decompress_residuals: byte_reversed_bits_map and bucket_weight_indices_lookup
    (ResidualCodec::load), gathered per byte, added to the centroids, normalized."""
    mask = (1 << nbits) - 1
    reversed_map = np.zeros(256, np.int64)
    for i in range(256):
        out, pos = 0, 8
        while pos >= nbits:
            seg = (i >> (pos - nbits)) & mask
            rev = sum(1 << (nbits - 1 - k) for k in range(nbits) if seg & (1 << k))
            out |= rev
            if pos > nbits:
                out <<= nbits
            pos -= nbits
        reversed_map[i] = out & 0xFF
    keys = 8 // nbits
    lookup = np.array([[(b >> (k * nbits)) & mask for k in reversed(range(keys))] for b in range(256)])
    idx = lookup[reversed_map[packed]]  # (n, packed_dim, keys)
    v = centroids[codes].reshape(idx.shape) + weights[idx]
    v = v.reshape(len(codes), -1)
    return v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)


def make_docs(n=120, seed=1, lo=3, hi=20):
    rng = np.random.default_rng(seed)
    topics = rng.standard_normal((6, DIM))
    docs = []
    for i in range(n):
        v = topics[i % 6] + 0.6 * rng.standard_normal((int(rng.integers(lo, hi)), DIM))
        docs.append((v / np.linalg.norm(v, axis=1, keepdims=True)).astype(np.float32))
    return docs


def pylate_folder(tmp_path, docs, ids, **kw):
    """PyLate's FastPlaid layout: <index_folder>/<index_name>/{fast_plaid_index/, the two id pickles}."""
    folder = tmp_path / "pylate" / "my_index"
    out = write_fast_plaid(folder / "fast_plaid_index", docs, **kw)
    with open(folder / PYLATE_IDS, "wb") as f:
        pickle.dump(dict(enumerate(ids)), f)
    with open(folder / "documents_ids_to_plaid_ids.pkl", "wb") as f:
        pickle.dump({d: i for i, d in enumerate(ids)}, f)
    return folder, out


# ------------------------------------------------------------------------------- decoding
@pytest.mark.parametrize("nbits", [1, 2, 4, 8])
@pytest.mark.parametrize("layout", ["shards", "merged", "merged-no-manifest"])
def test_decode_matches_fast_plaid_reconstruction(tmp_path, nbits, layout):
    docs = make_docs()
    codes, buckets, cents, weights = write_fast_plaid(tmp_path / "fp", docs, nbits=nbits, layout=layout)
    plaid = read_plaid(tmp_path / "fp")
    assert (plaid.n_docs, plaid.dim, plaid.nbits, plaid.n_vectors) == (len(docs), DIM, nbits, len(codes))
    assert plaid.ids == list(range(len(docs))) and plaid.id_source == "plaid"
    got = plaid.decode(np.arange(plaid.n_docs))
    assert got.lengths.tolist() == [len(d) for d in docs]
    # the buckets the writer packed come back: centroid + bucket weight of every dimension, normalized
    expect = cents[codes] + weights[buckets]
    expect /= np.linalg.norm(expect, axis=1, keepdims=True)
    np.testing.assert_allclose(got.values, expect, atol=1e-6)
    # and fast-plaid's own lookup-table decoder reads the same bytes the same way
    packed = np.packbits(
        ((buckets[..., None] >> np.arange(nbits)) & 1).reshape(len(codes), -1).astype(np.uint8), axis=1
    )
    np.testing.assert_allclose(got.values, decompress_lut(packed, codes, cents, weights, nbits), atol=1e-6)
    # any subset, in any order, decodes to the same rows
    pick = np.array([117, 3, 50, 49, 0])
    sub = plaid.decode(pick)
    for j, d in enumerate(pick):
        np.testing.assert_array_equal(sub[j], got[int(d)])


def test_decoded_vectors_are_the_originals_within_the_quantization_error(tmp_path):
    docs = make_docs()
    write_fast_plaid(tmp_path / "fp", docs, nbits=4)
    got = read_plaid(tmp_path / "fp").decode(np.arange(len(docs)))
    orig = np.concatenate(docs)
    cos = np.einsum("ij,ij->i", got.values, orig)
    assert cos.min() > 0.9 and np.median(cos) > 0.98, (cos.min(), np.median(cos))


# ------------------------------------------------------------------------------- import
def test_import_keeps_pylate_ids_and_finds_the_documents(tmp_path):
    docs = make_docs()
    ids = [f"doc-{i}" for i in range(len(docs))]
    folder, _ = pylate_folder(tmp_path, docs, ids, nbits=4)
    idx = mvstore.import_plaid(folder, tmp_path / "ix", spec="fp16", progress=False)
    assert len(idx) == len(docs) and idx.dim == DIM and idx.spec is not None and str(idx.spec) == "fp16"
    plaid = read_plaid(folder)
    assert plaid.id_source == "pylate" and plaid.ids == ids
    decoded = plaid.decode(np.arange(len(docs)))
    for i in (0, 7, 64, 119):  # a document's own tokens find it first
        hits = idx.search(decoded[i][:3], k=3).to_pylist()
        assert hits[0]["id"] == ids[i], hits
    # ranking = exact MaxSim over the decoded vectors (fp16 storage, exhaustive stage 1)
    q = decoded[5][:4]
    exact = mvstore.maxsim(q, decoded)
    got = idx.search(q, k=5, params={"candidates": "exhaustive"}).to_pylist()
    assert got[0]["id"] == "doc-5"
    # the scores are the exact ones (up to fp16 storage), and the top 5 of them
    np.testing.assert_allclose([r["score"] for r in got], [exact[ids.index(r["id"])] for r in got], atol=5e-3)
    np.testing.assert_allclose([r["score"] for r in got], np.sort(exact)[::-1][:5], atol=5e-3)


def test_import_reads_the_fast_plaid_dir_inside_a_pylate_folder_too(tmp_path):
    docs = make_docs(40)
    folder, _ = pylate_folder(tmp_path, docs, [f"d{i}" for i in range(40)])
    plaid = read_plaid(folder / "fast_plaid_index")  # the inner folder: the mapping next to it is still found
    assert plaid.id_source == "pylate" and plaid.ids[:2] == ["d0", "d1"]
    assert read_plaid(folder, ids="plaid").ids == list(range(40))
    assert read_plaid(folder, ids=list(range(100, 140))).ids[0] == 100


def test_import_streams_in_bounded_batches_and_commits_once(tmp_path, monkeypatch):
    docs = make_docs(200)
    write_fast_plaid(tmp_path / "fp", docs, chunk_docs=64)
    from mvstore import importers

    seen = []
    orig = importers.PlaidIndex.decode

    def spy(self, rows):
        out = orig(self, rows)
        seen.append(len(out.values))
        return out

    monkeypatch.setattr(importers.PlaidIndex, "decode", spy)
    idx = mvstore.import_plaid(tmp_path / "fp", tmp_path / "ix", spec="sq8", batch_vectors=300, train_size=500,
                               progress=False)  # fmt: skip
    assert seen[0] >= 500  # the training sample (random documents) comes first
    assert len(seen) > 5 and max(seen[1:]) <= 300 + 20  # then batches of ~300 tokens (one document may spill)
    assert sum(seen[1:]) == sum(len(d) for d in docs)
    assert len(idx) == 200 and idx.version == 1  # one commit for all batches
    assert idx.stats()["tokens"] == sum(len(d) for d in docs)


def test_import_brings_fast_plaid_metadata_columns(tmp_path):
    docs = make_docs(30)
    write_fast_plaid(tmp_path / "fp", docs, chunk_docs=10)
    con = sqlite3.connect(tmp_path / "fp" / "metadata.db")  # as fast_plaid.filtering.create makes it
    con.execute(
        'CREATE TABLE METADATA ("_subset_" INTEGER PRIMARY KEY, "title" TEXT, "year" INTEGER, "weight" REAL)'
    )
    con.executemany("INSERT INTO METADATA VALUES (?, ?, ?, ?)",
                    [(i, f"t{i}", 2000 + i, i / 2) for i in range(30) if i != 17])  # fmt: skip
    con.commit()
    con.close()
    idx = mvstore.import_plaid(
        tmp_path / "fp", tmp_path / "ix", spec="fp16", batch_vectors=64, progress=False
    )
    q = read_plaid(tmp_path / "fp").decode([20])[0][:3]
    hit = idx.search(q, k=1, columns=["title", "year", "weight"]).to_pylist()[0]
    assert hit == {**hit, "id": 20, "title": "t20", "year": 2020, "weight": 10.0}
    assert idx.search(q, k=30, where="year >= 2028").num_rows == 2
    assert idx.search(q, k=30, where="title IS NULL").to_pylist()[0]["id"] == 17  # no row: nulls
    bare = mvstore.import_plaid(
        tmp_path / "fp", tmp_path / "ix2", spec="fp16", metadata=False, progress=False
    )
    assert "title" not in bare.search(q, k=1).column_names
    con = sqlite3.connect(tmp_path / "fp" / "metadata.db")  # a name mvstore keeps for itself
    con.execute('ALTER TABLE METADATA RENAME COLUMN "weight" TO "score"')
    con.commit()
    con.close()
    with pytest.raises(PlaidFormatError, match="column 'score', a name mvstore reserves.*RENAME COLUMN \"score\" TO "
                       "\"doc_score\".*metadata=False"):  # fmt: skip
        mvstore.import_plaid(tmp_path / "fp", tmp_path / "ix3", spec="fp16", progress=False)
    assert not (tmp_path / "ix3").exists()


def test_import_into_an_existing_index(tmp_path):
    docs = make_docs(60)
    write_fast_plaid(tmp_path / "a", docs[:30])
    write_fast_plaid(tmp_path / "b", docs[30:])
    idx = mvstore.import_plaid(tmp_path / "a", tmp_path / "ix", spec="sq8", progress=False)
    with pytest.raises(mvstore.IndexExistsError):
        mvstore.import_plaid(tmp_path / "b", tmp_path / "ix", progress=False)
    ids_b = list(range(100, 130))
    idx = mvstore.import_plaid(tmp_path / "b", tmp_path / "ix", ids=ids_b, exist_ok=True, progress=False)
    assert len(idx) == 60 and idx.version == 2
    v = idx.version
    with pytest.raises(DuplicateIdError):  # fast-plaid numbers 0..29 are already there: nothing is written
        mvstore.import_plaid(tmp_path / "a", tmp_path / "ix", exist_ok=True, progress=False)
    assert mvstore.open(tmp_path / "ix").version == v
    with pytest.raises(SpecError, match="drop spec="):
        mvstore.import_plaid(tmp_path / "b", tmp_path / "ix", spec="fp16", exist_ok=True, progress=False)


def test_dim_mismatch_with_an_existing_index(tmp_path):
    write_fast_plaid(tmp_path / "fp", make_docs(20))
    ix = mvstore.create(tmp_path / "ix", "fp16", dim=DIM * 2)
    with pytest.raises(DimensionMismatchError, match="64-d vectors but the PLAID index .* 32-d.*new index"):
        mvstore.import_plaid(tmp_path / "fp", tmp_path / "ix", exist_ok=True, progress=False)
    assert len(mvstore.open(ix.root)) == 0


# ------------------------------------------------------------------------------- bad input
def test_not_a_plaid_directory(tmp_path):
    with pytest.raises(PlaidFormatError, match="not a directory.*pass the directory"):
        read_plaid(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(PlaidFormatError, match="holds no PLAID index.*fast_plaid_index.*FastPlaid"):
        read_plaid(tmp_path / "empty")
    half = tmp_path / "half"  # a Stanford-looking folder without its metadata.json
    half.mkdir()
    (half / "plan.json").write_text("{}")
    (half / "centroids.pt").write_bytes(b"")
    with pytest.raises(PlaidFormatError, match="holds no PLAID index"):
        read_plaid(half)
    assert not (tmp_path / "ix").exists() or not os.listdir(tmp_path / "ix")


@pytest.mark.parametrize(
    "damage, match",
    [
        (lambda p: os.remove(p / "doclens.1.json"), r"doclens\.1\.json: is missing"),
        (lambda p: (p / "doclens.0.json").write_text("[3, -1]"), "not a list of token counts"),
        (lambda p: (p / "metadata.json").write_text("{"), "not valid JSON"),
        (lambda p: (p / "metadata.json").write_text('{"num_chunks": 3}'), "no num_chunks / nbits"),
        (lambda p: os.remove(p / "merged_codes.npy"), r"merged_codes\.npy: is missing"),
        (lambda p: os.remove(p / "bucket_weights.npy"), r"bucket_weights\.npy: is missing"),
        (
            lambda p: np.save(p / "bucket_weights.npy", np.zeros(8, np.float16)),
            "8 bucket weights, not 2\\*\\*nbits = 4",
        ),
        (
            lambda p: _merged_npy(p / "merged_residuals.npy", np.zeros((600, DIM // 4), np.uint8), 0),
            r"merged_residuals\.npy: holds \d+ rows for chunk 1",
        ),
        (
            lambda p: (p / "merged_codes.manifest.json").write_text(
                json.dumps({"0.codes.npy": {"rows": 1, "merged": True}})
            ),
            r"does not record chunk 0's \d+ rows as merged and 0\.codes\.npy is missing",
        ),
        (
            lambda p: np.save(p / "centroids.npy", np.zeros((16, DIM * 2), np.float16)),
            "residuals are uint8 of shape",
        ),
    ],
)
def test_damaged_plaid_index(tmp_path, damage, match):
    write_fast_plaid(tmp_path / "fp", make_docs(120))
    damage(tmp_path / "fp")
    with pytest.raises(PlaidFormatError, match=match) as e:
        mvstore.import_plaid(tmp_path / "fp", tmp_path / "ix", progress=False)
    assert "re-create" in str(e.value) or "fast-plaid" in str(e.value)
    assert not (tmp_path / "ix").exists()  # checked before the index is created


def test_codes_outside_the_centroids(tmp_path):
    write_fast_plaid(tmp_path / "fp", make_docs(20), layout="shards", chunk_docs=100)
    codes = np.load(tmp_path / "fp" / "0.codes.npy")
    codes[5] = 99
    _tch_npy(tmp_path / "fp" / "0.codes.npy", codes)
    with pytest.raises(PlaidFormatError, match="centroid id is outside 0..15"):
        read_plaid(tmp_path / "fp").decode(np.arange(20))


class _Boom:
    def __reduce__(self):
        return (os.system, ("touch pwned",))


def test_pylate_id_mapping_is_read_without_running_code(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    docs = make_docs(10)
    folder, _ = pylate_folder(tmp_path, docs, [f"d{i}" for i in range(10)])
    with open(folder / PYLATE_IDS, "wb") as f:
        pickle.dump({i: (_Boom() if i == 3 else f"d{i}") for i in range(10)}, f)
    with pytest.raises(PlaidFormatError, match='refusing to load posix.system.*ids="plaid"'):
        read_plaid(folder)
    assert not (tmp_path / "pwned").exists()
    with open(folder / PYLATE_IDS, "wb") as f:  # numpy scalars (ids a user passed as numpy values) are fine
        pickle.dump({np.int64(i): np.str_(f"n{i}") for i in range(10)}, f)
    assert read_plaid(folder).ids == [f"n{i}" for i in range(10)]
    with open(folder / PYLATE_IDS, "wb") as f:
        pickle.dump({i: f"d{i}" for i in range(9)}, f)
    with pytest.raises(
        PlaidFormatError, match="maps 9 documents but the PLAID index holds 10 .*no id for document 9"
    ):
        read_plaid(folder)
    assert read_plaid(folder, ids="plaid").ids == list(range(10))
    with pytest.raises(InvalidArgumentError, match="3 ids given for the 10 documents"):
        read_plaid(folder, ids=[1, 2, 3])


def test_bad_arguments(tmp_path):
    write_fast_plaid(tmp_path / "fp", make_docs(20))
    with pytest.raises(InvalidArgumentError, match="batch_vectors=0 must be a positive integer"):
        mvstore.import_plaid(tmp_path / "fp", tmp_path / "ix", batch_vectors=0)
    with pytest.raises(mvstore.InvalidDtypeError, match='ids must be None, "plaid" or a sequence'):
        mvstore.import_plaid(tmp_path / "fp", tmp_path / "ix", ids="pylate")


def test_import_waits_for_a_fast_plaid_writer(tmp_path, monkeypatch):
    """fast-plaid's writers hold plaid.lock (filelock: an exclusive flock) while they rewrite the index; an
    import holds it shared while it reads."""
    import fcntl
    import threading

    from mvstore import importers

    write_fast_plaid(tmp_path / "fp", make_docs(30))
    fd = os.open(tmp_path / "fp" / "plaid.lock", os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX)  # a fast-plaid update in progress
    monkeypatch.setattr(importers, "PLAID_LOCK_WAIT_S", 0.3)
    with pytest.raises(
        mvstore.IndexBusyError, match="plaid.lock for more than 0.3 s .*import once it has finished"
    ):
        mvstore.import_plaid(tmp_path / "fp", tmp_path / "ix", spec="fp16", progress=False)
    assert not (tmp_path / "ix").exists()
    monkeypatch.setattr(importers, "PLAID_LOCK_WAIT_S", 30.0)
    threading.Timer(0.5, os.close, (fd,)).start()  # the update finishes: the import goes on
    assert len(mvstore.import_plaid(tmp_path / "fp", tmp_path / "ix", spec="fp16", progress=False)) == 30
    # while an import reads, a fast-plaid writer cannot take the lock
    seen = []
    orig = importers.PlaidIndex.decode

    def probe(self, docs):
        w = os.open(tmp_path / "fp" / "plaid.lock", os.O_RDWR)
        try:
            fcntl.flock(w, fcntl.LOCK_EX | fcntl.LOCK_NB)
            seen.append("writer got the lock")
        except BlockingIOError:
            seen.append("writer waits")
        finally:
            os.close(w)
        return orig(self, docs)

    monkeypatch.setattr(importers.PlaidIndex, "decode", probe)
    mvstore.import_plaid(tmp_path / "fp", tmp_path / "ix2", spec="fp16", progress=False)
    assert seen and set(seen) == {"writer waits"}


# ------------------------------------------------------------------------------- CLI
def test_cli_import_plaid(tmp_path):
    docs = make_docs(50)
    folder, _ = pylate_folder(tmp_path, docs, [f"doc{i}" for i in range(50)])
    p = run_cli("import-plaid", folder, tmp_path / "ix", "--spec", "sq8", "--json", "-q")
    row = json.loads(p.stdout.strip().splitlines()[-1])
    assert row["docs"] == 50 and row["spec"] == "sq8" and row["tokens"] == sum(len(d) for d in docs)
    assert mvstore.open(tmp_path / "ix").search(docs[9][:2], k=1).to_pylist()[0]["id"] == "doc9"
    p = run_cli("import-plaid", tmp_path / "missing", tmp_path / "ix2", check_rc=2)
    assert p.stderr.startswith("mvstore: error:") and "fast-plaid" in p.stderr and "Traceback" not in p.stderr
    p = run_cli("import-plaid", folder, tmp_path / "ix", "--plaid-ids", "--append", "-q", check_rc=2)
    assert "mvstore: error:" in p.stderr  # ids 0..49 are new but the index's ids are strings
    run_cli("import-plaid", folder, tmp_path / "ix3", "--plaid-ids", "--spec", "fp16", "-q")
    assert mvstore.open(tmp_path / "ix3").search(docs[9][:2], k=1).to_pylist()[0]["id"] == 9


# ------------------------------------------------------------------------------- the real fast-plaid
def _real_fast_plaid():
    fast_plaid = pytest.importorskip(
        "fast_plaid", reason="fast-plaid is not installed (pip install fast-plaid)"
    )
    import importlib.metadata as md

    import torch

    pins = [
        r.split("==")[1].split(";")[0].strip()
        for r in md.requires("fast-plaid") or []
        if r.startswith("torch==")
    ]
    if pins and torch.__version__.split("+")[0] != pins[0]:
        pytest.skip(
            f"fast-plaid's wheel is built for torch {pins[0]}, not {torch.__version__} (its extension crashes)"
        )
    return fast_plaid


def test_real_fast_plaid_index(tmp_path):
    _real_fast_plaid()
    import torch
    from fast_plaid import search

    docs = make_docs(300, lo=5, hi=30)
    fp = search.FastPlaid(index=str(tmp_path / "fp"), device="cpu")
    fp.create(documents_embeddings=[torch.from_numpy(d) for d in docs], nbits=4, kmeans_niters=4, seed=0,
              use_triton_kmeans=False, metadata=[{"title": f"t{i}"} for i in range(300)])  # fmt: skip
    plaid = read_plaid(tmp_path / "fp")
    assert (plaid.n_docs, plaid.dim, plaid.nbits) == (300, DIM, 4)
    mine = plaid.decode(np.arange(300))
    theirs = fp.get_embeddings(list(range(300)))
    for i in range(300):  # fast-plaid reconstructs in float16, the importer in float32 from the same inputs
        np.testing.assert_allclose(mine[i], theirs[i].float().numpy(), atol=4e-3)
    idx = mvstore.import_plaid(tmp_path / "fp", tmp_path / "ix", spec="fp16", progress=False)
    q = docs[42][:4]
    want = [int(p) for p, _ in fp.search(queries_embeddings=torch.from_numpy(q[None]), top_k=3)[0]]
    got = idx.search(q, k=3, params={"candidates": "exhaustive"}, columns=["title"]).to_pylist()
    assert got[0]["id"] == 42 == want[0] and got[0]["title"] == "t42"


def test_real_pylate_plaid_index(tmp_path):
    _real_fast_plaid()
    indexes = pytest.importorskip("pylate.indexes", reason="PyLate is not installed (pip install pylate)")
    docs = make_docs(200, lo=5, hi=30)
    ids = [f"doc-{i}" for i in range(200)]
    index = indexes.PLAID(
        index_folder=str(tmp_path / "pl"), index_name="ix", override=True, device="cpu", nbits=2
    )
    index.add_documents(documents_ids=ids, documents_embeddings=docs)
    idx = mvstore.import_plaid(tmp_path / "pl" / "ix", tmp_path / "ix", spec="fp16", progress=False)
    q = docs[17][:4]
    assert index(q[None], k=1)[0][0]["id"] == "doc-17"
    assert idx.search(q, k=1).to_pylist()[0]["id"] == "doc-17"


# ------------------------------------------------------------------------------- Stanford ColBERT (PyLate 1.2)
def write_stanford(path, docs, *, nbits=2, n_centroids=16, chunk_docs=50, removed=(), ids=None, seed=0):
    """A Stanford ColBERT index as PyLate 1.2's indexes.PLAID leaves it (ResidualCodec.save / compress /
    binarize, IndexSaver, IndexUpdater._remove_passage_from_disk: a removed document keeps its number with 0
    tokens), with the SqliteDict id mapping (table "unnamed", key text, value pickled)."""
    import torch

    path = Path(path)
    path.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    x = np.concatenate(docs)
    centroids = x[rng.choice(len(x), n_centroids, replace=False)]
    centroids = (centroids / np.linalg.norm(centroids, axis=1, keepdims=True)).astype(np.float16)
    codes = (centroids.astype(np.float32) @ x.T).argmax(0)
    res = x - centroids[codes].astype(np.float32)
    n_opt = 2**nbits
    cutoffs = np.quantile(res, [i / n_opt for i in range(1, n_opt)]).astype(np.float32)
    weights = np.quantile(res, [(i + 0.5) / n_opt for i in range(n_opt)]).astype(np.float32)
    buckets = np.searchsorted(cutoffs, res, side="left")
    packed = np.packbits(
        ((buckets[..., None] >> np.arange(nbits)) & 1).reshape(len(x), -1).astype(np.uint8), axis=1
    )
    torch.save(torch.from_numpy(centroids), path / "centroids.pt")
    torch.save((torch.from_numpy(cutoffs), torch.from_numpy(weights)), path / "buckets.pt")
    torch.save(torch.tensor(float(np.abs(res).mean())), path / "avg_residual.pt")
    lens = np.array([len(d) for d in docs])
    starts = np.concatenate([[0], np.cumsum(lens)])
    n_chunks = -(-len(docs) // chunk_docs)
    for i in range(n_chunks):
        keep = [d for d in range(i * chunk_docs, min((i + 1) * chunk_docs, len(docs))) if d not in removed]
        rows = np.concatenate([np.arange(starts[d], starts[d + 1]) for d in keep])
        torch.save(torch.from_numpy(codes[rows].astype(np.int32)), path / f"{i}.codes.pt")
        torch.save(torch.from_numpy(packed[rows]), path / f"{i}.residuals.pt")
        chunk_lens = [
            0 if d in removed else int(lens[d])
            for d in range(i * chunk_docs, min((i + 1) * chunk_docs, len(docs)))
        ]
        (path / f"doclens.{i}.json").write_text(json.dumps(chunk_lens))
    config = {"nbits": nbits, "dim": DIM, "index_name": path.name}
    (path / "metadata.json").write_text(
        json.dumps(
            {
                "config": config,
                "num_chunks": n_chunks,
                "num_partitions": n_centroids,
                "num_embeddings": len(x),
            }
        )
    )
    (path / "plan.json").write_text(json.dumps({"config": config, "num_chunks": n_chunks}))
    if ids is not None:
        con = sqlite3.connect(path / "plaid_ids_to_documents_ids.sqlite")
        con.execute('CREATE TABLE "unnamed" (key TEXT PRIMARY KEY, value BLOB)')
        con.executemany('INSERT INTO "unnamed" VALUES (?, ?)',
                        [(i, pickle.dumps(d, protocol=5)) for i, d in enumerate(ids) if i not in removed])  # fmt: skip
        con.commit()
        con.close()
    expect = centroids.astype(np.float32)[codes] + weights[buckets]
    return expect / np.linalg.norm(expect, axis=1, keepdims=True)


def test_stanford_layout_with_removed_documents(tmp_path):
    pytest.importorskip("torch", reason="a Stanford ColBERT index's .pt files need torch")
    docs = make_docs(90)
    ids = [f"s{i}" for i in range(90)]
    expect = write_stanford(tmp_path / "st", docs, removed={4, 60}, ids=ids)
    plaid = read_plaid(tmp_path / "st")
    assert (plaid.layout, plaid.id_source, plaid.nbits, plaid.dim) == ("stanford", "pylate", 2, DIM)
    assert plaid.ids[4] is None and plaid.ids[5] == "s5" and plaid.doclens[60] == 0
    kept = plaid.kept()
    assert len(kept) == 88 and 4 not in kept and 60 not in kept
    got = plaid.decode(kept)
    starts = np.concatenate([[0], np.cumsum([len(d) for d in docs])])
    want = np.concatenate([expect[starts[d] : starts[d + 1]] for d in kept])
    np.testing.assert_allclose(got.values, want, atol=1e-6)
    idx = mvstore.import_plaid(
        tmp_path / "st", tmp_path / "ix", spec="fp16", batch_vectors=200, progress=False
    )
    assert len(idx) == 88
    assert idx.search(got[10][:3], k=1).to_pylist()[0]["id"] == ids[kept[10]]
    with pytest.warns(
        UserWarning, match="2 documents of .* have no token vectors and are not imported \\(ids 4, 60\\)"
    ):
        idx2 = mvstore.import_plaid(
            tmp_path / "st", tmp_path / "ix2", ids="plaid", spec="fp16", progress=False
        )
    assert len(idx2) == 88


def test_stanford_damaged_files(tmp_path):
    pytest.importorskip("torch", reason="a Stanford ColBERT index's .pt files need torch")
    write_stanford(tmp_path / "st", make_docs(60), ids=[f"s{i}" for i in range(60)])
    (tmp_path / "st" / "1.codes.pt").write_bytes(b"not a torch file")
    with pytest.raises(PlaidFormatError, match=r"1\.codes\.pt: is not a readable torch tensor archive"):
        mvstore.import_plaid(tmp_path / "st", tmp_path / "ix", spec="fp16", progress=False)
    os.remove(tmp_path / "st" / "buckets.pt")
    with pytest.raises(PlaidFormatError, match=r"buckets\.pt: is missing"):
        read_plaid(tmp_path / "st")
    con = sqlite3.connect(tmp_path / "st" / "plaid_ids_to_documents_ids.sqlite")
    con.execute('UPDATE "unnamed" SET value = ? WHERE key = 3', (pickle.dumps(_Boom()),))
    con.commit()
    con.close()
    import torch

    torch.save((torch.zeros(3), torch.zeros(4)), tmp_path / "st" / "buckets.pt")
    with pytest.raises(PlaidFormatError, match="refusing to load posix.system"):
        read_plaid(tmp_path / "st")


# PyLate 1.2 pins transformers 4.48.2 / sentence-transformers 4.0.2, so it lives in a venv of its own
# (`make test` builds it): PyLate writes there (tests/pylate_side.py), mvstore reads here.
PYLATE_PYTHON = Path(__file__).resolve().parents[1] / ".venv-pylate" / "bin" / "python"


def run_pylate_side(kind, tmp_path, **arrays):
    """Runs tests/pylate_side.py KIND with PyLate 1.2's venv (skips where it is not built) and returns the
    arrays it wrote. torch runs ``ninja`` from PATH to build PyLate's C++ extensions: that venv's bin goes first."""
    if not PYLATE_PYTHON.exists():
        pytest.skip(f"no PyLate 1.2 venv at {PYLATE_PYTHON.parent.parent} (`make test` builds it)")
    np.savez(tmp_path / "in.npz", **arrays)
    env = dict(os.environ, PATH=os.pathsep.join([str(PYLATE_PYTHON.parent), os.environ.get("PATH", "")]))
    env.pop("PYTHONPATH", None)  # the PyLate side imports no mvstore
    script = Path(__file__).with_name("pylate_side.py")
    proc = subprocess.run(
        [str(PYLATE_PYTHON), str(script), kind, str(tmp_path / "in.npz"), str(tmp_path)],
        env=env, capture_output=True, text=True,
    )  # fmt: skip
    assert proc.returncode == 0, f"{script.name} {kind} failed:\n{proc.stdout}{proc.stderr}"
    return np.load(tmp_path / "pylate.npz")


def test_real_pylate_stanford_index(tmp_path):
    """PyLate 1.2 (the `pylate` extra, in its own venv) builds a Stanford ColBERT index on the CPU; the import
    decodes what PyLate's own codec decompresses and keeps its ids, removed documents left out."""
    docs = make_docs(120, lo=5, hi=25)
    ids = [f"doc-{i}" for i in range(120)]
    q = docs[33][:4]
    docs_arrays = {f"docs_{i}": d for i, d in enumerate(docs)}
    theirs = run_pylate_side("stanford", tmp_path, ids=ids, remove=["doc-7"], query=q, **docs_arrays)
    assert str(theirs["version"]).startswith("1.2.")
    plaid = read_plaid(tmp_path / "pl" / "ix")
    assert plaid.layout == "stanford" and plaid.id_source == "pylate" and plaid.ids[7] is None
    kept = plaid.kept()
    np.testing.assert_array_equal(kept, theirs["kept"])
    mine = plaid.decode(kept)
    assert theirs["lengths"].tolist() == mine.lengths.tolist()
    np.testing.assert_allclose(mine.values, theirs["values"], atol=1e-5)
    idx = mvstore.import_plaid(tmp_path / "pl" / "ix", tmp_path / "ix", spec="fp16", progress=False)
    assert len(idx) == 119
    assert str(theirs["top"]) == "doc-33" == idx.search(q, k=1).to_pylist()[0]["id"]
