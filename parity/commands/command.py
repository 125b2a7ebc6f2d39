"""What one ``parity`` subcommand is: its help texts, its parser set-up and its handler.

Each module of :mod:`parity.commands` (one per subcommand, as asv's ``commands/``) defines one
:class:`Command` named ``COMMAND``; :mod:`parity.commands.cli` lists them in a table, builds
the parser from it and calls the chosen handler.
"""
from __future__ import annotations

import argparse
from dataclasses import dataclass
from typing import Callable


@dataclass(frozen=True)
class Command:
    """One subcommand of ``parity``.

    Attributes
    ----------
    name : str
        The word on the command line (``run``, ``new-backend``, ...).
    help : str
        Its line in ``parity --help``.
    description : str
        The top of ``parity NAME --help``.
    add_arguments : callable
        ``add_arguments(parser)``: adds the subcommand's options to its (sub)parser.
    handle : callable
        ``handle(args) -> int``: runs the subcommand on the parsed options; returns the exit
        code. Usage problems are raised as :class:`parity.contract.options.UsageError` (or the
        input errors :func:`parity.commands.cli.main` maps to exit 2).
    """

    name: str
    help: str
    description: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    handle: Callable[[argparse.Namespace], int]


def no_arguments(parser: argparse.ArgumentParser) -> None:
    """The set-up of a subcommand without options of its own (``stages``, ``faults``)."""
