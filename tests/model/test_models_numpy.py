"""NumPy reference OnePhonon (eryx/models.py) against the goldens.

Tolerances are relative to max|expected| over the finite elements; NaN patterns
must be identical. Each bound is the error measured against the goldens (x86-64,
NumPy 2.4 with OpenBLAS) times a stated margin, so that an error far below the
harness's tiers still fails here (a 5e-10 error in Id fails the 2e-14 bound).
Eigenvectors are compared through the spectral projector of each eigenvalue
cluster (ALGORITHM.md section 7), once with the harness's ``compare_eigenspaces``
and once by hand here. The arbitrary-q mode (``apply_disorder_at``) is checked
against the grid map, a larger grid, a finer grid and hand-made cases.
"""
from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial.distance import cdist

from eryx.errors import EryxInputError
from eryx.models import OnePhonon, grid_indices_of_bz, resolution
from parity.comparison.engine import compare_eigenspaces
from parity.testing.plugin import fixture_path_or_skip, golden_or_skip
from parity.contract.tiers import TIERS

try:
    from tests._helpers import assert_rel, cluster_of
except ImportError:  # tests/ on sys.path (pytest rootdir-relative import)
    from _helpers import assert_rel, cluster_of

SMALL = ("5zck_p1_small", "7n2h_small")
#: Structure, grid, A, M_allatoms, K, the Hessians, kvec: measured 0 except Mmat
#: (1.4e-17 and 5.7e-17 of max|Mmat|); bound 1e-15 (margin >= 17x).
DIRECT = 1e-15
#: Linv 7.5e-17, Winv 2.1e-15 (7n2h), Kinv, covar and ADP 0; bound 2e-14 (margin ~10x).
DECOMP = 2e-14
#: Id 1.9e-15 (7n2h_small), 2.1e-15 (5zck_p1 standard grid), Id_data_adp 1.7e-15;
#: bound 2e-14 (margin ~10x).
INTENSITY = 2e-14
#: Rank maps summed over their eigenvalue cluster: 1.5e-14 (5zck Id_cluster_last);
#: bound 2e-13 (margin ~13x).
CLUSTER_MAP = 2e-13
#: Cluster projectors: 4.6e-11 of max|P| (5zck BZ (1, 0, 1): clusters 1e-4 apart carry
#: round-off amplified by 1 / gap, two LAPACK runs of one SVD differ by as much);
#: 2.1e-13 (7n2h). Bound 5e-10 (margin ~10x).
PROJECTOR = 5e-10
#: Two NumPy formulas of one map (sum over modes vs F K^-1 F^H: 2.1e-15; sum of the
#: mode maps vs the full map: 3.5e-16); bound 2e-14.
IDENTITY = 2e-14
CLUSTER_GAP = 1e-6


def all_clusters(winv, gap=CLUSTER_GAP):
    """Every cluster of one BZ point: each NaN alone, then finite groups."""
    w = np.real(winv)
    seen, out = set(), []
    for r in range(len(w)):
        if r not in seen:
            c = cluster_of(w, r, gap)
            seen.update(int(i) for i in c)
            out.append(c)
    return out


def cluster_maps(model, mode_maps, winv, rank):
    """Rank maps summed over the cluster holding `rank` at each BZ point; also the sizes."""
    out = np.full(mode_maps.shape[0], np.nan)
    sizes = []
    for bz in model.bz_points():
        c = cluster_of(winv[bz], rank)
        sizes.append(len(c))
        idx = grid_indices_of_bz(bz, model.L, model.map_shape)
        out[idx] = mode_maps[idx][:, c].sum(axis=1)
    return out, np.array(sizes)


def build(meta, pdb, **overrides):
    params = dict(meta["params"])
    params.update(overrides)
    return OnePhonon(pdb, meta["hsampling"], meta["ksampling"], meta["lsampling"], **params)


@pytest.fixture(scope="module", params=SMALL)
def case(request):
    arrays, meta = golden_or_skip(request.param)
    pdb = fixture_path_or_skip(meta["pdb"].removesuffix(".pdb"))
    return request.param, arrays, meta, build(meta, pdb)


# --------------------------------------------------------------------- direct stages
def test_grid(case):
    _, g, _, m = case
    assert tuple(m.map_shape) == tuple(g["map_shape"])
    assert_rel(m.hkl_grid, g["hkl_grid"], DIRECT, "hkl_grid")
    assert_rel(m.q_grid, g["q_grid"], DIRECT, "q_grid")
    assert np.array_equal(m.res_mask, g["res_mask"])


def test_grid_independent(case):
    """hkl_grid is the C-order product of the linspaces; q = 2 pi A_inv^T hkl."""
    _, _, meta, m = case
    axes = [np.linspace(lo, hi, int(L * (hi - lo) + 1)) for lo, hi, L in
            (meta["hsampling"], meta["ksampling"], meta["lsampling"])]
    expected = np.array([(h, k, l) for h in axes[0] for k in axes[1] for l in axes[2]])
    assert np.array_equal(m.hkl_grid, expected)
    assert_rel(m.q_grid, 2 * np.pi * np.einsum("ji,nj->ni", m.A_inv, expected), 1e-14, "q_grid")


def test_projection_and_mass(case):
    _, g, _, m = case
    for key in ("Amat", "M_allatoms", "Mmat"):
        assert_rel(getattr(m, key), g[key], DIRECT, key)


def test_brillouin_zone(case):
    _, g, _, m = case
    assert_rel(m.kvec, g["kvec"], DIRECT, "kvec")
    assert_rel(m.kvec_norm, g["kvec_norm"], DIRECT, "kvec_norm")


def test_hessians_exact(case):
    _, g, _, m = case
    H = m.hessian_allatoms
    assert H.dtype == g["hessian_allatoms"].dtype and np.array_equal(H, g["hessian_allatoms"])
    assert np.array_equal(m.hessian, g["hessian"])


def test_K_per_bz_point(case):
    _, g, _, m = case
    bz = list(np.ndindex(*m.L))  # C order
    assert m.bz_points() == bz
    assert_rel(np.array([m.K(b) for b in bz]), g["K"], DIRECT, "K")


# -------------------------------------------------------------- decomposition stages
def test_decomposition_quantities(case):
    _, g, _, m = case
    bz = list(np.ndindex(*m.L))
    assert_rel(m.Linv, g["Linv"], DECOMP, "Linv")
    assert not np.iscomplexobj(m.Linv)
    assert_rel(m.Winv, g["Winv"], DECOMP, "Winv")
    assert np.array_equal(np.isnan(m.Winv), np.isnan(g["Winv"]))
    assert_rel(np.array([m.Kinv(b) for b in bz]), g["Kinv"], DECOMP, "Kinv")
    assert_rel(m.covar, g["covar"], DECOMP, "covar")
    assert_rel(m.ADP, g["ADP"], DECOMP, "ADP")


def test_zero_modes_only_at_bragg(case):
    """Every Bragg BZ point (k = 0) has NaN modes, first; no other BZ point has any."""
    _, _, _, m = case
    for bz in m.bz_points():
        nan = np.isnan(m.Winv[bz])
        if np.linalg.norm(m.kvec[bz]) == 0:
            assert nan.any() and not nan[nan.sum():].any()
        else:
            assert not nan.any()


def test_intensity(case):
    _, g, _, m = case
    assert_rel(m.apply_disorder(), g["Id"], INTENSITY, "Id")
    assert_rel(m.apply_disorder(use_data_adp=True), g["Id_data_adp"], INTENSITY, "Id_data_adp")


def test_full_map_equals_hermitian_solve(case):
    """sum_m |(F V)_m|^2 Winv_m == F K^-1 F^H where no mode is NaN (ALGORITHM.md sec. 10)."""
    _, _, _, m = case
    Id = m.apply_disorder()
    checked = 0
    for bz in m.bz_points():
        idx = grid_indices_of_bz(bz, m.L, m.map_shape)
        if np.isnan(m.Winv[bz]).any():
            assert np.isnan(Id[idx]).all()
            continue
        F = m.structure_factors_at(idx)
        expected = np.real(np.einsum("ni,ni->n", F.conj(), np.linalg.solve(m.K(bz).T, F.T).T))
        assert_rel(Id[idx], expected, IDENTITY, f"Id at BZ {bz}")
        checked += 1
    assert checked == np.prod(m.L) - 1


def test_eigenspaces_harness(case):
    _, g, _, m = case
    result = compare_eigenspaces(m.Winv, m.V, g["Winv"], g["V"], TIERS["decomposition"])
    assert result.passed, result.message


def test_eigenspaces_by_hand(case):
    """Cluster the golden Winv (relative gap 1e-6) and compare sum_m V_m V_m^H directly."""
    _, g, _, m = case
    worst = 0.0
    for bz in m.bz_points():
        assert np.all(g["Winv"][bz].imag[~np.isnan(g["Winv"][bz])] == 0)
        clusters = all_clusters(g["Winv"][bz])
        assert [int(i) for c in clusters for i in c] == sorted(int(i) for c in clusters for i in c)
        # The zero modes are one subspace: compare their projector as a whole.
        nan = np.flatnonzero(np.isnan(g["Winv"][bz].real))
        groups = ([nan] if len(nan) else []) + [c for c in clusters if not np.isnan(g["Winv"][bz][c[0]])]
        for c in groups:
            P_e = g["V"][bz][:, c] @ g["V"][bz][:, c].conj().T
            P_a = m.V[bz][:, c] @ m.V[bz][:, c].conj().T
            err = np.abs(P_a - P_e).max() / np.abs(P_e).max()
            worst = max(worst, err)
            assert err <= PROJECTOR, f"BZ {bz} cluster {list(c)}: projector error {err:.3g}"
    print(f"max projector error (relative to max|P|): {worst:.3g}")


def test_cluster_rank_maps(case):
    _, g, _, m = case
    mode_maps = m.mode_maps()
    for rank, key, size_key in ((0, "Id_cluster0", "Id_cluster_size0"),
                                (int(g["rank_last"]), "Id_cluster_last", "Id_cluster_size_last")):
        got, sizes = cluster_maps(m, mode_maps, m.Winv, rank)
        assert np.array_equal(sizes, g[size_key]), f"{key}: cluster sizes {sizes} != {g[size_key]}"
        assert_rel(got, g[key], CLUSTER_MAP, key)


def test_mode_maps_sum_to_full_map(case):
    _, _, _, m = case
    total = m.mode_maps().sum(axis=1)
    assert_rel(total, m.apply_disorder(), IDENTITY, "sum of mode maps")


def test_rank_argument(case):
    _, _, _, m = case
    single = m.apply_disorder(rank=m.n_dof - 1)
    assert_rel(single, m.mode_maps()[:, m.n_dof - 1], 1e-14, "rank map")
    for bad in (-2, m.n_dof, m.n_dof + 5):
        with pytest.raises(ValueError, match="rank"):
            m.apply_disorder(rank=bad)
    with pytest.raises(EryxInputError):
        m.apply_disorder(rank=m.n_dof)


# ---------------------------------------------------------- beyond the goldens' params
def skew_by_hand(c) -> np.ndarray:
    """S(x, y, z) of ALGORITHM.md section 4, written out."""
    x, y, z = c
    return np.array([[0.0, z, -y], [-z, 0.0, x], [y, -x, 0.0]])


def projected_hessian_by_hand(H: np.ndarray, asu_xyz: np.ndarray) -> np.ndarray:
    """Hrb[i, :, c, j, :] = A_i^T (H[i, :, c, j, :] (x) I3) A_j (section 6), by plain loops.

    (H (x) I3) puts H[a, b] I3 in block (a, b), so the product is the sum over atom pairs
    of H[i, a, c, j, b] A_ia^T A_jb, with A_ia = [I3 | S(c_a)] (section 4), c the atoms
    of ASU i minus their mean: nothing from the code under test.
    """
    n_asu, n_at = H.shape[0], H.shape[1]
    blocks = []
    for i in range(n_asu):
        centred = asu_xyz[i] - asu_xyz[i].sum(axis=0) / n_at
        blocks.append([np.hstack([np.eye(3), skew_by_hand(centred[a])]) for a in range(n_at)])
    Hrb = np.zeros((n_asu, 6, 27, n_asu, 6))
    for i, a, c, j, b in zip(*np.nonzero(H)):
        Hrb[i, :, c, j, :] += H[i, a, c, j, b] * (blocks[i][a].T @ blocks[j][b])
    return Hrb


#: Measured max |model - by hand| / max |by hand| of the projected Hessian (summation
#: orders differ): 5zck_p1 8.5e-16, 7n2h 5.7e-16 (gammas 2.0 / 0.5); bound 1e-14.
PROJECTED_HESSIAN = 1e-14


@pytest.mark.parametrize("name", ["5zck_p1", "7n2h"])
def test_hessian_allatoms_brute_force(fixture_pdb, name):
    """All-atom Hessian from explicit distances with gamma_intra != gamma_inter (sec. 6),
    and its rigid-body projection by plain loops (not the model's project_hessian)."""
    gi, ge, cutoff = 2.0, 0.5, 4.0
    m = OnePhonon(fixture_pdb(name), (-1, 1, 1), (-1, 1, 1), (-1, 1, 1),
                  gamma_intra=gi, gamma_inter=ge, gnm_cutoff=cutoff)
    xyz, origins = m.asu_xyz, m.cell_origin
    n_asu, n_at = m.n_asu, m.n_at
    H = np.zeros((n_asu, n_at, 27, n_asu, n_at))
    for i in range(n_asu):
        for c in range(27):
            for j in range(n_asu):
                d = cdist(xyz[i], xyz[j] + origins[c])
                near = np.abs(d - cutoff) < 1e-9
                assert not near.any(), "a pair sits on the cutoff: the test would be ill-posed"
                gamma = gi if (c == 13 and i == j) else ge
                H[i, :, c, j, :] = np.where(d <= cutoff, -gamma, 0.0)
        for a in range(n_at):
            H[i, a, 13, i, a] = 0.0
            H[i, a, 13, i, a] = -H[i, a].sum()
    assert np.array_equal(m.hessian_allatoms, H)
    assert np.all(m.hessian.imag == 0)
    expected = projected_hessian_by_hand(H, xyz)
    err = np.abs(m.hessian.real - expected).max() / np.abs(expected).max()
    print(f"{name}: projected Hessian vs plain loops, max rel error {err:.2g}")
    assert_rel(m.hessian.real, expected, PROJECTED_HESSIAN, "projected hessian")


@pytest.mark.parametrize("name", ["5zck_p1", "7n2h"])
def test_adp_scale(fixture_pdb, name):
    """Scaled ADPs average to 3 mean(B) / (8 pi^2) by construction (section 8)."""
    m = OnePhonon(fixture_pdb(name), (-1, 1, 2), (-1, 1, 2), (-1, 1, 2))
    assert np.isclose(m.ADP.mean(), 3 * m.adp.mean() / (8 * np.pi**2), rtol=1e-13, atol=0)


def test_standard_grid(golden, fixture_pdb):
    arrays, meta = golden("5zck_p1_standard")
    m = build(meta, fixture_pdb(meta["pdb"].removesuffix(".pdb")))
    assert tuple(m.map_shape) == tuple(arrays["map_shape"])
    assert_rel(m.apply_disorder(), arrays["Id"], INTENSITY, "Id (standard grid)")


# ------------------------------------------------------------- arbitrary q-vectors
#: apply_disorder_at at the grid's own q against the grid map: measured 0 (the same
#: k-points, the same F, the same sums); bound 1e-13.
Q_AT_GRID = 1e-13


@pytest.mark.parametrize("masked", [False, True], ids=["no-res-limit", "res-limit"])
def test_q_vectors_at_grid_q_equal_grid_map(case, masked):
    _, _, meta, m = case
    if masked:  # a limit masking about half of the grid, halfway between two d-spacings
        d = np.unique(np.round(resolution(m.hkl_grid, m.cell), 6))  # distinct beyond round-off
        mid = len(d) // 2
        m = build(meta, m.crystal.pdb_path, res_limit=float(0.5 * (d[mid] + d[mid + 1])))
        assert 0 < np.count_nonzero(~m.res_mask) < len(m.res_mask)
    for kw in (dict(), dict(use_data_adp=True), dict(rank=0), dict(rank=m.n_dof - 1)):
        assert_rel(m.apply_disorder_at(m.q_grid, **kw), m.apply_disorder(**kw), Q_AT_GRID, f"q at grid {kw}")
    perm = np.random.default_rng(3).permutation(len(m.q_grid))[:50]
    assert_rel(m.apply_disorder_at(m.q_grid[perm]), m.apply_disorder()[perm], Q_AT_GRID, "subset / permutation")


def test_q_vectors_on_lattice_outside_the_grid(fixture_pdb):
    """A q on the oversampled lattice beyond the grid's bounds takes the grid's BZ point
    (L hkl mod L): the map there equals a larger grid's, whose ADPs are the same (they
    depend on the BZ sampling L only)."""
    pdb = fixture_pdb("5zck_p1")
    small = OnePhonon(pdb, (-1, 1, 2), (-1, 1, 2), (-1, 1, 2))
    large = OnePhonon(pdb, (-3, 3, 2), (-2, 2, 2), (-3, 3, 2))
    assert_rel(small.ADP, large.ADP, 1e-15, "ADP independent of the grid's range")
    outside = np.flatnonzero(np.any(np.abs(large.hkl_grid) > 1, axis=1))
    Id = small.apply_disorder_at(large.q_grid[outside])
    assert np.isfinite(Id).any() and np.isnan(Id).any()  # Bragg points among them
    assert_rel(Id, large.apply_disorder()[outside], Q_AT_GRID, "on-lattice q outside the grid")


def test_q_vectors_off_lattice_equal_finer_grid(fixture_pdb):
    """q on the L=4 lattice but off the L=2 one get their own k-points; with the file's
    B factors the map does not depend on the BZ sampling of the ADPs, so it equals the
    L=4 grid model's map there."""
    pdb = fixture_pdb("7n2h")
    fine = OnePhonon(pdb, (-1, 1, 4), (-1, 1, 4), (-1, 1, 4))
    coarse = OnePhonon(pdb, (-1, 1, 2), (-1, 1, 2), (-1, 1, 2))
    hkl = fine.hkl_grid
    off = np.flatnonzero(np.any(np.abs(2 * hkl - np.round(2 * hkl)) > 1e-9, axis=1))
    where = coarse.q_vector_points(fine.q_grid[off])
    # Every point off the L=2 lattice gets an extra k-slot (k-values equal only to round-off,
    # from the solved hkl, stay distinct slots: the torch backend's torch.unique does the same).
    assert np.all(where["slot"] >= 8) and len(where["extra_kvec"]) >= 4 * 4 * 4 - 2 * 2 * 2
    expected = fine.apply_disorder(use_data_adp=True)[off]
    assert np.isfinite(expected).all()
    # Other k-points than the grid's: phonons from their own SVDs, as accurate as the grid's.
    assert_rel(coarse.apply_disorder_at(fine.q_grid[off], use_data_adp=True), expected, INTENSITY,
               "off-lattice k (data ADP)")


def test_q_vector_points_conventions(fixture_pdb):
    """Hand-made cases of the q -> (BZ point or extra k) mapping."""
    m = OnePhonon(fixture_pdb("2ol9"), (-2, 2, 2), (-2, 2, 1), (-2, 2, 2))  # L = (2, 1, 2): 4 BZ points
    B = 2 * np.pi * m.A_inv.T  # q = B hkl
    hkl = np.array([
        [0.5, 0.0, 0.5],            # on the lattice: BZ (1, 0, 1)
        [7.5, 3.0, -0.5],           # on the lattice, far outside the grid: BZ (1, 0, 1)
        [1.0, 2.0, 0.0],            # integer: BZ (0, 0, 0), a Bragg point
        [0.5 + 1e-11, 0.0, 0.0],    # within 1e-9 of the lattice: snapped, BZ (1, 0, 0)
        [0.25, 0.0, 0.0],           # off the lattice: k = B (0.25, 0, 0)
        [1.25, 0.0, 0.0],           # the same k, one reciprocal lattice vector away
        [0.0, 0.5, 0.0],            # off (L_k = 1): k = B (0, -1/2, 0), the nearest lattice point
                                    # (0, 1, 0) removed (solved hkl 0.5 + round-off; K is periodic,
                                    # so the tie rule of exact halves changes no map value)
    ])
    where = m.q_vector_points(hkl @ B.T)
    assert np.allclose(where["hkl"], hkl, rtol=0, atol=1e-12)
    assert list(where["slot"][:4]) == [3, 3, 0, 2]
    assert np.all(where["slot"][4:] >= 4)
    k = where["extra_kvec"][where["slot"][4:] - 4]
    assert np.allclose(k[0], B @ [0.25, 0, 0], rtol=0, atol=1e-14)
    assert np.allclose(k[1], B @ [0.25, 0, 0], rtol=0, atol=1e-14)  # slot 4's k up to round-off
    assert np.allclose(k[2], B @ [0, -0.5, 0], rtol=0, atol=1e-14)
    Id = m.apply_disorder_at(hkl @ B.T)
    assert np.isnan(Id[2]) and np.isfinite(np.delete(Id, 2)).all()
    assert Id[4] != Id[5]  # same k, different q: different structure factors


@pytest.mark.parametrize("q, fragments", [
    (np.zeros((4, 2)), ("q_vectors", "(N, 3)")),
    (np.zeros((0, 3)), ("q_vectors", "N >= 1")),
    (np.ones((4, 3), dtype=complex), ("q_vectors", "real")),
    (np.array([[0.1, 0.2, np.nan]]), ("q_vectors", "NaN")),
    (np.array([["a", "b", "c"]]), ("q_vectors", "real")),
    (np.ones((2, 3), dtype=np.longdouble), ("q_vectors", "float64")),
], ids=["N2", "empty", "complex", "nan", "strings", "longdouble"])
def test_bad_q_vectors(case, q, fragments):
    _, _, _, m = case
    with pytest.raises(EryxInputError) as info:
        m.apply_disorder_at(q)
    for fragment in fragments:
        assert fragment in str(info.value)


# ------------------------------------------------------ construction in named steps
NUMPY_STEPS = ["structure", "memory", "grid", "stiffness", "matrices", "hessian", "phonons"]


def test_build_steps_declared(fixture_pdb):
    assert [name for name, _, _ in OnePhonon.BUILD_STEPS] == NUMPY_STEPS
    for name, phase, method in OnePhonon.BUILD_STEPS:
        assert phase in (1, 2, 3, 4) and callable(getattr(OnePhonon, method)), name
    m = OnePhonon(fixture_pdb("synthetic"), (-1, 1, 2), (-1, 1, 1), (-1, 1, 1))
    assert m.completed_steps == tuple(NUMPY_STEPS)


@pytest.mark.parametrize("function, step, phase, built, not_built", [
    ("generate_grid", "grid", 1, ("crystal", "memory_estimate"), ("hkl_grid", "kvec")),
    ("build_Linv", "matrices", 2, ("hkl_grid", "kvec"), ("Amat", "Mmat", "Linv")),
    ("find_neighbours", "hessian", 3, ("Amat", "Linv"), ("gamma", "neighbours", "hessian")),
    ("phonons", "phonons", 3, ("hessian",), ("Winv", "V", "ADP")),
])
def test_build_step_failure_names_step_and_phase(fixture_pdb, monkeypatch, function, step, phase, built, not_built):
    import eryx.models as npm

    def broken(*args, **kwargs):
        raise RuntimeError(f"injected failure in {function}")

    monkeypatch.setattr(npm, function, broken)
    with pytest.raises(RuntimeError, match=f"injected failure in {function}") as info:
        OnePhonon(fixture_pdb("synthetic"), (-1, 1, 2), (-1, 1, 1), (-1, 1, 1))
    exc = info.value
    assert (exc.build_step, exc.build_phase) == (step, phase)
    m = exc.partial_model
    assert m.completed_steps == tuple(NUMPY_STEPS[:NUMPY_STEPS.index(step)])
    for name in built:
        assert name in vars(m), f"{name} missing after the steps before {step}"
    for name in not_built:
        assert name not in vars(m), f"{name} left over from the failed step {step}"
