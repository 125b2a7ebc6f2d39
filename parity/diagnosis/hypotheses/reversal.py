"""Index maps along one axis: ``reverse`` (i -> n-1-i) and ``negate_index`` (i -> -i mod n,
as k -> -k on a periodic grid).
"""
from __future__ import annotations

from typing import Iterator

import numpy as np

from parity.diagnosis.engine import Context, Pair, Transform, run_transforms
from parity.diagnosis.result import Signature


def _transforms(p: Pair) -> Iterator[Transform]:
    for ax, n in enumerate(p.e.shape):
        name = p.names[ax]
        if n >= 2:
            label = f"reversed {name}" if n > 2 else f"{name} 0 and 1 swapped"
            yield Transform("reverse", label, {"axis": name, "axis_index": ax},
                            axis=ax, source=np.arange(n)[::-1].copy(),
                            sentence=lambda params: f"candidate = reference with the {params.get('axis')} "
                                                    f"axis reversed (i -> n-1-i)")
        if n >= 3:
            yield Transform("negate_index", f"{name} index negated", {"axis": name, "axis_index": ax},
                            axis=ax, source=(-np.arange(n)) % n,
                            sentence=lambda params: f"candidate = reference with the {params.get('axis')} "
                                                    f"index negated (i -> -i mod n, e.g. k -> -k)")


def examine(p: Pair, ctx: Context) -> list[Signature]:
    """Screen the reversal and the negated index of every axis."""
    return run_transforms(p, ctx.clock, _transforms(p))
