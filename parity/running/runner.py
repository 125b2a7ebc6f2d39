"""Running the stages: two backend sessions, one comparison per stage, one JSON result.

:func:`make_run` resolves the spec and the two backends (any two: the project's NumPy
reference and torch port by default, a stored dump, the public implementations, a user's
own) and builds both sessions; :func:`execute` compares the selected stages and assembles
the result (schema in docs/architecture.md). Nothing here knows which backend is which:
everything goes through :mod:`parity.backends`.

Verdicts, per stage: ``pass`` (something was compared and agreed), ``fail`` (it was
compared and differs), ``error`` (a backend or the harness raised: a divergence),
``not_comparable`` (a side does not provide the quantity, or nothing finite was there to
compare; the reason is given). A run passes when no stage fails or errors and every
selected end-to-end map stage was compared; a run whose map stages compared nothing is
``incomplete``.
"""
from __future__ import annotations

import datetime as _dt
import sys
import time
import traceback
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np
from tqdm.auto import tqdm

from eryx.errors import EryxInputError, MemoryBudgetError

from parity.backends import Backend, BackendError, NotProvided, Session, get_backend
from parity.backends import resolve_backend as _backend  # the old private name, still imported by the commands
from parity.comparison import engine as cmp
from parity.comparison.comparator import Setting
from parity.contract.provenance import device_name, environment, git_commit  # noqa: F401 (re-exported)
from parity.contract.spec import DEFAULT_PARAMS, RunSpec, default_grid, make_spec  # noqa: F401 (re-exported)
from parity.stages import STAGE_NAMES, STAGES, Stage, get_stage, select
from parity.contract.tiers import ActiveOverrides, resolve_tier, validate_overrides
from parity.diagnosis import signatures as dg
from parity.running.causes import annotate, first_failure
from parity.contract.results import CONSTRUCTION, DIVERGING, SCHEMA_VERSION, Status, Verdict, run_result, stage_record

#: Figures of divergence signatures are drawn for at most this many failing stages per run
#: (the first ones: the root of a divergence comes first in phase order).
DIAGNOSIS_FIGURES = 3
#: CPU seconds the diagnosis may spend on one failing stage (parity.diagnosis.signatures).
DIAGNOSIS_BUDGET_S = 0.05
SLICE_MAX = 128
DEFAULT_REFERENCE, DEFAULT_CANDIDATE = "numpy", "torch"


class SideError(Exception):
    """A backend raised while computing a quantity (a divergence, unless it is the reference refusing input)."""

    def __init__(self, side: str, quantity: str, error: BaseException, session: Session) -> None:
        self.side, self.quantity, self.error, self.session = side, quantity, error, session
        super().__init__(f"{side} ({session.backend.name}) raised computing {quantity}: "
                         f"{type(error).__name__}: {error}")


# ------------------------------------------------------------------- the run
@dataclass
class Run:
    """One comparison: a spec, two built sessions, the tiers, cached NumPy values."""

    spec: RunSpec
    #: Each side's backend (what it is) and its session (what it computed for this spec).
    reference: Backend
    candidate: Backend
    reference_session: Session
    candidate_session: Session
    tier_overrides: dict = field(default_factory=dict)
    timings: dict = field(default_factory=dict)
    #: Draw figures of divergence signatures (for an HTML report; matplotlib costs time).
    figures: bool = False
    #: The overrides in force and their sources (parity.contract.tiers.ActiveOverrides), for the result.
    overrides: Any = None
    _values: dict = field(default_factory=dict)

    # -- the names before 0.2 (``run.ref`` was a Session while ``run.reference`` is a Backend)
    @property
    def ref(self) -> Session:
        """Deprecated: :attr:`reference_session`."""
        warnings.warn("Run.ref is deprecated: use Run.reference_session", DeprecationWarning, stacklevel=2)
        return self.reference_session

    @property
    def cand(self) -> Session:
        """Deprecated: :attr:`candidate_session`."""
        warnings.warn("Run.cand is deprecated: use Run.candidate_session", DeprecationWarning, stacklevel=2)
        return self.candidate_session

    # -- identity shortcuts used by reports and tests
    @property
    def fixture(self) -> str:
        return self.spec.fixture

    @property
    def dtype(self) -> str:
        return self.spec.dtype

    @property
    def device(self) -> str:
        return self.spec.device

    @property
    def samplings(self):
        return self.spec.samplings

    def session(self, side: str) -> Session:
        return self.reference_session if side == "reference" else self.candidate_session

    def value(self, side: str, name: str) -> Any:
        """Quantity ``name`` of ``side`` as NumPy (cached); NotProvided or SideError when unavailable."""
        key = (side, name)
        if key not in self._values:
            session = self.session(side)
            try:
                raw = session.get(name)
            except NotProvided as exc:
                raise NotProvided(f"the {side} ({session.backend.name}) does not provide {name}: {exc}") from None
            except Exception as exc:
                raise SideError(side, name, exc, session) from exc
            self._values[key] = raw if isinstance(raw, Mapping) else np.asarray(cmp.as_numpy(raw))
        return self._values[key]

    def reference_value(self, name: str) -> Any:
        return self.value("reference", name)

    def cached(self, key: str, compute: Callable[[], Any]) -> Any:
        """``compute()`` once per run under ``key``: a harness-side value (e.g. the contact network)."""
        slot = ("harness", key)
        if slot not in self._values:
            self._values[slot] = compute()
        return self._values[slot]

    def candidate_value(self, name: str) -> Any:
        return self.value("candidate", name)

    def stage_value(self, stage: Stage, side: str, raw: Any = None) -> Any:
        """The stage's compared value on ``side`` (``raw`` overrides the quantity, e.g. cross-fed)."""
        if raw is None:
            raw = self.value(side, stage.quantity if side == "candidate" else stage.reference_quantity)
        raw = np.asarray(cmp.as_numpy(raw))
        return stage.derive(self, side, raw) if stage.derive else raw

    # -- locating elements
    def locator(self, scheme: str | None) -> Callable[[tuple[int, ...]], str] | None:
        if scheme == "grid":
            axes = [np.linspace(lo, hi, int(L * (hi - lo) + 1)) for lo, hi, L in self.spec.samplings]
            shape = self.spec.map_shape

            def grid(idx: tuple[int, ...]) -> str:
                i, j, k = np.unravel_index(idx[0], shape)
                return "(h,k,l)=({:g},{:g},{:g})".format(axes[0][i], axes[1][j], axes[2][k])
            return grid
        if scheme == "bz":
            return lambda idx: "BZ (dh,dk,dl)=({},{},{})".format(*idx[:3])
        if scheme == "bz_flat":
            L = self.spec.oversampling
            return lambda idx: "BZ (dh,dk,dl)=({},{},{})".format(*np.unravel_index(idx[0], L))
        return None


def make_run(fixture: str, *, samplings: Sequence[Sequence[int]] | None = None, params: dict | None = None,
             device: str = "cpu", dtype: str = "float64", tier_overrides: dict | None = None,
             fixtures_dir: str | None = None, fault: str | None = None,
             reference: str | Backend = DEFAULT_REFERENCE, candidate: str | Backend = DEFAULT_CANDIDATE,
             reference_path: str | None = None, candidate_path: str | None = None,
             reference_python: str | None = None, candidate_python: str | None = None,
             reference_options: dict | None = None, candidate_options: dict | None = None,
             spec: RunSpec | None = None, build: bool = True) -> Run:
    """Validate everything, resolve both backends and build both sessions.

    Raises EryxInputError (exit 2) for bad options, an unknown backend, or input the
    reference refuses; a candidate that fails is a divergence reported by the run.
    """
    spec = spec or make_spec(fixture, samplings=samplings, params=params, device=device, dtype=dtype,
                             fixtures_dir=fixtures_dir)

    active = tier_overrides if isinstance(tier_overrides, ActiveOverrides) else None
    try:  # fail here, not in the middle of the run
        values = validate_overrides(active.values if active else (tier_overrides or {}))
    except (KeyError, ValueError) as exc:
        raise EryxInputError(f"tier_overrides: {exc.args[0] if exc.args else exc}") from None
    if active is None:
        active = ActiveOverrides(values, {name: {k: "the caller (tier_overrides)" for k in v}
                                          for name, v in values.items()})
    cand_opts = dict(candidate_options or {})
    if fault is not None:
        cand_opts["fault"] = fault
    ref_b = _backend(reference, reference_path, reference_python, reference_options or {}, "reference")
    cand_b = _backend(candidate, candidate_path, candidate_python, cand_opts, "candidate")
    for b in (ref_b, cand_b):
        try:
            b.check_spec(spec)
        except (EryxInputError, ValueError) as exc:
            raise EryxInputError(str(exc)) from None
        except Exception:
            # Not a refusal but the candidate's own failure: its construction meets it again
            # and the run reports it as the first failure (exit 1), with the traceback.
            if b is not cand_b:
                raise
    run = Run(spec=spec, reference=ref_b, candidate=cand_b, reference_session=ref_b.open(spec), candidate_session=cand_b.open(spec),
              tier_overrides=values, overrides=active)
    if build:
        build_sessions(run)
    return run


def build_sessions(run: Run) -> None:
    """Build the reference, then the candidate. Input the reference refuses is bad input (raised)."""
    run.reference_session.build()
    run.timings["setup_reference"] = run.reference_session.build_seconds
    err = run.reference_session.build_error
    if err is not None and isinstance(err.error, EryxInputError) and not isinstance(err.error, MemoryBudgetError):
        raise err.error
    run.candidate_session.build()
    run.timings["setup_candidate"] = run.candidate_session.build_seconds


# -------------------------------------------------------------- one stage
def stage_tier(stage: Stage, run: Run):
    """The tier ``stage`` is judged by in this run (per stage in float32; overrides applied)."""
    return resolve_tier(stage.tier, run.dtype, run.tier_overrides, stage=stage.name)


def _n_terms(stage: Stage, run: Run) -> int | None:
    if stage.terms is None:
        return None
    try:
        return stage.terms(run)
    except (NotProvided, SideError):
        return None


def _comparison(stage: Stage, run: Run, feed: Any = None) -> cmp.Comparison:
    """Compare one stage (``feed``: the candidate's value recomputed on reference inputs)."""
    setting = Setting(tier=stage_tier(stage, run), locate=run.locator(stage.locate),
                      terms=lambda: _n_terms(stage, run), not_provided=(NotProvided,))
    reason = stage.vacuous(run) if stage.vacuous else None
    if reason:
        raise NotProvided(reason)
    return stage.comparator.compare(stage, run, setting, feed)


def _slice_details(run: Run, actual: np.ndarray, expected: np.ndarray, worst: dict | None) -> dict | None:
    """A 2-D slice of a grid map through its worst point (for the report)."""
    shape = run.spec.map_shape
    if actual.shape != expected.shape or actual.ndim != 1 or actual.size != int(np.prod(shape)):
        return None
    point = np.unravel_index(int(worst["index"][0]), shape) if worst and worst.get("index") else \
        tuple(n // 2 for n in shape)
    fixed = int(np.argmin(shape))  # keep the two largest axes in the picture
    axes = [a for a in range(3) if a != fixed]
    samplings = run.spec.samplings
    take: list[Any] = [slice(None)] * 3
    take[fixed] = point[fixed]
    a3, e3 = actual.reshape(shape)[tuple(take)], expected.reshape(shape)[tuple(take)]
    steps = [max(1, -(-shape[a] // SLICE_MAX)) for a in axes]
    a3, e3 = a3[::steps[0], ::steps[1]], e3[::steps[0], ::steps[1]]
    lo = [samplings[a][0] for a in axes]
    hi = [lo[i] + (a3.shape[i] - 1) * steps[i] / samplings[axes[i]][2] for i in range(2)]
    fixed_value = samplings[fixed][0] + point[fixed] / samplings[fixed][2]

    def tolist(x):
        return [[None if not np.isfinite(v) else float(v) for v in row] for row in x.T]
    return {
        "title": f"{'hkl'[fixed]} = {fixed_value:g} through the worst point",
        "xlabel": "hkl"[axes[0]], "ylabel": "hkl"[axes[1]],
        "extent": [lo[0], hi[0], lo[1], hi[1]],
        "worst_xy": [lo[0] + point[axes[0]] / samplings[axes[0]][2], lo[1] + point[axes[1]] / samplings[axes[1]][2]],
        "expected": tolist(np.real(e3)), "actual": tolist(np.real(a3)),
    }


def diagnose_stage(stage: Stage, run: Run, tier, feed: Any = None) -> tuple[list, np.ndarray | None, Any]:
    """Divergence signatures of a failing stage: (signatures, expected, actual) as diagnosed.

    Never changes a verdict; a stage kind without a reference pair gives no signature.
    """
    return stage.comparator.diagnose(stage, run, tier, feed, budget_s=DIAGNOSIS_BUDGET_S)


def _attach_diagnosis(record: dict, stage: Stage, run: Run, feed: Any) -> None:
    tier = stage_tier(stage, run)
    sigs, e, a = diagnose_stage(stage, run, tier, feed)
    record["diagnosis"] = [s.to_dict() for s in sigs]
    record["details"]["diagnosis_phrase"] = dg.summary_phrase(sigs)
    best = next((s for s in sigs if s.explains), None)
    if best is not None and run.figures and run.timings.setdefault("figures_left", DIAGNOSIS_FIGURES) > 0:
        uri = dg.figure(best, e, a)
        if uri:
            run.timings["figures_left"] -= 1
            record["details"]["diagnosis_figure"] = uri


def _base_record(stage: Stage, run: Run) -> dict:
    tier = stage_tier(stage, run)
    return stage_record(stage.name, stage.phase, tier=tier.name, kind=stage.kind, rtol=tier.rtol, atol=tier.atol,
                        description=stage.description)


def side_error_record(exc: SideError) -> tuple[str, str, dict]:
    """(status, message, details) for a backend that raised."""
    build = exc.session.build_error
    if exc.side == "reference" and isinstance(exc.error, EryxInputError):
        return Status.NOT_COMPARABLE.value, f"the reference ({exc.session.backend.name}) refuses: {exc.error}", {}
    if build is not None:
        return (Status.ERROR.value, f"the {exc.side}'s construction failed at step {build.step!r} (phase {build.phase}), "
                f"so {exc.quantity} was not computed: {type(build.error).__name__}: {build.error}",
                {"traceback": build.traceback, "build_step": build.step})
    tb = "".join(traceback.format_exception(type(exc.error), exc.error, exc.error.__traceback__, limit=12))
    return Status.ERROR.value, str(exc), {"traceback": tb}


def run_stage(stage: Stage, run: Run, feed: Any = None) -> dict:
    """Run and compare one stage; never raises (every outcome is a status)."""
    record = _base_record(stage, run)
    t0 = time.perf_counter()
    try:
        result = _comparison(stage, run, feed)
        fields = result.to_dict()
        record.update({k: fields[k] for k in ("max_abs", "max_rel", "max_rel_elementwise", "n_mismatch", "n_total",
                                              "worst", "message", "details") if k in fields})
        record["n_compared"] = int(fields.get("n_compared") or 0)
        record["status"] = Status(fields.get("status") or (Status.PASS if result.passed else Status.FAIL)).value
        if record["status"] == Status.NOT_COMPARABLE:
            record["message"] = fields.get("reason") or record["message"]
        tier_used = record["details"].get("tier") if isinstance(record["details"], dict) else None
        if isinstance(tier_used, dict):  # the scaled values the stage was judged by
            record["rtol"], record["atol"] = tier_used.get("rtol", record["rtol"]), tier_used.get("atol", record["atol"])
        if record["status"] == Status.FAIL and stage.locate == "grid" and stage.comparator.draws_slice:
            sl = _slice_details(run, run.stage_value(stage, "candidate", feed), run.stage_value(stage, "reference"),
                                result.worst)
            if sl:
                record["details"]["slice"] = sl
        if record["status"] == Status.FAIL:
            t_diag = time.perf_counter()
            try:
                _attach_diagnosis(record, stage, run, feed)
            except Exception as exc:  # the diagnosis describes; it never decides or breaks a run
                record["details"]["diagnosis_error"] = f"{type(exc).__name__}: {exc}"
            record["details"]["diagnosis_s"] = time.perf_counter() - t_diag
    except NotProvided as exc:
        record.update(status=Status.NOT_COMPARABLE.value, message=str(exc))
    except SideError as exc:
        status, message, details = side_error_record(exc)
        record.update(status=status, message=message, details=details)
    except Exception as exc:  # the harness itself failed on this stage: a divergence to look at
        record.update(status=Status.ERROR.value, message=f"harness error in {stage.name}: {type(exc).__name__}: {exc}",
                      details={"traceback": traceback.format_exc(limit=12)})
    record["passed"] = record["status"] == Status.PASS
    record["duration_s"] = time.perf_counter() - t0
    return record


def construction_records(run: Run) -> list[dict]:
    """A record per side whose construction failed: the first failure of the run."""
    out = []
    for side in ("reference", "candidate"):
        session = run.session(side)
        b = session.build_error
        if b is None or (side == "reference" and isinstance(b.error, MemoryBudgetError)):
            continue
        out.append(stage_record(
            f"construction:{side}", b.phase, status=Status.ERROR, tier="exact", kind=CONSTRUCTION, rtol=0.0,
            atol=0.0, description=f"construction of the {side} ({session.backend.name})",
            message=f"the {side} ({session.backend.name}) failed to build at step {b.step!r} (phase "
                    f"{b.phase}): {type(b.error).__name__}: {b.error}",
            details={"traceback": b.traceback, "build_step": b.step, "side": side},
            duration_s=session.build_seconds or 0.0))
    return out


# ------------------------------------------------------------------ a run
def refuse_reference_input(run: Run, stages: Sequence[Stage]) -> None:
    """Raise the reference's input refusal for a selected stage, before any stage runs.

    A reference that already knows, once built, that it refuses a selected stage's quantity
    for a reason in the input (the documented undefined ADP scale) makes the run an input
    error (exit 2), not a divergence of whatever the candidate returns there.
    """
    if run.reference_session.build_error is not None:
        return
    refused = [(s, run.reference_session.input_refusal(s.reference_quantity)) for s in stages]
    refused = [(s, r) for s, r in refused if r is not None]
    if refused:
        names = ",".join(s.name for s, _ in refused)
        raise EryxInputError(f"the reference ({run.reference.name}) refuses {len(refused)} selected stage(s) for "
                             f"this input: {refused[0][1]} (or leave them out: --skip {names})")


def run_stages(run: Run, stages: Iterable[Stage], *, progress: bool | None = None,
               on_result: Callable[[dict], None] | None = None, fail_fast: bool = False) -> list[dict]:
    """Construction records, then every stage in order (a progress bar only on a terminal).

    ``fail_fast``: stop after the first record that fails or errors (a failed construction
    included). The verdict (diverged) and the first failure are those of the full run; the
    stages after it are not run and not in the list.
    """
    stages = list(stages)
    refuse_reference_input(run, stages)
    out = construction_records(run)
    if fail_fast and out:
        return out
    show = sys.stderr.isatty() if progress is None else progress
    bar = tqdm(stages, desc=f"parity {run.fixture}", unit="stage", disable=not show, leave=False)
    for stage in bar:
        bar.set_postfix_str(stage.id)
        rec = run_stage(stage, run)
        out.append(rec)
        if on_result:
            on_result(rec)
        if fail_fast and rec["status"] in DIVERGING:
            break
    bar.close()
    return out


def verdict(stages: list[dict]) -> tuple[Verdict, str | None, list[str]]:
    """(verdict, first failure, incomplete map stages) of a list of stage records.

    The first failure is the earliest in phase order (``parity.running.causes.first_failure``).
    """
    failed = [r for r in stages if r["status"] in DIVERGING]
    incomplete = [r["name"] for r in stages if r["status"] == Status.NOT_COMPARABLE and r["name"] in STAGE_NAMES
                  and get_stage(r["name"]).is_map]
    if failed:
        return Verdict.DIVERGED, first_failure(failed), incomplete
    if incomplete:
        return Verdict.INCOMPLETE, None, incomplete
    return Verdict.PASS, None, incomplete


def summary_notes(spec: RunSpec) -> list[str]:
    """What the run could not see, said in the summary."""
    notes = []
    if not spec.sees_phase_signs:
        notes.append("this grid cannot see phase-sign errors (k.r, q.r, a missing conjugate): with oversampling "
                     "<= 2 on every axis every k-point is its own Friedel mate and K(k) is real; use an odd "
                     "oversampling on some axis, e.g. --grid='-2,2,2;-2,2,2;-2,2,3'")
    return notes


def assemble_result(run: Run, stages: list[dict], *, started_at: str, duration_s: float) -> dict:
    """The JSON result of a run (schema_version 1; see docs/architecture.md)."""
    phase_timings: dict[str, float] = {}
    for rec in stages:
        key = str(rec["phase"])
        phase_timings[key] = phase_timings.get(key, 0.0) + rec["duration_s"]
    phase_timings.update({k: v for k, v in run.timings.items() if v is not None and k != "figures_left"})

    annotate(stages)  # "root cause" / "inherited from STAGE" on every failing record (the input graph)
    outcome, first, incomplete = verdict(stages)
    spec = run.spec
    return run_result(
        fixture=spec.fixture, pdb_path=spec.pdb_path,
        fixture_sha256=spec.fixture_sha256 if Path(spec.pdb_path).is_file() or spec.sha256 else None,
        grid=dict(zip(("hsampling", "ksampling", "lsampling"), [list(s) for s in spec.samplings])),
        params=dict(spec.params), device=spec.device, device_name=device_name(spec.device), dtype=spec.dtype,
        reference=run.reference.info(), candidate=run.candidate.info(), verdict=outcome, first_failure=first,
        incomplete=incomplete, notes=summary_notes(spec), fault=run.candidate.opts.get("fault"),
        tier_overrides=run.overrides.rows() if run.overrides is not None else [], started_at=started_at,
        duration_s=duration_s, environment=environment(), phase_timings=phase_timings, stages=stages)


def merge_results(results: list[dict]) -> dict:
    """One result from several partial results of the same run (e.g. pytest-xdist workers).

    Stages are put back in registry order and the verdict is recomputed from all of them.
    """
    if len(results) == 1:
        return results[0]
    base = dict(results[0])
    order = {name: i for i, name in enumerate(STAGE_NAMES)}
    stages = sorted((s for r in results for s in r["stages"]), key=lambda s: order.get(s["name"], -1))

    annotate(stages)
    outcome, first, incomplete = verdict(stages)
    base.update(stages=stages, verdict=outcome.value, passed=outcome is Verdict.PASS, first_failure=first, incomplete=incomplete,
                n_compared=int(sum(s.get("n_compared") or 0 for s in stages)),
                duration_s=sum(r["duration_s"] for r in results),
                started_at=min(r["started_at"] for r in results))
    return base


def execute(run: Run, stages: Iterable[Stage], *, progress: bool | None = None, on_result=None,
            fail_fast: bool = False) -> dict:
    """Run ``stages`` on a built run and return the JSON-ready result.

    ``fail_fast``: stop at the first divergence (:func:`run_stages`); off by default.
    """
    started = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    t0 = time.perf_counter()
    records = run_stages(run, stages, progress=progress, on_result=on_result, fail_fast=fail_fast)
    return assemble_result(run, records, started_at=started, duration_s=time.perf_counter() - t0)


def run_parity(fixture: str, *, phases: Sequence[int] | None = None, stage_names: Sequence[str] | None = None,
               skip: Sequence[str] | None = None, progress: bool | None = None, on_result=None,
               **options) -> dict:
    """Run the harness on one fixture and return the JSON-ready result.

    ``options`` go to :func:`make_run` (samplings, params, device, dtype, tier_overrides,
    fixtures_dir, fault, reference, candidate, reference_path, candidate_path, ...).
    """
    run = make_run(fixture, **options)
    return execute(run, select(phases, stage_names, skip), progress=progress, on_result=on_result)


__all__ = ["Run", "SideError", "make_run", "build_sessions", "run_stage", "run_stages", "execute", "run_parity",
           "assemble_result", "environment", "git_commit", "device_name", "verdict", "STAGES", "SCHEMA_VERSION"]
