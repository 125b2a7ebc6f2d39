"""Property tests: parity and the registry's invariants hold across crystal systems,
random small grids and random model parameters.

Derandomized by default (the same examples on every run: CI stays deterministic). For
random exploration set ``PARITY_PROPERTY_EXAMPLES=N`` (N examples per test, fresh each
run); findings of such runs are pinned below as explicit regression tests.
"""
from __future__ import annotations

import functools
import os

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as hst

from eryx import structure
from eryx.errors import EryxInputError
from eryx.fixtures import resolve_fixture, synthetic_names
from parity.runner import run_parity
from parity.stages import STAGES

CRYSTAL_SYSTEMS = ("synthetic", "synth_triclinic", "synth_monoclinic", "synth_orthorhombic", "synth_trigonal",
                   "synth_tetragonal")
INVARIANTS = [s.name for s in STAGES if s.kind == "invariant"]

_EXPLORE = os.environ.get("PARITY_PROPERTY_EXAMPLES")
PROPERTY_SETTINGS = settings(max_examples=int(_EXPLORE) if _EXPLORE else 3, derandomize=not _EXPLORE,
                             deadline=None, suppress_health_check=[HealthCheck.too_slow])


@hst.composite
def small_grids(draw):
    """Three (lo, hi, L) triples: integer bounds in [-2, 2], oversampling 1, 2 or 3."""
    axes = []
    for _ in range(3):
        lo = draw(hst.integers(-2, 2))
        hi = draw(hst.integers(lo, 2))
        axes.append((lo, hi, draw(hst.sampled_from((1, 2, 3)))))
    return tuple(axes)


model_params = hst.fixed_dictionaries({
    "gamma_intra": hst.floats(0.5, 2.0),
    "gamma_inter": hst.floats(0.5, 2.0),
    "gnm_cutoff": hst.floats(3.5, 4.5),
})


@functools.lru_cache(maxsize=None)
def _n_asu(fixture: str) -> int:
    return structure.load_crystal(resolve_fixture(fixture), True).n_asu


def _adp_scale_undefined(fixture, grid) -> bool:
    """One ASU and oversampling 1 everywhere: only k = 0 is sampled, where the pseudo-inverse
    removes the rigid translations, so mean(raw ADP) is 0 and the ADP scale b / mean(ADP) is
    undefined (both backends return round-off / round-off). See the xfail test below."""
    return _n_asu(fixture) == 1 and all(L == 1 for _, _, L in grid)


def _all_bragg(grid) -> bool:
    """Every grid point is a Bragg point (Id NaN everywhere): along every axis only integers
    are sampled (oversampling 1, or a single value)."""
    return all(L == 1 or lo == hi for lo, hi, L in grid)


def _assert_passed_or_nothing_to_compare(result, grid, *context):
    """Passed, or every stage that did not pass compared nothing: maps NaN everywhere on both
    sides (Bragg points; k-points where a sparse network has extra zero modes) are not
    comparable, never a pass. On an all-Bragg grid that is always the case."""
    odd = [(s["name"], s["message"]) for s in result["stages"]
           if s["status"] != "pass" and ": not comparable: no element to compare numerically" not in s["message"]]
    assert not odd, (*context, odd)
    if _all_bragg(grid):
        assert not result["passed"], context


def _failures(result):
    return [(s["name"], s["status"], s["message"].splitlines()[0]) for s in result["stages"] if s["status"] != "pass"]


def test_every_synthetic_crystal_system_is_covered():
    assert set(CRYSTAL_SYSTEMS) == set(synthetic_names())
    assert INVARIANTS == ["K_hermitian", "zero_modes", "Id_nonnegative", "friedel", "qvectors_sample"]


@pytest.mark.parametrize("fixture", CRYSTAL_SYSTEMS)
@PROPERTY_SETTINGS
@given(grid=small_grids(), params=model_params)
def test_float64_parity_on_random_grids_and_parameters(fixture, grid, params):
    assume(not _adp_scale_undefined(fixture, grid))
    result = run_parity(fixture, samplings=grid, params=params, progress=False)
    assert len(result["stages"]) == len(STAGES)
    _assert_passed_or_nothing_to_compare(result, grid, fixture, grid, params)


@pytest.mark.parametrize("fixture", CRYSTAL_SYSTEMS)
@PROPERTY_SETTINGS
@given(grid=small_grids(), params=model_params, dtype=hst.sampled_from(("float64", "float32")))
def test_invariants_hold_on_every_crystal_system(fixture, grid, params, dtype):
    if _adp_scale_undefined(fixture, grid):  # the map needs the ADP scale: the run is refused
        with pytest.raises(EryxInputError, match="ADP scale is undefined"):
            run_parity(fixture, samplings=grid, params=params, dtype=dtype, stage_names=INVARIANTS, progress=False)
        return
    result = run_parity(fixture, samplings=grid, params=params, dtype=dtype, stage_names=INVARIANTS, progress=False)
    assert [s["name"] for s in result["stages"]] == INVARIANTS
    _assert_passed_or_nothing_to_compare(result, grid, fixture, grid, params, dtype)


def test_adp_scale_defined_or_refused_when_only_k0_is_sampled():
    grid = ((0, 0, 1),) * 3
    assert _adp_scale_undefined("synth_triclinic", grid)
    # covar and ADP are NaN in both backends (undefined, identical NaN patterns): nothing to
    # compare, so not comparable (never a pass) ...
    result = run_parity("synth_triclinic", samplings=grid, stage_names=["covar", "ADP"], progress=False)
    assert not result["passed"]
    for s in result["stages"]:
        assert s["message"].startswith(f"{s['name']}: not comparable: no element to compare numerically"), s
    # ... and a map that would need them is refused with the reason.
    with pytest.raises(EryxInputError, match="ADP scale is undefined"):
        run_parity("synth_triclinic", samplings=grid, stage_names=["Id"], progress=False)


def test_eigenspaces_near_degenerate_pair_found_by_exploration():
    grid = ((0, 0, 1), (2, 2, 2), (-2, 1, 1))
    params = {"gamma_intra": 1.6740729583837775, "gamma_inter": 1.8948381387380282,
              "gnm_cutoff": 4.498855081635512}
    result = run_parity("synth_tetragonal", samplings=grid, params=params, stage_names=["Winv", "eigenspaces"],
                        progress=False)
    stages = {s["name"]: s for s in result["stages"]}
    assert stages["Winv"]["status"] == "pass"  # the eigenvalues agree; only the projector tolerance trips
    assert result["passed"], _failures(result)


@pytest.mark.xfail(strict=True, reason="harness limitation: a map that vanishes by symmetry at every sampled "
                   "point (here one point, ~1e-28) is judged against its own max (round-off), not against "
                   "the intensity scale of the full map")
def test_cluster_map_that_vanishes_on_a_one_point_grid_found_by_exploration():
    grid = ((0, 0, 3), (0, 0, 3), (1, 1, 2))
    params = {"gamma_intra": 1.349040341783426, "gamma_inter": 1.163201067681506, "gnm_cutoff": 4.358284384288212}
    result = run_parity("synth_tetragonal", samplings=grid, params=params, stage_names=["Id", "Id_cluster_last"],
                        progress=False)
    stages = {s["name"]: s for s in result["stages"]}
    assert stages["Id"]["status"] == "pass"
    assert result["passed"], _failures(result)
