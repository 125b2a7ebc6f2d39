"""Bisecting a divergence: to its root stage within a run, and across commits.

Within a run (``parity bisect``): every diverging stage is re-run by cross-feeding: the
candidate's computation of that stage alone, fed with the reference's values of its
inputs (:attr:`parity.stages.Stage.inputs`, through :meth:`Session.crossfeed`). A stage
that still diverges on reference inputs is a **root cause** (unless a quantity it
recomputes internally is itself a root: one defect, one root); one that agrees only
**inherited** the error from upstream. A stage the candidate cannot cross-feed (a stored
dump, an external implementation) is judged by the registry's input graph
(:mod:`parity.running.causes`). A failed construction is the root cause of what needs it.

Across commits (``parity check``): exit codes for ``git bisect run``: 0 when the selected
stages agree, 1 when they diverge, 125 when the check cannot run here or the stage was
not comparable (git bisect skips the commit), and 128 for a usage error (a bad stage name
or phase), which makes ``git bisect run`` abort instead of marking commits.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from parity.running import causes
from parity.backends import NotProvided
from parity.running.runner import Run, SideError, run_stage, run_stages
from parity.contract.results import DIVERGING, Status, is_construction
from parity.stages import STAGES, Stage, get_stage

ROOT, INHERITED = causes.ROOT, causes.INHERITED
#: Deprecated (kept for importers): a stage that cannot be cross-fed is now judged by the
#: registry's input graph and gets ROOT or INHERITED like any other (``Verdict.basis`` says how).
PRESUMED, UNDETERMINED = INHERITED, ROOT


@dataclass
class Verdict:
    stage: str
    phase: int
    verdict: str  # ROOT or INHERITED
    direct: str  # the stage's own comparison message (first line)
    crossfed: str | None  # the cross-fed comparison message (first line), or why there is none
    diagnosis: str | None = None  # the stage's divergence signature, when one explains it
    inherited_from: list[str] = field(default_factory=list)  # the root causes it inherits
    basis: str = "input graph"  # cross-feed, recomputed internally, input graph or construction

    @property
    def text(self) -> str:
        return causes.make_cause(self.verdict, self.inherited_from, self.basis)["text"]

    def to_dict(self) -> dict:
        return dict(stage=self.stage, phase=self.phase, verdict=self.verdict, direct=self.direct,
                    crossfed=self.crossfed, diagnosis=self.diagnosis, inherited_from=list(self.inherited_from),
                    basis=self.basis, text=self.text)


@dataclass
class BisectResult:
    first_divergence: str | None
    verdicts: list[Verdict] = field(default_factory=list)
    crossfeed_supported: bool = True

    @property
    def root_causes(self) -> list[str]:
        return [v.stage for v in self.verdicts if v.verdict == ROOT]

    @property
    def inherited(self) -> list[str]:
        return [v.stage for v in self.verdicts if v.verdict == INHERITED]

    def causes(self) -> dict[str, dict]:
        """Stage name -> its cause record (``parity.running.causes``), for the run's stage records."""
        return {v.stage: causes.make_cause(v.verdict, v.inherited_from, v.basis) for v in self.verdicts}

    def to_dict(self) -> dict:
        return {"first_divergence": self.first_divergence, "root_causes": self.root_causes,
                "inherited": self.inherited, "crossfeed_supported": self.crossfeed_supported,
                "verdicts": [v.to_dict() for v in self.verdicts]}


def _first_line(text: str | None) -> str:
    return (text or "").strip().splitlines()[0] if text else ""


def _feed_names(stage: Stage) -> tuple[str, ...]:
    """The candidate quantities a cross-fed comparison of ``stage`` needs (its kind says)."""
    return stage.comparator.feed_names(stage)


def crossfeed(run: Run, stage: Stage):
    """The candidate's value of ``stage`` recomputed on the reference's inputs.

    Raises NotProvided (with the reason) when the stage is a check without a computation,
    the candidate cannot cross-feed it, or the reference lacks an input. A stage without
    inputs (the grid) is recomputed from the spec alone.
    """
    if not stage.comparator.computes:
        raise NotProvided(f"{stage.name} is a {stage.kind} check: it has no computation to re-feed")
    supported = run.candidate_session.backend.crossfeeds()
    missing = [q for q in _feed_names(stage) if q not in supported]
    if missing:
        raise NotProvided(f"the candidate ({run.candidate.name}) cannot recompute {', '.join(missing)} from "
                          f"given inputs")
    inputs = {name: run.reference_value(name) for name in stage.inputs}
    values = {q: run.candidate_session.crossfeed(q, inputs) for q in _feed_names(stage)}
    return stage.comparator.fed_value(stage, values)


def _crossfed_record(run: Run, stage: Stage) -> tuple[dict | None, str]:
    """(the cross-fed comparison record, or None where there is no evidence; its message)."""
    try:
        fed = crossfeed(run, stage)
    except NotProvided as exc:
        return None, f"no cross-feed: {exc}"
    except SideError as exc:
        if exc.side == "reference":
            return None, f"no cross-feed: {exc}"
        rec = {"status": Status.ERROR.value, "message": f"cross-feed raised {exc}"}
    except Exception as exc:  # a stage that crashes on reference inputs is itself broken
        rec = {"status": Status.ERROR.value, "message": f"cross-feed raised {type(exc).__name__}: {exc}"}
    else:
        rec = run_stage(stage, run, feed=fed)
    if rec["status"] == Status.NOT_COMPARABLE:  # the cross-fed value compared nothing: no evidence
        return None, f"cross-fed value not comparable: {rec.get('message')}"
    return rec, _first_line(rec.get("message"))


def classify(run: Run, records: list[dict]) -> BisectResult:
    """Cross-feed every diverging stage of a finished run; the input graph decides the rest."""
    diverging = sorted((r for r in records if r["status"] in DIVERGING), key=causes.phase_key)
    result = BisectResult(causes.first_failure(records))
    result.crossfeed_supported = bool(run.candidate_session.backend.crossfeeds())
    stillfails: dict[str, bool] = {}
    evidence: dict[str, str | None] = {}
    for rec in diverging:
        name = rec["name"]
        if is_construction(rec):
            evidence[name] = "construction failed: everything after it that needs it is inherited"
            continue
        if (rec.get("details") or {}).get("build_step"):
            evidence[name] = "not computed: the construction failed"
            continue
        fed, message = _crossfed_record(run, get_stage(name))
        evidence[name] = message
        if fed is not None:
            stillfails[name] = fed["status"] != Status.PASS
    found = causes.assign_causes(records, stillfails)
    for rec in diverging:
        details = rec.get("details") if isinstance(rec.get("details"), dict) else {}
        c = found[rec["name"]]
        result.verdicts.append(Verdict(rec["name"], rec["phase"], c["verdict"], _first_line(rec.get("message")),
                                       evidence.get(rec["name"]), details.get("diagnosis_phrase"),
                                       c["inherited_from"], c["basis"]))
    return result


def apply(records: list[dict], result: BisectResult) -> None:
    """Write the bisection's causes into the run's stage records (they replace the graph's)."""
    found = result.causes()
    for rec in records:
        if rec["name"] in found:
            rec["cause"] = found[rec["name"]]


def bisect_run(run: Run, stages: list[Stage] | None = None, *, progress: bool | None = None
               ) -> tuple[list[dict], BisectResult]:
    """Run the stages, then classify the diverging ones."""
    records = run_stages(run, stages or list(STAGES), progress=progress)
    return records, classify(run, records)


def format_bisect(result: BisectResult) -> str:
    """Human-readable summary for the terminal."""
    if result.first_divergence is None:
        return "No divergence: every stage agrees; nothing to bisect."
    lines = [f"First divergence: {result.first_divergence}",
             f"Root cause(s): {', '.join(result.root_causes) or 'none found'}",
             f"Inherited: {', '.join(result.inherited) or 'none'}"]
    if not result.crossfeed_supported:
        lines.append("The candidate cannot be cross-fed: the registry's input graph decides (a failing stage "
                     "with no failing stage upstream is a root cause).")
    lines += ["", "Evidence:"]
    for v in result.verdicts:
        head = f"  phase {v.phase} {v.stage:<18} {v.text.upper():<22}"
        if v.diagnosis and v.verdict == ROOT:
            lines.append(f"{head} diagnosis: {v.diagnosis}")
            head = " " * len(head)
        lines.append(f"{head} direct: {v.direct}")
        if v.crossfed is not None:
            lines.append(f"  {'':<27}{'':<22} on reference inputs: {v.crossfed}")
        lines.append(f"  {'':<27}{'':<22} basis: {v.basis}")
    if result.root_causes:  # from the stage to the line (parity.locate, docs/locate.md)
        lines += ["", f"Next: parity locate --stage {result.root_causes[0]} (same options) names the root probe "
                      f"or, with --trace, the root torch operation and its source line."]
    return "\n".join(lines)
