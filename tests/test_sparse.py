"""SLIM sparse codecs (mvstore.codecs.sparse) and sparse two-stage search (mvstore.search.sparse)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from mvstore import Ragged
from mvstore.codecs.base import REGISTRY
from mvstore.codecs.sparse import SlimHead, SparseKMeans, is_sparse_codec, log1p_relu
from mvstore.exceptions import (
    DimensionMismatchError,
    IndexCorruptedError,
    InvalidDtypeError,
    InvalidVectorsError,
    NotFittedError,
    SpecError,
)
from mvstore.search.candidates import ExhaustiveCandidates
from mvstore.search.maxsim import maxsim_batch
from mvstore.search.params import SearchParams, SearchParamsError
from mvstore.search.searcher import Searcher, SnapshotSearcher, make_generator, make_searcher
from mvstore.search.snapshot import Snapshot
from mvstore.search.sparse import (
    SparseCandidates,
    SparseSearcher,
    attach_sparse_map,
    bounds,
    build_sparse_postings,
    sparse_maxsim_codes,
)
from mvstore.spec import build_pipeline, bytes_per_token, code_size, parse
from mvstore.testing import synthetic_docs


def small_head(v=6, d=4, top=2, threshold=0.0, bias=None):
    w = np.zeros((v, d), np.float32)
    w[:d, :d] = np.eye(d)
    w[d:, 0] = np.arange(1, v - d + 1) * 0.1
    return SlimHead(d, v, top, threshold).set_head(w, bias)


# ------------------------------------------------------------------------------------------ the maps
def test_log1p_relu_known_numbers():
    z = np.array([-2.0, 0.0, 0.5, 1.0, np.e**2 - 1], np.float32)
    np.testing.assert_allclose(log1p_relu(z), [0.0, 0.0, np.log(1.5), np.log(2.0), 2.0], rtol=1e-6)


def test_slim_head_math_topk_and_threshold():
    head = small_head(v=6, d=4, top=3, bias=np.array([0, 0, 0, 0, 0, -5], np.float32))
    x = np.array([[2.0, 1.0, -1.0, 0.5]], np.float32)
    # logits: W x + b = [2, 1, -1, .5, .2, .4 - 5] -> log1p(relu) top-3 terms 0, 1, 3
    head.fit(x)
    ids, w = head.sparse_transform(x)
    assert ids.tolist() == [[0, 1, 3]]
    np.testing.assert_allclose(w[0], np.log1p([2.0, 1.0, 0.5]), rtol=1e-6)
    # a threshold drops weights at or below it; unused slots have weight 0
    pruned = SlimHead(4, 6, 3, threshold=0.5).set_head(head.weight_, head.bias_).fit(x)
    ids, w = pruned.sparse_transform(x)
    assert ids.tolist() == [[0, 1, 0]] and w[0, 2] == 0.0 and w[0, 1] == pytest.approx(np.log(2.0))
    codes = pruned.encode(x)
    dids, dw = pruned.sparse_decode(codes)
    assert dids.tolist() == [[0, 1, 0]] and dw[0, 2] == 0.0
    # a vector with no positive logit maps to the empty sparse vector (every slot unused)
    assert (pruned.sparse_decode(pruned.encode(-np.ones_like(x)))[1] == 0).all()


def test_code_layout_and_size():
    x = np.array([[0.0, 3.0, 0.0, 1.0]], np.float32)
    head = small_head(v=6, d=4, top=2).fit(x)
    assert head.code_size == 2 * 2 + 2 and head.id_dtype == np.dtype("<u2")
    codes = head.encode(x)
    assert codes.dtype == np.uint8 and codes.shape == (1, 6)
    assert codes[0, :4].view("<u2").tolist() == [1, 3]  # ids first, then uint8 weights
    assert codes[0, 4:].tolist() == [255, round(255 * np.log(2) / np.log(4))]  # log1p(3) is the fitted max
    assert SlimHead(8, 70_000, 4).code_size == 4 * 4 + 4  # uint32 ids past 65536 terms
    assert SparseKMeans(8, 4096, 8).code_size == 24


def test_decode_is_dense_sparse_vector_and_quantization_error_bounded(rng):
    head = small_head(v=6, d=4, top=3)
    x = np.abs(rng.normal(size=(50, 4))).astype(np.float32)
    head.fit(x)
    codes = head.encode(x)
    dense = head.decode(codes)
    assert dense.shape == (50, 6) and dense.dtype == np.float32
    ids, w = head.sparse_transform(x)
    ref = np.zeros((50, 6), np.float32)
    np.put_along_axis(ref, ids, w, axis=1)
    assert np.abs(dense - ref).max() <= head.scale_ / 2 + 1e-6
    # transform_query gives the unquantized dense sparse vector
    np.testing.assert_allclose(head.transform_query(x), ref, rtol=1e-6)


def test_spk_weights_are_normalized_and_fade_at_the_edge(rng):
    x = synthetic_docs(40, 16, n_topics=8, seed=3).values
    m = SparseKMeans(16, 32, 4).fit(x)
    ids, w = m.sparse_transform(x)
    np.testing.assert_allclose(np.linalg.norm(w, axis=1), 1.0, rtol=1e-5)
    assert (np.diff(w, axis=1) <= 1e-7).all()  # largest first
    # the weights are relu(cos_v - cos_(t+1)): recompute from the centroids
    xn = x / np.linalg.norm(x, axis=1, keepdims=True)
    cos = xn @ m.centroids_.T
    srt = -np.sort(-cos, axis=1)
    raw = np.maximum(srt[:, :4] - srt[:, 4:5], 0)
    np.testing.assert_allclose(w, raw / np.linalg.norm(raw, axis=1, keepdims=True), atol=1e-4)
    assert set(ids[0].tolist()) == set(np.argsort(-cos[0])[:4].tolist())
    # a threshold drops small normalized weights
    mp = SparseKMeans(16, 32, 4, threshold=0.3).fit(x)
    _, wp = mp.sparse_transform(x)
    assert ((wp == 0) | (wp > 0.3)).all() and (wp == 0).any()


def test_state_round_trip_through_json_and_npz(tmp_path, rng):
    x = synthetic_docs(40, 16, n_topics=8, seed=3).values
    for codec in (SparseKMeans(16, 32, 4).fit(x), small_head(v=20, d=16, top=4).fit(x)):
        arrays, meta = codec.get_state()
        np.savez(tmp_path / "s.npz", **arrays)
        with np.load(tmp_path / "s.npz", allow_pickle=False) as z:
            loaded = {k: z[k] for k in z.files}
        other = type(codec)(16, codec.vocab, codec.top).set_state(loaded, json.loads(json.dumps(meta)))
        np.testing.assert_array_equal(other.encode(x), codec.encode(x))
        with pytest.raises(IndexCorruptedError, match="missing array 'scale'"):
            type(codec)(16, codec.vocab, codec.top).set_state(
                {k: v for k, v in loaded.items() if k != "scale"}, meta
            )
    with pytest.raises(IndexCorruptedError, match="expected finite floats of shape"):
        SparseKMeans(16, 32, 4).set_state(
            {"scale": np.ones(1, np.float32), "centroids": np.ones((5, 16))}, meta | {"spec": "spk32t4"}
        )


def test_sparse_codecs_are_registered_and_spec_grammar():
    assert REGISTRY["spk"] is SparseKMeans and REGISTRY["slim"] is SlimHead
    for s, size in [
        ("spk4096t8", 24),
        ("pool2,spk4096t8p0.05", 24),
        ("pca64,slim30522t16", 48),
        ("slim100000t8p1.5", 40),
    ]:
        assert str(parse(s)) == s
        assert code_size(s, 384) == size
        assert build_pipeline(s, 384).spec() == (s.split(",", 1)[1] if s.startswith("pool") else s)
    assert bytes_per_token("pool2,spk4096t8", 384) == 12.0
    assert is_sparse_codec(build_pipeline("pca64,spk1024t8", 384)) and not is_sparse_codec(
        build_pipeline("fp16", 8)
    )
    for bad, match in [
        ("spk4096", r"expected spk<V>t<t>\[p<thr>\]"),
        ("slimhead", "expected slim<V>t<t>"),
        ("spk4096t8p0", "expected spk"),
        ("spk0t8", "expected spk"),
        ("spk8t8", "t=8 must be smaller than V=8"),
    ]:
        with pytest.raises(SpecError, match=match):
            build_pipeline(bad, 384)


# ------------------------------------------------------------------------------------------ head files
def test_head_from_safetensors_npz_npy(tmp_path, rng):
    w = rng.normal(size=(30, 8)).astype(np.float32)
    b = rng.normal(size=30).astype(np.float32)
    from safetensors.numpy import save_file

    save_file({"weight": w, "bias": b}, str(tmp_path / "h.safetensors"))
    np.savez(tmp_path / "h.npz", weight=w, bias=b)
    np.save(tmp_path / "h.npy", w)
    x = rng.normal(size=(20, 8)).astype(np.float32)
    ref = SlimHead(8, 30, 4).set_head(w, b).fit(x)
    for name in ("h.safetensors", "h.npz"):
        h = SlimHead.from_file(tmp_path / name, top=4).fit(x)
        assert (h.vocab, h.dim_in, h.spec()) == (30, 8, "slim30t4")
        np.testing.assert_array_equal(h.encode(x), ref.encode(x))
    h = SlimHead.from_file(tmp_path / "h.npy", top=4)
    np.testing.assert_array_equal(h.bias_, 0)  # .npy holds only the weight: zero bias
    ref.save_head(tmp_path / "again.safetensors")
    np.testing.assert_array_equal(SlimHead.from_file(tmp_path / "again.safetensors").bias_, b)


def test_bad_head_files(tmp_path, rng):
    w = rng.normal(size=(30, 8)).astype(np.float32)
    np.savez(tmp_path / "bias_shape.npz", weight=w, bias=np.zeros(29, np.float32))
    np.savez(tmp_path / "nan.npz", weight=np.where(np.eye(30, 8) > 0, np.nan, w).astype(np.float32))
    np.savez(tmp_path / "nokey.npz", W=w)
    np.savez(tmp_path / "vec.npz", weight=np.zeros(30, np.float32))
    np.savez(tmp_path / "ints.npz", weight=np.zeros((30, 8), np.int64))
    np.save(tmp_path / "obj.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    (tmp_path / "h.pt").write_bytes(b"not a head")
    (tmp_path / "garbage.safetensors").write_bytes(b"\x00" * 20)
    cases = [
        ("bias_shape.npz", DimensionMismatchError, r"bias has shape \(29,\) but .* needs \(30,\)"),
        ("nan.npz", InvalidVectorsError, "weight contains NaN or Inf"),
        ("nokey.npz", IndexCorruptedError, r"has no array 'weight' \(found \['W'\]\)"),
        ("vec.npz", DimensionMismatchError, r"expected a 2-D \(V, dim\) matrix"),
        ("ints.npz", InvalidDtypeError, "must be a floating-point numpy array"),
        ("obj.npy", IndexCorruptedError, "without pickled objects"),
        ("h.pt", InvalidDtypeError, "use .safetensors, .npz or .npy"),
        ("garbage.safetensors", IndexCorruptedError, "cannot read head file"),
        ("missing.npz", FileNotFoundError, "does not exist"),
    ]
    for name, err, match in cases:
        with pytest.raises(err, match=match):
            SlimHead.from_file(tmp_path / name)
    with pytest.raises(DimensionMismatchError, match=r"transposed\? the head is \(V, dim\)"):
        SlimHead(8, 30, 4).set_head(w.T.copy())


def test_unfitted_and_headless_errors():
    x = np.ones((3, 4), np.float32)
    with pytest.raises(NotFittedError, match=r"has no head weights: load them with SlimHead.from_file"):
        SlimHead(4, 6, 2).fit(x)
    with pytest.raises(NotFittedError, match=r"call .fit"):
        small_head().encode(x)
    with pytest.raises(NotFittedError, match=r"call .fit"):
        SparseKMeans(4, 8, 2).sparse_decode(np.zeros((1, 6), np.uint8))
    with pytest.raises(InvalidVectorsError, match="needs at least|only 3 vectors; fit on at least 8"):
        SparseKMeans(4, 8, 2).fit(x)
    with pytest.raises(InvalidVectorsError, match="maps every training vector to an empty sparse vector"):
        small_head(top=2).fit(-np.abs(x))
    head = small_head().fit(np.eye(4, dtype=np.float32))
    bad = head.encode(np.eye(4, dtype=np.float32))
    bad[0, :2] = 255  # term id 65535 outside V=6
    with pytest.raises(IndexCorruptedError, match="do not belong to this codec"):
        head.sparse_decode(bad)


def test_real_minilm_vocabulary_head(minilm, tmp_path):
    """The bundled model's word-embedding matrix (30522 x 384) is a real lexical head: a content token's
    contextual vector puts most weight on its own word piece."""
    from safetensors.numpy import save_file

    emb = minilm.model.embeddings.word_embeddings.weight.detach().float().numpy()
    assert emb.shape == (30522, 384)
    save_file(
        {"weight": emb, "bias": np.full(30522, -0.1, np.float32)}, str(tmp_path / "minilm_head.safetensors")
    )
    head = SlimHead.from_file(tmp_path / "minilm_head.safetensors", top=16, threshold=0.02)
    assert head.spec() == "slim30522t16p0.02"
    texts = [
        "Protein folding in bacteria depends on chaperone molecules.",
        "Vaccines reduce measles mortality.",
    ]
    docs = minilm.encode_documents(texts)
    head.fit(docs.values)
    ids, w = head.sparse_decode(head.encode(docs.values))
    tok = minilm.tokenizer(texts[0])["input_ids"]
    assert len(tok) == docs.lengths[0]  # one vector per word piece, [CLS]/[SEP] kept
    for word in ("protein", "bacteria", "molecules"):
        row = tok.index(minilm.tokenizer.convert_tokens_to_ids(word))
        assert ids[row, 0] == tok[row], word  # the token's own word piece is its heaviest term
    # the codec's terms are the true top-16 of log1p(relu(E x + b)), weights within quantization error
    import torch

    z = torch.log1p(torch.relu(torch.from_numpy(docs.values) @ torch.from_numpy(emb).T - 0.1))
    vals, top = z.topk(16, dim=1)
    keep = vals.numpy() > 0.02
    assert all(set(ids[i][w[i] > 0]) == set(top[i].numpy()[keep[i]]) for i in range(len(ids)))
    np.testing.assert_allclose(
        np.sort(w, 1), np.sort(np.where(keep, vals.numpy(), 0), 1), atol=head.scale_ / 2 + 1e-6
    )


# ------------------------------------------------------------------------------------------ search
def _snapshot(spec, docs, dim):
    p = build_pipeline(spec, dim).fit(docs.values)
    return Snapshot(0, np.arange(len(docs)), p.encode(docs.values), docs.offsets, p, np.diff(docs.offsets))


@pytest.fixture(scope="module")
def corpus():
    return synthetic_docs(120, 32, n_topics=24, seed=0, min_len=5, max_len=40), synthetic_docs(
        6, 32, n_topics=24, seed=0, min_len=4, max_len=12
    )


@pytest.fixture(scope="module")
def sparse_snap(corpus):
    return _snapshot("spk128t6", corpus[0], 32)


def _exact_sparse(snap, queries):
    qt = snap.codec.transform_query(queries.values)
    ids, w = snap.codec.quantizer.sparse_decode(snap.codes)
    return qt, sparse_maxsim_codes(qt, queries.offsets, ids, w, snap.offsets)


def test_sparse_maxsim_equals_dense_reference(sparse_snap, corpus):
    _, queries = corpus
    qt, exact = _exact_sparse(sparse_snap, queries)
    dense_docs = Ragged(sparse_snap.codec.decode(sparse_snap.codes), sparse_snap.offsets)
    ref = maxsim_batch(Ragged(qt, queries.offsets), dense_docs)
    np.testing.assert_allclose(exact, ref, rtol=1e-5, atol=1e-6)
    assert (exact > 0).mean() > 0.5  # not a vacuous comparison of zeros


def test_stage1_bounds_hold_for_every_doc(sparse_snap, corpus):
    _, queries = corpus
    qt, exact = _exact_sparse(sparse_snap, queries)
    gen = SparseCandidates.from_snapshot(sparse_snap)
    for i, (lower, upper) in enumerate(gen.scores(Ragged(qt, queries.offsets))):
        assert (upper >= exact[i] - 1e-5).all()
        assert (lower <= exact[i] + 1e-5).all()
        assert (upper > lower + 1e-3).any()  # the bounds are not trivially tight


def test_bounds_against_bruteforce_on_random_sparse_data(rng):
    v, t = 20, 3
    offsets = np.array([0, 4, 5, 9, 9 + 6])
    ids = np.stack([rng.choice(v, t, replace=False) for _ in range(offsets[-1])])
    w = rng.random((offsets[-1], t)).astype(np.float32) * (rng.random((offsets[-1], t)) > 0.2)
    p = build_sparse_postings(ids, w, offsets, v)
    dense = np.zeros((offsets[-1], v), np.float32)
    np.put_along_axis(dense, ids, w, axis=1)
    q = rng.random((3, v)).astype(np.float32) * (rng.random((3, v)) > 0.6)
    tok, term = np.nonzero(q)
    lower, upper = bounds(p, tok, term, q[tok, term], 3)
    m = np.stack([dense[a:b].max(0) for a, b in zip(offsets[:-1], offsets[1:])])  # (docs, V) max weights
    np.testing.assert_allclose(upper, (q.sum(0) * m).sum(1), rtol=1e-5)
    np.testing.assert_allclose(lower, (q[None] * m[:, None]).max(2).sum(1), rtol=1e-5)
    exact = sparse_maxsim_codes(q, np.array([0, 3]), ids, w, offsets)[0]
    assert (lower <= exact + 1e-6).all() and (exact <= upper + 1e-6).all()


def test_search_equals_exhaustive_sparse_maxsim_when_candidates_cover_all(sparse_snap, corpus):
    _, queries = corpus
    _, exact = _exact_sparse(sparse_snap, queries)
    res = SparseSearcher(sparse_snap, SearchParams(candidates="sparse", n_rerank=sparse_snap.n_docs)).search(
        queries, 10
    )
    for i, (rows, scores) in enumerate(res):
        ref = np.lexsort((np.arange(len(exact[i])), -exact[i]))[:10]
        np.testing.assert_array_equal(rows, ref)
        np.testing.assert_allclose(scores, exact[i][ref], rtol=1e-5)
    # filtered: disallowed rows never come back, and the result is the oracle on the allowed subset
    allowed = np.zeros(sparse_snap.n_docs, bool)
    allowed[::3] = True
    res = SparseSearcher(sparse_snap, SearchParams(n_rerank=1000)).search(queries, 5, allowed)
    for i, (rows, _) in enumerate(res):
        sub = np.flatnonzero(allowed)
        ref = sub[np.lexsort((sub, -exact[i][sub]))[:5]]
        np.testing.assert_array_equal(rows, ref)


def test_small_candidate_count_keeps_recall(sparse_snap, corpus):
    _, queries = corpus
    _, exact = _exact_sparse(sparse_snap, queries)
    res = SparseSearcher(sparse_snap, SearchParams(n_rerank=40)).search(queries, 5)
    hits = [len(set(rows) & set(np.argsort(-exact[i])[:5])) for i, (rows, _) in enumerate(res)]
    assert np.mean(hits) / 5 >= 0.8


def test_searcher_loads_sparse_generator(sparse_snap, corpus):
    """The search engineer's Searcher(candidates="sparse") builds our generator from the snapshot."""
    _, queries = corpus
    res = Searcher(sparse_snap, SearchParams(candidates="sparse", n_rerank=1000)).search(queries, 5)
    ours = SparseSearcher(sparse_snap, SearchParams(n_rerank=1000)).search(queries, 5)
    for (a, sa), (b, sb) in zip(res, ours, strict=True):
        np.testing.assert_array_equal(a, b)
        np.testing.assert_allclose(sa, sb, rtol=1e-4, atol=1e-5)


def test_make_searcher_is_the_one_choice(sparse_snap, corpus):
    """One factory picks the searcher (the store's) and the stage-1 generator (the Searcher's)."""
    docs, _ = corpus
    dense = _snapshot("fp16", docs, 32)
    picks = {
        (sparse_snap, "auto"): SparseSearcher,
        (sparse_snap, "sparse"): SparseSearcher,
        (sparse_snap, "exhaustive"): Searcher,
        (dense, "auto"): Searcher,
        (dense, "exhaustive"): Searcher,
    }
    for (snap, kind), cls in picks.items():
        s = make_searcher(snap, SearchParams(candidates=kind))
        assert type(s) is cls and isinstance(s, SnapshotSearcher)
    assert isinstance(make_generator(dense, SearchParams(candidates="exhaustive")), ExhaustiveCandidates)
    assert isinstance(make_generator(sparse_snap, SearchParams(candidates="sparse")), SparseCandidates)
    assert type(make_searcher(dense)) is Searcher


def test_sparse_prefilter_dense_rerank(corpus):
    docs, queries = corpus
    snap = _snapshot("fp16", docs, 32)
    with pytest.raises(NotFittedError, match="attach_sparse_map"):
        SparseCandidates.from_snapshot(snap)
    m = attach_sparse_map(snap, "spk64t6")
    assert snap.extras["sparse_map"] is m and m.dim_in == 32
    oracle = Searcher(snap, SearchParams(candidates="exhaustive")).search(queries, 10)
    full = SparseSearcher(snap, SearchParams(n_rerank=snap.n_docs)).search(queries, 10)
    for (a, sa), (b, sb) in zip(full, oracle, strict=True):
        np.testing.assert_array_equal(a, b)
        np.testing.assert_allclose(sa, sb, rtol=1e-5)
    res = Searcher(snap, SearchParams(candidates="sparse", n_rerank=30)).search(queries, 10)
    recall = np.mean([len(set(a) & set(b)) / 10 for (a, _), (b, _) in zip(res, oracle)])
    assert recall >= 0.8


def test_postings_cached_per_snapshot(sparse_snap):
    g1 = SparseCandidates.from_snapshot(sparse_snap)
    g2 = SparseCandidates.from_snapshot(sparse_snap)
    assert g1.postings is g2.postings
    assert g1.postings.n_docs == sparse_snap.n_docs and g1.postings.vocab == 128


def test_search_param_errors(sparse_snap, corpus):
    docs, queries = corpus
    with pytest.raises(SearchParamsError, match=r"alpha=2 must be a number in \[0, 1\]"):
        SparseSearcher(sparse_snap, alpha=2)
    with pytest.raises(SearchParamsError, match="needs dense codes"):
        SparseSearcher(sparse_snap, rerank="dense")
    with pytest.raises(SearchParamsError, match="must be 'auto', 'sparse' or 'dense'"):
        SparseSearcher(sparse_snap, rerank="lexical")
    with pytest.raises(SearchParamsError, match="runs on the CPU only"):
        SparseSearcher(sparse_snap, SearchParams(device="cuda"))
    with pytest.raises(SearchParamsError, match="positive integer"):
        SparseSearcher(sparse_snap).search(queries, 0)
    with pytest.raises(InvalidDtypeError, match="k must be an int"):
        SparseSearcher(sparse_snap).search(queries, 2.0)
    with pytest.raises(SearchParamsError, match="positive integer"):
        SparseCandidates.from_snapshot(sparse_snap).candidates(
            Ragged(sparse_snap.codec.transform_query(queries.values), queries.offsets), 0
        )
    with pytest.raises(DimensionMismatchError, match="allowed has shape"):
        SparseSearcher(sparse_snap).search(queries, 3, np.ones(5, bool))
    with pytest.raises(SpecError, match="already sparse"):
        attach_sparse_map(sparse_snap, "spk64t4")
    dense = _snapshot("fp16", docs, 32)
    with pytest.raises(SpecError, match="not a sparse map token"):
        attach_sparse_map(dense, "pq8")
    with pytest.raises(SearchParamsError, match="needs sparse codes"):
        SparseSearcher(dense, sparse_map=attach_sparse_map(dense, "spk64t4"), rerank="sparse")
    with pytest.raises(DimensionMismatchError, match="takes dim 16 but the index decodes to dim 32"):
        SparseCandidates.from_snapshot(
            dense, sparse_map=SparseKMeans(16, 32, 4).fit(docs.values[:, :16].copy())
        )


# ------------------------------------------------------------------------------------------ through the store
def test_store_lifecycle_with_sparse_spec(tmp_path):
    """create, add, delete, reopen and search a sparse-only index; postings come from the stored codes of each
    version, so deletes and reopen need nothing beyond the store."""
    import mvstore.store as ms

    docs = synthetic_docs(80, 16, n_topics=12, seed=5, min_len=4, max_len=20)
    queries = synthetic_docs(4, 16, n_topics=12, seed=5, min_len=3, max_len=6)
    idx = ms.create(tmp_path / "ix", spec="spk64t4", dim=16)
    idx.add(np.arange(80), list(docs))
    v_full = idx.version
    idx.delete(np.arange(0, 80, 4))
    params = SearchParams(candidates="sparse", n_rerank=1000)

    def expected(snap, k):
        _, exact = _exact_sparse(snap, queries)
        return [snap.ids[np.lexsort((np.arange(snap.n_docs), -e))[:k]] for e in exact]

    res = idx.search(queries, k=5, params=params).to_pydict()
    reopened = ms.open(tmp_path / "ix")
    again = reopened.search(queries, k=5, params=params).to_pydict()
    assert res["id"] == again["id"] and not set(res["id"]) & set(range(0, 80, 4))
    snap = reopened.snapshot()
    assert snap.n_docs == 60 and is_sparse_codec(snap.codec)
    np.testing.assert_array_equal(np.array(res["id"]).reshape(4, 5), np.stack(expected(snap, 5)))
    # time travel: the version before the delete still holds (and returns) every document
    old = ms.open(tmp_path / "ix", version=v_full)
    np.testing.assert_array_equal(
        np.array(old.search(queries, k=5, params=params).to_pydict()["id"]).reshape(4, 5),
        np.stack(expected(old.snapshot(), 5)),
    )
    # a small candidate count still finds most of the exact top-5
    few = idx.search(queries, k=5, params=SearchParams(candidates="sparse", n_rerank=15)).to_pydict()["id"]
    hits = [len(set(few[i : i + 5]) & set(res["id"][i : i + 5])) for i in range(0, 20, 5)]
    assert sum(hits) >= 16, hits


def test_store_dense_index_with_attached_sparse_map(tmp_path):
    import mvstore.store as ms

    docs = synthetic_docs(60, 16, n_topics=12, seed=6, min_len=4, max_len=20)
    queries = synthetic_docs(3, 16, n_topics=12, seed=6, min_len=3, max_len=6)
    idx = ms.create(tmp_path / "dense", spec="fp16", dim=16)
    idx.add(np.arange(60), list(docs))
    with pytest.raises(NotFittedError, match="attach_sparse_map"):
        idx.search(queries, k=5, params=SearchParams(candidates="sparse"))
    attach_sparse_map(idx.snapshot(), "spk32t4")
    got = idx.search(queries, k=5, params=SearchParams(candidates="sparse", n_rerank=60)).to_pydict()["id"]
    ref = idx.search(queries, k=5, params=SearchParams(candidates="exhaustive")).to_pydict()["id"]
    assert got == ref
