"""Each named fault (parity/faults.py) is diagnosed by its own signature in its own stage.

The (expected, actual) pair of a stage comes from ONE helper, :func:`stage_pair`, written
against today's registry API; re-point it when the runner changes. The diagnosis options per
stage (:data:`OPTIONS`) are the ones proposed to the runner in docs/diagnosis.md.
"""
from __future__ import annotations

import numpy as np
import pytest

from parity.compare import as_numpy
from parity.diagnose import diagnose_arrays, diagnose_eigenspaces, summary_phrase
from parity.faults import FAULTS, inject
from parity.runner import make_context
from parity.stages import get_stage
from parity.tiers import resolve_tier

# Oversampling 3: at oversampling 2, k and -k coincide and phase_sign is invisible.
SAMPLINGS = ((-2, 2, 3),) * 3
BUDGET = 30.0  # what is found is tested here, never how fast


_CONTEXTS: dict = {}  # one run context per fault for the whole module


def stage_pair(fault: str, stage_name: str):
    """(expected, actual, ctx) of one stage with the fault injected, through today's API.

    Eigenspace stages return ((values, vectors), (values, vectors)); arrays are NumPy.
    """
    if fault not in _CONTEXTS:
        _CONTEXTS[fault] = make_context("synthetic", samplings=SAMPLINGS, fault=fault)
    ctx = _CONTEXTS[fault]
    with inject(fault):
        st = get_stage(stage_name)
        actual = st.candidate(ctx)
        expected = st.reference(ctx)
    if st.kind == "eigenspace":
        return tuple(map(as_numpy, expected)), tuple(map(as_numpy, actual)), ctx
    return as_numpy(expected), as_numpy(actual), ctx


def _grid_shape(ctx):
    return tuple(int(L * (hi - lo) + 1) for lo, hi, L in ctx.samplings)


def _amat_view(e, a, ctx):
    """Amat (n_asu, 3 n_atoms, 6) seen as (n_asu, n_atoms, xyz, rigid-body dof)."""
    shape = (e.shape[0], e.shape[1] // 3, 3, e.shape[2])
    return e.reshape(shape), a.reshape(shape), {"axes": ("ASU", "atom", "xyz", "rigid-body dof")}


#: stage -> function (expected, actual, ctx) -> (expected, actual, diagnose_arrays options)
OPTIONS = {
    "q_grid": lambda e, a, ctx: (e, a, {"axes": ("grid point", "xyz"), "grid_shape": _grid_shape(ctx)}),
    "bz_index": lambda e, a, ctx: (e, a, {"axes": ("grid point",), "grid_shape": _grid_shape(ctx)}),
    "Amat": _amat_view,
    "Linv": lambda e, a, ctx: (e, a, {"axes": ("dof row", "dof column")}),
    "K": lambda e, a, ctx: (e, a, {"axes": ("BZ point", "dof row", "dof column")}),
    "D": lambda e, a, ctx: (e, a, {"axes": ("BZ point", "dof row", "dof column")}),
    "Kinv": lambda e, a, ctx: (e, a, {"axes": ("BZ point", "dof row", "dof column")}),
    "Winv": lambda e, a, ctx: (e, a, {"axes": ("dh", "dk", "dl", "mode"),
                                      "subsets": {"zero modes": np.isnan(e)}}),
    "ADP": lambda e, a, ctx: (e, a, {"axes": ("atom",)}),
}


def diagnose_stage(fault: str, stage_name: str):
    """The signatures of one stage's divergence under a fault."""
    expected, actual, ctx = stage_pair(fault, stage_name)
    stage = get_stage(stage_name)
    tier = resolve_tier(stage.tier, ctx.dtype, ctx.tier_overrides)
    if stage.kind == "eigenspace":
        return diagnose_eigenspaces(*expected, *actual, tier, rel_gap=1e-6, locate=ctx.locator(stage.locate),
                                    axes=("BZ point", "mode"), time_budget_s=BUDGET)
    e, a, options = OPTIONS.get(stage_name, lambda e, a, ctx: (e, a, {}))(expected, actual, ctx)
    return diagnose_arrays(e, a, tier, time_budget_s=BUDGET, **options)


@pytest.fixture(scope="module")
def diagnosed():
    """Every fault's own stage, diagnosed once for the module."""
    return {name: diagnose_stage(name, fault.stage) for name, fault in FAULTS.items()}


def _head(sigs):
    assert sigs and sigs[0].explains, [(s.name, s.phrase, s.residual, s.explains) for s in sigs]
    return sigs[0]


def test_every_fault_is_covered(diagnosed):
    assert set(diagnosed) == set(FAULTS)
    for name, sigs in diagnosed.items():
        assert summary_phrase(sigs) != "no simple signature", name


def test_grid_float32_is_float32_round_off(diagnosed):
    s = _head(diagnosed["grid_float32"])
    assert (s.name, s.params["format"], s.params["evidence"]) == ("precision", "float32", "cast")
    assert s.phrase == "float32 round-off (cast)"


def test_amat_shared_buffer_is_an_accumulation_and_the_first_atom_agrees(diagnosed):
    sigs = diagnosed["amat_shared_buffer"]
    s = _head(sigs)
    assert (s.name, s.params["axis"], s.params["where"]) == ("accumulation", "atom", "rigid-body dof 3-5")
    partial = [x for x in sigs if x.name == "partial" and x.explains]
    assert partial and partial[0].params["first_agrees"] == ["atom"]
    assert partial[0].phrase.startswith("first atom agrees")


def test_linv_upper_is_a_transpose(diagnosed):
    s = _head(diagnosed["linv_upper"])
    assert s.name == "transpose" and s.phrase == "transpose" and "factor" not in s.params


def test_linv_complex_is_real_carried_as_complex(diagnosed):
    s = _head(diagnosed["linv_complex"])
    assert s.name == "real_as_complex" and s.params["max_imag"] == 0


def test_phase_sign_is_a_conjugate(diagnosed):
    s = _head(diagnosed["phase_sign"])
    assert s.name == "conjugate" and "factor" not in s.params
    assert "transpose" in s.params["equivalent"]  # K(k) is Hermitian: conj(K) == K^T


def test_eigvec_mixing_rotates_the_two_top_clusters_by_0_3_rad(diagnosed):
    s = _head(diagnosed["eigvec_mixing"])
    assert s.name == "eigen_rotation"
    assert s.params["modes"] == [[22, 23]]  # the two highest modes of 24, two distinct clusters
    assert s.params["angle_rad"] == pytest.approx(0.3, abs=1e-9)
    assert s.params["angle_max"] - s.params["angle_min"] < 1e-9
    assert s.params["items"] == s.params["of_items"] == 27


def test_bz_off_by_one_is_a_shift_along_h(diagnosed):
    s = _head(diagnosed["bz_off_by_one"])
    assert (s.name, s.params["axis"], s.params["shift"]) == ("shift", "h", 1)
    assert s.phrase == "shift +1 along h"


def test_zero_modes_clamped_is_a_nan_pattern(diagnosed):
    s = _head(diagnosed["zero_modes_clamped"])
    assert s.name == "nan_pattern" and s.phrase == "zero modes clamped, not NaN"
    (kind,) = s.params["kinds"]
    assert (kind["reference"], kind["candidate"], kind["form"], kind["count"]) == ("NaN", "finite", "clamped", 3)
    assert kind["where"] == "dh 0, dk 0, dl 0, mode 0-2"  # the three zero modes at k = 0


def test_adp_scale_is_a_factor_one_third(diagnosed):
    s = _head(diagnosed["adp_scale"])
    assert (s.name, s.params["expression"], s.phrase) == ("constant_factor", "1/3", "x 1/3")
    assert [x.name for x in diagnosed["adp_scale"] if x.explains] == ["constant_factor"]


def test_phase_sign_downstream_stages_say_conjugate_too():
    # Inherited divergences keep the signature where it survives: D and Kinv are conj(K)'s
    # functions, the eigenvectors of conj(D) are the conjugated eigenvectors.
    assert _head(diagnose_stage("phase_sign", "D")).name == "conjugate"
    assert _head(diagnose_stage("phase_sign", "Kinv")).name == "conjugate"
    assert _head(diagnose_stage("phase_sign", "eigenspaces")).name == "eigen_conjugate"
