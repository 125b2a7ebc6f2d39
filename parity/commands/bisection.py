"""``parity bisect``: the root-cause stage(s) of a divergence, by cross-feeding.

(Named ``bisection`` rather than ``bisect``, the standard library's module.)
"""
from __future__ import annotations

import argparse

from parity.commands.command import Command
from parity.commands.output_files import exit_code, refuse_bad_outputs, write_result
from parity.commands.run_options import add_run_options, run_from_options, selection


def handle(args: argparse.Namespace) -> int:
    # function-local: the runner and cross-feeding (NumPy, the backends) only once a run is asked for
    from parity.rendering.terminal import format_summary
    from parity.running.crossfeed import apply, classify, format_bisect
    from parity.running.runner import execute

    refuse_bad_outputs(args, {"--reference-dump": getattr(args, "reference_dump", None)})
    stages = selection(args)
    run = run_from_options(args)
    run.figures = bool(args.html)
    result = execute(run, stages, progress=False if args.no_progress else None)
    verdicts = classify(run, result["stages"])
    result["bisect"] = verdicts.to_dict()
    apply(result["stages"], verdicts)  # cross-feeding's causes replace the input graph's
    print(format_bisect(verdicts))
    print(format_summary(result))
    write_result(args, result)
    return exit_code(result)


COMMAND = Command(
    "bisect", help="find the root-cause stage(s) of a divergence by cross-feeding",
    description="Run the stages; re-run each diverging candidate stage on the reference's inputs. Still "
                "diverging: root cause; agreeing: inherited.",
    add_arguments=add_run_options, handle=handle)
