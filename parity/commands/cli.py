"""The ``parity`` console command.

Exit codes (``run``, ``bisect``, ``compare``, ``nightly``):

- 0: every selected stage was compared and agrees;
- 1: a divergence (a stage failed, or a backend raised: a broken candidate is a divergence,
  reported in full, never "bad input");
- 2: a usage or input error, refused before either backend ran or refused by the reference
  too (one line on stderr naming the problem, no traceback, nothing written);
- 3: incomplete: nothing diverged, but an end-to-end map stage compared nothing (not
  comparable); skip it explicitly (``--skip``) to accept that;
- 130: interrupted (Ctrl-C); nothing partial is left behind.

``check`` (for ``git bisect run``): 0 agree, 1 diverge, 125 cannot run here or not
comparable (git bisect skips the commit), 128 usage error (aborts ``git bisect run``).
"""
from __future__ import annotations

import argparse
import json
import signal
import sys
from pathlib import Path
from typing import Sequence

from parity.storage.outputs import check_outputs, json_safe
from parity.contract.results import Verdict
from parity.storage.inputs import fixture_inputs
from parity.contract.options import (EXIT_DIVERGED, EXIT_INTERRUPTED, EXIT_OK, EXIT_SKIP, EXIT_USAGE,  # noqa: F401
                      INTERRUPTED_MESSAGE, Parser, UsageError, parse_grid, parse_phases, parse_sampling)

EXIT_INCOMPLETE = 3
EXIT_ABORT_BISECT = 128


# ------------------------------------------------------------------ options
def _add_model_options(p: argparse.ArgumentParser, *, subject: str = "the candidate",
                       dump_default: bool = True) -> None:
    g = p.add_argument_group("fixture, grid and model")
    g.add_argument("--fixture", default=None, metavar="NAME|PATH",
                   help="fixture name or PDB path (default: the built-in 'synthetic'"
                        + (", or the reference dump's)" if dump_default else ")"))
    g.add_argument("--fixtures-dir", default=None, metavar="DIR",
                   help="directory of NAME.pdb fixtures (default: $ERYX_FIXTURES_DIR)")
    g.add_argument("--grid", default=None, metavar="SAMPLING",
                   help="h,k,l sampling: 'min,max,L' for every axis or 'h;k;l' triples, e.g. --grid -2,2,2 "
                        "or --grid='-4,4,3;-17,17,3;-29,29,3'; default: the "
                        "fixture's default grid, which has an odd oversampling on one axis so that phase-sign "
                        "errors show")
    g.add_argument("--device", default="cpu", metavar="DEV", help="torch device: cpu, cuda, cuda:1, ... (default cpu)")
    g.add_argument("--dtype", default="float64", choices=("float64", "float32"),
                   help=f"working precision of {subject} (default float64)")
    g.add_argument("--gnm-cutoff", type=float, default=None, metavar="X", help="contact distance in A (default 4.0)")
    g.add_argument("--gamma-intra", type=float, default=None, metavar="X",
                   help="intra-ASU spring constant (default 1.0)")
    g.add_argument("--gamma-inter", type=float, default=None, metavar="X",
                   help="inter-ASU spring constant (default 1.0)")
    g.add_argument("--res-limit", type=float, default=None, metavar="X", help="high-resolution limit in A (default 0)")
    g.add_argument("--no-expand-p1", action="store_true", help="take the file as the whole cell (one ASU)")


def _add_backend_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("backends (see 'parity backends')")
    g.add_argument("--reference", default=None, metavar="NAME",
                   help="reference backend: a registered name or module:callable (default numpy)")
    g.add_argument("--candidate", default=None, metavar="NAME",
                   help="candidate backend: a registered name or module:callable (default torch)")
    g.add_argument("--reference-path", default=None, metavar="PATH",
                   help="checkout (folder) or .tar.gz the reference loads its code from")
    g.add_argument("--candidate-path", default=None, metavar="PATH",
                   help="checkout (folder) or .tar.gz the candidate loads its code from")
    g.add_argument("--reference-python", default=None, metavar="PYTHON",
                   help="interpreter for a subprocess reference (default: this one)")
    g.add_argument("--candidate-python", default=None, metavar="PYTHON",
                   help="interpreter for a subprocess candidate, e.g. a virtualenv with its own pins")
    g.add_argument("--reference-dump", default=None, metavar="FILE",
                   help="compare against a stored dump ('parity dump') instead of a live reference")


def _add_selection_options(p: argparse.ArgumentParser, *, fault: bool = True) -> None:
    g = p.add_argument_group("stages and tolerances")
    g.add_argument("--phases", default=None, help="comma-separated phases to run, e.g. 1,2 (default all)")
    g.add_argument("--stages", default=None, help="comma-separated stage names (see 'parity stages')")
    g.add_argument("--skip", default=None, metavar="STAGES",
                   help="comma-separated stages not to run (e.g. map stages a reference cannot provide)")
    g.add_argument("--tier", action="append", default=[], metavar="NAME=RTOL[,ATOL]",
                   help="override a tolerance tier (repeatable); also [tool.parity.tiers.NAME] in pyproject.toml")
    if fault:  # a live candidate only: dumps compared by 'parity compare' are already computed
        g.add_argument("--fault", default=None, help="inject a named fault into the candidate (see 'parity faults')")


def _add_output_options(p: argparse.ArgumentParser, html: bool = True) -> None:
    g = p.add_argument_group("output")
    g.add_argument("--json", default=None, metavar="FILE", help="write the result as JSON")
    if html:
        g.add_argument("--html", default=None, metavar="FILE", help="write a self-contained HTML report")
    g.add_argument("--no-progress", action="store_true", help="no progress bar (bars are drawn only on a terminal)")


def add_run_options(p: argparse.ArgumentParser) -> None:
    """Add "the run options" of ``parity run`` to a subcommand's parser.

    Fixture, grid and model; backends (``--reference``/``--candidate``, paths, interpreters,
    ``--reference-dump``); stages and tolerances (``--phases``, ``--stages``, ``--skip``,
    ``--tier``, ``--fault``); outputs (``--json``, ``--html``, ``--no-progress``). A handler
    turns the parsed options into a built :class:`parity.running.runner.Run` with ``_run(args)``
    and the selected stages with ``_selection(args)``. Stable name: subcommands that take a
    whole run (``run``, ``bisect``, and new ones) call this rather than the parts.
    """
    _add_model_options(p)
    _add_backend_options(p)
    _add_selection_options(p)
    _add_output_options(p)


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="parity", description="Prove, phase by phase, whether two OnePhonon implementations agree.",
                    epilog="Exit codes: 0 agree, 1 diverge, 2 usage/input error, 3 incomplete, 130 interrupted.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)

    p = sub.add_parser("run", help="compare two backends stage by stage and print the phase table",
                       description="Run every stage (or a selection) on one fixture. Exit 0 when all agree, "
                                   "1 on any divergence, 2 on a usage or input error, 3 when a map stage "
                                   "compared nothing.")
    add_run_options(p)
    p.add_argument("--fail-fast", action="store_true",
                   help="stop at the first stage that diverges (same verdict and exit code 1; the stages "
                        "after it are not run, not in the table or the JSON)")

    p = sub.add_parser("report", help="render a saved JSON result as an HTML report",
                       description="Render the JSON result of 'parity run/bisect/compare --json' as one "
                                   "self-contained HTML report (no scripts, no external resources).")
    p.add_argument("result", help="result JSON written by 'parity run --json'")
    p.add_argument("--out", default=None, help="HTML file (default: RESULT with .html)")

    p = sub.add_parser("bisect", help="find the root-cause stage(s) of a divergence by cross-feeding",
                       description="Run the stages; re-run each diverging candidate stage on the reference's "
                                   "inputs. Still diverging: root cause; agreeing: inherited.")
    add_run_options(p)

    p = sub.add_parser("check", help="exit code for 'git bisect run': 0 agree, 1 diverge, 125 skip, 128 abort",
                       description="Judge this commit for 'git bisect run parity check ...': the whole run by "
                                   "default, or the named stages/phases. Exit 0 agree, 1 diverge, 125 cannot "
                                   "run at this commit or a named stage not comparable here (skip), 128 any "
                                   "usage problem (aborts the bisection). Stages a side does not provide are "
                                   "left out of the verdict unless named with --stage.")
    _add_model_options(p), _add_backend_options(p)
    p.add_argument("--stage", action="append", default=None, metavar="NAME",
                   help="a stage that must be compared (repeatable, or comma-separated; default: every stage)")
    p.add_argument("--phase", default=None, metavar="N", help="phases to check, e.g. 3 or 1,2 (default all)")
    p.add_argument("--skip", action="append", default=None, metavar="STAGES",
                   help="stages not to run (repeatable, or comma-separated)")
    p.add_argument("--tier", action="append", default=[], metavar="NAME=RTOL[,ATOL]",
                   help="override a tolerance tier (repeatable)")
    p.add_argument("--fault", default=None, help="inject a named fault into the candidate (see 'parity faults')")

    p = sub.add_parser("dump", help="write every quantity a backend provides to one .npz file",
                       description="Compute every quantity of the contract that the backend provides and write "
                                   "them, each under its stage name, with a manifest, to one .npz (readable with "
                                   "numpy.load, no pickle). Compare dumps with 'parity compare'.")
    _add_model_options(p, subject="the backend", dump_default=False)
    g = p.add_argument_group("backend and output")
    g.add_argument("--backend", default="torch", metavar="NAME", help="backend to dump (default torch)")
    g.add_argument("--backend-path", default=None, metavar="PATH",
                   help="checkout (folder) or .tar.gz the backend loads its code from")
    g.add_argument("--backend-python", default=None, metavar="PYTHON", help="interpreter for a subprocess backend")
    g.add_argument("--fault", default=None,
                   help="inject a named fault into the dumped backend (a backend that takes faults: torch)")
    g.add_argument("--out", required=True, metavar="FILE", help="the .npz file to write")
    g.add_argument("--no-progress", action="store_true", help="no progress bar")
    g.add_argument("--probes", action="store_true",
                   help="record the named probes too, so that 'parity locate --reference-dump' can use them")

    p = sub.add_parser("compare", help="compare two dumps stage by stage (same table, report and exit codes)",
                       description="Compare two dumps written by 'parity dump' through the same registry and "
                                   "tiers as 'parity run'. Refuses dumps made from other inputs.")
    p.add_argument("REF", help="the reference dump (.npz)")
    p.add_argument("CAND", help="the candidate dump (.npz)")
    _add_selection_options(p, fault=False), _add_output_options(p)

    p = sub.add_parser("backends", help="list the registered backends and what each provides",
                       description="List the registered backends; with --check NAME, build NAME on the synthetic "
                                   "crystal and check every quantity it provides against the contract (shape, "
                                   "dtype, NaN pattern, conventions). Exit 0 conforms, 1 violates, 2 usage error.")
    p.add_argument("--json", action="store_true", help="print the list (or the check) as JSON")
    p.add_argument("--check", default=None, metavar="NAME", help="contract self-test of backend NAME")
    p.add_argument("--dtype", default="float64", choices=("float64", "float32"), help="precision of the check")
    p.add_argument("--fixture", default="synthetic", help="fixture of the check (default: synthetic)")

    p = sub.add_parser("new-backend", help="scaffold an installable package for your own backend",
                       description="Write a package for backend NAME: pyproject.toml with the "
                                   "eryx_parity.backends entry point, a backend skeleton listing every quantity "
                                   "of the contract, and tests running the contract check and every stage. "
                                   "See docs/writing-a-backend.md.")
    p.add_argument("NAME", help="the backend's name (lower case, digits, '-', '_')")
    p.add_argument("--dir", default=None, help="where to write it (default: ./NAME; must be empty or absent)")

    p = sub.add_parser("bench", help="benchmarks: NumPy vs torch, per phase and end to end",
                       description="Time the NumPy and torch backends per phase and end to end on the "
                                   "fixtures at hand, on each device, and print (or write) the measurements.")
    p.add_argument("--quick", action="store_true", help="small grids only (a minute)")
    p.add_argument("--json", default=None, metavar="FILE", help="write the measurements as JSON")
    p.add_argument("--fixtures-dir", default=None, help="directory of NAME.pdb fixtures (default: $ERYX_FIXTURES_DIR)")
    p.add_argument("--device", action="append", default=None, help="devices (default: cpu and cuda if present)")

    from parity.running.nightly import DEFAULT_DB, DEFAULT_REPEATS
    from parity.benchmarking.regressions import SlowdownRule

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

    p = sub.add_parser("dashboard", help="render the history as one self-contained HTML page",
                       description="Render the history store written by 'parity nightly' as one "
                                   "self-contained HTML page: status matrix, error and time trends, "
                                   "regressions, recent runs.")
    p.add_argument("--db", default=str(DEFAULT_DB), metavar="FILE",
                   help="SQLite history store written by 'parity nightly' (default: %(default)s)")
    p.add_argument("--out", default=None, metavar="FILE",
                   help="HTML file to write (default: dashboard.html in the --db file's folder)")

    p = sub.add_parser("reduce", help="shrink a failing run's input while the same divergence persists",
                       description="Shrink the input of a failing run (structure by delta debugging, space group "
                                   "to P1, elements/B factors, grid, parameters) while the same first stage fails "
                                   "with the same signature; write the reduced case to --out. Exit 0 reduced, "
                                   "2 usage error or nothing to reduce (the run agrees). See docs/reduce.md.")
    _add_model_options(p), _add_backend_options(p), _add_selection_options(p)
    g = p.add_argument_group("reduction")
    keep = g.add_mutually_exclusive_group()
    keep.add_argument("--keep-stage", action="store_true",
                      help="keep only the first failing stage, not its diagnosis signature")
    keep.add_argument("--keep", default=None, metavar="SIGNATURE",
                      help="keep the first failing stage with any signature containing this text "
                           "(e.g. 'transpose', '1/(2 pi)'); default: its exact signature")
    g.add_argument("--budget", type=float, default=None, metavar="SECONDS",
                   help="stop after this many seconds of search with the best input so far (default: none)")
    g.add_argument("--out", required=True, metavar="DIR", help="folder for the reduced case (created if absent)")
    g.add_argument("--no-progress", action="store_true", help="no progress lines on stderr")

    p = sub.add_parser("locate", help="from the stage to the line: the root probe or root torch operation",
                       description="Run both sides with named probes on (or trace every torch operation with "
                                   "--trace) and print the first probe or operation whose inputs agree and whose "
                                   "value does not, with its source line (docs/locate.md). Exit 1 when a root is "
                                   "named, 0 when nothing diverges, 2 on a usage error.")
    _add_model_options(p), _add_backend_options(p)
    from parity.locate.cli import add_arguments as _locate_arguments

    _locate_arguments(p)

    sub.add_parser("stages", help="list the stage registry in phase order",
                   description="List every stage of the registry in phase order: name, kind, tolerance "
                               "tier and what it compares.")
    sub.add_parser("faults", help="list the named fault injections in phase order",
                   description="List the named faults ('--fault NAME') in the phase order of the stage "
                               "each one is documented to land on.")
    return parser


# ------------------------------------------------------------------ helpers
def _model_params(args) -> dict:
    params = {}
    for key in ("gnm_cutoff", "gamma_intra", "gamma_inter", "res_limit"):
        value = getattr(args, key, None)
        if value is not None:
            params[key] = value
    if getattr(args, "no_expand_p1", False):
        params["expand_p1"] = False
    return params


def _tier_overrides(texts: Sequence[str]):
    """The tier overrides in force: pyproject.toml's, then --tier on top (with their sources)."""
    from parity.contract.tiers import gather_overrides

    try:
        return gather_overrides(list(texts))
    except (KeyError, ValueError) as exc:
        raise UsageError(exc.args[0] if isinstance(exc, KeyError) and exc.args else str(exc)) from None


def _names(text: str | None) -> list[str] | None:
    return [n.strip() for n in (text or "").split(",") if n.strip()] or None


def _selection(args):
    from parity.contract.stages import select

    phases = parse_phases(getattr(args, "phases", None))
    names, skip = _names(getattr(args, "stages", None)), _names(getattr(args, "skip", None))
    try:
        chosen = select(phases, names, skip)
    except KeyError as exc:
        raise UsageError(exc.args[0]) from None
    if not chosen:
        raise UsageError("--phases, --stages and --skip select no stage together")
    return chosen


def _dump_defaults(path: str | None) -> dict:
    """Fixture, grid and parameters of a reference dump (what the options leave open)."""
    if not path:
        return {}
    from parity.backends.dump import DumpError, read_manifest

    try:
        manifest = read_manifest(path)
    except DumpError as exc:
        raise UsageError(str(exc)) from None
    spec = manifest["spec"]
    return {"fixture": spec["fixture"], "samplings": tuple(tuple(s) for s in spec["samplings"]),
            "params": dict(spec["params"])}


def _spec_options(args, defaults: dict | None = None) -> dict:
    """The fixture, grid, model, device and dtype options as ``make_run`` keywords."""
    from eryx.fixtures import DEFAULT_FIXTURE

    defaults = defaults or {}
    fixture = args.fixture if args.fixture is not None else defaults.get("fixture") or DEFAULT_FIXTURE
    return {"fixture": fixture,
            "samplings": parse_grid(args.grid) or defaults.get("samplings"),
            "params": {**defaults.get("params", {}), **_model_params(args)},
            "device": args.device, "dtype": args.dtype, "fixtures_dir": args.fixtures_dir,
            "fault": getattr(args, "fault", None)}


def _run(args, *, build: bool = True):
    """Validate every option, resolve the backends, build both sessions."""
    from parity.running.runner import DEFAULT_CANDIDATE, DEFAULT_REFERENCE, make_run

    dump = getattr(args, "reference_dump", None)
    if dump and getattr(args, "reference", None) not in (None, "dump"):
        raise UsageError("give either --reference or --reference-dump, not both")
    return make_run(**_spec_options(args, _dump_defaults(dump)),
                    tier_overrides=_tier_overrides(getattr(args, "tier", [])),
                    reference="dump" if dump else (args.reference or DEFAULT_REFERENCE),
                    candidate=args.candidate or DEFAULT_CANDIDATE,
                    reference_path=dump or args.reference_path, candidate_path=args.candidate_path,
                    reference_python=args.reference_python, candidate_python=args.candidate_python, build=build)


def _check_outputs(args, inputs: dict | None = None) -> None:
    """Refuse, before any work, outputs that cannot or must not be written."""
    outputs = {"--json": getattr(args, "json", None) if isinstance(getattr(args, "json", None), str) else None,
               "--html": getattr(args, "html", None), "--out": getattr(args, "out", None)}
    try:
        check_outputs(outputs, {**fixture_inputs(args), **(inputs or {})})
    except ValueError as exc:
        raise UsageError(str(exc)) from None


def write_together(files: dict[Path, str]) -> None:
    """Write every file or none: all to temporary files first, then replace them with Ctrl-C held off."""
    import os
    import tempfile

    temps: list[tuple[str, Path]] = []
    try:
        for path, text in files.items():
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
            temps.append((tmp, path))
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                handle.write(text)
                handle.flush()
                os.fsync(handle.fileno())
            os.chmod(tmp, 0o644)
        blocked = hasattr(signal, "pthread_sigmask")
        if blocked:
            old = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
        try:
            for tmp, path in temps:
                os.replace(tmp, path)
        finally:
            if blocked:
                signal.pthread_sigmask(signal.SIG_SETMASK, old)
    finally:
        for tmp, _ in temps:
            Path(tmp).unlink(missing_ok=True)


def _outputs(args, result) -> None:
    files: dict[Path, str] = {}
    if getattr(args, "json", None):
        files[Path(args.json)] = json.dumps(json_safe(result), indent=1, allow_nan=False)
    if getattr(args, "html", None):
        from parity.rendering.report import render_report

        files[Path(args.html)] = render_report(result)
    write_together(files)
    for option, label in (("json", "JSON result"), ("html", "HTML report")):
        if getattr(args, option, None):
            print(f"{label}: {getattr(args, option)}")


def _exit_code(result: dict) -> int:
    return {Verdict.PASS: EXIT_OK, Verdict.INCOMPLETE: EXIT_INCOMPLETE}.get(result.get("verdict", ""), EXIT_DIVERGED)


# ----------------------------------------------------------------- commands
def cmd_run(args) -> int:
    from parity.running.runner import execute
    from parity.rendering.terminal import format_table

    _check_outputs(args, {"--reference-dump": getattr(args, "reference_dump", None)})
    stages = _selection(args)
    run = _run(args)
    run.figures = bool(args.html)
    result = execute(run, stages, progress=False if args.no_progress else None, fail_fast=args.fail_fast)
    print(format_table(result))
    _outputs(args, result)
    return _exit_code(result)


def cmd_report(args) -> int:
    from parity.rendering.report import load_result, render_report

    try:  # first: an HTML report given as RESULT is "not a parity result", not an output clash
        result = load_result(args.result)
    except (OSError, ValueError) as exc:
        raise UsageError(str(exc)) from None
    out = Path(args.out) if args.out is not None else Path(args.result).with_suffix(".html")
    args.out = str(out) if args.out is None else args.out  # '--out ""' stays empty: refused by the check
    _check_outputs(args, {"RESULT": args.result})
    try:
        html = render_report(result)
    except (TypeError, AttributeError, KeyError, IndexError, ValueError, RecursionError) as exc:
        # A field the load-time checks (parity.contract.result_schema) do not cover: still the file's fault.
        raise UsageError(f"{args.result}: cannot render this result ({type(exc).__name__}: {exc}); is it a "
                         "file written by 'parity run --json'?") from None
    write_together({out: html})
    print(f"HTML report: {out}")
    return EXIT_OK


def cmd_bisect(args) -> int:
    from parity.running.crossfeed import apply, classify, format_bisect
    from parity.running.runner import execute
    from parity.rendering.terminal import format_summary

    _check_outputs(args, {"--reference-dump": getattr(args, "reference_dump", None)})
    stages = _selection(args)
    run = _run(args)
    run.figures = bool(args.html)
    result = execute(run, stages, progress=False if args.no_progress else None)
    verdicts = classify(run, result["stages"])
    result["bisect"] = verdicts.to_dict()
    apply(result["stages"], verdicts)  # cross-feeding's causes replace the input graph's
    print(format_bisect(verdicts))
    print(format_summary(result))
    _outputs(args, result)
    return _exit_code(result)


def cmd_check(args) -> int:
    """For git bisect run: 0 agree, 1 diverge, 125 skip, 128 usage error (parity.commands.check)."""
    try:
        from parity.commands.check import run_check
    except Exception as exc:  # the package does not import at this commit
        print(f"parity check: cannot run here ({type(exc).__name__}: {exc}); skipping (125)", file=sys.stderr)
        return EXIT_SKIP
    try:
        if args.reference_dump and args.reference not in (None, "dump"):
            raise UsageError("give either --reference or --reference-dump, not both")
        options, tiers = _spec_options(args, _dump_defaults(args.reference_dump)), _tier_overrides(args.tier)
    except UsageError as exc:
        print(f"parity check: error: {exc}; aborting the bisection (128)", file=sys.stderr)
        return EXIT_ABORT_BISECT
    return run_check(args, options, tiers)


def cmd_dump(args) -> int:
    from parity.backends.dump import write_dump
    from parity.running.runner import _backend, make_run

    _check_outputs(args)
    spec_options = _spec_options(args)
    fault = spec_options.pop("fault")
    # One backend, resolved here so that its errors name --backend (not a run's two sides).
    backend = _backend(args.backend, args.backend_path, args.backend_python,
                       {"fault": fault} if fault is not None else {}, "backend")
    run = make_run(**spec_options, reference=backend, candidate=backend, build=False)
    session = run.cand
    show = sys.stderr.isatty() and not args.no_progress
    if show:
        from tqdm.auto import tqdm

        from parity.contract.quantities import QUANTITY_NAMES

        bar = tqdm(total=len(QUANTITY_NAMES), desc=f"dump {args.backend}", unit="quantity", leave=False)
        on_quantity = lambda name: (bar.set_postfix_str(name), bar.update(1))  # noqa: E731
    else:
        on_quantity = None
    manifest = write_dump(session, args.out, on_quantity=on_quantity, probes=args.probes)
    n, missing, errors = len(manifest["quantities"]), manifest["missing"], manifest["errors"]
    print(f"dump: {args.out}: {n} quantities of backend {args.backend} ({manifest['compute_seconds']:.1f} s)"
          + (f"; not provided: {', '.join(missing)}" if missing else "")
          + (f"; ERRORS: {', '.join(errors)}" if errors else ""))
    if manifest.get("build_error"):
        print(f"  construction failed: {manifest['build_error']['message']}")
    return EXIT_DIVERGED if errors or manifest.get("build_error") else EXIT_OK


def cmd_compare(args) -> int:
    from parity.backends.dump import DumpBackend, DumpError
    from parity.running.runner import Run, build_sessions, execute
    from parity.rendering.terminal import format_table

    _check_outputs(args, {"REF": args.REF, "CAND": args.CAND})
    stages = _selection(args)
    try:
        ref, cand = DumpBackend(path=args.REF), DumpBackend(path=args.CAND)
        spec = ref.spec
        cand.check_spec(spec)
    except DumpError as exc:
        raise UsageError(str(exc)) from None
    spec = type(spec)(**{**spec.__dict__, "dtype": cand.spec.dtype, "device": cand.spec.device})
    active = _tier_overrides(args.tier)
    run = Run(spec=spec, reference=ref, candidate=cand, ref=ref.open(spec), cand=cand.open(spec),
              tier_overrides=active.values, overrides=active, figures=bool(args.html))
    build_sessions(run)
    result = execute(run, stages, progress=False if args.no_progress else None)
    print(format_table(result))
    _outputs(args, result)
    return _exit_code(result)


def cmd_new_backend(args) -> int:
    from parity.backends.scaffold import scaffold

    files = scaffold(args.NAME, args.dir)
    root = files[0].parent
    print(f"wrote {len(files)} files into {root}: pip install -e {root}, then "
          f"'parity backends --check {args.NAME}' (see docs/writing-a-backend.md)")
    return EXIT_OK


def cmd_backends(args) -> int:
    from parity.backends import describe_backends

    if args.check:
        from parity.backends.selfcheck import check_backend, format_report

        report = check_backend(args.check, fixture=args.fixture, dtype=args.dtype)
        print(json.dumps(report.to_dict(), indent=1) if args.json else format_report(report))
        return EXIT_OK if report.ok else EXIT_DIVERGED
    rows = describe_backends()
    if args.json:
        print(json.dumps(rows, indent=1))
        return EXIT_OK
    for row in rows:
        print(f"{row['name']:<14} {row.get('description') or row.get('error', '')}")
        print(f"{'':<14} from {row['target']}")
        if row.get("provides") is not None:
            print(f"{'':<14} provides {len(row['provides'])}: {', '.join(row['provides'])}")
        else:
            print(f"{'':<14} provides: what its dump or checkout holds (listed per run)")
        if row.get("crossfeeds"):
            print(f"{'':<14} cross-feeds {len(row['crossfeeds'])}: {', '.join(row['crossfeeds'])}")
    return EXIT_OK


def cmd_reduce(args) -> int:
    from parity.reduce.command import NothingToReduce, check_out_dir, reduce_outputs, run_arguments
    from parity.contract.spec import make_spec

    if args.reference_dump:
        raise UsageError("--reference-dump: a dump holds one fixed input; 'parity reduce' needs a live reference")
    if args.budget is not None and not args.budget >= 0:
        raise UsageError(f"--budget {args.budget:g}: must be a number of seconds >= 0")
    try:
        out = check_out_dir(args.out)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    stages, opts, tiers = _selection(args), _spec_options(args), _tier_overrides(args.tier)
    spec = make_spec(opts["fixture"], samplings=opts["samplings"], params=opts["params"], device=args.device,
                     dtype=args.dtype, fixtures_dir=args.fixtures_dir)
    options = {"reference": args.reference or "numpy", "candidate": args.candidate or "torch",
               "reference_path": args.reference_path, "candidate_path": args.candidate_path,
               "reference_python": args.reference_python, "candidate_python": args.candidate_python,
               "fault": args.fault, "device": args.device, "dtype": args.dtype, "tier_overrides": tiers}
    try:
        red, result, files = reduce_outputs(spec, options, run_arguments(vars(args), tiers.values), stages,
                                            budget_s=args.budget, keep_stage=args.keep_stage, keep=args.keep,
                                            progress=not args.no_progress)
    except NothingToReduce as exc:
        raise UsageError(str(exc)) from None
    write_together({out / name: text for name, text in files.items()})
    print(red.summary())
    print(f"reduced run: first failure {result.get('first_failure')} "
          f"[{result['reduce']['reduced_signature']}], {result['duration_s']:.2f} s of stages "
          "(with the report's figures)")
    print(f"reduced case: {out}/ (reproduce: cd {out} && bash command.txt)")
    return EXIT_OK


def cmd_stages(args) -> int:
    from parity.contract.stages import PHASE_TITLES, STAGES

    phase = None
    for s in STAGES:
        if s.phase != phase:
            phase = s.phase
            print(f"Phase {phase}: {PHASE_TITLES[phase]}")
        print(f"  {s.name:<18} {s.kind:<11} {s.tier:<14} {s.description}")
    return EXIT_OK


def faults_in_phase_order() -> list:
    """The named faults ordered by their stage's place in the registry (phase order), then name."""
    from parity.backends.faults import FAULTS
    from parity.contract.stages import STAGES

    place = {s.name: i for i, s in enumerate(STAGES)}
    return sorted(FAULTS.values(), key=lambda f: (f.phase, place.get(f.stage, len(place)), f.name))


def cmd_faults(args) -> int:
    for f in faults_in_phase_order():
        print(f"{f.name:<20} phase {f.phase}  stage {f.stage:<12} {f.description}")
    return EXIT_OK


def cmd_bench(args) -> int:
    from parity.benchmarking.bench import main as bench_main
    from parity.contract.devices import check_device

    for device in args.device or ():
        check_device(device)  # the one device check (EryxInputError: exit 2, one line)
    return bench_main(quick=args.quick, json_path=args.json, devices=args.device, fixtures_dir=args.fixtures_dir)


def cmd_nightly(args) -> int:
    from parity.running.nightly import run_nightly

    return run_nightly(matrix_path=args.matrix, db=args.db, reports_dir=args.reports_dir,
                       fixtures_dir=args.fixtures_dir, dashboard=args.dashboard,
                       write_dashboard=not args.no_dashboard, progress=not args.no_progress,
                       repeats=args.repeats, fail_on_slowdown=args.fail_on_slowdown)


def cmd_dashboard(args) -> int:
    from parity.rendering.dashboard import render_dashboard
    from parity.storage.history import HistoryStore, find_regressions
    from parity.running.nightly import default_outputs, refuse_same_file

    if args.out is not None:
        _check_outputs(args)
    out = Path(args.out) if args.out is not None else default_outputs(args.db)[1]
    refuse_same_file({"--out": out}, {"--db": args.db})
    if not Path(args.db).exists():
        raise UsageError(f"no history store at {args.db}: run 'parity nightly' first")
    with HistoryStore(args.db) as store:
        regressions = find_regressions(store)
        out = render_dashboard(store, out, regressions=regressions)
    print(f"dashboard: {out} ({len(regressions)} regression(s) flagged)")
    return EXIT_OK


def cmd_locate(args) -> int:
    from parity.locate.cli import run_locate

    _check_outputs(args, {"--reference-dump": getattr(args, "reference_dump", None)})
    return run_locate(args, _run(args, build=False))


#: Subcommand name -> handler (the parser's subcommands, one each).
COMMANDS = {"run": cmd_run, "report": cmd_report, "bisect": cmd_bisect, "check": cmd_check, "dump": cmd_dump,
            "compare": cmd_compare, "locate": cmd_locate, "reduce": cmd_reduce, "backends": cmd_backends,
            "new-backend": cmd_new_backend, "stages": cmd_stages, "faults": cmd_faults, "bench": cmd_bench,
            "nightly": cmd_nightly, "dashboard": cmd_dashboard}


def _command(argv: Sequence[str] | None) -> str | None:
    """The subcommand named on the command line (the first word that is not an option)."""
    words = sys.argv[1:] if argv is None else list(argv)
    return next((w for w in words if not w.startswith("-")), None)


def main(argv: Sequence[str] | None = None) -> int:
    try:
        parser = build_parser()
        args = parser.parse_args(argv)
        if not args.command:
            parser.print_help()
            return EXIT_USAGE
        return COMMANDS[args.command](args)
    except KeyboardInterrupt as exc:
        print(getattr(exc, "message", None) or INTERRUPTED_MESSAGE, file=sys.stderr)
        return EXIT_INTERRUPTED
    except UsageError as exc:
        if _command(argv) == "check":  # argparse errors too: the same at every commit, so abort git bisect run
            print(f"parity check: error: {exc}; aborting the bisection (128)", file=sys.stderr)
            return EXIT_ABORT_BISECT
        print(f"parity: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except (ValueError, KeyError, FileNotFoundError, PermissionError, IsADirectoryError) as exc:
        # EryxInputError (a ValueError), unknown names, unreadable files, HistoryError below
        msg = exc.args[0] if isinstance(exc, KeyError) and exc.args else str(exc)
        print(f"parity: error: {msg}", file=sys.stderr)
        return EXIT_USAGE
    except OSError as exc:  # a full disk, a read-only file system, a file removed under us
        where = f" ({exc.filename})" if exc.filename else ""
        print(f"parity: error: {exc.strerror or exc}{where}; nothing was written", file=sys.stderr)
        return EXIT_USAGE
    except Exception as exc:
        from parity.storage.history import HistoryError

        if isinstance(exc, HistoryError):
            print(f"parity: error: {exc}", file=sys.stderr)
            return EXIT_USAGE
        raise


if __name__ == "__main__":
    sys.exit(main())
