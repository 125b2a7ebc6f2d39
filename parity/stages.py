"""THE ordered stage registry: the spine of the harness.

One entry per compared quantity, in phase order. The runner, the pytest
parametrisation, the HTML report, bisection and the history all read
:data:`STAGES`; adding a stage is adding one :class:`Stage` here.

A stage says how each backend produces its quantity (``reference`` from the NumPy
model, ``candidate`` from the torch model), how to compare them (``kind`` and
``tier``), where an element lives (``locate``: grid point or BZ point), and how to
re-run the torch computation of this stage alone on the reference's inputs
(``crossfeed``), which bisection uses to tell a root cause from an inherited error.
Invariant stages (``kind='invariant'``) need no reference: they check what must
hold anyway (Hermitian K, three zero modes at k = 0, Friedel symmetry, ...).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import torch

from eryx import models as npm
from eryx import stages_torch as st

Getter = Callable[["Any"], Any]


@dataclass(frozen=True)
class Stage:
    """One compared quantity.

    Attributes
    ----------
    name, phase, tier, kind : str, int, str, str
        ``kind`` is one of 'array', 'exact', 'eigenspace', 'dtype', 'gradient',
        'oracle', 'invariant'.
    description : str
    reference, candidate : callables of the run context -> value (NumPy arrays;
        torch tensors are converted by the runner). For 'eigenspace' both return
        (values, vectors); for 'invariant' only ``candidate`` exists and returns a
        :class:`parity.compare.Comparison`.
    locate : 'grid' | 'bz' | 'bz_flat' | None
        How the worst element's index is named.
    crossfeed : callable or None
        The torch computation of this stage on the reference's inputs.
    needs_dense : bool
        Needs the dense reference (not comparable where it does not fit in memory).
    """

    name: str
    phase: int
    tier: str
    kind: str
    description: str
    candidate: Getter
    reference: Getter | None = None
    locate: str | None = None
    crossfeed: Getter | None = None
    needs_dense: bool = True

    @property
    def id(self) -> str:
        return f"phase{self.phase}::{self.name}"


PHASE_TITLES = {
    1: "grid and precision",
    2: "A/M matrices and structure factors",
    3: "phonons and covariance",
    4: "end-to-end intensity",
}


# --------------------------------------------------------------------- helpers
def _np(x: Any) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().resolve_conj().numpy()
    return np.asarray(x)


def _real_checked(x: np.ndarray) -> np.ndarray:
    """The reference keeps Winv complex with zero imaginary part; compare it as real."""
    x = np.asarray(x)
    if np.iscomplexobj(x):
        imag = x.imag[np.isfinite(x.imag)]
        if imag.size and np.any(imag != 0):
            raise ValueError("reference Winv has a non-zero imaginary part")
        return x.real
    return x


def _t(ctx, x, dtype=None) -> torch.Tensor:
    """A reference array as a tensor of the candidate's precision and device."""
    c = ctx.cand
    if np.iscomplexobj(x):
        return torch.as_tensor(np.asarray(x), device=c.device).to(dtype or c.complex_dtype)
    return torch.as_tensor(np.asarray(x), device=c.device).to(dtype or c.real_dtype)


def _ref_K(ctx) -> np.ndarray:
    return ctx.cached("ref_K", lambda: np.array([ctx.ref.K(b) for b in ctx.ref.bz_points()]))


def _ref_Kinv(ctx) -> np.ndarray:
    return ctx.cached("ref_Kinv", lambda: np.array([np.linalg.pinv(k) for k in _ref_K(ctx)]))


def _ref_D(ctx) -> np.ndarray:
    return np.array([ctx.ref.Linv @ k @ ctx.ref.Linv.T for k in _ref_K(ctx)])


def _crossfeed_hessian(ctx):
    c = ctx.cand
    Hi, He = st.hessian_unit_blocks(c.contacts, _t(ctx, ctx.ref.Amat), c.n_asu)
    return st.combine_hessian(Hi, He, c.gamma_intra, c.gamma_inter)


# The phase-2 structure factors use the file's B factors (U = B / 8 pi^2), not the
# model ADPs: phase 2 must not depend on phase 3 for the phase order to be causal.
def _cand_F(ctx) -> torch.Tensor:
    c, idx = ctx.cand, ctx.q_sample
    return st.structure_factors(c.q_grid[idx], c.xyz, c.ff_a[0], c.ff_b[0], c.ff_c[0],
                                c.debye_waller_U(use_data_adp=True), c.Amat)


def _crossfeed_F(ctx) -> torch.Tensor:
    r, idx = ctx.ref, ctx.q_sample
    U = _t(ctx, r.crystal.adp[0] / (8 * math.pi**2))
    return st.structure_factors(_t(ctx, r.q_grid[idx]), _t(ctx, r.xyz), _t(ctx, r.ff_a[0]),
                                _t(ctx, r.ff_b[0]), _t(ctx, r.ff_c[0]), U, _t(ctx, r.Amat))


def _cand_ff(ctx) -> torch.Tensor:
    c = ctx.cand
    q = c.q_grid[ctx.q_sample]
    return st.form_factors(torch.sum(q * q, dim=1), c.ff_a[0], c.ff_b[0], c.ff_c[0])


def _crossfeed_ff(ctx) -> torch.Tensor:
    r = ctx.ref
    q = _t(ctx, r.q_grid[ctx.q_sample])
    return st.form_factors(torch.sum(q * q, dim=1), _t(ctx, r.ff_a[0]), _t(ctx, r.ff_b[0]), _t(ctx, r.ff_c[0]))


def _ref_ff(ctx) -> np.ndarray:
    r = ctx.ref
    return npm.form_factors(r.q_grid[ctx.q_sample], r.ff_a[0], r.ff_b[0], r.ff_c[0])


def _ref_bz_index(ctx) -> np.ndarray:
    r = ctx.ref
    out = np.full(int(np.prod(r.map_shape)), -1, dtype=np.int64)
    for flat, bz in enumerate(r.bz_points()):
        out[npm.grid_indices_of_bz(bz, r.L, r.map_shape)] = flat
    return out


def _cand_phonons(ctx):
    c = ctx.cand
    return c.Winv.reshape(-1, c.n_dof), c.V.reshape(-1, c.n_dof, c.n_dof)


def _ref_phonons(ctx):
    r = ctx.ref
    return _real_checked(r.Winv).reshape(-1, r.n_dof), r.V.reshape(-1, r.n_dof, r.n_dof)


def _crossfeed_phonons(ctx):
    Winv, U = st.phonons(st.dynamical_matrix(_t(ctx, _ref_K(ctx)), _t(ctx, ctx.ref.Linv)))
    return Winv, st.mass_weighted_modes(U, _t(ctx, ctx.ref.Linv))


def _crossfeed_adp(ctx, which: int):
    c, r = ctx.cand, ctx.ref
    covar = st.covariance(_t(ctx, _ref_Kinv(ctx)), _t(ctx, r.kvec), c.cell_origin)
    return st.adp_scaled(covar, _t(ctx, r.Amat), c.adp)[which]


def _cluster_map(mode_maps: np.ndarray, Winv: np.ndarray, bz_index: np.ndarray, rank: int) -> np.ndarray:
    """Rank map summed over the eigenvalue cluster holding ``rank`` at each BZ point."""
    from parity.compare import cluster_eigenvalues

    out = np.full(mode_maps.shape[0], np.nan)
    for b in range(Winv.shape[0]):
        members = next(cl for cl in cluster_eigenvalues(Winv[b], rel_gap=1e-6) if rank in cl)
        rows = bz_index == b
        out[rows] = mode_maps[rows][:, members].sum(axis=1)
    return out


def _cluster_stage(ctx, side: str, rank_of: Callable[[int], int]) -> np.ndarray:
    """Cluster-summed rank map; clusters always from the reference's Winv (or the
    candidate's when no reference exists) so both sides sum the same modes."""
    r = ctx.ref
    Winv = _real_checked(r.Winv).reshape(-1, r.n_dof)
    maps = ctx.cached(f"{side}_mode_maps", lambda: _np(r.mode_maps() if side == "ref" else ctx.cand.mode_maps()))
    return _cluster_map(maps, Winv, _ref_bz_index(ctx), rank_of(r.n_dof))


def _crossfeed_cluster(ctx, rank_of: Callable[[int], int]) -> np.ndarray:
    r = ctx.ref
    maps = _np(ctx.crossfeed_model().mode_maps())
    return _cluster_map(maps, _real_checked(r.Winv).reshape(-1, r.n_dof), _ref_bz_index(ctx), rank_of(r.n_dof))


def _rank_last(n_dof: int) -> int:
    return min(7, n_dof - 1)


# ------------------------------------------------------------ invariant checks
def _invariant(name: str, passed: bool, value: float, limit: float, message: str, details=None):
    from parity.compare import Comparison

    return Comparison(kind="invariant", passed=bool(passed), max_abs=float(value), max_rel=float(value),
                      n_mismatch=0 if passed else 1, n_total=1, worst=None,
                      message=message, details=details or {"limit": limit})


def check_K_hermitian(ctx):
    K = _np(ctx.cand.K)
    err = float(np.max(np.abs(K - np.conj(np.swapaxes(K, -1, -2)))) / max(np.max(np.abs(K)), 1e-300))
    limit = 1e3 * np.finfo(K.real.dtype).eps
    return _invariant("K_hermitian", err <= limit, err, limit,
                      f"max |K - K^H| / max |K| = {err:.2e} (limit {limit:.1e})")


def _expected_zero_modes(c) -> np.ndarray | None:
    """Zero modes each BZ point must have, from the contact network alone (no eigensolver).

    The rigid translations of a connected component of the ASU contact graph are zero
    modes at k iff k . R is a multiple of 2 pi for every lattice vector R that closes a
    cycle of the component (cell offsets summed around it): 3 per such component. A
    connected network whose cycles span the lattice gives exactly 3 at k = 0 and none
    elsewhere; sparse networks (short gnm_cutoff) may split into several components or
    span only a sublattice or a layer. None when a component's cycles span fewer than 2
    dimensions (a chain or a finite cluster: rigid rotations are soft too).
    """
    cells = _np(c.cell_hkl).round().astype(np.int64)
    adjacency: list[list] = [[] for _ in range(c.n_asu)]
    edges = zip(*(_np(c.contacts[k]).tolist() for k in "icj"))
    for i, cell, j in set(edges):
        adjacency[i].append((j, cells[cell]))
        adjacency[j].append((i, -cells[cell]))
    frac = _np(st.bz_fractions(c.L, dtype=torch.float64, device="cpu")).reshape(-1, 3)
    expected = np.zeros(len(frac), dtype=np.int64)
    offset: dict[int, np.ndarray] = {}
    for root in range(c.n_asu):
        if root in offset:
            continue
        offset[root], cycles, todo = np.zeros(3, np.int64), [np.zeros(3, np.int64)], [root]
        while todo:
            i = todo.pop()
            for j, n in adjacency[i]:
                if j in offset:
                    cycles.append(offset[i] + n - offset[j])
                else:
                    offset[j] = offset[i] + n
                    todo.append(j)
        cycles = np.array(cycles)
        if np.linalg.matrix_rank(cycles) < 2:
            return None
        turns = frac @ cycles.T
        expected += 3 * np.all(np.abs(turns - np.round(turns)) < 1e-9, axis=1)
    return expected


def check_zero_modes(ctx):
    c = ctx.cand
    k0 = int(np.argmin(_np(c.kvec_norm).reshape(-1)))
    counts = np.isnan(_np(c.Winv).reshape(-1, c.n_dof)).sum(axis=1)
    expected = _expected_zero_modes(c)
    if expected is None:
        return _invariant("zero_modes", True, 0.0, 0, "the contact network has a chain or finite cluster "
                          "(rigid rotations soft too): zero-mode count not predictable; not applicable")
    others, want_others = int(np.delete(counts, k0).sum()), int(np.delete(expected, k0).sum())
    bad = int(np.abs(counts - expected).sum())
    return _invariant("zero_modes", bad == 0, bad, 0,
                      f"{int(counts[k0])} zero modes at k = 0 (expected exactly {int(expected[k0])}), {others} "
                      f"elsewhere (expected {want_others}, from the contact network)")


def check_nonnegative(ctx):
    Id = ctx.cached("cand_Id", lambda: _np(ctx.cand.apply_disorder()))
    finite = Id[np.isfinite(Id)]
    worst = float(-finite.min() / max(finite.max(), 1e-300)) if finite.size else 0.0
    limit = 1e3 * np.finfo(finite.dtype).eps
    return _invariant("Id_nonnegative", worst <= limit, max(worst, 0.0), limit,
                      f"most negative Id / max Id = {-worst:.2e} off the Bragg points (must be >= -{limit:.1e})")


def check_friedel(ctx):
    c = ctx.cand
    hkl = _np(c.hkl_grid)
    Id = ctx.cached("cand_Id", lambda: _np(c.apply_disorder()))
    symmetric = all(s[0] == -s[1] for s in (c.hsampling, c.ksampling, c.lsampling))
    if not symmetric:
        return _invariant("friedel", True, 0.0, 0.0, "grid is not symmetric about the origin: not applicable")
    mirrored = Id.reshape(c.map_shape)[::-1, ::-1, ::-1].reshape(-1)
    assert np.allclose(hkl[::-1], -hkl)
    both = np.isfinite(Id) & np.isfinite(mirrored)
    nan_ok = bool(np.array_equal(np.isnan(Id), np.isnan(mirrored)))
    scale = max(np.max(np.abs(Id[both])), 1e-300) if both.any() else 1.0
    err = float(np.max(np.abs(Id[both] - mirrored[both])) / scale) if both.any() else 0.0
    limit = 1e-9 if c.real_dtype == torch.float64 else 1e-4
    return _invariant("friedel", err <= limit and nan_ok, err, limit,
                      f"max |Id(q) - Id(-q)| / max Id = {err:.2e} (limit {limit:.0e}); NaN patterns {'match' if nan_ok else 'DIFFER'}")


def check_qvectors_sample(ctx):
    """The arbitrary-q path equals the grid path at sampled grid points (torch only)."""
    from eryx.models_torch import OnePhonon as TorchOnePhonon

    c = ctx.cand
    idx = ctx.q_sample
    q_model = TorchOnePhonon(c.crystal.pdb_path, c.hsampling, c.ksampling, c.lsampling,
                             gnm_cutoff=c.gnm_cutoff, gamma_intra=c.gamma_intra.detach(),
                             gamma_inter=c.gamma_inter.detach(), res_limit=c.res_limit,
                             device=c.device, dtype=c.real_dtype, q_vectors=c.q_grid[idx],
                             expand_p1=ctx.params.get("expand_p1", True))
    got = _np(q_model.apply_disorder())
    want = ctx.cached("cand_Id", lambda: _np(c.apply_disorder()))[idx]
    from parity.compare import compare_arrays
    from parity.tiers import resolve_tier

    cmp = compare_arrays(got, want, resolve_tier("end_to_end", ctx.dtype, ctx.tier_overrides), name="Id_qvectors_sample")
    cmp.kind = "invariant"
    return cmp


# ------------------------------------------------------------------ gradients
def _grad_candidate(ctx, which: str) -> np.ndarray:
    from eryx.models_torch import OnePhonon as TorchOnePhonon

    g = {k: torch.tensor(float(ctx.params.get(k, 1.0)), dtype=torch.float64, requires_grad=True)
         for k in ("gamma_intra", "gamma_inter")}
    m = TorchOnePhonon(ctx.pdb_path, *ctx.samplings, device=ctx.device, dtype=ctx.torch_dtype,
                       **{**ctx.model_params, **g})
    total = torch.nansum(m.apply_disorder())
    if not total.requires_grad:
        # No finite point (e.g. oversampling 1: every grid point sits at a Bragg k):
        # sum(finite Id) is 0 for every gamma, so the derivative is 0 (the FD agrees).
        return np.array([0.0])
    (grad,) = torch.autograd.grad(total, g[which], allow_unused=True)
    return np.array([0.0 if grad is None else grad.item()])


def _grad_reference(ctx, which: str) -> np.ndarray:
    """Central finite difference of sum(finite Id) of the NumPy model."""
    value = float(ctx.params.get(which, 1.0))
    h = 1e-4 * max(abs(value), 1.0)

    def total(v):
        m = npm.OnePhonon(ctx.pdb_path, *ctx.samplings, **{**ctx.model_params, which: v})
        return float(np.nansum(m.apply_disorder()))

    return np.array([(total(value + h) - total(value - h)) / (2 * h)])


# --------------------------------------------------------------- the registry
def _c(attr):
    return lambda ctx: getattr(ctx.cand, attr)


def _r(attr):
    return lambda ctx: getattr(ctx.ref, attr)


STAGES: tuple[Stage, ...] = (
    # ---- phase 1: grid and precision
    Stage("hkl_grid", 1, "tight", "array", "Miller indices of the grid (h slowest, l fastest)",
          _c("hkl_grid"), _r("hkl_grid"), "grid",
          crossfeed=lambda ctx: st.generate_grid([s.as_tuple() for s in ctx.cand.samplings],
                                                 dtype=ctx.cand.real_dtype, device=ctx.cand.device)),
    Stage("map_shape", 1, "exact", "exact", "grid dimensions (n_h, n_k, n_l)",
          lambda ctx: np.array(ctx.cand.map_shape), lambda ctx: np.array(ctx.ref.map_shape)),
    Stage("q_grid", 1, "tight", "array", "q = 2 pi A_inv^T hkl (1/A)", _c("q_grid"), _r("q_grid"), "grid",
          crossfeed=lambda ctx: st.q_from_hkl(_t(ctx, ctx.ref.hkl_grid), _t(ctx, ctx.ref.A_inv))),
    Stage("res_mask", 1, "exact", "exact", "grid points inside the resolution limit", _c("res_mask"),
          _r("res_mask"), "grid",
          crossfeed=lambda ctx: st.res_mask(_t(ctx, ctx.ref.hkl_grid), _t(ctx, ctx.ref.cell), ctx.ref.res_limit)),
    Stage("kvec", 1, "tight", "array", "k-vectors of the BZ points (1/A)", _c("kvec"), _r("kvec"), "bz",
          crossfeed=lambda ctx: st.build_kvec(_t(ctx, ctx.ref.A_inv), ctx.ref.L)),
    Stage("kvec_norm", 1, "tight", "array", "|k|", _c("kvec_norm"), _r("kvec_norm"), "bz",
          crossfeed=lambda ctx: st.kvec_norm(_t(ctx, ctx.ref.kvec))),
    Stage("bz_index", 1, "exact", "exact", "grid point -> BZ point mapping (section 5)",
          _c("bz_index"), _ref_bz_index, "grid",
          crossfeed=lambda ctx: st.grid_bz_index(ctx.ref.map_shape, ctx.ref.L, ctx.cand.device)),
    Stage("dtype_audit", 1, "exact", "dtype", "every torch intermediate at the requested precision",
          lambda ctx: ctx.cand, needs_dense=False),
    # ---- phase 2: matrices and scattering
    Stage("xyz", 2, "tight", "array", "P1-expanded coordinates (A)", _c("xyz"), _r("xyz")),
    Stage("asu_xyz", 2, "tight", "array", "reference-cell ASU coordinates (A)", _c("asu_xyz"), _r("asu_xyz")),
    Stage("Amat", 2, "tight", "array", "rigid-body projection A per ASU", _c("Amat"), _r("Amat"),
          crossfeed=lambda ctx: st.build_A(_t(ctx, ctx.ref.asu_xyz))),
    Stage("M_allatoms", 2, "tight", "array", "all-atom mass matrix", _c("M_allatoms"), _r("M_allatoms"),
          crossfeed=lambda ctx: st.build_M_allatoms(_t(ctx, ctx.ref.masses), ctx.ref.n_asu)),
    Stage("Mmat", 2, "tight", "array", "projected mass matrix A^T M A", _c("Mmat"), _r("Mmat"),
          crossfeed=lambda ctx: st.build_Mmat(_t(ctx, ctx.ref.Amat), _t(ctx, ctx.ref.masses))),
    Stage("Linv", 2, "decomposition", "array", "inverse lower Cholesky factor of Mmat (real)",
          _c("Linv"), _r("Linv"), crossfeed=lambda ctx: st.build_Linv(_t(ctx, ctx.ref.Mmat))),
    Stage("form_factors", 2, "tight", "array", "IT92 form factors at the q sample", _cand_ff, _ref_ff,
          crossfeed=_crossfeed_ff),
    Stage("structure_factors", 2, "tight", "array", "projected F (n_q_sample, n_dof) at the q sample, file B factors",
          _cand_F, lambda ctx: ctx.ref.structure_factors_at(ctx.q_sample, use_data_adp=True),
          crossfeed=_crossfeed_F),
    Stage("gemmi_oracle", 2, "oracle_gemmi", "oracle",
          "NumPy structure factors at integer hkl (B = 0) vs gemmi's StructureFactorCalculatorX",
          lambda ctx: ctx.gemmi_oracle()[0], lambda ctx: ctx.gemmi_oracle()[1], needs_dense=False),
    # ---- phase 3: phonons and covariance
    # tight, not exact: the diagonal sums the gammas in another order than the reference
    # (bitwise equal only for integral gammas).
    Stage("hessian_allatoms", 3, "tight", "array", "dense all-atom GNM Hessian",
          _c("hessian_allatoms"), _r("hessian_allatoms")),
    Stage("hessian", 3, "tight", "array", "projected Hessian (contacts vs dense)",
          lambda ctx: ctx.cand.hessian, lambda ctx: ctx.ref.hessian.real, crossfeed=_crossfeed_hessian),
    Stage("K", 3, "tight", "array", "K(k) per BZ point", _c("K"), _ref_K, "bz_flat",
          crossfeed=lambda ctx: st.build_K(_t(ctx, ctx.ref.hessian.real), _t(ctx, ctx.ref.kvec).reshape(-1, 3),
                                           ctx.cand.cell_origin)),
    Stage("D", 3, "tight", "array", "dynamical matrix Linv K Linv^T", _c("D"), _ref_D, "bz_flat",
          crossfeed=lambda ctx: st.dynamical_matrix(_t(ctx, _ref_K(ctx)), _t(ctx, ctx.ref.Linv))),
    Stage("Winv", 3, "decomposition", "array", "1/w^2 per mode (NaN for zero modes)",
          lambda ctx: ctx.cand.Winv, lambda ctx: _real_checked(ctx.ref.Winv), "bz",
          crossfeed=lambda ctx: _crossfeed_phonons(ctx)[0].reshape(ctx.ref.Winv.shape)),
    Stage("eigenspaces", 3, "decomposition", "eigenspace", "spectral projectors per eigenvalue cluster",
          _cand_phonons, _ref_phonons, "bz_flat", crossfeed=_crossfeed_phonons),
    Stage("Kinv", 3, "decomposition", "array", "pseudo-inverse of K(k)", _c("Kinv"), _ref_Kinv, "bz_flat",
          crossfeed=lambda ctx: st.pinv_hermitian(_t(ctx, _ref_K(ctx)))),
    Stage("covar", 3, "decomposition", "array", "scaled rigid-body covariance", _c("covar"), _r("covar"),
          crossfeed=lambda ctx: _crossfeed_adp(ctx, 1)),
    Stage("ADP", 3, "decomposition", "array", "scaled atomic displacement parameters", _c("ADP"), _r("ADP"),
          crossfeed=lambda ctx: _crossfeed_adp(ctx, 0)),
    Stage("K_hermitian", 3, "exact", "invariant", "K(k) is Hermitian", check_K_hermitian, needs_dense=False),
    Stage("zero_modes", 3, "exact", "invariant", "exactly three zero modes at k = 0, none elsewhere",
          check_zero_modes, needs_dense=False),
    # ---- phase 4: intensity
    Stage("Id", 4, "end_to_end", "array", "diffuse intensity, all modes",
          lambda ctx: ctx.cached("cand_Id", lambda: _np(ctx.cand.apply_disorder())),
          lambda ctx: ctx.cached("ref_Id", lambda: ctx.ref.apply_disorder()), "grid",
          crossfeed=lambda ctx: ctx.crossfeed_map()),
    Stage("Id_cluster0", 4, "end_to_end", "array", "rank-0 map summed over its eigenvalue cluster",
          lambda ctx: _cluster_stage(ctx, "cand", lambda n: 0), lambda ctx: _cluster_stage(ctx, "ref", lambda n: 0),
          "grid", crossfeed=lambda ctx: _crossfeed_cluster(ctx, lambda n: 0)),
    Stage("Id_cluster_last", 4, "end_to_end", "array", "rank-7 map summed over its eigenvalue cluster",
          lambda ctx: _cluster_stage(ctx, "cand", _rank_last), lambda ctx: _cluster_stage(ctx, "ref", _rank_last),
          "grid", crossfeed=lambda ctx: _crossfeed_cluster(ctx, _rank_last)),
    Stage("Id_data_adp", 4, "end_to_end", "array", "intensity with the file's B factors",
          lambda ctx: ctx.cand.apply_disorder(use_data_adp=True),
          lambda ctx: ctx.ref.apply_disorder(use_data_adp=True), "grid",
          crossfeed=lambda ctx: ctx.crossfeed_map(use_data_adp=True)),
    Stage("Id_qvectors", 4, "end_to_end", "array", "arbitrary-q mode at the grid's q vs the grid map",
          lambda ctx: ctx.qvector_map(), lambda ctx: ctx.cached("ref_Id", lambda: ctx.ref.apply_disorder()), "grid"),
    Stage("grad_gamma_inter", 4, "gradient", "gradient", "d sum(Id)/d gamma_inter: autograd vs NumPy FD",
          lambda ctx: _grad_candidate(ctx, "gamma_inter"), lambda ctx: _grad_reference(ctx, "gamma_inter")),
    Stage("grad_gamma_intra", 4, "gradient", "gradient", "d sum(Id)/d gamma_intra: autograd vs NumPy FD",
          lambda ctx: _grad_candidate(ctx, "gamma_intra"), lambda ctx: _grad_reference(ctx, "gamma_intra")),
    Stage("Id_nonnegative", 4, "exact", "invariant", "Id >= 0 off the Bragg points", check_nonnegative,
          needs_dense=False),
    Stage("friedel", 4, "exact", "invariant", "Friedel symmetry Id(q) = Id(-q) on a symmetric grid",
          check_friedel, needs_dense=False),
    Stage("qvectors_sample", 4, "exact", "invariant", "arbitrary-q path equals the grid path at sampled points",
          check_qvectors_sample, needs_dense=False),
)

STAGE_NAMES = tuple(s.name for s in STAGES)
_BY_NAME = {s.name: s for s in STAGES}


def get_stage(name: str) -> Stage:
    """The stage called ``name`` (KeyError listing the known names)."""
    try:
        return _BY_NAME[name]
    except KeyError:
        raise KeyError(f"unknown stage {name!r}; known stages: {', '.join(STAGE_NAMES)}") from None


def select(phases=None, names=None) -> list[Stage]:
    """Stages in registry order, filtered by phase numbers and/or names."""
    if names:
        for n in names:
            get_stage(n)
    return [s for s in STAGES if (not phases or s.phase in phases) and (not names or s.name in names)]
