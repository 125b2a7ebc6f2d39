"""CLI hygiene (issue 21): each subcommand offers only what applies, help texts that are
true, ``--grid -2,2,2``, faults in phase order, messages naming the real problem."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from parity.commands import cli
from parity.backends.faults import FAULTS
from parity.stages import STAGE_NAMES
from tests._cli import run_cli


@pytest.fixture(autouse=True)
def _isolated_cwd(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)


def _subparsers() -> dict[str, argparse.ArgumentParser]:
    parser = cli.build_parser()
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def _options(p: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    return {o: a for a in p._actions for o in a.option_strings}


# ------------------------------------------------------------ options that apply
def test_compare_refuses_fault_it_cannot_apply(capsys, tmp_path):
    # Two dumps are already computed: a fault cannot be injected into them. Before, the
    # option was accepted and ignored (the comparison passed).
    code, out, err = run_cli(capsys, "compare", "a.npz", "b.npz", "--fault", "nosuch")
    assert code == 2 and "--fault" in err and "unrecognized" in err
    assert "--fault" not in _options(_subparsers()["compare"])


def test_add_run_options_gives_exactly_the_run_options():
    # The stable entry point new subcommands (locate, reduce) use for "the run options".
    p = cli.Parser(prog="x")
    cli.add_run_options(p)
    mine = set(_options(p)) - {"-h", "--help"}
    run = set(_options(_subparsers()["run"])) - {"-h", "--help", "--fail-fast"}
    assert mine == run
    assert {"--fixture", "--grid", "--reference", "--candidate", "--fault", "--tier", "--json", "--html"} <= mine


def test_dump_help_speaks_of_its_one_backend():
    opts = _options(_subparsers()["dump"])
    assert "reference dump" not in opts["--fixture"].help
    assert "candidate" not in opts["--dtype"].help and "backend" in opts["--dtype"].help
    assert "candidate" not in opts["--fault"].help
    # run's own help keeps its words
    run = _options(_subparsers()["run"])
    assert "reference dump" in run["--fixture"].help and "candidate" in run["--dtype"].help


def test_path_options_say_a_tarball_works():
    for command, option in (("run", "--candidate-path"), ("run", "--reference-path"), ("dump", "--backend-path")):
        action = _options(_subparsers()[command])[option]
        assert ".tar.gz" in action.help and "checkout" in action.help, (command, option)
        assert action.metavar == "PATH"


def test_dump_fault_error_names_backend_option(capsys):
    code, out, err = run_cli(capsys, "dump", "--backend", "numpy", "--fault", "phase_sign", "--out", "x.npz")
    assert code == 2
    assert err.startswith("parity: error: --backend:") and "--candidate" not in err
    assert "fault" in err and not Path("x.npz").exists()


def test_dump_unknown_fault_refused_before_work(capsys):
    code, out, err = run_cli(capsys, "dump", "--fault", "nosuch", "--out", "x.npz")
    assert code == 2 and "nosuch" in err and err.count("\n") == 1
    assert not Path("x.npz").exists()


def test_every_subcommand_has_a_description_and_a_help_line():
    parser = cli.build_parser()
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    helps = {c.dest: c.help for c in action._choices_actions}
    for name, sub in action.choices.items():
        assert sub.description and len(sub.description) > 30, name
        assert helps.get(name), name
    assert set(action.choices) == set(cli.COMMANDS)


# ------------------------------------------------------------ report of a non-result
def test_report_of_an_html_file_says_not_a_result(capsys, tmp_path):
    page = tmp_path / "X.html"
    page.write_text("<!DOCTYPE html><html></html>")
    code, out, err = run_cli(capsys, "report", str(page))
    assert code == 2 and "not a parity result" in err and "same file" not in err
    assert page.read_text() == "<!DOCTYPE html><html></html>"


def test_report_still_refuses_to_overwrite_its_result(capsys, tmp_path):
    result = tmp_path / "r.json"
    text = json.dumps({"schema_version": 1, "fixture": "synthetic", "passed": True,
                       "stages": [{"name": "q_grid", "phase": 1, "status": "pass"}]})
    result.write_text(text)
    code, out, err = run_cli(capsys, "report", str(result), "--out", str(result))
    assert code == 2 and "same file" in err and result.read_text() == text
    code, out, err = run_cli(capsys, "report", str(result))
    assert code == 0 and (tmp_path / "r.html").read_text().startswith("<!DOCTYPE html>")


# ------------------------------------------------------------ --grid with a leading minus
@pytest.mark.parametrize("argv, grid", [
    (["--grid", "-2,2,2"], "-2,2,2"),
    (["--grid=-2,2,2"], "-2,2,2"),
    (["--grid", "-4,4,3;-17,17,3;-29,29,3"], "-4,4,3;-17,17,3;-29,29,3"),
    (["--grid", "0,2,2"], "0,2,2"),
])
def test_grid_with_a_leading_minus_is_accepted(argv, grid):
    for command in ("run", "bisect", "check", "dump"):
        extra = ["--out", "x.npz"] if command == "dump" else []
        args = cli.build_parser().parse_args([command, *argv, *extra])
        assert args.grid == grid, command


def test_grid_without_a_value_hints_at_the_equals_form(capsys):
    code, out, err = run_cli(capsys, "run", "--grid", "--fixture", "x")
    assert code == 2 and "--grid=" in err and "expected one argument" in err


def test_join_negative_values_leaves_other_tokens_alone():
    from parity.contract.options import join_negative_values

    argv = ["run", "--gnm-cutoff", "4", "--grid", "-1,1,2", "--fixture", "-x", "--tier", "tight=1e-3"]
    assert join_negative_values(argv) == ["run", "--gnm-cutoff", "4", "--grid=-1,1,2", "--fixture", "-x",
                                          "--tier", "tight=1e-3"]


# ------------------------------------------------------------ faults in phase order
def test_faults_listed_in_phase_order(capsys):
    code, out, err = run_cli(capsys, "faults")
    assert code == 0
    names = [line.split()[0] for line in out.splitlines() if line.strip()]
    assert sorted(names) == sorted(FAULTS)
    keys = [(FAULTS[n].phase, STAGE_NAMES.index(FAULTS[n].stage)) for n in names]
    assert keys == sorted(keys)
    # the registry's own order is not phase order, so this test can fail
    raw = [(f.phase, STAGE_NAMES.index(f.stage)) for f in FAULTS.values()]
    assert raw != sorted(raw) or len(raw) < 2


# ------------------------------------------------------------ fixtures folder that does not exist
def test_relative_fixtures_setting_from_another_folder_says_the_folder_is_missing(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("ERYX_FIXTURES_DIR", "../shared/fixtures/pdbs")
    code, out, err = run_cli(capsys, "run", "--fixture", "5zck_p1", "--no-progress")
    assert code == 2 and err.count("\n") == 1
    assert "does not exist" in err and "ERYX_FIXTURES_DIR=../shared/fixtures/pdbs" in err
    assert str(tmp_path / "../shared/fixtures/pdbs") in err and "relative to the current folder" in err


def test_fixtures_dir_option_that_is_a_file_is_named(capsys, tmp_path):
    (tmp_path / "notadir").write_text("x")
    code, out, err = run_cli(capsys, "run", "--fixture", "5zck_p1", "--fixtures-dir", "notadir")
    assert code == 2 and "--fixtures-dir=notadir" in err and "is not a folder" in err


def test_existing_fixtures_folder_without_the_name_still_lists_known_fixtures(capsys, tmp_path):
    (tmp_path / "pdbs").mkdir()
    code, out, err = run_cli(capsys, "run", "--fixture", "nosuch", "--fixtures-dir", "pdbs")
    assert code == 2 and "unknown fixture 'nosuch'" in err and "synthetic" in err
