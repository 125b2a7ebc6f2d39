"""Eigenspace comparisons: spectral projectors per eigenvalue cluster.

Eigenvectors are compared through the spectral projector of each eigenvalue
cluster (see ALGORITHM.md section 7): solvers agree on eigenvectors only up to
a phase per vector and a unitary mixing inside each degenerate eigenspace, and
the full product ``V V^H`` is blind to the eigenvectors altogether.

Non-finite values are allowed in exactly one place, the zero-mode pattern: an
eigenvalue may be NaN (``Winv`` of a zero mode) when it is NaN at the same place
on both sides; its eigenvector is still finite. Any NaN/inf in an eigenvector,
an infinite eigenvalue, a NaN eigenvalue on one side only, or a NaN/inf in the
matrix or unitary fails the comparison, on every path (with or without the
eigen-equation check), with a message naming the side, the batch item and the mode.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Iterable, Mapping

import numpy as np

from parity.contract.eigenclusters import GAP_REFERENCE, cluster_eigenvalues, cluster_gaps  # noqa: F401  (re-exported)

from parity.contract.tiers import Tier
from parity.contract.results import Status
from parity.comparison.arrays import _argmax_masked, _elementwise, _shape_failure, compare_arrays
from parity.comparison.common import (Comparison, Locate, _fmt, _label, _scalar, _where, as_numpy, failure_message,
                                      not_comparable, working_eps)
from parity.comparison.comparator import Comparator, RunView, Setting, rel_gap

if TYPE_CHECKING:  # pragma: no cover
    from parity.stages import Stage

__all__ = [
    "EigenspaceKind",
    "GAP_REFERENCE",
    "cluster_eigenvalues",
    "spectral_projectors",
    "compare_eigenspaces",
    "compare_full_product",
]



# --------------------------------------------------------------------------
# Clusters and projectors
# --------------------------------------------------------------------------




def spectral_projectors(values: Any, vectors: Any, clusters: Iterable[np.ndarray]) -> list[np.ndarray]:
    """Spectral projector of each eigenvalue cluster.

    Parameters
    ----------
    values : array_like, shape (n,)
        Eigenvalues (used only to check that ``vectors`` has n columns).
    vectors : array_like, shape (m, n)
        Eigenvectors as columns. Need not be orthonormal: for mass-weighted
        ``V = Linv^T U`` the product ``V_c V_c^H = Linv^T (U_c U_c^H) Linv`` is
        still invariant under phases and unitary mixing inside the cluster.
    clusters : iterable of index arrays
        From :func:`cluster_eigenvalues`.

    Returns
    -------
    list of numpy.ndarray, each shape (m, m)
        ``vectors[:, c] @ vectors[:, c].conj().T`` per cluster.
    """
    v, w = as_numpy(vectors), as_numpy(values)
    if v.ndim != 2 or w.shape != (v.shape[1],):
        raise ValueError(f"need values (n,) and vectors (m, n), got {w.shape} and {v.shape}")
    return [v[:, c] @ v[:, c].conj().T for c in clusters]


def _cluster_key(clusters: list[np.ndarray]) -> list[tuple[int, ...]]:
    """Order-free form of a clustering, for comparing two of them."""
    return sorted(tuple(int(i) for i in c) for c in clusters)


def _residuals(matrix: np.ndarray, unitary: np.ndarray) -> tuple[float, float, float]:
    """(residual, orthonormality, bound) of one orthonormal eigenbasis ``unitary`` of ``matrix``.

    lambda is taken as the Rayleigh quotients diag(U^H D U): the stored values
    may be a transform of D's eigenvalues (Winv = 1/w^2, NaN for zero modes).
    """
    n = matrix.shape[-1]
    lam = np.einsum("ji,jk,ki->i", unitary.conj(), matrix, unitary).real
    d_max = float(np.abs(matrix).max()) if matrix.size else 0.0
    r_max = float(np.abs(matrix @ unitary - unitary * lam).max()) if matrix.size else 0.0
    residual = r_max / d_max if d_max > 0 else r_max
    gram = unitary.conj().T @ unitary
    orthonormality = float(np.abs(gram - np.eye(n)).max()) if n else 0.0
    eps = float(np.finfo(unitary.dtype).eps) if np.issubdtype(unitary.dtype, np.inexact) else 0.0
    return residual, orthonormality, 1e3 * eps * n


@dataclass
class _ItemResult:
    """One batch item of :func:`compare_eigenspaces`."""

    row: dict
    passed: bool
    proj_excess: float  # worst abs - allowed over its projectors (-inf: no finite entry)
    proj_ok: bool  # every projector entry within the tier
    max_abs: float
    worst: dict  # the item's worst projector entry (location only when there is none)
    reasons: list[str]  # why it fails, one line each; empty when it passes
    n_compared: int  # finite-eigenvalue clusters whose projectors were compared

    def rank(self) -> tuple[bool, bool, float]:
        """Sort key, worst last: failing first, then clustering mismatch, then projector excess."""
        return (not self.passed, not self.row["clustering_match"], self.proj_excess)




def _gap_factor(gap: float) -> float:
    """How much a cluster's projector allowance grows for its gap (Davis-Kahan: 1/gap)."""
    return max(1.0, GAP_REFERENCE / gap) if gap > 0 else math.inf


# --------------------------------------------------------------------------
# Non-finite values outside the zero-mode pattern
# --------------------------------------------------------------------------


def _bad_items(mask: np.ndarray, batch_ndim: int) -> dict[tuple[int, ...], tuple[int, tuple[int, ...]]]:
    """Batch items with a True entry in ``mask``: {item: (count, first entry in C order)}."""
    if not mask.any():
        return {}
    flat = mask.reshape(mask.shape[:batch_ndim] + (-1,))
    out = {}
    for b in np.argwhere(flat.any(axis=-1)):
        item = tuple(int(i) for i in b)
        entries = mask[item]
        out[item] = (int(entries.sum()), tuple(int(i) for i in np.argwhere(entries)[0]))
    return out


def _nonfinite_reasons(values: dict[str, np.ndarray], vectors: dict[str, np.ndarray],
                       squares: dict[str, np.ndarray], batch_ndim: int,
                       locate: Locate | None) -> dict[tuple[int, ...], list[str]]:
    """Per batch item, every NaN/inf outside the zero-mode pattern, one line each.

    ``values``/``vectors`` map ``"actual"``/``"expected"`` to (*batch, n) and
    (*batch, m, n) arrays; ``squares`` the optional matrix/unitary (*batch, n, n).
    """
    reasons: dict[tuple[int, ...], list[str]] = {}

    def add(item: tuple[int, ...], text: str) -> None:
        reasons.setdefault(item, []).append(text)

    for side, v in vectors.items():
        for item, (count, (row, mode)) in _bad_items(~np.isfinite(v), batch_ndim).items():
            add(item, f"{side} eigenvectors hold {count} NaN/inf entr{'y' if count == 1 else 'ies'} at "
                      f"{_where(locate, item)}, first in mode {mode} (row {row}): {_scalar(v[item][row, mode])}")
    for side, w in values.items():
        for item, (count, (mode,)) in _bad_items(np.isinf(w), batch_ndim).items():
            add(item, f"{side} eigenvalue {_scalar(w[item][mode])} at {_where(locate, item)} mode {mode} "
                      f"({count} infinite): only NaN, marking a zero mode, may be non-finite")
    nan_a, nan_e = np.isnan(values["actual"]), np.isnan(values["expected"])
    for side, other, mask, w_other in (("actual", "expected", nan_a & ~nan_e, values["expected"]),
                                       ("expected", "actual", nan_e & ~nan_a, values["actual"])):
        for item, (count, (mode,)) in _bad_items(mask, batch_ndim).items():
            add(item, f"{side} eigenvalue is NaN at {_where(locate, item)} mode {mode} where the {other} is "
                      f"{_scalar(w_other[item][mode])} ({count} such mode(s)): NaN marks a zero mode, "
                      f"and the zero-mode patterns differ")
    for what, x in squares.items():
        for item, (count, (row, col)) in _bad_items(~np.isfinite(x), batch_ndim).items():
            add(item, f"{what} holds {count} NaN/inf entr{'y' if count == 1 else 'ies'} at "
                      f"{_where(locate, item)}, first at ({row}, {col}): {_scalar(x[item][row, col])}")
    return reasons


def _nonfinite_item(b: tuple[int, ...], ev: np.ndarray, rel_gap: float, location: str,
                    reasons: list[str]) -> _ItemResult:
    """A batch item whose eigenvectors are not finite: failed, projectors not computed."""
    sizes = [int(len(c)) for c in cluster_eigenvalues(ev, rel_gap)]
    row = {"bz": list(b), "cluster_sizes": sizes, "max_projector_err": None,
           "projector_err_gap_normalised": None, "min_gap": None, "residual": None,
           "orthonormality": None, "clustering_match": True, "passed": False, "nonfinite": reasons}
    worst = {"index": list(b), "location": location, "reason": reasons[0], "max_projector_err": None}
    return _ItemResult(row, False, math.inf, False, 0.0, worst, reasons, 0)


# --------------------------------------------------------------------------
# One batch item
# --------------------------------------------------------------------------


def _compare_item(b: tuple[int, ...], av: np.ndarray, aV: np.ndarray, ev: np.ndarray, eV: np.ndarray,
                  tier: Tier, rel_gap: float, locate: Locate | None,
                  matrix: np.ndarray | None, unitary: np.ndarray | None,
                  nonfinite: list[str]) -> _ItemResult:
    location = _where(locate, b)
    if any("eigenvectors" in r for r in nonfinite):
        return _nonfinite_item(b, ev, rel_gap, location, nonfinite)
    clusters_e = cluster_eigenvalues(ev, rel_gap)
    clusters_a = cluster_eigenvalues(av, rel_gap)
    same = _cluster_key(clusters_e) == _cluster_key(clusters_a)
    reasons = list(nonfinite)
    if not same:
        reasons.append(f"clustering differs at {location}: expected sizes {[len(c) for c in clusters_e]}, "
                       f"actual sizes {[len(c) for c in clusters_a]}")

    # Projectors on the EXPECTED clusters, whatever the actual clustering: a
    # wrong eigenvector still shows up here with its size.
    max_abs, max_err, max_norm, excess, worst, proj_ok = 0.0, 0.0, 0.0, -math.inf, {}, True
    n_compared = 0
    tol = max(tier.rtol, tier.atol)
    gaps = cluster_gaps(ev, clusters_e)
    finite_gaps = [g for g, c in zip(gaps, clusters_e) if np.isfinite(ev[c]).all()]
    for k, (pa, pe) in enumerate(zip(spectral_projectors(av, aV, clusters_e),
                                     spectral_projectors(ev, eV, clusters_e))):
        d = _elementwise(pa, pe, tier)
        if d.pattern_mismatch.any() or not d.finite.all():  # overflow in the product
            proj_ok = False
            reasons.append(f"projector of cluster {k} at {location} is not finite")
            continue
        n_compared += bool(np.isfinite(ev[clusters_e[k]]).all())
        at = _argmax_masked(d.excess, d.excess > -np.inf)
        if at is None:
            continue
        cluster_abs = float(d.abs.max())
        max_abs = max(max_abs, cluster_abs)
        err = cluster_abs / d.scale if d.scale > 0 else (math.inf if cluster_abs else 0.0)
        max_err = max(max_err, err)
        # Projectors are judged normwise (error relative to max|P|: a small entry carries
        # the absolute error of the large ones). A cluster whose eigenvalue lies close to
        # another's is ill-conditioned: its projector's round-off grows like eps / gap
        # (Davis-Kahan), so the allowance grows with GAP_REFERENCE / gap below it.
        factor = _gap_factor(gaps[k])
        max_norm = max(max_norm, err / factor)
        proj_ok &= err <= tol * factor
        if not worst or d.excess[at] > excess:
            excess = float(d.excess[at])
            worst = {"index": list(b), "location": location, "cluster": k,
                     "cluster_size": int(len(clusters_e[k])), "entry": list(at),
                     "expected": _scalar(pe[at]), "actual": _scalar(pa[at]),
                     "abs": float(d.abs[at]), "allowed": float(d.allowed[at])}
    if not proj_ok and worst:
        reasons.append(f"projector error {max_err:.3g} (relative to max|P|) at {location}")

    residual = orthonormality = None
    if matrix is not None and not any(("matrix" in r or "unitary" in r) for r in nonfinite):
        residual, orthonormality, bound = _residuals(matrix, unitary)
        if not residual <= bound:
            reasons.append(f"residual max|DU - U diag(lambda)|/max|D| = {residual:.3g} at {location} "
                           f"(bound {bound:.3g})")
        if not orthonormality <= bound:
            reasons.append(f"orthonormality max|U^H U - I| = {orthonormality:.3g} at {location} "
                           f"(bound {bound:.3g})")

    row = {"bz": list(b), "cluster_sizes": [int(len(c)) for c in clusters_e],
           "max_projector_err": max_err, "projector_err_gap_normalised": max_norm,
           "min_gap": min(finite_gaps) if finite_gaps else None,
           "residual": residual, "orthonormality": orthonormality,
           "clustering_match": same, "passed": not reasons, "nonfinite": list(nonfinite)}
    worst = {"index": list(b), "location": location, **worst, "max_projector_err": max_err}
    if reasons:
        worst["reason"] = reasons[0]
    return _ItemResult(row, not reasons, excess, proj_ok, max_abs, worst, reasons, n_compared)


# --------------------------------------------------------------------------
# Public
# --------------------------------------------------------------------------


def compare_eigenspaces(actual_values: Any, actual_vectors: Any, expected_values: Any,
                        expected_vectors: Any, tier: Tier, *, rel_gap: float = 1e-6,
                        locate: Locate | None = None, matrix: Any = None, unitary: Any = None,
                        name: str = "", n_terms: int | None = None) -> Comparison:
    """Compare eigen-decompositions through their cluster spectral projectors.

    Parameters
    ----------
    actual_values, expected_values : array_like, shape (*batch, n)
        Eigenvalues per batch item, e.g. ``Winv`` of shape (L_h, L_k, L_l, n)
        or (n_k, n). Both backends order the modes the same way (NaN first,
        then ascending ``w``); the values are compared element-wise by the tier.
        NaN (a zero mode) must sit at the same places on both sides; inf never.
    actual_vectors, expected_vectors : array_like, shape (*batch, m, n)
        Eigenvectors as columns (orthonormal ``U`` or mass-weighted ``V``);
        must be finite on both sides (zero modes included).
    tier : Tier
        Applied element-wise to the eigenvalues; each cluster's projector passes
        when ``max |P_a - P_e| / max |P_e| <= max(rtol, atol) * max(1, 1e-4 / gap)``
        (normwise; ``gap`` is the cluster's relative distance to the nearest other
        eigenvalue, since a projector's round-off grows like eps / gap).
    rel_gap : float, default 1e-6
        Clustering threshold (:func:`cluster_eigenvalues`). Both clusterings
        must be identical; true gaps close to ``rel_gap`` would make this flaky.
    locate : callable, optional
        ``locate(batch_index) -> str``, e.g. ``"BZ (dh,dk,dl)=(1,0,1)"``.
    matrix : array_like, shape (*batch, n, n), optional
        The Hermitian matrix (``D``) per batch item. Give it together with
        ``unitary`` to check the eigen-equation.
    unitary : array_like, shape (*batch, n, n), optional
        The actual orthonormal eigenvectors ``U`` of ``matrix``. Reported:
        ``max|D U - U diag(lambda)| / max|D|`` (lambda the Rayleigh quotients)
        and ``max|U^H U - I|``; each fails above ``1e3 * eps * n``.
    name : str, optional
    n_terms : int, optional
        Terms summed into one entry of the decomposed matrix (see
        :func:`parity.comparison.engine.compare_arrays`): the tier is :meth:`Tier.scaled`
        to it before use (eigenvalues and projectors inherit the matrix's error).

    Returns
    -------
    Comparison
        kind ``"eigenspace"``; units are batch items. ``max_abs`` is the
        largest projector entry error, ``max_rel`` the largest projector error
        relative to ``max|P|`` (normwise). ``n_compared`` counts the
        finite-eigenvalue clusters whose projectors were compared: 0 (all
        eigenvalues NaN, or an empty batch) is ``not_comparable``.
        ``details["eigen_table"]`` has one row per batch item;
        ``details["values"]`` summarises the eigenvalue comparison.
    """
    av, aV = as_numpy(actual_values), as_numpy(actual_vectors)
    ev, eV = as_numpy(expected_values), as_numpy(expected_vectors)
    kind = "eigenspace"
    if (matrix is None) != (unitary is None):
        raise ValueError("compare_eigenspaces: give matrix and unitary together")
    if ev.ndim < 1 or eV.shape[:-2] != ev.shape[:-1] or eV.shape[-1:] != ev.shape[-1:]:
        raise ValueError(f"expected values (*batch, n) and vectors (*batch, m, n), "
                         f"got {ev.shape} and {eV.shape}")
    if av.shape != ev.shape:
        return _shape_failure(kind, _label(name, "eigenvalues"), av, ev)
    if aV.shape != eV.shape:
        return _shape_failure(kind, _label(name, "eigenvectors"), aV, eV)
    squares: dict[str, np.ndarray] = {}
    mat = uni = None
    if matrix is not None:
        mat, uni = as_numpy(matrix), as_numpy(unitary)
        square = ev.shape + ev.shape[-1:]
        if mat.shape != square or uni.shape != square:
            raise ValueError(f"matrix and unitary must have shape {square}, got {mat.shape} and {uni.shape}")
        squares = {"matrix": mat, "unitary": uni}
    eps = working_eps(aV, eV)
    if n_terms is not None and eps is not None:
        try:
            tier = tier.scaled(n_terms, eps)
        except ValueError as exc:
            return not_comparable(kind, name, str(exc))

    def locate_value(idx: tuple[int, ...]) -> str:
        return f"{_where(locate, idx[:-1])} mode {idx[-1]}"

    values = compare_arrays(av, ev, tier, name=f"{name} eigenvalues" if name else "eigenvalues",
                            locate=locate_value)
    batch = ev.shape[:-1]
    nonfinite = _nonfinite_reasons({"actual": av, "expected": ev}, {"actual": aV, "expected": eV},
                                   squares, len(batch), locate)
    items = [
        _compare_item(b, av[b], aV[b], ev[b], eV[b], tier, rel_gap, locate,
                      None if mat is None else mat[b], None if uni is None else uni[b],
                      nonfinite.get(b, []))
        for b in np.ndindex(batch)
    ]
    failing = [it for it in items if not it.passed]
    n_total = len(items)
    n_compared = sum(it.n_compared for it in items)
    max_abs = max((it.max_abs for it in items), default=None)
    max_rel = max((it.row["max_projector_err"] for it in items if it.row["max_projector_err"] is not None),
                  default=None)
    worst_item = max(items, key=_ItemResult.rank, default=None)
    worst = worst_item.worst if worst_item is not None else None
    proj_items = [it for it in items if not it.proj_ok and it.worst.get("entry") is not None]
    worst_proj = max(proj_items, key=lambda it: it.proj_excess, default=None)
    values_failed = values.status == Status.FAIL
    passed = not values_failed and not failing

    details = {
        "tier": {"name": tier.name, "rtol": tier.rtol, "atol": tier.atol, "n_terms": tier.n_terms},
        "rel_gap": rel_gap,
        "n_compared": n_compared,
        "eigen_table": [it.row for it in items],
        "values": {k: getattr(values, k) for k in ("status", "passed", "max_abs", "max_rel",
                                                   "max_rel_elementwise", "n_mismatch", "n_total",
                                                   "n_compared", "message")},
    }
    if "nan_pattern" in values.details:
        details["nan_pattern"] = values.details["nan_pattern"]
    label = f"{name}: eigenspaces" if name else "eigenspaces"
    if passed and n_compared == 0:
        if n_total == 0 or ev.shape[-1] == 0:
            reason = f"no eigen-decomposition to compare (values of shape {tuple(ev.shape)})"
        else:
            reason = (f"no finite eigenvalue cluster to compare: all {ev.size} eigenvalues are NaN "
                      f"(zero modes) in both, and the projector onto all modes is blind to the eigenvectors")
        return not_comparable(kind, name or "eigenspaces", reason, n_total=n_total, details=details)

    n_clusters = sum(len(it.row["cluster_sizes"]) for it in items)
    biggest = max((max(it.row["cluster_sizes"], default=0) for it in items), default=0)
    if passed:
        message = (f"{label} OK under {tier.describe()}: {n_total} batch items, {n_clusters} clusters "
                   f"(largest {biggest}; {n_compared} finite clusters compared), max projector err "
                   f"{_fmt(max_rel)} (relative to max|P|)")
    else:
        findings: list[str] = []
        if nonfinite:
            count = sum(len(r) for r in nonfinite.values())
            findings.append(f"Non-finite values outside the zero-mode pattern at {len(nonfinite)} batch item(s) "
                            f"({count} finding(s)); first: {next(iter(nonfinite.values()))[0]}")
        # worst_item ranks failing items first, so it fails whenever any item does; a reason
        # already inside the line before it is not repeated.
        if failing:
            findings += [r for r in worst_item.reasons if not findings or r not in findings[-1]]
        if worst_proj is not None:
            w = worst_proj.worst
            findings.append(f"Greatest projector error: {w['max_projector_err']:.3g} (relative to max|P|) at "
                            f"{w['location']}; worst entry {tuple(w['entry'])} of cluster {w['cluster']} "
                            f"(size {w['cluster_size']}) off by {w['abs']:.3g}, up to {w['allowed']:.3g} allowed")
        if values_failed:
            findings.append("Eigenvalues: " + values.message)
        message = failure_message(f"{label} differ under {tier.describe()}", n_mismatch=len(failing),
                                  n_total=n_total, unit="batch items", findings=findings)

    return Comparison(kind=kind, passed=passed, max_abs=max_abs, max_rel=max_rel,
                      n_mismatch=len(failing), n_total=n_total, worst=worst, message=message,
                      details=details, n_compared=n_compared)


def compare_full_product(actual_vectors: Any, expected_vectors: Any, tier: Tier, *,
                         name: str = "", locate: Locate | None = None) -> Comparison:
    """The seed's check: compare ``V V^H`` summed over ALL modes. Do not use it for parity.

    Kept only so a test can demonstrate what it misses: ``V V^H = Linv^T U U^H
    Linv = Linv^T Linv`` for *any* unitary ``U``, so it cannot see eigenvectors
    mixed across eigenvalue clusters, swapped modes, or wrong eigenvectors at
    all (ALGORITHM.md section 7). Use :func:`compare_eigenspaces`.

    Parameters
    ----------
    actual_vectors, expected_vectors : array_like, shape (*batch, m, n)
    tier : Tier
    name : str, optional
    locate : callable, optional
        Names an index of the product array, shape (*batch, m, m).

    Returns
    -------
    Comparison
        kind ``"full_product"``.
    """
    a, e = as_numpy(actual_vectors), as_numpy(expected_vectors)
    if a.shape != e.shape or a.ndim < 2:
        return _shape_failure("full_product", name, a, e)
    result = compare_arrays(a @ np.swapaxes(a.conj(), -1, -2), e @ np.swapaxes(e.conj(), -1, -2),
                            tier, name=_label(name, "V V^H"), locate=locate)
    result.kind = "full_product"
    return result


# --------------------------------------------------------------------------
# The kind
# --------------------------------------------------------------------------

#: The candidate quantities an eigenspace comparison reads (and a cross-feed recomputes):
#: eigenvalues, eigenvectors, and the decomposed matrix with its unitary eigenvectors.
_EIGEN_QUANTITIES = ("Winv", "V", "D", "U")


class EigenspaceKind(Comparator):
    """Eigenvalues element-wise and eigenvectors through each cluster's spectral projector.

    The stage's quantity is the eigenvectors (``V``); the eigenvalues are ``Winv``. The
    eigen-equation is checked too where the candidate provides ``D`` and ``U``.
    """

    name = "eigenspace"

    def compare(self, stage: "Stage", run: RunView, setting: Setting, feed: Any = None) -> Comparison:
        ev, eV, av, aV = _sides(stage, run, feed)
        n = ev.shape[-1]
        if feed is not None:
            D, U = (np.asarray(as_numpy(feed[k])) for k in ("D", "U"))
        else:
            try:
                D, U = run.candidate_value("D"), run.candidate_value("U")
            except setting.not_provided:  # the eigen-equation is checked where D and U are given
                D = U = None
        extra = {} if D is None else dict(matrix=D.reshape(-1, n, n), unitary=U.reshape(-1, n, n))
        return compare_eigenspaces(av.reshape(-1, n), aV.reshape(-1, n, n), ev.reshape(-1, n),
                                   eV.reshape(-1, n, n), setting.tier, locate=setting.locate, name=stage.name,
                                   rel_gap=rel_gap(run.dtype), n_terms=setting.n_terms(), **extra)

    def diagnose(self, stage: "Stage", run: RunView, tier: Tier, feed: Any = None, *,
                 budget_s: float = 0.05) -> tuple[list, Any, Any]:
        # At call time: the diagnosis builds on this module (clusters, gaps).
        from parity.diagnosis import signatures as dg

        ev, eV, av, aV = _sides(stage, run, feed)
        n = ev.shape[-1]
        sigs = dg.diagnose_eigenspaces(ev.reshape(-1, n), eV.reshape(-1, n, n), av.reshape(-1, n),
                                       aV.reshape(-1, n, n), tier, rel_gap=rel_gap(run.dtype),
                                       locate=run.locator(stage.locate), axes=stage.axes, time_budget_s=budget_s)
        return sigs, None, None

    def feed_names(self, stage: "Stage") -> tuple[str, ...]:
        return _EIGEN_QUANTITIES

    def fed_value(self, stage: "Stage", values: Mapping[str, Any]) -> Any:
        return values

    def count_units(self, n_total: Any) -> tuple[str, str]:
        return "BZ points", "eigenvalue clusters"


def _sides(stage: "Stage", run: RunView, feed: Mapping[str, Any] | None) -> tuple[Any, Any, Any, Any]:
    """(expected values, expected vectors, actual values, actual vectors), as given.

    The actual side is the cross-fed one where ``feed`` is given (:meth:`EigenspaceKind.fed_value`).
    """
    ev, eV = run.reference_value("Winv"), run.reference_value(stage.reference_quantity)
    if feed is not None:
        return ev, eV, np.asarray(as_numpy(feed["Winv"])), np.asarray(as_numpy(feed["V"]))
    return ev, eV, run.candidate_value("Winv"), run.candidate_value(stage.quantity)
