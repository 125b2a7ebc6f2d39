"""Eigenvalue clusters: which eigenvectors the contract defines only up to a rotation.

Eigenvectors of (near-)degenerate eigenvalues are defined only as a subspace: the contract
compares them per cluster (:mod:`parity.comparison.eigenspaces`), the cluster-map stages
derive from the same clusters (:mod:`parity.stages`), the tiers' perturbation bound reads
their gaps (:mod:`parity.contract.conditioning`) and the diagnosis explains rotations
between them (:mod:`parity.diagnosis.eigen`). One definition, here, below all of them.
"""
from __future__ import annotations

from typing import Any

import math

import numpy as np

from parity.contract.values import as_numpy

__all__ = ["GAP_REFERENCE", "cluster_eigenvalues", "cluster_gaps"]

#: Relative eigenvalue gap below which the projector allowance grows like 1 / gap.
GAP_REFERENCE = 1e-4


def cluster_eigenvalues(values: Any, rel_gap: float = 1e-6) -> list[np.ndarray]:
    """Group (near-)degenerate eigenvalues.

    Parameters
    ----------
    values : array_like, shape (n,)
        Eigenvalues (or a monotone transform such as ``Winv = 1/w^2``).
        Complex input is clustered on its real part (the goldens store
        ``Winv`` as complex with zero imaginary part).
    rel_gap : float, default 1e-6
        Sorted finite values are split where
        ``(v[i+1] - v[i]) / max(|v[i+1]|, |v[i]|) > rel_gap``.

    Returns
    -------
    list of numpy.ndarray of int
        Index sets (each sorted ascending) into ``values``: the non-finite
        (NaN, zero-mode) values first as one cluster, then the finite
        clusters in ascending order of value.
    """
    v = as_numpy(values)
    if v.ndim != 1:
        raise ValueError(f"cluster_eigenvalues needs a 1-D array, got shape {v.shape}")
    v = (v.real if np.iscomplexobj(v) else v).astype(np.float64)
    finite = np.isfinite(v)
    clusters: list[np.ndarray] = []
    if not finite.all():
        clusters.append(np.flatnonzero(~finite))
    order = np.flatnonzero(finite)
    order = order[np.argsort(v[order], kind="stable")]
    if order.size:
        s = v[order]
        span = np.maximum(np.abs(s[1:]), np.abs(s[:-1]))
        with np.errstate(invalid="ignore", divide="ignore"):
            gaps = np.where(span > 0, (s[1:] - s[:-1]) / np.where(span > 0, span, 1.0), 0.0)
        clusters += [np.sort(g) for g in np.split(order, np.flatnonzero(gaps > rel_gap) + 1)]
    return clusters


def cluster_gaps(values: np.ndarray, clusters: list[np.ndarray]) -> list[float]:
    """Relative gap of each cluster to the nearest eigenvalue outside it (inf if none).

    Non-finite clusters (zero modes) get inf: their projector (the null space) does
    not depend on a gap to the finite spectrum in this sense.
    """
    v = np.real(np.asarray(values, dtype=complex))
    finite = np.isfinite(v)
    out = []
    for c in clusters:
        inside = v[c][np.isfinite(v[c])]
        mask = finite.copy()
        mask[c] = False
        if inside.size == 0 or not mask.any():
            out.append(math.inf)
            continue
        others = v[mask]
        diff = np.abs(inside[:, None] - others[None, :])
        scale = np.maximum(np.abs(inside[:, None]), np.abs(others[None, :]))
        out.append(float(np.min(diff / np.where(scale > 0, scale, 1.0))))
    return out
