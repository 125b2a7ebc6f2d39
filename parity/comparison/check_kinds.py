"""The check kinds: a stage that names its own check (:attr:`Stage.check`, looked up in
:data:`parity.comparison.checks.CHECKS`).

An invariant checks the candidate alone against a property it must have (K Hermitian,
Friedel symmetry, ...: :mod:`parity.comparison.invariants`); an oracle checks the
reference against code neither backend uses (gemmi: :mod:`parity.comparison.oracles`).
Neither compares a computation the cross-feed could re-run, and neither has a reference
pair to diagnose.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from parity.comparison.checks import get_check
from parity.comparison.common import Comparison
from parity.comparison.comparator import Comparator, RunView, Setting

if TYPE_CHECKING:  # pragma: no cover
    from parity.stages import Stage

__all__ = ["CheckKind", "InvariantKind", "OracleKind"]


class CheckKind(Comparator):
    """A stage judged by its named check, ``check(run, tier)``; a single check over many elements counts as one."""

    computes = False

    def compare(self, stage: "Stage", run: RunView, setting: Setting, feed: Any = None) -> Comparison:
        return get_check(stage.check)(run, setting.tier)

    def count_units(self, n_total: Any) -> tuple[str, str]:
        return ("checks", "elements") if n_total == 1 else ("elements", "elements")


class InvariantKind(CheckKind):
    """A property of the candidate alone (no reference read)."""

    name = "invariant"
    needs_reference = False


class OracleKind(CheckKind):
    """The reference against an outside implementation."""

    name = "oracle"
