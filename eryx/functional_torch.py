"""Pure stage functions of the PyTorch backend.

Each function computes one named quantity of ALGORITHM.md from named inputs, with
no state: :class:`eryx.models_torch.OnePhonon` chains them, the parity harness
re-runs any one of them on the NumPy reference's inputs to tell a root cause from
an inherited error (cross-feeding), and fault injections replace one of them.
The model always calls them through this module (``functional_torch.build_A(...)``),
so a replaced function is what runs.

Everything is vectorised over atoms, contacts, k-points and q-points; nothing
here loops in Python over BZ points or grid points.
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import torch

from eryx.contacts import find_contacts  # noqa: F401  (the model calls it as functional_torch.find_contacts)
from eryx.probes import probe
from eryx.structure import ID_CELL_REF, N_CELL

ZERO_MODE_CUTOFF = 1e-6
TWO_PI = 2 * math.pi


def complex_dtype(real: torch.dtype) -> torch.dtype:
    """complex128 for float64, complex64 for float32."""
    return {torch.float64: torch.complex128, torch.float32: torch.complex64}[real]


def expi(phase: torch.Tensor) -> torch.Tensor:
    """exp(i phase) computed as cos + i sin, as the reference does."""
    return torch.complex(torch.cos(phase), torch.sin(phase))


# ----------------------------------------------------------------------- phase 1: grid
def linspace(lo: float, hi: float, n: int, *, dtype, device) -> torch.Tensor:
    """numpy.linspace's arithmetic (start + i * step, exact end point), bit for bit."""
    if n == 1:
        return torch.full((1,), float(lo), dtype=dtype, device=device)
    step = (hi - lo) / (n - 1)
    out = torch.arange(n, dtype=dtype, device=device) * step + lo
    out[-1] = hi
    return out


def generate_grid(samplings: Sequence[tuple[int, int, int]], *, dtype, device) -> torch.Tensor:
    """Miller indices of the grid, (n_q, 3), h slowest and l fastest."""
    axes = [linspace(lo, hi, int(L * (hi - lo) + 1), dtype=dtype, device=device) for lo, hi, L in samplings]
    mesh = torch.meshgrid(*axes, indexing="ij")
    return torch.stack([m.reshape(-1) for m in mesh], dim=1)


def q_from_hkl(hkl: torch.Tensor, A_inv: torch.Tensor) -> torch.Tensor:
    """q = 2 pi (hkl @ A_inv), inverse Angstrom, (n_q, 3)."""
    return TWO_PI * (hkl @ A_inv)


def hkl_from_q(q: torch.Tensor, A_inv: torch.Tensor) -> torch.Tensor:
    """Fractional Miller indices of arbitrary q-vectors, (n, 3)."""
    return torch.linalg.solve(A_inv.T, q.T / TWO_PI).T


def resolution(hkl: torch.Tensor, cell: torch.Tensor) -> torch.Tensor:
    """d-spacing (Angstrom) by the general triclinic formula; inf at the origin."""
    a, b, c = cell[0], cell[1], cell[2]
    ang = torch.deg2rad(cell[3:])
    ca, cb, cg = torch.cos(ang)
    sa, sb, sg = torch.sin(ang)
    h, k, l = hkl[:, 0], hkl[:, 1], hkl[:, 2]
    volume_term = 1 - ca**2 - cb**2 - cg**2 + 2 * ca * cb * cg
    numerator = (
        h**2 * b**2 * c**2 * sa**2 + k**2 * a**2 * c**2 * sb**2 + l**2 * a**2 * b**2 * sg**2
        + 2 * h * k * a * b * c**2 * (ca * cb - cg)
        + 2 * k * l * a**2 * b * c * (cb * cg - ca)
        + 2 * h * l * a * b**2 * c * (ca * cg - cb)
    )
    inv_d2 = numerator / (a**2 * b**2 * c**2 * volume_term)
    safe = torch.where(inv_d2 > 0, inv_d2, torch.ones_like(inv_d2))
    return torch.where(inv_d2 > 0, 1.0 / torch.sqrt(safe), torch.full_like(inv_d2, math.inf))


def res_mask(hkl: torch.Tensor, cell: torch.Tensor, res_limit: float) -> torch.Tensor:
    """Grid points inside the resolution limit, (n_q,) bool."""
    return resolution(hkl, cell) > res_limit


def center_index(x: int, L: int) -> float:
    """Fractional BZ coordinate of index x in [0, L): a value in [-1/2, 1/2)."""
    return int(((x - L / 2) % L) - L / 2) / L


def bz_fractions(L: Sequence[int], *, dtype, device) -> torch.Tensor:
    """Fractional k of every BZ point, (L_h, L_k, L_l, 3); exact rationals."""
    axes = [torch.tensor([center_index(x, n) for x in range(n)], dtype=dtype, device=device) for n in L]
    mesh = torch.meshgrid(*axes, indexing="ij")
    return torch.stack(mesh, dim=-1)


def build_kvec(A_inv: torch.Tensor, L: Sequence[int]) -> torch.Tensor:
    """k = 2 pi A_inv^T c(dh, dk, dl), (L_h, L_k, L_l, 3), inverse Angstrom."""
    frac = bz_fractions(L, dtype=A_inv.dtype, device=A_inv.device)
    return TWO_PI * (frac @ A_inv)


def kvec_norm(kvec: torch.Tensor) -> torch.Tensor:
    """|k|, (L_h, L_k, L_l, 1)."""
    return torch.linalg.norm(kvec, dim=-1, keepdim=True)


def grid_bz_index(map_shape: Sequence[int], L: Sequence[int], device) -> torch.Tensor:
    """Flat BZ index (C order over (L_h, L_k, L_l)) of every grid point, (n_q,) int64.

    Grid index (i, j, k) is served by BZ point (i mod L_h, j mod L_k, k mod L_l).
    """
    idx = [torch.arange(n, device=device) % l for n, l in zip(map_shape, L)]
    ih, ik, il = torch.meshgrid(*idx, indexing="ij")
    return ((ih * L[1] + ik) * L[2] + il).reshape(-1)


# ------------------------------------------------------ phase 2: projection and mass
def build_A(asu_xyz: torch.Tensor) -> torch.Tensor:
    """Rigid-body projection, (n_asu, 3 n_at, 6): atom block [I3 | S(c)], c centred."""
    n_asu, n_at, _ = asu_xyz.shape
    c = asu_xyz - asu_xyz.mean(dim=1, keepdim=True)
    x, y, z = c[..., 0], c[..., 1], c[..., 2]
    zero = torch.zeros_like(x)
    S = torch.stack(
        [torch.stack([zero, z, -y], -1), torch.stack([-z, zero, x], -1), torch.stack([y, -x, zero], -1)],
        dim=-2,
    )  # (n_asu, n_at, 3, 3)
    eye = torch.eye(3, dtype=asu_xyz.dtype, device=asu_xyz.device).expand(n_asu, n_at, 3, 3)
    return torch.cat([eye, S], dim=-1).reshape(n_asu, 3 * n_at, 6)


def build_M_allatoms(masses: torch.Tensor, n_asu: int) -> torch.Tensor:
    """Dense block-diagonal mass matrix (n_asu, 3 n_at, n_asu, 3 n_at); small systems only."""
    diag = torch.repeat_interleave(masses, 3)
    n3 = diag.numel() // n_asu
    return torch.diag(diag).reshape(n_asu, n3, n_asu, n3)


def build_Mmat(Amat: torch.Tensor, masses: torch.Tensor) -> torch.Tensor:
    """Projected mass matrix (n_asu, 6, n_asu, 6) without the dense all-atom matrix.

    M is block diagonal over atoms, so only i == j blocks survive:
    A_i^T M_ii A_i = sum_a m_a A_ia^T A_ia.
    """
    n_asu = Amat.shape[0]
    m3 = torch.repeat_interleave(masses, 3).reshape(n_asu, -1, 1)
    blocks = Amat.transpose(1, 2) @ (m3 * Amat)  # (n_asu, 6, 6)
    Mmat = torch.zeros(n_asu, 6, n_asu, 6, dtype=Amat.dtype, device=Amat.device)
    idx = torch.arange(n_asu, device=Amat.device)
    Mmat[idx, :, idx, :] = blocks
    return Mmat


def build_Linv(Mmat: torch.Tensor) -> torch.Tensor:
    """Inverse of the lower Cholesky factor of Mmat, (n_dof, n_dof), real."""
    n_dof = Mmat.shape[0] * Mmat.shape[1]
    L = probe("cholesky", torch.linalg.cholesky(Mmat.reshape(n_dof, n_dof)))
    eye = torch.eye(n_dof, dtype=L.dtype, device=L.device)
    return torch.linalg.solve_triangular(L, eye, upper=False)


# -------------------------------------------------------- structure factors (phase 2)
def form_factors(q2: torch.Tensor, ff_a: torch.Tensor, ff_b: torch.Tensor, ff_c: torch.Tensor) -> torch.Tensor:
    """IT92 f(q) from |q|^2, (n, n_types); ff_a/ff_b (n_types, 4), ff_c (n_types,)."""
    stol2 = q2 / (16 * math.pi**2)
    return torch.sum(ff_a * torch.exp(-ff_b * stol2[:, None, None]), dim=2) + ff_c


def structure_factors(
    q: torch.Tensor, xyz: torch.Tensor, ff_a: torch.Tensor, ff_b: torch.Tensor,
    ff_c: torch.Tensor, U: torch.Tensor, Amat: torch.Tensor,
) -> torch.Tensor:
    """Projected structure factors F(q), (n, n_dof) complex (section 9).

    Parameters
    ----------
    q : (n, 3) inverse Angstrom
    xyz : (n_asu, n_at, 3) P1-expanded coordinates
    ff_a, ff_b : (n_at, 4); ff_c : (n_at,)   form factors of one ASU (the same in all)
    U : (n_at,) A^2, the Debye-Waller displacement of each atom (the same in all ASUs)
    Amat : (n_asu, 3 n_at, 6)
    """
    return structure_factors_T(q, xyz, ff_a, ff_b, ff_c, U, Amat).T


def structure_factors_T(
    q: torch.Tensor, xyz: torch.Tensor, ff_a: torch.Tensor, ff_b: torch.Tensor,
    ff_c: torch.Tensor, U: torch.Tensor, Amat: torch.Tensor,
) -> torch.Tensor:
    """F(q) transposed, (n_dof, n) complex: q-points last, so every elementwise pass
    runs over contiguous memory and the atom contraction is one batched matmul."""
    n_asu, n_at, _ = xyz.shape
    n = q.shape[0]
    qT = q.T.contiguous()  # (3, n)
    q2 = torch.sum(qT * qT, dim=0)  # (n,)
    # Form factor and Debye-Waller factor depend on the atom, not on its ASU.
    amp = atomic_amplitudes(q2, *form_factor_types(ff_a, ff_b, ff_c), U)  # (n_at, n)
    phase = xyz @ qT  # (n_asu, n_at, n)
    # (re, im) stacked on a leading axis so that one real matmul contracts both.
    A = torch.stack([torch.cos(phase), torch.sin(phase)], dim=1) * amp  # (n_asu, 2, n_at, n)
    # F_i[d] = sum_x q_x sum_a A_ia Amat[i, a, x, d]. The (18 x n_at) matrix
    # Amat[i, :, x, d] has rank <= 4 ([I3 | S(c)] is linear in (1, c)), so contract the
    # atoms against a rank-r basis first: r rows instead of 18.
    P, Q = amat_low_rank(Amat)  # (n_asu, 18, r), (n_asu, r, n_at)
    R = torch.einsum("ira,isan->isrn", Q, A)  # (n_asu, 2, r, n)
    T = torch.einsum("ikr,isrn->iskn", P, R).reshape(n_asu, 2, 3, 6, n)
    F = T[:, :, 0] * qT[0] + T[:, :, 1] * qT[1] + T[:, :, 2] * qT[2]  # (n_asu, 2, 6, n)
    return torch.complex(F[:, 0], F[:, 1]).reshape(6 * n_asu, n)


# ------------------------------------- structure factors on a product grid (fast path)
#
# On the grid, q . r = 2 pi (h x_f + k y_f + l z_f) with x_f = A_inv r the fractional
# coordinates, and h, k, l each take only n_h, n_k, n_l values. So exp(i q . r) is the
# product of three per-axis tables, and the 3 x n_atoms x n_q sines and cosines of the
# direct formula become one complex multiplication per atom and grid point.
def fractional_coordinates(xyz: torch.Tensor, A_inv: torch.Tensor) -> torch.Tensor:
    """x_f = A_inv r for every atom, (..., 3): q . r = 2 pi hkl . x_f."""
    return xyz @ A_inv.T


def axis_phase_table(values: torch.Tensor, frac: torch.Tensor) -> torch.Tensor:
    """exp(2 pi i v x) for every axis value v (n,) and fractional coordinate x (...): (..., n).

    v x is reduced modulo 1 before the multiplication by 2 pi, so the phase keeps full
    relative precision however large h x_f is.
    """
    t = frac[..., None] * values
    t = t - torch.round(t)
    return expi(TWO_PI * t)


def form_factor_types(ff_a: torch.Tensor, ff_b: torch.Tensor, ff_c: torch.Tensor):
    """Distinct IT92 coefficient rows (n_types, 9) and each atom's type index (n_at,)."""
    return _unique_rows(torch.cat([ff_a, ff_b, ff_c[:, None]], dim=1))


def atomic_amplitudes(q2: torch.Tensor, types: torch.Tensor, inverse: torch.Tensor, U: torch.Tensor) -> torch.Tensor:
    """f_a(|q|) exp(-U_a |q|^2 / 2) for every atom of one ASU and every q, (n_at, n).

    ``types``/``inverse`` from :func:`form_factor_types`; ``q2`` = |q|^2, (n,).
    """
    stol2 = q2 / (16 * math.pi**2)
    f_types = torch.sum(types[:, :4, None] * torch.exp(-types[:, 4:8, None] * stol2), dim=1) + types[:, 8, None]
    dw = torch.exp(U[:, None] * (-0.5 * q2))
    return f_types.index_select(0, inverse) * dw


def projection_operators(Amat: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The rigid-body projection of :func:`structure_factors_T` as two small operators.

    Returns
    -------
    Q : (n_asu, r, n_at)
        Contracts the atoms' amplitudes to r (= 4) values per ASU.
    Pq : (n_asu, 6, 3 r)
        F_i[d] = sum_{x, s} Pq[i, d, (x, s)] q_x R_i[s] with R_i = Q_i @ amplitudes.
    """
    P, Q = amat_low_rank(Amat)  # (n_asu, 18, r), (n_asu, r, n_at)
    n_asu, _, r = P.shape
    Pq = P.reshape(n_asu, 3, 6, r).permute(0, 2, 1, 3).reshape(n_asu, 6, 3 * r).contiguous()
    return Q.contiguous(), Pq


def structure_factors_product_T(
    q: torch.Tensor, E_rows: torch.Tensor, E_cols: torch.Tensor, amp: torch.Tensor,
    Q: torch.Tensor, Pq: torch.Tensor, out: torch.Tensor | None = None,
) -> torch.Tensor:
    """F(q) transposed, (n_dof, m c) complex, on an m x c block of a product grid.

    The grid's counterpart of :func:`structure_factors_T` (same first argument, same
    result): point (u, v) of the block, q-vector ``q[u c + v]``, has the phase factors
    E_rows[..., u] E_cols[..., v] = exp(i q . r) (per atom) and the amplitudes
    ``amp[:, u c + v]``.

    Parameters
    ----------
    q : (m c, 3) real
    E_rows : (n_asu, n_at, m) complex;  E_cols : (n_asu, n_at, c) complex
    amp : (n_at, m c) real or complex, :func:`atomic_amplitudes`
    Q, Pq : :func:`projection_operators`
    out : optional (n_asu, n_at, m, c) complex buffer for the amplitudes (no autograd)
    """
    n_asu, n_at, m = E_rows.shape
    c = E_cols.shape[2]
    n = m * c
    r = Q.shape[1]
    A = torch.mul(E_rows[..., :, None], E_cols[..., None, :], out=out) if out is not None else \
        E_rows[..., :, None] * E_cols[..., None, :]
    amp4 = amp.reshape(1, n_at, m, c)
    A = A.mul_(amp4) if out is not None else A * amp4  # (n_asu, n_at, m, c)
    R = torch.bmm(Q, torch.view_as_real(A).reshape(n_asu, n_at, 2 * n))  # (n_asu, r, 2n): (n, re/im)
    Rc = torch.view_as_complex(R.reshape(n_asu, r, n, 2))
    RQ = Rc[:, None, :, :] * q.T[None, :, None, :]  # (n_asu, 3, r, n)
    F = torch.bmm(Pq, torch.view_as_real(RQ).reshape(n_asu, 3 * r, 2 * n))  # (n_asu, 6, 2n)
    return torch.view_as_complex(F.reshape(6 * n_asu, n, 2))


def hermitian_inverse_factor(K: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """W with F^H conj(K)^-1 F = |W F|^2: the inverse Cholesky factor of conj(K).

    Section 10's sum over modes, sum_m |(F V)_m|^2 Winv_m, equals sum_ij conj(F_j)
    Kinv_ij F_i (:func:`intensity_blocks`) = F^H conj(K)^-1 F where K is invertible. With
    conj(K) = C C^H (Cholesky), that is |C^-1 F|^2: one triangular matrix per k-point,
    a sum of squares (never negative), differentiable in K.

    Returns
    -------
    W : (n_k, n, n) complex, lower triangular (identity where ``ok`` is False)
    ok : (n_k,) bool, False where K is not numerically positive definite
    """
    Kc = K.conj()
    Kc = 0.5 * (Kc + Kc.transpose(-1, -2).conj())
    with torch.no_grad():
        ok = torch.linalg.cholesky_ex(Kc)[1] == 0
    eye = torch.eye(K.shape[-1], dtype=K.dtype, device=K.device).expand_as(K)
    # Factor the identity where K is not positive definite, so that no NaN reaches
    # the backward pass through torch.where.
    C = torch.linalg.cholesky(torch.where(ok[:, None, None], Kc, eye))
    W = torch.linalg.solve_triangular(C, eye, upper=False)
    return W, ok


def intensity_factored(F: torch.Tensor, W: torch.Tensor) -> torch.Tensor:
    """|W F|^2 summed over the degrees of freedom, (n,) real; F (n_dof, n), W (n_dof, n_dof)."""
    Z = W @ F
    n = Z.shape[1]
    # Sum over the (outer) rows first, then re/im: a reduction over dims (0, 2) at once
    # takes a slow strided path (10x slower on the CPU).
    return torch.view_as_real(Z).square().reshape(Z.shape[0], 2 * n).sum(dim=0).reshape(n, 2).sum(dim=1)


def amat_low_rank(Amat: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Factor each ASU's (18, n_at) matrix Amat[i, a, x, d] -> P (18, r) @ Q (r, n_at).

    Exact up to round-off for any Amat (r = numerical rank, at most 18); for the
    rigid-body projection r = 4. Q has orthonormal rows, so no error is amplified.
    """
    n_asu, n3, _ = Amat.shape
    M = Amat.reshape(n_asu, n3 // 3, 18).transpose(1, 2)  # (n_asu, 18, n_at)
    Uq, S, Vh = torch.linalg.svd(M, full_matrices=False)
    tol = S[:, :1] * max(M.shape[1:]) * torch.finfo(M.dtype).eps
    r = max(int((S > tol).sum(dim=1).max()), 1)
    return Uq[:, :, :r] * S[:, None, :r], Vh[:, :r, :]


def _unique_rows(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Unique rows and the inverse index; differentiable in the rows' values."""
    _, inverse = torch.unique(x.detach(), dim=0, return_inverse=True)
    first = torch.zeros(int(inverse.max()) + 1, dtype=torch.long, device=x.device)
    first.scatter_(0, inverse.flip(0), torch.arange(len(x) - 1, -1, -1, device=x.device))
    return x[first], inverse


# ------------------------------------------------------- phase 3: Gaussian network
def hessian_unit_blocks(
    contacts: dict[str, torch.Tensor], Amat: torch.Tensor, n_asu: int, chunk: int = 1 << 16,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Projected Hessian per unit spring constant, assembled from the contact list.

    Each contact (i, a) - (c, j, b) adds -A_ia^T A_jb to block (i, c, j) and
    A_ia^T A_ia to the diagonal block (i, ref, i): the all-atom Hessian is never built.

    Returns
    -------
    H_intra, H_inter : (n_asu, 6, 27, n_asu, 6) real
        Hrb = gamma_intra H_intra + gamma_inter H_inter.
    """
    n_at = Amat.shape[1] // 3
    A3 = Amat.reshape(n_asu, n_at, 3, 6)
    out = torch.zeros(2, n_asu * N_CELL * n_asu, 6, 6, dtype=Amat.dtype, device=Amat.device)
    i, a, c, j, b = (contacts[k] for k in "iacjb")
    intra = ((c == ID_CELL_REF) & (i == j)).long()
    for s in range(0, len(i), chunk):
        sl = slice(s, s + chunk)
        Aia = A3[i[sl], a[sl]]  # (m, 3, 6)
        Ajb = A3[j[sl], b[sl]]
        # An intra contact's two terms land in the same block (i, ref, i): add them as one,
        # A_ia^T (A_ia - A_ib), so that the large A^T A terms cancel before accumulation
        # (separately they lose ~1e-13 relative on ~1000-atom ASUs such as 6o2h).
        is_intra = intra[sl].bool()[:, None, None]
        off = -(Aia.transpose(1, 2) @ torch.where(is_intra, Ajb - Aia, Ajb))
        diag = (Aia.transpose(1, 2) @ Aia) * (~is_intra)
        block = (i[sl] * N_CELL + c[sl]) * n_asu + j[sl]
        dblock = (i[sl] * N_CELL + ID_CELL_REF) * n_asu + i[sl]
        flat = out.view(2 * n_asu * N_CELL * n_asu, 6, 6)
        n_blocks = n_asu * N_CELL * n_asu
        flat.index_add_(0, intra[sl] * n_blocks + block, off)
        flat.index_add_(0, intra[sl] * n_blocks + dblock, diag)
    out = out.reshape(2, n_asu, N_CELL, n_asu, 6, 6).permute(0, 1, 4, 2, 3, 5)
    # Slot 1 holds the intra contacts (offset intra * n_blocks above), slot 0 the inter ones.
    return out[1].contiguous(), out[0].contiguous()


def combine_hessian(H_intra: torch.Tensor, H_inter: torch.Tensor, gamma_intra, gamma_inter) -> torch.Tensor:
    """Hrb = gamma_intra H_intra + gamma_inter H_inter (differentiable in the gammas)."""
    return gamma_intra * H_intra + gamma_inter * H_inter


def dense_hessian_allatoms(
    contacts: dict[str, torch.Tensor], n_asu: int, n_at: int, gamma_intra, gamma_inter,
    *, dtype, device,
) -> torch.Tensor:
    """The dense all-atom Hessian (n_asu, n_at, 27, n_asu, n_at) from the contacts.

    For comparison with the reference on small systems only; the model never needs it.
    """
    i, a, c, j, b = (contacts[k] for k in "iacjb")
    intra = (c == ID_CELL_REF) & (i == j)
    g = torch.where(intra, torch.as_tensor(gamma_intra, dtype=dtype, device=device),
                    torch.as_tensor(gamma_inter, dtype=dtype, device=device))
    H = torch.zeros(n_asu, n_at, N_CELL, n_asu, n_at, dtype=dtype, device=device)
    H[i, a, c, j, b] = -g
    deg = torch.zeros(n_asu, n_at, dtype=dtype, device=device).index_put_((i, a), g, accumulate=True)
    ia = torch.arange(n_at, device=device)
    for s in range(n_asu):
        H[s, ia, ID_CELL_REF, s, ia] = deg[s]
    return H


def build_K(Hrb: torch.Tensor, kvec: torch.Tensor, cell_origin: torch.Tensor) -> torch.Tensor:
    """K(k) for a batch of k, (n_k, n_dof, n_dof) complex.

    K = Hrb[:, :, ref] + sum_{c != ref} Hrb[:, :, c] exp(i k . origin_c).
    """
    n_asu = Hrb.shape[0]
    n_dof = 6 * n_asu
    k = kvec.reshape(-1, 3)
    phase = k @ cell_origin.T  # (n_k, 27)
    e = expi(phase)
    e[:, ID_CELL_REF] = 1.0  # the reference cell carries no phase (origin 0)
    H = Hrb.permute(2, 0, 1, 3, 4).reshape(N_CELL, n_dof * n_dof).to(e.dtype)
    return (e @ H).reshape(-1, n_dof, n_dof)


def dynamical_matrix(K: torch.Tensor, Linv: torch.Tensor) -> torch.Tensor:
    """D = Linv K Linv^T, symmetrised to be exactly Hermitian, (n_k, n_dof, n_dof)."""
    L = Linv.to(K.dtype)
    D = L @ K @ L.transpose(-1, -2)
    return 0.5 * (D + D.conj().transpose(-1, -2))


def zero_mode_cutoff(dtype: torch.dtype) -> float:
    """Eigenvalue below which a mode is a zero mode: w < 1e-6 in float64 (the reference).

    float32 cannot resolve eigenvalues of 1e-12, so there the cutoff is 1e-6 on w^2
    (a dtype-aware choice; the float32 report states its error).
    """
    return ZERO_MODE_CUTOFF**2 if dtype in (torch.float64, torch.complex128) else 1e-6


def phonons(D: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Eigen-decomposition of D: Winv (NaN for zero modes, first), U (orthonormal).

    Modes are ordered by |eigenvalue| ascending, as the reversed SVD of the reference.

    Returns
    -------
    Winv : (n_k, n_dof) real
    U : (n_k, n_dof, n_dof) complex, columns = modes
    """
    lam, U = torch.linalg.eigh(D)
    order = torch.argsort(lam.abs(), dim=-1)
    lam = torch.gather(lam, -1, order)
    U = torch.gather(U, -1, order[:, None, :].expand_as(U))
    w2 = lam.abs()
    cut = zero_mode_cutoff(w2.dtype)
    nan = torch.full_like(w2, math.nan)
    Winv = torch.where(w2 < cut, nan, 1.0 / torch.where(w2 < cut, torch.ones_like(w2), w2))
    return Winv, U


def mass_weighted_modes(U: torch.Tensor, Linv: torch.Tensor) -> torch.Tensor:
    """V = Linv^T U, (n_k, n_dof, n_dof) complex."""
    return Linv.T.to(U.dtype) @ U


def pinv_hermitian(K: torch.Tensor) -> torch.Tensor:
    """Pseudo-inverse of Hermitian K with NumPy's default cutoff, differentiable.

    The null space P (eigenvalues <= n eps max|lambda|) is found without gradient;
    pinv(K) = (K + s P)^-1 - P / s then has finite gradients even where non-null
    eigenvalues are degenerate (torch's eigh backward would give inf there).
    s = max|lambda| puts the null space at the top of K's spectrum, so K + s P is no
    worse conditioned than K on its range; with s = 1 the result carries an absolute
    error ~ eps * |P| = eps, which relative to |pinv(K)| ~ 1/lambda_min grows with the
    stiffness (2e-8 relative at gnm_cutoff 1e9, 1e-4 in float32 at the default cutoff).
    """
    n = K.shape[-1]
    eps = torch.finfo(K.real.dtype).eps
    with torch.no_grad():
        lam, U = torch.linalg.eigh(K)
        top = lam.abs().amax(dim=-1, keepdim=True)
        null = (lam.abs() <= n * eps * top).to(U.dtype)
        P = (U * null[:, None, :]) @ U.conj().transpose(-1, -2)
        s = torch.where(top > 0, top, torch.ones_like(top))[..., None].to(K.dtype)
    return torch.linalg.inv(K + s * P) - P / s


def covariance(Kinv: torch.Tensor, kvec: torch.Tensor, cell_origin: torch.Tensor) -> torch.Tensor:
    """covar[:, c, :] = sum_k Kinv(k) exp(i k . origin_c), (n_dof, 27, n_dof) complex."""
    phase = kvec.reshape(-1, 3) @ cell_origin.T  # (n_k, 27)
    e = expi(phase)
    return torch.einsum("kij,kc->icj", Kinv, e)


def adp_scaled(covar: torch.Tensor, Amat: torch.Tensor, b_iso: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Scaled ADPs (n_at,) and real covariance (n_asu, 6, 27, n_asu, 6) (section 8)."""
    n_asu = Amat.shape[0]
    n_dof = 6 * n_asu
    ADP_rb = torch.real(torch.diagonal(covar[:, ID_CELL_REF, :]))
    A_side = Amat.permute(1, 0, 2).reshape(Amat.shape[1], n_dof)
    ADP = torch.sum((A_side @ ADP_rb).reshape(-1, 3), dim=1)
    from eryx.validation import adp_scale_defined

    scale = torch.mean(b_iso) / (8 * math.pi**2 * torch.mean(ADP) / 3)
    with torch.no_grad():
        defined = adp_scale_defined(ADP_rb.cpu().double().numpy(), A_side.cpu().double().numpy())
    if not defined:  # NaN, like the reference; the map refuses to use it
        scale = scale * math.nan
    covar_real = torch.real(covar) * scale
    return ADP * scale, covar_real.reshape(n_asu, 6, N_CELL, n_asu, 6)


# ---------------------------------------------------------------- phase 4: intensity
def intensity_blocks(F: torch.Tensor, Kinv: torch.Tensor) -> torch.Tensor:
    """sum_m |(F V)_m|^2 Winv_m = F K^-1 F^H for blocks of points sharing a k (section 10).

    Needs no eigenvectors, so gradients stay finite at degenerate eigenvalues.

    Parameters
    ----------
    F : (n_k, n_dof, c) complex, structure factors of c points per k-point
    Kinv : (n_k, n_dof, n_dof) complex, K(k)^-1

    Returns
    -------
    (n_k, c) real
    """
    Y = Kinv.transpose(1, 2) @ F  # Y_j = sum_i F_i Kinv_ij
    return torch.real(torch.sum(Y * F.conj(), dim=1))


def mode_intensity_blocks(F: torch.Tensor, V: torch.Tensor, Winv: torch.Tensor) -> torch.Tensor:
    """Per-mode maps |(F V)_m|^2 Winv_m, (n_k, n_modes, c) real.

    F : (n_k, n_dof, c) complex; V : (n_k, n_dof, n_modes); Winv : (n_k, n_modes).
    """
    FV = V.transpose(1, 2) @ F  # (n_k, n_modes, c)
    return (FV.real**2 + FV.imag**2) * Winv[:, :, None]
