"""The report's view model: everything ``report.html.j2`` shows, preformatted, built from a result.

:func:`report_context` turns a schema-1 result dict into plain strings, lists and
small dicts; the template only lays them out. The page's parts, in order: the run's
identity and provenance, the verdict (the first divergence, its diagnosis and cause),
the tiers used and their overrides, one table per phase, and one detail section per
diverging stage (message, worst elements, figures, NaN pattern, ULP distances,
eigenspace table, divergence signatures).
"""

from __future__ import annotations

import math
from typing import Any, Iterable, Mapping

from parity.contract.results import Status
from parity.comparison.kinds import find_kind
from parity.comparison.engine import ELEMENTWISE, NORMWISE, format_ulp
from parity.rendering.formatting import cause_text
from parity.rendering.divergence import (DIVERGING, divergence_clause, divergence_summary, effective_tier,
                                         first_divergence, rel_errors)
from parity.rendering.figures import hist_figure, slice_figure
from parity.rendering.formatting import (fmt, fmt_duration, fmt_index, fmt_mapping, fmt_plain, fmt_tol,
                                         fmt_value, headline, is_num, slug)
from parity.rendering.provenance_table import provenance_rows

__all__ = ["PHASE_TITLES", "report_context"]

#: Human titles of the four parity phases.
PHASE_TITLES: dict[int, str] = {
    1: "Grid and precision",
    2: "A/M matrices and structure factors",
    3: "Phonons and covariance",
    4: "End-to-end intensity",
}

_STATUS_LABELS = {
    Status.PASS: ("\u2713 pass", "st-pass"),
    Status.FAIL: ("\u2717 FAIL", "st-fail"),
    Status.NOT_COMPARABLE: ("\u2013 not comparable", "st-nc"),
    Status.ERROR: ("! ERROR", "st-error"),
}

#: Rows shown at most in the per-stage tables (the rest are counted).
_MAX_WORST_ROWS = 20
_MAX_EIGEN_ROWS = 40


def _status(stage: Mapping[str, Any]) -> tuple[str, str]:
    """(label, css class) for a stage's status; unknown statuses shown as-is."""
    status = str(stage.get("status"))
    return _STATUS_LABELS.get(status, (status, "st-other"))


def _grid_text(grid: Any) -> list[tuple[str, str]]:
    """``[("h", "-2 … 2, 2 samples per unit"), ...]`` for the sampling grid."""
    rows: list[tuple[str, str]] = []
    if not isinstance(grid, Mapping):
        return [("grid", fmt_plain(grid))]
    for axis in ("h", "k", "l"):
        value = grid.get(f"{axis}sampling")
        if isinstance(value, (list, tuple)) and len(value) == 3:
            lo, hi, n = value
            rows.append((axis, f"{fmt_plain(lo)} \u2026 {fmt_plain(hi)}, "
                               f"{fmt_plain(n)} sample(s) per Miller unit"))
        elif value is not None:
            rows.append((axis, fmt_plain(value)))
    for key, value in grid.items():
        if key not in ("hsampling", "ksampling", "lsampling"):
            rows.append((key, fmt_plain(value)))
    return rows


def _identity(result: Mapping[str, Any]) -> dict[str, Any]:
    """Run-identity rows: run facts, grid, model parameters, environment."""
    device = result.get("device")
    if result.get("device_name"):
        device = f"{device or '?'} \u2014 {result['device_name']}"
    started = result.get("started_at")
    rows = [
        ("Reference", _backend_text(result.get("reference"))),
        ("Candidate", _backend_text(result.get("candidate"))),
        ("Fixture", fmt_plain(result.get("fixture"))),
        ("PDB file", fmt_plain(result.get("pdb_path"))),
        ("Device", fmt_plain(device)),
        ("Precision (dtype)", fmt_plain(result.get("dtype"))),
        ("Started", str(started).replace("T", " ") if started else "\u2014"),
        ("Duration", _duration_text(result)),
    ]
    params = result.get("params")
    env = result.get("environment")
    return {
        "rows": rows,
        "grid": _grid_text(result.get("grid")),
        "params": [(str(k), fmt_plain(v)) for k, v in params.items()]
        if isinstance(params, Mapping) else [],
        "environment": [(str(k), fmt_plain(v)) for k, v in env.items()]
        if isinstance(env, Mapping) else [],
    }


def _duration_text(result: Mapping[str, Any]) -> str:
    """The run's ``duration_s`` and what it covers (the stages; not start-up, set-up or writing)."""
    text = fmt_duration(result.get("duration_s"))
    if not is_num(result.get("duration_s")):
        return text
    timings = result.get("phase_timings") if isinstance(result.get("phase_timings"), Mapping) else {}
    setup = sum(float(v) for k, v in timings.items() if str(k).startswith("setup_") and is_num(v))
    covers = "computing and comparing the stages"
    if setup:
        covers += f"; building both sides took {fmt_duration(setup)} more"
    return f"{text} ({covers}; start-up, imports and writing the outputs not included)"


def _backend_text(info: Any) -> str:
    """``torch 0.1.0 (commit abc123) from eryx.models_torch (...)`` for the identity table."""
    if not isinstance(info, Mapping) or not info.get("name"):
        return "\u2014"
    parts = [str(info["name"])]
    if info.get("version"):
        parts.append(str(info["version"]))
    if info.get("commit"):
        parts.append(f"(commit {str(info['commit'])[:12]})")
    if info.get("origin"):
        parts.append(f"from {info['origin']}")
    return " ".join(parts)


def _side_name(result: Mapping[str, Any], side: str, default: str) -> str:
    info = result.get(side)
    return str(info.get("name")) if isinstance(info, Mapping) and info.get("name") else default


def _diagnosis_rows(stage: Mapping[str, Any]) -> list[dict[str, str]]:
    """The stage's divergence signatures for the report: explaining ones first, at most three."""
    rows = []
    for sig in stage.get("diagnosis") or []:
        if not isinstance(sig, Mapping):
            continue
        rows.append({"phrase": str(sig.get("phrase") or sig.get("signature") or ""),
                     "sentence": str(sig.get("sentence") or ""),
                     # the sentence usually states the residual itself: never say it twice
                     "residual": None if "residual" in str(sig.get("sentence") or "") else fmt(sig.get("residual")),
                     "explains": bool(sig.get("explains"))})
    rows.sort(key=lambda r: not r["explains"])
    return rows[:3]


def _fault_text(fault: Any) -> str | None:
    """Injected fault as text (``str`` or ``{"name": ..., ...}``); ``None`` when absent."""
    if fault in (None, "", {}):
        return None
    if isinstance(fault, Mapping):
        name = fault.get("name")
        rest = {k: v for k, v in fault.items() if k != "name"}
        return f"{name} ({fmt_mapping(rest)})" if name and rest else str(name or fmt_mapping(fault))
    return str(fault)


def _why(stage: Mapping[str, Any]) -> str | None:
    """"diagnosis: PHRASE · root cause" (or "inherited from STAGE") for a diverging stage."""
    if stage.get("status") not in DIVERGING:
        return None
    details = stage.get("details") if isinstance(stage.get("details"), Mapping) else {}
    phrase = details.get("diagnosis_phrase")
    parts = [f"diagnosis: {phrase}"] if isinstance(phrase, str) and phrase else []
    cause = cause_text(stage)
    if cause:
        parts.append(cause)
    return " \u00b7 ".join(parts) or None


def _cause_sentence(stage: Mapping[str, Any]) -> str | None:
    """The detail section's line on where a diverging stage's error comes from."""
    cause = stage.get("cause")
    if not isinstance(cause, Mapping) or not cause.get("text"):
        return None
    basis = f" (by {cause['basis']})" if cause.get("basis") else ""
    if cause.get("verdict") == "root_cause":
        return f"Root cause{basis}: nothing upstream that diverged explains this stage; fix it here."
    return f"{str(cause['text']).capitalize()}{basis}: fix that stage first; this one may only follow it."


def _row(i: int, stage: Mapping[str, Any], first_index: int | None) -> dict[str, Any]:
    """Phase-table row for stage ``i`` (``first_index``: the first divergence)."""
    label, css = _status(stage)
    status = stage.get("status")
    worst = stage.get("worst") or {}
    n_mis, n_tot = stage.get("n_mismatch"), stage.get("n_total")
    note = None
    if status == Status.NOT_COMPARABLE:
        note = "Reason: " + (stage.get("reason") or headline(stage.get("message")) or "no message")
    elif status == Status.ERROR:
        note = "Error: " + (headline(stage.get("message")) or "no message")
    why = _why(stage)
    if why:
        note = f"{why} \u00b7 {note}" if note else why
    rtol, atol, n_terms = effective_tier(stage)
    normwise, elementwise = rel_errors(stage)
    return {
        "anchor": slug(stage.get("name", ""), i),
        "name": str(stage.get("name")),
        "tier": str(stage.get("tier") or "\u2014"),
        "rtol": fmt_tol(rtol),
        "atol": fmt_tol(atol),
        "n_terms": n_terms,
        "status_label": label,
        "status_class": css,
        "max_abs": fmt(stage.get("max_abs")),
        "max_rel": fmt(normwise),
        "max_rel_elementwise": fmt(elementwise),
        "mismatch": (f"{n_mis} / {n_tot}" if is_num(n_mis) and is_num(n_tot) else "\u2014"),
        "location": str(worst.get("location") or fmt_index(worst.get("index")) or "\u2014"),
        "time": fmt_duration(stage.get("duration_s")),
        "first": i == first_index,
        "has_detail": status in DIVERGING,
        "note": note,
    }


def _phase_key(phase: Any) -> tuple[int, str]:
    """Sort key: numbered phases in order, anything else after them."""
    return (int(phase), "") if is_num(phase) else (10**6, str(phase))


def _phase_time(timings: Any, phase: Any) -> str | None:
    """Formatted duration of a phase, ``None`` when not recorded."""
    if not isinstance(timings, Mapping):
        return None
    value = timings.get(str(phase), timings.get(phase))
    return fmt_duration(value) if is_num(value) else None


def _phases(result: Mapping[str, Any], first_index: int | None) -> list[dict[str, Any]]:
    """Stages grouped by phase, in phase order, each with its summary line."""
    timings = result.get("phase_timings") or {}
    groups: dict[Any, list[dict[str, Any]]] = {}
    for i, stage in enumerate(result["stages"]):
        groups.setdefault(stage.get("phase"), []).append(_row(i, stage, first_index))
    phases = []
    for phase in sorted(groups, key=_phase_key):
        rows = groups[phase]
        counts: dict[str, int] = {}
        for stage in result["stages"]:
            if stage.get("phase") == phase:
                counts[str(stage.get("status"))] = counts.get(str(stage.get("status")), 0) + 1
        summary = ", ".join(f"{n} {s.replace('_', ' ')}" for s, n in counts.items())
        diverged = any(counts.get(s) for s in DIVERGING)
        phases.append({
            "number": phase,
            "title": PHASE_TITLES.get(phase, f"Phase {phase}") if is_num(phase) else str(phase),
            "time": _phase_time(timings, phase),
            "summary": summary,
            "diverged": diverged,
            "rows": rows,
        })
    return phases


def _eigen_rows(table: Iterable[Mapping[str, Any]], rtol: Any) -> tuple[list[dict], int]:
    """Eigen table rows sorted worst first (``null`` = NaN counts as worst)."""
    def key(row: Mapping[str, Any]) -> tuple[float, float, float]:
        def val(name: str) -> float:
            v = row.get(name)
            return math.inf if not is_num(v) or math.isnan(v) else float(v)
        return (val("max_projector_err"), val("residual"), val("orthonormality"))

    rows = sorted(table, key=key, reverse=True)
    out = []
    for row in rows[:_MAX_EIGEN_ROWS]:
        err = row.get("max_projector_err")
        sizes = row.get("cluster_sizes") or []
        out.append({
            "bz": "(" + ",".join(str(v) for v in row.get("bz", [])) + ")",
            "clusters": ", ".join(str(s) for s in sizes),
            "degenerate": any(is_num(s) and s > 1 for s in sizes),
            "projector": fmt(err, none="NaN"),
            "residual": fmt(row.get("residual"), none="NaN"),
            "orthonormality": fmt(row.get("orthonormality"), none="NaN"),
            "bad": (not row["passed"]) if isinstance(row.get("passed"), bool)
            else ((not is_num(err)) or (is_num(rtol) and err > rtol)),
        })
    return out, len(rows)


def _detail(i: int, stage: Mapping[str, Any], first_index: int | None) -> dict[str, Any]:
    """Detail section of a diverging stage, figures included."""
    details = stage.get("details") or {}
    label, css = _status(stage)
    worst_rows = []
    worst_elements = details.get("worst_elements") or []
    for el in worst_elements[:_MAX_WORST_ROWS]:
        worst_rows.append({
            "location": str(el.get("location") or fmt_index(el.get("index"))),
            "index": fmt_index(el.get("index")),
            "expected": fmt_value(el.get("expected")),
            "actual": fmt_value(el.get("actual")),
            "abs": fmt(el.get("abs"), none="NaN/inf"),
            "rel": fmt(el.get("rel"), none="NaN/inf"),
        })
    hist = details.get("log10_rel_hist")
    hist_png = hist_figure(hist, stage.get("rtol"), str(stage.get("tier"))) \
        if isinstance(hist, Mapping) else None
    sl = details.get("slice")
    slice_png = slice_figure(sl) if isinstance(sl, Mapping) else None
    nan = details.get("nan_pattern")
    ulp = details.get("ulp")
    eigen = details.get("eigen_table")
    eigen_rows, eigen_total = (_eigen_rows(eigen, stage.get("rtol"))
                               if isinstance(eigen, list) and eigen else ([], 0))
    rtol, atol, n_terms = effective_tier(stage)
    normwise, elementwise = rel_errors(stage)
    n_compared = stage.get("n_compared", details.get("n_compared"))
    return {
        "anchor": slug(stage.get("name", ""), i),
        "name": str(stage.get("name")),
        "phase": stage.get("phase"),
        "status_label": label,
        "status_class": css,
        "tier": str(stage.get("tier") or "\u2014"),
        "rtol": fmt_tol(rtol),
        "atol": fmt_tol(atol),
        "n_terms": n_terms,
        "counts": _count_phrases(stage, n_compared),
        "max_abs": fmt(stage.get("max_abs")),
        "max_rel": fmt(normwise),
        "max_rel_elementwise": fmt(elementwise),
        "first": i == first_index,
        "downstream": first_index is not None and i > first_index,
        "cause": _cause_sentence(stage),
        "message": str(stage.get("message") or "").strip(),
        "worst_rows": worst_rows,
        "worst_total": len(worst_elements),
        "hist_png": hist_png,
        "slice_png": slice_png,
        "slice_title": str(sl.get("title") or "") if isinstance(sl, Mapping) else "",
        "nan": ({"expected": fmt(nan.get("expected_nan")), "actual": fmt(nan.get("actual_nan")),
                 "mismatched": fmt(nan.get("mismatched")),
                 "bad": bool(nan.get("mismatched"))}
                if isinstance(nan, Mapping) else None),
        # complex data nest per-part stats: {"median", "p99", "max", "parts": {"re": {...}, "im": {...}}}
        "ulp": _ulp_rows(ulp) if isinstance(ulp, Mapping) else None,
        "eigen_rows": eigen_rows,
        "eigen_total": eigen_total,
        "diagnosis": _diagnosis_rows(stage),
        "diagnosed": "diagnosis" in stage and stage.get("status") == Status.FAIL,
        "diagnosis_png": details.get("diagnosis_figure") if str(details.get("diagnosis_figure", "")).startswith(
            "data:image/png;base64,") else None,
    }


def _count_units(stage: Mapping[str, Any]) -> tuple[str, str]:
    """What ``n_total``/``n_mismatch`` and ``n_compared`` count (see
    :class:`parity.comparison.common.Comparison`): elements, except an eigenspace
    comparison (BZ points; eigenvalue clusters), a dtype audit (tensors) and a single
    check over many elements (an invariant or oracle with ``n_total`` 1)."""
    kind = find_kind(stage.get("kind"))  # None for a construction record: elements
    return kind.count_units(stage.get("n_total")) if kind is not None else ("elements", "elements")


def _count_phrases(stage: Mapping[str, Any], n_compared: Any) -> list[str]:
    """``["1104 of 6912 elements outside tolerance", "6912 of 6912 elements compared numerically"]``.

    The two counts can count different things (an eigenspace comparison fails BZ points
    but compares eigenvalue clusters), so each names its unit and "N of TOTAL" is only
    written when both count the same unit.
    """
    total_unit, compared_unit = _count_units(stage)
    n_mis, n_tot = stage.get("n_mismatch"), stage.get("n_total")
    out = []
    if is_num(n_mis) and is_num(n_tot) and n_mis:
        out.append(f"{n_mis} of {n_tot} {total_unit} outside tolerance")
    if is_num(n_compared):
        if compared_unit == total_unit and is_num(n_tot):
            out.append(f"{n_compared} of {n_tot} {compared_unit} compared numerically")
        else:
            out.append(f"{n_compared} {compared_unit} compared numerically")
    return out


def _ulp_rows(ulp: Mapping[str, Any]) -> list[tuple[str, str]] | None:
    """``[("ULP distance", "median 1 ulp, ..."), ("real part", ...), ...]`` (complex data has parts)."""
    rows = [("ULP distance", format_ulp(ulp))]
    names = {"re": "real part", "im": "imaginary part"}
    for part, stats in (ulp.get("parts") or {}).items():
        if isinstance(stats, Mapping):
            rows.append((f"ULP distance, {names.get(part, part)}", format_ulp(stats)))
    rows = [(k, v) for k, v in rows if v]
    return rows or None


def _overrides(result: Mapping[str, Any]) -> dict[str, Any] | None:
    """The run's tier overrides (rows of ``result["tier_overrides"]``); None when not recorded."""
    rows = result.get("tier_overrides")
    if not isinstance(rows, list):
        return None
    out = []
    for row in rows:
        if isinstance(row, Mapping):
            out.append({"tier": str(row.get("tier")), "key": str(row.get("key")),
                        "value": fmt_tol(row.get("value")), "table": fmt_tol(row.get("table_value")),
                        "source": str(row.get("source") or "not recorded")})
    return {"rows": out}


def _tiers_used(stages: Iterable[Mapping[str, Any]]) -> list[dict[str, str]]:
    """Each tier of a run once, in first-use order: ``{"name", "rtol", "atol", "scaled"}``.

    A stage records the numbers it was judged by, which a tier scales per stage (sums of
    many terms, single-precision stage tiers): such a tier shows the range of its values
    and ``scaled`` is true, rather than being listed once per value.
    """
    values: dict[str, dict[str, set]] = {}
    for stage in stages:
        if stage.get("tier"):
            seen = values.setdefault(str(stage["tier"]), {"rtol": set(), "atol": set()})
            for key in ("rtol", "atol"):
                if is_num(stage.get(key)):
                    seen[key].add(float(stage[key]))

    def span(numbers: set) -> str:
        if not numbers:
            return "\u2014"
        lo, hi = min(numbers), max(numbers)
        return fmt_tol(lo) if lo == hi else f"{fmt_tol(lo)} \u2026 {fmt_tol(hi)}"

    return [{"name": name, "rtol": span(v["rtol"]), "atol": span(v["atol"]),
             "scaled": len(v["rtol"]) > 1 or len(v["atol"]) > 1} for name, v in values.items()]


def report_context(result: Mapping[str, Any]) -> dict[str, Any]:
    """Everything ``report.html.j2`` shows, preformatted (the template only lays out).

    Parameters
    ----------
    result : mapping
        A schema-1 parity result, already validated (``stages`` a list of objects
        with ``name``, ``phase`` and ``status``).

    Returns
    -------
    dict
        The template's variables: ``title``, ``fixture``, ``identity``, ``provenance``,
        ``fault``, ``verdict``, ``summary_text``, ``tiers``, ``overrides``, ``labels``,
        ``reference_name``, ``candidate_name``, ``phases``, ``details``, ``bisect``.
    """
    stages = result["stages"]
    found = first_divergence(result)
    first_index = found[0] if found else None
    counts: dict[str, int] = {}
    for stage in stages:
        counts[str(stage.get("status"))] = counts.get(str(stage.get("status")), 0) + 1
    passed = bool(result.get("passed"))
    diverged = any(stage.get("status") in DIVERGING for stage in stages)
    verdict: dict[str, Any] = {
        "passed": passed,
        # A run that failed only because something could not be compared did not diverge.
        "label": "PASSED" if passed else ("DIVERGED" if diverged or not counts.get(Status.NOT_COMPARABLE)
                                          else "NOT COMPARABLE"),
        "counts": f"{len(stages)} stage(s): " + ", ".join(
            f"{n} {s.replace('_', ' ')}" for s, n in counts.items()),
        "first": None,
        "roots": None,
    }
    if found is not None:
        _, stage = found
        verdict["first"] = {
            "phase": stage.get("phase"),
            "name": str(stage.get("name")),
            "clause": divergence_clause(stage),
            "anchor": slug(stage.get("name", ""), found[0]),
            "why": _why(stage),
        }
        roots = [str(s.get("name")) for s in stages if isinstance(s, Mapping) and isinstance(s.get("cause"), Mapping)
                 and s["cause"].get("verdict") == "root_cause"]
        verdict["roots"] = roots if len(roots) > 1 else None
    details = ([] if first_index is None else
               [_detail(i, s, first_index) for i, s in enumerate(stages)
                if s.get("status") in DIVERGING])
    fixture = fmt_plain(result.get("fixture"))
    bisect = result.get("bisect") if isinstance(result.get("bisect"), Mapping) else None
    return {
        "bisect": bisect,
        "title": f"Parity report \u2014 {fixture} \u2014 {verdict['label']}",
        "fixture": fixture,
        "identity": _identity(result),
        "provenance": provenance_rows(result),
        "fault": _fault_text(result.get("fault")),
        "verdict": verdict,
        "summary_text": divergence_summary(result),
        "tiers": _tiers_used(stages),
        "overrides": _overrides(result),
        "labels": {"normwise": NORMWISE, "elementwise": ELEMENTWISE},
        "reference_name": _side_name(result, "reference", "reference"),
        "candidate_name": _side_name(result, "candidate", "candidate"),
        "phases": _phases(result, first_index),
        "details": details,
    }
