"""The run options shared by the subcommands, and what a handler turns them into.

Option groups (each a function adding one argparse group): fixture, grid and model
(:func:`add_model_options`); the two backends (:func:`add_backend_options`); stages and
tolerances (:func:`add_selection_options`); outputs (:func:`add_output_options`); all four
together are :func:`add_run_options`, "the run options" of ``parity run``.

From parsed options to a run: :func:`spec_options` (the ``make_run``/``make_spec`` keywords),
:func:`run_spec` (the :class:`parity.contract.spec.RunSpec` a run with these options compares
on), :func:`run_from_options` (both backends resolved, both sessions built),
:func:`selection` (the stages) and :func:`tier_overrides`. Every problem is a
:class:`parity.contract.options.UsageError` (exit 2) naming the option.

The runner, the stage registry and the dump reader are imported inside the functions that
use them: building the parser (``parity --help``, ``parity stages``) does not load them.
"""
from __future__ import annotations

import argparse
from typing import Any, Sequence

from parity.contract.options import UsageError, parse_grid, parse_phases


# ------------------------------------------------------------------ option groups
def add_model_options(p: argparse.ArgumentParser, *, subject: str = "the candidate",
                      dump_default: bool = True) -> None:
    """Fixture, grid, device, dtype and model parameters (``subject``: whose dtype ``--dtype`` sets)."""
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


def add_backend_options(p: argparse.ArgumentParser) -> None:
    """``--reference``/``--candidate``, their paths and interpreters, ``--reference-dump``."""
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


def add_selection_options(p: argparse.ArgumentParser, *, fault: bool = True) -> None:
    """``--phases``, ``--stages``, ``--skip``, ``--tier`` and (``fault``: a live candidate) ``--fault``."""
    g = p.add_argument_group("stages and tolerances")
    g.add_argument("--phases", default=None, help="comma-separated phases to run, e.g. 1,2 (default all)")
    g.add_argument("--stages", default=None, help="comma-separated stage names (see 'parity stages')")
    g.add_argument("--skip", default=None, metavar="STAGES",
                   help="comma-separated stages not to run (e.g. map stages a reference cannot provide)")
    g.add_argument("--tier", action="append", default=[], metavar="NAME=RTOL[,ATOL]",
                   help="override a tolerance tier (repeatable); also [tool.parity.tiers.NAME] in pyproject.toml")
    if fault:  # a live candidate only: dumps compared by 'parity compare' are already computed
        g.add_argument("--fault", default=None, help="inject a named fault into the candidate (see 'parity faults')")


def add_output_options(p: argparse.ArgumentParser, html: bool = True) -> None:
    """``--json``, ``--html`` (unless ``html`` is false) and ``--no-progress``."""
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
    turns the parsed options into a built :class:`parity.running.runner.Run` with
    :func:`run_from_options` and the selected stages with :func:`selection`. Stable name
    (also importable from :mod:`parity.commands.cli`): subcommands that take a whole run
    (``run``, ``bisect``, and new ones) call this rather than the parts.
    """
    add_model_options(p)
    add_backend_options(p)
    add_selection_options(p)
    add_output_options(p)


# ------------------------------------------------------------------ parsed options -> a run
def model_params(args: argparse.Namespace) -> dict[str, Any]:
    """The model parameters given on the command line (only those given), as ``params`` keywords."""
    params: dict[str, Any] = {}
    for key in ("gnm_cutoff", "gamma_intra", "gamma_inter", "res_limit"):
        value = getattr(args, key, None)
        if value is not None:
            params[key] = value
    if getattr(args, "no_expand_p1", False):
        params["expand_p1"] = False
    return params


def tier_overrides(texts: Sequence[str]):
    """The tier overrides in force: pyproject.toml's, then ``--tier`` on top (with their sources).

    Returns a :class:`parity.contract.tiers.ActiveOverrides`; a malformed or unknown
    ``--tier`` is a UsageError.
    """
    from parity.contract.tiers import gather_overrides

    try:
        return gather_overrides(list(texts))
    except (KeyError, ValueError) as exc:
        raise UsageError(exc.args[0] if isinstance(exc, KeyError) and exc.args else str(exc)) from None


def stage_names(text: str | None) -> list[str] | None:
    """``'a, b,'`` -> ``['a', 'b']``; None when the text names nothing."""
    return [n.strip() for n in (text or "").split(",") if n.strip()] or None


def selection(args: argparse.Namespace) -> list:
    """The stages ``--phases``, ``--stages`` and ``--skip`` select, in registry order.

    Raises UsageError for a malformed phase list, an unknown stage, or an empty selection.
    """
    from parity.stages import select

    phases = parse_phases(getattr(args, "phases", None))
    names, skip = stage_names(getattr(args, "stages", None)), stage_names(getattr(args, "skip", None))
    try:
        chosen = select(phases, names, skip)
    except KeyError as exc:
        raise UsageError(exc.args[0]) from None
    if not chosen:
        raise UsageError("--phases, --stages and --skip select no stage together")
    return chosen


def dump_defaults(path: str | None) -> dict[str, Any]:
    """Fixture, grid and parameters of a reference dump (what the options leave open); {} without one."""
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


def spec_options(args: argparse.Namespace, defaults: dict | None = None) -> dict[str, Any]:
    """The fixture, grid, model, device, dtype and fault options as ``make_run`` keywords.

    ``defaults`` (e.g. :func:`dump_defaults`) fills what the command line leaves open:
    ``fixture``, ``samplings``, ``params`` (the command line's parameters win).
    """
    from eryx.fixtures import DEFAULT_FIXTURE

    defaults = defaults or {}
    fixture = args.fixture if args.fixture is not None else defaults.get("fixture") or DEFAULT_FIXTURE
    return {"fixture": fixture,
            "samplings": parse_grid(args.grid) or defaults.get("samplings"),
            "params": {**defaults.get("params", {}), **model_params(args)},
            "device": args.device, "dtype": args.dtype, "fixtures_dir": args.fixtures_dir,
            "fault": getattr(args, "fault", None)}


def run_spec(args: argparse.Namespace):
    """The :class:`parity.contract.spec.RunSpec` a run with these parsed run options compares on.

    The fixture, grid and parameters of ``--reference-dump`` fill what the options leave open,
    as in :func:`run_from_options`; the fault is not part of a spec. Raises UsageError or
    EryxInputError (exit 2) for bad input.
    """
    from parity.contract.spec import make_spec

    options = spec_options(args, dump_defaults(getattr(args, "reference_dump", None)))
    options.pop("fault")
    return make_spec(options.pop("fixture"), **options)


def run_from_options(args: argparse.Namespace, *, build: bool = True):
    """Validate every run option, resolve both backends and (``build``) build both sessions.

    Returns a :class:`parity.running.runner.Run`.
    """
    from parity.running.runner import DEFAULT_CANDIDATE, DEFAULT_REFERENCE, make_run

    dump = getattr(args, "reference_dump", None)
    if dump and getattr(args, "reference", None) not in (None, "dump"):
        raise UsageError("give either --reference or --reference-dump, not both")
    return make_run(**spec_options(args, dump_defaults(dump)),
                    tier_overrides=tier_overrides(getattr(args, "tier", [])),
                    reference="dump" if dump else (args.reference or DEFAULT_REFERENCE),
                    candidate=args.candidate or DEFAULT_CANDIDATE,
                    reference_path=dump or args.reference_path, candidate_path=args.candidate_path,
                    reference_python=args.reference_python, candidate_python=args.candidate_python, build=build)
