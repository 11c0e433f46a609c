import numpy as np
import pytest
import torch

from mvstore import Ragged
from mvstore.exceptions import DeviceUnavailableError, DimensionMismatchError
from mvstore.search.maxsim import doc_chunks, maxsim, maxsim_batch, maxsim_torch

from .conftest import unit


def naive(q, docs):
    return np.array([(q @ d.T).max(axis=1).sum() for d in docs], np.float32)


@pytest.fixture
def corpus(rng):
    return Ragged.from_list([unit(rng.standard_normal((rng.integers(1, 40), 16))) for _ in range(60)])


def test_maxsim_matches_naive_reference(rng, corpus):
    q = unit(rng.standard_normal((7, 16)))
    ref = naive(q, list(corpus))
    np.testing.assert_allclose(maxsim(q, corpus), ref, rtol=1e-5, atol=1e-5)
    # tiny blocks force one document per chunk: same result
    np.testing.assert_allclose(maxsim(q, corpus, block=7), ref, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(maxsim_torch(q, corpus), ref, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(maxsim_torch(q, corpus, block=7), ref, rtol=1e-5, atol=1e-5)


def test_batch_equals_per_query(rng, corpus):
    qs = Ragged.from_list([unit(rng.standard_normal((n, 16))) for n in (3, 9, 1)])
    s = maxsim_batch(qs, corpus)
    assert s.shape == (3, 60)
    for i in range(3):
        np.testing.assert_allclose(s[i], naive(qs[i], list(corpus)), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(maxsim_torch(qs, corpus), s, rtol=1e-5, atol=1e-5)


def test_doc_chunks_cover_everything_within_budget():
    offsets = np.array([0, 5, 6, 30, 31, 40])
    chunks = list(doc_chunks(offsets, 10))
    assert chunks[0][0] == 0 and chunks[-1][1] == 5
    assert all(b == c for (_, b), (c, _) in zip(chunks, chunks[1:]))
    for a, b in chunks:
        assert b - a == 1 or offsets[b] - offsets[a] <= 10


def test_errors(rng, corpus):
    with pytest.raises(DimensionMismatchError, match="queries have dim 8 but documents have dim 16"):
        maxsim(np.ones((2, 8), np.float32), corpus)
    with pytest.raises(ValueError, match="2-D"):
        maxsim(np.ones(16, np.float32), corpus)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU error")
def test_explicit_cuda_without_gpu_is_an_error(corpus):
    with pytest.raises(DeviceUnavailableError, match="CUDA is not available"):
        maxsim_torch(np.ones((2, 16), np.float32), corpus, device="cuda")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_equals_cpu(rng, corpus):
    q = unit(rng.standard_normal((7, 16)))
    np.testing.assert_allclose(
        maxsim_torch(q, corpus, device="cuda"), maxsim(q, corpus), rtol=1e-4, atol=1e-4
    )
