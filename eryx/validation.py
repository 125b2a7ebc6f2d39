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

from .errors import EryxInputError, MemoryBudgetError

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


def check_model_options(group_by: str, model: str) -> None:
    """Only rigid ASUs coupled by a Gaussian network are implemented."""
    if group_by not in SUPPORTED_GROUP_BY:
        raise EryxInputError(f"group_by={group_by!r} is not supported (supported: 'asu')")
    if model not in SUPPORTED_MODELS:
        raise EryxInputError(f"model={model!r} is not supported (supported: 'gnm')")


def check_common(
    hsampling: Sequence, ksampling: Sequence, lsampling: Sequence, *, res_limit: Any,
    gnm_cutoff: Any, gamma_intra: Any, gamma_inter: Any, group_by: str, model: str,
) -> tuple[Sampling, Sampling, Sampling]:
    """All parameter checks the two backends share; returns the three samplings."""
    check_model_options(group_by, model)
    samplings = tuple(check_sampling(s, axis) for s, axis in zip((hsampling, ksampling, lsampling), "hkl"))
    check_nonnegative(res_limit, "res_limit")
    check_nonnegative(gnm_cutoff, "gnm_cutoff", strictly_positive=True)
    check_nonnegative(gamma_intra, "gamma_intra")
    check_nonnegative(gamma_inter, "gamma_inter")
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

    Nothing here grows with the number of atoms squared: contacts, per-atom tables
    and chunked structure factors only. Measured peak RSS: docs/performance.md.
    """
    n_dof = 6 * n_asu
    n_atoms = n_asu * n_at
    cplx = 2 * itemsize
    m = min(n_contacts, contact_chunk)
    return {
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


def check_memory(parts: dict[str, float], limit: int, what: str) -> float:
    """Raise :class:`MemoryBudgetError` when the estimate exceeds ``limit`` bytes."""
    total = float(sum(parts.values()))
    if total > limit:
        biggest = max(parts, key=parts.get)
        raise MemoryBudgetError(f"{what} (largest part: {biggest})", total, limit)
    return total



#: Why a map cannot be computed when the ADP scale is undefined (see adp_scale_defined).
UNDEFINED_ADP_MESSAGE = (
    "the ADP scale is undefined: the raw ADPs average to zero (round-off) because the sampled "
    "Brillouin zone has no mode that translates the ASUs (only k = 0 with one ASU); sample more "
    "k-points (oversampling >= 2) or use use_data_adp=True"
)


def adp_scale_defined(mean_adp: float, max_abs_adp: float, eps: float) -> bool:
    """Whether the ADP scale mean(B) / (8 pi^2 mean(ADP) / 3) is defined (section 8).

    The rotational part of the raw ADPs is linear in the centred coordinates and
    averages to zero, so when only k = 0 is sampled with one ASU (every translation
    removed by the pseudo-inverse) mean(ADP) is pure round-off. The models then set the
    scale to NaN (ADP and covar NaN) and refuse to compute a map that needs it.
    """
    return bool(mean_adp > 1e3 * eps * max(max_abs_adp, 1e-300))
