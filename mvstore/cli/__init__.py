"""The ``mvstore`` command line: build, search, eval, info, verify, upgrade, bench, tune, report.

::

    mvstore build INDEX --input docs.jsonl --spec pool2,pca96,rq2      # texts, encoded by the bundled MiniLM
    mvstore build INDEX --input vectors.npz --spec pq16                # precomputed token vectors
    mvstore search INDEX "what causes tides" -k 5 --where "year > 2020" [--json]
    mvstore eval BEIR_DIR --index INDEX | --spec SPEC [--max-docs N] [--json]
    mvstore info INDEX [--json]
    mvstore upgrade INDEX [--storage-option K=V] [--json]   # an index of an older format, in place
    mvstore bench BEIR_DIR --spec fp16 --spec pool2,pca96,rq2 [--json]
    mvstore tune BEIR_DIR --budget 20 [--json]          (or: tune docs.jsonl --queries queries.txt)
    mvstore report frontier.jsonl -o frontier.png
    mvstore import-plaid PYLATE_INDEX_DIR INDEX [--spec SPEC]     # a fast-plaid / PyLate / ColBERT PLAID index

Inputs: JSONL (one object per line), Parquet, or ``.npz`` with packed token vectors (``ids`` (n,),
``vectors`` (n_tokens, dim) float, ``offsets`` (n + 1,) int). A row's token vectors come from the
``--vectors-column`` (a list of vectors) when present, else its ``--text-column`` is encoded. Other scalar
columns are stored as metadata (filterable with ``--where``).

User mistakes (mvstore's errors and OS errors) print one line ``mvstore: error: ...`` on stderr and exit with
code 2 (``--debug`` shows the traceback); any other exception is a bug and shows its traceback. ``--encoder`` picks the text encoder: ``hf`` (default: the bundled MiniLM), ``hf:MODEL``,
``st:MODEL``, ``pylate:MODEL`` or ``colbert:PATH`` (a PyLate-saved ColBERT model, run without PyLate); MODEL is
a hub id or a local path. ``build`` records it in the index (``options.encoder`` of ``mvstore.json``, as
``mvstore.create(uri, encoder=...)`` does) and ``search`` / ``eval`` encode text queries with the recorded one
(``--encoder`` overrides it). An index built from texts stores each encoded text in its ``text`` column.
Indexes built by older versions recorded the encoder in ``INDEX/mvstore-cli.json``, which is still read.

The package: ``parser.py`` (the argparse parser: one ``_add_<command>`` per subcommand), ``inputs.py`` (input
files into plain values), ``common.py`` (flag groups into library arguments, output), ``commands.py`` (one
``cmd_<command>(args)`` per subcommand, calling library functions with explicit arguments).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence

from .parser import build_parser

__all__ = ["main", "build_parser"]


def main(argv: Sequence[str] | None = None) -> int:
    from ..exceptions import MvstoreError

    args = build_parser().parse_args(argv)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    try:
        return int(args.fn(args) or 0)
    except KeyboardInterrupt:
        print("mvstore: interrupted", file=sys.stderr)
        return 130
    except (
        MvstoreError,
        OSError,
    ) as e:  # a user's mistake or the system's; anything else is a bug: traceback
        if args.debug:
            raise
        print(f"mvstore: error: {' '.join(str(e).split()) or type(e).__name__}", file=sys.stderr)
        return 2
