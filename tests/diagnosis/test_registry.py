"""The diagnosis registry: adding a hypothesis family is one entry, made through the public way.

Toy families are defined here, in the test, and registered for the test's duration with
``registry.registered`` (no module of the package is edited or patched): the diagnosis then
reports them, ranks them by the rank their entry gives, and draws their figure. The defects
are built with plain NumPy; every expected value is the one put in.
"""
from __future__ import annotations

import numpy as np
import pytest

from parity.contract.tiers import TIERS
from parity.diagnosis import registry
from parity.diagnosis.engine import Context, Pair, Transform, run_transforms
from parity.diagnosis.registry import Hypothesis, Stage
from parity.diagnosis.result import Signature
from parity.diagnosis.signatures import NO_SIGNATURE, diagnose_arrays, figure, summary_phrase
from parity.diagnosis.wording import within

TIGHT = TIERS["tight"]
BUDGET = 30.0  # generous: these tests check what is found, never how fast


def spread(shape, seed=0):
    r = np.random.default_rng(seed)
    return r.standard_normal(shape) * 10.0 ** r.uniform(-2, 2, shape)


# --------------------------------------------------------------------------- a toy family: an offset
def examine_offset(p: Pair, ctx: Context) -> list[Signature]:
    """candidate = reference + c: a hypothesis the library does not have."""
    f = p.finite
    c = float(np.median(p.a[f] - p.e[f]))
    residual, ok = within(p.a[f], p.e[f] + c, p.tier)
    if not ok:
        return []
    return [Signature("offset", f"+ {c:g}", f"candidate = reference + {c:g}.", {"offset": c}, residual, True)]


def draw_offset(fig, sig, expected, actual) -> bool:
    fig.add_subplot().plot(np.ravel(actual) - np.ravel(expected))
    return True


OFFSET = Hypothesis("offset", examine_offset, Stage.SEARCH, ("offset",), 95, {"offset": draw_offset})


@pytest.fixture
def offset_family():
    with registry.registered(OFFSET) as h:
        yield h


def test_an_unknown_defect_has_no_signature_without_the_toy_family():
    e = spread((12, 9))
    sigs = diagnose_arrays(e, e + 0.5, TIGHT, time_budget_s=BUDGET)
    assert summary_phrase(sigs) == NO_SIGNATURE
    assert "offset" not in [s.name for s in sigs]


def test_one_registered_entry_is_diagnosed_reported_and_drawn(offset_family):
    e = spread((12, 9))
    sigs = diagnose_arrays(e, e + 0.5, TIGHT, time_budget_s=BUDGET)
    assert sigs[0].name == "offset" and sigs[0].explains
    assert sigs[0].params["offset"] == pytest.approx(0.5, rel=1e-12)
    assert summary_phrase(sigs) == "+ 0.5"
    assert sigs[0].params["analysed_shape"] == [12, 9]  # the engine's own notes are added to it
    assert figure(sigs[0], e, e + 0.5).startswith("data:image/png;base64,")


def test_the_entry_is_gone_after_the_fixture():
    names = [h.name for h in registry.HYPOTHESES]
    with registry.registered(OFFSET):
        assert [h.name for h in registry.HYPOTHESES] == names + ["offset"]
        assert registry.rank("offset") == 95
    assert [h.name for h in registry.HYPOTHESES] == names
    assert registry.rank("offset") == float("inf") and registry.drawer("offset") is None
    e = spread((12, 9))
    assert summary_phrase(diagnose_arrays(e, e + 0.5, TIGHT, time_budget_s=BUDGET)) == NO_SIGNATURE


def test_a_search_family_runs_only_while_nothing_explains():
    calls = []

    def examine(p: Pair, ctx: Context) -> list[Signature]:
        calls.append(p.e.shape)
        return []

    e = spread((8, 8))
    with registry.registered(Hypothesis("recorder", examine, Stage.SEARCH, ("recorded",), 96)):
        assert diagnose_arrays(e, e.T.copy(), TIGHT, time_budget_s=BUDGET)[0].name == "transpose"
        assert calls == []
        diagnose_arrays(e, e + 0.5, TIGHT, time_budget_s=BUDGET)
        assert calls == [(8, 8)]


# --------------------------------------------------------------------------- a toy transform family: rank decides
def axes_swapped(rank: int) -> Hypothesis:
    """The same statement as a transpose under another name, built on the engine's transforms."""
    def examine(p: Pair, ctx: Context) -> list[Signature]:
        return run_transforms(p, ctx.clock, [Transform("axes_swapped", "axes swapped", {}, swap=g)
                                             for g in p.groups])
    return Hypothesis("axes_swapped", examine, Stage.TRANSFORM, ("axes_swapped",), rank)


@pytest.mark.parametrize("rank, first, second", [(55, "axes_swapped", "transpose"),
                                                  (65, "transpose", "axes_swapped")])
def test_the_entry_rank_orders_equivalent_explanations(rank, first, second):
    e = spread((7, 7))
    with registry.registered(axes_swapped(rank)):
        sigs = diagnose_arrays(e, e.T.copy(), TIGHT, time_budget_s=BUDGET)
    explaining = [s.name for s in sigs if s.explains]
    assert explaining == [first, second]
    # Two transforms explaining the same data are one statement, said on the first.
    other = {"transpose": "transpose", "axes_swapped": "axes swapped"}[second]
    assert sigs[0].params["equivalent"] == [other]


# --------------------------------------------------------------------------- the table itself
def test_default_simplicity_order_is_the_documented_one():
    # docs/diagnosis.md: "explaining signatures by simplicity (...)", then the diagnosis's own notes.
    assert registry.simplicity_order() == (
        "shape", "real_as_complex", "complex_as_real", "nan_pattern", "zero", "constant_factor",
        "conjugate", "swap_re_im", "transpose", "conj_transpose", "shift", "reverse", "negate_index",
        "permutation", "precision", "accumulation", "eigen_conjugate", "eigen_rotation", "eigenvalues",
        "partial", "incomplete", "internal_error")


def test_register_refuses_a_clash_and_an_unknown_position():
    with pytest.raises(ValueError, match="registered already"):
        registry.register(Hypothesis("shift", examine_offset, Stage.SEARCH, ("offset",), 95))
    with pytest.raises(ValueError, match="already in use"):
        registry.register(Hypothesis("toy", examine_offset, Stage.SEARCH, ("shift",), 95))
    with pytest.raises(ValueError, match="already in use"):
        registry.register(Hypothesis("toy", examine_offset, Stage.SEARCH, ("offset",), 70))
    with pytest.raises(ValueError, match="no hypothesis family"):
        registry.register(OFFSET, before="no_such_family")
    assert "offset" not in [h.name for h in registry.HYPOTHESES]
    with pytest.raises(KeyError):
        registry.unregister("offset")


def test_before_places_the_entry_in_its_stage():
    with registry.registered(OFFSET, before="permutation"):
        assert [h.name for h in registry.hypotheses(Stage.SEARCH)] == ["offset", "permutation"]
