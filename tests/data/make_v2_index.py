"""Build ``tests/data/v2_index`` (an index in on-disk format 2) and ``v2_expected.json`` (what that mvstore's
search returned on it) with the mvstore that wrote format 2, for tests/test_upgrade.py.

Run once, from a checkout of format-2 mvstore (commit d3f2b66)::

    PYTHONPATH=/path/to/format-2/checkout python tests/data/make_v2_index.py

The vectors are drawn from a seeded generator (``fixture_vectors``), so the test can query the index again.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
DIM = 16


def fixture_vectors() -> tuple[list[np.ndarray], list[np.ndarray]]:
    """42 documents and 4 queries of 16-d token vectors."""
    rng = np.random.default_rng(20261130)
    docs = [rng.normal(size=(int(n), DIM)).astype(np.float32) for n in rng.integers(4, 24, 42)]
    queries = [
        d[:3] + 0.1 * rng.normal(size=(3, DIM)).astype(np.float32)
        for d in (docs[1], docs[7], docs[20], docs[41])
    ]
    return docs, queries


QUERIES = [  # (where, columns) per search the test repeats
    (None, ["lang", "year"]),
    ("lang = 'en'", ["lang"]),
    ("year >= 2020", ["year", "lang"]),
]


def main() -> None:
    import mvstore
    import mvstore.store as ms
    from mvstore.store._layout import FORMAT_VERSION

    assert FORMAT_VERSION == 2, f"run this with the format-2 mvstore (found format {FORMAT_VERSION})"
    docs, queries = fixture_vectors()
    out = HERE / "v2_index"
    shutil.rmtree(out, ignore_errors=True)
    idx = ms.create(out, spec="sq8", dim=DIM, keep_source=True, n_centroids=4)
    ids = [f"d{i}" for i in range(42)]
    meta = [{"lang": "en" if i % 3 else "fr", "year": 2010 + i % 15} for i in range(42)]
    idx.add(ids[:30], docs[:30], metadata=meta[:30])  # v1: trains the codec
    idx.add(ids[30:], docs[30:], metadata=meta[30:])  # v2
    idx.delete(["d5", "d6"])  # v3
    idx.upsert(["d7"], [docs[7]], metadata=[{"lang": "de", "year": 1999}])  # v4
    expected = {"mvstore": mvstore.__version__, "version": idx.version, "docs": len(idx), "searches": []}
    for where, columns in QUERIES:
        t = idx.search(queries, k=5, where=where, columns=columns)
        expected["searches"].append({"where": where, "columns": columns, "result": t.to_pylist()})
    (HERE / "v2_expected.json").write_text(json.dumps(expected, indent=1) + "\n")
    print(f"wrote {out} (version {idx.version}, {len(idx)} docs)", file=sys.stderr)


if __name__ == "__main__":
    main()
