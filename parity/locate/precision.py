"""Where a lower precision's error comes from: operations ranked by error growth.

:func:`rank_sites` orders the code sites (aten op, source line) of a precision
comparison (:func:`~parity.locate.trace.compare_traces` of a float64 trace against a
float32 one) by how much they grow the relative error they receive: an operation's
growth is its output's normwise relative error over the largest of its inputs' errors
(floored at the narrower eps), its added error the difference. Unlike the amplifiers
(growth above a fixed factor), the ranking names the sites that add the most error even
when none amplifies much: the candidates for :class:`~parity.locate.trace.PromoteOps`.
Only operations whose error reaches the stage's result count (``TraceComparison.reaching``);
operations that only move values (views, copies) are not ranked.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from parity.locate.trace import _VIEWLIKE, OpResult, TraceComparison


@dataclass(frozen=True)
class SiteRank:
    """One code site's error growth over its calls in the trace.

    Attributes
    ----------
    op, where : the aten op name and the ``file:line`` that issued it (a :class:`PromoteOps` site)
    calls : how many of its calls reach the result
    growth : the largest output error / inputs' error (floored at eps) over those calls
    input_error, error : the normwise relative errors (inputs', output's) of that call
    added : the largest output error minus inputs' error over the calls
    """

    op: str
    where: str
    calls: int
    growth: float
    input_error: float
    error: float
    added: float

    @property
    def site(self) -> tuple[str, str]:
        return (self.op, self.where)


def _site(res: OpResult) -> tuple[str, str]:
    """(op, file:line) of a compared operation, from its label ``file:line  aten.op(shapes)``."""
    where, call = res.label.split("  aten.", 1)
    return call.split("(")[0], where


def rank_sites(cmp: TraceComparison, top: int | None = None) -> list[SiteRank]:
    """Sites reaching the result, by error growth (largest first; ties: larger added error).

    ``top``: keep the first ``top`` sites (None: all).
    """
    calls: dict[tuple[str, str], list[OpResult]] = {}
    for res in cmp.aligned:
        if res.ref not in cmp.reaching or not (np.isfinite(res.error) and np.isfinite(res.input_error)):
            continue
        site = _site(res)
        if site[0] in _VIEWLIKE:
            continue
        calls.setdefault(site, []).append(res)
    ranks = []
    for (op, where), rs in calls.items():
        worst = max(rs, key=lambda r: (r.amplification, r.error))
        ranks.append(SiteRank(op, where, len(rs), worst.amplification, worst.input_error, worst.error,
                              max(r.error - r.input_error for r in rs)))
    ranks.sort(key=lambda r: (-r.growth, -r.added))
    return ranks[:top] if top is not None else ranks


def ranking_table(ranks: Sequence[SiteRank], n: int = 10) -> str:
    """The first ``n`` ranked sites as text lines (growth, site, error in -> out, calls)."""
    lines = ["operations ranked by error growth (output error / inputs' error, reaching the result):"]
    for r in ranks[:n]:
        lines.append(f"  x{r.growth:7.3g}  {r.where}  aten.{r.op}  error {r.input_error:.2g} -> {r.error:.2g}"
                     f"  ({r.calls} call{'s' if r.calls != 1 else ''})")
    return "\n".join(lines)


def sites_of(ranks: Sequence[SiteRank]) -> set[tuple[str, str]]:
    """The (op, file:line) sites of ranked operations, for :class:`~parity.locate.trace.PromoteOps`."""
    return {r.site for r in ranks}
