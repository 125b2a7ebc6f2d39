"""The registry of hypothesis families: one explicit, ordered table.

Adding a hypothesis is one file and one entry: write
``parity/diagnosis/hypotheses/<family>.py`` with ``examine(p, ctx) -> list[Signature]``
(build on :mod:`parity.diagnosis.engine`), and add one :class:`Hypothesis` to
:data:`HYPOTHESES` saying when it runs (its :class:`Stage`), which signature names it
reports, where they rank in simplicity, and which figures picture them. Nothing else
changes: :mod:`parity.diagnosis.arrays` runs the table stage by stage, the ranking and the
figures read it. Tests (or plugins) add a family for a while with :func:`registered`.

Public API
----------
Stage, Hypothesis, HYPOTHESES
hypotheses(stage) -> list[Hypothesis]
register(hypothesis, before=None), unregister(name), registered(hypothesis, before=None)
rank(name) -> float, simplicity_order() -> tuple[str, ...], drawer(name) -> Drawer | None
descriptive(name) -> bool
"""
from __future__ import annotations

import enum
import math
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Mapping

from parity.diagnosis import drawings
from parity.diagnosis.engine import Context, Pair
from parity.diagnosis.hypotheses import (accumulation, conjugate, factor, nan_pattern, partial, permutation,
                                         precision, reversal, shift, transpose)
from parity.diagnosis.result import Signature

#: ``drawer(fig, signature, expected, actual) -> bool``: see :mod:`parity.diagnosis.drawings`.
Drawer = Callable[[Any, Signature, Any, Any], bool]


class Stage(enum.Enum):
    """When a family runs in the diagnosis of a prepared pair; stages run in this order.

    Within a stage, families run in the table's order.
    """

    #: Runs when the NaN/inf patterns differ. An explaining signature ends the diagnosis
    #: (the finite elements agree: nothing is left to explain); otherwise the later stages
    #: judge the elements finite in both.
    PATTERN = "pattern"
    #: Runs on the finite elements, whatever the time budget (cheap and decisive): families
    #: run until one reports, and a report replaces the TRANSFORM stage (round-off leaves
    #: nothing for a transform to remove).
    ROUNDOFF = "roundoff"
    #: Every family runs, until the time budget is spent (each family checks it before every
    #: transform, as ``engine.run_transforms`` does): several transforms can explain the same
    #: data (``conj(K) == K^T`` for a Hermitian K), and all of them are reported.
    TRANSFORM = "transform"
    #: Costlier searches: each runs only while nothing explains and time is left.
    SEARCH = "search"
    #: The last resort, when no earlier stage explains: every family runs while time is left,
    #: so that an explanation found here comes with its description ("running sum along
    #: atom" and "first atom agrees, only rigid-body dof 3-5 differ").
    DESCRIBE = "describe"


@dataclass(frozen=True)
class Hypothesis:
    """One hypothesis family in the table.

    Attributes
    ----------
    name : str
        The family (unique in the table), e.g. ``"shift"``.
    examine : callable
        ``examine(p, ctx) -> list[Signature]``: the family's signatures on a prepared
        :class:`~parity.diagnosis.engine.Pair` (explaining or near-explanations; ``[]``
        when it finds nothing). Must not modify ``p``.
    stage : Stage
        When it runs.
    signatures : tuple of str
        The signature names it reports, simplest first.
    rank : int
        Simplicity of its first signature name: among explaining signatures the lowest rank
        heads the list. Its k-th name ranks ``rank + k``; the table uses multiples of 10.
    figures : mapping of str to Drawer
        The drawer of each of its signature names that a picture helps (others: none).
    descriptive : bool
        Its signatures describe the difference (where it is, how the NaN patterns differ)
        rather than restate the data: several explaining restatements are the same
        statement ("conjugate (equivalently: transpose)"), descriptions never count as one.
    """

    name: str
    examine: Callable[[Pair, Context], list[Signature]]
    stage: Stage
    signatures: tuple[str, ...]
    rank: int
    figures: Mapping[str, Drawer] = field(default_factory=dict)
    descriptive: bool = False


#: The hypothesis families tested on a prepared pair, in the order they run within their stage.
HYPOTHESES: list[Hypothesis] = [
    Hypothesis("nan_pattern", nan_pattern.examine, Stage.PATTERN, ("nan_pattern",), 30,
               {"nan_pattern": drawings.draw_nan}, descriptive=True),
    Hypothesis("precision", precision.examine, Stage.ROUNDOFF, ("precision",), 100,
               {"precision": drawings.draw_precision}),
    Hypothesis("factor", factor.examine, Stage.TRANSFORM, ("zero", "constant_factor"), 40,
               {"constant_factor": drawings.draw_factor}),
    Hypothesis("conjugate", conjugate.examine, Stage.TRANSFORM, ("conjugate", "swap_re_im"), 50),
    Hypothesis("transpose", transpose.examine, Stage.TRANSFORM, ("transpose", "conj_transpose"), 60),
    Hypothesis("shift", shift.examine, Stage.TRANSFORM, ("shift",), 70),
    Hypothesis("reversal", reversal.examine, Stage.TRANSFORM, ("reverse", "negate_index"), 80),
    Hypothesis("permutation", permutation.examine, Stage.SEARCH, ("permutation",), 90),
    Hypothesis("accumulation", accumulation.examine, Stage.DESCRIBE, ("accumulation",), 110,
               {"accumulation": drawings.draw_profile}),
    Hypothesis("partial", partial.examine, Stage.DESCRIBE, ("partial",), 130,
               {"partial": drawings.draw_profile}, descriptive=True),
]

#: Signature names no family in the table reports, with their ranks: the rearrangements
#: tried before a pair is prepared (hypotheses.shape, hypotheses.dtype_class), the eigen
#: analysis (parity.diagnosis.eigen) and the diagnosis's own notes.
OTHER_RANKS: dict[str, int] = {
    "shape": 10, "real_as_complex": 20, "complex_as_real": 21,
    "eigen_conjugate": 120, "eigen_rotation": 121, "eigenvalues": 122,
    "incomplete": 1000, "internal_error": 1001,
}
#: Drawers of signatures no family in the table reports.
OTHER_FIGURES: dict[str, Drawer] = {"eigen_rotation": drawings.draw_overlap}
#: Descriptive signatures (see :attr:`Hypothesis.descriptive`) no family in the table reports.
OTHER_DESCRIPTIVE = frozenset({"real_as_complex", "complex_as_real"})

_ranks: dict[str, int] | None = None  # name -> rank, rebuilt after every change of the table


def _rank_table() -> dict[str, int]:
    global _ranks
    if _ranks is None:
        table = dict(OTHER_RANKS)
        for h in HYPOTHESES:
            table.update({name: h.rank + k for k, name in enumerate(h.signatures)})
        _ranks = table
    return _ranks


def hypotheses(stage: Stage) -> list[Hypothesis]:
    """The families of one stage, in table order."""
    return [h for h in HYPOTHESES if h.stage is stage]


def rank(name: str) -> float:
    """Simplicity rank of a signature name (lower is simpler); ``inf`` for a name nobody reports."""
    return _rank_table().get(name, math.inf)


def simplicity_order() -> tuple[str, ...]:
    """Every known signature name, simplest first."""
    table = _rank_table()
    return tuple(sorted(table, key=table.__getitem__))


def drawer(name: str) -> Drawer | None:
    """The drawer that pictures a signature name, or None."""
    for h in HYPOTHESES:
        if name in h.figures:
            return h.figures[name]
    return OTHER_FIGURES.get(name)


def descriptive(name: str) -> bool:
    """Whether a signature name describes the difference rather than restates the data."""
    return name in OTHER_DESCRIPTIVE or any(h.descriptive and name in h.signatures for h in HYPOTHESES)


def register(hypothesis: Hypothesis, before: str | None = None) -> None:
    """Add a family to the table: at the end, or just before the family named ``before``.

    Raises
    ------
    ValueError
        When its name is taken, one of its signature names or ranks is already known,
        it has more than 10 names, or ``before`` names no family.
    """
    global _ranks
    if any(h.name == hypothesis.name for h in HYPOTHESES):
        raise ValueError(f"a hypothesis family named {hypothesis.name!r} is registered already")
    if not 1 <= len(hypothesis.signatures) <= 10:
        raise ValueError(f"{hypothesis.name!r}: a family reports 1 to 10 signature names")
    table = _rank_table()
    new = {name: hypothesis.rank + k for k, name in enumerate(hypothesis.signatures)}
    taken = sorted(set(new) & set(table)) + sorted(n for n, r in new.items() if r in table.values())
    if taken:
        raise ValueError(f"{hypothesis.name!r}: signature name(s) or rank(s) already in use: {taken}")
    at = len(HYPOTHESES)
    if before is not None:
        at = next((i for i, h in enumerate(HYPOTHESES) if h.name == before), -1)
        if at < 0:
            raise ValueError(f"no hypothesis family named {before!r}")
    HYPOTHESES.insert(at, hypothesis)
    _ranks = None


def unregister(name: str) -> Hypothesis:
    """Remove the family named ``name`` from the table and return it (KeyError when absent)."""
    global _ranks
    for i, h in enumerate(HYPOTHESES):
        if h.name == name:
            _ranks = None
            return HYPOTHESES.pop(i)
    raise KeyError(name)


@contextmanager
def registered(hypothesis: Hypothesis, before: str | None = None) -> Iterator[Hypothesis]:
    """Register a family for the duration of a ``with`` block (a test, a plugin's run)."""
    register(hypothesis, before)
    try:
        yield hypothesis
    finally:
        unregister(hypothesis.name)
