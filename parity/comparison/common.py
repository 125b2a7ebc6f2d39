"""The result object and the definitions every comparison kind shares.

Each figure a comparison reports is defined once, here:

* **normwise relative error** ``max|a - e| / max|e|`` (over the elements finite in
  both; the tiers' own yardstick: ``atol`` is relative to ``max|e|``). Field
  :attr:`Comparison.max_rel`, label :data:`NORMWISE`.
* **element-wise relative error** ``max |a - e| / |e|`` (``0/0 -> 0``,
  ``x/0 -> inf``). Field :attr:`Comparison.max_rel_elementwise`, label
  :data:`ELEMENTWISE`. It explodes at entries near zero; it is the figure the
  ``rtol`` part of a tier is about.
* **worst element**: the element with the largest excess ``|a - e| - allowed``
  (a NaN/inf pattern mismatch ranks above every number); ties go to the first
  index in C order, everywhere (messages, ``worst``, ``worst_elements``).
* **ULP distance**: median, 99th percentile and maximum over the compared
  elements, written by :func:`format_ulp`.

A comparison has one of three outcomes (:attr:`Comparison.status`): ``"pass"``,
``"fail"`` or ``"not_comparable"`` -- nothing was compared numerically (all NaN in
both, empty, all zero where that is required not to be), which is never a pass.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping

import numpy as np

from parity.contract.values import as_numpy  # noqa: F401  (re-exported: comparison's public name)

from parity.storage.outputs import json_safe
from parity.contract.results import Status

__all__ = [
    "Comparison",
    "STATUSES",
    "NORMWISE",
    "ELEMENTWISE",
    "Locate",
    "as_numpy",
    "normwise_rel",
    "format_errors",
    "format_ulp",
    "working_eps",
    "not_comparable",
    "invariant_result",
    "failure_message",
    "greatest",
]

Locate = Callable[[tuple[int, ...]], str]

#: The three outcomes of a comparison.
STATUSES: tuple[str, ...] = (Status.PASS.value, Status.FAIL.value, Status.NOT_COMPARABLE.value)

#: Label of :attr:`Comparison.max_rel` wherever it is printed.
NORMWISE = "normwise rel err (max|a-e|/max|e|)"
#: Label of :attr:`Comparison.max_rel_elementwise` wherever it is printed.
ELEMENTWISE = "element-wise rel err (max |a-e|/|e|)"


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
        ``"full_product"``, ``"dtype"``, ``"dtype_audit"`` or ``"invariant"``.
    passed : bool
        True only when the comparison compared something and every unit agreed
        (always False when ``comparable`` is False).
    max_abs : float or None
        Greatest absolute difference over the elements finite in both (None when
        there are none or the comparison is not numeric).
    max_rel : float or None
        Normwise relative error ``max|a - e| / max|e|`` (:data:`NORMWISE`); for
        eigenspaces the largest projector error relative to ``max|P|``.
    n_mismatch, n_total : int
        Failing units / all units (elements; batch items for eigenspaces;
        tensors for a dtype audit).
    worst : dict or None
        The worst unit: ``{"index": [...], "location": str, "expected": ...,
        "actual": ..., ...}`` (largest excess; ties: first in C order).
    message : str
        Human summary; the first line stands alone, further lines (on failure)
        follow torch.testing's layout.
    details : dict
        Extras, keys as in docs/architecture.md: ``log10_rel_hist``, ``ulp``,
        ``nan_pattern``, ``worst_elements``, ``eigen_table`` ...
    n_compared : int or None
        Units actually compared numerically: elements finite in both arrays;
        finite-eigenvalue clusters for eigenspaces; audited tensors. None when
        the constructor did not count them.
    max_rel_elementwise : float or None
        Element-wise relative error ``max |a - e| / |e|`` (:data:`ELEMENTWISE`).
    comparable : bool
        False when nothing could be compared (see ``reason``); such a result
        never passes.
    reason : str
        Why the result is not comparable ("" when it is).
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
    n_compared: int | None = None
    max_rel_elementwise: float | None = None
    comparable: bool = True
    reason: str = ""

    def __post_init__(self) -> None:
        if not self.comparable:
            if not self.reason:
                raise ValueError("a not-comparable Comparison needs a reason")
            self.passed = False

    @property
    def status(self) -> str:
        """``"not_comparable"``, ``"pass"`` or ``"fail"`` (one of :data:`STATUSES`)."""
        if not self.comparable:
            return Status.NOT_COMPARABLE.value
        return (Status.PASS if self.passed else Status.FAIL).value

    def to_dict(self) -> dict:
        """JSON-safe dict: NaN/inf -> None, NumPy scalars -> Python, complex -> {"re", "im"}."""
        return json_safe({
            "kind": self.kind,
            "status": self.status,
            "passed": self.passed,
            "comparable": self.comparable,
            "reason": self.reason,
            "max_abs": self.max_abs,
            "max_rel": self.max_rel,
            "max_rel_elementwise": self.max_rel_elementwise,
            "n_mismatch": self.n_mismatch,
            "n_total": self.n_total,
            "n_compared": self.n_compared,
            "worst": self.worst,
            "message": self.message,
            "details": self.details,
        })


# --------------------------------------------------------------------------
# Small helpers
# --------------------------------------------------------------------------




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


def working_eps(*arrays: np.ndarray) -> float | None:
    """Machine epsilon of the narrowest floating precision among ``arrays``.

    The precision a comparison is limited by: a float32 candidate against a
    float64 reference carries float32 round-off. None when no array is floating.
    """
    eps = [float(np.finfo(a.dtype).eps) for a in arrays if np.issubdtype(a.dtype, np.inexact)]
    return max(eps) if eps else None


# --------------------------------------------------------------------------
# The figures, defined once
# --------------------------------------------------------------------------


def normwise_rel(max_abs: float | None, scale: float) -> float | None:
    """``max|a - e| / max|e|``; ``0/0 -> 0``, ``x/0 -> inf``, None when ``max_abs`` is None."""
    if max_abs is None:
        return None
    if scale > 0:
        return max_abs / scale
    return 0.0 if max_abs == 0 else math.inf


def format_errors(max_abs: float | None, max_rel: float | None,
                  max_rel_elementwise: float | None = None) -> str:
    """``"max abs err 1e-15, normwise rel err (...) 2e-16, element-wise rel err (...) 3e-16"``."""
    text = f"max abs err {_fmt(max_abs)}, {NORMWISE} {_fmt(max_rel)}"
    if max_rel_elementwise is not None:
        text += f", {ELEMENTWISE} {_fmt(max_rel_elementwise)}"
    return text


def _ulp_number(x: float) -> str:
    """``3`` / ``2.5`` / ``1.2e3`` / ``4.5e13``: short, exponent without ``+`` and zeros."""
    x = float(x)
    if not math.isfinite(x):
        return str(x)
    if abs(x) < 1000:
        return str(int(x)) if x == int(x) else f"{x:.2g}"
    mantissa, exponent = f"{x:.1e}".split("e")
    return f"{mantissa.rstrip('0').rstrip('.')}e{int(exponent)}"


def format_ulp(ulp: Mapping[str, Any] | None) -> str:
    """``"median 1 ulp, 99th percentile 3 ulp, max 1.2e3 ulp"`` ("" for None).

    Parameters
    ----------
    ulp : mapping or None
        ``details["ulp"]`` of an array comparison: ``median``, ``p99``, ``max``
        (and optionally ``dtype``, the precision the ulps are counted in, and
        ``sign_flips``, the pairs across zero left out of the statistics).
    """
    if not ulp:
        return ""
    flips = ulp.get("sign_flips") if isinstance(ulp.get("sign_flips"), int) else 0
    flipped = (f"{flips} pair(s) across zero (opposite signs, or zero on one side) not measured: "
               f"a ULP distance there means nothing") if flips else ""
    if not all(k in ulp and ulp[k] is not None for k in ("median", "p99", "max")):
        return flipped
    text = (f"median {_ulp_number(ulp['median'])} ulp, 99th percentile {_ulp_number(ulp['p99'])} ulp, "
            f"max {_ulp_number(ulp['max'])} ulp")
    if ulp.get("dtype"):
        text += f" (ulps of {ulp['dtype']})"
    return text + (f"; {flipped}" if flipped else "")


# --------------------------------------------------------------------------
# The one failure-message layout (torch.testing's ErrorMeta -> one message)
# --------------------------------------------------------------------------


def failure_message(title: str, *, n_mismatch: int | None = None, n_total: int = 0, unit: str = "elements",
                    findings: Iterable[str] = ()) -> str:
    """A failed comparison's message, laid out the same way by every kind.

    Parameters
    ----------
    title : str
        The first line; it stands alone (terminal tables and bisection print only it),
        e.g. ``"Linv: not close under tier 'tight' (...)"``.
    n_mismatch, n_total : int, optional
        Failing units of all units: adds ``"Mismatched {unit}: n / N (p%)"`` as the
        second line (left out when ``n_mismatch`` is None: the title counts already).
    unit : str
        What the counts count (``"elements"``, ``"batch items"``).
    findings : iterable of str
        One line per finding, most telling first (``""`` entries are skipped), e.g.
        :func:`greatest` lines.

    Returns
    -------
    str
        The lines joined by newlines.
    """
    lines = [title]
    if n_mismatch is not None:
        lines.append(f"Mismatched {unit}: {n_mismatch} / {n_total} ({_percent(n_mismatch, n_total)})")
    lines += [line for line in findings if line]
    return "\n".join(lines)


def greatest(what: str, value: float, where: str, allowed: float) -> str:
    """``"Greatest {what}: 0.1 at index (1,) (up to 1e-05 allowed)"``: one finding line."""
    return f"Greatest {what}: {value:.3g} at {where} (up to {allowed:.3g} allowed)"


# --------------------------------------------------------------------------
# Outcomes shared by the kinds
# --------------------------------------------------------------------------


def not_comparable(kind: str, name: str, reason: str, *, n_total: int = 0, n_compared: int = 0,
                   details: dict | None = None) -> Comparison:
    """A result that compared nothing: status ``not_comparable``, never a pass.

    Parameters
    ----------
    kind, name : str
        Comparison kind and quantity name (for the message).
    reason : str
        Why nothing was compared, one line, e.g. ``"all 125 elements are NaN in both"``.
    """
    return Comparison(kind=kind, passed=False, n_total=int(n_total), n_compared=int(n_compared),
                      message=f"{_label(name, kind)}: not comparable: {reason}",
                      details=details or {}, comparable=False, reason=reason)


def invariant_result(name: str, value: float, limit: float, *, n_compared: int, message: str,
                     details: dict | None = None) -> Comparison:
    """The result of an invariant check (a property that must hold on one backend).

    Parameters
    ----------
    name : str
        Invariant name, e.g. ``"friedel"``.
    value : float
        The measured violation, e.g. ``max|Id(q) - Id(-q)| / max Id``; NaN fails.
    limit : float
        Largest allowed ``value``.
    n_compared : int
        How many elements the check looked at (finite points, BZ points ...):
        0 makes the result ``not_comparable`` (a property of nothing holds vacuously).
    message : str
        Human summary (also the reason when nothing was compared).

    Returns
    -------
    Comparison
        kind ``"invariant"``, one unit; ``max_abs`` and ``max_rel`` are ``value``.
    """
    if n_compared <= 0:
        return not_comparable("invariant", name, message, n_total=1,
                              details={"limit": limit, **(details or {})})
    passed = bool(value <= limit)  # NaN fails
    return Comparison(kind="invariant", passed=passed, max_abs=float(value), max_rel=float(value),
                      n_mismatch=0 if passed else 1, n_total=1, message=message,
                      details={"limit": limit, **(details or {})}, n_compared=int(n_compared))
