"""Scores and reports of a results file: the terminal summary and the Markdown table."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Sequence

from parity.mutation.generate import ROOT, _cut


def summarize(records: Sequence[dict], equivalent: dict[str, str] | None = None) -> dict:
    """Counts and scores of result records (each with ``id`` and ``status``).

    ``equivalent``: mutant id -> reason, the survivors judged equivalent.
    """
    equivalent = equivalent or {}
    counts: dict[str, int] = {}
    for r in records:
        counts[r["status"]] = counts.get(r["status"], 0) + 1
    total = len(records)
    killed = counts.get("killed", 0)
    judged = sum(1 for r in records if r["status"] != "killed" and r["id"] in equivalent)
    non_equivalent = total - judged
    return {"total": total, "counts": counts, "killed": killed, "equivalent": judged,
            "non_equivalent": non_equivalent,
            "score": killed / total if total else None,
            "score_non_equivalent": killed / non_equivalent if non_equivalent else None,
            "unjudged_survivors": sorted(r["id"] for r in records if r["status"] != "killed"
                                         and r["id"] not in equivalent),
            "seconds": round(sum(r.get("seconds") or 0.0 for r in records), 1)}


#: Verdicts on survivors, kept apart from the measured results: mutant id ->
#: {"verdict": "equivalent" | "not equivalent", "reason": the evidence}.
DEFAULT_VERDICTS = ROOT / "reports" / "mutation" / "verdicts.json"
VERDICTS = ("equivalent", "not equivalent")


def load_verdicts(path: str | os.PathLike | None = DEFAULT_VERDICTS) -> dict[str, dict]:
    """The verdicts file (empty when there is none); each verdict checked."""
    if not path or not Path(path).is_file():
        return {}
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    for mid, v in data.items():
        if v.get("verdict") not in VERDICTS or not v.get("reason"):
            raise ValueError(f"{path}: {mid}: a verdict needs 'verdict' in {VERDICTS} and a 'reason'")
    return data


def equivalent_ids(verdicts: dict[str, dict]) -> dict[str, str]:
    """id -> reason of the survivors judged equivalent (what :func:`summarize` takes)."""
    return {k: v["reason"] for k, v in verdicts.items() if v["verdict"] == "equivalent"}


def _verdict_text(rid: str, verdicts: dict[str, dict]) -> str:
    v = verdicts.get(rid)
    return f"{v['verdict']}: {v['reason']}" if v else "**not judged**"


def format_summary(summary: dict, records: Sequence[dict], verdicts: dict[str, dict] | None = None) -> str:
    """The score and the survivors, for the terminal."""
    verdicts = verdicts or {}
    lines = [f"mutation: {summary['total']} mutants: " + ", ".join(f"{n} {k}" for k, n in sorted(
        summary["counts"].items()))]
    if summary["total"]:
        lines.append(f"score: {summary['killed']}/{summary['total']} killed ({100 * summary['score']:.1f} %); "
                     f"{summary['equivalent']} survivor(s) judged equivalent; killed / non-equivalent = "
                     f"{summary['killed']}/{summary['non_equivalent']}"
                     + (f" ({100 * summary['score_non_equivalent']:.1f} %)" if summary["non_equivalent"] else ""))
    for r in records:
        if r["status"] != "killed":
            verdict = verdicts.get(r["id"], {}).get("verdict", "NOT JUDGED")
            lines.append(f"  {r['id']} {r['status']:<8} rc={r.get('rc')} {r['file']}:{r['line']} "
                         f"{r['operator']:<17} {_cut(r['original'], 40)} -> {_cut(r['mutated'], 40)}  ({verdict})")
    return "\n".join(lines)


def _md(text: str, width: int = 60) -> str:
    return "`" + _cut(text, width).replace("|", "\\|").replace("`", "'") + "`"


def _evidence(diff: dict | None) -> str:
    """The differential check's outcome of one mutant, in a few words."""
    if not diff:
        return "not run"
    cases = diff.get("cases", {})
    if diff.get("verdict") == "error":
        return "error: " + _cut(str(cases.get("error", "")).strip().splitlines()[-1:][0] if cases.get("error")
                                else "", 80)
    differing = [f"{name}: {', '.join(f'{k} {v}' for k, v in d.items())}" for name, d in cases.items()
                 if name != "seconds" and d]
    if differing:
        return "differs in " + _cut("; ".join(differing), 160)
    return f"same in all {len([k for k in cases if k != 'seconds'])} cases"


def config_label(data: dict) -> str:
    """The ``parity run`` options of a results file's last run (``--fixture F ...``)."""
    config = (data.get("runs") or [{}])[-1].get("config") or {}
    return " ".join(["--fixture", str(config.get("fixture")), *config.get("parity_args", [])])


def _killed_elsewhere(rid: str, others: Sequence[dict]) -> str:
    hits = [f"`{config_label(o)}` ({o['mutants'][rid].get('first_failure')})" for o in others
            if o["mutants"].get(rid, {}).get("status") == "killed"]
    return "; ".join(hits) if hits else "none"


def merge_diffs(runs: Sequence[dict]) -> dict[str, dict]:
    """Several ``diff --json`` files as one: each mutant's cases together, the worst verdict."""
    merged: dict[str, dict] = {}
    rank = {"same": 0, "differs": 1, "error": 2}
    for run in runs:
        for mid, entry in run.items():
            into = merged.setdefault(mid, {"verdict": "same", "cases": {}})
            into["cases"].update({k: v for k, v in entry.get("cases", {}).items() if k != "seconds"})
            if rank.get(entry.get("verdict"), 2) > rank[into["verdict"]]:
                into["verdict"] = entry.get("verdict", "error")
    return merged


def format_report(data: dict, verdicts: dict[str, dict] | None = None, diffs: dict[str, dict] | None = None,
                  others: Sequence[dict] = ()) -> str:
    """Markdown: the counts, the score, the time, and every survivor with its evidence and verdict.

    Parameters
    ----------
    data : dict
        The campaign's results (``run --json``).
    verdicts : dict, optional
        id -> {verdict, reason} (default: :data:`DEFAULT_VERDICTS`).
    diffs : dict, optional
        Outcomes of ``diff --json`` (evidence column).
    others : sequence of dict
        Results of the survivors re-run under other ``parity run`` options: where each
        survivor was killed (exit 1) instead.
    """
    verdicts = load_verdicts() if verdicts is None else verdicts
    diffs = diffs or {}
    records = [{"id": k, **v} for k, v in data["mutants"].items()]
    records.sort(key=lambda r: (r["file"], r["line"], r["col"], r["id"]))
    s = summarize(records, equivalent_ids(verdicts))
    c = s["counts"]
    other = sum(n for k, n in c.items() if k not in ("killed", "survived", "timeout"))
    per_file: dict[str, int] = {}
    for r in records:
        per_file[r["file"]] = per_file.get(r["file"], 0) + 1
    score = f"{100 * s['score_non_equivalent']:.1f} %" if s["score_non_equivalent"] is not None else "n/a"
    out = ["| sampled | killed (exit 1) | survived (exit 0) | other exit / crash | timeout | equivalent | "
           "score = killed / (sampled - equivalent) |",
           "| --- | --- | --- | --- | --- | --- | --- |",
           f"| {s['total']} | {s['killed']} | {c.get('survived', 0)} | {other} | {c.get('timeout', 0)} | "
           f"{s['equivalent']} | {s['killed']}/{s['non_equivalent']} = {score} |", "",
           "Sampled per file: " + ", ".join(f"`{f}` {n}" for f, n in sorted(per_file.items())) + ".", "",
           f"Child seconds: {s['seconds']:.0f} s in all, {s['seconds'] / max(1, s['total']):.2f} s per mutant."]
    runs = data.get("runs") or []
    if runs:
        wall = sum(r.get("wall_s") or 0.0 for r in runs)
        out.append(f"Wall time: {wall:.0f} s over {len(runs)} run(s) ({runs[-1].get('jobs')} job(s), "
                   f"{runs[-1].get('threads')} thread(s) each).")
    if others:
        out += ["", "Survivors re-run under other `parity run` options (killed = exit 1):", ""]
        for o in others:
            n = sum(1 for r in records if r["status"] != "killed" and o["mutants"].get(r["id"], {}).get(
                "status") == "killed")
            out.append(f"- `{config_label(o)}`: {n} of the survivors killed")
    out += ["", "| id | where | class | original | mutated | status | differential check | killed by | verdict |",
            "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in records:
        if r["status"] == "killed":
            continue
        out.append(f"| {r['id']} | {r['file'].split('/')[-1]}:{r['line']} | {r['operator']} | "
                   f"{_md(r['original'])} | {_md(r['mutated'])} | {r['status']} (exit {r.get('rc')}) | "
                   f"{_evidence(diffs.get(r['id']))} | {_killed_elsewhere(r['id'], others)} | "
                   f"{_verdict_text(r['id'], verdicts)} |")
    return "\n".join(out)
