"""Token pooling: Ward clusters equal scipy's, counts, norms, protected tokens, k-means, patch grids, errors."""

import math

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scipy.cluster.hierarchy import fcluster, linkage

from mvstore import Ragged
from mvstore.exceptions import (
    DeviceUnavailableError,
    InvalidArgumentError,
    InvalidDtypeError,
    InvalidVectorsError,
)
from mvstore.pooling import _cluster_labels, _ward_batch, n_clusters, pool, pool_labels, pool_patches


def canon(labels: np.ndarray) -> np.ndarray:
    """Relabel clusters by order of first appearance (so equal partitions give equal arrays)."""
    _, first, inv = np.unique(labels, return_index=True, return_inverse=True)
    rank = np.empty(len(first), np.int64)
    rank[np.argsort(first)] = np.arange(len(first))
    return rank[inv]


def scipy_ward(x: np.ndarray, k: int) -> np.ndarray:
    if len(x) == 1:
        return np.zeros(1, np.int64)
    return canon(fcluster(linkage(x.astype(np.float64), "ward"), k, "maxclust"))


def random_docs(rng, n_docs, dim, lo, hi, clustered=True):
    docs = []
    for _ in range(n_docs):
        n = int(rng.integers(lo, hi + 1))
        if clustered:
            centres = rng.standard_normal((max(1, n // 8), dim))
            x = centres[rng.integers(0, len(centres), n)] + 0.4 * rng.standard_normal((n, dim))
        else:
            x = rng.standard_normal((n, dim))
        docs.append((x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32))
    return Ragged.from_list(docs)


def assert_same_as_scipy(docs: Ragged, factor: float, labels: np.ndarray, protected: int = 0):
    for i, x in enumerate(docs):
        lab = labels[docs.offsets[i] : docs.offsets[i + 1]]
        p = min(protected, len(x))
        assert lab[:p].tolist() == list(range(p))
        if len(x) > p:
            ref = scipy_ward(x[p:], n_clusters(len(x) - p, factor))
            np.testing.assert_array_equal(canon(lab[p:]), ref, err_msg=f"doc {i} n={len(x)} factor={factor}")
            assert lab[p:].min() == p  # clusters numbered after the protected tokens, by first token
            assert (canon(lab[p:]) == lab[p:] - p).all()


# ----------------------------------------------------------------------------------- Ward == scipy
@pytest.mark.parametrize("factor", [1.5, 2, 3, 4.5])
@pytest.mark.parametrize("clustered", [True, False])
def test_ward_same_partitions_as_scipy_random(rng, factor, clustered):
    docs = random_docs(rng, 60, int(rng.integers(4, 48)), 1, 90, clustered)
    assert_same_as_scipy(docs, factor, pool_labels(docs, factor))


def test_ward_same_partitions_as_scipy_real_like():
    from mvstore.testing import synthetic_docs

    docs = synthetic_docs(40, 384, min_len=180, max_len=256, seed=3)
    for factor in (2, 3):
        assert_same_as_scipy(docs, factor, pool_labels(docs, factor))


def test_torch_ward_settles_near_ties_by_exact_rescoring_like_scipy(rng):
    # near-duplicate tokens (a few coordinates moved by up to 30 float32 ulps) make many nearest-neighbour
    # choices undecidable from the float64 Gram matrix's error bounds: they are settled by exact re-scoring
    # from the member tokens, giving scipy's clusters, as the compiled chain does
    docs = []
    for _ in range(25):
        base = rng.standard_normal((12, 64)).astype(np.float32)
        base /= np.linalg.norm(base, axis=1, keepdims=True)
        x = np.repeat(base, 6, axis=0)
        step = np.spacing(np.abs(x)) * rng.integers(-30, 31, x.shape) * (rng.random(x.shape) < 0.2)
        docs.append(rng.permutation((x + step).astype(np.float32)))
    docs = Ragged.from_list(docs)
    lengths = docs.lengths
    ks = n_clusters(lengths, 3)
    torch_path = _cluster_labels(docs.values, docs.offsets[:-1], lengths, ks, "ward", "cpu", backend="torch")
    compiled = _cluster_labels(docs.values, docs.offsets[:-1], lengths, ks, "ward", "cpu", backend="compiled")
    assert_same_as_scipy(docs, 3, torch_path)
    assert_same_as_scipy(docs, 3, compiled)
    # the exact re-scoring path really ran
    x = torch.from_numpy(np.stack(list(docs)))
    _, stats = _ward_batch(x, torch.from_numpy(lengths), torch.from_numpy(ks))
    assert stats["rescored_rows"] > 0 and stats["merges"] >= (lengths - ks).sum()


def test_ward_small_batches_equal_one_batch(rng):
    docs = random_docs(rng, 30, 16, 2, 60)
    lengths = docs.lengths
    ks = n_clusters(lengths, 2)
    one = _cluster_labels(docs.values, docs.offsets[:-1], lengths, ks, "ward", "cpu", backend="torch")
    many = _cluster_labels(
        docs.values, docs.offsets[:-1], lengths, ks, "ward", "cpu", max_elems=5000, backend="torch"
    )
    np.testing.assert_array_equal(one, many)


def test_worker_threads_give_the_same_labels(rng):
    docs = random_docs(rng, 40, 16, 2, 60)
    before = torch.get_num_threads()
    one = pool_labels(docs, 2, workers=1)
    np.testing.assert_array_equal(one, pool_labels(docs, 2, workers=3))
    assert torch.get_num_threads() == before  # the single-threaded section restores the setting
    with pytest.raises(InvalidArgumentError, match="workers=0 must be a positive integer"):
        pool(docs, 2, workers=0)


def test_ward_on_scifact_tokens_matches_scipy():
    data = pytest.importorskip("benchmarks.data")
    if not data.scifact_available() or not (data.CACHE / "embeddings").exists():
        pytest.skip("SciFact embeddings are not cached")
    docs = data.load_scifact(max_docs=400).docs[:60]
    assert_same_as_scipy(docs, 2, pool_labels(docs, 2))


# -------------------------------------------------------------------------------- output contract
def test_pool_counts_norms_and_means(rng):
    docs = random_docs(rng, 20, 24, 1, 70)
    out, labels = pool(docs, 2.5, return_labels=True)
    assert len(out) == len(docs)
    assert out.lengths.tolist() == [n_clusters(n, 2.5) for n in docs.lengths]
    np.testing.assert_allclose(np.linalg.norm(out.values, axis=1), 1.0, atol=1e-5)
    for i, x in enumerate(docs):
        lab = labels[docs.offsets[i] : docs.offsets[i + 1]]
        for c in range(len(out[i])):
            m = x[lab == c].astype(np.float64).mean(0)
            np.testing.assert_allclose(out[i][c], m / np.linalg.norm(m), atol=1e-5)


def test_protected_tokens_kept_in_front_unchanged(rng):
    docs = random_docs(rng, 15, 16, 1, 40)
    out, labels = pool(docs, 2, protected=3, return_labels=True)
    for i, x in enumerate(docs):
        p = min(3, len(x))
        np.testing.assert_array_equal(out[i][:p], x[:p])
        assert len(out[i]) == p + n_clusters(len(x) - p, 2)
    assert_same_as_scipy(docs, 2, labels, protected=3)


def test_protected_tokens_not_renormalized():
    x = np.array([[3.0, 4.0], [1.0, 0.0], [0.0, 1.0], [0.1, 1.0]], np.float32)
    out = pool(Ragged.from_list([x]), 2, protected=1)
    assert out[0][0].tolist() == [3.0, 4.0]
    assert len(out[0]) == 3


def test_factor_one_is_identity(rng):
    docs = random_docs(rng, 5, 8, 1, 20)
    assert pool(docs, 1) is docs
    out, labels = pool(docs, 1, return_labels=True)
    assert labels.tolist() == np.concatenate([np.arange(n) for n in docs.lengths]).tolist()


def test_n_clusters_rounding():
    assert [n_clusters(n, 2) for n in (1, 2, 3, 240, 241)] == [1, 1, 2, 120, 121]
    assert n_clusters(6, 1.2) == 5 and n_clusters(7, 1.2) == 6
    assert n_clusters(0, 3) == 0 and n_clusters(2, 100) == 1


def test_output_is_deterministic_and_keeps_dtype(rng):
    docs = random_docs(rng, 10, 16, 5, 40)
    a, b = pool(docs, 2), pool(docs, 2)
    np.testing.assert_array_equal(a.values, b.values)
    half = pool(docs.astype(np.float16), 2)
    assert half.values.dtype == np.float16


def test_empty_batch_and_single_token_docs():
    empty = Ragged(np.zeros((0, 4), np.float32), np.zeros(1, np.int64))
    assert len(pool(empty, 2)) == 0
    one = Ragged.from_list([np.array([[2.0, 0.0]], np.float32)])
    assert pool(one, 4)[0].tolist() == [[1.0, 0.0]]


# --------------------------------------------------------------------------------------- hypothesis
@st.composite
def doc_batches(draw):
    n_docs = draw(st.integers(1, 4))
    dim = draw(st.integers(2, 8))
    seed = draw(st.integers(0, 2**31 - 1))
    lens = [draw(st.integers(1, 30)) for _ in range(n_docs)]
    rng = np.random.default_rng(seed)
    return Ragged.from_list([rng.standard_normal((n, dim)).astype(np.float32) for n in lens])


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(doc_batches(), st.floats(1.01, 6.0), st.integers(0, 4), st.sampled_from(["ward", "kmeans"]))
def test_property_counts_norms_protected(docs, factor, protected, method):
    out, labels = pool(docs, factor, method=method, protected=protected, return_labels=True)
    for i, x in enumerate(docs):
        p = min(protected, len(x))
        assert len(out[i]) == p + n_clusters(len(x) - p, factor)
        np.testing.assert_array_equal(out[i][:p], x[:p])
        np.testing.assert_allclose(np.linalg.norm(out[i][p:], axis=1), 1.0, atol=1e-5)
        lab = labels[docs.offsets[i] : docs.offsets[i + 1]]
        assert sorted(set(lab.tolist())) == list(range(len(out[i])))  # every output has a token


@settings(max_examples=30, deadline=None)
@given(doc_batches(), st.floats(1.01, 5.0), st.integers(0, 2**31 - 1))
def test_property_shuffling_tokens_keeps_the_set_of_ward_vectors(docs, factor, seed):
    rng = np.random.default_rng(seed)
    shuffled = Ragged.from_list([rng.permutation(x) for x in docs])
    a, b = pool(docs, factor), pool(shuffled, factor)
    for i in range(len(docs)):
        ka = np.round(a[i].astype(np.float64), 4)
        kb = np.round(b[i].astype(np.float64), 4)
        np.testing.assert_allclose(ka[np.lexsort(ka.T)], kb[np.lexsort(kb.T)], atol=2e-4)


@settings(max_examples=25, deadline=None)
@given(doc_batches(), st.floats(1.01, 5.0))
def test_property_ward_equals_scipy(docs, factor):
    assert_same_as_scipy(docs, factor, pool_labels(docs, factor))


# ------------------------------------------------------------------------------------------ k-means
def test_kmeans_counts_nonempty_and_deterministic(rng):
    docs = random_docs(rng, 12, 32, 1, 80)
    a, la = pool(docs, 3, method="kmeans", return_labels=True)
    b, lb = pool(docs, 3, method="kmeans", return_labels=True)
    np.testing.assert_array_equal(a.values, b.values)
    np.testing.assert_array_equal(la, lb)
    assert a.lengths.tolist() == [n_clusters(n, 3) for n in docs.lengths]
    for i in range(len(docs)):
        lab = la[docs.offsets[i] : docs.offsets[i + 1]]
        assert set(lab.tolist()) == set(range(len(a[i])))
        assert (canon(lab) == lab).all()  # numbered by first token


def test_kmeans_separates_obvious_clusters_and_handles_duplicates():
    x = np.array([[1, 0], [1, 0.01], [0, 1], [0.01, 1], [-1, 0], [-1, 0.01]], np.float32)
    lab = pool_labels([x], 2, method="kmeans")
    assert lab.tolist() == [0, 0, 1, 1, 2, 2]
    dup = np.ones((5, 3), np.float32)
    out = pool([dup], 2, method="kmeans")
    assert len(out[0]) == 3
    np.testing.assert_allclose(out[0], np.full((3, 3), 1 / np.sqrt(3)), atol=1e-6)


# ---------------------------------------------------------------------------------------- patches
def test_spatial_patches_2x2_blocks():
    rows, cols, dim = 4, 4, 3
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2 + rows * cols, dim)).astype(np.float32)
    out, labels = pool_patches([x], (rows, cols), protected=2, return_labels=True)
    assert len(out[0]) == 2 + 4
    np.testing.assert_array_equal(out[0][:2], x[:2])
    grid = x[2:].reshape(rows, cols, dim)
    block = grid[2:4, 0:2].reshape(-1, dim).astype(np.float64).mean(0)  # bottom-left tile = output 2 + 2
    np.testing.assert_allclose(out[0][4], block / np.linalg.norm(block), atol=1e-6)
    assert labels[2:].reshape(rows, cols).tolist() == [[2, 2, 3, 3], [2, 2, 3, 3], [4, 4, 5, 5], [4, 4, 5, 5]]


def test_spatial_patches_ragged_edges_and_rect_blocks():
    x = np.random.default_rng(2).standard_normal((25, 4)).astype(np.float32)
    out, labels = pool_patches([x, x], (5, 5), factor=4, return_labels=True)
    assert out.lengths.tolist() == [9, 9]
    assert labels[:25].reshape(5, 5)[4].tolist() == [6, 6, 7, 7, 8]
    out2 = pool_patches([x], (5, 5), block=(1, 2))
    assert len(out2[0]) == 15
    np.testing.assert_allclose(np.linalg.norm(out2.values, axis=1), 1.0, atol=1e-6)


def test_semantic_patches_are_ward_on_patches(rng):
    x = rng.standard_normal((1 + 36, 8)).astype(np.float32)
    out, labels = pool_patches([x], (6, 6), mode="semantic", factor=4, protected=1, return_labels=True)
    assert len(out[0]) == 1 + 9
    np.testing.assert_array_equal(canon(labels[1:]), scipy_ward(x[1:], 9))


def test_patch_errors():
    x = np.ones((10, 4), np.float32)
    with pytest.raises(InvalidVectorsError, match=r"document 0 has 10 tokens but grid 3x3 .* needs 9"):
        pool_patches([x], (3, 3))
    with pytest.raises(InvalidArgumentError, match="grid must be a"):
        pool_patches([x], (2, 0))
    with pytest.raises(InvalidArgumentError, match="grid must be a"):
        pool_patches([x], 10)
    with pytest.raises(InvalidArgumentError, match="not a square number; pass block"):
        pool_patches([x], (2, 5), factor=2)
    with pytest.raises(InvalidArgumentError, match="does not match block"):
        pool_patches([x], (2, 5), factor=4, block=(1, 2))
    with pytest.raises(InvalidArgumentError, match="unknown patch pooling mode 'tiles'"):
        pool_patches([x], (2, 5), mode="tiles")
    with pytest.raises(InvalidArgumentError, match="block= only applies"):
        pool_patches([x], (2, 5), mode="semantic", block=(2, 2))


# ----------------------------------------------------------------------------------------- errors
def test_bad_arguments(rng):
    docs = random_docs(rng, 2, 4, 3, 5)
    with pytest.raises(InvalidArgumentError, match="pooling factor must be a finite number >= 1"):
        pool(docs, 0.5)
    with pytest.raises(InvalidArgumentError, match="pooling factor must be a finite number >= 1"):
        pool(docs, float("nan"))
    with pytest.raises(InvalidDtypeError, match="pooling factor must be a real number"):
        pool(docs, "2")
    with pytest.raises(
        InvalidArgumentError, match="unknown pooling method 'average'; use one of 'ward', 'kmeans'"
    ):
        pool(docs, 2, method="average")
    with pytest.raises(InvalidArgumentError, match="protected=-1 must be >= 0"):
        pool(docs, 2, protected=-1)
    with pytest.raises(InvalidDtypeError, match="protected must be an int"):
        pool_labels(docs, 2, protected=1.5)


def test_nan_input_is_rejected():
    x = np.ones((4, 3), np.float32)
    x[2, 1] = np.nan
    with pytest.raises(InvalidVectorsError, match="document 0 has a NaN or Inf value at token 2"):
        pool(Ragged(x, np.array([0, 4])), 2)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error raised without CUDA")
def test_cuda_without_gpu_is_an_error(rng):
    with pytest.raises(DeviceUnavailableError, match="CUDA is not available"):
        pool(random_docs(rng, 2, 4, 3, 5), 2, device="cuda")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_gives_the_same_ward_labels_as_cpu(rng):
    from mvstore.testing import synthetic_docs

    docs = synthetic_docs(64, 384, min_len=30, max_len=256, seed=5)
    cpu = pool_labels(docs, 2)
    gpu = pool_labels(docs, 2, device="cuda")
    np.testing.assert_array_equal(cpu, gpu)
    assert_same_as_scipy(docs[:20], 2, gpu)
    k = pool(docs, 2, method="kmeans", device="cuda")
    assert k.lengths.tolist() == [n_clusters(n, 2) for n in docs.lengths]


def test_ceil_matches_math_for_simple_factors():
    for n in range(1, 50):
        for f in (1.5, 2, 2.5, 3, 4, 8):
            assert n_clusters(n, f) == max(1, math.ceil(n / f))
