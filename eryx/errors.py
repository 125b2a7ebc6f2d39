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


class InputTypeError(EryxInputError, TypeError):
    """An argument of the wrong type (e.g. a PDB path that is neither ``str`` nor
    ``os.PathLike``); also a :class:`TypeError`, so ``except TypeError`` still works."""


class SpringConstantError(EryxInputError):
    """Spring constants outside the range where the model is defined (docs/model-edges.md).

    Attributes
    ----------
    kind : str
        ``'overflow'`` (the projected Hessian is not finite), ``'too_stiff'`` (round-off
        of D's eigenvalues reaches the zero-mode cutoff), ``'too_soft'`` (a resolved
        eigenvalue of D below the zero-mode cutoff) or ``'ill_conditioned'`` (an
        eigenvalue of D or K within a factor ``SPECTRUM_SEPARATION`` of its round-off).
    """

    def __init__(self, message: str, kind: str) -> None:
        self.kind = kind
        super().__init__(message)


class UndefinedADPError(EryxInputError):
    """A map that needs the model's ADP scale, where that scale is undefined.

    Attributes
    ----------
    reason : str
        What made it undefined (no contacts, no contacts between ASUs, only k = 0
        sampled with one ASU, springs between ASUs too weak), with the remedy.
    """

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(f"the ADP scale is undefined: {reason}")


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
