"""What the CLI and its subcommands share: exit codes, the usage error, option parsers.

Lives below :mod:`parity.commands` so that ``bench``, ``nightly``, the tools and the CLI can
all import it without importing each other.
"""
from __future__ import annotations

import argparse

#: The exit codes (the meaning of each: :mod:`parity.commands.cli`). ``EXIT_INCOMPLETE``: nothing
#: diverged but an end-to-end stage compared nothing; ``EXIT_SKIP`` and ``EXIT_ABORT_BISECT``:
#: ``parity check``'s "skip this commit" and "abort git bisect run".
EXIT_OK, EXIT_DIVERGED, EXIT_USAGE, EXIT_INCOMPLETE, EXIT_SKIP = 0, 1, 2, 3, 125
EXIT_ABORT_BISECT = 128
EXIT_INTERRUPTED = 130
#: The one line a Ctrl-C prints, whenever it arrives (start-up included).
INTERRUPTED_MESSAGE = "parity: interrupted; nothing was written"


class Interrupted(KeyboardInterrupt):
    """A Ctrl-C after something was already written: ``message`` says what (printed instead of
    :data:`INTERRUPTED_MESSAGE`)."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class UsageError(Exception):
    """Bad options or input: reported in one line, exit code 2."""


#: Options whose value may start with a minus (``--grid -2,2,2``): argparse would read the
#: value as an option, so :class:`Parser` joins it to the option (``--grid=-2,2,2``).
NEGATIVE_VALUE_OPTIONS = frozenset({"--grid"})


def join_negative_values(argv: list[str], options: frozenset[str] = NEGATIVE_VALUE_OPTIONS) -> list[str]:
    """``["--grid", "-2,2,2"]`` -> ``["--grid=-2,2,2"]`` for the options in ``options``.

    Only a value that starts with ``-`` and a digit is joined (a grid's lower bound), so
    ``--grid --fixture x`` still reports the missing value.
    """
    out: list[str] = []
    i = 0
    while i < len(argv):
        token = argv[i]
        nxt = argv[i + 1] if i + 1 < len(argv) else None
        if (token in options and isinstance(nxt, str) and len(nxt) > 1 and nxt[0] == "-"
                and (nxt[1].isdigit() or nxt[1] == ".")):
            out.append(f"{token}={nxt}")
            i += 2
            continue
        out.append(token)
        i += 1
    return out


class Parser(argparse.ArgumentParser):
    def parse_known_args(self, args=None, namespace=None):
        import sys

        if args is None:
            args = sys.argv[1:]
        if "--" in args:  # everything after "--" is positional: left as typed
            cut = list(args).index("--")
            args = join_negative_values(list(args[:cut])) + list(args[cut:])
        else:
            args = join_negative_values(list(args))
        return super().parse_known_args(args, namespace)

    def error(self, message: str):  # argparse's own usage errors: one line, exit 2
        if message.startswith("argument --grid: expected one argument"):
            message += " (give the sampling as --grid=MIN,MAX,L, e.g. --grid=-2,2,2)"
        raise UsageError(message)


_Parser = Parser  # the name cli.py used


# ------------------------------------------------------------------ parsing
def parse_sampling(text: str) -> tuple[int, int, int]:
    """``'-2,2,2'`` -> (-2, 2, 2); integers only."""
    parts = [p.strip() for p in str(text).split(",")]
    if len(parts) != 3:
        raise UsageError(f"malformed sampling {text!r}: expected 'min,max,oversampling', e.g. -2,2,2")
    try:
        values = tuple(int(p) for p in parts)
    except ValueError:
        raise UsageError(f"malformed sampling {text!r}: bounds and oversampling must be integers") from None
    return values  # type: ignore[return-value]


def parse_grid(text: str | None) -> tuple[tuple[int, int, int], ...] | None:
    """``'-2,2,2'`` (all axes) or ``'-4,4,3;-17,17,3;-29,29,3'`` (h;k;l)."""
    if text is None:
        return None
    axes = [a for a in str(text).replace(" ", "").split(";") if a]
    if len(axes) == 1:
        axes = axes * 3
    if len(axes) != 3:
        raise UsageError(f"malformed --grid {text!r}: give one 'min,max,L' for all axes or three separated by ';'")
    return tuple(parse_sampling(a) for a in axes)


def parse_phases(text: str | None) -> list[int] | None:
    if not text:
        return None
    try:
        phases = sorted({int(p) for p in text.split(",") if p.strip()})
    except ValueError:
        raise UsageError(f"malformed --phases {text!r}: expected e.g. 1,2,3,4") from None
    bad = [p for p in phases if p not in (1, 2, 3, 4)]
    if bad:
        raise UsageError(f"unknown phase(s) {bad}: phases are 1, 2, 3, 4")
    return phases
