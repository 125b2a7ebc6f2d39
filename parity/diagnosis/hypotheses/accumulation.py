"""Accumulation: ``candidate`` = running sum of ``reference`` along an axis, on a subset of
fibres (a buffer reused across a loop and never reset), optionally in items of a few
entries (the x, y, z rows of an atom).
"""
from __future__ import annotations

import numpy as np

from parity.contract.values import nonfinite_code
from parity.diagnosis.engine import Clock, Context, Pair
from parity.diagnosis.result import Signature
from parity.diagnosis.wording import short, where_text, within

#: Running-sum (accumulation) search: strides (elements per item) tried along an axis.
ACCUMULATION_STRIDES = (1, 2, 3, 4, 6)


def _fibre(x: np.ndarray, index: tuple, ax: int) -> np.ndarray:
    """The 1-D fibre of ``x`` along ``ax`` through a multi-index."""
    take = list(index)
    take[ax] = slice(None)
    return x[tuple(take)]


def _accumulation(p: Pair, clock: Clock) -> list[Signature]:
    """candidate = running sum of the reference along an axis (a buffer reused across a loop).

    Judged per fibre along the axis: every fibre must equal either the reference's or
    its running sum; ``stride`` > 1 sums items of ``stride`` consecutive entries
    (e.g. the x, y, z rows of one atom). The fibre through the worst element is tested
    first (cheap); a hypothesis that survives is verified on every element against
    ``T(e)``: the running sum on the accumulated fibres, the reference elsewhere.
    """
    worst = np.unravel_index(int(np.argmax(np.where(p.pattern_mismatch, np.inf, p.diff))), p.e.shape)
    for ax, n in enumerate(p.e.shape):
        for g in ACCUMULATION_STRIDES:
            if clock.out():
                return []
            if n % g or n // g < 3:
                continue
            j = worst[ax] % g
            fe, fa = _fibre(p.e, worst, ax)[j::g], _fibre(p.a, worst, ax)[j::g]
            with np.errstate(invalid="ignore", over="ignore"):
                fc = np.cumsum(fe)
            if not (np.all(np.isfinite(fc)) and np.all(np.isfinite(fa)) and within(fa, fc, p.tier)[1]):
                continue
            sig = _accumulated(p, ax, g)
            if sig is not None:
                return [sig]
    return []


def _accumulated(p: Pair, ax: int, g: int) -> Signature | None:
    """Verify the running-sum hypothesis along ``ax`` (items of ``g``) on the whole array."""
    n = p.e.shape[ax]
    shape = p.e.shape[:ax] + (n // g, g) + p.e.shape[ax + 1:]
    e, a = p.e.reshape(shape), p.a.reshape(shape)
    with np.errstate(invalid="ignore", over="ignore"):
        c = np.cumsum(e, axis=ax)
    fin = np.isfinite(c) & np.isfinite(a)
    close = fin & (np.abs(np.where(fin, a - c, 0)) <= p.tier.atol * float(np.abs(np.where(fin, c, 0)).max())
                   + p.tier.rtol * np.abs(np.where(fin, c, 0)))
    bad_ref = np.any((p.mismatch | p.pattern_mismatch).reshape(shape), axis=ax)
    accumulated = np.all(close, axis=ax) & bad_ref  # per fibre (the within-item axis kept)
    if not accumulated.any():
        return None
    t = np.where(np.expand_dims(accumulated, ax), c, e)
    residual, ok = within(a[fin].reshape(-1), t[fin].reshape(-1), p.tier)
    if not ok or not np.array_equal(nonfinite_code(t), nonfinite_code(a)):
        return None
    fibre_names = p.names[:ax] + (f"entry within a {p.names[ax]} item",) + p.names[ax + 1:]
    where, _, per_axis = where_text(accumulated, fibre_names)
    along = p.names[ax] if g == 1 else f"{p.names[ax]} (in items of {g})"
    params = {"axis": p.names[ax], "axis_index": ax, "stride": g, "fibres": int(accumulated.sum()),
              "of_fibres": int(accumulated.size), "where": where, "per_axis": per_axis,
              "error_before": p.error, "allowed": f"tier {p.tier.name}"}
    scope = "" if where == "everywhere" else f" at {where}"
    phrase = f"running sum along {p.names[ax]}" + (f" (in {g}s)" if g > 1 else " (reused buffer)")
    sentence = (f"candidate = running sum of the reference along {along}{scope} (the first entry agrees, "
                f"each later one adds all before it: a buffer reused across the loop and never reset); "
                f"the other fibres agree; residual {short(residual)}, within tier {p.tier.name}.")
    return Signature("accumulation", phrase, sentence, params, float(residual), True)


def examine(p: Pair, ctx: Context) -> list[Signature]:
    """The running sum along the first axis and stride that explain (at most one signature)."""
    return _accumulation(p, ctx.clock)
