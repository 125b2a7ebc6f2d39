"""``parity backends --check NAME``: a backend's quantities against the contract, alone.

On the built-in synthetic crystal (or any fixture) the backend is built once and every
quantity of :data:`parity.contract.quantities.QUANTITIES` is asked for. Each provided one is checked
for what the contract fixes without a reference: its shape (the contract's shape string
evaluated on the spec and the crystal), its number class and precision (no silent
down-cast), where it may be NaN or infinite, and the conventions that are properties of
the value itself (a lower-triangular ``Linv``, Hermitian ``K`` and ``D``, the grid's h-slowest
order, ...). Whether the numbers agree with the reference is ``parity run``'s question.

Statuses: ``ok``; ``missing`` (not in ``provides()``, or the backend raised NotProvided:
fine, the stages reading it will be not comparable); ``wrong`` (a contract violation,
listed); ``error`` (the backend raised something else).
"""
from __future__ import annotations

import math
import re
import time
from dataclasses import dataclass, field
from typing import Any, Mapping

import numpy as np

from eryx import structure

from parity.backends import Backend, NotProvided, resolve_backend
from parity.contract.quantities import QUANTITIES, Quantity
from parity.contract.spec import make_spec
from parity.contract.tiers import resolve_tier

#: Precision every real / complex quantity must have in a run of each dtype.
_REAL = {"float64": (np.float64,), "float32": (np.float32,)}
_COMPLEX = {"float64": (np.complex128,), "float32": (np.complex64,)}
#: May be wider than a float32 run: the gemmi oracle's F and the spring-constant gradients
#: (scalars a backend may accumulate in float64). Every other quantity has the run's precision.
_ANY_PRECISION = frozenset({"F_hkl", "grad_gamma_inter", "grad_gamma_intra"})
#: Quantities that may hold NaN, and where (checked by :func:`_finiteness`).
_MAPS = ("Id", "Id_data_adp", "Id_qvectors", "mode_maps")


@dataclass
class QuantityCheck:
    """The verdict on one quantity: status ('ok', 'missing', 'wrong', 'error') and the problems."""

    name: str
    status: str
    problems: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def to_dict(self) -> dict:
        return {"name": self.name, "status": self.status, "problems": list(self.problems),
                "seconds": round(self.seconds, 4)}


@dataclass
class ContractReport:
    """Every quantity's check, plus a construction failure if there was one."""

    backend: str
    fixture: str
    dtype: str
    checks: list[QuantityCheck] = field(default_factory=list)
    build_error: str | None = None
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        """True when the backend built and nothing it provides is wrong or raised."""
        return self.build_error is None and all(c.status in ("ok", "missing") for c in self.checks)

    def by_status(self, status: str) -> list[QuantityCheck]:
        return [c for c in self.checks if c.status == status]

    def to_dict(self) -> dict:
        return {"backend": self.backend, "fixture": self.fixture, "dtype": self.dtype, "ok": self.ok,
                "build_error": self.build_error, "seconds": round(self.seconds, 3),
                "checks": [c.to_dict() for c in self.checks]}


# ------------------------------------------------------------------ shapes
def shape_symbols(spec, n_asu: int, n_at: int) -> dict[str, int]:
    """The values of the contract's shape symbols for one spec and crystal."""
    L_h, L_k, L_l = spec.oversampling
    return {"n_q": spec.n_q, "n_s": len(spec.q_sample), "n_g": len(spec.grad_q_sample),
            "n_hkl": len(spec.oracle_hkl), "L_h": L_h, "L_k": L_k, "L_l": L_l, "n_bz": spec.n_bz,
            "n_asu": n_asu, "n_at": n_at, "n_dof": 6 * n_asu}


def expected_shape(shape: str, symbols: Mapping[str, int]) -> tuple[int, ...] | None:
    """The contract's shape string (``"(n_asu, 3 n_at, 6)"``) as integers; None for non-arrays.

    A term of several factors separated by spaces is their product (``3 n_at``).
    """
    text = shape.strip()
    if not (text.startswith("(") and text.endswith(")")):
        return None
    out = []
    for term in (t.strip() for t in text[1:-1].split(",")):
        if not term:
            continue
        out.append(math.prod(int(f) if re.fullmatch(r"\d+", f) else symbols[f] for f in term.split()))
    return tuple(out)


# ------------------------------------------------------------------ values
def as_array(value: Any) -> Any:
    """A torch tensor as a NumPy array (detached, on the CPU); anything else unchanged."""
    if type(value).__module__.startswith("torch"):
        return value.detach().cpu().numpy()
    return value


def _dtype_problem(q: Quantity, arr: np.ndarray, run_dtype: str) -> str | None:
    kind = arr.dtype
    if q.name in _ANY_PRECISION:
        run_dtype = "float64" if kind in (np.float64, np.complex128) else run_dtype
    if q.dtype == "real":
        if np.issubdtype(kind, np.complexfloating):
            return f"dtype {kind}: the contract says real (return the real part only where it is exactly real)"
        if kind.type not in _REAL[run_dtype]:
            return f"dtype {kind}: a {run_dtype} run needs {' or '.join(t.__name__ for t in _REAL[run_dtype])}"
    elif q.dtype == "complex":
        if kind.type not in _COMPLEX[run_dtype]:
            return f"dtype {kind}: a {run_dtype} run needs {' or '.join(t.__name__ for t in _COMPLEX[run_dtype])}"
    elif q.dtype == "int" and not np.issubdtype(kind, np.integer):
        return f"dtype {kind}: the contract says an integer"
    elif q.dtype == "bool" and kind != np.bool_:
        return f"dtype {kind}: the contract says bool"
    return None


def _finiteness(name: str, arr: np.ndarray, spec, values: Mapping[str, Any]) -> str | None:
    """Where the contract allows NaN/inf in ``name``, and that nothing else has any."""
    if not (np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.complexfloating)):
        return None
    finite = np.isfinite(arr)
    if name in _MAPS:
        bragg = ~spec.bragg_free
        rows = finite.reshape(spec.n_q, -1)
        if name != "mode_maps" and rows[bragg].any():
            return "finite at a Bragg point (k = 0): the contract says NaN there"
        inside = spec.bragg_free.copy()
        mask = values.get("res_mask")
        if mask is not None:
            inside &= np.asarray(mask, dtype=bool).reshape(-1)
        elif spec.params.get("res_limit", 0.0) > 0:
            return None
        bad = np.flatnonzero(inside & ~rows.all(axis=1))
        return f"NaN/inf at {bad.size} grid point(s) off k = 0 inside res_mask (first: {bad[0]})" if bad.size else None
    if name == "Id_q_sample":
        bad = np.flatnonzero(~finite & spec.bragg_free[spec.q_sample])
        return f"NaN/inf at {bad.size} sample point(s) off k = 0 (first: {bad[0]})" if bad.size else None
    if name == "Winv":
        flat = arr.reshape(-1, arr.shape[-1])
        # zero modes first: once finite along the mode axis, finite to the end
        if np.any(np.diff(finite.reshape(flat.shape).astype(np.int8), axis=1) < 0):
            return "a NaN after a finite mode: zero modes (NaN) must come first, w ascending"
        return None
    if name == "d_spacing":
        return "NaN or -inf in d_spacing (only +inf, at the origin, is allowed)" if np.any(
            np.isnan(arr) | (arr == -np.inf)) else None
    if not finite.all():
        return f"{int((~finite).sum())} NaN/inf element(s): the contract allows none in {name}"
    return None


def _relative(x: np.ndarray) -> float:
    return float(np.max(np.abs(x))) if x.size else 0.0


def _convention(name: str, arr: np.ndarray, spec, crystal) -> str | None:
    """Conventions the value alone decides (index order, triangularity, symmetry)."""
    def small(x: np.ndarray, of: np.ndarray, tier: str) -> bool:
        # judged normwise against the value's own scale, with the stage's tier in this precision
        t = resolve_tier(tier, spec.dtype, stage=name)
        return _relative(x) <= (t.atol + t.rtol) * max(_relative(of), 1.0)

    if name == "map_shape" and tuple(int(v) for v in arr) != tuple(spec.map_shape):
        return f"{tuple(int(v) for v in arr)} but the spec's grid is {tuple(spec.map_shape)}"
    if name == "n_asu" and int(arr) != crystal.xyz.shape[0]:
        return f"{int(arr)} but the crystal has {crystal.xyz.shape[0]} ASUs"
    if name == "hkl_grid":
        axes = [np.linspace(lo, hi, int(L * (hi - lo) + 1)) for lo, hi, L in spec.samplings]
        want = np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1).reshape(-1, 3)
        if not small(arr - want, want, "tight"):
            return "not the spec's grid in C order (h slowest, l fastest)"
    if name == "bz_index" and (arr.min() < 0 or arr.max() >= spec.n_bz):
        return f"values outside [0, n_bz = {spec.n_bz})"
    if name == "Linv" and not small(np.triu(arr, 1), arr, "decomposition"):
        return "not lower triangular: Linv is the inverse of the LOWER Cholesky factor of Mmat (a transpose?)"
    if name == "Mmat":
        m = arr.reshape(6 * arr.shape[0], -1)
        if not small(m - m.T, m, "tight"):
            return "not symmetric"
    if name in ("K", "D"):
        if not small(arr - np.conj(np.swapaxes(arr, -1, -2)), arr, "tight"):
            return "not Hermitian at every BZ point (a missing conjugate or transpose?)"
    if name == "masses" and np.any(arr <= 0):
        return "non-positive masses"
    return None


def check_value(q: Quantity, value: Any, spec, crystal, symbols: Mapping[str, int],
                values: Mapping[str, Any]) -> list[str]:
    """Contract violations of one quantity's value (empty when it conforms)."""
    if q.dtype == "text":
        if not isinstance(value, Mapping):
            return [f"a {type(value).__name__}: the contract says a dict {{name: dtype string}}"]
        return [f"entry {k!r}: value {v!r} is not a dtype name" for k, v in value.items() if not isinstance(v, str)]
    arr = np.asarray(as_array(value))
    problems = []
    want = expected_shape(q.shape, symbols)
    if want is not None and arr.shape != want:
        problems.append(f"shape {arr.shape}, the contract says {q.shape} = {want}")
    dtype = _dtype_problem(q, arr, spec.dtype)
    if dtype:
        problems.append(dtype)
    if problems:  # the rest reads the value in the contract's layout
        return problems
    for check in (_finiteness(q.name, arr, spec, values), _convention(q.name, arr, spec, crystal)):
        if check:
            problems.append(check)
    return problems


# ------------------------------------------------------------------ the self-test
def check_backend(backend: str | Backend, *, fixture: str = "synthetic", dtype: str = "float64",
                  device: str = "cpu", path: str | None = None, python: str | None = None,
                  options: Mapping[str, Any] | None = None) -> ContractReport:
    """Build ``backend`` on ``fixture`` and check every quantity it provides against the contract.

    Parameters
    ----------
    backend : str or Backend
        A registered name, ``module:callable``, or an instance.
    fixture, dtype, device : str
        The run's spec (the fixture's default grid).

    Returns
    -------
    ContractReport
        ``.ok`` is False when construction failed or a provided quantity violates the
        contract. Usage errors (unknown backend, bad option) raise EryxInputError.
    """
    t0 = time.perf_counter()
    spec = make_spec(fixture, device=device, dtype=dtype)
    b = resolve_backend(backend, path, python, dict(options or {}), "check")
    report = ContractReport(backend=b.name or str(backend), fixture=fixture, dtype=dtype)
    crystal = structure.load_crystal(spec.pdb_path, spec.params.get("expand_p1", True))
    symbols = shape_symbols(spec, crystal.xyz.shape[0], crystal.xyz.shape[1])
    try:
        session = b.open(spec).build()
    except Exception as exc:  # a broken open() is the backend's failure, reported, not a traceback
        report.build_error = f"open() raised {type(exc).__name__}: {exc}"
        report.seconds = time.perf_counter() - t0
        return report
    if session.build_error is not None:
        report.build_error = str(session.build_error)
    declared = b.provides()
    values: dict[str, Any] = {}
    try:
        for q in QUANTITIES:
            report.checks.append(_check_one(session, q, q.name in declared, spec, crystal, symbols, values))
    finally:
        session.close()
    report.seconds = time.perf_counter() - t0
    return report


def _check_one(session, q: Quantity, declared: bool, spec, crystal, symbols, values: dict) -> QuantityCheck:
    t0 = time.perf_counter()
    if not declared:
        return QuantityCheck(q.name, "missing", ["not in provides()"])
    try:
        value = session.get(q.name)
    except NotProvided as exc:
        return QuantityCheck(q.name, "missing", [f"declared in provides(), but NotProvided: {exc}"],
                             time.perf_counter() - t0)
    except Exception as exc:
        return QuantityCheck(q.name, "error", [f"raised {type(exc).__name__}: {exc}"], time.perf_counter() - t0)
    values[q.name] = as_array(value)
    problems = check_value(q, value, spec, crystal, symbols, values)
    return QuantityCheck(q.name, "wrong" if problems else "ok", problems, time.perf_counter() - t0)


def format_report(report: ContractReport) -> str:
    """The terminal text of ``parity backends --check``."""
    head = f"contract check of backend {report.backend!r} on {report.fixture} ({report.dtype}), " \
           f"{report.seconds:.1f} s"
    lines = [head]
    if report.build_error:
        lines.append(f"  construction failed: {report.build_error}")
    for c in report.checks:
        if c.status in ("wrong", "error"):
            lines.append(f"  {c.status.upper():<7} {c.name}: {'; '.join(c.problems)}")
    ok = report.by_status("ok")
    missing = report.by_status("missing")
    lines.append(f"  ok      {len(ok)}: {', '.join(c.name for c in ok) or '-'}")
    lines.append(f"  missing {len(missing)} (not provided; their stages will be not comparable): "
                 f"{', '.join(c.name for c in missing) or '-'}")
    bad = len(report.by_status("wrong")) + len(report.by_status("error")) + bool(report.build_error)
    lines.append("CONTRACT OK" if report.ok else f"CONTRACT VIOLATED: {bad} problem(s) above")
    return "\n".join(lines)
