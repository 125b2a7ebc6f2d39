"""``parity check``: one commit's verdict for ``git bisect run``.

Exit codes (git's meaning in brackets):

- 0 [good]: at least one selected stage was compared, none diverged, and every stage
  named with ``--stage`` was compared;
- 1 [bad]: a selected stage failed or raised, or the candidate failed to build (a
  broken candidate is a divergence);
- 125 [skip]: this commit cannot be judged: the harness or the candidate's package does
  not import here (the code cannot run at all), the candidate refuses the spec here, a
  stage NAMED with ``--stage`` is not comparable here, or no selected stage compared
  anything. (A candidate that imports but whose model construction raises is broken,
  not unjudgeable: 1.);
- 128 [abort]: a usage problem, the same at every commit, so bisecting on would only
  mark commits wrongly: an argparse error (unknown option, missing value, bad number,
  bad choice), an unknown stage, phase, fault or backend name, a missing fixture, a bad
  grid or parameter, an unavailable ``--device``, input the reference refuses (at
  construction, or a selected stage once built: the undefined ADP scale).

The skip rule. A stage that is not comparable because a side does not provide it (or the
grid gives it nothing to compare) says nothing about this commit; in a whole-run or
``--phase`` check it is left out of the verdict instead of skipping the commit, or a
candidate that never provides some quantity would make every commit a skip ("only
skipped commits left"). Only a stage the user named (``--stage``) must be compared: its
verdict is the question asked, so not comparable there is a skip. A check that compared
nothing at all cannot tell good from bad: a skip.

The output names the commit under test (``git rev-parse HEAD`` in the current folder,
where ``git bisect`` checks commits out) and the candidate's own identity, then each stage
that did not pass and the run's summary (first failure, root cause, diagnosis).
"""
from __future__ import annotations

import argparse
import subprocess
import sys
from typing import Any, Sequence

from parity.commands.command import Command
from parity.commands.run_options import (add_backend_options, add_model_options, dump_defaults, spec_options,
                                         tier_overrides)
from parity.contract.options import EXIT_ABORT_BISECT, EXIT_DIVERGED, EXIT_OK, EXIT_SKIP, UsageError, parse_phases
from parity.contract.options import EXIT_DIVERGED, EXIT_OK, EXIT_SKIP, UsageError, parse_phases
from parity.contract.results import DIVERGING, Status

EXIT_ABORT = EXIT_ABORT_BISECT
PROG = "parity check"


class Abort(Exception):
    """A usage problem: exit 128 (``git bisect run`` stops)."""


class Skip(Exception):
    """This commit cannot be judged: exit 125 (``git bisect run`` skips it)."""


def abort_line(message: str) -> str:
    return f"{PROG}: error: {message.rstrip('.')}; aborting the bisection (128)"


def skip_line(message: str) -> str:
    return f"{PROG}: cannot run here ({message}); skipping (125)"


def head_commit(cwd: str = ".") -> str | None:
    """HEAD of the git repository around ``cwd`` (the commit ``git bisect`` checked out), or None."""
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def _names(values: Sequence[str] | None) -> list[str]:
    return [n.strip() for v in (values or ()) for n in str(v).split(",") if n.strip()]


def select_stages(stage: Sequence[str] | None, phase: str | None, skip: Sequence[str] | None):
    """(stages to run, stage names that must be compared): the registry order, minus ``skip``.

    No ``--stage`` and no ``--phase``: every stage. Both: their union.
    """
    from parity.stages import STAGES, get_stage

    named, skipped = _names(stage), _names(skip)
    try:
        for name in named + skipped:
            get_stage(name)
        phases = parse_phases(phase)
    except KeyError as exc:
        raise Abort(exc.args[0]) from None
    except UsageError as exc:
        raise Abort(str(exc)) from None
    whole = not named and not phases
    chosen = [s for s in STAGES if s.name not in skipped
              and (whole or s.name in named or (phases and s.phase in phases))]
    if not chosen:
        raise Abort("--stage, --phase and --skip select no stage together")
    return chosen, [n for n in named if n not in skipped]


def _backend(name: str, path, python, options: dict, side: str):
    """Resolve a backend: an unknown name or option is a usage error, an import failure a skip."""
    from parity.backends import BackendError, get_backend, registered_backends

    if name not in registered_backends() and ":" not in name:
        raise Abort(f"--{side}: unknown backend {name!r}; known backends: "
                    f"{', '.join(sorted(registered_backends()))} (or give 'module:callable')")
    try:
        return get_backend(name, path=path, python=python, **options)
    except BackendError as exc:
        if "does not take option" in str(exc) or "unknown fault" in str(exc):
            raise Abort(f"--{side}: {exc}") from None
        raise Skip(f"--{side}: {exc}") from None


def prepare(args, spec_options: dict, tier_overrides):
    """Validate everything that is the same at every commit (Abort), then build the run (Skip)."""
    from eryx.errors import EryxInputError, MemoryBudgetError

    from parity.running.runner import DEFAULT_CANDIDATE, DEFAULT_REFERENCE, build_sessions, make_run
    from parity.contract.spec import make_spec

    fault = spec_options.pop("fault", None)
    try:
        spec = make_spec(**spec_options)  # fixture, grid, parameters, dtype, device
    except (EryxInputError, ValueError, OSError) as exc:
        raise Abort(str(exc)) from None
    candidate = args.candidate or DEFAULT_CANDIDATE
    if fault:
        from parity.backends.faults import get_fault

        if candidate == "torch":
            try:
                get_fault(fault)
            except KeyError as exc:
                raise Abort(f"--fault: {exc.args[0]}") from None
    dump = getattr(args, "reference_dump", None)
    ref = _backend("dump" if dump else (args.reference or DEFAULT_REFERENCE), dump or args.reference_path,
                   args.reference_python, {}, "reference")
    cand = _backend(candidate, args.candidate_path, args.candidate_python, {"fault": fault} if fault else {},
                    "candidate")
    try:
        run = make_run(spec.fixture, spec=spec, reference=ref, candidate=cand, tier_overrides=tier_overrides,
                       build=False)
    except (EryxInputError, ValueError) as exc:  # a backend refuses the spec at this commit
        raise Skip(str(exc)) from None
    try:
        build_sessions(run)
    except MemoryBudgetError as exc:
        raise Skip(str(exc)) from None
    except EryxInputError as exc:  # the reference refuses the input: at every commit
        raise Abort(f"the reference refuses the input: {exc}") from None
    return run


def refuse_input(run, stages) -> None:
    """Abort when the built reference refuses a selected stage for a reason in the input
    (the documented undefined ADP scale): the same at every commit, so not a verdict."""
    from eryx.errors import EryxInputError

    from parity.running.runner import refuse_reference_input

    try:
        refuse_reference_input(run, stages)
    except EryxInputError as exc:
        raise Abort(str(exc)) from None


def verdict(records: list[dict], named: Sequence[str]) -> tuple[int, str | None]:
    """(exit code, why it is a skip) of a check's stage records (see the module's skip rule)."""
    if any(r["status"] in DIVERGING for r in records):
        return EXIT_DIVERGED, None
    by_name = {r["name"]: r for r in records}
    unjudged = [n for n in named if by_name.get(n, {}).get("status") != Status.PASS]
    if unjudged:
        return EXIT_SKIP, f"named stage(s) not comparable at this commit: {', '.join(unjudged)}"
    if not any(r["status"] == Status.PASS for r in records):
        return EXIT_SKIP, "no selected stage compared anything at this commit"
    return EXIT_OK, None


def describe(run, commit: str | None) -> str:
    """The first line: the commit under test and both sides' identities."""
    def side(info: dict) -> str:
        extra = [f"commit {str(info['commit'])[:12]}"] if info.get("commit") else []
        extra += [f"FAULT {info['fault']}"] if info.get("fault") else []
        return f"{info.get('name')}" + (f" ({', '.join(extra)})" if extra else "")

    where = f"commit {commit[:12]}" if commit else "no git commit in the current folder"
    return (f"{PROG} at {where}: candidate {side(run.candidate.info())} vs reference "
            f"{side(run.reference.info())}; fixture {run.spec.fixture}")


def run_check(args, spec_options: dict, tier_overrides) -> int:
    """Everything ``parity check`` does after argparse; prints, returns the exit code."""
    try:
        from parity.running.runner import execute
        from parity.rendering.terminal import format_summary, stage_reason
    except Exception as exc:  # the harness does not import at this commit
        print(skip_line(f"{type(exc).__name__}: {exc}"), file=sys.stderr)
        return EXIT_SKIP
    try:
        stages, named = select_stages(args.stage, args.phase, args.skip)
        run = prepare(args, spec_options, tier_overrides)
        refuse_input(run, stages)
    except Abort as exc:
        print(abort_line(str(exc)), file=sys.stderr)
        return EXIT_ABORT
    except Skip as exc:
        print(skip_line(str(exc)), file=sys.stderr)
        return EXIT_SKIP
    except UsageError as exc:
        print(abort_line(str(exc)), file=sys.stderr)
        return EXIT_ABORT
    except Exception as exc:  # the candidate's package, or the harness, breaks at this commit
        print(skip_line(f"{type(exc).__name__}: {exc}"), file=sys.stderr)
        return EXIT_SKIP
    print(describe(run, head_commit()))
    result = execute(run, stages, progress=False)
    records: list[dict[str, Any]] = result["stages"]
    for r in records:
        if r["status"] != Status.PASS:
            print(f"  {r['name']}: {r['status']}" + (f" ({stage_reason(r)})" if stage_reason(r) else ""))
    print(format_summary(result))
    code, why = verdict(records, named)
    if code == EXIT_SKIP:
        print(f"{PROG}: {why}; skipping (125)", file=sys.stderr)
    return code


# ------------------------------------------------------------------ the subcommand
def add_arguments(p: argparse.ArgumentParser) -> None:
    add_model_options(p)
    add_backend_options(p)
    p.add_argument("--stage", action="append", default=None, metavar="NAME",
                   help="a stage that must be compared (repeatable, or comma-separated; default: every stage)")
    p.add_argument("--phase", default=None, metavar="N", help="phases to check, e.g. 3 or 1,2 (default all)")
    p.add_argument("--skip", action="append", default=None, metavar="STAGES",
                   help="stages not to run (repeatable, or comma-separated)")
    p.add_argument("--tier", action="append", default=[], metavar="NAME=RTOL[,ATOL]",
                   help="override a tolerance tier (repeatable)")
    p.add_argument("--fault", default=None, help="inject a named fault into the candidate (see 'parity faults')")


def handle(args: argparse.Namespace) -> int:
    """For git bisect run: 0 agree, 1 diverge, 125 skip, 128 usage error."""
    try:
        if args.reference_dump and args.reference not in (None, "dump"):
            raise UsageError("give either --reference or --reference-dump, not both")
        options, tiers = spec_options(args, dump_defaults(args.reference_dump)), tier_overrides(args.tier)
    except UsageError as exc:  # as argparse's errors in parity.commands.cli.main (the message kept whole)
        print(f"{PROG}: error: {exc}; aborting the bisection (128)", file=sys.stderr)
        return EXIT_ABORT
    return run_check(args, options, tiers)


COMMAND = Command(
    "check", help="exit code for 'git bisect run': 0 agree, 1 diverge, 125 skip, 128 abort",
    description="Judge this commit for 'git bisect run parity check ...': the whole run by default, or the "
                "named stages/phases. Exit 0 agree, 1 diverge, 125 cannot run at this commit or a named stage "
                "not comparable here (skip), 128 any usage problem (aborts the bisection). Stages a side does "
                "not provide are left out of the verdict unless named with --stage.",
    add_arguments=add_arguments, handle=handle)
