"""PyTorch OnePhonon (eryx/models_torch.py) against the goldens and the NumPy reference.

Float64 comparisons use the project's tolerance tiers (parity/contract/tiers.py: an element
passes iff |a - e| <= atol max|e| + rtol |e|, NaN patterns identical): ``tight`` for
direct arithmetic, ``decomposition`` for Linv/Winv/Kinv/covar/ADP and eigenspaces,
``end_to_end`` for intensity maps. Gradients against central finite differences of
the NumPy model: the gammas through the constructor, the q-vectors through the
NumPy q-vector mode (``apply_disorder_at``), which is also compared with the torch
q-vector mode at random q.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from eryx import models as npm
from eryx.errors import EryxInputError, MemoryBudgetError
from eryx import functional_torch as st
from eryx.models import grid_indices_of_bz, project_hessian
from eryx.models_torch import OnePhonon
from parity.comparison.engine import compare_eigenspaces
from parity.testing.plugin import fixture_path_or_skip, golden_or_skip
from parity.contract.tiers import TIERS

try:
    from tests._helpers import np_, assert_rel, cluster_of
except ImportError:  # tests/ on sys.path (pytest rootdir-relative import)
    from _helpers import np_, assert_rel, cluster_of

SMALL = ("5zck_p1_small", "7n2h_small")
CLUSTER_GAP = 1e-6
#: Cluster projectors against the goldens by hand: measured 4.9e-11 of max|P| (5zck,
#: clusters 1e-4 apart), 2.9e-13 (7n2h); bound 5e-10 (margin ~10x).
PROJECTOR = 5e-10
#: Max |Id_f32 - Id_f64| / max|Id_f64| on 5zck_p1_small: measured 5.7e-7 (x86_64 CPU,
#: torch 2.x); asserted with ~20x margin.
FLOAT32_BOUND = 1e-5
#: Central differences of the NumPy q-vector map with step h = 1e-6 1/A (truncation
#: ~h^2 and round-off ~eps |Id| / h balance there: h = 1e-5 gives 1e-7, h = 1e-7 gives
#: 1.3e-9). Measured max |autograd - FD| / max |autograd| over 12 random off-lattice
#: and 4 grid q: 9.1e-10 (5zck_p1), 3.7e-10 (7n2h); bound 1e-8 (margin ~10x).
Q_FD_STEP = 1e-6
Q_GRAD_BOUND = 1e-8


def assert_tier(actual, expected, tier: str, what: str = "") -> None:
    """Every element within the named tier of parity/contract/tiers.py; NaN patterns identical."""
    t = TIERS[tier]
    a, e = np_(actual), np_(expected)
    assert a.shape == e.shape, f"{what}: shape {a.shape} != {e.shape}"
    nan_a, nan_e = np.isnan(a), np.isnan(e)
    assert np.array_equal(nan_a, nan_e), f"{what}: NaN pattern differs ({(nan_a != nan_e).sum()} mismatched)"
    f = ~nan_e
    if not f.any():
        return
    assert np.isfinite(a[f]).all() and np.isfinite(e[f]).all(), f"{what}: inf"
    scale = np.abs(e[f]).max()
    err = np.abs(a[f] - e[f])
    allowed = t.atol * scale + t.rtol * np.abs(e[f])
    worst = int(np.argmax(err - allowed))
    assert (err <= allowed).all(), (
        f"{what}: {(err > allowed).sum()} of {f.sum()} elements outside tier {t.describe()}; worst "
        f"|a - e| = {err[worst]:.3g} (allowed {allowed[worst]:.3g}), normwise {err.max() / scale:.3g}")


def finite_clusters(winv, gap=CLUSTER_GAP):
    w = np.real(np_(winv))
    seen, out = set(), []
    for r in np.flatnonzero(np.isfinite(w)):
        if int(r) not in seen:
            c = cluster_of(w, int(r), gap)
            seen.update(int(i) for i in c)
            out.append(c)
    return out


def grid_args(meta):
    return meta["hsampling"], meta["ksampling"], meta["lsampling"]


@pytest.fixture(scope="module", params=SMALL)
def case(request):
    arrays, meta = golden_or_skip(request.param)
    pdb = fixture_path_or_skip(meta["pdb"].removesuffix(".pdb"))
    t = OnePhonon(pdb, *grid_args(meta), **meta["params"])
    n = npm.OnePhonon(pdb, *grid_args(meta), **meta["params"])
    return arrays, meta, pdb, t, n


def golden_checks(g, t):
    """Every golden stage through a float64 torch model (also used on CUDA), at the tiers."""
    assert tuple(t.map_shape) == tuple(g["map_shape"])
    for key in ("cell", "A_inv", "unit_cell_axes", "xyz", "adp", "ff_a", "ff_b", "ff_c", "masses",
                "asu_xyz", "cell_hkl", "cell_origin", "hkl_grid", "q_grid", "Amat", "M_allatoms",
                "Mmat", "kvec", "kvec_norm", "K"):
        assert_tier(getattr(t, key), g[key], "tight", key)
    assert np.array_equal(np_(t.res_mask), g["res_mask"])
    assert np.array_equal(np_(t.hessian_allatoms), g["hessian_allatoms"])
    assert np.all(g["hessian"].imag == 0)
    assert_tier(t.hessian, g["hessian"].real, "tight", "hessian")
    assert np.all(g["Winv"].imag[~np.isnan(g["Winv"])] == 0)
    assert not t.Winv.is_complex() and not t.Linv.is_complex()
    assert_tier(t.Winv, g["Winv"].real, "decomposition", "Winv")
    for key in ("Linv", "Kinv", "covar", "ADP"):
        assert_tier(getattr(t, key), g[key], "decomposition", key)
    assert_tier(t.apply_disorder(), g["Id"], "end_to_end", "Id")
    assert_tier(t.apply_disorder(use_data_adp=True), g["Id_data_adp"], "end_to_end", "Id_data_adp")
    result = compare_eigenspaces(np_(t.Winv), np_(t.V), g["Winv"].real, g["V"], TIERS["decomposition"])
    assert result.passed, result.message
    mode_maps = np_(t.mode_maps())
    for rank, key, size_key in ((0, "Id_cluster0", "Id_cluster_size0"),
                                (int(g["rank_last"]), "Id_cluster_last", "Id_cluster_size_last")):
        out = np.full(mode_maps.shape[0], np.nan)
        sizes = []
        for bz in np.ndindex(*t.L):
            c = cluster_of(t.Winv[bz], rank)
            sizes.append(len(c))
            idx = grid_indices_of_bz(bz, t.L, t.map_shape)
            out[idx] = mode_maps[idx][:, c].sum(axis=1)
        assert np.array_equal(sizes, g[size_key]), f"{key}: sizes {sizes} != {list(g[size_key])}"
        assert_tier(out, g[key], "end_to_end", key)


def test_tiers_catch_a_5e10_error_in_Id(case):
    """The end-to-end comparison is not a 1e-9 one: a 5e-10 relative error in one point fails."""
    g, _, _, t, _ = case
    Id = np_(t.apply_disorder()).copy()
    assert_tier(Id, g["Id"], "end_to_end", "Id")
    i = int(np.nanargmax(Id))
    Id[i] *= 1 + 5e-10
    with pytest.raises(AssertionError, match="outside tier"):
        assert_tier(Id, g["Id"], "end_to_end", "Id")


# ------------------------------------------------------------------------- goldens
def test_goldens(case):
    g, _, _, t, _ = case
    golden_checks(g, t)


def test_eigenspaces_by_hand(case):
    """Golden clusters (relative gap 1e-6): sum_m V_m V_m^H equal per cluster."""
    g, _, _, t, _ = case
    V = np_(t.V)
    for bz in np.ndindex(*t.L):
        w = g["Winv"][bz].real
        groups = finite_clusters(w)
        nan = np.flatnonzero(np.isnan(w))
        if len(nan):
            groups.append(nan)  # the zero-mode subspace as a whole
        assert sorted(int(i) for c in groups for i in c) == list(range(t.n_dof))
        for c in groups:
            P_e = g["V"][bz][:, c] @ g["V"][bz][:, c].conj().T
            P_a = V[bz][:, c] @ V[bz][:, c].conj().T
            err = np.abs(P_a - P_e).max() / np.abs(P_e).max()
            assert err <= PROJECTOR, f"BZ {bz} cluster {list(c)}: projector error {err:.3g}"


def test_against_numpy(case):
    _, _, _, t, n = case
    for key in ("hkl_grid", "q_grid", "Amat", "Mmat", "kvec", "kvec_norm", "hessian"):
        assert_tier(getattr(t, key), np.real(getattr(n, key)), "tight", key)
    assert np.array_equal(np_(t.hessian_allatoms), n.hessian_allatoms)
    assert_tier(t.K, np.array([n.K(b) for b in n.bz_points()]), "tight", "K")
    assert_tier(t.Kinv, np.array([n.Kinv(b) for b in n.bz_points()]), "decomposition", "Kinv")
    for key in ("Linv", "covar", "ADP"):
        assert_tier(getattr(t, key), getattr(n, key), "decomposition", key)
    assert_tier(t.Winv, n.Winv.real, "decomposition", "Winv")
    assert_tier(t.apply_disorder(), n.apply_disorder(), "end_to_end", "Id")
    assert_tier(t.mode_maps().sum(dim=1), n.apply_disorder(), "end_to_end", "sum of torch mode maps")
    r = t.n_dof - 1
    assert_rel(t.apply_disorder(rank=r), t.mode_maps()[:, r], 1e-14, "rank map vs mode_maps")


@pytest.mark.parametrize("name", ["5zck_p1", "7n2h", "2ol9"])
def test_non_default_parameters_against_numpy(fixture_pdb, name):
    """Parameters the goldens do not cover: unequal gammas, cutoff, resolution limit."""
    pdb = fixture_pdb(name)
    kw = dict(gamma_intra=2.0, gamma_inter=0.5, gnm_cutoff=5.0, res_limit=3.0)
    grid = ((-2, 2, 2), (-2, 2, 2), (-2, 2, 2))
    t, n = OnePhonon(pdb, *grid, **kw), npm.OnePhonon(pdb, *grid, **kw)
    assert 0 < np.count_nonzero(~n.res_mask) < len(n.res_mask)
    assert np.array_equal(np_(t.res_mask), n.res_mask)
    assert_tier(t.hessian, n.hessian.real, "tight", "hessian")
    assert np.array_equal(np_(t.hessian_allatoms), n.hessian_allatoms)
    Id = np_(t.apply_disorder())
    assert np.isnan(Id[~n.res_mask]).all()
    assert_tier(Id, n.apply_disorder(), "end_to_end", "Id")
    assert_tier(t.apply_disorder(use_data_adp=True), n.apply_disorder(use_data_adp=True), "end_to_end",
                "Id data adp")


def test_standard_grid(golden, fixture_pdb):
    arrays, meta = golden("5zck_p1_standard")
    t = OnePhonon(fixture_pdb(meta["pdb"].removesuffix(".pdb")), *grid_args(meta), **meta["params"])
    assert tuple(t.map_shape) == tuple(arrays["map_shape"])
    assert_tier(t.apply_disorder(), arrays["Id"], "end_to_end", "Id (standard grid)")


# ------------------------------------------------------------------- dtype audit
def floating_tensors(model):
    out = {k: v for k, v in vars(model).items() if isinstance(v, torch.Tensor)}
    out["M_allatoms"] = model.M_allatoms
    out["hessian_allatoms"] = model.hessian_allatoms
    return {k: v for k, v in out.items() if v.is_floating_point() or v.is_complex()}


@pytest.mark.parametrize("dtype, real, cplx", [(torch.float64, torch.float64, torch.complex128),
                                               (torch.float32, torch.float32, torch.complex64)])
def test_dtype_audit(fixture_pdb, dtype, real, cplx):
    t = OnePhonon(fixture_pdb("5zck_p1"), (-2, 2, 2), (-2, 2, 2), (-2, 2, 2), dtype=dtype)
    tensors = floating_tensors(t)
    assert {"Linv", "Winv", "V", "K", "Kinv", "covar", "ADP", "hessian", "q_grid"} <= set(tensors)
    bad = {k: v.dtype for k, v in tensors.items() if v.dtype not in (real, cplx)}
    assert not bad, f"wrong precision: {bad}"
    for key in ("Linv", "Winv", "covar", "ADP", "hessian", "Mmat", "Amat"):
        assert tensors[key].dtype == real, f"{key} must be real {real}, is {tensors[key].dtype}"
    for key in ("K", "Kinv", "V"):
        assert tensors[key].dtype == cplx
    Id = t.apply_disorder()
    assert Id.dtype == real and t.mode_maps().dtype == real


def test_float32_error(fixture_pdb):
    pdb = fixture_pdb("5zck_p1")
    grid = ((-2, 2, 2),) * 3
    Id64 = np_(OnePhonon(pdb, *grid).apply_disorder())
    Id32 = np_(OnePhonon(pdb, *grid, dtype=torch.float32).apply_disorder()).astype(np.float64)
    assert np.array_equal(np.isnan(Id32), np.isnan(Id64))
    finite = np.isfinite(Id64)
    err = np.abs(Id32[finite] - Id64[finite]).max() / np.abs(Id64[finite]).max()
    print(f"float32 vs float64 Id on 5zck_p1_small: max rel err {err:.3g} (bound {FLOAT32_BOUND:g})")
    assert err < FLOAT32_BOUND


# --------------------------------------------------- contact-based projected Hessian
@pytest.mark.parametrize("name", ["5zck_p1", "7n2h", pytest.param("6o2h_clean", marks=pytest.mark.slow)])
def test_contact_hessian_equals_dense_projection(fixture_pdb, name):
    """(6o2h_clean, 1 x 1001 atoms: the dense NumPy Hessian takes 5-20 s, hence slow.)"""
    pdb = fixture_pdb(name)
    # Unequal, so that a swap of the two would show; dyadic, so that the degree sums are
    # exact in any summation order and the all-atom Hessians can be compared bit for bit.
    kw = dict(gamma_intra=1.75, gamma_inter=0.625)
    grid = ((-1, 1, 1),) * 3
    n = npm.OnePhonon(pdb, *grid, **kw)
    H = n.hessian_allatoms
    dense = project_hessian(H, n.Amat)
    assert np.all(dense.imag == 0)
    t = OnePhonon(pdb, *grid, **kw)
    assert np.array_equal(np_(t.hessian_allatoms), H)
    assert_tier(t.hessian, dense.real, "tight", f"contact-based vs dense projected Hessian ({name})")


# -------------------------------------------------------------------- gradients
def np_loss(pdb, meta, **gammas):
    params = dict(meta["params"])
    params.update(gammas)
    return float(np.nansum(npm.OnePhonon(pdb, *grid_args(meta), **params).apply_disorder()))


@pytest.mark.parametrize("golden_name", SMALL)
def test_gamma_gradients_vs_numpy_fd(golden, fixture_pdb, golden_name):
    _, meta = golden(golden_name)
    pdb = fixture_pdb(meta["pdb"].removesuffix(".pdb"))
    gi = torch.tensor(1.0, dtype=torch.float64, requires_grad=True)
    ge = torch.tensor(1.0, dtype=torch.float64, requires_grad=True)
    params = {k: v for k, v in meta["params"].items() if not k.startswith("gamma")}
    t = OnePhonon(pdb, *grid_args(meta), gamma_intra=gi, gamma_inter=ge, **params)
    loss = torch.nansum(t.apply_disorder())
    loss.backward()
    h = 1e-4  # central FD truncation ~h^2 * L''' / L': measured ~1e-8 relative here
    for name, grad in (("gamma_intra", gi.grad), ("gamma_inter", ge.grad)):
        fd = (np_loss(pdb, meta, **{name: 1 + h}) - np_loss(pdb, meta, **{name: 1 - h})) / (2 * h)
        rel = abs(grad.item() - fd) / abs(fd)
        assert rel <= 1e-6, f"d loss / d {name}: autograd {grad.item():.10g}, FD {fd:.10g}, rel {rel:.3g}"
    # Scaling both gammas by s scales K by s and leaves the scaled ADPs unchanged, so
    # loss(s) = loss(1) / s: gi dL/dgi + ge dL/dge = -L (Euler, degree -1).
    euler = gi.grad.item() + ge.grad.item()
    assert abs(euler + loss.item()) <= 1e-9 * abs(loss.item())


def test_gradcheck_synthetic(fixture_pdb):
    pdb = fixture_pdb("synthetic")
    grid = ((-1, 1, 2),) * 3
    Id = OnePhonon(pdb, *grid).apply_disorder()
    finite = torch.nonzero(torch.isfinite(Id)).reshape(-1)
    assert len(finite) > 6
    sel = finite[:: len(finite) // 6][:6]

    def f(gamma_intra, gamma_inter):
        return OnePhonon(pdb, *grid, gamma_intra=gamma_intra, gamma_inter=gamma_inter).apply_disorder()[sel]

    gi = torch.tensor(1.0, dtype=torch.float64, requires_grad=True)
    ge = torch.tensor(0.7, dtype=torch.float64, requires_grad=True)
    assert torch.isfinite(f(gi, ge)).all()
    assert torch.autograd.gradcheck(f, (gi, ge))


def test_no_nan_gradients_at_degenerate_modes(fixture_pdb):
    """5zck (P 21 21 21), oversampling 2: every zone-boundary mode is 2- or 4-fold degenerate."""
    pdb = fixture_pdb("5zck_p1")
    grid = ((-2, 2, 2),) * 3
    gi = torch.tensor(1.0, dtype=torch.float64, requires_grad=True)
    ge = torch.tensor(1.0, dtype=torch.float64, requires_grad=True)
    t = OnePhonon(pdb, *grid, gamma_intra=gi, gamma_inter=ge)
    for bz in np.ndindex(*t.L):
        if bz == (0, 0, 0):
            continue
        sizes = [len(c) for c in finite_clusters(t.Winv[bz].detach())]
        assert sum(sizes) == t.n_dof and all(s in (2, 4) for s in sizes), f"BZ {bz}: sizes {sizes}"
    loss = torch.nansum(t.apply_disorder())
    gi_grad, ge_grad = torch.autograd.grad(loss, (gi, ge))
    assert torch.isfinite(gi_grad) and torch.isfinite(ge_grad)
    assert gi_grad != 0 and ge_grad != 0


@pytest.mark.parametrize("name", ["5zck_p1", "7n2h"])
def test_q_vector_gradients_vs_numpy_fd(fixture_pdb, name):
    """d Id / d q of the torch q-vector map (autograd, through F(q) and K(k(q))) against
    central finite differences of the NumPy q-vector map, component by component."""
    pdb = fixture_pdb(name)
    grid = ((-2, 2, 2),) * 3
    n = npm.OnePhonon(pdb, *grid)
    rng = np.random.default_rng(7)
    q_off = 2 * np.pi * rng.uniform(-2, 2, size=(12, 3)) @ n.A_inv
    Id_grid = n.apply_disorder()
    finite = np.flatnonzero(np.isfinite(Id_grid))
    q_on = n.q_grid[finite[:: len(finite) // 4][:4]]  # grid points (on the lattice)
    q0 = np.concatenate([q_off, q_on])

    q = torch.tensor(q0, requires_grad=True)
    Id = OnePhonon(pdb, *grid, q_vectors=q).apply_disorder()
    (grad,) = torch.autograd.grad(Id.sum(), q)  # Id_p depends on q_p only
    grad = np_(grad)
    assert np.isfinite(grad).all()
    # The map does not depend on whether q carries a gradient, and equals the NumPy one.
    assert_rel(Id, OnePhonon(pdb, *grid, q_vectors=torch.tensor(q0)).apply_disorder(), 1e-12,
               "map with q.requires_grad")
    assert_tier(Id, n.apply_disorder_at(q0), "end_to_end", "torch vs NumPy q-vector map")

    h = Q_FD_STEP
    steps = [q0 + sign * h * np.eye(3)[x] for x in range(3) for sign in (1, -1)]
    values = n.apply_disorder_at(np.concatenate(steps)).reshape(3, 2, len(q0))
    fd = ((values[:, 0] - values[:, 1]) / (2 * h)).T  # (n_q, 3)
    err = np.abs(grad - fd).max() / np.abs(grad).max()
    print(f"{name}: d Id / d q, autograd vs NumPy central differences (h = {h:g} 1/A): "
          f"max |diff| / max |grad| = {err:.3g}")
    assert err <= Q_GRAD_BOUND


# ------------------------------------------------------------- arbitrary-q mode
@pytest.mark.parametrize("name", ["5zck_p1", "7n2h", "2ol9"])
def test_q_vectors_on_grid_equal_grid_mode(fixture_pdb, name):
    pdb = fixture_pdb(name)
    grid = ((-2, 2, 2),) * 3
    g = OnePhonon(pdb, *grid)
    Id = g.apply_disorder()
    assert torch.isnan(Id).any() and torch.isfinite(Id).any()
    q = OnePhonon(pdb, *grid, q_vectors=g.q_grid)
    assert_tier(q.apply_disorder(), Id, "end_to_end", "q-vector mode vs grid mode")
    assert_tier(q.apply_disorder(use_data_adp=True), g.apply_disorder(use_data_adp=True), "end_to_end", "data adp")
    perm = torch.as_tensor(np.random.default_rng(3).permutation(len(Id))[:60])
    sub = OnePhonon(pdb, *grid, q_vectors=g.q_grid[perm])
    assert_tier(sub.apply_disorder(), Id[perm], "end_to_end", "subset / permutation")
    # A resolution limit masks the same points in both modes.
    g3 = OnePhonon(pdb, *grid, res_limit=3.0)
    q3 = OnePhonon(pdb, *grid, res_limit=3.0, q_vectors=g3.q_grid)
    assert not g3.res_mask.all()
    assert_tier(q3.apply_disorder(), g3.apply_disorder(), "end_to_end", "q-vector mode vs grid mode, res_limit 3")


def test_float32_grid_q_vectors_take_the_grids_k_points(fixture_pdb):
    """In float32 the grid's own q-vectors round their Miller indices by more than 1e-9:
    they are still on the lattice (to 64 eps), so they take the grid's BZ points as in
    float64, not one k-point each, and the map agrees with float32 grid mode."""
    pdb = fixture_pdb("5zck_p1")
    grid = ((-2, 2, 2),) * 3
    g64 = OnePhonon(pdb, *grid)
    g32 = OnePhonon(pdb, *grid, dtype=torch.float32)
    q64 = OnePhonon(pdb, *grid, q_vectors=g64.q_grid)
    q32 = OnePhonon(pdb, *grid, dtype=torch.float32, q_vectors=g32.q_grid)
    assert len(q64.extra_kvec) == 0 and len(q32.extra_kvec) == 0
    assert torch.equal(q32.q_bz_index, q64.q_bz_index)
    Id32, grid32 = np_(q32.apply_disorder()).astype(np.float64), np_(g32.apply_disorder()).astype(np.float64)
    assert np.array_equal(np.isnan(Id32), np.isnan(grid32))
    finite = np.isfinite(grid32)
    err = np.abs(Id32[finite] - grid32[finite]).max() / np.abs(grid32[finite]).max()
    assert err < FLOAT32_BOUND, f"float32 q-vector mode vs float32 grid mode: {err:.3g}"
    # a q displaced by 1e-3 of a lattice step stays off the lattice in float32 too
    hkl = g32.hkl_grid[:5].clone()
    hkl[:, 0] += 1e-3 / g32.L[0]
    nudged = OnePhonon(pdb, *grid, dtype=torch.float32, q_vectors=st.q_from_hkl(hkl, g32.A_inv))
    assert len(nudged.extra_kvec) > 0 and bool((nudged.q_bz_index >= int(np.prod(g32.L))).all())


@pytest.mark.parametrize("name", ["5zck_p1", "7n2h", "2ol9"])
def test_off_lattice_q_equal_finer_grid(fixture_pdb, name):
    """q on the L=4 lattice but off the L=2 one: the L=2 model's off-lattice k path equals
    the L=4 grid model. With the file's B factors the map does not depend on the
    BZ sampling used for the ADPs, so the two models must agree."""
    pdb = fixture_pdb(name)
    fine = OnePhonon(pdb, (-1, 1, 4), (-1, 1, 4), (-1, 1, 4))
    hkl = np_(fine.hkl_grid)
    off = np.flatnonzero(np.any(np.abs(2 * hkl - np.round(2 * hkl)) > 1e-9, axis=1))
    assert np.any(np.all(np.isclose(hkl[off], [0.25, 0, 0]), axis=1))
    coarse = OnePhonon(pdb, (-1, 1, 2), (-1, 1, 2), (-1, 1, 2), q_vectors=fine.q_grid[off])
    assert len(coarse.extra_kvec) > 0
    expected = fine.apply_disorder(use_data_adp=True)[off]
    assert torch.isfinite(expected).all()
    assert_tier(coarse.apply_disorder(use_data_adp=True), expected, "end_to_end", "off-lattice k (data ADP)")
    if torch.allclose(coarse.ADP, fine.ADP, rtol=1e-13, atol=0):  # 5zck: ADPs independent of L
        assert_tier(coarse.apply_disorder(), fine.apply_disorder()[off], "end_to_end", "off-lattice k")


@pytest.mark.parametrize("name", ["5zck_p1", "7n2h", "2ol9"])
def test_random_q_vectors_independent(fixture_pdb, name):
    """Random q: finite, >= 0, and equal to F(q) K(q)^-1 F(q)^H from the NumPy reference's
    parts (K is periodic in k, so K(q) = K(k(q)) needs no BZ convention)."""
    pdb = fixture_pdb(name)
    grid = ((-2, 2, 2),) * 3
    n = npm.OnePhonon(pdb, *grid)
    rng = np.random.default_rng(11)
    hkl = rng.integers(-3, 4, size=(40, 3)) + rng.uniform(0.1, 0.9, size=(40, 3))  # away from Bragg
    q = 2 * np.pi * hkl @ n.A_inv
    Id = np_(OnePhonon(pdb, *grid, q_vectors=torch.tensor(q)).apply_disorder())
    assert np.isfinite(Id).all() and (Id >= 0).all()
    F = np.concatenate([npm.structure_factors(q, n.xyz[i], n.ff_a[i], n.ff_b[i], n.ff_c[i],
                                              U=n.ADP, project_on=n.Amat[i])
                        for i in range(n.n_asu)], axis=1)
    expected = np.array([
        np.real(F[p].conj() @ np.linalg.solve(npm.build_K(n.hessian, q[p], n.cell_origin).T, F[p]))
        for p in range(len(q))
    ])
    assert_tier(Id, expected, "end_to_end", "random q vs F K(q)^-1 F^H")


@pytest.mark.parametrize("name", ["5zck_p1", "7n2h", "2ol9"])
def test_q_vector_mode_equals_numpy_q_vector_mode(fixture_pdb, name):
    """The torch q-vector mode against the NumPy one (eryx.models.OnePhonon.apply_disorder_at)
    at random q off the lattice, grid q, on-lattice q beyond the grid, Bragg points, with a
    resolution limit: the same NaN pattern, values at the end-to-end tier; single modes too."""
    pdb = fixture_pdb(name)
    grid = ((-2, 2, 2),) * 3
    n = npm.OnePhonon(pdb, *grid, res_limit=2.5)
    rng = np.random.default_rng(5)
    hkl = np.concatenate([
        rng.uniform(-4, 4, size=(150, 3)),                     # off the lattice
        rng.integers(-6, 7, size=(20, 3)) / 2.0,               # on the L = 2 lattice, some beyond the grid
        rng.integers(-2, 3, size=(5, 3)).astype(float),        # Bragg points
    ])
    q = 2 * np.pi * hkl @ n.A_inv
    t = OnePhonon(pdb, *grid, res_limit=2.5, q_vectors=torch.tensor(q))
    expected = n.apply_disorder_at(q)
    assert np.isnan(expected).any() and np.isfinite(expected).sum() > 50
    assert_tier(t.apply_disorder(), expected, "end_to_end", "q-vector map, torch vs NumPy")
    assert_tier(t.apply_disorder(use_data_adp=True), n.apply_disorder_at(q, use_data_adp=True), "end_to_end",
                "data ADP")
    # A single mode: compare the sum over its eigenvalue cluster at each point's k.
    modes_t, modes_n = np_(t.mode_maps()), np.stack([n.apply_disorder_at(q, rank=r) for r in range(n.n_dof)], 1)
    assert_tier(modes_t.sum(axis=1), modes_n.sum(axis=1), "end_to_end", "sum of mode maps")


# ------------------------------------------------------ construction in named steps
TORCH_STEPS = ["structure", "memory", "tensors", "grid", "stiffness", "contacts", "matrices", "hessian", "phonons"]


def test_build_steps_declared(fixture_pdb):
    assert [name for name, _, _ in OnePhonon.BUILD_STEPS] == TORCH_STEPS
    for name, phase, method in OnePhonon.BUILD_STEPS:
        assert phase in (1, 2, 3, 4) and callable(getattr(OnePhonon, method)), name
    m = OnePhonon(fixture_pdb("synthetic"), (-1, 1, 2), (-1, 1, 1), (-1, 1, 1))
    assert m.completed_steps == tuple(TORCH_STEPS)


@pytest.mark.parametrize("function, step, phase, built, not_built", [
    ("generate_grid", "grid", 1, ("crystal", "memory_estimate", "cell", "xyz"), ("kvec", "hkl_grid", "contacts")),
    ("find_contacts", "contacts", 3, ("hkl_grid", "q_grid", "bz_index"), ("contacts", "Amat")),
    ("build_Linv", "matrices", 2, ("contacts", "hkl_grid"), ("Amat", "Mmat", "Linv", "hessian")),
    ("hessian_unit_blocks", "hessian", 3, ("Amat", "Linv"), ("H_intra", "hessian")),
    ("phonons", "phonons", 3, ("hessian", "Linv"), ("K", "D", "Winv", "ADP")),
])
def test_build_step_failure_names_step_and_phase(fixture_pdb, monkeypatch, function, step, phase, built, not_built):
    """A stage function that raises inside construction: the same exception, tagged with
    the step, its phase and the model as far as it was built."""
    def broken(*args, **kwargs):
        raise RuntimeError(f"injected failure in {function}")

    monkeypatch.setattr(st, function, broken)
    with pytest.raises(RuntimeError, match=f"injected failure in {function}") as info:
        OnePhonon(fixture_pdb("synthetic"), (-1, 1, 2), (-1, 1, 1), (-1, 1, 1))
    exc = info.value
    assert (exc.build_step, exc.build_phase) == (step, phase)
    m = exc.partial_model
    assert isinstance(m, OnePhonon)
    assert m.completed_steps == tuple(TORCH_STEPS[:TORCH_STEPS.index(step)])
    for name in built:
        assert hasattr(m, name), f"{name} missing after the steps before {step}"
    for name in not_built:
        assert not hasattr(m, name), f"{name} left over from the failed step {step}"


def test_build_step_of_input_errors(fixture_pdb, tmp_path):
    """Errors of the input carry the step too, where they arise inside construction;
    argument checks before the first step carry none."""
    bad = tmp_path / "nocell.pdb"
    bad.write_text("ATOM      1  N   ALA A   1       1.000   2.000   3.000  1.00 10.00           N\nEND\n")
    with pytest.raises(EryxInputError) as info:
        OnePhonon(bad, (-1, 1, 1), (-1, 1, 1), (-1, 1, 1))
    assert (info.value.build_step, info.value.build_phase) == ("structure", 2)
    with pytest.raises(MemoryBudgetError) as info:
        OnePhonon(fixture_pdb("synthetic"), (-1, 1, 1), (-1, 1, 1), (-1, 1, 1), memory_limit=1024)
    assert (info.value.build_step, info.value.build_phase) == ("memory", 2)
    assert info.value.partial_model.completed_steps == ("structure",)
    with pytest.raises(EryxInputError) as info:
        OnePhonon(fixture_pdb("synthetic"), (-1, 1, 0), (-1, 1, 1), (-1, 1, 1))
    assert not hasattr(info.value, "build_step")


# -------------------------------------------------------------------------- GPU
@pytest.mark.gpu
@pytest.mark.parametrize("golden_name", SMALL)
def test_goldens_cuda(golden, fixture_pdb, golden_name):
    g, meta = golden(golden_name)
    t = OnePhonon(fixture_pdb(meta["pdb"].removesuffix(".pdb")), *grid_args(meta), device="cuda",
                  **meta["params"])
    assert t.Linv.device.type == "cuda" and t.apply_disorder().device.type == "cuda"
    golden_checks(g, t)


@pytest.mark.gpu
def test_cuda_matches_cpu_synthetic(fixture_pdb):
    """Needs no external data: the built-in synthetic fixture on CUDA vs CPU, map and gradients."""
    pdb = fixture_pdb("synthetic")
    grid = ((-2, 2, 2),) * 3
    results = {}
    for device in ("cpu", "cuda"):
        gi = torch.tensor(1.0, dtype=torch.float64, requires_grad=True)
        ge = torch.tensor(0.8, dtype=torch.float64, requires_grad=True)
        t = OnePhonon(pdb, *grid, gamma_intra=gi, gamma_inter=ge, device=device)
        Id = t.apply_disorder()
        assert Id.device.type == device
        grads = torch.autograd.grad(torch.nansum(Id), (gi, ge))
        q = OnePhonon(pdb, *grid, device=device, q_vectors=t.q_grid.detach()[::7] * 1.01).apply_disorder()
        results[device] = (Id.detach(), torch.stack(grads), q, t.hessian.detach(), t.Winv)
    for what, a, e in zip(("Id", "gradients", "q-vector map", "hessian", "Winv"),
                          results["cuda"], results["cpu"]):
        assert_tier(a, e, "tight" if what == "hessian" else "decomposition" if what == "Winv" else "end_to_end",
                    f"{what} cuda vs cpu")


def test_constructor_defaults_match_the_reference():
    """The shared constructor parameters default to the NumPy reference's values (parity
    always passes them explicitly, so no parity run compares the defaults; mutant
    db34bafbdf in docs/mutation.md)."""
    import inspect

    ref = inspect.signature(npm.OnePhonon.__init__).parameters
    cand = inspect.signature(OnePhonon.__init__).parameters
    shared = [name for name in ref if name in cand and name != "self"]
    assert {"gamma_intra", "gamma_inter", "gnm_cutoff", "res_limit", "expand_p1"} <= set(shared)
    assert {n: cand[n].default for n in shared} == {n: ref[n].default for n in shared}
