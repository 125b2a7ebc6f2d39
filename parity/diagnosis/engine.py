"""The pair-and-transform engine: how a hypothesis is applied, tested and scored.

A hypothesis ``T`` is *applied* to the reference and judged by the stage's own tier::

    |candidate - T(reference)| <= atol * max|T(reference)| + rtol * |T(reference)|

This module prepares a (reference, candidate) pair for analysis (:class:`Pair`: the
working dtype, the analysed shape and axis names, the NaN/inf codes, the normwise
error, a deterministic screening sample), describes a transform of the reference
(:class:`Transform`: a swap of axis groups, a map of the indices along one axis, an
elementwise op, times a constant factor), and judges it: first on a small probe, then on
a sample, then on every element (:func:`screen`), fitting the best factor on the way
(:func:`fit_factor`). A claimed match is always verified on the whole array.

The hypothesis families (:mod:`parity.diagnosis.hypotheses`) build transforms and call
:func:`run_transforms` / :func:`screen`; :func:`transform_signature` puts a judged
transform into words.

Public API
----------
Clock, Context, Pair, Transform, Fit
work_array(x), prepare_pair(e, a, names, tier, groups), analysed_axes(shape, axes, grid_shape)
matrix_groups(shape, matrix_axes, offset), subset_masks(subsets, orig_shape, shape)
fit_factor(a, t, tier, factor), judge_full(p, tr, factor), factor_kind(p, tr), screen(p, tr, factor)
transform_params(p, tr, fit, extra), verdict(p, fit), transform_signature(p, tr, fit, extra)
run_transforms(p, clock, transforms)
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np

from parity.contract.values import nonfinite_code
from parity.contract.values import as_numpy
from parity.contract.tiers import Tier
from parity.diagnosis.expressions import recognise
from parity.diagnosis.result import Signature
from parity.diagnosis.wording import normwise, number_text, plain, short, within

#: Elements a hypothesis is screened on before it is verified on the whole array.
N_SAMPLE = 4096
#: Of which the largest errors (so a defect confined to a small region is seen).
N_WORST = 512
#: The first, cheap screen: this many elements, half of them the worst.
N_PROBE = 64
#: A transform is a near-explanation when it leaves at most this fraction of the error.
NEAR = 1e-2
#: Arrays with fewer finite elements than this get a constant factor only when it is a
#: simple expression (any ratio of two numbers is "a constant factor").
MIN_ELEMENTS_FOR_FREE_FACTOR = 4


class Clock:
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
        """CPU seconds left (0 once spent)."""
        return max(self.deadline - time.thread_time(), 0.0)

    def out(self) -> bool:
        """Whether the budget is spent; once True, True for good (``hit``)."""
        if not self.hit and time.thread_time() > self.deadline:
            self.hit = True
        return self.hit


@dataclass(frozen=True)
class Context:
    """What a hypothesis family sees besides the pair: the time budget and the named subsets.

    ``subsets`` maps a name (``"Bragg points"``) to a bool mask of the analysed shape.
    """

    clock: Clock
    subsets: Mapping[str, np.ndarray]


# --------------------------------------------------------------------------- #
# Preparing a pair
# --------------------------------------------------------------------------- #
@dataclass
class Pair:
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


def work_array(x: Any) -> np.ndarray:
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


def prepare_pair(e: np.ndarray, a: np.ndarray, names: tuple[str, ...], tier: Tier, groups: list) -> Pair:
    code_e, code_a = nonfinite_code(e), nonfinite_code(a)
    finite = (code_e == 0) & (code_a == 0)
    ez, az = np.where(finite, e, 0), np.where(finite, a, 0)
    diff = np.abs(az - ez)
    e_abs = np.abs(ez)
    scale = float(e_abs.max()) if e_abs.size else 0.0
    mismatch = finite & (diff > tier.atol * scale + tier.rtol * e_abs)
    error = normwise(float(diff.max()) if diff.size else 0.0, scale)
    pattern_mismatch = code_e != code_a
    # NaN/inf mismatches rank first among the worst elements: a transform must fix them too.
    badness = np.where(pattern_mismatch, np.inf, diff)
    return Pair(e=e, a=a, names=names, tier=tier, code_e=code_e, code_a=code_a, finite=finite,
                 diff=diff, mismatch=mismatch, pattern_mismatch=pattern_mismatch, scale=scale,
                 error=error, sample=_sample(badness, N_SAMPLE, N_WORST),
                 probe=_sample(badness, N_PROBE, N_PROBE // 2), groups=groups)


def analysed_axes(shape: tuple[int, ...], axes: Sequence[str] | None,
                grid_shape: Sequence[int] | None) -> tuple[tuple[int, ...], tuple[str, ...], int]:
    """Analysed shape and axis names; the offset added to axis numbers by the grid reshape."""
    names = list(axes) if axes is not None and len(axes) == len(shape) else [f"axis {i}" for i in range(len(shape))]
    if grid_shape is not None and len(grid_shape) == 3 and len(shape) >= 1 \
            and int(np.prod(grid_shape)) == shape[0] and all(int(n) > 0 for n in grid_shape):
        return tuple(int(n) for n in grid_shape) + tuple(shape[1:]), ("h", "k", "l", *names[1:]), 2
    return tuple(shape), tuple(names), 0


def matrix_groups(shape: tuple[int, ...], matrix_axes: Any, offset: int) -> list:
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



def subset_masks(subsets: Mapping[str, Any] | None, orig_shape: tuple, shape: tuple) -> dict[str, np.ndarray]:
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



def re_im_parts(x: np.ndarray) -> np.ndarray:
    """A 1-D array as it is when real; when complex, its real parts followed by its imaginary parts."""
    return np.concatenate([x.real, x.imag]) if np.iscomplexobj(x) else x


# --------------------------------------------------------------------------- #
# Transforms of the reference
# --------------------------------------------------------------------------- #
@dataclass(frozen=True)
class Transform:
    """A hypothesis ``candidate = factor * T(reference)``.

    ``swap`` exchanges axis groups (transposes), ``axis``/``source`` maps the index
    along one axis (``cand[i] = ref[source[i]]``, ``-1``: no counterpart), ``op``
    is elementwise (``"conj"``, ``"swap_re_im"``). ``sentence(params)`` puts the
    transform into words for the report (default: ``"candidate = <label> of the
    reference"``).
    """

    name: str
    label: str
    params: dict
    swap: tuple | None = None
    axis: int | None = None
    source: np.ndarray | None = None
    op: str = ""
    sentence: Callable[[dict], str] | None = None

    @property
    def identity(self) -> bool:
        """T(e) = e: only a constant factor is left to fit."""
        return self.swap is None and self.axis is None and not self.op

    def describe(self, params: dict) -> str:
        """The sentence of this transform with the judged ``params``."""
        return self.sentence(params) if self.sentence else f"candidate = {self.label} of the reference"


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


def group_name(p: Pair, g: tuple[int, ...]) -> str:
    return "(" + ", ".join(p.names[i] for i in g) + ")" if len(g) > 1 else p.names[g[0]]


@dataclass
class Fit:
    """A judged ``candidate ~ factor * T(reference)``: its factor (and that factor's simple
    expression), the normwise residual, whether it is within the tier, and how many
    elements had a counterpart (``covered``) or not (``uncovered``)."""

    factor: complex | float
    residual: float
    explains: bool
    expression: str | None = None
    covered: int = 0
    uncovered: int = 0


def fit_factor(a: np.ndarray, t: np.ndarray, tier: Tier, factor: str) -> Fit:
    """Best ``a ~ c t`` over 1-D finite values.

    ``factor``: ``"none"`` (c = 1 only), ``"simple"`` (c = 1 or a simple expression of
    small integers and pi), ``"real"`` or ``"complex"`` (also a least-squares c). A
    factor is kept only when it removes most of the error (residual <= NEAR of c = 1's).
    """
    if a.size == 0:
        return Fit(1.0, 0.0, True)
    t_abs = np.abs(t)
    scale = float(t_abs.max())
    d1 = np.abs(a - t)
    ok1 = bool(np.all(d1 <= tier.atol * scale + tier.rtol * t_abs))
    res1 = normwise(float(d1.max()), scale)
    if ok1 or factor == "none":
        return Fit(1.0, res1, ok1)
    tt = float(np.vdot(t, t).real)
    if not np.isfinite(tt) or tt == 0:
        return Fit(1.0, res1, False)
    c = np.vdot(t, a) / tt
    c = plain(c) if factor == "complex" else float(np.real(c))
    if c == 0:
        return Fit(0.0, 0.0, True, "0") if not np.any(a) else Fit(1.0, res1, False)

    def judge(value):
        d = np.abs(a - value * t)
        s = abs(value) * scale
        return normwise(float(d.max()), s), bool(np.all(d <= tier.atol * s + tier.rtol * abs(value) * t_abs))

    res_c, ok_c = judge(c)
    if not ok_c and not res_c <= NEAR * res1:
        return Fit(1.0, res1, False)  # no factor helps
    named = recognise(c, res_c, tier)
    if named is not None:
        value = named[1] if factor == "complex" else float(np.real(named[1]))
        res_n, ok_n = judge(value)
        if ok_n or not ok_c:
            return Fit(plain(value), res_n, ok_n, named[0])
    if factor == "simple":
        return Fit(1.0, res1, False)
    return Fit(c, res_c, ok_c)


def _judge(p: Pair, t: np.ndarray, covered: np.ndarray | None, positions: Any, factor: str) -> Fit | None:
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
    fit = fit_factor(a, t, p.tier, factor)
    fit.covered = n_covered
    return fit


def transform_params(p: Pair, tr: Transform, fit: Fit, extra: Mapping[str, Any] | None = None
                     ) -> tuple[dict, str | None]:
    """The JSON params of a judged transform, and the text of its factor (None when it is 1).

    ``extra`` (a family's own params, e.g. a shift's ``uncovered``) follows ``allowed``.
    """
    params = dict(tr.params)
    params.update(error_before=p.error, allowed=f"tier {p.tier.name}")
    if extra:
        params.update(extra)
    factor_text = None
    if fit.factor != 1.0:
        params["factor"] = fit.factor
        factor_text = f"{number_text(fit.factor)}" + (f" = {fit.expression}" if fit.expression else "")
        if fit.expression:
            params["expression"] = fit.expression
    if p.ignore_pattern:
        params["judged_on"] = "elements finite in both (the NaN/inf patterns differ)"
    return params, factor_text


def verdict(p: Pair, fit: Fit) -> str:
    """The end of a transform's sentence: within the tier, or the residual it leaves."""
    return (f"; residual {short(fit.residual)} of max|reference|, within tier {p.tier.name}" if fit.explains
            else f"; it leaves a residual of {short(fit.residual)} of max|reference| "
                 f"(the error was {short(p.error)}), more than tier {p.tier.name} allows")


def transform_signature(p: Pair, tr: Transform, fit: Fit, extra: Mapping[str, Any] | None = None) -> Signature:
    """Words for a judged transform: its label (times the factor) and its sentence."""
    params, factor_text = transform_params(p, tr, fit, extra)
    phrase = tr.label + (f" x {fit.expression or number_text(fit.factor)}" if factor_text else "")
    sentence = tr.describe(params) + (f", times {factor_text}" if factor_text else "")
    return Signature(tr.name, phrase, sentence + verdict(p, fit) + ".", params, float(fit.residual),
                     bool(fit.explains))


def judge_full(p: Pair, tr: Transform, factor: str) -> Fit | None:
    """Judge a transform on every element."""
    t, covered = tr.full(p.e)
    if covered is not None:
        covered = np.broadcast_to(covered, p.e.shape)
    return _judge(p, t, covered, slice(None), factor)


def factor_kind(p: Pair, tr: Transform) -> str:
    """Which factors a transform may carry (see :func:`fit_factor`)."""
    free = int(np.count_nonzero(p.finite)) >= MIN_ELEMENTS_FOR_FREE_FACTOR
    if not free:
        return "simple"
    # conj x i IS swap_re_im: elementwise complex ops take real factors only, so each
    # defect has one name.
    return "complex" if p.complex and not tr.op else "real"


def _level(p: Pair, tr: Transform, flat: np.ndarray, factor: str, error: float) -> Fit | None:
    """Judge on a set of flat positions; None unless it explains or removes most of ``error``."""
    t, cov = tr.gather(p.e, flat)
    fit = _judge(p, t, cov, np.unravel_index(flat, p.e.shape), factor)
    if fit is None or fit.covered < max(1, flat.size // 2):
        return None
    if not (fit.explains or fit.residual <= NEAR * error):
        return None
    return fit


def _noop(p: Pair, tr: Transform) -> bool:
    """T(e) equals e where the error is largest: T is invisible on these data."""
    if tr.identity:
        return False
    t, cov = tr.gather(p.e, p.probe)
    e = p.e.reshape(-1)[p.probe][cov]
    t = t[cov]
    fin = np.isfinite(e) & np.isfinite(t)
    return bool(np.array_equal(np.isfinite(e), np.isfinite(t)) and within(t[fin], e[fin], p.tier)[1])


def screen(p: Pair, tr: Transform, factor: str) -> Fit | None:
    """Judge on the probe, then the sample, then the whole array; stop at the first failure."""
    if _noop(p, tr):
        return None
    flat_diff = p.diff.reshape(-1)
    fit = None
    for flat in (p.probe, p.sample):
        fit = _level(p, tr, flat, factor, normwise(float(flat_diff[flat].max()), p.scale))
        if fit is None:
            return None
        if flat.size == p.e.size:
            break
    else:
        fit = judge_full(p, tr, factor)
        if fit is None or not (fit.explains or fit.residual <= NEAR * p.error):
            return None
    fit.uncovered = int(p.e.size - fit.covered)
    return fit


def run_transforms(p: Pair, clock: Clock, transforms: Iterable[Transform]) -> list[Signature]:
    """Screen each transform in order (until the time budget runs out); the signatures of those kept.

    A transform is kept when it explains the difference or removes most of it (see
    :func:`screen`).
    """
    out: list[Signature] = []
    for tr in transforms:
        if clock.out():
            break
        fit = screen(p, tr, factor_kind(p, tr))
        if fit is not None:
            out.append(transform_signature(p, tr, fit))
    return out
