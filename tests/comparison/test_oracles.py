"""The outside oracles called directly: the reference's structure against gemmi.

The right values are the NumPy reference's own (``eryx.structure`` reads the file through
REMARK 290, not through gemmi's space-group operations) on the built-in synthetic crystal;
the wrong ones are those values with one deliberate defect each.
"""
import numpy as np
import pytest

from parity.backends.eryx_numpy import NumpyBackend
from parity.comparison import oracles
from parity.contract.run_view import StaticView
from parity.contract.spec import RunSpec, make_spec
from parity.stages import get_stage
from parity.contract.tiers import resolve_tier

QUANTITIES = ("xyz", "cell", "n_asu", "F_hkl")


@pytest.fixture(scope="module")
def reference():
    spec = make_spec("synthetic", samplings=((-1, 1, 2),) * 3)
    session = NumpyBackend().open(spec)
    session.build()
    return spec, {name: np.asarray(session.get(name)) for name in QUANTITIES}


def _view(reference, **wrong):
    spec, values = reference
    return StaticView(spec, reference={**values, **wrong})


def _tier(stage: str):
    return resolve_tier(get_stage(stage).tier, "float64", stage=stage)


# ------------------------------------------------------------------ cell and ASU count
def test_the_reference_structure_agrees_with_gemmi(reference):
    out = oracles.check_structure(_view(reference), _tier("structure_oracle"))
    assert out.passed, out.message


def test_a_wrong_cell_is_caught(reference):
    cell = reference[1]["cell"].copy()
    cell[0] += 0.5
    out = oracles.check_structure(_view(reference, cell=cell), _tier("structure_oracle"))
    assert not out.passed and out.max_abs == pytest.approx(0.5)


def test_a_wrong_asu_count_is_caught(reference):
    n_asu = int(reference[1]["n_asu"])
    out = oracles.check_structure(_view(reference, n_asu=np.asarray(n_asu - 1)), _tier("structure_oracle"))
    assert not out.passed and f"{n_asu - 1} ASUs vs gemmi's {n_asu} operations" in out.message


# ------------------------------------------------------------------ P1 expansion
def test_the_reference_p1_expansion_agrees_with_gemmi_in_any_asu_order(reference):
    xyz = reference[1]["xyz"]
    assert oracles.check_p1(_view(reference), _tier("p1_oracle")).passed
    out = oracles.check_p1(_view(reference, xyz=xyz[::-1].copy()), _tier("p1_oracle"))
    assert out.passed and out.details["asu_order"] == list(range(len(xyz)))[::-1]


def test_a_shifted_asu_is_caught(reference):
    xyz = reference[1]["xyz"].copy()
    xyz[1] += 0.01  # 0.01 A: far beyond the oracle's 2e-6 relative tier
    out = oracles.check_p1(_view(reference, xyz=xyz), _tier("p1_oracle"))
    assert not out.passed and out.comparable


def test_a_duplicated_operator_is_caught(reference):
    xyz = reference[1]["xyz"].copy()
    xyz[1] = xyz[0]
    out = oracles.check_p1(_view(reference, xyz=xyz), _tier("p1_oracle"))
    assert not out.passed and "matched more than once" in out.message


def test_a_missing_asu_is_caught(reference):
    xyz = reference[1]["xyz"][:-1]
    out = oracles.check_p1(_view(reference, xyz=xyz), _tier("p1_oracle"))
    assert not out.passed and "P1 expansion has shape" in out.message


# ------------------------------------------------------------------ structure factors
def test_the_reference_structure_factors_agree_with_gemmi(reference):
    out = oracles.check_gemmi_sf(_view(reference), _tier("gemmi_oracle"))
    assert out.passed, out.message


def test_scaled_structure_factors_are_caught(reference):
    F = reference[1]["F_hkl"] * (1 + 1e-4)
    out = oracles.check_gemmi_sf(_view(reference, F_hkl=F), _tier("gemmi_oracle"))
    assert not out.passed and out.max_rel > 1e-5


def test_without_the_file_the_oracles_are_not_comparable(reference):
    spec, values = reference
    gone = StaticView(RunSpec(fixture=spec.fixture, pdb_path="/nonexistent/synthetic.pdb", samplings=spec.samplings),
                      reference=values)
    for check, stage in ((oracles.check_structure, "structure_oracle"), (oracles.check_p1, "p1_oracle"),
                         (oracles.check_gemmi_sf, "gemmi_oracle")):
        out = check(gone, _tier(stage))
        assert not out.comparable and "is not available here" in out.reason
