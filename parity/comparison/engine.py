"""Comparison engine: one place that decides whether two results agree.

Everything here is pure NumPy. Torch tensors are accepted anywhere an array
is (converted with ``.detach().cpu().numpy()``), so the engine never needs a
device. Every function returns a :class:`Comparison`, never raises on a
*mismatch* (shape, dtype, NaN pattern ...): a failure is a result to report.
Exceptions are kept for programming errors (bad arguments).

A comparison has three outcomes (:attr:`Comparison.status`): ``"pass"``,
``"fail"``, and ``"not_comparable"`` when nothing was compared numerically (both
arrays entirely NaN, empty, all zero under ``require_nonzero``, eigenvalues all
NaN): a comparison passes only when it compared something.

Tolerance semantics are those of :mod:`parity.contract.tiers`: an element passes iff
``|actual - expected| <= atol * scale + rtol * |expected|`` with
``scale = max |expected|`` over the elements finite in both. The figures are
defined once (:mod:`parity.comparison.common`): ``max_rel`` is normwise
(``max|a-e|/max|e|``), ``max_rel_elementwise`` element-wise (``max |a-e|/|e|``),
the worst element is the largest excess over its allowance (ties: the first
index in C order).

Eigenvectors are compared through the spectral projector of each eigenvalue
cluster (see ALGORITHM.md section 7): solvers agree on eigenvectors only up to
a phase per vector and a unitary mixing inside each degenerate eigenspace, and
the full product ``V V^H`` is blind to the eigenvectors altogether.

This module is the facade; the implementations live in :mod:`parity.comparison`
(``common``, ``arrays``, ``eigenspaces``, ``dtypes``).
"""

from __future__ import annotations

from parity.comparison.arrays import HIST_EDGES, compare_arrays, compare_nan_pattern, ulp_distance
from parity.comparison.common import (
    ELEMENTWISE,
    NORMWISE,
    STATUSES,
    Comparison,
    Locate,
    as_numpy,
    format_errors,
    format_ulp,
    invariant_result,
    normwise_rel,
    not_comparable,
    working_eps,
)
from parity.comparison.dtypes import audit_dtypes, check_dtype
from parity.comparison.eigenspaces import (
    GAP_REFERENCE,
    cluster_eigenvalues,
    compare_eigenspaces,
    compare_full_product,
    spectral_projectors,
)

__all__ = [
    "Comparison",
    "STATUSES",
    "NORMWISE",
    "ELEMENTWISE",
    "HIST_EDGES",
    "GAP_REFERENCE",
    "Locate",
    "as_numpy",
    "normwise_rel",
    "format_errors",
    "format_ulp",
    "working_eps",
    "not_comparable",
    "invariant_result",
    "compare_arrays",
    "compare_nan_pattern",
    "ulp_distance",
    "check_dtype",
    "audit_dtypes",
    "cluster_eigenvalues",
    "spectral_projectors",
    "compare_eigenspaces",
    "compare_full_product",
]
