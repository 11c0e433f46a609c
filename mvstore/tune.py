"""Pick a compression spec for *your* vectors: the best fidelity within a bytes-per-token budget.

:func:`tune` explores specs (token pooling factors, PCA dims, quantizers) on a sample of the user's own
document and query vectors. For each candidate it measures

* **fidelity**: recall@k of the compressed ranking against exact uncompressed MaxSim on the same sample
  (no relevance labels needed), and
* **bytes per original token**: ``code_size * stored vectors / original tokens`` as actually produced by
  pooling the sample (so a pool factor that leaves a few more vectors than ``1/f`` is charged for them),

then picks the highest-fidelity spec within the budget (ties: fewer bytes, then the simpler spec).
Work is shared: documents are pooled once per pool factor, codecs are fitted on a subsample of vectors,
and scoring is exhaustive MaxSim over the (small) sample.

>>> default_candidates(128, 8.0)[:5]
['pca64,bin', 'pq8', 'pca96,pq8', 'pca64,pq8', 'pca48,rq1']
>>> all(bytes_per_token(s, 128) <= 8.0 for s in default_candidates(128, 8.0))
True
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .eval import recall_vs_reference, run_from_scores
from .exceptions import DimensionMismatchError, InvalidDtypeError, MvstoreError, SpecError
from .ragged import Ragged, as_ragged
from .report import format_table, pareto_front
from .search.maxsim import maxsim_batch
from .spec import build_pipeline, bytes_per_token, parse

__all__ = ["TuneError", "TuneResult", "tune", "default_candidates"]

#: pool factors the default grid explores
POOL_FACTORS = (1, 2, 3, 4)
#: quantizer families the default grid explores (``<m>``: PQ sub-quantizer counts)
QUANTIZERS = ("fp16", "sq8", "sq4", "bin", "pq<m>", "rq1", "rq2", "rq4")
PQ_M = (8, 16, 24, 32, 48, 64, 96)
#: smallest PCA output dim the default grid tries
MIN_DIM = 32
#: per (pool factor, quantizer family) the default grid keeps the candidates using the most bytes within
#: budget; for equal bytes (PQ at several PCA dims) at most this many, largest dims first
TIES_KEPT = 3


class TuneError(MvstoreError, ValueError):
    """Tuning inputs that cannot work: a non-positive budget, a sample too small for ``k``, no spec fits."""


@dataclass
class TuneResult:
    """The picked spec and the table it was picked from.

    ``table``: one row per evaluated candidate, sorted by bytes per token, with columns ``spec``,
    ``bytes_per_token`` (measured on the sample), ``nominal_bytes_per_token`` (from the spec alone),
    ``fidelity`` (recall@k vs exact MaxSim on the sample), ``vectors_per_token`` (after pooling),
    ``within_budget``, ``pareto`` (not dominated by another row on bytes and fidelity), ``picked``
    and ``seconds`` (fit + encode + score time).
    """

    spec: str
    fidelity: float
    bytes_per_token: float
    budget: float
    k: int
    table: list[dict[str, Any]]
    n_docs: int
    n_queries: int
    n_tokens: int
    seconds: float

    @property
    def front(self) -> list[dict[str, Any]]:
        """The Pareto rows of :attr:`table` (fewest bytes first)."""
        return [r for r in self.table if r["pareto"]]

    def to_text(self, pareto_only: bool = False) -> str:
        rows = self.front if pareto_only else self.table
        cols = ["spec", "bytes_per_token", "fidelity", "vectors_per_token", "within_budget", "pareto", "picked"]
        head = (
            f"picked {self.spec!r}: recall@{self.k} vs exact MaxSim = {self.fidelity:.4f} at "
            f"{self.bytes_per_token:.2f} B/token (budget {self.budget:g}); sample of {self.n_docs} docs "
            f"({self.n_tokens} tokens), {self.n_queries} queries, {len(self.table)} specs in {self.seconds:.1f} s"
        )
        return head + "\n" + format_table(rows, cols)

    def __str__(self) -> str:
        return self.to_text()


# ------------------------------------------------------------------------------------ candidates
def _pca_dims(dim: int) -> list[int]:
    """``dim`` itself and PCA dims from 3/4 down to 1/12 of it (multiples of 8, at least MIN_DIM)."""
    dims = {dim}
    for frac in (3 / 4, 1 / 2, 3 / 8, 1 / 3, 1 / 4, 1 / 6, 1 / 8, 1 / 12):
        d = int(round(dim * frac / 8)) * 8
        if MIN_DIM <= d < dim:
            dims.add(d)
    return sorted(dims, reverse=True)


def default_candidates(dim: int, max_bytes_per_token: float, pool_factors: Sequence[float] = POOL_FACTORS) -> list[str]:
    """The default grid for input ``dim`` and a budget: for each pool factor and quantizer family, the
    spec(s) spending the most bytes per token within the budget (largest PCA dim first among equals)."""
    if isinstance(dim, bool) or not isinstance(dim, (int, np.integer)) or dim <= 0:
        raise TuneError(f"dim must be a positive integer, got {dim!r}")
    _check_budget(max_bytes_per_token)
    out: list[str] = []
    for f in pool_factors:
        pool = [] if f == 1 else [f"pool{f:g}"]
        for q in QUANTIZERS:
            options: list[tuple[float, int, str]] = []
            for d in _pca_dims(int(dim)):
                pca = [] if d == dim else [f"pca{d}"]
                if q == "pq<m>":
                    toks = [f"pq{m}" for m in PQ_M if d % m == 0 and d // m >= 2]
                else:
                    toks = [q]
                for tok in toks:
                    s = ",".join(pool + pca + [tok])
                    b = bytes_per_token(s, int(dim))
                    if b <= max_bytes_per_token:
                        options.append((b, d, s))
            if not options:
                continue
            top = max(b for b, _, _ in options)
            best = sorted((o for o in options if o[0] == top), key=lambda o: -o[1])[:TIES_KEPT]
            out.extend(s for _, _, s in best)
    return out


def _check_budget(b: Any) -> float:
    if isinstance(b, bool) or not isinstance(b, (int, float, np.integer, np.floating)):
        raise InvalidDtypeError(f"max_bytes_per_token must be a number, got {type(b).__name__} ({b!r})")
    if not math.isfinite(float(b)) or b <= 0:
        raise TuneError(f"max_bytes_per_token={b!r} must be a positive number of bytes, e.g. 20")
    return float(b)


# ------------------------------------------------------------------------------------ tuning
def _pool(docs: Ragged, factor: float, method: str) -> Ragged:
    if factor == 1:
        return docs
    from .pooling import pool

    return pool(docs, factor, method=method)


def _sample_rows(n: int, m: int, rng: np.random.Generator) -> np.ndarray:
    return np.arange(n) if n <= m else np.sort(rng.choice(n, m, replace=False))


def tune(
    docs: Any,
    queries: Any,
    *,
    max_bytes_per_token: float,
    candidates: Sequence[str] | None = None,
    k: int = 10,
    sample_docs: int = 1000,
    sample_queries: int = 100,
    fit_vectors: int = 32768,
    seed: int = 0,
    progress: bool = False,
) -> TuneResult:
    """Explore ``candidates`` (default :func:`default_candidates`) on a sample of ``docs``/``queries``
    and pick the best-fidelity spec within ``max_bytes_per_token`` bytes per original token.

    ``docs``, ``queries``: token vectors (Ragged or lists of ``(n_i, dim)`` arrays) from the same encoder.
    ``sample_docs`` / ``sample_queries``: random subsets scored exhaustively; ``fit_vectors``: vectors each
    codec is fitted on. Candidates given explicitly are all evaluated (those over budget appear in the
    table, marked, but are never picked). Raises :class:`TuneError` when no candidate fits the budget.
    """
    t_start = time.perf_counter()
    budget = _check_budget(max_bytes_per_token)
    docs = as_ragged(docs, what="docs")
    queries = as_ragged(queries, what="queries")
    if len(docs) == 0 or len(queries) == 0:
        raise TuneError("tune needs at least one document and one query; pass a sample of your own data")
    if queries.dim != docs.dim:
        raise DimensionMismatchError(
            f"queries have dim {queries.dim} but documents have dim {docs.dim}; encode both with the same model"
        )
    for name, v in (("k", k), ("sample_docs", sample_docs), ("sample_queries", sample_queries),
                    ("fit_vectors", fit_vectors)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
            raise TuneError(f"{name}={v!r} must be a positive integer")
    dim = docs.dim
    rng = np.random.default_rng(seed)
    docs = docs.take(_sample_rows(len(docs), sample_docs, rng)).astype(np.float32)
    queries = queries.take(_sample_rows(len(queries), sample_queries, rng)).astype(np.float32)
    if k >= len(docs):
        raise TuneError(
            f"k={k} needs a sample of more than {k} documents to measure fidelity, but there are only "
            f"{len(docs)}: pass more documents or a smaller k"
        )
    if candidates is None:
        specs = default_candidates(dim, budget)
        if not specs:
            raise TuneError(
                f"no spec of the default grid fits within {budget:g} bytes per token at dim {dim} (the "
                f"smallest, pool4,bin, needs {bytes_per_token('pool4,bin', dim):g}): raise max_bytes_per_token"
            )
    else:
        if isinstance(candidates, str):
            raise InvalidDtypeError("candidates must be a list of spec strings, e.g. ['pca96,rq2', 'pq16']")
        specs = list(dict.fromkeys(candidates))
        if not specs:
            raise TuneError("candidates is empty; pass spec strings or None for the default grid")
    parsed = []
    for s in specs:
        try:
            sp = parse(s)
            nominal = bytes_per_token(sp, dim)
        except SpecError as e:
            raise SpecError(f"candidate {s!r}: {e}") from None
        parsed.append((sp, nominal))

    qids = [str(i) for i in range(len(queries))]
    dids = [str(i) for i in range(len(docs))]
    reference = run_from_scores(maxsim_batch(queries, docs), qids, dids, k)

    pooled: dict[tuple[float, str | None], Ragged] = {}
    fit_rows: dict[tuple[float, str | None], np.ndarray] = {}
    rows: list[dict[str, Any]] = []
    from tqdm.auto import tqdm

    # group by pooling so each pooled sample is computed once and dropped when no longer needed
    order = sorted(range(len(parsed)), key=lambda i: (parsed[i][0].pool_factor, parsed[i][0].pool_method or ""))
    for i in tqdm(order, desc="tuning specs", unit="spec", disable=not progress):
        sp, nominal = parsed[i]
        key = (sp.pool_factor, sp.pool_method)
        if key not in pooled:
            pooled.clear()
            pooled[key] = _pool(docs, sp.pool_factor, sp.pool_method or "ward")
            n = pooled[key].n_tokens
            fit_rows[key] = _sample_rows(n, fit_vectors, np.random.default_rng(seed + 1))
        pd = pooled[key]
        t = time.perf_counter()
        pipe = build_pipeline(sp, dim).fit(pd.values[fit_rows[key]])
        dec = Ragged(np.ascontiguousarray(pipe.decode(pipe.encode(pd.values)), np.float32), pd.offsets)
        qt = Ragged(np.ascontiguousarray(pipe.transform_query(queries.values), np.float32), queries.offsets)
        run = run_from_scores(maxsim_batch(qt, dec), qids, dids, k)
        measured = pipe.code_size * pd.n_tokens / docs.n_tokens
        rows.append(
            {
                "spec": str(sp),
                "bytes_per_token": round(measured, 3),
                "nominal_bytes_per_token": round(nominal, 3),
                "fidelity": round(recall_vs_reference(run, reference, k), 4),
                "vectors_per_token": round(pd.n_tokens / docs.n_tokens, 4),
                "within_budget": measured <= budget + 1e-9,
                "seconds": round(time.perf_counter() - t, 2),
            }
        )
    rows.sort(key=lambda r: (r["bytes_per_token"], -r["fidelity"], r["spec"]))
    front = set(pareto_front(rows, "bytes_per_token", "fidelity"))
    for j, r in enumerate(rows):
        r["pareto"] = j in front
        r["picked"] = False
    fitting = [r for r in rows if r["within_budget"]]
    if not fitting:
        cheapest = rows[0]
        raise TuneError(
            f"none of the {len(rows)} candidate specs fits within {budget:g} bytes per token on this sample "
            f"(the smallest, {cheapest['spec']!r}, needs {cheapest['bytes_per_token']:g}): raise "
            "max_bytes_per_token or pass smaller candidates"
        )
    best = max(fitting, key=lambda r: (r["fidelity"], -r["bytes_per_token"], -len(r["spec"])))
    best["picked"] = True
    return TuneResult(
        spec=best["spec"],
        fidelity=best["fidelity"],
        bytes_per_token=best["bytes_per_token"],
        budget=budget,
        k=int(k),
        table=rows,
        n_docs=len(docs),
        n_queries=len(queries),
        n_tokens=docs.n_tokens,
        seconds=round(time.perf_counter() - t_start, 1),
    )
