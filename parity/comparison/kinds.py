"""THE registry of comparison kinds: a kind's name -> its :class:`Comparator`.

A stage names its kind (``Stage(kind="array")``) and the registry resolves the name to
the comparator that compares, diagnoses and feeds that stage
(:mod:`parity.comparison.comparator`). Adding a kind is one :class:`Comparator` subclass,
in the module where its comparison lives, and one entry in :data:`REGISTRY` below.

This is the only place that knows the kinds' names; everything else asks a stage's
comparator (``stage.comparator.computes``, ``stage.comparator.compare(...)``) or, for a
stored result record, :func:`find_kind`.
"""

from __future__ import annotations

from typing import Mapping

from parity.comparison.arrays import ArrayKind, ExactKind, GradientKind
from parity.comparison.check_kinds import InvariantKind, OracleKind
from parity.comparison.comparator import Comparator
from parity.comparison.dtypes import DtypeKind
from parity.comparison.eigenspaces import EigenspaceKind

__all__ = ["REGISTRY", "KIND_NAMES", "Comparator", "get_kind", "find_kind"]

#: Every comparison kind, by name, in the order they are listed to a user.
REGISTRY: Mapping[str, Comparator] = {kind.name: kind for kind in (
    ArrayKind(),
    ExactKind(),
    EigenspaceKind(),
    DtypeKind(),
    GradientKind(),
    OracleKind(),
    InvariantKind(),
)}

#: The kinds' names (``Stage.kind`` is one of them).
KIND_NAMES: tuple[str, ...] = tuple(REGISTRY)


def get_kind(kind: str | Comparator | type[Comparator]) -> Comparator:
    """The registered comparator for ``kind`` (a name, a comparator or its class).

    Raises
    ------
    ValueError
        ``kind`` is not registered; the message names the known kinds.
    """
    if isinstance(kind, str):
        found = REGISTRY.get(kind)
    else:  # a comparator or its class: the registered one of that very class
        cls = kind if isinstance(kind, type) else type(kind)
        found = REGISTRY.get(getattr(cls, "name", None))  # type: ignore[arg-type]
        if type(found) is not cls:
            found = None
    if found is None:
        raise ValueError(f"unknown comparison kind {kind!r}; known kinds: {', '.join(KIND_NAMES)}")
    return found


def find_kind(name: object) -> Comparator | None:
    """The comparator a stored record's ``kind`` names, or None (a construction record, an unknown kind)."""
    return REGISTRY.get(name) if isinstance(name, str) else None
