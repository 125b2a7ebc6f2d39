"""Divergence signatures: say *why* a failing stage diverges, not only how much.

The comparison engine (:mod:`parity.comparison.engine`) says that and where two results
differ. The diagnosis takes the same (reference, candidate) pair and tests a library of
hypotheses a person would otherwise try by hand with debug prints: a constant factor, a
transpose or conjugate, an index shift or permutation, a round-off of a narrower float
format, a different NaN/inf pattern, a buffer that accumulates, an error confined to a
subset, eigenvectors rotated across clusters. Each hypothesis ``T`` is *applied* to the
reference and judged by the stage's own tolerance tier::

    |candidate - T(reference)| <= atol * max|T(reference)| + rtol * |T(reference)|

A :class:`Signature` is reported as explaining the difference only when that holds for
every compared element (``explains=True``; its ``residual`` is
``max|candidate - T(reference)| / max|T(reference)|``). Near-explanations (a transform
that removes at least 99 % of the error but not all of it) are reported with
``explains=False`` and their residual; when nothing explains, :func:`summary_phrase`
says ``"no simple signature"``.

Everything is pure NumPy (no torch), never raises on odd input (a bug in here becomes a
non-explaining ``"internal_error"`` signature, never an exception in the run), never
modifies its inputs and takes no verdict: it only describes. Big arrays are screened on a
deterministic sample (plus their worst elements) and every claimed match is verified on
the whole array; a run that hits its time budget stops testing, says so in
``params["cut_short"]``, and never turns an unverified hypothesis into a match.

This module is the package's front door (the names below have always been imported from
here); the work is done in:

- :mod:`parity.diagnosis.engine`: the pair, the transforms, how a hypothesis is screened and scored;
- :mod:`parity.diagnosis.hypotheses`: one module per hypothesis family;
- :mod:`parity.diagnosis.registry`: the ordered table of families (adding one is one file and one entry);
- :mod:`parity.diagnosis.arrays`: ``diagnose_arrays`` / ``diagnose_gradient``, which run the table;
- :mod:`parity.diagnosis.eigen`: ``diagnose_eigenspaces``;
- :mod:`parity.diagnosis.figures` and :mod:`parity.diagnosis.drawings`: ``figure``.

Public API
----------
Signature
diagnose_arrays(expected, actual, tier, *, axes, grid_shape, matrix_axes, subsets, time_budget_s)
diagnose_eigenspaces(expected_values, expected_vectors, actual_values, actual_vectors, tier, *, rel_gap, ...)
diagnose_gradient(expected, actual, tier)
summary_phrase(signatures) -> str
figure(signature, expected, actual) -> str | None
"""
from __future__ import annotations

# The tuning constants, simple_expression and _cluster_labels (tests use it) stay importable
# from here too, as before the split.
from parity.diagnosis.arrays import diagnose_arrays, diagnose_gradient
from parity.diagnosis.eigen import MAX_MIXED_FRACTION, _cluster_labels, diagnose_eigenspaces  # noqa: F401
from parity.diagnosis.engine import MIN_ELEMENTS_FOR_FREE_FACTOR, N_PROBE, N_SAMPLE, N_WORST, NEAR  # noqa: F401
from parity.diagnosis.expressions import simple_expression  # noqa: F401
from parity.diagnosis.figures import figure
from parity.diagnosis.hypotheses.accumulation import ACCUMULATION_STRIDES  # noqa: F401
from parity.diagnosis.hypotheses.permutation import MAX_PERMUTATION_AXIS, N_FEATURES  # noqa: F401
from parity.diagnosis.hypotheses.precision import (CAST_ALLOWANCE_U, FORMATS,  # noqa: F401
                                                   MIN_ELEMENTS_FOR_PRECISION, ROUNDOFF_BAND_U,
                                                   ROUNDOFF_MIN_SPREAD, ROUNDOFF_P99_U)
from parity.diagnosis.hypotheses.shift import SHIFTS  # noqa: F401
from parity.diagnosis.result import NO_SIGNATURE, Signature, summary_phrase

__all__ = [
    "Signature",
    "NO_SIGNATURE",
    "diagnose_arrays",
    "diagnose_eigenspaces",
    "diagnose_gradient",
    "summary_phrase",
    "figure",
]
