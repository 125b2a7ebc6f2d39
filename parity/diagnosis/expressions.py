"""Simple expressions of small integers and pi: names a fitted factor (``1/(2 pi)``, ``-i/3``).

Public API
----------
simple_expression(c, rel_tol) -> (text, value) | None
recognise(c, residual, tier) -> (text, value) | None
"""
from __future__ import annotations

import math
from fractions import Fraction
from functools import lru_cache

import numpy as np

from parity.contract.tiers import Tier


@lru_cache(maxsize=1)
def _expression_table() -> tuple[np.ndarray, tuple[str, ...]]:
    """Values p/q pi^k s (p, q <= 12, |k| <= 3, s in 1, sqrt 2, sqrt 3), simplest first."""
    entries: dict[float, tuple[int, str, float]] = {}
    roots = ((1.0, "", 0), (math.sqrt(2.0), "sqrt2", 3), (math.sqrt(3.0), "sqrt3", 3))
    for p in range(1, 13):
        for q in range(1, 13):
            if math.gcd(p, q) != 1:
                continue
            for k in range(-3, 4):
                for root, root_name, root_cost in roots:
                    for root_up in (True, False):
                        if not root_name and not root_up:
                            continue
                        value = p / q * math.pi ** k * (root if root_up else 1.0 / root)
                        num, den = [str(p)] if p != 1 else [], [str(q)] if q != 1 else []
                        pi = "pi" if abs(k) == 1 else f"pi^{abs(k)}"
                        if k > 0:
                            num.append(pi)
                        elif k < 0:
                            den.append(pi)
                        if root_name:
                            (num if root_up else den).append(root_name)
                        top = " ".join(num) if num else "1"
                        text = top if not den else f"{top}/{den[0] if len(den) == 1 else '(' + ' '.join(den) + ')'}"
                        cost = p + q + 3 * abs(k) + root_cost
                        key = round(value, 12)  # one entry per value: the cheapest text
                        if key not in entries or entries[key][0] > cost:
                            entries[key] = (cost, text, value)
    items = sorted(entries.values(), key=lambda entry: entry[0])
    return np.array([value for _, _, value in items]), tuple(text for _, text, _ in items)


_PHASES = tuple(Fraction(p, q) for q in (1, 2, 3, 4, 6, 8, 12) for p in range(-q + 1, q + 1)
                if math.gcd(p, q) == 1)


def simple_expression(c: complex | float, rel_tol: float) -> tuple[str, complex | float] | None:
    """Recognise ``c`` as a simple expression of small integers and pi.

    Parameters
    ----------
    c : complex or float
        The factor.
    rel_tol : float
        Relative tolerance of the match (``|c - value| <= rel_tol * |c|``).

    Returns
    -------
    (text, value) or None
        E.g. ``("1/(2 pi)", 0.159...)``, ``("-i/3", -0.333j)``, ``("8 pi^2", 78.95...)``;
        the simplest expression within the tolerance.
    """
    c = complex(c)
    r = abs(c)
    if not math.isfinite(r) or r == 0:
        return None
    values, texts = _expression_table()
    hits = np.flatnonzero(np.abs(values - r) <= rel_tol * r)
    if hits.size == 0:
        return None
    mag_text, mag = texts[int(hits[0])], float(values[int(hits[0])])
    phase = math.atan2(c.imag, c.real) / math.pi
    frac = next((f for f in _PHASES if abs(float(f) - phase) <= max(rel_tol, 1e-15) * 2), None)
    if frac is None and abs(abs(phase) - 1.0) <= rel_tol * 2:
        frac = Fraction(1)
    if frac is None:
        return None
    exact = {Fraction(0): 1.0, Fraction(1): -1.0, Fraction(1, 2): 1j, Fraction(-1, 2): -1j}
    value = mag * exact.get(frac, complex(math.cos(math.pi * frac), math.sin(math.pi * frac)))
    if frac == 0:
        return mag_text, mag
    if frac == 1:
        return f"-{mag_text}", -mag
    unit = {Fraction(1, 2): "i", Fraction(-1, 2): "-i"}.get(frac)
    if unit is None:
        unit = f"exp({frac.numerator} i pi/{frac.denominator})" if frac.numerator != 1 else \
            f"exp(i pi/{frac.denominator})"
        return (unit if mag_text == "1" else f"{mag_text} {unit}"), value
    if mag_text == "1":
        return unit, value
    if mag_text.startswith("1/"):
        return unit + mag_text[1:], value
    return f"{mag_text} {unit}", value


def recognise(c: complex | float, residual: float, tier: Tier) -> tuple[str, complex | float] | None:
    """A simple expression within the accuracy the data allow (never looser than 1e-2)."""
    tol = min(max(4.0 * residual, 4.0 * (tier.rtol + tier.atol), 1e-12), 1e-2)
    return simple_expression(c, tol)

