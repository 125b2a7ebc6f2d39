"""Array comparisons: element-wise under a tier, NaN/inf patterns, ULP distances.

An element passes iff ``|actual - expected| <= atol * scale + rtol * |expected|``
with ``scale = max |expected|`` over the elements finite in both (see
:mod:`parity.contract.tiers`). Non-finite elements are never compared numerically: their
pattern must be identical. A comparison with no element finite in both is
``not_comparable``, never a pass.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from parity.contract.values import nonfinite_code

from parity.comparison.comparator import Comparator, RunView, Setting
from parity.contract.tiers import Tier
from parity.comparison.common import (
    Comparison,
    Locate,
    _label,
    _scalar,
    _where,
    as_numpy,
    failure_message,
    format_errors,
    format_ulp,
    greatest,
    normwise_rel,
    not_comparable,
    working_eps,
)

__all__ = [
    "ArrayKind",
    "ExactKind",
    "GradientKind",
    "HIST_EDGES",
    "compare_arrays",
    "compare_nan_pattern",
    "ulp_distance",
]

#: Fixed bin edges of ``details["log10_rel_hist"]`` (log10 of the relative
#: difference, clipped into [-17, 1]): fixed so histograms of different runs compare.
HIST_EDGES: tuple[int, ...] = tuple(range(-17, 2))

if TYPE_CHECKING:  # pragma: no cover
    from parity.stages import Stage

# How many non-finite-pattern mismatches are named in messages/details.
_N_FIRST = 5


# --------------------------------------------------------------------------
# Non-finite pattern
# --------------------------------------------------------------------------






def _pattern_details(actual: np.ndarray, expected: np.ndarray, mismatch: np.ndarray,
                     locate: Locate | None) -> dict:
    """``details["nan_pattern"]``: counts plus the first few mismatched positions (C order)."""
    first = [
        {"index": list(map(int, idx)), "location": _where(locate, idx),
         "expected": _scalar(expected[idx]), "actual": _scalar(actual[idx])}
        for idx in map(tuple, np.argwhere(mismatch)[:_N_FIRST])
    ]
    return {
        "expected_nan": int(np.count_nonzero(np.isnan(expected))),
        "actual_nan": int(np.count_nonzero(np.isnan(actual))),
        "expected_inf": int(np.count_nonzero(np.isinf(expected))),
        "actual_inf": int(np.count_nonzero(np.isinf(actual))),
        "mismatched": int(np.count_nonzero(mismatch)),
        "first": first,
    }


def _pattern_line(details: dict) -> str:
    first = details["first"][0]
    return (f"Non-finite (NaN/inf) pattern differs at {details['mismatched']} element(s), "
            f"first at {first['location']}: expected {first['expected']}, actual {first['actual']}")


# --------------------------------------------------------------------------
# Pre-checks shared by the array comparisons
# --------------------------------------------------------------------------


def _whole_failure(kind: str, expected: np.ndarray, message: str, details: dict) -> Comparison:
    """A failure of the whole array (every element counts as mismatched, none compared)."""
    return Comparison(kind=kind, passed=False, n_mismatch=int(expected.size), n_total=int(expected.size),
                      message=message, details=details, n_compared=0)


def _shape_failure(kind: str, name: str, actual: np.ndarray, expected: np.ndarray,
                   what: str = "shape") -> Comparison:
    return _whole_failure(kind, expected,
                          f"{_label(name, 'array')}: {what} mismatch: actual {tuple(actual.shape)} "
                          f"vs expected {tuple(expected.shape)}",
                          {"shape": {"actual": list(actual.shape), "expected": list(expected.shape)}})


def _class_failure(kind: str, name: str, actual: np.ndarray, expected: np.ndarray) -> Comparison | None:
    """Fail real-vs-complex (and non-numeric) inputs; None when the classes agree."""
    fam_a = "complex" if np.iscomplexobj(actual) else "real"
    fam_e = "complex" if np.iscomplexobj(expected) else "real"
    numeric = all(np.issubdtype(x.dtype, np.number) or x.dtype == np.bool_ for x in (actual, expected))
    if fam_a == fam_e and numeric:
        return None
    reason = "dtype class mismatch" if numeric else "non-numeric dtype"
    return _whole_failure(kind, expected,
                          f"{_label(name, 'array')}: {reason}: actual {actual.dtype} ({fam_a}) "
                          f"vs expected {expected.dtype} ({fam_e})",
                          {"dtype": {"actual": str(actual.dtype), "expected": str(expected.dtype)}})


# --------------------------------------------------------------------------
# Element-wise core
# --------------------------------------------------------------------------


@dataclass
class _Diff:
    """Element-wise differences of two same-shape, same-class arrays."""

    pattern_mismatch: np.ndarray  # bool: non-finite pattern differs
    finite: np.ndarray  # bool: finite in both (the numerically compared elements)
    abs: np.ndarray  # float64 |a - e| (0 where not finite)
    rel: np.ndarray  # float64 abs / |e| (0/0 -> 0, x/0 -> inf)
    allowed: np.ndarray  # float64 atol*scale + rtol*|e|
    excess: np.ndarray  # abs - allowed; +inf on pattern mismatch, -inf on matched non-finite
    mismatch: np.ndarray  # bool: element fails
    scale: float  # max |expected| over the elements finite in both

    def max_abs_at(self) -> tuple[int, ...] | None:
        return _argmax_masked(self.abs, self.finite)

    def max_rel_at(self) -> tuple[int, ...] | None:
        return _argmax_masked(self.rel, self.finite)


def _argmax_masked(values: np.ndarray, mask: np.ndarray) -> tuple[int, ...] | None:
    """Index of the largest value under ``mask``; ties: the first in C order (np.argmax)."""
    if not mask.any():
        return None
    flat = np.where(mask, values, -np.inf).ravel()
    return tuple(int(i) for i in np.unravel_index(int(np.argmax(flat)), values.shape))


def _elementwise(actual: np.ndarray, expected: np.ndarray, tier: Tier) -> _Diff:
    """Apply the tier to every element (arrays already checked for shape and class)."""
    code_a, code_e = nonfinite_code(actual), nonfinite_code(expected)
    pattern_mismatch = code_a != code_e
    finite = (code_a == 0) & (code_e == 0)
    work = np.complex128 if np.iscomplexobj(expected) else np.float64
    # Zero the non-finite elements so the arithmetic below stays warning-free.
    a = np.where(finite, actual, 0).astype(work, copy=False)
    e = np.where(finite, expected, 0).astype(work, copy=False)
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        diff = np.abs(a - e).astype(np.float64, copy=False)
        e_abs = np.abs(e).astype(np.float64, copy=False)
        scale = float(e_abs.max()) if e_abs.size else 0.0
        allowed = tier.atol * scale + tier.rtol * e_abs
        rel = np.where(e_abs > 0, diff / np.where(e_abs > 0, e_abs, 1.0),
                       np.where(diff > 0, np.inf, 0.0))
        excess = np.where(pattern_mismatch, np.inf, np.where(finite, diff - allowed, -np.inf))
    mismatch = pattern_mismatch | (finite & (diff > allowed))
    return _Diff(pattern_mismatch, finite, diff, rel, allowed, excess, mismatch, scale)


def _top_indices(excess: np.ndarray, n: int) -> list[tuple[int, ...]]:
    """Indices of the ``n`` largest finite-or-+inf excesses, largest first.

    Ties keep C order (the first index first), so the worst element named here is
    the one every message names.
    """
    flat = excess.ravel()
    candidates = np.flatnonzero(flat > -np.inf)  # ascending: C order
    if n <= 0 or candidates.size == 0:
        return []
    k = min(n, candidates.size)
    values = flat[candidates]
    if k < candidates.size:
        # Keep everything at least as large as the k-th largest value: ties at the
        # cut-off stay in, so the stable sort below decides them by index.
        kth = np.partition(values, candidates.size - k)[candidates.size - k]
        keep = values >= kth
        candidates, values = candidates[keep], values[keep]
    order = np.argsort(-values, kind="stable")[:k]
    return [tuple(int(i) for i in np.unravel_index(int(p), excess.shape)) for p in candidates[order]]


def _element_record(idx: tuple[int, ...], actual: np.ndarray, expected: np.ndarray, d: _Diff,
                    locate: Locate | None) -> dict:
    finite = bool(d.finite[idx])
    return {
        "index": list(idx),
        "location": _where(locate, idx),
        "expected": _scalar(expected[idx]),
        "actual": _scalar(actual[idx]),
        "abs": float(d.abs[idx]) if finite else math.nan,
        "rel": float(d.rel[idx]) if finite else math.nan,  # element-wise |a-e|/|e| of this element
        "allowed": float(d.allowed[idx]),
    }


def _log10_rel_hist(d: _Diff) -> dict:
    """Histogram of log10(element-wise relative difference) over the finite elements, fixed edges."""
    with np.errstate(divide="ignore"):
        logs = np.log10(d.rel[d.finite])
    counts, _ = np.histogram(np.clip(logs, HIST_EDGES[0], HIST_EDGES[-1]), bins=np.asarray(HIST_EDGES))
    return {"edges": list(HIST_EDGES), "counts": counts.tolist()}


def _ulp_stats(distance: np.ndarray, flips: np.ndarray) -> dict:
    """Median/p99/max of ``distance`` where ``flips`` is False; ``sign_flips`` counts the rest.

    A ULP distance across zero (values of opposite sign, or zero against a non-zero) counts
    every float in between (about 4e18 to 9.2e18 in float64 for tiny numbers either side of
    zero): it measures nothing, so such pairs are counted, not measured (None when every
    pair is one).
    """
    kept = distance[~flips]
    stats: dict[str, Any] = ({"median": float(np.median(kept)), "p99": float(np.percentile(kept, 99)),
                              "max": int(kept.max())} if kept.size else
                             {"median": None, "p99": None, "max": None})
    stats["sign_flips"] = int(np.count_nonzero(flips))
    return stats


def _sign_flips(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Pairs across zero: of strictly opposite sign, or zero on one side only.

    Counting ulps from zero to 1e-17 (or from -1e-17 to 1e-17) counts every subnormal and
    every exponent in between, ~4e18 in float64, however close the values are: such a
    number measures nothing. Two zeros (``0.0`` and ``-0.0``) are equal, not a flip.
    """
    return ((x > 0) & (y < 0)) | ((x < 0) & (y > 0)) | ((x == 0) != (y == 0))


def _ulp_summary(actual: np.ndarray, expected: np.ndarray, finite: np.ndarray) -> dict | None:
    """ULP distance summary over the finite common elements; None for non-float data or none compared.

    Mixed precisions are measured in ulps of the narrower one (the wider array
    is rounded to it; ``"dtype"`` names it). Complex: real and imaginary parts
    separately, pooled at the top level and listed under ``"parts"``.
    """
    if not (np.issubdtype(actual.dtype, np.inexact) and np.issubdtype(expected.dtype, np.inexact)):
        return None
    if not finite.any():
        return None
    component = min((np.finfo(actual.dtype).dtype, np.finfo(expected.dtype).dtype),
                    key=lambda t: t.itemsize)
    a, e = actual[finite], expected[finite]
    if np.iscomplexobj(expected):
        parts = {"re": (a.real, e.real), "im": (a.imag, e.imag)}
    else:
        parts = {"": (a, e)}
    with np.errstate(over="ignore"):
        dist = {k: ulp_distance(x.astype(component), y.astype(component)) for k, (x, y) in parts.items()}
    flips = {k: _sign_flips(x, y) for k, (x, y) in parts.items()}
    summary: dict[str, Any] = _ulp_stats(np.concatenate(list(dist.values())),
                                         np.concatenate(list(flips.values())))
    summary["dtype"] = str(component)
    if len(dist) > 1:
        summary["parts"] = {k: _ulp_stats(v, flips[k]) for k, v in dist.items()}
    return summary


def _nothing_compared(e: np.ndarray) -> str:
    """Why an array comparison with no element finite in both compared nothing."""
    if e.size == 0:
        return f"empty arrays (shape {tuple(e.shape)}): no element to compare"
    return (f"no element to compare numerically: all {e.size} element(s) are NaN/inf in both "
            f"arrays (identical pattern)")


# --------------------------------------------------------------------------
# Public: arrays
# --------------------------------------------------------------------------


def compare_arrays(actual: Any, expected: Any, tier: Tier, *, name: str = "",
                   locate: Locate | None = None, n_worst: int = 5, require_nonzero: bool = False,
                   n_terms: int | None = None) -> Comparison:
    """Compare two arrays element by element under a tolerance tier.

    Parameters
    ----------
    actual, expected : array_like or torch.Tensor, shape (...)
        Same shape; both real or both complex (precisions may differ; use
        :func:`parity.comparison.engine.check_dtype` to police them).
    tier : Tier
        ``|a - e| <= tier.atol * max|e| + tier.rtol * |e|`` per finite element;
        the exact tier demands equality (``-0.0 == 0.0``).
    name : str, optional
        Quantity name for the message.
    locate : callable, optional
        ``locate(index_tuple) -> str`` names a position, e.g.
        ``"(h,k,l)=(1,0,-0.5)"``; default ``"index (i, j, ...)"``.
    n_worst : int, default 5
        How many elements ``details["worst_elements"]`` lists (largest
        ``abs - allowed`` first; pattern mismatches rank above all; ties in C order).
    require_nonzero : bool, default False
        When True, a pair whose compared elements are all exactly zero in both
        arrays is ``not_comparable`` (a quantity that vanished where it must not).
    n_terms : int, optional
        Number of floating-point terms summed into one element (the longest sum
        behind the quantity, times its condition ``sum|terms| / max|result|`` when
        that exceeds 1). The tier is then :meth:`Tier.scaled` to it in the working
        precision (the narrower of the two dtypes): ``atol >= n_terms * eps``.

    Returns
    -------
    Comparison
        kind ``"exact"`` for the exact tier, else ``"array"``. ``status``:
        ``"fail"`` on a shape mismatch, a real-vs-complex mismatch, any
        difference in the NaN/inf pattern, or any finite element outside the
        tolerance; else ``"not_comparable"`` when no element is finite in both
        (all NaN, empty; all zero with ``require_nonzero``); else ``"pass"``.
        ``max_rel`` is normwise, ``max_rel_elementwise`` element-wise,
        ``n_compared`` counts the elements finite in both. ``details`` holds
        ``tier``, ``scale``, ``n_compared``, ``nan_pattern``, ``log10_rel_hist``,
        ``ulp`` (float data) and ``worst_elements``.
    """
    kind = "exact" if tier.is_exact else "array"
    a, e = as_numpy(actual), as_numpy(expected)
    if a.shape != e.shape:
        return _shape_failure(kind, name, a, e)
    failure = _class_failure(kind, name, a, e)
    if failure is not None:
        return failure
    eps = working_eps(a, e)
    if n_terms is not None and eps is not None:
        try:
            tier = tier.scaled(n_terms, eps)
        except ValueError as exc:  # the round-off bound swamps the result
            return not_comparable(kind, name, str(exc), n_total=int(e.size))

    d = _elementwise(a, e, tier)
    n_total, n_mismatch = int(e.size), int(np.count_nonzero(d.mismatch))
    n_compared = int(np.count_nonzero(d.finite))
    at_abs, at_rel = d.max_abs_at(), d.max_rel_at()
    max_abs = float(d.abs[at_abs]) if at_abs is not None else None
    max_rel_el = float(d.rel[at_rel]) if at_rel is not None else None
    max_rel = normwise_rel(max_abs, d.scale)
    top = _top_indices(d.excess, max(n_worst, 1))
    worst_elements = [_element_record(i, a, e, d, locate) for i in top]
    pattern = _pattern_details(a, e, d.pattern_mismatch, locate)

    details: dict[str, Any] = {
        "tier": {"name": tier.name, "rtol": tier.rtol, "atol": tier.atol, "n_terms": tier.n_terms},
        "scale": d.scale,
        "n_compared": n_compared,
        "nan_pattern": pattern,
        "log10_rel_hist": _log10_rel_hist(d),
        "worst_elements": worst_elements[:n_worst],
    }
    ulp = _ulp_summary(a, e, d.finite)
    if ulp is not None:
        details["ulp"] = ulp
    label = _label(name, "array")

    if n_mismatch == 0:
        reason = None
        if n_compared == 0:
            reason = _nothing_compared(e)
        elif require_nonzero and not np.any(a[d.finite]) and not np.any(e[d.finite]):
            reason = (f"all {n_compared} compared element(s) are exactly zero in both arrays "
                      f"(the quantity must not vanish)")
        if reason is not None:
            return not_comparable(kind, name, reason, n_total=n_total, n_compared=n_compared,
                                  details=details)
        message = (f"{label}: OK under {tier.describe()}: {n_compared} of {n_total} elements compared; "
                   f"{format_errors(max_abs, max_rel, max_rel_el)}")
    else:
        findings = [_pattern_line(pattern) if pattern["mismatched"] else ""]
        if at_abs is not None:
            findings += [greatest("absolute difference", max_abs, _where(locate, at_abs), d.allowed[at_abs]),
                         greatest("relative difference (element-wise, |a-e|/|e|)", max_rel_el,
                                  _where(locate, at_rel), tier.rtol),
                         f"Normwise relative difference (max|a-e|/max|e|): {max_rel:.3g} (max|e| = {d.scale:.3g})"]
        worst = worst_elements[0] if worst_elements else None
        if worst is not None and (at_abs is None or tuple(worst["index"]) != at_abs):
            findings.append(f"Worst element (largest excess over its allowance): {worst['location']}: "
                            f"expected {worst['expected']}, actual {worst['actual']}")
        if ulp is not None:
            findings.append(f"ULP distance over the compared elements: {format_ulp(ulp)}")
        message = failure_message(f"{label}: not close under {tier.describe()}", n_mismatch=n_mismatch,
                                  n_total=n_total, findings=findings)

    return Comparison(kind=kind, passed=n_mismatch == 0, max_abs=max_abs, max_rel=max_rel,
                      n_mismatch=n_mismatch, n_total=n_total,
                      worst=worst_elements[0] if worst_elements else None,
                      message=message, details=details, n_compared=n_compared,
                      max_rel_elementwise=max_rel_el)


def compare_nan_pattern(actual: Any, expected: Any, *, locate: Locate | None = None,
                        name: str = "") -> Comparison:
    """Check that NaN, +inf and -inf sit at the same places in both arrays.

    Parameters
    ----------
    actual, expected : array_like or torch.Tensor, shape (...)
        Same shape; values are not compared. Complex elements compare the
        pattern of the real and imaginary parts separately.
    locate : callable, optional
        ``locate(index_tuple) -> str`` (see :func:`compare_arrays`).
    name : str, optional

    Returns
    -------
    Comparison
        kind ``"nan_pattern"``; ``n_mismatch`` counts elements whose pattern
        differs, ``n_compared`` the elements whose pattern was compared (all);
        empty arrays are ``not_comparable``.
    """
    a, e = as_numpy(actual), as_numpy(expected)
    if a.shape != e.shape:
        return _shape_failure("nan_pattern", name, a, e)
    if e.size == 0:
        return not_comparable("nan_pattern", name, _nothing_compared(e))
    mismatch = nonfinite_code(a) != nonfinite_code(e)
    pattern = _pattern_details(a, e, mismatch, locate)
    n = pattern["mismatched"]
    label = _label(name, "array")
    if n == 0:
        message = (f"{label}: NaN/inf pattern identical ({pattern['expected_nan']} NaN, "
                   f"{pattern['expected_inf']} inf of {e.size})")
    else:
        message = f"{label}: {_pattern_line(pattern)}"
    return Comparison(kind="nan_pattern", passed=n == 0, n_mismatch=n, n_total=int(e.size),
                      worst=pattern["first"][0] if n else None, message=message,
                      details={"nan_pattern": pattern}, n_compared=int(e.size))


def ulp_distance(a: Any, b: Any) -> np.ndarray:
    """Distance in units in the last place between two real float arrays.

    Parameters
    ----------
    a, b : array_like, shape (...)
        Same real floating dtype (float16/32/64); broadcastable shapes.

    Returns
    -------
    numpy.ndarray of int64
        Number of representable values between ``a`` and ``b`` (0 iff equal,
        ``-0.0`` equals ``0.0``; 1 for ``nextafter``), counted correctly across
        zero. NaN in both -> 0, NaN in one -> int64 max; saturates at int64 max.

    Raises
    ------
    TypeError
        Different dtypes, or a dtype that is not a real float.
    """
    a, b = as_numpy(a), as_numpy(b)
    if a.dtype != b.dtype:
        raise TypeError(f"ulp_distance needs one dtype, got {a.dtype} and {b.dtype}")
    if not np.issubdtype(a.dtype, np.floating):
        raise TypeError(f"ulp_distance needs a real float dtype, got {a.dtype}")
    signed = np.dtype(f"int{8 * a.dtype.itemsize}")
    # Map the sign-magnitude bit patterns onto a monotonic integer line:
    # negatives are reflected, so -0.0 and +0.0 both land on 0.
    ia = np.ascontiguousarray(a).view(signed).astype(np.int64)
    ib = np.ascontiguousarray(b).view(signed).astype(np.int64)
    sign_min = np.int64(np.iinfo(signed).min)
    oa = np.where(ia < 0, sign_min - ia, ia)
    ob = np.where(ib < 0, sign_min - ib, ib)
    # The true difference can exceed int64 (but never uint64): subtract in
    # uint64 with the larger operand first, where wrap-around is exact.
    hi, lo = np.maximum(oa, ob), np.minimum(oa, ob)
    dist = hi.view(np.uint64) - lo.view(np.uint64)
    top = np.uint64(np.iinfo(np.int64).max)
    dist = np.minimum(dist, top).astype(np.int64)
    nan_a, nan_b = np.isnan(a), np.isnan(b)
    dist = np.where(nan_a & nan_b, 0, np.where(nan_a | nan_b, np.iinfo(np.int64).max, dist))
    return np.asarray(dist, dtype=np.int64)


# --------------------------------------------------------------------------
# The kinds: element-wise arrays, exact arrays, gradients
# --------------------------------------------------------------------------


class ArrayKind(Comparator):
    """Both sides' values of the stage's quantity, element by element under its tier."""

    name = "array"
    draws_slice = True

    def compare(self, stage: "Stage", run: RunView, setting: Setting, feed: Any = None) -> Comparison:
        # The reference first: where it refuses the input, the stage is not comparable (even if
        # the candidate raises too), not a divergence of the candidate.
        expected = run.stage_value(stage, "reference")
        actual = run.stage_value(stage, "candidate", feed)
        return compare_arrays(actual, expected, setting.tier, name=stage.name, locate=setting.locate,
                              require_nonzero=stage.require_nonzero, n_terms=setting.n_terms())

    def diagnose(self, stage: "Stage", run: RunView, tier: Tier, feed: Any = None, *,
                 budget_s: float = 0.05) -> tuple[list, Any, Any]:
        # At call time: the diagnosis builds on this package (non-finite codes, clusters).
        from parity.diagnosis import signatures as dg

        expected = run.stage_value(stage, "reference")
        actual = run.stage_value(stage, "candidate", feed)
        e, a = _view(expected, stage.view), _view(actual, stage.view)
        options = _diagnosis_options(stage, run, e)
        return dg.diagnose_arrays(e, a, tier, time_budget_s=budget_s, **options), e, a


class ExactKind(ArrayKind):
    """An array under the exact tier (bitwise equal; NaN == NaN at the same place)."""

    name = "exact"


class GradientKind(ArrayKind):
    """Derivatives of the model (autograd or finite differences, per backend), element-wise."""

    name = "gradient"
    draws_slice = False
    differentiates = True

    def diagnose(self, stage: "Stage", run: RunView, tier: Tier, feed: Any = None, *,
                 budget_s: float = 0.05) -> tuple[list, Any, Any]:
        from parity.diagnosis import signatures as dg  # at call time: see ArrayKind.diagnose

        expected = run.stage_value(stage, "reference")
        actual = run.stage_value(stage, "candidate", feed)
        return dg.diagnose_gradient(expected, actual, tier, axes=stage.axes), expected, actual


def _view(x: np.ndarray, view: tuple[int, ...] | None) -> np.ndarray:
    """Reshape for the diagnosis; 0 in ``view`` keeps that axis's length."""
    if view is None or x.ndim > len(view):
        return x
    try:
        return x.reshape(tuple(x.shape[i] if v == 0 else v for i, v in enumerate(view)))
    except ValueError:
        return x


def _diagnosis_options(stage: "Stage", run: RunView, e: np.ndarray) -> dict[str, Any]:
    """The array diagnosis's options for ``stage``: axis names, grid shape, telling subsets.

    ``e`` is the expected array as diagnosed. A grid map (n_q,) is analysed as (h, k, l)
    with its Bragg points as a subset; a per-BZ-point array singles out k = 0; ``Winv``
    its zero modes.
    """
    options: dict[str, Any] = {"axes": stage.axes, "matrix_axes": stage.matrix_axes}
    subsets: dict[str, np.ndarray] = {}
    if stage.locate == "grid" and e.shape[:1] == (run.spec.n_q,):
        options["grid_shape"] = run.spec.map_shape
        options["axes"] = stage.axes or ("grid point",)
        if e.ndim == 1 and np.issubdtype(e.dtype, np.floating):
            subsets["Bragg points"] = np.isnan(e)
    if stage.locate == "bz_flat" and e.ndim >= 1:
        k0 = np.zeros(e.shape, dtype=bool)
        k0[0] = True
        subsets["k = 0 point"] = k0
    if stage.name == "Winv":
        subsets["zero modes"] = np.isnan(e)
    if subsets:
        options["subsets"] = subsets
    return {k: v for k, v in options.items() if v is not None}
