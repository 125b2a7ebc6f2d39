"""Constant factor: ``candidate = c * reference`` (``c`` real or complex, named when simple),
and ``zero``: the candidate is identically 0 where the reference is not.
"""
from __future__ import annotations

from parity.diagnosis.engine import Context, Fit, Pair, Transform, factor_kind, screen, transform_params, verdict
from parity.diagnosis.result import Signature
from parity.diagnosis.wording import number_text


def examine(p: Pair, ctx: Context) -> list[Signature]:
    """The factor that explains (or removes most of) the difference, when it is not 1."""
    if ctx.clock.out():
        return []
    tr = Transform("constant_factor", "", {})
    fit = screen(p, tr, factor_kind(p, tr))
    if fit is None or fit.factor == 1.0:
        return []
    return [_signature(p, tr, fit)]


def _signature(p: Pair, tr: Transform, fit: Fit) -> Signature:
    params, factor_text = transform_params(p, tr, fit)
    if fit.factor == 0:
        name, phrase = "zero", "candidate is zero"
        sentence = "The candidate is identically zero where the reference is not"
    else:
        name = "constant_factor"
        phrase = f"x {fit.expression or number_text(fit.factor)}"
        sentence = f"candidate = reference x {factor_text}"
    return Signature(name, phrase, sentence + verdict(p, fit) + ".", params, float(fit.residual), bool(fit.explains))
