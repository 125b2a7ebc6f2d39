"""Divergence signatures: say *why* a failing stage diverges, not only how much.

The comparison engine (:mod:`parity.comparison.engine`) says that and where two results
differ. This module takes the same (reference, candidate) pair and tests a
library of hypotheses a person would otherwise try by hand with debug prints:
a constant factor, a transpose or conjugate, an index shift or permutation, a
round-off of a narrower float format, a different NaN/inf pattern, a buffer that
accumulates, an error confined to a subset, eigenvectors rotated across
clusters. Each hypothesis ``T`` is *applied* to the reference and judged by the
stage's own tolerance tier::

    |candidate - T(reference)| <= atol * max|T(reference)| + rtol * |T(reference)|

A :class:`Signature` is reported as explaining the difference only when that
holds for every compared element (``explains=True``; its ``residual`` is
``max|candidate - T(reference)| / max|T(reference)|``). Near-explanations (a
transform that removes at least 99 % of the error but not all of it) are
reported with ``explains=False`` and their residual; when nothing explains,
:func:`summary_phrase` says ``"no simple signature"``.

Everything is pure NumPy (no torch), never raises on odd input (a bug in here
becomes a non-explaining ``"internal_error"`` signature, never an exception in
the run), never modifies its inputs and takes no verdict: it only describes.
Big arrays are screened on a deterministic sample (plus their worst elements)
and every claimed match is verified on the whole array; a run that hits its time
budget stops testing, says so in ``params["cut_short"]``, and never turns an
unverified hypothesis into a match.

Public API
----------
Signature
diagnose_arrays(expected, actual, tier, *, axes, grid_shape, matrix_axes, subsets, time_budget_s)
diagnose_eigenspaces(expected_values, expected_vectors, actual_values, actual_vectors, tier, *, rel_gap, ...)
diagnose_gradient(expected, actual, tier)
summary_phrase(signatures) -> str
figure(signature, expected, actual) -> str | None
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from fractions import Fraction
from functools import lru_cache
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np

from parity.comparison.arrays import nonfinite_code
from parity.comparison.eigenspaces import GAP_REFERENCE, cluster_eigenvalues, cluster_gaps
from parity.comparison.engine import as_numpy
from parity.storage.outputs import json_safe
from parity.contract.tiers import F32_SUFFIX, Tier

__all__ = [
    "Signature",
    "NO_SIGNATURE",
    "diagnose_arrays",
    "diagnose_eigenspaces",
    "diagnose_gradient",
    "summary_phrase",
    "figure",
]

#: What :func:`summary_phrase` says when no signature explains the difference.
NO_SIGNATURE = "no simple signature"

#: Elements a hypothesis is screened on before it is verified on the whole array.
N_SAMPLE = 4096
#: Of which the largest errors (so a defect confined to a small region is seen).
N_WORST = 512
#: The first, cheap screen: this many elements, half of them the worst.
N_PROBE = 64
#: A transform is a near-explanation when it leaves at most this fraction of the error.
NEAR = 1e-2
#: Index shifts tried along every axis (cand[i] = ref[i + s]).
SHIFTS = (1, -1, 2, -2)
#: Arrays with fewer finite elements than this get a constant factor only when it is a
#: simple expression (any ratio of two numbers is "a constant factor").
MIN_ELEMENTS_FOR_FREE_FACTOR = 4
#: General permutation search: axes up to this length, matched on this many features.
MAX_PERMUTATION_AXIS = 4096
N_FEATURES = 32
#: Running-sum (accumulation) search: strides (elements per item) tried along an axis.
ACCUMULATION_STRIDES = (1, 2, 3, 4, 6)
#: Narrower float formats and their significant bits p (unit round-off u = 2**-p).
FORMATS = (("bfloat16", 8), ("float16", 11), ("tf32", 11), ("float32", 24))
#: Precision: allowance (in units of u) when the candidate's values are numbers of the
#: format (cast evidence), and the band of the normwise error otherwise.
CAST_ALLOWANCE_U = 1024.0
ROUNDOFF_BAND_U = (0.25, 64.0)
ROUNDOFF_P99_U = 16.0
ROUNDOFF_MIN_SPREAD = 0.2
MIN_ELEMENTS_FOR_PRECISION = 16
#: Eigenvector mixing: a group of clusters rotated into each other may hold at most this
#: fraction of the modes (merging everything makes any two eigenbases agree).
MAX_MIXED_FRACTION = 0.5

# Signatures in order of simplicity: among explaining ones the simplest heads the list.
_ORDER = ("shape", "real_as_complex", "complex_as_real", "nan_pattern", "zero", "constant_factor",
          "conjugate", "swap_re_im", "transpose", "conj_transpose", "shift", "reverse", "negate_index",
          "permutation", "precision", "accumulation", "eigen_conjugate", "eigen_rotation", "eigenvalues",
          "partial", "incomplete", "internal_error")
_PRIORITY = {name: i for i, name in enumerate(_ORDER)}


# --------------------------------------------------------------------------- #
# Result object
# --------------------------------------------------------------------------- #
@dataclass(frozen=True)
class Signature:
    """One hypothesis about a divergence, tested against the data.

    Attributes
    ----------
    name : str
        Kind of signature (``"constant_factor"``, ``"transpose"``, ``"shift"``, ...;
        see ``docs/diagnosis.md``).
    phrase : str
        At most about 40 characters, for the terminal table (``"x 1/3"``).
    sentence : str
        One full sentence for the HTML report.
    params : dict
        JSON-safe parameters: factor and its expression, axis, shift, counts,
        ``error_before`` (the normwise error the signature is asked to explain),
        ``allowed`` (the residual bound it was judged by), ``cut_short``.
    residual : float
        ``max|candidate - T(reference)| / max|T(reference)|`` left after applying
        the signature (for descriptive signatures: see ``docs/diagnosis.md``).
    explains : bool
        True when the residual is within the stage's tier (or the stated allowance).
    """

    name: str
    phrase: str
    sentence: str
    params: dict = field(default_factory=dict)
    residual: float = math.nan
    explains: bool = False

    def to_dict(self) -> dict:
        """JSON-safe dict (NaN/inf -> None, complex -> {"re", "im"})."""
        return json_safe({"signature": self.name, "phrase": self.phrase, "sentence": self.sentence,
                          "params": self.params, "residual": self.residual, "explains": self.explains})


def summary_phrase(signatures: Iterable[Signature]) -> str:
    """The phrase of the best explaining signature, or ``"no simple signature"``.

    Parameters
    ----------
    signatures : iterable of Signature
        As returned by the ``diagnose_*`` functions (best first).

    Returns
    -------
    str
    """
    for s in signatures:
        if s.explains:
            return s.phrase
    return NO_SIGNATURE


# --------------------------------------------------------------------------- #
# Small helpers
# --------------------------------------------------------------------------- #
class _Clock:
    """Deadline of one diagnosis; ``out()`` turns True once the budget is spent.

    Counted in CPU seconds of the calling thread, not wall time: on a busy machine a
    descheduled process would otherwise lose its budget waiting, and the same run
    would be diagnosed differently depending on the load (measured: 52 ms of wall
    time for 18 ms of CPU at a load of 8 on 2 cores).
    """

    def __init__(self, budget_s: float):
        self.deadline = time.thread_time() + (budget_s if budget_s and budget_s > 0 else 0.0)
        self.hit = False

    def left(self) -> float:
        return max(self.deadline - time.thread_time(), 0.0)

    def out(self) -> bool:
        if not self.hit and time.thread_time() > self.deadline:
            self.hit = True
        return self.hit


def _g(x: float) -> str:
    return f"{x:.3g}"


def _num(c: complex | float) -> str:
    """A factor for text: 7 significant digits, complex as a + bi."""
    if isinstance(c, complex) or np.iscomplexobj(c):
        c = complex(c)
        if abs(c.imag) > 1e-12 * abs(c):
            return f"({c.real:.7g}{c.imag:+.7g}i)"
        c = c.real
    return f"{float(c):.7g}"


def _plain(c: complex | float) -> complex | float:
    """A Python scalar: complex only when the imaginary part matters."""
    c = complex(c)
    return c if abs(c.imag) > 1e-15 * max(abs(c), 1e-300) else c.real


def _normwise(diff_max: float, scale: float) -> float:
    if scale > 0:
        return diff_max / scale
    return 0.0 if diff_max == 0 else math.inf


def _within(a: np.ndarray, t: np.ndarray, tier: Tier) -> tuple[float, bool]:
    """(normwise residual, every element within the tier) of ``a`` against ``t`` (1-D, finite)."""
    if a.size == 0:
        return 0.0, True
    diff = np.abs(a - t)
    t_abs = np.abs(t)
    scale = float(t_abs.max())
    ok = bool(np.all(diff <= tier.atol * scale + tier.rtol * t_abs))
    return _normwise(float(diff.max()), scale), ok


def _ranges(idx: np.ndarray) -> list[tuple[int, int]]:
    """Sorted integers as (first, last) runs."""
    if idx.size == 0:
        return []
    breaks = np.flatnonzero(np.diff(idx) != 1)
    starts = np.concatenate([[0], breaks + 1])
    ends = np.concatenate([breaks, [idx.size - 1]])
    return [(int(idx[s]), int(idx[e])) for s, e in zip(starts, ends)]


def _set_text(idx: np.ndarray, n: int, name: str) -> str | None:
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
    runs = _ranges(idx)
    if len(runs) <= 3:
        return f"{name} " + ", ".join(str(lo) if lo == hi else f"{lo}-{hi}" for lo, hi in runs)
    return f"{k} of {n} {name} indices"


def _where_text(mask: np.ndarray, names: Sequence[str]) -> tuple[str, bool, list]:
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
        text = _set_text(s, mask.shape[ax], names[ax])
        if text is not None:
            parts.append(text)
            per_axis.append([names[ax], s.tolist() if s.size <= 64 else f"{s.size} indices"])
    return (", ".join(parts) if parts else "everywhere"), exact, per_axis


# --------------------------------------------------------------------------- #
# Simple expressions of small integers and pi
# --------------------------------------------------------------------------- #
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


def _recognise(c: complex | float, residual: float, tier: Tier) -> tuple[str, complex | float] | None:
    """A simple expression within the accuracy the data allow (never looser than 1e-2)."""
    tol = min(max(4.0 * residual, 4.0 * (tier.rtol + tier.atol), 1e-12), 1e-2)
    return simple_expression(c, tol)


# --------------------------------------------------------------------------- #
# Preparing a pair
# --------------------------------------------------------------------------- #
@dataclass
class _Pair:
    """The arrays under analysis (same shape, both float64 or both complex128)."""

    e: np.ndarray
    a: np.ndarray
    names: tuple[str, ...]
    tier: Tier
    code_e: np.ndarray
    code_a: np.ndarray
    finite: np.ndarray  # finite in both
    diff: np.ndarray  # |a - e| where finite, else 0
    mismatch: np.ndarray  # finite element outside the tier
    pattern_mismatch: np.ndarray
    scale: float
    error: float  # normwise error over the finite elements
    sample: np.ndarray  # flat indices the hypotheses are screened on
    probe: np.ndarray  # a few of them (the worst elements and a spread): the first, cheap screen
    groups: list  # matrix axis groups [(g1, g2), ...]
    ignore_pattern: bool = False  # judge transforms on common finite elements only

    @property
    def complex(self) -> bool:
        return np.iscomplexobj(self.e)


def _work(x: Any) -> np.ndarray:
    """float64 or complex128 view/copy of numeric data (bool/int -> float64)."""
    x = as_numpy(x)
    if np.iscomplexobj(x):
        return x.astype(np.complex128, copy=False)
    if not (np.issubdtype(x.dtype, np.number) or x.dtype == np.bool_):
        raise TypeError(f"non-numeric dtype {x.dtype}")
    return x.astype(np.float64, copy=False)


def _sample(badness: np.ndarray, size: int, n_worst: int) -> np.ndarray:
    """Deterministic flat sample: spread random positions plus the ``n_worst`` worst elements."""
    n = badness.size
    if n <= size:
        return np.arange(n)
    rng = np.random.default_rng(20240611)
    spread = rng.integers(0, n, size=size - n_worst)
    worst = np.argpartition(badness.reshape(-1), n - n_worst)[n - n_worst:]
    return np.unique(np.concatenate([spread, worst]))


def _prepare(e: np.ndarray, a: np.ndarray, names: tuple[str, ...], tier: Tier, groups: list) -> _Pair:
    code_e, code_a = nonfinite_code(e), nonfinite_code(a)
    finite = (code_e == 0) & (code_a == 0)
    ez, az = np.where(finite, e, 0), np.where(finite, a, 0)
    diff = np.abs(az - ez)
    e_abs = np.abs(ez)
    scale = float(e_abs.max()) if e_abs.size else 0.0
    mismatch = finite & (diff > tier.atol * scale + tier.rtol * e_abs)
    error = _normwise(float(diff.max()) if diff.size else 0.0, scale)
    pattern_mismatch = code_e != code_a
    # NaN/inf mismatches rank first among the worst elements: a transform must fix them too.
    badness = np.where(pattern_mismatch, np.inf, diff)
    return _Pair(e=e, a=a, names=names, tier=tier, code_e=code_e, code_a=code_a, finite=finite,
                 diff=diff, mismatch=mismatch, pattern_mismatch=pattern_mismatch, scale=scale,
                 error=error, sample=_sample(badness, N_SAMPLE, N_WORST),
                 probe=_sample(badness, N_PROBE, N_PROBE // 2), groups=groups)


def _axis_names(shape: tuple[int, ...], axes: Sequence[str] | None,
                grid_shape: Sequence[int] | None) -> tuple[tuple[int, ...], tuple[str, ...], int]:
    """Analysed shape and axis names; the offset added to axis numbers by the grid reshape."""
    names = list(axes) if axes is not None and len(axes) == len(shape) else [f"axis {i}" for i in range(len(shape))]
    if grid_shape is not None and len(grid_shape) == 3 and len(shape) >= 1 \
            and int(np.prod(grid_shape)) == shape[0] and all(int(n) > 0 for n in grid_shape):
        return tuple(int(n) for n in grid_shape) + tuple(shape[1:]), ("h", "k", "l", *names[1:]), 2
    return tuple(shape), tuple(names), 0


def _matrix_groups(shape: tuple[int, ...], matrix_axes: Any, offset: int) -> list:
    """Axis groups a transpose exchanges: ``[((i,), (j,))]`` or block groups ``[((0, 1), (3, 4))]``."""
    nd = len(shape)
    if matrix_axes is not None:
        if len(matrix_axes) == 0:
            return []
        try:
            g1, g2 = ([int(x)] if np.isscalar(x) else [int(y) for y in x] for x in matrix_axes)
        except (TypeError, ValueError):
            return []
        g1 = tuple(i % (nd - offset) + (offset if i % (nd - offset) > 0 else 0) for i in g1)
        g2 = tuple(i % (nd - offset) + (offset if i % (nd - offset) > 0 else 0) for i in g2)
        if len(g1) == len(g2) and set(g1).isdisjoint(g2) and all(shape[x] == shape[y] for x, y in zip(g1, g2)):
            return [(g1, g2)]
        return []
    if offset:
        return []  # the grid axes h, k, l are not matrix axes
    if nd >= 2 and shape[-1] == shape[-2] and shape[-1] > 1:
        return [((nd - 2,), (nd - 1,))]
    for k in range(nd // 2, 1, -1):
        if shape[:k] == shape[nd - k:]:
            return [(tuple(range(k)), tuple(range(nd - k, nd)))]
    return []


# --------------------------------------------------------------------------- #
# Transforms of the reference
# --------------------------------------------------------------------------- #
@dataclass(frozen=True)
class _Transform:
    """A hypothesis ``candidate = factor * T(reference)``.

    ``swap`` exchanges axis groups (transposes), ``axis``/``source`` maps the index
    along one axis (``cand[i] = ref[source[i]]``, ``-1``: no counterpart), ``op``
    is elementwise (``"conj"``, ``"swap_re_im"``).
    """

    name: str
    label: str
    params: dict
    swap: tuple | None = None
    axis: int | None = None
    source: np.ndarray | None = None
    op: str = ""

    def _op(self, v: np.ndarray) -> np.ndarray:
        if self.op == "conj":
            return np.conj(v)
        if self.op == "swap_re_im":
            return v.imag + 1j * v.real
        return v

    def gather(self, e: np.ndarray, flat: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(T(e) at the flat positions, covered) for a sample of positions."""
        idx = np.array(np.unravel_index(flat, e.shape))
        covered = np.ones(flat.size, dtype=bool)
        if self.swap is not None:
            src = idx.copy()
            g1, g2 = (list(g) for g in self.swap)
            src[g1], src[g2] = idx[g2], idx[g1]
            idx = src
        if self.axis is not None:
            idx = idx.copy()
            s = self.source[idx[self.axis]]
            covered = s >= 0
            idx[self.axis] = np.where(covered, s, 0)
        return self._op(e[tuple(idx)]), covered

    def full(self, e: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """(T(e), covered mask broadcastable to e's shape or None) on the whole array."""
        t = e
        if self.swap is not None:
            perm = list(range(e.ndim))
            for x, y in zip(*self.swap):
                perm[x], perm[y] = y, x
            t = np.transpose(e, perm)
        covered = None
        if self.axis is not None:
            t = np.take(t, np.where(self.source >= 0, self.source, 0), axis=self.axis)
            shape = [1] * e.ndim
            shape[self.axis] = -1
            covered = (self.source >= 0).reshape(shape)
        return self._op(t), covered


def _group_name(p: _Pair, g: tuple[int, ...]) -> str:
    return "(" + ", ".join(p.names[i] for i in g) + ")" if len(g) > 1 else p.names[g[0]]


def _transforms(p: _Pair) -> list[_Transform]:
    """Every hypothesis to screen, simplest first."""
    out = [_Transform("constant_factor", "", {})]
    if p.complex:
        out.append(_Transform("conjugate", "conjugate", {}, op="conj"))
        out.append(_Transform("swap_re_im", "re and im swapped", {}, op="swap_re_im"))
    for g1, g2 in p.groups:
        over = {"axes": [_group_name(p, g1), _group_name(p, g2)]}
        out.append(_Transform("transpose", "transpose", over, swap=(g1, g2)))
        if p.complex:
            out.append(_Transform("conj_transpose", "conjugate transpose", over, swap=(g1, g2), op="conj"))
    shape = p.e.shape
    for s in SHIFTS:
        for ax, n in enumerate(shape):
            if n < 2 * abs(s) + 1:
                continue
            i = np.arange(n)
            src = np.where((i + s >= 0) & (i + s < n), i + s, -1)
            out.append(_Transform("shift", f"shift {s:+d} along {p.names[ax]}",
                                  {"axis": p.names[ax], "axis_index": ax, "shift": s}, axis=ax, source=src))
    for ax, n in enumerate(shape):
        if n >= 2:
            label = f"reversed {p.names[ax]}" if n > 2 else f"{p.names[ax]} 0 and 1 swapped"
            out.append(_Transform("reverse", label, {"axis": p.names[ax], "axis_index": ax},
                                  axis=ax, source=np.arange(n)[::-1].copy()))
        if n >= 3:
            out.append(_Transform("negate_index", f"{p.names[ax]} index negated",
                                  {"axis": p.names[ax], "axis_index": ax},
                                  axis=ax, source=(-np.arange(n)) % n))
    return out


@dataclass
class _Fit:
    factor: complex | float
    residual: float
    explains: bool
    expression: str | None = None
    covered: int = 0
    uncovered: int = 0


def _fit(a: np.ndarray, t: np.ndarray, tier: Tier, factor: str) -> _Fit:
    """Best ``a ~ c t`` over 1-D finite values.

    ``factor``: ``"none"`` (c = 1 only), ``"simple"`` (c = 1 or a simple expression of
    small integers and pi), ``"real"`` or ``"complex"`` (also a least-squares c). A
    factor is kept only when it removes most of the error (residual <= NEAR of c = 1's).
    """
    if a.size == 0:
        return _Fit(1.0, 0.0, True)
    t_abs = np.abs(t)
    scale = float(t_abs.max())
    d1 = np.abs(a - t)
    ok1 = bool(np.all(d1 <= tier.atol * scale + tier.rtol * t_abs))
    res1 = _normwise(float(d1.max()), scale)
    if ok1 or factor == "none":
        return _Fit(1.0, res1, ok1)
    tt = float(np.vdot(t, t).real)
    if not np.isfinite(tt) or tt == 0:
        return _Fit(1.0, res1, False)
    c = np.vdot(t, a) / tt
    c = _plain(c) if factor == "complex" else float(np.real(c))
    if c == 0:
        return _Fit(0.0, 0.0, True, "0") if not np.any(a) else _Fit(1.0, res1, False)

    def judge(value):
        d = np.abs(a - value * t)
        s = abs(value) * scale
        return _normwise(float(d.max()), s), bool(np.all(d <= tier.atol * s + tier.rtol * abs(value) * t_abs))

    res_c, ok_c = judge(c)
    if not ok_c and not res_c <= NEAR * res1:
        return _Fit(1.0, res1, False)  # no factor helps
    named = _recognise(c, res_c, tier)
    if named is not None:
        value = named[1] if factor == "complex" else float(np.real(named[1]))
        res_n, ok_n = judge(value)
        if ok_n or not ok_c:
            return _Fit(_plain(value), res_n, ok_n, named[0])
    if factor == "simple":
        return _Fit(1.0, res1, False)
    return _Fit(c, res_c, ok_c)


def _judge(p: _Pair, t: np.ndarray, covered: np.ndarray | None, positions: Any, factor: str) -> _Fit | None:
    """Judge ``a ~ c T(e)`` on the given positions (None when the non-finite patterns differ).

    ``t`` and ``covered`` (which of them have a counterpart; None: all) are given at
    those positions already.
    """
    a = p.a[positions]
    if covered is not None:
        a, t = a[covered], t[covered]
    n_covered = int(np.size(a))
    fin_a, fin_t = np.isfinite(a), np.isfinite(t)
    if not (fin_a.all() and fin_t.all()):
        if not p.ignore_pattern and np.any(nonfinite_code(a) != nonfinite_code(t)):
            return None
        both = fin_a & fin_t
        a, t = a[both], t[both]
    fit = _fit(a, t, p.tier, factor)
    fit.covered = n_covered
    return fit


def _transform_signature(p: _Pair, tr: _Transform, fit: _Fit) -> Signature:
    """Words for a judged transform."""
    params = dict(tr.params)
    params.update(error_before=p.error, allowed=f"tier {p.tier.name}")
    if tr.name == "shift":
        params.update(uncovered=fit.uncovered, cyclic=bool(params.get("cyclic", False)))
    factor_text = None
    if fit.factor != 1.0:
        params["factor"] = fit.factor
        factor_text = f"{_num(fit.factor)}" + (f" = {fit.expression}" if fit.expression else "")
        if fit.expression:
            params["expression"] = fit.expression
    if p.ignore_pattern:
        params["judged_on"] = "elements finite in both (the NaN/inf patterns differ)"
    name = tr.name
    if name == "constant_factor":
        if fit.factor == 0:
            name, phrase = "zero", "candidate is zero"
            sentence = "The candidate is identically zero where the reference is not"
        else:
            phrase = f"x {fit.expression or _num(fit.factor)}"
            sentence = f"candidate = reference x {factor_text}"
    else:
        phrase = tr.label + (f" x {fit.expression or _num(fit.factor)}" if factor_text else "")
        sentence = _transform_sentence(p, tr, params) + (f", times {factor_text}" if factor_text else "")
    verdict = (f"; residual {_g(fit.residual)} of max|reference|, within tier {p.tier.name}" if fit.explains
               else f"; it leaves a residual of {_g(fit.residual)} of max|reference| "
                    f"(the error was {_g(p.error)}), more than tier {p.tier.name} allows")
    return Signature(name, phrase, sentence + verdict + ".", params, float(fit.residual), bool(fit.explains))


def _transform_sentence(p: _Pair, tr: _Transform, params: dict) -> str:
    if tr.name == "conjugate":
        return "candidate = conj(reference): the sign of the imaginary part is flipped"
    if tr.name == "swap_re_im":
        return "candidate = reference with real and imaginary parts swapped"
    if tr.name in ("transpose", "conj_transpose"):
        what = "transpose" if tr.name == "transpose" else "conjugate transpose"
        return f"candidate = {what} of the reference over the axes {params['axes'][0]} and {params['axes'][1]}"
    ax = params.get("axis")
    if tr.name == "shift":
        s = params["shift"]
        text = (f"candidate at {ax} index i = reference at {ax} index i {'+' if s > 0 else '-'} {abs(s)} "
                f"(an index shift by {s:+d} along {ax})")
        if params.get("cyclic"):
            return text + ", wrapping around cyclically"
        return text + (f"; {params['uncovered']} element(s) at the end have no counterpart and are not judged"
                       if params.get("uncovered") else "")
    if tr.name == "reverse":
        return f"candidate = reference with the {ax} axis reversed (i -> n-1-i)"
    if tr.name == "negate_index":
        return f"candidate = reference with the {ax} index negated (i -> -i mod n, e.g. k -> -k)"
    if tr.name == "permutation":
        return f"candidate = reference with the {ax} entries permuted ({params.get('moved')} of {params.get('n')} moved)"
    return f"candidate = {tr.label} of the reference"


def _judge_full(p: _Pair, tr: _Transform, factor: str) -> _Fit | None:
    """Judge a transform on every element."""
    t, covered = tr.full(p.e)
    if covered is not None:
        covered = np.broadcast_to(covered, p.e.shape)
    return _judge(p, t, covered, slice(None), factor)


def _factor_kind(p: _Pair, tr: _Transform) -> str:
    """Which factors a transform may carry (see :func:`_fit`)."""
    free = int(np.count_nonzero(p.finite)) >= MIN_ELEMENTS_FOR_FREE_FACTOR
    if not free:
        return "simple"
    # conj x i IS swap_re_im: elementwise complex ops take real factors only, so each
    # defect has one name.
    return "complex" if p.complex and not tr.op else "real"


def _level(p: _Pair, tr: _Transform, flat: np.ndarray, factor: str, error: float) -> _Fit | None:
    """Judge on a set of flat positions; None unless it explains or removes most of ``error``."""
    t, cov = tr.gather(p.e, flat)
    fit = _judge(p, t, cov, np.unravel_index(flat, p.e.shape), factor)
    if fit is None or fit.covered < max(1, flat.size // 2):
        return None
    if not (fit.explains or fit.residual <= NEAR * error):
        return None
    return fit


def _noop(p: _Pair, tr: _Transform) -> bool:
    """T(e) equals e where the error is largest: T is invisible on these data."""
    if tr.name == "constant_factor":
        return False
    t, cov = tr.gather(p.e, p.probe)
    e = p.e.reshape(-1)[p.probe][cov]
    t = t[cov]
    fin = np.isfinite(e) & np.isfinite(t)
    return bool(np.array_equal(np.isfinite(e), np.isfinite(t)) and _within(t[fin], e[fin], p.tier)[1])


def _screen(p: _Pair, tr: _Transform, factor: str) -> _Fit | None:
    """Judge on the probe, then the sample, then the whole array; stop at the first failure."""
    if _noop(p, tr):
        return None
    flat_diff = p.diff.reshape(-1)
    fit = None
    for flat in (p.probe, p.sample):
        fit = _level(p, tr, flat, factor, _normwise(float(flat_diff[flat].max()), p.scale))
        if fit is None:
            return None
        if flat.size == p.e.size:
            break
    else:
        fit = _judge_full(p, tr, factor)
        if fit is None or not (fit.explains or fit.residual <= NEAR * p.error):
            return None
    fit.uncovered = int(p.e.size - fit.covered)
    return fit


def _cyclic_shift(p: _Pair, tr: _Transform, factor: str) -> tuple[_Transform, _Fit] | None:
    """The cyclic version of an explaining shift, when the wrapped slab agrees too."""
    n = p.e.shape[tr.axis]
    cyc = _Transform("shift", tr.label, {**tr.params, "cyclic": True}, axis=tr.axis,
                     source=(np.arange(n) + tr.params["shift"]) % n)
    fit = _judge_full(p, cyc, factor)
    if fit is not None and fit.explains:
        return cyc, fit
    return None


def _run_transforms(p: _Pair, clock: _Clock) -> list[Signature]:
    out: list[Signature] = []
    shifted_axes: set[int] = set()
    for tr in _transforms(p):
        if clock.out():
            break
        if tr.name == "shift" and tr.axis in shifted_axes:
            continue  # a smaller shift along this axis already explains (periodic data)
        factor = _factor_kind(p, tr)
        fit = _screen(p, tr, factor)
        if fit is None or (tr.name == "constant_factor" and fit.factor == 1.0):
            continue
        if tr.name == "shift" and fit.explains:
            shifted_axes.add(tr.axis)
            if fit.uncovered:
                cyclic = _cyclic_shift(p, tr, factor)
                if cyclic is not None:
                    tr, fit = cyclic
        out.append(_transform_signature(p, tr, fit))
    return out


# --------------------------------------------------------------------------- #
# General permutation along one axis
# --------------------------------------------------------------------------- #
def _features(x: np.ndarray, ax: int, cols: np.ndarray) -> np.ndarray:
    """(n, m) real features: the same positions of every slice along ``ax``."""
    moved = np.moveaxis(x, ax, 0).reshape(x.shape[ax], -1)[:, cols]
    if np.iscomplexobj(moved):
        moved = np.concatenate([moved.real, moved.imag], axis=1)
    return np.where(np.isfinite(moved), moved, 0.0)


def _match_slices(fe: np.ndarray, fa: np.ndarray, tier: Tier, scale: float) -> np.ndarray | None:
    """For each candidate slice the index of a reference slice with the same features, or None."""
    n = fe.shape[0]
    w = np.random.default_rng(7).standard_normal(fe.shape[1])
    ke, ka = fe @ w, fa @ w
    order = np.argsort(ke, kind="stable")
    pos = np.searchsorted(ke[order], ka)
    tol = tier.atol * scale + tier.rtol * np.abs(fe) + 1e-300
    out = np.full(n, -1)
    for i in range(n):
        for j in order[max(pos[i] - 2, 0):min(pos[i] + 2, n)]:
            if np.all(np.abs(fa[i] - fe[j]) <= tol[j]):
                out[i] = j
                break
        if out[i] < 0:
            return None
    return out


def _permutations(p: _Pair, clock: _Clock) -> list[Signature]:
    """An arbitrary permutation of the entries along one axis (atoms, k-points, ...)."""
    out = []
    rest_size = max(p.e.size, 1)
    for ax, n in enumerate(p.e.shape):
        if clock.out():
            break
        if not 3 <= n <= MAX_PERMUTATION_AXIS:
            continue
        rest = rest_size // n
        cols = np.unique(np.linspace(0, rest - 1, min(rest, N_FEATURES)).round().astype(np.int64))
        src = _match_slices(_features(p.e, ax, cols), _features(p.a, ax, cols), p.tier, p.scale)
        if src is None or np.array_equal(src, np.arange(n)) or np.unique(src).size != n:
            continue
        moved = np.flatnonzero(src != np.arange(n))
        if moved.size == 2:
            label = f"{p.names[ax]} {moved[0]} and {moved[1]} swapped"
        else:
            label = f"{p.names[ax]} permuted ({moved.size} of {n})"
        params = {"axis": p.names[ax], "axis_index": ax, "n": n, "moved": int(moved.size)}
        if n <= 64:
            params["permutation"] = src.tolist()
        tr = _Transform("permutation", label, params, axis=ax, source=src)
        fit = _judge_full(p, tr, _factor_kind(p, tr))
        if fit is not None and fit.explains:
            out.append(_transform_signature(p, tr, fit))
    return out


# --------------------------------------------------------------------------- #
# Precision
# --------------------------------------------------------------------------- #
def _representable(x: np.ndarray, fmt: str) -> np.ndarray:
    """Which float64 values are exactly numbers of the format."""
    with np.errstate(over="ignore", invalid="ignore"):
        if fmt == "float16":
            return x.astype(np.float16).astype(np.float64) == x
        f = x.astype(np.float32)
        ok = f.astype(np.float64) == x
    if fmt == "float32":
        return ok
    drop = {"tf32": 13, "bfloat16": 16}[fmt]
    return ok & ((f.view(np.uint32) & np.uint32((1 << drop) - 1)) == 0)


def _parts(x: np.ndarray) -> np.ndarray:
    return np.concatenate([x.real, x.imag]) if np.iscomplexobj(x) else x


_UNIT = {fmt: 2.0 ** -bits for fmt, bits in FORMATS}
_LABEL = {"float16": "float16/TF32", "tf32": "float16/TF32"}  # the same unit round-off


def _roundoff_like(rel: np.ndarray, u: float) -> dict | None:
    """Distribution statistics of signed relative errors, when they look like round-off of unit ``u``.

    Round-off is relative to each element (p99 within ``ROUNDOFF_P99_U`` units, unlike
    additive noise), not far below ``u`` (median >= u/64: else a wider format), and spread
    out (one rounding is uniform in [0, u], coefficient of variation 0.58; one wrong factor
    on a subset gives a single value, CV 0). No sign test: round-off of one shared constant
    upstream (float32(2 pi) > 2 pi) biases every error the same way.
    """
    mag = np.abs(rel)
    nonzero = mag[mag > 0]
    p99, median = float(np.percentile(mag, 99)), float(np.median(mag))
    spread = float(np.std(nonzero) / np.mean(nonzero)) if nonzero.size > 1 else 0.0
    if p99 <= ROUNDOFF_P99_U * u and median >= u / 64 and spread >= ROUNDOFF_MIN_SPREAD:
        return {"p99_rel_in_u": p99 / u, "median_rel_in_u": median / u, "spread": spread}
    return None


def _in_band(error: float, u: float) -> bool:
    return ROUNDOFF_BAND_U[0] * u <= error <= ROUNDOFF_BAND_U[1] * u


def _precision(p: _Pair) -> list[Signature]:
    """Round-off of a narrower float format, from cast evidence or the error distribution.

    A format is claimed only with evidence the candidate carries it: its values are
    numbers of that format (cast), or float32 numbers with errors of a narrower
    format's size (TF32/bfloat16 arithmetic stored in float32). Without cast evidence
    only float32 is claimed, from the distribution of the errors: a relative error of
    ~1e-7 spread like round-off is specific, one of ~1e-3 (bfloat16's size) describes
    many ordinary bugs too.
    """
    f = p.finite
    a, e = _parts(p.a[f]), _parts(p.e[f])
    skip_f32 = p.tier.name.endswith(F32_SUFFIX)  # a float32 run: float32 round-off is expected
    nz = e != 0
    if np.count_nonzero(nz) < MIN_ELEMENTS_FOR_PRECISION:
        return []
    rel = (a[nz] - e[nz]) / e[nz]
    base = {"error_before": p.error}
    values = a[a != 0]
    # Every narrower format is a subset of float32: no float32 values, no cast evidence.
    cast = values.size >= MIN_ELEMENTS_FOR_PRECISION and bool(np.all(_representable(values, "float32")))
    fmt = next((f_ for f_, _ in FORMATS if cast and np.all(_representable(values, f_))), None)
    if fmt is not None and not (skip_f32 and fmt == "float32"):
        ref_fraction = float(np.mean(_representable(e[nz], fmt)))
        if ref_fraction <= 0.5:
            return [_cast_signature(p, fmt, ref_fraction, rel, base)]
    if skip_f32 or not _in_band(p.error, _UNIT["float32"]):
        return []
    stats = _roundoff_like(rel, _UNIT["float32"])
    if stats is None:
        return []
    u = _UNIT["float32"]
    params = {**base, "format": "float32", "evidence": "distribution", "unit_roundoff": u,
              "error_in_u": p.error / u, **stats, "allowed": ROUNDOFF_BAND_U[1] * u}
    sentence = (f"The errors have the size and distribution of float32 round-off somewhere upstream: "
                f"relative to each element, median {stats['median_rel_in_u']:.2g} and 99th percentile "
                f"{stats['p99_rel_in_u']:.2g} units of float32 round-off, spread out as round-off is "
                f"(normwise {_g(p.error)}).")
    return [Signature("precision", "float32 round-off", sentence, params, p.error, True)]


def _cast_signature(p: _Pair, fmt: str, ref_fraction: float, rel: np.ndarray, base: dict) -> Signature:
    """The candidate's values are numbers of ``fmt``: round-off of that format, or of a narrower
    arithmetic stored in it (float32 numbers with TF32/bfloat16-sized errors)."""
    u = _UNIT[fmt]
    params = {**base, "format": fmt, "evidence": "cast", "unit_roundoff": u, "error_in_u": p.error / u,
              "allowed": CAST_ALLOWANCE_U * u, "reference_representable": ref_fraction}
    lead = (f"Every candidate value is exactly a {fmt} number (of the reference values only "
            f"{100 * ref_fraction:.0f} % are)")
    if p.error <= CAST_ALLOWANCE_U * u:
        sentence = (f"{lead}: the quantity was computed or stored in {fmt} and cast back; the error is "
                    f"{p.error / u:.3g} units of {fmt} round-off ({_g(p.error)} of max|reference|).")
        return Signature("precision", f"{fmt} round-off (cast)", sentence, params, p.error, True)
    if fmt == "float32":
        for narrow in ("tf32", "bfloat16"):
            un = _UNIT[narrow]
            stats = _roundoff_like(rel, un) if _in_band(p.error, un) else None
            if stats is not None:
                label = _LABEL.get(narrow, narrow)
                params.update(format=label, stored_as="float32", unit_roundoff=un, error_in_u=p.error / un,
                              allowed=ROUNDOFF_BAND_U[1] * un, **stats)
                sentence = (f"{lead}, and the errors have the size and distribution of {label} round-off "
                            f"({p.error / un:.3g} units normwise, 99th percentile "
                            f"{stats['p99_rel_in_u']:.2g} units relative): {label} arithmetic upstream, "
                            f"stored in float32.")
                return Signature("precision", f"{label} arithmetic (float32)", sentence, params, p.error, True)
    sentence = (f"{lead}: the quantity went through {fmt}, but the error ({p.error / u:.3g} units of {fmt} "
                f"round-off) is more than the {CAST_ALLOWANCE_U:g} allowed for round-off alone.")
    return Signature("precision", f"through {fmt}, error too large", sentence, params, p.error, False)


# --------------------------------------------------------------------------- #
# NaN / inf pattern
# --------------------------------------------------------------------------- #
_CODE_NAMES = {0: "finite", 1: "NaN", 2: "+inf", 3: "-inf"}


def _code_name(code: int) -> str:
    if code < 4:
        return _CODE_NAMES[code]
    re, im = divmod(code, 4)
    return f"{_CODE_NAMES[re]}{'' if im == 0 else ' + ' + _CODE_NAMES[im] + 'i'}"


def _nan_pattern(p: _Pair, subsets: Mapping[str, np.ndarray]) -> Signature:
    """Describe how the NaN/inf patterns differ; explains when the finite elements agree."""
    mm = p.pattern_mismatch
    kinds = []
    pairs = np.unique(p.code_e[mm].astype(np.int64) * 64 + p.code_a[mm].astype(np.int64))
    for ce, ca in (divmod(int(c), 64) for c in pairs):
        sel = mm & (p.code_e == ce) & (p.code_a == ca)
        count = int(sel.sum())
        where, _, per_axis = _where_text(sel, p.names)
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
                kind["form"], kind["value"] = "clamped", _plain(uniq[0])
            else:
                kind["form"] = "filled"
                kind["range"] = [float(np.min(np.abs(vals))), float(np.max(np.abs(vals)))]
        elif ce == 0:
            kind["form"] = f"{_code_name(ca)} where the reference is finite"
        else:
            kind["form"] = f"{_code_name(ca)} instead of {_code_name(ce)}"
        kinds.append(kind)
    residual, ok = _within(p.a[p.finite], p.e[p.finite], p.tier)
    phrases, sentences = [], []
    for k in kinds:
        label = k.get("subset")
        if k["form"] == "clamped":
            phrase = (f"{label} clamped, not {k['reference']}" if label
                      else f"{k['count']} {k['reference']} clamped to {_g(abs(k['value']))}")
            text = f"clamped to one finite value {_num(k['value'])}"
        elif k["form"] in ("filled with zeros", "filled"):
            phrase = (f"{label} filled, not {k['reference']}" if label
                      else f"{k['count']} {k['reference']} {k['form']}")
            text = k["form"] + (f" (|values| {_g(k['range'][0])} to {_g(k['range'][1])})" if "range" in k else "")
        else:
            phrase = f"{k['count']} x {k['form']}" if not label else f"{label}: {k['form']}"
            text = k["form"]
        phrases.append(phrase)
        where = f"the {label}" if label else k["where"]
        sentences.append(f"{k['count']} element(s) that are {k['reference']} in the reference are {text} in the "
                         f"candidate, at {where}" + (f" (all within {k['within']})" if "within" in k else ""))
    tail = (f"; the finite elements agree within tier {p.tier.name} (residual {_g(residual)})" if ok else
            f"; the finite elements differ as well (normwise {_g(residual)})")
    params = {"kinds": kinds, "mismatched": int(mm.sum()), "error_before": p.error,
              "allowed": f"tier {p.tier.name}"}
    return Signature("nan_pattern", "; ".join(phrases)[:60], "; ".join(sentences) + tail + ".", params,
                     float(residual), bool(ok))


# --------------------------------------------------------------------------- #
# Accumulation and partial agreement
# --------------------------------------------------------------------------- #
def _fibre(x: np.ndarray, index: tuple, ax: int) -> np.ndarray:
    """The 1-D fibre of ``x`` along ``ax`` through a multi-index."""
    take = list(index)
    take[ax] = slice(None)
    return x[tuple(take)]


def _accumulation(p: _Pair, clock: _Clock) -> list[Signature]:
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
            if not (np.all(np.isfinite(fc)) and np.all(np.isfinite(fa)) and _within(fa, fc, p.tier)[1]):
                continue
            sig = _accumulated(p, ax, g)
            if sig is not None:
                return [sig]
    return []


def _accumulated(p: _Pair, ax: int, g: int) -> Signature | None:
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
    residual, ok = _within(a[fin].reshape(-1), t[fin].reshape(-1), p.tier)
    if not ok or not np.array_equal(nonfinite_code(t), nonfinite_code(a)):
        return None
    fibre_names = p.names[:ax] + (f"entry within a {p.names[ax]} item",) + p.names[ax + 1:]
    where, _, per_axis = _where_text(accumulated, fibre_names)
    along = p.names[ax] if g == 1 else f"{p.names[ax]} (in items of {g})"
    params = {"axis": p.names[ax], "axis_index": ax, "stride": g, "fibres": int(accumulated.sum()),
              "of_fibres": int(accumulated.size), "where": where, "per_axis": per_axis,
              "error_before": p.error, "allowed": f"tier {p.tier.name}"}
    scope = "" if where == "everywhere" else f" at {where}"
    phrase = f"running sum along {p.names[ax]}" + (f" (in {g}s)" if g > 1 else " (reused buffer)")
    sentence = (f"candidate = running sum of the reference along {along}{scope} (the first entry agrees, "
                f"each later one adds all before it: a buffer reused across the loop and never reset); "
                f"the other fibres agree; residual {_g(residual)}, within tier {p.tier.name}.")
    return Signature("accumulation", phrase, sentence, params, float(residual), True)


def _growth(profile: np.ndarray, bad: np.ndarray) -> bool:
    """The error grows (almost) monotonically over the failing indices of an axis."""
    vals = profile[bad]
    if vals.size < 3 or vals[0] <= 0:
        return False
    steps = np.diff(vals)
    return bool(np.mean(steps >= 0) >= 0.8 and vals[-1] >= 3.0 * vals[0])


def _partial(p: _Pair, subsets: Mapping[str, np.ndarray]) -> list[Signature]:
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
        res_out, _ = _within(p.a[outside & p.finite], p.e[outside & p.finite], p.tier)
        if not bad[outside].any():
            out.append(Signature("partial", f"only {name} differ"[:48],
                                 f"The error is confined to the {name}: {n_bad} of {int(mask.sum())} of its "
                                 f"elements differ; everything outside agrees within tier {p.tier.name}.",
                                 {**base, "subset": name, "mode": "confined"}, float(res_out), True))
        elif not bad[mask].any() and bad[outside].mean() >= 0.9:
            res_in, _ = _within(p.a[mask & p.finite], p.e[mask & p.finite], p.tier)
            out.append(Signature("partial", f"only {name} agree"[:48],
                                 f"Only the {name} agree(s) within tier {p.tier.name}; "
                                 f"{100 * bad[outside].mean():.0f} % of the rest differ.",
                                 {**base, "subset": name, "mode": "agrees"}, float(res_in), False))
    where, exact, per_axis = _where_text(bad, p.names)
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


# --------------------------------------------------------------------------- #
# Shapes and dtype classes
# --------------------------------------------------------------------------- #
def _shape_signature(e: np.ndarray, a: np.ndarray) -> tuple[Signature, np.ndarray | None]:
    """Name a shape mismatch; return the candidate rearranged to the reference's shape when it can be."""
    params = {"expected_shape": list(e.shape), "actual_shape": list(a.shape)}
    if a.size == e.size and tuple(s for s in a.shape if s != 1) == tuple(s for s in e.shape if s != 1):
        return Signature("shape", "singleton axes differ",
                         f"The candidate has shape {a.shape}, the reference {e.shape}: the same data up to "
                         f"axes of length 1.", {**params, "fix": "reshape"}, math.nan, False), a.reshape(e.shape)
    if a.ndim == e.ndim and sorted(a.shape) == sorted(e.shape) and len(set(e.shape)) == e.ndim:
        perm = [a.shape.index(s) for s in e.shape]
        return Signature("shape", "axes in another order",
                         f"The candidate has shape {a.shape}, the reference {e.shape}: the same axes in "
                         f"another order (candidate axes {perm}).", {**params, "fix": "transpose", "axes": perm},
                         math.nan, False), np.transpose(a, perm)
    return Signature("shape", f"shape {a.shape} vs {e.shape}"[:48],
                     f"The candidate has shape {a.shape}, the reference {e.shape}; no rearrangement matches.",
                     params, math.nan, False), None


def _class_signature(e: np.ndarray, a: np.ndarray, tier: Tier) -> tuple[Signature, np.ndarray, np.ndarray]:
    """Real carried as complex or the reverse; return the pair to analyse further (same class)."""
    if np.iscomplexobj(a):  # reference real, candidate complex
        ai = np.where(np.isfinite(a.imag), a.imag, 0)
        scale = float(np.nanmax(np.abs(np.where(np.isfinite(e), e, np.nan)))) if np.isfinite(e).any() else 0.0
        imag = _normwise(float(np.max(np.abs(ai))) if ai.size else 0.0, scale)
        fin = np.isfinite(a.real) & np.isfinite(e)
        res, ok = _within(a.real[fin], e[fin], tier)
        imag_ok = imag <= tier.atol + tier.rtol if not tier.is_exact else imag == 0
        explains = ok and imag_ok and np.array_equal(np.isfinite(a.real), np.isfinite(e))
        sentence = (f"The candidate is complex ({a.dtype}) where the reference is real ({e.dtype})"
                    + (", with zero imaginary part" if imag == 0 else f", imaginary part up to {_g(imag)} of max|reference|")
                    + (f"; its real part agrees within tier {tier.name}." if explains
                       else "; its real part is analysed below."))
        params = {"max_imag": imag, "actual_dtype": str(a.dtype), "expected_dtype": str(e.dtype),
                  "allowed": f"tier {tier.name}"}
        phrase = "real carried as complex" + ("" if imag == 0 else f" (im {_g(imag)})")
        return Signature("real_as_complex", phrase, sentence, params, float(max(res, imag)), bool(explains)), \
            e, a.real.copy()
    # reference complex, candidate real
    fin = np.isfinite(e) & np.isfinite(a)
    scale = float(np.max(np.abs(e[fin]))) if fin.any() else 0.0
    imag = _normwise(float(np.max(np.abs(e.imag[fin]))) if fin.any() else 0.0, scale)
    res_re, ok_re = _within(a[fin], e.real[fin], tier)
    res_abs, ok_abs = _within(a[fin], np.abs(e[fin]), tier)
    form = "real part" if ok_re or res_re <= res_abs else "modulus"
    res, ok = (res_re, ok_re) if form == "real part" else (res_abs, ok_abs)
    explains = ok and np.array_equal(np.isfinite(a), np.isfinite(e))
    if imag == 0:
        lead = "a complex quantity with zero imaginary part is carried as real"
    elif form == "real part":
        lead = f"the imaginary part (up to {_g(imag)} of max|reference|) is dropped"
    else:
        lead = "the modulus is taken instead of the complex value"
    sentence = (f"The candidate is real ({a.dtype}) where the reference is complex ({e.dtype}): {lead}"
                + (f"; the {form} agrees within tier {tier.name}." if explains
                   else f"; even the {form} leaves a residual of {_g(res)}."))
    params = {"form": form, "max_imag": imag, "actual_dtype": str(a.dtype), "expected_dtype": str(e.dtype),
              "allowed": f"tier {tier.name}"}
    phrase = "complex carried as real" if imag == 0 else ("imaginary part dropped" if form == "real part"
                                                          else "modulus instead of complex")
    return Signature("complex_as_real", phrase, sentence, params, float(res), bool(explains)), \
        e, a.astype(np.complex128)


# --------------------------------------------------------------------------- #
# Public: arrays
# --------------------------------------------------------------------------- #
def _finish(sigs: list[Signature], clock: _Clock, extra: Mapping[str, Any] | None = None) -> list[Signature]:
    """Order best first (explaining by simplicity, then the rest by residual); flag a cut-short run."""
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
        return (not s.explains, _PRIORITY.get(s.name, len(_ORDER)) if s.explains else 0, res,
                _PRIORITY.get(s.name, len(_ORDER)))

    return sorted(sigs, key=key)


def _subset_masks(subsets: Mapping[str, Any] | None, orig_shape: tuple, shape: tuple) -> dict[str, np.ndarray]:
    """Named masks in the analysed shape (masks that do not fit are ignored)."""
    out = {}
    for name, mask in (subsets or {}).items():
        try:
            m = np.asarray(as_numpy(mask), dtype=bool)
            if m.size == int(np.prod(shape)) and m.shape != shape:
                m = m.reshape(shape)
            else:
                m = np.broadcast_to(m, orig_shape).reshape(shape)
        except (ValueError, TypeError):
            continue
        out[str(name)] = m
    return out


def _equivalents(sigs: list[Signature]) -> list[Signature]:
    """Several transforms explaining the same data are the same statement: say so on the first."""
    explaining = [s for s in sigs if s.explains and s.name not in ("nan_pattern", "partial", "real_as_complex",
                                                                   "complex_as_real")]
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
    clock = _Clock(time_budget_s)
    try:
        return _diagnose_arrays(expected, actual, tier, axes, grid_shape, matrix_axes, subsets, clock)
    except Exception as exc:  # diagnosis must never break a run: report, do not raise
        return [Signature("internal_error", "diagnosis failed",
                          f"The diagnosis failed: {type(exc).__name__}: {exc}.",
                          {"error": f"{type(exc).__name__}: {exc}"}, math.nan, False)]


def _diagnose_arrays(expected, actual, tier, axes, grid_shape, matrix_axes, subsets, clock) -> list[Signature]:
    try:
        e, a = np.atleast_1d(_work(expected)), np.atleast_1d(_work(actual))
    except TypeError:
        return []
    if e.shape == a.shape:
        return _diagnose_same_shape(e, a, tier, axes, grid_shape, matrix_axes, subsets, clock)
    shape_sig, rearranged = _shape_signature(e, a)
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
        sig, e, a = _class_signature(e, a, tier)
        sigs.append(sig)
        if sig.explains:
            return _finish(sigs, clock)
    if e.size == 0:
        return sigs
    shape, names, offset = _axis_names(e.shape, axes, grid_shape)
    masks = _subset_masks(subsets, e.shape, shape)
    p = _prepare(e.reshape(shape), a.reshape(shape), names, tier, _matrix_groups(shape, matrix_axes, offset))
    if not p.mismatch.any() and not p.pattern_mismatch.any():
        return _finish(sigs, clock)
    # How the arrays were analysed, for figure(): the grid reshape and the axis names.
    analysed = {"analysed_shape": list(shape), "analysed_axes": list(names)}
    if p.pattern_mismatch.any():
        nan_sig = _nan_pattern(p, masks)
        sigs.append(nan_sig)
        if nan_sig.explains:
            return _finish(sigs, clock, analysed)
        p.ignore_pattern = True
    if not p.finite.any():
        return _finish(sigs, clock)
    # Cheapest and most decisive first: round-off leaves nothing for a transform to remove.
    found = _precision(p)
    if not found:
        found = _run_transforms(p, clock)
    if not any(s.explains for s in found) and not clock.out():
        found += _permutations(p, clock)
    if not any(s.explains for s in found):
        if not clock.out():
            found += _accumulation(p, clock)
        if not clock.out():
            found += _partial(p, masks)
    sigs += found
    return _equivalents(_finish(sigs, clock, analysed))


# --------------------------------------------------------------------------- #
# Public: gradients
# --------------------------------------------------------------------------- #
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


# --------------------------------------------------------------------------- #
# Public: eigenspaces
# --------------------------------------------------------------------------- #
def _basis_change(eV: np.ndarray, aV: np.ndarray) -> np.ndarray:
    """C with ``aV = eV C`` per batch item, shape (B, n, n).

    For ``V = Linv^T U`` on both sides ``C = U_e^H U_a``: unitary, block-diagonal over
    the eigenvalue clusters when the eigenspaces agree, whatever Linv is.
    """
    if eV.shape[-2] == eV.shape[-1]:
        try:
            return np.linalg.solve(eV, aV)
        except np.linalg.LinAlgError:
            pass  # a singular item: least squares one by one
    return np.array([np.linalg.lstsq(x, y, rcond=None)[0] for x, y in zip(eV, aV)])


def _cluster_labels(values: np.ndarray, rel_gap: float) -> np.ndarray:
    """Cluster label of every mode, shape (B, n), for a batch of eigenvalue rows.

    The clustering of :func:`parity.comparison.engine.cluster_eigenvalues`, vectorised: the
    non-finite values form cluster 0 (when there are any), then the sorted finite
    values split where the relative gap exceeds ``rel_gap``; labels ascend with value.
    """
    B, n = values.shape
    finite = np.isfinite(values)
    order = np.argsort(np.where(finite, values, -np.inf), axis=1, kind="stable")
    s = np.take_along_axis(np.where(finite, values, np.nan), order, axis=1)
    fin_s = np.take_along_axis(finite, order, axis=1)
    span = np.maximum(np.abs(s[:, 1:]), np.abs(s[:, :-1]))
    with np.errstate(invalid="ignore", divide="ignore"):
        gaps = np.where(span > 0, (s[:, 1:] - s[:, :-1]) / np.where(span > 0, span, 1.0), 0.0)
    # A new cluster starts at a gap above rel_gap, and at the first finite value after NaNs.
    starts = (fin_s[:, 1:] & fin_s[:, :-1] & (gaps > rel_gap)) | (fin_s[:, 1:] & ~fin_s[:, :-1])
    sorted_labels = np.concatenate([np.zeros((B, 1), dtype=np.int64), np.cumsum(starts, axis=1)], axis=1)
    labels = np.empty_like(sorted_labels)
    np.put_along_axis(labels, order, sorted_labels, axis=1)
    return labels


def _onehot(labels: np.ndarray, K: int) -> np.ndarray:
    """(B, n, K) indicator of each mode's cluster."""
    out = np.zeros(labels.shape + (K,))
    np.put_along_axis(out, labels[..., None], 1.0, axis=-1)
    return out


def _components(linked: np.ndarray) -> np.ndarray:
    """Connected-component label (the lowest member) of each node, for a batch (B, K, K) of graphs."""
    K = linked.shape[-1]
    reach = (linked | np.swapaxes(linked, -1, -2) | np.eye(K, dtype=bool)).astype(np.float64)
    for _ in range(max(1, int(np.ceil(np.log2(max(K, 2)))))):
        reach = np.minimum(reach @ reach, 1.0)
    return np.argmax(reach > 0, axis=-1)


def _rmatmul(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """x @ y for complex stacks in real arithmetic.

    Small complex matmuls are pathologically slow under a multithreaded BLAS on a busy
    machine (measured 28 ms instead of 0.07 ms); real ones are not.
    """
    if not (np.iscomplexobj(x) or np.iscomplexobj(y)):
        return x @ y
    xr, xi, yr, yi = np.real(x), np.imag(x), np.real(y), np.imag(y)
    return (xr @ yr - xi @ yi) + 1j * (xr @ yi + xi @ yr)


def _projector_bounds(eV: np.ndarray, aV: np.ndarray, C: np.ndarray, onehot: np.ndarray) -> np.ndarray:
    """Rigorous upper bounds on ``max|P_a,g - P_e,g| / max|P_e,g|`` for every cluster g, shape (B, K).

    With ``aV = eV C + R`` and ``C_g = [A; B]`` (the cluster's columns of C, split into its
    own rows A and the others B)::

        P_a,g - P_e,g = eV (C_g C_g^H - S_g) eV^H + eV C_g R_g^H + R_g C_g^H eV^H + R_g R_g^H
        |entry| <= rho^2 (|A^H A - I|_F + 2 |A|_F |B|_F + |B|_F^2) + 2 rho |C_g|_F r_g + r_g^2

    (rho: largest row norm of eV, r_g: of R's cluster columns) and ``max|P_e,g|`` is the
    largest row norm of eV's cluster columns squared (a projector's largest entry is on its
    diagonal). Every term is a sum of non-negative parts: no cancellation.
    """
    same = onehot @ np.swapaxes(onehot, -1, -2)  # (B, n, n): rows i and columns j in one cluster
    absC2 = np.abs(C) ** 2
    colsum = lambda x: (np.ones(x.shape[:-2] + (1, x.shape[-2])) @ x @ onehot)[..., 0, :]  # noqa: E731
    a2 = colsum(absC2 * same)
    b2 = colsum(absC2 * (1.0 - same))
    masked = C * same
    gram = _rmatmul(np.conj(np.swapaxes(masked, -1, -2)), masked)
    E = np.sqrt(colsum(np.abs(gram - np.eye(C.shape[-1]) * same) ** 2 * same))
    R = aV - _rmatmul(eV, C)
    r = np.sqrt((np.abs(R) ** 2 @ onehot).max(axis=-2))
    rho = np.sqrt((np.abs(eV) ** 2).sum(axis=-1).max(axis=-1))[:, None]
    s = (np.abs(eV) ** 2 @ onehot).max(axis=-2)
    a, b = np.sqrt(a2), np.sqrt(b2)
    bound = rho ** 2 * (E + 2 * a * b + b2) + 2 * rho * np.sqrt(a2 + b2) * r + r ** 2
    with np.errstate(invalid="ignore", divide="ignore"):
        out = np.where(s > 0, bound / np.where(s > 0, s, 1.0), np.where(bound > 0, np.inf, 0.0))
    return np.where(np.isfinite(out), out, np.inf)


def _projector_error(eV: np.ndarray, aV: np.ndarray, cols: np.ndarray) -> float:
    """Exact ``max|P_a - P_e| / max|P_e|`` of one cluster's projector (one item)."""
    pe = _rmatmul(eV[:, cols], np.conj(eV[:, cols]).T)
    pa = _rmatmul(aV[:, cols], np.conj(aV[:, cols]).T)
    scale = float(np.abs(pe).max()) if pe.size else 0.0
    return _normwise(float(np.abs(pa - pe).max()) if pe.size else 0.0, scale)


@dataclass
class _ItemMix:
    """Mixing of one batch item's reference clusters in the candidate."""

    groups: list  # tuples of mode indices rotated into each other
    angles: list  # largest principal angle (rad) per group
    residual: float  # bound on the worst projector error with each group merged into one cluster
    explained: bool  # every merged projector within the allowance


def _mixings(ev: np.ndarray, eV: np.ndarray, aV: np.ndarray, rel_gap: float, tol: float,
             clock: _Clock) -> list[_ItemMix | None]:
    """Mixing of every batch item (None for an item not analysed: non-finite C or out of time)."""
    B, n = ev.shape
    C = _basis_change(eV, aV)
    labels = _cluster_labels(ev, rel_gap)
    onehot = _onehot(labels, n)
    ok_C = np.all(np.isfinite(C), axis=(1, 2))
    C = np.where(ok_C[:, None, None], C, 0)
    # W[b, i, j]: fraction of candidate cluster j that lies in reference cluster i.
    sizes = np.maximum(onehot.sum(axis=1), 1.0)  # (B, K)
    W = np.swapaxes(onehot, 1, 2) @ (np.abs(C) ** 2) @ onehot / sizes[:, None, :]
    used = onehot.sum(axis=1) > 0
    linked = (np.sqrt(np.maximum(W, 0.0)) > 10.0 * tol) & used[:, :, None] & used[:, None, :]
    linked &= ~np.eye(n, dtype=bool)
    comp = _components(linked)  # (B, K)
    merged = np.take_along_axis(comp, labels, axis=1)  # (B, n)
    merged_onehot = _onehot(merged, n)
    bounds = _projector_bounds(eV, aV, C, merged_onehot)
    out: list[_ItemMix | None] = []
    for b in range(B):
        if clock.out():
            out += [None] * (B - b)
            break
        if not ok_C[b]:
            out.append(None)
            continue
        groups, angles = [], []
        members = np.bincount(comp[b][used[b]], minlength=n)
        # Merging every cluster into one makes any eigenbasis agree (V V^H is basis-blind):
        # a group holding more than half of the modes explains nothing.
        if np.bincount(merged[b], minlength=n).max() > MAX_MIXED_FRACTION * n and np.any(members >= 2):
            out.append(_ItemMix([], [], math.inf, False))
            continue
        for root in np.flatnonzero(members >= 2):  # components of two or more clusters: mixing
            ks = np.flatnonzero((comp[b] == root) & used[b])
            theta = 0.0
            for k in ks:
                c = np.flatnonzero(labels[b] == k)
                smin = np.linalg.svd(C[b][np.ix_(c, c)], compute_uv=False).min()
                theta = max(theta, float(np.arccos(np.clip(smin, 0.0, 1.0))))
            groups.append(tuple(int(m) for m in np.flatnonzero(np.isin(labels[b], ks))))
            angles.append(theta)
        # Clusters the bound cannot clear get their exact projector error and the gap allowance.
        errors = bounds[b].copy()
        explained = True
        for g in np.flatnonzero(errors > tol):
            cols = np.flatnonzero(merged[b] == g)
            errors[g] = _projector_error(eV[b], aV[b], cols)
            gap = cluster_gaps(ev[b], [cols])[0]
            if not errors[g] <= tol * max(1.0, GAP_REFERENCE / gap):
                explained = False
                break  # one cluster left unexplained decides the item
        out.append(_ItemMix(groups, angles, float(errors[used[b]].max()), explained))
    return out


def diagnose_eigenspaces(expected_values: Any, expected_vectors: Any, actual_values: Any, actual_vectors: Any,
                         tier: Tier, *, rel_gap: float = 1e-6, locate: Callable[[tuple], str] | None = None,
                         axes: Sequence[str] | None = None, time_budget_s: float = 0.05) -> list[Signature]:
    """Which eigenvalue clusters are rotated into which, and by how much.

    Parameters
    ----------
    expected_values, actual_values : array_like, shape (*batch, n)
        Eigenvalues (or a monotone transform, e.g. Winv), modes in the same order in both.
    expected_vectors, actual_vectors : array_like, shape (*batch, m, n)
        Eigenvectors as columns (orthonormal or mass-weighted ``V = Linv^T U``).
    tier : Tier
        Projector allowance ``max(rtol, atol) * max(1, 1e-4 / gap)`` as in
        :func:`parity.comparison.engine.compare_eigenspaces`; eigenvalues by the tier.
    rel_gap : float, default 1e-6
        Eigenvalue clustering threshold (the stage's).
    locate : callable, optional
        ``locate(batch_index) -> str`` names a batch item (``"BZ (dh,dk,dl)=(0,1,1)"``).
    axes : sequence of str, optional
        Names of the eigenvalue array's axes, e.g. ``("BZ point", "mode")``: the batch
        axes name the items in sentences and the eigenvalue signatures use them all.
    time_budget_s : float, default 0.05
        CPU seconds of the calling thread, as in :func:`diagnose_arrays`.

    Returns
    -------
    list of Signature
        ``eigen_rotation`` (modes rotated into each other, the angle in rad, at how
        many items), and the eigenvalues' own signatures (``eigenvalues``, phrase
        ``"eigenvalues: ..."``) when they differ. Never raises.
    """
    clock = _Clock(time_budget_s)
    try:
        return _diagnose_eigenspaces(expected_values, expected_vectors, actual_values, actual_vectors, tier,
                                     rel_gap, locate, axes, clock)
    except Exception as exc:  # diagnosis must never break a run
        return [Signature("internal_error", "diagnosis failed",
                          f"The eigenspace diagnosis failed: {type(exc).__name__}: {exc}.",
                          {"error": f"{type(exc).__name__}: {exc}"}, math.nan, False)]


def _value_signatures(ev: np.ndarray, av: np.ndarray, tier: Tier, names: tuple, clock: _Clock) -> list[Signature]:
    """The eigenvalues' own signatures, relabelled."""
    values = diagnose_arrays(ev, av, tier, axes=names, matrix_axes=(), time_budget_s=clock.left() / 2)
    return [Signature("eigenvalues" if s.name != "nan_pattern" else "nan_pattern",
                      f"eigenvalues: {s.phrase}"[:60], "Eigenvalues: " + s.sentence,
                      {**s.params, "signature": s.name}, s.residual, s.explains) for s in values]


def _diagnose_eigenspaces(ev, eV, av, aV, tier, rel_gap, locate, axes, clock) -> list[Signature]:
    ev, eV, av, aV = (as_numpy(x) for x in (ev, eV, av, aV))
    if ev.ndim < 1 or eV.shape[:-2] != ev.shape[:-1] or av.shape != ev.shape or aV.shape != eV.shape:
        return [Signature("shape", "eigen shapes differ",
                          f"Eigen-decomposition shapes differ: values {av.shape} vs {ev.shape}, vectors "
                          f"{aV.shape} vs {eV.shape}.", {"expected_values": list(ev.shape),
                                                         "actual_values": list(av.shape)}, math.nan, False)]
    names = tuple(axes) if axes is not None and len(axes) == ev.ndim else \
        tuple(f"item axis {i}" for i in range(ev.ndim - 1)) + ("mode",)
    noun = " ".join(names[:-1]) if axes is not None and len(axes) == ev.ndim else "item"
    evr, avr = np.real(ev).astype(np.float64), np.real(av).astype(np.float64)
    sigs = _value_signatures(evr, avr, tier, names, clock)
    values_ok = not sigs or sigs[0].explains
    batch, n = ev.shape[:-1], ev.shape[-1]
    evf = evr.reshape(-1, n)
    eVf = eV.reshape((-1,) + eV.shape[-2:]).astype(np.complex128 if np.iscomplexobj(eV) else np.float64)
    aVf = aV.reshape((-1,) + aV.shape[-2:]).astype(np.complex128 if np.iscomplexobj(aV) else np.float64)
    tol = max(tier.rtol, tier.atol)
    B = evf.shape[0]

    def where(b: int) -> str:
        index = tuple(int(i) for i in np.unravel_index(b, batch))
        return locate(index) if locate else f"{noun} " + ", ".join(map(str, index))

    mixes = _mixings(evf, eVf, aVf, rel_gap, tol, clock)
    unexplained = [b for b, m in enumerate(mixes) if m is None or not m.explained]
    if unexplained and np.iscomplexobj(eVf) and not clock.out():
        conj = _mixings(evf, np.conj(eVf), aVf, rel_gap, tol, clock)
        if all(m is not None and m.explained and not m.groups for m in conj):
            sigs.append(_conjugate_signature(conj, B, noun, tier, values_ok))
            return _finish(sigs, clock)
    found: dict[tuple, dict] = {}
    worst = None
    for b, mix in enumerate(mixes):
        if mix is None or not mix.groups:
            continue
        entry = found.setdefault(tuple(mix.groups), {"items": [], "angles": [], "residual": 0.0})
        entry["items"].append(b)
        entry["angles"].append(max(mix.angles))
        entry["residual"] = max(entry["residual"], mix.residual)
        if worst is None or max(mix.angles) > worst[0]:
            modes = [m for g in mix.groups for m in g]
            C = _basis_change(eVf[b:b + 1], aVf[b:b + 1])[0]
            worst = (max(mix.angles), b, modes, np.abs(C[np.ix_(modes, modes)]).round(6).tolist())
    checked = sum(m is not None for m in mixes)
    for key, entry in sorted(found.items(), key=lambda kv: -len(kv[1]["items"])):
        sigs.append(_rotation_signature(key, entry, B, noun, where, worst, tier,
                                        explains=bool(values_ok and not unexplained and len(found) == 1
                                                      and checked == B),
                                        unexplained=len(unexplained)))
    return _finish(sigs, clock)


def _conjugate_signature(conj: list, B: int, noun: str, tier: Tier, values_ok: bool) -> Signature:
    """The candidate's eigenvectors are the reference's complex conjugates (e.g. k -> -k)."""
    residual = max(m.residual for m in conj)
    params = {"items": B, "of_items": B, "allowed": f"projector tolerance of tier {tier.name}"}
    sentence = (f"The candidate's eigenvectors are the complex conjugates of the reference's at all {B} "
                f"{noun}s (up to phases and rotations inside clusters), as a flipped sign of the phase "
                f"k.r produces; projector residual {_g(residual)}"
                + (f", within tier {tier.name}." if values_ok else ", but the eigenvalues differ too."))
    return Signature("eigen_conjugate", "eigenvectors conjugated", sentence, params, float(residual), values_ok)


def _rotation_signature(key: tuple, entry: dict, B: int, noun: str, where: Callable[[int], str], worst,
                        tier: Tier, explains: bool, unexplained: int) -> Signature:
    """Words for one pattern of eigenvector mixing."""
    angles, items = np.array(entry["angles"]), entry["items"]
    modes = " | ".join("+".join(str(m) for m in g) for g in key)
    mode_words = " and ".join(", ".join(str(m) for m in g) for g in key)
    swapped = abs(float(np.median(angles)) - math.pi / 2) < 1e-3
    params = {"modes": [list(g) for g in key], "angle_rad": float(np.median(angles)),
              "angle_min": float(angles.min()), "angle_max": float(angles.max()),
              "items": len(items), "of_items": B, "first_location": where(items[0]),
              "allowed": f"projector tolerance of tier {tier.name}", "unexplained_items": unexplained}
    if worst is not None and worst[1] in items:
        params["overlap"] = {"modes": worst[2], "abs_C": worst[3], "location": where(worst[1])}
    same = params["angle_max"] - params["angle_min"] < 1e-6
    angle_text = f"{params['angle_rad']:.3f} rad" if same else \
        f"{params['angle_min']:.3f} to {params['angle_max']:.3f} rad (median {params['angle_rad']:.3f})"
    scope = f"at all {B} {noun}s" if len(items) == B else \
        f"at {len(items)} of {B} {noun}s (first {where(items[0])})"
    phrase = f"modes {modes} {'swapped' if swapped else 'mixed'}, {params['angle_rad']:.3f} rad"
    sentence = (f"The eigenvectors of modes {mode_words}, which belong to different eigenvalue clusters, are "
                f"rotated into each other by {angle_text} {scope}" + (" (swapped)" if swapped else "")
                + f"; merging them into one eigenspace leaves a projector error of {_g(entry['residual'])}"
                + (f", within tier {tier.name}." if explains else
                   f"; {unexplained} {noun}(s) are not explained by this alone."))
    return Signature("eigen_rotation", phrase[:60], sentence, params, float(entry["residual"]), explains)


# --------------------------------------------------------------------------- #
# Figures
# --------------------------------------------------------------------------- #
def figure(signature: Signature, expected: Any, actual: Any) -> str | None:
    """A small picture of the signature, where one helps: PNG ``data:`` URI or None.

    Parameters
    ----------
    signature : Signature
        From :func:`diagnose_arrays` / :func:`diagnose_eigenspaces`.
    expected, actual : array_like
        The pair it was diagnosed on (for eigenspaces the figure uses only
        ``signature.params``, pass anything).

    Returns
    -------
    str or None
        ``data:image/png;base64,...`` (matplotlib, Agg, no pyplot state), or None
        when no figure helps or matplotlib is missing. Never raises.
    """
    try:
        drawer = _FIGURES.get(signature.name)
        if drawer is None:
            return None
        from matplotlib.figure import Figure

        from parity.rendering.report import png_data_uri

        size = (4.2, 3.2) if signature.name == "eigen_rotation" else (6.0, 2.6)
        fig = Figure(figsize=size, layout="constrained")
        if not drawer(fig, signature, expected, actual):
            return None
        return png_data_uri(fig)
    except Exception:  # a figure is optional: never fail the report for one
        return None


def _analysed(signature: Signature, x: Any) -> np.ndarray:
    arr = _work(x)
    shape = signature.params.get("analysed_shape")
    return arr.reshape(shape) if shape and int(np.prod(shape)) == arr.size else arr


def _draw_profile(fig, sig: Signature, expected, actual) -> bool:
    """Error per index along the signature's axis (partial agreement, accumulation)."""
    e, a = _analysed(sig, expected), _analysed(sig, actual)
    names = sig.params.get("analysed_axes") or [f"axis {i}" for i in range(e.ndim)]
    if sig.name == "accumulation":
        ax = sig.params["axis_index"]
    else:
        first = sig.params.get("first_agrees") or []
        per_axis = sig.params.get("per_axis") or []
        name = first[0] if first else (per_axis[0][0] if per_axis else None)
        if name is None or name not in names:
            return False
        ax = list(names).index(name)
    if np.iscomplexobj(a) != np.iscomplexobj(e):
        a = a.real if np.iscomplexobj(a) else a
        e = e.real if np.iscomplexobj(e) else e
    d = np.where(np.isfinite(a) & np.isfinite(e), np.abs(a - e), np.nan)
    scale = np.nanmax(np.abs(np.where(np.isfinite(e), e, np.nan)))
    others = tuple(i for i in range(e.ndim) if i != ax)
    profile = np.nanmax(d, axis=others) / (scale if scale > 0 else 1.0)
    axis = fig.add_subplot()
    axis.semilogy(np.arange(profile.size), np.maximum(profile, 1e-18), "o-", color="#4c72b0")
    axis.set_xlabel(f"{names[ax]} index")
    axis.set_ylabel("max |a - e| / max |e|")
    axis.set_title(f"Error along {names[ax]}", fontsize=10)
    axis.grid(alpha=0.3)
    return True


def _draw_precision(fig, sig: Signature, expected, actual) -> bool:
    """Histogram of the relative error in units of the format's round-off."""
    e, a = _parts(_work(expected).reshape(-1)), _parts(_work(actual).reshape(-1))
    if e.shape != a.shape:
        return False
    ok = np.isfinite(e) & np.isfinite(a) & (e != 0)
    u = float(sig.params.get("unit_roundoff", 2.0 ** -24))
    r = np.abs(a[ok] - e[ok]) / np.abs(e[ok]) / u
    r = r[r > 0]
    if r.size == 0:
        return False
    axis = fig.add_subplot()
    axis.hist(np.log2(r), bins=40, color="#4c72b0")
    axis.set_xlabel(f"log2( |a - e| / |e| / u ),  u = {sig.params.get('format')} unit round-off")
    axis.set_ylabel("elements")
    axis.set_title("Relative error in units of round-off", fontsize=10)
    return True


def _draw_factor(fig, sig: Signature, expected, actual) -> bool:
    """Candidate against reference with the fitted line."""
    e, a = _work(expected).reshape(-1), _work(actual).reshape(-1)
    if e.shape != a.shape:
        return False
    ok = np.isfinite(e) & np.isfinite(a)
    e, a = e[ok], a[ok]
    step = max(1, e.size // 2000)
    e, a = np.real(e[::step]), np.real(a[::step])
    c = sig.params.get("factor", 1.0)
    c = complex(c["re"], c["im"]) if isinstance(c, dict) else c
    axis = fig.add_subplot()
    axis.plot(e, a, ".", markersize=3, color="#4c72b0", label="elements")
    xs = np.array([min(0.0, e.min()), max(0.0, e.max())]) if e.size else np.array([0.0, 1.0])
    text = sig.params.get("expression") or _num(c)
    axis.plot(xs, np.real(c) * xs, "--", color="#c0392b", label=f"candidate = {text} x reference")
    axis.set_xlabel("reference (real part)")
    axis.set_ylabel("candidate (real part)")
    axis.legend(fontsize=8)
    return True


def _draw_overlap(fig, sig: Signature, expected, actual) -> bool:
    """|C| between the mixed modes at the worst item (C: candidate in the reference basis)."""
    ov = sig.params.get("overlap")
    if not ov:
        return False
    C = np.array(ov["abs_C"], dtype=float)
    axis = fig.add_subplot()
    im = axis.imshow(C, vmin=0, vmax=1, cmap="viridis")
    ticks = range(len(ov["modes"]))
    axis.set_xticks(ticks, [str(m) for m in ov["modes"]])
    axis.set_yticks(ticks, [str(m) for m in ov["modes"]])
    axis.set_xlabel("candidate mode")
    axis.set_ylabel("reference mode")
    axis.set_title(f"|overlap| at {ov['location']}", fontsize=10)
    fig.colorbar(im, ax=axis)
    return True


def _draw_nan(fig, sig: Signature, expected, actual) -> bool:
    """Count of pattern mismatches along each axis that holds them."""
    e, a = _analysed(sig, expected), _analysed(sig, actual)
    if e.shape != a.shape:
        return False
    mm = nonfinite_code(e) != nonfinite_code(a)
    names = sig.params.get("analysed_axes") or [f"axis {i}" for i in range(e.ndim)]
    shown = [ax for ax in range(e.ndim) if 1 < e.shape[ax]][-4:]
    if not shown or not mm.any():
        return False
    for k, ax in enumerate(shown):
        axis = fig.add_subplot(1, len(shown), k + 1)
        others = tuple(i for i in range(e.ndim) if i != ax)
        axis.bar(np.arange(e.shape[ax]), mm.sum(axis=others), color="#c0392b")
        if e.shape[ax] <= 12:
            axis.set_xticks(range(e.shape[ax]))
        axis.set_xlabel(f"{names[ax]} index")
        if k == 0:
            axis.set_ylabel("NaN/inf mismatches")
    return True


_FIGURES: dict[str, Callable[..., bool]] = {
    "partial": _draw_profile,
    "accumulation": _draw_profile,
    "precision": _draw_precision,
    "constant_factor": _draw_factor,
    "eigen_rotation": _draw_overlap,
    "nan_pattern": _draw_nan,
}
