"""Named probes: intermediate values an implementation offers to a listening harness.

Dependency-free (the standard library only) so that any implementation can import it.
When nothing listens, :func:`probe` is one module-level ``None`` check and returns its
value untouched; :class:`probe_scope` is one check on entry and exit. A harness
(``parity.locate``) installs a listener with :func:`listen`, runs the implementation,
and aligns what both sides recorded by name and loop index.

Usage in model code::

    from eryx.probes import probe, probe_scope

    for i in range(n_asu):
        with probe_scope(asu=i):
            for a in range(n_at):
                probe("A_block", block, at={"atom": a})     # A_block[asu=i, atom=a]
    probe("A_block", A4, axes=("asu", "atom"))                # vectorised: the leading axes are indices

A vectorised probe (``axes``) and a looped one (scopes / ``at``) with the same name and
index names are the same probe: the harness stacks the looped values by their indices.
``tier`` names a tolerance tier of the harness for this probe (default: the tier of the
stage the harness maps the name to). The value is never copied or changed here.
"""
from __future__ import annotations

import sys
from typing import Any, Callable, Mapping, Sequence

#: The listener, or None: ``listener(name, value, index, axes, tier, where)`` with
#: ``index`` a tuple of (name, int) pairs (enclosing scopes, then ``at``), ``axes`` the names
#: of the value's leading index axes, ``where`` "file:line" of the probe call.
_listener: Callable[..., None] | None = None
_scope: list[tuple[str, int]] = []


def probe(name: str, value: Any, *, axes: Sequence[Any] = (), tier: str | None = None,
          at: Mapping[str, int] | None = None) -> Any:
    """Offer ``value`` under ``name`` to the listening harness; returns ``value``.

    Parameters
    ----------
    name : str
    value : array-like (NumPy array, torch tensor, scalar)
    axes : the value's leading axes that are loop indices (vectorised code): a name (the
        axis's positions are 0, 1, ...) or a pair (name, positions) for a gather, e.g.
        ``("q", grid_indices)``
    tier : a tolerance tier name of the harness, optional
    at : extra loop indices of this value, optional
    """
    if _listener is None:
        return value
    index = tuple(_scope) + (tuple((k, int(v)) for k, v in at.items()) if at else ())
    f = sys._getframe(1)
    _listener(name, value, index, tuple(axes), tier, f"{f.f_code.co_filename}:{f.f_lineno}")
    return value


class probe_scope:
    """Loop indices for the probes inside the block: ``with probe_scope(asu=1, atom=7): ...``."""

    __slots__ = ("items", "pushed")

    def __init__(self, **index: int) -> None:
        self.items = index
        self.pushed = 0

    def __enter__(self) -> "probe_scope":
        if _listener is not None:
            _scope.extend((k, int(v)) for k, v in self.items.items())
            self.pushed = len(self.items)
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.pushed:
            del _scope[len(_scope) - self.pushed:]
            self.pushed = 0


def listening() -> bool:
    """Whether a harness is recording probes."""
    return _listener is not None


class listen:
    """Install ``listener`` for the block (restoring the previous one after): for harnesses.

    ``with listen(fn): run_the_model()``.
    """

    def __init__(self, listener: Callable[..., None]) -> None:
        self.listener = listener
        self.previous: Callable[..., None] | None = None

    def __enter__(self) -> "listen":
        global _listener
        self.previous, _listener = _listener, self.listener
        return self

    def __exit__(self, *exc: Any) -> None:
        global _listener
        _listener = self.previous
        _scope.clear()


class quiet:
    """No probes inside the block (the listener is suspended, then restored).

    For code that reuses a step of the model outside its own computation (an input check
    building one ASU's A matrix, for instance): its values are not the implementation's
    intermediates and must not be aligned with the other side's.
    """

    def __init__(self) -> None:
        self.previous: Callable[..., None] | None = None

    def __enter__(self) -> "quiet":
        global _listener
        self.previous, _listener = _listener, None
        return self

    def __exit__(self, *exc: Any) -> None:
        global _listener
        _listener = self.previous
