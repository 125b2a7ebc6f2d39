"""``parity locate``: from the stage to the line, the root probe or root torch operation.

The locating is :mod:`parity.locate` (its options and handler: :mod:`parity.locate.cli`); this
module adds the run's options, builds the run and writes the outputs.
"""
from __future__ import annotations

import argparse

from parity.commands.command import Command
from parity.commands.output_files import refuse_bad_outputs, write_result
from parity.commands.run_options import add_backend_options, add_model_options, run_from_options
from parity.locate.cli import add_arguments as add_locate_options
from parity.locate.cli import run_locate


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_model_options(p)
    add_backend_options(p)
    add_locate_options(p)


def handle(args: argparse.Namespace) -> int:
    refuse_bad_outputs(args, {"--reference-dump": getattr(args, "reference_dump", None)})
    return run_locate(args, run_from_options(args, build=False), lambda result: write_result(args, result))


COMMAND = Command(
    "locate", help="from the stage to the line: the root probe or root torch operation",
    description="Run both sides with named probes on (or trace every torch operation with --trace) and print "
                "the first probe or operation whose inputs agree and whose value does not, with its source line "
                "(docs/locate.md). Exit 1 when a root is named, 0 when nothing diverges, 2 on a usage error.",
    add_arguments=add_arguments, handle=handle)
