"""The eigen analysis: which eigenvalue clusters are rotated into which, and by how much.

``C = eV^-1 aV`` is block-diagonal over the eigenvalue clusters when the eigenspaces
agree; clusters linked by ``C`` are merged, the largest principal angle measures the
rotation, and a rigorous bound on every merged projector's error (exact where the bound
cannot clear it) decides whether the rotation explains the difference. Vectorised over
the batch of items; complex products in real arithmetic.

Public API
----------
diagnose_eigenspaces(expected_values, expected_vectors, actual_values, actual_vectors, tier, *, rel_gap, ...)
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np

from parity.contract.eigenclusters import GAP_REFERENCE, cluster_gaps
from parity.contract.values import as_numpy
from parity.contract.tiers import Tier
from parity.diagnosis.arrays import diagnose_arrays, finish
from parity.diagnosis.engine import Clock
from parity.diagnosis.result import Signature
from parity.diagnosis.wording import normwise, short

#: Eigenvector mixing: a group of clusters rotated into each other may hold at most this
#: fraction of the modes (merging everything makes any two eigenbases agree).
MAX_MIXED_FRACTION = 0.5


def _basis_change(eV: np.ndarray, aV: np.ndarray) -> np.ndarray:
    """C with ``aV = eV C`` per batch item, shape (B, n, n).

    For ``V = Linv^T U`` on both sides ``C = U_e^H U_a``: unitary, block-diagonal over
    the eigenvalue clusters when the eigenspaces agree, whatever Linv is.
    """
    if eV.shape[-2] == eV.shape[-1]:
        try:
            return np.linalg.solve(eV, aV)
        except np.linalg.LinAlgError:
            pass  # a singular item: least squares one by one
    return np.array([np.linalg.lstsq(x, y, rcond=None)[0] for x, y in zip(eV, aV)])


def _cluster_labels(values: np.ndarray, rel_gap: float) -> np.ndarray:
    """Cluster label of every mode, shape (B, n), for a batch of eigenvalue rows.

    The clustering of :func:`parity.comparison.engine.cluster_eigenvalues`, vectorised: the
    non-finite values form cluster 0 (when there are any), then the sorted finite
    values split where the relative gap exceeds ``rel_gap``; labels ascend with value.
    """
    B, n = values.shape
    finite = np.isfinite(values)
    order = np.argsort(np.where(finite, values, -np.inf), axis=1, kind="stable")
    s = np.take_along_axis(np.where(finite, values, np.nan), order, axis=1)
    fin_s = np.take_along_axis(finite, order, axis=1)
    span = np.maximum(np.abs(s[:, 1:]), np.abs(s[:, :-1]))
    with np.errstate(invalid="ignore", divide="ignore"):
        gaps = np.where(span > 0, (s[:, 1:] - s[:, :-1]) / np.where(span > 0, span, 1.0), 0.0)
    # A new cluster starts at a gap above rel_gap, and at the first finite value after NaNs.
    starts = (fin_s[:, 1:] & fin_s[:, :-1] & (gaps > rel_gap)) | (fin_s[:, 1:] & ~fin_s[:, :-1])
    sorted_labels = np.concatenate([np.zeros((B, 1), dtype=np.int64), np.cumsum(starts, axis=1)], axis=1)
    labels = np.empty_like(sorted_labels)
    np.put_along_axis(labels, order, sorted_labels, axis=1)
    return labels


def _onehot(labels: np.ndarray, K: int) -> np.ndarray:
    """(B, n, K) indicator of each mode's cluster."""
    out = np.zeros(labels.shape + (K,))
    np.put_along_axis(out, labels[..., None], 1.0, axis=-1)
    return out


def _components(linked: np.ndarray) -> np.ndarray:
    """Connected-component label (the lowest member) of each node, for a batch (B, K, K) of graphs."""
    K = linked.shape[-1]
    reach = (linked | np.swapaxes(linked, -1, -2) | np.eye(K, dtype=bool)).astype(np.float64)
    for _ in range(max(1, int(np.ceil(np.log2(max(K, 2)))))):
        reach = np.minimum(reach @ reach, 1.0)
    return np.argmax(reach > 0, axis=-1)


def _rmatmul(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """x @ y for complex stacks in real arithmetic.

    Small complex matmuls are pathologically slow under a multithreaded BLAS on a busy
    machine (measured 28 ms instead of 0.07 ms); real ones are not.
    """
    if not (np.iscomplexobj(x) or np.iscomplexobj(y)):
        return x @ y
    xr, xi, yr, yi = np.real(x), np.imag(x), np.real(y), np.imag(y)
    return (xr @ yr - xi @ yi) + 1j * (xr @ yi + xi @ yr)


def _projector_bounds(eV: np.ndarray, aV: np.ndarray, C: np.ndarray, onehot: np.ndarray) -> np.ndarray:
    """Rigorous upper bounds on ``max|P_a,g - P_e,g| / max|P_e,g|`` for every cluster g, shape (B, K).

    With ``aV = eV C + R`` and ``C_g = [A; B]`` (the cluster's columns of C, split into its
    own rows A and the others B)::

        P_a,g - P_e,g = eV (C_g C_g^H - S_g) eV^H + eV C_g R_g^H + R_g C_g^H eV^H + R_g R_g^H
        |entry| <= rho^2 (|A^H A - I|_F + 2 |A|_F |B|_F + |B|_F^2) + 2 rho |C_g|_F r_g + r_g^2

    (rho: largest row norm of eV, r_g: of R's cluster columns) and ``max|P_e,g|`` is the
    largest row norm of eV's cluster columns squared (a projector's largest entry is on its
    diagonal). Every term is a sum of non-negative parts: no cancellation.
    """
    same = onehot @ np.swapaxes(onehot, -1, -2)  # (B, n, n): rows i and columns j in one cluster
    absC2 = np.abs(C) ** 2
    colsum = lambda x: (np.ones(x.shape[:-2] + (1, x.shape[-2])) @ x @ onehot)[..., 0, :]  # noqa: E731
    a2 = colsum(absC2 * same)
    b2 = colsum(absC2 * (1.0 - same))
    masked = C * same
    gram = _rmatmul(np.conj(np.swapaxes(masked, -1, -2)), masked)
    E = np.sqrt(colsum(np.abs(gram - np.eye(C.shape[-1]) * same) ** 2 * same))
    R = aV - _rmatmul(eV, C)
    r = np.sqrt((np.abs(R) ** 2 @ onehot).max(axis=-2))
    rho = np.sqrt((np.abs(eV) ** 2).sum(axis=-1).max(axis=-1))[:, None]
    s = (np.abs(eV) ** 2 @ onehot).max(axis=-2)
    a, b = np.sqrt(a2), np.sqrt(b2)
    bound = rho ** 2 * (E + 2 * a * b + b2) + 2 * rho * np.sqrt(a2 + b2) * r + r ** 2
    with np.errstate(invalid="ignore", divide="ignore"):
        out = np.where(s > 0, bound / np.where(s > 0, s, 1.0), np.where(bound > 0, np.inf, 0.0))
    return np.where(np.isfinite(out), out, np.inf)


def _projector_error(eV: np.ndarray, aV: np.ndarray, cols: np.ndarray) -> float:
    """Exact ``max|P_a - P_e| / max|P_e|`` of one cluster's projector (one item)."""
    pe = _rmatmul(eV[:, cols], np.conj(eV[:, cols]).T)
    pa = _rmatmul(aV[:, cols], np.conj(aV[:, cols]).T)
    scale = float(np.abs(pe).max()) if pe.size else 0.0
    return normwise(float(np.abs(pa - pe).max()) if pe.size else 0.0, scale)


@dataclass
class _ItemMix:
    """Mixing of one batch item's reference clusters in the candidate."""

    groups: list  # tuples of mode indices rotated into each other
    angles: list  # largest principal angle (rad) per group
    residual: float  # bound on the worst projector error with each group merged into one cluster
    explained: bool  # every merged projector within the allowance


def _mixings(ev: np.ndarray, eV: np.ndarray, aV: np.ndarray, rel_gap: float, tol: float,
             clock: Clock) -> list[_ItemMix | None]:
    """Mixing of every batch item (None for an item not analysed: non-finite C or out of time)."""
    B, n = ev.shape
    C = _basis_change(eV, aV)
    labels = _cluster_labels(ev, rel_gap)
    onehot = _onehot(labels, n)
    ok_C = np.all(np.isfinite(C), axis=(1, 2))
    C = np.where(ok_C[:, None, None], C, 0)
    # W[b, i, j]: fraction of candidate cluster j that lies in reference cluster i.
    sizes = np.maximum(onehot.sum(axis=1), 1.0)  # (B, K)
    W = np.swapaxes(onehot, 1, 2) @ (np.abs(C) ** 2) @ onehot / sizes[:, None, :]
    used = onehot.sum(axis=1) > 0
    linked = (np.sqrt(np.maximum(W, 0.0)) > 10.0 * tol) & used[:, :, None] & used[:, None, :]
    linked &= ~np.eye(n, dtype=bool)
    comp = _components(linked)  # (B, K)
    merged = np.take_along_axis(comp, labels, axis=1)  # (B, n)
    merged_onehot = _onehot(merged, n)
    bounds = _projector_bounds(eV, aV, C, merged_onehot)
    out: list[_ItemMix | None] = []
    for b in range(B):
        if clock.out():
            out += [None] * (B - b)
            break
        if not ok_C[b]:
            out.append(None)
            continue
        groups, angles = [], []
        members = np.bincount(comp[b][used[b]], minlength=n)
        # Merging every cluster into one makes any eigenbasis agree (V V^H is basis-blind):
        # a group holding more than half of the modes explains nothing.
        if np.bincount(merged[b], minlength=n).max() > MAX_MIXED_FRACTION * n and np.any(members >= 2):
            out.append(_ItemMix([], [], math.inf, False))
            continue
        for root in np.flatnonzero(members >= 2):  # components of two or more clusters: mixing
            ks = np.flatnonzero((comp[b] == root) & used[b])
            theta = 0.0
            for k in ks:
                c = np.flatnonzero(labels[b] == k)
                smin = np.linalg.svd(C[b][np.ix_(c, c)], compute_uv=False).min()
                theta = max(theta, float(np.arccos(np.clip(smin, 0.0, 1.0))))
            groups.append(tuple(int(m) for m in np.flatnonzero(np.isin(labels[b], ks))))
            angles.append(theta)
        # Clusters the bound cannot clear get their exact projector error and the gap allowance.
        errors = bounds[b].copy()
        explained = True
        for g in np.flatnonzero(errors > tol):
            cols = np.flatnonzero(merged[b] == g)
            errors[g] = _projector_error(eV[b], aV[b], cols)
            gap = cluster_gaps(ev[b], [cols])[0]
            if not errors[g] <= tol * max(1.0, GAP_REFERENCE / gap):
                explained = False
                break  # one cluster left unexplained decides the item
        out.append(_ItemMix(groups, angles, float(errors[used[b]].max()), explained))
    return out


def diagnose_eigenspaces(expected_values: Any, expected_vectors: Any, actual_values: Any, actual_vectors: Any,
                         tier: Tier, *, rel_gap: float = 1e-6, locate: Callable[[tuple], str] | None = None,
                         axes: Sequence[str] | None = None, time_budget_s: float = 0.05) -> list[Signature]:
    """Which eigenvalue clusters are rotated into which, and by how much.

    Parameters
    ----------
    expected_values, actual_values : array_like, shape (*batch, n)
        Eigenvalues (or a monotone transform, e.g. Winv), modes in the same order in both.
    expected_vectors, actual_vectors : array_like, shape (*batch, m, n)
        Eigenvectors as columns (orthonormal or mass-weighted ``V = Linv^T U``).
    tier : Tier
        Projector allowance ``max(rtol, atol) * max(1, 1e-4 / gap)`` as in
        :func:`parity.comparison.engine.compare_eigenspaces`; eigenvalues by the tier.
    rel_gap : float, default 1e-6
        Eigenvalue clustering threshold (the stage's).
    locate : callable, optional
        ``locate(batch_index) -> str`` names a batch item (``"BZ (dh,dk,dl)=(0,1,1)"``).
    axes : sequence of str, optional
        Names of the eigenvalue array's axes, e.g. ``("BZ point", "mode")``: the batch
        axes name the items in sentences and the eigenvalue signatures use them all.
    time_budget_s : float, default 0.05
        CPU seconds of the calling thread, as in :func:`diagnose_arrays`.

    Returns
    -------
    list of Signature
        ``eigen_rotation`` (modes rotated into each other, the angle in rad, at how
        many items), and the eigenvalues' own signatures (``eigenvalues``, phrase
        ``"eigenvalues: ..."``) when they differ. Never raises.
    """
    clock = Clock(time_budget_s)
    try:
        return _diagnose_eigenspaces(expected_values, expected_vectors, actual_values, actual_vectors, tier,
                                     rel_gap, locate, axes, clock)
    except Exception as exc:  # diagnosis must never break a run
        return [Signature("internal_error", "diagnosis failed",
                          f"The eigenspace diagnosis failed: {type(exc).__name__}: {exc}.",
                          {"error": f"{type(exc).__name__}: {exc}"}, math.nan, False)]


def _value_signatures(ev: np.ndarray, av: np.ndarray, tier: Tier, names: tuple, clock: Clock) -> list[Signature]:
    """The eigenvalues' own signatures, relabelled."""
    values = diagnose_arrays(ev, av, tier, axes=names, matrix_axes=(), time_budget_s=clock.left() / 2)
    return [Signature("eigenvalues" if s.name != "nan_pattern" else "nan_pattern",
                      f"eigenvalues: {s.phrase}"[:60], "Eigenvalues: " + s.sentence,
                      {**s.params, "signature": s.name}, s.residual, s.explains) for s in values]


def _diagnose_eigenspaces(ev, eV, av, aV, tier, rel_gap, locate, axes, clock) -> list[Signature]:
    ev, eV, av, aV = (as_numpy(x) for x in (ev, eV, av, aV))
    if ev.ndim < 1 or eV.shape[:-2] != ev.shape[:-1] or av.shape != ev.shape or aV.shape != eV.shape:
        return [Signature("shape", "eigen shapes differ",
                          f"Eigen-decomposition shapes differ: values {av.shape} vs {ev.shape}, vectors "
                          f"{aV.shape} vs {eV.shape}.", {"expected_values": list(ev.shape),
                                                         "actual_values": list(av.shape)}, math.nan, False)]
    names = tuple(axes) if axes is not None and len(axes) == ev.ndim else \
        tuple(f"item axis {i}" for i in range(ev.ndim - 1)) + ("mode",)
    noun = " ".join(names[:-1]) if axes is not None and len(axes) == ev.ndim else "item"
    evr, avr = np.real(ev).astype(np.float64), np.real(av).astype(np.float64)
    sigs = _value_signatures(evr, avr, tier, names, clock)
    values_ok = not sigs or sigs[0].explains
    batch, n = ev.shape[:-1], ev.shape[-1]
    evf = evr.reshape(-1, n)
    eVf = eV.reshape((-1,) + eV.shape[-2:]).astype(np.complex128 if np.iscomplexobj(eV) else np.float64)
    aVf = aV.reshape((-1,) + aV.shape[-2:]).astype(np.complex128 if np.iscomplexobj(aV) else np.float64)
    tol = max(tier.rtol, tier.atol)
    B = evf.shape[0]

    def where(b: int) -> str:
        index = tuple(int(i) for i in np.unravel_index(b, batch))
        return locate(index) if locate else f"{noun} " + ", ".join(map(str, index))

    mixes = _mixings(evf, eVf, aVf, rel_gap, tol, clock)
    unexplained = [b for b, m in enumerate(mixes) if m is None or not m.explained]
    if unexplained and np.iscomplexobj(eVf) and not clock.out():
        conj = _mixings(evf, np.conj(eVf), aVf, rel_gap, tol, clock)
        if all(m is not None and m.explained and not m.groups for m in conj):
            sigs.append(_conjugate_signature(conj, B, noun, tier, values_ok))
            return finish(sigs, clock)
    found: dict[tuple, dict] = {}
    worst = None
    for b, mix in enumerate(mixes):
        if mix is None or not mix.groups:
            continue
        entry = found.setdefault(tuple(mix.groups), {"items": [], "angles": [], "residual": 0.0})
        entry["items"].append(b)
        entry["angles"].append(max(mix.angles))
        entry["residual"] = max(entry["residual"], mix.residual)
        if worst is None or max(mix.angles) > worst[0]:
            modes = [m for g in mix.groups for m in g]
            C = _basis_change(eVf[b:b + 1], aVf[b:b + 1])[0]
            worst = (max(mix.angles), b, modes, np.abs(C[np.ix_(modes, modes)]).round(6).tolist())
    checked = sum(m is not None for m in mixes)
    for key, entry in sorted(found.items(), key=lambda kv: -len(kv[1]["items"])):
        sigs.append(_rotation_signature(key, entry, B, noun, where, worst, tier,
                                        explains=bool(values_ok and not unexplained and len(found) == 1
                                                      and checked == B),
                                        unexplained=len(unexplained)))
    return finish(sigs, clock)


def _conjugate_signature(conj: list, B: int, noun: str, tier: Tier, values_ok: bool) -> Signature:
    """The candidate's eigenvectors are the reference's complex conjugates (e.g. k -> -k)."""
    residual = max(m.residual for m in conj)
    params = {"items": B, "of_items": B, "allowed": f"projector tolerance of tier {tier.name}"}
    sentence = (f"The candidate's eigenvectors are the complex conjugates of the reference's at all {B} "
                f"{noun}s (up to phases and rotations inside clusters), as a flipped sign of the phase "
                f"k.r produces; projector residual {short(residual)}"
                + (f", within tier {tier.name}." if values_ok else ", but the eigenvalues differ too."))
    return Signature("eigen_conjugate", "eigenvectors conjugated", sentence, params, float(residual), values_ok)


def _rotation_signature(key: tuple, entry: dict, B: int, noun: str, where: Callable[[int], str], worst,
                        tier: Tier, explains: bool, unexplained: int) -> Signature:
    """Words for one pattern of eigenvector mixing."""
    angles, items = np.array(entry["angles"]), entry["items"]
    modes = " | ".join("+".join(str(m) for m in g) for g in key)
    mode_words = " and ".join(", ".join(str(m) for m in g) for g in key)
    swapped = abs(float(np.median(angles)) - math.pi / 2) < 1e-3
    params = {"modes": [list(g) for g in key], "angle_rad": float(np.median(angles)),
              "angle_min": float(angles.min()), "angle_max": float(angles.max()),
              "items": len(items), "of_items": B, "first_location": where(items[0]),
              "allowed": f"projector tolerance of tier {tier.name}", "unexplained_items": unexplained}
    if worst is not None and worst[1] in items:
        params["overlap"] = {"modes": worst[2], "abs_C": worst[3], "location": where(worst[1])}
    same = params["angle_max"] - params["angle_min"] < 1e-6
    angle_text = f"{params['angle_rad']:.3f} rad" if same else \
        f"{params['angle_min']:.3f} to {params['angle_max']:.3f} rad (median {params['angle_rad']:.3f})"
    scope = f"at all {B} {noun}s" if len(items) == B else \
        f"at {len(items)} of {B} {noun}s (first {where(items[0])})"
    phrase = f"modes {modes} {'swapped' if swapped else 'mixed'}, {params['angle_rad']:.3f} rad"
    sentence = (f"The eigenvectors of modes {mode_words}, which belong to different eigenvalue clusters, are "
                f"rotated into each other by {angle_text} {scope}" + (" (swapped)" if swapped else "")
                + f"; merging them into one eigenspace leaves a projector error of {short(entry['residual'])}"
                + (f", within tier {tier.name}." if explains else
                   f"; {unexplained} {noun}(s) are not explained by this alone."))
    return Signature("eigen_rotation", phrase[:60], sentence, params, float(entry["residual"]), explains)
