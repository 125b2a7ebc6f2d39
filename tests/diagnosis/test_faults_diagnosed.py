"""Each named fault (parity/backends/faults.py) is diagnosed by its own signature in its own stage.

Each stage is diagnosed through the runner's own path (``parity.running.runner.diagnose_stage``): the
registry's axes, views and subsets (docs/diagnosis.md), exactly as a failing run gets them.
"""
from __future__ import annotations

import pytest

from parity.running import runner
from parity.diagnosis.signatures import summary_phrase
from parity.backends.faults import FAULTS
from parity.running.runner import make_run
from parity.stages import get_stage
from parity.contract.tiers import resolve_tier

# Oversampling 3: at oversampling 2, k and -k coincide and phase_sign is invisible.
SAMPLINGS = ((-2, 2, 3),) * 3
BUDGET = 30.0  # what is found is tested here, never how fast

_RUNS: dict = {}  # one run per fault for the whole module


def diagnose_stage(fault: str, stage_name: str):
    """The signatures of one stage's divergence under a fault, through the runner's own path
    (the registry's axes, views and subsets, as every failing run gets them)."""
    if fault not in _RUNS:
        _RUNS[fault] = make_run("synthetic", samplings=SAMPLINGS, fault=fault)
    run = _RUNS[fault]
    stage = get_stage(stage_name)
    tier = resolve_tier(stage.tier, run.dtype, run.tier_overrides)
    saved, runner.DIAGNOSIS_BUDGET_S = runner.DIAGNOSIS_BUDGET_S, BUDGET
    try:
        return runner.diagnose_stage(stage, run, tier)[0]
    finally:
        runner.DIAGNOSIS_BUDGET_S = saved


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


def test_q_gradient_sign_is_a_factor_of_minus_one(diagnosed):
    s = _head(diagnosed["q_gradient_sign"])
    assert (s.name, s.params["expression"]) == ("constant_factor", "-1")
    assert s.params["analysed_axes"] == ["q point", "q component"]


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
