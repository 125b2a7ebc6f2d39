"""Shape mismatch: singleton axes more or fewer, or the same axes in another order.

Called by :mod:`parity.diagnosis.arrays` before the pair is prepared: the candidate is
rearranged to the reference's shape and diagnosed again.
"""
from __future__ import annotations

import math

import numpy as np

from parity.diagnosis.result import Signature


def shape_signature(e: np.ndarray, a: np.ndarray) -> tuple[Signature, np.ndarray | None]:
    """Name a shape mismatch; return the candidate rearranged to the reference's shape when it can be."""
    params = {"expected_shape": list(e.shape), "actual_shape": list(a.shape)}
    if a.size == e.size and tuple(s for s in a.shape if s != 1) == tuple(s for s in e.shape if s != 1):
        return Signature("shape", "singleton axes differ",
                         f"The candidate has shape {a.shape}, the reference {e.shape}: the same data up to "
                         f"axes of length 1.", {**params, "fix": "reshape"}, math.nan, False), a.reshape(e.shape)
    if a.ndim == e.ndim and sorted(a.shape) == sorted(e.shape) and len(set(e.shape)) == e.ndim:
        perm = [a.shape.index(s) for s in e.shape]
        return Signature("shape", "axes in another order",
                         f"The candidate has shape {a.shape}, the reference {e.shape}: the same axes in "
                         f"another order (candidate axes {perm}).", {**params, "fix": "transpose", "axes": perm},
                         math.nan, False), np.transpose(a, perm)
    return Signature("shape", f"shape {a.shape} vs {e.shape}"[:48],
                     f"The candidate has shape {a.shape}, the reference {e.shape}; no rearrangement matches.",
                     params, math.nan, False), None
