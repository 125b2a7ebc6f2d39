"""The harness proves it can fail: every named fault, bisection, and every comparison kind.

All runs use the built-in synthetic crystal on ``((-2, 2, 3),) * 3``: oversampling 3
matters, because at oversampling <= 2 every k-point of the grid is its own Friedel
mate (k and -k coincide modulo the reciprocal lattice), which hides sign errors in
the k-dependent phase (see ``test_phase_sign_invisible_at_oversampling_2``).
"""
from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest
import torch

from eryx import models as npm
from eryx import models_torch as tm
from eryx import functional_torch as st
from parity.running import crossfeed as bs
from parity.comparison.engine import compare_full_product
from parity.backends.eryx_torch import TorchBackend
from parity.backends.faults import FAULTS, get_fault, inject
from parity.running.runner import make_run, run_parity, run_stage, run_stages
from parity.stages import STAGE_NAMES, STAGES, get_stage, select
from parity.contract.tiers import resolve_tier

GRID3 = ((-2, 2, 3),) * 3
GRID2 = ((-2, 2, 2),) * 3

#: The exact root-cause set each fault must bisect to: one defect, one root. Where the
#: replaced function produces several compared quantities, the later ones declare that
#: they recompute the earlier (``Stage.recomputes``) and inherit:
#:   phonons    -> Winv; eigenspaces recomputes Winv
#:   adp_scaled -> covar; ADP recomputes the covariance and its scale
#:   build_K    -> K; grad_q recomputes K(k(q)) (its derivative in k cannot be fed)
EXPECTED_ROOTS = {
    "grid_float32": {"q_grid"},
    "amat_shared_buffer": {"Amat"},
    "linv_upper": {"Linv"},
    "linv_complex": {"Linv"},
    "phase_sign": {"K"},
    "eigvec_mixing": {"eigenspaces"},
    "bz_off_by_one": {"bz_index"},
    "zero_modes_clamped": {"Winv"},
    "adp_scale": {"covar"},
    "q_gradient_sign": {"grad_q"},
    # build_M_allatoms and build_Mmat both read the masses; Mmat declares that it recomputes
    # M_allatoms internally, so the one wrong mass is one root.
    "sulphur_mass": {"M_allatoms"},
}
#: Faults that show only on atoms of one element (the synthetic crystal has one of each).
ATOM_FAULTS = {"sulphur_mass": "S"}


def _ctx(fault=None, samplings=GRID3, **kw):
    return make_run("synthetic", samplings=samplings, fault=fault, **kw)


def _by_name(records):
    return {r["name"]: r for r in records}


@pytest.fixture(scope="module")
def clean_bisect():
    ctx = _ctx()
    return bs.bisect_run(ctx, progress=False)


@pytest.fixture(scope="module")
def fault_bisects():
    """fault name -> (records, BisectResult), each a full run plus bisection."""
    return {name: bs.bisect_run(_ctx(name), progress=False) for name in FAULTS}


# ------------------------------------------------------------------ the fault table
def test_expected_roots_cover_every_fault():
    assert set(EXPECTED_ROOTS) == set(FAULTS), "a new fault needs its expected root-cause set here"
    for name, fault in FAULTS.items():
        assert fault.stage in STAGE_NAMES, name
        assert fault.stage in EXPECTED_ROOTS[name], name
        assert get_stage(fault.stage).phase == fault.phase, name


def test_clean_run_passes_and_bisects_to_no_divergence(clean_bisect):
    records, result = clean_bisect
    assert [r["name"] for r in records] == list(STAGE_NAMES)
    bad = [(r["name"], r["message"]) for r in records if r["status"] != "pass"]
    assert not bad
    assert result.first_divergence is None
    assert result.verdicts == [] and result.root_causes == [] and result.inherited == []
    assert bs.format_bisect(result).startswith("No divergence")


@pytest.mark.parametrize("name", list(FAULTS))
def test_fault_fails_in_its_phase_and_bisects_to_its_stage(name, fault_bisects):
    fault = FAULTS[name]
    records, result = fault_bisects[name]
    failing = [r for r in records if r["status"] in ("fail", "error")]
    assert failing, f"fault {name} went unnoticed"
    first = failing[0]
    assert first["phase"] == fault.phase, (name, first["name"])
    assert result.first_divergence == first["name"] == fault.stage  # lands on its documented stage

    # Every diverging stage got exactly one verdict, in registry order.
    assert [v.stage for v in result.verdicts] == [r["name"] for r in failing]
    verdicts = {v.stage: v.verdict for v in result.verdicts}

    # The root causes are exactly the stages of the replaced function.
    assert fault.stage in result.root_causes
    assert set(result.root_causes) == EXPECTED_ROOTS[name], bs.format_bisect(result)
    for stage in EXPECTED_ROOTS[name]:
        assert verdicts[stage] == bs.ROOT, (stage, bs.format_bisect(result))

    # Everything else that diverges comes after the root and only inherited it, from the root.
    first_root = min(STAGE_NAMES.index(s) for s in EXPECTED_ROOTS[name])
    for v in result.verdicts:
        if v.stage in EXPECTED_ROOTS[name]:
            continue
        assert STAGE_NAMES.index(v.stage) > first_root, (v.stage, name)
        assert v.verdict == bs.INHERITED and set(v.inherited_from) == EXPECTED_ROOTS[name], (v.stage, v, name)
        assert v.text == f"inherited from {fault.stage}"
        if get_stage(v.stage).quantity in TorchBackend.static_crossfeeds():
            assert v.basis in ("cross-feed", "recomputed internally") and v.crossfed, (v.stage, name)
        else:  # no cross-feed: the registry's input graph decides
            assert v.basis == "input graph" and v.crossfed.startswith("no cross-feed"), (v.stage, name)

    text = bs.format_bisect(result)
    assert f"First divergence: {first['name']}" in text
    assert fault.stage in text.splitlines()[1]  # "Root cause(s): ..."


@pytest.mark.parametrize("name", list(FAULTS))
def test_fault_bisects_the_same_on_a_real_protein(name, fixture_pdb):
    """7n2h (a real multi-ASU protein) on a small oversampling-3 grid, phases 1-3: the same
    first phase and exactly the same root causes as on the synthetic crystal."""
    fixture_pdb("7n2h")
    ctx = make_run("7n2h", samplings=((-1, 1, 3), (-1, 1, 3), (0, 1, 3)), fault=name)
    # A phase-4 fault (the q-gradient) shows only in its own stage: add it to phases 1-3.
    own = [get_stage(FAULTS[name].stage)] if FAULTS[name].phase > 3 else []
    stages = select(phases=[1, 2, 3]) + own
    expected = EXPECTED_ROOTS[name] & {s.name for s in stages}
    records, result = bs.bisect_run(ctx, stages, progress=False)
    if name in ATOM_FAULTS and ATOM_FAULTS[name] not in ctx.reference_session.crystal.elements:  # 7n2h: no sulphur
        assert result.first_divergence is None and not result.root_causes, bs.format_bisect(result)
        return
    assert get_stage(result.first_divergence).phase == FAULTS[name].phase
    assert set(result.root_causes) == expected, bs.format_bisect(result)
    assert all(v.verdict == bs.INHERITED for v in result.verdicts if v.stage not in expected)


def test_fault_runs_do_not_leak_into_a_later_clean_run(fault_bisects):
    # fault_bisects ran every fault first; a clean run afterwards must still pass.
    result = run_parity("synthetic", samplings=GRID3, progress=False)
    assert result["passed"], result["first_failure"]


def test_bisect_run_on_a_stage_subset():
    records, result = bs.bisect_run(_ctx("amat_shared_buffer"), select(phases=[2]), progress=False)
    assert {r["phase"] for r in records} == {2}
    assert result.root_causes == ["Amat"]
    assert set(result.inherited) >= {"Mmat", "Linv"}


# ------------------------------------------------------------------ inject()
def _stage_functions():
    return {k: v for k, v in vars(st).items() if callable(v) and not k.startswith("__")}


@pytest.mark.parametrize("name", list(FAULTS))
def test_inject_replaces_and_restores_even_when_the_block_raises(name):
    before = _stage_functions()
    replaced = set(FAULTS[name].patch(before))
    assert replaced, name
    with pytest.raises(RuntimeError, match="boom"):
        with inject(name) as fault:
            assert fault is FAULTS[name]
            for k in replaced:
                assert getattr(st, k) is not before[k], k
            raise RuntimeError("boom")
    after = _stage_functions()
    assert after.keys() == before.keys()
    assert all(after[k] is before[k] for k in before)


def test_inject_none_is_a_no_op_and_unknown_names_are_refused():
    before = _stage_functions()
    with inject(None) as fault:
        assert fault is None
        assert _stage_functions() == before
    with pytest.raises(KeyError, match="unknown fault 'nosuch'"):
        with inject("nosuch"):
            pass
    with pytest.raises(KeyError, match="known faults"):
        get_fault("nosuch")
    assert _stage_functions() == before


def test_fault_leaves_the_numpy_reference_untouched():
    clean = _ctx()
    faulted = _ctx("phase_sign")
    np.testing.assert_array_equal(faulted.reference_value("K"), clean.reference_value("K"))
    assert np.abs(faulted.candidate_value("K") - clean.candidate_value("K")).max() > 1e-6


# ------------------------------------------------------------------ phase sign and oversampling
def test_phase_sign_invisible_at_oversampling_2():
    """At oversampling L <= 2 every BZ fraction f satisfies -f == f (mod 1), so K(-k) ==
    K(k) up to round-off and a flipped k.r phase changes nothing: the fault is caught
    only at oversampling >= 3, which is why these tests use L = 3."""
    for L in (1, 2):
        fracs = [Fraction(st.center_index(x, L)).limit_denominator(12) for x in range(L)]
        assert all((f + f).denominator == 1 for f in fracs), (L, fracs)  # -f == f mod 1
    fracs3 = [Fraction(st.center_index(x, 3)).limit_denominator(12) for x in range(3)]
    assert any((f + f).denominator != 1 for f in fracs3)

    at2 = run_parity("synthetic", samplings=GRID2, fault="phase_sign", progress=False)
    # Every value on the grid agrees; only the stages that leave the grid's k-points see the
    # flipped phase: the q-gradient (d K / d k at a zone-boundary k is odd in the phase
    # sign) and the q-vector mode between k-points (whose k is not its own Friedel mate).
    assert [s["name"] for s in at2["stages"] if s["status"] != "pass"] == ["Id_q_offgrid", "grad_q"], \
        at2["first_failure"]
    K2 = _by_name(at2["stages"])["K"]
    assert K2["status"] == "pass" and K2["max_abs"] < 1e-12

    at3 = run_parity("synthetic", samplings=GRID3, fault="phase_sign", progress=False)
    assert not at3["passed"] and at3["first_failure"] == "K"
    K3 = _by_name(at3["stages"])["K"]
    assert K3["status"] == "fail" and K3["max_abs"] > 1e-6
    # The worst point is a k that is not its own Friedel mate (not on the L=2 sublattice).
    assert K3["worst"]["location"].startswith("BZ (dh,dk,dl)=(")
    bz = np.unravel_index(K3["worst"]["index"][0], (3, 3, 3))
    assert any(i != 0 for i in bz)


def test_phase_sign_on_a_real_protein(fixture_pdb):
    """The same on 5zck_p1: invisible on an L = 2 grid, caught at K on an L = 3 grid."""
    fixture_pdb("5zck_p1")
    names = ["kvec", "Amat", "K", "D"]
    at2 = run_parity("5zck_p1", samplings=((-1, 1, 2),) * 3, fault="phase_sign", stage_names=names, progress=False)
    assert at2["passed"], at2["first_failure"]
    at3 = run_parity("5zck_p1", samplings=((-1, 1, 3),) * 3, fault="phase_sign", stage_names=names, progress=False)
    assert at3["first_failure"] == "K"
    assert [s["name"] for s in at3["stages"] if s["status"] == "fail"] == ["K", "D"]


# ------------------------------------------------------------------ the seed's V V^H check
def test_full_product_check_misses_eigvec_mixing_that_eigenspaces_catches():
    ctx = _ctx("eigvec_mixing")
    (rec,) = run_stages(ctx, [get_stage("eigenspaces")], progress=False)  # builds the faulted model
    assert rec["status"] == "fail", rec["message"]

    n = ctx.reference_value("Winv").shape[-1]
    tier = resolve_tier("decomposition", "float64")
    V_cand = ctx.candidate_value("V").reshape(-1, n, n)
    V_ref = ctx.reference_value("V").reshape(-1, n, n)
    full = compare_full_product(V_cand, V_ref, tier, name="V V^H")
    assert full.passed, full.message  # V V^H = Linv^T U U^H Linv is blind to any unitary mixing

    # ... while it is not a check that cannot fail: a wrong Linv changes V V^H.
    bad = _ctx("linv_upper")
    run_stages(bad, [get_stage("Linv")], progress=False)
    wrong = compare_full_product(bad.candidate_value("V").reshape(-1, n, n), V_ref, tier)
    assert not wrong.passed


# ------------------------------------------------------------------ every comparison kind can fail
def test_registry_kinds_are_the_tested_ones():
    assert {s.kind for s in STAGES} == {"array", "exact", "eigenspace", "dtype", "gradient", "oracle", "invariant"}
    assert {s.name for s in STAGES if s.kind == "invariant"} == {
        "K_hermitian", "zero_modes", "Id_nonnegative", "friedel", "qvectors_sample"}
    assert {s.name for s in STAGES if s.kind == "oracle"} == {"structure_oracle", "p1_oracle", "gemmi_oracle"}


def test_array_exact_and_eigenspace_kinds_fail_under_faults(fault_bisects):
    failed_kinds = {(r["kind"], r["name"]) for name in ("grid_float32", "bz_off_by_one", "eigvec_mixing")
                    for r in fault_bisects[name][0] if r["status"] == "fail"}
    assert ("array", "q_grid") in failed_kinds
    assert ("exact", "bz_index") in failed_kinds
    assert ("eigenspace", "eigenspaces") in failed_kinds


def _run_one(stage_name, fault=None, **kw):
    return run_stage(get_stage(stage_name), _ctx(fault, **kw))


def test_dtype_kind_fails_on_one_float32_intermediate(monkeypatch):
    assert _run_one("dtype_audit")["status"] == "pass"
    orig = st.kvec_norm
    monkeypatch.setattr(st, "kvec_norm", lambda kvec: orig(kvec).float())
    rec = _run_one("dtype_audit")
    assert rec["status"] == "fail"
    assert rec["n_mismatch"] == 1
    assert "kvec_norm: float32, expected float64" in rec["message"]


def _value_preserving_gradient_bug(orig):
    def combine_hessian(H_intra, H_inter, gamma_intra, gamma_inter):
        g = torch.as_tensor(gamma_inter)
        # (1 + 0.01 (g - g)) == 1 exactly, but d/dg of it is 0.01: values unchanged,
        # d Id / d gamma_inter wrong.
        return orig(H_intra, H_inter, gamma_intra, gamma_inter) * (1 + 0.01 * (g - g.detach()))
    return combine_hessian


def test_gradient_kind_fails_on_a_wrong_gradient_with_right_values(monkeypatch):
    monkeypatch.setattr(st, "combine_hessian", _value_preserving_gradient_bug(st.combine_hessian))
    result = run_parity("synthetic", samplings=GRID3, progress=False)
    failing = [s["name"] for s in result["stages"] if s["status"] != "pass"]
    assert failing == ["grad_gamma_inter"], failing
    rec = _by_name(result["stages"])["grad_gamma_inter"]
    assert rec["kind"] == "gradient" and rec["max_rel"] > 1e-4


def test_oracle_kind_fails_when_numpy_form_factors_are_off(monkeypatch):
    clean = _run_one("gemmi_oracle")
    assert clean["status"] == "pass"
    orig = npm.form_factors
    monkeypatch.setattr(npm, "form_factors", lambda *a: orig(*a) * (1 + 1e-5))
    rec = _run_one("gemmi_oracle")
    assert rec["status"] == "fail" and rec["kind"] == "oracle"
    assert 5e-6 < rec["max_rel"] < 5e-5


def _non_hermitian_K(orig):
    def build_K(Hrb, kvec, cell_origin):
        K = orig(Hrb, kvec, cell_origin).clone()
        K[:, 0, 1] += 1e-6 * K.abs().amax()
        return K
    return build_K


def _map_patch(transform):
    """Wrap the torch model's apply_disorder (the public map, whatever its internals)."""
    def patch(orig):
        def apply_disorder(self, *args, **kwargs):
            Id = orig(self, *args, **kwargs)
            h = self.hkl_grid[:, 0] if self.q_vectors is None else self.q_hkl[:, 0]
            return transform(Id, h)
        return apply_disorder
    return patch


def _hkl_shifted(orig):
    def hkl_from_q(q, A_inv):
        shift = torch.tensor([1.0 / 3, 0.0, 0.0], dtype=q.dtype, device=q.device)  # one BZ step at L = 3
        return orig(q, A_inv) + shift
    return hkl_from_q


INVARIANT_BREAKS = {
    # (object, attribute, patch): functional_torch functions, or the torch model's map
    "K_hermitian": (st, "build_K", _non_hermitian_K),
    # Id < 0 on the half space h > 0
    "Id_nonnegative": (tm.OnePhonon, "apply_disorder", _map_patch(lambda Id, h: torch.where(h > 0, -Id, Id))),
    # Id(q) 1 % larger than Id(-q) on the half space h > 0 (still >= 0)
    "friedel": (tm.OnePhonon, "apply_disorder", _map_patch(lambda Id, h: torch.where(h > 0, 1.01 * Id, Id))),
    "qvectors_sample": (st, "hkl_from_q", _hkl_shifted),
}


@pytest.mark.parametrize("stage_name", ["K_hermitian", "zero_modes", "Id_nonnegative", "friedel", "qvectors_sample"])
def test_invariant_kind_fails_on_a_broken_input(stage_name, monkeypatch):
    clean = _run_one(stage_name)
    assert clean["status"] == "pass" and clean["kind"] == "invariant", clean["message"]
    if stage_name == "zero_modes":
        rec = _run_one(stage_name, fault="zero_modes_clamped")
    else:
        owner, attr, make = INVARIANT_BREAKS[stage_name]
        monkeypatch.setattr(owner, attr, make(getattr(owner, attr)))
        rec = _run_one(stage_name)
    assert rec["status"] == "fail", rec["message"]
    assert rec["passed"] is False


def test_crossfeed_that_raises_is_a_root_cause(monkeypatch):
    """A stage whose torch computation crashes even on reference inputs is itself broken."""
    ctx = _ctx()
    records = run_stages(ctx, [get_stage("Mmat")], progress=False)
    records[0]["status"] = "fail"  # pretend it diverged
    monkeypatch.setattr(st, "build_Mmat", lambda *a: (_ for _ in ()).throw(RuntimeError("kaput")))
    result = bs.classify(ctx, records)
    (v,) = result.verdicts
    assert v.verdict == bs.ROOT and "RuntimeError: kaput" in v.crossfed
