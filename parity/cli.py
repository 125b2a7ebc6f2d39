"""The ``parity`` console command.

Exit codes: ``run``/``bisect``/``nightly``: 0 everything agrees, 1 a divergence (or a
flagged regression), 2 a usage or input error (one line on stderr, no traceback).
``check`` (for ``git bisect run``): 0 agree, 1 diverge, 125 cannot run here.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Sequence

from .io import write_json

from .options import (EXIT_DIVERGED, EXIT_OK, EXIT_SKIP, EXIT_USAGE, UsageError, _Parser,  # noqa: F401
                      parse_grid, parse_phases, parse_sampling)


def _add_model_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("fixture, grid and model")
    g.add_argument("--fixture", default=None, help="fixture name or PDB path (default: the built-in 'synthetic')")
    g.add_argument("--fixtures-dir", default=None, help="directory of NAME.pdb fixtures (default: $ERYX_FIXTURES_DIR)")
    g.add_argument("--grid", default=None, metavar="SAMPLING",
                   help="h,k,l sampling: 'min,max,L' for every axis or 'h;k;l' triples, e.g. "
                        "--grid='-4,4,3;-17,17,3;-29,29,3' (use '=' before a leading minus)")
    g.add_argument("--device", default="cpu", help="torch device: cpu, cuda, cuda:1, ...")
    g.add_argument("--dtype", default="float64", choices=("float64", "float32"),
                   help="working precision of the torch backend (default float64)")
    g.add_argument("--gnm-cutoff", type=float, default=None, help="contact distance in A (default 4.0)")
    g.add_argument("--gamma-intra", type=float, default=None, help="intra-ASU spring constant (default 1.0)")
    g.add_argument("--gamma-inter", type=float, default=None, help="inter-ASU spring constant (default 1.0)")
    g.add_argument("--res-limit", type=float, default=None, help="high-resolution limit in A (default 0)")
    g.add_argument("--no-expand-p1", action="store_true", help="take the file as the whole cell (one ASU)")


def _add_selection_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("stages and tolerances")
    g.add_argument("--phases", default=None, help="comma-separated phases to run, e.g. 1,2 (default all)")
    g.add_argument("--stages", default=None, help="comma-separated stage names (see 'parity stages')")
    g.add_argument("--tier", action="append", default=[], metavar="NAME=RTOL[,ATOL]",
                   help="override a tolerance tier (repeatable); also [tool.parity.tiers.NAME] in pyproject.toml")
    g.add_argument("--fault", default=None, help="inject a named fault into the torch backend (see 'parity faults')")


def _add_output_options(p: argparse.ArgumentParser, html: bool = True) -> None:
    g = p.add_argument_group("output")
    g.add_argument("--json", default=None, metavar="FILE", help="write the result as JSON")
    if html:
        g.add_argument("--html", default=None, metavar="FILE", help="write a self-contained HTML report")
    g.add_argument("--no-progress", action="store_true", help="no progress bar")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="parity", description="Prove, phase by phase, that the PyTorch OnePhonon "
                     "reproduces the NumPy reference.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    p = sub.add_parser("run", help="compare the backends stage by stage and print the phase table",
                       description="Run every stage (or a selection) on one fixture. Exit 0 when all agree, "
                                   "1 on any divergence, 2 on a usage or input error.")
    _add_model_options(p), _add_selection_options(p), _add_output_options(p)

    p = sub.add_parser("report", help="render a saved JSON result as an HTML report")
    p.add_argument("result", help="result JSON written by 'parity run --json'")
    p.add_argument("--out", default=None, help="HTML file (default: RESULT with .html)")

    p = sub.add_parser("bisect", help="find the root-cause stage(s) of a divergence by cross-feeding",
                       description="Run the stages; re-run each diverging torch stage on the NumPy "
                                   "reference's inputs. Still diverging: root cause; agreeing: inherited.")
    _add_model_options(p), _add_selection_options(p), _add_output_options(p)

    p = sub.add_parser("check", help="exit code for 'git bisect run': 0 agree, 1 diverge, 125 cannot run",
                       description="Check one stage or phase, for 'git bisect run parity check ...'.")
    _add_model_options(p)
    p.add_argument("--stage", default=None, help="stage name to check")
    p.add_argument("--phase", type=int, default=None, choices=(1, 2, 3, 4), help="phase to check")
    p.add_argument("--tier", action="append", default=[], metavar="NAME=RTOL[,ATOL]",
                   help="override a tolerance tier (repeatable)")

    p = sub.add_parser("bench", help="benchmarks: NumPy vs torch, per phase and end to end")
    p.add_argument("--quick", action="store_true", help="small grids only (a minute)")
    p.add_argument("--json", default=None, metavar="FILE", help="write the measurements as JSON")
    p.add_argument("--fixtures-dir", default=None, help="directory of NAME.pdb fixtures (default: $ERYX_FIXTURES_DIR)")
    p.add_argument("--device", action="append", default=None, help="devices (default: cpu and cuda if present)")

    from .nightly import DEFAULT_DB, DEFAULT_REPEATS
    from .regressions import SlowdownRule

    p = sub.add_parser("nightly", help="run a fixtures x dtypes x devices matrix into the history store",
                       description="Run the matrix, time every run again in a single-threaded worker, record "
                                   "it in the history store and print the regressions. Exit 0 when every run "
                                   "passed and no numerical regression (status flip, error growth) was flagged, "
                                   "1 otherwise; a slowdown alone exits 0 unless --fail-on-slowdown. Reports and "
                                   "the dashboard go next to the --db file unless told otherwise.")
    p.add_argument("--matrix", default=None, metavar="FILE",
                   help="JSON or TOML with 'fixtures', 'dtypes', 'devices' (and optional 'grid', 'phases'); "
                        "default: synthetic (+ 5zck_p1, 7n2h when present) x float64, float32 x cpu (+ cuda)")
    p.add_argument("--db", default=str(DEFAULT_DB), metavar="FILE",
                   help="SQLite history store (default: %(default)s, relative to the current folder)")
    p.add_argument("--reports-dir", default=None, metavar="DIR",
                   help="where each run's HTML report goes (default: runs/ in the --db file's folder)")
    p.add_argument("--dashboard", default=None, metavar="FILE",
                   help="where the dashboard is rendered (default: dashboard.html in the --db file's folder)")
    p.add_argument("--no-dashboard", action="store_true", help="do not render the dashboard")
    p.add_argument("--repeats", type=int, default=DEFAULT_REPEATS, metavar="N",
                   help="timing repeats per run, single-threaded CPU time in a worker process, after one "
                        "warm-up (default: %(default)s; 0: judge slowdowns on the run's own wall-clock times)")
    p.add_argument("--fail-on-slowdown", action="store_true",
                   help=f"exit 1 when a slowdown is flagged ({SlowdownRule().describe().replace('%', '%%')}); "
                        "off by default: a slowdown alone is printed and exits 0")
    p.add_argument("--fixtures-dir", default=None, help="directory of NAME.pdb fixtures (default: $ERYX_FIXTURES_DIR)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar (one is drawn only on a terminal)")

    p = sub.add_parser("dashboard", help="render the history as one self-contained HTML page")
    p.add_argument("--db", default=str(DEFAULT_DB), metavar="FILE",
                   help="SQLite history store written by 'parity nightly' (default: %(default)s)")
    p.add_argument("--out", default=None, metavar="FILE",
                   help="HTML file to write (default: dashboard.html in the --db file's folder)")

    sub.add_parser("stages", help="list the stage registry in phase order")
    sub.add_parser("faults", help="list the named fault injections")
    return parser


# ------------------------------------------------------------------ helpers
def _model_params(args) -> dict:
    params = {}
    for opt, key in (("gnm_cutoff", "gnm_cutoff"), ("gamma_intra", "gamma_intra"),
                     ("gamma_inter", "gamma_inter"), ("res_limit", "res_limit")):
        value = getattr(args, opt, None)
        if value is not None:
            params[key] = value
    if getattr(args, "no_expand_p1", False):
        params["expand_p1"] = False
    return params


def _tier_overrides(texts: Sequence[str]) -> dict:
    from .tiers import TIERS, load_overrides, parse_tier_override

    overrides = load_overrides()
    for text in texts:
        try:
            name, values = parse_tier_override(text)
        except ValueError as exc:
            raise UsageError(str(exc)) from None
        if name not in TIERS:
            raise UsageError(f"unknown tier {name!r} in --tier; known tiers: {', '.join(TIERS)}")
        overrides[name] = {**overrides.get(name, {}), **values}
    return overrides


def _selection(args):
    from .stages import select

    phases = parse_phases(getattr(args, "phases", None))
    names = [n.strip() for n in (getattr(args, "stages", None) or "").split(",") if n.strip()] or None
    try:
        chosen = select(phases, names)
    except KeyError as exc:
        raise UsageError(exc.args[0]) from None
    if not chosen:
        raise UsageError(f"--phases {args.phases} and --stages {args.stages} select no stage together")
    return chosen


def _context(args):
    from .faults import FAULTS
    from .runner import make_context

    if getattr(args, "fault", None) and args.fault not in FAULTS:
        raise UsageError(f"unknown fault {args.fault!r}; known faults: {', '.join(FAULTS)}")
    from eryx.fixtures import DEFAULT_FIXTURE

    return make_context(args.fixture or DEFAULT_FIXTURE, samplings=parse_grid(args.grid),
                        params=_model_params(args), device=args.device, dtype=args.dtype,
                        tier_overrides=_tier_overrides(getattr(args, "tier", [])),
                        fixtures_dir=args.fixtures_dir, fault=getattr(args, "fault", None))


def _fmt(x) -> str:
    return "-" if x is None else f"{x:.2e}"


def format_table(result: dict) -> str:
    """The phase-by-phase table printed by ``parity run``."""
    from .stages import PHASE_TITLES

    lines = [f"parity {result['fixture']}  grid {result['grid']['hsampling']} {result['grid']['ksampling']} "
             f"{result['grid']['lsampling']}  device {result['device']} ({result['device_name']})  dtype {result['dtype']}"
             + (f"  FAULT {result['fault']}" if result.get("fault") else "")]
    header = f"  {'stage':<18} {'tier':<15} {'status':<15} {'max abs':>9} {'max rel':>9}  worst location"
    phase = None
    for s in result["stages"]:
        if s["phase"] != phase:
            phase = s["phase"]
            lines += ["", f"Phase {phase}: {PHASE_TITLES.get(phase, '')}", header]
        status = s["status"].upper() if s["status"] != "pass" else "pass"
        where = (s.get("worst") or {}).get("location") or "" if s.get("max_abs") else ""
        if s["status"] in ("not_comparable", "error"):
            where = (s.get("message") or "").splitlines()[0][:70]
        lines.append(f"  {s['name']:<18} {s['tier']:<15} {status:<15} {_fmt(s['max_abs']):>9} "
                     f"{_fmt(s['max_rel']):>9}  {where}")
    n = len(result["stages"])
    counts = {k: sum(1 for s in result["stages"] if s["status"] == k) for k in ("pass", "fail", "error", "not_comparable")}
    lines.append("")
    if result["passed"]:
        nc = f", {counts['not_comparable']} not comparable" if counts["not_comparable"] else ""
        lines.append(f"PASSED: {counts['pass']} of {n} stages agree{nc} ({result['duration_s']:.1f} s)")
    else:
        first = next(s for s in result["stages"] if s["name"] == result["first_failure"])
        lines.append(f"DIVERGED: first failure {first['name']} (phase {first['phase']}); "
                     f"{counts['fail']} failed, {counts['error']} errors of {n} stages ({result['duration_s']:.1f} s)")
        lines.append(f"  {(first.get('message') or '').splitlines()[0]}")
    return "\n".join(lines)


# ----------------------------------------------------------------- commands
def _execute(args) -> tuple:
    """Validate the options, run the selected stages: (context, result)."""
    from .runner import execute

    stages = _selection(args)
    ctx = _context(args)
    return ctx, execute(ctx, stages, progress=False if args.no_progress else None)


def cmd_run(args) -> int:
    _, result = _execute(args)
    print(format_table(result))
    _outputs(args, result)
    return EXIT_OK if result["passed"] else EXIT_DIVERGED


def _outputs(args, result) -> None:
    if args.json:
        write_json(args.json, result)
        print(f"JSON result: {args.json}")
    if getattr(args, "html", None):
        from .report import render_report

        render_report(result, Path(args.html))
        print(f"HTML report: {args.html}")


def cmd_report(args) -> int:
    from .report import load_result, render_report

    try:
        result = load_result(args.result)
    except (OSError, ValueError) as exc:
        raise UsageError(str(exc)) from None
    out = Path(args.out) if args.out else Path(args.result).with_suffix(".html")
    render_report(result, out)
    print(f"HTML report: {out}")
    return EXIT_OK


def cmd_bisect(args) -> int:
    from .bisect import classify, format_bisect

    ctx, result = _execute(args)
    verdicts = classify(ctx, result["stages"])
    result["bisect"] = verdicts.to_dict()
    print(format_bisect(verdicts))
    _outputs(args, result)
    return EXIT_OK if verdicts.first_divergence is None else EXIT_DIVERGED


def cmd_check(args) -> int:
    """For git bisect run: never exit 2 (git bisect would treat it as 'bad')."""
    try:
        from .runner import run_stages
        from .stages import get_stage, select

        if args.stage:
            stages = [get_stage(args.stage)]
        else:
            stages = select([args.phase] if args.phase else None)
        ctx = _context(args)
        records = run_stages(ctx, stages, progress=False)
    except Exception as exc:  # import errors, missing fixtures, bad options at this commit
        print(f"parity check: cannot run here ({type(exc).__name__}: {exc}); skipping (125)", file=sys.stderr)
        return EXIT_SKIP
    bad = [r for r in records if r["status"] in ("fail", "error")]
    for r in records:
        print(f"{r['name']}: {r['status']}")
    return EXIT_DIVERGED if bad else EXIT_OK


def cmd_stages(args) -> int:
    from .stages import PHASE_TITLES, STAGES

    phase = None
    for s in STAGES:
        if s.phase != phase:
            phase = s.phase
            print(f"Phase {phase}: {PHASE_TITLES[phase]}")
        print(f"  {s.name:<18} {s.kind:<11} {s.tier:<14} {s.description}")
    return EXIT_OK


def cmd_faults(args) -> int:
    from .faults import FAULTS

    for f in FAULTS.values():
        print(f"{f.name:<20} phase {f.phase}  stage {f.stage:<12} {f.description}")
    return EXIT_OK


def cmd_bench(args) -> int:
    from .bench import main as bench_main

    return bench_main(quick=args.quick, json_path=args.json, devices=args.device, fixtures_dir=args.fixtures_dir)


def cmd_nightly(args) -> int:
    from .nightly import run_nightly

    return run_nightly(matrix_path=args.matrix, db=args.db, reports_dir=args.reports_dir,
                       fixtures_dir=args.fixtures_dir, dashboard=args.dashboard,
                       write_dashboard=not args.no_dashboard, progress=not args.no_progress,
                       repeats=args.repeats, fail_on_slowdown=args.fail_on_slowdown)


def cmd_dashboard(args) -> int:
    from .dashboard import render_dashboard
    from .history import HistoryStore, find_regressions
    from .nightly import default_outputs, refuse_same_file

    out = Path(args.out) if args.out else default_outputs(args.db)[1]
    refuse_same_file({"--out": out}, {"--db": args.db})
    if not Path(args.db).exists():
        raise UsageError(f"no history store at {args.db}: run 'parity nightly' first")
    with HistoryStore(args.db) as store:
        regressions = find_regressions(store)
        out = render_dashboard(store, out, regressions=regressions)
    print(f"dashboard: {out} ({len(regressions)} regression(s) flagged)")
    return EXIT_OK


COMMANDS = {"run": cmd_run, "report": cmd_report, "bisect": cmd_bisect, "check": cmd_check,
            "stages": cmd_stages, "faults": cmd_faults, "bench": cmd_bench, "nightly": cmd_nightly,
            "dashboard": cmd_dashboard}


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        if not args.command:
            parser.print_help()
            return EXIT_USAGE
        return COMMANDS[args.command](args)
    except UsageError as exc:
        print(f"parity: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except (ValueError, KeyError, FileNotFoundError, PermissionError) as exc:
        # EryxInputError (a ValueError), unknown names, unreadable files, HistoryError below
        msg = exc.args[0] if isinstance(exc, KeyError) and exc.args else str(exc)
        print(f"parity: error: {msg}", file=sys.stderr)
        return EXIT_USAGE
    except Exception as exc:
        from .history import HistoryError

        if isinstance(exc, HistoryError):
            print(f"parity: error: {exc}", file=sys.stderr)
            return EXIT_USAGE
        raise


if __name__ == "__main__":
    sys.exit(main())
