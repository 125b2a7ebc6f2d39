"""Spring constants "too stiff" decided before the Hessian (issue 21: F m -3 m was refused only after ~230 s).

The up-front check (eryx.stiffness) uses a lower bound of max lambda(D): it may refuse
only where the full spectrum check would refuse too, with the same reason.
"""
from __future__ import annotations

import numpy as np
import pytest

import eryx.models as npm
import eryx.models_torch as tm
import eryx.stiffness as stiffness
from eryx.errors import SpringConstantError
from eryx.fixtures import resolve_fixture

GRID = (-1, 1, 3)


@pytest.fixture(scope="module")
def synthetic():
    return str(resolve_fixture("synthetic"))


def test_asu_block_bound_is_a_lower_bound_and_close(synthetic):
    """Cauchy interlacing: lambda_max(D_00(k)) <= lambda_max(D(k)) at every k, and not far below."""
    m = npm.OnePhonon(synthetic, GRID, GRID, GRID)
    full = np.array([np.abs(np.linalg.eigvalsh(m.D(bz))).max() for bz in m.bz_points()])
    c = m.crystal
    bound = stiffness.asu0_block_max_eigenvalue(c.asu_xyz, c.masses[:c.n_at], c.cell_origin, m.gnm_cutoff,
                                                (1.0, 1.0), m.kvec.reshape(-1, 3))
    assert np.all(bound <= full * (1 + 1e-12))
    assert np.all(bound >= 0.5 * full)  # tight enough to decide clear cases (measured 0.84-1.0)


@pytest.mark.parametrize("cls", [npm.OnePhonon, tm.OnePhonon])
def test_too_stiff_is_refused_before_the_hessian(cls, synthetic, monkeypatch):
    def no_hessian(self):
        raise AssertionError("the Hessian was built before the refusal")

    monkeypatch.setattr(cls, "_setup_hessian", no_hessian)
    with pytest.raises(SpringConstantError, match="too stiff.*before building the Hessian") as info:
        cls(synthetic, GRID, GRID, GRID, gamma_intra=1e3, gamma_inter=1e3)
    assert info.value.kind == "too_stiff"
    assert "scale both spring constants down" in str(info.value)


@pytest.mark.parametrize("gamma", [1e3, 5e3])
def test_the_full_check_agrees_where_the_early_one_refuses(synthetic, monkeypatch, gamma):
    """Without the early check the full spectrum check refuses the same input, for the same
    reason: the early check never refuses input the model would accept."""
    monkeypatch.setattr(npm, "check_model_stiffness", lambda *a, **k: None)
    with pytest.raises(SpringConstantError, match="too stiff") as info:
        npm.OnePhonon(synthetic, GRID, GRID, GRID, gamma_intra=gamma, gamma_inter=gamma)
    assert "before building the Hessian" not in str(info.value)


def test_a_borderline_case_is_left_to_the_full_check(synthetic):
    """gamma 250 on the synthetic crystal: the ASU block bound (0.717 gamma) stays under the
    threshold 1e-12 / (24 eps) = 188, the full spectrum (0.773 gamma) reaches it: refused
    after the Hessian, by the full check, as before."""
    with pytest.raises(SpringConstantError, match="too stiff") as info:
        npm.OnePhonon(synthetic, GRID, GRID, GRID, gamma_intra=250.0, gamma_inter=250.0)
    assert "before building the Hessian" not in str(info.value)


def test_accepted_spring_constants_still_build(synthetic):
    m = tm.OnePhonon(synthetic, GRID, GRID, GRID, gamma_intra=10.0, gamma_inter=10.0)
    assert "stiffness" in m.completed_steps


def test_f_m_3_m_is_refused_up_front_with_the_reason(tmp_path, capsys):
    """The battery's case: 192 ASUs (n_dof 1152) in F m -3 m on a 25 A cubic cell; was
    refused after ~230 s of building, now in about a second, exit 2, one line."""
    from tests.scenarios.test_hostile import refused

    lines = []
    for line in resolve_fixture("synthetic").read_text().splitlines():
        if line.startswith("REMARK 290"):
            continue
        if line.startswith("CRYST1"):
            line = f"CRYST1   25.000   25.000   25.000  90.00  90.00  90.00 {'F m -3 m':<11}{line[66:]}"
        lines.append(line)
    pdb = tmp_path / "fm3m.pdb"
    pdb.write_text("\n".join(lines) + "\n")
    err = refused(capsys, "run", "--fixture", str(pdb), "--grid=-1,1,3", fragment="too stiff")
    assert "before building the Hessian" in err and "1152 eps" in err
