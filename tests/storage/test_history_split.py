"""The history store (SQL) apart from the regression logic (pure functions), on a store written by earlier code.

tests/data/legacy/history.sqlite was written by ``parity nightly`` at 9706553 (before the
redesign; the folder's README gives the command): it must open, read and take new runs.
"""
from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path

import pytest

import parity.storage.regressions as regressions
import parity.storage.history as history
from parity.storage.regressions import (Regression, SlowdownRule, judge_timing_series, stage_regressions,
                                             timing_regressions, verdicts_of_runs)
from parity.contract.result_schema import ResultTypeError, validate_result
from parity.contract.results import RunResult, Status
from parity.storage.history import HistoryError, HistoryStore

LEGACY = Path(__file__).resolve().parents[1] / "data" / "legacy"


@pytest.fixture
def legacy_store(tmp_path):
    path = tmp_path / "history.sqlite"
    shutil.copyfile(LEGACY / "history.sqlite", path)  # opening a store sets WAL mode: never touch the original
    with HistoryStore(path) as store:
        yield store


def test_the_previous_mains_store_opens_and_reads(legacy_store):
    runs = legacy_store.runs()
    assert [(r["fixture"], r["device"], r["dtype"]) for r in runs] == [("synthetic", "cpu", "float32"),
                                                                      ("synthetic", "cpu", "float64")]
    assert all(r["passed"] for r in runs)
    for run in runs:
        result = legacy_store.result(run["id"])
        typed = RunResult.from_dict(result, f"run {run['id']}")
        assert typed.to_dict() == result and typed.run_uuid == run["run_uuid"]
        assert [s["name"] for s in legacy_store.stages(run["id"])] == [s.name for s in typed.stage_records]
        assert {s["status"] for s in legacy_store.stages(run["id"])} == {Status.PASS}
    assert legacy_store.latest_matrix() and legacy_store.stage_order()
    assert history.find_regressions(legacy_store) == []


def test_the_previous_mains_store_takes_new_runs_and_finds_a_flip(legacy_store):
    latest = legacy_store.result(legacy_store.runs(dtype="float64")[0]["id"])
    newer = copy.deepcopy(latest)
    newer.update(run_uuid="00000000-0000-0000-0000-000000000001", started_at="2099-01-01T00:00:00+00:00",
                 passed=False, verdict="diverged", first_failure=newer["stages"][0]["name"])
    newer["stages"][0].update(status="fail", passed=False)
    legacy_store.record_run(newer)
    found = history.find_regressions(legacy_store)
    assert [(r.kind, r.target, r.previous, r.current) for r in found] == [
        ("status_flip", newer["stages"][0]["name"], "pass", "fail")]


@pytest.mark.parametrize("name", ["result_pass.json", "result_fault.json"])
def test_legacy_result_files_record_into_a_new_store(tmp_path, name):
    result = json.loads((LEGACY / name).read_text())
    with HistoryStore(tmp_path / "h.sqlite") as store:
        run_id = store.record_run(result)
        assert store.result(run_id) == result
        assert store.record_run(result) == run_id  # the same run_uuid: not recorded twice


def test_public_names_still_import_from_the_history_module():
    for name in ("Regression", "find_regressions", "timing_verdicts", "judged_timings", "error_grew"):
        assert getattr(history, name) is getattr(regressions, name)
    assert history.STATUSES == ("pass", "fail", "not_comparable", "error")
    assert history.SCHEMA_VERSION == history.STORE_VERSION == 1


def test_history_and_report_refuse_with_the_one_validators_words(tmp_path):
    result = json.loads((LEGACY / "result_pass.json").read_text())
    result["stages"][2]["max_rel"] = "small"
    with pytest.raises(ResultTypeError) as report_error:
        validate_result(result, "r.json")
    with HistoryStore(tmp_path / "h.sqlite") as store, pytest.raises(HistoryError) as history_error:
        store.record_run(result)
    problem = "not a valid parity result: stages[2].max_rel must be a finite number, got 'small'"
    assert str(report_error.value) == f"r.json: {problem}"
    assert str(history_error.value) == f"malformed result: {problem}"


def test_history_needs_more_keys_than_the_report():
    result = json.loads((LEGACY / "result_pass.json").read_text())
    del result["device"]
    validate_result(result, "r.json")  # the report renders it ("-")
    with pytest.raises(HistoryError, match=r"malformed result: not a parity result: missing key\(s\) device"):
        history.validate_result(result)


# ------------------------------------------------------------------ the pure functions
def _rows(status: str, max_rel: float) -> dict:
    return {"K": {"status": status, "max_rel": max_rel}}


def test_stage_regressions_judge_rows_without_a_store():
    latest, before = {"id": 2, "report_path": "r.html"}, {"id": 1, "report_path": None}
    stages_of = {2: _rows("fail", 1e-6), 1: _rows("pass", 1e-14)}
    found = list(stage_regressions(("fx", "cpu", "float64"), latest, [before], stages_of, error_factor=10.0,
                                   floor=2.2e-16))
    assert [(r.kind, r.previous, r.current, r.run_id, r.report_path) for r in found] == [
        ("status_flip", "pass", "fail", 2, "r.html"), ("error_growth", 1e-14, 1e-6, 2, "r.html")]
    quiet = {2: _rows("pass", 1e-15), 1: _rows("pass", 1e-16)}  # rounding level: not growth
    assert list(stage_regressions(("fx", "cpu", "float64"), latest, [before], quiet, error_factor=10.0,
                                  floor=2.2e-16)) == []


def test_timing_judgement_is_a_function_of_the_rows():
    rows = [{"run_id": i, "started_at": f"2026-01-0{i}", "clock": "cpu", "samples": {"total": [1.0, 1.01]}}
            for i in range(1, 6)]
    rows += [{"run_id": i, "started_at": f"2026-01-0{i}", "clock": "cpu", "samples": {"total": [3.0, 3.02, 3.01]}}
             for i in range(6, 9)]
    rows.insert(0, {"run_id": 0, "started_at": "2025-12-31", "clock": "wall", "samples": {"total": [0.1]}})
    judged = judge_timing_series(rows)
    assert judged["clock"] == "cpu" and judged["dropped"] == 1 and len(judged["runs"]) == 8
    verdicts = verdicts_of_runs(judged["runs"], SlowdownRule())
    assert verdicts["total"].flagged
    found = list(timing_regressions(("fx", "cpu", "float64"), {"id": 8, "report_path": None}, verdicts))
    assert [(r.kind, r.target) for r in found] == [("slowdown", "total")] and isinstance(found[0], Regression)
    assert not verdicts_of_runs(judged["runs"][:5], SlowdownRule())["total"].flagged
