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

:func:`auto_spec` is ``create(uri, dim=d, spec="auto", max_bytes_per_token=B)``'s picker: no queries exist when
an index is built, so it cuts *pseudo-queries* out of a sample of the documents (windows of consecutive token
vectors, the inverse cloze task) and keeps the spec whose compressed MaxSim best finds each window's document,
over a small grid (:func:`auto_candidates`) sized to take seconds, not minutes.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ._checks import check_int
from .eval import recall_vs_reference, run_from_scores
from .exceptions import (
    DimensionMismatchError,
    InvalidDtypeError,
    InvalidVectorsError,
    SpecError,
    TuneError,
)
from .ragged import Ragged, as_ragged
from .report import format_table, pareto_front
from .search.maxsim import maxsim_batch
from .search.params import check_k
from .spec import build_pipeline, bytes_per_token, default_spec, parse

__all__ = [
    "TuneError",
    "TuneResult",
    "tune",
    "default_candidates",
    "auto_candidates",
    "auto_spec",
    "inverse_cloze",
    "known_item_ndcg",
]

#: pool factors the default grid explores
POOL_FACTORS = (1, 2, 3, 4)
#: quantizer families the default grid explores (``<m>``: PQ sub-quantizer counts)
QUANTIZERS = ("fp16", "sq8", "sq4", "bin", "pq<m>", "rq1", "rq2", "rq4")
PQ_M = (8, 16, 24, 32, 48, 64, 96)
#: auto_candidates: pooling stages tried (the default's pool2min32 among them)
AUTO_POOLS = ("", "pool2", "pool2min32", "pool4", "pool8", "pool16")
#: inverse_cloze: shortest document a pseudo-query is cut from (the window is at most a third of it)
ICT_MIN_TOKENS = 9
#: auto_spec: fewest documents a first add needs for a pick (pseudo-query sources + a corpus of > k docs)
AUTO_MIN_DOCS = 50
#: smallest PCA output dim the default grid tries
MIN_DIM = 32
#: per (pool factor, quantizer family) the default grid keeps the candidates using the most bytes within
#: budget; for equal bytes (PQ at several PCA dims) at most this many, largest dims first
TIES_KEPT = 3


@dataclass
class TuneResult:
    """The picked spec and the table it was picked from.

    ``table``: one row per evaluated candidate, sorted by bytes per token, with columns ``spec``,
    ``bytes_per_token`` (measured on the sample), ``nominal_bytes_per_token`` (from the spec alone),
    ``fidelity`` (as :attr:`measure` says), ``vectors_per_token`` (after pooling),
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
    #: candidates that could not be fit on the sample (spec -> why), e.g. ``pq`` on fewer vectors than its centroids
    skipped: dict[str, str] = field(default_factory=dict)
    #: what ``fidelity`` is: agreement with exact MaxSim (:func:`tune`) or pseudo-relevance (:func:`auto_spec`)
    measure: str = "recall@k vs exact MaxSim"
    #: the same measure for exact uncompressed MaxSim, where it is not 1 by definition (:func:`auto_spec`)
    exact_fidelity: float | None = None

    @property
    def front(self) -> list[dict[str, Any]]:
        """The Pareto rows of :attr:`table` (fewest bytes first)."""
        return [r for r in self.table if r["pareto"]]

    def to_text(self, pareto_only: bool = False) -> str:
        rows = self.front if pareto_only else self.table
        cols = [
            "spec",
            "bytes_per_token",
            "fidelity",
            "vectors_per_token",
            "within_budget",
            "pareto",
            "picked",
        ]
        head = (
            f"picked {self.spec!r}: {self.measure.replace('@k', f'@{self.k}')} = {self.fidelity:.4f}"
            + (f" (exact MaxSim: {self.exact_fidelity:.4f})" if self.exact_fidelity is not None else "")
            + f" at "
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


def default_candidates(
    dim: int, max_bytes_per_token: float, pool_factors: Sequence[float] = POOL_FACTORS
) -> list[str]:
    """The default grid for input ``dim`` and a budget: for each pool factor and quantizer family, the
    spec(s) spending the most bytes per token within the budget (largest PCA dim first among equals), and
    :func:`~mvstore.spec.default_spec` when it fits."""
    dim = check_int("dim", dim, what="the token vectors' dimension, e.g. dim=128")
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
    default = default_spec(int(dim))  # so the table shows where create()'s default stands
    if bytes_per_token(default, int(dim)) <= max_bytes_per_token and default not in out:
        out.append(default)
    return out


def _check_budget(b: Any) -> float:
    if isinstance(b, bool) or not isinstance(b, (int, float, np.integer, np.floating)):
        raise InvalidDtypeError(f"max_bytes_per_token must be a number, got {type(b).__name__} ({b!r})")
    if not math.isfinite(float(b)) or b <= 0:
        raise TuneError(f"max_bytes_per_token={b!r} must be a positive number of bytes, e.g. 20")
    return float(b)


# ------------------------------------------------------------------------------------ tuning
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
    progress: bool | None = None,
) -> TuneResult:
    """Explore ``candidates`` (default :func:`default_candidates`) on a sample of ``docs``/``queries``
    and pick the best-fidelity spec within ``max_bytes_per_token`` bytes per original token.

    ``docs``, ``queries``: token vectors (Ragged or lists of ``(n_i, dim)`` arrays) from the same encoder.
    ``sample_docs`` / ``sample_queries``: random subsets scored exhaustively; ``fit_vectors``: vectors each
    codec is fitted on. Candidates given explicitly are all evaluated (those over budget appear in the
    table, marked, but are never picked). Raises :class:`TuneError` when no candidate fits the budget.
    ``progress``: a bar over the candidates (None: in terminals and notebooks, see :mod:`mvstore._progress`).
    """
    t_start = time.perf_counter()
    budget = _check_budget(max_bytes_per_token)
    docs, queries, k = _tune_sample(docs, queries, k, sample_docs, sample_queries, fit_vectors, seed)
    parsed = _candidate_specs(candidates, docs.dim, budget)
    rows, skipped = _evaluate(
        parsed, docs, queries, maxsim_batch(queries, docs), k, budget, fit_vectors, seed, progress
    )
    return _result(rows, skipped, budget, k, docs, queries, t_start)


def _tune_sample(
    docs: Any, queries: Any, k: Any, sample_docs: int, sample_queries: int, fit_vectors: int, seed: int
) -> tuple[Ragged, Ragged, int]:
    """The checked inputs of :func:`tune` -> its seeded random samples of documents and queries (float32), k."""
    docs = as_ragged(docs, what="docs")
    queries = as_ragged(queries, what="queries")
    if len(docs) == 0 or len(queries) == 0:
        raise TuneError("tune needs at least one document and one query; pass a sample of your own data")
    if queries.dim != docs.dim:
        raise DimensionMismatchError(
            f"queries have dim {queries.dim} but documents have dim {docs.dim}; encode both with the same model"
        )
    k = check_k(k)
    for name, v in (
        ("sample_docs", sample_docs),
        ("sample_queries", sample_queries),
        ("fit_vectors", fit_vectors),
    ):
        check_int(name, v, what="a sample size")
    rng = np.random.default_rng(seed)
    docs = docs.take(_sample_rows(len(docs), sample_docs, rng)).astype(np.float32)
    queries = queries.take(_sample_rows(len(queries), sample_queries, rng)).astype(np.float32)
    if k >= len(docs):
        raise TuneError(
            f"k={k} needs a sample of more than {k} documents to measure fidelity, but there are only "
            f"{len(docs)}: pass more documents or a smaller k"
        )
    return docs, queries, k


def _candidate_specs(candidates: Sequence[str] | None, dim: int, budget: float) -> list[tuple[Any, float]]:
    """``(parsed spec, nominal bytes per token)`` of each candidate (default: :func:`default_candidates`)."""
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
    return parsed


def _evaluate(
    parsed: list[tuple[Any, float]],
    docs: Ragged,
    queries: Ragged,
    exact: np.ndarray,
    k: int,
    budget: float,
    fit_vectors: int,
    seed: int,
    progress: bool | None,
    targets: np.ndarray | None = None,
) -> tuple[list[dict[str, Any]], dict[str, str]]:
    """One table row per candidate that could be fit (fidelity: recall@``k`` vs ``exact``, the uncompressed
    MaxSim scores of ``queries`` against ``docs``; with ``targets``
    (query ``i``'s one relevant document) the mean of that ``agreement`` and :func:`known_item_ndcg`
    ``known_item``; measured bytes per token); and ``{spec: why}`` for those that could not."""
    from ._progress import bar

    dim = docs.dim
    qids = [str(i) for i in range(len(queries))]
    dids = [str(i) for i in range(len(docs))]
    reference = run_from_scores(exact, qids, dids, k)
    pooled: dict[str, Ragged] = {}
    fit_rows: dict[str, np.ndarray] = {}
    rows: list[dict[str, Any]] = []
    skipped: dict[str, str] = {}
    # group by pooling so each pooled sample is computed once and dropped when no longer needed
    order = sorted(range(len(parsed)), key=lambda i: str(parsed[i][0].pool_stage))
    with bar(len(order), "tuning specs", unit="spec", progress=progress) as pbar:
        for i in order:
            sp, nominal = parsed[i]
            key = str(sp.pool_stage)
            if key not in pooled:
                pooled.clear()
                pooled[key] = sp.pool(docs)
                n = pooled[key].n_tokens
                fit_rows[key] = _sample_rows(n, fit_vectors, np.random.default_rng(seed + 1))
            pd = pooled[key]
            t = time.perf_counter()
            try:
                pipe = build_pipeline(sp, dim).fit(pd.values[fit_rows[key]])
            except InvalidVectorsError as e:  # e.g. pq on fewer pooled vectors than its 256 centroids
                skipped[str(sp)] = str(e)
                pbar.update(1)
                continue
            dec = Ragged(np.ascontiguousarray(pipe.decode(pipe.encode(pd.values)), np.float32), pd.offsets)
            qt = Ragged(
                np.ascontiguousarray(pipe.transform_query(queries.values), np.float32), queries.offsets
            )
            scores = maxsim_batch(qt, dec)
            agreement = recall_vs_reference(run_from_scores(scores, qids, dids, k), reference, k)
            parts = (
                {}
                if targets is None
                else {"agreement": agreement, "known_item": known_item_ndcg(scores, targets, k)}
            )
            fidelity = sum(parts.values()) / 2 if parts else agreement
            measured = pipe.code_size * pd.n_tokens / docs.n_tokens
            rows.append(
                {
                    "spec": str(sp),
                    "bytes_per_token": round(measured, 3),
                    "nominal_bytes_per_token": round(nominal, 3),
                    "fidelity": round(fidelity, 4),
                    "vectors_per_token": round(pd.n_tokens / docs.n_tokens, 4),
                    "within_budget": measured <= budget + 1e-9,
                    "seconds": round(time.perf_counter() - t, 2),
                    **{name: round(v, 4) for name, v in parts.items()},
                }
            )
            pbar.update(1)
    return rows, skipped


def _result(
    rows: list[dict[str, Any]],
    skipped: dict[str, str],
    budget: float,
    k: int,
    docs: Ragged,
    queries: Ragged,
    t_start: float,
    **extra: Any,
) -> TuneResult:
    """The :class:`TuneResult` of the table ``rows`` measured on ``docs``/``queries``: its :func:`_pick`."""
    best = _pick(rows, skipped, budget)
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
        skipped=skipped,
        **extra,
    )


def _pick(rows: list[dict[str, Any]], skipped: dict[str, str], budget: float) -> dict[str, Any]:
    """Sort and mark the table (``pareto``, ``picked``) -> the best-fidelity row within the budget."""
    rows.sort(key=lambda r: (r["bytes_per_token"], -r["fidelity"], r["spec"]))
    front = set(pareto_front(rows, "bytes_per_token", "fidelity"))
    for j, r in enumerate(rows):
        r["pareto"] = j in front
        r["picked"] = False
    fitting = [r for r in rows if r["within_budget"]]
    if not fitting:
        if not rows:
            raise TuneError(
                f"none of the {len(skipped)} candidate specs could be fit on this sample ({next(iter(skipped.values()))}): "
                "pass a larger sample"
            )
        cheapest = rows[0]
        raise TuneError(
            f"none of the {len(rows)} candidate specs fits within {budget:g} bytes per token on this sample "
            f"(the smallest, {cheapest['spec']!r}, needs {cheapest['bytes_per_token']:g}): raise "
            "max_bytes_per_token or pass smaller candidates"
        )
    best = max(fitting, key=lambda r: (r["fidelity"], -r["bytes_per_token"], -len(r["spec"])))
    best["picked"] = True
    return best


# ------------------------------------------------------------------------------------ spec="auto"
def auto_candidates(
    dim: int, max_bytes_per_token: float, vectors_per_token: dict[str, float] | None = None
) -> list[str]:
    """``spec="auto"``'s grid: each pooling stage of :data:`AUTO_POOLS`, then the richest codes that fit the
    budget given the vectors each original token leaves after that pooling (``vectors_per_token``, measured
    on the sample; ``1 / factor`` when not given): every dimension at 8, 4 or 1 bit (``sq8``, ``sq4``,
    ``bin``: the richest that fits), or ``pca<d'>,bin`` when even 1 bit per dimension is too much. No product
    quantization: at equal bytes it ranked below 1-bit codes of more pooled vectors, and its k-means was most of
    the pick time.

    >>> auto_candidates(128, 8)
    ['pca64,bin', 'pool2,bin', 'pool2min32,bin', 'pool4,bin', 'pool8,sq4', 'pool16,sq8']
    >>> auto_candidates(384, 4, {"pool8": 0.131})[-2:]   # short documents: pool8 keeps more than 1/8 of them
    ['pool8,pca240,bin', 'pool16,bin']
    """
    dim = check_int("dim", dim, what="the token vectors' dimension, e.g. dim=128")
    budget = _check_budget(max_bytes_per_token)
    out: list[str] = []
    for pool in AUTO_POOLS:
        ratio = (vectors_per_token or {}).get(pool) or 1 / (parse(pool).pool_factor if pool else 1.0)
        cap = budget / ratio  # bytes per stored vector
        scalar = [q for q, size in (("sq8", dim), ("sq4", dim / 2), ("bin", dim / 8)) if size <= cap]
        if not scalar and int(cap) * 8 >= MIN_DIM:
            scalar = [f"pca{int(cap) * 8},bin"]
        out += [",".join(x for x in (pool, q) if x) for q in scalar[:1]]
    return out


def inverse_cloze(
    docs: Ragged, n_queries: int, sample_tokens: int, *, min_len: int = 8, max_len: int = 32, seed: int = 0
) -> tuple[Ragged, Ragged, np.ndarray]:
    """Label-free relevance judgments for ``spec="auto"`` (the inverse cloze task): a corpus of about
    ``sample_tokens`` tokens of random documents, and from ``n_queries`` of them (those of at least
    :data:`ICT_MIN_TOKENS` tokens) a window of ``min_len``-``max_len`` consecutive token vectors, at most a
    third of the document, cut out: the window is the query, the rest of its document (still in the corpus)
    its one relevant document. Returns ``(corpus, queries, targets)``, ``targets[i]`` the row in ``corpus``
    of query ``i``'s document.

    >>> from mvstore import Ragged
    >>> d = Ragged.from_list([np.eye(30, 4, dtype=np.float32), np.eye(5, 4, dtype=np.float32)] * 2)
    >>> corpus, q, t = inverse_cloze(d, 2, 1000, seed=0)
    >>> len(corpus), len(q), [int(corpus.lengths[i]) + int(n) for i, n in zip(t, q.lengths)]
    (4, 2, [30, 30])
    >>> all(8 <= n <= 10 for n in q.lengths)  # a window of 8-32 tokens, at most a third of its document
    True
    """
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(docs))
    n_corpus = int(np.searchsorted(np.cumsum(docs.lengths[order]), sample_tokens)) + 1
    rows = np.sort(order[:n_corpus])
    eligible = np.flatnonzero(docs.lengths[rows] >= ICT_MIN_TOKENS)
    targets = np.sort(rng.choice(eligible, min(int(n_queries), len(eligible)), replace=False))
    parts = [docs[i] for i in rows]
    queries = []
    for t in targets:
        x = parts[t]
        w = int(min(len(x) // 3, rng.integers(min_len, max_len + 1)))
        a = int(rng.integers(0, len(x) - w + 1))
        queries.append(x[a : a + w])
        parts[t] = np.concatenate([x[:a], x[a + w :]])
    return Ragged.from_list(parts, dim=docs.dim), Ragged.from_list(queries, dim=docs.dim), targets


def known_item_ndcg(scores: np.ndarray, targets: np.ndarray, k: int) -> float:
    """Mean nDCG@k of ``scores`` (queries x documents) when query ``i``'s one relevant document is
    ``targets[i]`` (ties ranked against it).

    >>> known_item_ndcg(np.array([[0.9, 0.1], [0.9, 0.1]]), np.array([0, 1]), 10)
    0.8154648767857288
    """
    mine = scores[np.arange(len(scores)), targets]
    rank = (scores > mine[:, None]).sum(axis=1)
    return float(np.where(rank < k, 1.0 / np.log2(rank + 2.0), 0.0).mean())


def auto_spec(
    docs: Any,
    max_bytes_per_token: float,
    *,
    sample_tokens: int = 100_000,
    n_queries: int = 256,
    k: int = 10,
    fit_vectors: int = 8192,
    seed: int = 0,
    progress: bool | None = None,
) -> TuneResult:
    """Pick a spec for ``docs`` (the first add of an index) within ``max_bytes_per_token``, without queries or
    labels: each of :func:`auto_candidates` is fit on ``fit_vectors`` vectors of a sample of about
    ``sample_tokens`` tokens and scored with :func:`inverse_cloze` pseudo-queries (``n_queries`` windows cut
    from their documents). Fidelity is the mean of two measures at ``k``: ``agreement``, recall of exact
    MaxSim's top ``k`` (what :func:`tune` measures with real queries), and ``known_item``, how well the
    window's own document ranks (:func:`known_item_ndcg`). Ties go to fewer bytes.

    Either alone misleads, in opposite directions (measured against relevance judgments on CACM, the
    collection this rule was chosen on, with both models): agreement penalizes pooling, which real queries
    hardly notice, and picked light pooling with PCA (MiniLM: 3.9-6.9 nDCG@10 points below the best candidate
    at 4-8 B/token); known_item rewards pooling past exact MaxSim and cannot tell 1-bit from 4-bit codes
    (ColBERT-128: 4.2 points). The mean stayed within 1.3 points of the best candidate at 4-32 B/token.
    Raises :class:`TuneError` when the batch has fewer than :data:`AUTO_MIN_DOCS` documents, too few of
    :data:`ICT_MIN_TOKENS` tokens, or nothing fits."""
    t_start = time.perf_counter()
    docs = as_ragged(docs, what="docs")
    budget = _check_budget(max_bytes_per_token)
    for name, v in (("sample_tokens", sample_tokens), ("n_queries", n_queries), ("fit_vectors", fit_vectors)):
        check_int(name, v, what="a sample size")
    k = check_k(k)
    if len(docs) < AUTO_MIN_DOCS:
        raise TuneError(
            f'spec="auto" picks its spec on the first add, which has {len(docs)} documents; it needs at least '
            f"{AUTO_MIN_DOCS}: add a larger first batch, call index.train(sample) with more documents first, or "
            "pass a spec (mvstore.default_spec(dim) is the default)"
        )
    corpus, queries, targets = inverse_cloze(docs.astype(np.float32), n_queries, sample_tokens, seed=seed)
    if len(queries) < AUTO_MIN_DOCS // 5 or len(corpus) <= k:
        raise TuneError(
            f'spec="auto" cuts its pseudo-queries from documents of at least {ICT_MIN_TOKENS} tokens, and the '
            f"sample of {len(corpus)} documents has {len(queries)}: pass a spec (mvstore.default_spec(dim) is "
            "the default) or a first batch of longer documents"
        )
    from .pooling import n_clusters

    ratios = {}  # stored vectors per original token after each pooling stage (cluster counts follow from lengths)
    for pool in AUTO_POOLS[1:]:
        sp = parse(pool)
        ratios[pool] = float(
            n_clusters(corpus.lengths, sp.pool_factor, sp.pool_min_vectors).sum() / corpus.n_tokens
        )
    specs = auto_candidates(docs.dim, budget, ratios)
    if not specs:
        raise TuneError(
            f"no spec fits within {budget:g} bytes per token at dim {docs.dim} (pooled by 16, even {MIN_DIM} "
            "PCA dims at 1 bit do not): raise max_bytes_per_token"
        )
    parsed = _candidate_specs(specs, docs.dim, budget)
    exact = maxsim_batch(queries, corpus)
    rows, skipped = _evaluate(
        parsed, corpus, queries, exact, k, budget, fit_vectors, seed, progress, targets=targets
    )
    return _result(
        rows,
        skipped,
        budget,
        k,
        corpus,
        queries,
        t_start,
        measure="mean of recall@k vs exact MaxSim and known-item nDCG@k, on inverse-cloze pseudo-queries",
        exact_fidelity=round((1 + known_item_ndcg(exact, targets, k)) / 2, 4),
    )
