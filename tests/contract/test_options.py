"""The CLI's shared options (issue 17): ``parity.contract.options`` (exit codes, the usage
error, the parser, grid/phase parsing) and ``parity.commands.run_options`` (parsed options ->
spec, stages, tiers). Expected values come from the documented CLI (the exit codes of
``parity --help`` and git bisect's meaning of 125/128) and from the messages users see."""
from __future__ import annotations

import argparse

import pytest

from parity.commands import cli
from parity.commands.run_options import (add_run_options, model_params, run_spec, selection, spec_options,
                                         stage_names, tier_overrides)
from parity.contract import options as opt
from parity.contract.spec import make_spec
from parity.stages import STAGES


@pytest.fixture(autouse=True)
def _isolated_cwd(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no pyproject.toml tiers from the repository


def parse(*argv: str) -> argparse.Namespace:
    p = opt.Parser(prog="x")
    add_run_options(p)
    return p.parse_args(list(argv))


# ------------------------------------------------------------------ exit codes
def test_exit_codes_are_the_documented_ones():
    # parity --help: 0 agree, 1 diverge, 2 usage/input error, 3 incomplete, 130 interrupted;
    # git bisect run: 125 skips a commit, 128 and above abort the bisection.
    assert (opt.EXIT_OK, opt.EXIT_DIVERGED, opt.EXIT_USAGE, opt.EXIT_INCOMPLETE, opt.EXIT_INTERRUPTED) == (
        0, 1, 2, 3, 130)
    assert (opt.EXIT_SKIP, opt.EXIT_ABORT_BISECT) == (125, 128)
    help_text = " ".join(cli.build_parser().format_help().split())  # argparse wraps the epilog
    assert "0 agree, 1 diverge, 2 usage/input error, 3 incomplete, 130 interrupted" in help_text


def test_interrupted_carries_what_was_kept():
    exc = opt.Interrupted("3 runs were recorded")
    assert isinstance(exc, KeyboardInterrupt) and exc.message == "3 runs were recorded"
    assert "interrupted" in opt.INTERRUPTED_MESSAGE and "nothing was written" in opt.INTERRUPTED_MESSAGE


# ------------------------------------------------------------------ grid and phases
@pytest.mark.parametrize("text, want", [
    ("-2,2,2", ((-2, 2, 2),) * 3),
    (" -1, 1, 3 ", ((-1, 1, 3),) * 3),
    ("-4,4,3;-17,17,3;-29,29,3", ((-4, 4, 3), (-17, 17, 3), (-29, 29, 3))),
    ("-1,1,2;", ((-1, 1, 2),) * 3),  # an empty axis after ';' is not an axis
])
def test_parse_grid(text, want):
    assert opt.parse_grid(text) == want


def test_parse_grid_none_leaves_the_fixtures_default():
    assert opt.parse_grid(None) is None


@pytest.mark.parametrize("text, message", [
    ("1,2", "malformed sampling '1,2': expected 'min,max,oversampling', e.g. -2,2,2"),
    ("1,2,3,4", "malformed sampling '1,2,3,4': expected 'min,max,oversampling'"),
    ("-1,1,x", "malformed sampling '-1,1,x': bounds and oversampling must be integers"),
    ("-1.5,1,2", "bounds and oversampling must be integers"),
    ("-1,1,2;-1,1,2", "malformed --grid '-1,1,2;-1,1,2': give one 'min,max,L' for all axes or three separated by ';'"),
    ("a;b;c;d", "give one 'min,max,L' for all axes or three"),
])
def test_parse_grid_errors_name_the_problem(text, message):
    with pytest.raises(opt.UsageError) as info:
        opt.parse_grid(text)
    assert message in str(info.value)


@pytest.mark.parametrize("text, want", [(None, None), ("", None), ("3,1,1", [1, 3]), ("4", [4]), ("1, 2,", [1, 2])])
def test_parse_phases(text, want):
    assert opt.parse_phases(text) == want


@pytest.mark.parametrize("text, message", [("x", "malformed --phases 'x': expected e.g. 1,2,3,4"),
                                           ("5", "unknown phase(s) [5]: phases are 1, 2, 3, 4"),
                                           ("0,2", "unknown phase(s) [0]")])
def test_parse_phases_errors(text, message):
    with pytest.raises(opt.UsageError) as info:
        opt.parse_phases(text)
    assert message in str(info.value)


# ------------------------------------------------------------------ the parser
def test_parser_errors_are_usage_errors_not_exits():
    with pytest.raises(opt.UsageError, match="unrecognized arguments: --bogus"):
        parse("--bogus")
    with pytest.raises(opt.UsageError, match="invalid choice"):
        parse("--dtype", "float16")
    with pytest.raises(opt.UsageError) as info:
        parse("--grid", "--fixture", "x")  # the value is missing: the hint shows the '=' form
    assert "expected one argument" in str(info.value) and "--grid=MIN,MAX,L" in str(info.value)


def test_parser_joins_a_negative_grid_but_not_after_a_double_dash():
    p = opt.Parser(prog="x")
    p.add_argument("--grid")
    p.add_argument("rest", nargs="*")
    args = p.parse_args(["--grid", "-.5,1,2", "--", "--grid", "-1,1,2"])
    assert args.grid == "-.5,1,2" and args.rest == ["--grid", "-1,1,2"]
    assert opt.join_negative_values(["--grid", "-x"]) == ["--grid", "-x"]  # not a number: left to argparse


# ------------------------------------------------------------------ the CLI's usage errors
@pytest.mark.parametrize("argv, code, line", [
    (["run", "--grid=1,2"], 2, "parity: error: malformed sampling '1,2'"),
    (["run", "--phases", "9"], 2, "parity: error: unknown phase(s) [9]"),
    (["run", "--stages", "nosuch"], 2, "parity: error: unknown stage 'nosuch'"),
    (["run", "--skip", ",".join(s.name for s in STAGES)], 2,
     "parity: error: --phases, --stages and --skip select no stage together"),
    (["run", "--tier", "tight"], 2, "parity: error: tier override 'tight': expected NAME=RTOL or NAME=RTOL,ATOL"),
    (["bisect", "--reference", "numpy", "--reference-dump", "x.npz"], 2,
     "parity: error: give either --reference or --reference-dump, not both"),
    (["check", "--grid=1,2"], 128, "parity check: error: malformed sampling '1,2'"),
    (["check", "--bogus"], 128, "parity check: error: unrecognized arguments: --bogus"),
    (["nosuch"], 2, "parity: error: argument COMMAND: invalid choice: 'nosuch'"),
])
def test_usage_errors_are_one_line_with_the_documented_code(capsys, argv, code, line):
    assert cli.main(argv) == code
    out, err = capsys.readouterr()
    assert err.startswith(line) and err.count("\n") == 1 and "Traceback" not in err, err
    if code == 128:
        assert err.rstrip().endswith("aborting the bisection (128)")


def test_no_command_prints_the_help_and_exits_2(capsys):
    assert cli.main([]) == 2
    assert capsys.readouterr().out.startswith("usage: parity")


# ------------------------------------------------------------------ parsed options -> a run
def test_model_params_holds_only_what_was_given():
    assert model_params(parse()) == {}
    assert model_params(parse("--gnm-cutoff", "5", "--gamma-inter", "0.5", "--no-expand-p1")) == {
        "gnm_cutoff": 5.0, "gamma_inter": 0.5, "expand_p1": False}


def test_spec_options_fill_from_defaults_and_the_command_line_wins():
    dump = {"fixture": "from_dump", "samplings": ((-1, 1, 2),) * 3, "params": {"gamma_intra": 2.0, "res_limit": 3.0}}
    got = spec_options(parse("--gamma-intra", "5", "--fault", "linv_upper"), dump)
    assert got == {"fixture": "from_dump", "samplings": ((-1, 1, 2),) * 3,
                   "params": {"gamma_intra": 5.0, "res_limit": 3.0}, "device": "cpu", "dtype": "float64",
                   "fixtures_dir": None, "fault": "linv_upper"}
    got = spec_options(parse("--fixture", "synthetic", "--grid=-2,2,3"), dump)
    assert got["fixture"] == "synthetic" and got["samplings"] == ((-2, 2, 3),) * 3
    assert spec_options(parse())["fixture"] == "synthetic"  # the built-in default


def test_run_spec_is_the_spec_make_spec_builds_from_the_same_input():
    got = run_spec(parse("--fixture", "synthetic", "--grid=-1,1,3", "--dtype", "float32", "--gamma-inter", "0.5",
                         "--fault", "linv_upper"))
    want = make_spec("synthetic", samplings=((-1, 1, 3),) * 3, params={"gamma_inter": 0.5}, dtype="float32")
    assert got == want


def test_run_spec_refuses_bad_input():
    with pytest.raises(opt.UsageError, match="malformed sampling"):
        run_spec(parse("--grid=1,2"))
    with pytest.raises(ValueError):  # EryxInputError: exit 2 in the CLI
        run_spec(parse("--fixture", "no_such_fixture_anywhere"))


def test_selection_and_stage_names():
    assert stage_names(" a, b,,") == ["a", "b"] and stage_names("") is None and stage_names(None) is None
    assert [s.name for s in selection(parse("--stages", "Linv,Amat"))] == ["Amat", "Linv"]  # registry order
    assert {s.phase for s in selection(parse("--phases", "1"))} == {1}
    assert "Amat" not in [s.name for s in selection(parse("--phases", "2", "--skip", "Amat"))]
    with pytest.raises(opt.UsageError, match="unknown stage 'nosuch'"):
        selection(parse("--stages", "nosuch"))


def test_tier_overrides_from_the_command_line():
    active = tier_overrides(["tight=1e-3,1e-9"])
    assert active.values == {"tight": {"rtol": 1e-3, "atol": 1e-9}}
    assert tier_overrides([]).values == {}
    with pytest.raises(opt.UsageError, match="unknown tier 'zz'"):
        tier_overrides(["zz=1"])
    with pytest.raises(opt.UsageError, match="rtol 'abc' is not a number"):
        tier_overrides(["tight=abc"])
