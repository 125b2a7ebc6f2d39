"""Mutation testing (parity.mutation): the generator, the resume cache, fail-fast runs, and,
as a slow test, a fixed sample of real mutants run through ``parity run``."""
from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from parity import mutation as mu

ROOT = Path(__file__).resolve().parents[2]

#: One example of every mutation class, with the mutated text each must produce.
EXAMPLES = textwrap.dedent('''
    """Module docstring: 2 + 3 and x.T are text, not code."""
    import math
    LIMIT: int = 4


    def f(x: float = 2.5, *, flag: bool = True) -> list[int]:
        """Docstring with numbers 1 2 3."""
        if x < 1 and not flag:
            raise ValueError(f"bad x {x + 1} (limit {LIMIT * 2})")
        print("debug", x * 7)
        y = -x + 2 * x
        y += 3
        z = x @ x.T
        w = z.conj() @ z.transpose(-1, -2)
        r = w.real + math.nan
        m = ~flag
        s = w[..., :LIMIT]
        return [y, z, w, r, m, s]
''')


@pytest.fixture
def example_root(tmp_path):
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "__init__.py").write_text("")
    (tmp_path / "pkg" / "ex.py").write_text(EXAMPLES)
    return tmp_path


def _mutants(root, file="pkg/ex.py"):
    return mu.generate_mutants(file, "pkg.ex", root=root)


@pytest.fixture(scope="module")
def real_mutants():
    """Every mutant of the torch backend's two files (generated once for the module)."""
    return mu.all_mutants()


def test_every_operator_class_is_found(example_root):
    ops = {m.operator for m in _mutants(example_root)}
    assert set(mu.OPERATORS) - ops == set(), "operator classes never generated"
    assert ops <= set(mu.OPERATORS)


@pytest.mark.parametrize("operator, original, mutated", [
    ("binop", "2 * x", "2 / x"),
    ("binop", "-x + 2 * x", "-x - 2 * x"),
    ("binop", "x @ x.T", "x * x.T"),
    ("augassign", "y += 3", "y -= 3"),
    ("sign_removed", "-x", "x"),
    ("sign_added", "2 * x", "-(2 * x)"),
    ("sign_added", "x @ x.T", "-(x @ x.T)"),
    ("sign_added", "w.real + math.nan", "-w.real + math.nan"),
    ("not_removed", "not flag", "flag"),
    ("invert_removed", "~flag", "flag"),
    ("compare", "x < 1", "x <= 1"),
    ("compare", "x < 1", "x >= 1"),
    ("boolop", "x < 1 and (not flag)", "x < 1 or not flag"),
    ("constant", "2.5", "3.5"),
    ("constant", "2.5", "-2.5"),
    ("constant", "2.5", "5.0"),
    ("constant", "3", "4"),
    ("constant", "3", "2"),
    ("bool_constant", "True", "False"),
    ("conj_removed", "z.conj()", "z"),
    ("conj_added", "x @ x.T", "x.conj() @ x.T"),
    ("conj_added", "x @ x.T", "x @ x.T.conj()"),
    ("transpose_removed", "x.T", "x"),
    ("transpose_removed", "z.transpose(-1, -2)", "z"),
    ("real_imag", "w.real", "w.imag"),
    ("slice", ":LIMIT", ":LIMIT + 1"),
])
def test_mutation_classes(example_root, operator, original, mutated):
    found = {(m.operator, m.original, m.mutated) for m in _mutants(example_root)}
    assert (operator, original, mutated) in found


def test_no_duplicate_sign_of_a_negated_product(example_root, tmp_path):
    (example_root / "pkg" / "neg.py").write_text("def g(a, b):\n    return -a * b\n")
    got = {(m.operator, m.mutated) for m in mu.generate_mutants("pkg/neg.py", "pkg.neg", root=example_root)}
    assert ("sign_removed", "a") in got
    assert not [m for m in got if m[0] == "sign_added"]  # -(-a * b) would only repeat a * b


def test_docstrings_type_hints_messages_untouched(example_root):
    mutants = _mutants(example_root)
    lines = EXAMPLES.splitlines()
    for m in mutants:
        text = lines[m.line - 1]
        assert '"""' not in text, f"mutated a docstring line: {m}"
        assert "raise" not in text and "print(" not in text, f"mutated a message: {m}"
    # Type hints: LIMIT's annotation, f's argument and return annotations.
    assert not [m for m in mutants if "int" in m.original or "list" in m.original or "bool" == m.original]
    # The defaults next to the hints are code and are mutated.
    assert {"3.5", "False"} <= {m.mutated for m in mutants if m.line == 7}


def test_generation_is_deterministic_and_ids_unique(real_mutants):
    a, b = real_mutants, mu.all_mutants()
    assert [m.id for m in a] == [m.id for m in b]
    assert [(m.line, m.col, m.mutated) for m in a] == [(m.line, m.col, m.mutated) for m in b]
    assert len({m.id for m in a}) == len(a)
    assert {m.file for m in a} == set(mu.DEFAULT_FILES)


def test_real_files_mutants_compile_and_change_one_node(real_mutants):
    mutants = mu.select_mutants(real_mutants, sample=5, seed=3)
    originals = {f: ast.dump(mu.parse_file(f)) for f in mu.DEFAULT_FILES}
    for m in mutants:
        code = mu.compile_mutant(m)
        assert code.co_filename.endswith(m.file)
        tree = mu.mutated_tree(m)
        assert ast.dump(tree) != originals[m.file], m
        assert m.mutated in ast.unparse(tree) or m.mutated.replace("\n", " ") in ast.unparse(tree), m


def test_apply_mutant_changes_the_live_module(example_root, monkeypatch):
    monkeypatch.syspath_prepend(str(example_root))
    import importlib

    mod = importlib.import_module("pkg.ex")
    try:
        f_before = mod.f
        m = next(m for m in _mutants(example_root) if m.operator == "constant" and m.original == "4")
        mu.apply_mutant(m, root=example_root)
        assert mod.LIMIT == 5 and mod.f is not f_before
    finally:
        sys.modules.pop("pkg.ex", None)
        sys.modules.pop("pkg", None)


def test_select_mutants(real_mutants):
    ms = real_mutants
    s1 = mu.select_mutants(ms, sample=15, seed=4)
    assert [m.id for m in s1] == [m.id for m in mu.select_mutants(ms, sample=15, seed=4)]
    assert len(s1) == 15 and [m.id for m in mu.select_mutants(ms, sample=15, seed=5)] != [m.id for m in s1]
    assert [m.id for m in mu.select_mutants(ms, ids=[ms[3].id, ms[1].id])] == [ms[1].id, ms[3].id]
    assert {m.operator for m in mu.select_mutants(ms, operators=["real_imag"])} == {"real_imag"}
    assert len(mu.select_mutants(ms, limit=7)) == 7
    with pytest.raises(ValueError, match="unknown mutant id"):
        mu.select_mutants(ms, ids=["nope"])
    with pytest.raises(ValueError, match="unknown operator"):
        mu.select_mutants(ms, operators=["swap_everything"])


def test_needs_run_resume_rules():
    cfg = {"fixture": "5zck_p1", "parity_args": []}
    killed = {"status": "killed", "source_sha": "s", "harness_sha": "h", "config": cfg}
    survived = {**killed, "status": "survived"}
    kw = dict(source_sha="s", harness_sha="h", config=cfg)
    assert mu.needs_run(None, retest="auto", **kw)
    assert not mu.needs_run(killed, retest="auto", **kw)
    assert not mu.needs_run(survived, retest="auto", **kw)  # resume: nothing changed
    assert mu.needs_run(survived, retest="auto", **{**kw, "harness_sha": "h2"})  # harness fixed: re-test
    assert not mu.needs_run(killed, retest="auto", **{**kw, "harness_sha": "h2"})  # killed stays killed
    assert mu.needs_run(killed, retest="auto", **{**kw, "source_sha": "s2"})  # the model changed
    assert mu.needs_run(killed, retest="auto", **{**kw, "config": {**cfg, "fixture": "7n2h"}})
    assert mu.needs_run(survived, retest="survivors", **kw) and not mu.needs_run(killed, retest="survivors", **kw)
    assert mu.needs_run(killed, retest="all", **kw)


def test_summarize_scores():
    recs = [{"id": "a", "status": "killed"}, {"id": "b", "status": "killed"}, {"id": "c", "status": "survived"},
            {"id": "d", "status": "survived"}, {"id": "e", "status": "timeout"}]
    s = mu.summarize(recs, {"c": "dead code"})
    assert (s["total"], s["killed"], s["equivalent"], s["non_equivalent"]) == (5, 2, 1, 4)
    assert s["score"] == pytest.approx(0.4) and s["score_non_equivalent"] == pytest.approx(0.5)
    assert s["unjudged_survivors"] == ["d", "e"]


def test_verdicts_name_real_mutants(real_mutants):
    verdicts = mu.load_verdicts()
    stale = sorted(set(verdicts) - {m.id for m in real_mutants})
    assert not stale, f"verdicts for mutants that no longer exist: {stale}"
    assert all(len(v["reason"]) > 20 for v in verdicts.values())


def test_load_verdicts_checks_each(tmp_path):
    bad = tmp_path / "v.json"
    bad.write_text(json.dumps({"abc": {"verdict": "maybe", "reason": "x"}}))
    with pytest.raises(ValueError, match="verdict"):
        mu.load_verdicts(bad)
    assert mu.load_verdicts(tmp_path / "none.json") == {}


def test_exit_codes_are_classified_apart():
    from parity.mutation.execute import _status

    assert _status(1, False) == "killed" and _status(0, False) == "survived"
    assert _status(2, False) == "exit 2" and _status(3, False) == "exit 3"  # usage / nothing compared: no kill
    assert _status(None, True) == "timeout" and _status(-9, False) == "crash"
    assert _status(mu.EXIT_INVALID, False) == "invalid" and _status(mu.EXIT_CRASH, False) == "crash"


def test_child_mutant_leaves_disk_and_parent_alone(example_root, monkeypatch, tmp_path):
    """The fork-server contract: a mutant applied in a forked child changes that child only."""
    monkeypatch.syspath_prepend(str(example_root))
    import importlib

    mod = importlib.import_module("pkg.ex")
    try:
        source = (example_root / "pkg" / "ex.py").read_bytes()
        m = next(m for m in _mutants(example_root) if m.operator == "constant" and m.original == "4")
        seen = tmp_path / "child.txt"
        pid = os.fork()
        if pid == 0:  # the child: apply, report what it sees, leave without pytest's teardown
            try:
                mu.apply_mutant(m, root=example_root)
                seen.write_text(str(importlib.import_module("pkg.ex").LIMIT))
            finally:
                os._exit(0)
        assert mu.wait_child(pid, 30.0, __import__("time").perf_counter()) == (0, False)
        assert seen.read_text() == "5"  # the child ran the mutant
        assert mod.LIMIT == 4 and (example_root / "pkg" / "ex.py").read_bytes() == source
    finally:
        sys.modules.pop("pkg.ex", None)
        sys.modules.pop("pkg", None)


def test_results_round_trip_and_cache(tmp_path):
    path = tmp_path / "r" / "results.json"
    assert mu.load_results(path) == {"schema": mu.RESULTS_SCHEMA, "mutants": {}, "runs": []}
    data = mu.load_results(None)
    data["mutants"]["abc"] = {"status": "killed", "source_sha": "s", "harness_sha": "h",
                              "config": {"fixture": "5zck_p1", "parity_args": []}}
    mu.save_results(path, data)
    again = mu.load_results(path)
    assert again == data and not list(path.parent.glob(".*.tmp"))
    cfg = mu.config_key(mu.RunConfig(threads=4, timeout_s=9))  # threads and timeouts do not decide verdicts
    assert not mu.needs_run(again["mutants"]["abc"], source_sha="s", harness_sha="h", config=cfg, retest="auto")
    path.write_text(json.dumps({"schema": 99}))
    with pytest.raises(ValueError, match="schema"):
        mu.load_results(path)


def test_harness_hash_ignores_the_mutated_files_and_the_driver(tmp_path):
    for rel in ("parity/a.py", "parity/mutation/generate.py", "eryx/functional_torch.py", "eryx/models_torch.py"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text("x = 1\n")
    h = mu.harness_hash(tmp_path)
    (tmp_path / "eryx" / "functional_torch.py").write_text("x = 2\n")
    assert mu.harness_hash(tmp_path) == h
    (tmp_path / "parity" / "a.py").write_text("x = 2\n")
    assert mu.harness_hash(tmp_path) != h


def _record(mid, status, rc, line):
    return mid, {"file": "eryx/functional_torch.py", "line": line, "col": 0, "function": "f", "operator": "binop",
                 "original": "a | b", "mutated": "a & b", "status": status, "rc": rc, "seconds": 1.0}


def test_merge_diffs():
    a = {"m": {"verdict": "same", "cases": {"x": {}, "seconds": 1.0}}}
    b = {"m": {"verdict": "differs", "cases": {"y": {"Id": "max rel diff 1e-3"}}}, "n": {"verdict": "same", "cases": {}}}
    merged = mu.merge_diffs([a, b])
    assert merged["m"] == {"verdict": "differs", "cases": {"x": {}, "y": {"Id": "max rel diff 1e-3"}}}
    assert merged["n"]["verdict"] == "same"


def test_format_report():
    data = {"schema": 1, "runs": [{"wall_s": 12.0, "jobs": 1, "threads": 1}], "mutants": dict([
        _record("k1", "killed", 1, 3), _record("s1", "survived", 0, 5), _record("s2", "survived", 0, 9),
        _record("t1", "timeout", None, 7), _record("e2", "exit 2", 2, 8)])}
    verdicts = {"s1": {"verdict": "equivalent", "reason": "dead branch at every input"},
                "s2": {"verdict": "not equivalent", "reason": "differs on 2ol9"}}
    diffs = {"s1": {"verdict": "same", "cases": {"a": {}, "b": {}, "seconds": 3.0}},
             "s2": {"verdict": "differs", "cases": {"a": {"Id": "max rel diff 1e-3"}, "seconds": 1.0}}}
    other = {"runs": [{"config": {"fixture": "2ol9", "parity_args": ["--res-limit", "2.5"]}}],
             "mutants": {"s2": {"status": "killed", "first_failure": "res_mask"}, "s1": {"status": "survived"}}}
    text = mu.format_report(data, verdicts, diffs, [other])
    assert "`--fixture 2ol9 --res-limit 2.5`: 1 of the survivors killed" in text
    assert "| `--fixture 2ol9 --res-limit 2.5` (res_mask) |" in text
    assert "| 5 | 1 | 2 | 1 | 1 | 1 | 1/4 = 25.0 % |" in text, text
    assert "same in all 2 cases" in text and "differs in a: Id max rel diff 1e-3" in text
    assert "equivalent: dead branch" in text and "not equivalent: differs on 2ol9" in text
    assert "**not judged**" in text and "`a \\| b`" in text  # t1, e2 unjudged; pipes escaped
    assert "| k1 |" not in text  # killed mutants are counted, not listed
    rows = [line.split(" | ")[0] for line in text.splitlines() if "functional_torch.py:" in line]
    assert rows == ["| s1", "| t1", "| e2", "| s2"]  # in source order


def test_compare_outputs():
    import numpy as np

    a = {"Id": np.array([1.0, np.nan, 2.0]), "g": np.array([1.0]), "err": "ValueError: x"}
    assert mu.compare_outputs(a, dict(a), 1e-9) == {}
    assert "Id" in mu.compare_outputs(a, {**a, "Id": np.array([1.0, np.nan, 2.1])}, 1e-9)
    assert "non-finite" in mu.compare_outputs(a, {**a, "Id": np.array([1.0, 1.0, 2.0])}, 1e-9)["Id"]
    assert "g" in mu.compare_outputs(a, {**a, "g": "RuntimeError: boom"}, 1e-9)


def test_fail_fast_same_verdict_fewer_stages():
    pytest.importorskip("torch")
    from parity.running.runner import make_run, execute
    from parity.stages import STAGES

    stages = [s for s in STAGES if s.phase <= 2]  # Linv fails in phase 2; the rest would only add time

    def result(fail_fast):
        run = make_run("synthetic", samplings=((-1, 1, 3),) * 3, fault="linv_upper")
        return execute(run, stages, progress=False, fail_fast=fail_fast)

    full, fast = result(False), result(True)
    assert fast["verdict"] == full["verdict"] == "diverged"
    assert fast["first_failure"] == full["first_failure"] == "Linv"
    assert fast["stages"][-1]["name"] == "Linv" and len(fast["stages"]) < len(full["stages"])


# ------------------------------------------------------------------ slow: real mutants
#: Killed in the campaign (reports/mutation/results.json), one per phase: a constant of
#: Amat, the q-vectors' BZ index, the q-gradient's straight-through term (the chunk
#: estimate's mutant chosen first only changes memory since the gradients of issue 20).
SLOW_KILLED = ("497b1245ea", "492430bcf4", "592ef2781f")
#: A survivor judged equivalent (conj() of the real A_inv): it must keep exiting 0.
SLOW_EQUIVALENT = ("dc01bd1f5e",)


@pytest.mark.slow
def test_sample_of_real_mutants(tmp_path, fixture_pdb):
    """A fixed sample through ``parity run --fixture 5zck_p1``: the unmutated backend exits 0,
    the killed ones exit 1, the equivalent one exits 0 -- the driver tells them apart."""
    pytest.importorskip("torch")
    fixture_pdb("5zck_p1")
    ids = list(SLOW_KILLED) + list(SLOW_EQUIVALENT)
    out = tmp_path / "results.json"
    proc = subprocess.run([sys.executable, "-m", "parity.mutation", "run", "--ids", ",".join(ids), "--json",
                           str(out), "--jobs", "1", "--timeout", "120"], cwd=ROOT, capture_output=True, text=True,
                          timeout=600, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    data = json.loads(out.read_text())
    run = data["runs"][-1]
    assert (run["baseline_rc"], run["baseline_status"]) == (0, "survived")  # mutant=None: exit 0
    results = data["mutants"]
    assert {i: (results[i]["status"], results[i]["rc"]) for i in SLOW_KILLED} == {i: ("killed", 1) for i in SLOW_KILLED}
    assert {i: (results[i]["status"], results[i]["rc"]) for i in SLOW_EQUIVALENT} == {
        i: ("survived", 0) for i in SLOW_EQUIVALENT}
