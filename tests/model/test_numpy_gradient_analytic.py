"""The NumPy reference's analytic d Id / d gamma_inter and its one shared pass (issue 20).

* The analytic derivative (eryx.gradients_numpy) agrees point by point with central
  differences of separately built models, within the ``gradient`` tier, on a crystal
  whose ADP shape depends on gamma_inter (so the Debye-Waller term is exercised).
* The shared pass gives the model's own maps bit for bit.
* The parity backend checks the derivative at the gradient sample; a wrong derivative
  (a sign flip, a missing term) is caught by the stage, by that check and, with the check
  switched off, by the comparison with torch.
"""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

import parity.backends.eryx_numpy as nb
from eryx import gradients_numpy as gn
from eryx import models as npm
from eryx.probes import listen
from parity.contract.tiers import resolve_tier
from parity.locate.probes import ProbeRecorder
from parity.testing.plugin import fixture_path_or_skip
from parity.running.runner import make_run, run_parity

GRID = ((-2, 2, 2),) * 3
PARAMS = {"gamma_intra": 1.3, "gamma_inter": 0.6}
H = 1e-5  # relative step, as FD_STEP_GAMMA (truncation and round-off balance)


@pytest.fixture(scope="module")
def crystal():
    """7n2h (3 ASUs): its scaled ADPs change with gamma_inter, unlike a one-shape crystal."""
    return fixture_path_or_skip("7n2h")


@pytest.fixture(scope="module")
def model(crystal):
    return npm.OnePhonon(crystal, *GRID, **PARAMS)


@pytest.fixture(scope="module")
def central(crystal):
    """Central differences in gamma_inter of Id and of the scaled ADPs, full models."""
    v = PARAMS["gamma_inter"]
    plus = npm.OnePhonon(crystal, *GRID, **{**PARAMS, "gamma_inter": v + H})
    minus = npm.OnePhonon(crystal, *GRID, **{**PARAMS, "gamma_inter": v - H})
    return {"Id": (plus.apply_disorder() - minus.apply_disorder()) / (2 * H),
            "ADP": (plus.ADP - minus.ADP) / (2 * H)}


def _rel(a: np.ndarray, b: np.ndarray) -> float:
    ok = np.isfinite(b)
    return float(np.linalg.norm(a[ok] - b[ok]) / np.linalg.norm(b[ok]))


def test_adp_derivative_matches_central_differences(model, central):
    dU = gn.adp_derivative(model, gn.inter_hessian(model))
    assert np.max(np.abs(central["ADP"])) > 1e-4  # the ADP term is really exercised here
    assert _rel(dU, central["ADP"]) <= resolve_tier("gradient").rtol


def test_analytic_map_derivative_matches_central_differences_point_by_point(model, central):
    d = gn.maps_and_gamma_inter_derivative(model)["dId_dgamma_inter"]
    np.testing.assert_array_equal(np.isfinite(d), np.isfinite(central["Id"]))
    assert np.isfinite(d).sum() > 100
    assert _rel(d, central["Id"]) <= resolve_tier("gradient").rtol


def test_a_missing_debye_waller_term_would_fail_that_tier(model, central, monkeypatch):
    """The comparison above is sensitive to the ADP term, so it checks it."""
    monkeypatch.setattr(gn, "adp_derivative", lambda m, h: np.zeros(m.n_at))
    d = gn.maps_and_gamma_inter_derivative(model)["dId_dgamma_inter"]
    assert _rel(d, central["Id"]) > 100 * resolve_tier("gradient").rtol


def test_shared_pass_gives_the_models_own_maps_bit_for_bit(model):
    out = gn.maps_and_gamma_inter_derivative(model)
    np.testing.assert_array_equal(out["Id"], model.apply_disorder())
    np.testing.assert_array_equal(out["mode_maps"], model.mode_maps())
    np.testing.assert_array_equal(out["Id_data_adp"], model.apply_disorder(use_data_adp=True))


def test_check_against_central_difference_reports_what_differs():
    c = np.array([1.0, -2.0, np.nan, 4.0])
    assert nb.check_against_central_difference(c * (1 + 1e-9), c, 1e-7) is None
    assert "relative error" in nb.check_against_central_difference(-c, c, 1e-7)
    assert "finite at 4" in nb.check_against_central_difference(np.nan_to_num(c), c, 1e-7)


def _session():
    run = make_run("synthetic", samplings=GRID, params=PARAMS)
    return run.reference.open(run.spec).build()


def test_backend_analytic_gradient_agrees_with_the_full_central_difference(monkeypatch):
    s = _session()
    analytic = s.get("grad_gamma_inter")[0]
    check = s.gamma_inter_check
    assert np.isfinite(check["central"]).sum() > 10
    assert nb.check_against_central_difference(check["analytic"], check["central"], check["rtol"]) is None
    monkeypatch.setattr(nb, "GAMMA_INTER_METHOD", "central")
    full = _session().get("grad_gamma_inter")[0]
    assert abs(analytic - full) <= resolve_tier("gradient").rtol * abs(full), (analytic, full)
    assert analytic != full  # two methods, not one value read twice


def test_backend_id_data_adp_without_model_adps_uses_the_models_own_map():
    s = _session()
    shared = s.get("Id_data_adp")
    t = _session()
    t.model.adp_undefined_reason = "test: no ADP scale"
    np.testing.assert_array_equal(t.get("Id_data_adp"), shared)


def _sign_flipped(monkeypatch):
    original = gn.intensity_derivative
    monkeypatch.setattr(gn, "intensity_derivative", lambda *a: -original(*a))


def _stage_row(stage: str) -> dict:
    result = run_parity("synthetic", samplings=GRID, params=PARAMS, stage_names=[stage], progress=False)
    (row,) = [r for r in result["stages"] if r["name"] == stage]
    return row


@pytest.mark.parametrize("stage", ["grad_gamma_inter", "grad_gamma_intra"])
def test_a_sign_flipped_numpy_derivative_is_caught_by_its_check(monkeypatch, stage):
    _sign_flipped(monkeypatch)
    with pytest.raises(nb.AnalyticDerivativeError, match="central-difference check"):
        _session().get("grad_gamma_inter")
    assert _stage_row(stage)["status"] != "pass"


def test_a_sign_flipped_numpy_derivative_unchecked_still_fails_against_torch(monkeypatch):
    _sign_flipped(monkeypatch)
    monkeypatch.setattr(nb, "check_against_central_difference", lambda *a: None)
    assert _stage_row("grad_gamma_inter")["status"] == "fail"


def test_form_factors_are_shared_only_between_asus_with_equal_coefficients():
    a = np.ones((3, 2, 4))
    a[2, 1, 0] = 2.0  # ASU 2 holds another element
    crystal = SimpleNamespace(ff_a=a, ff_b=np.ones((3, 2, 4)), ff_c=np.zeros((3, 2)))
    assert [gn._same_form_factor_source(crystal, i) for i in range(3)] == [0, 0, 2]


def test_backend_id_data_adp_keeps_the_models_probes_for_locate():
    s = _session()
    recorder = ProbeRecorder()
    with listen(recorder):
        value = s.get("Id_data_adp")
    assert {"F", "Id_part"} <= {r.name for r in recorder.records}
    np.testing.assert_array_equal(value, _session().get("Id_data_adp"))


def test_the_shared_pass_adds_no_probes_of_its_own(model):
    recorder = ProbeRecorder()
    with listen(recorder):
        gn.maps_and_gamma_inter_derivative(model)
    assert recorder.records == []
