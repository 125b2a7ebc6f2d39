"""Perturbation bounds of the cluster maps (``Id_cluster0``, ``Id_cluster_last``).

A cluster map sums single-mode maps ``W_k |F . V_k|^2`` over one eigenvalue cluster
``C`` of ``D(k)``. The two backends eigendecompose two matrices ``D`` that differ by
``Delta D`` (judged by the ``D`` stage's own tier, and credited here only up to what
that tier allows), each with the symmetric
eigensolver's backward error ``n eps ||D||``. To first order (Davis-Kahan / Rayleigh-
Schroedinger) a perturbation ``E`` with ``||E|| <= delta`` turns ``C``'s modes into
mode ``k`` by ``<u_k, E u_C> / (lambda_C - lambda_k)`` and moves ``lambda_C`` by at
most ``delta``, so with ``b_k = F . V_k`` the map at q moves by at most::

    W_C delta (2 ||b_C|| sqrt(sum_k |b_k|^2 / dist_k^2) + ||b_C||^2 / lambda_C)

(Cauchy-Schwarz over the modes ``k`` outside ``C``; ``dist_k`` the distance from
``lambda_k`` to ``C``). ``delta = ||Delta D||_2 + 2 n eps ||D||_2`` per BZ point. The
amplitudes ``|b_k|^2 = mode_map_k / W_k`` are the reference's own single-mode maps, so
a cluster that is weak where its neighbours are strong gets the allowance its
conditioning demands. Zero modes (``W`` NaN) carry no amplitude here.

Measured (``tests/benchmarks/cluster_bound.py``, torch vs NumPy, float64): the maps
differ by 0.0002-0.12 of this bound on synthetic, synth_trigonal, 7n2h and 5zck_p1 at
gnm_cutoff 1e9 (gammas 0.5) and at unit springs, where the bound (3e-12 on the
synthetic crystal) stays below the ``end_to_end`` tier's floor, so that tier is
unchanged there. Without ``Delta D`` (the eigensolvers' backward error alone) the
measured differences exceed the bound by up to 27x (7n2h): at gnm_cutoff 1e9 the
difference between the two backends' ``D`` dominates.
"""
from __future__ import annotations

import math
from typing import Callable

import numpy as np

from parity.contract.eigenclusters import cluster_eigenvalues
from parity.contract.run_view import RunView
from parity.contract.tiers import TIERS, resolve_tier


def _delta_d(run: RunView, n: int, d_terms: int, eps: float) -> np.ndarray:
    """``||Delta D||_2`` per BZ point, (n_bz,); D's tier bound where the candidate gives no D."""
    d_ref = np.asarray(run.reference_value("D")).reshape(-1, n, n)
    norms = np.linalg.norm(d_ref, 2, axis=(1, 2))
    # The most D may differ and still pass its own tier (normwise: every element within
    # atol max|D|, so the 2-norm within n atol max|D|): a larger difference fails the D
    # stage and must not widen the map's allowance.
    d_tier = resolve_tier("tight", run.dtype, run.tier_overrides).scaled(d_terms, eps)
    cap = n * d_tier.atol * float(np.max(np.abs(d_ref)))
    try:
        d_can = np.asarray(run.candidate_value("D"), dtype=d_ref.dtype).reshape(d_ref.shape)
        diff = np.linalg.norm(d_can - d_ref, 2, axis=(1, 2))
        if np.all(np.isfinite(diff)):
            return np.minimum(diff, cap)
    except Exception:  # the candidate's D is judged (and reported) by the D stage itself
        pass
    return np.full(len(norms), cap)


def cluster_map_bound(run: RunView, rank: int, d_terms: int, eps: float) -> float | None:
    """First-order bound on the cluster map's difference, relative to its maximum.

    Parameters
    ----------
    run : RunView
        Gives the reference's ``Winv`` (n_bz, n_dof), ``mode_maps`` (n_q, n_dof),
        ``bz_index`` (n_q,) and ``D``, and the candidate's ``D``.
    rank : int
        A mode rank; the map sums its eigenvalue cluster.
    d_terms : int
        Terms of one entry of D (used only where the candidate's D is missing).
    eps : float
        Machine epsilon of the working precision.

    Returns
    -------
    float or None
        ``max_q bound(q) / max_q |map(q)|`` (module docstring); None where the map is
        zero or non-finite everywhere (nothing to scale).
    """
    W = np.asarray(run.reference_value("Winv"))
    n = W.shape[-1]
    W = W.reshape(-1, n).real
    maps = np.asarray(run.reference_value("mode_maps"), dtype=float)
    bz_index = np.asarray(run.reference_value("bz_index"))
    d_norm = np.linalg.norm(np.asarray(run.reference_value("D")).reshape(-1, n, n), 2, axis=(1, 2))
    delta = _delta_d(run, n, d_terms, eps) + 2 * n * eps * d_norm
    bound, scale = 0.0, 0.0
    for b, row in enumerate(W):
        good = np.isfinite(row) & (row > 0)
        safe = np.where(good, row, 1.0)
        lam = np.where(good, 1.0 / safe, 0.0)
        members = next(cl for cl in cluster_eigenvalues(row) if rank in cl)
        sel = (bz_index == b) & np.isfinite(maps).any(axis=1)
        if not good[members].all() or not sel.any():
            continue
        with np.errstate(invalid="ignore"):
            amp2 = np.nan_to_num(np.clip(np.where(good, maps[sel] / safe, 0.0), 0.0, None))
        a_c2 = amp2[:, members].sum(axis=1)
        others = np.setdiff1d(np.flatnonzero(good), members)
        mix = np.zeros_like(a_c2)
        if len(others):
            dist = np.min(np.abs(lam[others][:, None] - lam[members][None, :]), axis=1)
            if np.any(dist == 0):
                return math.inf
            mix = 2.0 * np.sqrt(a_c2 * (amp2[:, others] / dist[None, :] ** 2).sum(axis=1))
        per_q = float(row[members].max()) * delta[b] * (mix + a_c2 / float(lam[members].min()))
        bound = max(bound, float(per_q.max()))
        scale = max(scale, float(np.max(a_c2 * row[members].min())))
    return bound / scale if scale > 0 else None


def cluster_terms(rank_of: Callable[[int], int], d_terms: Callable[[RunView], int | None]):
    """A stage's ``terms``: :func:`cluster_map_bound` over the working precision's eps."""
    def terms(run: RunView) -> int | None:
        eps = float(np.finfo(np.dtype(run.dtype)).eps)
        n = np.asarray(run.reference_value("Winv")).shape[-1]
        rel = cluster_map_bound(run, rank_of(n), d_terms(run) or 1, eps)
        if rel is None:
            return None
        return max(1, int(math.ceil(min(rel / eps, 2.0**52))))
    return terms


# ----------------------------------------------------------------- far from the origin
#: Largest centring conditioning ``max|x| / max|x - com|`` among the fixtures the ``tight``
#: tier was measured on (synth_tetragonal 5.57, histidine 5.33, 5zck 5.21; 7n2h 2.82).
KAPPA_MEASURED = 5.57


def position_conditioning(run: RunView) -> float:
    """``max|x| / max|x - com|`` over the P1-expanded atoms (com per ASU), dimensionless.

    Centring (``x - com``, the rigid-body arms of A) and phases (``q . x``) lose
    ``eps |x|`` absolutely, while A, M and the projected F are as large as the centred
    coordinates: their round-off relative to their size grows with this ratio. A crystal
    moved 5,000 A from the origin (same cell) has 1.7e3.
    """
    xyz = np.asarray(run.reference_value("xyz"), dtype=float)
    xyz = xyz.reshape(-1, xyz.shape[-2], 3) if xyz.ndim >= 2 else xyz.reshape(1, -1, 3)
    centred = float(np.max(np.linalg.norm(xyz - xyz.mean(axis=1, keepdims=True), axis=-1), initial=0.0))
    far = float(np.max(np.linalg.norm(xyz, axis=-1), initial=0.0))
    return far / centred if centred > 0 else 1.0


def far_terms(base: Callable[[RunView], int | None] | None = None):
    """A stage's ``terms`` scaled by ``kappa / KAPPA_MEASURED`` where that exceeds 1.

    Within the measured range of :func:`position_conditioning` the terms are ``base``'s
    (or none): the tier is unchanged. Beyond it the round-off grows in proportion to
    ``|x|``, so the allowance is the larger of the tier's ``atol`` and ``base``'s bound,
    times ``kappa / KAPPA_MEASURED``. Measured (crystal moved 5,000 A, kappa 1.7e3,
    factor 303): Amat, Mmat, structure_factors, hessian, K, D differ by 3e-5-0.05 of
    the scaled allowance (docs/hostile-input.md).
    """
    def terms(run: RunView) -> int | None:
        n = base(run) if base else None
        factor = position_conditioning(run) / KAPPA_MEASURED
        if not factor > 1.0:
            return n
        floor = TIERS["tight"].atol / float(np.finfo(np.float64).eps)
        return max(1, int(math.ceil(min(max(n or 1, floor) * factor, 2.0**52))))
    return terms
