"""One function per subcommand: ``cmd_<command>(args) -> exit code``. Each turns the parsed flags into explicit
arguments of library functions (:mod:`mvstore.store`, :mod:`mvstore.eval`, :mod:`mvstore.tune`,
:mod:`mvstore.report`) and prints what they return; the flags are declared in parser.py."""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from ..exceptions import UsageError
from . import inputs
from .common import (
    cli_meta,
    emit,
    encoder_named,
    encoder_spec,
    flags_encoder,
    index_encoder,
    jsonable,
    legacy_encoder,
    open_index,
    progress,
    search_params,
    storage_options,
    tree_bytes,
)


def _metadata_columns(flag: str | None) -> list[str] | None:
    """``--metadata a,b``: the named columns (None: every scalar column)."""
    return None if flag is None else [c for c in flag.split(",") if c]


def _read_input(args: argparse.Namespace) -> Any:
    """``--input`` read with the input flags every command that takes a documents file shares."""
    return inputs.read_documents(
        args.input,
        id_column=args.id_column,
        text_column=args.text_column,
        title_column=args.title_column,
        vectors_column=args.vectors_column,
        metadata_columns=_metadata_columns(args.metadata),
    )


# -------------------------------------------------------------------------------------------- build
def cmd_build(args: argparse.Namespace) -> int:
    from ..spec import parse
    from ..store._build import build_directory

    if args.spec != "auto" and args.max_bytes_per_token is not None:
        raise UsageError("--max-bytes-per-token only applies to --spec auto; drop one of the two")
    if args.spec == "auto" and args.max_bytes_per_token is None:
        raise UsageError(
            "--spec auto needs --max-bytes-per-token B (e.g. 16): the size budget it picks within"
        )
    if args.spec not in (None, "auto"):
        parse(args.spec)
    t = time.perf_counter()
    if args.ray is not None:
        return _build_row(_build_ray(args), args.json, t)
    if args.storage_option:
        raise UsageError(
            "--storage-option is for an object-store index, which `mvstore build` writes with --ray; "
            "drop it for a local directory"
        )
    src = _read_input(args)
    # texts need an encoder; vectors get one only when named (recorded for text queries)
    encoder = flags_encoder(args) if src.vectors is None or encoder_named(args) else None
    t = time.perf_counter()
    idx = build_directory(
        args.index,
        spec=args.spec,
        ids=src.ids,
        docs=src.vectors,
        texts=src.texts,
        metadata=src.metadata,
        encoder=encoder,
        overwrite=args.overwrite,
        keep_source=args.keep_source,
        max_bytes_per_token=args.max_bytes_per_token,
        train_docs=args.train_docs,
        batch_size=args.batch_size,
        files=cli_meta(args.input),
        progress=progress(args.quiet),
    )
    return _build_row(idx, args.json, t)


def _build_ray(args: argparse.Namespace) -> Any:
    """``mvstore build IDX --input ... --ray [ADDRESS]``: :func:`mvstore.build` on a Ray cluster."""
    import functools

    import mvstore
    import mvstore.store as ms

    from ..encoders import make_encoder
    from ..exceptions import IndexExistsError
    from ..store._fs import Location
    from ..store._layout import MANIFEST

    if args.input.lower().endswith(".npz"):
        raise UsageError(
            "--ray reads JSONL or Parquet (the workers read it in blocks); convert the .npz to Parquet"
        )
    if args.title_column:
        raise UsageError("--title-column is not available with --ray: put the full text in one column first")
    opts = storage_options(args.storage_option)
    if Location(args.index, opts).exists(MANIFEST):
        raise IndexExistsError(
            f"an mvstore index already exists at {args.index!r}: --ray builds a new index; choose another path "
            "(mvstore.build() in Python adds to an existing one)"
        )
    # each worker makes its own encoder (a picklable factory); a new index built from texts records it
    make = functools.partial(
        make_encoder,
        encoder_spec(args.encoder, args.model),
        query_max_length=args.query_max_length,
        doc_max_length=args.doc_max_length,
        progress=False,
    )
    create_options: dict[str, Any] = {"keep_source": args.keep_source}
    if args.max_bytes_per_token is not None:
        create_options["max_bytes_per_token"] = args.max_bytes_per_token
    if encoder_named(args):  # named: recorded for text queries even over a vectors source, as without --ray
        ms.create(args.index, args.spec, encoder=make(), storage_options=opts, **create_options)
    idx = mvstore.build(
        args.input, args.index, args.spec, ray=True if args.ray is True else args.ray, storage_options=opts,
        encoder=make, id_column=args.id_column, vectors_column=args.vectors_column, text_column=args.text_column,
        metadata_columns=_metadata_columns(args.metadata), train_docs=args.train_docs, batch_size=args.batch_size,
        num_workers=args.workers, num_gpus=args.gpus_per_worker, progress=progress(args.quiet), **create_options,
    )  # fmt: skip
    for rel, data in cli_meta(args.input).items():
        idx.loc.write_atomic(rel, data)
    return idx


def _build_row(idx: Any, as_json: bool, t: float) -> int:
    st = idx.stats()
    row = {
        "index": idx.root,
        "spec": st["spec"],
        "docs": st["docs"],
        "tokens": st["tokens"],
        "vectors": st["vectors"],
        "bytes_per_token": round(st["bytes_per_token"], 2),
        "version": st["version"],
        "build_s": round(time.perf_counter() - t, 1),
    }
    if st[
        "auto"
    ]:  # what --spec auto measured when it picked (fidelity: recall@10 vs exact MaxSim, no labels)
        row.update({f"auto_{k}": st["auto"][k] for k in ("budget", "fidelity", "seconds", "sample_tokens")})
    emit([row], as_json)
    return 0


def cmd_import_plaid(args: argparse.Namespace) -> int:
    """``mvstore import-plaid PLAID_DIR INDEX``: :func:`mvstore.import_plaid`."""
    from ..importers import import_plaid

    options: dict[str, Any] = {"keep_source": args.keep_source}
    if args.max_bytes_per_token is not None:
        options["max_bytes_per_token"] = args.max_bytes_per_token
    t = time.perf_counter()
    idx = import_plaid(
        args.plaid, args.index, args.spec, ids="plaid" if args.plaid_ids else None, metadata=not args.no_metadata,
        exist_ok=args.append, batch_vectors=args.batch_vectors, progress=progress(args.quiet),
        storage_options=storage_options(args.storage_option), **options,
    )  # fmt: skip
    return _build_row(idx, args.json, t)


# ------------------------------------------------------------------------------------------- search
def cmd_search(args: argparse.Namespace) -> int:
    idx = open_index(args.index, args.version, args.storage_option)
    if args.query_file and args.query_file.lower().endswith(".npz"):
        if args.queries:
            raise UsageError("give query texts or --query-file, not both")
        _, queries = inputs.read_npz(args.query_file)
        labels = [f"q{i}" for i in range(len(queries))]
    else:
        texts = list(args.queries)
        if args.query_file:
            texts += inputs.read_lines(args.query_file, "query file")
        if not texts:
            raise UsageError("no query: pass query texts, or --query-file (text lines or .npz vectors)")
        queries = index_encoder(idx, args).encode_queries(texts)
        labels = texts
    columns = args.columns.split(",") if args.columns else idx.metadata_columns
    t = time.perf_counter()
    res = idx.search(queries, k=args.k, where=args.where, params=search_params(args), columns=columns)
    elapsed = time.perf_counter() - t
    rows = res.to_pylist()
    for r in rows:
        r["query"] = labels[r["query"]]
        r["score"] = round(float(r["score"]), 4)
    emit(rows, args.json)
    if not args.json:
        print(f"({len(rows)} results for {len(labels)} queries in {elapsed * 1e3:.0f} ms)", file=sys.stderr)
    return 0


# --------------------------------------------------------------------------------------------- info
def cmd_info(args: argparse.Namespace) -> int:
    idx = open_index(args.index, args.version, args.storage_option)
    st = idx.stats()
    files = {name: tree_bytes(idx.loc, name) for name in sorted(idx.loc.listdir())}
    info = {
        **st,
        "path": idx.root,
        "options": idx.options,
        "columns": idx.metadata_columns,
        "versions": idx.versions(),
        "files": files,
        "encoder": idx.options.get("encoder") or legacy_encoder(idx),
    }
    if args.json:
        print(json.dumps(info, default=jsonable))
        return 0
    print(f"{'index':<16} {idx.root}")
    for k in (
        "spec",
        "dim",
        "version",
        "docs",
        "tokens",
        "vectors",
        "code_size",
        "stored_bytes",
        "bytes_per_token",
        "disk_bytes",
        "n_centroids",
        "train_error",
        "drift",
    ):
        v = st.get(k)
        print(f"{k:<16} {round(v, 4) if isinstance(v, float) else v}")
    print(f"{'columns':<16} {', '.join(info['columns']) or '-'}")
    print(f"{'encoder':<16} {(info['encoder'] or {}).get('name') or info['encoder'] or '-'}")
    print(f"{'files':<16} " + ", ".join(f"{k} {v / 2**20:.2f} MiB" for k, v in files.items()))
    print("versions")
    from ..report import format_table

    print(
        format_table(
            [{k: jsonable(v) if k == "timestamp" else v for k, v in r.items()} for r in info["versions"]]
        )
    )
    return 0


# ------------------------------------------------------------------------------------------- verify
def cmd_verify(args: argparse.Namespace) -> int:
    """Full integrity check (Index.verify): exit 0 with a summary when every file of every version matches
    what was recorded at its commit, 1 with the list of problems when not."""
    from ..exceptions import IndexCorruptedError

    try:
        rep = open_index(args.index, options=args.storage_option).verify()
    except IndexCorruptedError as e:
        if args.json:
            print(json.dumps({"ok": False, "problems": str(e)}))
        else:
            print(f"CORRUPTED: {e}")
        return 1
    if args.json:
        print(json.dumps(rep))
    else:
        print(
            f"ok: {rep['files_checked']} files ({rep['bytes_checked'] / 2**20:.2f} MiB) and "
            f"{rep['states_checked']} codec state(s) match their checksums"
        )
        for n in rep["notes"]:
            print(f"note: {n}")
    return 0


# ------------------------------------------------------------------------------------------ upgrade
def cmd_upgrade(args: argparse.Namespace) -> int:
    """Upgrade an index of an older on-disk format in place (mvstore.upgrade)."""
    import mvstore.store as ms

    if "://" not in args.index and not os.path.exists(args.index):
        raise FileNotFoundError(
            f"no index at {args.index!r}; pass the directory (or s3:// URI) of an mvstore index"
        )
    rep = ms.upgrade(args.index, storage_options=storage_options(args.storage_option))
    if args.json:
        print(json.dumps(rep))
    elif rep["format_version_before"] == rep["format_version"] and not rep["renamed"]:
        print(f"{args.index}: already format version {rep['format_version']}, nothing to do")
    else:
        print(
            f"{args.index}: upgraded from format version {rep['format_version_before']} to "
            f"{rep['format_version']} (renamed {', '.join(rep['renamed']) or 'no columns'}; version {rep['version']})"
        )
    return 0


# --------------------------------------------------------------------------------------------- eval
def cmd_eval(args: argparse.Namespace) -> int:
    from ..eval import metrics, run_from_results
    from ..store._build import build_directory, encode_texts

    if (args.index is None) == (args.spec is None):
        raise UsageError(
            "pass --index INDEX (evaluate an existing index) or --spec SPEC (build one), not both"
        )
    beir = inputs.read_beir(args.beir, args.split, args.max_docs)
    warning = None
    with tempfile.TemporaryDirectory(prefix="mvstore-eval-") as tmp:
        if args.index is not None:
            idx = open_index(args.index)
            warning = _corpus_mismatch(idx, beir.doc_ids, beir.doc_texts, subset=bool(args.max_docs))
            if warning:
                print(f"mvstore: warning: {warning}", file=sys.stderr)
            encoder = index_encoder(idx, args)
        else:
            encoder = flags_encoder(args)
            idx = build_directory(
                args.index_dir or os.path.join(tmp, "index"),
                spec=args.spec,
                ids=beir.doc_ids,
                texts=beir.doc_texts,
                encoder=encoder,
                overwrite=args.overwrite,
                train_docs=args.train_docs,
                batch_size=args.batch_size,
                files=cli_meta(args.beir),
                progress=progress(args.quiet),
            )
        queries = encode_texts(encoder, beir.query_texts, "query", progress(args.quiet))
        t = time.perf_counter()
        res = idx.search(queries, k=max(100, args.k), params=search_params(args))
        row = {
            "spec": str(idx.spec),
            **metrics(run_from_results(res, beir.query_ids), beir.qrels, args.k),
            "bytes_per_token": round(idx.stats()["bytes_per_token"], 2),
            "docs": len(idx),
            "queries": len(beir.query_ids),
            "search_s": round(time.perf_counter() - t, 2),
        }
        if args.index is not None or args.index_dir:
            row["index"] = idx.root
        if warning:
            row["warning"] = warning
    emit([row], args.json)
    return 0


def _corpus_mismatch(idx: Any, doc_ids: list, doc_texts: list[str], subset: bool) -> str | None:
    """Why the index's documents may not be the corpus eval scores against (its stored ``text`` column against
    the corpus texts, title included as eval encodes them), or None when they match."""
    from ..store._layout import DOCS, TEXT

    if idx.version == 0:
        return "the index is empty"
    ds = idx.loc.dataset(DOCS, version=idx.version)
    if TEXT not in ds.schema.names:
        return (
            f"the index stores no {TEXT!r} column, so eval cannot check that it was built from this corpus "
            "(rebuild it with `mvstore build` from texts, or mvstore.create(uri, encoder=...).add_texts)"
        )
    tbl = ds.to_table(columns=["id", TEXT])
    stored = dict(zip(map(str, tbl.column("id").to_pylist()), tbl.column(TEXT).to_pylist()))
    missing = [d for d in doc_ids if str(d) not in stored]
    differ = [d for d, t in zip(doc_ids, doc_texts) if str(d) in stored and stored[str(d)] != t]
    extra = 0 if subset else len(stored) - (len(doc_ids) - len(missing))
    if not (missing or differ or extra):
        return None
    parts = []
    if differ:
        parts.append(
            f"{len(differ)} of {len(doc_ids)} documents have other texts in the index than in the corpus "
            f"(e.g. {differ[0]!r}; eval encodes 'title text')"
        )
    if missing:
        parts.append(f"{len(missing)} corpus documents are not in the index (e.g. {missing[0]!r})")
    if extra:
        parts.append(f"the index holds {extra} documents that are not in the corpus")
    return (
        "; ".join(parts) + ": the scores do not measure this corpus; rebuild the index from it "
        "(`mvstore build INDEX --input corpus.jsonl --id-column _id --title-column title`) or use --spec"
    )


# -------------------------------------------------------------------------------------------- bench
def _rss_mb() -> float:
    import resource

    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def _latency(fn: Any, queries: Any, n: int) -> tuple[float, float]:
    """p50 and p95 milliseconds of ``fn`` on each of the first ``n`` queries alone (after one warm-up call)."""
    n = min(n, len(queries))
    fn(queries[0:1])
    times = []
    for i in range(n):
        t = time.perf_counter()
        fn(queries[i : i + 1])
        times.append((time.perf_counter() - t) * 1e3)
    return round(float(np.percentile(times, 50)), 2), round(float(np.percentile(times, 95)), 2)


def cmd_bench(args: argparse.Namespace) -> int:
    from ..eval import metrics, recall_vs_reference, run_from_results, run_from_scores
    from ..search.maxsim import maxsim_batch
    from ..store._build import build_directory, encode_texts

    beir = inputs.read_beir(args.beir, args.split, args.max_docs)
    encoder = flags_encoder(args)
    docs = encode_texts(encoder, beir.doc_texts, "doc", progress(args.quiet))
    queries = encode_texts(encoder, beir.query_texts, "query", progress(args.quiet))
    exact = run_from_scores(maxsim_batch(queries, docs), beir.query_ids, beir.doc_ids, 100)
    p50, p95 = _latency(lambda q: maxsim_batch(q, docs), queries, args.latency_queries)
    rows = [
        {
            "spec": "exact-fp32",
            **metrics(exact, beir.qrels, 10),
            "recall10_vs_exact": 1.0,
            "bytes_per_token": docs.dim * 4,
            "build_s": 0.0,
            "p50_ms": p50,
            "p95_ms": p95,
            "peak_rss_mb": _rss_mb(),
        }
    ]
    if args.json:
        emit(rows[-1:], True)
    params = search_params(args)
    for spec in args.spec:
        with tempfile.TemporaryDirectory(prefix="mvstore-bench-") as tmp:
            t = time.perf_counter()
            idx = build_directory(
                os.path.join(tmp, "ix"),
                spec=spec,
                ids=beir.doc_ids,
                docs=docs,
                train_docs=args.train_docs,
                batch_size=args.batch_size,
                files=cli_meta(args.beir),
                progress=progress(args.quiet),
            )
            build_s = time.perf_counter() - t
            run = run_from_results(idx.search(queries, k=100, params=params), beir.query_ids)
            p50, p95 = _latency(
                lambda q, idx=idx: idx.search(q, k=10, params=params), queries, args.latency_queries
            )
            rows.append(
                {
                    "spec": spec,
                    **metrics(run, beir.qrels, 10),
                    "recall10_vs_exact": round(recall_vs_reference(run, exact, 10), 4),
                    "bytes_per_token": round(idx.stats()["bytes_per_token"], 2),
                    "build_s": round(build_s, 1),
                    "p50_ms": p50,
                    "p95_ms": p95,
                    "peak_rss_mb": _rss_mb(),
                }
            )
        if args.json:
            emit(rows[-1:], True)
    if not args.json:
        emit(rows, False)
    return 0


# --------------------------------------------------------------------------------------------- tune
def cmd_tune(args: argparse.Namespace) -> int:
    from ..tune import tune

    rng = np.random.default_rng(args.seed)
    if Path(args.input).is_dir():
        docs, queries = _tune_beir(args, rng)
    else:
        docs, queries = _tune_files(args, rng)
    res = tune(
        docs,
        queries,
        max_bytes_per_token=args.budget,
        candidates=args.candidates.split(";") if args.candidates else None,
        k=args.k,
        sample_docs=args.sample_docs,
        sample_queries=args.sample_queries,
        progress=progress(args.quiet),
    )
    if args.json:
        emit(res.table, True)
    else:
        print(res.to_text(pareto_only=args.pareto_only))
    return 0


def _tune_beir(args: argparse.Namespace, rng: np.random.Generator) -> tuple[Any, Any]:
    """The sampled documents and queries of a BEIR directory, encoded."""
    from ..store._build import encode_texts

    beir = inputs.read_beir(args.input, args.split)
    keep = np.sort(rng.choice(len(beir.doc_texts), min(len(beir.doc_texts), args.sample_docs), replace=False))
    encoder = flags_encoder(args)
    docs = encode_texts(encoder, [beir.doc_texts[i] for i in keep], "doc", progress(args.quiet))
    qkeep = np.sort(
        rng.choice(len(beir.query_texts), min(len(beir.query_texts), args.sample_queries), replace=False)
    )
    queries = encode_texts(encoder, [beir.query_texts[i] for i in qkeep], "query", progress(args.quiet))
    return docs, queries


def _tune_files(args: argparse.Namespace, rng: np.random.Generator) -> tuple[Any, Any]:
    """The sampled documents of a documents file and the queries of ``--queries`` (texts encoded)."""
    from ..store._build import encode_texts

    if not args.queries:
        raise UsageError(
            "tune on a documents file needs --queries (text lines, .jsonl with --text-column, "
            "or .npz vectors); or pass a BEIR directory"
        )
    src = _read_input(args)
    keep = np.sort(rng.choice(len(src), min(len(src), args.sample_docs), replace=False))
    encoder = None
    if src.vectors is not None:
        docs = src.vectors.take(keep)
    else:
        assert src.texts is not None
        encoder = flags_encoder(args)
        docs = encode_texts(encoder, [src.texts[i] for i in keep], "doc", progress(args.quiet))
    if args.queries.lower().endswith(".npz"):
        return docs, inputs.read_npz(args.queries)[1]
    qtexts = inputs.read_query_texts(args.queries, args.text_column)
    if encoder is None:
        raise UsageError("text queries need text documents; with vector documents pass --queries queries.npz")
    return docs, encode_texts(encoder, qtexts[: args.sample_queries], "query", progress(args.quiet))


# ------------------------------------------------------------------------------------------- report
def cmd_report(args: argparse.Namespace) -> int:
    from ..report import format_table, load_rows, pareto_front, plot_frontier

    rows = load_rows(args.rows)
    # benchmark rows carry ndcg10; `mvstore tune --json` rows carry fidelity
    y = args.y or next((c for c in ("ndcg10", "fidelity") if any(c in r for r in rows)), "ndcg10")
    out = plot_frontier(rows, args.output, x=args.x, y=y, title=args.title)
    front = [rows[i] for i in pareto_front(rows, args.x, y)]
    if args.json:
        emit(front, True)
    else:
        print(format_table(front, [c for c in ("spec", args.x, y) if any(c in r for r in front)]))
    print(f"wrote {out}", file=sys.stderr)
    return 0
