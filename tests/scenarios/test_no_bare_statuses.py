"""No module outside the result types compares a status or a verdict with its bare string
(issue 17: statuses are an enumeration, ``parity.contract.results.Status`` / ``Verdict``);
nor a history regression's kind outside its module (``parity.storage.regressions.RegressionKind``).

The check reads the package's source (AST): a comparison (``==``, ``!=``, ``in``, ``not in``)
between a status or verdict (a ``["status"]``/``["verdict"]`` item, a ``.status``/``.verdict``
attribute, a name containing "status" or "verdict", or a ``.get`` of those keys) and one
of the enumerations' strings is reported with its file and line. Other tools have their
own case vocabularies (a bench case's ``error``, a mutant's ``error`` verdict, a contract
self-check's ``wrong``/``error``): those modules are listed below with what they compare.
"""
from __future__ import annotations

import ast
import json
from dataclasses import asdict
from pathlib import Path

import pytest

import parity
from parity.contract.results import Status, Verdict
from parity.storage.regressions import Regression, RegressionKind

ROOT = Path(parity.__file__).resolve().parent
#: The modules that define the enumerations (and so spell their values).
OWNERS = {"contract/statuses.py", "contract/results.py"}
#: Modules whose "status"/"verdict" is another vocabulary than a stage's or a run's.
OTHER_VOCABULARIES = {
    "benchmarking/bench.py": "a bench case's status (ok, skipped, error)",
    "benchmarking/tables.py": "a bench case's status (ok, skipped, error)",
    "backends/selfcheck.py": "a contract self-check's status per quantity (ok, wrong, error, ...)",
    "mutation/report.py": "a mutant's diff verdict (same, differs, error)",
    "mutation/diff.py": "a mutant's diff verdict (same, differs, error)",
    "mutation/locate_hits.py": "a sampled mutant's locate outcome (hit, miss, error, timeout)",
}
WORDS = {s.value for s in Status} | {v.value for v in Verdict}


def _is_status(node: ast.AST) -> bool:
    """A status or verdict: r["status"], r.get("verdict"), c.status, status_name, ..."""
    if isinstance(node, ast.Subscript) and isinstance(node.slice, ast.Constant):
        return node.slice.value in ("status", "verdict")
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "get":
        return bool(node.args) and isinstance(node.args[0], ast.Constant) and node.args[0].value in ("status", "verdict")
    if isinstance(node, ast.Attribute):
        return node.attr in ("status", "verdict")
    if isinstance(node, ast.Name):
        return "status" in node.id or "verdict" in node.id
    return False


def _bare(node: ast.AST) -> bool:
    if isinstance(node, ast.Constant) and node.value in WORDS:
        return True
    if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
        return any(_bare(e) for e in node.elts)
    return False


def bare_status_tests(source: str) -> list[int]:
    """Lines of ``source`` that compare with, or key a dict by, a bare status/verdict string."""
    lines = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Compare):
            operands = [node.left, *node.comparators]
            if any(_bare(x) for x in operands) and any(_is_status(x) for x in operands):
                lines.append(node.lineno)
    return sorted(lines)


def test_the_check_sees_the_old_spellings():
    assert bare_status_tests('if r["status"] == "pass": pass') == [1]
    assert bare_status_tests('x = r["status"] in ("fail", "error")') == [1]
    assert bare_status_tests('ok = result.get("verdict") != "diverged"') == [1]
    assert bare_status_tests('if status == "not_comparable": pass') == [1]
    assert bare_status_tests('if r["status"] == Status.PASS: pass') == []
    assert bare_status_tests('msg = "did not pass"') == []
    assert bare_status_tests('if "error" in mem: pass') == []  # not a status


def offenders(check, exempt) -> dict[str, list[int]]:
    """``{module: lines}`` of the package's modules (but ``exempt``) where ``check`` finds some."""
    found = {}
    for path in sorted(ROOT.rglob("*.py")):
        rel = path.relative_to(ROOT).as_posix()
        lines = [] if rel in exempt else check(path.read_text(encoding="utf-8"))
        if lines:
            found[rel] = lines
    return found


def test_no_bare_status_or_verdict_test_outside_the_result_types():
    found = offenders(bare_status_tests, OWNERS | set(OTHER_VOCABULARIES))
    assert not found, f"bare status/verdict strings compared (use Status / Verdict): {found}"


# ------------------------------------------------------------------ regression kinds
#: A history regression's kind is an enumeration too (parity.storage.regressions.RegressionKind).
KIND_WORDS = {k.value for k in RegressionKind}
KIND_OWNER = "storage/regressions.py"


def bare_regression_kind_tests(source: str) -> list[int]:
    """Lines of ``source`` comparing a ``.kind`` (or a name holding "kind") with a bare
    regression-kind string (``"slowdown"``, ``"memory_growth"``, ...)."""
    def is_kind(node: ast.AST) -> bool:
        return (isinstance(node, ast.Attribute) and node.attr == "kind") or (
            isinstance(node, ast.Name) and "kind" in node.id)

    def bare(node: ast.AST) -> bool:
        if isinstance(node, ast.Constant):
            return node.value in KIND_WORDS
        return isinstance(node, (ast.Tuple, ast.List, ast.Set)) and any(bare(e) for e in node.elts)

    return sorted(node.lineno for node in ast.walk(ast.parse(source)) if isinstance(node, ast.Compare)
                  and any(bare(x) for x in (node.left, *node.comparators))
                  and any(is_kind(x) for x in (node.left, *node.comparators)))


def test_the_kind_check_sees_the_old_spellings():
    assert bare_regression_kind_tests('x = [r for r in rs if r.kind == "slowdown"]') == [1]
    assert bare_regression_kind_tests('if kind in ("status_flip", "error_growth"): pass') == [1]
    assert bare_regression_kind_tests('x = r.kind is RegressionKind.SLOWDOWN') == []
    assert bare_regression_kind_tests('x = stage.kind == "oracle"') == []  # a comparison kind


def test_no_bare_regression_kind_test_outside_its_module():
    found = offenders(bare_regression_kind_tests, {KIND_OWNER})
    assert not found, f"compare with parity.storage.regressions.RegressionKind, not strings: {found}"


def test_a_regression_kind_is_the_enumeration_and_prints_as_before():
    r = Regression(fixture="f", device="cpu", dtype="float64", target="total", kind="slowdown", run_id=1,
                   previous=1.0, current=2.0, message="m")
    assert r.kind is RegressionKind.SLOWDOWN and f"{r.kind}" == "slowdown" and str(r.kind) == "slowdown"
    assert json.loads(json.dumps(asdict(r)))["kind"] == "slowdown"
    assert RegressionKind.MEMORY_GROWTH.label == "memory growth"
    with pytest.raises(ValueError):
        Regression(fixture="f", device="cpu", dtype="float64", target="total", kind="slow", run_id=1,
                   previous=1.0, current=2.0, message="m")
