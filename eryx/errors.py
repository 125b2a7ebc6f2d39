"""Exception types shared by both backends and the harness.

Every error a user can provoke with bad input derives from :class:`EryxInputError`,
itself a :class:`ValueError`, so callers (the ``parity`` command, pytest) can turn
them into a one-line message without a traceback.
"""
from __future__ import annotations


class EryxInputError(ValueError):
    """Bad input: a file, a parameter or a grid the model cannot use."""


class StructureError(EryxInputError):
    """A PDB file that cannot be read or lacks what the model needs."""


class FixtureNotFoundError(EryxInputError, FileNotFoundError):
    """A fixture name that resolves to no PDB file."""


class MemoryBudgetError(EryxInputError, MemoryError):
    """A computation whose estimated memory exceeds the stated limit."""

    def __init__(self, what: str, estimate_bytes: float, limit_bytes: float) -> None:
        self.what = what
        self.estimate_bytes = float(estimate_bytes)
        self.limit_bytes = float(limit_bytes)
        super().__init__(
            f"{what} needs about {format_bytes(estimate_bytes)}, over the memory limit of "
            f"{format_bytes(limit_bytes)} (raise `memory_limit` or use a coarser grid)"
        )


def format_bytes(n: float) -> str:
    """Human-readable byte count, e.g. ``'27.9 GiB'``."""
    n = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024.0 or unit == "TiB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024.0
    return f"{n:.1f} TiB"
