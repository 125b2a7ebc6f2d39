"""The ``parity`` console command: the table of subcommands, the parser, the exit codes.

Each subcommand is one module of :mod:`parity.commands` (its options and its handler, a
:class:`parity.commands.command.Command`); :data:`TABLE` lists them in the order of
``parity --help``. Adding a subcommand is one module and one entry here. The run options
several subcommands share are :func:`add_run_options` (:mod:`parity.commands.run_options`).

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
import sys
from typing import Sequence

from parity.commands import (backends, bench, bisection, check, compare, dashboard, dump, faults, locate, new_backend,
                             nightly, reduce, report, run, stages)
from parity.commands.command import Command
from parity.commands.run_options import add_run_options  # a stable name, kept importable from here
from parity.contract.options import (EXIT_ABORT_BISECT, EXIT_DIVERGED, EXIT_INCOMPLETE, EXIT_INTERRUPTED,
                                     EXIT_OK, EXIT_SKIP, EXIT_USAGE, INTERRUPTED_MESSAGE, Parser, UsageError)

__all__ = ["TABLE", "COMMANDS", "build_parser", "main", "add_run_options", "Parser", "UsageError", "EXIT_OK",
           "EXIT_DIVERGED", "EXIT_USAGE", "EXIT_INCOMPLETE", "EXIT_SKIP", "EXIT_ABORT_BISECT", "EXIT_INTERRUPTED"]

#: The subcommands, in the order of ``parity --help``.
TABLE: tuple[Command, ...] = (run.COMMAND, report.COMMAND, bisection.COMMAND, check.COMMAND, dump.COMMAND,
                              compare.COMMAND, backends.COMMAND, new_backend.COMMAND, bench.COMMAND,
                              nightly.COMMAND, dashboard.COMMAND, reduce.COMMAND, locate.COMMAND,
                              stages.COMMAND, faults.COMMAND)
#: Subcommand name -> handler (the parser's subcommands, one each).
COMMANDS = {command.name: command.handle for command in TABLE}


def build_parser() -> argparse.ArgumentParser:
    """The ``parity`` parser: one subparser per entry of :data:`TABLE`."""
    parser = Parser(prog="parity", description="Prove, phase by phase, whether two OnePhonon implementations agree.",
                    epilog="Exit codes: 0 agree, 1 diverge, 2 usage/input error, 3 incomplete, 130 interrupted.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    for command in TABLE:
        command.add_arguments(sub.add_parser(command.name, help=command.help, description=command.description))
    return parser


def _command(argv: Sequence[str] | None) -> str | None:
    """The subcommand named on the command line (the first word that is not an option)."""
    words = sys.argv[1:] if argv is None else list(argv)
    return next((w for w in words if not w.startswith("-")), None)


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``parity`` with ``argv`` (default ``sys.argv[1:]``); returns the exit code.

    Usage and input errors are one line on stderr and exit 2 (128 for ``check``); Ctrl-C is
    one line and 130; anything else is a bug and raises.
    """
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
        # function-local: the history store (sqlite) only when an error needs telling apart
        from parity.storage.history import HistoryError

        if isinstance(exc, HistoryError):
            print(f"parity: error: {exc}", file=sys.stderr)
            return EXIT_USAGE
        raise


if __name__ == "__main__":
    sys.exit(main())
