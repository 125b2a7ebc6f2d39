"""The diagnosis of an array pair: rearrange, prepare, then run the registry's hypotheses.

:func:`diagnose_arrays` names a shape mismatch or a dtype-class mismatch first (and
rearranges the pair), prepares the pair (:func:`parity.diagnosis.engine.prepare_pair`),
then runs the families of :data:`parity.diagnosis.registry.HYPOTHESES` stage by stage
(see :class:`parity.diagnosis.registry.Stage`) and orders what they found best first
(:func:`finish`). It never raises: a bug in a family becomes an ``internal_error`` signature.

Public API
----------
diagnose_arrays(expected, actual, tier, *, axes, grid_shape, matrix_axes, subsets, time_budget_s)
diagnose_gradient(expected, actual, tier, axes)
finish(sigs, clock, extra) -> list[Signature]
"""
from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

import numpy as np

from parity.contract.values import as_numpy
from parity.contract.tiers import Tier
from parity.diagnosis.engine import (Clock, Context, Pair, analysed_axes, matrix_groups, prepare_pair,
                                     subset_masks, work_array)
from parity.diagnosis.hypotheses.dtype_class import class_signature
from parity.diagnosis.hypotheses.shape import shape_signature
from parity.diagnosis.registry import Stage, descriptive, hypotheses, rank
from parity.diagnosis.result import Signature


def finish(sigs: list[Signature], clock: Clock, extra: Mapping[str, Any] | None = None) -> list[Signature]:
    """Order best first (explaining by simplicity, then the rest by residual); flag a cut-short run.

    Simplicity is the registry's :func:`~parity.diagnosis.registry.rank`.
    """
    if clock.hit or extra:
        note = dict(extra or {})
        if clock.hit:
            note["cut_short"] = True
        sigs = [Signature(s.name, s.phrase, s.sentence, {**s.params, **note}, s.residual, s.explains)
                for s in sigs]
        if clock.hit and not any(s.explains for s in sigs):
            sigs.append(Signature("incomplete", "diagnosis cut short",
                                  "The diagnosis ran out of its time budget before every signature was tested; "
                                  "nothing tested so far explains the difference.", note, math.nan, False))

    def key(s: Signature):
        res = s.residual if isinstance(s.residual, float) and math.isfinite(s.residual) else math.inf
        simplicity = rank(s.name)
        return (not s.explains, simplicity if s.explains else 0, res, simplicity)

    return sorted(sigs, key=key)


def _equivalents(sigs: list[Signature]) -> list[Signature]:
    """Several transforms explaining the same data are the same statement: say so on the first."""
    explaining = [s for s in sigs if s.explains and not descriptive(s.name)]
    if len(explaining) < 2:
        return sigs
    head = explaining[0]
    others = [s.phrase for s in explaining[1:]]
    new_head = Signature(head.name, head.phrase,
                         head.sentence.rstrip(".") + f" (equivalently: {'; '.join(others)}).",
                         {**head.params, "equivalent": others}, head.residual, head.explains)
    return [new_head if s is head else s for s in sigs]


def diagnose_arrays(expected: Any, actual: Any, tier: Tier, *, axes: Sequence[str] | None = None,
                    grid_shape: tuple[int, int, int] | None = None,
                    matrix_axes: tuple | None = None,
                    subsets: Mapping[str, Any] | None = None,
                    time_budget_s: float = 0.05) -> list[Signature]:
    """Test the signature library against a (reference, candidate) pair of arrays.

    Parameters
    ----------
    expected, actual : array_like or torch.Tensor
        Reference and candidate (any shape; numeric; real or complex).
    tier : Tier
        The stage's tier: ``|a - T(e)| <= atol * max|T(e)| + rtol * |T(e)|`` decides ``explains``.
    axes : sequence of str, optional
        Name of each axis of ``expected`` in the stage's own terms, e.g.
        ``("BZ point", "dof", "dof")``. Default ``"axis 0"``, ...
    grid_shape : (n_h, n_k, n_l), optional
        The first axis is a flat grid of this shape (h slowest): it is analysed as
        three axes named ``h``, ``k``, ``l``.
    matrix_axes : (i, j), ((i0, i1), (j0, j1)) or (), optional
        Axes (or axis groups) a transpose exchanges, numbered in ``expected``'s axes.
        Default: the last two when square, else the leading and trailing axis groups
        of equal shape (``(4, 6, 27, 4, 6)`` -> ``((0, 1), (3, 4))``); none for a grid.
        ``()`` disables transposes.
    subsets : mapping of str -> bool array, optional
        Named masks (shape of ``expected``) the partial-agreement and NaN-pattern
        signatures may name, e.g. ``{"Bragg points": ...}``, ``{"k = 0 point": ...}``.
    time_budget_s : float, default 0.05
        Stop testing after this many CPU seconds of the calling thread
        (``params["cut_short"]``); what was verified stays valid, nothing
        unverified is claimed.

    Returns
    -------
    list of Signature
        Best first: explaining signatures by simplicity, then near-explanations by
        residual. ``[]`` when the arrays agree or nothing is found. Never raises.
    """
    clock = Clock(time_budget_s)
    try:
        return _diagnose_arrays(expected, actual, tier, axes, grid_shape, matrix_axes, subsets, clock)
    except Exception as exc:  # diagnosis must never break a run: report, do not raise
        return [Signature("internal_error", "diagnosis failed",
                          f"The diagnosis failed: {type(exc).__name__}: {exc}.",
                          {"error": f"{type(exc).__name__}: {exc}"}, math.nan, False)]


def _diagnose_arrays(expected, actual, tier, axes, grid_shape, matrix_axes, subsets, clock) -> list[Signature]:
    try:
        e, a = np.atleast_1d(work_array(expected)), np.atleast_1d(work_array(actual))
    except TypeError:
        return []
    if e.shape == a.shape:
        return _diagnose_same_shape(e, a, tier, axes, grid_shape, matrix_axes, subsets, clock)
    shape_sig, rearranged = shape_signature(e, a)
    if rearranged is None:
        return [shape_sig]
    rest = _diagnose_same_shape(e, rearranged, tier, axes, grid_shape, matrix_axes, subsets, clock)
    if not rest:  # the rearrangement alone makes them agree
        return [Signature(shape_sig.name, shape_sig.phrase, shape_sig.sentence.rstrip(".") +
                          f"; rearranged, they agree within tier {tier.name}.", shape_sig.params, 0.0, True)]
    return [shape_sig] + [Signature(s.name, f"{shape_sig.phrase}; {s.phrase}"[:60],
                                    f"After the rearrangement: {s.sentence}", {**s.params, "after": shape_sig.phrase},
                                    s.residual, s.explains) for s in rest]


def _diagnose_same_shape(e, a, tier, axes, grid_shape, matrix_axes, subsets, clock) -> list[Signature]:
    sigs: list[Signature] = []
    if np.iscomplexobj(e) != np.iscomplexobj(a):
        sig, e, a = class_signature(e, a, tier)
        sigs.append(sig)
        if sig.explains:
            return finish(sigs, clock)
    if e.size == 0:
        return sigs
    shape, names, offset = analysed_axes(e.shape, axes, grid_shape)
    ctx = Context(clock, subset_masks(subsets, e.shape, shape))
    p = prepare_pair(e.reshape(shape), a.reshape(shape), names, tier, matrix_groups(shape, matrix_axes, offset))
    if not p.mismatch.any() and not p.pattern_mismatch.any():
        return finish(sigs, clock)
    # How the arrays were analysed, for figure(): the grid reshape and the axis names.
    analysed = {"analysed_shape": list(shape), "analysed_axes": list(names)}
    if p.pattern_mismatch.any():
        pattern = [s for h in hypotheses(Stage.PATTERN) for s in h.examine(p, ctx)]
        sigs += pattern
        if any(s.explains for s in pattern):
            return finish(sigs, clock, analysed)
        p.ignore_pattern = True
    if not p.finite.any():
        return finish(sigs, clock)
    sigs += _finite_stages(p, ctx)
    return _equivalents(finish(sigs, clock, analysed))


def _finite_stages(p: Pair, ctx: Context) -> list[Signature]:
    """The ROUNDOFF, TRANSFORM, SEARCH and DESCRIBE stages on the elements finite in both."""
    found: list[Signature] = []
    # Cheapest and most decisive first: round-off leaves nothing for a transform to remove.
    for h in hypotheses(Stage.ROUNDOFF):
        found = list(h.examine(p, ctx))
        if found:
            break
    if not found:
        # The families watch the time budget themselves (run_transforms checks it per transform).
        for h in hypotheses(Stage.TRANSFORM):
            found += h.examine(p, ctx)
    for h in hypotheses(Stage.SEARCH):
        if any(s.explains for s in found) or ctx.clock.out():
            break
        found += h.examine(p, ctx)
    if not any(s.explains for s in found):
        for h in hypotheses(Stage.DESCRIBE):
            if not ctx.clock.out():
                found += h.examine(p, ctx)
    return found


def diagnose_gradient(expected: Any, actual: Any, tier: Tier,
                      axes: Sequence[str] | None = None) -> list[Signature]:
    """Signatures of a failing gradient (autograd against finite differences).

    Parameters
    ----------
    expected, actual : array_like, shape (n_params,) or scalar
        Reference (e.g. central differences) and candidate (autograd) derivatives;
        any shape when ``axes`` names its axes (d Id/d q: (n_points, 3)).
    tier : Tier
    axes : sequence of str, optional
        Axis names; default ``("parameter",)`` for a 1-d gradient.

    Returns
    -------
    list of Signature
        As :func:`diagnose_arrays` with axis ``"parameter"``: a gradient of a
        single parameter can only be a *simple* factor (sign flip ``x -1``, ``x 2``,
        ``x 1/(2 pi)``, ``zero``), never an arbitrary ratio; plus NaN patterns.
    """
    e, a = np.atleast_1d(as_numpy(expected)), np.atleast_1d(as_numpy(actual))
    if axes is None and e.ndim == 1:
        axes = ("parameter",)
    return diagnose_arrays(e, a, tier, axes=tuple(axes) if axes else None, matrix_axes=())
