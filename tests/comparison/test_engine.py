"""The comparison engine must pass what agrees and catch what does not.

Every comparison function gets a passing case and a deliberately wrong input
it has to catch; hypothesis checks the tolerance semantics, the NaN handling,
the ULP distance and the eigenspace projector invariances.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from parity.comparison.engine import (
    ELEMENTWISE,
    HIST_EDGES,
    NORMWISE,
    STATUSES,
    Comparison,
    audit_dtypes,
    check_dtype,
    cluster_eigenvalues,
    compare_arrays,
    compare_eigenspaces,
    compare_full_product,
    compare_nan_pattern,
    format_errors,
    format_ulp,
    invariant_result,
    spectral_projectors,
    ulp_distance,
)
from parity.contract.tiers import TIERS, Tier

TIGHT = TIERS["tight"]
EXACT = TIERS["exact"]
DECOMP = TIERS["decomposition"]

FAST = settings(max_examples=40, deadline=None)


def hkl(index):
    """A locate callback in the style of the grid quantities."""
    return "(h,k,l)=(" + ",".join(str(i - 1) for i in index) + ")"


def grid(shape=(3, 3, 3), seed=0, complex_=False):
    rng = np.random.default_rng(seed)
    x = rng.uniform(0.5, 2.0, shape) * rng.choice([-1, 1], shape)
    if complex_:
        x = x + 1j * rng.uniform(-1, 1, shape)
    return x


def assert_json_safe(result: Comparison):
    text = json.dumps(result.to_dict(), allow_nan=False)
    assert json.loads(text)["passed"] == result.passed


# --------------------------------------------------------------------------
# compare_arrays: examples
# --------------------------------------------------------------------------


def test_arrays_pass_within_tolerance():
    e = grid()
    a = e * (1 + 1e-14)
    result = compare_arrays(a, e, TIGHT, name="kvec")
    assert result.passed and result.kind == "array"
    assert result.n_mismatch == 0 and result.n_total == 27
    assert 0 < result.max_rel < 1e-13
    assert result.message.startswith("kvec: OK")
    assert_json_safe(result)


def test_arrays_shape_mismatch_fails_without_raising():
    result = compare_arrays(np.zeros((3, 3)), np.zeros((3, 4)), TIGHT, name="Amat")
    assert not result.passed
    assert "shape mismatch" in result.message and "(3, 3)" in result.message and "(3, 4)" in result.message
    assert_json_safe(result)


@pytest.mark.parametrize("complex_actual", [True, False])
def test_arrays_dtype_class_mismatch_fails(complex_actual):
    e = grid()
    a = e.astype(complex)
    if not complex_actual:
        a, e = e, a
    result = compare_arrays(a, e, TIGHT, name="Winv")
    assert not result.passed
    assert "dtype class mismatch" in result.message and "complex128" in result.message


def test_arrays_mixed_precision_same_class_is_compared():
    e = grid()
    result = compare_arrays(e.astype(np.float32), e, TIERS["tight_f32"])
    assert result.passed
    assert result.details["ulp"]["max"] <= 1  # measured in float32 ulps


def test_arrays_one_element_off_by_10x_tolerance_is_caught_and_located():
    e = grid()
    a = e.copy()
    idx = (2, 0, 1)
    allowed = TIGHT.atol * np.abs(e).max() + TIGHT.rtol * abs(e[idx])
    a[idx] += 10 * allowed
    result = compare_arrays(a, e, TIGHT, name="Id", locate=hkl)
    assert not result.passed
    assert result.n_mismatch == 1 and result.n_total == 27
    assert result.worst["index"] == [2, 0, 1]
    assert result.worst["location"] == "(h,k,l)=(1,-1,0)"
    lines = result.message.splitlines()
    assert lines[1] == "Mismatched elements: 1 / 27 (3.7%)"
    assert lines[2].startswith("Greatest absolute difference: ") and "at (h,k,l)=(1,-1,0)" in lines[2]
    assert "allowed" in lines[2] and lines[3].startswith("Greatest relative difference (element-wise")
    assert result.details["worst_elements"][0]["index"] == [2, 0, 1]


def test_arrays_moved_nan_is_caught():
    e = grid()
    e[0, 0, 0] = np.nan
    a = e.copy()
    a[0, 0, 0], a[1, 1, 1] = e[1, 1, 1], np.nan
    result = compare_arrays(a, e, TIGHT, locate=hkl)
    assert not result.passed
    assert result.n_mismatch == 2
    assert result.details["nan_pattern"]["mismatched"] == 2
    assert "(h,k,l)=(-1,-1,-1)" in result.message
    # A NaN in the wrong place outranks any finite difference.
    assert result.worst["index"] in ([0, 0, 0], [1, 1, 1])
    assert_json_safe(result)


def test_arrays_equal_nan_and_inf_patterns_pass():
    e = grid()
    e[0, 1, 2], e[2, 2, 2], e[1, 0, 0] = np.nan, np.inf, -np.inf
    result = compare_arrays(e.copy(), e, TIGHT)
    assert result.passed and result.details["nan_pattern"]["expected_nan"] == 1
    flipped = e.copy()
    flipped[2, 2, 2] = -np.inf
    assert not compare_arrays(flipped, e, TIGHT).passed


def test_exact_tier_off_by_one_ulp_fails():
    e = grid()
    a = e.copy()
    a[1, 2, 0] = np.nextafter(a[1, 2, 0], np.inf)
    result = compare_arrays(a, e, EXACT, name="hkl_grid")
    assert result.kind == "exact" and not result.passed and result.n_mismatch == 1
    assert result.details["ulp"]["max"] == 1


def test_exact_tier_nan_equal_and_signed_zero():
    e = np.array([0.0, np.nan, 1.5, -2.0])
    a = np.array([-0.0, np.nan, 1.5, -2.0])
    assert compare_arrays(a, e, EXACT).passed


def test_arrays_complex_and_torch_inputs():
    e = grid(complex_=True)
    # A lazily conjugated tensor: .numpy() would refuse it without resolve_conj.
    a = torch.from_numpy(e.conj().copy()).conj()
    result = compare_arrays(a, torch.from_numpy(e), TIGHT)
    assert result.passed
    assert set(result.details["ulp"]["parts"]) == {"re", "im"}
    bad = e.copy()
    bad[0, 0, 0] += 1j * 1e-6
    failed = compare_arrays(torch.from_numpy(bad), e, TIGHT)
    assert not failed.passed
    safe = failed.to_dict()
    assert set(safe["worst"]["expected"]) == {"re", "im"}
    assert_json_safe(failed)


def test_zero_expected_demands_zero_actual():
    # atol is relative to max|expected|: an all-zero expected allows nothing.
    assert not compare_arrays(np.full(4, 1e-300), np.zeros(4), TIGHT).passed
    assert compare_arrays(np.zeros(4), np.zeros(4), TIGHT).passed


def test_relative_difference_against_zero_is_inf_and_reported_as_null():
    e = np.array([0.0, 1.0])
    result = compare_arrays(np.array([1e-20, 1.0]), e, TIGHT)
    assert result.passed  # 1e-20 <= 1e-14 * max|e|
    # element-wise: 1e-20 / 0 is inf (null in JSON); normwise: 1e-20 / max|e| = 1e-20
    assert result.max_rel_elementwise == np.inf and result.to_dict()["max_rel_elementwise"] is None
    assert result.max_rel == 1e-20 and result.to_dict()["max_rel"] == 1e-20


def test_histogram_and_ulp_details():
    e = grid(shape=(10, 10))
    a = e * (1 + np.logspace(-16, -2, 100).reshape(10, 10))
    result = compare_arrays(a, e, TIGHT)
    hist = result.details["log10_rel_hist"]
    assert hist["edges"] == list(HIST_EDGES) == list(range(-17, 2))
    assert sum(hist["counts"]) == 100 and len(hist["counts"]) == len(hist["edges"]) - 1
    ulp = result.details["ulp"]
    assert 0 < ulp["median"] <= ulp["p99"] <= ulp["max"]
    assert len(result.details["worst_elements"]) == 5
    excess = [w["abs"] - w["allowed"] for w in result.details["worst_elements"]]
    assert excess == sorted(excess, reverse=True)


def test_empty_and_integer_arrays():
    empty = compare_arrays(np.zeros((0, 3)), np.zeros((0, 3)), TIGHT)
    assert empty.status == "not_comparable" and not empty.passed and empty.n_compared == 0
    ints = np.arange(6).reshape(2, 3)
    assert compare_arrays(ints, ints.copy(), EXACT).passed
    changed = ints.copy()
    changed[1, 1] += 1
    result = compare_arrays(changed, ints, EXACT)
    assert not result.passed and "ulp" not in result.details


# --------------------------------------------------------------------------
# compare_arrays: properties
# --------------------------------------------------------------------------

finite_grid = hnp.arrays(
    np.float64, hnp.array_shapes(min_dims=1, max_dims=3, max_side=5),
    elements=st.floats(-1e3, 1e3, allow_nan=False, allow_infinity=False),
)
some_tier = st.sampled_from([TIGHT, DECOMP, TIERS["gradient"], TIERS["tight_f32"], Tier("t", 1e-3, 0.0)])


@FAST
@given(e=finite_grid, tier=some_tier, data=st.data())
def test_property_error_just_under_allowance_passes_just_over_fails(e, tier, data):
    scale = np.abs(e).max()
    idx = tuple(data.draw(st.integers(0, n - 1)) for n in e.shape)
    allowed = tier.atol * scale + tier.rtol * abs(e[idx])
    assume(allowed > 1e-300)
    sign = data.draw(st.sampled_from([-1.0, 1.0]))
    under, over = e.copy(), e.copy()
    under[idx] += sign * 0.99 * allowed
    over[idx] += sign * 1.01 * allowed
    assert compare_arrays(under, e, tier).passed
    result = compare_arrays(over, e, tier)
    assert not result.passed and result.n_mismatch == 1
    assert result.worst["index"] == list(idx)


@FAST
@given(e=finite_grid, tier=some_tier, seed=st.integers(0, 2**32 - 1),
       power=st.integers(-20, 20), noise=st.sampled_from([1e-16, 1e-13, 1e-11, 1e-8, 1e-5]))
def test_property_scaling_both_arrays_keeps_verdict(e, tier, seed, power, noise):
    rng = np.random.default_rng(seed)
    a = e * (1 + noise * rng.standard_normal(e.shape))
    factor = 2.0 ** power  # a power of two scales without rounding
    base = compare_arrays(a, e, tier)
    scaled = compare_arrays(a * factor, e * factor, tier)
    assert base.passed == scaled.passed
    assert base.n_mismatch == scaled.n_mismatch


@FAST
@given(e=finite_grid, tier=some_tier, factor=st.floats(1e-3, 1e6))
def test_property_scaling_clear_cases(e, tier, factor):
    assume(np.abs(e).max() > 0)
    allowed = tier.atol * np.abs(e).max() + tier.rtol * np.abs(e)
    assume(allowed.min() > 0)
    for fraction, verdict in ((0.5, True), (2.0, False)):
        a = e + fraction * allowed
        assert compare_arrays(a * factor, e * factor, tier).passed is verdict


@FAST
@given(e=finite_grid, data=st.data())
def test_property_nan_patterns(e, data):
    mask = data.draw(hnp.arrays(np.bool_, e.shape))
    e = np.where(mask, np.nan, e)
    a = e.copy()
    same = compare_arrays(a, e, TIGHT)
    # Identical patterns pass, unless no element is left to compare numerically.
    assert same.status == ("not_comparable" if mask.all() else "pass")
    assert same.n_compared == (~mask).sum()
    assert compare_nan_pattern(a, e).passed
    assume(mask.any() and not mask.all())
    nan_at = tuple(np.argwhere(mask)[data.draw(st.integers(0, mask.sum() - 1))])
    num_at = tuple(np.argwhere(~mask)[data.draw(st.integers(0, (~mask).sum() - 1))])
    moved = e.copy()
    moved[nan_at], moved[num_at] = e[num_at], np.nan
    for result in (compare_arrays(moved, e, DECOMP), compare_nan_pattern(moved, e),
                   compare_arrays(moved, e, EXACT)):
        assert not result.passed and result.n_mismatch == 2


# --------------------------------------------------------------------------
# compare_nan_pattern
# --------------------------------------------------------------------------


def test_nan_pattern_pass_and_fail():
    e = np.array([[np.nan, 1.0], [2.0, np.inf]])
    assert compare_nan_pattern(e * 3, e).passed  # values are not compared
    a = np.array([[1.0, np.nan], [2.0, np.inf]])
    result = compare_nan_pattern(a, e, locate=lambda i: f"BZ {i}")
    assert result.kind == "nan_pattern" and not result.passed and result.n_mismatch == 2
    assert result.worst["location"] == "BZ (0, 0)"
    assert not compare_nan_pattern(np.zeros(3), np.zeros(4)).passed
    assert_json_safe(result)


# --------------------------------------------------------------------------
# ulp_distance
# --------------------------------------------------------------------------


def test_ulp_distance_examples():
    tiny = np.nextafter(0.0, 1.0)
    a = np.array([0.0, -0.0, 1.0, -tiny, 1.0, np.nan, np.nan])
    b = np.array([-0.0, tiny, np.nextafter(1.0, 2.0), tiny, 2.0, np.nan, 1.0])
    d = ulp_distance(a, b)
    assert d.dtype == np.int64
    assert d[:5].tolist() == [0, 1, 1, 2, 2**52]
    assert d[5] == 0 and d[6] == np.iinfo(np.int64).max
    assert ulp_distance(np.array([np.inf]), np.array([-np.inf]))[0] == np.iinfo(np.int64).max
    f = np.float32(1.0)
    assert ulp_distance(np.array([f]), np.array([np.nextafter(f, np.float32(2))]))[0] == 1
    with pytest.raises(TypeError):
        ulp_distance(np.zeros(2), np.zeros(2, np.float32))
    with pytest.raises(TypeError):
        ulp_distance(np.zeros(2, complex), np.zeros(2, complex))


float64s = st.floats(allow_nan=False, allow_infinity=False)


@FAST
@given(x=float64s, y=float64s)
def test_property_ulp_symmetric_and_zero_iff_equal(x, y):
    a, b = np.array([x]), np.array([y])
    d = ulp_distance(a, b)[0]
    assert d == ulp_distance(b, a)[0]
    assert (d == 0) == (x == y)
    assert d >= 0


@FAST
@given(x=float64s, toward=st.sampled_from([-np.inf, np.inf]),
       dtype=st.sampled_from([np.float64, np.float32]))
def test_property_ulp_nextafter_is_one(x, toward, dtype):
    with np.errstate(over="ignore"):  # float32 cast / step past the largest float
        a = np.array([x], dtype=dtype)
        assume(np.isfinite(a[0]))
        b = np.nextafter(a, np.array([toward], dtype=dtype))
    if a[0] == 0 and b[0] == 0:  # nextafter(-0.0, +inf) is +0.0: no step
        return
    assert ulp_distance(a, b)[0] == 1


# --------------------------------------------------------------------------
# dtypes
# --------------------------------------------------------------------------


def test_check_dtype_pass_and_fail():
    ok = check_dtype("Linv", torch.zeros(2, dtype=torch.float64), "float64")
    assert ok.passed and ok.kind == "dtype"
    bad = check_dtype("Linv", torch.zeros(2, dtype=torch.complex128), "torch.float64")
    assert not bad.passed and bad.n_mismatch == 1
    assert "Linv" in bad.message and "complex128" in bad.message and "float64" in bad.message
    assert check_dtype("kvec", np.zeros(2, np.float32), "float64").passed is False
    assert_json_safe(bad)


def model_tensors():
    return {
        "kvec": torch.zeros(2, 3, dtype=torch.float64),
        "Linv": torch.eye(3, dtype=torch.float64),
        "V": torch.zeros(3, 3, dtype=torch.complex128),
        "indices": torch.arange(4),  # integer: not audited
        "mask": torch.ones(4, dtype=torch.bool),
        "gnm_cutoff": 4.0,  # not a tensor: not audited
        "Amat": np.zeros((2, 2)),
    }


def test_audit_dtypes_passes_consistent_model():
    result = audit_dtypes(model_tensors(), "float64", "complex128", real_only=["Linv"])
    assert result.passed and result.n_total == 4 and result.kind == "dtype_audit"


def test_audit_dtypes_catches_float32_sneak_and_complex_linv():
    named = model_tensors()
    named["kvec"] = named["kvec"].float()
    named["Linv"] = named["Linv"].to(torch.complex128)
    named["V"] = named["V"].to(torch.complex64)
    result = audit_dtypes(named, "float64", "complex128", real_only=["Linv"])
    assert not result.passed and result.n_mismatch == 3
    names = [o["name"] for o in result.details["offenders"]]
    assert names == ["kvec", "Linv", "V"]
    lines = result.message.splitlines()
    assert len(lines) == 4
    assert "Linv: complex128, expected float64 (must be real)" in result.message
    assert "kvec: float32, expected float64" in result.message
    assert_json_safe(result)


# --------------------------------------------------------------------------
# Eigenspaces: helpers
# --------------------------------------------------------------------------


def random_unitary(rng, n):
    z = rng.standard_normal((n, n)) + 1j * rng.standard_normal((n, n))
    q, r = np.linalg.qr(z)
    return q * (np.diag(r) / np.abs(np.diag(r)))


def spectrum(rng, sizes, nan_first=False):
    """Eigenvalues with the given cluster sizes, ascending, well separated."""
    levels = 0.5 + np.cumsum(rng.uniform(0.2, 1.0, len(sizes)))
    values = np.repeat(levels, sizes)
    if nan_first:
        values[: sizes[0]] = np.nan  # zero modes, stored as NaN like Winv
    return values


def cluster_slices(sizes):
    edges = np.concatenate([[0], np.cumsum(sizes)])
    return [np.arange(lo, hi) for lo, hi in zip(edges[:-1], edges[1:])]


def mix_within_clusters(rng, q, sizes):
    """Random unitary mixing inside each cluster, then a random phase per vector."""
    mixed = q.copy()
    for c in cluster_slices(sizes):
        mixed[:, c] = mixed[:, c] @ random_unitary(rng, len(c))
    return mixed * np.exp(1j * rng.uniform(0, 2 * np.pi, q.shape[1]))


def rotate(q, i, j, theta, phi=0.3):
    """Unitary rotation of columns i and j by angle theta."""
    out = q.copy()
    c, s = np.cos(theta), np.sin(theta)
    out[:, i] = c * q[:, i] - s * np.exp(1j * phi) * q[:, j]
    out[:, j] = s * np.exp(-1j * phi) * q[:, i] + c * q[:, j]
    return out


def mass_weight(rng, n):
    """A well-conditioned real upper-triangular stand-in for Linv^T."""
    return np.triu(rng.uniform(-0.3, 0.3, (n, n)), 1) + np.diag(rng.uniform(0.5, 2.0, n))


cluster_sizes = st.lists(st.integers(1, 3), min_size=2, max_size=4)


# --------------------------------------------------------------------------
# Eigenspaces: examples
# --------------------------------------------------------------------------


def test_cluster_eigenvalues_orders_nan_first_then_ascending():
    values = np.array([3.0, np.nan, 1.0, 1.0 + 1e-9, np.nan, 2.0, 3.0 * (1 + 1e-7)])
    clusters = cluster_eigenvalues(values)
    assert [c.tolist() for c in clusters] == [[1, 4], [2, 3], [5], [0, 6]]
    assert [c.tolist() for c in cluster_eigenvalues(values, rel_gap=1e-10)] == [[1, 4], [2], [3], [5], [0], [6]]
    assert [c.tolist() for c in cluster_eigenvalues(values.astype(complex))] == [[1, 4], [2, 3], [5], [0, 6]]
    assert cluster_eigenvalues(np.array([])) == []
    assert [c.tolist() for c in cluster_eigenvalues(np.zeros(3))] == [[0, 1, 2]]


def test_spectral_projectors_of_orthonormal_basis_sum_to_identity():
    rng = np.random.default_rng(1)
    q = random_unitary(rng, 5)
    values = spectrum(rng, [2, 1, 2])
    projectors = spectral_projectors(values, q, cluster_eigenvalues(values))
    assert len(projectors) == 3
    np.testing.assert_allclose(sum(projectors), np.eye(5), atol=1e-13)
    for p in projectors:
        np.testing.assert_allclose(p @ p, p, atol=1e-13)
    with pytest.raises(ValueError):
        spectral_projectors(values[:4], q, [np.arange(4)])


def test_eigenspaces_with_solver_residual_pass_and_table():
    rng = np.random.default_rng(2)
    sizes = [2, 1, 3]
    values = spectrum(rng, sizes)
    q = random_unitary(rng, 6)
    d = (q * values) @ q.conj().T
    w, u = np.linalg.eigh(d)
    result = compare_eigenspaces(w, u, values, q, DECOMP, matrix=d, unitary=u,
                                 locate=lambda b: f"BZ {b}")
    assert result.passed, result.message
    (row,) = result.details["eigen_table"]
    assert row["bz"] == [] and row["cluster_sizes"] == [2, 1, 3]
    assert row["residual"] < 1e-13 and row["orthonormality"] < 1e-13
    assert result.kind == "eigenspace" and result.n_total == 1
    assert_json_safe(result)


def test_eigenspaces_residual_and_orthonormality_catch_a_bad_basis():
    rng = np.random.default_rng(3)
    values = spectrum(rng, [1, 2, 1])
    q = random_unitary(rng, 4)
    d = (q * values) @ q.conj().T
    stretched = q * 1.001  # right eigenspaces, not orthonormal
    result = compare_eigenspaces(values, q, values, q, DECOMP, matrix=d, unitary=stretched)
    assert not result.passed
    assert "orthonormality" in result.message
    crossed = rotate(q, 0, 1, 1e-3)  # orthonormal, not eigenvectors
    result = compare_eigenspaces(values, crossed, values, q, DECOMP, matrix=d, unitary=crossed)
    row = result.details["eigen_table"][0]
    assert not result.passed and row["residual"] > 1e-6


def test_eigenspaces_batched_locates_the_bad_bz_point():
    rng = np.random.default_rng(4)
    sizes = [2, 2, 1]
    batch = (2, 1, 2)
    values = np.stack([spectrum(rng, sizes, nan_first=True) for _ in range(4)]).reshape(*batch, 5)
    q = np.stack([random_unitary(rng, 5) for _ in range(4)]).reshape(*batch, 5, 5)
    m = mass_weight(rng, 5)
    expected_v = m @ q
    actual_q = np.stack([mix_within_clusters(rng, x, sizes) for x in q.reshape(4, 5, 5)]).reshape(q.shape)
    result = compare_eigenspaces(values, m @ actual_q, values, expected_v, DECOMP,
                                 locate=lambda b: "BZ (dh,dk,dl)=(%d,%d,%d)" % b)
    assert result.passed, result.message
    assert len(result.details["eigen_table"]) == 4

    bad_q = actual_q.copy()
    bad_q[1, 0, 1] = rotate(bad_q[1, 0, 1], 1, 3, 2e-3)
    result = compare_eigenspaces(values, m @ bad_q, values, expected_v, DECOMP,
                                 locate=lambda b: "BZ (dh,dk,dl)=(%d,%d,%d)" % b)
    assert not result.passed and result.n_mismatch == 1 and result.n_total == 4
    assert result.worst["location"] == "BZ (dh,dk,dl)=(1,0,1)"
    assert "BZ (dh,dk,dl)=(1,0,1)" in result.message
    assert compare_full_product(m @ bad_q, expected_v, DECOMP).passed


def test_eigenspaces_clustering_mismatch_fails():
    rng = np.random.default_rng(5)
    values = spectrum(rng, [3, 1])
    q = random_unitary(rng, 4)
    split = values.copy()
    split[1] *= 1 + 1e-3  # breaks the 3-fold cluster in the actual result
    result = compare_eigenspaces(split, q, values, q, DECOMP)
    assert not result.passed
    assert "clustering differs" in result.message
    assert result.details["eigen_table"][0]["clustering_match"] is False


def test_eigenspaces_nan_mode_moved_fails():
    rng = np.random.default_rng(6)
    values = spectrum(rng, [2, 1, 1], nan_first=True)
    q = random_unitary(rng, 4)
    moved = values.copy()
    moved[1] = values[2]
    result = compare_eigenspaces(moved, q, values, q, DECOMP)
    assert not result.passed and not result.details["values"]["passed"]


def test_eigenspaces_shape_and_argument_errors():
    rng = np.random.default_rng(7)
    values = spectrum(rng, [1, 1, 1])
    q = random_unitary(rng, 3)
    assert not compare_eigenspaces(values[:2], q, values, q, DECOMP).passed
    assert not compare_eigenspaces(values, q[:, :2], values, q, DECOMP).passed
    with pytest.raises(ValueError):
        compare_eigenspaces(values, q, values, q, DECOMP, matrix=q)
    with pytest.raises(ValueError):  # expected vectors (3, 2) do not match 3 values
        compare_eigenspaces(values, q, values, q[:, :2], DECOMP)


def test_eigenspaces_accept_torch():
    rng = np.random.default_rng(8)
    values = spectrum(rng, [2, 2])
    q = random_unitary(rng, 4)
    result = compare_eigenspaces(torch.from_numpy(values), torch.from_numpy(mix_within_clusters(rng, q, [2, 2])),
                                 values, q, DECOMP)
    assert result.passed, result.message


# --------------------------------------------------------------------------
# Eigenspaces: properties
# --------------------------------------------------------------------------


@FAST
@given(sizes=cluster_sizes, seed=st.integers(0, 2**32 - 1), nan_first=st.booleans(),
       weighted=st.booleans())
def test_property_projectors_invariant_under_phases_and_mixing(sizes, seed, nan_first, weighted):
    rng = np.random.default_rng(seed)
    n = sum(sizes)
    values = spectrum(rng, sizes, nan_first)
    q = random_unitary(rng, n)
    m = mass_weight(rng, n) if weighted else np.eye(n)
    mixed = mix_within_clusters(rng, q, sizes)
    # The eigen-equation check needs a finite spectrum (NaN marks zero modes).
    kwargs = {} if nan_first else {"matrix": (q * values) @ q.conj().T, "unitary": mixed}
    result = compare_eigenspaces(values, m @ mixed, values, m @ q, DECOMP, **kwargs)
    assert result.passed, result.message
    assert [row["cluster_sizes"] for row in result.details["eigen_table"]] == [sizes]


@FAST
@given(sizes=cluster_sizes, seed=st.integers(0, 2**32 - 1), theta=st.floats(1e-3, np.pi / 2),
       weighted=st.booleans(), data=st.data())
def test_property_cross_cluster_mixing_is_caught_but_full_product_misses_it(sizes, seed, theta,
                                                                             weighted, data):
    rng = np.random.default_rng(seed)
    n = sum(sizes)
    values = spectrum(rng, sizes)
    q = random_unitary(rng, n)
    m = mass_weight(rng, n) if weighted else np.eye(n)
    slices = cluster_slices(sizes)
    a, b = data.draw(st.lists(st.integers(0, len(sizes) - 1), min_size=2, max_size=2, unique=True))
    i = int(data.draw(st.sampled_from(slices[a].tolist())))
    j = int(data.draw(st.sampled_from(slices[b].tolist())))
    crossed = rotate(mix_within_clusters(rng, q, sizes), i, j, theta)
    eig = compare_eigenspaces(values, m @ crossed, values, m @ q, DECOMP)
    assert not eig.passed
    assert eig.max_rel > 1e-6
    full = compare_full_product(m @ crossed, m @ q, DECOMP)
    assert full.passed and full.kind == "full_product"


def _pair_rotated(values, angle, i=0, j=1, seed=3):
    """Orthonormal eigenvectors of a random Hermitian basis with modes i, j rotated by angle."""
    rng = np.random.default_rng(seed)
    n = len(values)
    Q, _ = np.linalg.qr(rng.normal(size=(n, n)) + 1j * rng.normal(size=(n, n)))
    R = Q.copy()
    c, s = np.cos(angle), np.sin(angle)
    R[:, i], R[:, j] = c * Q[:, i] + s * Q[:, j], -s * Q[:, i] + c * Q[:, j]
    return Q, R


def test_projector_allowance_grows_only_for_near_degenerate_clusters():
    from parity.comparison.engine import compare_eigenspaces
    from parity.contract.tiers import TIERS

    tier = TIERS["decomposition"]  # 1e-10
    close = np.array([1.0, 1.0 + 1e-5, 2.0, 3.0])  # relative gap 1e-5: allowance 1e-9
    far = np.array([1.0, 1.5, 2.0, 3.0])  # relative gap 0.33: allowance 1e-10
    for values, angle, ok in ((close, 2e-10, True), (close, 1e-7, False), (close, 1e-3, False),
                              (far, 2e-10, False), (far, 1e-12, True)):
        Q, R = _pair_rotated(values, angle)
        result = compare_eigenspaces(values, R, values, Q, tier)
        assert result.passed is ok, (values, angle, result.message)


# --------------------------------------------------------------------------
# No vacuous passes: a comparison passes only when it compared something
# --------------------------------------------------------------------------


@pytest.mark.parametrize("actual, expected, why", [
    (np.full((3, 4), np.nan), np.full((3, 4), np.nan), "NaN/inf in both"),
    (np.array(np.nan), np.array(np.nan), "NaN/inf in both"),  # 0-d
    (np.zeros((0, 3)), np.zeros((0, 3)), "empty"),
    (np.full(5, np.inf), np.full(5, np.inf), "NaN/inf in both"),
    (np.full(2, np.nan + 1j * np.nan), np.full(2, np.nan + 1j * np.nan), "NaN/inf in both"),
])
@pytest.mark.parametrize("tier", [TIGHT, EXACT], ids=["tight", "exact"])
def test_nothing_finite_to_compare_is_not_comparable(actual, expected, why, tier):
    result = compare_arrays(actual, expected, tier, name="Id")
    assert result.status == "not_comparable" and not result.passed and not result.comparable
    assert result.n_compared == 0 and why in result.reason
    assert result.message.startswith("Id: not comparable: ")
    safe = result.to_dict()
    assert safe["status"] == "not_comparable" and safe["passed"] is False and safe["n_compared"] == 0
    assert_json_safe(result)


def test_a_nan_where_a_number_is_expected_still_fails_even_with_nothing_finite():
    e = np.array([np.nan, 1.0])
    a = np.array([np.nan, np.nan])
    result = compare_arrays(a, e, TIGHT)
    assert result.status == "fail" and result.n_compared == 0


def test_n_compared_counts_the_elements_finite_in_both():
    e = np.array([1.0, np.nan, 3.0, np.inf, 5.0])
    result = compare_arrays(e.copy(), e, TIGHT)
    assert result.status == "pass" and result.n_compared == 3 and result.n_total == 5
    assert result.details["n_compared"] == 3 and "3 of 5 elements compared" in result.message


def test_require_nonzero_makes_a_vanished_quantity_not_comparable():
    zeros = np.zeros((2, 3))
    assert compare_arrays(zeros, zeros, TIGHT).status == "pass"  # by default zero == zero
    result = compare_arrays(zeros, zeros.copy(), TIGHT, name="Id_cluster_last", require_nonzero=True)
    assert result.status == "not_comparable" and "exactly zero in both" in result.reason
    with_nan = np.array([0.0, np.nan, 0.0])
    assert compare_arrays(with_nan, with_nan.copy(), TIGHT, require_nonzero=True).status == "not_comparable"
    # A real difference is still a failure, and a non-zero pair is compared.
    assert compare_arrays(np.array([0.0, 1e-3]), zeros[0, :2], TIGHT, require_nonzero=True).status == "fail"
    assert compare_arrays(zeros[0, :2], np.array([0.0, 1.0]), TIGHT, require_nonzero=True).status == "fail"
    assert compare_arrays(np.array([0.0, 1.0]), np.array([0.0, 1.0]), TIGHT,
                          require_nonzero=True).status == "pass"


def test_comparison_outcome_is_consistent():
    with pytest.raises(ValueError, match="reason"):
        Comparison(kind="array", passed=True, comparable=False)
    forced = Comparison(kind="array", passed=True, comparable=False, reason="nothing")
    assert forced.passed is False and forced.status == "not_comparable"
    assert Comparison(kind="array", passed=True).status == "pass"
    assert Comparison(kind="array", passed=False).status == "fail"
    assert set(STATUSES) == {"pass", "fail", "not_comparable"}


def test_nan_pattern_of_empty_arrays_is_not_comparable():
    assert compare_nan_pattern(np.zeros(0), np.zeros(0)).status == "not_comparable"
    assert compare_nan_pattern(np.full(3, np.nan), np.full(3, np.nan)).n_compared == 3


def test_dtype_audit_of_nothing_is_not_comparable():
    result = audit_dtypes({"n": 3, "idx": torch.arange(3)}, "float64", "complex128")
    assert result.status == "not_comparable" and "no floating tensor" in result.reason
    assert audit_dtypes(model_tensors(), "float64", "complex128").n_compared == 4


def test_invariant_result_needs_something_checked():
    assert invariant_result("friedel", 1e-12, 1e-9, n_compared=10, message="m").status == "pass"
    assert invariant_result("friedel", 1e-6, 1e-9, n_compared=10, message="m").status == "fail"
    assert invariant_result("friedel", float("nan"), 1e-9, n_compared=10, message="m").status == "fail"
    empty = invariant_result("Id_nonnegative", 0.0, 1e-13, n_compared=0,
                             message="no finite Id off the Bragg points")
    assert empty.status == "not_comparable" and empty.reason == "no finite Id off the Bragg points"


def test_eigenspaces_with_only_nan_eigenvalues_are_not_comparable():
    rng = np.random.default_rng(11)
    q = random_unitary(rng, 3)
    nan = np.full(3, np.nan)  # every mode a zero mode: only the blind projector onto all modes
    result = compare_eigenspaces(nan, q, nan, mix_within_clusters(rng, q, [3]), DECOMP)
    assert result.status == "not_comparable" and result.n_compared == 0
    assert "no finite eigenvalue cluster" in result.reason
    batch = compare_eigenspaces(np.zeros((0, 3)), np.zeros((0, 3, 3)), np.zeros((0, 3)),
                                np.zeros((0, 3, 3)), DECOMP)
    assert batch.status == "not_comparable"
    values = spectrum(rng, [1, 2], nan_first=True)  # one zero mode, one finite 2-fold cluster
    ok = compare_eigenspaces(values, q, values, q, DECOMP)
    assert ok.status == "pass" and ok.n_compared == 1


# --------------------------------------------------------------------------
# NaN/inf hiding in the eigenspace check
# --------------------------------------------------------------------------


def _corrupt(values, vectors, variant):
    """Actual eigen-data with one kind of non-finite value outside the zero-mode pattern."""
    w, v = values.copy(), vectors.copy()
    if variant == "vectors_all_nan":
        v[...] = np.nan
    elif variant == "vector_one_nan":
        v[1, 0, 1][2, 3] = np.nan
    elif variant == "vector_one_inf":
        v[1, 0, 1][0, 3] = np.inf
    elif variant == "value_nan_outside_pattern":
        w[1, 0, 1][3] = np.nan
    elif variant == "value_inf":
        w[1, 0, 1][3] = np.inf
    return w, v


NONFINITE_VARIANTS = ["vectors_all_nan", "vector_one_nan", "vector_one_inf", "value_nan_outside_pattern",
                      "value_inf"]


@pytest.mark.parametrize("with_matrix", [False, True], ids=["crossfeed_path", "with_matrix"])
@pytest.mark.parametrize("variant", NONFINITE_VARIANTS)
@pytest.mark.parametrize("side", ["actual", "expected"])
def test_eigenspaces_nonfinite_outside_the_zero_mode_pattern_fails(variant, with_matrix, side):
    rng = np.random.default_rng(12)
    sizes = [1, 2, 1]
    batch = (2, 1, 2)
    values = np.stack([spectrum(rng, sizes, nan_first=True) for _ in range(4)]).reshape(*batch, 4)
    q = np.stack([random_unitary(rng, 4) for _ in range(4)]).reshape(*batch, 4, 4)
    finite = np.where(np.isnan(values), 1.0, values)  # D's eigenvalues (zero modes: any finite value)
    matrix = np.einsum("...ij,...j,...kj->...ik", q, finite, q.conj())
    bad_w, bad_q = _corrupt(values, q, variant)
    locate = lambda b: "BZ (dh,dk,dl)=(%d,%d,%d)" % b  # noqa: E731
    if side == "actual":
        args = (bad_w, bad_q, values, q)
    else:
        args = (values, q, bad_w, bad_q)
    kwargs = dict(matrix=matrix, unitary=args[1]) if with_matrix else {}
    with np.errstate(invalid="ignore", over="ignore"):
        result = compare_eigenspaces(*args, DECOMP, locate=locate, **kwargs)
    assert result.status == "fail", result.message
    assert "BZ (dh,dk,dl)=(" in result.message
    if variant != "vectors_all_nan":  # one bad batch item, named
        assert result.n_mismatch == 1 and result.worst["location"] == "BZ (dh,dk,dl)=(1,0,1)"
        assert "BZ (dh,dk,dl)=(1,0,1)" in result.message and "mode 3" in result.message
    word = "inf" if "inf" in variant else "NaN"
    assert word in result.message
    assert_json_safe(result)


@pytest.mark.parametrize("with_matrix", [False, True], ids=["crossfeed_path", "with_matrix"])
def test_eigenspaces_inf_eigenvalue_on_both_sides_fails(with_matrix):
    """An identical non-finite pattern is not enough: only NaN marks a zero mode."""
    rng = np.random.default_rng(14)
    values = spectrum(rng, [1, 1, 2])
    q = random_unitary(rng, 4)
    kwargs = dict(matrix=(q * values) @ q.conj().T, unitary=q) if with_matrix else {}
    values[1] = np.inf
    result = compare_eigenspaces(values, q, values.copy(), q, DECOMP, locate=lambda b: "BZ 0", **kwargs)
    assert result.status == "fail"
    assert "eigenvalue inf at BZ 0 mode 1" in result.message and "only NaN" in result.message


def test_eigenspaces_zero_mode_pattern_itself_passes():
    """NaN eigenvalue at the same place on both sides, with finite vectors: a zero mode, fine."""
    rng = np.random.default_rng(13)
    values = spectrum(rng, [2, 1, 1], nan_first=True)
    q = random_unitary(rng, 4)
    result = compare_eigenspaces(values, mix_within_clusters(rng, q, [2, 1, 1]), values, q, DECOMP)
    assert result.status == "pass", result.message
    assert result.details["eigen_table"][0]["nonfinite"] == []


# --------------------------------------------------------------------------
# One way to say "relative error"; ties; ULPs
# --------------------------------------------------------------------------


def test_normwise_and_elementwise_relative_errors_are_both_reported_and_labelled():
    e = np.array([1.0, 1e-3, -2.0])
    a = np.array([1.0 + 1e-3, 2e-3, -2.0])
    result = compare_arrays(a, e, TIGHT, name="Id")
    assert result.max_abs == pytest.approx(1e-3)
    assert result.max_rel == pytest.approx(1e-3 / 2.0)  # max|a-e| / max|e|
    assert result.max_rel_elementwise == pytest.approx(1.0)  # max |a-e| / |e|, at index 1
    assert result.details["scale"] == 2.0
    text = result.message
    assert "Greatest relative difference (element-wise, |a-e|/|e|): 1 at index (1)" in text
    assert "Normwise relative difference (max|a-e|/max|e|): 0.0005 (max|e| = 2)" in text
    ok = compare_arrays(e.copy(), e, TIGHT)
    assert NORMWISE in ok.message and ELEMENTWISE in ok.message
    safe = result.to_dict()
    assert safe["max_rel"] == pytest.approx(5e-4) and safe["max_rel_elementwise"] == pytest.approx(1.0)


def test_ties_go_to_the_first_index_in_c_order_everywhere():
    e = np.ones((4, 5))
    a = e + 1e-3  # every element off by the same amount: all tied
    result = compare_arrays(a, e, TIGHT, n_worst=3)
    assert result.worst["index"] == [0, 0]
    assert [w["index"] for w in result.details["worst_elements"]] == [[0, 0], [0, 1], [0, 2]]
    assert "at index (0, 0)" in result.message.splitlines()[2]
    assert "Worst element" not in result.message  # it is the greatest-difference element


@pytest.mark.parametrize("seed", range(8))
def test_ties_among_many_elements_keep_c_order(seed):
    rng = np.random.default_rng(seed)
    e = np.ones(300)
    a = e + rng.choice([1e-3, 2e-3, 3e-3], size=e.size)  # many exact ties in |a - e|
    result = compare_arrays(a, e, TIGHT, n_worst=4)
    diff = np.abs(a - e)
    want = np.argsort(-diff, kind="stable")[:4]  # largest first, ties by index
    assert [w["index"][0] for w in result.details["worst_elements"]] == want.tolist()
    assert result.worst["index"] == [int(want[0])] == [int(np.argmax(diff))]


def test_tied_nan_mismatches_name_the_same_element_in_worst_and_message():
    e = grid(shape=(6, 6))
    a = e.copy()
    for idx in [(5, 5), (4, 1), (0, 3), (2, 2), (3, 0), (1, 4), (0, 5)]:  # all tied at excess +inf
        a[idx] = np.nan
    result = compare_arrays(a, e, TIGHT, n_worst=2, locate=hkl)
    first = result.details["nan_pattern"]["first"][0]
    assert result.worst["index"] == first["index"] == [0, 3]
    assert result.worst["location"] in result.message.splitlines()[2]
    assert [w["index"] for w in result.details["worst_elements"]] == [[0, 3], [0, 5]]


def test_worst_element_line_when_it_is_not_the_greatest_difference():
    e = np.array([1000.0, 1.0])
    # The large element is off by more but within its allowance (rtol * 1000); the small one fails.
    a = np.array([1000.0 + 5e-4, 1.0 + 1e-5])
    result = compare_arrays(a, e, Tier("t", 1e-6, 1e-15))
    assert not result.passed and result.n_mismatch == 1 and result.worst["index"] == [1]
    assert "Greatest absolute difference: 0.0005 at index (0)" in result.message
    assert "Worst element (largest excess over its allowance): index (1)" in result.message


def test_ulp_counts_are_printed_readably():
    assert format_ulp({"median": 1.0, "p99": 3.0, "max": 1234}) == \
        "median 1 ulp, 99th percentile 3 ulp, max 1.2e3 ulp"
    assert format_ulp({"median": 0.5, "p99": 2.4, "max": 45_000_000_000_000, "dtype": "float32"}) == \
        "median 0.5 ulp, 99th percentile 2.4 ulp, max 4.5e13 ulp (ulps of float32)"
    assert format_ulp(None) == "" and format_ulp({}) == ""
    e = grid()
    a = e.copy()
    a[0, 0, 0] = np.nextafter(np.nextafter(a[0, 0, 0], np.inf), np.inf)
    result = compare_arrays(a, e, EXACT)
    assert "ULP distance over the compared elements: median 0 ulp, 99th percentile" in result.message
    assert "max 2 ulp (ulps of float64)" in result.message


def test_format_errors_labels_each_figure():
    text = format_errors(1e-3, 5e-4, 1.0)
    assert text == f"max abs err 0.001, {NORMWISE} 0.0005, {ELEMENTWISE} 1"


# --------------------------------------------------------------------------
# Size scaling: n_terms
# --------------------------------------------------------------------------


def test_n_terms_scales_atol_by_the_summation_bound():
    e = grid(shape=(10, 10))
    eps = np.finfo(np.float64).eps
    n = 84_644
    off = e.copy()
    off[3, 3] += 0.5 * n * eps * np.abs(e).max()  # within n eps max|e|, far outside the tight tier
    assert not compare_arrays(off, e, TIGHT).passed
    scaled = compare_arrays(off, e, TIGHT, n_terms=n)
    assert scaled.passed and scaled.details["tier"]["n_terms"] == n
    assert scaled.details["tier"]["atol"] == pytest.approx(n * eps)
    assert f"scaled for {n} summed terms" in scaled.message
    real = e * (1 + 1e-10)  # a genuine 1e-10 relative error is far above the bound
    assert not compare_arrays(real, e, TIGHT, n_terms=n).passed
    # Small sums keep the measured tier; the exact tier stays bitwise.
    assert compare_arrays(off, e, TIGHT, n_terms=10).details["tier"]["atol"] == TIGHT.atol
    assert not compare_arrays(off, e, EXACT, n_terms=n).passed


def test_n_terms_uses_the_working_precision():
    e = grid(shape=(10, 10))
    a = (e * (1 + 3e-6)).astype(np.float32)
    tier = Tier("f", 0.0, 1e-6)
    assert not compare_arrays(a, e, tier).passed
    assert compare_arrays(a, e, tier, n_terms=100).passed  # 100 * eps32 = 1.2e-5
    assert compare_arrays(a, e, tier, n_terms=100).details["tier"]["atol"] == pytest.approx(
        100 * np.finfo(np.float32).eps)


def test_n_terms_bound_above_one_is_not_comparable():
    e = grid(shape=(3,)).astype(np.float32)
    result = compare_arrays(e, e, TIGHT, n_terms=10**8)
    assert result.status == "not_comparable" and "lose every digit" in result.reason
    eig = compare_eigenspaces(np.array([1.0, 2.0]), np.eye(2), np.array([1.0, 2.0]), np.eye(2),
                              DECOMP, n_terms=10**17)
    assert eig.status == "not_comparable"


def test_eigenspaces_take_n_terms():
    values = np.array([1.0, 2.0, 3.0])
    q, r = _pair_rotated(values, 1e-9, seed=4)  # projector error ~1e-9: above DECOMP's 1e-10
    assert not compare_eigenspaces(values, r, values, q, DECOMP).passed
    result = compare_eigenspaces(values, r, values, q, DECOMP, n_terms=10**8)  # 2.2e-8
    assert result.passed, result.message
    assert result.details["tier"]["n_terms"] == 10**8
