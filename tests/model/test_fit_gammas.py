"""examples/fit_gammas.py recovers the parameters a map was simulated with (torch LBFGS
through the analytic gradients), within the stated tolerance."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "fit_gammas.py"
#: Relative recovery tolerance at 1 % noise: the noise moves the least-squares optimum by
#: ~0.1-0.3 % on these grids (measured), a wrong gradient leaves the start (1, 1, 1).
TOL = 0.02


@pytest.fixture(scope="module")
def example():
    spec = importlib.util.spec_from_file_location("fit_gammas", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    yield module
    sys.modules.pop(spec.name, None)


def _close(value, true, what):
    assert abs(value - true) <= TOL * abs(true), f"{what}: fitted {value:.5g}, true {true:.5g}"


def test_recovers_both_gammas_on_the_synthetic_crystal(example, fixture_pdb, tmp_path):
    pdb, grid = fixture_pdb("synthetic"), example.SMALL_GRID
    target = example.simulate(pdb, grid, 1.6, 0.6, 2.5, noise=0.01)
    lines = []
    r = example.fit(pdb, grid, target, fixed={"scale": 2.5}, log=lines.append)
    _close(r.gamma_intra, 1.6, "gamma_intra")
    _close(r.gamma_inter, 0.6, "gamma_inter")
    assert r.losses[-1] < 1e-2 * r.losses[0] and len(lines) == len(r.losses) - 1
    example.figure(r, grid, str(tmp_path / "fit.png"))
    assert (tmp_path / "fit.png").stat().st_size > 10_000


def test_with_a_free_scale_recovers_what_the_map_determines(example, fixture_pdb):
    """s Id(gi, ge) = (s / ge) Id(gi / ge, 1): the ratio and the scale (ge held)."""
    pdb, grid = fixture_pdb("synthetic"), example.SMALL_GRID
    target = example.simulate(pdb, grid, 1.6, 0.6, 2.5, noise=0.01, seed=1)
    r = example.fit(pdb, grid, target, fixed={"gamma_inter": 0.6}, log=lambda _: None)
    _close(r.gamma_intra / r.gamma_inter, 1.6 / 0.6, "gamma_intra / gamma_inter")
    _close(r.scale, 2.5, "scale")


def test_recovers_both_gammas_on_5zck_p1_default_grid(example, fixture_pdb):
    pdb = fixture_pdb("5zck_p1")
    grid = example.grid_of("default", "5zck_p1")
    target = example.simulate(pdb, grid, 0.8, 1.3, 1.0, noise=0.01, seed=2)
    r = example.fit(pdb, grid, target, fixed={"scale": 1.0}, log=lambda _: None)
    _close(r.gamma_intra, 0.8, "gamma_intra")
    _close(r.gamma_inter, 1.3, "gamma_inter")


@pytest.mark.slow
def test_recovers_both_gammas_on_5zck_p1_standard_grid(example, fixture_pdb):
    """The issue's second grid (450,625 points): 16 forward + backward passes, 11.5 s on the
    project's 2-core machine (measured 2026-12-06); slow, so out of the default run."""
    pdb = fixture_pdb("5zck_p1")
    grid = example.grid_of("standard", "5zck_p1")
    target = example.simulate(pdb, grid, 1.6, 0.6, 2.5, noise=0.01, seed=3)
    r = example.fit(pdb, grid, target, fixed={"scale": 2.5}, log=lambda _: None)
    _close(r.gamma_intra, 1.6, "gamma_intra")
    _close(r.gamma_inter, 0.6, "gamma_inter")


def test_a_wrong_gradient_does_not_recover(example, fixture_pdb, monkeypatch):
    """The recovery test can fail: with the gradient's sign flipped the fit does not converge."""
    import torch

    pdb, grid = fixture_pdb("synthetic"), example.SMALL_GRID
    target = example.simulate(pdb, grid, 1.6, 0.6, 2.5, noise=0.01)
    original = torch.Tensor.backward
    monkeypatch.setattr(torch.Tensor, "backward", lambda self, *a, **k: original(-self, *a, **k))
    r = example.fit(pdb, grid, target, fixed={"scale": 2.5}, max_steps=5, log=lambda _: None)
    with pytest.raises(AssertionError):
        _close(r.gamma_intra, 1.6, "gamma_intra")
        _close(r.gamma_inter, 0.6, "gamma_inter")
