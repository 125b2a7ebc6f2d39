"""Elementwise complex mix-ups: ``conjugate`` (the sign of the imaginary part flipped) and
``swap_re_im`` (real and imaginary parts swapped). Complex pairs only; real factors only
(``conj x i`` IS a swap, so each defect has one name).
"""
from __future__ import annotations

from parity.diagnosis.engine import Context, Pair, Transform, run_transforms
from parity.diagnosis.result import Signature


def examine(p: Pair, ctx: Context) -> list[Signature]:
    """Screen the conjugate, then the swap of real and imaginary parts."""
    if not p.complex:
        return []
    return run_transforms(p, ctx.clock, [
        Transform("conjugate", "conjugate", {}, op="conj",
                  sentence=lambda params: "candidate = conj(reference): the sign of the imaginary part is flipped"),
        Transform("swap_re_im", "re and im swapped", {}, op="swap_re_im",
                  sentence=lambda params: "candidate = reference with real and imaginary parts swapped"),
    ])
