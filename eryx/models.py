"""NumPy reference OnePhonon: the oracle of the project.

Literal to ALGORITHM.md: per-BZ-point loops, the SVD of D, NumPy's pinv, dense
all-atom Hessian. Intermediate quantities are attributes named as in the goldens
(``hkl_grid``, ``q_grid``, ``map_shape``, ``res_mask``, ``Amat``, ``M_allatoms``,
``Mmat``, ``Linv``, ``kvec``, ``kvec_norm``, ``Winv``, ``V``, ``covar``, ``ADP``);
``hessian_allatoms``/``hessian`` and ``K(k)``/``Kinv(k)`` come from methods.

Units: Angstrom for positions, inverse Angstrom for q and k (2 pi convention),
Dalton for masses, A^2 for B factors.
"""
from __future__ import annotations

import os
from typing import Sequence

import numpy as np
from scipy.spatial import KDTree

from eryx import structure
from eryx.build import run_build_steps
from eryx.errors import EryxInputError, SpringConstantError, UndefinedADPError
from eryx.probes import listening as _listening
from eryx.probes import probe, probe_scope
from eryx.structure import ID_CELL_REF, N_CELL, Crystal
from eryx.geometry import build_A, bz_fractions, center_index, skew  # noqa: F401  (the reference's own names)
from eryx.stiffness import check_model_stiffness
from eryx.validation import (
    Sampling, adp_scale_defined, check_common, check_k_vector, check_memory, check_q_vectors, check_spectrum,
    estimate_numpy_memory, resolve_memory_limit, undefined_adp_reason,
)

#: Frequencies below this become NaN (zero modes), ALGORITHM.md section 7.
ZERO_MODE_CUTOFF = 1e-6


# ----------------------------------------------------------------------------- grid
def generate_grid(samplings: Sequence[Sampling]) -> tuple[np.ndarray, tuple[int, int, int]]:
    """Miller indices of every grid point, h slowest and l fastest.

    Returns
    -------
    hkl_grid : ndarray, (n_q, 3)
    map_shape : tuple of int, (n_h, n_k, n_l)
    """
    axes = [np.linspace(s.lo, s.hi, s.n_points) for s in samplings]
    mesh = np.meshgrid(*axes, indexing="ij")
    hkl_grid = np.stack([m.ravel() for m in mesh], axis=1)
    return hkl_grid, tuple(s.n_points for s in samplings)  # type: ignore[return-value]


def q_from_hkl(hkl: np.ndarray, A_inv: np.ndarray) -> np.ndarray:
    """q = 2 pi A_inv^T hkl (inverse Angstrom); matmul first, as the reference does."""
    return 2 * np.pi * (hkl @ A_inv)


def resolution(hkl: np.ndarray, cell: np.ndarray) -> np.ndarray:
    """d-spacing (Angstrom) by the general triclinic formula; inf at the origin."""
    a, b, c = cell[:3]
    ca, cb, cg = np.cos(np.deg2rad(cell[3:]))
    sa, sb, sg = np.sin(np.deg2rad(cell[3:]))
    h, k, l = hkl[:, 0], hkl[:, 1], hkl[:, 2]
    volume_term = 1 - ca**2 - cb**2 - cg**2 + 2 * ca * cb * cg
    numerator = (
        h**2 * b**2 * c**2 * sa**2 + k**2 * a**2 * c**2 * sb**2 + l**2 * a**2 * b**2 * sg**2
        + 2 * h * k * a * b * c**2 * (ca * cb - cg)
        + 2 * k * l * a**2 * b * c * (cb * cg - ca)
        + 2 * h * l * a * b**2 * c * (ca * cg - cb)
    )
    inv_d2 = numerator / (a**2 * b**2 * c**2 * volume_term)
    with np.errstate(divide="ignore"):
        return np.where(inv_d2 > 0, 1.0 / np.sqrt(np.where(inv_d2 > 0, inv_d2, 1.0)), np.inf)


def grid_indices_of_bz(bz: Sequence[int], L: Sequence[int], map_shape: Sequence[int]) -> np.ndarray:
    """Raveled grid indices served by BZ point (dh, dk, dl), C order (section 5)."""
    ranges = [np.arange(d, n, l) for d, n, l in zip(bz, map_shape, L)]
    mesh = np.meshgrid(*ranges, indexing="ij")
    return np.ravel_multi_index(tuple(m.ravel() for m in mesh), tuple(map_shape))


def build_M_allatoms(masses: np.ndarray, n_asu: int) -> np.ndarray:
    """Block-diagonal all-atom mass matrix, (n_asu, 3 n_at, n_asu, 3 n_at)."""
    diag = np.repeat(masses, 3)
    M = np.diag(diag)
    n3 = len(diag) // n_asu
    return M.reshape(n_asu, n3, n_asu, n3)


def build_Mmat(Amat: np.ndarray, M_allatoms: np.ndarray) -> np.ndarray:
    """Projected mass matrix, (n_asu, 6, n_asu, 6): A_i^T M_ij A_j."""
    n_asu = Amat.shape[0]
    Mmat = np.zeros((n_asu, 6, n_asu, 6))
    for i in range(n_asu):
        for j in range(n_asu):
            Mmat[i, :, j, :] = probe("Mmat_block", Amat[i].T @ M_allatoms[i, :, j, :] @ Amat[j],
                                     at={"asu_i": i, "asu_j": j})
    return Mmat


def build_Linv(Mmat: np.ndarray) -> np.ndarray:
    """Inverse of the lower Cholesky factor of Mmat reshaped (n_dof, n_dof); real."""
    n_dof = Mmat.shape[0] * Mmat.shape[1]
    return np.linalg.inv(probe("cholesky", np.linalg.cholesky(Mmat.reshape(n_dof, n_dof))))


# ------------------------------------------------------------------ Gaussian network
def gamma_matrix(n_asu: int, gamma_intra: float, gamma_inter: float) -> np.ndarray:
    """Spring constants gamma[cell, i, j], (27, n_asu, n_asu)."""
    gamma = np.full((N_CELL, n_asu, n_asu), float(gamma_inter))
    for i in range(n_asu):
        gamma[ID_CELL_REF, i, i] = float(gamma_intra)
    return gamma


def find_neighbours(asu_xyz: np.ndarray, cell_origin: np.ndarray, cutoff: float) -> list:
    """Atom neighbour lists [i][cell][j][a] -> indices b within ``cutoff`` (inclusive)."""
    n_asu = asu_xyz.shape[0]
    trees_ref = [KDTree(asu_xyz[i]) for i in range(n_asu)]
    out = []
    for i in range(n_asu):
        per_cell = []
        for c in range(N_CELL):
            per_cell.append([
                trees_ref[i].query_ball_tree(KDTree(asu_xyz[j] + cell_origin[c]), r=cutoff)
                for j in range(n_asu)
            ])
        out.append(per_cell)
    return out


def count_neighbours(neighbours: list) -> tuple[int, int]:
    """(contacts, contacts between different ASUs or cells) in the lists of
    :func:`find_neighbours`, self pairs excluded."""
    total = inter = 0
    for i, per_cell in enumerate(neighbours):
        for c, per_asu in enumerate(per_cell):
            for j, lists in enumerate(per_asu):
                n = sum(len(bs) for bs in lists)
                if c == ID_CELL_REF and i == j:
                    total += n - len(lists)  # every atom lists itself
                else:
                    total += n
                    inter += n
    return total, inter


def build_hessian_allatoms(neighbours: list, n_asu: int, n_at: int, gamma: np.ndarray) -> np.ndarray:
    """Dense all-atom GNM Hessian, (n_asu, n_at, 27, n_asu, n_at), real."""
    H = np.zeros((n_asu, n_at, N_CELL, n_asu, n_at))
    for i in range(n_asu):
        for c in range(N_CELL):
            for j in range(n_asu):
                for a, bs in enumerate(neighbours[i][c][j]):
                    if bs:
                        H[i, a, c, j, bs] = -gamma[c, i, j]
        # Diagonal: the sum of a's springs; the self pair set above cancels itself out.
        H[i, :, ID_CELL_REF, i, :] -= np.diag(np.sum(H[i], axis=(1, 2, 3)))
    return H


def project_hessian(H: np.ndarray, Amat: np.ndarray) -> np.ndarray:
    """Rigid-body Hessian, (n_asu, 6, 27, n_asu, 6) complex: A_i^T (H_icj (x) I3) A_j."""
    n_asu = Amat.shape[0]
    Hrb = np.zeros((n_asu, 6, N_CELL, n_asu, 6), dtype=complex)
    eye3 = np.eye(3)
    for c in range(N_CELL):
        for i in range(n_asu):
            for j in range(n_asu):
                Hrb[i, :, c, j, :] = probe("hessian_block", Amat[i].T @ (np.kron(H[i, :, c, j, :], eye3) @ Amat[j]),
                                           at={"cell": c, "asu_i": i, "asu_j": j})
    return Hrb


def build_K(Hrb: np.ndarray, kvec: np.ndarray, cell_origin: np.ndarray) -> np.ndarray:
    """K(k) = sum_c Hrb[:, :, c] exp(i k . origin_c), (n_dof, n_dof) complex."""
    n_asu = Hrb.shape[0]
    K = np.copy(Hrb[:, :, ID_CELL_REF, :, :])
    for c in range(N_CELL):
        if c == ID_CELL_REF:
            continue
        phase = np.dot(kvec, cell_origin[c])
        K += Hrb[:, :, c, :, :] * (np.cos(phase) + 1j * np.sin(phase))
    return K.reshape(6 * n_asu, 6 * n_asu)


def phonons(K: np.ndarray, Linv: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Winv (zero modes NaN, first) and mass-weighted modes V = Linv^T U from the SVD of D."""
    D = probe("D", Linv @ K @ Linv.T)
    U, s, _ = np.linalg.svd(D)
    w = np.sqrt(s)
    w = np.where(w < ZERO_MODE_CUTOFF, np.nan, w)
    w, U = w[::-1], U[:, ::-1]
    Winv, V = probe("Winv", 1.0 / w**2), Linv.T @ U
    if _listening():  # V up to phases/mixing: probe the phase-free V Winv V^H
        probe("V_Winv_VH", (V * np.nan_to_num(Winv)) @ V.conj().T)
    return Winv, V


# ----------------------------------------------------------------- structure factors
def form_factors(q: np.ndarray, ff_a: np.ndarray, ff_b: np.ndarray, ff_c: np.ndarray) -> np.ndarray:
    """IT92 form factors f_a(q), (n_q, n_at); q in inverse Angstrom."""
    stol2 = (np.linalg.norm(q, axis=1) / (4 * np.pi)) ** 2
    return np.sum(ff_a[None] * np.exp(-ff_b[None] * stol2[:, None, None]), axis=2) + ff_c[None]


def structure_factors(
    q: np.ndarray, xyz: np.ndarray, ff_a: np.ndarray, ff_b: np.ndarray, ff_c: np.ndarray,
    U: np.ndarray | None = None, project_on: np.ndarray | None = None,
) -> np.ndarray:
    """Per-atom scattering amplitudes, optionally times q and projected (section 9).

    Parameters
    ----------
    q : ndarray, (n_q, 3)
    xyz : ndarray, (n_at, 3)
    U : ndarray, (n_at,) or None
        Isotropic displacement (A^2): Debye-Waller factor exp(-|q|^2 U / 2).
    project_on : ndarray, (3 n_at, 6) or None
        With it, returns (q_x A_a) @ project_on, shape (n_q, 6); without it, the
        amplitudes A_a(q), shape (n_q, n_at).
    """
    f = form_factors(q, ff_a, ff_b, ff_c)
    phase = q @ xyz.T
    A = f * (np.cos(phase) + 1j * np.sin(phase))
    if U is not None:
        A = A * np.exp(-0.5 * U[None, :] * np.sum(q * q, axis=1)[:, None])
    if project_on is None:
        return A
    G = (A[:, :, None] * q[:, None, :]).reshape(len(q), 3 * A.shape[1])  # -1 fails for len(q) == 0
    return G @ project_on


# ------------------------------------------------------------------------ the model
class OnePhonon:
    """One-phonon diffuse scattering of rigid ASUs in a Gaussian network (NumPy).

    Parameters
    ----------
    pdb_path : str or path
        PDB file with CRYST1 and (optionally) REMARK 290.
    hsampling, ksampling, lsampling : (int, int, int)
        (min, max, oversampling) per reciprocal axis; integer bounds, oversampling >= 1.
    expand_p1 : bool
        Expand the ASU to the unit cell with the symmetry operators.
    group_by : {'asu'}
    res_limit : float
        High-resolution limit (Angstrom); grid points with d <= res_limit get NaN.
    model : {'gnm'}
    gnm_cutoff : float
        Contact distance (Angstrom), inclusive.
    gamma_intra, gamma_inter : float
        Spring constants within an ASU and between ASUs.
    memory_limit : float, optional
        Bytes the run may use; a larger estimate raises MemoryBudgetError before any
        heavy allocation. Default: 75 % of physical memory.
    """

    def __init__(
        self, pdb_path: str | os.PathLike, hsampling: Sequence, ksampling: Sequence,
        lsampling: Sequence, expand_p1: bool = True, group_by: str = "asu",
        res_limit: float = 0.0, model: str = "gnm", gnm_cutoff: float = 4.0,
        gamma_intra: float = 1.0, gamma_inter: float = 1.0, memory_limit: float | None = None,
    ) -> None:
        samplings = check_common(
            hsampling, ksampling, lsampling, res_limit=res_limit, gnm_cutoff=gnm_cutoff,
            gamma_intra=gamma_intra, gamma_inter=gamma_inter, group_by=group_by, model=model,
            memory_limit=memory_limit,
        )
        self.samplings = samplings
        self.hsampling, self.ksampling, self.lsampling = (s.as_tuple() for s in samplings)
        self.L = tuple(s.oversampling for s in samplings)
        self.res_limit = float(res_limit)
        self.gnm_cutoff = float(gnm_cutoff)
        self.gamma_intra = float(gamma_intra)
        self.gamma_inter = float(gamma_inter)
        self.memory_limit = resolve_memory_limit(memory_limit)
        self.expand_p1 = bool(expand_p1)
        self.pdb_input = structure.check_pdb_path(pdb_path)
        run_build_steps(self, self.BUILD_STEPS)

    #: Construction, in order: (step name, phase, method). See :mod:`eryx.build`.
    BUILD_STEPS = (
        ("structure", 2, "_load_structure"),
        ("memory", 2, "_check_memory"),
        ("grid", 1, "_setup_grid"),
        ("stiffness", 3, "_check_stiffness"),
        ("matrices", 2, "_setup_matrices"),
        ("hessian", 3, "_setup_hessian"),
        ("phonons", 3, "_setup_phonons"),
    )

    # -- convenient views of the crystal
    @property
    def n_asu(self) -> int:
        return self.crystal.n_asu

    @property
    def n_at(self) -> int:
        return self.crystal.n_at

    @property
    def n_dof(self) -> int:
        return self.crystal.n_dof

    def __getattr__(self, name: str):
        # Structure arrays (xyz, adp, ff_a, cell, A_inv, ...) read through to the crystal.
        crystal = self.__dict__.get("crystal")
        if crystal is not None and hasattr(crystal, name):
            return getattr(crystal, name)
        raise AttributeError(f"{type(self).__name__!s} has no attribute {name!r}")

    # -- stages
    def _load_structure(self) -> None:
        self.crystal: Crystal = structure.load_crystal(self.pdb_input, self.expand_p1)

    def _check_memory(self) -> None:
        """The one memory decision, from sizes only, before anything grid- or n_at^2-sized."""
        n_q = int(np.prod([s.n_points for s in self.samplings]))
        self.memory_estimate = check_memory(
            estimate_numpy_memory(self.crystal.n_asu, self.crystal.n_at, n_q, int(np.prod(self.L))),
            self.memory_limit, "the NumPy reference model",
        )

    def _setup_grid(self) -> None:
        self.hkl_grid, self.map_shape = generate_grid(self.samplings)
        self.q_grid = probe("q_grid", q_from_hkl(self.hkl_grid, self.crystal.A_inv))
        self.res_mask = resolution(self.hkl_grid, self.crystal.cell) > self.res_limit
        frac = probe("bz_fraction", bz_fractions(self.L))
        self.kvec = probe("kvec", 2 * np.pi * np.einsum("ji,...j->...i", self.crystal.A_inv, frac))
        self.kvec_norm = np.linalg.norm(self.kvec, axis=-1, keepdims=True)

    def _check_stiffness(self) -> None:
        """Refuse clearly too stiff spring constants before the Hessian (eryx.stiffness)."""
        check_model_stiffness(self.crystal, self.L, self.gnm_cutoff, (self.gamma_intra, self.gamma_inter))

    def _setup_matrices(self) -> None:
        c = self.crystal
        self.Amat = build_A(c.asu_xyz)
        self.M_allatoms = build_M_allatoms(c.masses, c.n_asu)
        self.Mmat = build_Mmat(self.Amat, self.M_allatoms)
        self.Linv = probe("Linv", build_Linv(self.Mmat))

    def _setup_hessian(self) -> None:
        c = self.crystal
        self.gamma = gamma_matrix(c.n_asu, self.gamma_intra, self.gamma_inter)
        self.neighbours = find_neighbours(c.asu_xyz, c.cell_origin, self.gnm_cutoff)
        self.n_contacts, self.n_inter_contacts = count_neighbours(self.neighbours)
        self.hessian = project_hessian(self.compute_hessian_allatoms(), self.Amat)
        if not np.isfinite(self.hessian).all():
            raise SpringConstantError(
                f"spring constants too large (gamma_intra={self.gamma_intra:g}, gamma_inter="
                f"{self.gamma_inter:g}): the projected Hessian overflows float64 (docs/model-edges.md)",
                "overflow")

    def compute_hessian_allatoms(self) -> np.ndarray:
        """Dense all-atom Hessian, (n_asu, n_at, 27, n_asu, n_at) (kept out of memory)."""
        return build_hessian_allatoms(self.neighbours, self.n_asu, self.n_at, self.gamma)

    @property
    def hessian_allatoms(self) -> np.ndarray:
        return self.compute_hessian_allatoms()

    def bz_points(self):
        """All BZ indices (dh, dk, dl) in C order."""
        return list(np.ndindex(*self.L))

    def K(self, bz: Sequence[int]) -> np.ndarray:
        """K(k) at BZ point (dh, dk, dl), (n_dof, n_dof) complex."""
        return build_K(self.hessian, self.kvec[tuple(bz)], self.crystal.cell_origin)

    def Kinv(self, bz: Sequence[int]) -> np.ndarray:
        """Pseudo-inverse of K(k) with NumPy's default cutoff."""
        return np.linalg.pinv(self.K(bz))

    def D(self, bz: Sequence[int]) -> np.ndarray:
        """Dynamical matrix Linv K Linv^T."""
        return self.Linv @ self.K(bz) @ self.Linv.T

    def _setup_phonons(self) -> None:
        n_dof = self.n_dof
        bzs = self.bz_points()
        Ks = [probe("K", self.K(bz), at={"bz": n}) for n, bz in enumerate(bzs)]
        # Refuse spring constants outside the model's range before decomposing anything.
        check_spectrum(
            [np.linalg.svd(self.Linv @ K @ self.Linv.T, compute_uv=False) for K in Ks],
            [np.linalg.svd(K, compute_uv=False) for K in Ks], bzs, (self.gamma_intra, self.gamma_inter))
        self.Winv = np.zeros(self.L + (n_dof,), dtype=complex)
        self.V = np.zeros(self.L + (n_dof, n_dof), dtype=complex)
        covar = np.zeros((n_dof, N_CELL, n_dof), dtype=complex)
        origins = self.crystal.cell_origin
        for n, (bz, K) in enumerate(zip(bzs, Ks)):
            with probe_scope(bz=n):
                self.Winv[bz], self.V[bz] = phonons(K, self.Linv)
                Kinv = probe("Kinv", np.linalg.pinv(K))
            for c in range(N_CELL):
                phase = np.dot(self.kvec[bz], origins[c])
                covar[:, c, :] += Kinv * (np.cos(phase) + 1j * np.sin(phase))
        probe("covar_sum", covar)
        ADP_rb = np.real(np.diag(covar[:, ID_CELL_REF, :]))
        A_side = np.transpose(self.Amat, (1, 0, 2)).reshape(3 * self.n_at, n_dof)
        ADP = np.sum((A_side @ ADP_rb).reshape(-1, 3), axis=1)
        self.adp_undefined_reason = None
        if adp_scale_defined(ADP_rb, A_side):
            scale = np.mean(self.crystal.adp) / (8 * np.pi * np.pi * np.mean(ADP) / 3)
        else:  # NaN, like ADP and covar; a map that needs them is refused with the reason
            scale = np.nan
            self.adp_undefined_reason = undefined_adp_reason(
                self.n_asu, self.L, self.n_contacts, self.n_inter_contacts, self.gnm_cutoff,
                self.gamma_intra, self.gamma_inter)
        self.ADP = probe("ADP", ADP * scale)
        self.covar = probe("covar", np.real(covar * scale).reshape(self.n_asu, 6, N_CELL, self.n_asu, 6))

    # -- intensity
    def debye_waller_U(self, use_data_adp: bool = False) -> np.ndarray:
        """Per-atom U (A^2) of one ASU: the scaled model ADP, or the file's B / 8 pi^2.

        Raises UndefinedADPError (with the reason) when the model's ADP scale is undefined.
        """
        if use_data_adp:
            return self.crystal.adp[0] / (8 * np.pi * np.pi)
        if self.adp_undefined_reason is not None or np.isnan(self.ADP).any():
            raise UndefinedADPError(self.adp_undefined_reason or "the scaled ADPs are NaN")
        return self.ADP

    def structure_factors_q(self, q: np.ndarray, use_data_adp: bool = False) -> np.ndarray:
        """F at arbitrary q-vectors (n, 3) in 1/A, (n, n_dof) complex: all ASUs side by side."""
        c = self.crystal
        U = self.debye_waller_U(use_data_adp)
        F = np.zeros((len(q), self.n_dof), dtype=complex)
        for i in range(self.n_asu):
            F[:, 6 * i:6 * i + 6] = structure_factors(
                q, c.xyz[i], c.ff_a[i], c.ff_b[i], c.ff_c[i], U=U, project_on=self.Amat[i]
            )
        return F

    def structure_factors_at(self, q_indices: np.ndarray, use_data_adp: bool = False) -> np.ndarray:
        """F at the given grid points, (n, n_dof) complex: all ASUs side by side."""
        return self.structure_factors_q(self.q_grid[q_indices], use_data_adp)

    def _check_rank(self, rank) -> None:
        if rank != -1 and not (isinstance(rank, (int, np.integer)) and 0 <= rank < self.n_dof):
            raise EryxInputError(f"rank must be -1 or in [0, {self.n_dof}), got {rank!r}")

    @staticmethod
    def _intensity(F: np.ndarray, V: np.ndarray, Winv: np.ndarray, rank: int) -> np.ndarray:
        """Section 10 for points sharing one k: sum_m |(F V)_m|^2 Winv_m, or mode ``rank``'s term."""
        if rank == -1:
            return np.real(np.dot(np.square(np.abs(F @ V)), Winv))
        return np.real(np.square(np.abs(F @ V[:, rank])) * Winv[rank])

    def apply_disorder(self, rank: int = -1, use_data_adp: bool = False) -> np.ndarray:
        """Diffuse intensity, (n_q,) real, NaN outside res_mask and at Bragg BZ points.

        Parameters
        ----------
        rank : int
            -1 for all modes, else the single mode r (0-based, zero modes first).
        use_data_adp : bool
            Debye-Waller factor from the file's B factors instead of the model's ADPs.
        """
        self._check_rank(rank)
        self.debye_waller_U(use_data_adp)  # refuses an undefined ADP scale, whatever is sampled
        Id = np.zeros(self.q_grid.shape[0])
        for bz in self.bz_points():
            idx = grid_indices_of_bz(bz, self.L, self.map_shape)
            idx = idx[self.res_mask[idx]]
            F = self.structure_factors_at(idx, use_data_adp)
            probe("bz_index", np.full(len(idx), np.ravel_multi_index(bz, self.L)), axes=(("q", idx),))
            probe("F", F, axes=(("q", idx),))
            Id[idx] += probe("Id_part", self._intensity(F, self.V[bz], self.Winv[bz], rank), axes=(("q", idx),))
        Id[~self.res_mask] = np.nan
        return probe("Id", Id)

    def mode_maps(self, use_data_adp: bool = False) -> np.ndarray:
        """Every single-mode map at once, (n_q, n_dof) real: column r = apply_disorder(rank=r)."""
        self.debye_waller_U(use_data_adp)
        out = np.zeros((self.q_grid.shape[0], self.n_dof))
        for bz in self.bz_points():
            idx = grid_indices_of_bz(bz, self.L, self.map_shape)
            idx = idx[self.res_mask[idx]]
            F = self.structure_factors_at(idx, use_data_adp)
            out[idx] = np.real(np.square(np.abs(F @ self.V[bz])) * self.Winv[bz][None, :])
        out[~self.res_mask] = np.nan
        return out

    def apply_disorder_and_modes(self, use_data_adp: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """(:meth:`apply_disorder` (), :meth:`mode_maps` ()) from one pass of structure
        factors: the same values bit for bit, computed with the same operations, at the
        cost of one map (the structure factors are most of a map's cost)."""
        self.debye_waller_U(use_data_adp)
        Id = np.zeros(self.q_grid.shape[0])
        modes = np.zeros((self.q_grid.shape[0], self.n_dof))
        for bz in self.bz_points():
            idx = grid_indices_of_bz(bz, self.L, self.map_shape)
            idx = idx[self.res_mask[idx]]
            F = self.structure_factors_at(idx, use_data_adp)
            Id[idx] += self._intensity(F, self.V[bz], self.Winv[bz], -1)
            modes[idx] = np.real(np.square(np.abs(F @ self.V[bz])) * self.Winv[bz][None, :])
        Id[~self.res_mask] = np.nan
        modes[~self.res_mask] = np.nan
        return Id, modes

    # -- arbitrary q-vectors
    def q_vector_points(self, q: np.ndarray) -> dict[str, np.ndarray]:
        """Where arbitrary q-vectors sit, with the torch backend's q-vector-mode conventions.

        (``eryx.models_torch.OnePhonon._setup_q_vectors``.) Fractional Miller indices
        hkl = (2 pi A_inv^T)^-1 q. A q whose indices times L are integers (to 1e-9
        relative) is on the oversampled lattice: it takes the grid's BZ point
        (L hkl mod L on each axis), so exactly the grid's k. Any other q gets
        k = 2 pi A_inv^T (hkl - floor(hkl + 1/2)) (the nearest reciprocal lattice point
        removed, ties to -1/2 as the grid's convention), one extra k-slot per distinct k
        after the grid's prod(L) BZ points. Resolution from the fractional hkl.

        Returns
        -------
        dict with ``hkl`` (n, 3), ``slot`` (n,) int (flat BZ index, or prod(L) + j for
        extra k-point j), ``extra_kvec`` (n_extra, 3) in 1/A, ``res_mask`` (n,) bool.
        """
        c = self.crystal
        q = check_q_vectors(q)
        hkl = np.linalg.solve(c.A_inv.T, q.T / (2 * np.pi)).T
        L = np.array(self.L)
        scaled = hkl * L
        nearest = np.round(scaled)  # half to even, as torch.round
        on_lattice = np.all(np.abs(scaled - nearest) <= 1e-9 * np.maximum(np.abs(scaled), 1.0), axis=1)
        idx = np.mod(nearest.astype(np.int64), L)
        slot = (idx[:, 0] * L[1] + idx[:, 1]) * L[2] + idx[:, 2]
        frac = hkl - np.floor(hkl + 0.5)
        k_off = 2 * np.pi * (frac @ c.A_inv)
        off = ~on_lattice
        extra = np.zeros((0, 3))
        if off.any():
            extra, inverse = np.unique(k_off[off], axis=0, return_inverse=True)
            slot[off] = int(np.prod(self.L)) + inverse.reshape(-1)
        return dict(hkl=hkl, slot=slot, extra_kvec=extra, res_mask=resolution(hkl, c.cell) > self.res_limit)

    def phonons_at(self, kvec: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(Winv, V) at an arbitrary k (1/A), as at the grid's BZ points (sections 6-7).

        ``kvec``: one k-vector, shape (3,), 1/A, finite and real.
        """
        return phonons(build_K(self.hessian, check_k_vector(kvec), self.crystal.cell_origin), self.Linv)

    def apply_disorder_at(self, q_vectors, rank: int = -1, use_data_adp: bool = False) -> np.ndarray:
        """Diffuse intensity at arbitrary q-vectors, (n_q,) real, in their order.

        The NumPy counterpart of the torch backend's q-vector mode
        (``eryx.models_torch.OnePhonon(..., q_vectors=q).apply_disorder(rank, use_data_adp)``),
        point for point the same semantics: k from :meth:`q_vector_points`; the model's
        ADPs come from the grid's BZ sampling; phonons at an extra k are computed like the
        grid's (SVD of D, zero modes NaN); NaN outside the resolution limit and, for the
        full map, wherever the point's k has a zero mode (every Bragg position), for
        rank r where mode r is one. The map itself is section 10's sum over modes, one
        k-point at a time. At the grid's own q it is the grid map.

        Parameters
        ----------
        q_vectors : array-like, (n_q, 3)
            q in inverse Angstrom (2 pi convention), finite.
        rank, use_data_adp : as :meth:`apply_disorder`.
        """
        self._check_rank(rank)
        self.debye_waller_U(use_data_adp)
        q = check_q_vectors(q_vectors)
        where = self.q_vector_points(q)
        slot, mask = where["slot"], where["res_mask"]
        n_bz = int(np.prod(self.L))
        Id = np.full(len(q), np.nan)
        for s in np.unique(slot[mask]):
            pts = np.flatnonzero(mask & (slot == s))
            if s < n_bz:
                bz = np.unravel_index(s, self.L)
                Winv, V = self.Winv[bz], self.V[bz]
            else:
                Winv, V = self.phonons_at(where["extra_kvec"][s - n_bz])
            Id[pts] = self._intensity(self.structure_factors_q(q[pts], use_data_adp), V, Winv, rank)
        return Id
