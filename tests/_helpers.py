"""Assertion helpers shared by the model tests (independent of the harness under test)."""
from __future__ import annotations

import numpy as np

CLUSTER_GAP = 1e-6


def np_(x):
    """A torch tensor or array-like as a NumPy array."""
    if hasattr(x, "detach"):
        return x.detach().cpu().resolve_conj().numpy()
    return np.asarray(x)


def assert_rel(actual, expected, tol, what=""):
    """Same shape, identical NaN pattern, max|a - e| <= tol * max|e| over finite entries."""
    actual, expected = np_(actual), np_(expected)
    assert actual.shape == expected.shape, f"{what}: shape {actual.shape} != {expected.shape}"
    nan_a, nan_e = np.isnan(actual), np.isnan(expected)
    assert np.array_equal(nan_a, nan_e), (
        f"{what}: NaN pattern differs ({nan_a.sum()} vs {nan_e.sum()} NaN, "
        f"{(nan_a != nan_e).sum()} mismatched)")
    finite = ~nan_e
    assert np.isfinite(actual[finite]).all() and np.isfinite(expected[finite]).all(), f"{what}: inf"
    if not finite.any():
        return
    scale = np.abs(expected[finite]).max()
    err = np.abs(actual[finite] - expected[finite]).max()
    assert err <= tol * scale, f"{what}: max abs err {err:.3g} = {err / scale:.3g} of max|expected| > {tol:g}"


def cluster_of(winv, r, gap=CLUSTER_GAP):
    """Indices of the eigenvalue cluster holding mode r (relative gap on Winv).

    A zero mode (NaN) is its own cluster, as in the goldens' cluster sizes.
    """
    w = np.real(np_(winv))
    if not np.isfinite(w[r]):
        return np.array([r])
    finite = np.flatnonzero(np.isfinite(w))
    order = finite[np.argsort(w[finite], kind="stable")]
    v = w[order]
    rel = np.diff(v) / np.maximum(np.abs(v[1:]), np.abs(v[:-1]))
    for group in np.split(order, np.flatnonzero(rel > gap) + 1):
        if r in group:
            return np.sort(group)
    raise AssertionError("unreachable")
