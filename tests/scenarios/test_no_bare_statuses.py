"""No module outside the result types compares a status or a verdict with its bare string
(issue 17: statuses are an enumeration, ``parity.contract.results.Status`` / ``Verdict``).

The check reads the package's source (AST): a comparison (``==``, ``!=``, ``in``, ``not in``)
or a dict key whose operand is one of the status or verdict strings is reported with its
file and line. Strings in docstrings, messages and CSS class names are not comparisons and
are not reported.
"""
from __future__ import annotations

import ast
from pathlib import Path

import parity
from parity.contract.results import Status, Verdict

ROOT = Path(parity.__file__).resolve().parent
#: The modules that define the enumerations (and so spell their values).
OWNERS = {"contract/statuses.py", "contract/results.py"}
WORDS = {s.value for s in Status} | {v.value for v in Verdict}


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
        if isinstance(node, ast.Compare) and any(_bare(x) for x in [node.left, *node.comparators]):
            lines.append(node.lineno)
        elif isinstance(node, ast.Dict) and any(k is not None and _bare(k) for k in node.keys):
            lines.append(node.lineno)
    return sorted(lines)


def test_the_check_sees_the_old_spellings():
    assert bare_status_tests('if r["status"] == "pass": pass') == [1]
    assert bare_status_tests('x = r["status"] in ("fail", "error")') == [1]
    assert bare_status_tests('labels = {"not_comparable": "n-c"}') == [1]
    assert bare_status_tests('if r["status"] == Status.PASS: pass') == []
    assert bare_status_tests('msg = "did not pass"') == []


def test_no_bare_status_or_verdict_test_outside_the_result_types():
    found = {}
    for path in sorted(ROOT.rglob("*.py")):
        rel = path.relative_to(ROOT).as_posix()
        if rel in OWNERS:
            continue
        lines = bare_status_tests(path.read_text(encoding="utf-8"))
        if lines:
            found[rel] = lines
    assert not found, f"bare status/verdict strings compared (use Status / Verdict): {found}"
