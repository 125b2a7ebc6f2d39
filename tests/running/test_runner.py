"""The runner: result schema, not-comparable stages, tier overrides, slices, locations, float32."""
from __future__ import annotations

import datetime as dt
import json
import re
from pathlib import Path

import numpy as np
import pytest

from eryx import models as npm
from eryx.errors import EryxInputError
from parity.storage.outputs import json_safe
from parity.running.runner import (
    DEFAULT_PARAMS, SCHEMA_VERSION, assemble_result, make_run, run_parity, run_stage,
)
from parity.stages import STAGE_NAMES, STAGES, Stage, get_stage
from parity.contract.tiers import TIERS, resolve_tier

GRID3 = ((-2, 2, 3),) * 3
ARCH = Path(__file__).resolve().parents[2] / "docs" / "architecture.md"
STATUSES = {"pass", "fail", "not_comparable", "error"}


# ------------------------------------------------------------------ the documented schema
def _doc_json_block() -> str:
    text = ARCH.read_text()
    return text.split("```json", 1)[1].split("```", 1)[0]


def _doc_keys(indent: int, optional: bool = False) -> list[str]:
    """Keys of the documented JSON object whose lines sit at one indentation (nested {...} skipped).

    ``optional``: only the keys whose comment says they are written by one command only
    (``// parity bisect only``); otherwise only the keys every result has.
    """
    keys = []
    for line in _doc_json_block().splitlines():
        if re.match(rf"^ {{{indent}}}\"", line):
            comment = line.split("//", 1)[1] if "//" in line else ""
            if bool(re.search(r"\bonly\b", comment)) == optional:
                keys += re.findall(r'"(\w+)":', re.sub(r"\{[^}]*\}?", "{}", line.split("//")[0]))
    return keys


DOC_TOP_KEYS = _doc_keys(2)
DOC_OPTIONAL_TOP_KEYS = _doc_keys(2, optional=True)
DOC_ENV_KEYS = re.findall(r'"(\w+)":', _doc_json_block().split('"environment":', 1)[1].split("}", 1)[0])
DOC_STAGE_KEYS = _doc_keys(6)
DOC_OPTIONAL_STAGE_KEYS = _doc_keys(6, optional=True)


def test_doc_parsing_found_the_schema():
    # Guard against the parser silently finding nothing (which would make the schema tests vacuous).
    assert DOC_TOP_KEYS[:3] == ["schema_version", "run_uuid", "fixture"]
    assert DOC_OPTIONAL_TOP_KEYS == ["bisect"]
    assert {"grid", "params", "environment", "phase_timings", "stages", "passed", "first_failure"} <= set(DOC_TOP_KEYS)
    assert {"python", "numpy", "scipy", "torch", "gemmi", "git_commit", "hostname", "platform"} == set(DOC_ENV_KEYS)
    assert {"name", "phase", "tier", "kind", "description", "status", "passed", "rtol", "atol", "max_abs", "max_rel",
            "max_rel_elementwise", "n_mismatch", "n_total", "n_compared", "worst", "message", "diagnosis",
            "duration_s", "details"} == set(DOC_STAGE_KEYS)
    assert DOC_OPTIONAL_STAGE_KEYS == ["cause"]


@pytest.fixture(scope="module")
def clean_result():
    return run_parity("synthetic", samplings=GRID3, progress=False)


@pytest.fixture(scope="module")
def bz_fault_result():
    return run_parity("synthetic", samplings=GRID3, fault="bz_off_by_one", progress=False)


def _stages(result):
    return {s["name"]: s for s in result["stages"]}


def _check_schema(result):
    assert set(DOC_TOP_KEYS) <= set(result), set(DOC_TOP_KEYS) - set(result)
    assert result["schema_version"] == SCHEMA_VERSION == 1
    assert Path(result["pdb_path"]).is_absolute() and Path(result["pdb_path"]).is_file()
    assert set(result["grid"]) == {"hsampling", "ksampling", "lsampling"}
    assert all(isinstance(v, list) and len(v) == 3 and all(isinstance(x, int) for x in v)
               for v in result["grid"].values())
    assert set(result["params"]) == set(DEFAULT_PARAMS)
    assert isinstance(result["device_name"], str) and result["device_name"]
    assert result["dtype"] in ("float64", "float32")
    assert isinstance(result["passed"], bool)
    started = dt.datetime.fromisoformat(result["started_at"])
    assert started.tzinfo is not None
    assert isinstance(result["duration_s"], float) and result["duration_s"] >= 0
    assert set(DOC_ENV_KEYS) <= set(result["environment"])
    assert {str(s["phase"]) for s in result["stages"]} <= set(result["phase_timings"])
    assert all(isinstance(v, float) for v in result["phase_timings"].values())
    for s in result["stages"]:
        assert set(DOC_STAGE_KEYS) <= set(s), (s["name"], set(DOC_STAGE_KEYS) - set(s))
        if s["status"] in ("fail", "error"):  # a failing stage says whether it is a root cause
            assert set(DOC_OPTIONAL_STAGE_KEYS) <= set(s), s["name"]
        assert s["status"] in STATUSES
        assert s["passed"] == (s["status"] == "pass")
        assert s["phase"] == get_stage(s["name"]).phase and s["kind"] == get_stage(s["name"]).kind
        tier = resolve_tier(get_stage(s["name"]).tier, result["dtype"], stage=s["name"])
        assert s["tier"] == tier.name and s["rtol"] == tier.rtol, (s["name"], s["tier"], tier)
        # size-scaled stages (Tier.scaled) may only widen atol, to their round-off bound
        assert s["atol"] == tier.atol or ("summed terms" in s["message"] and s["atol"] > tier.atol), s["name"]
        assert isinstance(s["message"], str) and s["message"]
        assert isinstance(s["details"], dict)
        assert isinstance(s["n_mismatch"], int) and isinstance(s["n_total"], int)
        assert s["worst"] is None or {"index", "location", "expected", "actual"} <= set(s["worst"])
        for key in ("max_abs", "max_rel"):
            assert s[key] is None or (isinstance(s[key], float) and s[key] >= 0)
    failed = [s["name"] for s in result["stages"] if s["status"] in ("fail", "error")]
    maps_not_compared = [s["name"] for s in result["stages"] if s["status"] == "not_comparable"
                         and get_stage(s["name"]).is_map]
    assert result["passed"] == (not failed and not maps_not_compared)
    assert result["verdict"] == ("diverged" if failed else "incomplete" if maps_not_compared else "pass")
    assert result["first_failure"] == (failed[0] if failed else None)
    assert result["incomplete"] == maps_not_compared
    assert result["n_compared"] == sum(s["n_compared"] for s in result["stages"])


def test_clean_result_matches_the_documented_schema(clean_result):
    _check_schema(clean_result)
    assert clean_result["passed"] is True and clean_result["first_failure"] is None
    assert clean_result["fault"] is None
    assert clean_result["fixture"] == "synthetic" and clean_result["device"] == "cpu"
    assert clean_result["grid"] == {"hsampling": [-2, 2, 3], "ksampling": [-2, 2, 3], "lsampling": [-2, 2, 3]}
    assert clean_result["params"] == DEFAULT_PARAMS
    assert [s["name"] for s in clean_result["stages"]] == list(STAGE_NAMES)
    assert {"1", "2", "3", "4"} <= set(clean_result["phase_timings"])
    # The doc's details keys (where they apply).
    stages = _stages(clean_result)
    for key in ("log10_rel_hist", "ulp", "nan_pattern", "worst_elements"):
        assert key in stages["Id"]["details"], key
    table = stages["eigenspaces"]["details"]["eigen_table"]
    assert len(table) == 27
    assert {"bz", "cluster_sizes", "max_projector_err", "residual", "orthonormality"} <= set(table[0])


def test_fault_result_matches_the_schema_and_is_valid_json(bz_fault_result):
    _check_schema(bz_fault_result)
    assert bz_fault_result["passed"] is False and bz_fault_result["fault"] == "bz_off_by_one"
    assert bz_fault_result["first_failure"] == "bz_index"
    text = json.dumps(json_safe(bz_fault_result), allow_nan=False)
    back = json.loads(text)
    assert back["first_failure"] == "bz_index" and len(back["stages"]) == len(STAGES)
    # the NaN the reference has at a Bragg point (and the fault does not) is written as null
    assert back["stages"][STAGE_NAMES.index("Id")]["worst"]["expected"] is None


def test_json_safe_turns_non_finite_into_null(clean_result):
    text = json.dumps(json_safe(clean_result), allow_nan=False)
    assert json.loads(text)["passed"] is True
    odd = {"nan": float("nan"), "inf": np.float64(np.inf), "arr": np.array([1.0, np.nan]), "c": 1 + 2j,
           "i": np.int64(3), "b": np.bool_(True), "t": (1, 2)}
    safe = json.loads(json.dumps(json_safe(odd), allow_nan=False))
    assert safe == {"nan": None, "inf": None, "arr": [1.0, None], "c": {"re": 1.0, "im": 2.0}, "i": 3,
                    "b": True, "t": [1, 2]}
    with pytest.raises(ValueError):
        json.dumps(odd["nan"], allow_nan=False)  # what _json_safe protects against


# ------------------------------------------------------------------ not comparable
@pytest.fixture
def tiny_reference(monkeypatch):
    """The NumPy reference gets a 1 KiB memory budget, so it raises MemoryBudgetError."""
    original = npm.OnePhonon

    class TinyOnePhonon(original):
        def __init__(self, *args, **kwargs):
            kwargs["memory_limit"] = 1024
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(npm, "OnePhonon", TinyOnePhonon)
    return TinyOnePhonon


#: What the NumPy reference still provides without its dense model: the crystal and the grid.
WITHOUT_DENSE_MODEL = {"hkl_grid", "map_shape", "q_grid", "res_mask", "d_spacing", "kvec", "kvec_norm", "bz_index",
                       "structure_oracle", "p1_oracle", "xyz", "asu_xyz", "form_factors", "gemmi_oracle"}


def test_reference_over_budget_makes_dense_stages_not_comparable(tiny_reference):
    run = make_run("synthetic", samplings=GRID3)
    assert run.reference_session.refusal and "does not fit" in run.reference_session.refusal and "memory limit" in run.reference_session.refusal
    result = run_parity("synthetic", samplings=GRID3, progress=False)
    _check_schema(result)
    stages = _stages(result)
    checks = {s.name for s in STAGES if not s.needs_reference}
    for stage in STAGES:
        rec = stages[stage.name]
        if stage.name in WITHOUT_DENSE_MODEL | checks:
            assert rec["status"] == "pass", (stage.name, rec["message"])
        else:
            assert rec["status"] == "not_comparable", (stage.name, rec["message"])
            assert "does not fit" in rec["message"] and "memory limit of 1.0 KiB" in rec["message"]
            assert rec["passed"] is False
    # Nothing diverged, but the end-to-end maps compared nothing: the run is incomplete, not passed.
    assert result["verdict"] == "incomplete" and result["passed"] is False and result["first_failure"] is None
    assert set(result["incomplete"]) == {s.name for s in STAGES if s.is_map}


def test_not_comparable_run_still_fails_on_a_broken_invariant(tiny_reference):
    result = run_parity("synthetic", samplings=GRID3, fault="zero_modes_clamped", progress=False)
    stages = _stages(result)
    assert stages["Winv"]["status"] == "not_comparable"
    assert stages["zero_modes"]["status"] == "fail"
    assert result["passed"] is False and result["first_failure"] == "zero_modes"
    assert result["verdict"] == "diverged"


# ------------------------------------------------------------------ tier overrides
NEAR_ZERO = {"rtol": 1e-300, "atol": 1e-300}  # zero itself is refused (positive overrides only)


def test_tight_override_to_near_zero_fails_exactly_the_inexact_tight_stages(clean_result):
    result = run_parity("synthetic", samplings=GRID3, tier_overrides={"tight": NEAR_ZERO}, progress=False)
    before, after = _stages(clean_result), _stages(result)
    tight = [n for n, s in before.items() if s["tier"] == "tight"]
    assert tight
    exact_ones = [n for n in tight if before[n]["max_abs"] == 0.0]
    inexact = [n for n in tight if before[n]["max_abs"] > 0.0]
    assert exact_ones and inexact  # both outcomes are exercised
    # Size-scaled stages (sums of many terms) keep their round-off bound n_terms * eps as
    # atol whatever the override (Tier.scaled): their verdict follows that bound.
    scaled = [n for n in tight if "summed terms" in after[n]["message"]]
    assert scaled and set(scaled) < set(tight)
    for n in tight:
        assert after[n]["max_abs"] == before[n]["max_abs"], n  # same numbers, other verdict
        assert after[n]["rtol"] == 1e-300, n
        if n in scaled:
            assert 1e-300 < after[n]["atol"] <= before[n]["atol"], n
            assert after[n]["status"] == ("pass" if after[n]["max_rel"] <= after[n]["atol"] else "fail"), n
        else:
            assert after[n]["atol"] == 1e-300, n
            assert after[n]["status"] == ("pass" if before[n]["max_abs"] == 0.0 else "fail"), n
    for n, s in after.items():  # the other tiers are untouched
        if before[n]["tier"] != "tight":
            assert s["status"] == before[n]["status"] and s["rtol"] == before[n]["rtol"], n
    assert result["passed"] is False
    assert result["first_failure"] == next(n for n in STAGE_NAMES if n in inexact and n not in scaled)


def test_loosened_override_lets_a_fault_pass_and_only_that_tier_moves():
    kwargs = dict(samplings=GRID3, fault="grid_float32", stage_names=["q_grid", "kvec"], progress=False)
    strict = _stages(run_parity("synthetic", **kwargs))
    assert strict["q_grid"]["status"] == "fail"
    loose = _stages(run_parity("synthetic", tier_overrides={"tight": {"rtol": 1e-5, "atol": 1e-5}}, **kwargs))
    assert loose["q_grid"]["status"] == "pass"
    assert loose["q_grid"]["max_abs"] == strict["q_grid"]["max_abs"] > 0
    # Overriding tight does not loosen tight_f32 and vice versa.
    assert resolve_tier("tight", "float32", {"tight": {"rtol": 1.0}}).rtol == TIERS["tight_f32"].rtol


@pytest.mark.parametrize("overrides, match", [
    ({"tight": {"rtol": 0, "atol": 0}}, "positive"),
    ({"nosuch": {"rtol": 1e-3}}, "unknown tier"),
    ({"exact": {"rtol": 1e-3}}, "exact tier cannot be overridden"),
    ({"tight": {"rtol": "abc"}}, "positive number"),
])
def test_invalid_overrides_are_refused_before_the_run(overrides, match):
    with pytest.raises(EryxInputError, match=match):
        make_run("synthetic", samplings=GRID3, tier_overrides=overrides)


# ------------------------------------------------------------------ slices and locations
def test_failing_grid_map_stage_has_a_slice_through_the_worst_point(bz_fault_result):
    rec = _stages(bz_fault_result)["Id"]
    assert rec["status"] == "fail"
    sl = rec["details"]["slice"]
    assert {"title", "xlabel", "ylabel", "extent", "expected", "actual"} <= set(sl)
    assert sl["xlabel"] in "hkl" and sl["ylabel"] in "hkl" and sl["xlabel"] != sl["ylabel"]
    fixed = ({"h", "k", "l"} - {sl["xlabel"], sl["ylabel"]}).pop()
    assert sl["title"].startswith(f"{fixed} = ")
    assert len(sl["extent"]) == 4 and all(isinstance(v, (int, float)) for v in sl["extent"])
    exp = np.array([[np.nan if v is None else v for v in row] for row in sl["expected"]])
    act = np.array([[np.nan if v is None else v for v in row] for row in sl["actual"]])
    assert exp.shape == act.shape == (13, 13)  # ((-2, 2, 3)) -> 13 points, <= 128
    assert not np.array_equal(np.nan_to_num(exp, nan=-1), np.nan_to_num(act, nan=-1))

    # The slice is the reference map's plane through the worst point (rows: y axis, columns: x axis).
    ctx = make_run("synthetic", samplings=GRID3)
    ref = ctx.reference_value("Id").reshape(ctx.spec.map_shape)
    axis = "hkl".index(fixed)
    worst_hkl = ctx.reference_value("hkl_grid")[rec["worst"]["index"][0]]
    plane_index = int(round((worst_hkl[axis] - GRID3[axis][0]) * GRID3[axis][2]))
    plane = np.take(ref, plane_index, axis=axis)
    if "hkl".index(sl["xlabel"]) > "hkl".index(sl["ylabel"]):
        plane = plane.T
    np.testing.assert_array_equal(exp, plane.T)
    assert float(sl["title"].split("=")[1].split()[0]) == pytest.approx(worst_hkl[axis])


def test_only_failing_grid_maps_carry_a_slice(clean_result, bz_fault_result):
    for s in clean_result["stages"]:
        assert "slice" not in s["details"], s["name"]
    failing = [s for s in bz_fault_result["stages"] if s["status"] == "fail"]
    assert {s["name"] for s in failing} >= {"bz_index", "Id", "Id_data_adp"}
    for s in bz_fault_result["stages"]:
        grid_map = s["status"] == "fail" and get_stage(s["name"]).locate == "grid"
        assert ("slice" in s["details"]) == grid_map, s["name"]


def test_locations_name_miller_indices_and_bz_points(clean_result, bz_fault_result):
    ctx = make_run("synthetic", samplings=GRID3)
    hkl = ctx.reference_value("hkl_grid")
    grid_re = re.compile(r"^\(h,k,l\)=\((-?[\d.]+),(-?[\d.]+),(-?[\d.]+)\)$")
    bz_re = re.compile(r"^BZ \(dh,dk,dl\)=\((\d+),(\d+),(\d+)\)$")
    for result in (clean_result, bz_fault_result):
        for s in result["stages"]:
            stage = get_stage(s["name"])
            if s["worst"] is None or stage.locate is None:
                continue
            loc = s["worst"]["location"]
            if stage.locate == "grid":
                m = grid_re.match(loc)
                assert m, (s["name"], loc)
                np.testing.assert_allclose([float(x) for x in m.groups()], hkl[s["worst"]["index"][0]], atol=1e-5)
            else:
                m = bz_re.match(loc)
                assert m, (s["name"], loc)
                bz = tuple(int(x) for x in m.groups())
                assert all(0 <= b < 3 for b in bz)
                if stage.locate == "bz":
                    assert bz == tuple(s["worst"]["index"][:3])
                else:
                    assert bz == np.unravel_index(s["worst"]["index"][0], (3, 3, 3))
    # A failing grid stage and a failing BZ stage.
    assert grid_re.match(_stages(bz_fault_result)["Id"]["worst"]["location"])
    K = _stages(run_parity("synthetic", samplings=GRID3, fault="phase_sign", stage_names=["K"],
                           progress=False))["K"]
    assert K["status"] == "fail" and bz_re.match(K["worst"]["location"])


# ------------------------------------------------------------------ float32
def test_float32_run_passes_with_f32_tiers():
    result = run_parity("synthetic", samplings=GRID3, dtype="float32", progress=False)
    _check_schema(result)
    assert result["dtype"] == "float32"
    failing = [(s["name"], s["message"]) for s in result["stages"] if s["status"] != "pass"]
    assert not failing
    for s in result["stages"]:
        base = get_stage(s["name"]).tier
        assert s["tier"] == resolve_tier(base, "float32", stage=s["name"]).name
        if base != "exact" and not base.startswith("oracle"):  # oracles: dtype-independent tiers
            assert s["tier"] == s["name"] + "_f32", s["name"]
    assert "float32" in _stages(result)["dtype_audit"]["message"]


# ------------------------------------------------------------------ robustness
def test_run_stage_never_raises_and_an_error_fails_the_run():
    def boom(run, side, value):
        raise RuntimeError("kaput")

    stage = Stage("boom", 2, "tight", "array", "always raises", quantity="kvec", derive=boom)
    ctx = make_run("synthetic", samplings=GRID3)
    rec = run_stage(stage, ctx)
    assert rec["status"] == "error" and rec["passed"] is False
    assert rec["message"] == "harness error in boom: RuntimeError: kaput" and "Traceback" in rec["details"]["traceback"]
    ok = run_stage(get_stage("kvec"), ctx)
    result = assemble_result(ctx, [ok, rec], started_at="2026-01-01T00:00:00+00:00", duration_s=0.0)
    assert result["passed"] is False and result["first_failure"] == "boom"


def test_all_bragg_grid_compares_nothing_and_is_not_a_pass():
    """Oversampling 1: every grid point sits at k = 0, so every map is NaN on both sides.
    Nothing end to end was compared: the maps, gradients and map invariants are not comparable
    (with the reason) and the run is incomplete, never passed."""
    result = run_parity("synthetic", samplings=((-1, 1, 1),) * 3, progress=False)
    stages = _stages(result)
    assert result["verdict"] == "incomplete" and result["passed"] is False, result["first_failure"]
    for name in ("Id", "Id_data_adp", "grad_gamma_inter", "grad_gamma_intra", "grad_q", "Id_nonnegative",
                 "friedel"):
        assert stages[name]["status"] == "not_comparable", (name, stages[name]["message"])
        assert stages[name]["n_compared"] == 0
    assert "vacuously 0" in stages["grad_gamma_inter"]["message"]
    assert "no sample point" in stages["grad_q"]["message"]
    for name in ("Id", "Id_data_adp", "Id_qvectors"):
        assert "no element to compare numerically" in stages[name]["message"], name


def test_bad_run_options_are_input_errors():
    with pytest.raises(EryxInputError, match="unknown model parameter"):
        make_run("synthetic", params={"memory_limit": 1})
    with pytest.raises(EryxInputError, match="dtype"):
        make_run("synthetic", dtype="float16")
    with pytest.raises(EryxInputError, match="oversampling"):
        make_run("synthetic", samplings=((-2, 2, 0),) * 3)
    with pytest.raises(EryxInputError, match="unknown fixture"):
        make_run("no_such_fixture")
    with pytest.raises(EryxInputError, match="unknown backend 'nosuch'"):
        make_run("synthetic", candidate="nosuch")


def test_run_sessions_have_one_name_each_and_the_old_names_warn():
    """``Run.reference`` is a Backend; its session is ``Run.reference_session`` (``ref`` warned away)."""
    from parity.running.runner import make_run

    run = make_run("synthetic", samplings=GRID3, build=False)
    assert run.reference_session.backend is run.reference and run.candidate_session.backend is run.candidate
    with pytest.warns(DeprecationWarning, match="reference_session"):
        assert run.ref is run.reference_session
    with pytest.warns(DeprecationWarning, match="candidate_session"):
        assert run.cand is run.candidate_session
