"""Gradients of the torch full map (eryx.gridmap_torch): exact, chunk-independent, first-order.

The reference values come from paths the new code does not use: the plain-autograd
engine (``models_torch.GRID_GRAD_ENGINE = "autograd"``: every chunk through autograd,
today's implementation) and central finite differences of the NumPy reference model.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

import eryx.gridmap_torch as gm
import eryx.mapengine_torch as me
import eryx.models_torch as tm
from eryx import models as npm
from parity.contract.tiers import resolve_tier

try:
    from tests._helpers import assert_rel
except ImportError:  # tests/ on sys.path (pytest rootdir-relative import)
    from _helpers import assert_rel

GRID = ((-2, 2, 2),) * 3
#: Analytic vs plain autograd: the same sums in another order (measured <= 4e-16 relative).
ROUND_OFF = 1e-12
CHUNKS = (1, 7, 64, tm.DEFAULT_CHUNK)


@pytest.fixture
def engine(monkeypatch):
    def set_engine(name: str) -> None:
        monkeypatch.setattr(tm, "GRID_GRAD_ENGINE", name)
    return set_engine


def gamma_grads(pdb, engine_name, set_engine, *, chunk=tm.DEFAULT_CHUNK, dtype=torch.float64,
                use_data_adp=False, grid=GRID):
    """(map, d sum(w Id) / d (gamma_intra, gamma_inter)) with a non-uniform weight w."""
    set_engine(engine_name)
    gi = torch.tensor(1.0, dtype=dtype, requires_grad=True)
    ge = torch.tensor(0.7, dtype=dtype, requires_grad=True)
    m = tm.OnePhonon(pdb, *grid, gamma_intra=gi, gamma_inter=ge, chunk_size=chunk, dtype=dtype)
    Id = m.apply_disorder(use_data_adp=use_data_adp)
    w = torch.linspace(0.5, 1.5, len(Id), dtype=dtype)
    return Id.detach(), torch.stack(torch.autograd.grad(torch.nansum(Id * w), (gi, ge)))


@pytest.mark.parametrize("chunk", CHUNKS)
def test_gamma_gradients_match_plain_autograd_at_every_chunk(fixture_pdb, engine, chunk):
    pdb = fixture_pdb("synthetic")
    ref_map, ref = gamma_grads(pdb, "autograd", engine, chunk=chunk)
    new_map, new = gamma_grads(pdb, "analytic", engine, chunk=chunk)
    assert torch.equal(torch.isnan(new_map), torch.isnan(ref_map))
    assert_rel(new_map, ref_map, 0.0, "map (the forward is unchanged)")
    assert_rel(new, ref, ROUND_OFF, f"d loss / d gammas, chunk {chunk}")
    # and the same whatever the chunk: against the default chunk's plain-autograd values
    assert_rel(new, gamma_grads(pdb, "autograd", engine)[1], ROUND_OFF, "chunk-independent")


def test_gamma_gradients_with_data_adp(fixture_pdb, engine):
    """use_data_adp: U carries no gradient, only W does (the other branch of the backward)."""
    pdb = fixture_pdb("synthetic")
    ref = gamma_grads(pdb, "autograd", engine, use_data_adp=True)[1]
    assert_rel(gamma_grads(pdb, "analytic", engine, use_data_adp=True)[1], ref, ROUND_OFF, "data ADP")


def test_gamma_gradients_vs_numpy_central_differences(fixture_pdb, engine):
    """The analytic backward against the NumPy reference's finite differences (gradient tier)."""
    pdb = fixture_pdb("synthetic")
    grads = gamma_grads(pdb, "analytic", engine)[1].numpy()
    n_q = int(np.prod([int(n * (hi - lo) + 1) for lo, hi, n in GRID]))
    w = np.linspace(0.5, 1.5, n_q)
    h = 1e-4
    tier = resolve_tier("gradient")
    for i, (name, value) in enumerate((("gamma_intra", 1.0), ("gamma_inter", 0.7))):
        def loss(v):
            params = {"gamma_intra": 1.0, "gamma_inter": 0.7, name: v}
            return float(np.nansum(npm.OnePhonon(pdb, *GRID, **params).apply_disorder() * w))
        fd = (loss(value + h * value) - loss(value - h * value)) / (2 * h * value)
        assert abs(grads[i] - fd) <= tier.rtol * abs(fd), f"{name}: analytic {grads[i]!r}, FD {fd!r}"


def u_grads(pdb, engine_name, set_engine, chunk=tm.DEFAULT_CHUNK):
    """d sum(w Id) / d U with the Debye-Waller U as a leaf (the synthetic crystal's scaled
    ADPs barely depend on the gammas, so this is the test of the U branch)."""
    set_engine(engine_name)
    m = tm.OnePhonon(pdb, *GRID, chunk_size=chunk)
    m.ADP = (m.ADP.detach() * torch.linspace(0.8, 1.2, len(m.ADP), dtype=m.ADP.dtype)).requires_grad_(True)
    Id = m.apply_disorder()
    w = torch.linspace(0.5, 1.5, len(Id), dtype=Id.dtype)
    return torch.autograd.grad(torch.nansum(Id * w), m.ADP)[0]


@pytest.mark.parametrize("chunk", (7, tm.DEFAULT_CHUNK))
def test_debye_waller_gradient_matches_plain_autograd(fixture_pdb, engine, chunk):
    pdb = fixture_pdb("synthetic")
    ref = u_grads(pdb, "autograd", engine, chunk)
    assert (ref != 0).all()
    assert_rel(u_grads(pdb, "analytic", engine, chunk), ref, ROUND_OFF, f"d loss / d U, chunk {chunk}")


def test_a_wrong_backward_is_caught(fixture_pdb, engine, monkeypatch):
    """The comparison above can fail: a backward that drops the Debye-Waller term differs."""
    pdb = fixture_pdb("synthetic")
    ref = u_grads(pdb, "autograd", engine)
    original = gm._backward_unit

    def without_debye_waller(*args):
        share_W, share_U = original(*args)
        return share_W, torch.zeros_like(share_U)

    monkeypatch.setattr(gm, "_backward_unit", without_debye_waller)
    with pytest.raises(AssertionError):
        assert_rel(u_grads(pdb, "analytic", engine), ref, ROUND_OFF, "wrong backward")


def test_float32_gradients_within_their_tier_of_float64(fixture_pdb, engine):
    pdb = fixture_pdb("synthetic")
    g64 = gamma_grads(pdb, "analytic", engine)[1]
    g32 = gamma_grads(pdb, "analytic", engine, dtype=torch.float32)[1]
    assert g32.dtype == torch.float32
    tier = resolve_tier("gradient", "float32", stage="grad_gamma_inter")
    err = ((g32.double() - g64).abs() / g64.abs()).max().item()
    assert err <= tier.atol, f"float32 gradients {err:.3g} from float64 (tier {tier.name} {tier.atol:g})"


def test_double_backward_is_refused_clearly_and_the_autograd_engine_supports_it(fixture_pdb, engine):
    pdb = fixture_pdb("synthetic")
    for name in ("analytic", "autograd"):
        engine(name)
        ge = torch.tensor(0.7, dtype=torch.float64, requires_grad=True)
        Id = tm.OnePhonon(pdb, *GRID, gamma_inter=ge).apply_disorder()
        if name == "analytic":
            with pytest.raises(gm.FirstOrderOnlyError, match="first-order only.*GRID_GRAD_ENGINE"):
                torch.autograd.grad(torch.nansum(Id), ge, create_graph=True)
        else:
            (g,) = torch.autograd.grad(torch.nansum(Id), ge, create_graph=True)
            (gg,) = torch.autograd.grad(g, ge)
            assert torch.isfinite(gg) and gg != 0


def test_a_replaced_stage_function_falls_back_to_autograd(fixture_pdb, engine, monkeypatch):
    """A fault injected into a hand-differentiated stage reaches the gradient (plain autograd)."""
    from eryx import functional_torch as st

    pdb = fixture_pdb("synthetic")

    def grad_inter():
        ge = torch.tensor(0.7, dtype=torch.float64, requires_grad=True)
        Id = tm.OnePhonon(pdb, *GRID, gamma_inter=ge).apply_disorder()
        return type(Id.grad_fn).__name__, torch.autograd.grad(torch.nansum(Id), ge)[0]

    engine("autograd")
    _, clean = grad_inter()
    engine("analytic")
    original = st.intensity_factored
    monkeypatch.setattr(st, "intensity_factored", lambda F, W: 2 * original(F, W))
    assert not gm.stages_are_original()
    node, faulted = grad_inter()
    assert "FullGridMap" not in node
    assert_rel(faulted, 2 * clean, ROUND_OFF, "the faulted map's gradient")


# -------------------------------------------------------------- q-vector mode: d Id / d q
def q_grads(pdb, engine_name, set_engine, q0, chunk=tm.DEFAULT_CHUNK):
    set_engine(engine_name)
    q = q0.clone().requires_grad_(True)
    ge = torch.tensor(0.7, dtype=torch.float64, requires_grad=True)
    Id = tm.OnePhonon(pdb, *GRID, q_vectors=q, chunk_size=chunk, gamma_inter=ge).apply_disorder()
    gq, gg = torch.autograd.grad(torch.nansum(Id * torch.linspace(0.5, 1.5, len(Id), dtype=Id.dtype)), (q, ge))
    return Id.detach(), gq, gg


def sample_q(pdb):
    base = tm.OnePhonon(pdb, *GRID)
    rng = np.random.default_rng(3)
    off = torch.tensor(2 * np.pi * rng.uniform(-2, 2, size=(20, 3)) @ base.A_inv.numpy())
    return torch.cat([off, base.q_grid[::41]])  # off-lattice and grid (on-lattice) points


@pytest.mark.parametrize("groups", (gm.MAX_GROUPS_PER_CHUNK, 0), ids=("grouped", "gathered"))
@pytest.mark.parametrize("chunk", (3, tm.DEFAULT_CHUNK))
def test_q_gradients_match_plain_autograd(fixture_pdb, engine, monkeypatch, chunk, groups):
    monkeypatch.setattr(gm, "MAX_GROUPS_PER_CHUNK", groups)  # both ways of applying K^-T per point
    pdb = fixture_pdb("synthetic")
    q0 = sample_q(pdb)
    ref_map, ref_q, ref_g = q_grads(pdb, "autograd", engine, q0, chunk)
    new_map, new_q, new_g = q_grads(pdb, "analytic", engine, q0, chunk)
    assert_rel(new_map, ref_map, ROUND_OFF, "q-vector map")
    assert_rel(new_q, ref_q, ROUND_OFF, f"d loss / d q, chunk {chunk}")
    assert_rel(new_g, ref_g, ROUND_OFF, "d loss / d gamma_inter in q-vector mode")


def test_q_gradient_k_term_is_needed_and_first_order(fixture_pdb, engine, monkeypatch):
    """Dropping the k-dependence (dK/dk = 0) is caught; a double backward is refused."""
    pdb = fixture_pdb("synthetic")
    q0 = sample_q(pdb)
    ref_q = q_grads(pdb, "autograd", engine, q0)[1]
    monkeypatch.setattr(gm, "k_derivative", lambda H, k, o: torch.zeros(3, len(k), H.shape[0] * 6,
                                                                         H.shape[0] * 6, dtype=torch.complex128))
    with pytest.raises(AssertionError):
        assert_rel(q_grads(pdb, "analytic", engine, q0)[1], ref_q, ROUND_OFF, "no k term")
    monkeypatch.undo()
    engine("analytic")
    q = q0.clone().requires_grad_(True)
    Id = tm.OnePhonon(pdb, *GRID, q_vectors=q).apply_disorder()
    with pytest.raises(gm.FirstOrderOnlyError, match="first-order only"):
        torch.autograd.grad(torch.nansum(Id), q, create_graph=True)


def test_estimate_has_an_autograd_term():
    from eryx.validation import estimate_torch_memory

    args = (8, 1001, 42025, 27, 400_000, 64)
    plain = estimate_torch_memory(*args)
    analytic = estimate_torch_memory(*args, grad="analytic")
    autograd = estimate_torch_memory(*args, grad="autograd")
    assert "gradients (backward)" not in plain
    # 193l: the plain-autograd backward keeps every chunk (measured 5.4 GiB); the analytic
    # one a chunk per worker and map-sized gradients.
    assert autograd["gradients (backward)"] > 4 * 2**30
    assert analytic["gradients (backward)"] < 0.25 * 2**30


def test_q_gradient_runs_single_threaded_and_restores_the_callers_threads(fixture_pdb):
    """No thread side effect: one torch thread inside the q-vector gradient's forward and
    backward (shared-machine stalls), the caller's count before and after."""
    pdb = fixture_pdb("synthetic")
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        q = sample_q(pdb).requires_grad_(True)
        Id = tm.OnePhonon(pdb, *GRID, q_vectors=q).apply_disorder()
        assert torch.get_num_threads() == 2
        seen = []
        q.register_hook(lambda g: seen.append(torch.get_num_threads()))
        torch.nansum(Id).backward()
        assert seen == [1] and torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


def test_gradients_are_the_same_bit_for_bit_at_any_thread_count(fixture_pdb, engine, monkeypatch):
    """Each work unit's share of the gradient is summed in unit order, whichever worker
    thread computed it: 1 thread, 2 worker threads and no worker threads give one value."""
    pdb = fixture_pdb("synthetic")
    results = {}
    for threads, workers in ((1, True), (2, True), (2, False)):
        monkeypatch.setattr(tm, "GRID_WORKERS", workers)
        with me.torch_threads(threads):
            results[threads, workers] = gamma_grads(pdb, "analytic", engine, chunk=7)
    (map0, grad0), *others = results.values()
    for map_, grad in others:
        assert torch.equal(map_.nan_to_num(), map0.nan_to_num())
        assert torch.equal(grad, grad0), (grad, grad0)


def test_grid_backward_runs_its_small_operations_on_one_thread_and_its_units_on_the_workers(
        fixture_pdb, engine, monkeypatch):
    """The grid map's backward: its units on as many worker threads as the forward had,
    the rest (W and U back to the gammas) with one torch thread; the caller's count after."""
    pdb = fixture_pdb("synthetic")
    engine("analytic")
    dealt = []
    original = me.parallel_units

    def recording(run, units, workers, size=me.unit_size):
        dealt.append((workers, torch.get_num_threads()))
        return original(run, units, workers, size)

    monkeypatch.setattr(me, "parallel_units", recording)
    with me.torch_threads(2):
        gi = torch.tensor(1.0, dtype=torch.float64, requires_grad=True)
        ge = torch.tensor(0.7, dtype=torch.float64, requires_grad=True)
        Id = tm.OnePhonon(pdb, *GRID, gamma_intra=gi, gamma_inter=ge, chunk_size=7).apply_disorder()
        assert torch.get_num_threads() == 2 and dealt == [(2, 1)]  # the forward: 2 workers, set-up on 1
        seen = []
        gi.register_hook(lambda g: seen.append(torch.get_num_threads()))
        torch.autograd.grad(torch.nansum(Id), (gi, ge))
        assert dealt[1] == (2, 1) and seen == [1]  # the backward's units: 2 workers; the chain: 1 thread
        assert torch.get_num_threads() == 2


@pytest.mark.parametrize("path", ["grid", "q-vectors"])
def test_a_refused_double_backward_gives_the_caller_its_threads_back(fixture_pdb, engine, path):
    """Both backward passes run with one torch thread after the map; a backward that raises
    (here the first-order refusal) must not leave the caller's process single-threaded."""
    pdb = fixture_pdb("synthetic")
    engine("analytic")
    with me.torch_threads(2):
        if path == "grid":
            x = torch.tensor(0.7, dtype=torch.float64, requires_grad=True)
            Id = tm.OnePhonon(pdb, *GRID, gamma_inter=x).apply_disorder()
        else:
            x = sample_q(pdb).requires_grad_(True)
            Id = tm.OnePhonon(pdb, *GRID, q_vectors=x).apply_disorder()
        with pytest.raises(gm.FirstOrderOnlyError):
            torch.autograd.grad(torch.nansum(Id), x, create_graph=True)
        assert torch.get_num_threads() == 2
        torch.autograd.grad(torch.nansum(Id), x)  # and the graph still gives a first-order gradient
        assert torch.get_num_threads() == 2
