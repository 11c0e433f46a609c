"""The argparse parser of ``mvstore``: one ``_add_<command>`` per subcommand, its function in commands.py."""

from __future__ import annotations

import argparse
from typing import Any

from ..store._layout import TEXT
from . import commands

DESCRIPTION = "The mvstore command line: build, search, eval, info, verify, bench, tune, report."


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="mvstore", description=DESCRIPTION)
    ap.add_argument("--debug", action="store_true", help="show tracebacks")
    ap.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    # the same two flags after the command name (SUPPRESS: absent there, the top-level value stays)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="show tracebacks")
    common.add_argument(
        "-q", "--quiet", action="store_true", default=argparse.SUPPRESS, help="no progress bars"
    )
    sub = ap.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add = sub.add_parser

    def add_parser(name: str, **kw: Any) -> argparse.ArgumentParser:
        return _add(name, parents=[common], **kw)

    sub.add_parser = add_parser  # type: ignore[method-assign]
    for add in (
        _add_build,
        _add_search,
        _add_eval,
        _add_info,
        _add_verify,
        _add_upgrade,
        _add_bench,
        _add_tune,
        _add_report,
        _add_import_plaid,
    ):
        add(sub)
    return ap


def _storage_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--storage-option",
        action="append",
        default=None,
        metavar="KEY=VALUE",
        help="object-store option for an s3:// / gs:// / az:// index (repeatable), e.g. aws_region=us-east-1",
    )


def _int_at_least(lo: int) -> Any:
    """The type of an int flag whose values start at ``lo`` (argparse reports others as usage errors)."""

    def parse(s: str) -> int:
        try:
            v = int(s)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{s!r} is not an integer") from None
        if v < lo:
            raise argparse.ArgumentTypeError(f"{s} must be an integer >= {lo}")
        return v

    return parse


_count = _int_at_least(1)


def _nonnegative(s: str) -> float:
    try:
        v = float(s)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{s!r} is not a number") from None
    if not v >= 0:
        raise argparse.ArgumentTypeError(f"{s} must be a number >= 0")
    return v


# ------------------------------------------------------------------------------------- flag groups
def _encoder_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--encoder",
        default=None,
        help="hf (default: bundled all-MiniLM-L6-v2) | hf:MODEL | st:MODEL | pylate:MODEL | colbert:PATH "
        "(MODEL: hub id or local path); search/eval default to the index's recorded encoder",
    )
    p.add_argument("--model", default=None, help="short for --encoder hf:MODEL")
    p.add_argument(
        "--query-max-length",
        type=_count,
        default=None,
        help="query tokens (default: hf 64; colbert/pylate: the model's query_length)",
    )
    p.add_argument(
        "--doc-max-length",
        type=_count,
        default=None,
        help="document tokens (default: hf 256; colbert/pylate: the model's document_length)",
    )
    p.add_argument(
        "--cache", default=None, help="directory of an on-disk embedding cache (encode each text once)"
    )


def _input_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--id-column", default="id")
    p.add_argument("--text-column", default=TEXT)
    p.add_argument(
        "--title-column", default=None, help="prepended to the text (e.g. 'title' for BEIR corpora)"
    )
    p.add_argument(
        "--vectors-column", default="vectors", help="column of precomputed token vectors (list of lists)"
    )
    p.add_argument(
        "--metadata", default=None, help="comma-separated metadata columns (default: all scalar columns)"
    )


def _search_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--candidates", default="auto", help="stage 1: auto | centroid | sparse | exhaustive")
    p.add_argument("--nprobe", type=int, default=None)
    p.add_argument("--n-rerank", type=int, default=None, help="candidates scored by exact MaxSim")
    p.add_argument(
        "--n-full", type=int, default=None, help="candidates re-ranked by full centroid interaction"
    )
    p.add_argument("--threads", type=int, default=None, help="CPU threads per query (default: all cores)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda[:N]")


def _build_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--batch-size", type=_count, default=1024, help="documents per streamed write batch")
    p.add_argument("--train-docs", type=_count, default=2000, help="random documents the codec is trained on")


# ------------------------------------------------------------------------------------- subcommands
def _add_build(sub: Any) -> None:
    p = sub.add_parser("build", help="build an index from texts or token vectors")
    p.add_argument("index", help="index directory to create")
    p.add_argument(
        "--input", "-i", required=True, help=".jsonl / .parquet (texts or vectors) or .npz (vectors)"
    )
    p.add_argument(
        "--spec",
        default=None,
        help="compression spec, or 'auto' with --max-bytes-per-token (default: mvstore.default_spec(dim))",
    )
    p.add_argument(
        "--max-bytes-per-token",
        type=float,
        default=None,
        help="with --spec auto: the size budget the picked spec fits (bytes per original token)",
    )
    p.add_argument("--overwrite", action="store_true", help="replace an existing index at that path")
    p.add_argument(
        "--keep-source", action="store_true", help="also store pooled vectors (fp16) for retraining"
    )
    p.add_argument("--json", action="store_true")
    p.add_argument(
        "--ray",
        nargs="?",
        const=True,
        default=None,
        metavar="ADDRESS",
        help="build on a Ray cluster (ADDRESS, e.g. ray://head:10001; none: RAY_ADDRESS or a local one)",
    )
    p.add_argument("--workers", type=_count, default=2, help="--ray: worker actors")
    p.add_argument(
        "--gpus-per-worker", type=_nonnegative, default=0, help="--ray: GPUs per worker (text encoding)"
    )
    _storage_args(p)
    _input_args(p)
    _encoder_args(p)
    _build_args(p)
    p.set_defaults(fn=commands.cmd_build)


def _add_search(sub: Any) -> None:
    p = sub.add_parser("search", help="search an index with query texts or vectors")
    p.add_argument("index")
    p.add_argument("queries", nargs="*", help="query texts")
    p.add_argument("--query-file", default=None, help="text lines, or .npz query vectors (vectors, offsets)")
    p.add_argument("-k", type=int, default=10)
    p.add_argument("--where", default=None, help="SQL filter on metadata, e.g. \"lang = 'en'\"")
    p.add_argument("--columns", default=None, help="metadata columns to show (default: all)")
    p.add_argument("--version", type=int, default=None, help="search an older version (time travel)")
    p.add_argument("--json", action="store_true", help="one JSON object per result")
    _encoder_args(p)
    _search_args(p)
    _storage_args(p)
    p.set_defaults(fn=commands.cmd_search)


def _add_eval(sub: Any) -> None:
    p = sub.add_parser("eval", help="nDCG/recall on a BEIR dataset, of an index or of a spec")
    p.add_argument("beir", help="BEIR directory (corpus.jsonl, queries.jsonl, qrels/<split>.tsv)")
    p.add_argument("--index", default=None, help="evaluate this index (built from the BEIR corpus)")
    p.add_argument("--spec", default=None, help="build an index with this spec first")
    p.add_argument("--index-dir", default=None, help="where to build (default: a temporary directory)")
    p.add_argument(
        "--overwrite", action="store_true", help="with --index-dir: replace an index already there"
    )
    p.add_argument("--split", default="test")
    p.add_argument("--max-docs", type=_count, default=None, help="judged documents + others up to N")
    p.add_argument("-k", type=_count, default=10)
    p.add_argument("--json", action="store_true")
    _encoder_args(p)
    _search_args(p)
    _build_args(p)
    p.set_defaults(fn=commands.cmd_eval)


def _add_info(sub: Any) -> None:
    p = sub.add_parser("info", help="layout, versions and footprint of an index")
    p.add_argument("index")
    p.add_argument("--version", type=int, default=None)
    p.add_argument("--json", action="store_true")
    _storage_args(p)
    p.set_defaults(fn=commands.cmd_info)


def _add_verify(sub: Any) -> None:
    p = sub.add_parser("verify", help="check every file of an index against its recorded checksums")
    p.add_argument("index")
    p.add_argument("--json", action="store_true")
    _storage_args(p)
    p.set_defaults(fn=commands.cmd_verify)


def _add_upgrade(sub: Any) -> None:
    p = sub.add_parser(
        "upgrade", help="upgrade an index written by an older mvstore to this one's format, in place"
    )
    p.add_argument("index")
    p.add_argument("--json", action="store_true")
    _storage_args(p)
    p.set_defaults(fn=commands.cmd_upgrade)


def _add_bench(sub: Any) -> None:
    p = sub.add_parser("bench", help="benchmark rows (quality, footprint, latency) on a BEIR dataset")
    p.add_argument("beir")
    p.add_argument("--spec", action="append", default=[], help="spec to benchmark (repeatable)")
    p.add_argument("--split", default="test")
    p.add_argument("--max-docs", type=_count, default=None)
    p.add_argument("--latency-queries", type=_count, default=20)
    p.add_argument("--json", action="store_true")
    _encoder_args(p)
    _search_args(p)
    _build_args(p)
    p.set_defaults(fn=commands.cmd_bench)


def _add_tune(sub: Any) -> None:
    p = sub.add_parser("tune", help="pick the best spec within a bytes-per-token budget on a sample")
    p.add_argument(
        "input", help="a BEIR directory, or a documents file (.jsonl/.parquet/.npz) with --queries"
    )
    p.add_argument("--budget", type=float, required=True, help="max bytes per original token, e.g. 20")
    p.add_argument("--queries", default=None, help="query texts (one per line, .jsonl) or .npz vectors")
    p.add_argument("--candidates", default=None, help="';'-separated specs (default: a grid within budget)")
    p.add_argument("--sample-docs", type=_count, default=1000)
    p.add_argument("--sample-queries", type=_count, default=100)
    p.add_argument("--split", default="test")
    p.add_argument("-k", type=int, default=10)
    p.add_argument("--seed", type=_int_at_least(0), default=0)
    p.add_argument("--pareto-only", action="store_true", help="print only the Pareto rows")
    p.add_argument("--json", action="store_true")
    _input_args(p)
    _encoder_args(p)
    p.set_defaults(fn=commands.cmd_tune)


def _add_report(sub: Any) -> None:
    p = sub.add_parser("report", help="plot the quality/footprint Pareto front of benchmark JSON rows")
    p.add_argument("rows", help="JSONL rows (a benchmark's --json output)")
    p.add_argument("-o", "--output", default="frontier.png", help="PNG to write")
    p.add_argument("--x", default="bytes_per_token")
    p.add_argument(
        "--y",
        default=None,
        help="quality column (default: ndcg10, or fidelity for `mvstore tune --json` rows)",
    )
    p.add_argument("--title", default=None)
    p.add_argument("--json", action="store_true")
    p.set_defaults(fn=commands.cmd_report)


def _add_import_plaid(sub: Any) -> None:
    p = sub.add_parser(
        "import-plaid", help="import a PLAID index (fast-plaid, PyLate, Stanford ColBERT) into an index"
    )
    p.add_argument("plaid", help="the PLAID index directory, or PyLate's <index_folder>/<index_name>")
    p.add_argument("index", help="mvstore index to create (or to add to, with --append)")
    p.add_argument("--spec", default=None, help="compression spec (default: mvstore.default_spec(dim))")
    p.add_argument(
        "--max-bytes-per-token", type=_nonnegative, default=None, help="with --spec auto: the size budget"
    )
    p.add_argument(
        "--append", action="store_true", help="add to an existing index (same dim) instead of failing"
    )
    p.add_argument(
        "--plaid-ids",
        action="store_true",
        help="ids = the PLAID document numbers 0..n-1, even where PyLate's id mapping is found",
    )
    p.add_argument("--no-metadata", action="store_true", help="ignore fast-plaid's metadata.db")
    p.add_argument(
        "--batch-vectors", type=_count, default=65536, help="token vectors decoded per streamed batch"
    )
    p.add_argument(
        "--keep-source", action="store_true", help="also store pooled vectors (fp16) for retraining"
    )
    p.add_argument(
        "--storage-option",
        action="append",
        default=None,
        metavar="KEY=VALUE",
        help="object-store option for an s3:// / gs:// / az:// index (repeatable)",
    )
    p.add_argument("--json", action="store_true")
    p.set_defaults(fn=commands.cmd_import_plaid)
