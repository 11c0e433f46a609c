"""Evaluation: BEIR-format loading, nDCG@k, recall@k, and fidelity against a reference ranking.

Runs are ``{query_id: [doc_id, ...]}`` best first; qrels are ``{query_id: {doc_id: grade}}``.
nDCG follows pytrec_eval/BEIR (linear gains, ``ignore_identical_ids``).

>>> qrels = {"q1": {"a": 1}, "q2": {"b": 1, "c": 1}}
>>> run = {"q1": ["a", "x"], "q2": ["x", "b"]}
>>> round(ndcg_at_k(run, qrels, 10), 4)    # q1: 1.0; q2: (1/log2(3)) / (1 + 1/log2(3)) = 0.3869
0.6934
>>> recall_at_k(run, qrels, 2)
0.75
>>> recall_vs_reference({"q1": ["a", "b"]}, {"q1": ["b", "c"]}, 2)
0.5
"""

from __future__ import annotations

import gzip
import json
import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .exceptions import DatasetFormatError

__all__ = [
    "BeirDataset",
    "load_beir",
    "ndcg_at_k",
    "recall_at_k",
    "recall_vs_reference",
    "run_from_scores",
    "run_from_results",
    "metrics",
]

Run = Mapping[str, Sequence[str]]
Qrels = Mapping[str, Mapping[str, int]]


@dataclass
class BeirDataset:
    #: doc id -> text (``title + " " + text``, stripped)
    corpus: dict[str, str]
    #: query id -> text, restricted to the split's queries
    queries: dict[str, str]
    #: query id -> {doc id: grade}
    qrels: dict[str, dict[str, int]]


def _open(path: Path):
    return gzip.open(path, "rt", encoding="utf-8") if path.suffix == ".gz" else open(path, encoding="utf-8")


def _find(root: Path, stem: str) -> Path:
    for name in (f"{stem}.jsonl", f"{stem}.jsonl.gz"):
        if (root / name).exists():
            return root / name
    raise FileNotFoundError(f"{root} has no {stem}.jsonl or {stem}.jsonl.gz: is it a BEIR dataset directory?")


def _records(path: Path, fields: tuple[str, ...]) -> Iterator[dict[str, Any]]:
    """The JSON objects of a BEIR JSONL file, each holding ``fields``; DatasetFormatError naming the line if not."""
    try:
        with _open(path) as f:
            for n, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError as e:
                    raise DatasetFormatError(
                        f"{path}:{n} is not JSON ({e.msg}); a BEIR file holds one JSON object per line"
                    ) from None
                if not isinstance(rec, dict) or any(k not in rec for k in fields):
                    raise DatasetFormatError(
                        f"{path}:{n} is not a BEIR record: each line is a JSON object with "
                        f"{' and '.join(map(repr, fields))}"
                    )
                yield rec
    except UnicodeDecodeError as e:
        raise DatasetFormatError(f"{path} is not UTF-8 text ({e}); BEIR files are UTF-8 JSONL") from None


def _qrels(path: Path) -> dict[str, dict[str, int]]:
    qrels: dict[str, dict[str, int]] = {}
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            parts = line.rstrip("\n").split("\t")
            if len(parts) < 3 or parts[0] == "query-id":
                continue
            try:
                qrels.setdefault(parts[0], {})[parts[1]] = int(parts[2])
            except ValueError:
                raise DatasetFormatError(
                    f"{path}:{n}: the grade {parts[2]!r} is not an integer; a qrels line is "
                    "'query-id<TAB>corpus-id<TAB>score'"
                ) from None
    return qrels


def load_beir(root: str | Path, split: str = "test") -> BeirDataset:
    """Load a BEIR directory: ``corpus.jsonl[.gz]``, ``queries.jsonl[.gz]``, ``qrels/<split>.tsv``."""
    root = Path(root)
    corpus = {
        str(d["_id"]): f"{d.get('title') or ''} {d.get('text') or ''}".strip()
        for d in _records(_find(root, "corpus"), ("_id",))
    }
    qrels_path = root / "qrels" / f"{split}.tsv"
    if not qrels_path.exists():
        raise FileNotFoundError(
            f"no qrels file {qrels_path}; available splits: "
            f"{sorted(p.stem for p in (root / 'qrels').glob('*.tsv'))}"
        )
    qrels = _qrels(qrels_path)
    queries = {
        str(q["_id"]): q["text"]
        for q in _records(_find(root, "queries"), ("_id", "text"))
        if str(q["_id"]) in qrels
    }
    return BeirDataset(corpus, queries, qrels)


def ndcg_at_k(run: Run, qrels: Qrels, k: int = 10) -> float:
    """Mean nDCG@k over the queries of ``qrels`` (a query missing from ``run`` scores 0)."""
    vals = []
    for q, rel in qrels.items():
        ranked = [d for d in run.get(q, ()) if d != q][:k]
        dcg = sum(rel.get(d, 0) / math.log2(i + 2) for i, d in enumerate(ranked))
        ideal = sorted(rel.values(), reverse=True)[:k]
        idcg = sum(g / math.log2(i + 2) for i, g in enumerate(ideal))
        vals.append(dcg / idcg if idcg > 0 else 0.0)
    return float(np.mean(vals)) if vals else 0.0


def recall_at_k(run: Run, qrels: Qrels, k: int = 10) -> float:
    """Mean fraction of relevant docs (grade > 0) found in the top k."""
    vals = []
    for q, rel in qrels.items():
        pos = {d for d, g in rel.items() if g > 0}
        if pos:
            vals.append(len(pos & set(list(run.get(q, ()))[:k])) / len(pos))
    return float(np.mean(vals)) if vals else 0.0


def recall_vs_reference(run: Run, reference: Run, k: int = 10) -> float:
    """Fidelity: mean ``|top-k(run) ∩ top-k(reference)| / k`` over the reference's queries.
    Needs no relevance labels: the reference is e.g. exact uncompressed MaxSim."""
    vals = []
    for q, ref in reference.items():
        top_ref = list(ref)[:k]
        if top_ref:
            vals.append(len(set(top_ref) & set(list(run.get(q, ()))[:k])) / len(top_ref))
    return float(np.mean(vals)) if vals else 0.0


def run_from_scores(
    scores: np.ndarray, query_ids: Sequence[str], doc_ids: Sequence[str], k: int = 100
) -> dict:
    """Top-k run from a dense ``(n_queries, n_docs)`` score matrix (ties broken by doc order)."""
    doc_ids = list(doc_ids)
    k = min(k, scores.shape[1])
    out = {}
    for i, q in enumerate(query_ids):
        row = scores[i]
        top = np.argpartition(-row, k - 1)[:k]
        top = top[np.lexsort((top, -row[top]))]
        out[q] = [doc_ids[j] for j in top]
    return out


def run_from_results(results: Any, query_ids: Sequence[str]) -> dict[str, list[str]]:
    """The run of a search result table (``Index.search``: ``query`` row numbers into ``query_ids``, ``id``,
    best first per query); ids as strings, as qrels hold them."""
    run: dict[str, list[str]] = {q: [] for q in query_ids}
    for qi, did in zip(results.column("query").to_pylist(), results.column("id").to_pylist()):
        run[query_ids[qi]].append(str(did))
    return run


def metrics(run: Run, qrels: Qrels, k: int = 10) -> dict[str, float]:
    """``ndcg<k>``, ``recall<k>`` and ``recall100`` of ``run`` over the queries of ``qrels`` it answers, rounded
    to 4 digits (the rows of ``mvstore eval`` and ``mvstore bench``)."""
    qrels = {q: r for q, r in qrels.items() if q in run}
    return {
        f"ndcg{k}": round(ndcg_at_k(run, qrels, k), 4),
        f"recall{k}": round(recall_at_k(run, qrels, k), 4),
        "recall100": round(recall_at_k(run, qrels, 100), 4),
    }
