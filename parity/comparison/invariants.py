"""Checks that need no reference: what must hold for any correct implementation.

Each check is called as ``check(run, tier)``: ``run`` a narrow view of the run
(:class:`parity.contract.run_view.CheckView`: the spec and each side's quantities), ``tier``
the stage's own tier, resolved by the runner for this run's precision and overrides (most
invariants carry their own limits and ignore it). A check reads the candidate's quantities
(``run.candidate_value``) and returns a :class:`parity.comparison.common.Comparison`. They
run where no reference is available (a dense reference that does not fit in memory), and
they can fail on their own. The stage registry names its check; ``parity.comparison.checks``
maps the names to these functions.
"""
from __future__ import annotations

import itertools

import numpy as np

from eryx.contacts import find_contacts
from eryx.models import bz_fractions

from parity.comparison.engine import Comparison, compare_arrays
from parity.contract.run_view import CheckView
from parity.contract.tiers import Tier

#: Supercell numbering (ALGORITHM.md section 2): nested loops over (-1, 0, 1), l fastest.
CELL_HKL = np.array(list(itertools.product((-1, 0, 1), repeat=3)), dtype=np.int64)


def _eps(x: np.ndarray) -> float:
    dtype = np.asarray(x).real.dtype
    return float(np.finfo(dtype).eps) if np.issubdtype(dtype, np.floating) else float(np.finfo(float).eps)


def invariant(passed: bool, value: float, limit: float, message: str, n_compared: int = 1,
              details: dict | None = None, comparable: bool = True, reason: str = "") -> Comparison:
    """An invariant's outcome as a Comparison (one unit; ``value`` its measured figure)."""
    return Comparison(kind="invariant", passed=bool(passed) and comparable, max_abs=float(value),
                      max_rel=float(value), n_mismatch=0 if passed else 1, n_total=1, worst=None,
                      message=message, details={"limit": limit, **(details or {})},
                      n_compared=int(n_compared) if comparable else 0, comparable=comparable,
                      reason="" if comparable else (reason or message))


def not_applicable(message: str) -> Comparison:
    """An invariant that does not apply to this run: not comparable, with the reason."""
    return invariant(False, 0.0, 0.0, message, comparable=False, reason=message)


def check_K_hermitian(run: CheckView, tier: Tier) -> Comparison:
    """K(k) is Hermitian at every BZ point."""
    K = run.candidate_value("K")
    if K.size == 0:
        return not_applicable("K is empty: nothing to check")
    scale = float(np.max(np.abs(K)))
    if not np.isfinite(K).all():
        return invariant(False, np.inf, 0.0, "K has NaN or infinite entries")
    err = float(np.max(np.abs(K - np.conj(np.swapaxes(K, -1, -2)))) / max(scale, 1e-300))
    limit = 1e3 * _eps(K)
    return invariant(err <= limit, err, limit, f"max |K - K^H| / max |K| = {err:.2e} (limit {limit:.1e})",
                     n_compared=K.size)


def expected_zero_modes(asu_xyz: np.ndarray, cell_origin: np.ndarray, cutoff: float,
                        oversampling: tuple[int, int, int]) -> np.ndarray | None:
    """Zero modes each BZ point must have, from the contact network alone (no eigensolver).

    The rigid translations of a connected component of the ASU contact graph are zero
    modes at k iff k . R is a multiple of 2 pi for every lattice vector R that closes a
    cycle of the component (cell offsets summed around it): 3 per such component. A
    connected network whose cycles span the lattice gives exactly 3 at k = 0 and none
    elsewhere; sparse networks may split into components or span only a sublattice.

    Returns
    -------
    (n_bz,) int array, or None when a component's cycles span fewer than 2 dimensions
    (a chain or a finite cluster: rigid rotations are soft too, the count is not predictable).
    """
    contacts = find_contacts(np.asarray(asu_xyz, dtype=float), np.asarray(cell_origin, dtype=float), cutoff)
    n_asu = asu_xyz.shape[0]
    adjacency: list[list] = [[] for _ in range(n_asu)]
    for i, cell, j in set(zip(contacts["i"].tolist(), contacts["c"].tolist(), contacts["j"].tolist())):
        adjacency[i].append((j, CELL_HKL[cell]))
        adjacency[j].append((i, -CELL_HKL[cell]))
    frac = bz_fractions(oversampling).reshape(-1, 3)
    expected = np.zeros(len(frac), dtype=np.int64)
    offset: dict[int, np.ndarray] = {}
    for root in range(n_asu):
        if root in offset:
            continue
        offset[root], cycles, todo = np.zeros(3, np.int64), [np.zeros(3, np.int64)], [root]
        while todo:
            i = todo.pop()
            for j, n in adjacency[i]:
                if j in offset:
                    cycles.append(offset[i] + n - offset[j])
                else:
                    offset[j] = offset[i] + n
                    todo.append(j)
        cycles = np.array(cycles)
        if np.linalg.matrix_rank(cycles) < 2:
            return None
        turns = frac @ cycles.T
        expected += 3 * np.all(np.abs(turns - np.round(turns)) < 1e-9, axis=1)
    return expected


def check_zero_modes(run: CheckView, tier: Tier) -> Comparison:
    """Exactly the zero modes the contact network predicts: three at k = 0, none elsewhere."""
    Winv = run.candidate_value("Winv")
    n_dof = Winv.shape[-1]
    counts = np.isnan(Winv.reshape(-1, n_dof)).sum(axis=1)
    expected = expected_zero_modes(run.candidate_value("asu_xyz"), run.candidate_value("cell_origin"),
                                   run.spec.params["gnm_cutoff"], run.spec.oversampling)
    if expected is None:
        return not_applicable("the contact network has a chain or finite cluster (rigid rotations soft too): "
                              "the zero-mode count is not predictable")
    bad = int(np.abs(counts - expected).sum())
    k0 = 0  # BZ point (0, 0, 0) is the first in C order
    others, want_others = int(np.delete(counts, k0).sum()), int(np.delete(expected, k0).sum())
    return invariant(bad == 0, bad, 0, f"{int(counts[k0])} zero modes at k = 0 (expected exactly "
                     f"{int(expected[k0])}), {others} elsewhere (expected {want_others}, from the contact network)",
                     n_compared=len(counts))


def _finite_map(run: CheckView, what: str) -> tuple[np.ndarray, np.ndarray] | Comparison:
    Id = run.candidate_value("Id")
    finite = np.isfinite(Id)
    if not finite.any():
        return not_applicable(f"{what}: Id has no finite point (all Bragg or outside the resolution limit)")
    return Id, finite


def check_nonnegative(run: CheckView, tier: Tier) -> Comparison:
    """Id >= 0 off the Bragg points (it is a sum of |F V|^2 / w^2)."""
    got = _finite_map(run, "Id_nonnegative")
    if isinstance(got, Comparison):
        return got
    Id, finite = got
    values = Id[finite]
    top = float(values.max())
    if top <= 0:
        return invariant(False, np.inf, 0.0, f"Id is nowhere positive (max {top:.3g})", n_compared=values.size)
    worst = float(-values.min() / top)
    limit = 1e3 * _eps(values)
    return invariant(worst <= limit, max(worst, 0.0), limit,
                     f"most negative Id / max Id = {-worst:.2e} off the Bragg points (must be >= -{limit:.1e})",
                     n_compared=values.size)


def check_friedel(run: CheckView, tier: Tier) -> Comparison:
    """Friedel symmetry Id(q) = Id(-q) on a grid symmetric about the origin."""
    if not all(lo == -hi for lo, hi, _ in run.spec.samplings):
        return not_applicable("the grid is not symmetric about the origin: Friedel pairs not sampled")
    got = _finite_map(run, "friedel")
    if isinstance(got, Comparison):
        return got
    Id, _ = got
    mirrored = Id.reshape(run.spec.map_shape)[::-1, ::-1, ::-1].reshape(-1)
    both = np.isfinite(Id) & np.isfinite(mirrored)
    nan_ok = bool(np.array_equal(np.isnan(Id), np.isnan(mirrored)))
    pairs = both & (np.arange(Id.size) != Id.size // 2)
    if not pairs.any():
        return not_applicable("friedel: no finite Friedel pair off the origin")
    scale = max(float(np.max(np.abs(Id[both]))), 1e-300)
    err = float(np.max(np.abs(Id[both] - mirrored[both])) / scale)
    # Measured 7e-16 (float64) on 5zck_p1; the maps are sums over modes, so allow round-off margin.
    limit = 1e-9 if _eps(Id) < 1e-10 else 1e-4
    return invariant(err <= limit and nan_ok, err, limit,
                     f"max |Id(q) - Id(-q)| / max Id = {err:.2e} (limit {limit:.0e}); NaN patterns "
                     f"{'match' if nan_ok else 'DIFFER'}", n_compared=int(pairs.sum()))


def check_qvectors_sample(run: CheckView, tier: Tier) -> Comparison:
    """The arbitrary-q path equals the grid path of the same backend at sampled grid points (within ``tier``)."""
    got = run.candidate_value("Id_q_sample")
    want = run.candidate_value("Id")[run.spec.q_sample]
    cmp = compare_arrays(got, want, tier, name="Id_q_sample vs Id", require_nonzero=True)
    cmp.kind = "invariant"
    return cmp
