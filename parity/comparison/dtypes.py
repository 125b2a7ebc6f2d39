"""Dtype checks: one quantity's dtype, and an audit of every tensor of a model."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Iterable, Mapping

from parity.comparison.common import Comparison, _dtype_name, _family, failure_message, not_comparable
from parity.comparison.comparator import Comparator, RunView, Setting

if TYPE_CHECKING:  # pragma: no cover
    from parity.stages import Stage

__all__ = ["DtypeKind", "check_dtype", "audit_dtypes"]


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
                      worst=worst, message=message, n_compared=1,
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
        lists every offender on its own line. ``not_comparable`` when no
        floating tensor was found to audit.
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

    details = {"offenders": offenders, "expected_real": want_real, "expected_complex": want_complex}
    if audited == 0:
        return not_comparable("dtype_audit", "dtype audit", f"no floating tensor among the "
                              f"{len(named)} given to audit", details=details)
    if offenders:
        # The title counts the offenders already: no "Mismatched" line.
        message = failure_message(f"dtype audit: {len(offenders)} of {audited} floating tensors have the wrong dtype",
                                  findings=[f"  {o['name']}: {o['dtype']}, expected {o['expected']} ({o['reason']})"
                                            for o in offenders])
        first = offenders[0]
        worst = {"index": [], "location": first["name"], "expected": first["expected"],
                 "actual": first["dtype"]}
    else:
        message = f"dtype audit: all {audited} floating tensors are {want_real}/{want_complex}"
        worst = None
    return Comparison(kind="dtype_audit", passed=not offenders, n_mismatch=len(offenders),
                      n_total=audited, worst=worst, message=message, details=details,
                      n_compared=audited)


class _Dtype:
    """A dtype name standing in for an array in the dtype audit."""

    def __init__(self, name: str) -> None:
        self.dtype = str(name)


class DtypeKind(Comparator):
    """Every candidate intermediate at the run's precision (the candidate alone).

    The stage's quantity maps each intermediate's name to its dtype name.
    """

    name = "dtype"
    needs_reference = False
    computes = False

    def compare(self, stage: "Stage", run: RunView, setting: Setting, feed: Any = None) -> Comparison:
        want_r, want_c = ("float64", "complex128") if run.dtype == "float64" else ("float32", "complex64")
        named = {k: _Dtype(v) for k, v in run.candidate_value(stage.quantity).items()}
        return audit_dtypes(named, want_r, want_c)

    def count_units(self, n_total: Any) -> tuple[str, str]:
        return "tensors", "tensors"
