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
pattern must be identical in both arrays (see :mod:`parity.comparison.engine`).

Size scaling
------------
Round-off of a sum grows with the number of its terms. Two evaluations of a sum
of ``n`` terms in different orders (two backends) differ by at most
``2 gamma_n sum|t| ~= n eps sum|t|`` (Higham, *Accuracy and Stability of
Numerical Algorithms*, 2nd ed., eq. 4.4; ``gamma_n = n u / (1 - n u)``, unit
round-off ``u = eps / 2``). Relative to the tiers' yardstick ``max|result|``
that is ``n eps kappa`` with ``kappa = sum|t| / max|result|`` (1 for the
Gaussian-network Hessian: its diagonal blocks sum positive semi-definite terms).
:meth:`Tier.scaled` applies this bound: ``atol >= n_terms * eps`` of the working
precision, where ``n_terms`` (times ``kappa`` where that exceeds 1) is given by
the stage. Below the tier's own ``atol`` nothing changes; the tier is the
measured floor, the bound takes over for large sums (gnm_cutoff 1e9 puts 84,644
contacts into one block of 5zck_p1's Hessian). The worst case is rarely reached
(measured: 0.013-0.024 of it on that Hessian, at 332 and 84,644 terms), so a
real error above the bound is still seen: 1e-10 relative fails at both sizes.

The cluster maps (``Id_cluster0``, ``Id_cluster_last``) are sums over eigenvectors,
determined only to first order in the two backends' difference in D (credited up to
D's own tier) plus the eigensolvers' backward error, divided by each neighbouring
mode's distance and weighted by its amplitude: their ``n_terms`` is that bound over
eps (:mod:`parity.contract.conditioning`). At unit springs it stays below the tier on the
fixtures measured, except synth_trigonal's rank-0 map (3.5e-11); with every atom in
contact (gnm_cutoff 1e9) it reaches 3.3e-8 (5zck_p1) and the measured differences are
0.0002-0.12 of it (tests/benchmarks/cluster_bound.py).

Atoms far from the origin (``Amat``, ``Mmat``, ``structure_factors``, ``hessian``,
``K``, ``D``): centring and phases lose ``eps |x|``, so beyond the fixtures' measured ``max|x| / max|x - com|``
(5.57) the allowance scales with that ratio (:func:`parity.contract.conditioning.far_terms`).

Single precision
----------------
A float32 run is judged by per-stage tiers, :data:`F32_STAGE_TIERS` (stage name
-> tier, named ``<stage>_f32``): the worst normwise error of that stage measured
over the measurement set (:data:`F32_MEASURED`), times :data:`F32_MARGIN`, and
never below :data:`F32_FLOOR`. They are normwise (``rtol = 0``): the allowance
is ``atol * max|expected|``, the figure that was measured. Stages without a
measurement of their own fall back to the kind tiers ``tight_f32`` ... , the
largest of their stages'.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import ModuleType
from typing import Any, Mapping, Sequence

__all__ = [
    "Tier",
    "TIERS",
    "F32_SUFFIX",
    "F32_MEASURED",
    "F32_MARGIN",
    "F32_FLOOR",
    "F32_STAGE_TIERS",
    "ActiveOverrides",
    "CLI_SOURCE",
    "resolve_tier",
    "validate_overrides",
    "find_pyproject",
    "load_overrides",
    "gather_overrides",
    "describe_overrides",
    "parse_tier_override",
]

#: Suffix of the single-precision counterpart of a tier.
F32_SUFFIX = "_f32"

_OVERRIDABLE_KEYS = ("rtol", "atol")


def _toml_module() -> ModuleType:
    """The TOML reader: ``tomllib`` (Python 3.11+), else ``tomli`` (Python 3.10)."""
    try:
        import tomllib
    except ModuleNotFoundError:
        try:
            import tomli as tomllib  # type: ignore[no-redef]
        except ModuleNotFoundError:
            raise ModuleNotFoundError(
                "reading [tool.parity.tiers] from pyproject.toml needs tomllib (Python 3.11+) or, on "
                "Python 3.10, the tomli package: pip install tomli") from None
    return tomllib


@dataclass(frozen=True)
class Tier:
    """A named tolerance.

    Attributes
    ----------
    name : str
        Key of the tier in :data:`TIERS` (e.g. ``"tight"``, ``"tight_f32"``) or of
        a per-stage float32 tier (``"ADP_f32"``).
    rtol : float
        Relative tolerance, multiplies ``|expected|`` element by element.
    atol : float
        Absolute tolerance *in units of* ``scale = max |expected|`` (finite
        elements only), i.e. relative to the array's magnitude.
    note : str
        Where the numbers come from (measurement, literature, placeholder).
    n_terms : int
        Summed terms the tier has been :meth:`scaled` for (1: not scaled).
    """

    name: str
    rtol: float
    atol: float
    note: str = ""
    n_terms: int = field(default=1, compare=True)

    @property
    def is_exact(self) -> bool:
        """True for the bitwise tier (``rtol == atol == 0``)."""
        return self.rtol == 0.0 and self.atol == 0.0

    def describe(self) -> str:
        """One-line ``name (rtol=..., atol=...*max|expected|)`` label for messages."""
        if self.is_exact:
            return f"{self.name} (bitwise)"
        scaled = f", scaled for {self.n_terms} summed terms" if self.n_terms > 1 else ""
        return f"{self.name} (rtol={self.rtol:.3g}, atol={self.atol:.3g}*max|expected|{scaled})"

    def scaled(self, n_terms: int, eps: float) -> Tier:
        """This tier for a quantity whose elements are sums of ``n_terms`` terms.

        ``atol`` becomes ``max(atol, n_terms * eps)``: the worst-case difference of
        two summation orders relative to ``sum|terms|`` (module docstring, "Size
        scaling"). ``rtol`` is unchanged (the bound is normwise).

        Parameters
        ----------
        n_terms : int
            Terms in the longest sum behind one element (>= 1), multiplied by the
            sum's condition ``sum|terms| / max|result|`` where that exceeds 1.
        eps : float
            Machine epsilon of the working precision (``2.2e-16`` float64,
            ``1.2e-7`` float32).

        Returns
        -------
        Tier
            Same name; ``n_terms`` recorded. The exact tier is returned unchanged
            (bitwise stays bitwise).

        Raises
        ------
        ValueError
            ``n_terms`` not a positive integer, ``eps`` not in (0, 1), or
            ``n_terms * eps >= 1`` (such a sum can lose every digit: nothing is left
            to compare).
        """
        if isinstance(n_terms, bool) or not float(n_terms).is_integer() or n_terms < 1:
            raise ValueError(f"n_terms must be a positive integer, got {n_terms!r}")
        if not 0.0 < eps < 1.0:
            raise ValueError(f"eps must lie in (0, 1), got {eps!r}")
        n_terms = int(n_terms)
        if self.is_exact or n_terms == 1:
            return self
        bound = n_terms * eps
        if bound >= 1.0:
            raise ValueError(f"round-off bound n_terms * eps = {n_terms} * {eps:.3g} = {bound:.3g} >= 1: "
                             f"a sum of {n_terms} terms in this precision can lose every digit")
        return replace(self, atol=max(self.atol, bound), n_terms=n_terms)


# Each note says where its numbers come from; the lead re-measures them when the
# backends change (docs/tiers.md).
TIERS: dict[str, Tier] = {
    t.name: t
    for t in (
        Tier("exact", 0.0, 0.0, "bitwise equal (NaN == NaN at the same place, -0.0 == 0.0); "
             "for integer/index data and copies that involve no arithmetic"),
        # float64 tiers: worst normwise error (max|a-e| / max|e|) measured over 13 runs
        # (6 synthetic crystals, 5zck_p1, 7n2h, 7n2h_p1, 2ol9, histidine, 5zck_p1 at
        # oversampling 3 and on the standard 450,625-point grid), times a stated margin.
        Tier("tight", 1e-13, 5e-14, "direct arithmetic (grid, A/M matrices, K, D, structure "
             "factors): worst measured 2.5e-15 (structure_factors), margin 20x; for sums of more "
             "than 225 terms atol grows as n_terms * eps (Tier.scaled): 5zck_p1 at gnm_cutoff 1e9 "
             "(84,644 contacts per block) measured 4.4e-13 (hessian, K, D) against 1.9e-11"),
        Tier("decomposition", 1e-10, 1e-10, "eigen/SVD/Cholesky/pinv-derived (Linv, Winv, eigenspaces, "
             "Kinv, covar, ADP): worst measured 1.2e-11 (eigenspace projector, 5zck_p1 at a "
             "zone-boundary point with 2-fold clusters; Kinv 3.4e-13), margin 8x"),
        Tier("end_to_end", 1e-11, 1e-11, "intensity maps (Id, cluster-summed rank maps, data ADP, "
             "q-vector mode): worst measured 4.7e-13 (Id_cluster0), margin 20x"),
        Tier("gradient", 1e-7, 1e-7, "autograd vs central finite differences of the NumPy model "
             "(h = 1e-4): worst measured 9.4e-9, the FD truncation error; margin 10x"),
        Tier("gradient_q", 1e-8, 1e-8, "d Id/d q, autograd vs central finite differences of the NumPy "
             "q-vector mode (h = 1e-6 1/A): worst measured 9.1e-10 of max|grad| (5zck_p1; 7n2h 3.7e-10), "
             "the FD truncation and round-off; margin 11x"),
        Tier("oracle_gemmi", 0.0, 2.5e-7, "NumPy F vs gemmi's StructureFactorCalculatorX at integer "
             "hkl (gemmi computes form factors in single precision): worst measured 1.16e-7 "
             "relative to max|F|, margin 2x; normwise only (systematic absences are ~0)"),
        Tier("oracle_symmetry", 0.0, 2e-6, "P1 expansion from the file's REMARK 290 SMTRY operators vs "
             "gemmi's exact space-group operations: SMTRY prints 6 decimals (0.866025 for sqrt(3)/2), "
             "worst measured 4.0e-7 relative to max|xyz| (7n2h, P 31; 1e-16 where the operators are "
             "integral), margin 5x; a wrong operator sign moves atoms by Angstroms (> 1e-2)"),
    )
}

# --------------------------------------------------------------------------
# float32: per-stage tiers from measurement
# --------------------------------------------------------------------------

#: Margin of every float32 tier over the worst error measured for its stage.
F32_MARGIN = 5.0
#: No float32 tier is below ten float32 roundings (a stage measured exact, such as
#: the all-atom Hessian at integral spring constants, is not exact in general).
F32_FLOOR = 10 * 2.0**-23

#: Worst normwise float32 error per stage, ``max|a - e| / max|e|`` of torch float32
#: against the float64 NumPy reference: stage -> (kind tier, worst, where). Measured
#: with ``parity run --dtype float32`` (x86_64 CPU, 2 threads, torch 2.13 CPU build) on
#: the fixtures synthetic, synth_triclinic, synth_monoclinic, synth_orthorhombic,
#: synth_trigonal, synth_tetragonal, 5zck_p1, 7n2h, 7n2h_p1, 2ol9, histidine, each at
#: its default grid and at oversampling 3 (--grid=-2,2,3): 22 runs, each repeated with
#: bitwise identical results (table in docs/tiers.md).
F32_MEASURED: dict[str, tuple[str, float, str]] = {
    "hkl_grid": ("tight", 7.95e-08, "2ol9 os3"),
    "q_grid": ("tight", 1.49e-07, "synth_orthorhombic os3"),
    "kvec": ("tight", 1.86e-07, "synth_trigonal os3"),
    "kvec_norm": ("tight", 1.5e-07, "synth_tetragonal os3"),
    "xyz": ("tight", 5.37e-08, "5zck_p1 default"),
    "asu_xyz": ("tight", 5.37e-08, "5zck_p1 default"),
    "Amat": ("tight", 5.26e-07, "5zck_p1 default"),
    "M_allatoms": ("tight", 4.28e-08, "synth_monoclinic default"),
    "Mmat": ("tight", 3.2e-07, "7n2h default"),
    "Linv": ("decomposition", 6.03e-07, "5zck_p1 default"),
    "form_factors": ("tight", 3.59e-07, "5zck_p1 os3"),
    "structure_factors": ("tight", 2.46e-06, "synthetic os3"),
    "hessian_allatoms": ("tight", 0, "2ol9 default"),
    "hessian": ("tight", 4.04e-07, "7n2h default"),
    "K": ("tight", 3.51e-07, "7n2h os3"),
    "D": ("tight", 1.07e-06, "7n2h os3"),
    "Winv": ("decomposition", 1.39e-05, "synthetic os3"),
    "eigenspaces": ("decomposition", 0.00246, "synth_monoclinic default"),
    "Kinv": ("decomposition", 7.5e-06, "synth_orthorhombic default"),
    "covar": ("decomposition", 2.49e-06, "synth_orthorhombic default"),
    "ADP": ("decomposition", 3.27e-07, "synth_trigonal os3"),
    "Id": ("end_to_end", 2.94e-06, "7n2h os3"),
    "Id_cluster0": ("end_to_end", 0.00127, "histidine os3"),
    "Id_cluster_last": ("end_to_end", 0.000183, "synth_tetragonal os3"),
    "Id_data_adp": ("end_to_end", 2.84e-06, "7n2h os3"),
    "Id_qvectors": ("end_to_end", 4.17e-06, "7n2h os3"),
    "grad_gamma_inter": ("gradient", 1.52e-06, "2ol9 os3"),
    "grad_gamma_intra": ("gradient", 1.98e-06, "2ol9 os3"),
    "qvectors_sample": ("end_to_end", 1.63e-06, "histidine os3"),
    "grad_q": ("gradient_q", 1.1e-05, "7n2h_p1 default"),
    "d_spacing": ("tight", 5.65e-07, "synthetic default"),
    "Id_q_offgrid": ("end_to_end", 3.01e-06, "synth_monoclinic os3"),
}


def _round_up(x: float, digits: int = 2) -> float:
    """``x`` rounded up to ``digits`` significant digits (a tier never below its derivation)."""
    if x <= 0:
        return x
    step = 10.0 ** (math.floor(math.log10(x)) - digits + 1)
    return math.ceil(x / step - 1e-9) * step


def _f32_tier(name: str, worst: float, where: str) -> Tier:
    atol = float(f"{_round_up(max(F32_MARGIN * worst, F32_FLOOR)):.2g}")
    return Tier(name, 0.0, atol, f"float32, normwise: worst measured {worst:.3g} ({where}) x margin "
                f"{F32_MARGIN:g}" + (f", raised to the floor {F32_FLOOR:.2g}" if F32_MARGIN * worst < F32_FLOOR
                                    else ""))


#: stage name -> its float32 tier (``<stage>_f32``).
F32_STAGE_TIERS: dict[str, Tier] = {
    stage: _f32_tier(stage + F32_SUFFIX, worst, where) for stage, (_, worst, where) in F32_MEASURED.items()
}

# Kind tiers for stages without a measurement of their own: the largest of their stages'.
for _kind in ("tight", "decomposition", "end_to_end", "gradient", "gradient_q"):
    _members = [(w, f"{st} {where}") for st, (k, w, where) in F32_MEASURED.items() if k == _kind]
    _worst, _where = max(_members)
    TIERS[_kind + F32_SUFFIX] = replace(
        _f32_tier(_kind + F32_SUFFIX, _worst, _where),
        note=f"float32 fallback for {_kind} stages without a tier of their own: the largest of "
             f"theirs ({_where}: {_worst:.3g} x {F32_MARGIN:g}); normwise")

_SINGLE = {"float32", "complex64", "float16", "bfloat16"}
_DOUBLE = {"float64", "complex128"}


def _normalise_dtype(dtype: Any) -> str:
    """``torch.float32`` / ``np.dtype('float32')`` / ``"float32"`` -> ``"float32"``."""
    text = str(dtype)
    return text.removeprefix("torch.")


def _all_tiers() -> dict[str, Tier]:
    """Every tier by name: the table plus the per-stage float32 tiers."""
    return {**TIERS, **{t.name: t for t in F32_STAGE_TIERS.values()}}


def _known() -> str:
    return ", ".join(sorted(TIERS)) + " and the per-stage <stage>_f32 tiers"


def _check_tolerance(key: str, value: Any) -> float:
    """Return ``value`` as a float in (0, 1), or raise ``ValueError`` naming ``key``."""
    # bool is an int subclass; `rtol = true` in TOML is a mistake, not 1.0.
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{key}: expected a positive number, got {value!r}")
    number = float(value)
    if not math.isfinite(number) or number <= 0.0:
        raise ValueError(f"{key}: expected a positive finite number, got {value!r}")
    if number >= 1.0:
        raise ValueError(f"{key} = {value!r} is absurd: a tolerance >= 1 accepts a 100 % error, i.e. "
                         f"any result; tolerances must be below 1")
    return number


def _validate_override(name: str, values: Mapping[str, Any], prefix: str) -> dict[str, float]:
    """Check one ``{rtol, atol}`` override for tier ``name``; return the clean dict.

    ``prefix`` starts every error message's key label (e.g. ``"tool.parity.tiers."``).
    """
    label = f"{prefix}{name}"
    if name not in _all_tiers():
        raise ValueError(f"{label}: unknown tier {name!r} (known: {_known()})")
    if name == "exact":
        raise ValueError(f"{label}: the exact tier cannot be overridden")
    if not isinstance(values, Mapping):
        raise ValueError(f"{label}: expected a table with rtol/atol, got {values!r}")
    clean: dict[str, float] = {}
    for key, value in values.items():
        if key not in _OVERRIDABLE_KEYS:
            raise ValueError(f"{label}.{key}: unknown key (allowed: rtol, atol)")
        clean[key] = _check_tolerance(f"{label}.{key}", value)
    return clean


def validate_overrides(overrides: Mapping[str, Mapping[str, Any]], prefix: str = "override ") -> dict[str, dict]:
    """Check a whole ``{tier: {"rtol"/"atol": value}}`` mapping up front; return it cleaned.

    Accepts every tier name, the per-stage float32 ones included (``ADP_f32``).

    Raises
    ------
    ValueError
        Unknown tier or key, the exact tier, or a value not finite and in (0, 1).
    """
    return {name: _validate_override(name, values, prefix) for name, values in overrides.items()}


def resolve_tier(name: str, dtype: Any = "float64",
                 overrides: Mapping[str, Mapping[str, float]] | None = None, *,
                 stage: str | None = None) -> Tier:
    """Look up a tier for a given working precision, applying overrides.

    Parameters
    ----------
    name : str
        Base tier name, e.g. ``"decomposition"``.
    dtype : str or dtype, default ``"float64"``
        Working precision of the compared quantity. For single precision
        (``float32``/``complex64``) the stage's own float32 tier
        (:data:`F32_STAGE_TIERS`) applies when ``stage`` has one, else ``X``
        maps to ``X_f32`` when that tier exists; ``exact`` stays exact.
        ``torch.float32`` style names work.
    overrides : mapping of tier name -> {"rtol": float, "atol": float}, optional
        As returned by :func:`load_overrides` / :func:`parse_tier_override`.
        The override keyed by the *resolved* name applies (overriding
        ``tight`` does not loosen ``tight_f32`` nor ``hessian_f32``). Missing
        keys keep the table's value.
    stage : str, optional
        The stage being compared (selects its float32 tier).

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
        if name != "exact" and stage in F32_STAGE_TIERS:
            tier = F32_STAGE_TIERS[stage]
        else:
            tier = TIERS.get(name + F32_SUFFIX, TIERS[name])
    elif precision in _DOUBLE:
        tier = TIERS[name]
    else:
        raise ValueError(f"unknown dtype {precision!r} (expected float64/complex128/float32/complex64)")
    if overrides and tier.name in overrides:
        tier = replace(tier, **_validate_override(tier.name, overrides[tier.name], "override "))
        tier = replace(tier, note=f"{tier.note} [overridden]")
    return tier


# --------------------------------------------------------------------------
# Overrides: pyproject.toml and the command line, visible
# --------------------------------------------------------------------------


def find_pyproject(start: Path | None = None) -> Path | None:
    """Nearest ``pyproject.toml`` at or above ``start`` (default: the working directory)."""
    start = Path.cwd() if start is None else Path(start)
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
        File to read. Default: :func:`find_pyproject` from the working directory.

    Returns
    -------
    dict
        ``{tier_name: {"rtol": float, "atol": float}}`` (only the keys
        given). ``{}`` when the file or the table is missing.

    Raises
    ------
    ValueError
        The file is not valid TOML (the message names the file), an unknown
        tier name or key, or a value that is not a finite number in (0, 1); the
        message names the file and the offending key.
    """
    path = find_pyproject() if pyproject_path is None else Path(pyproject_path)
    if path is None or not path.is_file():
        return {}
    toml = _toml_module()
    try:
        with path.open("rb") as handle:
            document = toml.load(handle)
    except toml.TOMLDecodeError as exc:
        raise ValueError(f"{path}: not valid TOML ({exc}); fix the file or remove its "
                         f"[tool.parity.tiers] tables") from None
    table = document.get("tool", {}).get("parity", {}).get("tiers", {})
    if not isinstance(table, Mapping):
        raise ValueError(f"tool.parity.tiers in {path}: expected a table, got {table!r}")
    try:
        return validate_overrides(table, "tool.parity.tiers.")
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from None


#: Source label of overrides given with ``--tier`` on the command line.
CLI_SOURCE = "command line (--tier)"


@dataclass(frozen=True)
class ActiveOverrides:
    """The tier overrides in force for a run, and where each value came from.

    Attributes
    ----------
    values : dict
        ``{tier: {"rtol"/"atol": float}}``, as :func:`resolve_tier` takes them.
    sources : dict
        ``{tier: {key: source}}``: a ``pyproject.toml`` path or :data:`CLI_SOURCE`.
    """

    values: dict[str, dict[str, float]] = field(default_factory=dict)
    sources: dict[str, dict[str, str]] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(self.values)

    def rows(self) -> list[dict]:
        """JSON rows ``{"tier", "key", "value", "table_value", "source"}``, sorted (for the result)."""
        table = _all_tiers()
        return [{"tier": name, "key": key, "value": value,
                 "table_value": getattr(table[name], key) if name in table else None,
                 "source": self.sources.get(name, {}).get(key, "not recorded")}
                for name in sorted(self.values) for key, value in sorted(self.values[name].items())]

    def describe(self) -> list[str]:
        """One line per overridden value (empty when none), for the run header."""
        return describe_overrides(self.values, self.sources)


def describe_overrides(overrides: Mapping[str, Mapping[str, float]],
                       sources: Mapping[str, Mapping[str, str]] | str | None = None) -> list[str]:
    """Human lines for active overrides, e.g. ``"tier tight: rtol 1e-12 (table 1e-13) from /x/pyproject.toml"``.

    Parameters
    ----------
    overrides : mapping
        ``{tier: {key: value}}``.
    sources : mapping or str, optional
        ``{tier: {key: source}}``, or one source for all; "source not recorded" when absent.

    Returns
    -------
    list of str
        Empty when nothing is overridden.
    """
    table = _all_tiers()
    lines = []
    for name in sorted(overrides):
        for key, value in sorted(overrides[name].items()):
            if isinstance(sources, str):
                source = sources
            else:
                source = (sources or {}).get(name, {}).get(key, "source not recorded")
            base = f" (table {getattr(table[name], key):.3g})" if name in table else ""
            lines.append(f"tier {name}: {key} {value:.3g}{base} from {source}")
    return lines


def gather_overrides(cli: Sequence[str] = (), *, pyproject_path: Path | None = None,
                     use_pyproject: bool = True) -> ActiveOverrides:
    """The overrides of a run: ``pyproject.toml`` first, then ``--tier`` texts on top, with sources.

    Parameters
    ----------
    cli : sequence of str
        ``--tier`` values, ``NAME=RTOL[,ATOL]`` (:func:`parse_tier_override`).
    pyproject_path : Path, optional
        Default: :func:`find_pyproject` from the working directory.
    use_pyproject : bool, default True
        False ignores pyproject.toml altogether.

    Raises
    ------
    ValueError
        As :func:`load_overrides` and :func:`parse_tier_override`.
    """
    values: dict[str, dict[str, float]] = {}
    sources: dict[str, dict[str, str]] = {}
    if use_pyproject:
        path = find_pyproject() if pyproject_path is None else Path(pyproject_path)
        for name, table in (load_overrides(path) if path is not None else {}).items():
            values.setdefault(name, {}).update(table)
            sources.setdefault(name, {}).update({k: str(path) for k in table})
    for text in cli:
        name, table = parse_tier_override(text)
        values.setdefault(name, {}).update(table)
        sources.setdefault(name, {}).update({k: CLI_SOURCE for k in table})
    return ActiveOverrides(values, sources)


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
        Malformed text, unknown tier, or a number that is not finite and in
        (0, 1); one line saying why.
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
