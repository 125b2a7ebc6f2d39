"""The first divergence of a run, in one sentence (the report's verdict and ``divergence_summary``).

Pure functions of a result dict (schema 1): which stage diverged first, and the
plain-text clause that says how (elements outside the tier, the worst element,
the normwise relative error; or the error or reason of a stage that did not compare).
"""

from __future__ import annotations

from typing import Any, Mapping

from parity.contract.results import DIVERGING as RESULT_DIVERGING, Status
from parity.comparison.engine import NORMWISE
from parity.rendering.formatting import fmt, fmt_index, fmt_rel, fmt_tol, headline, is_num

__all__ = ["DIVERGING", "first_divergence", "divergence_summary", "divergence_clause", "rel_errors",
           "effective_tier"]

#: Statuses that count as a divergence, in the order of preference for "first".
DIVERGING = RESULT_DIVERGING


def first_divergence(result: Mapping[str, Any]) -> tuple[int, dict] | None:
    """Locate the first diverging stage of a result.

    Uses ``result["first_failure"]`` when it names a stage (a string, or an
    object with ``name``/``stage``); otherwise the first stage, in registry
    order, whose status is ``fail`` or ``error``; otherwise (a run marked not
    passed with no such stage) the first stage that did not pass.

    Parameters
    ----------
    result : mapping
        A parity result.

    Returns
    -------
    (int, dict) or None
        Position in ``result["stages"]`` and the stage, or ``None`` when the
        run passed and no stage diverged.
    """
    stages = list(result.get("stages") or [])
    ref = result.get("first_failure")
    if isinstance(ref, Mapping):
        ref = ref.get("name", ref.get("stage"))
    if isinstance(ref, str):
        for i, stage in enumerate(stages):
            if stage.get("name") == ref:
                return i, stage
    for i, stage in enumerate(stages):
        if stage.get("status") in DIVERGING:
            return i, stage
    if not result.get("passed", True):
        for i, stage in enumerate(stages):
            if stage.get("status") != Status.PASS:
                return i, stage
    return None


def rel_errors(stage: Mapping[str, Any]) -> tuple[Any, Any]:
    """(normwise, element-wise) relative error of a stage record, as :mod:`parity.comparison.engine` defines them.

    ``max_rel`` is normwise (``max|a-e|/max|e|``); ``max_rel_elementwise``
    (``max |a-e|/|e|``) is a top-level field, or under ``details`` in results
    written before it was one.
    """
    details = stage.get("details") if isinstance(stage.get("details"), Mapping) else {}
    elementwise = stage.get("max_rel_elementwise", details.get("max_rel_elementwise"))
    return stage.get("max_rel"), elementwise


def effective_tier(stage: Mapping[str, Any]) -> tuple[Any, Any, Any]:
    """(rtol, atol, n_terms) the stage was judged by: the comparison's own (size-scaled) tier if recorded.

    ``n_terms`` is ``None`` unless the tier was scaled for a sum of more than one term.
    """
    details = stage.get("details") if isinstance(stage.get("details"), Mapping) else {}
    tier = details.get("tier") if isinstance(details.get("tier"), Mapping) else {}
    return (tier.get("rtol", stage.get("rtol")), tier.get("atol", stage.get("atol")),
            tier.get("n_terms") if is_num(tier.get("n_terms")) and tier.get("n_terms") > 1 else None)


def divergence_clause(stage: Mapping[str, Any]) -> str:
    """The part of the verdict sentence after the stage name."""
    status = stage.get("status")
    first_line = headline(stage.get("message"))
    if status == Status.ERROR:
        return f"error: {first_line or 'the stage raised'}"
    if status == Status.NOT_COMPARABLE:
        return f"not comparable: {stage.get('reason') or first_line or 'no reason given'}"
    n_mis, n_tot = stage.get("n_mismatch"), stage.get("n_total")
    if not is_num(n_mis) or not is_num(n_tot):
        return first_line or "comparison failed"
    text = f"{n_mis} of {n_tot} elements outside tier `{stage.get('tier', '?')}`"
    rtol = stage.get("rtol")
    if is_num(rtol):
        text += f" (rtol {fmt_tol(rtol)})"
    worst = stage.get("worst") or {}
    if worst:
        where = worst.get("location") or fmt_index(worst.get("index")) or "?"
        text += (f"; worst at {where}: expected {fmt(worst.get('expected'), 2, 'NaN')}, "
                 f"got {fmt(worst.get('actual'), 2, 'NaN')}")
    normwise, _ = rel_errors(stage)
    if is_num(normwise):
        text += f"; {NORMWISE} {fmt_rel(normwise)}"
    return text


def divergence_summary(result: Mapping[str, Any]) -> str | None:
    """One plain-text sentence naming the first divergence.

    Example: ``First divergence: phase 3, stage `Winv` — 12 of 192 elements
    outside tier `decomposition` (rtol 1e-9); worst at BZ (dh,dk,dl)=(1,0,1):
    expected 0.032, got 0.035; normwise rel err (max|a-e|/max|e|) 0.42%``.

    Parameters
    ----------
    result : mapping
        A parity result.

    Returns
    -------
    str or None
        ``None`` when nothing diverged.
    """
    found = first_divergence(result)
    if found is None:
        return None
    _, stage = found
    return (f"First divergence: phase {stage.get('phase')}, stage `{stage.get('name')}` \u2014 "
            f"{divergence_clause(stage)}")
