"""Root causes told apart: which failing stage is a defect of its own, which inherits one.

Every failing stage record of a run gets a ``cause``::

    {"verdict": "root_cause" | "inherited", "inherited_from": [STAGE, ...],
     "basis": "input graph" | "cross-feed" | "recomputed internally" | "construction",
     "text": "root cause" | "inherited from STAGE"}

The evidence, strongest first:

1. **Construction.** A failed construction is a root cause; a stage that errs because
   that construction failed inherits it.
2. **Cross-feeding** (``parity bisect`` with a candidate that can recompute the stage on
   the reference's inputs): agreeing on fed inputs means inherited; still diverging means
   a root cause, unless the stage *recomputes* a quantity internally
   (:attr:`parity.stages.Stage.recomputes`: ``grad_q`` rebuilds K(k(q))) whose stage is
   itself a failing root, in which case the defect is that one (one defect, one root).
3. **The registry's input graph** (everywhere else: ``parity run``, subprocess adapters,
   dumps). A stage's upstream stages are those producing its ``inputs``, ``recomputes``
   and ``reads``. Walking upstream, a stage that failed is where an error could have come
   from; a stage that *passed* blocks the walk (the candidate's value agreed with the
   reference there, so an error did not travel through it); a stage that was not run or
   not comparable is walked through. A failing stage with no failing stage upstream is an
   independent root cause; otherwise it is inherited from the roots of those upstream
   failures. The graph can only presume: an inherited stage may hide a second defect of
   its own, which only cross-feeding can show.

The first failure of a run is its earliest failing stage in phase order, a failed
construction placed at the end of its own phase (stages of that phase that were compared
were computed before the construction failed), and stages that err only because a
construction failed are not candidates.
"""
from __future__ import annotations

from functools import lru_cache
from typing import Iterable, Mapping, Sequence

from parity.contract.results import DIVERGING as RESULT_DIVERGING, Status, is_construction
from parity.rendering.formatting import cause_text  # noqa: F401  (its old home was this module: parity.causes.cause_text)
from parity.stages import STAGE_NAMES, STAGES, Stage, get_stage

ROOT = "root_cause"
INHERITED = "inherited"
DIVERGING = RESULT_DIVERGING  # kept for importers


@lru_cache(maxsize=1)
def producers() -> dict[str, tuple[str, ...]]:
    """Quantity -> the stages comparing it (``mode_maps`` -> both cluster maps)."""
    out: dict[str, list[str]] = {}
    for s in STAGES:
        # Only a stage comparing the candidate's computation is upstream of other stages
        # (invariants and the dtype audit check it, oracles check the reference).
        if s.comparator.computes:
            out.setdefault(s.quantity, []).append(s.name)
    return {q: tuple(names) for q, names in out.items()}


def upstream(stage: "Stage", edges: str = "all") -> tuple[str, ...]:
    """The stages directly upstream of ``stage`` in the input graph.

    ``edges``: ``"all"`` (inputs, recomputes, reads), ``"inputs"`` (what a cross-feed
    feeds) or ``"internal"`` (recomputes and reads: what a cross-feed does not feed).
    """
    quantities = {"all": stage.inputs + stage.recomputes + stage.reads, "inputs": stage.inputs,
                  "internal": stage.recomputes + stage.reads}[edges]
    return tuple(dict.fromkeys(n for q in quantities for n in producers().get(q, ()) if n != stage.name))


def failing_upstream(stage: "Stage", status: Mapping[str, str], edges: str = "all") -> list[str]:
    """Failing stages reachable upstream of ``stage``; a passing stage blocks the walk."""
    found: list[str] = []
    seen: set[str] = {stage.name}
    todo = list(upstream(stage, edges))
    while todo:
        name = todo.pop(0)
        if name in seen:
            continue
        seen.add(name)
        st = status.get(name)
        if st in DIVERGING:
            found.append(name)
        elif st != Status.PASS:  # not run, not comparable: the error may have passed through unseen
            todo.extend(upstream(get_stage(name)))
    return sorted(found, key=_order)


def _order(name: str) -> int:
    return STAGE_NAMES.index(name) if name in STAGE_NAMES else -1


def phase_key(record: Mapping) -> tuple:
    """Sort key of a record in phase order: a construction at the end of its own phase."""
    phase = record.get("phase") if isinstance(record.get("phase"), int) else 99
    if is_construction(record):
        return (phase, 1, 0)
    return (phase, 0, _order(str(record.get("name"))))


def _construction_of(record: Mapping, builds: Sequence[Mapping]) -> Mapping | None:
    """The failed construction a stage's error comes from (its ``build_step`` detail), if any."""
    details = record.get("details") if isinstance(record.get("details"), Mapping) else {}
    if is_construction(record) or not details.get("build_step") or not builds:
        return None
    message = str(record.get("message") or "")
    for b in builds:
        side = (b.get("details") or {}).get("side")
        if side and f"the {side}'s construction" in message:
            return b
    return builds[0]


def first_failure(records: Iterable[Mapping]) -> str | None:
    """The earliest failing record in phase order (errors caused by a failed construction excluded)."""
    records = list(records)
    builds = [r for r in records if is_construction(r) and r.get("status") in DIVERGING]
    failing = [r for r in records if r.get("status") in DIVERGING and _construction_of(r, builds) is None]
    return str(min(failing, key=phase_key)["name"]) if failing else None


def make_cause(verdict: str, roots: Sequence[str] = (), basis: str = "input graph") -> dict:
    roots = list(dict.fromkeys(roots))
    if verdict == ROOT:
        text = "root cause"
    else:
        text = f"inherited from {', '.join(roots)}" if roots else "inherited (from an input no stage compares)"
    return {"verdict": verdict, "inherited_from": roots, "basis": basis, "text": text}


def assign_causes(records: Sequence[dict], crossfed: Mapping[str, bool] | None = None) -> dict[str, dict]:
    """A cause for every failing record (name -> cause), see the module docstring.

    ``crossfed``: stage name -> whether its cross-fed value still diverges (only for the
    stages that could be cross-fed); the graph decides for the others.
    """
    crossfed = crossfed or {}
    status = {str(r.get("name")): str(r.get("status")) for r in records}
    builds = [r for r in records if is_construction(r) and r.get("status") in DIVERGING]
    causes: dict[str, dict] = {}

    def roots_of(names: Iterable[str]) -> list[str]:
        out: list[str] = []
        for n in names:
            c = causes.get(n)
            out += [n] if c is None or c["verdict"] == ROOT else c["inherited_from"] or [n]
        return sorted(dict.fromkeys(out), key=_order)

    for rec in sorted((r for r in records if r.get("status") in DIVERGING), key=phase_key):
        name = str(rec.get("name"))
        build = _construction_of(rec, builds)
        if is_construction(rec):
            causes[name] = make_cause(ROOT, basis="construction")
        elif build is not None:
            causes[name] = make_cause(INHERITED, [str(build["name"])], "construction")
        elif name not in STAGE_NAMES:
            causes[name] = make_cause(ROOT)
        elif name in crossfed:
            stage = get_stage(name)
            if not crossfed[name]:  # agrees on the reference's inputs
                causes[name] = make_cause(INHERITED, roots_of(failing_upstream(stage, status, "inputs")), "cross-feed")
            else:
                internal = failing_upstream(stage, status, "internal")
                causes[name] = (make_cause(INHERITED, roots_of(internal), "recomputed internally") if internal
                                else make_cause(ROOT, basis="cross-feed"))
        else:
            up = failing_upstream(get_stage(name), status)
            causes[name] = make_cause(INHERITED, roots_of(up)) if up else make_cause(ROOT)
    return causes


def annotate(records: Sequence[dict], crossfed: Mapping[str, bool] | None = None) -> list[dict]:
    """Set ``record["cause"]`` on every failing record (and drop a stale one elsewhere); returns records."""
    causes = assign_causes(records, crossfed)
    for rec in records:
        if rec.get("name") in causes:
            rec["cause"] = causes[str(rec["name"])]
        else:
            rec.pop("cause", None)
    return list(records)


def root_causes(records: Iterable[Mapping]) -> list[str]:
    """Names of the root-cause records, in phase order."""
    roots = [r for r in records if isinstance(r.get("cause"), Mapping) and r["cause"].get("verdict") == ROOT]
    return [str(r["name"]) for r in sorted(roots, key=phase_key)]
