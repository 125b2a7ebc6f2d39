"""``parity reduce``: shrink a failing run's input while the same divergence persists.

Public API: :func:`ddmin` (delta debugging, pure), :class:`Case` (one input),
:class:`Oracle` (the predicate: same first failing stage and signature, every candidate
validated by the reference), :func:`reduce_case` (the loop) and :func:`signature_key`.
See docs/reduce.md.
"""
from parity.reduce.ddmin import DdminResult, ddmin, is_one_minimal
from parity.reduce.driver import Reduction, Step, command_text, reduce_case
from parity.reduce.moves import Case
from parity.reduce.oracle import INVALID, OTHER, REPRODUCES, NothingToReduce, Oracle, Outcome, Target, signature_key

__all__ = ["ddmin", "DdminResult", "is_one_minimal", "Case", "Oracle", "Outcome", "Target", "NothingToReduce",
           "signature_key", "reduce_case", "Reduction", "Step", "command_text", "REPRODUCES", "OTHER", "INVALID"]
