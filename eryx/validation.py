"""Parameter checks and memory estimates shared by both backends.

All checks run before any heavy work, so a bad call fails in milliseconds with a
message naming the offending parameter.
"""
from __future__ import annotations

import math
import numbers
import os
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from eryx.errors import EryxInputError, MemoryBudgetError, SpringConstantError

SUPPORTED_GROUP_BY = ("asu",)
SUPPORTED_MODELS = ("gnm",)
#: Default memory limit when none is given: 75 % of physical memory.
DEFAULT_MEMORY_FRACTION = 0.75


@dataclass(frozen=True)
class Sampling:
    """One axis of the reciprocal grid: integer bounds and an oversampling factor."""

    lo: int
    hi: int
    oversampling: int

    @property
    def n_points(self) -> int:
        """Number of grid points, ``int(L (hi - lo) + 1)``."""
        return int(self.oversampling * (self.hi - self.lo) + 1)

    def as_tuple(self) -> tuple[int, int, int]:
        return (self.lo, self.hi, self.oversampling)


def _as_integer(value: Any, what: str) -> int:
    """An integer or an integral float, else a clear error."""
    if isinstance(value, bool):
        raise EryxInputError(f"{what} must be an integer, got {value!r}")
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real) and math.isfinite(value) and float(value).is_integer():
        return int(value)
    raise EryxInputError(f"{what} must be an integer, got {value!r}")


def check_sampling(value: Any, axis: str) -> Sampling:
    """Validate one ``(min, max, oversampling)`` triple.

    Grid bounds must be integers and the oversampling a positive integer: the mapping
    between grid points and Brillouin-zone points relies on it (ALGORITHM.md).
    """
    name = f"{axis}sampling"
    try:
        items = tuple(value)
    except TypeError:
        raise EryxInputError(f"{name} must be a (min, max, oversampling) triple, got {value!r}")
    if len(items) != 3:
        raise EryxInputError(f"{name} must be a (min, max, oversampling) triple, got {value!r}")
    lo = _as_integer(items[0], f"{name} lower bound")
    hi = _as_integer(items[1], f"{name} upper bound")
    over = _as_integer(items[2], f"{name} oversampling")
    if over < 1:
        raise EryxInputError(f"{name} oversampling must be >= 1, got {items[2]!r}")
    if lo > hi:
        raise EryxInputError(f"{name}: lower bound {lo} is above upper bound {hi}")
    return Sampling(lo, hi, over)


#: Largest |Miller index| bound and oversampling accepted: beyond it the grid's integer
#: arithmetic (L (hi - lo) + 1, h L) leaves int64 long before any grid could be held.
MAX_GRID_INTEGER = 2**31 - 1
#: Bytes every grid point costs at least in either backend (hkl, q, mask, BZ index, map:
#: the "grid" part of both memory estimates, float64), known before anything is built.
GRID_BYTES_PER_POINT = 80


def check_grid_size(samplings: Sequence[Sampling], memory_limit: float | None = None) -> int:
    """Refuse, before anything is built, a grid that cannot fit in memory; returns its point count.

    Computed with Python integers (no overflow): the per-axis counts, their product, and the
    bytes its arrays alone need (:data:`GRID_BYTES_PER_POINT` per point), judged against
    ``memory_limit`` (default: :func:`default_memory_limit`).

    Raises
    ------
    EryxInputError
        A bound or oversampling beyond :data:`MAX_GRID_INTEGER`.
    MemoryBudgetError
        The grid's arrays alone exceed the memory limit (an input error: exit 2).
    """
    for s, axis in zip(samplings, "hkl"):
        for value, what in ((s.lo, "lower bound"), (s.hi, "upper bound"), (s.oversampling, "oversampling")):
            if abs(value) > MAX_GRID_INTEGER:
                raise EryxInputError(f"{axis}sampling {what} {value} is beyond +-{MAX_GRID_INTEGER} (no grid "
                                     "that large fits in memory)")
    counts = [s.n_points for s in samplings]
    n_q = math.prod(counts)
    # A limit below the default is judged by the model's full estimate (its "memory" build
    # step, which names the step); this check only stops grids no machine here could hold.
    limit = resolve_memory_limit(memory_limit)
    need = GRID_BYTES_PER_POINT * n_q
    if need > max(limit, default_memory_limit()):  # then over the caller's limit too: named
        raise MemoryBudgetError(f"the grid ({' x '.join(str(c) for c in counts)} = {n_q:.3g} points)", need, limit)
    return n_q


def check_nonnegative(value: Any, name: str, *, strictly_positive: bool = False) -> float:
    """A finite real >= 0 (or > 0); tensors are checked by value."""
    try:
        number = float(value.detach().cpu().item()) if hasattr(value, "detach") else float(value)
    except (TypeError, ValueError, RuntimeError):  # RuntimeError: a tensor of several elements
        raise EryxInputError(f"{name} must be a real number, got {value!r}")
    if not math.isfinite(number):
        raise EryxInputError(f"{name} must be finite, got {number}")
    if strictly_positive and number <= 0:
        raise EryxInputError(f"{name} must be > 0, got {number}")
    if number < 0:
        raise EryxInputError(f"{name} must be >= 0, got {number}")
    return number


def check_spring_constant(value: Any, name: str) -> float:
    """A spring constant: a finite real > 0 (docs/model-edges.md).

    Zero is refused too: gamma_inter = 0 leaves the ASUs' translations free at every k
    (every map point a zero mode), gamma_intra = 0 removes a term the model defines;
    both backends then disagreed on what to return. Values so small or so large that
    the zero-mode cutoff stops telling modes apart are refused once the spectrum is
    known (:func:`check_spectrum`).
    """
    number = check_nonnegative(value, name)
    if number <= 0:
        raise EryxInputError(
            f"{name} must be a positive finite spring constant (ALGORITHM.md section 6), got {number:g}")
    return number


def check_model_options(group_by: str, model: str) -> None:
    """Only rigid ASUs coupled by a Gaussian network are implemented."""
    if group_by not in SUPPORTED_GROUP_BY:
        raise EryxInputError(f"group_by={group_by!r} is not supported (supported: 'asu')")
    if model not in SUPPORTED_MODELS:
        raise EryxInputError(f"model={model!r} is not supported (supported: 'gnm')")


def check_common(
    hsampling: Sequence, ksampling: Sequence, lsampling: Sequence, *, res_limit: Any,
    gnm_cutoff: Any, gamma_intra: Any, gamma_inter: Any, group_by: str, model: str,
    memory_limit: float | None = None,
) -> tuple[Sampling, Sampling, Sampling]:
    """All parameter checks the two backends share; returns the three samplings.

    The grid's size is judged here too (:func:`check_grid_size`), before anything is built.
    """
    check_model_options(group_by, model)
    samplings = tuple(check_sampling(s, axis) for s, axis in zip((hsampling, ksampling, lsampling), "hkl"))
    check_grid_size(samplings, memory_limit)
    check_nonnegative(res_limit, "res_limit")
    check_nonnegative(gnm_cutoff, "gnm_cutoff", strictly_positive=True)
    check_spring_constant(gamma_intra, "gamma_intra")
    check_spring_constant(gamma_inter, "gamma_inter")
    return samplings  # type: ignore[return-value]


def default_memory_limit() -> int:
    """75 % of physical memory, in bytes (a fallback of 8 GiB where it is unknown)."""
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        total = 8 * 2**30 / DEFAULT_MEMORY_FRACTION
    return int(total * DEFAULT_MEMORY_FRACTION)


def resolve_memory_limit(memory_limit: float | None) -> int:
    """Validate a user memory limit in bytes (None -> the default)."""
    if memory_limit is None:
        return default_memory_limit()
    return int(check_nonnegative(memory_limit, "memory_limit", strictly_positive=True))


#: Resident memory of the interpreter with NumPy, SciPy, gemmi and torch imported
#: (measured: ~250 MiB on Linux x86-64, CPU torch); counted once in every estimate.
RUNTIME_BASELINE_BYTES = 256 * 2**20


def estimate_numpy_memory(n_asu: int, n_at: int, n_q: int, n_bz: int) -> dict[str, float]:
    """Peak memory of the dense NumPy reference, by part, in bytes.

    Counts what :mod:`eryx.models` really holds at its peak: the dense all-atom
    Hessian (n_asu, n_at, 27, n_asu, n_at), real float64, and the dense all-atom mass
    matrix (3 N)^2 (both alive while the Hessian is projected), the Kronecker
    temporaries of the projection, the grid arrays, and one BZ point's
    structure-factor work. Calibrated against the peak RSS of real runs
    (docs/performance.md): 6o2h_clean (1 x 1001 atoms, grid (-2,2,2)^3) measures
    +356 MiB over the interpreter where this estimate says 347 MiB; 5zck_p1 on its
    standard grid +131 MiB where it says 145 MiB.
    """
    n_dof = 6 * n_asu
    q_per_bz = -(-n_q // max(n_bz, 1))
    n_atoms = n_asu * n_at
    return {
        "all-atom Hessian (float64)": 8.0 * n_atoms * 27 * n_atoms,
        "all-atom mass matrix": 8.0 * (3 * n_atoms) ** 2,
        "Hessian projection temporaries": 8.0 * (3 * n_at) ** 2 + 16.0 * 3 * n_at * 6,
        "projected Hessian and K(k)": 16.0 * (n_dof * 27 * n_dof + 3 * n_bz * n_dof * n_dof),
        "grid (hkl, q, mask, map)": 8.0 * n_q * (3 + 3 + 1 + 2 + 1),
        # Form factors (n, n_at, 4) with their temporaries, phases, cos/sin, complex
        # amplitudes, G = A q (n, n_at, 3) complex: ~220 bytes per point and atom.
        "structure factors (one BZ point)": 16.0 * q_per_bz * n_at * (4 + 3 * 2 + 4) + 16.0 * q_per_bz * n_dof,
        "interpreter and libraries": float(RUNTIME_BASELINE_BYTES),
    }


def estimate_torch_memory(
    n_asu: int, n_at: int, n_q: int, n_bz: int, n_contacts: int, chunk_size: int, itemsize: int = 8,
    *, axis_points: int = 0, group_bytes: float = 0.0, contact_chunk: int = 1 << 16, workers: int = 1,
    grad: str | None = None,
) -> dict[str, float]:
    """Peak memory of the contact-based torch backend, by part, in bytes.

    Parameters
    ----------
    chunk_size : int
        Points per structure-factor chunk as the model runs it (its cache-sized grid
        chunk, or the q-vector chunk).
    axis_points : int
        n_h + n_k + n_l on the grid (per-axis phase tables); 0 in q-vector mode.
    group_bytes : float
        Size cap of the grid's per-row-group tables (phase products, q, amplitudes).
    contact_chunk : int
        Contacts per assembly chunk of the projected Hessian.
    workers : int
        Threads computing grid chunks at once, each with its own chunk and row group.
    grad : {None, "analytic", "autograd"}
        A backward pass will follow (spring constants or q carry a gradient), through
        the chunked analytic backward (eryx.gridmap_torch: a chunk per worker and
        map-sized gradients) or plain autograd (every chunk's saved tensors: the
        amplitude-weighted phases, F, W F and the amplitudes of every point).

    Nothing here grows with the number of atoms squared: contacts, per-atom tables
    and chunked structure factors only. Measured peak RSS: docs/performance.md.
    """
    n_dof = 6 * n_asu
    n_atoms = n_asu * n_at
    cplx = 2 * itemsize
    m = min(n_contacts, contact_chunk)
    parts = {
        # Index lists (numpy, shared with torch) + the neighbour search's transient lists
        # + one assembly chunk (two (m, 3, 6) gathers, (m, 6, 6) blocks and temporaries).
        "contact lists and Hessian assembly": 5.0 * 8 * n_contacts + 100.0 * n_contacts
        + 27.0 * n_atoms * 64 + float(itemsize) * 160 * m,
        "projected Hessian and K(k)": float(itemsize) * (n_dof * 27 * n_dof * 4) + cplx * 8 * n_bz * n_dof * n_dof,
        # hkl, q, mask, BZ index, resolution temporaries, the map and its index/value lists.
        "grid (hkl, q, mask, map)": float(itemsize) * n_q * 12 + 26.0 * n_q,
        # The chunk's complex amplitudes with their temporaries (phases, cos, sin on the
        # q-vector path) and the real amplitudes promoted for the product,
        # the row-group tables (their temporaries, and what the allocator keeps of them:
        # measured) and the per-axis phase tables.
        "structure factors (chunks in flight)": workers * (
            cplx * chunk_size * (3 * n_atoms + n_at + 8 * n_dof) + 5.0 * group_bytes)
        + 3.0 * cplx * n_atoms * axis_points,
        "interpreter and libraries": float(RUNTIME_BASELINE_BYTES),
    }
    if grad == "autograd":
        parts["gradients (backward)"] = float(n_q) * cplx * (n_atoms + 2 * n_dof + n_at)
    elif grad is not None:
        parts["gradients (backward)"] = float(itemsize) * n_q * 3 + workers * (
            cplx * chunk_size * (2 * n_atoms + n_at + 6 * n_dof) + 5.0 * group_bytes + 2 * cplx * n_bz * n_dof**2)
    return parts


def check_memory(parts: dict[str, float], limit: int, what: str) -> float:
    """Raise :class:`MemoryBudgetError` when the estimate exceeds ``limit`` bytes."""
    total = float(sum(parts.values()))
    if total > limit:
        biggest = max(parts, key=parts.get)
        raise MemoryBudgetError(f"{what} (largest part: {biggest})", total, limit)
    return total



# ------------------------------------------------------------- edges of the model
#: Zero-mode cutoff on w^2 = |eigenvalue of D| (ALGORITHM.md section 7: w < 1e-6).
ZERO_MODE_CUTOFF2 = 1e-12
#: An eigenvalue of D or K must be numerically zero (at most its round-off
#: n eps max|lambda|, NumPy's matrix-rank tolerance and the pseudo-inverse cutoff of
#: section 6) or this many times above it. Measured on every fixture and synthetic
#: crystal (cutoffs 3.5-4.5 A, gammas 0.5-2, oversampling 1-3): the numerical zeros sit
#: below 0.27 of the round-off and the smallest mode 7.7e10 above it.
SPECTRUM_SEPARATION = 1e6
#: The ADP scale is defined when the translational part of the raw ADPs (their
#: mean, section 8) is at least this fraction of their size (see adp_scale_defined).
ADP_TRANSLATION_RTOL = 1e-6


def _spectrum_message(kind: str, what: str, gammas: tuple[float, float], advice: str) -> SpringConstantError:
    gi, ge = gammas
    return SpringConstantError(
        f"spring constants {kind} (gamma_intra={gi:g}, gamma_inter={ge:g}): {what}; {advice} "
        "(docs/model-edges.md)", kind.replace(" ", "_"))


def refuse_too_stiff(lam_max: np.ndarray, n_dof: int, bz_labels: Sequence, gammas: tuple[float, float],
                     bound: str = "") -> np.ndarray:
    """The "too stiff" rule: raise when the round-off of D, n_dof eps lambda_max(D), reaches the
    zero-mode cutoff w^2 at some BZ point (ALGORITHM.md section 7); else return that round-off.

    Parameters
    ----------
    lam_max : (n_k,) float
        The largest eigenvalue of D per BZ point, or a lower bound of it (``bound`` then
        says which, e.g. "that of one ASU's 6 x 6 block"): the rule then refuses only what
        the exact values refuse too.
    n_dof : int
        Size of D (6 n_asu).
    """
    tau = n_dof * float(np.finfo(np.float64).eps) * lam_max
    worst = int(np.argmax(tau))
    if tau[worst] >= ZERO_MODE_CUTOFF2:
        value = f"at least {lam_max[worst]:.3g} ({bound})" if bound else f"{lam_max[worst]:.3g}"
        raise _spectrum_message(
            "too stiff",
            f"at BZ point {bz_labels[worst]} the largest eigenvalue of D is {value}, so its round-off "
            f"({n_dof} eps x {lam_max[worst]:.3g} = {tau[worst]:.3g}) reaches the zero-mode cutoff "
            f"w^2 = {ZERO_MODE_CUTOFF2:g} (ALGORITHM.md section 7) and zero modes (Bragg points) could not "
            "be told from modes", gammas,
            f"scale both spring constants down by a factor of at least {tau[worst] / ZERO_MODE_CUTOFF2:.3g} "
            "(the map scales as 1 / gamma, the ADPs do not change)")
    return tau


def check_spectrum(
    D_abs: np.ndarray, K_abs: np.ndarray, bz_labels: Sequence, gammas: tuple[float, float],
    eps: float = float(np.finfo(np.float64).eps),
) -> None:
    """Refuse spring constants for which the model's two zero-mode rules disagree.

    Section 7 calls a mode a zero mode when w^2 = |lambda(D)| < 1e-12 (an absolute
    cutoff); section 6's pseudo-inverse drops singular values of K below
    n eps max (NumPy's default). Both are meaningful only while every eigenvalue is
    either round-off (<= tau = n eps max|lambda| at its BZ point) or clearly resolved
    (>= SPECTRUM_SEPARATION tau), and while tau itself is below the absolute cutoff.

    Parameters
    ----------
    D_abs, K_abs : ndarray, (n_k, n_dof)
        |eigenvalues| (or singular values) of D(k) and K(k) at the grid's BZ points.
    bz_labels : sequence of n_k labels (e.g. (dh, dk, dl)) for the messages.
    gammas : (gamma_intra, gamma_inter)
    eps : float
        Machine epsilon of the computation. float32 resolves less: its own round-off
        is the lower end of the bands, the float64 rules decide "too stiff".

    Raises
    ------
    SpringConstantError
        ``too_stiff``: tau(D) >= 1e-12, zero modes (Bragg points) could not be told
        from modes. ``too_soft``: a resolved eigenvalue of D below 1e-12, counted as a
        zero mode. ``ill_conditioned``: an eigenvalue of D or K within the
        separation factor of its round-off (a ratio gamma_intra / gamma_inter too
        extreme): Winv, Kinv, the ADPs would be round-off.
    """
    D_abs, K_abs = np.asarray(D_abs, dtype=np.float64), np.asarray(K_abs, dtype=np.float64)
    n = D_abs.shape[1]
    eps64 = float(np.finfo(np.float64).eps)
    if not (np.isfinite(D_abs).all() and np.isfinite(K_abs).all()):
        raise _spectrum_message("overflow", "K(k) or D(k) is not finite", gammas,
                                "use smaller spring constants")
    lam_D, lam_K = D_abs.max(axis=1), K_abs.max(axis=1)
    tau64_D = refuse_too_stiff(lam_D, n, bz_labels, gammas)
    tau_D, tau_K = n * eps * lam_D, n * eps * lam_K
    hi_D = np.maximum(ZERO_MODE_CUTOFF2, SPECTRUM_SEPARATION * tau64_D)
    band_D = (D_abs > tau_D[:, None]) & (D_abs < hi_D[:, None])
    if band_D.any():
        k, m = np.argwhere(band_D)[0]
        lam = D_abs[k, m]
        if lam < ZERO_MODE_CUTOFF2 and ZERO_MODE_CUTOFF2 >= SPECTRUM_SEPARATION * tau64_D[k]:
            raise _spectrum_message(
                "too soft",
                f"at BZ point {bz_labels[k]} D has the eigenvalue {lam:.3g}, resolved (its round-off is "
                f"{tau_D[k]:.3g}) but below the zero-mode cutoff w^2 = {ZERO_MODE_CUTOFF2:g} (ALGORITHM.md "
                "section 7), so a real mode would count as a zero mode", gammas,
                f"scale both spring constants up by a factor of at least {ZERO_MODE_CUTOFF2 / lam:.3g} "
                "(the map scales as 1 / gamma, the ADPs do not change)")
        raise _spectrum_message(
            "ill conditioned",
            f"at BZ point {bz_labels[k]} D has the eigenvalue {lam:.3g}, within a factor "
            f"{SPECTRUM_SEPARATION:g} of its round-off {tau64_D[k]:.3g}: it is neither a clear zero mode nor "
            "an accurate mode", gammas, "make the ratio gamma_intra / gamma_inter less extreme")
    band_K = (K_abs > tau_K[:, None]) & (K_abs < SPECTRUM_SEPARATION * n * eps64 * lam_K[:, None])
    if band_K.any():
        k, m = np.argwhere(band_K)[0]
        raise _spectrum_message(
            "ill conditioned",
            f"at BZ point {bz_labels[k]} K has the singular value {K_abs[k, m]:.3g}, within a factor "
            f"{SPECTRUM_SEPARATION:g} of the pseudo-inverse cutoff {n * eps64 * lam_K[k]:.3g} (ALGORITHM.md "
            "section 6): Kinv, the covariance and the ADPs would be round-off", gammas,
            "make the ratio gamma_intra / gamma_inter less extreme")


def adp_scale_defined(ADP_rb: np.ndarray, A_side: np.ndarray) -> bool:
    """Whether the ADP scale mean(B) / (8 pi^2 mean(ADP) / 3) is defined (section 8).

    mean(ADP) equals the translational part of the raw rigid-body ADPs exactly (the
    rotational part is linear in the centred coordinates and averages to zero), so it is
    read from ``ADP_rb`` directly, free of that cancellation. It vanishes when every
    ASU's translation is in the null space of K at every sampled k (the pseudo-inverse
    removes it); then only round-off is left. It is judged against the size the ADPs
    would have without cancellation, max over atoms of sum |A| |ADP_rb| (the ADPs
    themselves can vanish by symmetry: in P 2_1 2_1 2_1 the ASUs' rotational terms
    cancel atom by atom). Measured: round-off ~1e-13 of that size or less, a defined
    scale 0.1 - 1.

    Parameters
    ----------
    ADP_rb : ndarray, (n_dof,)
        Real diagonal of covar[:, ref, :] before scaling, (translation x, y, z,
        rotation x, y, z) per ASU.
    A_side : ndarray, (3 n_at, n_dof)
        The ASUs' projections side by side (section 8).
    """
    ADP_rb, A_side = np.asarray(ADP_rb, dtype=np.float64), np.asarray(A_side, dtype=np.float64)
    translational = float(ADP_rb.reshape(-1, 6)[:, :3].sum())
    size = float(np.max((np.abs(A_side) @ np.abs(ADP_rb)).reshape(-1, 3).sum(axis=1)))
    return bool(np.isfinite(translational) and np.isfinite(size) and translational > ADP_TRANSLATION_RTOL * size)


def undefined_adp_reason(
    n_asu: int, L: Sequence[int], n_contacts: int, n_inter_contacts: int, gnm_cutoff: float,
    gamma_intra: float, gamma_inter: float,
) -> str:
    """Why the ADP scale is undefined, and what to do, in one sentence (checked in order).

    Parameters
    ----------
    n_contacts, n_inter_contacts : int
        Atom contacts within gnm_cutoff (self pairs excluded), and those of them between
        different ASUs or cells (the gamma_inter springs).
    """
    tail = "; or pass use_data_adp=True (Debye-Waller factors from the file's B factors)"
    if n_contacts == 0:
        return (f"gnm_cutoff = {gnm_cutoff:g} A leaves no atom contacts, so there are no springs and "
                f"K(k) = 0 at every k; use a larger gnm_cutoff{tail}")
    if n_inter_contacts == 0:
        return (f"gnm_cutoff = {gnm_cutoff:g} A leaves no contacts between ASUs (only within them), so "
                f"nothing holds the ASUs' translations at any k; use a larger gnm_cutoff{tail}")
    if n_asu == 1 and all(int(x) == 1 for x in L):
        return ("only k = 0 is sampled (oversampling 1 on every axis) and the cell holds one ASU: its "
                "translations are the three zero modes at k = 0, which the pseudo-inverse removes, so the "
                f"raw ADPs average to zero; sample more k-points (oversampling >= 2 on an axis){tail}")
    return ("the ASUs' translations are zero modes (below the pseudo-inverse cutoff) at every sampled k: "
            f"the springs between ASUs (gamma_inter = {gamma_inter:g}) are too weak next to those within "
            f"them (gamma_intra = {gamma_intra:g}); use a larger gamma_inter / gamma_intra{tail}")


# ----------------------------------------------------------- cheap memory inputs
def contact_upper_bound(asu_xyz: np.ndarray, cell_origin: np.ndarray, cutoff: float) -> int:
    """An upper bound on the atom contacts within ``cutoff`` (self pairs excluded), O(n).

    Cell lists: every supercell atom within the reference atoms' box (+ cutoff) is put in
    a cube of side ``cutoff``; a reference atom's contacts are at most the atoms of the
    27 cubes around it. Cheap for any input, also for pathological ones (thousands of
    atoms at one position, where a k-d tree takes quadratic time): it decides the
    memory budget before the neighbour search runs. About 3-6x the exact count for
    protein-like densities.

    Parameters
    ----------
    asu_xyz : ndarray, (n_asu, n_at, 3), Angstrom
    cell_origin : ndarray, (27, 3), Angstrom
    """
    ref = np.asarray(asu_xyz, dtype=np.float64).reshape(-1, 3)
    if len(ref) == 0 or cutoff <= 0:
        return 0
    lo, hi = ref.min(axis=0) - cutoff, ref.max(axis=0) + cutoff
    # Cubes of side >= cutoff, and few enough that a 64-bit key cannot overflow.
    side = max(float(cutoff), float((hi - lo).max()) / 2**19)
    nb = np.floor((hi - lo) / side).astype(np.int64) + 3  # one empty layer on each side

    def keys(x: np.ndarray) -> np.ndarray:
        k = np.floor((x - lo) / side).astype(np.int64) + 1
        return (k[:, 0] * nb[1] + k[:, 1]) * nb[2] + k[:, 2]

    near = []
    origins = np.asarray(cell_origin, dtype=np.float64)
    per_block = max(1, 2**20 // len(ref))  # cells per vectorised block (bounded memory)
    for c0 in range(0, len(origins), per_block):
        other = (ref[None] + origins[c0:c0 + per_block, None, :]).reshape(-1, 3)
        inside = np.all((other >= lo) & (other <= hi), axis=1)
        near.append(keys(other[inside]))
    other_keys, other_counts = np.unique(np.concatenate(near), return_counts=True)
    ref_keys, ref_counts = np.unique(keys(ref), return_counts=True)
    d = np.array([-1, 0, 1])
    offsets = ((d[:, None, None] * nb[1] + d[None, :, None]) * nb[2] + d[None, None, :]).reshape(-1)
    total = 0
    for r0 in range(0, len(ref_keys), 2**16):  # (bins x 27) targets per block
        target = ref_keys[r0:r0 + 2**16, None] + offsets[None, :]
        pos = np.clip(np.searchsorted(other_keys, target), 0, len(other_keys) - 1)
        hits = np.where(other_keys[pos] == target, other_counts[pos], 0).sum(axis=1)
        total += int(np.dot(ref_counts[r0:r0 + 2**16], hits))
    return max(total - len(ref), 0)


def check_q_vectors(q: Any) -> np.ndarray:
    """Arbitrary q-vectors for the NumPy reference: a finite real (N, 3) array, N >= 1."""
    arr = np.asarray(q.detach().cpu().numpy() if hasattr(q, "detach") else q)
    if arr.dtype.kind not in "fiu":
        raise EryxInputError(f"q_vectors must be real numbers, got dtype {arr.dtype}")
    if arr.ndim != 2 or arr.shape[1] != 3 or arr.shape[0] == 0:
        raise EryxInputError(f"q_vectors must have shape (N, 3) with N >= 1, got {tuple(arr.shape)}")
    if arr.dtype.kind == "f" and arr.dtype.itemsize > 8:
        raise EryxInputError(f"q_vectors is {arr.dtype}, wider than float64: convert explicitly "
                             "(no silent down-cast)")
    arr = arr.astype(np.float64)
    if not np.isfinite(arr).all():
        raise EryxInputError("q_vectors contains NaN or infinite values")
    return arr


def check_k_vector(k: Any) -> np.ndarray:
    """One k-vector for :meth:`eryx.models.OnePhonon.phonons_at`: a finite real (3,) array, 1/A."""
    arr = np.asarray(k.detach().cpu().numpy() if hasattr(k, "detach") else k)
    if arr.dtype.kind not in "fiu":
        raise EryxInputError(f"kvec must be real numbers, got dtype {arr.dtype}")
    if arr.shape != (3,):
        raise EryxInputError(f"kvec must be one k-vector of shape (3,), got shape {tuple(arr.shape)}")
    if arr.dtype.itemsize > 8:
        raise EryxInputError(f"kvec is {arr.dtype}, wider than float64: convert explicitly (no silent down-cast)")
    arr = arr.astype(np.float64)
    if not np.isfinite(arr).all():
        raise EryxInputError("kvec contains NaN or infinite values")
    return arr
