"""``parity report``: render a saved JSON result as one self-contained HTML report."""
from __future__ import annotations

import argparse
from pathlib import Path

from parity.commands.command import Command
from parity.commands.output_files import refuse_bad_outputs, write_together
from parity.contract.options import EXIT_OK, UsageError


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("result", help="result JSON written by 'parity run --json'")
    p.add_argument("--out", default=None, help="HTML file (default: RESULT with .html)")


def handle(args: argparse.Namespace) -> int:
    # function-local: the report's renderer (jinja2, matplotlib) only for this subcommand
    from parity.rendering.report import load_result, render_report

    try:  # first: an HTML report given as RESULT is "not a parity result", not an output clash
        result = load_result(args.result)
    except (OSError, ValueError) as exc:
        raise UsageError(str(exc)) from None
    out = Path(args.out) if args.out is not None else Path(args.result).with_suffix(".html")
    args.out = str(out) if args.out is None else args.out  # '--out ""' stays empty: refused by the check
    refuse_bad_outputs(args, {"RESULT": args.result})
    try:
        html = render_report(result)
    except (TypeError, AttributeError, KeyError, IndexError, ValueError, RecursionError) as exc:
        # A field the load-time checks (parity.contract.result_schema) do not cover: still the file's fault.
        raise UsageError(f"{args.result}: cannot render this result ({type(exc).__name__}: {exc}); is it a "
                         "file written by 'parity run --json'?") from None
    write_together({out: html})
    print(f"HTML report: {out}")
    return EXIT_OK


COMMAND = Command(
    "report", help="render a saved JSON result as an HTML report",
    description="Render the JSON result of 'parity run/bisect/compare --json' as one self-contained HTML report "
                "(no scripts, no external resources).",
    add_arguments=add_arguments, handle=handle)
