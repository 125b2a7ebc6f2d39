"""Partial agreement: the error confined to a subset, a named one ("k = 0 point") or index
sets along the axes ("first atom agrees", "odd l indices", "dof 3-5"), and whether it
grows along an axis (accumulation without an exact running sum).
"""
from __future__ import annotations

from typing import Mapping

import numpy as np

from parity.diagnosis.engine import Context, Pair
from parity.diagnosis.result import Signature
from parity.diagnosis.wording import where_text, within


def _growth(profile: np.ndarray, bad: np.ndarray) -> bool:
    """The error grows (almost) monotonically over the failing indices of an axis."""
    vals = profile[bad]
    if vals.size < 3 or vals[0] <= 0:
        return False
    steps = np.diff(vals)
    return bool(np.mean(steps >= 0) >= 0.8 and vals[-1] >= 3.0 * vals[0])


def _partial(p: Pair, subsets: Mapping[str, np.ndarray]) -> list[Signature]:
    """The error confined to a subset: a named one, or index sets along the axes."""
    bad = p.mismatch | p.pattern_mismatch
    n_bad, n = int(bad.sum()), bad.size
    if n_bad == 0 or n_bad == n:
        return []
    out = []
    base = {"error_before": p.error, "allowed": f"tier {p.tier.name}", "differ": n_bad, "of": n}
    for name, mask in subsets.items():
        if mask.all() or not mask.any():
            continue
        outside = ~mask
        res_out, _ = within(p.a[outside & p.finite], p.e[outside & p.finite], p.tier)
        if not bad[outside].any():
            out.append(Signature("partial", f"only {name} differ"[:48],
                                 f"The error is confined to the {name}: {n_bad} of {int(mask.sum())} of its "
                                 f"elements differ; everything outside agrees within tier {p.tier.name}.",
                                 {**base, "subset": name, "mode": "confined"}, float(res_out), True))
        elif not bad[mask].any() and bad[outside].mean() >= 0.9:
            res_in, _ = within(p.a[mask & p.finite], p.e[mask & p.finite], p.tier)
            out.append(Signature("partial", f"only {name} agree"[:48],
                                 f"Only the {name} agree(s) within tier {p.tier.name}; "
                                 f"{100 * bad[outside].mean():.0f} % of the rest differ.",
                                 {**base, "subset": name, "mode": "agrees"}, float(res_in), False))
    where, exact, per_axis = where_text(bad, p.names)
    if per_axis:
        first = []
        for name, idx in per_axis:
            ax = p.names.index(name)
            if isinstance(idx, list) and idx == list(range(1, p.e.shape[ax])):
                first.append(ax)
        grows = []
        for ax in first:
            others = tuple(i for i in range(p.e.ndim) if i != ax)
            profile = np.max(p.diff, axis=others)
            if _growth(profile, np.arange(p.e.shape[ax]) >= 1):
                grows.append(p.names[ax])
        parts = [f"first {p.names[ax]} agrees" for ax in first]
        rest = [t for t in where.split(", ") if not t.startswith("all but the first")]
        phrase = ", ".join(parts + (["only " + " & ".join(rest) + " differ"] if rest else
                                    ["rest drift"] if parts else []))
        sentence = (f"The error is confined to {where}: {n_bad} of the {n} elements differ, all of them "
                    f"there; everything else agrees within tier {p.tier.name}")
        if first:
            sentence += (f". The first {' and the first '.join(p.names[ax] for ax in first)} agree"
                         f"{'s' if len(first) == 1 else ''} and the later ones drift, as a buffer reused "
                         "across a loop produces")
        if grows:
            sentence += f"; the error grows along {', '.join(grows)} (accumulation)"
        params = {**base, "where": where, "per_axis": per_axis, "exact_product": exact,
                  "first_agrees": [p.names[ax] for ax in first], "grows_along": grows}
        out.append(Signature("partial", phrase[:60], sentence + ".", params, 0.0, True))
    return out


def examine(p: Pair, ctx: Context) -> list[Signature]:
    """Where the error is confined (named subsets first, then index sets)."""
    return _partial(p, ctx.subsets)
