"""The invariants called directly (no run, no backend): right inputs pass, wrong ones are caught.

Each check gets a narrow view of the run (``StaticView``: a spec and each side's values)
and its stage's tier, as the runner calls it. The expectations come from the physics
(Hermitian K, Id >= 0, Friedel pairs, the zero modes of a cubic lattice of one atom),
worked out by hand below, not from the checks.
"""
import numpy as np
import pytest

from parity.comparison import invariants as inv
from parity.comparison.checks import CHECKS, get_check
from parity.contract.run_view import StaticView
from parity.contract.spec import RunSpec
from parity.stages import STAGES
from parity.contract.tiers import resolve_tier

GRID = ((-1, 1, 2), (-1, 1, 2), (-1, 1, 2))  # 5 x 5 x 5 points, symmetric about the origin
EXACT = resolve_tier("exact")


def _spec(samplings=GRID, cutoff=5.5) -> RunSpec:
    return RunSpec(fixture="hand-made", pdb_path="/nonexistent.pdb", samplings=samplings,
                   params={"gnm_cutoff": cutoff, "gamma_intra": 1.0, "gamma_inter": 1.0, "res_limit": 0.0,
                           "expand_p1": True})


def _candidate(spec=None, **values) -> StaticView:
    return StaticView(spec or _spec(), candidate=values)


# ------------------------------------------------------------------ the registry
def test_every_check_stage_names_a_registered_check_and_every_check_is_used():
    named = {s.check for s in STAGES if s.kind in ("invariant", "oracle")}
    assert named == set(CHECKS)
    assert all(s.check is None for s in STAGES if s.kind not in ("invariant", "oracle"))


def test_an_unknown_check_name_lists_the_known_ones():
    with pytest.raises(KeyError, match="unknown check 'nope'; known checks: .*friedel"):
        get_check("nope")


# ------------------------------------------------------------------ K Hermitian
def _hermitian(rng, n_bz=8, n=6):
    a = rng.standard_normal((n_bz, n, n)) + 1j * rng.standard_normal((n_bz, n, n))
    return a + np.conj(np.swapaxes(a, -1, -2))


def test_a_hermitian_K_passes():
    K = _hermitian(np.random.default_rng(0))
    out = inv.check_K_hermitian(_candidate(K=K), EXACT)
    assert out.passed and out.comparable and out.n_compared == K.size


def test_a_K_that_is_not_hermitian_is_caught():
    K = _hermitian(np.random.default_rng(1))
    K[3, 0, 1] += 1e-6  # one off-diagonal entry no longer the conjugate of its mirror
    out = inv.check_K_hermitian(_candidate(K=K), EXACT)
    assert not out.passed and out.comparable
    assert out.max_abs > 1e-8 and "max |K - K^H| / max |K|" in out.message


def test_a_K_with_NaN_fails_and_an_empty_K_is_not_comparable():
    K = _hermitian(np.random.default_rng(2))
    K[0, 0, 0] = np.nan
    assert not inv.check_K_hermitian(_candidate(K=K), EXACT).passed
    empty = inv.check_K_hermitian(_candidate(K=np.zeros((0, 6, 6))), EXACT)
    assert not empty.comparable and empty.n_compared == 0


# ------------------------------------------------------------------ Id >= 0, Friedel
def _friedel_map(rng, spec):
    """A positive map with Id(q) = Id(-q): a random map plus its point reflection (NaN at Bragg points kept paired)."""
    half = rng.random(spec.map_shape) + 0.1
    Id = half + half[::-1, ::-1, ::-1]
    Id[0, 2, 2] = Id[-1, 2, 2] = np.nan  # a Friedel pair of Bragg points
    return Id.reshape(-1)


def test_a_positive_map_passes_nonnegative_and_a_negative_point_is_caught():
    spec = _spec()
    Id = _friedel_map(np.random.default_rng(3), spec)
    assert inv.check_nonnegative(_candidate(spec, Id=Id), EXACT).passed
    bad = Id.copy()
    bad[17] = -0.1 * np.nanmax(Id)
    out = inv.check_nonnegative(_candidate(spec, Id=bad), EXACT)
    assert not out.passed and out.max_abs == pytest.approx(0.1)


def test_a_map_with_no_finite_point_is_not_comparable():
    spec = _spec()
    out = inv.check_nonnegative(_candidate(spec, Id=np.full(int(np.prod(spec.map_shape)), np.nan)), EXACT)
    assert not out.comparable and "no finite point" in out.reason


def test_a_friedel_symmetric_map_passes_and_a_broken_pair_is_caught():
    spec = _spec()
    Id = _friedel_map(np.random.default_rng(4), spec)
    assert inv.check_friedel(_candidate(spec, Id=Id), EXACT).passed
    bad = Id.copy()
    bad[1] *= 1.01  # its mirror (index n - 2) keeps the old value
    out = inv.check_friedel(_candidate(spec, Id=bad), EXACT)
    assert not out.passed and out.max_abs > 1e-4


def test_a_friedel_map_whose_nan_pattern_is_not_symmetric_is_caught():
    spec = _spec()
    bad = _friedel_map(np.random.default_rng(5), spec)
    bad[7] = np.nan
    out = inv.check_friedel(_candidate(spec, Id=bad), EXACT)
    assert not out.passed and "NaN patterns DIFFER" in out.message


def test_friedel_on_a_grid_not_symmetric_about_the_origin_is_not_comparable():
    spec = _spec(((0, 2, 2), (-1, 1, 2), (-1, 1, 2)))
    out = inv.check_friedel(_candidate(spec, Id=np.ones(int(np.prod(spec.map_shape)))), EXACT)
    assert not out.comparable


# ------------------------------------------------------------------ zero modes
#: One atom per cell in a cubic cell of side 5 A: with a 5.5 A cutoff it touches its six
#: face neighbours only, so the contact cycles are the three lattice vectors: three
#: rigid translations are zero modes at k = 0 and none at the 7 other BZ points of a
#: (2, 2, 2) oversampling (k . a = pi there along some axis).
SIDE = 5.0
CELL_ORIGIN = SIDE * inv.CELL_HKL.astype(float)


def _lattice_view(Winv, cell_origin=CELL_ORIGIN, cutoff=5.5):
    return StaticView(_spec(cutoff=cutoff), candidate={
        "Winv": Winv, "asu_xyz": np.zeros((1, 1, 3)), "cell_origin": cell_origin})


def _winv(zero_at: dict[int, int]) -> np.ndarray:
    Winv = np.ones((8, 6))
    for bz, n in zero_at.items():
        Winv[bz, :n] = np.nan
    return Winv


def test_the_zero_modes_of_a_cubic_lattice_are_three_at_k0():
    assert inv.expected_zero_modes(np.zeros((1, 1, 3)), CELL_ORIGIN, 5.5, (2, 2, 2)).tolist() == [3] + [0] * 7
    out = inv.check_zero_modes(_lattice_view(_winv({0: 3})), EXACT)
    assert out.passed and out.n_compared == 8


@pytest.mark.parametrize("zero_at", [{0: 2}, {0: 3, 5: 1}, {}])
def test_a_wrong_count_of_zero_modes_is_caught(zero_at):
    out = inv.check_zero_modes(_lattice_view(_winv(zero_at)), EXACT)
    assert not out.passed and out.comparable
    assert "expected exactly 3" in out.message


def test_a_chain_of_contacts_makes_the_count_unpredictable():
    # Stretch b and c to 8 A: the atom touches its neighbours along a only (a chain).
    origin = inv.CELL_HKL * np.array([SIDE, 8.0, 8.0])
    out = inv.check_zero_modes(_lattice_view(_winv({0: 3}), cell_origin=origin), EXACT)
    assert not out.comparable and "not predictable" in out.reason


# ------------------------------------------------------------------ arbitrary q vs grid
def test_the_q_path_equal_to_the_grid_path_passes_within_its_tier_and_a_difference_is_caught():
    spec = _spec()
    Id = np.random.default_rng(6).random(int(np.prod(spec.map_shape))) + 0.5
    tier = resolve_tier("end_to_end", "float64", stage="qvectors_sample")
    assert inv.check_qvectors_sample(_candidate(spec, Id=Id, Id_q_sample=Id[spec.q_sample].copy()), tier).passed
    off = Id[spec.q_sample] * (1 + 1e-3)
    out = inv.check_qvectors_sample(_candidate(spec, Id=Id, Id_q_sample=off), tier)
    assert not out.passed and out.max_rel > 1e-4
