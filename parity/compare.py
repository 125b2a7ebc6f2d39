"""Comparison engine: one place that decides whether two results agree.

Everything here is pure NumPy. Torch tensors are accepted anywhere an array
is (converted with ``.detach().cpu().numpy()``), so the engine never needs a
device. Every function returns a :class:`Comparison`, never raises on a
*mismatch* (shape, dtype, NaN pattern ...): a failure is a result to report.
Exceptions are kept for programming errors (bad arguments).

Tolerance semantics are those of :mod:`parity.tiers`: an element passes iff
``|actual - expected| <= atol * scale + rtol * |expected|`` with
``scale = max |expected|`` over the finite elements.

Eigenvectors are compared through the spectral projector of each eigenvalue
cluster (see ALGORITHM.md section 7): solvers agree on eigenvectors only up to
a phase per vector and a unitary mixing inside each degenerate eigenspace, and
the full product ``V V^H`` is blind to the eigenvectors altogether.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping

import numpy as np

from .io import json_safe

from parity.tiers import Tier

__all__ = [
    "Comparison",
    "HIST_EDGES",
    "as_numpy",
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

Locate = Callable[[tuple[int, ...]], str]

#: Fixed bin edges of ``details["log10_rel_hist"]`` (log10 of the relative
#: difference, clipped into [-17, 1]): fixed so histograms of different runs compare.
HIST_EDGES: tuple[int, ...] = tuple(range(-17, 2))

# How many non-finite-pattern mismatches are named in messages/details.
_N_FIRST = 5


# --------------------------------------------------------------------------
# Result object
# --------------------------------------------------------------------------


@dataclass
class Comparison:
    """Outcome of one comparison.

    Attributes
    ----------
    kind : str
        ``"array"``, ``"exact"``, ``"nan_pattern"``, ``"eigenspace"``,
        ``"full_product"``, ``"dtype"`` or ``"dtype_audit"``.
    passed : bool
    max_abs, max_rel : float or None
        Greatest absolute / relative difference over the finite common
        elements (None when there are none or the comparison is not numeric).
    n_mismatch, n_total : int
        Failing units / all units (elements; batch items for eigenspaces;
        tensors for a dtype audit).
    worst : dict or None
        The worst unit: ``{"index": [...], "location": str, "expected": ...,
        "actual": ..., ...}``.
    message : str
        Human summary; the first line stands alone, further lines (on
        failure) follow torch.testing's layout.
    details : dict
        Optional extras, keys as in docs/architecture.md: ``log10_rel_hist``,
        ``ulp``, ``nan_pattern``, ``worst_elements``, ``eigen_table`` ...
    """

    kind: str
    passed: bool
    max_abs: float | None = None
    max_rel: float | None = None
    n_mismatch: int = 0
    n_total: int = 0
    worst: dict | None = None
    message: str = ""
    details: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        """JSON-safe dict: NaN/inf -> None, NumPy scalars -> Python, complex -> {"re", "im"}."""
        return json_safe({
            "kind": self.kind,
            "passed": self.passed,
            "max_abs": self.max_abs,
            "max_rel": self.max_rel,
            "n_mismatch": self.n_mismatch,
            "n_total": self.n_total,
            "worst": self.worst,
            "message": self.message,
            "details": self.details,
        })



# --------------------------------------------------------------------------
# Small helpers
# --------------------------------------------------------------------------


def as_numpy(x: Any) -> np.ndarray:
    """Array view of ``x``; torch tensors go through ``.detach().cpu().numpy()``.

    Checked by duck typing so this module never imports torch.
    """
    if hasattr(x, "detach") and hasattr(x, "cpu"):
        t = x.detach().cpu()
        # .numpy() refuses lazily conjugated/negated views.
        if getattr(t, "is_conj", lambda: False)():
            t = t.resolve_conj()
        if getattr(t, "is_neg", lambda: False)():
            t = t.resolve_neg()
        if str(t.dtype) == "torch.bfloat16":  # NumPy has no bfloat16
            t = t.float()
        return t.numpy()
    return np.asarray(x)


def _dtype_name(x: Any) -> str:
    """``"float64"`` for np.float64 / torch.float64 / arrays / tensors of either."""
    dtype = getattr(x, "dtype", None)
    if dtype is None:
        dtype = np.asarray(x).dtype
    return str(dtype).removeprefix("torch.")


def _family(dtype_name: str) -> str:
    """``"complex"``, ``"real"`` (floating) or ``"other"`` (int, bool, object ...)."""
    if dtype_name.startswith("complex"):
        return "complex"
    if dtype_name.startswith(("float", "bfloat", "half", "double")):
        return "real"
    return "other"


def _index_text(index: tuple[int, ...]) -> str:
    return "index (" + ", ".join(str(int(i)) for i in index) + ")"


def _where(locate: Locate | None, index: tuple[int, ...]) -> str:
    """Name a position: ``locate(index)`` when given, else ``index (i, j, ...)``."""
    index = tuple(int(i) for i in index)
    return locate(index) if locate is not None else _index_text(index)


def _scalar(x: Any) -> Any:
    """Python scalar for reports (float / complex / int / bool)."""
    return x.item() if hasattr(x, "item") else x


def _fmt(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.3g}"


def _percent(n: int, total: int) -> str:
    return f"{100.0 * n / total:.1f}%" if total else "0.0%"


def _label(name: str, default: str) -> str:
    return name if name else default


# --------------------------------------------------------------------------
# Non-finite pattern
# --------------------------------------------------------------------------


def _real_code(x: np.ndarray) -> np.ndarray:
    """0 finite, 1 NaN, 2 +inf, 3 -inf (int8, same shape)."""
    code = np.zeros(x.shape, dtype=np.int8)
    if np.issubdtype(x.dtype, np.floating):
        code[np.isnan(x)] = 1
        code[np.isposinf(x)] = 2
        code[np.isneginf(x)] = 3
    return code


def _nonfinite_code(x: np.ndarray) -> np.ndarray:
    """Per-element non-finite code; complex combines the real and imaginary codes."""
    if np.iscomplexobj(x):
        return _real_code(x.real) * 4 + _real_code(x.imag)
    return _real_code(x)


def _pattern_details(actual: np.ndarray, expected: np.ndarray, mismatch: np.ndarray,
                     locate: Locate | None) -> dict:
    """``details["nan_pattern"]``: counts plus the first few mismatched positions."""
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


def _shape_failure(kind: str, name: str, actual: np.ndarray, expected: np.ndarray,
                   what: str = "shape") -> Comparison:
    return Comparison(
        kind=kind, passed=False, n_mismatch=int(expected.size), n_total=int(expected.size),
        message=(f"{_label(name, 'array')}: {what} mismatch: actual {tuple(actual.shape)} "
                 f"vs expected {tuple(expected.shape)}"),
        details={"shape": {"actual": list(actual.shape), "expected": list(expected.shape)}},
    )


def _class_failure(kind: str, name: str, actual: np.ndarray, expected: np.ndarray) -> Comparison | None:
    """Fail real-vs-complex (and non-numeric) inputs; None when the classes agree."""
    fam_a = "complex" if np.iscomplexobj(actual) else "real"
    fam_e = "complex" if np.iscomplexobj(expected) else "real"
    numeric = all(np.issubdtype(x.dtype, np.number) or x.dtype == np.bool_ for x in (actual, expected))
    if fam_a == fam_e and numeric:
        return None
    reason = "dtype class mismatch" if numeric else "non-numeric dtype"
    return Comparison(
        kind=kind, passed=False, n_mismatch=int(expected.size), n_total=int(expected.size),
        message=(f"{_label(name, 'array')}: {reason}: actual {actual.dtype} ({fam_a}) "
                 f"vs expected {expected.dtype} ({fam_e})"),
        details={"dtype": {"actual": str(actual.dtype), "expected": str(expected.dtype)}},
    )


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
    scale: float  # max |expected| over finite elements

    def max_abs_at(self) -> tuple[int, ...] | None:
        return _argmax_masked(self.abs, self.finite)

    def max_rel_at(self) -> tuple[int, ...] | None:
        return _argmax_masked(self.rel, self.finite)


def _argmax_masked(values: np.ndarray, mask: np.ndarray) -> tuple[int, ...] | None:
    if not mask.any():
        return None
    flat = np.where(mask, values, -np.inf).ravel()
    return tuple(int(i) for i in np.unravel_index(int(np.argmax(flat)), values.shape))


def _elementwise(actual: np.ndarray, expected: np.ndarray, tier: Tier) -> _Diff:
    """Apply the tier to every element (arrays already checked for shape and class)."""
    code_a, code_e = _nonfinite_code(actual), _nonfinite_code(expected)
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
    """Indices of the ``n`` largest finite-or-+inf excesses, largest first."""
    flat = excess.ravel()
    candidates = np.flatnonzero(flat > -np.inf)
    if n <= 0 or candidates.size == 0:
        return []
    k = min(n, candidates.size)
    part = candidates[np.argpartition(-flat[candidates], k - 1)[:k]]
    part = part[np.argsort(-flat[part], kind="stable")]
    return [tuple(int(i) for i in np.unravel_index(int(p), excess.shape)) for p in part]


def _element_record(idx: tuple[int, ...], actual: np.ndarray, expected: np.ndarray, d: _Diff,
                    locate: Locate | None) -> dict:
    finite = bool(d.finite[idx])
    return {
        "index": list(idx),
        "location": _where(locate, idx),
        "expected": _scalar(expected[idx]),
        "actual": _scalar(actual[idx]),
        "abs": float(d.abs[idx]) if finite else math.nan,
        "rel": float(d.rel[idx]) if finite else math.nan,
        "allowed": float(d.allowed[idx]),
    }


def _log10_rel_hist(d: _Diff) -> dict:
    """Histogram of log10(relative difference) over the finite elements, fixed edges."""
    with np.errstate(divide="ignore"):
        logs = np.log10(d.rel[d.finite])
    counts, _ = np.histogram(np.clip(logs, HIST_EDGES[0], HIST_EDGES[-1]), bins=np.asarray(HIST_EDGES))
    return {"edges": list(HIST_EDGES), "counts": counts.tolist()}


def _ulp_stats(distance: np.ndarray) -> dict:
    return {"median": float(np.median(distance)), "p99": float(np.percentile(distance, 99)),
            "max": int(distance.max())}


def _ulp_summary(actual: np.ndarray, expected: np.ndarray, finite: np.ndarray) -> dict | None:
    """ULP distance summary over the finite common elements; None for non-float data.

    Mixed precisions are measured in ulps of the narrower one (the wider array
    is rounded to it). Complex: real and imaginary parts separately, pooled at
    the top level and listed under ``"parts"``.
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
    summary = _ulp_stats(np.concatenate(list(dist.values())))
    if len(dist) > 1:
        summary["parts"] = {k: _ulp_stats(v) for k, v in dist.items()}
    return summary


# --------------------------------------------------------------------------
# Public: arrays
# --------------------------------------------------------------------------


def compare_arrays(actual: Any, expected: Any, tier: Tier, *, name: str = "",
                   locate: Locate | None = None, n_worst: int = 5) -> Comparison:
    """Compare two arrays element by element under a tolerance tier.

    Parameters
    ----------
    actual, expected : array_like or torch.Tensor, shape (...)
        Same shape; both real or both complex (precisions may differ; use
        :func:`check_dtype` to police them).
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
        ``abs - allowed`` first; pattern mismatches rank above all).

    Returns
    -------
    Comparison
        kind ``"exact"`` for the exact tier, else ``"array"``. Fails (without
        raising) on a shape mismatch, a real-vs-complex mismatch, any
        difference in the NaN/inf pattern, or any finite element outside the
        tolerance. ``details`` holds ``tier``, ``scale``, ``nan_pattern``,
        ``log10_rel_hist``, ``ulp`` (float data) and ``worst_elements``.
    """
    kind = "exact" if tier.is_exact else "array"
    a, e = as_numpy(actual), as_numpy(expected)
    if a.shape != e.shape:
        return _shape_failure(kind, name, a, e)
    failure = _class_failure(kind, name, a, e)
    if failure is not None:
        return failure

    d = _elementwise(a, e, tier)
    n_total, n_mismatch = int(e.size), int(np.count_nonzero(d.mismatch))
    at_abs, at_rel = d.max_abs_at(), d.max_rel_at()
    max_abs = float(d.abs[at_abs]) if at_abs is not None else None
    max_rel = float(d.rel[at_rel]) if at_rel is not None else None
    top = _top_indices(d.excess, max(n_worst, 1))
    worst_elements = [_element_record(i, a, e, d, locate) for i in top]
    pattern = _pattern_details(a, e, d.pattern_mismatch, locate)

    details: dict[str, Any] = {
        "tier": {"name": tier.name, "rtol": tier.rtol, "atol": tier.atol},
        "scale": d.scale,
        "nan_pattern": pattern,
        "log10_rel_hist": _log10_rel_hist(d),
        "worst_elements": worst_elements[:n_worst],
    }
    ulp = _ulp_summary(a, e, d.finite)
    if ulp is not None:
        details["ulp"] = ulp

    label = _label(name, "array")
    if n_mismatch == 0:
        message = (f"{label}: OK under {tier.describe()}: max abs diff {_fmt(max_abs)}, "
                   f"max rel diff {_fmt(max_rel)} over {n_total} elements")
    else:
        lines = [f"{label}: not close under {tier.describe()}",
                 f"Mismatched elements: {n_mismatch} / {n_total} ({_percent(n_mismatch, n_total)})"]
        if pattern["mismatched"]:
            lines.append(_pattern_line(pattern))
        if at_abs is not None:
            lines.append(f"Greatest absolute difference: {max_abs:.3g} at {_where(locate, at_abs)} "
                         f"(up to {d.allowed[at_abs]:.3g} allowed)")
            lines.append(f"Greatest relative difference: {max_rel:.3g} at {_where(locate, at_rel)} "
                         f"(up to {tier.rtol:.3g} allowed)")
        message = "\n".join(lines)

    return Comparison(kind=kind, passed=n_mismatch == 0, max_abs=max_abs, max_rel=max_rel,
                      n_mismatch=n_mismatch, n_total=n_total,
                      worst=worst_elements[0] if worst_elements else None,
                      message=message, details=details)


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
        kind ``"nan_pattern"``; ``n_mismatch`` counts elements whose pattern differs.
    """
    a, e = as_numpy(actual), as_numpy(expected)
    if a.shape != e.shape:
        return _shape_failure("nan_pattern", name, a, e)
    mismatch = _nonfinite_code(a) != _nonfinite_code(e)
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
                      details={"nan_pattern": pattern})


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
# Public: dtypes
# --------------------------------------------------------------------------


def check_dtype(name: str, tensor_or_array: Any, expected: str) -> Comparison:
    """Check one quantity's dtype.

    Parameters
    ----------
    name : str
        Quantity name (appears in the message).
    tensor_or_array : torch.Tensor or numpy.ndarray
    expected : str
        ``"float64"``, ``"complex128"``, ``"float32"`` ... (``torch.`` prefix allowed).

    Returns
    -------
    Comparison
        kind ``"dtype"``; one unit.
    """
    actual = _dtype_name(tensor_or_array)
    want = str(expected).removeprefix("torch.")
    passed = actual == want
    message = (f"{name}: dtype {actual} as expected" if passed
               else f"{name}: dtype {actual}, expected {want}")
    worst = None if passed else {"index": [], "location": name, "expected": want, "actual": actual}
    return Comparison(kind="dtype", passed=passed, n_mismatch=0 if passed else 1, n_total=1,
                      worst=worst, message=message,
                      details={"dtype": {"name": name, "actual": actual, "expected": want}})


def audit_dtypes(named: Mapping[str, Any], expected_real: str, expected_complex: str,
                 real_only: Iterable[str] = ()) -> Comparison:
    """Check that every floating tensor of a model has the working precision.

    Parameters
    ----------
    named : mapping of str -> tensor/array
        E.g. the torch model's attributes. Objects without a ``dtype`` and
        integer/bool tensors are not audited.
    expected_real, expected_complex : str
        E.g. ``"float64"`` and ``"complex128"``.
    real_only : iterable of str
        Names that must be real, e.g. ``Linv`` (the seed stored it complex by mistake).

    Returns
    -------
    Comparison
        kind ``"dtype_audit"``; units are the audited tensors; the message
        lists every offender on its own line.
    """
    want_real = str(expected_real).removeprefix("torch.")
    want_complex = str(expected_complex).removeprefix("torch.")
    must_be_real = set(real_only)
    offenders: list[dict] = []
    audited = 0
    for key, value in named.items():
        if getattr(value, "dtype", None) is None:
            continue
        dtype = _dtype_name(value)
        family = _family(dtype)
        if family == "other":
            continue
        audited += 1
        if key in must_be_real:
            want = want_real
        else:
            want = want_complex if family == "complex" else want_real
        if dtype != want:
            reason = "must be real" if key in must_be_real and family == "complex" else "wrong precision"
            offenders.append({"name": key, "dtype": dtype, "expected": want, "reason": reason})

    if offenders:
        lines = [f"dtype audit: {len(offenders)} of {audited} floating tensors have the wrong dtype"]
        lines += [f"  {o['name']}: {o['dtype']}, expected {o['expected']} ({o['reason']})" for o in offenders]
        message = "\n".join(lines)
        first = offenders[0]
        worst = {"index": [], "location": first["name"], "expected": first["expected"],
                 "actual": first["dtype"]}
    else:
        message = f"dtype audit: all {audited} floating tensors are {want_real}/{want_complex}"
        worst = None
    return Comparison(kind="dtype_audit", passed=not offenders, n_mismatch=len(offenders),
                      n_total=audited, worst=worst, message=message,
                      details={"offenders": offenders, "expected_real": want_real,
                               "expected_complex": want_complex})


# --------------------------------------------------------------------------
# Public: eigenspaces
# --------------------------------------------------------------------------


def cluster_eigenvalues(values: Any, rel_gap: float = 1e-6) -> list[np.ndarray]:
    """Group (near-)degenerate eigenvalues.

    Parameters
    ----------
    values : array_like, shape (n,)
        Eigenvalues (or a monotone transform such as ``Winv = 1/w^2``).
        Complex input is clustered on its real part (the goldens store
        ``Winv`` as complex with zero imaginary part).
    rel_gap : float, default 1e-6
        Sorted finite values are split where
        ``(v[i+1] - v[i]) / max(|v[i+1]|, |v[i]|) > rel_gap``.

    Returns
    -------
    list of numpy.ndarray of int
        Index sets (each sorted ascending) into ``values``: the non-finite
        (NaN, zero-mode) values first as one cluster, then the finite
        clusters in ascending order of value.
    """
    v = as_numpy(values)
    if v.ndim != 1:
        raise ValueError(f"cluster_eigenvalues needs a 1-D array, got shape {v.shape}")
    v = (v.real if np.iscomplexobj(v) else v).astype(np.float64)
    finite = np.isfinite(v)
    clusters: list[np.ndarray] = []
    if not finite.all():
        clusters.append(np.flatnonzero(~finite))
    order = np.flatnonzero(finite)
    order = order[np.argsort(v[order], kind="stable")]
    if order.size:
        s = v[order]
        span = np.maximum(np.abs(s[1:]), np.abs(s[:-1]))
        with np.errstate(invalid="ignore", divide="ignore"):
            gaps = np.where(span > 0, (s[1:] - s[:-1]) / np.where(span > 0, span, 1.0), 0.0)
        clusters += [np.sort(g) for g in np.split(order, np.flatnonzero(gaps > rel_gap) + 1)]
    return clusters


def spectral_projectors(values: Any, vectors: Any, clusters: Iterable[np.ndarray]) -> list[np.ndarray]:
    """Spectral projector of each eigenvalue cluster.

    Parameters
    ----------
    values : array_like, shape (n,)
        Eigenvalues (used only to check that ``vectors`` has n columns).
    vectors : array_like, shape (m, n)
        Eigenvectors as columns. Need not be orthonormal: for mass-weighted
        ``V = Linv^T U`` the product ``V_c V_c^H = Linv^T (U_c U_c^H) Linv`` is
        still invariant under phases and unitary mixing inside the cluster.
    clusters : iterable of index arrays
        From :func:`cluster_eigenvalues`.

    Returns
    -------
    list of numpy.ndarray, each shape (m, m)
        ``vectors[:, c] @ vectors[:, c].conj().T`` per cluster.
    """
    v, w = as_numpy(vectors), as_numpy(values)
    if v.ndim != 2 or w.shape != (v.shape[1],):
        raise ValueError(f"need values (n,) and vectors (m, n), got {w.shape} and {v.shape}")
    return [v[:, c] @ v[:, c].conj().T for c in clusters]


def _cluster_key(clusters: list[np.ndarray]) -> list[tuple[int, ...]]:
    """Order-free form of a clustering, for comparing two of them."""
    return sorted(tuple(int(i) for i in c) for c in clusters)


def _residuals(matrix: np.ndarray, unitary: np.ndarray) -> tuple[float, float, float]:
    """(residual, orthonormality, bound) of one orthonormal eigenbasis ``unitary`` of ``matrix``.

    lambda is taken as the Rayleigh quotients diag(U^H D U): the stored values
    may be a transform of D's eigenvalues (Winv = 1/w^2, NaN for zero modes).
    """
    n = matrix.shape[-1]
    lam = np.einsum("ji,jk,ki->i", unitary.conj(), matrix, unitary).real
    d_max = float(np.abs(matrix).max()) if matrix.size else 0.0
    r_max = float(np.abs(matrix @ unitary - unitary * lam).max()) if matrix.size else 0.0
    residual = r_max / d_max if d_max > 0 else r_max
    gram = unitary.conj().T @ unitary
    orthonormality = float(np.abs(gram - np.eye(n)).max()) if n else 0.0
    eps = float(np.finfo(unitary.dtype).eps) if np.issubdtype(unitary.dtype, np.inexact) else 0.0
    return residual, orthonormality, 1e3 * eps * n


@dataclass
class _ItemResult:
    """One batch item of :func:`compare_eigenspaces`."""

    row: dict
    passed: bool
    proj_excess: float  # worst abs - allowed over its projectors (-inf: no finite entry)
    proj_ok: bool  # every projector entry within the tier
    max_abs: float
    worst: dict  # the item's worst projector entry (location only when there is none)
    reasons: list[str]  # why it fails, one line each; empty when it passes

    def rank(self) -> tuple[bool, bool, float]:
        """Sort key, worst last: failing first, then clustering mismatch, then projector excess."""
        return (not self.passed, not self.row["clustering_match"], self.proj_excess)


#: Relative eigenvalue gap below which the projector allowance grows like 1 / gap.
GAP_REFERENCE = 1e-4


def _cluster_gaps(values: np.ndarray, clusters: list[np.ndarray]) -> list[float]:
    """Relative gap of each cluster to the nearest eigenvalue outside it (inf if none).

    Non-finite clusters (zero modes) get inf: their projector (the null space) does
    not depend on a gap to the finite spectrum in this sense.
    """
    v = np.real(np.asarray(values, dtype=complex))
    finite = np.isfinite(v)
    out = []
    for c in clusters:
        inside = v[c][np.isfinite(v[c])]
        mask = finite.copy()
        mask[c] = False
        if inside.size == 0 or not mask.any():
            out.append(math.inf)
            continue
        others = v[mask]
        diff = np.abs(inside[:, None] - others[None, :])
        scale = np.maximum(np.abs(inside[:, None]), np.abs(others[None, :]))
        out.append(float(np.min(diff / np.where(scale > 0, scale, 1.0))))
    return out


def _compare_item(b: tuple[int, ...], av: np.ndarray, aV: np.ndarray, ev: np.ndarray, eV: np.ndarray,
                  tier: Tier, rel_gap: float, locate: Locate | None,
                  matrix: np.ndarray | None, unitary: np.ndarray | None) -> _ItemResult:
    clusters_e = cluster_eigenvalues(ev, rel_gap)
    clusters_a = cluster_eigenvalues(av, rel_gap)
    same = _cluster_key(clusters_e) == _cluster_key(clusters_a)
    location = _where(locate, b)
    reasons = [] if same else [
        f"clustering differs at {location}: expected sizes {[len(c) for c in clusters_e]}, "
        f"actual sizes {[len(c) for c in clusters_a]}"]

    # Projectors on the EXPECTED clusters, whatever the actual clustering: a
    # wrong eigenvector still shows up here with its size.
    max_abs, max_err, excess, worst, proj_ok = 0.0, 0.0, -math.inf, {}, True
    tol = max(tier.rtol, tier.atol)
    gaps = _cluster_gaps(ev, clusters_e)
    for k, (pa, pe) in enumerate(zip(spectral_projectors(av, aV, clusters_e),
                                     spectral_projectors(ev, eV, clusters_e))):
        d = _elementwise(pa, pe, tier)
        at = _argmax_masked(d.excess, d.excess > -np.inf)
        if at is None:
            continue
        cluster_abs = float(d.abs.max())
        max_abs = max(max_abs, cluster_abs)
        err = cluster_abs / d.scale if d.scale > 0 else (math.inf if cluster_abs else 0.0)
        max_err = max(max_err, err)
        # Projectors are judged normwise (error relative to max|P|: a small entry carries
        # the absolute error of the large ones). A cluster whose eigenvalue lies close to
        # another's is ill-conditioned: its projector's round-off grows like eps / gap
        # (Davis-Kahan), so the allowance grows with GAP_REFERENCE / gap below it.
        proj_ok &= err <= tol * max(1.0, GAP_REFERENCE / gaps[k])
        if not worst or d.excess[at] > excess:
            excess = float(d.excess[at])
            worst = {"index": list(b), "location": location, "cluster": k,
                     "cluster_size": int(len(clusters_e[k])), "entry": list(at),
                     "expected": _scalar(pe[at]), "actual": _scalar(pa[at]),
                     "abs": float(d.abs[at]), "allowed": float(d.allowed[at])}
    if not proj_ok:
        reasons.append(f"projector error {max_err:.3g} (relative to max|P|) at {location}")

    residual = orthonormality = None
    if matrix is not None:
        residual, orthonormality, bound = _residuals(matrix, unitary)
        if not residual <= bound:
            reasons.append(f"residual max|DU - U diag(lambda)|/max|D| = {residual:.3g} at {location} "
                           f"(bound {bound:.3g})")
        if not orthonormality <= bound:
            reasons.append(f"orthonormality max|U^H U - I| = {orthonormality:.3g} at {location} "
                           f"(bound {bound:.3g})")

    row = {"bz": list(b), "cluster_sizes": [int(len(c)) for c in clusters_e],
           "max_projector_err": max_err, "residual": residual, "orthonormality": orthonormality,
           "clustering_match": same, "passed": not reasons}
    worst = {"index": list(b), "location": location, **worst, "max_projector_err": max_err}
    if reasons:
        worst["reason"] = reasons[0]
    return _ItemResult(row, not reasons, excess, proj_ok, max_abs, worst, reasons)


def compare_eigenspaces(actual_values: Any, actual_vectors: Any, expected_values: Any,
                        expected_vectors: Any, tier: Tier, *, rel_gap: float = 1e-6,
                        locate: Locate | None = None, matrix: Any = None, unitary: Any = None,
                        name: str = "") -> Comparison:
    """Compare eigen-decompositions through their cluster spectral projectors.

    Parameters
    ----------
    actual_values, expected_values : array_like, shape (*batch, n)
        Eigenvalues per batch item, e.g. ``Winv`` of shape (L_h, L_k, L_l, n)
        or (n_k, n). Both backends order the modes the same way (NaN first,
        then ascending ``w``); the values are compared element-wise by the tier.
    actual_vectors, expected_vectors : array_like, shape (*batch, m, n)
        Eigenvectors as columns (orthonormal ``U`` or mass-weighted ``V``).
    tier : Tier
        Applied element-wise to the eigenvalues; each cluster's projector passes
        when ``max |P_a - P_e| / max |P_e| <= max(rtol, atol) * max(1, 1e-4 / gap)``
        (normwise; ``gap`` is the cluster's relative distance to the nearest other
        eigenvalue, since a projector's round-off grows like eps / gap).
    rel_gap : float, default 1e-6
        Clustering threshold (:func:`cluster_eigenvalues`). Both clusterings
        must be identical; true gaps close to ``rel_gap`` would make this flaky.
    locate : callable, optional
        ``locate(batch_index) -> str``, e.g. ``"BZ (dh,dk,dl)=(1,0,1)"``.
    matrix : array_like, shape (*batch, n, n), optional
        The Hermitian matrix (``D``) per batch item. Give it together with
        ``unitary`` to check the eigen-equation.
    unitary : array_like, shape (*batch, n, n), optional
        The actual orthonormal eigenvectors ``U`` of ``matrix``. Reported:
        ``max|D U - U diag(lambda)| / max|D|`` (lambda the Rayleigh quotients)
        and ``max|U^H U - I|``; each fails above ``1e3 * eps * n``.
    name : str, optional

    Returns
    -------
    Comparison
        kind ``"eigenspace"``; units are batch items. ``max_abs`` is the
        largest projector entry error, ``max_rel`` the largest projector error
        relative to ``max|P|``. ``details["eigen_table"]`` has one row per
        batch item; ``details["values"]`` summarises the eigenvalue comparison.
    """
    av, aV = as_numpy(actual_values), as_numpy(actual_vectors)
    ev, eV = as_numpy(expected_values), as_numpy(expected_vectors)
    kind = "eigenspace"
    if (matrix is None) != (unitary is None):
        raise ValueError("compare_eigenspaces: give matrix and unitary together")
    if ev.ndim < 1 or eV.shape[:-2] != ev.shape[:-1] or eV.shape[-1:] != ev.shape[-1:]:
        raise ValueError(f"expected values (*batch, n) and vectors (*batch, m, n), "
                         f"got {ev.shape} and {eV.shape}")
    if av.shape != ev.shape:
        return _shape_failure(kind, _label(name, "eigenvalues"), av, ev)
    if aV.shape != eV.shape:
        return _shape_failure(kind, _label(name, "eigenvectors"), aV, eV)
    mat = uni = None
    if matrix is not None:
        mat, uni = as_numpy(matrix), as_numpy(unitary)
        square = ev.shape + ev.shape[-1:]
        if mat.shape != square or uni.shape != square:
            raise ValueError(f"matrix and unitary must have shape {square}, got {mat.shape} and {uni.shape}")

    def locate_value(idx: tuple[int, ...]) -> str:
        return f"{_where(locate, idx[:-1])} mode {idx[-1]}"

    values = compare_arrays(av, ev, tier, name=f"{name} eigenvalues" if name else "eigenvalues",
                            locate=locate_value)

    batch = ev.shape[:-1]
    items = [
        _compare_item(b, av[b], aV[b], ev[b], eV[b], tier, rel_gap, locate,
                      None if mat is None else mat[b], None if uni is None else uni[b])
        for b in np.ndindex(batch)
    ]
    failing = [it for it in items if not it.passed]
    n_total = len(items)
    max_abs = max((it.max_abs for it in items), default=None)
    max_rel = max((it.row["max_projector_err"] for it in items), default=None)
    worst_item = max(items, key=_ItemResult.rank, default=None)
    worst = worst_item.worst if worst_item is not None else None
    proj_items = [it for it in items if not it.proj_ok]
    worst_proj = max(proj_items, key=lambda it: it.proj_excess, default=None)
    passed = values.passed and not failing

    label = f"{name}: eigenspaces" if name else "eigenspaces"
    n_clusters = sum(len(it.row["cluster_sizes"]) for it in items)
    biggest = max((max(it.row["cluster_sizes"], default=0) for it in items), default=0)
    if passed:
        message = (f"{label} OK under {tier.describe()}: {n_total} batch items, {n_clusters} clusters "
                   f"(largest {biggest}), max projector err {_fmt(max_rel)} (relative to max|P|)")
    else:
        lines = [f"{label} differ under {tier.describe()}",
                 f"Mismatched batch items: {len(failing)} / {n_total} ({_percent(len(failing), n_total)})"]
        # worst_item ranks failing items first, so it fails whenever any item does.
        if failing:
            lines += worst_item.reasons
        if worst_proj is not None:
            w = worst_proj.worst
            lines.append(f"Greatest projector error: {w['max_projector_err']:.3g} (relative to max|P|) at "
                         f"{w['location']}; worst entry {tuple(w['entry'])} of cluster {w['cluster']} "
                         f"(size {w['cluster_size']}) off by {w['abs']:.3g}, up to {w['allowed']:.3g} allowed")
        if not values.passed:
            lines.append("Eigenvalues: " + values.message)
        message = "\n".join(lines)

    details = {
        "tier": {"name": tier.name, "rtol": tier.rtol, "atol": tier.atol},
        "rel_gap": rel_gap,
        "eigen_table": [it.row for it in items],
        "values": {k: getattr(values, k) for k in ("passed", "max_abs", "max_rel", "n_mismatch",
                                                   "n_total", "message")},
    }
    if "nan_pattern" in values.details:
        details["nan_pattern"] = values.details["nan_pattern"]
    return Comparison(kind=kind, passed=passed, max_abs=max_abs, max_rel=max_rel,
                      n_mismatch=len(failing), n_total=n_total, worst=worst, message=message,
                      details=details)


def compare_full_product(actual_vectors: Any, expected_vectors: Any, tier: Tier, *,
                         name: str = "", locate: Locate | None = None) -> Comparison:
    """The seed's check: compare ``V V^H`` summed over ALL modes. Do not use it for parity.

    Kept only so a test can demonstrate what it misses: ``V V^H = Linv^T U U^H
    Linv = Linv^T Linv`` for *any* unitary ``U``, so it cannot see eigenvectors
    mixed across eigenvalue clusters, swapped modes, or wrong eigenvectors at
    all (ALGORITHM.md section 7). Use :func:`compare_eigenspaces`.

    Parameters
    ----------
    actual_vectors, expected_vectors : array_like, shape (*batch, m, n)
    tier : Tier
    name : str, optional
    locate : callable, optional
        Names an index of the product array, shape (*batch, m, m).

    Returns
    -------
    Comparison
        kind ``"full_product"``.
    """
    a, e = as_numpy(actual_vectors), as_numpy(expected_vectors)
    if a.shape != e.shape or a.ndim < 2:
        return _shape_failure("full_product", name, a, e)
    result = compare_arrays(a @ np.swapaxes(a.conj(), -1, -2), e @ np.swapaxes(e.conj(), -1, -2),
                            tier, name=_label(name, "V V^H"), locate=locate)
    result.kind = "full_product"
    return result
