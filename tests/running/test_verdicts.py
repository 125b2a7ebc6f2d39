"""Run-level verdicts that can be trusted: a run passes only when something was compared and agreed."""
from __future__ import annotations

import json
import re

import pytest

from parity.stages import STAGES
from tests._cli import run_cli

MAPS = [s.name for s in STAGES if s.is_map]


@pytest.mark.parametrize("argv", [
    ["--res-limit", "100"],   # every point beyond the resolution limit: all NaN
    ["--grid=-2,2,1"],         # oversampling 1: every point a Bragg point
])
def test_a_run_whose_maps_are_all_nan_is_incomplete_not_passed(capsys, tmp_path, argv):
    out_json = tmp_path / "r.json"
    code, out, err = run_cli(capsys, "run", *argv, "--no-progress", "--json", str(out_json))
    assert code == 3, out + err
    assert re.search(r"^INCOMPLETE: no divergence, but map stage\(s\) Id", out, re.M)
    result = json.loads(out_json.read_text())
    assert result["verdict"] == "incomplete" and result["passed"] is False
    stages = {s["name"]: s for s in result["stages"]}
    # The last-rank cluster map is finite at k = 0 (ALGORITHM.md: "for rank r only Winv_r
    # matters", and the last mode is never a zero mode): at oversampling 1 it is a real
    # comparison; within a 100 A resolution limit its only point is q = 0, where it
    # vanishes on both sides, which is not comparable either.
    last = stages["Id_cluster_last"]
    if "--res-limit" in argv:
        assert last["status"] == "not_comparable" and "exactly zero" in last["message"], last["message"]
    else:
        assert last["status"] == "pass" and last["n_compared"] == 125, last["message"]
    for name in [m for m in MAPS if m != "Id_cluster_last"] + [
            "grad_gamma_inter", "grad_gamma_intra", "Id_nonnegative", "friedel"]:
        assert stages[name]["status"] == "not_comparable", (name, stages[name]["message"])
        assert stages[name]["n_compared"] == 0
    assert "no finite" in stages["Id"]["message"].lower() or "nan" in stages["Id"]["message"].lower()


def test_skipping_the_map_stages_explicitly_accepts_the_incomplete_run(capsys):
    code, out, err = run_cli(capsys, "run", "--res-limit", "100", "--no-progress", "--skip", ",".join(MAPS))
    assert code == 0, out + err
    assert "PASSED:" in out


def test_the_summary_says_how_many_elements_were_compared(capsys, tmp_path):
    code, out, _ = run_cli(capsys, "run", "--no-progress", "--stages", "kvec,Amat", "--json", str(tmp_path / "r.json"))
    assert code == 0
    result = json.loads((tmp_path / "r.json").read_text())
    n = result["n_compared"]
    assert n == sum(s["n_compared"] for s in result["stages"]) > 0
    assert f"{n:,} elements compared" in out


def test_a_candidate_crashing_in_its_spec_check_is_a_divergence_not_a_traceback(capsys, tmp_path, monkeypatch):
    """Found by mutation testing: a TypeError from the candidate's device resolution escaped
    ``parity.commands.cli.main`` as a traceback. It is the candidate's failure: exit 1, reported."""
    from eryx import models_torch as tm

    def broken(device):
        raise TypeError("'<' not supported between instances of 'str' and 'int'")

    monkeypatch.setattr(tm, "resolve_device", broken)
    out_json = tmp_path / "r.json"
    code, out, err = run_cli(capsys, "run", "--no-progress", "--stages", "kvec", "--json", str(out_json))
    assert code == 1, out + err
    result = json.loads(out_json.read_text())
    assert result["verdict"] == "diverged" and result["first_failure"].startswith("construction:candidate")
    assert "TypeError" in json.dumps(result["stages"][0])


def test_a_d_spacing_formula_without_its_angle_terms_is_caught(capsys, monkeypatch):
    """The fixture's orthogonal cell cannot show the angle terms; the triclinic probe cell can."""
    torch = pytest.importorskip("torch")
    from eryx import functional_torch as st

    orig = st.resolution

    def right_angles(hkl, cell):
        return orig(hkl, torch.cat([cell[:3], torch.full_like(cell[3:], 90.0)]))

    monkeypatch.setattr(st, "resolution", right_angles)
    code, out, err = run_cli(capsys, "run", "--no-progress", "--stages", "res_mask,d_spacing")
    assert code == 1, out + err
    assert re.search(r"^\s+res_mask\s+exact\s+pass", out, re.M) and re.search(r"^\s+d_spacing\s+tight\s+FAIL", out, re.M)


def test_a_q_vector_mode_evaluated_at_the_wrong_points_is_caught(capsys, monkeypatch):
    """Id_q_offgrid: the candidate's q-vector mode between k-points, shifted by another amount."""
    import parity.backends.eryx_torch as tb

    monkeypatch.setitem(tb._QUANTITIES, "Id_q_offgrid", lambda s: s._q_mode(
        s._need().q_grid[s.spec.grad_q_sample] + s.tensor(s.spec.offgrid_shift_q * 1.01)))
    code, out, err = run_cli(capsys, "run", "--no-progress", "--stages", "Id_q_offgrid,qvectors_sample")
    assert code == 1, out + err
    assert re.search(r"^\s+Id_q_offgrid\s+end_to_end\s+FAIL", out, re.M)
    assert re.search(r"^\s+qvectors_sample\s+end_to_end\s+pass", out, re.M)
