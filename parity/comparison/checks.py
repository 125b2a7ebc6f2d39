"""The checks a stage may name: invariants and outside oracles, by name, in one table.

The stage registry (``parity.stages``) declares a check by name
(``Stage(..., kind="invariant", check="friedel")``); the runner looks the function up
here and calls it as ``check(run, tier)`` with a narrow view of the run
(:class:`parity.contract.run_view.CheckView`) and the stage's resolved tier. The registry
thus never imports the checks, and the checks never import the registry or the runner.
"""
from __future__ import annotations

from types import MappingProxyType
from typing import Callable, Mapping

from parity.comparison import invariants, oracles
from parity.comparison.engine import Comparison
from parity.contract.run_view import CheckView
from parity.contract.tiers import Tier

#: A check: (view of the run, the stage's tier) -> its outcome.
Check = Callable[[CheckView, Tier], Comparison]

CHECKS: Mapping[str, Check] = MappingProxyType({
    # outside oracles: the reference against gemmi
    "structure": oracles.check_structure,
    "p1": oracles.check_p1,
    "gemmi_sf": oracles.check_gemmi_sf,
    # invariants: the candidate alone
    "K_hermitian": invariants.check_K_hermitian,
    "zero_modes": invariants.check_zero_modes,
    "nonnegative": invariants.check_nonnegative,
    "friedel": invariants.check_friedel,
    "qvectors_sample": invariants.check_qvectors_sample,
})


def get_check(name: str) -> Check:
    """The check called ``name`` (KeyError listing the known names)."""
    try:
        return CHECKS[name]
    except KeyError:
        raise KeyError(f"unknown check {name!r}; known checks: {', '.join(CHECKS)}") from None
