"""Where each side's numbers came from, side by side: ``parity compare``'s provenance table.

A dump (``parity dump``) records the backend that computed it (name, version, commit),
the machine and library versions it ran with, its device and dtype. When two dumps made
in different environments disagree, that difference is often the explanation, so
``parity compare`` shows both sides' provenance next to each other, the rows that differ
marked, in the terminal and in the HTML report (not the environment of the machine that
runs ``compare``, which the result's ``environment`` records separately).
"""
from __future__ import annotations

from typing import Any, Mapping

#: (label, where in a side's info: a key of the info or "environment.KEY").
FIELDS: tuple[tuple[str, str], ...] = (
    ("backend", "backend"), ("version", "version"), ("commit", "commit"), ("created", "created_at"),
    ("device", "device"), ("dtype", "dtype"), ("fault", "fault"),
    ("python", "environment.python"), ("numpy", "environment.numpy"), ("scipy", "environment.scipy"),
    ("torch", "environment.torch"), ("gemmi", "environment.gemmi"),
    ("host", "environment.hostname"), ("platform", "environment.platform"),
    ("harness commit", "environment.git_commit"),
)


def _value(info: Mapping[str, Any], where: str) -> str:
    if where == "backend":
        dumped = info.get("dumped_backend")
        name = dumped.get("name") if isinstance(dumped, Mapping) else None
        return str(name or info.get("name") or "")
    if where == "fault":
        dumped = info.get("dumped_backend")
        value = dumped.get("fault") if isinstance(dumped, Mapping) else info.get("fault")
        return "" if value in (None, "") else str(value)
    if where.startswith("environment."):
        env = info.get("environment")
        value = env.get(where.split(".", 1)[1]) if isinstance(env, Mapping) else None
    else:
        value = info.get(where)
    return "" if value is None else str(value)


def provenance_rows(result: Mapping[str, Any]) -> list[dict[str, Any]] | None:
    """Rows ``{"label", "reference", "candidate", "differs"}``, or None when neither side recorded one.

    A side records its provenance when its info carries an ``environment`` (a dump does);
    rows empty on both sides are left out.
    """
    ref, cand = result.get("reference"), result.get("candidate")
    ref = ref if isinstance(ref, Mapping) else {}
    cand = cand if isinstance(cand, Mapping) else {}
    if not isinstance(ref.get("environment"), Mapping) and not isinstance(cand.get("environment"), Mapping):
        return None
    rows = []
    for label, where in FIELDS:
        a, b = _value(ref, where), _value(cand, where)
        if a or b:
            rows.append({"label": label, "reference": a or "\u2014", "candidate": b or "\u2014", "differs": a != b})
    return rows


def format_provenance(result: Mapping[str, Any]) -> list[str]:
    """The terminal table (empty when there is no provenance); rows that differ start with ``*``.

    Values are shown whole (columns as wide as their longest value).
    """
    rows = provenance_rows(result)
    if not rows:
        return []
    w = max(len("reference"), *(len(r["reference"]) for r in rows))
    lines = [f"  {'provenance':<16} {'reference':<{w}}   candidate"]
    for r in rows:
        mark = "*" if r["differs"] else " "
        lines.append(f"{mark} {r['label']:<16} {r['reference']:<{w}}   {r['candidate']}"
                     + ("   <- differs" if r["differs"] else ""))
    n = sum(r["differs"] for r in rows)
    lines.append(f"  ({n} of {len(rows)} provenance rows differ, marked *)" if n else
                 "  (both sides have the same provenance)")
    return lines
