"""``parity new-backend``: scaffold an installable package for one's own backend."""
from __future__ import annotations

import argparse

from parity.commands.command import Command
from parity.contract.options import EXIT_OK


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("NAME", help="the backend's name (lower case, digits, '-', '_')")
    p.add_argument("--dir", default=None, help="where to write it (default: ./NAME; must be empty or absent)")


def handle(args: argparse.Namespace) -> int:
    # function-local: the scaffold's templates only for this subcommand
    from parity.backends.scaffold import scaffold

    files = scaffold(args.NAME, args.dir)
    root = files[0].parent
    print(f"wrote {len(files)} files into {root}: pip install -e {root}, then "
          f"'parity backends --check {args.NAME}' (see docs/writing-a-backend.md)")
    return EXIT_OK


COMMAND = Command(
    "new-backend", help="scaffold an installable package for your own backend",
    description="Write a package for backend NAME: pyproject.toml with the eryx_parity.backends entry point, "
                "a backend skeleton listing every quantity of the contract, and tests running the contract "
                "check and every stage. See docs/writing-a-backend.md.",
    add_arguments=add_arguments, handle=handle)
