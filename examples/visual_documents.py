"""Visual documents (ColPali-shaped): 32x32 patch grids per page, 2-D patch merging, build + search.

A ColPali-style model turns each page image into a 32x32 grid of patch vectors (1,024 per page); that is
what makes visual retrieval expensive to store. This example uses synthetic pages with the same shape and
a spatial structure (a page is a background plus a few rectangular regions - a chart, a table, a photo -
each with its own content vector), so it runs anywhere without model weights. It compares

* exact MaxSim on all 1,024 patches,
* spatial 2x2 patch merging (``pool_patches(mode="spatial")``: 256 vectors per page), and
* semantic merging (``pool_patches(mode="semantic")``: Ward clustering of a page's patches, 256 clusters),

then builds an mvstore index of the merged pages and searches it with a metadata filter. Fidelity is
recall@k against exact MaxSim on the unmerged pages; bytes per token count the ORIGINAL 1,024 patches.

    python examples/visual_documents.py [--pages 120] [--spec sq8] [--semantic] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import mvstore.store as ms  # noqa: E402
from mvstore import Ragged  # noqa: E402
from mvstore.eval import recall_vs_reference, run_from_scores  # noqa: E402
from mvstore.pooling import pool_patches  # noqa: E402
from mvstore.search.maxsim import maxsim_batch  # noqa: E402

GRID = (32, 32)
KINDS = ("report", "invoice", "slides")
#: norm of the noise around a patch's / query token's content vector (the content vectors have norm 1)
PATCH_NOISE = 0.6
QUERY_NOISE = 1.0


def unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


def synthetic_pages(n_pages: int, dim: int, seed: int = 0) -> tuple[Ragged, list[str], list[np.ndarray]]:
    """Pages of 32x32 patch vectors: a noisy background plus 2-4 rectangular regions, each region's patches
    scattered around its own content vector. Returns (pages, page kinds, the content vectors of each page)."""
    rng = np.random.default_rng(seed)
    h, w = GRID
    pages, kinds, contents = [], [], []
    backgrounds = unit(rng.standard_normal((len(KINDS), dim)))
    for _ in range(n_pages):
        k = int(rng.integers(len(KINDS)))
        grid = np.repeat(backgrounds[k][None, None], h, 0).repeat(w, 1)
        region_vecs = unit(rng.standard_normal((int(rng.integers(2, 5)), dim)))
        for v in region_vecs:
            rh, rw = rng.integers(4, 13, 2)
            r0, c0 = rng.integers(0, h - rh), rng.integers(0, w - rw)
            grid[r0 : r0 + rh, c0 : c0 + rw] = v
        grid = unit(grid + PATCH_NOISE * rng.standard_normal(grid.shape) / np.sqrt(dim))
        pages.append(grid.reshape(h * w, dim))
        kinds.append(KINDS[k])
        contents.append(region_vecs)
    return Ragged.from_list(pages), kinds, contents


def queries_for(
    contents: list[np.ndarray], n_queries: int, dim: int, seed: int = 1
) -> tuple[Ragged, list[int]]:
    """Each query asks for one region of one page: a few noisy tokens near that region's content vector."""
    rng = np.random.default_rng(seed)
    qs, targets = [], []
    for _ in range(n_queries):
        p = int(rng.integers(len(contents)))
        v = contents[p][int(rng.integers(len(contents[p])))]
        n_tok = int(rng.integers(4, 9))
        qs.append(unit(v[None] + QUERY_NOISE * rng.standard_normal((n_tok, dim)) / np.sqrt(dim)))
        targets.append(p)
    return Ragged.from_list(qs), targets


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pages", type=int, default=120)
    ap.add_argument("--dim", type=int, default=128)
    ap.add_argument("--queries", type=int, default=40)
    ap.add_argument("--spec", default="sq8", help="codec for the merged patch vectors (no pooling stage)")
    ap.add_argument("-k", type=int, default=5)
    ap.add_argument(
        "--semantic",
        action="store_true",
        help="also Ward-cluster each page's patches (Light-ColPali; ~1 s per page on one CPU core)",
    )
    ap.add_argument("--json", action="store_true", help="print JSON rows only")
    args = ap.parse_args(argv)

    def say(*a: object) -> None:
        if not args.json:
            print(*a)

    pages, kinds, contents = synthetic_pages(args.pages, args.dim)
    queries, targets = queries_for(contents, args.queries, args.dim)
    ids = [f"page-{i:04d}" for i in range(len(pages))]
    qids = [f"q{i}" for i in range(len(queries))]
    say(
        f"{len(pages)} pages x {GRID[0]}x{GRID[1]} patches ({pages.n_tokens:,} vectors, {args.dim}-d), "
        f"{len(queries)} queries"
    )

    exact = run_from_scores(maxsim_batch(queries, pages), qids, ids, args.k)
    hit = np.mean([exact[q][0] == ids[t] for q, t in zip(qids, targets)])
    rows = [
        {
            "variant": "exact (1024 patches)",
            "vectors_per_page": GRID[0] * GRID[1],
            f"recall{args.k}_vs_exact": 1.0,
            "top1_is_source_page": round(float(hit), 3),
            "pool_s": 0.0,
        }
    ]
    merged = {}
    for mode in ("spatial", "semantic") if args.semantic else ("spatial",):
        t = time.perf_counter()
        merged[mode] = pool_patches(pages, GRID, factor=4, mode=mode)
        pool_s = time.perf_counter() - t
        run = run_from_scores(maxsim_batch(queries, merged[mode]), qids, ids, args.k)
        rows.append(
            {
                "variant": f"{mode} merge x4",
                "vectors_per_page": int(merged[mode].lengths[0]),
                f"recall{args.k}_vs_exact": round(recall_vs_reference(run, exact, args.k), 3),
                "top1_is_source_page": round(
                    float(np.mean([run[q][0] == ids[t] for q, t in zip(qids, targets)])), 3
                ),
                "pool_s": round(pool_s, 2),
            }
        )

    # an index of the spatially merged pages, compressed with --spec, filtered by page kind
    with tempfile.TemporaryDirectory() as tmp:
        idx = ms.create(os.path.join(tmp, "pages"), spec=args.spec, dim=args.dim)
        idx.add(ids, merged["spatial"], metadata={"kind": kinds})
        st = idx.stats()
        res = idx.search(queries, k=args.k, columns=["kind"], params={"candidates": "exhaustive"})
        run = {q: [] for q in qids}
        for qi, did in zip(res["query"].to_pylist(), res["id"].to_pylist()):
            run[qids[qi]].append(did)
        bytes_per_patch = st["stored_bytes"] / pages.n_tokens  # per ORIGINAL patch
        rows.append(
            {
                "variant": f"index: spatial x4 + {args.spec}",
                "vectors_per_page": int(merged["spatial"].lengths[0]),
                f"recall{args.k}_vs_exact": round(recall_vs_reference(run, exact, args.k), 3),
                "top1_is_source_page": round(
                    float(np.mean([run[q][0] == ids[t] for q, t in zip(qids, targets)])), 3
                ),
                "bytes_per_patch": round(bytes_per_patch, 2),
                "fp32_bytes_per_patch": args.dim * 4,
            }
        )
        q0, want = 0, kinds[targets[0]]
        filt = idx.search(queries[q0], k=3, where=f"kind = '{want}'", columns=["kind"])
        rows.append(
            {
                "variant": f"filtered search kind = '{want}'",
                "ids": filt["id"].to_pylist(),
                "kinds": filt["kind"].to_pylist(),
                "source_page": ids[targets[q0]],
            }
        )

    for r in rows:
        print(json.dumps(r)) if args.json else say("  ".join(f"{k}={v}" for k, v in r.items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
