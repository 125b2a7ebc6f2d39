"""How the NaN/inf patterns differ: each kind (reference NaN -> candidate finite, ...) with its
count, its place (index sets per axis, or a named subset) and its form (clamped, filled
with zeros, filled, NaN where the reference is finite). Explains when the finite elements
agree within the tier.
"""
from __future__ import annotations

from typing import Mapping

import numpy as np

from parity.diagnosis.engine import Context, Pair
from parity.diagnosis.result import Signature
from parity.diagnosis.wording import number_text, plain, short, where_text, within


_CODE_NAMES = {0: "finite", 1: "NaN", 2: "+inf", 3: "-inf"}


def _code_name(code: int) -> str:
    if code < 4:
        return _CODE_NAMES[code]
    re, im = divmod(code, 4)
    return f"{_CODE_NAMES[re]}{'' if im == 0 else ' + ' + _CODE_NAMES[im] + 'i'}"


def _nan_pattern(p: Pair, subsets: Mapping[str, np.ndarray]) -> Signature:
    """Describe how the NaN/inf patterns differ; explains when the finite elements agree."""
    mm = p.pattern_mismatch
    kinds = []
    pairs = np.unique(p.code_e[mm].astype(np.int64) * 64 + p.code_a[mm].astype(np.int64))
    for ce, ca in (divmod(int(c), 64) for c in pairs):
        sel = mm & (p.code_e == ce) & (p.code_a == ca)
        count = int(sel.sum())
        where, _, per_axis = where_text(sel, p.names)
        kind = {"reference": _code_name(ce), "candidate": _code_name(ca), "count": count,
                "where": where, "per_axis": per_axis}
        named = next((k for k, m in subsets.items() if np.array_equal(m, sel)), None)
        inside = next((k for k, m in subsets.items() if np.all(m[sel]) and not np.array_equal(m, sel)), None)
        if named:
            kind["subset"] = named
        elif inside:
            kind["within"] = inside
        if ca == 0:
            vals = p.a[sel]
            uniq = np.unique(vals)
            if uniq.size == 1 and uniq[0] == 0:
                kind["form"], kind["value"] = "filled with zeros", 0.0
            elif uniq.size == 1:
                kind["form"], kind["value"] = "clamped", plain(uniq[0])
            else:
                kind["form"] = "filled"
                kind["range"] = [float(np.min(np.abs(vals))), float(np.max(np.abs(vals)))]
        elif ce == 0:
            kind["form"] = f"{_code_name(ca)} where the reference is finite"
        else:
            kind["form"] = f"{_code_name(ca)} instead of {_code_name(ce)}"
        kinds.append(kind)
    residual, ok = within(p.a[p.finite], p.e[p.finite], p.tier)
    phrases, sentences = [], []
    for k in kinds:
        label = k.get("subset")
        if k["form"] == "clamped":
            phrase = (f"{label} clamped, not {k['reference']}" if label
                      else f"{k['count']} {k['reference']} clamped to {short(abs(k['value']))}")
            text = f"clamped to one finite value {number_text(k['value'])}"
        elif k["form"] in ("filled with zeros", "filled"):
            phrase = (f"{label} filled, not {k['reference']}" if label
                      else f"{k['count']} {k['reference']} {k['form']}")
            text = k["form"] + (f" (|values| {short(k['range'][0])} to {short(k['range'][1])})" if "range" in k else "")
        else:
            phrase = f"{k['count']} x {k['form']}" if not label else f"{label}: {k['form']}"
            text = k["form"]
        phrases.append(phrase)
        where = f"the {label}" if label else k["where"]
        sentences.append(f"{k['count']} element(s) that are {k['reference']} in the reference are {text} in the "
                         f"candidate, at {where}" + (f" (all within {k['within']})" if "within" in k else ""))
    tail = (f"; the finite elements agree within tier {p.tier.name} (residual {short(residual)})" if ok else
            f"; the finite elements differ as well (normwise {short(residual)})")
    params = {"kinds": kinds, "mismatched": int(mm.sum()), "error_before": p.error,
              "allowed": f"tier {p.tier.name}"}
    return Signature("nan_pattern", "; ".join(phrases)[:60], "; ".join(sentences) + tail + ".", params,
                     float(residual), bool(ok))



def examine(p: Pair, ctx: Context) -> list[Signature]:
    """The NaN/inf pattern signature (one), judged against the named subsets."""
    return [_nan_pattern(p, ctx.subsets)]
