"""The NumPy reference's maps in one pass, with the analytic d Id / d gamma_inter.

One pass of structure factors over the grid gives, at once, the four maps a parity run
needs from the NumPy reference (:class:`eryx.models.OnePhonon`):

* ``Id`` and ``mode_maps`` (model ADPs), bit for bit :meth:`OnePhonon.apply_disorder`
  and :meth:`OnePhonon.mode_maps`;
* ``Id_data_adp`` (the file's B factors), bit for bit
  ``apply_disorder(use_data_adp=True)``: the atomic amplitudes f_a(q) exp(i q.r_a) (the
  form factors and phases, most of a map's cost) do not depend on the Debye-Waller
  factor, so they are computed once and multiplied by each factor, with the very
  operations of :func:`eryx.models.structure_factors`;
* ``dId_dgamma_inter``, the analytic derivative of each grid point's Id.

The derivative (ALGORITHM.md sections 6-10). Per BZ point, ``Id_p = F_p K^-1 F_p^H``
(``V Winv V^H = K^-1`` since ``D = Linv K Linv^T = U S U^H`` and ``V = Linv^T U``). K is
linear in the spring constants, ``dK/d gamma_inter = K_e`` (the K of gamma_intra = 0,
gamma_inter = 1), and F depends on gamma_inter only through the scaled ADPs U in its
Debye-Waller factor exp(-|q|^2 U_a / 2). With ``Y = (F V) Winv``:

    d Id_p = 2 Re( (dF_p V) . conj(Y_p) )  -  Re( Y_p (V^H K_e V) Y_p^H )
    dF_p   = F_p with each atom's amplitude times -|q|^2 dU_a / 2
    dU     = from d Kinv(k) = -Kinv K_e Kinv summed over the BZ like the covariance,
             through the ADP scaling U = c ADP / mean(ADP)

so the derivative costs one more small projection per pass, not two more maps. It is
checked against central differences of separately built models by the parity backend
(``parity.backends.eryx_numpy``; docs/gradients.md).
"""
from __future__ import annotations

import numpy as np

from eryx import models as npm
from eryx.probes import quiet
from eryx.structure import ID_CELL_REF


def inter_hessian(model: npm.OnePhonon) -> np.ndarray:
    """d hessian / d gamma_inter: the projected Hessian of gamma_intra = 0, gamma_inter = 1.

    Returns
    -------
    ndarray, (n_asu, 6, 27, n_asu, 6) complex. Exact: the Hessian is linear in the gammas.
    """
    gamma = npm.gamma_matrix(model.n_asu, 0.0, 1.0)
    H = npm.build_hessian_allatoms(model.neighbours, model.n_asu, model.n_at, gamma)
    with quiet():  # not the model's Hessian: its blocks must not be aligned with the other side's
        return npm.project_hessian(H, model.Amat)


def _raw_adp(model: npm.OnePhonon, covar_ref: np.ndarray) -> np.ndarray:
    """Unscaled per-atom ADP (n_at,) from the reference-cell covariance, as _setup_phonons."""
    ADP_rb = np.real(np.diag(covar_ref))
    A_side = np.transpose(model.Amat, (1, 0, 2)).reshape(3 * model.n_at, model.n_dof)
    return np.sum((A_side @ ADP_rb).reshape(-1, 3), axis=1)


def adp_derivative(model: npm.OnePhonon, hessian_e: np.ndarray) -> np.ndarray:
    """d U / d gamma_inter of the scaled ADPs U = model.ADP (A^2 per unit gamma), (n_at,).

    covar_ref = sum_k pinv(K(k)) e^{i k.o_ref}; its derivative is -Kinv K_e Kinv per k
    (K's null space at k = 0, the rigid translations, is the same for every gamma and K_e
    annihilates it, so the pseudo-inverse differentiates like an inverse). Then
    U = c ADP / mean(ADP) with c = 3 mean(B) / (8 pi^2).
    """
    n_dof = model.n_dof
    covar = np.zeros((n_dof, n_dof), dtype=complex)
    dcovar = np.zeros((n_dof, n_dof), dtype=complex)
    origin = model.crystal.cell_origin[ID_CELL_REF]
    for bz in model.bz_points():
        Kinv = np.linalg.pinv(model.K(bz))
        K_e = npm.build_K(hessian_e, model.kvec[bz], model.crystal.cell_origin)
        phase = np.dot(model.kvec[bz], origin)
        factor = np.cos(phase) + 1j * np.sin(phase)
        covar += Kinv * factor
        dcovar -= (Kinv @ K_e @ Kinv) * factor
    adp, dadp = _raw_adp(model, covar), _raw_adp(model, dcovar)
    c = 3 * np.mean(model.crystal.adp) / (8 * np.pi * np.pi)
    mean = np.mean(adp)
    return c * (dadp / mean - adp * np.mean(dadp) / mean**2)


def _same_form_factor_source(c, i: int) -> int:
    """The first ASU whose IT92 coefficients equal ASU i's (their f(q) are then equal)."""
    for j in range(i):
        if all(np.array_equal(x[j], x[i]) for x in (c.ff_a, c.ff_b, c.ff_c)):
            return j
    return i


def _project(A: np.ndarray, q: np.ndarray, Amat: np.ndarray) -> np.ndarray:
    """(q_x A_a) @ Amat, (n_q, 6): :func:`eryx.models.structure_factors`'s projection."""
    G = (A[:, :, None] * q[:, None, :]).reshape(len(q), 3 * A.shape[1])
    return G @ Amat


def structure_factor_set(model: npm.OnePhonon, q: np.ndarray, Us: dict[str, np.ndarray],
                         dU: np.ndarray | None) -> tuple[dict[str, np.ndarray], np.ndarray | None]:
    """Projected F (n_q, n_dof) for each Debye-Waller U in ``Us`` from one set of amplitudes,
    and dF / d gamma_inter for ``Us['model']`` when ``dU`` (n_at,) is given.

    Each F is bit for bit :meth:`OnePhonon.structure_factors_q` with that U.
    """
    c = model.crystal
    F = {key: np.zeros((len(q), model.n_dof), dtype=complex) for key in Us}
    dF = None if dU is None else np.zeros((len(q), model.n_dof), dtype=complex)
    qq = np.sum(q * q, axis=1)[:, None]
    # The values that do not depend on the ASU are computed once: the same expressions on
    # the same inputs as eryx.models.structure_factors, hence the same bits.
    dw = {key: np.exp(-0.5 * U[None, :] * qq) for key, U in Us.items()}
    f: dict[int, np.ndarray] = {}
    for i in range(model.n_asu):
        source = _same_form_factor_source(c, i)
        if source not in f:
            f[source] = npm.form_factors(q, c.ff_a[i], c.ff_b[i], c.ff_c[i])
        phase = q @ c.xyz[i].T
        A0 = f[source] * (np.cos(phase) + 1j * np.sin(phase))
        cols = slice(6 * i, 6 * i + 6)
        for key in Us:
            A = A0 * dw[key]
            F[key][:, cols] = _project(A, q, model.Amat[i])
            if key == "model" and dF is not None:
                dF[:, cols] = _project(A * (-0.5 * qq) * dU[None, :], q, model.Amat[i])
    return F, dF


def intensity_derivative(F: np.ndarray, dF: np.ndarray, V: np.ndarray, Winv: np.ndarray,
                         E: np.ndarray) -> np.ndarray:
    """d Id_p for points sharing one k, (n_q,) real.

    Parameters
    ----------
    F, dF : (n_q, n_dof) complex: structure factors and their derivative.
    V, Winv : (n_dof, n_dof), (n_dof,): the k-point's modes (zero modes NaN in Winv).
    E : (n_dof, n_dof) complex: V^H (dK) V.
    """
    Y = (F @ V) * Winv[None, :]
    return np.real(2 * np.sum((dF @ V) * np.conj(Y), axis=1) - np.sum((Y @ E) * np.conj(Y), axis=1))


def maps_and_gamma_inter_derivative(model: npm.OnePhonon, gradient: bool = True) -> dict[str, np.ndarray]:
    """The NumPy reference's grid maps from one pass of structure factors.

    Returns
    -------
    dict with ``Id`` (n_q,), ``mode_maps`` (n_q, n_dof), ``Id_data_adp`` (n_q,) and, with
    ``gradient``, ``dId_dgamma_inter`` (n_q,): each NaN outside ``res_mask`` (the maps also
    where the point's k has a zero mode), as the model's own methods.

    Raises UndefinedADPError (the model's) when the model's ADP scale is undefined.
    """
    U = model.debye_waller_U(False)
    Us = {"model": U, "data": model.debye_waller_U(True)}
    hessian_e = inter_hessian(model) if gradient else None
    dU = adp_derivative(model, hessian_e) if gradient else None
    n_q = model.q_grid.shape[0]
    out = {"Id": np.zeros(n_q), "mode_maps": np.zeros((n_q, model.n_dof)), "Id_data_adp": np.zeros(n_q)}
    if gradient:
        out["dId_dgamma_inter"] = np.zeros(n_q)
    for bz in model.bz_points():
        idx = npm.grid_indices_of_bz(bz, model.L, model.map_shape)
        idx = idx[model.res_mask[idx]]
        F, dF = structure_factor_set(model, model.q_grid[idx], Us, dU)
        V, Winv = model.V[bz], model.Winv[bz]
        out["Id"][idx] += model._intensity(F["model"], V, Winv, -1)
        out["mode_maps"][idx] = np.real(np.square(np.abs(F["model"] @ V)) * Winv[None, :])
        out["Id_data_adp"][idx] += model._intensity(F["data"], V, Winv, -1)
        if gradient:
            K_e = npm.build_K(hessian_e, model.kvec[bz], model.crystal.cell_origin)
            E = V.conj().T @ K_e @ V
            out["dId_dgamma_inter"][idx] = intensity_derivative(F["model"], dF, V, Winv, E)
    for value in out.values():
        value[~model.res_mask] = np.nan
    return out
