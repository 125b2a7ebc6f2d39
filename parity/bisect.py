"""Bisecting a divergence: to its root stage within a run, and across commits.

Within a run (``parity bisect``): every diverging stage is re-run by cross-feeding,
i.e. the torch computation of that stage alone, fed with the NumPy reference's
values of its inputs (:attr:`parity.stages.Stage.crossfeed`). A stage that still
diverges on reference inputs is a **root cause**; one that agrees only
**inherited** the error from upstream.

Across commits (``parity check``): exit codes for ``git bisect run``: 0 when the
selected stages agree, 1 when they diverge, 125 when the check cannot run here
(import error, missing fixture), which tells git bisect to skip the commit.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from .faults import inject
from .runner import RunContext, compare_stage, run_stages
from .stages import STAGES, Stage, get_stage

ROOT = "root_cause"
INHERITED = "inherited"
PRESUMED = "inherited_presumed"  # no cross-feed exists, and a root cause lies upstream
UNDETERMINED = "undetermined"  # no cross-feed and nothing upstream explains it


@dataclass
class Verdict:
    stage: str
    phase: int
    verdict: str
    direct: str  # the stage's own comparison message (first line)
    crossfed: str | None  # the cross-fed comparison message (first line), if any

    def to_dict(self) -> dict:
        return dict(stage=self.stage, phase=self.phase, verdict=self.verdict, direct=self.direct,
                    crossfed=self.crossfed)


@dataclass
class BisectResult:
    first_divergence: str | None
    verdicts: list[Verdict] = field(default_factory=list)

    @property
    def root_causes(self) -> list[str]:
        return [v.stage for v in self.verdicts if v.verdict in (ROOT, UNDETERMINED)]

    @property
    def inherited(self) -> list[str]:
        return [v.stage for v in self.verdicts if v.verdict in (INHERITED, PRESUMED)]

    def to_dict(self) -> dict:
        return {"first_divergence": self.first_divergence, "root_causes": self.root_causes,
                "inherited": self.inherited, "verdicts": [v.to_dict() for v in self.verdicts]}


def _first_line(text: str | None) -> str:
    return (text or "").strip().splitlines()[0] if text else ""


def classify(ctx: RunContext, records: list[dict]) -> BisectResult:
    """Cross-feed every diverging stage of a finished run (fault re-injected)."""
    diverging = [r for r in records if r["status"] in ("fail", "error")]
    result = BisectResult(diverging[0]["name"] if diverging else None)
    with inject(ctx.fault):
        for rec in diverging:
            stage = get_stage(rec["name"])
            direct = _first_line(rec.get("message"))
            if stage.crossfeed is None:
                verdict = PRESUMED if result.root_causes else UNDETERMINED
                result.verdicts.append(Verdict(stage.name, stage.phase, verdict, direct, None))
                continue
            try:
                comparison = compare_stage(stage, ctx, stage.crossfeed(ctx))
                crossfed = _first_line(comparison.message)
                verdict = INHERITED if comparison.passed else ROOT
            except Exception as exc:  # a stage that crashes on reference inputs is itself broken
                crossfed, verdict = f"cross-feed raised {type(exc).__name__}: {exc}", ROOT
            result.verdicts.append(Verdict(stage.name, stage.phase, verdict, direct, crossfed))
    return result


def bisect_run(ctx: RunContext, stages: list[Stage] | None = None, *, progress: bool | None = None
               ) -> tuple[list[dict], BisectResult]:
    """Run the stages, then classify the diverging ones."""
    records = run_stages(ctx, stages or list(STAGES), progress=progress)
    return records, classify(ctx, records)


def format_bisect(result: BisectResult) -> str:
    """Human-readable summary for the terminal."""
    if result.first_divergence is None:
        return "No divergence: every stage agrees; nothing to bisect."
    lines = [f"First divergence: {result.first_divergence}",
             f"Root cause(s): {', '.join(result.root_causes) or 'none found'}",
             f"Inherited: {', '.join(result.inherited) or 'none'}", "", "Evidence:"]
    for v in result.verdicts:
        lines.append(f"  phase {v.phase} {v.stage:<18} {v.verdict.upper():<19} direct: {v.direct}")
        if v.crossfed is not None:
            lines.append(f"  {'':<27}{'':<19} on reference inputs: {v.crossfed}")
    return "\n".join(lines)
