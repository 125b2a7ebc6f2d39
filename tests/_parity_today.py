"""The runner API the tests of tiers and verdicts use, in one place.

``context`` builds a run (skipping when a real fixture is missing), ``stage_comparison``
compares one stage exactly as the runner does (the registry's per-stage float32 tier and
size scaling ``Stage.terms``), optionally with a replaced candidate value.
"""
from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from parity.comparison import engine as cmp
from parity.running import runner
from parity.running.runner import make_run, run_parity  # noqa: F401  (re-exported for the tests)
from parity.stages import get_stage

__all__ = ["context", "run_parity", "n_terms_of", "stage_tier", "stage_comparison", "candidate_value"]


def context(fixture: str, **options: Any) -> runner.Run:
    """A built run; skips the test when the fixture is missing."""
    from eryx.fixtures import synthetic_names
    from parity.testing.plugin import fixture_path_or_skip

    if fixture not in synthetic_names():
        fixture_path_or_skip(fixture)
    return make_run(fixture, **options)


def n_terms_of(run: runner.Run, name: str) -> int | None:
    """Terms of the longest floating-point sum behind one element of stage ``name`` (the registry's rule)."""
    return runner._n_terms(get_stage(name), run)


def stage_tier(run: runner.Run, name: str):
    """The tier stage ``name`` is judged by in this run (per-stage in float32)."""
    return runner.stage_tier(get_stage(name), run)


def stage_comparison(run: runner.Run, name: str, candidate: Any = None, *, scale_with_size: bool = True
                     ) -> cmp.Comparison:
    """Compare one stage as the runner does; ``candidate`` replaces the candidate's value."""
    stage = get_stage(name)
    if not scale_with_size:
        stage = dataclasses.replace(stage, terms=None)
    return runner._comparison(stage, run, candidate)


def candidate_value(run: runner.Run, name: str) -> np.ndarray:
    """The candidate's value of stage ``name`` as an array."""
    return run.stage_value(get_stage(name), "candidate")
