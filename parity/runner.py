"""Running the stages: build both backends once, compare stage by stage, assemble
the JSON result (schema in docs/architecture.md).
"""
from __future__ import annotations

import copy
import datetime as _dt
import platform
import socket
import subprocess
import time
import traceback
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np
import torch

from eryx import models as npm
from eryx.errors import EryxInputError, MemoryBudgetError
from eryx.fixtures import resolve_fixture
from eryx.validation import check_common, check_sampling

from . import compare as cmp
from .stages import Stage, _np, _ref_bz_index, _real_checked, _ref_K, _t
from .tiers import resolve_tier

SCHEMA_VERSION = 1
#: Grids used when the caller names none (the goldens' grids where they exist).
DEFAULT_GRIDS: dict[str, tuple[tuple[int, int, int], ...]] = {
    "5zck_p1": ((-2, 2, 2), (-2, 2, 2), (-2, 2, 2)),
    "7n2h": ((-3, 3, 2), (-3, 3, 2), (-1, 1, 2)),
    "193l": ((-10, 10, 2), (-10, 10, 2), (-6, 6, 2)),
}
FALLBACK_GRID = ((-2, 2, 2), (-2, 2, 2), (-2, 2, 2))
DEFAULT_PARAMS = {"gnm_cutoff": 4.0, "gamma_intra": 1.0, "gamma_inter": 1.0, "res_limit": 0.0, "expand_p1": True}
#: Points of the fixed q sample used by the structure-factor stages.
Q_SAMPLE_SIZE = 512
#: Integer reflections compared with gemmi.
GEMMI_SAMPLE_SIZE = 200
SLICE_MAX = 128


def default_grid(fixture: str) -> tuple[tuple[int, int, int], ...]:
    return DEFAULT_GRIDS.get(Path(str(fixture)).stem, FALLBACK_GRID)


# ------------------------------------------------------------------- context
@dataclass
class RunContext:
    """Everything one parity run needs, built lazily and cached."""

    fixture: str
    pdb_path: str
    samplings: tuple[tuple[int, int, int], ...]
    params: dict
    device: str = "cpu"
    dtype: str = "float64"
    tier_overrides: dict = field(default_factory=dict)
    fault: str | None = None
    _cache: dict = field(default_factory=dict)
    timings: dict = field(default_factory=dict)

    @property
    def torch_dtype(self) -> torch.dtype:
        return {"float64": torch.float64, "float32": torch.float32}[self.dtype]

    @property
    def model_params(self) -> dict:
        return dict(self.params)

    def cached(self, key: str, fn: Callable[[], Any]) -> Any:
        if key not in self._cache:
            self._cache[key] = fn()
        return self._cache[key]

    # -- the two backends
    @property
    def ref(self) -> npm.OnePhonon:
        def build():
            t0 = time.perf_counter()
            try:
                return npm.OnePhonon(self.pdb_path, *self.samplings, **self.params)
            finally:
                self.timings["setup_reference"] = time.perf_counter() - t0

        return self.cached("ref", build)

    def reference_unavailable(self) -> str | None:
        """Why the dense reference cannot run here (None when it can)."""
        try:
            self.ref
        except MemoryBudgetError as exc:
            return f"the dense NumPy reference does not fit: {exc}"
        return None

    @property
    def cand(self):
        from eryx.models_torch import OnePhonon

        def build():
            t0 = time.perf_counter()
            try:
                return OnePhonon(self.pdb_path, *self.samplings, device=self.device,
                                 dtype=self.torch_dtype, **self.params)
            finally:
                self.timings["setup_torch"] = time.perf_counter() - t0

        return self.cached("cand", build)

    @property
    def q_sample(self) -> np.ndarray:
        """A fixed, evenly spread sample of grid indices (for F and form factors)."""
        n_q = int(np.prod([int(L * (hi - lo) + 1) for lo, hi, L in self.samplings]))
        return np.unique(np.linspace(0, n_q - 1, min(n_q, Q_SAMPLE_SIZE)).round().astype(np.int64))

    # -- composite quantities
    def qvector_map(self) -> np.ndarray:
        """The torch map in arbitrary-q mode, evaluated at the grid's own q."""
        from eryx.models_torch import OnePhonon

        c = self.cand
        m = OnePhonon(self.pdb_path, *self.samplings, device=self.device, dtype=self.torch_dtype,
                      q_vectors=c.q_grid, **self.params)
        return _np(m.apply_disorder())

    def crossfeed_map(self, **kwargs) -> torch.Tensor:
        """The torch map assembly fed with the reference's F inputs and phonons."""
        return self.crossfeed_model().apply_disorder(**kwargs)

    def crossfeed_model(self):
        """A copy of the torch model whose inputs to the map stage are the reference's."""
        return self.cached("crossfeed_model", self._build_crossfeed_model)

    def _build_crossfeed_model(self):
        r, c = self.ref, self.cand
        m = copy.copy(c)
        m.ADP, m.Amat, m.xyz = _t(self, r.ADP), _t(self, r.Amat), _t(self, r.xyz)
        m.q_grid, m.res_mask = _t(self, r.q_grid), torch.as_tensor(r.res_mask, device=c.device)
        m.bz_index = torch.as_tensor(_ref_bz_index(self), device=c.device)
        m._K_all = _t(self, _ref_K(self))
        m._Winv_all = _t(self, _real_checked(r.Winv).reshape(-1, r.n_dof))
        m._V_all = _t(self, r.V.reshape(-1, r.n_dof, r.n_dof))
        return m

    def gemmi_oracle(self) -> tuple[np.ndarray, np.ndarray]:
        """(NumPy, gemmi) structure factors at integer hkl of the grid, B = 0, no projection.

        Needs only the crystal and the grid, not the dense reference model (the stage is
        ``needs_dense=False``: it must run where the dense reference does not fit).
        """
        def build():
            from eryx import structure

            crystal = structure.load_crystal(self.pdb_path, self.params.get("expand_p1", True))
            hkl, _ = npm.generate_grid([check_sampling(s, a) for s, a in zip(self.samplings, "hkl")])
            return _gemmi_oracle(crystal, hkl)

        return self.cached("gemmi", build)

    # -- locating elements
    def locator(self, kind: str | None) -> Callable[[tuple[int, ...]], str] | None:
        if kind == "grid":
            hkl = self.cached("hkl_np", lambda: _np(self.cand.hkl_grid))
            return lambda idx: "(h,k,l)=({:g},{:g},{:g})".format(*hkl[idx[0]])
        if kind == "bz":
            return lambda idx: "BZ (dh,dk,dl)=({},{},{})".format(*idx[:3])
        if kind == "bz_flat":
            L = tuple(s[2] for s in self.samplings)
            return lambda idx: "BZ (dh,dk,dl)=({},{},{})".format(*np.unravel_index(idx[0], L))
        return None


_LOW_ORDER = np.array([(1, 0, 0), (0, 1, 0), (0, 0, 1), (1, 1, 0), (1, 0, 1), (0, 1, 1), (1, 1, 1)], dtype=float)


def _gemmi_oracle(c, hkl_grid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    import gemmi

    st = gemmi.Structure()
    st.cell = gemmi.UnitCell(*c.cell)
    st.spacegroup_hm = "P 1"
    model, chain, res = gemmi.Model("1"), gemmi.Chain("A"), gemmi.Residue()
    res.name, res.seqid = "UNK", gemmi.SeqId(1, " ")
    for pos, el in zip(c.xyz.reshape(-1, 3), c.elements * c.n_asu):
        atom = gemmi.Atom()
        atom.pos, atom.element, atom.b_iso, atom.occ, atom.name = gemmi.Position(*pos), gemmi.Element(el), 0.0, 1.0, el
        res.add_atom(atom)
    chain.add_residue(res)
    model.add_chain(chain)
    st.add_model(model)
    st.setup_cell_images()
    hkl = np.unique(np.round(hkl_grid[np.all(hkl_grid == np.round(hkl_grid), axis=1)]), axis=0)
    hkl = hkl[np.any(hkl != 0, axis=1)]
    hkl = hkl[np.unique(np.linspace(0, len(hkl) - 1, min(len(hkl), GEMMI_SAMPLE_SIZE)).round().astype(int))]
    # Plus the lowest-order reflections: the tier's yardstick is max|F|, and gemmi's single-precision
    # error scales with the strong reflections' size, so a grid holding only a few weak ones
    # (e.g. h,k,l in [1, 2]) would otherwise judge it against a far too small scale.
    hkl = np.unique(np.concatenate([hkl, _LOW_ORDER]), axis=0)
    calc = gemmi.StructureFactorCalculatorX(st.cell)
    theirs = np.array([calc.calculate_sf_from_model(st[0], [int(v) for v in h]) for h in hkl], dtype=complex)
    q = npm.q_from_hkl(hkl, c.A_inv)
    ours = npm.structure_factors(q, c.xyz.reshape(-1, 3), c.ff_a.reshape(-1, 4), c.ff_b.reshape(-1, 4),
                                 c.ff_c.reshape(-1)).sum(axis=1)
    return ours, theirs


# -------------------------------------------------------------- one stage
def _status(comparison) -> str:
    return "pass" if comparison.passed else "fail"


def compare_stage(stage: Stage, ctx: RunContext, candidate: Any = None) -> cmp.Comparison:
    """Compare one stage (``candidate`` overrides the torch value, e.g. cross-fed)."""
    tier = resolve_tier(stage.tier, ctx.dtype, ctx.tier_overrides)
    locate = ctx.locator(stage.locate)
    if stage.kind == "invariant":
        return stage.candidate(ctx)
    if stage.kind == "dtype":
        want_r, want_c = ("float64", "complex128") if ctx.dtype == "float64" else ("float32", "complex64")
        return cmp.audit_dtypes(_torch_tensors(ctx.cand), want_r, want_c)
    actual = stage.candidate(ctx) if candidate is None else candidate
    expected = stage.reference(ctx)
    if stage.kind == "eigenspace":
        (av, aV), (ev, eV) = actual, expected
        extra = {}
        if candidate is None:
            extra = dict(matrix=_np(ctx.cand.D), unitary=_np(ctx.cand.U))
        # float32 eigenvalues cannot resolve a relative gap of 1e-6: cluster coarser there
        # (a larger cluster's projector is still basis-independent).
        rel_gap = 1e-6 if ctx.dtype == "float64" else 1e-3
        return cmp.compare_eigenspaces(_np(av), _np(aV), _np(ev), _np(eV), tier, locate=locate,
                                       name=stage.name, rel_gap=rel_gap, **extra)
    return cmp.compare_arrays(_np(actual), _np(expected), tier, name=stage.name, locate=locate)


def _torch_tensors(model) -> dict[str, torch.Tensor]:
    """Every tensor attribute of the torch model (its intermediates)."""
    return {k: v for k, v in vars(model).items() if isinstance(v, torch.Tensor)}


def _slice_details(ctx: RunContext, actual: np.ndarray, expected: np.ndarray, worst: dict | None) -> dict | None:
    """A 2-D slice of a grid map through its worst point (for the report)."""
    shape = tuple(int(L * (hi - lo) + 1) for lo, hi, L in ctx.samplings)
    if actual.shape != expected.shape or actual.ndim != 1 or actual.size != int(np.prod(shape)):
        return None
    if worst and worst.get("index"):
        point = np.unravel_index(int(worst["index"][0]), shape)
    else:
        point = tuple(n // 2 for n in shape)
    fixed = int(np.argmin(shape))  # keep the two largest axes in the picture
    axes = [a for a in range(3) if a != fixed]
    names = "hkl"
    take = [slice(None)] * 3
    take[fixed] = point[fixed]
    a3, e3 = actual.reshape(shape)[tuple(take)], expected.reshape(shape)[tuple(take)]
    steps = [max(1, -(-shape[a] // SLICE_MAX)) for a in axes]
    a3, e3 = a3[::steps[0], ::steps[1]], e3[::steps[0], ::steps[1]]
    lo = [ctx.samplings[a][0] for a in axes]
    hi = [lo[i] + (a3.shape[i] - 1) * steps[i] / ctx.samplings[axes[i]][2] for i in range(2)]
    fixed_value = ctx.samplings[fixed][0] + point[fixed] / ctx.samplings[fixed][2]
    tolist = lambda x: [[None if not np.isfinite(v) else float(v) for v in row] for row in x.T]
    return {
        "title": f"{names[fixed]} = {fixed_value:g} through the worst point",
        "xlabel": names[axes[0]], "ylabel": names[axes[1]],
        "extent": [lo[0], hi[0], lo[1], hi[1]],
        "worst_xy": [lo[0] + point[axes[0]] / ctx.samplings[axes[0]][2], lo[1] + point[axes[1]] / ctx.samplings[axes[1]][2]],
        "expected": tolist(np.real(e3)), "actual": tolist(np.real(a3)),
    }


def run_stage(stage: Stage, ctx: RunContext) -> dict:
    """Run and compare one stage; never raises (errors become status 'error')."""
    tier = resolve_tier(stage.tier, ctx.dtype, ctx.tier_overrides)
    record = {"name": stage.name, "phase": stage.phase, "tier": tier.name, "kind": stage.kind,
              "rtol": tier.rtol, "atol": tier.atol, "description": stage.description,
              "max_abs": None, "max_rel": None, "n_mismatch": 0, "n_total": 0, "worst": None,
              "details": {}}
    t0 = time.perf_counter()
    try:
        reason = ctx.reference_unavailable() if stage.needs_dense else None
        if reason:
            record.update(status="not_comparable", message=reason)
        else:
            actual = None
            if stage.kind in ("array", "exact") and stage.locate == "grid":
                actual = _np(stage.candidate(ctx))
            result = compare_stage(stage, ctx, actual)
            record.update(status=_status(result), **{k: v for k, v in result.to_dict().items()
                                                      if k in ("max_abs", "max_rel", "n_mismatch", "n_total",
                                                               "worst", "message", "details")})
            scale = record["details"].get("scale") if isinstance(record["details"], dict) else None
            if record["max_abs"] is not None and scale:
                # Report the error relative to the array's magnitude (the tiers' own
                # yardstick); element-wise relative errors explode at entries near zero.
                record["details"]["max_rel_elementwise"] = record["max_rel"]
                record["max_rel"] = record["max_abs"] / scale
            if not result.passed and actual is not None:
                sl = _slice_details(ctx, actual, _np(stage.reference(ctx)), result.worst)
                if sl:
                    record["details"]["slice"] = sl
    except EryxInputError:
        raise  # bad input is not a divergence: the whole run is refused (CLI exit 2)
    except Exception as exc:  # a crashing stage is a divergence, reported, not fatal
        record.update(status="error", message=f"{type(exc).__name__}: {exc}",
                      details={"traceback": traceback.format_exc(limit=8)})
    record["passed"] = record["status"] == "pass"
    record["duration_s"] = time.perf_counter() - t0
    return record


# ------------------------------------------------------------------ a run
def make_context(
    fixture: str, *, samplings: Sequence[Sequence[int]] | None = None, params: dict | None = None,
    device: str = "cpu", dtype: str = "float64", tier_overrides: dict | None = None,
    fixtures_dir: str | None = None, fault: str | None = None,
) -> RunContext:
    """Resolve the fixture and validate the options (raises EryxInputError)."""
    pdb = resolve_fixture(fixture, fixtures_dir)
    samplings = samplings or default_grid(fixture)
    if len(samplings) != 3:
        raise EryxInputError(f"samplings must give three (min, max, oversampling) triples (h, k, l), got {samplings!r}")
    grid = tuple(check_sampling(s, a).as_tuple() for s, a in zip(samplings, "hkl"))
    if dtype not in ("float64", "float32"):
        raise EryxInputError(f"unsupported dtype {dtype!r}: use float64 or float32")
    for name in tier_overrides or {}:  # fail here, not in the middle of the run (run_stage never raises)
        try:
            resolve_tier(name, "float64", tier_overrides)
        except (KeyError, ValueError) as exc:
            raise EryxInputError(f"tier_overrides: {exc.args[0] if exc.args else exc}") from None
    from eryx.models_torch import resolve_device

    resolve_device(device)
    merged = {**DEFAULT_PARAMS, **(params or {})}
    unknown = set(merged) - set(DEFAULT_PARAMS)
    if unknown:
        raise EryxInputError(f"unknown model parameter(s): {', '.join(sorted(unknown))}")
    # Bad values fail here in one line, not as an error in every stage.
    check_common(*grid, res_limit=merged["res_limit"], gnm_cutoff=merged["gnm_cutoff"],
                 gamma_intra=merged["gamma_intra"], gamma_inter=merged["gamma_inter"], group_by="asu", model="gnm")
    if fault is not None:
        from .faults import get_fault

        try:
            get_fault(fault)
        except KeyError as exc:
            raise EryxInputError(exc.args[0]) from None
    return RunContext(fixture=str(fixture), pdb_path=str(pdb), samplings=grid, params=merged,
                      device=device, dtype=dtype, tier_overrides=tier_overrides or {}, fault=fault)


def run_stages(ctx: RunContext, stages: Iterable[Stage], *, progress: bool | None = None,
               on_result: Callable[[dict], None] | None = None) -> list[dict]:
    """Run stages in order (with a progress bar on a terminal)."""
    from tqdm.auto import tqdm

    from .faults import inject

    stages = list(stages)
    out = []
    with inject(ctx.fault):
        bar = tqdm(stages, desc=f"parity {ctx.fixture}", unit="stage", disable=(None if progress is None else not progress),
                   leave=False)
        for stage in bar:
            bar.set_postfix_str(stage.id)
            rec = run_stage(stage, ctx)
            out.append(rec)
            if on_result:
                on_result(rec)
    return out


def environment() -> dict:
    """Library versions, git commit and machine, for the result's identity."""
    import gemmi
    import scipy

    return {
        "python": platform.python_version(), "numpy": np.__version__, "scipy": scipy.__version__,
        "torch": torch.__version__, "gemmi": gemmi.__version__, "git_commit": git_commit(),
        "hostname": socket.gethostname(), "platform": platform.platform(),
    }


def git_commit() -> str | None:
    """HEAD of the repository holding this package, if it is one."""
    here = Path(__file__).resolve().parent
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def device_name(device: str) -> str:
    dev = torch.device(device)
    if dev.type == "cuda":
        return torch.cuda.get_device_name(dev)
    return f"CPU ({platform.machine()}, {torch.get_num_threads()} threads)"


def assemble_result(ctx: RunContext, stages: list[dict], *, started_at: str, duration_s: float) -> dict:
    """The JSON result of a run (schema_version 1)."""
    phase_timings: dict[str, float] = {}
    for rec in stages:
        key = str(rec["phase"])
        phase_timings[key] = phase_timings.get(key, 0.0) + rec["duration_s"]
    phase_timings.update({k: v for k, v in ctx.timings.items()})
    failed = [r for r in stages if r["status"] in ("fail", "error")]
    return {
        "schema_version": SCHEMA_VERSION,
        "run_uuid": str(uuid.uuid4()),
        "fixture": ctx.fixture,
        "pdb_path": ctx.pdb_path,
        "grid": dict(zip(("hsampling", "ksampling", "lsampling"), [list(s) for s in ctx.samplings])),
        "params": ctx.params,
        "device": ctx.device,
        "device_name": device_name(ctx.device),
        "dtype": ctx.dtype,
        "passed": not failed,
        "first_failure": failed[0]["name"] if failed else None,
        "fault": ctx.fault,
        "started_at": started_at,
        "duration_s": duration_s,
        "environment": environment(),
        "phase_timings": phase_timings,
        "stages": stages,
    }


def execute(ctx: RunContext, stages: Iterable[Stage], *, progress: bool | None = None,
            on_result=None) -> dict:
    """Run ``stages`` on a prepared context and return the JSON-ready result."""
    started = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    t0 = time.perf_counter()
    records = run_stages(ctx, stages, progress=progress, on_result=on_result)
    return assemble_result(ctx, records, started_at=started, duration_s=time.perf_counter() - t0)


def run_parity(fixture: str, *, phases: Sequence[int] | None = None, stage_names: Sequence[str] | None = None,
               progress: bool | None = None, on_result=None, **options) -> dict:
    """Run the harness on one fixture and return the JSON-ready result.

    ``options`` go to :func:`make_context` (samplings, params, device, dtype,
    tier_overrides, fixtures_dir, fault).
    """
    from .stages import select

    ctx = make_context(fixture, **options)
    return execute(ctx, select(phases, stage_names), progress=progress, on_result=on_result)
