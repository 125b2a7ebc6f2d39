"""The ``parity`` command run in-process, for the tests of its output and exit codes."""
from __future__ import annotations

from parity.commands import cli


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    """``parity ARGV...`` through :func:`parity.commands.cli.main`: (exit code, stdout, stderr)."""
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err
