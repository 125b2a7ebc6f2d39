"""Bisecting a divergence: to its root stage within a run, and across commits.

Within a run (``parity bisect``): every diverging stage is re-run by cross-feeding: the
candidate's computation of that stage alone, fed with the reference's values of its
inputs (:attr:`parity.stages.Stage.inputs`, through :meth:`Session.crossfeed`). A stage
that still diverges on reference inputs is a **root cause**; one that agrees only
**inherited** the error from upstream. A candidate that cannot cross-feed a stage (a
stored dump, an external implementation) gets the phase order's verdict instead, and the
report says so. A failed construction is the root cause of everything after it.

Across commits (``parity check``): exit codes for ``git bisect run``: 0 when the selected
stages agree, 1 when they diverge, 125 when the check cannot run here or the stage was
not comparable (git bisect skips the commit), and 128 for a usage error (a bad stage name
or phase), which makes ``git bisect run`` abort instead of marking commits.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from .backends import NotProvided
from .runner import Run, SideError, run_stage, run_stages
from .stages import STAGES, Stage, get_stage

ROOT = "root_cause"
INHERITED = "inherited"
PRESUMED = "inherited_presumed"  # no cross-feed, and a root cause lies upstream
UNDETERMINED = "undetermined"  # no cross-feed and nothing upstream explains it


@dataclass
class Verdict:
    stage: str
    phase: int
    verdict: str
    direct: str  # the stage's own comparison message (first line)
    crossfed: str | None  # the cross-fed comparison message (first line), or why there is none
    diagnosis: str | None = None  # the stage's divergence signature, when one explains it

    def to_dict(self) -> dict:
        return dict(stage=self.stage, phase=self.phase, verdict=self.verdict, direct=self.direct,
                    crossfed=self.crossfed, diagnosis=self.diagnosis)


@dataclass
class BisectResult:
    first_divergence: str | None
    verdicts: list[Verdict] = field(default_factory=list)
    crossfeed_supported: bool = True

    @property
    def root_causes(self) -> list[str]:
        return [v.stage for v in self.verdicts if v.verdict in (ROOT, UNDETERMINED)]

    @property
    def inherited(self) -> list[str]:
        return [v.stage for v in self.verdicts if v.verdict in (INHERITED, PRESUMED)]

    def to_dict(self) -> dict:
        return {"first_divergence": self.first_divergence, "root_causes": self.root_causes,
                "inherited": self.inherited, "crossfeed_supported": self.crossfeed_supported,
                "verdicts": [v.to_dict() for v in self.verdicts]}


def _first_line(text: str | None) -> str:
    return (text or "").strip().splitlines()[0] if text else ""


def _feed_names(stage: Stage) -> tuple[str, ...]:
    """The candidate quantities a cross-fed comparison of ``stage`` needs."""
    return ("Winv", "V", "D", "U") if stage.kind == "eigenspace" else (stage.quantity,)


def crossfeed(run: Run, stage: Stage):
    """The candidate's value of ``stage`` recomputed on the reference's inputs.

    Raises NotProvided (with the reason) when the stage is a check without a computation,
    the candidate cannot cross-feed it, or the reference lacks an input. A stage without
    inputs (the grid) is recomputed from the spec alone.
    """
    if stage.kind in ("invariant", "oracle", "dtype"):
        raise NotProvided(f"{stage.name} is a {stage.kind} check: it has no computation to re-feed")
    supported = run.cand.backend.crossfeeds()
    missing = [q for q in _feed_names(stage) if q not in supported]
    if missing:
        raise NotProvided(f"the candidate ({run.candidate.name}) cannot recompute {', '.join(missing)} from "
                          f"given inputs")
    inputs = {name: run.reference_value(name) for name in stage.inputs}
    values = {q: run.cand.crossfeed(q, inputs) for q in _feed_names(stage)}
    return values if stage.kind == "eigenspace" else values[stage.quantity]


def classify(run: Run, records: list[dict]) -> BisectResult:
    """Cross-feed every diverging stage of a finished run."""
    diverging = [r for r in records if r["status"] in ("fail", "error")]
    result = BisectResult(diverging[0]["name"] if diverging else None)
    result.crossfeed_supported = bool(run.cand.backend.crossfeeds())
    for rec in diverging:
        direct = _first_line(rec.get("message"))
        diagnosis = (rec.get("details") or {}).get("diagnosis_phrase") if isinstance(rec.get("details"), dict) else None
        if rec.get("kind") == "construction":
            result.verdicts.append(Verdict(rec["name"], rec["phase"], ROOT, direct,
                                           "construction failed: everything after it is inherited", diagnosis))
            continue
        stage = get_stage(rec["name"])
        built = next((v for v in result.verdicts if v.stage.startswith("construction:")), None)
        if built is not None and (rec.get("details") or {}).get("build_step"):
            result.verdicts.append(Verdict(stage.name, stage.phase, INHERITED, direct,
                                           f"not computed: {built.stage} failed", diagnosis))
            continue
        try:
            fed = crossfeed(run, stage)
        except NotProvided as exc:
            verdict = PRESUMED if result.root_causes else UNDETERMINED
            result.verdicts.append(Verdict(stage.name, stage.phase, verdict, direct, f"no cross-feed: {exc}",
                                           diagnosis))
            continue
        except SideError as exc:
            if exc.side == "reference":
                verdict = PRESUMED if result.root_causes else UNDETERMINED
                result.verdicts.append(Verdict(stage.name, stage.phase, verdict, direct,
                                               f"no cross-feed: {exc}", diagnosis))
                continue
            fed_rec = {"status": "error", "message": f"cross-feed raised {exc}"}
        except Exception as exc:  # a stage that crashes on reference inputs is itself broken
            fed_rec = {"status": "error", "message": f"cross-feed raised {type(exc).__name__}: {exc}"}
        else:
            fed_rec = run_stage(stage, run, feed=fed)
        if fed_rec["status"] == "not_comparable":  # the cross-fed value compared nothing: no evidence
            result.verdicts.append(Verdict(stage.name, stage.phase, PRESUMED if result.root_causes else UNDETERMINED,
                                           direct, f"cross-fed value not comparable: {fed_rec.get('message')}",
                                           diagnosis))
            continue
        verdict = INHERITED if fed_rec["status"] == "pass" else ROOT
        result.verdicts.append(Verdict(stage.name, stage.phase, verdict, direct,
                                       _first_line(fed_rec.get("message")), diagnosis))
    return result


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
        lines.append("The candidate cannot be cross-fed: verdicts follow the phase order (the first "
                     "diverging stage is the presumed root cause).")
    lines += ["", "Evidence:"]
    for v in result.verdicts:
        head = f"  phase {v.phase} {v.stage:<18} {v.verdict.upper():<19}"
        if v.diagnosis and v.verdict in (ROOT, UNDETERMINED):
            lines.append(f"{head} diagnosis: {v.diagnosis}")
            head = " " * len(head)
        lines.append(f"{head} direct: {v.direct}")
        if v.crossfed is not None:
            lines.append(f"  {'':<27}{'':<19} on reference inputs: {v.crossfed}")
    if result.root_causes:  # from the stage to the line (parity.locate, docs/locate.md)
        lines += ["", f"Next: parity locate --stage {result.root_causes[0]} (same options) names the root probe "
                      f"or, with --trace, the root torch operation and its source line."]
    return "\n".join(lines)
