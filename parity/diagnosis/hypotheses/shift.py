"""Index shift along one axis: ``candidate[i] = reference[i + s]``, ``s`` in +-1, +-2.

Judged on the overlapping elements (the ``uncovered`` end slab has no counterpart);
``cyclic`` when the wrapped slab agrees too. The smallest explaining shift per axis is
kept (periodic data are explained by several).
"""
from __future__ import annotations

import numpy as np

from parity.diagnosis.engine import (Context, Fit, Pair, Transform, factor_kind, judge_full, screen,
                                     transform_signature)
from parity.diagnosis.result import Signature

#: Index shifts tried along every axis (cand[i] = ref[i + s]).
SHIFTS = (1, -1, 2, -2)


def _sentence(params: dict) -> str:
    ax, s = params.get("axis"), params["shift"]
    text = (f"candidate at {ax} index i = reference at {ax} index i {'+' if s > 0 else '-'} {abs(s)} "
            f"(an index shift by {s:+d} along {ax})")
    if params.get("cyclic"):
        return text + ", wrapping around cyclically"
    return text + (f"; {params['uncovered']} element(s) at the end have no counterpart and are not judged"
                   if params.get("uncovered") else "")


def _transforms(p: Pair) -> list[Transform]:
    out = []
    for s in SHIFTS:
        for ax, n in enumerate(p.e.shape):
            if n < 2 * abs(s) + 1:
                continue
            i = np.arange(n)
            src = np.where((i + s >= 0) & (i + s < n), i + s, -1)
            out.append(Transform("shift", f"shift {s:+d} along {p.names[ax]}",
                                 {"axis": p.names[ax], "axis_index": ax, "shift": s}, axis=ax, source=src,
                                 sentence=_sentence))
    return out


def _cyclic_shift(p: Pair, tr: Transform, factor: str) -> tuple[Transform, Fit] | None:
    """The cyclic version of an explaining shift, when the wrapped slab agrees too."""
    n = p.e.shape[tr.axis]
    cyc = Transform("shift", tr.label, {**tr.params, "cyclic": True}, axis=tr.axis,
                    source=(np.arange(n) + tr.params["shift"]) % n, sentence=_sentence)
    fit = judge_full(p, cyc, factor)
    if fit is not None and fit.explains:
        return cyc, fit
    return None


def examine(p: Pair, ctx: Context) -> list[Signature]:
    """Screen the shifts, smallest first; an axis a shift explains is not shifted further."""
    out: list[Signature] = []
    shifted_axes: set[int] = set()
    for tr in _transforms(p):
        if ctx.clock.out():
            break
        if tr.axis in shifted_axes:
            continue  # a smaller shift along this axis already explains (periodic data)
        factor = factor_kind(p, tr)
        fit = screen(p, tr, factor)
        if fit is None:
            continue
        if fit.explains:
            shifted_axes.add(tr.axis)
            if fit.uncovered:
                cyclic = _cyclic_shift(p, tr, factor)
                if cyclic is not None:
                    tr, fit = cyclic
        out.append(transform_signature(p, tr, fit, extra={"uncovered": fit.uncovered,
                                                          "cyclic": bool(tr.params.get("cyclic", False))}))
    return out
