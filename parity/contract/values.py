"""How the harness reads a side's value: any array-like as NumPy, its non-finite pattern.

A backend returns NumPy arrays, torch tensors or anything ``np.asarray`` accepts (the
contract of :mod:`parity.contract.quantities`); every layer that reads one (the backends'
dumps, the comparison, the diagnosis) converts it here, so none of them imports torch.
"""
from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["as_numpy", "nonfinite_code"]


def as_numpy(x: Any) -> np.ndarray:
    """Array view of ``x``; torch tensors go through ``.detach().cpu().numpy()``.

    Checked by duck typing so this package never imports torch.
    """
    if hasattr(x, "detach") and hasattr(x, "cpu"):
        t = x.detach().cpu()
        # .numpy() refuses lazily conjugated/negated views.
        if getattr(t, "is_conj", lambda: False)():
            t = t.resolve_conj()
        if getattr(t, "is_neg", lambda: False)():
            t = t.resolve_neg()
        if str(t.dtype) == "torch.bfloat16":  # NumPy has no bfloat16
            t = t.float()
        return t.numpy()
    return np.asarray(x)


def _real_code(x: np.ndarray) -> np.ndarray:
    """0 finite, 1 NaN, 2 +inf, 3 -inf (int8, same shape)."""
    code = np.zeros(x.shape, dtype=np.int8)
    if np.issubdtype(x.dtype, np.floating):
        code[np.isnan(x)] = 1
        code[np.isposinf(x)] = 2
        code[np.isneginf(x)] = 3
    return code


def nonfinite_code(x: np.ndarray) -> np.ndarray:
    """Per-element non-finite code; complex combines the real and imaginary codes."""
    if np.iscomplexobj(x):
        return _real_code(x.real) * 4 + _real_code(x.imag)
    return _real_code(x)
