import numpy as np
import pytest

from mvstore import Ragged
from mvstore.encoders import CachedEncoder, HFTokenEncoder, PyLateEncoder, SentenceTransformerTokenEncoder
from mvstore.exceptions import DeviceUnavailableError, InvalidDtypeError, MissingDependencyError


def test_hf_encoder_real_token_vectors(minilm):
    r = minilm.encode_documents(["Aspirin lowers the risk of heart attack.", "Short text"])
    assert isinstance(r, Ragged) and r.dim == 384 == minilm.dim
    # [CLS] + word pieces + [SEP], padding removed: lengths differ per text
    n0 = len(minilm.tokenizer("Aspirin lowers the risk of heart attack.")["input_ids"])
    n1 = len(minilm.tokenizer("Short text")["input_ids"])
    assert r.lengths.tolist() == [n0, n1]
    np.testing.assert_allclose(np.linalg.norm(r.values, axis=1), 1.0, atol=1e-5)
    # the same text encodes the same whether batched with a longer one or alone (padding is masked out)
    alone = minilm.encode_documents(["Short text"])
    np.testing.assert_allclose(alone[0], r[1], atol=1e-5)
    # related texts score higher than unrelated ones under MaxSim
    from mvstore.search.maxsim import maxsim

    q = minilm.encode_queries(["does aspirin prevent heart attacks"])[0]
    s = maxsim(q, r)
    assert s[0] > s[1]


def test_max_length_and_special_tokens():
    long_text = " ".join(["protein"] * 300)
    enc = HFTokenEncoder(None, query_max_length=8, doc_max_length=20, keep_special_tokens=False)
    assert enc.encode_queries([long_text]).lengths.tolist() == [6]  # 8 minus [CLS]/[SEP]
    assert enc.encode_documents([long_text]).lengths.tolist() == [18]
    assert "special0" in enc.name and "q8" in enc.name


def test_bad_text_inputs(minilm):
    with pytest.raises(InvalidDtypeError, match="wrap it in a list"):
        minilm.encode_documents("a single string")
    with pytest.raises(InvalidDtypeError, match="text 1 is a int"):
        minilm.encode_documents(["ok", 3])
    with pytest.raises(ValueError, match="text 0 is empty"):
        minilm.encode_queries(["   "])
    with pytest.raises(ValueError, match="must be positive"):
        HFTokenEncoder(None, query_max_length=0)


def test_explicit_cuda_without_gpu_is_an_error():
    import torch

    if torch.cuda.is_available():
        pytest.skip("machine has CUDA")
    with pytest.raises(DeviceUnavailableError, match="CUDA is not available"):
        HFTokenEncoder(None, device="cuda")


def test_cache_hits_do_not_reencode(minilm, tmp_path):
    calls = []

    class Counting:
        name, dim = minilm.name, minilm.dim

        def encode_documents(self, texts):
            calls.append(list(texts))
            return minilm.encode_documents(texts)

        encode_queries = encode_documents

    enc = CachedEncoder(Counting(), tmp_path)
    a = enc.encode_documents(["alpha beta", "gamma"])
    b = enc.encode_documents(["gamma", "delta", "alpha beta"])
    assert calls == [["alpha beta", "gamma"], ["delta"]]
    np.testing.assert_array_equal(a[0], b[2])
    np.testing.assert_array_equal(a[1], b[0])
    enc.encode_queries(["gamma"])  # queries are keyed separately from documents
    assert calls[-1] == ["gamma"]
    # a corrupt cache entry is re-encoded, not trusted
    victim = enc._path("doc", "gamma")
    victim.write_bytes(b"garbage")
    enc.encode_documents(["gamma"])
    assert calls[-1] == ["gamma"]


def test_sentence_transformers_adapter_matches_hf(minilm):
    pytest.importorskip("sentence_transformers")
    st = SentenceTransformerTokenEncoder(None)
    a = st.encode_documents(["Vitamin D deficiency and bone density"])
    b = minilm.encode_documents(["Vitamin D deficiency and bone density"])
    assert a.lengths.tolist() == b.lengths.tolist()
    np.testing.assert_allclose(a.values, b.values, atol=1e-4)


def test_missing_optional_dependency_says_what_to_install(monkeypatch):
    import builtins

    real = builtins.__import__

    def fake(name, *a, **k):
        if name.startswith("pylate"):
            raise ImportError("no pylate")
        return real(name, *a, **k)

    monkeypatch.setattr(builtins, "__import__", fake)
    with pytest.raises(MissingDependencyError, match=r'pip install "mvstore\[pylate\]"'):
        PyLateEncoder("lightonai/colbertv2.0")
