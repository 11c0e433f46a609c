import gzip
import json
import math

import numpy as np
import pytest

from mvstore.eval import (
    load_beir,
    metrics,
    ndcg_at_k,
    recall_at_k,
    recall_vs_reference,
    run_from_results,
    run_from_scores,
)
from mvstore.exceptions import DatasetFormatError


def test_ndcg_against_hand_computed_values():
    qrels = {"q": {"a": 1, "b": 1}}
    assert ndcg_at_k({"q": ["a", "b", "c"]}, qrels, 10) == pytest.approx(1.0)
    dcg = 1 / math.log2(3) + 1 / math.log2(4)
    idcg = 1 + 1 / math.log2(3)
    assert ndcg_at_k({"q": ["x", "a", "b"]}, qrels, 10) == pytest.approx(dcg / idcg)
    assert ndcg_at_k({"q": ["x", "a", "b"]}, qrels, 1) == 0.0
    # identical ids (query id == doc id) are ignored, as BEIR does
    assert ndcg_at_k({"q": ["q", "a", "b"]}, qrels, 2) == pytest.approx(1.0)
    assert ndcg_at_k({}, qrels, 10) == 0.0


def test_recalls():
    qrels = {"q1": {"a": 1, "b": 1}, "q2": {"c": 1}}
    run = {"q1": ["a", "x", "b"], "q2": ["y"]}
    assert recall_at_k(run, qrels, 2) == pytest.approx(0.25)
    assert recall_at_k(run, qrels, 3) == pytest.approx(0.5)
    assert recall_vs_reference(run, {"q1": ["b", "a"]}, 2) == pytest.approx(0.5)
    assert recall_vs_reference(run, {"q1": ["b", "a"]}, 3) == pytest.approx(1.0)


def test_run_from_scores_orders_and_breaks_ties_by_doc_order():
    s = np.array([[0.1, 0.9, 0.5, 0.9]], np.float32)
    assert run_from_scores(s, ["q"], ["a", "b", "c", "d"], 3) == {"q": ["b", "d", "c"]}


def test_run_from_results_and_metrics_rows():
    import pyarrow as pa

    res = pa.table({"query": [0, 0, 1], "rank": [0, 1, 0], "id": [7, 3, 9], "score": [0.9, 0.5, 0.8]})
    run = run_from_results(res, ["qa", "qb", "qc"])
    assert run == {"qa": ["7", "3"], "qb": ["9"], "qc": []}  # ids as the strings qrels hold
    qrels = {"qa": {"3": 1}, "qb": {"9": 2}, "qz": {"1": 1}}  # qz: not asked, left out
    assert metrics(run, qrels, 1) == {"ndcg1": 0.5, "recall1": 0.5, "recall100": 1.0}
    assert metrics(run, qrels, 2) == {
        "ndcg2": round((1 / math.log2(3) + 1) / 2, 4),
        "recall2": 1.0,
        "recall100": 1.0,
    }


def test_load_beir_gz_and_plain(tmp_path):
    with gzip.open(tmp_path / "corpus.jsonl.gz", "wt") as f:
        f.write(json.dumps({"_id": "d1", "title": "T", "text": "body"}) + "\n")
        f.write(json.dumps({"_id": "d2", "title": "", "text": "other"}) + "\n")
    (tmp_path / "queries.jsonl").write_text(
        json.dumps({"_id": "q1", "text": "query"})
        + "\n"
        + json.dumps({"_id": "q9", "text": "unjudged"})
        + "\n"
    )
    (tmp_path / "qrels").mkdir()
    (tmp_path / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td2\t1\n")
    ds = load_beir(tmp_path)
    assert ds.corpus == {"d1": "T body", "d2": "other"}
    assert ds.queries == {"q1": "query"} and ds.qrels == {"q1": {"d2": 1}}
    with pytest.raises(FileNotFoundError, match="available splits: \\['test'\\]"):
        load_beir(tmp_path, "dev")
    (tmp_path / "corpus.jsonl.gz").unlink()
    with pytest.raises(FileNotFoundError, match="no corpus.jsonl"):
        load_beir(tmp_path)


@pytest.mark.parametrize("bad", ["corpus-json", "corpus-id", "query-text", "grade", "utf8"])
def test_load_beir_bad_files_name_the_line_and_the_form(tmp_path, bad):
    corpus = [
        json.dumps({"_id": "d1", "text": "body"}),
        json.dumps({"_id": "d2", "title": None, "text": "x"}),
    ]
    queries = [json.dumps({"_id": "q1", "text": "query"})]
    qrels = "query-id\tcorpus-id\tscore\nq1\td1\t1\n"
    if bad == "corpus-json":
        corpus.append('{"_id": "d3", text: oops}')
    elif bad == "corpus-id":
        corpus.append(json.dumps({"id": "d3", "text": "no _id"}))
    elif bad == "query-text":
        queries.append(json.dumps({"_id": "q2", "body": "no text"}))
    elif bad == "grade":
        qrels += "q1\td2\trelevant\n"
    (tmp_path / "corpus.jsonl").write_text("\n".join(corpus) + "\n")
    (tmp_path / "queries.jsonl").write_text("\n".join(queries) + "\n")
    if bad == "utf8":
        (tmp_path / "queries.jsonl").write_bytes(b'{"_id": "q1", "text": "\xff"}\n')
    (tmp_path / "qrels").mkdir()
    (tmp_path / "qrels" / "test.tsv").write_text(qrels)
    expected = {
        "corpus-json": r"corpus.jsonl:3 is not JSON \(.*\); a BEIR file holds one JSON object per line",
        "corpus-id": r"corpus.jsonl:3 is not a BEIR record: each line is a JSON object with '_id'",
        "query-text": r"queries.jsonl:2 is not a BEIR record: each line is a JSON object with '_id' and 'text'",
        "grade": r"test.tsv:3: the grade 'relevant' is not an integer; a qrels line is",
        "utf8": r"queries.jsonl is not UTF-8 text",
    }[bad]
    with pytest.raises(DatasetFormatError, match=expected):
        load_beir(tmp_path)
