"""Train a small ColBERT model with PyLate on the SciFact *train* split, then measure it on SciFact test.

The model: the bundled all-MiniLM-L6-v2 as backbone, a 128-d linear projection, PyLate's query/document
markers (``[Q] ``/``[D] ``), query expansion with [MASK] to ``--query-length`` tokens, punctuation skipped in
documents, contrastive loss over in-batch negatives plus one BM25 hard negative per (query, positive) pair
(BM25 by the ``bm25s`` package). Weights are saved in PyLate's layout under
``$MVSTORE_CACHE/models/colbert128-scifact`` (``MVSTORE_CACHE`` defaults to ``~/.cache/mvstore``), outside
the repository; :class:`mvstore.encoders.ColBERTEncoder` loads that directory without PyLate.

Evaluation (exact MaxSim over all 5,183 SciFact documents, nDCG@10 on the 300 test queries) of
* the trained model, documents at ``--eval-doc-length`` (256, as the MiniLM pipeline) and at its training
  length (180),
* the same architecture with an untrained projection (fresh, seeded; saved next to it),
* raw MiniLM hidden states (the ``benchmarks/data.py`` pipeline, 0.707),
all three encoded by mvstore's own encoders (cached in ``$MVSTORE_CACHE/embeddings``); the script also checks
that :class:`~mvstore.encoders.ColBERTEncoder` reproduces PyLate's ``model.encode`` on a few texts.

PyLate goes into its own environment, not the project's: its newer releases pin torch through ``fast-plaid``
(PyLate 1.6 wants torch 2.11 and pulls the CUDA stack); PyLate 1.2 has no such pin and runs on a CPU torch::

    python3 -m venv ~/.cache/mvstore/pylate-venv
    ~/.cache/mvstore/pylate-venv/bin/pip install torch --index-url https://download.pytorch.org/whl/cpu
    ~/.cache/mvstore/pylate-venv/bin/pip install -e ".[pylate,encoders]" bm25s

Run (about 20-40 minutes on 2 shared cores; a second run finds the saved model and only evaluates)::

    OMP_WAIT_POLICY=PASSIVE nice -n 5 ~/.cache/mvstore/pylate-venv/bin/python benchmarks/train_colbert.py

``--smoke`` trains on a few pairs into a separate directory, to check the set-up in about a minute.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.data import CACHE, SCIFACT_DIR  # noqa: E402
from mvstore.eval import load_beir, ndcg_at_k, run_from_scores  # noqa: E402

MODEL_NAME = "colbert128-scifact"


def bm25_triples(ds, n_top: int) -> list[dict]:
    """One (query, positive, hard negative) triple per judged train pair: the negative is the best BM25 hit
    that is not judged relevant for that query (the j-th such hit for the query's j-th positive)."""
    import bm25s

    doc_ids = list(ds.corpus)
    retriever = bm25s.BM25()
    retriever.index(
        bm25s.tokenize([ds.corpus[d] for d in doc_ids], stopwords="en", show_progress=False),
        show_progress=False,
    )
    qids = sorted(ds.qrels, key=int)
    hits, _ = retriever.retrieve(
        bm25s.tokenize([ds.queries[q] for q in qids], stopwords="en", show_progress=False),
        k=n_top,
        show_progress=False,
    )
    triples = []
    for q, row in zip(qids, hits):
        rel = ds.qrels[q]
        negatives = [doc_ids[i] for i in row if doc_ids[i] not in rel]
        positives = [d for d, g in rel.items() if g > 0]
        for j, d in enumerate(positives):
            triples.append(
                {
                    "query": ds.queries[q],
                    "positive": ds.corpus[d],
                    "negative": ds.corpus[negatives[j % len(negatives)]],
                }
            )
    return triples


def new_model(backbone: str, args):
    """The ColBERT architecture on the backbone, with a fresh projection (and fresh [Q]/[D] embeddings)
    drawn from ``args.seed``."""
    import torch
    from pylate import models

    torch.manual_seed(args.seed)
    return models.ColBERT(
        model_name_or_path=backbone,
        embedding_size=args.dim,
        query_length=args.query_length,
        document_length=args.doc_length,
        device="cpu",
    )


def save_atomic(model, out: Path, info: dict | None = None) -> None:
    """Save in PyLate's layout (plus ``training.json`` = ``info``) and swap the directory in whole."""
    tmp = out.with_name(f"{out.name}.tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(str(tmp))
    if info is not None:
        (tmp / "training.json").write_text(json.dumps(info, indent=2))
    shutil.rmtree(out, ignore_errors=True)
    os.replace(tmp, out)


def train(backbone: str, out: Path, args) -> dict:
    import torch
    from datasets import Dataset
    from pylate import losses, utils
    from sentence_transformers import SentenceTransformerTrainer, SentenceTransformerTrainingArguments
    from sentence_transformers.training_args import BatchSamplers

    t0 = time.time()
    ds = load_beir(SCIFACT_DIR, "train")
    triples = bm25_triples(ds, args.bm25_top)
    if args.max_pairs:
        triples = triples[: args.max_pairs]
    model = new_model(backbone, args)
    work = out.with_name(f"{out.name}.trainer{os.getpid()}")
    targs = SentenceTransformerTrainingArguments(
        output_dir=str(work),
        num_train_epochs=args.epochs,
        per_device_train_batch_size=args.batch_size,
        learning_rate=args.lr,
        warmup_ratio=0.1,
        seed=args.seed,
        data_seed=args.seed,
        use_cpu=True,
        batch_sampler=BatchSamplers.NO_DUPLICATES,  # a document twice in a batch would be its own negative
        save_strategy="no",
        logging_steps=5,
        report_to="none",
        dataloader_num_workers=0,
    )
    trainer = SentenceTransformerTrainer(
        model=model,
        args=targs,
        train_dataset=Dataset.from_list(triples),
        loss=losses.Contrastive(model=model, temperature=args.temperature),
        data_collator=utils.ColBERTCollator(tokenize_fn=model.tokenize),
    )
    result = trainer.train()
    info = {
        "pairs": len(triples),
        "epochs": args.epochs,
        "batch_size": args.batch_size,
        "lr": args.lr,
        "temperature": args.temperature,
        "hard_negatives": "bm25s, 1 per pair",
        "seed": args.seed,
        "steps": result.global_step,
        "train_loss": round(float(result.training_loss), 4),
        "train_s": round(time.time() - t0, 1),
        "threads": torch.get_num_threads(),
    }
    save_atomic(model, out, info)
    shutil.rmtree(work, ignore_errors=True)
    return info


def exact_ndcg(enc, test) -> float:
    from mvstore.encoders import CachedEncoder
    from mvstore.search.maxsim import maxsim_batch

    enc = CachedEncoder(enc, CACHE / "embeddings", dtype="float32", progress=True)  # as benchmarks/data.py
    doc_ids = list(test.corpus)
    qids = sorted(test.qrels, key=int)
    docs = enc.encode_documents([test.corpus[d] for d in doc_ids])
    queries = enc.encode_queries([test.queries[q] for q in qids])
    run = run_from_scores(maxsim_batch(queries, docs), qids, doc_ids, 10)
    return round(ndcg_at_k(run, test.qrels, 10), 4)


def pylate_max_diff(path: Path, texts: list[str]) -> float:
    """Largest absolute difference between PyLate's vectors and ColBERTEncoder's, queries and documents."""
    from pylate import models

    from mvstore.encoders import ColBERTEncoder

    ref = models.ColBERT(model_name_or_path=str(path), device="cpu")
    ours = ColBERTEncoder(path)
    worst = 0.0
    for is_query, mine in ((True, ours.encode_queries(texts)), (False, ours.encode_documents(texts))):
        theirs = ref.encode(texts, is_query=is_query)
        for i, t in enumerate(theirs):
            if t.shape != mine[i].shape:
                raise AssertionError(f"text {i} (query={is_query}): PyLate {t.shape} vs ours {mine[i].shape}")
            worst = max(worst, float(np.abs(t - mine[i]).max()))
    return worst


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--smoke", action="store_true", help="a minute-long check: 64 pairs, one epoch, own directory"
    )
    p.add_argument("--retrain", action="store_true", help="train even if the model directory exists")
    p.add_argument("--no-eval", action="store_true", help="train only")
    p.add_argument("--epochs", type=float, default=2)
    p.add_argument("--max-pairs", type=int, default=0, help="train on the first N pairs only (0 = all 919)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=5e-5)
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--bm25-top", type=int, default=20, help="BM25 hits searched for hard negatives")
    p.add_argument("--dim", type=int, default=128)
    p.add_argument("--query-length", type=int, default=32)
    p.add_argument("--doc-length", type=int, default=180, help="PyLate's default")
    p.add_argument("--eval-doc-length", type=int, default=256, help="document length at evaluation")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    if args.smoke:
        args.max_pairs, args.epochs = args.max_pairs or 64, 1
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch

    torch.set_num_threads(args.threads)
    from mvstore.encoders import default_model_path

    backbone = default_model_path()
    models_dir = CACHE / "models"
    models_dir.mkdir(parents=True, exist_ok=True)
    out = models_dir / (f"{MODEL_NAME}-smoke" if args.smoke else MODEL_NAME)
    report: dict = {
        "model_dir": str(out),
        "backbone": "all-MiniLM-L6-v2 (bundled)",
        "dim": args.dim,
        "query_length": args.query_length,
        "doc_length": args.doc_length,
        "bm25": "bm25s",
    }
    if args.retrain or not (out / "config_sentence_transformers.json").exists():
        train(backbone, out, args)
    if (out / "training.json").exists():
        report["training"] = json.loads((out / "training.json").read_text())
    if not args.no_eval:
        from mvstore.encoders import ColBERTEncoder, HFTokenEncoder

        untrained = models_dir / f"colbert{args.dim}-untrained-seed{args.seed}"
        if not (untrained / "config_sentence_transformers.json").exists():
            save_atomic(new_model(backbone, args), untrained)
        probe = [
            "What does the p53 protein do in cancer cells?",
            "Vitamin D (25-OH) levels and fracture risk: a "
            "randomized trial of 2,686 adults; results were null.",
            "short",
        ]
        report["pylate_max_abs_diff"] = {
            "trained": pylate_max_diff(out, probe),
            "untrained": pylate_max_diff(untrained, probe),
        }
        test = load_beir(SCIFACT_DIR, "test")
        t0 = time.time()
        # documents at 256 tokens as in the MiniLM pipeline (benchmarks/data.py: queries and documents at 256,
        # [CLS]/[SEP] kept); queries at the model's 32 tokens with [MASK] expansion
        dl = args.eval_doc_length
        report["eval_doc_length"] = dl
        report["ndcg@10_exact_maxsim"] = {
            "trained": exact_ndcg(ColBERTEncoder(out, doc_max_length=dl), test),
            f"trained_doc{args.doc_length}": exact_ndcg(ColBERTEncoder(out), test),
            "untrained_projection": exact_ndcg(ColBERTEncoder(untrained, doc_max_length=dl), test),
            "minilm_hidden_states": exact_ndcg(
                HFTokenEncoder(None, query_max_length=256, doc_max_length=256), test
            ),
        }
        report["eval_s"] = round(time.time() - t0, 1)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
