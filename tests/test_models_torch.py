"""PyTorch OnePhonon (eryx/models_torch.py) against the goldens and the NumPy reference.

Float64: direct quantities <= 1e-12 of max|expected|, decomposition-derived <= 1e-9,
NaN patterns identical, eigenvectors through cluster spectral projectors.
Gradients against central finite differences of the NumPy model (gammas) and of
the torch model itself (q-vectors); arbitrary-q mode against grid mode and
against an independent F K(q)^-1 F^H computed from the NumPy reference's parts.
"""
from __future__ import annotations

import time
from dataclasses import replace

import numpy as np
import pytest
import torch

from eryx import models as npm
from eryx.models import grid_indices_of_bz, project_hessian
from eryx.models_torch import OnePhonon
from parity.compare import compare_eigenspaces
from parity.pytest_plugin import fixture_path_or_skip, golden_or_skip
from parity.tiers import TIERS

try:
    from tests._helpers import np_, assert_rel, cluster_of
except ImportError:  # tests/ on sys.path (pytest rootdir-relative import)
    from _helpers import np_, assert_rel, cluster_of

SMALL = ("5zck_p1_small", "7n2h_small")
DIRECT = 1e-12
DECOMP = 1e-9
CLUSTER_GAP = 1e-6
# See tests/test_models_numpy.py: projectors of clusters 1e-4 apart carry ~5e-11 of
# round-off; the decomposition bound of 1e-9 * max|P| is used as atol.
PROJECTOR_TIER = replace(TIERS["decomposition"], atol=DECOMP)
#: Max |Id_f32 - Id_f64| / max|Id_f64| on 5zck_p1_small: measured 5.7e-7 (x86_64 CPU,
#: torch 2.x); asserted with ~20x margin.
FLOAT32_BOUND = 1e-5


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
    """Every golden stage through a float64 torch model (also used on CUDA)."""
    assert tuple(t.map_shape) == tuple(g["map_shape"])
    for key in ("cell", "A_inv", "unit_cell_axes", "xyz", "adp", "ff_a", "ff_b", "ff_c", "masses",
                "asu_xyz", "cell_hkl", "cell_origin", "hkl_grid", "q_grid", "Amat", "M_allatoms",
                "Mmat", "kvec", "kvec_norm", "K"):
        assert_rel(getattr(t, key), g[key], DIRECT, key)
    assert np.array_equal(np_(t.res_mask), g["res_mask"])
    assert np.array_equal(np_(t.hessian_allatoms), g["hessian_allatoms"])
    assert np.all(g["hessian"].imag == 0)
    assert_rel(t.hessian, g["hessian"].real, DIRECT, "hessian")
    assert np.all(g["Winv"].imag[~np.isnan(g["Winv"])] == 0)
    assert not t.Winv.is_complex() and not t.Linv.is_complex()
    assert_rel(t.Winv, g["Winv"].real, DECOMP, "Winv")
    for key in ("Linv", "Kinv", "covar", "ADP"):
        assert_rel(getattr(t, key), g[key], DECOMP, key)
    assert_rel(t.apply_disorder(), g["Id"], DECOMP, "Id")
    assert_rel(t.apply_disorder(use_data_adp=True), g["Id_data_adp"], DECOMP, "Id_data_adp")
    result = compare_eigenspaces(np_(t.Winv), np_(t.V), g["Winv"].real, g["V"], PROJECTOR_TIER)
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
        assert_rel(out, g[key], DECOMP, key)


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
            assert err <= DECOMP, f"BZ {bz} cluster {list(c)}: projector error {err:.3g}"


def test_against_numpy(case):
    _, _, _, t, n = case
    for key in ("hkl_grid", "q_grid", "Amat", "Mmat", "kvec", "kvec_norm", "hessian"):
        assert_rel(getattr(t, key), np.real(getattr(n, key)), DIRECT, key)
    assert np.array_equal(np_(t.hessian_allatoms), n.hessian_allatoms)
    assert_rel(t.K, np.array([n.K(b) for b in n.bz_points()]), DIRECT, "K")
    assert_rel(t.Kinv, np.array([n.Kinv(b) for b in n.bz_points()]), DECOMP, "Kinv")
    for key in ("Linv", "covar", "ADP"):
        assert_rel(getattr(t, key), getattr(n, key), DECOMP, key)
    assert_rel(t.Winv, n.Winv.real, DECOMP, "Winv")
    assert_rel(t.apply_disorder(), n.apply_disorder(), DECOMP, "Id")
    assert_rel(t.mode_maps().sum(dim=1), n.apply_disorder(), 1e-10, "sum of torch mode maps")
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
    assert_rel(t.hessian, n.hessian.real, DIRECT, "hessian")
    assert np.array_equal(np_(t.hessian_allatoms), n.hessian_allatoms)
    Id = np_(t.apply_disorder())
    assert np.isnan(Id[~n.res_mask]).all()
    assert_rel(Id, n.apply_disorder(), DECOMP, "Id")
    assert_rel(t.apply_disorder(use_data_adp=True), n.apply_disorder(use_data_adp=True), DECOMP, "Id data adp")


def test_standard_grid(golden, fixture_pdb):
    arrays, meta = golden("5zck_p1_standard")
    t = OnePhonon(fixture_pdb(meta["pdb"].removesuffix(".pdb")), *grid_args(meta), **meta["params"])
    assert tuple(t.map_shape) == tuple(arrays["map_shape"])
    assert_rel(t.apply_disorder(), arrays["Id"], DECOMP, "Id (standard grid)")


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
@pytest.mark.parametrize("name", ["5zck_p1", "7n2h", "6o2h_clean"])
def test_contact_hessian_equals_dense_projection(fixture_pdb, name):
    pdb = fixture_pdb(name)
    # Unequal, so that a swap of the two would show; dyadic, so that the degree sums are
    # exact in any summation order and the all-atom Hessians can be compared bit for bit.
    kw = dict(gamma_intra=1.75, gamma_inter=0.625)
    grid = ((-1, 1, 1),) * 3
    start = time.perf_counter()
    n = npm.OnePhonon(pdb, *grid, **kw)
    H = n.hessian_allatoms
    if time.perf_counter() - start > 10:
        pytest.skip(f"NumPy dense Hessian of {name} took {time.perf_counter() - start:.0f} s (> 10 s)")
    dense = project_hessian(H, n.Amat)
    assert np.all(dense.imag == 0)
    t = OnePhonon(pdb, *grid, **kw)
    assert np.array_equal(np_(t.hessian_allatoms), H)
    assert_rel(t.hessian, dense.real, 1e-13, f"contact-based vs dense projected Hessian ({name})")


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


def test_q_vector_gradients_vs_fd(fixture_pdb):
    """d Id / d q through F(q) and K(k(q)): autograd vs central FD of the torch model."""
    pdb = fixture_pdb("5zck_p1")
    grid = ((-2, 2, 2),) * 3
    base = OnePhonon(pdb, *grid)
    rng = np.random.default_rng(7)
    hkl = rng.uniform(-2, 2, size=(6, 3))
    q_off = torch.tensor(hkl, dtype=torch.float64) @ base.A_inv * (2 * np.pi)
    finite = torch.nonzero(torch.isfinite(base.apply_disorder())).reshape(-1)
    q_on = base.q_grid[finite[:: len(finite) // 4][:4]]  # grid points (on the lattice)
    q0 = torch.cat([q_off, q_on]).detach()
    weights = torch.tensor(rng.uniform(0.5, 1.5, size=len(q0)))

    def loss(q):
        return (OnePhonon(pdb, *grid, q_vectors=q).apply_disorder() * weights).sum()

    q = q0.clone().requires_grad_(True)
    Id_grad = OnePhonon(pdb, *grid, q_vectors=q).apply_disorder()
    (grad,) = torch.autograd.grad((Id_grad * weights).sum(), q)
    assert torch.isfinite(grad).all()
    # The map does not depend on whether q carries a gradient.
    assert_rel(Id_grad, OnePhonon(pdb, *grid, q_vectors=q0).apply_disorder(), 1e-12, "map with q.requires_grad")
    h = 1e-6
    for _ in range(3):
        d = torch.tensor(rng.normal(size=q0.shape))
        fd = (loss(q0 + h * d) - loss(q0 - h * d)).item() / (2 * h)
        ad = (grad * d).sum().item()
        assert abs(ad - fd) <= 1e-6 * abs(fd), f"directional derivative: autograd {ad:.10g}, FD {fd:.10g}"


# ------------------------------------------------------------- arbitrary-q mode
@pytest.mark.parametrize("name", ["5zck_p1", "7n2h", "2ol9"])
def test_q_vectors_on_grid_equal_grid_mode(fixture_pdb, name):
    pdb = fixture_pdb(name)
    grid = ((-2, 2, 2),) * 3
    g = OnePhonon(pdb, *grid)
    Id = g.apply_disorder()
    assert torch.isnan(Id).any() and torch.isfinite(Id).any()
    q = OnePhonon(pdb, *grid, q_vectors=g.q_grid)
    assert_rel(q.apply_disorder(), Id, 1e-10, "q-vector mode vs grid mode")
    assert_rel(q.apply_disorder(use_data_adp=True), g.apply_disorder(use_data_adp=True), 1e-10, "data adp")
    perm = torch.as_tensor(np.random.default_rng(3).permutation(len(Id))[:60])
    sub = OnePhonon(pdb, *grid, q_vectors=g.q_grid[perm])
    assert_rel(sub.apply_disorder(), Id[perm], 1e-10, "subset / permutation")
    # A resolution limit masks the same points in both modes.
    g3 = OnePhonon(pdb, *grid, res_limit=3.0)
    q3 = OnePhonon(pdb, *grid, res_limit=3.0, q_vectors=g3.q_grid)
    assert not g3.res_mask.all()
    assert_rel(q3.apply_disorder(), g3.apply_disorder(), 1e-10, "q-vector mode vs grid mode, res_limit 3")


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
    assert_rel(coarse.apply_disorder(use_data_adp=True), expected, 1e-10, "off-lattice k (data ADP)")
    if torch.allclose(coarse.ADP, fine.ADP, rtol=1e-13, atol=0):  # 5zck: ADPs independent of L
        assert_rel(coarse.apply_disorder(), fine.apply_disorder()[off], 1e-10, "off-lattice k")


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
    assert_rel(Id, expected, 1e-10, "random q vs F K(q)^-1 F^H")


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
        assert_rel(a, e, DIRECT if what == "hessian" else DECOMP, f"{what} cuda vs cpu")
