"""The parity run's gradient and map stages made cheaper without losing what they check.

* The NumPy reference's Id and mode_maps come from one pass of structure factors: the
  same values bit for bit as the model's own two methods.
* d sum(Id)/d gamma_intra of the NumPy reference comes from Euler's identity (the map is
  homogeneous of degree -1 in the two spring constants) and the central difference in
  gamma_inter: it agrees with a direct central difference, and a wrong torch gradient
  still fails the stage.
* The torch backend computes both gamma gradients in one backward pass.
"""
from __future__ import annotations

import numpy as np
import pytest

import parity.backends.eryx_numpy as nb
from eryx import models as npm
from parity.backends.eryx_torch import TorchSession
from parity.running.runner import make_run, run_parity
from parity.contract.tiers import resolve_tier

GRID = ((-2, 2, 2),) * 3
PARAMS = {"gamma_intra": 1.3, "gamma_inter": 0.6}


def _session(backend: str):
    run = make_run("synthetic", samplings=GRID, params=PARAMS)
    return (run.reference if backend == "numpy" else run.candidate).open(run.spec).build()


def test_shared_structure_factors_give_the_models_own_maps_bit_for_bit(fixture_pdb):
    m = npm.OnePhonon(fixture_pdb("synthetic"), *GRID)
    Id, modes = m.apply_disorder_and_modes()
    np.testing.assert_array_equal(Id, m.apply_disorder())
    np.testing.assert_array_equal(modes, m.mode_maps())


def test_numpy_session_maps_are_the_models_maps():
    s = _session("numpy")
    np.testing.assert_array_equal(s.get("Id"), s.model.apply_disorder())
    np.testing.assert_array_equal(s.get("mode_maps"), s.model.mode_maps())


def test_euler_gamma_intra_agrees_with_a_direct_central_difference(monkeypatch):
    euler = _session("numpy").get("grad_gamma_intra")[0]
    monkeypatch.setattr(nb, "EULER_INTRA", False)
    direct = _session("numpy").get("grad_gamma_intra")[0]
    tier = resolve_tier("gradient")
    assert abs(euler - direct) <= tier.rtol * abs(direct), (euler, direct)
    assert euler != direct  # two computations, not one value read twice


def test_torch_computes_both_gamma_gradients_in_one_backward(monkeypatch):
    s = _session("torch")
    calls = []
    original = TorchSession._model

    def counting(self, **kw):
        calls.append(kw)
        return original(self, **kw)

    monkeypatch.setattr(TorchSession, "_model", counting)
    g_intra, g_inter = s.get("grad_gamma_intra"), s.get("grad_gamma_inter")
    assert len(calls) == 1 and np.isfinite([g_intra[0], g_inter[0]]).all()


@pytest.mark.parametrize("stage", ["grad_gamma_intra", "grad_gamma_inter"])
def test_a_wrong_torch_gamma_gradient_still_fails_its_stage(monkeypatch, stage):
    original = TorchSession._grad_gamma

    def wrong(self, which):
        value = original(self, which)
        return value * (1 + 1e-5) if f"grad_{which}" == stage else value

    monkeypatch.setattr(TorchSession, "_grad_gamma", wrong)
    result = run_parity("synthetic", samplings=GRID, params=PARAMS, stage_names=[stage], progress=False)
    (row,) = [s for s in result["stages"] if s["name"] == stage]
    assert row["status"] == "fail", row
