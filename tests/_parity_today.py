"""Today's runner API, isolated for the tests of tiers and verdicts.

The runner is being refactored into a backend protocol; these helpers are the only
places the verdict tests touch it (``parity.runner.make_context``, ``run_parity``,
the run context's ``ref``/``cand``). Re-point them when the new API lands.

They also hold what the registry will carry once the lead wires it: the per-stage
float32 tier (``resolve_tier(..., stage=name)``) and the size scaling of each stage
(:func:`n_terms_of`).
"""
from __future__ import annotations

from typing import Any

import numpy as np

from parity import compare as cmp
from parity.runner import make_context, run_parity  # noqa: F401  (re-exported for the tests)
from parity.stages import _np, get_stage
from parity.tiers import resolve_tier

__all__ = ["make_context", "run_parity", "context", "n_terms_of", "stage_tier", "stage_comparison",
           "candidate_value"]

#: Cells of the supercell summed into K(k) (ALGORITHM.md section 6).
N_CELL = 27
#: Terms of one entry of D = Linv K Linv^T beyond K's: Linv is block-diagonal with
#: 6 x 6 blocks, so each of the two products adds a 6-term sum.
D_EXTRA = 2 * 6


def context(fixture: str, **options: Any) -> Any:
    """A run context (today: ``make_context``); skips the test when the fixture is missing."""
    from eryx.fixtures import synthetic_names
    from parity.pytest_plugin import fixture_path_or_skip

    if fixture not in synthetic_names():
        fixture_path_or_skip(fixture)
    return make_context(fixture, **options)


def n_terms_of(ctx: Any, name: str) -> int | None:
    """Terms of the longest floating-point sum behind one element of stage ``name``.

    None for stages whose round-off does not grow with the problem size.

    * ``hessian_allatoms``: the largest number of contacts of one atom (its
      diagonal entry sums one spring constant per contact).
    * ``hessian``: the largest number of contacts of one ASU: each adds a term to
      the ASU's diagonal block (i, ref, i), the longest sum of the projected Hessian.
    * ``K``: the Hessian's, plus the 27 cells of the phase sum.
    * ``D``: K's, plus two 6-term products with the block-diagonal ``Linv``.
    * ``structure_factors``: the atoms of one ASU (the sum over atoms in F).
    * ``Winv``, ``eigenspaces``: D's (the decomposed matrix's error is inherited);
      ``Kinv``, ``covar``, ``ADP``: K's.
    """
    c = ctx.cand
    i = _np(c.contacts["i"])
    if name == "hessian_allatoms":
        n_at = c.Amat.shape[1] // 3
        return int(np.bincount(i * n_at + _np(c.contacts["a"])).max()) if i.size else 1
    per_asu = int(np.bincount(i).max()) if i.size else 1
    rules = {
        "hessian": per_asu,
        "K": per_asu + N_CELL,
        "D": per_asu + N_CELL + D_EXTRA,
        "Winv": per_asu + N_CELL + D_EXTRA,
        "eigenspaces": per_asu + N_CELL + D_EXTRA,
        "Kinv": per_asu + N_CELL,
        "covar": per_asu + N_CELL,
        "ADP": per_asu + N_CELL,
        "structure_factors": c.Amat.shape[1] // 3,
    }
    return rules.get(name)


def stage_tier(ctx: Any, name: str):
    """The tier stage ``name`` is judged by in this run (per-stage in float32)."""
    return resolve_tier(get_stage(name).tier, ctx.dtype, ctx.tier_overrides, stage=name)


def stage_comparison(ctx: Any, name: str, candidate: Any = None, *, scale_with_size: bool = True
                     ) -> cmp.Comparison:
    """Compare one array or eigenspace stage as the runner will once it passes ``stage=`` and ``n_terms``.

    ``candidate`` replaces the torch value (a perturbed copy, say).
    """
    stage = get_stage(name)
    tier = stage_tier(ctx, name)
    n_terms = n_terms_of(ctx, name) if scale_with_size else None
    actual = stage.candidate(ctx) if candidate is None else candidate
    expected = stage.reference(ctx)
    locate = ctx.locator(stage.locate)
    if stage.kind == "eigenspace":
        (av, aV), (ev, eV) = actual, expected
        rel_gap = 1e-6 if ctx.dtype == "float64" else 1e-3
        extra = dict(matrix=_np(ctx.cand.D), unitary=_np(ctx.cand.U)) if candidate is None else {}
        return cmp.compare_eigenspaces(_np(av), _np(aV), _np(ev), _np(eV), tier, locate=locate, name=name,
                                       rel_gap=rel_gap, n_terms=n_terms, **extra)
    return cmp.compare_arrays(_np(actual), _np(expected), tier, name=name, locate=locate, n_terms=n_terms)


def candidate_value(ctx: Any, name: str) -> np.ndarray:
    """The torch value of stage ``name`` as an array."""
    return _np(get_stage(name).candidate(ctx))
