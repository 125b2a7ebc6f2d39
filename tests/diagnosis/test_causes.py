"""Root causes told apart (parity.running.causes): the input graph, recomputed inputs, the first failure in phase order."""
from __future__ import annotations

from pathlib import Path

import pytest

from parity.running import crossfeed as bs
from parity.running import causes
from parity.contract.quantities import QUANTITY_NAMES
from parity.rendering.report import render_report
from parity.running.runner import execute, make_run
from parity.stages import STAGES, get_stage, select
from parity.rendering.terminal import format_summary, format_table

REPO = Path(__file__).resolve().parents[2]
USER = "tests._check_backends:"
SMALL = ((-1, 1, 3),) * 3


@pytest.fixture(autouse=True)
def _importable(monkeypatch):
    monkeypatch.syspath_prepend(str(REPO))


def _rec(name, status, **extra):
    phase = get_stage(name).phase if not name.startswith("construction") else extra.pop("phase")
    return {"name": name, "status": status, "phase": phase, "kind": extra.pop("kind", "array"), **extra}


def _causes(records, crossfed=None):
    return {k: v["text"] for k, v in causes.assign_causes(records, crossfed).items()}


# ------------------------------------------------------------------ the registry's graph
def test_every_edge_names_a_contract_quantity():
    for s in STAGES:
        for q in s.recomputes + s.reads:
            assert q in QUANTITY_NAMES, (s.name, q)
        assert not set(s.recomputes) & set(s.inputs), s.name  # fed inputs are not recomputed
        assert not s.reads or s.kind == "invariant", s.name


def test_grad_q_declares_that_it_recomputes_K():
    assert "K" in get_stage("grad_q").recomputes and "K" in causes.upstream(get_stage("grad_q"))
    assert causes.upstream(get_stage("grad_q"), "inputs") == ("q_grid", "hessian", "Amat", "xyz", "ADP")
    assert "covar" in get_stage("ADP").recomputes and "Winv" in get_stage("eigenspaces").recomputes


def test_a_passing_stage_blocks_inheritance():
    """The port's case: asu_xyz fails, Amat and Mmat agree, Linv fails: two independent roots."""
    recs = [_rec("asu_xyz", "fail"), _rec("Amat", "pass"), _rec("Mmat", "pass"), _rec("Linv", "fail")]
    assert _causes(recs) == {"asu_xyz": "root cause", "Linv": "root cause"}
    # where nothing in between was compared, the error may have travelled: inherited
    recs = [_rec("asu_xyz", "fail"), _rec("Amat", "not_comparable"), _rec("Linv", "fail")]
    assert _causes(recs) == {"asu_xyz": "root cause", "Linv": "inherited from asu_xyz"}
    # an unrelated failure upstream in phase order is not an input: kvec does not feed Linv
    recs = [_rec("kvec", "fail"), _rec("Linv", "fail"), _rec("K", "fail"), _rec("D", "fail")]
    assert _causes(recs) == {"kvec": "root cause", "Linv": "root cause", "K": "inherited from kvec",
                             "D": "inherited from kvec, Linv"}


def test_recomputed_inputs_make_one_defect_one_root():
    recs = [_rec("K", "fail"), _rec("grad_q", "fail", kind="gradient")]
    # by cross-feeding: grad_q still diverges on fed inputs, but it recomputes K, a root
    assert _causes(recs, {"K": True, "grad_q": True}) == {"K": "root cause", "grad_q": "inherited from K"}
    assert causes.assign_causes(recs, {"K": True, "grad_q": True})["grad_q"]["basis"] == "recomputed internally"
    # by the graph alone
    assert _causes(recs) == {"K": "root cause", "grad_q": "inherited from K"}
    # the q-gradient's own defect (K agrees): a root
    assert _causes([_rec("K", "pass"), _rec("grad_q", "fail", kind="gradient")]) == {"grad_q": "root cause"}


def test_first_failure_is_in_phase_order_with_construction_at_its_phase():
    build = _rec("construction:candidate", "error", phase=3, kind="construction", details={"side": "candidate"})
    caused = _rec("K", "error", message="the candidate's construction failed at step 'phonons' (phase 3), so K "
                  "was not computed", details={"build_step": "phonons"})
    early = _rec("kvec", "fail")
    assert causes.first_failure([build, early, caused]) == "kvec"
    assert causes.first_failure([build, caused]) == "construction:candidate"
    assert causes.first_failure([build, _rec("hessian", "fail")]) == "hessian"  # compared in its phase
    assert _causes([build, early, caused]) == {"construction:candidate": "root cause", "kvec": "root cause",
                                               "K": "inherited from construction:candidate"}


# ------------------------------------------------------------------ whole runs
def test_a_candidate_diverging_early_and_refusing_late_fails_first_in_phase_1(tmp_path):
    run = make_run("synthetic", samplings=SMALL, candidate=USER + "DivergesEarlyRefusesLate")
    result = execute(run, select(phases=[1, 2, 3]), progress=False)
    assert result["first_failure"] == "kvec"
    by = {s["name"]: s for s in result["stages"]}
    assert by["construction:candidate"]["phase"] == 3
    assert by["kvec"]["cause"]["text"] == "root cause"
    assert by["construction:candidate"]["cause"]["text"] == "root cause"
    assert by["Winv"]["cause"]["text"] == "inherited from construction:candidate"
    assert "DIVERGED: first failure kvec (phase 1)" in format_summary(result)


def test_port_like_candidate_has_three_independent_roots():
    """Fast sibling of test_adapters' port test: no cross-feed, so the input graph decides."""
    run = make_run("synthetic", samplings=SMALL, candidate=USER + "PortLike")
    result = execute(run, select(phases=[1, 2, 3]), progress=False)
    by = {s["name"]: s for s in result["stages"]}
    assert result["first_failure"] == "kvec"
    for name in ("kvec", "asu_xyz", "Linv"):
        assert by[name]["cause"] == {"verdict": "root_cause", "inherited_from": [], "basis": "input graph",
                                     "text": "root cause"}, name
    assert by["K"]["cause"]["text"] == "inherited from kvec"
    assert by["Amat"]["status"] == by["Mmat"]["status"] == "pass"
    assert "root causes: kvec, asu_xyz, Linv (independent)" in format_summary(result)
    table = format_table(result)
    assert "ROOT CAUSE: " in table and "inherited from kvec: " in table
    html = render_report(result)
    banner = html[html.index('id="verdict"'):html.index('id="identity"')]
    assert "Independent root causes: <code>kvec</code>, <code>asu_xyz</code>, <code>Linv</code>" in banner
    assert "Inherited from kvec (by input graph)" in html
    # bisect on a candidate without cross-feed gives the same verdicts
    verdicts = bs.classify(run, result["stages"])
    assert verdicts.root_causes == ["kvec", "asu_xyz", "Linv"]
    assert {v.stage: v.text for v in verdicts.verdicts}["K"] == "inherited from kvec"


def test_phase_sign_is_one_root_by_cross_feeding():
    run = make_run("synthetic", samplings=SMALL, fault="phase_sign")
    result = execute(run, [get_stage(n) for n in ("K", "D", "grad_q")], progress=False)
    by = {s["name"]: s for s in result["stages"]}
    assert by["K"]["cause"]["text"] == "root cause" and by["grad_q"]["cause"]["text"] == "inherited from K"
    verdicts = bs.classify(run, result["stages"])
    assert verdicts.root_causes == ["K"]
    v = {v.stage: v for v in verdicts.verdicts}["grad_q"]
    assert v.basis == "recomputed internally" and v.text == "inherited from K"
    assert v.crossfed and "not close" in v.crossfed  # it does still diverge on fed inputs


def test_adp_scale_lands_on_covar_and_ADP_inherits():
    from parity.backends.faults import FAULTS

    assert FAULTS["adp_scale"].stage == "covar"
    run = make_run("synthetic", samplings=SMALL, fault="adp_scale")
    result = execute(run, [get_stage(n) for n in ("Kinv", "covar", "ADP")], progress=False)
    by = {s["name"]: s for s in result["stages"]}
    assert result["first_failure"] == "covar"
    assert by["covar"]["cause"]["text"] == "root cause" and by["ADP"]["cause"]["text"] == "inherited from covar"
    assert bs.classify(run, result["stages"]).root_causes == ["covar"]
