"""End to end through the store on SciFact (slow; needs the BEIR data and cached MiniLM token vectors)."""

from __future__ import annotations

import pytest

from mvstore.eval import ndcg_at_k, recall_vs_reference
from mvstore.search.params import SearchParams

pytestmark = pytest.mark.slow


def test_scifact_through_the_store_matches_exact_maxsim(tmp_path):
    data = pytest.importorskip("benchmarks.data")
    if not data.scifact_available():
        pytest.skip("SciFact is not available (set MVSTORE_SCIFACT)")
    import mvstore.store as ms

    sf = data.load_scifact(max_docs=1500)  # every judged doc + fillers: ~2 GB less than the full corpus
    idx = ms.create(tmp_path / "scifact", spec="fp16", dim=sf.docs.dim, n_centroids=256)
    batches = ((sf.doc_ids[a : a + 500], sf.docs[a : a + 500]) for a in range(0, len(sf.doc_ids), 500))
    idx.add_batches(batches)
    t = idx.search(sf.queries, k=10, params=SearchParams(candidates="exhaustive"))
    run: dict[str, list[str]] = {}
    for q, d in zip(t["query"].to_pylist(), t["id"].to_pylist()):
        run.setdefault(sf.query_ids[q], []).append(d)
    exact = sf.exact_run(k=10)
    assert recall_vs_reference(run, exact, k=10) > 0.99  # fp16 codes: same top-10 as fp32 up to near-ties
    assert abs(ndcg_at_k(run, sf.qrels, 10) - ndcg_at_k(exact, sf.qrels, 10)) < 0.005
    assert ms.open(tmp_path / "scifact").stats()["docs"] == len(sf.doc_ids)
