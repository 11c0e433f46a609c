"""The `mvstore` command line end to end, each command through a subprocess; plus report.plot_frontier."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from mvstore.report import ReportError, load_rows, pareto_front, plot_frontier
from mvstore.testing import synthetic_docs

REPO = Path(__file__).resolve().parents[1]

TEXTS = [
    ("Solar panels convert sunlight into electricity using photovoltaic cells.", "energy"),
    ("The solar system has eight planets orbiting the sun.", "space"),
    ("Wind turbines generate electricity from moving air.", "energy"),
    ("Photovoltaic panels on rooftops lower household electricity bills.", "energy"),
    ("Panels of experts discussed the economy at the summit.", "economy"),
    ("Sunlight exposure helps the body produce vitamin D.", "health"),
    ("Electricity prices rose sharply during the winter.", "economy"),
    ("Battery storage smooths out the output of solar farms.", "energy"),
    ("A solar eclipse happens when the moon blocks the sun.", "space"),
    ("Hydroelectric dams turn flowing water into electric power.", "energy"),
    ("Tides are caused by the gravitational pull of the moon.", "space"),
    ("Regular exercise lowers the risk of heart disease.", "health"),
    ("Vaccines train the immune system to recognise a virus.", "health"),
    ("Interest rates shape how much households borrow.", "economy"),
]
QUERIES = {
    "q1": ("how do solar panels make electricity", {"d0": 2, "d3": 1}),
    "q2": ("what causes ocean tides", {"d10": 2}),
    "q3": ("how does the immune system respond to vaccines", {"d12": 2}),
}


def mvstore(*args, check_rc=0, env=None):
    e = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", **(env or {}))
    p = subprocess.run(
        [sys.executable, "-m", "mvstore.cli", *map(str, args)],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=e,
        timeout=600,
    )
    if check_rc is not None:
        assert p.returncode == check_rc, f"rc={p.returncode}\nstdout:\n{p.stdout}\nstderr:\n{p.stderr}"
    return p


def json_rows(stdout):
    return [json.loads(line) for line in stdout.splitlines() if line.strip()]


@pytest.fixture(scope="module")
def beir(tmp_path_factory):
    """A tiny BEIR-format dataset (corpus, queries, qrels) in a temporary directory."""
    root = tmp_path_factory.mktemp("beir")
    with open(root / "corpus.jsonl", "w") as f:
        for i, (t, topic) in enumerate(TEXTS):
            f.write(json.dumps({"_id": f"d{i}", "title": "", "text": t, "topic": topic}) + "\n")
    with open(root / "queries.jsonl", "w") as f:
        for q, (t, _) in QUERIES.items():
            f.write(json.dumps({"_id": q, "text": t}) + "\n")
    (root / "qrels").mkdir()
    with open(root / "qrels" / "test.tsv", "w") as f:
        f.write("query-id\tcorpus-id\tscore\n")
        for q, (_, rel) in QUERIES.items():
            for d, g in rel.items():
                f.write(f"{q}\t{d}\t{g}\n")
    return root


@pytest.fixture(scope="module")
def vector_files(tmp_path_factory):
    """Precomputed token vectors: a Parquet file (id, vectors, lang) and query vectors in an .npz."""
    root = tmp_path_factory.mktemp("vec")
    docs = synthetic_docs(60, 16, n_topics=12, min_len=5, max_len=20, seed=0)
    queries = synthetic_docs(4, 16, n_topics=12, min_len=3, max_len=5, seed=1)
    tbl = pa.table(
        {
            "id": pa.array(np.arange(1000, 1060), pa.int64()),
            "vectors": [d.tolist() for d in docs],
            "lang": ["en" if i % 3 else "fr" for i in range(60)],
        }
    )
    pq.write_table(tbl, root / "docs.parquet")
    np.savez(root / "docs.npz", ids=np.arange(1000, 1060), vectors=docs.values, offsets=docs.offsets)
    np.savez(root / "queries.npz", vectors=queries.values, offsets=queries.offsets)
    return root, docs, queries


# ------------------------------------------------------------------------- vectors (no model load)
def test_build_search_info_from_vectors(vector_files, tmp_path):
    root, docs, queries = vector_files
    ix = tmp_path / "ix"
    out = json_rows(
        mvstore("-q", "build", ix, "--input", root / "docs.parquet", "--spec", "sq8", "--json").stdout
    )
    assert out[0]["docs"] == 60 and out[0]["tokens"] == docs.n_tokens and out[0]["bytes_per_token"] == 20.0
    res = json_rows(
        mvstore(
            "search",
            ix,
            "--query-file",
            root / "queries.npz",
            "-k",
            "4",
            "--where",
            "lang = 'fr'",
            "--json",
            "--candidates",
            "exhaustive",
        ).stdout
    )
    assert len(res) == 16 and {r["lang"] for r in res} == {"fr"}
    # the top hit equals exact MaxSim restricted to the filtered documents
    from mvstore.search.maxsim import maxsim

    fr = np.array([i for i in range(60) if i % 3 == 0])
    best = 1000 + fr[int(np.argmax(maxsim(queries[0], docs[fr])))]
    assert [r["id"] for r in res if r["query"] == "q0"][0] == best
    info = json.loads(mvstore("info", ix, "--json").stdout)
    assert info["spec"] == "sq8" and info["docs"] == 60 and info["columns"] == ["lang"]
    assert [v["version"] for v in info["versions"]] == [1] and "docs.lance" in info["files"]
    text = mvstore("info", ix).stdout
    assert "bytes_per_token" in text and "versions" in text
    # the stage-1 knobs reach SearchParams: probing every centroid and re-ranking every document is exact
    knobs = json_rows(
        mvstore(
            "search",
            ix,
            "--query-file",
            root / "queries.npz",
            "-k",
            "4",
            "--where",
            "lang = 'fr'",
            "--json",
            "--nprobe",
            "4096",
            "--n-full",
            "60",
            "--n-rerank",
            "60",
            "--threads",
            "1",
        ).stdout
    )
    assert [(r["query"], r["id"]) for r in knobs] == [(r["query"], r["id"]) for r in res]
    bad = mvstore("search", ix, "--query-file", root / "queries.npz", "--threads", "0", check_rc=2)
    assert "--threads 0 must be a positive integer" in bad.stderr  # the flag, not SearchParams.threads
    # table output (not JSON) carries a header and the results
    table = mvstore("search", ix, "--query-file", root / "queries.npz", "-k", "2").stdout
    assert table.splitlines()[0].split() == ["query", "rank", "id", "score", "lang"]


def test_build_from_npz_and_tune_on_vectors(vector_files, tmp_path):
    root, docs, _ = vector_files
    out = json_rows(
        mvstore(
            "-q", "build", tmp_path / "ix", "--input", root / "docs.npz", "--spec", "pca8,sq4", "--json"
        ).stdout
    )
    assert out[0]["docs"] == 60 and out[0]["bytes_per_token"] == 4.0 + 4  # 4 B codes + 4 B stage-1 term
    rows = json_rows(
        mvstore(
            "-q",
            "tune",
            root / "docs.npz",
            "--queries",
            root / "queries.npz",
            "--budget",
            "8",
            "--candidates",
            "sq8;sq4;bin;pca8,sq8",
            "-k",
            "5",
            "--json",
        ).stdout
    )
    assert {r["spec"] for r in rows} == {"sq8", "sq4", "bin", "pca8,sq8"}
    picked = [r for r in rows if r["picked"]]
    assert len(picked) == 1 and picked[0]["bytes_per_token"] <= 8
    assert picked[0]["fidelity"] == max(r["fidelity"] for r in rows if r["within_budget"])
    text = mvstore(
        "-q",
        "tune",
        root / "docs.npz",
        "--queries",
        root / "queries.npz",
        "--budget",
        "8",
        "--candidates",
        "sq4;bin",
        "-k",
        "5",
    ).stdout
    assert text.startswith("picked 'sq4'") and "pareto" in text


def test_report_command_and_plot(tmp_path):
    rows = [
        {"spec": "exact-fp32", "bytes_per_token": 1536, "ndcg10": 0.707},
        {"spec": "fp16", "bytes_per_token": 768, "ndcg10": 0.706},
        {"spec": "pca96,rq2", "bytes_per_token": 26, "ndcg10": 0.69},
        {"spec": "pq16", "bytes_per_token": 16, "ndcg10": 0.62},
        {"spec": "bin", "bytes_per_token": 48, "ndcg10": 0.60},
        {"spec": "search-row", "p50_ms": 3.0},
    ]
    src = tmp_path / "rows.jsonl"
    src.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    png = tmp_path / "frontier.png"
    p = mvstore("report", src, "-o", png)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
    lines = p.stdout.splitlines()
    assert lines[0].split() == ["spec", "bytes_per_token", "ndcg10"]
    assert [ln.split()[0] for ln in lines[1:]] == [
        "pq16",
        "pca96,rq2",
        "fp16",
        "exact-fp32",
    ]  # bin is dominated
    assert [rows[i]["spec"] for i in pareto_front(rows)] == ["pq16", "pca96,rq2", "fp16", "exact-fp32"]
    with pytest.warns(UserWarning, match="1 of 6 rows lack"):
        plot_frontier(rows, tmp_path / "b.png")
    assert load_rows(src) == rows


def test_report_errors(tmp_path):
    with pytest.raises(
        ReportError, match="none of the 1 rows has numbers in both 'bytes_per_token' and 'ndcg10'.*x=/y="
    ):
        plot_frontier([{"spec": "a", "p50_ms": 1.0}], tmp_path / "a.png")
    with pytest.raises(ReportError, match="must end in .png"):
        plot_frontier([{"bytes_per_token": 1, "ndcg10": 0.5}], tmp_path / "a.jpg")
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"spec": "a"}\nspec=b ndcg10=0.5\n')
    with pytest.raises(ReportError, match="bad.jsonl:2 is not JSON.*--json"):
        load_rows(bad)
    p = mvstore("report", bad, "-o", tmp_path / "x.png", check_rc=2)
    assert p.stderr.strip().count("\n") == 0 and "bad.jsonl:2 is not JSON" in p.stderr


# ------------------------------------------------------------------------------- error handling
def test_errors_are_one_line_with_exit_code_2(vector_files, tmp_path):
    root, _, _ = vector_files
    p = mvstore("build", tmp_path / "ix", "--input", tmp_path / "missing.jsonl", check_rc=2)
    assert (
        p.stderr.strip() == f"mvstore: error: input file {str(tmp_path / 'missing.jsonl')!r} does not exist"
    )
    p = mvstore("build", tmp_path / "ix", "--input", root / "docs.parquet", "--spec", "pca16,sq9", check_rc=2)
    err = p.stderr.strip()
    assert (
        err.startswith("mvstore: error: at offset 6 in 'pca16,sq9': unknown stage 'sq9'") and "\n" not in err
    )
    assert "Traceback" not in p.stderr
    p = mvstore("search", tmp_path / "nope", "hello", check_rc=2)
    assert "no index at" in p.stderr and "mvstore build" in p.stderr
    p = mvstore(
        "build", tmp_path / "ix2", "--input", root / "docs.parquet", "--id-column", "doc_id", check_rc=2
    )
    assert "no id column 'doc_id'" in p.stderr and "--id-column" in p.stderr
    p = mvstore("tune", root / "docs.npz", "--budget", "8", check_rc=2)
    assert "needs --queries" in p.stderr
    dup = tmp_path / "dup.jsonl"  # token vectors in JSONL, with a repeated id
    dup.write_text(
        "".join(json.dumps({"id": i % 3, "vectors": [[1.0, 0.0], [0.6, 0.8]]}) + "\n" for i in range(4))
    )
    p = mvstore("build", tmp_path / "ix3", "--input", dup, "--spec", "fp16", check_rc=2)
    assert "mvstore: error:" in p.stderr and "0" in p.stderr and "Traceback" not in p.stderr
    assert not (tmp_path / "ix3").exists()  # a failed build leaves no half-made index behind
    p = mvstore("--debug", "build", tmp_path / "ix", "--input", tmp_path / "missing.jsonl", check_rc=1)
    assert "Traceback" in p.stderr and "FileNotFoundError" in p.stderr
    p = mvstore("info", tmp_path / "nope", "--debug", check_rc=1)  # the flag also works after the command
    assert "Traceback" in p.stderr
    p = mvstore("search", check_rc=2)  # argparse usage error
    assert "usage:" in p.stderr


# ----------------------------------------------------------------------- texts (bundled encoder)
def test_text_build_search_eval_bench(beir, tmp_path):
    cache = tmp_path / "cache"
    ix = tmp_path / "ix"
    out = json_rows(
        mvstore(
            "-q",
            "build",
            ix,
            "--input",
            beir / "corpus.jsonl",
            "--id-column",
            "_id",
            "--spec",
            "pca96,sq8",
            "--cache",
            cache,
            "--json",
        ).stdout
    )
    assert out[0]["docs"] == len(TEXTS)
    res = json_rows(
        mvstore(
            "search",
            ix,
            "what causes ocean tides",
            "how do solar panels work",
            "-k",
            "3",
            "--json",
            "--where",
            "topic != 'economy'",
            "--cache",
            cache,
        ).stdout
    )
    assert [r["id"] for r in res if r["rank"] == 0] == ["d10", "d0"]
    assert all(r["topic"] != "economy" for r in res) and "text" in res[0]
    ev = json_rows(mvstore("-q", "eval", beir, "--index", ix, "--json", "--cache", cache).stdout)[0]
    assert ev["spec"] == "pca96,sq8" and ev["queries"] == 3 and ev["ndcg10"] > 0.8 and ev["recall100"] == 1.0
    bench = json_rows(
        mvstore(
            "-q", "bench", beir, "--spec", "fp16", "--spec", "pca32,sq4", "--json", "--cache", cache
        ).stdout
    )
    assert [r["spec"] for r in bench] == ["exact-fp32", "fp16", "pca32,sq4"]
    assert bench[1]["recall10_vs_exact"] == 1.0 and abs(bench[1]["ndcg10"] - bench[0]["ndcg10"]) < 0.02
    assert bench[2]["bytes_per_token"] < bench[1]["bytes_per_token"] < bench[0]["bytes_per_token"]
    assert all(r["p50_ms"] > 0 and r["peak_rss_mb"] > 0 for r in bench)


@pytest.mark.slow
def test_eval_builds_its_own_index(beir, tmp_path):
    ev = json_rows(mvstore("-q", "eval", beir, "--spec", "pca96,sq8", "--json").stdout)[0]
    assert ev["spec"] == "pca96,sq8" and ev["docs"] == len(TEXTS) and ev["ndcg10"] > 0.8 and "index" not in ev
    ev2 = json_rows(
        mvstore("-q", "eval", beir, "--spec", "fp16", "--index-dir", tmp_path / "ix", "--json").stdout
    )[0]
    assert ev2["index"] == str(tmp_path / "ix") and (tmp_path / "ix" / "mvstore.json").exists()


def test_build_default_and_auto_spec(vector_files, tmp_path):
    root, docs, _ = vector_files
    out = json_rows(mvstore("-q", "build", tmp_path / "a", "--input", root / "docs.npz", "--json").stdout)
    from mvstore.spec import default_spec

    assert out[0]["spec"] == default_spec(16) and "auto_fidelity" not in out[0]
    out = json_rows(
        mvstore(
            "-q",
            "build",
            tmp_path / "b",
            "--input",
            root / "docs.npz",
            "--spec",
            "auto",
            "--max-bytes-per-token",
            "4",
            "--json",
        ).stdout
    )
    assert out[0]["auto_budget"] == 4 and 0 <= out[0]["auto_fidelity"] <= 1 and out[0]["spec"] != "auto"
    err = mvstore("build", tmp_path / "c", "--input", root / "docs.npz", "--spec", "auto", check_rc=2).stderr
    assert "--max-bytes-per-token" in err and not (tmp_path / "c").exists()
    err = mvstore(
        "build", tmp_path / "d", "--input", root / "docs.npz", "--max-bytes-per-token", "4", check_rc=2
    ).stderr
    assert "only applies to --spec auto" in err


# ------------------------------------------------------- user mistakes vs. bugs (in process, no model)
def test_a_bug_shows_its_traceback_not_a_user_error(monkeypatch, capsys):
    """Only mvstore's errors and OS errors are reported as user mistakes (exit 2); a KeyError from a bug
    propagates (a traceback, exit 1 from the interpreter)."""
    from mvstore import cli
    from mvstore.cli import commands

    def broken(args):
        raise KeyError("internal")

    monkeypatch.setattr(commands, "cmd_info", broken)
    with pytest.raises(KeyError, match="internal"):
        cli.main(["info", "anything"])
    assert "mvstore: error" not in capsys.readouterr().err


def _bad_inputs(root: Path, vector_files) -> dict:
    """Each user mistake in an input file: (command line, the phrase its one-line error names)."""
    vec, docs, _ = vector_files
    (root / "notzip.npz").write_text("hello")
    np.savez(root / "objects.npz", vectors=np.array([object()], dtype=object), offsets=np.array([0, 1]))
    (root / "bad.parquet").write_bytes(b"PAR1 not parquet")
    (root / "ragged.jsonl").write_text(json.dumps({"id": 1, "vectors": [[1.0, 0.0], [0.5]]}) + "\n")
    (root / "strings.jsonl").write_text(json.dumps({"id": 1, "vectors": [["a", "b"]]}) + "\n")
    (root / "binary.txt").write_bytes(b"\xff\xfe\x00 not text")
    (root / "q.jsonl").write_text(json.dumps({"body": "no text column"}) + "\n")
    beir = root / "beir"
    (beir / "qrels").mkdir(parents=True)
    (beir / "corpus.jsonl").write_text(json.dumps({"_id": "d1", "text": "a"}) + "\n")
    (beir / "queries.jsonl").write_text(json.dumps({"_id": "q1", "text": "a"}) + "\n")
    (beir / "qrels" / "test.tsv").write_text("q1\td1\thigh\n")
    ix = root / "ix"
    return {
        "npz-not-zip": (["build", ix, "--input", root / "notzip.npz"], "is not an .npz of numeric arrays"),
        "npz-objects": (["build", ix, "--input", root / "objects.npz"], "np.savez(path, vectors=..."),
        "parquet": (["build", ix, "--input", root / "bad.parquet"], "is not a readable Parquet file"),
        "ragged-vectors": (
            ["build", ix, "--input", root / "ragged.jsonl"],
            "record 0 (id 1) has a 'vectors' value that is not a list of equal-length lists",
        ),
        "string-vectors": (["build", ix, "--input", root / "strings.jsonl"], "fix that record or drop it"),
        "binary-queries": (["search", vec / "ix", "--query-file", root / "binary.txt"], "is not UTF-8 text"),
        "queries-column": (
            ["tune", vec / "docs.npz", "--queries", root / "q.jsonl", "--budget", "8"],
            "has no text column 'text' (columns: ['body']); pass --text-column NAME",
        ),
        "report-binary": (["report", root / "binary.txt", "-o", root / "f.png"], "is not UTF-8 text"),
        "beir-grade": (["eval", beir, "--index", vec / "ix"], "the grade 'high' is not an integer"),
        "model-dir": (
            ["search", vec / "ix", "a query", "--encoder", f"hf:{root}"],
            f"cannot load a model from {str(root)!r}",
        ),
    }


BAD_INPUTS = [
    "npz-not-zip",
    "npz-objects",
    "parquet",
    "ragged-vectors",
    "string-vectors",
    "binary-queries",
    "queries-column",
    "report-binary",
    "beir-grade",
    "model-dir",
]


@pytest.fixture(scope="module")
def vector_index(vector_files):
    from mvstore import cli

    root = vector_files[0]
    if not (root / "ix").exists():
        assert (
            cli.main(["-q", "build", str(root / "ix"), "--input", str(root / "docs.npz"), "--spec", "fp16"])
            == 0
        )
    return vector_files


@pytest.mark.parametrize("case", BAD_INPUTS)
def test_bad_input_files_are_one_line_user_errors(vector_index, tmp_path, capsys, case):
    from mvstore import cli

    argv, phrase = _bad_inputs(tmp_path, vector_index)[case]
    assert cli.main(["-q", *map(str, argv)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("mvstore: error: ") and "\n" not in err and phrase in err, err
    assert not (tmp_path / "ix").exists()


@pytest.mark.parametrize("argv, phrase", [
    (["build", "IX", "--input", "in.npz", "--batch-size", "0"], "argument --batch-size: 0 must be an integer >= 1"),
    (["build", "IX", "--input", "in.npz", "--train-docs", "-3"], "argument --train-docs: -3 must be an integer >= 1"),
    (["tune", "in.npz", "--budget", "8", "--sample-docs", "-1"], "argument --sample-docs: -1 must be an integer >= 1"),
    (["tune", "in.npz", "--budget", "8", "--seed", "-1"], "argument --seed: -1 must be an integer >= 0"),
    (["search", "IX", "q", "--query-max-length", "0"], "argument --query-max-length: 0 must be an integer >= 1"),
    (["bench", "B", "--latency-queries", "x"], "argument --latency-queries: 'x' is not an integer"),
    (["build", "IX", "--input", "in.npz", "--gpus-per-worker", "-1"], "argument --gpus-per-worker: -1 must be"),
])  # fmt: skip
def test_count_flags_are_checked_by_the_parser(capsys, argv, phrase):
    from mvstore import cli

    with pytest.raises(SystemExit) as e:
        cli.main(argv)
    assert e.value.code == 2 and phrase in capsys.readouterr().err


def test_build_directory_checks_its_counts(tmp_path):
    from mvstore.exceptions import InvalidArgumentError
    from mvstore.store._build import build_directory

    docs = synthetic_docs(4, 8, seed=0)
    with pytest.raises(InvalidArgumentError, match="batch_size=0 must be a positive integer"):
        build_directory(str(tmp_path / "ix"), ids=[0, 1, 2, 3], docs=docs, batch_size=0)
    with pytest.raises(InvalidArgumentError, match="no documents"):
        build_directory(str(tmp_path / "ix"), ids=[], docs=docs)
    assert not (tmp_path / "ix").exists()


def test_build_without_ray_writes_only_local_directories(tmp_path, monkeypatch, capsys):
    """An object-store URI without --ray was made a local directory named 's3:' (os.path.abspath)."""
    from mvstore import cli

    monkeypatch.chdir(tmp_path)
    np.savez(tmp_path / "v.npz", vectors=np.eye(4, dtype=np.float32), offsets=np.array([0, 2, 4]))
    assert cli.main(["-q", "build", "s3://bucket/ix", "--input", "v.npz", "--spec", "fp16"]) == 2
    assert "mvstore build URI --ray" in capsys.readouterr().err and os.listdir(tmp_path) == ["v.npz"]
    assert cli.main(["-q", "build", "ix", "--input", "v.npz", "--storage-option", "aws_region=x"]) == 2
    assert "--storage-option is for an object-store index" in capsys.readouterr().err
    assert os.listdir(tmp_path) == ["v.npz"]


# ------------------------------------------------------------------ JSONL inputs (pyarrow.json)
def test_jsonl_reads_every_field_keeps_strings_and_gz(tmp_path):
    import gzip

    from mvstore.cli.inputs import read_table

    lines = [
        json.dumps({"id": 1, "day": "2020-01-01", "vectors": [[1, 0]]}),
        "",
        json.dumps({"id": 2, "day": "2021-02-03T00:00:00", "vectors": [[0.5, 1.0]], "lang": "fr"}),
    ]
    (tmp_path / "a.jsonl").write_text("\n".join(lines) + "\n")
    with gzip.open(tmp_path / "a.jsonl.gz", "wt") as f:
        f.write("\n".join(lines) + "\n")
    for name in ("a.jsonl", "a.jsonl.gz"):
        tbl = read_table(str(tmp_path / name))
        # a field only later records hold is a column (null before); date-like strings stay strings
        assert tbl.to_pylist() == [
            {"id": 1, "day": "2020-01-01", "vectors": [[1.0, 0.0]], "lang": None},
            {"id": 2, "day": "2021-02-03T00:00:00", "vectors": [[0.5, 1.0]], "lang": "fr"},
        ]
        assert tbl.schema.field("day").type == pa.string()


def test_jsonl_record_longer_than_a_pyarrow_block(tmp_path):
    from mvstore.cli.inputs import read_table

    rows = [{"id": i, "vectors": np.full((1200, 128), 0.123456789).tolist()} for i in range(3)]
    path = tmp_path / "long.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert len(path.read_text().splitlines()[0]) > 1 << 20  # pyarrow.json's default block
    tbl = read_table(str(path))
    assert tbl.num_rows == 3 and len(tbl.column("vectors")[2].as_py()) == 1200


@pytest.mark.parametrize("case", ["late-bad-line", "array-line", "empty", "blank", "types", "utf8"])
def test_jsonl_errors_name_the_line(tmp_path, case):
    from mvstore.cli.inputs import read_table
    from mvstore.exceptions import UsageError

    path = tmp_path / "in.jsonl"
    if case == "late-bad-line":  # past pyarrow's first block, whose row numbers restart per block
        lines = [json.dumps({"id": i, "text": "x" * 100}) for i in range(20000)]
        lines[15000] = '{"id": 15000, "text": oops}'
        path.write_text("\n".join(lines) + "\n")
    else:
        path.write_bytes(
            {
                "array-line": b'{"id": 1}\n[1, 2]\n',
                "empty": b"",
                "blank": b"\n  \n",
                "types": b'{"id": 1}\n{"id": "x"}\n',
                "utf8": b'{"id": 1}\n{"id": 2, "t": "\xff"}\n',
            }[case]
        )
    expected = {
        "late-bad-line": r"in.jsonl:15001 is not valid JSON \(Expecting value\); expected one object per line",
        "array-line": r"in.jsonl:2 holds a list; expected one JSON object per line",
        "empty": r"in.jsonl holds no records",
        "blank": r"in.jsonl holds no records",
        "types": r"the records do not form a table \(JSON parse error: Column\(/id\) changed from number to string\); "
        r"give each field the same type on every line",
        "utf8": r"in.jsonl:2 is not UTF-8 text .*save the file as UTF-8",
    }[case]
    with pytest.raises(UsageError, match=expected):
        read_table(str(path))
