"""``parity check`` for ``git bisect run``: a verdict that cannot miss, and 128 for every usage problem.

git's meaning of the exit codes: 0 good, 1-127 except 125 bad, 125 skip, 128 and above abort.
So a usage problem must never answer 2 (git would mark the commit bad) nor 125 (git would
skip every commit and end with "only skipped commits left").
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from parity.commands.check import verdict
from parity.contract.options import EXIT_DIVERGED, EXIT_OK, EXIT_SKIP
from tests._cli import run_cli

REPO = Path(__file__).resolve().parents[2]
USER = "tests._check_backends:"
SMALL = "--grid=-1,1,3"  # odd oversampling: phase-sign errors show; 27 BZ points, fast


@pytest.fixture(autouse=True)
def _isolated_cwd(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(REPO))  # tests._check_backends importable from tmp_path


def _unavailable_device() -> str:
    """A CUDA device this machine does not have (cuda without CUDA, or one past the last)."""
    return f"cuda:{torch.cuda.device_count()}" if torch.cuda.is_available() else "cuda"


# ------------------------------------------------------------------ the verdict cannot miss
def test_whole_run_catches_a_transposed_cholesky_that_stage_Id_misses(capsys):
    """linv_upper changes Linv, D and the modes but not Id (the map needs no Cholesky factor):
    `--stage Id` calls the commit good; the default whole-run check calls it bad, at Linv."""
    code, out, err = run_cli(capsys, "check", "--fault", "linv_upper", "--stage", "Id", SMALL)
    assert code == EXIT_OK, out + err
    code, out, err = run_cli(capsys, "check", "--fault", "linv_upper", SMALL)
    assert code == EXIT_DIVERGED, out + err
    assert "DIVERGED: first failure Linv (phase 2)" in out
    assert "diagnosis: transpose" in out and "root cause: Linv" in out
    assert "  Linv: fail (ROOT CAUSE:" in out and "  D: fail (inherited from Linv:" in out


def test_stage_is_repeatable_and_skip_is_accepted(capsys):
    code, out, err = run_cli(capsys, "check", "--stage", "Amat", "--stage", "Mmat,Linv", "--skip", "Linv", SMALL)
    assert code == EXIT_OK, out + err
    assert "PASSED: 2 of 2 stages agree" in out


def test_phase_4_with_a_partial_backend_is_judged_not_skipped(capsys):
    """A candidate providing only Id: the stages it never provides are left out of the verdict
    (not a skip at every commit), while a wrong Id is still caught."""
    code, out, err = run_cli(capsys, "check", "--phase", "4", "--candidate", USER + "MapsOnly", SMALL)
    assert code == EXIT_OK, out + err
    assert "grad_q: not_comparable" in out and "skipping" not in err
    code, out, err = run_cli(capsys, "check", "--phase", "4", "--candidate", USER + "MapsOnlyDoubled", SMALL)
    assert code == EXIT_DIVERGED and "first failure Id (phase 4)" in out and "diagnosis: x 2" in out
    # a stage the user NAMED must be compared: not comparable there is this commit's skip
    code, out, err = run_cli(capsys, "check", "--stage", "Id,grad_q", "--candidate", USER + "MapsOnly", SMALL)
    assert code == EXIT_SKIP and "named stage(s) not comparable at this commit: grad_q" in err


def test_verdict_rule():
    def rec(name, status):
        return {"name": name, "status": status}
    assert verdict([rec("a", "pass"), rec("b", "not_comparable")], []) == (EXIT_OK, None)
    assert verdict([rec("a", "pass"), rec("b", "fail")], [])[0] == EXIT_DIVERGED
    assert verdict([rec("a", "not_comparable"), rec("b", "error")], ["a"])[0] == EXIT_DIVERGED
    assert verdict([rec("a", "pass"), rec("b", "not_comparable")], ["b"])[0] == EXIT_SKIP
    assert verdict([rec("a", "not_comparable")], [])[0] == EXIT_SKIP  # nothing compared at all


def test_a_candidate_that_does_not_import_here_is_a_skip_one_that_fails_to_build_is_bad(capsys):
    code, out, err = run_cli(capsys, "check", "--stage", "Amat", "--candidate", "no_such_module_here:Factory")
    assert code == EXIT_SKIP and "cannot import 'no_such_module_here'" in err and "skipping (125)" in err
    code, out, err = run_cli(capsys, "check", "--phase", "1", "--candidate", USER + "DivergesEarlyRefusesLate", SMALL)
    assert code == EXIT_DIVERGED and "first failure kvec (phase 1)" in out


def test_output_names_the_commit_under_test(capsys, tmp_path):
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    (tmp_path / "f.txt").write_text("x")
    subprocess.run(git + ["-C", str(tmp_path), "add", "f.txt"], check=True)
    subprocess.run(git + ["-C", str(tmp_path), "commit", "-qm", "one"], check=True)
    head = subprocess.run(["git", "-C", str(tmp_path), "rev-parse", "HEAD"], capture_output=True, text=True,
                          check=True).stdout.strip()
    code, out, _ = run_cli(capsys, "check", "--stage", "hkl_grid", SMALL)
    assert code == EXIT_OK
    first = out.splitlines()[0]
    assert first.startswith(f"parity check at commit {head[:12]}: candidate torch (commit ")
    assert "vs reference numpy" in first


# ------------------------------------------------------------------ usage problems abort (128)
@pytest.mark.parametrize("argv", [
    ["--bogus"],                                   # unknown option
    ["--grid"],                                    # missing value
    ["--gnm-cutoff", "abc"],                       # bad float
    ["--dtype", "float16"],                        # bad choice
    ["--fault", "nosuch"],                         # unknown fault (was 125)
    ["--stage", "Amat", "--candidate", "nosuch"],  # unknown backend
    ["--stage", "Amat", "--candidate", "numpy", "--fault", "linv_upper"],  # an option the backend does not take
    ["--stage", "Amat", "--fixture", "no_such_fixture"],                   # missing fixture (was 125)
    ["--stage", "Amat", "--fixture", "missing/file.pdb"],
    ["--stage", "Amat", "--tier", "nosuch=1e-3"],
    ["--stage", "Amat", "--gnm-cutoff", "-1"],
])
def test_usage_problems_abort_the_bisection(capsys, argv):
    code, out, err = run_cli(capsys, "check", *argv)
    assert code == 128, (out, err)
    assert err.startswith("parity check: error: ") and err.rstrip().endswith("aborting the bisection (128)")
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err and out == ""


@pytest.mark.parametrize("param, fragment", [
    ("--gamma-inter=1e-300", "gamma_inter = 1e-300"),  # the documented undefined ADP scale
    ("--gnm-cutoff=0.1", "no atom contacts"),
])
def test_input_the_reference_refuses_aborts_the_bisection(capsys, param, fragment):
    """Not exit 2 (git: bad at every commit) after the run was described: abort, up front."""
    code, out, err = run_cli(capsys, "check", SMALL, param)
    assert code == 128, (code, out, err)
    assert fragment in err and err.rstrip().endswith("aborting the bisection (128)")
    assert len(err.strip().splitlines()) == 1 and out == ""


def test_missing_fixtures_folder_aborts(capsys, monkeypatch):
    monkeypatch.delenv("ERYX_FIXTURES_DIR", raising=False)
    code, out, err = run_cli(capsys, "check", "--fixture", "5zck_p1")
    assert code == 128 and "ERYX_FIXTURES_DIR is not set" in err


def test_installed_script_argparse_error_exits_128(tmp_path):
    """Through the console script (sys.argv, not main(argv))."""
    script = Path(sys.executable).parent / "parity"
    argv = [str(script)] if script.exists() else [sys.executable, "-m", "parity"]
    proc = subprocess.run(argv + ["check", "--dtype", "float16"], capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 128, proc.stderr
    assert proc.stderr.strip().splitlines() == [
        "parity check: error: argument --dtype: invalid choice: 'float16' (choose from 'float64', 'float32'); "
        "aborting the bisection (128)"]


def test_other_subcommands_keep_exit_2_for_usage_errors(capsys):
    code, _, err = run_cli(capsys, "run", "--dtype", "float16")
    assert code == 2 and err.startswith("parity: error:")


# ------------------------------------------------------------------ one device check
@pytest.fixture
def built(monkeypatch):
    """Counts the builds of the user backend (its build would put a tensor on the device)."""
    from tests import _check_backends as cb

    calls = []
    monkeypatch.setattr(cb.UsesItsDevice, "before_build", lambda self, spec: calls.append(spec.device))
    return calls


@pytest.mark.parametrize("command, extra, code", [
    ("run", [], 2), ("bisect", [], 2), ("check", [], 128),
    ("dump", ["--out", "d.npz"], 2),
])
def test_unavailable_device_is_refused_once_before_any_backend_runs(capsys, built, tmp_path, command, extra, code):
    device = _unavailable_device()
    side = "--backend" if command == "dump" else "--candidate"
    rc, out, err = run_cli(capsys, command, "--device", device, side, USER + "UsesItsDevice", SMALL, *extra)
    assert rc == code, (out, err)
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    assert f"device {device!r}" in err and "not available" in err
    assert built == [] and not (tmp_path / "d.npz").exists() and out == ""


def test_unavailable_device_in_bench_and_the_python_api(capsys):
    from eryx.errors import EryxInputError
    from parity.running.runner import make_run

    device = _unavailable_device()
    rc, out, err = run_cli(capsys, "bench", "--quick", "--device", device)
    assert rc == 2 and len(err.strip().splitlines()) == 1 and "not available" in err and out == ""
    with pytest.raises(EryxInputError, match="not available"):
        make_run("synthetic", device=device, candidate=USER + "UsesItsDevice")


def test_malformed_or_unsupported_device_is_one_line(capsys):
    for device, text in (("cuda:x", "unknown device 'cuda:x'"), ("mps", "device type 'mps' is not supported"),
                         ("meta", "device type 'meta' is not supported")):
        rc, out, err = run_cli(capsys, "run", "--device", device)
        assert rc == 2 and text in err and len(err.strip().splitlines()) == 1, err
