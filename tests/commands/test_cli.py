"""The ``parity`` command: in-process through ``parity.commands.cli.main`` plus real console-script calls."""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from parity.commands import cli
from parity.backends.faults import FAULTS, inject
from parity.stages import PHASE_TITLES, STAGE_NAMES, STAGES
from tests._cli import run_cli

GRID = "--grid=-2,2,3"


@pytest.fixture(autouse=True)
def _isolated_cwd(tmp_path, monkeypatch):
    # Outputs land in tmp_path, and no pyproject.toml tier overrides leak in from the cwd.
    monkeypatch.chdir(tmp_path)


def help_text(capsys, *argv):
    with pytest.raises(SystemExit) as exc:
        cli.main([*argv, "--help"])
    assert exc.value.code == 0
    out, _ = capsys.readouterr()
    return out


# ------------------------------------------------------------------ help
def test_top_level_help_lists_every_subcommand(capsys):
    out = help_text(capsys)
    for command in cli.COMMANDS:
        assert re.search(rf"^\s+{command}\b", out, re.M), command


def test_no_command_prints_help_and_exits_2(capsys):
    code, out, _ = run_cli(capsys)
    assert code == 2 and "COMMAND" in out


SUBCOMMAND_OPTIONS = {
    "run": ["--fixture", "--fixtures-dir", "--grid", "--device", "--dtype", "--gnm-cutoff", "--gamma-intra",
            "--gamma-inter", "--res-limit", "--no-expand-p1", "--phases", "--stages", "--tier", "--fault",
            "--json", "--html", "--no-progress", "--reference", "--candidate", "--reference-path",
            "--candidate-path", "--candidate-python", "--reference-dump", "--skip"],
    "bisect": ["--fixture", "--grid", "--device", "--dtype", "--phases", "--stages", "--tier", "--fault",
               "--json", "--html"],
    "check": ["--fixture", "--grid", "--device", "--dtype", "--stage", "--phase", "--skip", "--tier", "--reference",
              "--candidate"],
    "dump": ["--backend", "--backend-path", "--backend-python", "--fixture", "--grid", "--dtype", "--out"],
    "compare": ["REF", "CAND", "--json", "--html", "--phases", "--stages", "--tier"],
    "backends": ["--json", "--check", "--dtype", "--fixture"],
    "new-backend": ["NAME", "--dir"],
    "report": ["result", "--out"],
    "bench": ["--quick", "--json", "--device"],
    "nightly": ["--matrix", "--db", "--reports-dir", "--dashboard"],
    "dashboard": ["--db", "--out"],
    "reduce": ["--fixture", "--grid", "--fault", "--reference", "--candidate", "--skip", "--keep-stage", "--keep",
               "--budget", "--jobs", "--out", "--no-progress"],
    "stages": [],
    "faults": [],
    "locate": ["--fixture", "--grid", "--device", "--dtype", "--candidate", "--candidate-path", "--stage", "--trace",
               "--trace-against", "--trace-save", "--tier", "--fault", "--json", "--html"],
}


def test_subcommand_table_covers_every_command():
    assert set(SUBCOMMAND_OPTIONS) == set(cli.COMMANDS)


@pytest.mark.parametrize("command", list(SUBCOMMAND_OPTIONS))
def test_subcommand_help_documents_its_options(capsys, command):
    out = help_text(capsys, command)
    assert out.startswith(f"usage: parity {command}")
    for option in SUBCOMMAND_OPTIONS[command]:
        assert option in out, (command, option)
    # every option of the subcommand is listed with a help sentence of its own
    import argparse

    sub = next(a for a in cli.build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    for action in sub.choices[command]._actions:
        if isinstance(action, argparse._HelpAction):
            continue
        assert action.help and action.help.strip(), (command, action.option_strings or action.dest)
        assert (action.option_strings or [action.dest])[0] in out
        assert action.help.split()[0] in out


# ------------------------------------------------------------------ run
@pytest.fixture(scope="module")
def run_outputs(tmp_path_factory):
    """One clean `parity run` with --json and --html (shared by several tests)."""
    tmp = tmp_path_factory.mktemp("run")
    import io
    from contextlib import redirect_stderr, redirect_stdout

    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        code = cli.main(["run", GRID, "--no-progress", "--json", str(tmp / "r.json"), "--html", str(tmp / "r.html")])
    return code, out.getvalue(), err.getvalue(), tmp


def test_run_prints_the_phase_table(run_outputs):
    code, out, err, _ = run_outputs
    assert code == 0, out + err
    for phase, title in PHASE_TITLES.items():
        assert f"Phase {phase}: {title}" in out
    headers = [int(m) for m in re.findall(r"^Phase (\d):", out, re.M)]
    assert headers == [1, 2, 3, 4]
    listed = re.findall(r"^  (\w+)\s+\S+\s+pass\b", out, re.M)
    assert listed == list(STAGE_NAMES)
    assert re.search(rf"^PASSED: {len(STAGES)} of {len(STAGES)} stages agree", out, re.M)
    assert "synthetic" in out.splitlines()[0] and "[-2, 2, 3]" in out.splitlines()[0]


def _reject(token):
    raise ValueError(f"non-standard JSON token {token}")


def test_run_json_is_readable_by_other_tools(run_outputs):
    _, out, _, tmp = run_outputs
    path = tmp / "r.json"
    assert f"JSON result: {path}" in out
    text = path.read_text()
    result = json.loads(text, parse_constant=_reject)  # strict JSON: no NaN/Infinity tokens
    assert result["schema_version"] == 1 and result["passed"] is True
    assert result["fixture"] == "synthetic" and result["grid"]["hsampling"] == [-2, 2, 3]
    assert [s["name"] for s in result["stages"]] == list(STAGE_NAMES)
    for key in ("pdb_path", "params", "device", "device_name", "dtype", "first_failure", "fault", "started_at",
                "duration_s", "environment", "phase_timings"):
        assert key in result, key
    assert not list(tmp.glob("*.tmp"))  # atomic write left no temporary file


def test_run_html_report_is_written(run_outputs):
    _, out, _, tmp = run_outputs
    html = (tmp / "r.html").read_text()
    assert f"HTML report: {tmp / 'r.html'}" in out
    assert html.lstrip().lower().startswith("<!doctype html") and "synthetic" in html


def test_report_renders_a_saved_result(capsys, run_outputs, tmp_path):
    _, _, _, tmp = run_outputs
    out_html = tmp_path / "again.html"
    code, out, err = run_cli(capsys, "report", str(tmp / "r.json"), "--out", str(out_html))
    assert code == 0, err
    assert out_html.is_file() and "synthetic" in out_html.read_text()
    # default output: RESULT with .html
    src = tmp_path / "copy.json"
    shutil.copy(tmp / "r.json", src)
    code, out, err = run_cli(capsys, "report", str(src))
    assert code == 0 and (tmp_path / "copy.html").is_file()


def test_report_of_a_missing_or_broken_file_is_a_usage_error(capsys, tmp_path):
    code, _, err = run_cli(capsys, "report", str(tmp_path / "missing.json"))
    assert code == 2 and len(err.strip().splitlines()) == 1
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    code, _, err = run_cli(capsys, "report", str(bad))
    assert code == 2 and len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_run_with_a_fault_diverges_at_K(capsys, tmp_path):
    code, out, err = run_cli(capsys, "run", "--fault", "phase_sign", GRID, "--no-progress",
                             "--json", str(tmp_path / "f.json"))
    assert code == 1, out + err
    assert "FAULT phase_sign" in out.splitlines()[0]
    assert re.search(r"^DIVERGED: first failure K \(phase 3\)", out, re.M)
    assert re.search(r"^  K\s+tight\s+FAIL\s", out, re.M)
    result = json.loads((tmp_path / "f.json").read_text())
    assert result["passed"] is False and result["first_failure"] == "K" and result["fault"] == "phase_sign"
    # the rendered report names the divergence too
    code, _, err = run_cli(capsys, "report", str(tmp_path / "f.json"))
    assert code == 0, err
    assert "phase_sign" in (tmp_path / "f.html").read_text()


def test_run_stage_and_phase_selection(capsys):
    code, out, _ = run_cli(capsys, "run", GRID, "--no-progress", "--phases", "1")
    assert code == 0
    assert re.findall(r"^Phase (\d):", out, re.M) == ["1"]
    code, out, _ = run_cli(capsys, "run", GRID, "--no-progress", "--stages", "Amat,kvec")
    assert code == 0
    assert re.findall(r"^  (\w+)\s+\S+\s+pass\b", out, re.M) == ["kvec", "Amat"]  # registry order


def test_run_tier_override_on_the_command_line(capsys):
    code, out, _ = run_cli(capsys, "run", GRID, "--no-progress", "--fault", "grid_float32", "--stages", "q_grid",
                           "--tier", "tight=1e-5,1e-5")
    assert code == 0, out
    code, out, _ = run_cli(capsys, "run", GRID, "--no-progress", "--fault", "grid_float32", "--stages", "q_grid")
    assert code == 1


# ------------------------------------------------------------------ bisect
def test_bisect_names_amat_as_root_cause(capsys, tmp_path):
    code, out, err = run_cli(capsys, "bisect", "--fault", "amat_shared_buffer", GRID, "--no-progress",
                             "--json", str(tmp_path / "b.json"))
    assert code == 1, out + err
    assert "First divergence: Amat" in out
    assert re.search(r"^Root cause\(s\): Amat$", out, re.M)
    assert re.search(r"^  phase 2 Amat\s+ROOT CAUSE", out, re.M)
    assert re.search(r"^  phase 2 Mmat\s+INHERITED FROM AMAT", out, re.M)
    saved = json.loads((tmp_path / "b.json").read_text())
    assert saved["bisect"]["root_causes"] == ["Amat"] and saved["bisect"]["first_divergence"] == "Amat"
    records = {s["name"]: s for s in saved["stages"]}  # the records carry bisect's causes
    assert records["Amat"]["cause"]["text"] == "root cause" and records["Amat"]["cause"]["basis"] == "cross-feed"
    assert records["Mmat"]["cause"]["text"] == "inherited from Amat"


def test_bisect_clean_exits_0(capsys):
    code, out, _ = run_cli(capsys, "bisect", GRID, "--no-progress", "--phases", "1,2")
    assert code == 0 and "No divergence" in out


# ------------------------------------------------------------------ check (git bisect run)
def test_check_exit_codes(capsys):
    code, out, _ = run_cli(capsys, "check", "--stage", "Amat", GRID)
    assert code == 0 and "PASSED: 1 of 1 stages agree" in out
    with inject("amat_shared_buffer"):
        code, out, _ = run_cli(capsys, "check", "--stage", "Amat", GRID)
    assert code == 1 and "  Amat: fail (ROOT CAUSE:" in out and "DIVERGED: first failure Amat" in out
    code, out, _ = run_cli(capsys, "check", "--stage", "Amat", GRID)  # the fault is gone again
    assert code == 0
    code, out, _ = run_cli(capsys, "check", "--phase", "1", GRID)
    assert code == 0 and f"PASSED: {sum(1 for s in STAGES if s.phase == 1)} of" in out


def test_check_cannot_run_exits_125(capsys, monkeypatch):
    """git bisect run: 125 means 'skip this commit', never 2 (which would mean 'bad')."""
    def broken(*args, **kwargs):
        raise ImportError("the candidate's package does not import at this commit")

    monkeypatch.setattr("parity.backends.get_backend", broken)
    code, out, err = run_cli(capsys, "check", "--stage", "Amat", GRID)
    assert code == 125, (out, err)
    assert "skipping (125)" in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("argv", [
    ["--stage", "no_such_stage"],
    ["--phase", "9"],
    ["--stage", "Amat", "--grid=a,b,c"],
    ["--stage", "Amat", "--skip", "Amat"],
    ["--stage", "Amat", "--fixture", "no_such_fixture"],
])
def test_check_usage_errors_abort_the_bisection(capsys, argv):
    """A usage error is the same at every commit: 128 makes `git bisect run` stop, not mark commits."""
    code, out, err = run_cli(capsys, "check", *argv)
    assert code == 128, (out, err)
    assert "aborting the bisection (128)" in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1


def test_check_not_comparable_is_skip_not_good(capsys):
    """A NAMED stage that compared nothing (here: an all-Bragg grid) must not mark the commit good."""
    code, out, err = run_cli(capsys, "check", "--stage", "grad_gamma_inter", "--grid=-1,1,1")
    assert code == 125, (out, err)
    assert "  grad_gamma_inter: not_comparable" in out and "named stage(s) not comparable" in err


# ------------------------------------------------------------------ usage errors
USAGE_ERRORS = {
    "unknown fixture": (["run", "--fixture", "no_such_fixture"], "unknown fixture 'no_such_fixture'"),
    "unknown stage": (["run", "--stages", "no_such_stage"], "unknown stage 'no_such_stage'"),
    "grid letters": (["run", "--grid=a,b,c"], "malformed sampling 'a,b,c'"),
    "grid two numbers": (["run", "--grid=-2,2"], "malformed sampling '-2,2'"),
    "grid fractional": (["run", "--grid=-2.5,2,2"], "must be integers"),
    "grid four axes": (["run", "--grid=-2,2,2;-2,2,2"], "malformed --grid"),
    "grid reversed": (["run", "--grid=2,-2,2"], "lower bound 2 is above upper bound -2"),
    "grid zero oversampling": (["run", "--grid=-2,2,0"], "oversampling must be >= 1"),
    "contradictory": (["run", "--phases", "1", "--stages", "Id"], "select no stage together"),
    "unknown phase": (["run", "--phases", "5"], "unknown phase"),
    "absent cuda": (["run", "--device", "cuda"], "cuda"),
    "unknown device": (["run", "--device", "tpu"], "unknown device 'tpu'"),
    "unknown tier": (["run", "--tier", "nosuch=1e-3"], "unknown tier 'nosuch'"),
    "malformed tier": (["run", "--tier", "tight=abc"], "tight=abc"),
    "zero tier": (["run", "--tier", "tight=0"], "positive"),
    "unknown fault": (["run", "--fault", "nosuch"], "unknown fault 'nosuch'"),
    "bisect unknown fault": (["bisect", "--fault", "nosuch"], "unknown fault 'nosuch'"),
    "bad dtype": (["run", "--dtype", "float16"], "float16"),
    "unknown option": (["run", "--frobnicate"], "--frobnicate"),
    "unknown command": (["frobnicate"], "frobnicate"),
    "negative cutoff": (["run", "--gnm-cutoff", "-1"], "gnm_cutoff"),
}


@pytest.mark.parametrize("case", list(USAGE_ERRORS))
def test_usage_errors_exit_2_with_one_line(capsys, case):
    argv, fragment = USAGE_ERRORS[case]
    if case == "absent cuda":
        import torch
        if torch.cuda.is_available():
            pytest.skip("a CUDA device is present here")
    code, out, err = run_cli(capsys, *argv, "--no-progress") if argv[0] in ("run", "bisect") else \
        run_cli(capsys, *argv)
    assert code == 2, (out, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("parity: error: ")
    assert fragment in lines[0]
    assert "Traceback" not in out + err
    assert "Phase 1" not in out  # nothing ran


# ------------------------------------------------------------------ listings
def test_stages_lists_the_registry_in_phase_order(capsys):
    code, out, _ = run_cli(capsys, "stages")
    assert code == 0
    assert re.findall(r"^Phase (\d):", out, re.M) == ["1", "2", "3", "4"]
    listed = re.findall(r"^  (\w+)\s+(\w+)\s+(\w+)\s", out, re.M)
    assert [name for name, _, _ in listed] == list(STAGE_NAMES)
    assert [(k, t) for _, k, t in listed] == [(s.kind, s.tier) for s in STAGES]
    # each stage sits under its own phase header
    phase = None
    for line in out.splitlines():
        if line.startswith("Phase "):
            phase = int(line.split()[1].rstrip(":"))
        elif line.strip():
            assert next(s for s in STAGES if s.name == line.split()[0]).phase == phase


def test_faults_lists_every_fault(capsys):
    code, out, _ = run_cli(capsys, "faults")
    assert code == 0
    rows = re.findall(r"^(\w+)\s+phase (\d)\s+stage (\w+)", out, re.M)
    assert sorted((n, int(p), s) for n, p, s in rows) == sorted((f.name, f.phase, f.stage) for f in FAULTS.values())
    assert [int(p) for _, p, _ in rows] == sorted(int(p) for _, p, _ in rows)  # phase order


# ------------------------------------------------------------------ the installed console script
def _console_script() -> str:
    exe = shutil.which("parity") or str(Path(sys.executable).with_name("parity"))
    if not Path(exe).is_file():
        pytest.skip("the parity console script is not installed")
    return exe


def test_console_script_help_and_usage_error(tmp_path):
    exe = _console_script()
    done = subprocess.run([exe, "--help"], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert done.returncode == 0 and "usage: parity" in done.stdout
    done = subprocess.run([exe, "run", "--grid=a,b,c"], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == ["parity: error: malformed sampling 'a,b,c': bounds and "
                                                "oversampling must be integers"]


def test_console_script_run_with_fault(tmp_path):
    exe = _console_script()
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    done = subprocess.run([exe, "run", "--fault", "phase_sign", GRID, "--phases", "1,2,3", "--no-progress",
                           "--json", "out.json"], capture_output=True, text=True, timeout=300, cwd=tmp_path, env=env)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "DIVERGED: first failure K (phase 3)" in done.stdout
    assert json.loads((tmp_path / "out.json").read_text())["first_failure"] == "K"


def test_check_without_a_stage_checks_the_whole_run(capsys):
    """No --stage/--phase: every stage; a transposed Cholesky factor is caught (the Id stage alone passes it)."""
    code, out, err = run_cli(capsys, "check", "--fault", "linv_upper")
    assert code == 1, (out, err)
    assert "Linv: not close" in out and "root cause: Linv" in out
    code, out, err = run_cli(capsys, "check", "--fault", "linv_upper", "--stage", "Id")
    assert code == 0, (out, err)  # the map alone is blind to it: why the whole run is the default
