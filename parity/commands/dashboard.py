"""``parity dashboard``: the history store as one self-contained HTML page."""
from __future__ import annotations

import argparse
from pathlib import Path

from parity.commands.command import Command
from parity.commands.output_files import refuse_bad_outputs
from parity.contract.options import EXIT_OK, UsageError


def add_arguments(p: argparse.ArgumentParser) -> None:
    # function-local: the default store's name lives with the nightly (NumPy); only when the
    # parser is built, not when this module is imported
    from parity.benchmarking.nightly import DEFAULT_DB

    p.add_argument("--db", default=str(DEFAULT_DB), metavar="FILE",
                   help="SQLite history store written by 'parity nightly' (default: %(default)s)")
    p.add_argument("--out", default=None, metavar="FILE",
                   help="HTML file to write (default: dashboard.html in the --db file's folder)")


def handle(args: argparse.Namespace) -> int:
    # function-local: the store, the regression rules and the renderer only for this subcommand
    from parity.rendering.dashboard import render_dashboard
    from parity.benchmarking.nightly import default_outputs, refuse_same_file
    from parity.storage.history import HistoryStore, find_regressions

    if args.out is not None:
        refuse_bad_outputs(args)
    out = Path(args.out) if args.out is not None else default_outputs(args.db)[1]
    refuse_same_file({"--out": out}, {"--db": args.db})
    if not Path(args.db).exists():
        raise UsageError(f"no history store at {args.db}: run 'parity nightly' first")
    with HistoryStore(args.db) as store:
        regressions = find_regressions(store)
        out = render_dashboard(store, out, regressions=regressions)
    print(f"dashboard: {out} ({len(regressions)} regression(s) flagged)")
    return EXIT_OK


COMMAND = Command(
    "dashboard", help="render the history as one self-contained HTML page",
    description="Render the history store written by 'parity nightly' as one self-contained HTML page: status "
                "matrix, error and time trends, regressions, recent runs.",
    add_arguments=add_arguments, handle=handle)
