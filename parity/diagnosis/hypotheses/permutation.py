"""Any permutation of the entries along one axis (atoms, k-points, ...).

Slices are matched on a few sampled positions (a random projection, a sort, a
nearest-neighbour check), then the permutation is verified on every element.
"""
from __future__ import annotations

import numpy as np

from parity.contract.tiers import Tier
from parity.diagnosis.engine import Context, Pair, Transform, factor_kind, judge_full, transform_signature
from parity.diagnosis.result import Signature

#: General permutation search: axes up to this length, matched on this many features.
MAX_PERMUTATION_AXIS = 4096
N_FEATURES = 32


def _sentence(params: dict) -> str:
    return (f"candidate = reference with the {params.get('axis')} entries permuted "
            f"({params.get('moved')} of {params.get('n')} moved)")


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


def examine(p: Pair, ctx: Context) -> list[Signature]:
    """An arbitrary permutation of the entries along one axis (atoms, k-points, ...)."""
    out = []
    rest_size = max(p.e.size, 1)
    for ax, n in enumerate(p.e.shape):
        if ctx.clock.out():
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
        tr = Transform("permutation", label, params, axis=ax, source=src, sentence=_sentence)
        fit = judge_full(p, tr, factor_kind(p, tr))
        if fit is not None and fit.explains:
            out.append(transform_signature(p, tr, fit))
    return out
