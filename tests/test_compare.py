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

from parity.compare import (
    HIST_EDGES,
    Comparison,
    audit_dtypes,
    check_dtype,
    cluster_eigenvalues,
    compare_arrays,
    compare_eigenspaces,
    compare_full_product,
    compare_nan_pattern,
    spectral_projectors,
    ulp_distance,
)
from parity.tiers import TIERS, Tier

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
    assert "allowed" in lines[2] and lines[3].startswith("Greatest relative difference: ")
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
    assert result.max_rel == np.inf and result.to_dict()["max_rel"] is None


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
    assert compare_arrays(np.zeros((0, 3)), np.zeros((0, 3)), TIGHT).passed
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
    assert compare_arrays(a, e, TIGHT).passed
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
    from parity.compare import compare_eigenspaces
    from parity.tiers import TIERS

    tier = TIERS["decomposition"]  # 1e-10
    close = np.array([1.0, 1.0 + 1e-5, 2.0, 3.0])  # relative gap 1e-5: allowance 1e-9
    far = np.array([1.0, 1.5, 2.0, 3.0])  # relative gap 0.33: allowance 1e-10
    for values, angle, ok in ((close, 2e-10, True), (close, 1e-7, False), (close, 1e-3, False),
                              (far, 2e-10, False), (far, 1e-12, True)):
        Q, R = _pair_rotated(values, angle)
        result = compare_eigenspaces(values, R, values, Q, tier)
        assert result.passed is ok, (values, angle, result.message)
