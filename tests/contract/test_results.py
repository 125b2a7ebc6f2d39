"""The typed result (parity.contract.results), its validator (result_schema) and migrations, on files written by earlier code.

tests/data/legacy/ holds results written by main at 9706553 (before the redesign; its
README gives the commands). They must load unchanged through every loader.
"""
from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from parity.contract import migrations
from parity.contract.result_schema import ResultTypeError, validate_result
from parity.contract.results import (DIVERGING, SCHEMA_VERSION, RunResult, StageRecord, Status, Verdict, run_result,
                                     stage_record)
from parity.rendering.report import load_result, render_report

LEGACY = Path(__file__).resolve().parents[1] / "data" / "legacy"


def _legacy(name: str) -> dict:
    return json.loads((LEGACY / name).read_text(encoding="utf-8"))


# ------------------------------------------------------------------ enumerations
def test_status_values_are_the_strings_results_have_always_held():
    assert [s.value for s in Status] == ["pass", "fail", "not_comparable", "error"]
    assert Status.NOT_COMPARABLE == "not_comparable" and "pass" == Status.PASS
    assert f"{Status.ERROR}" == "error" and str(Status.FAIL) == "fail"
    assert json.dumps({"status": Status.NOT_COMPARABLE}) == '{"status": "not_comparable"}'
    assert {"fail": 1}[Status.FAIL] == 1  # usable as the old keys
    assert DIVERGING == ("fail", "error") and Status.ERROR.diverges and not Status.NOT_COMPARABLE.diverges
    assert [v.value for v in Verdict] == ["pass", "diverged", "incomplete"]


def test_every_status_in_the_legacy_files_is_a_member():
    for name in ("result_pass.json", "result_fault.json"):
        for stage in _legacy(name)["stages"]:
            assert Status(stage["status"]).value == stage["status"]


# ------------------------------------------------------------------ legacy files
@pytest.mark.parametrize("name", ["result_pass.json", "result_fault.json"])
def test_results_written_by_the_previous_main_load_and_round_trip(name):
    data = _legacy(name)
    typed = RunResult.from_dict(copy.deepcopy(data), name)
    assert typed.to_dict() == data  # today's results already have every key: nothing is added
    assert list(typed.to_dict()) == list(data)  # nor reordered
    assert typed["verdict"] == data["verdict"] and typed["stages"] == data["stages"]  # a read-only mapping
    assert load_result(LEGACY / name) == data  # the report's loader
    assert typed.provenance.git_commit == data["environment"]["git_commit"]


def test_the_legacy_fault_run_reads_as_diverged_with_typed_stages():
    typed = RunResult.from_dict(_legacy("result_fault.json"))
    assert typed.verdict is Verdict.DIVERGED and typed.passed is False
    failing = [s for s in typed.stage_records if s.status in DIVERGING]
    assert failing and failing[0].name == typed.first_failure
    assert all(isinstance(s, StageRecord) and isinstance(s.status, Status) for s in typed.stage_records)


def test_a_legacy_result_still_renders():
    assert "diverged" in render_report(_legacy("result_fault.json")).lower()


# ------------------------------------------------------------------ older shapes within version 1
def _early_v1() -> dict:
    """A result as the first version-1 runner wrote it: none of the keys added within version 1."""
    stage = {"name": "hkl_grid", "phase": 1, "tier": "exact", "kind": "exact", "status": "pass", "passed": True,
             "rtol": 0.0, "atol": 0.0, "max_abs": 0.0, "max_rel": 0.0, "n_mismatch": 0, "n_total": 375,
             "worst": None, "message": "ok", "duration_s": 0.001, "details": {}}
    failing = dict(stage, name="F", phase=2, tier="tight", kind="array", status="fail", passed=False,
                   max_abs=1.0, max_rel=0.5, n_mismatch=3, n_total=40, message="3 of 40 outside tight")
    refused = dict(stage, name="ADP", phase=3, status="not_comparable", passed=False, max_abs=None,
                   max_rel=None, n_total=None)
    return {"schema_version": 1, "fixture": "5zck_p1", "pdb_path": "/x/5zck_p1.pdb", "grid": {}, "params": {},
            "device": "cpu", "device_name": "CPU", "dtype": "float64", "passed": False, "first_failure": "F",
            "fault": None, "started_at": "2026-11-01T07:30:00+00:00", "duration_s": 1.5,
            "environment": {"python": "3.11.7", "git_commit": "abc"}, "phase_timings": {"1": 0.5},
            "stages": [stage, failing, refused]}


def test_an_early_version_1_result_loads_through_the_migration():
    old = _early_v1()
    before = copy.deepcopy(old)
    typed = RunResult.from_dict(old, "early.json")
    assert old == before  # the input is not changed
    assert typed.verdict is Verdict.DIVERGED and typed.incomplete == [] and typed.notes == []
    assert typed.tier_overrides == []
    assert [s.n_compared for s in typed.stage_records] == [375, 40, 0]  # compared stages: all their elements
    assert typed.n_compared == 415
    assert all(s.diagnosis == [] and s.max_rel_elementwise is None for s in typed.stage_records)
    out = typed.to_dict()
    assert out["verdict"] == "diverged" and out["stages"][1]["diagnosis"] == []
    assert RunResult.from_dict(out).to_dict() == out  # the completed result round-trips


def test_the_dict_loaders_keep_an_early_result_as_written(tmp_path):
    path = tmp_path / "early.json"
    path.write_text(json.dumps(_early_v1()))
    assert load_result(path) == _early_v1()  # the report shows an absent key as "-"
    assert "verdict" not in validate_result(_early_v1())


def test_an_early_passing_result_gets_the_pass_verdict():
    old = _early_v1()
    old["stages"] = old["stages"][:1]
    old.update(passed=True, first_failure=None)
    typed = RunResult.from_dict(old)
    assert typed.verdict is Verdict.PASS and typed.first_failure is None


def test_migrations_run_in_order_from_the_files_version(monkeypatch):
    seen = []

    def update_to_2(result):
        seen.append(result["schema_version"])
        return {**result, "renamed": result["fixture"]}

    monkeypatch.setattr("parity.contract.result_schema.SCHEMA_VERSION", 2)
    monkeypatch.setattr(migrations, "SCHEMA_VERSION", 2)
    monkeypatch.setitem(migrations.MIGRATIONS, 2, update_to_2)
    old = _legacy("result_pass.json")
    new = validate_result(old, "x")
    assert seen == [1] and new["schema_version"] == 2 and new["renamed"] == old["fixture"]
    assert old["schema_version"] == 1  # the input is not changed
    assert validate_result(new, "x") is new and seen == [1]  # a current result is not migrated again


# ------------------------------------------------------------------ refusals
def test_a_future_schema_version_is_refused_clearly():
    future = dict(_legacy("result_pass.json"), schema_version=SCHEMA_VERSION + 1)
    with pytest.raises(ResultTypeError, match=rf"^f.json: unsupported schema_version {SCHEMA_VERSION + 1}: newer "
                                              rf"than this parity's {SCHEMA_VERSION}; upgrade eryx-parity to read it$"):
        RunResult.from_dict(future, "f.json")
    with pytest.raises(ResultTypeError, match=r"unsupported schema_version 0 \(this parity reads 1 to"):
        validate_result(dict(future, schema_version=0), "f.json")


@pytest.mark.parametrize("edit, field", [
    (lambda r: r.update(passed="yes"), r"result\.passed must be true or false, got 'yes'"),
    (lambda r: r["stages"][0].update(n_total="24"), r"stages\[0\]\.n_total must be an integer, got '24'"),
    (lambda r: r["stages"][1].update(status="maybe"), r"stages\[1\]\.status must be one of pass, fail"),
    (lambda r: r.update(verdict="great"), r"result\.verdict must be one of pass, diverged, incomplete"),
    (lambda r: r.update(started_at="last tuesday"), r"result\.started_at must be an ISO 8601 time"),
    (lambda r: r["stages"].append(dict(r["stages"][0])), r"duplicate stage name 'hkl_grid'"),
])
def test_a_wrong_typed_field_is_refused_naming_the_field(edit, field):
    result = _early_v1()
    result["verdict"] = "diverged"
    edit(result)
    with pytest.raises(ResultTypeError, match=r"^bad.json: not a valid parity result: " + field):
        RunResult.from_dict(result, "bad.json")


def test_a_missing_key_is_refused_by_name():
    result = _early_v1()
    del result["passed"]
    with pytest.raises(ResultTypeError, match=r"missing key\(s\) passed"):
        validate_result(result, "x")


# ------------------------------------------------------------------ construction
def test_stage_record_has_every_key_in_the_runners_order():
    undecided = stage_record("K", 3, tier="tight", kind="array", rtol=1e-12, atol=1e-14, description="K")
    assert list(undecided) == ["name", "phase", "tier", "kind", "rtol", "atol", "description", "max_abs", "max_rel",
                               "max_rel_elementwise", "n_mismatch", "n_total", "n_compared", "worst", "message",
                               "details", "diagnosis"]
    decided = stage_record("K", 3, status=Status.ERROR, message="boom")
    assert decided["status"] == "error" and type(decided["status"]) is str
    assert decided["passed"] is False and decided["duration_s"] == 0.0
    assert list(decided)[-3:] == ["status", "passed", "duration_s"]


def test_run_result_round_trips_and_keeps_extra_keys():
    stages = [stage_record("hkl_grid", 1, status="pass", n_total=3, n_compared=3)]
    result = run_result(fixture="synthetic", stages=stages, verdict="pass", first_failure=None, incomplete=[],
                        device="cpu", dtype="float64", started_at="2026-12-05T00:00:00+00:00", duration_s=0.1,
                        crash={"type": "X", "message": "y"})
    assert result["passed"] is True and result["verdict"] == "pass" and result["n_compared"] == 3
    assert "reference" not in result and list(result)[-2:] == ["stages", "crash"]
    assert RunResult.from_dict(json.loads(json.dumps(result))).to_dict() == result


def test_a_crash_result_has_the_runners_keys_and_loads():
    from parity.benchmarking.nightly import crash_result

    result = crash_result("synthetic", "float64", "cpu", RuntimeError("boom"), phases=[1],
                          started_at="2026-12-05T00:00:00+00:00", duration_s=0.5)
    runner_keys = list(stage_record("x", 1, status=Status.ERROR))
    assert result["stages"] and all(list(s) == runner_keys for s in result["stages"])
    assert all(s["status"] == "error" and s["passed"] is False for s in result["stages"])
    assert result["verdict"] == "diverged" and result["first_failure"] == result["stages"][0]["name"]
    assert result["crash"] == {"type": "RuntimeError", "message": "boom"}
    assert RunResult.from_dict(json.loads(json.dumps(result))).to_dict() == result
