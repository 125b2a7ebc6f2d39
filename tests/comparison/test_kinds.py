"""Comparison kinds as classes (issue 17, item 2): the registry, what each kind owns, and
that every registered kind catches a deliberately wrong value.

The per-kind scenarios run the kind's own comparator on a small stand-in run (no model
is built), so they are fast; the same kinds failing under real backend faults are in
tests/running/test_crossfeed.py ("every comparison kind can fail").
"""
from __future__ import annotations

import ast
from pathlib import Path

import gemmi
import numpy as np
import pytest

import parity
from eryx.fixtures import fixture_available, resolve_fixture
from parity.backends.base import NotProvided
from parity.comparison.arrays import ArrayKind, GradientKind
from parity.comparison.common import failure_message, greatest
from parity.comparison.comparator import Comparator, Setting
from parity.comparison.kinds import KIND_NAMES, REGISTRY, find_kind, get_kind
from parity.stages import KINDS, STAGES, Stage, get_stage
from parity.contract.tiers import resolve_tier
from parity.running import crossfeed
from parity.running.runner import Run


# ------------------------------------------------------------------ a stand-in run
class _Spec:
    def __init__(self, pdb_path: str = "", n_q: int = 0, map_shape=(0, 0, 0)) -> None:
        self.pdb_path, self.params, self.n_q, self.map_shape = pdb_path, {}, n_q, map_shape


class FakeRun:
    """The part of a run a comparator reads (parity.comparison.comparator.RunView)."""

    def __init__(self, reference: dict, candidate: dict, dtype: str = "float64", spec: _Spec | None = None) -> None:
        self.sides = {"reference": reference, "candidate": candidate}
        self.dtype, self.spec, self.tier_overrides = dtype, spec or _Spec(), {}

    def value(self, side: str, name: str):
        if name not in self.sides[side]:
            raise NotProvided(f"{side} lacks {name}")
        v = self.sides[side][name]
        return v if isinstance(v, dict) else np.asarray(v)

    def reference_value(self, name):
        return self.value("reference", name)

    def candidate_value(self, name):
        return self.value("candidate", name)

    def stage_value(self, stage, side, feed=None):
        name = stage.quantity if side == "candidate" else stage.reference_quantity
        return np.asarray(self.value(side, name) if feed is None else feed)

    def locator(self, how):
        return None


def _judge(stage: Stage, run: FakeRun):
    return stage.comparator.compare(stage, run, Setting(resolve_tier(stage.tier, run.dtype),
                                                        not_provided=(NotProvided,)))


# ------------------------------------------------------------------ one wrong value per kind
def _array():
    rng = np.random.default_rng(0)
    q = rng.normal(size=(24, 3))
    wrong = q.copy()
    wrong[5, 1] *= 1 + 1e-6  # far above the tight tier's 1e-12-ish allowance
    return Stage("q_like", 1, "tight", "array", "test"), {"q_like": q}, {"q_like": q}, {"q_like": wrong}


def _exact():
    idx = np.arange(27) % 8
    return (Stage("bz_like", 1, "exact", "exact", "test"), {"bz_like": idx}, {"bz_like": idx.copy()},
            {"bz_like": np.roll(idx, 1)})


def _eigen():
    rng = np.random.default_rng(1)
    a = rng.normal(size=(2, 4, 4))
    w, v = np.linalg.eigh(a + np.swapaxes(a, -1, -2))  # distinct eigenvalues: one mode per cluster
    mixed = v.copy()
    c, s = np.cos(0.3), np.sin(0.3)  # eigenvectors of two different eigenvalues mixed at item 1
    mixed[1, :, 0], mixed[1, :, 1] = c * v[1, :, 0] + s * v[1, :, 1], -s * v[1, :, 0] + c * v[1, :, 1]
    ref = {"Winv": w, "V": v}
    return (Stage("eig_like", 3, "decomposition", "eigenspace", "test", quantity="V"), ref,
            {"Winv": w.copy(), "V": v.copy()}, {"Winv": w.copy(), "V": mixed})


def _dtype():
    right = {"K": "complex128", "kvec_norm": "float64"}
    return (Stage("dtypes_like", 1, "exact", "dtype", "test", quantity="dtypes"), {}, {"dtypes": right},
            {"dtypes": {**right, "kvec_norm": "float32"}})


def _gradient():
    g = np.array([[0.5, -1.25], [2.0, 3.5]])
    return Stage("grad_like", 4, "gradient", "gradient", "test"), {"grad_like": g}, {"grad_like": g.copy()}, \
        {"grad_like": -g}


def _oracle():
    # The registry's own structure oracle, against gemmi's reading of a fixture file.
    if not fixture_available("2ol9"):
        pytest.skip("fixture 2ol9 not available (ERYX_FIXTURES_DIR)")
    path = resolve_fixture("2ol9")
    st = gemmi.read_pdb(str(path))
    cell = np.array([st.cell.a, st.cell.b, st.cell.c, st.cell.alpha, st.cell.beta, st.cell.gamma])
    n_ops = len(st.find_spacegroup().operations())
    ref = {"cell": cell, "n_asu": n_ops}
    wrong = {"cell": cell * np.array([1, 1, 1 + 1e-6, 1, 1, 1]), "n_asu": n_ops}
    return get_stage("structure_oracle"), ref, {}, wrong, _Spec(str(path))


def _invariant():
    rng = np.random.default_rng(2)
    k = rng.normal(size=(3, 6, 6)) + 1j * rng.normal(size=(3, 6, 6))
    herm = k + np.conj(np.swapaxes(k, -1, -2))
    wrong = herm.copy()
    wrong[1, 0, 1] += 1e-6 * np.abs(herm).max()
    return get_stage("K_hermitian"), {}, {"K": herm}, {"K": wrong}


#: A deliberately wrong value per registered kind: (stage, reference, right candidate, wrong
#: candidate). For an oracle the reference itself is what is judged (right / wrong reference).
SCENARIOS = {"array": _array, "exact": _exact, "eigenspace": _eigen, "dtype": _dtype, "gradient": _gradient,
             "oracle": _oracle, "invariant": _invariant}


def test_every_registered_kind_has_a_wrong_value_scenario():
    assert set(SCENARIOS) == set(REGISTRY)


def _runs(kind: str):
    stage, ref, right, wrong, *spec = SCENARIOS[kind]()
    spec = spec[0] if spec else None
    if kind == "oracle":  # the oracle judges the reference
        return stage, FakeRun(ref, {}, spec=spec), FakeRun(wrong, {}, spec=spec)
    return stage, FakeRun(ref, right, spec=spec), FakeRun(ref, wrong, spec=spec)


@pytest.mark.parametrize("kind", sorted(SCENARIOS))
def test_each_kind_passes_the_right_value_and_catches_a_wrong_one(kind):
    stage, good, bad = _runs(kind)
    assert stage.kind == kind and stage.comparator is REGISTRY[kind]
    ok = _judge(stage, good)
    assert ok.status == "pass", ok.message
    caught = _judge(stage, bad)
    assert caught.status == "fail", caught.message
    assert caught.n_mismatch >= 1


def test_the_eigenspace_kind_checks_the_eigen_equation_only_where_d_and_u_are_provided():
    stage, good, _ = _runs("eigenspace")
    with pytest.raises(NotProvided):  # only the run's own "not provided" is caught
        stage.comparator.compare(stage, good, Setting(resolve_tier(stage.tier, "float64")))
    result = _judge(stage, good)  # the stand-in provides no D or U: NotProvided is not an error
    assert result.status == "pass" and all(row["residual"] is None for row in result.details["eigen_table"])
    w, v = good.sides["candidate"]["Winv"], good.sides["candidate"]["V"]
    d = v @ (w[..., None] * np.swapaxes(v, -1, -2))  # the matrix v diagonalises
    good.sides["candidate"].update(D=d, U=v)
    result = _judge(stage, good)
    assert result.status == "pass" and all(row["residual"] is not None for row in result.details["eigen_table"])
    good.sides["candidate"]["D"] = d + 1e-3 * np.eye(4)[None, ::-1]  # U no longer diagonalises D
    assert _judge(stage, good).status == "fail"


# ------------------------------------------------------------------ the registry
def test_the_registry_lists_the_seven_kinds_in_order():
    assert KIND_NAMES == ("array", "exact", "eigenspace", "dtype", "gradient", "oracle", "invariant")
    assert KINDS == KIND_NAMES  # the stage registry's public name still answers
    assert all(isinstance(c, Comparator) and c.name == n for n, c in REGISTRY.items())


def test_every_stage_refers_to_its_kind_through_the_registry():
    for s in STAGES:
        assert s.comparator is get_kind(s.kind)


def test_a_stage_accepts_a_kind_name_or_class_and_refuses_an_unknown_kind():
    assert Stage("g", 4, "gradient", GradientKind, "d").kind == "gradient"
    assert Stage("a", 1, "tight", ArrayKind(), "d").comparator is REGISTRY["array"]
    with pytest.raises(ValueError) as exc:
        Stage("x", 1, "tight", "arrays", "d")
    assert "'arrays'" in str(exc.value) and all(k in str(exc.value) for k in KIND_NAMES)

    class Unregistered(ArrayKind):
        name = "array"  # same name, not the registered class

    with pytest.raises(ValueError):
        Stage("x", 1, "tight", Unregistered, "d")


def test_a_stored_record_kind_is_looked_up_without_failing():
    assert find_kind("eigenspace") is REGISTRY["eigenspace"]
    assert find_kind("construction") is None and find_kind(None) is None


def test_what_each_kind_feeds_and_produces():
    by_kind = {s.kind: s for s in STAGES}
    assert crossfeed._feed_names(by_kind["eigenspace"]) == ("Winv", "V", "D", "U")
    assert crossfeed._feed_names(get_stage("Id_cluster0")) == ("mode_maps",)
    values = {"Winv": 1, "V": 2, "D": 3, "U": 4}
    assert by_kind["eigenspace"].comparator.fed_value(by_kind["eigenspace"], values) == values
    assert by_kind["array"].comparator.fed_value(get_stage("K"), {"K": 7}) == 7
    computing = {k for k, c in REGISTRY.items() if c.computes}
    assert computing == {"array", "exact", "eigenspace", "gradient"}
    for kind in set(REGISTRY) - computing:  # a check has no computation to re-feed
        with pytest.raises(NotProvided, match=f"is a {kind} check"):
            crossfeed.crossfeed(None, by_kind[kind])
    assert {k for k, c in REGISTRY.items() if not c.needs_reference} == {"dtype", "invariant"}


def test_the_real_run_offers_what_a_comparator_reads():
    for name in ("stage_value", "reference_value", "candidate_value", "locator", "dtype", "spec"):
        assert hasattr(Run, name) or name in Run.__dataclass_fields__, name


def test_an_array_kind_diagnoses_a_constant_factor():
    stage = Stage("M_like", 2, "tight", "array", "test", axes=("row", "column"))
    e = np.random.default_rng(3).normal(size=(6, 6))
    run = FakeRun({"M_like": e}, {"M_like": 2 * e}, spec=_Spec())
    sigs, de, da = stage.comparator.diagnose(stage, run, resolve_tier("tight", "float64"))
    assert any(s.explains and s.name == "constant_factor" for s in sigs), [s.name for s in sigs]
    assert np.array_equal(de, e) and np.array_equal(da, 2 * e)
    assert REGISTRY["invariant"].diagnose(get_stage("friedel"), run, resolve_tier("exact", "float64")) == \
        ([], None, None)


# ------------------------------------------------------------------ one message layout
def test_the_shared_failure_layout():
    text = failure_message("x: not close", n_mismatch=1, n_total=3, unit="things",
                           findings=["", greatest("absolute difference", 0.1, "index (1,)", 1e-5)])
    assert text.splitlines() == ["x: not close", "Mismatched things: 1 / 3 (33.3%)",
                                 "Greatest absolute difference: 0.1 at index (1,) (up to 1e-05 allowed)"]
    assert failure_message("dtype audit: 1 of 2", findings=["  a: float32"]) == "dtype audit: 1 of 2\n  a: float32"


@pytest.mark.parametrize("kind,unit", [("array", "elements"), ("eigenspace", "batch items")])
def test_array_and_eigenspace_failures_share_the_layout(kind, unit):
    stage, _, bad = _runs(kind)
    lines = _judge(stage, bad).message.splitlines()
    assert lines[0].startswith(f"{stage.name}")
    assert lines[1].startswith(f"Mismatched {unit}: 1 / ")


# ------------------------------------------------------------------ no kind name tested outside the registry
_KIND_STRINGS = frozenset(KIND_NAMES)


def _mentions_kind(node: ast.AST) -> bool:
    return any((isinstance(n, ast.Name) and "kind" in n.id.lower())
               or (isinstance(n, ast.Attribute) and "kind" in n.attr.lower())
               or (isinstance(n, ast.Constant) and n.value == "kind") for n in ast.walk(node))


def _kind_literals(node: ast.AST) -> set[str]:
    items = node.elts if isinstance(node, (ast.Tuple, ast.List, ast.Set)) else [node]
    return {i.value for i in items if isinstance(i, ast.Constant) and i.value in _KIND_STRINGS}


def kind_name_tests(source: str) -> list[int]:
    """Lines comparing something named like a kind to a comparison kind's name, or
    naming a collection of kind names (``_PRODUCING_KINDS = ("array", "exact")``)."""
    lines = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Compare):
            operands = [node.left, *node.comparators]
            if any(_mentions_kind(o) for o in operands) and any(_kind_literals(o) for o in operands):
                lines.append(node.lineno)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)) and node.value is not None and \
                isinstance(node.value, (ast.Tuple, ast.List, ast.Set)) and _kind_literals(node.value) and \
                any(_mentions_kind(t) for t in (node.targets if isinstance(node, ast.Assign) else [node.target])):
            lines.append(node.lineno)
    return sorted(lines)


def test_the_kind_name_check_sees_the_old_spellings():
    old = ('if stage.kind in ("invariant", "oracle"):\n    pass\n'
           'if stage.kind == "eigenspace":\n    pass\n'
           'kind = str(stage.get("kind"))\nif kind == "dtype":\n    pass\n'
           '_PRODUCING_KINDS = ("array", "exact", "eigenspace", "gradient")\n'
           'grad = st.kind == "gradient"\n')
    assert kind_name_tests(old) == [1, 3, 6, 8, 9]
    fine = ('if r.kind != "slowdown":\n    pass\nif kind == "grid":\n    pass\n'
            'if rec.get("kind") == "construction":\n    pass\nif name == "exact":\n    pass\n'
            'FIELDS = (("device", "device"), ("dtype", "dtype"))\n')
    assert kind_name_tests(fine) == []


def test_no_kind_name_is_tested_outside_the_comparison_package():
    root = Path(parity.__file__).resolve().parent
    found = {}
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root)
        if rel.parts[0] == "comparison":
            continue
        lines = kind_name_tests(path.read_text(encoding="utf-8"))
        if lines:
            found[str(rel)] = lines
    assert not found, f"ask stage.comparator instead of testing a kind's name: {found}"


def test_adding_a_kind_is_one_class_and_one_registry_entry(monkeypatch):
    from parity.comparison import kinds
    from parity.comparison.common import Comparison

    class TotalKind(Comparator):
        """A new kind: the two sides' totals must agree exactly."""

        name = "total"

        def compare(self, stage, run, setting, feed=None):
            e, a = run.stage_value(stage, "reference").sum(), run.stage_value(stage, "candidate", feed).sum()
            return Comparison(kind=self.name, passed=bool(a == e), n_mismatch=int(a != e), n_total=1,
                              n_compared=1, message=f"{stage.name}: total {a} vs {e}")

    monkeypatch.setitem(kinds.REGISTRY, "total", TotalKind())
    stage = Stage("n_atoms", 2, "exact", "total", "test")
    assert stage.comparator is kinds.REGISTRY["total"] and crossfeed._feed_names(stage) == ("n_atoms",)
    run = FakeRun({"n_atoms": [3, 4]}, {"n_atoms": [4, 3]})
    assert _judge(stage, run).status == "pass"
    run.sides["candidate"]["n_atoms"] = [4, 4]
    assert _judge(stage, run).status == "fail"
    assert find_kind("total").count_units(1) == ("elements", "elements")
