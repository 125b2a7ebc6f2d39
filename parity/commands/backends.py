"""``parity backends``: the registered backends and what each provides; ``--check NAME``: a
backend's contract self-test."""
from __future__ import annotations

import argparse
import json

from parity.commands.command import Command
from parity.contract.options import EXIT_DIVERGED, EXIT_OK


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print the list (or the check) as JSON")
    p.add_argument("--check", default=None, metavar="NAME", help="contract self-test of backend NAME")
    p.add_argument("--dtype", default="float64", choices=("float64", "float32"), help="precision of the check")
    p.add_argument("--fixture", default="synthetic", help="fixture of the check (default: synthetic)")


def format_rows(rows: list[dict]) -> str:
    """The list of :func:`parity.backends.describe_backends` as text: three or four lines a backend."""
    lines = []
    for row in rows:
        lines.append(f"{row['name']:<14} {row.get('description') or row.get('error', '')}")
        lines.append(f"{'':<14} from {row['target']}")
        if row.get("provides") is not None:
            lines.append(f"{'':<14} provides {len(row['provides'])}: {', '.join(row['provides'])}")
        else:
            lines.append(f"{'':<14} provides: what its dump or checkout holds (listed per run)")
        if row.get("crossfeeds"):
            lines.append(f"{'':<14} cross-feeds {len(row['crossfeeds'])}: {', '.join(row['crossfeeds'])}")
    return "\n".join(lines)


def handle(args: argparse.Namespace) -> int:
    # function-local: loading every backend's module only for this subcommand
    from parity.backends import describe_backends

    if args.check:
        from parity.backends.selfcheck import check_backend, format_report

        report = check_backend(args.check, fixture=args.fixture, dtype=args.dtype)
        print(json.dumps(report.to_dict(), indent=1) if args.json else format_report(report))
        return EXIT_OK if report.ok else EXIT_DIVERGED
    rows = describe_backends()
    if args.json:
        print(json.dumps(rows, indent=1))
    elif rows:
        print(format_rows(rows))
    return EXIT_OK


COMMAND = Command(
    "backends", help="list the registered backends and what each provides",
    description="List the registered backends; with --check NAME, build NAME on the synthetic crystal and "
                "check every quantity it provides against the contract (shape, dtype, NaN pattern, "
                "conventions). Exit 0 conforms, 1 violates, 2 usage error.",
    add_arguments=add_arguments, handle=handle)
