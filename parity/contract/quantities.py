"""The contract between the harness and any backend: named quantities, shapes, conventions.

A backend (``parity.backends``) provides some of these quantities under these names, in
these shapes and conventions, as NumPy arrays (or torch tensors; the harness converts).
Stages (``parity.stages``) compare them; dumps (``parity dump``) store them under the
same names. A quantity a backend does not provide makes the stages that read it
``not_comparable``, with the backend's reason.

Shapes use: ``n_q`` grid points (h slowest, l fastest), ``n_s`` points of the spec's q
sample (:attr:`parity.contract.spec.RunSpec.q_sample`), ``n_g`` points of the q-gradient sample,
``n_hkl`` the oracle's integer reflections, ``L = (L_h, L_k, L_l)``, ``n_bz = L_h L_k L_l``
(BZ points in C order of (dh, dk, dl)), ``n_asu``, ``n_at`` atoms per ASU,
``n_dof = 6 n_asu``, 27 supercell cells (l fastest, the reference cell is 13).
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Quantity:
    """One named quantity of the contract.

    Attributes
    ----------
    name : str
    shape : str
        Shape in the notation of this module's docstring.
    dtype : {'real', 'complex', 'int', 'bool', 'text'}
        Number class (the precision is the backend's; a float32 run gives float32).
    units : str
    description : str
        Convention that decides the numbers (ALGORITHM.md section in brackets).
    """

    name: str
    shape: str
    dtype: str
    units: str
    description: str


QUANTITIES: tuple[Quantity, ...] = (
    # ---- structure (ALGORITHM.md 1-2)
    Quantity("cell", "(6,)", "real", "A, degrees", "a, b, c, alpha, beta, gamma [1.2]"),
    Quantity("A_inv", "(3, 3)", "real", "1/A", "fractionalization matrix, Cartesian -> fractional [1.2]"),
    Quantity("unit_cell_axes", "(3, 3)", "real", "A", "cell vectors as rows [1.2]"),
    Quantity("n_asu", "()", "int", "", "ASUs per unit cell (number of symmetry operations) [1.3]"),
    Quantity("xyz", "(n_asu, n_at, 3)", "real", "A", "P1-expanded coordinates, packed per [1.5]"),
    Quantity("asu_xyz", "(n_asu, n_at, 3)", "real", "A", "ASU coordinates in the reference cell [2]"),
    Quantity("adp", "(n_asu, n_at)", "real", "A^2", "b_iso of the file, tiled to every ASU [1.4]"),
    Quantity("masses", "(n_asu n_at,)", "real", "Da", "atom masses, all ASUs in order [1.4]"),
    Quantity("ff_a", "(n_asu, n_at, 4)", "real", "", "IT92 a coefficients [1.4]"),
    Quantity("ff_b", "(n_asu, n_at, 4)", "real", "A^2", "IT92 b coefficients [1.4]"),
    Quantity("ff_c", "(n_asu, n_at)", "real", "", "IT92 c coefficient [1.4]"),
    Quantity("cell_origin", "(27, 3)", "real", "A", "supercell cell origins, l fastest [2]"),
    # ---- grid (3, 5)
    Quantity("hkl_grid", "(n_q, 3)", "real", "", "Miller indices, h slowest, l fastest [3]"),
    Quantity("map_shape", "(3,)", "int", "", "(n_h, n_k, n_l) [3]"),
    Quantity("q_grid", "(n_q, 3)", "real", "1/A", "q = 2 pi A_inv^T hkl [3]"),
    Quantity("res_mask", "(n_q,)", "bool", "", "d(hkl) > res_limit [3]"),
    Quantity("d_spacing", "(2, n_s)", "real", "A", "d(hkl) at the q sample's hkl: row 0 on the fixture's cell, "
             "row 1 on spec.PROBE_CELL (triclinic); inf at the origin [3]"),
    Quantity("kvec", "(L_h, L_k, L_l, 3)", "real", "1/A", "k of each BZ point, centred in [-1/2, 1/2) [5]"),
    Quantity("kvec_norm", "(L_h, L_k, L_l, 1)", "real", "1/A", "|k| [5]"),
    Quantity("bz_index", "(n_q,)", "int", "", "flat BZ point (C order of dh, dk, dl) serving each grid point [5]"),
    # ---- projection, mass, structure factors (4, 9)
    Quantity("Amat", "(n_asu, 3 n_at, 6)", "real", "A", "rigid-body projection, rows atom-major [4]"),
    Quantity("M_allatoms", "(n_asu, 3 n_at, n_asu, 3 n_at)", "real", "Da", "all-atom mass matrix [4]"),
    Quantity("Mmat", "(n_asu, 6, n_asu, 6)", "real", "", "A_i^T M A_j [4]"),
    Quantity("Linv", "(n_dof, n_dof)", "real", "", "inverse of the lower Cholesky factor of Mmat [4]"),
    Quantity("form_factors", "(n_s, n_at)", "real", "electrons", "IT92 f at the q sample, first ASU [9]"),
    Quantity("structure_factors", "(n_s, n_dof)", "complex", "", "projected F at the q sample with the file's B "
             "(U = B / 8 pi^2) [9]"),
    Quantity("F_hkl", "(n_hkl,)", "complex", "electrons", "unprojected F summed over all atoms at the oracle's "
             "integer reflections, B = 0 [9]"),
    # ---- network and phonons (6-8)
    Quantity("hessian_allatoms", "(n_asu, n_at, 27, n_asu, n_at)", "real", "", "all-atom GNM Hessian [6]"),
    Quantity("hessian", "(n_asu, 6, 27, n_asu, 6)", "real", "", "projected Hessian (real part) [6]"),
    Quantity("K", "(n_bz, n_dof, n_dof)", "complex", "", "K(k), phase cos + i sin of k . origin [6]"),
    Quantity("Kinv", "(n_bz, n_dof, n_dof)", "complex", "", "pseudo-inverse of K(k), NumPy's default cutoff [6]"),
    Quantity("D", "(n_bz, n_dof, n_dof)", "complex", "", "Linv K Linv^T [7]"),
    Quantity("Winv", "(L_h, L_k, L_l, n_dof)", "real", "", "1/w^2, w ascending, zero modes (NaN) first [7]"),
    Quantity("V", "(L_h, L_k, L_l, n_dof, n_dof)", "complex", "", "mass-weighted modes Linv^T U as columns [7]"),
    Quantity("U", "(n_bz, n_dof, n_dof)", "complex", "", "orthonormal eigenvectors of D (optional: residual "
             "check) [7]"),
    Quantity("covar", "(n_asu, 6, 27, n_asu, 6)", "real", "A^2", "scaled rigid-body covariance [8]"),
    Quantity("ADP", "(n_at,)", "real", "A^2", "scaled atomic displacement parameters [8]"),
    # ---- intensity (10)
    Quantity("Id", "(n_q,)", "real", "", "diffuse intensity, all modes, NaN at Bragg points and outside res_mask [10]"),
    Quantity("mode_maps", "(n_q, n_dof)", "real", "", "single-mode maps, column r = rank r [10]"),
    Quantity("Id_data_adp", "(n_q,)", "real", "", "Id with the file's B factors [10]"),
    Quantity("Id_qvectors", "(n_q,)", "real", "", "arbitrary-q mode evaluated at the grid's own q [10]"),
    Quantity("Id_q_sample", "(n_s,)", "real", "", "arbitrary-q mode at the q sample only [10]"),
    Quantity("Id_q_offgrid", "(n_g,)", "real", "", "arbitrary-q mode at the q-gradient sample's q + "
             "spec.offgrid_shift_q (in the run's dtype): points between the grid's k-points [10]"),
    Quantity("grad_gamma_inter", "(1,)", "real", "", "d sum(finite Id) / d gamma_inter"),
    Quantity("grad_gamma_intra", "(1,)", "real", "", "d sum(finite Id) / d gamma_intra"),
    Quantity("grad_q", "(n_g, 3)", "real", "A", "d Id(q) / d q (Cartesian) at the spec's q-gradient sample (grid points off k = 0)"),
    # ---- backend facts
    Quantity("dtypes", "{name: dtype}", "text", "", "dtype of every intermediate the backend holds (the "
             "dtype audit)"),
)

QUANTITY_NAMES = tuple(q.name for q in QUANTITIES)
_BY_NAME = {q.name: q for q in QUANTITIES}


def get_quantity(name: str) -> Quantity:
    """The contract entry ``name`` (KeyError naming the known ones)."""
    try:
        return _BY_NAME[name]
    except KeyError:
        raise KeyError(f"unknown quantity {name!r}; known quantities: {', '.join(QUANTITY_NAMES)}") from None
