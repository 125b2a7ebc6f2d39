"""Transposes: ``transpose`` and (complex pairs) ``conj_transpose`` over the pair's matrix
axis groups (the last two axes when square, block groups such as ``((0, 1), (3, 4))``).
"""
from __future__ import annotations

from typing import Iterator

from parity.diagnosis.engine import Context, Pair, Transform, group_name, run_transforms
from parity.diagnosis.result import Signature


def _sentence(what: str):
    return lambda params: (f"candidate = {what} of the reference over the axes "
                           f"{params['axes'][0]} and {params['axes'][1]}")


def _transforms(p: Pair) -> Iterator[Transform]:
    for g1, g2 in p.groups:
        over = {"axes": [group_name(p, g1), group_name(p, g2)]}
        yield Transform("transpose", "transpose", over, swap=(g1, g2), sentence=_sentence("transpose"))
        if p.complex:
            yield Transform("conj_transpose", "conjugate transpose", over, swap=(g1, g2), op="conj",
                            sentence=_sentence("conjugate transpose"))


def examine(p: Pair, ctx: Context) -> list[Signature]:
    """Screen every transpose of the pair's matrix axis groups."""
    return run_transforms(p, ctx.clock, _transforms(p))
