"""Tolerance tiers: every tolerance the harness uses lives in ONE named table.

A stage never carries its own ``rtol``/``atol``; it names a tier, and the tier
is resolved here (dtype mapping, then overrides from ``pyproject.toml`` or the
command line).

Semantics
---------
An element passes iff::

    |actual - expected| <= atol * scale + rtol * |expected|

where ``scale = max |expected|`` over the finite elements of the expected
array (0 when there are none). ``atol`` is therefore *relative to the array's
magnitude* and unit-free: the quantities of the model range from ~1e-3
(fractional k) to ~1e6 (intensities), and one absolute tolerance cannot serve
them all. Consequence worth knowing: an expected array that is identically zero
has ``scale == 0``, so the actual array must be exactly zero there too.

The ``exact`` tier (``rtol == atol == 0``) means equal element by element,
NaN equal to NaN at the same place, and ``-0.0 == 0.0``.

Non-finite elements (NaN, +inf, -inf) are never compared numerically: their
pattern must be identical in both arrays (see :mod:`parity.compare`).
"""

from __future__ import annotations

import math
import tomllib
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Mapping

__all__ = [
    "Tier",
    "TIERS",
    "F32_SUFFIX",
    "resolve_tier",
    "load_overrides",
    "parse_tier_override",
]

#: Suffix of the single-precision counterpart of a tier.
F32_SUFFIX = "_f32"

_OVERRIDABLE_KEYS = ("rtol", "atol")


@dataclass(frozen=True)
class Tier:
    """A named tolerance.

    Attributes
    ----------
    name : str
        Key of the tier in :data:`TIERS` (e.g. ``"tight"``, ``"tight_f32"``).
    rtol : float
        Relative tolerance, multiplies ``|expected|`` element by element.
    atol : float
        Absolute tolerance *in units of* ``scale = max |expected|`` (finite
        elements only), i.e. relative to the array's magnitude.
    note : str
        Where the numbers come from (measurement, literature, placeholder).
    """

    name: str
    rtol: float
    atol: float
    note: str = ""

    @property
    def is_exact(self) -> bool:
        """True for the bitwise tier (``rtol == atol == 0``)."""
        return self.rtol == 0.0 and self.atol == 0.0

    def describe(self) -> str:
        """One-line ``name (rtol=..., atol=...*scale)`` label for messages."""
        if self.is_exact:
            return f"{self.name} (bitwise)"
        return f"{self.name} (rtol={self.rtol:.3g}, atol={self.atol:.3g}*max|expected|)"


# Placeholder numbers: the lead tightens them after measuring the real
# backend-to-backend differences; keep each note saying where the number came from.
TIERS: dict[str, Tier] = {
    t.name: t
    for t in (
        Tier("exact", 0.0, 0.0, "bitwise equal (NaN == NaN at the same place, -0.0 == 0.0); "
             "for integer/index data and copies that involve no arithmetic"),
        # float64 tiers: worst normwise error (max|a-e| / max|e|) measured over 13 runs
        # (6 synthetic crystals, 5zck_p1, 7n2h, 7n2h_p1, 2ol9, histidine, 5zck_p1 at
        # oversampling 3 and on the standard 450,625-point grid), times a stated margin.
        Tier("tight", 1e-13, 5e-14, "direct arithmetic (grid, A/M matrices, K, D, structure "
             "factors): worst measured 2.5e-15 (structure_factors), margin 20x"),
        Tier("decomposition", 1e-10, 1e-10, "eigen/SVD/Cholesky/pinv-derived (Linv, Winv, eigenspaces, "
             "Kinv, covar, ADP): worst measured 1.2e-11 (eigenspace projector, 5zck_p1 at a "
             "zone-boundary point with 2-fold clusters; Kinv 3.4e-13), margin 8x"),
        Tier("end_to_end", 1e-11, 1e-11, "intensity maps (Id, cluster-summed rank maps, data ADP, "
             "q-vector mode): worst measured 4.7e-13 (Id_cluster0), margin 20x"),
        Tier("gradient", 1e-7, 1e-7, "autograd vs central finite differences of the NumPy model "
             "(h = 1e-4): worst measured 9.4e-9, the FD truncation error; margin 10x"),
        Tier("oracle_gemmi", 0.0, 2.5e-7, "NumPy F vs gemmi's StructureFactorCalculatorX at integer "
             "hkl (gemmi computes form factors in single precision): worst measured 1.16e-7 "
             "relative to max|F|, margin 2x; normwise only (systematic absences are ~0)"),
        Tier("oracle_symmetry", 0.0, 2e-6, "P1 expansion from the file's REMARK 290 SMTRY operators vs "
             "gemmi's exact space-group operations: SMTRY prints 6 decimals (0.866025 for sqrt(3)/2), "
             "worst measured 4.0e-7 relative to max|xyz| (7n2h, P 31; 1e-16 where the operators are "
             "integral), margin 5x; a wrong operator sign moves atoms by Angstroms (> 1e-2)"),
        # float32 tiers: torch in float32 against the float64 NumPy reference, worst
        # normwise error measured over the same runs (standard grid excepted).
        Tier("tight_f32", 5e-5, 5e-5, "float32 direct arithmetic: worst measured 3.8e-6 "
             "(structure_factors), margin 13x"),
        Tier("decomposition_f32", 1e-2, 1e-2, "float32 decompositions: worst measured 2.5e-3 "
             "(eigenspace projector of a near-degenerate cluster, synth_monoclinic; Kinv 1.4e-4), "
             "margin 4x"),
        Tier("end_to_end_f32", 2e-3, 2e-3, "float32 intensity maps: worst measured 1.0e-4 "
             "(Id_cluster_last; full Id 2.5e-6), margin 20x"),
        Tier("gradient_f32", 5e-5, 5e-5, "float32 autograd vs float64 finite differences: worst "
             "measured 2.0e-6, margin 25x"),
    )
}

_SINGLE = {"float32", "complex64", "float16", "bfloat16"}
_DOUBLE = {"float64", "complex128"}


def _normalise_dtype(dtype: Any) -> str:
    """``torch.float32`` / ``np.dtype('float32')`` / ``"float32"`` -> ``"float32"``."""
    text = str(dtype)
    return text.removeprefix("torch.")


def _known() -> str:
    return ", ".join(sorted(TIERS))


def _check_positive(key: str, value: Any) -> float:
    """Return ``value`` as a float, or raise ``ValueError`` naming ``key``."""
    # bool is an int subclass; `rtol = true` in TOML is a mistake, not 1.0.
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{key}: expected a positive number, got {value!r}")
    number = float(value)
    if not math.isfinite(number) or number <= 0.0:
        raise ValueError(f"{key}: expected a positive finite number, got {value!r}")
    return number


def _validate_override(name: str, values: Mapping[str, Any], prefix: str) -> dict[str, float]:
    """Check one ``{rtol, atol}`` override for tier ``name``; return the clean dict.

    ``prefix`` starts every error message's key label (e.g. ``"tool.parity.tiers."``).
    """
    label = f"{prefix}{name}"
    if name not in TIERS:
        raise ValueError(f"{label}: unknown tier {name!r} (known: {_known()})")
    if name == "exact":
        raise ValueError(f"{label}: the exact tier cannot be overridden")
    if not isinstance(values, Mapping):
        raise ValueError(f"{label}: expected a table with rtol/atol, got {values!r}")
    clean: dict[str, float] = {}
    for key, value in values.items():
        if key not in _OVERRIDABLE_KEYS:
            raise ValueError(f"{label}.{key}: unknown key (allowed: rtol, atol)")
        clean[key] = _check_positive(f"{label}.{key}", value)
    return clean


def resolve_tier(name: str, dtype: Any = "float64",
                 overrides: Mapping[str, Mapping[str, float]] | None = None) -> Tier:
    """Look up a tier for a given working precision, applying overrides.

    Parameters
    ----------
    name : str
        Base tier name, e.g. ``"decomposition"``.
    dtype : str or dtype, default ``"float64"``
        Working precision of the compared quantity. For single precision
        (``float32``/``complex64``) ``X`` maps to ``X_f32`` when that tier
        exists; ``exact`` stays exact. ``torch.float32`` style names work.
    overrides : mapping of tier name -> {"rtol": float, "atol": float}, optional
        As returned by :func:`load_overrides` / :func:`parse_tier_override`.
        The override keyed by the *resolved* name applies (overriding
        ``tight`` does not loosen ``tight_f32``). Missing keys keep the
        table's value.

    Returns
    -------
    Tier

    Raises
    ------
    KeyError
        Unknown tier name; the message lists the known tiers.
    ValueError
        Unknown dtype, or an invalid override value.
    """
    if name not in TIERS:
        raise KeyError(f"unknown tier {name!r}; known tiers: {_known()}")
    precision = _normalise_dtype(dtype)
    if precision in _SINGLE:
        if name + F32_SUFFIX in TIERS:
            name = name + F32_SUFFIX
    elif precision not in _DOUBLE:
        raise ValueError(f"unknown dtype {precision!r} (expected float64/complex128/float32/complex64)")
    tier = TIERS[name]
    if overrides and name in overrides:
        tier = replace(tier, **_validate_override(name, overrides[name], "override "))
        tier = replace(tier, note=f"{tier.note} [overridden]")
    return tier


def _find_pyproject(start: Path) -> Path | None:
    """Nearest ``pyproject.toml`` at or above ``start``."""
    for directory in (start, *start.parents):
        candidate = directory / "pyproject.toml"
        if candidate.is_file():
            return candidate
    return None


def load_overrides(pyproject_path: Path | None = None) -> dict[str, dict]:
    """Read ``[tool.parity.tiers.<name>]`` tables from a ``pyproject.toml``.

    Parameters
    ----------
    pyproject_path : Path, optional
        File to read. Default: the nearest ``pyproject.toml`` at or above the
        current working directory.

    Returns
    -------
    dict
        ``{tier_name: {"rtol": float, "atol": float}}`` (only the keys
        given). ``{}`` when the file or the table is missing.

    Raises
    ------
    ValueError
        Unknown tier name, unknown key, or a value that is not a positive
        finite number; the message names the offending key.
    """
    path = _find_pyproject(Path.cwd()) if pyproject_path is None else Path(pyproject_path)
    if path is None or not path.is_file():
        return {}
    with path.open("rb") as handle:
        document = tomllib.load(handle)
    table = document.get("tool", {}).get("parity", {}).get("tiers", {})
    if not isinstance(table, Mapping):
        raise ValueError(f"tool.parity.tiers in {path}: expected a table, got {table!r}")
    return {name: _validate_override(name, values, "tool.parity.tiers.")
            for name, values in table.items()}


def parse_tier_override(text: str) -> tuple[str, dict]:
    """Parse a command-line override such as ``"tight=1e-10"`` or ``"tight=1e-10,1e-13"``.

    Parameters
    ----------
    text : str
        ``NAME=RTOL`` or ``NAME=RTOL,ATOL``.

    Returns
    -------
    (str, dict)
        Tier name and ``{"rtol": ...}`` or ``{"rtol": ..., "atol": ...}``.

    Raises
    ------
    ValueError
        Malformed text, unknown tier, or a non-positive/non-finite number; one
        line saying why.
    """
    name, sep, numbers = text.partition("=")
    name = name.strip()
    if not sep or not name or not numbers.strip():
        raise ValueError(f"tier override {text!r}: expected NAME=RTOL or NAME=RTOL,ATOL")
    parts = [p.strip() for p in numbers.split(",")]
    if len(parts) > 2:
        raise ValueError(f"tier override {text!r}: at most two numbers (RTOL,ATOL)")
    values: dict[str, float] = {}
    for key, part in zip(_OVERRIDABLE_KEYS, parts):
        try:
            values[key] = float(part)
        except ValueError:
            raise ValueError(f"tier override {text!r}: {key} {part!r} is not a number") from None
    return name, _validate_override(name, values, "tier override ")
