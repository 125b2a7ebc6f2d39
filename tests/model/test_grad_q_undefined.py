"""d Id / d q where Id itself is undefined (issue 21: a P1 cell without REMARK 290 gave NaN
q-gradients on the torch side where the NumPy reference was finite).

At a k-point with zero modes (e.g. k = (1/2, 0, 0) when a molecule touches none of its
images along a, so K(k) = K(0) along that line) Id is NaN on both sides. The torch
candidate's gradient is NaN there; the reference's central differences used to be finite
(the shifted points beside it see a nearly singular K: differences of order 1e13 that mean
nothing). The rule, on both sides: NaN where Id(q) is not finite.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from parity.running.runner import build_sessions, make_run

GRID = [(-1, 1, 2)] * 3


def _reference_session():
    run = make_run("synthetic", samplings=GRID)
    build_sessions(run)
    return run.session("reference")


def test_reference_grad_q_is_nan_where_id_is_undefined(monkeypatch):
    session = _reference_session()
    q0 = session.get("q_grid")[session.spec.grad_q_sample]
    assert len(q0) >= 2

    def q_map(q):
        # A smooth map (gradient 2 q) that is undefined exactly at the first sample point,
        # and finite at every point beside it.
        out = np.sum(q * q, axis=1)
        out[np.all(q == q0[0], axis=1)] = np.nan
        return out

    monkeypatch.setattr(session, "_q_map", q_map)
    grad = session._fd_q()
    assert np.isnan(grad[0]).all()  # finite neighbours, yet Id(q0) is undefined
    np.testing.assert_allclose(grad[1:], 2 * q0[1:], rtol=1e-6)


def test_grad_q_agrees_on_a_p1_cell_without_remark_290(tmp_path):
    """End to end on the fixture that showed it (a P1 cell, no REMARK 290)."""
    directory = os.environ.get("ERYX_FIXTURES_DIR")
    source = Path(directory or "", "histidine_p1.pdb")
    if not directory or not source.is_file():
        pytest.skip("ERYX_FIXTURES_DIR is not set or has no histidine_p1.pdb")
    pdb = tmp_path / "p1.pdb"
    pdb.write_text("".join(line for line in source.read_text().splitlines(keepends=True)
                           if not line.startswith("REMARK 290")))
    run = make_run(str(pdb))
    build_sessions(run)
    ref, cand = run.reference_value("grad_q"), run.candidate_value("grad_q")
    Id = run.reference_value("Id").reshape(-1)[run.spec.grad_q_sample]
    assert np.isnan(Id).any()  # the case in point: sample points at zero-mode k-points
    np.testing.assert_array_equal(np.isnan(ref), np.isnan(Id)[:, None] & np.ones((1, 3), bool))
    np.testing.assert_array_equal(np.isnan(cand), np.isnan(ref))
    finite = np.isfinite(ref)
    np.testing.assert_allclose(cand[finite], ref[finite], rtol=1e-6, atol=1e-8 * np.abs(ref[finite]).max())
