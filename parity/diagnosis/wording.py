"""Words and numbers for phrases and sentences, and the residual rule (pure functions).

Shared by every hypothesis family: numbers for text, the normwise residual of one array
against another under a tier, and descriptions of index sets ("all but the first atom",
"odd l indices", "dof 3-5").
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np

from parity.contract.tiers import Tier


def short(x: float) -> str:
    """Three significant digits, for residuals and errors in sentences."""
    return f"{x:.3g}"


def number_text(c: complex | float) -> str:
    """A factor for text: 7 significant digits, complex as a + bi."""
    if isinstance(c, complex) or np.iscomplexobj(c):
        c = complex(c)
        if abs(c.imag) > 1e-12 * abs(c):
            return f"({c.real:.7g}{c.imag:+.7g}i)"
        c = c.real
    return f"{float(c):.7g}"


def plain(c: complex | float) -> complex | float:
    """A Python scalar: complex only when the imaginary part matters."""
    c = complex(c)
    return c if abs(c.imag) > 1e-15 * max(abs(c), 1e-300) else c.real


def normwise(diff_max: float, scale: float) -> float:
    """``diff_max / scale``; 0 when both are 0, inf when only the scale is."""
    if scale > 0:
        return diff_max / scale
    return 0.0 if diff_max == 0 else math.inf


def within(a: np.ndarray, t: np.ndarray, tier: Tier) -> tuple[float, bool]:
    """(normwise residual, every element within the tier) of ``a`` against ``t`` (1-D, finite)."""
    if a.size == 0:
        return 0.0, True
    diff = np.abs(a - t)
    t_abs = np.abs(t)
    scale = float(t_abs.max())
    ok = bool(np.all(diff <= tier.atol * scale + tier.rtol * t_abs))
    return normwise(float(diff.max()), scale), ok


def index_runs(idx: np.ndarray) -> list[tuple[int, int]]:
    """Sorted integers as (first, last) runs."""
    if idx.size == 0:
        return []
    breaks = np.flatnonzero(np.diff(idx) != 1)
    starts = np.concatenate([[0], breaks + 1])
    ends = np.concatenate([breaks, [idx.size - 1]])
    return [(int(idx[s]), int(idx[e])) for s, e in zip(starts, ends)]


def index_set_text(idx: np.ndarray, n: int, name: str) -> str | None:
    """Name a set of indices along an axis of length ``n`` (None when it is the whole axis)."""
    k = int(idx.size)
    if k == n:
        return None
    if n > 2 and k == n - 1 and idx[0] == 1:
        return f"all but the first {name}"
    if n > 2 and k == n - 1 and idx[-1] == n - 2:
        return f"all but the last {name}"
    if k >= 2 and n >= 4 and np.all(np.diff(idx) == 2) and k == len(range(int(idx[0]) % 2, n, 2)):
        return f"{'odd' if idx[0] % 2 else 'even'} {name} indices"
    runs = index_runs(idx)
    if len(runs) <= 3:
        return f"{name} " + ", ".join(str(lo) if lo == hi else f"{lo}-{hi}" for lo, hi in runs)
    return f"{k} of {n} {name} indices"


def where_text(mask: np.ndarray, names: Sequence[str]) -> tuple[str, bool, list]:
    """Describe the positions of ``mask`` by the index sets it covers along each axis.

    Returns
    -------
    (text, exact, per_axis)
        ``exact`` is True when ``mask`` is exactly the product of those index sets;
        ``per_axis`` lists ``[name, indices]`` for the axes it does not fill.
    """
    sets = []
    for ax in range(mask.ndim):
        others = tuple(i for i in range(mask.ndim) if i != ax)
        sets.append(np.flatnonzero(np.any(mask, axis=others)))
    product = np.ones(mask.shape, dtype=bool)
    for ax, s in enumerate(sets):
        line = np.zeros(mask.shape[ax], dtype=bool)
        line[s] = True
        shape = [1] * mask.ndim
        shape[ax] = -1
        product &= line.reshape(shape)
    exact = bool(np.array_equal(product, mask))
    parts, per_axis = [], []
    for ax, s in enumerate(sets):
        text = index_set_text(s, mask.shape[ax], names[ax])
        if text is not None:
            parts.append(text)
            per_axis.append([names[ax], s.tolist() if s.size <= 64 else f"{s.size} indices"])
    return (", ".join(parts) if parts else "everywhere"), exact, per_axis


# --------------------------------------------------------------------------- #
# Simple expressions of small integers and pi
