"""The atom contact network of the Gaussian network model (ALGORITHM.md section 6).

NumPy and scipy only: the torch backend builds its Hessian from this list, and the
parity harness counts contacts with it (tier size scaling, the zero-mode invariant)
without needing torch.
"""
from __future__ import annotations

import numpy as np

from eryx.structure import ID_CELL_REF


def find_contacts(asu_xyz: np.ndarray, cell_origin: np.ndarray, cutoff: float) -> dict[str, np.ndarray]:
    """Atom contacts within ``cutoff`` (inclusive) over the 27-cell supercell.

    Neighbour search with scipy's cKDTree on the CPU; memory grows with the number of
    contacts, not with atoms squared.

    Returns
    -------
    dict of int64 arrays, one entry per contact (i, a) -> (c, j, b), self pairs excluded:
        ``i``, ``a`` (reference-cell ASU and atom), ``c``, ``j``, ``b`` (cell, ASU, atom).
    """
    from scipy.spatial import cKDTree

    n_asu, n_at, _ = asu_xyz.shape
    # Every atom of the supercell, flattened in (c, j, b) order.
    all_xyz = (asu_xyz[None] + cell_origin[:, None, None, :]).reshape(-1, 3)
    tree = cKDTree(all_xyz)
    ref = asu_xyz.reshape(-1, 3)
    lists = tree.query_ball_point(ref, r=cutoff)
    counts = np.fromiter((len(x) for x in lists), dtype=np.int64, count=len(lists))
    src = np.repeat(np.arange(len(ref), dtype=np.int64), counts)
    dst = np.concatenate([np.asarray(x, dtype=np.int64) for x in lists]) if counts.sum() else np.zeros(0, np.int64)
    i, a = np.divmod(src, n_at)
    c, rest = np.divmod(dst, n_asu * n_at)
    j, b = np.divmod(rest, n_at)
    keep = ~((c == ID_CELL_REF) & (i == j) & (a == b))
    order = np.lexsort((b[keep], j[keep], c[keep], a[keep], i[keep]))
    return {k: v[keep][order] for k, v in dict(i=i, a=a, c=c, j=j, b=b).items()}
