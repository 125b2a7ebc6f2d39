"""Spring constants "too stiff" decided up front, from one ASU's contacts (before the Hessian is built).

:func:`eryx.validation.check_spectrum` refuses spring constants for which the round-off
of D(k), n_dof eps max|lambda(D)|, reaches the zero-mode cutoff (ALGORITHM.md section 7):
"too stiff". It needs every K(k) and D(k), i.e. the full rigid-body Hessian, which for a
crystal with many ASUs (F m -3 m: 192, n_dof 1152) costs minutes in the NumPy reference.

A cheap lower bound decides the clear cases first. D(k) is Hermitian, so by Cauchy's
interlacing theorem its largest eigenvalue is at least that of any principal submatrix,
in particular ASU 0's 6 x 6 block D_00(k) = Linv_0 K_00(k) Linv_0^T, whose K_00 comes
from ASU 0's own contacts only (O(n_at) work):

    K_00(k) = sum_{contacts (0,a)-(c,j,b)} g A_a^T A_a - sum_{contacts with j = 0} g A_a^T A_b e^{i k . r_c},

with g the contact's spring constant. Its eigenvalues are those of the generalised
problem K_00 v = lambda M_0 v, M_0 = A_0^T m A_0 (ASU 0's rigid-body mass matrix). When
n_dof eps max_k lambda_max(D_00(k)) already reaches the cutoff, the full check would
refuse with the same reason (its value is at least this one): refuse now. Otherwise the
full check still decides after the Hessian is built, so no decision changes.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
# At import, as eryx.models does: the first model built in a process then costs what any
# later one does (the import took 0.4 s there, inside the first forward map's time).
import scipy.linalg
from scipy.spatial import cKDTree

from eryx.structure import ID_CELL_REF


def asu0_block_max_eigenvalue(asu_xyz: np.ndarray, masses: np.ndarray, cell_origin: np.ndarray, cutoff: float,
                              gammas: tuple[float, float], kvec: np.ndarray) -> np.ndarray:
    """max lambda(D_00(k)) per k-point: a lower bound of max lambda(D(k)) (module docstring).

    Parameters
    ----------
    asu_xyz : (n_asu, n_at, 3) A
    masses : (n_at,) ASU 0's atomic masses
    cell_origin : (27, 3) A
    cutoff : contact cutoff (A)
    gammas : (gamma_intra, gamma_inter)
    kvec : (n_k, 3) 1/A

    Returns
    -------
    (n_k,) real
    """
    from eryx.geometry import build_A
    from eryx.probes import quiet

    n_asu, n_at, _ = asu_xyz.shape
    with quiet():  # an input check, not a step of the model: no A_block probes from here
        A = build_A(asu_xyz[:1])[0].reshape(n_at, 3, 6)  # ASU 0's projection, (n_at, 3, 6)
    all_xyz = (asu_xyz[None] + cell_origin[:, None, None, :]).reshape(-1, 3)
    lists = cKDTree(all_xyz).query_ball_point(asu_xyz[0], r=cutoff)
    counts = np.array([len(x) for x in lists], dtype=np.int64)
    a = np.repeat(np.arange(n_at), counts)
    dst = np.concatenate([np.asarray(x, dtype=np.int64) for x in lists]) if counts.sum() else np.zeros(0, np.int64)
    c, rest = np.divmod(dst, n_asu * n_at)
    j, b = np.divmod(rest, n_at)
    keep = ~((c == ID_CELL_REF) & (j == 0) & (a == b))
    a, c, j, b = a[keep], c[keep], j[keep], b[keep]
    g = np.where((c == ID_CELL_REF) & (j == 0), gammas[0], gammas[1])
    Aa = A[a]
    diag = np.einsum("m,mxs,mxt->st", g, Aa, Aa)
    own = j == 0  # contacts with ASU 0's own atoms (in any cell) enter K_00 off the diagonal
    off = np.zeros((27, 6, 6))
    np.add.at(off, c[own], np.einsum("m,mxs,mxt->mst", g[own], Aa[own], A[b[own]]))
    M0 = np.einsum("a,axs,axt->st", masses, A, A)
    phase = np.exp(1j * (kvec @ cell_origin.T))  # (n_k, 27)
    phase[:, ID_CELL_REF] = 1.0
    out = []
    for e in phase:
        K00 = diag - np.einsum("c,cst->st", e, off)
        K00 = 0.5 * (K00 + K00.conj().T)
        if not np.isfinite(K00).all():  # overflow: the full path names it ("overflow")
            out.append(0.0)
            continue
        out.append(float(np.abs(scipy.linalg.eigh(K00, M0, eigvals_only=True)).max()))
    return np.array(out)


def check_stiffness_up_front(asu_xyz: np.ndarray, masses: np.ndarray, cell_origin: np.ndarray, cutoff: float,
                             gammas: tuple[float, float], kvec: np.ndarray, bz_labels: Sequence) -> None:
    """Raise the "too stiff" :class:`SpringConstantError` of :func:`validation.check_spectrum`
    when ASU 0's block alone decides it (module docstring); else return (the full check
    after the Hessian decides). Arguments as :func:`asu0_block_max_eigenvalue`."""
    from eryx.validation import refuse_too_stiff

    with np.errstate(over="ignore", invalid="ignore"):  # overflow is left to the full path
        lam = asu0_block_max_eigenvalue(asu_xyz, masses, cell_origin, cutoff, gammas, kvec)
    refuse_too_stiff(lam, 6 * asu_xyz.shape[0], bz_labels, gammas,
                     bound="that of one ASU's 6 x 6 block, decided before building the Hessian")


def check_model_stiffness(crystal, L: Sequence[int], cutoff: float, gammas: tuple[float, float]) -> None:
    """:func:`check_stiffness_up_front` at a model's grid BZ points (both models' build step
    ``stiffness``, before the Hessian). ``crystal``: :class:`eryx.structure.Crystal`;
    ``L``: the oversampling per axis."""
    from eryx.geometry import bz_fractions

    kvec = 2 * np.pi * np.einsum("ji,...j->...i", crystal.A_inv, bz_fractions(L)).reshape(-1, 3)
    check_stiffness_up_front(crystal.asu_xyz, crystal.masses[:crystal.n_at], crystal.cell_origin, cutoff,
                             gammas, kvec, list(np.ndindex(*L)))
