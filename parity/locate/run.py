"""The driver of ``parity locate``: run both sides with probes on and name the root probe.

The stage defaults to the run's first failing stage (on the fixture's default grid). Both
sessions are built with a :class:`~parity.locate.probes.ProbeRecorder` listening, then the
stage's quantity is computed again under it (a quantity the model computes lazily, such
as a map, records its probes then). Subprocess adapters and dumps hand over the probes
their side recorded (``Session.probe_records``).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from eryx.probes import listen

from parity.comparison import engine as cmp
from parity.running.runner import Run, _n_terms, build_sessions, run_stages, stage_tier, verdict
from parity.stages import STAGES, get_stage
from parity.contract.tiers import resolve_tier
from parity.locate.probes import ProbeLocation, ProbeRecorder, compare_probes

# torch (eryx.models_torch, the torch backend, parity.locate.trace) is imported where a
# trace needs it: the CLI builds its parser from parity.locate.cli, which imports this
# module, and a torch-free `parity` start-up must stay so.


@dataclass
class LocateResult:
    stage: str
    why: str
    probes: ProbeLocation | None = None
    trace: Any = None
    notes: list[str] = field(default_factory=list)
    records: list = field(default_factory=list)  # the stage records run to find the stage
    raised: str | None = None  # where the candidate raised, when it did (its own line: the root)

    def to_dict(self) -> dict:
        return {"stage": self.stage, "why": self.why, "notes": self.notes,
                "probes": self.probes.to_dict() if self.probes else None,
                "trace": self.trace.to_dict() if self.trace is not None else None, "raised": self.raised}

    def text(self) -> str:
        lines = [f"parity locate: stage {self.stage} ({self.why})"]
        if self.raised:
            lines.append(f"the candidate raised: {self.raised}")
        if self.probes is not None:
            lines.append(self.probes.summary())
            if self.probes.diagnosis:
                lines.append("  diagnosis: " + "; ".join(s.sentence for s in self.probes.diagnosis[:2]))
            if self.probes.only_reference or self.probes.only_candidate:
                lines.append(f"  not aligned (one side only): reference {', '.join(self.probes.only_reference) or '-'}"
                             f"; candidate {', '.join(self.probes.only_candidate) or '-'}")
        if self.trace is not None:
            lines.append(self.trace.summary())
        lines += [f"  note: {n}" for n in self.notes]
        return "\n".join(lines)


def raised_at(error: BaseException | None) -> str | None:
    """``file:line in function: error`` of the innermost frame outside torch, NumPy and the harness."""
    import os
    import traceback

    if error is None:
        return None
    inner = getattr(error, "error", error)  # a BuildFailure wraps what construction raised
    frames = traceback.extract_tb(inner.__traceback__)
    for f in reversed(frames):
        path = f.filename.replace(os.sep, "/")
        if not any(part in path for part in ("/torch/", "/numpy/", "/parity/backends/", "/parity/runner", "/eryx/build.py")):
            rel = os.path.relpath(f.filename)
            return f"{rel if not rel.startswith('..') else f.filename}:{f.lineno} in {f.name}: " \
                   f"{type(inner).__name__}: {inner}"
    return None


def _refresh(run: Run, side: str, quantity: str, recorder: ProbeRecorder) -> None:
    """Compute ``quantity`` again on ``side`` with ``recorder`` listening (errors are the run's to report)."""
    session = run.session(side)
    session._cache.pop(quantity, None)
    run._values.pop((side, quantity), None)
    with listen(recorder):
        try:
            run.value(side, quantity)
        except Exception:
            pass


def _foreign(run: Run, side: str) -> list | None:
    """Probes a subprocess adapter or a dump recorded on its side, or None."""
    getter = getattr(run.session(side), "probe_records", None)
    return getter() if getter else None


def record_probes(run: Run, stage_name: str | None = None) -> tuple[str, str, ProbeRecorder, ProbeRecorder, list]:
    """Build both sides (``run`` made with ``build=False``) with probes on; (stage, why, ref, cand)."""
    rec_r, rec_c = ProbeRecorder(), ProbeRecorder()
    for session in (run.reference_session, run.candidate_session):  # subprocess adapters: their worker records probes
        session.want_probes = True
    with listen(rec_r):
        run.reference_session.build()
    with listen(rec_c):
        build_sessions(run)  # the reference is built already; this checks its refusal and builds the candidate
    records: list = []
    if stage_name:
        why = "chosen"
    else:
        records = run_stages(run, STAGES, progress=False, fail_fast=True)
        stage_name = verdict(records)[1]
        why = "the run's first failing stage" if stage_name else "no stage fails"
    if stage_name in {s.name for s in STAGES}:
        st = get_stage(stage_name)
        # A gradient stage's extra models (finite differences, autograd) would repeat every
        # probe: its probes are the construction's (the trace compares gradients).
        if st.comparator.computes and not st.comparator.differentiates:
            _refresh(run, "reference", st.reference_quantity, rec_r)
            _refresh(run, "candidate", st.quantity, rec_c)
    for side, rec in (("reference", rec_r), ("candidate", rec_c)):
        foreign = _foreign(run, side)
        if foreign is not None:
            rec.records = list(foreign)
    return stage_name or "", why, rec_r, rec_c, records


def locate_probes(run: Run, stage_name: str | None = None) -> LocateResult:
    """Name the root probe of ``stage_name`` (default: the first failing stage)."""
    stage_name, why, rec_r, rec_c, records = record_probes(run, stage_name)
    default_stage = get_stage(stage_name) if stage_name in {s.name for s in STAGES} else None

    def resolve(tier_name, stage):
        if tier_name:
            return resolve_tier(tier_name, run.dtype, run.tier_overrides)
        return stage_tier(get_stage(stage), run)

    def n_terms(stage):
        return _n_terms(get_stage(stage), run) if stage else None

    default = stage_tier(default_stage, run) if default_stage else resolve_tier("tight", run.dtype)
    loc = compare_probes(rec_r.records, rec_c.records, resolve, default, n_terms)
    out = LocateResult(stage_name or "(none)", why, probes=loc, records=records)
    err = run.candidate_session.build_error
    if err is None and default_stage is not None:
        cached = run.candidate_session._cache.get(default_stage.quantity)
        err = cached[1] if cached and not cached[0] else None
    out.raised = raised_at(err)
    for side, rec in (("reference", rec_r), ("candidate", rec_c)):
        if not rec.records:
            out.notes.append(f"the {side} ({run.session(side).backend.name}) recorded no probes")
        if rec.spilled:
            out.notes.append(f"the {side}'s probes passed the memory budget: {rec.spilled / 2**20:.1f} MiB "
                             f"were spilled to disk")
    return out


# ------------------------------------------------------------------ the trace
def _clean_torch_session(run: Run, dtype: str = "float64"):
    """The project's torch backend, float64 on the CPU, no fault: the trace's reference side."""
    from dataclasses import replace

    from parity.backends.eryx_torch import TorchBackend

    session = TorchBackend().open(replace(run.spec, dtype=dtype, device="cpu"))
    session.build()
    if session.build_error is not None:
        raise session.build_error
    return session


def trace_session(session, quantity: str, inputs: dict, backward_lines: bool = False):
    """An :class:`~parity.locate.trace.OpTrace` of ``session``'s computation of ``quantity``
    from ``inputs`` (cross-fed: only this stage's operations run), single-threaded."""
    import eryx.models_torch as tm

    from parity.locate.trace import OpTrace

    import contextlib

    import torch

    fed = {k: session.tensor(v) for k, v in inputs.items()}  # casts outside the trace
    before, tm.GRID_WORKERS = tm.GRID_WORKERS, False  # dispatch modes are per thread; same values
    # Anomaly mode keeps each autograd node's forward traceback: backward operations then
    # carry the line of the forward operation they differentiate (it adds NaN checks, on both sides).
    anomaly = torch.autograd.set_detect_anomaly(True, check_nan=False) if backward_lines else contextlib.nullcontext()
    try:
        with anomaly, OpTrace() as tr:
            result = None
            try:
                result = session.crossfeed(quantity, fed)
                tr.mark_result(result)
            except Exception as exc:  # a candidate that raises: the ops before it still compare
                tr.error = f"{type(exc).__name__}: {exc}"
    finally:
        tm.GRID_WORKERS = before
    if result is not None and not isinstance(result, dict):
        tr.result = np.asarray(cmp.as_numpy(result))
    return tr


def locate_trace(run: Run, stage_name: str | None = None, *, against: str | None = None,
                 save: str | None = None, promote: int = 0) -> LocateResult:
    """Trace the candidate's (torch) computation of the stage against a clean float64 CPU run
    of the same code (or a saved trace, ``against``), fed the same inputs.

    ``promote``: in a precision comparison, run the candidate again with its ``promote``
    sites of largest error growth (:func:`~parity.locate.precision.rank_sites`) in float64,
    kept downstream (:class:`~parity.locate.trace.PromoteOps` ``keep=True``), and note the
    stage result's error before and after.
    """
    from parity.backends.eryx_torch import crossfeed_inputs
    from parity.locate.trace import OpTrace, compare_traces

    why, records = "chosen", []
    if not stage_name:
        build_sessions_checked(run)
        records = run_stages(run, STAGES, progress=False, fail_fast=True)
        stage_name = verdict(records)[1]
        why = "the run's first failing stage"
        if not stage_name:
            return LocateResult("(none)", "no stage fails", notes=["nothing to trace"], records=records)
    st = get_stage(stage_name)
    if run.candidate.name != "torch" or st.quantity not in run.candidate.crossfeeds():
        return LocateResult(stage_name, why, records=records, notes=[
            f"the operation trace needs the project's torch backend able to recompute {st.quantity} "
            f"(candidate: {run.candidate.name}); use the probes"])
    build_sessions_checked(run)
    ref = _clean_torch_session(run)
    inputs = {p: ref.get(p) for p in crossfeed_inputs(st.quantity)}
    grad = st.comparator.differentiates
    tr_c = trace_session(run.candidate_session, st.quantity, inputs, grad)
    tr_r = OpTrace.load(against) if against else trace_session(ref, st.quantity, inputs, grad)
    if save:
        tr_c.save(save)
    cmp_ = compare_traces(tr_r, tr_c, precision=run.spec.dtype != "float64")
    for name, tr in (("reference", tr_r), ("candidate", tr_c)):
        if getattr(tr, "error", None):
            cmp_.notes.append(f"the {name} raised: {tr.error}")
    if promote and cmp_.precision:
        cmp_.notes.append(promotion_note(cmp_, tr_r, tr_c, promote,
                                         lambda sites: _promoted_trace(run, st.quantity, inputs, grad, sites)))
    return LocateResult(stage_name, why, trace=cmp_, records=records)


def _promoted_trace(run: Run, quantity: str, inputs: dict, grad: bool, sites: set):
    from parity.locate.trace import PromoteOps

    with PromoteOps(sites, keep=True) as mode:
        tr = trace_session(run.cand, quantity, inputs, grad)
    return tr, mode.hits


def promotion_note(cmp_, ref, cand, n: int, retrace) -> str:
    """The stage result's error before and after the top ``n`` ranked sites run in float64.

    ``retrace(sites) -> (OpTrace, promoted calls)`` reruns the candidate with those sites promoted.
    """
    from parity.locate.precision import rank_sites, sites_of
    from parity.locate.trace import rel_error

    ranks = rank_sites(cmp_, top=n)
    if not ranks:
        return "promotion: no operation's error beyond eps reaches the result; nothing promoted"
    promoted, calls = retrace(sites_of(ranks))
    before, after = rel_error(ref.result, cand.result), rel_error(ref.result, promoted.result)
    factor = f"factor {before / after:.3g}, before / after" if after else "exact after"
    sites = ", ".join(f"{r.where} aten.{r.op}" for r in ranks)
    return (f"promotion: the top {len(ranks)} sites by error growth ({sites}) in float64, kept downstream "
            f"({calls} calls): the result's error {before:.3g} -> {after:.3g} ({factor})")


def build_sessions_checked(run: Run) -> None:
    if not (run.reference_session._built and run.candidate_session._built):
        build_sessions(run)
