"""The quick reliability matrix (benchmarks/reliability.py --quick), one test per group module: every case
must come out "ok" (no data loss, unopenable index, silent wrong result or raw error)."""

from __future__ import annotations

import json

import pytest

from benchmarks import reliability


@pytest.mark.parametrize("group", reliability.groups())
def test_group_quick(group, tmp_path):
    rows = reliability.run_group(group, tmp_path, quick=True, seed=0)
    assert rows, f"group {group} ran no cases"
    bad = [r for r in rows if r["outcome"] != "ok"]
    assert not bad, "\n".join(f"{r['case']}: {r['outcome']}: {r['detail']}" for r in bad)


def test_driver_reports_and_fails_on_a_not_ok_case(monkeypatch, capsys):
    rows = {
        "good": [{"group": "good", "case": "a", "outcome": "ok", "detail": ""}],
        "bad": [
            {"group": "bad", "case": "b", "outcome": "ok", "detail": ""},
            {"group": "bad", "case": "c", "outcome": "data_loss", "detail": "lost 3 ids"},
        ],
    }
    monkeypatch.setattr(reliability, "groups", lambda: ["bad", "good"])
    monkeypatch.setattr(reliability, "run_group", lambda name, workdir, quick, seed: rows[name])
    assert reliability.main(["--json", "--quick", "--groups", "good"]) == 0
    assert json.loads(capsys.readouterr().out)["total"] == {"tried": 1, "ok": 1, "not_ok": 0}
    assert reliability.main(["--json", "--quick"]) == 1
    s = json.loads(capsys.readouterr().out)
    assert s["total"] == {"tried": 3, "ok": 2, "not_ok": 1}
    assert s["groups"]["bad"]["outcomes"] == {"ok": 1, "data_loss": 1}
    assert [r["case"] for r in s["not_ok"]] == ["c"]


def test_a_group_that_raises_is_not_ok(monkeypatch, tmp_path):
    import types

    mod = types.SimpleNamespace(GROUP="boom", run=lambda workdir, quick, seed: 1 / 0)
    monkeypatch.setattr(reliability.importlib, "import_module", lambda name: mod)
    rows = reliability.run_group("boom", tmp_path, quick=True)
    assert [r["outcome"] for r in rows] == ["raw_error"] and "ZeroDivisionError" in rows[0]["detail"]
