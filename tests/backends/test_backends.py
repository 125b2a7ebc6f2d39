"""The backend protocol: registry, plug-ins, what a backend lacks, a broken candidate, crash attribution."""
from __future__ import annotations

import json
import sys


import numpy as np
import pytest

from eryx.errors import EryxInputError
from parity.commands import cli
from parity.backends import (BUILTIN_BACKENDS, ENTRY_POINT_GROUP, Backend, BackendError, get_backend,
                             registered_backends)
from parity.backends.eryx_numpy import NumpyBackend
from parity.backends.eryx_torch import CROSSFEED, TorchBackend, crossfeed_inputs
from parity.contract.quantities import QUANTITY_NAMES
from parity.running.runner import make_run, run_parity
from parity.stages import STAGES, get_stage

GRID3 = ((-2, 2, 3),) * 3


def _stages(result):
    return {s["name"]: s for s in result["stages"]}


# ------------------------------------------------------------------ the contract
def test_every_stage_reads_contract_quantities():
    for stage in STAGES:
        if stage.kind in ("invariant", "oracle"):
            assert stage.check is not None, stage.name
            continue
        assert stage.quantity in QUANTITY_NAMES, stage.name
        assert stage.reference_quantity in QUANTITY_NAMES, stage.name
        for name in stage.inputs:
            assert name in QUANTITY_NAMES, (stage.name, name)


def test_the_project_backends_provide_only_contract_quantities():
    for backend in (NumpyBackend, TorchBackend):
        assert backend.static_provides() <= set(QUANTITY_NAMES), backend.static_provides() - set(QUANTITY_NAMES)


def test_crossfeed_parameters_are_the_stage_inputs():
    """Bisection feeds a stage's ``inputs``: the torch cross-feed must consume exactly those."""
    for stage in STAGES:
        if stage.quantity in CROSSFEED and stage.kind != "eigenspace":
            assert set(crossfeed_inputs(stage.quantity)) == set(stage.inputs), stage.name
    for q in ("Winv", "V", "D", "U"):
        assert set(crossfeed_inputs(q)) == set(get_stage("eigenspaces").inputs), q


# ------------------------------------------------------------------ the registry
def test_builtin_backends_are_registered_and_described(capsys):
    assert {"numpy", "torch", "dump", "upstream-eryx", "torch-port"} <= set(registered_backends())
    code = cli.main(["backends", "--json"])
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    assert code == 0
    assert set(BUILTIN_BACKENDS) <= set(rows)
    assert "Id" in rows["numpy"]["provides"] and "grad_q" in rows["torch"]["provides"]
    assert "K" in rows["torch"]["crossfeeds"]


def test_unknown_or_broken_backends_are_usage_errors(capsys):
    with pytest.raises(EryxInputError, match="unknown backend 'nosuch'; known backends"):
        make_run("synthetic", candidate="nosuch")
    with pytest.raises(EryxInputError, match="cannot import 'no_such_module'"):
        make_run("synthetic", candidate="no_such_module:Backend")
    with pytest.raises(EryxInputError, match="returned ndarray, not a parity.backends.Backend"):
        make_run("synthetic", candidate="tests._backends:not_a_backend")
    with pytest.raises(BackendError, match="does not take option"):
        get_backend("numpy", colour="blue")
    code = cli.main(["run", "--candidate", "nosuch", "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1 and "unknown backend 'nosuch'" in err


def test_module_callable_backend_is_judged_like_any_other():
    result = run_parity("synthetic", samplings=GRID3, candidate="tests._backends:DoublesTheMap",
                        stage_names=["Amat", "Id"], progress=False)
    stages = _stages(result)
    assert stages["Amat"]["status"] == "pass"
    assert stages["Id"]["status"] == "fail" and result["verdict"] == "diverged"
    assert result["candidate"]["name"] == "doubles-the-map" and result["reference"]["name"] == "numpy"


def test_entry_point_backend_is_found_by_name(tmp_path, monkeypatch):
    """A user's package registers a backend in the entry-point group; no edit of this project."""
    dist = tmp_path / "mine_backend-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: mine-backend\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text(f"[{ENTRY_POINT_GROUP}]\nmine = tests._backends:DoublesTheMap\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert registered_backends()["mine"] == "tests._backends:DoublesTheMap"
    backend = get_backend("mine")
    assert isinstance(backend, Backend) and backend.name == "doubles-the-map"


# ------------------------------------------------------------------ what a backend lacks
def test_a_quantity_the_candidate_lacks_is_not_comparable_never_pass():
    result = run_parity("synthetic", samplings=GRID3, candidate="tests._backends:LacksTheHessian",
                        stage_names=["hessian", "K"], progress=False)
    stages = _stages(result)
    assert stages["hessian"]["status"] == "not_comparable"
    # provides() is what the harness trusts: an undeclared quantity is never computed
    assert "hessian is not in backend 'lacks-the-hessian''s provides()" in stages["hessian"]["message"]
    assert stages["hessian"]["n_compared"] == 0 and stages["K"]["status"] == "pass"


# ------------------------------------------------------------------ a broken candidate is a divergence
def test_candidate_input_error_is_a_divergence_with_a_full_report(tmp_path, capsys):
    """The reference accepts the input and the candidate raises its own EryxInputError: exit 1,
    the stage is an error with the message and traceback, earlier divergences are kept, and the
    JSON and HTML are both written."""
    out_json, out_html = tmp_path / "r.json", tmp_path / "r.html"
    code = cli.main(["run", "--candidate", "tests._backends:RaisesInputErrorOnMaps", "--grid=-2,2,3",
                     "--no-progress", "--json", str(out_json), "--html", str(out_html)])
    out, err = capsys.readouterr()
    assert code == 1, out + err
    assert err == ""
    result = json.loads(out_json.read_text())
    stages = _stages(result)
    assert stages["Id"]["status"] == "error"
    assert "the candidate's own check" in stages["Id"]["message"]
    assert "Traceback" in stages["Id"]["details"]["traceback"]
    assert stages["Id_data_adp"]["status"] == "error" and "NaN" in stages["Id_data_adp"]["message"]
    assert result["first_failure"] == "Id" and result["verdict"] == "diverged"
    assert sum(s["status"] == "pass" for s in result["stages"]) > 30  # the run went on
    assert out_html.read_text().count("the candidate&#39;s own check") + \
        out_html.read_text().count("the candidate's own check") >= 1


def test_reference_refusal_is_bad_input_exit_2(capsys):
    """Input the reference refuses at construction is bad input for both: exit 2, one line, nothing run."""
    code = cli.main(["run", "--fixture", "synthetic", "--grid=-2,2,3", "--gnm-cutoff", "0", "--no-progress"])
    out, err = capsys.readouterr()
    assert code == 2 and "Phase 1" not in out and len(err.strip().splitlines()) == 1


def test_failed_construction_is_the_first_failure_with_its_step_and_phase():
    run = make_run("synthetic", samplings=GRID3, candidate="tests._backends:FailsToBuildPhonons")
    from parity.running.crossfeed import classify
    from parity.running.runner import execute

    result = execute(run, STAGES, progress=False)
    first = result["stages"][0]
    assert first["name"] == "construction:candidate" and first["kind"] == "construction"
    assert first["phase"] == 3 and first["details"]["build_step"] == "phonons"
    assert result["first_failure"] == "construction:candidate"
    stages = _stages(result)
    # what the completed steps built is still compared; what the failed step makes is not
    assert stages["Amat"]["status"] == "pass" and stages["q_grid"]["status"] == "pass"
    assert stages["K"]["status"] == "error" and "step 'phonons'" in stages["K"]["message"]
    verdicts = classify(run, result["stages"])
    assert verdicts.first_divergence == "construction:candidate"
    assert verdicts.root_causes[0] == "construction:candidate"
    assert "K" in verdicts.inherited


def test_dense_reference_refusal_is_decided_once(monkeypatch):
    """A reference that does not fit is refused once per run, not rebuilt by every stage."""
    from eryx import models as npm

    calls = []
    original = npm.OnePhonon

    class Counting(original):
        def __init__(self, *args, **kwargs):
            calls.append(1)
            kwargs["memory_limit"] = 1024
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(npm, "OnePhonon", Counting)
    result = run_parity("synthetic", samplings=GRID3, progress=False)
    assert len(calls) == 1
    assert _stages(result)["K"]["status"] == "not_comparable"


# ------------------------------------------------------------------ a blind default grid
def test_default_run_catches_the_phase_sign_fault(capsys):
    code = cli.main(["run", "--fault", "phase_sign", "--no-progress"])
    out = capsys.readouterr().out
    assert code == 1, out
    assert "DIVERGED: first failure K (phase 3)" in out
    assert "NOTE: this grid cannot see phase-sign errors" not in out


def test_a_grid_that_cannot_see_phase_signs_says_so(capsys):
    code = cli.main(["run", "--grid=-2,2,2", "--fault", "phase_sign", "--no-progress", "--phases", "1,2,3"])
    out = capsys.readouterr().out
    assert code == 0  # the fault is invisible here ...
    assert "NOTE: this grid cannot see phase-sign errors" in out  # ... and the summary says so


@pytest.mark.parametrize("fixture", ["synthetic", "5zck_p1", "7n2h", "193l"])
def test_default_grids_see_phase_signs(fixture):
    from parity.contract.spec import default_grid

    assert any(L % 2 == 1 and L > 1 for _, _, L in default_grid(fixture))


# ------------------------------------------------------------------ the shared structure code
def test_p1_oracle_catches_a_wrong_symmetry_operator(fixture_pdb, monkeypatch):
    """A sign error in one REMARK 290 operator passes every reference-vs-candidate stage (both
    backends share eryx.structure) but not the oracle built on gemmi's own operations."""
    fixture_pdb("7n2h")
    from eryx import structure

    original = structure.parse_remark_290

    def wrong(remarks):
        rot, tr = original(remarks)
        tr = tr.copy()
        tr[1, 0, :3] *= -1  # flip the first row of the second operator
        return rot, tr

    monkeypatch.setattr(structure, "parse_remark_290", wrong)
    names = ["xyz", "Amat", "K", "Id", "p1_oracle", "structure_oracle"]
    result = run_parity("7n2h", samplings=((-1, 1, 2), (-1, 1, 2), (0, 1, 3)), stage_names=names, progress=False)
    stages = _stages(result)
    assert all(stages[n]["status"] == "pass" for n in ("xyz", "Amat", "K", "Id")), stages
    assert stages["p1_oracle"]["status"] == "fail"
    assert stages["structure_oracle"]["status"] == "pass"


def test_structure_oracle_catches_a_missing_operator(fixture_pdb, monkeypatch):
    fixture_pdb("5zck_p1")
    from eryx import structure

    original = structure.parse_remark_290
    monkeypatch.setattr(structure, "parse_remark_290", lambda r: tuple(x[:-1] for x in original(r)))
    result = run_parity("5zck_p1", samplings=((-1, 1, 2),) * 3, stage_names=["structure_oracle", "p1_oracle"],
                        progress=False)
    stages = _stages(result)
    assert stages["structure_oracle"]["status"] == "fail" and "3 ASUs vs gemmi's 4" in stages["structure_oracle"][
        "message"]
    assert stages["p1_oracle"]["status"] == "fail"


# ------------------------------------------------------------------ the pytest plugin chooses sides
def test_pytest_plugin_takes_reference_and_candidate(tmp_path):
    import subprocess

    out = tmp_path / "p.json"
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/testing/test_stage_tests.py",
                           "-k", "Amat or phase4::Id[", "--parity-fixture", "synthetic",
                           "--candidate", "tests._backends:DoublesTheMap", "--parity-json", str(out)],
                          capture_output=True, text=True, timeout=300, cwd=str(_repo()))
    assert done.returncode == 1, done.stdout + done.stderr
    assert "1 failed, 1 passed" in done.stdout, done.stdout
    result = json.loads(out.read_text())
    assert result["candidate"]["name"] == "doubles-the-map"
    assert {s["name"]: s["status"] for s in result["stages"]} == {"Amat": "pass", "Id": "fail"}


def _repo():
    from pathlib import Path

    return Path(__file__).resolve().parents[2]


def test_reference_side_can_be_any_backend():
    """The project's torch backend as the reference and its NumPy one as the candidate."""
    result = run_parity("synthetic", samplings=GRID3, reference="torch", candidate="numpy",
                        stage_names=["K", "eigenspaces", "Id"], progress=False)
    assert result["verdict"] == "pass", [(s["name"], s["message"]) for s in result["stages"]]
    assert result["reference"]["name"] == "torch" and result["candidate"]["name"] == "numpy"



