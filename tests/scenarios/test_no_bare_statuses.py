"""No module outside the result types compares a status or a verdict with its bare string
(issue 17: statuses are an enumeration, ``parity.contract.results.Status`` / ``Verdict``).

The check reads the package's source (AST): a comparison (``==``, ``!=``, ``in``, ``not in``)
between a status or verdict (a ``["status"]``/``["verdict"]`` item, a ``.status``/``.verdict``
attribute, a name containing "status" or "verdict", or a ``.get`` of those keys) and one
of the enumerations' strings is reported with its file and line. Other tools have their
own case vocabularies (a bench case's ``error``, a mutant's ``error`` verdict, a contract
self-check's ``wrong``/``error``): those modules are listed below with what they compare.
"""
from __future__ import annotations

import ast
from pathlib import Path

import parity
from parity.contract.results import Status, Verdict

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


def test_no_bare_status_or_verdict_test_outside_the_result_types():
    found = {}
    for path in sorted(ROOT.rglob("*.py")):
        rel = path.relative_to(ROOT).as_posix()
        if rel in OWNERS or rel in OTHER_VOCABULARIES:
            continue
        lines = bare_status_tests(path.read_text(encoding="utf-8"))
        if lines:
            found[rel] = lines
    assert not found, f"bare status/verdict strings compared (use Status / Verdict): {found}"
