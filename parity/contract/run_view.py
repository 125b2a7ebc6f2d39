"""What a stage's own functions may read of a run: a narrow view, not the runner's ``Run``.

A stage's check (invariants, oracles), derivation, size terms and vacuity test are called
with the run; they are declared in the contract (``parity.stages``) and written in
``parity.comparison``, both below the runner, so they name only this protocol. The
runner's ``Run`` satisfies it; a test can pass a small stand-in holding a spec and a
dictionary of each side's values (:class:`StaticView`).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Protocol

from parity.contract.spec import RunSpec


class CheckView(Protocol):
    """What a check reads: the spec and each side's quantities (as NumPy, cached).

    ``reference_value`` / ``candidate_value`` raise ``parity.backends.NotProvided`` when
    the side does not provide the quantity (the stage is then not comparable).
    """

    spec: RunSpec

    def reference_value(self, name: str) -> Any: ...

    def candidate_value(self, name: str) -> Any: ...


class RunView(CheckView, Protocol):
    """What a stage's derivation, size terms and vacuity test read besides a check's view."""

    tier_overrides: Mapping[str, Mapping[str, float]]

    @property
    def dtype(self) -> str: ...

    def cached(self, key: str, compute: Callable[[], Any]) -> Any:
        """``compute()`` once per run under ``key`` (a harness-side value, e.g. the contact network)."""
        ...


@dataclass
class StaticView:
    """A :class:`CheckView` over fixed values: a check called outside a run (tests, tools).

    ``reference`` and ``candidate`` map quantity names to values (arrays as given); a
    missing name raises ``KeyError``.
    """

    spec: RunSpec
    reference: Mapping[str, Any] = field(default_factory=dict)
    candidate: Mapping[str, Any] = field(default_factory=dict)

    def reference_value(self, name: str) -> Any:
        return self.reference[name]

    def candidate_value(self, name: str) -> Any:
        return self.candidate[name]
