"""``parity compare``: two dumps compared stage by stage (the table, report and exit codes of a run)."""
from __future__ import annotations

import argparse

from parity.commands.command import Command
from parity.commands.output_files import exit_code, refuse_bad_outputs, write_result
from parity.commands.run_options import add_output_options, add_selection_options, selection, tier_overrides
from parity.contract.options import UsageError


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("REF", help="the reference dump (.npz)")
    p.add_argument("CAND", help="the candidate dump (.npz)")
    add_selection_options(p, fault=False)
    add_output_options(p)


def handle(args: argparse.Namespace) -> int:
    # function-local: the dump reader and the runner (NumPy) only for this subcommand
    from parity.backends.dump import DumpBackend, DumpError
    from parity.rendering.terminal import format_table
    from parity.running.runner import Run, build_sessions, execute

    refuse_bad_outputs(args, {"REF": args.REF, "CAND": args.CAND})
    stages = selection(args)
    try:
        ref, cand = DumpBackend(path=args.REF), DumpBackend(path=args.CAND)
        spec = ref.spec
        cand.check_spec(spec)
    except DumpError as exc:
        raise UsageError(str(exc)) from None
    spec = type(spec)(**{**spec.__dict__, "dtype": cand.spec.dtype, "device": cand.spec.device})
    active = tier_overrides(args.tier)
    run = Run(spec=spec, reference=ref, candidate=cand, reference_session=ref.open(spec), candidate_session=cand.open(spec),
              tier_overrides=active.values, overrides=active, figures=bool(args.html))
    build_sessions(run)
    result = execute(run, stages, progress=False if args.no_progress else None)
    print(format_table(result))
    write_result(args, result)
    return exit_code(result)


COMMAND = Command(
    "compare", help="compare two dumps stage by stage (same table, report and exit codes)",
    description="Compare two dumps written by 'parity dump' through the same registry and tiers as "
                "'parity run'. Refuses dumps made from other inputs.",
    add_arguments=add_arguments, handle=handle)
