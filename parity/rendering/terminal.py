"""What a run prints: the header, the phase-by-phase table and the summary line.

The last column (reason, location, diagnosis, cause) is wrapped at word boundaries onto
continuation lines under itself, never cut (:data:`REASON_WIDTH`).
"""
from __future__ import annotations

import textwrap

from parity.contract.results import Status, Verdict, is_construction
from parity.rendering.formatting import cause_text
from parity.stages import PHASE_TITLES

#: Width of the table's last column; longer text wraps onto continuation lines.
REASON_WIDTH = 72


def _first_line(text) -> str:
    lines = [ln.strip() for ln in str(text or "").splitlines() if ln.strip()]
    return lines[0] if lines else ""


def stage_reason(s: dict) -> str:
    """What a stage that did not pass says, in full: its reason or message, diagnosis and cause."""
    if s.get("status") == Status.PASS:
        return ""
    phrase = (s.get("details") or {}).get("diagnosis_phrase") if isinstance(s.get("details"), dict) else None
    if s.get("status") == Status.FAIL:
        parts = [((s.get("worst") or {}).get("location") or "") if s.get("max_abs") else ""]
        parts.append(f"[{phrase}]" if phrase else "")
    else:
        parts = [_first_line(s.get("message"))]
    cause = cause_text(s)
    text = "  ".join(p for p in parts if p)
    return f"{cause.upper() if cause == 'root cause' else cause}: {text}" if cause and text else (cause or text)


def wrap_reason(text: str, indent: int, width: int = REASON_WIDTH) -> str:
    """``text`` wrapped at word boundaries; continuation lines indented by ``indent`` spaces."""
    lines = textwrap.wrap(text, width=width, break_long_words=False, break_on_hyphens=False) or [""]
    return ("\n" + " " * indent).join(lines)


def _fmt(x) -> str:
    return "-" if x is None else f"{x:.2e}"


def _backend_line(info: dict | None) -> str:
    if not info:
        return "?"
    text = str(info.get("name"))
    extra = [str(info[k]) for k in ("version",) if info.get(k)]
    if info.get("commit"):
        extra.append(str(info["commit"])[:10])
    if info.get("fault"):
        extra.append(f"FAULT {info['fault']}")
    return text + (f" ({', '.join(extra)})" if extra else "")


def format_header(result: dict) -> list[str]:
    g = result["grid"]
    lines = [f"parity {result['fixture']}  grid {g['hsampling']} {g['ksampling']} {g['lsampling']}  device "
             f"{result['device']} ({result.get('device_name', '')})  dtype {result['dtype']}"
             + (f"  FAULT {result['fault']}" if result.get("fault") else "")]
    if result.get("reference") or result.get("candidate"):
        lines.append(f"reference {_backend_line(result.get('reference'))}  vs  candidate "
                     f"{_backend_line(result.get('candidate'))}")
    from parity.rendering.provenance_table import format_provenance

    lines += format_provenance(result)  # dumps: both sides' own environments, side by side
    for row in result.get("tier_overrides") or []:
        if isinstance(row, dict):
            table = f" (table {row['table_value']:.3g})" if row.get("table_value") is not None else ""
            lines.append(f"tier override: {row['tier']}.{row['key']} = {row['value']:.3g}{table} from {row['source']}")
    return lines


def format_table(result: dict) -> str:
    """The phase-by-phase table printed by ``parity run`` and ``parity compare``.

    Columns: the greatest absolute difference, the normwise relative error
    max|a - e| / max|e| (what the tiers judge) and the element-wise one max |a - e| / |e|.
    """
    lines = format_header(result)
    header = (f"  {'stage':<18} {'tier':<15} {'status':<15} {'max abs':>9} {'normwise':>9} {'elemwise':>9}  "
              "worst location / diagnosis")
    builds = [s for s in result["stages"] if is_construction(s)]
    if builds:
        lines += ["", "Construction"]
        for s in builds:
            head = f"  {s['name']:<34} ERROR (phase {s['phase']})  "
            lines.append(head + wrap_reason(_first_line(s.get("message")), len(head)))
    phase = None
    for s in result["stages"]:
        if is_construction(s):
            continue
        if s["phase"] != phase:
            phase = s["phase"]
            lines += ["", f"Phase {phase}: {PHASE_TITLES.get(phase, '')}", header]
        status = s["status"].upper() if s["status"] != Status.PASS else Status.PASS.value
        where = stage_reason(s) if s["status"] != Status.PASS else \
            (((s.get("worst") or {}).get("location") or "") if s.get("max_abs") else "")
        head = (f"  {s['name']:<18} {s['tier']:<15} {status:<15} {_fmt(s['max_abs']):>9} "
                f"{_fmt(s['max_rel']):>9} {_fmt(s.get('max_rel_elementwise')):>9}  ")
        lines.append(head + wrap_reason(where, len(head)))
    lines.append("")
    lines.append(format_summary(result))
    return "\n".join(lines)


def format_summary(result: dict) -> str:
    """The verdict line(s): what agreed, how many elements were compared, what was not seen."""
    stages = [s for s in result["stages"] if not is_construction(s)]
    n = len(stages)
    counts = {k: sum(1 for s in result["stages"] if s["status"] == k) for k in Status}
    compared = f"{result.get('n_compared', 0):,} elements compared"
    nc = f", {counts[Status.NOT_COMPARABLE]} not comparable" if counts[Status.NOT_COMPARABLE] else ""
    verdict = result.get("verdict") or (Verdict.PASS if result["passed"] else Verdict.DIVERGED)
    lines = []
    if verdict == Verdict.PASS:
        lines.append(f"PASSED: {counts[Status.PASS]} of {n} stages agree{nc}; {compared} ({result['duration_s']:.1f} s)")
    elif verdict == Verdict.INCOMPLETE:
        lines.append(f"INCOMPLETE: no divergence, but map stage(s) {', '.join(result.get('incomplete', []))} "
                     f"compared nothing; {counts[Status.PASS]} of {n} stages agree{nc}; {compared} "
                     f"({result['duration_s']:.1f} s)")
    else:
        first = next(s for s in result["stages"] if s["name"] == result["first_failure"])
        lines.append(f"DIVERGED: first failure {first['name']} (phase {first['phase']}); {counts[Status.FAIL]} failed, "
                     f"{counts[Status.ERROR]} errors of {n} stages{nc}; {compared} ({result['duration_s']:.1f} s)")
        lines.append("  " + wrap_reason(_first_line(first.get("message")), 2, width=110))
        phrase = (first.get("details") or {}).get("diagnosis_phrase") if isinstance(first.get("details"), dict) \
            else None
        if phrase:
            lines.append(f"  diagnosis: {phrase}")
        roots = [s["name"] for s in result["stages"] if (s.get("cause") or {}).get("verdict") == "root_cause"]
        if roots:
            lines.append(f"  root cause{'s' if len(roots) > 1 else ''}: {', '.join(roots)}"
                         + (" (independent)" if len(roots) > 1 else "")
                         + (f"; {first['name']} is {cause_text(first)}" if first["name"] not in roots
                            and cause_text(first) else ""))
    lines += [f"NOTE: {note}" for note in result.get("notes", [])]
    return "\n".join(lines)
