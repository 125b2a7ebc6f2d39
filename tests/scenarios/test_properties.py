"""Property tests: parity and the registry's invariants hold across crystal systems,
random small grids and random model parameters.

Derandomized by default (the same examples on every run: CI stays deterministic). For
random exploration set ``PARITY_PROPERTY_EXAMPLES=N`` (N examples per test, fresh each
run); findings of such runs are pinned below as explicit regression tests.
"""
from __future__ import annotations

import functools
import os

import numpy as np
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as hst

from eryx import models as npm
from eryx import structure
from eryx.errors import EryxInputError
from eryx.fixtures import resolve_fixture, synthetic_names
from parity.running.runner import run_parity
from parity.stages import STAGES

CRYSTAL_SYSTEMS = ("synthetic", "synth_triclinic", "synth_monoclinic", "synth_orthorhombic", "synth_trigonal",
                   "synth_tetragonal")
INVARIANTS = [s.name for s in STAGES if s.kind == "invariant"]

_EXPLORE = os.environ.get("PARITY_PROPERTY_EXAMPLES")


def property_settings(default_examples: int) -> settings:
    # No shrinking by default: one parity run is ~1 s and a shrink takes hundreds; the
    # failing example is printed as drawn (pin it below as a regression test).
    phases = tuple(Phase) if _EXPLORE else (Phase.explicit, Phase.reuse, Phase.generate)
    return settings(max_examples=int(_EXPLORE) if _EXPLORE else default_examples, derandomize=not _EXPLORE,
                    deadline=None, suppress_health_check=[HealthCheck.too_slow], phases=phases)


#: Examples per crystal system by default: a full parity run (both backends, gradients
#: by finite differences of the NumPy model) costs ~0.5-1 s, an invariants-only run
#: (torch only) ~0.1-0.2 s. 6 systems: 24 + 48 runs, ~30 s on an idle 2-core machine.
PARITY_EXAMPLES = 4
INVARIANT_EXAMPLES = 8
#: Largest drawn grid: points and BZ points (keeps one run below ~1 s).
MAX_GRID_POINTS = 125
MAX_BZ_POINTS = 8


@hst.composite
def small_grids(draw, symmetric: bool = False):
    """Three (lo, hi, L) triples: integer bounds in [-2, 2], oversampling 1, 2 or 3.

    One axis, drawn, has oversampling >= 2 and two or more integers, so every grid holds
    points off the Bragg positions (a fractional index there), where the map is finite,
    and samples k != 0 (so the ADP scale is defined). ``symmetric``: lo = -hi on every
    axis, so that the Friedel check applies.
    """
    rich = draw(hst.integers(0, 2))
    axes = []
    for axis in range(3):
        if symmetric:
            m = draw(hst.integers(1 if axis == rich else 0, 2))
            lo, hi = -m, m
        else:
            lo = draw(hst.integers(-2, 1 if axis == rich else 2))
            hi = draw(hst.integers(lo + 1 if axis == rich else lo, 2))
        axes.append((lo, hi, draw(hst.sampled_from((2, 3) if axis == rich else (1, 2, 3)))))
    return tuple(axes)


def grid_points(grid) -> int:
    return int(np.prod([L * (hi - lo) + 1 for lo, hi, L in grid]))


grids = hst.one_of(small_grids(), small_grids(symmetric=True)).filter(
    lambda g: grid_points(g) <= MAX_GRID_POINTS and int(np.prod([L for _, _, L in g])) <= MAX_BZ_POINTS)

model_params = hst.fixed_dictionaries({
    "gamma_intra": hst.floats(0.5, 2.0),
    "gamma_inter": hst.floats(0.5, 2.0),
    "gnm_cutoff": hst.floats(3.5, 4.5),
})


def has_non_bragg_points(grid) -> bool:
    """Some grid point has a fractional Miller index (is off every Bragg position)."""
    return any(L >= 2 and hi > lo for lo, hi, L in grid)


def is_symmetric(grid) -> bool:
    return all(lo == -hi for lo, hi, _ in grid)


@functools.lru_cache(maxsize=None)
def _n_asu(fixture: str) -> int:
    return structure.load_crystal(resolve_fixture(fixture), True).n_asu


def _failures(result, grid=None):
    """Stages that diverged (fail or error). A random grid or network may leave a stage
    with nothing to compare (no Friedel pair on an asymmetric grid, a chain network's
    extra zero modes, a map that is NaN at every drawn point): that stage is
    ``not_comparable`` with its reason, which is not a divergence; :func:`_compared`
    makes sure the example still compared something."""
    return [(s["name"], s["status"], s["message"].splitlines()[0]) for s in result["stages"]
            if s["status"] in ("fail", "error")]


def _compared(result) -> int:
    """Elements compared by the passing stages; every not-comparable stage gives its reason."""
    assert all(s["message"] for s in result["stages"] if s["status"] == "not_comparable")
    return sum(s["n_compared"] for s in result["stages"] if s["status"] == "pass")


def test_every_synthetic_crystal_system_is_covered():
    assert set(CRYSTAL_SYSTEMS) == set(synthetic_names())
    assert INVARIANTS == ["K_hermitian", "zero_modes", "Id_nonnegative", "friedel", "qvectors_sample"]


@settings(max_examples=100, derandomize=True, deadline=None)
@given(grid=grids)
def test_drawn_grids_have_data(grid):
    """Every drawn grid holds non-Bragg points (the strategy's guarantee the tests rely on)."""
    assert has_non_bragg_points(grid)
    assert all(-2 <= lo <= hi <= 2 and L in (1, 2, 3) for lo, hi, L in grid)
    assert grid_points(grid) <= MAX_GRID_POINTS


def test_drawn_grids_include_symmetric_ones():
    seen = []

    @settings(max_examples=INVARIANT_EXAMPLES, derandomize=True, deadline=None, database=None)
    @given(grid=grids)
    def collect(grid):
        seen.append(grid)

    collect()
    assert any(is_symmetric(g) for g in seen) and any(not is_symmetric(g) for g in seen)
    assert not any(grid_points(g) == 1 for g in seen)


@pytest.mark.parametrize("fixture", CRYSTAL_SYSTEMS)
@property_settings(PARITY_EXAMPLES)
@given(grid=grids, params=model_params)
def test_float64_parity_on_random_grids_and_parameters(fixture, grid, params):
    result = run_parity(fixture, samplings=grid, params=params, progress=False)
    assert len(result["stages"]) == len(STAGES)
    assert not _failures(result, grid), (fixture, grid, params, _failures(result, grid))
    assert result["verdict"] != "diverged" and _compared(result) > 0


@pytest.mark.parametrize("fixture", CRYSTAL_SYSTEMS)
@property_settings(INVARIANT_EXAMPLES)
@given(grid=grids, params=model_params, dtype=hst.sampled_from(("float64", "float32")))
def test_invariants_hold_on_every_crystal_system(fixture, grid, params, dtype):
    result = run_parity(fixture, samplings=grid, params=params, dtype=dtype, stage_names=INVARIANTS, progress=False)
    assert [s["name"] for s in result["stages"]] == INVARIANTS
    assert not _failures(result, grid), (fixture, grid, params, dtype, _failures(result, grid))
    assert _compared(result) > 0
    friedel = next(s for s in result["stages"] if s["name"] == "friedel")
    if not is_symmetric(grid):  # no Friedel pair sampled
        assert friedel["status"] == "not_comparable" and "not symmetric" in friedel["message"], friedel["message"]


def test_adp_scale_defined_or_refused_when_only_k0_is_sampled():
    grid = ((0, 0, 1),) * 3
    assert _n_asu("synth_triclinic") == 1 and not has_non_bragg_points(grid)
    # covar and ADP are NaN in both backends (undefined, identical NaN patterns) ...
    result = run_parity("synth_triclinic", samplings=grid, stage_names=["covar", "ADP"], progress=False)
    assert result["passed"], _failures(result)
    # ... and a run that selects a map needing them is refused up front by the reference with
    # the reason: an input error (exit 2), never a divergence of the candidate (issue 21).
    with pytest.raises(EryxInputError, match="the reference \\(numpy\\) refuses 1 selected stage.*only k = 0 "
                                             "is sampled.*--skip Id"):
        run_parity("synth_triclinic", samplings=grid, stage_names=["Id"], progress=False)
    with pytest.raises(EryxInputError, match="ADP scale is undefined"):  # the model itself raises
        npm.OnePhonon(resolve_fixture("synth_triclinic"), *grid).apply_disorder()


def test_eigenspaces_near_degenerate_pair_found_by_exploration():
    grid = ((0, 0, 1), (2, 2, 2), (-2, 1, 1))
    params = {"gamma_intra": 1.6740729583837775, "gamma_inter": 1.8948381387380282,
              "gnm_cutoff": 4.498855081635512}
    result = run_parity("synth_tetragonal", samplings=grid, params=params, stage_names=["Winv", "eigenspaces"],
                        progress=False)
    stages = {s["name"]: s for s in result["stages"]}
    assert stages["Winv"]["status"] == "pass"  # the eigenvalues agree; only the projector tolerance trips
    assert result["passed"], _failures(result)


def test_cluster_map_that_vanishes_on_a_one_point_grid_found_by_exploration():
    """Found by exploration. The grid is one point, hkl (0, 0, 1): a Bragg position, so the
    full map is NaN there; the rank-7 map summed over its (1-mode) cluster vanishes by
    symmetry: ~1e-28 in both backends, against 59 for the strongest mode at that point.

    The harness's Id_cluster_last stage judges the two round-off values against their own
    max and fails: a limitation of that stage's yardstick (parity/stages.py should take the
    scale of the whole mode-map family, as here), not a divergence of the backends. So the
    backends are compared here directly, at the end-to-end tier of that scale: a real check
    that passes, and fails if either backend's rank-7 map stops vanishing or the two differ.
    """
    from eryx import models as npm
    from eryx import models_torch as tm
    from parity.contract.tiers import TIERS

    try:
        from tests._helpers import cluster_of
    except ImportError:
        from _helpers import cluster_of

    grid = ((0, 0, 3), (0, 0, 3), (1, 1, 2))
    params = {"gamma_intra": 1.349040341783426, "gamma_inter": 1.163201067681506, "gnm_cutoff": 4.358284384288212}
    result = run_parity("synth_tetragonal", samplings=grid, params=params, stage_names=["Id", "Id_cluster0"],
                        progress=False)
    # The one point is a Bragg position: both maps are NaN there on both sides, so the
    # harness compares nothing (not comparable, the run incomplete), never a pass.
    assert [s["status"] for s in result["stages"]] == ["not_comparable"] * 2, _failures(result)
    assert result["verdict"] == "incomplete"
    pdb = resolve_fixture("synth_tetragonal")
    n, t = npm.OnePhonon(pdb, *grid, **params), tm.OnePhonon(pdb, *grid, **params)
    assert n.hkl_grid.tolist() == [[0.0, 0.0, 1.0]] and np.isnan(n.apply_disorder()).all()
    modes_n, modes_t = n.mode_maps(), t.mode_maps().numpy()
    assert np.array_equal(np.isnan(modes_n), np.isnan(modes_t))
    scale = np.nanmax(np.abs(modes_n))  # the intensity scale of the mode maps at the point
    members = cluster_of(np.real(n.Winv[0, 0, 0]), 7)
    cluster_n, cluster_t = modes_n[:, members].sum(axis=1), modes_t[:, members].sum(axis=1)
    assert np.abs(cluster_n).max() <= 1e-20 * scale  # vanishes by symmetry
    tier = TIERS["end_to_end"]
    assert np.abs(cluster_t - cluster_n).max() <= tier.atol * scale
    finite = np.isfinite(modes_n)
    assert np.all(np.abs(modes_t - modes_n)[finite] <= tier.atol * scale + tier.rtol * np.abs(modes_n[finite]))
