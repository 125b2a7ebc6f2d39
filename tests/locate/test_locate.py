"""parity locate: named probes across implementations and the torch operation trace.

Every named fault is localised twice: by the probes (numpy reference vs faulted torch:
the probe the fault changes) and by the operation trace (clean vs faulted torch: the
operation inside the fault's own code). Runs use the built-in synthetic crystal on an
oversampling-3 grid (sign errors in k show there; see test_faults_bisect).
"""
from __future__ import annotations

import inspect
import json

import numpy as np
import pytest
import torch

from eryx import probes as pr
from parity.commands.cli import main
from parity.backends.faults import FAULTS
from parity.locate.probes import ProbeRecorder, compare_probes, groups
from parity.locate.run import locate_probes, locate_trace, trace_session, _clean_torch_session
from parity.locate.trace import OpTrace, PerturbOp, compare_traces, rel_error
from parity.running.runner import make_run
from parity.contract.tiers import resolve_tier

GRID3 = ((-2, 2, 3),) * 3

#: The probe each fault changes first (the fault's stage, at its first wrong iteration).
FAULT_PROBES = {
    "grid_float32": "q_grid", "amat_shared_buffer": "A_block[asu=0, atom=1]", "linv_upper": "Linv",
    "linv_complex": "Linv", "phase_sign": "K[bz=1]", "eigvec_mixing": "V_Winv_VH[bz=0]",
    "bz_off_by_one": "bz_index[q=0]", "zero_modes_clamped": "Winv[bz=0]", "adp_scale": "ADP",
}


def _run(fault=None, **kw):
    return make_run("synthetic", samplings=GRID3, fault=fault, build=False, **kw)


# ------------------------------------------------------------------ the probe call
def test_quiet_blocks_keep_their_probes_to_themselves():
    seen = []
    with pr.listen(lambda name, *rest: seen.append(name)):
        pr.probe("before", 1)
        with pr.quiet():
            pr.probe("inside", 2)  # e.g. an input check reusing a model step
        pr.probe("after", 3)
    assert seen == ["before", "after"] and not pr.listening()


def test_the_stiffness_check_offers_no_probes():
    """A candidate's probe stream holds its own steps only (the up-front stiffness check
    builds an A matrix with the reference's code: none of its A_block values may appear)."""
    from eryx import stiffness
    from eryx.fixtures import resolve_fixture
    from eryx.structure import load_crystal

    crystal = load_crystal(str(resolve_fixture("synthetic")), True)
    seen = []
    with pr.listen(lambda name, *rest: seen.append(name)):
        stiffness.check_model_stiffness(crystal, (2, 2, 2), 4.0, (1.0, 1.0))
    assert seen == []


def test_probe_is_free_and_transparent_without_listener():
    x = np.arange(3.0)
    assert pr._listener is None and not pr.listening()
    assert pr.probe("x", x) is x
    with pr.probe_scope(i=1):
        assert pr._scope == []  # nothing pushed when nobody listens


def test_looped_and_vectorised_probes_are_the_same_probe():
    A = np.random.default_rng(0).normal(size=(2, 3, 3, 6))
    rec_loop, rec_vec = ProbeRecorder(), ProbeRecorder()
    with pr.listen(rec_loop):
        for i in range(2):
            with pr.probe_scope(asu=i):
                for a in range(3):
                    pr.probe("A_block", A[i, a], at={"atom": a})
    with pr.listen(rec_vec):
        pr.probe("A_block", A, axes=("asu", "atom"))
    assert pr._listener is None and pr._scope == []
    g_loop, g_vec = groups(rec_loop.records)["A_block"], groups(rec_vec.records)["A_block"]
    assert g_loop.index_names == g_vec.index_names == ("asu", "atom")
    np.testing.assert_array_equal(g_loop.dense()[0], g_vec.dense()[0])
    tier = resolve_tier("tight")
    assert compare_probes(rec_loop.records, rec_vec.records, lambda t, s: tier, tier).root is None
    B = A.copy()
    B[1, 2, 0, 4] += 1.0  # one iteration wrong: named, in the reference's loop order
    rec_bad = ProbeRecorder()
    with pr.listen(rec_bad):
        pr.probe("A_block", B, axes=("asu", "atom"))
    loc = compare_probes(rec_loop.records, rec_bad.records, lambda t, s: tier, tier)
    assert loc.root.first_bad == "A_block[asu=1, atom=2]"


def test_gathered_axis_and_transport_round_trip():
    rec = ProbeRecorder()
    with pr.listen(rec):
        pr.probe("F", np.array([5.0, 7.0]), axes=(("q", np.array([3, 1])),))
    meta, arrays = rec.to_arrays()
    back = ProbeRecorder.from_arrays(json.loads(json.dumps(meta)), arrays)
    dense, present = groups(back.records)["F"].dense()
    assert present.tolist() == [False, True, False, True] and dense[1] == 7.0 and dense[3] == 5.0


def test_probes_spill_to_disk_above_the_budget():
    rec = ProbeRecorder(budget=100)
    with pr.listen(rec):
        pr.probe("big", np.ones(1000))
    assert rec.spilled == 8000 and isinstance(rec.records[0].value, np.memmap)


# ------------------------------------------------------- every fault, by the probes
@pytest.mark.parametrize("fault", sorted(FAULT_PROBES))
def test_fault_localised_by_probes(fault):
    result = locate_probes(_run(fault), FAULTS[fault].stage)
    root = result.probes.root
    assert root is not None, result.text()
    assert (root.first_bad or root.key) == FAULT_PROBES[fault], result.text()
    assert root.where_candidate.startswith("eryx/models_torch.py:")  # where the candidate's value was probed


def test_no_fault_no_root_probe():
    result = locate_probes(_run(), "Id")
    assert result.probes.root is None and len(result.probes.results) >= 12, result.text()


def test_gradient_only_fault_is_not_claimed_by_value_probes():
    """q_gradient_sign changes no value: the probes agree (its line comes from the trace)."""
    assert locate_probes(_run("q_gradient_sign"), "grad_q").probes.root is None


# -------------------------------------------------------- every fault, by the trace
def _fault_lines(fault: str) -> set[int]:
    """Lines of the fault's code: its patch function (and the helper it differentiates through)."""
    import parity.backends.faults as pf

    out = set()
    helpers = {"q_gradient_sign": (pf._reflected,), "sulphur_mass": (pf._as_oxygen,)}
    for fn in (FAULTS[fault].patch,) + helpers.get(fault, ()):
        src, start = inspect.getsourcelines(fn)
        out |= set(range(start, start + len(src)))
    return out


@pytest.mark.parametrize("fault", sorted(FAULTS))
def test_fault_localised_by_trace(fault):
    stage = "eigenspaces" if FAULTS[fault].stage == "eigenspaces" else FAULTS[fault].stage
    result = locate_trace(_run(fault), stage)
    tr = result.trace
    text = (tr.root.label if tr.root else tr.unaligned_root) or ""
    where = text.split()[0]
    assert where.startswith("parity/backends/faults.py:"), result.text()
    assert int(where.split(":")[1]) in _fault_lines(fault), result.text()


@pytest.mark.parametrize("stage", ["K", "Id"])
def test_trace_same_code_agrees(stage):
    """No root in the same code (a map's uninitialised out= buffers are not compared)."""
    run = _run()
    result = locate_trace(run, stage)
    assert result.trace.root is None and result.trace.unaligned_root is None
    assert result.trace.alignment.startswith("identical")


def test_cpu_stand_in_one_perturbed_operation_is_the_root():
    """CPU-only stand-in for CPU vs CUDA: one operation rounds differently, it is the root."""
    run = _run()
    run.reference_session.build(), run.candidate_session.build()
    ref = _clean_torch_session(run)
    from parity.backends.eryx_torch import crossfeed_inputs

    inputs = {p: ref.get(p) for p in crossfeed_inputs("D")}
    clean = trace_session(ref, "D", inputs)
    target = next(o for o in clean.ops if o.op == "matmul" or o.op == "bmm" or o.op == "mm")
    with PerturbOp(target.op, target.where, rel=1e-9) as perturb:
        perturbed = trace_session(run.candidate_session, "D", inputs)
    assert perturb.hits >= 1
    cmp_ = compare_traces(clean, perturbed)
    assert cmp_.root is not None and cmp_.root.ref == target.index, cmp_.summary()
    assert cmp_.root.input_error <= cmp_.root.tolerance < cmp_.root.error


def test_trace_save_and_compare_against_file(tmp_path):
    run = _run("adp_scale")
    path = tmp_path / "t.npz"
    first = locate_trace(run, "ADP", save=str(path))
    again = locate_trace(_run(), "ADP", against=str(path))  # the saved (faulted) trace as the reference
    assert first.trace.unaligned_root and again.trace.root is None
    assert "parity/backends/faults.py" in (again.trace.alignment + str(again.trace.unaligned_root))


def test_trace_spills_above_budget_and_still_compares():
    x = torch.linspace(0, 1, 1000, dtype=torch.float64)
    with OpTrace(budget=0) as a:
        (x * 2).sin()
    with OpTrace(budget=0) as b:
        (x * 2).cos()
    assert a.spilled > 0 and b.spilled > 0
    cmp_ = compare_traces(a, b)
    assert cmp_.alignment.startswith("sequence alignment") and cmp_.unaligned_root is None
    assert cmp_.aligned[0].error == 0.0  # the mul agrees; sin and cos do not align (no claim)


def test_rel_error_kinds():
    assert rel_error(np.ones(3), np.ones(3) * (1 + 1e-8)) == pytest.approx(1e-8)
    assert rel_error(np.ones(3), np.ones(3, dtype=complex)) == np.inf
    assert rel_error(np.array([np.nan, 1.0]), np.array([1.0, 1.0])) == np.inf


# ------------------------------------------------------------------------ CLI
def test_cli_locate_names_root_and_exit_codes(capsys, tmp_path):
    html = tmp_path / "r.html"
    code = main(["locate", "--fixture", "synthetic", "--grid=-2,2,3", "--fault", "amat_shared_buffer",
                 "--html", str(html)])
    out = capsys.readouterr().out
    assert code == 1 and "A_block[asu=0, atom=1]" in out and "the run's first failing stage" in out
    assert 'id="locate"' in html.read_text()
    assert main(["locate", "--fixture", "synthetic", "--grid=-2,2,3", "--stage", "nope"]) == 2


def test_cli_locate_trace_html_has_stream_and_figure(capsys, tmp_path):
    html = tmp_path / "t.html"
    code = main(["locate", "--fixture", "synthetic", "--grid=-2,2,3", "--fault", "phase_sign", "--stage", "K",
                 "--trace", "--html", str(html)])
    text = html.read_text()
    assert code == 1 and "parity/backends/faults.py:" in capsys.readouterr().out
    assert "data:image/png;base64," in text
    assert "Operation trace" in text and "<img alt=\"error along the operation stream\"" in text


def test_bisect_proposes_locate():
    from parity.running.crossfeed import bisect_run, format_bisect

    run = make_run("synthetic", samplings=GRID3, fault="phase_sign")
    from parity.stages import select

    text = format_bisect(bisect_run(run, select(names=["kvec", "hessian", "K"]), progress=False)[1])
    assert "Next: parity locate --stage K" in text


def test_probes_travel_in_a_dump(tmp_path):
    from parity.backends import get_backend
    from parity.backends.dump import write_dump

    path = tmp_path / "numpy.npz"
    write_dump(get_backend("numpy").open(_run().spec), path, names=["Amat"], probes=True)
    run = make_run("synthetic", samplings=GRID3, fault="amat_shared_buffer", reference="dump",
                   reference_path=str(path), build=False)
    result = locate_probes(run, "Amat")
    assert result.probes.root.first_bad == "A_block[asu=0, atom=1]", result.text()
    assert result.probes.root.where_reference.startswith("eryx/geometry.py:")  # build_A; recorded when the dump was made
