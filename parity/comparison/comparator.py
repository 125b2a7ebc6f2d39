"""The comparator base class: what a comparison kind owns.

A stage's kind (:attr:`parity.stages.Stage.kind`) names one :class:`Comparator`
in the registry (:mod:`parity.comparison.kinds`), as torch.testing's ``Pair`` subclasses
each own one kind of input. A comparator owns, for the stages of its kind:

* **how it compares** (:meth:`Comparator.compare`): it reads the two sides' values from
  the run and returns a :class:`~parity.comparison.common.Comparison`, whose failure
  message is built by the one shared layout (:func:`parity.comparison.common.failure_message`);
* **how it diagnoses** a failure (:meth:`Comparator.diagnose`), through the diagnosis
  package's public functions;
* **what it feeds** (:attr:`Comparator.computes`, :meth:`Comparator.feed_names`,
  :meth:`Comparator.fed_value`): whether the stage compares a computation of the
  candidate, which the cross-feed can re-run on the reference's inputs;
* what its counts count (:meth:`Comparator.count_units`), for the report.

Adding a kind is one subclass here (in the module where its comparison lives) and one
entry in :data:`parity.comparison.kinds.REGISTRY`. Nothing outside this package tests a
kind's name: code asks the stage's comparator instead.

This module imports neither the runner nor the stage registry: a comparator reads the
run through the narrow :class:`RunView` protocol.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, ClassVar, Mapping, Protocol

from parity.comparison.common import Comparison, Locate
from parity.contract.tiers import Tier

if TYPE_CHECKING:  # pragma: no cover
    from parity.stages import Stage

__all__ = ["Comparator", "RunView", "Setting", "NO_DIAGNOSIS", "rel_gap"]

#: What :meth:`Comparator.diagnose` returns for a kind without a reference pair to diagnose.
NO_DIAGNOSIS: tuple[list, None, None] = ([], None, None)


class RunView(Protocol):
    """What a comparator reads of a run (:class:`parity.running.runner.Run` provides it)."""

    dtype: str
    spec: Any

    def stage_value(self, stage: "Stage", side: str, feed: Any = None) -> Any: ...

    def reference_value(self, name: str) -> Any: ...

    def candidate_value(self, name: str) -> Any: ...

    def locator(self, how: str | None) -> Locate | None: ...


@dataclass(frozen=True)
class Setting:
    """How a stage is judged in one run (resolved by the runner).

    Attributes
    ----------
    tier : Tier
        The stage's tier in this run (float32 and overrides applied, not yet size-scaled).
    locate : callable or None
        Names an element's index (``locate(index) -> str``).
    terms : callable () -> int or None
        Terms of the longest floating-point sum behind one element (the tier is scaled for
        it); called only once the values are in hand, as the comparison needs it, so that
        working it out never runs before a side's own error (:meth:`n_terms`).
    not_provided : tuple of exception types
        What the run raises when a side does not provide a quantity (the backends'
        ``NotProvided``): a kind that reads an optional quantity catches these. Given by
        the runner, so this package does not import the backends (they import it).
    """

    tier: Tier
    locate: Locate | None = None
    terms: Callable[[], int | None] = lambda: None
    not_provided: tuple[type[BaseException], ...] = ()

    def n_terms(self) -> int | None:
        """:attr:`terms`, evaluated now."""
        return self.terms()


def rel_gap(dtype: str) -> float:
    """Eigenvalue clustering threshold for a run's real precision.

    float32 eigenvalues cannot resolve a relative gap of 1e-6: cluster coarser there (a
    larger cluster's projector is still basis-independent).
    """
    return 1e-6 if dtype == "float64" else 1e-3


class Comparator:
    """One comparison kind. Subclasses set :attr:`name` and override what differs.

    Attributes
    ----------
    name : str
        The kind's name, as stages and result records spell it (``"array"``).
    needs_reference : bool
        The stage reads the reference side (False: a check of the candidate alone).
    computes : bool
        The stage compares a quantity the candidate computes: the cross-feed can re-run
        it on the reference's inputs, and it is upstream of the stages that consume that
        quantity (``parity.running.causes``). False for checks (invariants, oracles,
        the dtype audit), which have no computation to re-feed.
    differentiates : bool
        The stage compares derivatives (an operation trace must differentiate too; the
        probes of its forward computation say nothing new).
    draws_slice : bool
        A failing grid map of this kind gets a 2-D slice through its worst point.
    """

    name: ClassVar[str] = ""
    needs_reference: ClassVar[bool] = True
    computes: ClassVar[bool] = True
    differentiates: ClassVar[bool] = False
    draws_slice: ClassVar[bool] = False

    def compare(self, stage: "Stage", run: RunView, setting: Setting, feed: Any = None) -> Comparison:
        """Compare ``stage`` in ``run`` (``feed``: :meth:`fed_value` of a cross-feed)."""
        raise NotImplementedError

    def diagnose(self, stage: "Stage", run: RunView, tier: Tier, feed: Any = None, *,
                 budget_s: float = 0.05) -> tuple[list, Any, Any]:
        """Divergence signatures of a failing stage: ``(signatures, expected, actual)`` as diagnosed.

        Never changes a verdict; the default (a kind without a reference pair) gives none.
        """
        return NO_DIAGNOSIS

    def feed_names(self, stage: "Stage") -> tuple[str, ...]:
        """The candidate quantities a cross-fed comparison of ``stage`` needs."""
        return (stage.quantity,) if self.computes else ()

    def fed_value(self, stage: "Stage", values: Mapping[str, Any]) -> Any:
        """The ``feed`` :meth:`compare` takes, from the cross-fed values of :meth:`feed_names`."""
        return values[stage.quantity]

    def count_units(self, n_total: Any) -> tuple[str, str]:
        """What a record's ``n_total``/``n_mismatch`` and ``n_compared`` count (for the report)."""
        return "elements", "elements"

    def __repr__(self) -> str:
        return f"<comparison kind {self.name!r}>"
