import os
import sys

import numpy as np
import pytest

from mvstore import Ragged
from mvstore.encoders import (
    CachedEncoder,
    ColBERTEncoder,
    HFTokenEncoder,
    PyLateEncoder,
    SentenceTransformerTokenEncoder,
)
from mvstore.exceptions import (
    DeviceUnavailableError,
    InvalidArgumentError,
    InvalidDtypeError,
    MissingDependencyError,
    ModelFormatError,
)


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
    with pytest.raises(InvalidArgumentError, match="must be positive token counts"):
        HFTokenEncoder(None, query_max_length=0)


def test_a_directory_transformers_cannot_load_is_a_model_format_error(tmp_path):
    (tmp_path / "config.json").write_text('{"not": "a model config"}')
    with pytest.raises(
        ModelFormatError, match="cannot load a model from .*config.json, tokenizer files and weights"
    ):
        HFTokenEncoder(str(tmp_path))


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
    enc._path("doc", "gamma").write_bytes(b"garbage")
    np.testing.assert_allclose(enc.encode_documents(["gamma"])[0], a[1], atol=1e-3)  # encoded alone this time
    assert calls[-1] == ["gamma"]


class Fake:
    """A deterministic stand-in encoder: a text's vectors follow from its bytes (no model needed)."""

    name, dim = "fake:v1", 8

    def __init__(self, fail_after: int | None = None):
        self.calls: list[list[str]] = []
        self.fail_after = fail_after

    def encode_documents(self, texts):
        if self.fail_after is not None and len(self.calls) >= self.fail_after:
            raise RuntimeError("killed")
        self.calls.append(list(texts))
        out = []
        for t in texts:
            rng = np.random.default_rng(list(t.encode()))  # the same in every process (unlike hash())
            out.append(rng.standard_normal((1 + len(t) % 5, self.dim)).astype(np.float32))
        return Ragged.from_list(out)

    encode_queries = encode_documents


def test_cache_stores_float16_and_returns_the_stored_values(tmp_path):
    texts = [f"text {i}" for i in range(10)]
    fresh = Fake().encode_documents(texts)
    half = CachedEncoder(Fake(), tmp_path, progress=False)  # float16 by default
    miss, hit = half.encode_documents(texts), half.encode_documents(texts)
    np.testing.assert_array_equal(miss.values, hit.values)  # the same vectors, hit or miss
    np.testing.assert_array_equal(miss.values, fresh.values.astype(np.float16).astype(np.float32))
    assert miss.values.dtype == np.float32 and miss.lengths.tolist() == fresh.lengths.tolist()
    assert half.encoder.calls == [texts]
    exact = CachedEncoder(
        Fake(), tmp_path, dtype="float32", progress=False
    )  # its own entries: nothing shared
    np.testing.assert_array_equal(exact.encode_documents(texts).values, fresh.values)
    assert exact.encoder.calls == [texts] and exact.dir != half.dir
    with pytest.raises(InvalidArgumentError, match="dtype='int8'.*'float16'"):
        CachedEncoder(Fake(), tmp_path, dtype="int8")


def test_cache_keeps_finished_chunks_of_an_interrupted_run(tmp_path):
    texts = [f"doc {i}" for i in range(10)]
    dying = CachedEncoder(Fake(fail_after=2), tmp_path, chunk=3, progress=False)
    with pytest.raises(RuntimeError, match="killed"):
        dying.encode_documents(texts)
    enc = CachedEncoder(Fake(), tmp_path, progress=False)
    first = enc.encode_documents(texts)
    assert enc.encoder.calls == [texts[6:]]  # the two finished chunks of 3 were kept
    assert not list(enc.dir.rglob("*.tmp.npy"))
    again = CachedEncoder(Fake(), tmp_path, progress=False)
    np.testing.assert_array_equal(again.encode_documents(texts).values, first.values)
    assert again.encoder.calls == []


def _fill(args):
    cache_dir, lo = args
    return (
        CachedEncoder(Fake(), cache_dir, chunk=2, progress=False)
        .encode_documents([f"shared {i}" for i in range(lo, lo + 12)])
        .values
    )


def test_two_processes_fill_one_cache(tmp_path):
    import multiprocessing as mp

    with mp.get_context("spawn").Pool(2) as pool:
        a, b = pool.map(_fill, [(str(tmp_path), 0), (str(tmp_path), 6)])
    both = CachedEncoder(Fake(), tmp_path, progress=False)
    got = both.encode_documents([f"shared {i}" for i in range(18)])
    assert both.encoder.calls == []  # every text either process encoded is readable
    np.testing.assert_array_equal(got[0:12].values, a)
    np.testing.assert_array_equal(got[6:18].values, b)


def test_sentence_transformers_adapter_matches_hf(minilm):
    pytest.importorskip("sentence_transformers")
    st = SentenceTransformerTokenEncoder(None)
    a = st.encode_documents(["Vitamin D deficiency and bone density"])
    b = minilm.encode_documents(["Vitamin D deficiency and bone density"])
    assert a.lengths.tolist() == b.lengths.tolist()
    np.testing.assert_allclose(a.values, b.values, atol=1e-4)


def test_missing_optional_dependency_says_what_to_install(monkeypatch):
    # PyLate made unimportable whether or not it is installed (the dev extra has it): a None entry in
    # sys.modules makes importlib.import_module raise ModuleNotFoundError, as for a missing package
    for name in ("pylate", "pylate.models"):
        monkeypatch.setitem(sys.modules, name, None)
    with pytest.raises(MissingDependencyError, match=r'pip install "mvstore\[pylate\]"'):
        PyLateEncoder("lightonai/colbertv2.0")


# --- ColBERTEncoder: a PyLate-layout model run without PyLate -----------------------------------------------

COLBERT_TEXTS = [
    "What does p53 do in cancer cells?",
    "Vitamin D (25-OH) and fractures: a trial of 2,686 adults.",
]
# pylate 1.2.0 (transformers 4.48.2, torch 2.13 CPU): ColBERT(<build_pylate_dir(...)>).encode(COLBERT_TEXTS, ...)
PYLATE_DOC_LENGTHS = [11, 16]
PYLATE_QUERY_HEAD = [
    [0.099480, 0.036368, -0.081973, 0.043598],  # query vectors 0, 5, 31, first 4 dims
    [-0.003119, 0.236789, -0.005986, 0.217147],
    [-0.106931, -0.073108, -0.049089, -0.034661],
]
PYLATE_DOC_HEAD = [
    [0.112271, 0.039389, -0.014429, 0.080427],  # document vectors 0, 5, last
    [-0.002089, 0.228871, 0.008722, 0.217188],
    [0.083820, -0.038111, -0.108809, -0.014589],
]
PYLATE_MAXSIM = [[18.635033, 7.041051], [4.309778, 23.292112]]


def build_pylate_dir(path, *, seed: int = 0, dim: int = 128):
    """The bundled MiniLM plus [Q]/[D] marker tokens and a seeded Dense 384->dim, in the layout
    ``pylate.models.ColBERT.save_pretrained`` writes (transformer at the top level, ``1_Dense/``)."""
    import json

    import torch
    from safetensors.numpy import save_file
    from transformers import AutoModel, AutoTokenizer

    from mvstore.encoders import default_model_path

    src = default_model_path()
    tok, model = AutoTokenizer.from_pretrained(src), AutoModel.from_pretrained(src)
    tok.add_tokens(["[Q] ", "[D] "])
    model.resize_token_embeddings(len(tok))
    rng = np.random.default_rng(seed)
    with torch.no_grad():  # PyLate draws the two new rows at random; here they are seeded numpy draws
        model.get_input_embeddings().weight[-2:] = torch.from_numpy(0.05 * rng.standard_normal((2, 384)))
    model.save_pretrained(path)
    tok.save_pretrained(path)
    (path / "1_Dense").mkdir()
    w = (rng.standard_normal((dim, 384)) / np.sqrt(384)).astype(np.float32)
    save_file({"linear.weight": w}, str(path / "1_Dense" / "model.safetensors"))
    files = {
        "modules.json": [
            {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
            {"idx": 1, "name": "1", "path": "1_Dense", "type": "pylate.models.Dense.Dense"},
        ],
        "sentence_bert_config.json": {"max_seq_length": 256, "do_lower_case": False},
        "1_Dense/config.json": {
            "in_features": 384,
            "out_features": dim,
            "bias": False,
            "activation_function": "torch.nn.modules.linear.Identity",
        },
        "config_sentence_transformers.json": {
            "similarity_fn_name": "MaxSim",
            "query_prefix": "[Q] ",
            "document_prefix": "[D] ",
            "query_length": 32,
            "document_length": 180,
            "attend_to_expansion_tokens": False,
            "skiplist_words": list("!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~"),
        },
    }
    for name, obj in files.items():
        (path / name).write_text(json.dumps(obj))
    return path


def variant(base, path, **config):
    """A copy of ``base`` (files symlinked) whose config_sentence_transformers.json is updated by ``config``."""
    import json
    import shutil

    shutil.copytree(base, path, copy_function=os.symlink)
    cfg = path / "config_sentence_transformers.json"
    new = {**json.loads(cfg.read_text()), **config}
    cfg.unlink()
    cfg.write_text(json.dumps(new))
    return path


@pytest.fixture(scope="module")
def colbert_dir(tmp_path_factory):
    return build_pylate_dir(tmp_path_factory.mktemp("colbert") / "model")


def test_colbert_encoder_reproduces_pylate(colbert_dir):
    from mvstore.search.maxsim import maxsim_batch

    enc = ColBERTEncoder(colbert_dir)
    assert enc.dim == 128 and "q32:d180:exp0" in enc.name
    q, d = enc.encode_queries(COLBERT_TEXTS), enc.encode_documents(COLBERT_TEXTS)
    # expected: pylate 1.2.0's ColBERT(<this directory>).encode(COLBERT_TEXTS, is_query=True/False)
    assert q.lengths.tolist() == [32, 32]  # [CLS] [Q] tokens [SEP], then [MASK] expansion to 32
    assert d.lengths.tolist() == PYLATE_DOC_LENGTHS  # punctuation dropped
    np.testing.assert_allclose(q.values[[0, 5, 31], :4], PYLATE_QUERY_HEAD, atol=1e-4)
    np.testing.assert_allclose(d.values[[0, 5, -1], :4], PYLATE_DOC_HEAD, atol=1e-4)
    np.testing.assert_allclose(maxsim_batch(q, d), PYLATE_MAXSIM, atol=1e-4)
    np.testing.assert_allclose(np.linalg.norm(d.values, axis=1), 1.0, atol=1e-5)
    # a text encodes the same alone as next to a longer one (batch padding is masked out)
    np.testing.assert_allclose(enc.encode_documents(COLBERT_TEXTS[:1])[0], d[0], atol=1e-5)


def test_colbert_encoder_lengths_and_skiplist(colbert_dir):
    enc = ColBERTEncoder(colbert_dir, query_length=12, doc_max_length=20)
    long_text = " ".join(["protein"] * 300)
    assert enc.encode_queries([long_text, "p53"]).lengths.tolist() == [12, 12]
    assert enc.encode_documents([long_text]).lengths.tolist() == [20]
    n = len(enc.tokenizer("cells , grow ; fast .")["input_ids"])  # [CLS] cells , grow ; fast . [SEP]
    assert enc.encode_documents(["cells , grow ; fast ."]).lengths.tolist() == [n + 1 - 3]  # + [D], - 3 marks
    assert "q12:d20" in enc.name


def test_colbert_encoder_reads_its_settings(colbert_dir, tmp_path):
    base = ColBERTEncoder(colbert_dir)
    attend = ColBERTEncoder(variant(colbert_dir, tmp_path / "attend", attend_to_expansion_tokens=True))
    # attending to the [MASK] expansion changes the queries' vectors, not the documents'
    assert not np.allclose(
        attend.encode_queries(COLBERT_TEXTS).values, base.encode_queries(COLBERT_TEXTS).values
    )
    np.testing.assert_array_equal(
        attend.encode_documents(COLBERT_TEXTS).values, base.encode_documents(COLBERT_TEXTS).values
    )
    swapped = ColBERTEncoder(
        variant(colbert_dir, tmp_path / "swap", query_prefix="[D] ", document_prefix="[Q] ")
    )
    assert not np.allclose(
        swapped.encode_documents(COLBERT_TEXTS).values, base.encode_documents(COLBERT_TEXTS).values
    )
    # the cache key follows the files: another configuration is another key
    assert len({base.name, attend.name, swapped.name}) == 3


def test_colbert_encoder_with_cache(colbert_dir, tmp_path):
    enc = ColBERTEncoder(colbert_dir)
    cached = CachedEncoder(enc, tmp_path / "cache", dtype="float32")  # exact: compared with a fresh encoding
    a = cached.encode_queries(COLBERT_TEXTS)
    b = cached.encode_queries(COLBERT_TEXTS)  # from disk
    np.testing.assert_array_equal(a.values, b.values)
    np.testing.assert_array_equal(a.values, enc.encode_queries(COLBERT_TEXTS).values)
    with pytest.raises(InvalidDtypeError, match="wrap it in a list"):
        enc.encode_documents("one string")


def test_colbert_encoder_rejects_what_it_cannot_run(colbert_dir, tmp_path):
    import json
    import shutil

    with pytest.raises(ModelFormatError, match="not a PyLate ColBERT model directory.*save_pretrained"):
        ColBERTEncoder(tmp_path)
    bad = tmp_path / "tanh"
    shutil.copytree(colbert_dir, bad, copy_function=os.symlink)
    (bad / "1_Dense" / "config.json").unlink()
    (bad / "1_Dense" / "config.json").write_text(
        json.dumps({"activation_function": "torch.nn.modules.activation.Tanh"})
    )
    with pytest.raises(ModelFormatError, match="not a linear Dense projection.*PyLateEncoder"):
        ColBERTEncoder(bad)
    with pytest.raises(InvalidArgumentError, match="at least 3.*pass larger values"):
        ColBERTEncoder(colbert_dir, query_length=2)
