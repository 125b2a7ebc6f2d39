"""``parity run``: compare two backends stage by stage and print the phase table."""
from __future__ import annotations

import argparse

from parity.commands.command import Command
from parity.commands.output_files import exit_code, refuse_bad_outputs, write_result
from parity.commands.run_options import add_run_options, run_from_options, selection


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_run_options(p)
    p.add_argument("--fail-fast", action="store_true",
                   help="stop at the first stage that diverges (same verdict and exit code 1; the stages "
                        "after it are not run, not in the table or the JSON)")


def handle(args: argparse.Namespace) -> int:
    # function-local: the runner (NumPy, the backends) and the table only once a run is asked for
    from parity.rendering.terminal import format_table
    from parity.running.runner import execute

    refuse_bad_outputs(args, {"--reference-dump": getattr(args, "reference_dump", None)})
    stages = selection(args)
    run = run_from_options(args)
    run.figures = bool(args.html)
    result = execute(run, stages, progress=False if args.no_progress else None, fail_fast=args.fail_fast)
    print(format_table(result))
    write_result(args, result)
    return exit_code(result)


COMMAND = Command(
    "run", help="compare two backends stage by stage and print the phase table",
    description="Run every stage (or a selection) on one fixture. Exit 0 when all agree, 1 on any divergence, "
                "2 on a usage or input error, 3 when a map stage compared nothing.",
    add_arguments=add_arguments, handle=handle)
