"""The model's geometry in NumPy: Brillouin-zone sampling fractions and the rigid-body
projection A of an asymmetric unit (ALGORITHM.md 2 and 4).

Shared by the NumPy reference (:mod:`eryx.models`, which imports them back under its own
names) and the up-front stiffness bound (:mod:`eryx.stiffness`), which the reference
itself calls: here, below both, the two never import each other in a circle.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from eryx.probes import probe


def center_index(x: int, L: int) -> float:
    """Fractional BZ coordinate of index x in [0, L): a value in [-1/2, 1/2)."""
    return int(((x - L / 2) % L) - L / 2) / L


def bz_fractions(L: Sequence[int]) -> np.ndarray:
    """Fractional k of every BZ point, shape (L_h, L_k, L_l, 3)."""
    out = np.zeros(tuple(L) + (3,))
    for dh in range(L[0]):
        for dk in range(L[1]):
            for dl in range(L[2]):
                out[dh, dk, dl] = [center_index(dh, L[0]), center_index(dk, L[1]), center_index(dl, L[2])]
    return out


def skew(c: np.ndarray) -> np.ndarray:
    """S(x, y, z) = [[0, z, -y], [-z, 0, x], [y, -x, 0]] (section 4)."""
    x, y, z = c
    return np.array([[0.0, z, -y], [-z, 0.0, x], [y, -x, 0.0]])


def build_A(asu_xyz: np.ndarray) -> np.ndarray:
    """Rigid-body projection per ASU, (n_asu, 3 n_at, 6), atom-major rows.

    S is computed fresh for every atom (the original accumulated it in a shared
    buffer; the goldens use the fix).
    """
    n_asu, n_at, _ = asu_xyz.shape
    Amat = np.zeros((n_asu, 3 * n_at, 6))
    for i in range(n_asu):
        centred = asu_xyz[i] - asu_xyz[i].mean(axis=0)
        for a in range(n_at):
            block = np.zeros((3, 6))
            block[:, :3] = np.eye(3)
            block[:, 3:] = skew(centred[a])
            Amat[i, 3 * a:3 * a + 3] = probe("A_block", block, at={"asu": i, "atom": a})
    return Amat
