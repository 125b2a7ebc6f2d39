"""Self-contained HTML dashboard of the parity run history.

One file, no ``<script>``, no external URL: CSS is inline and figures are PNG
data URIs, so the page can be archived as a CI artifact or mailed and still
render.  All text that comes from results goes through jinja2 autoescaping.

Sections, in order of urgency:

1. header: store path, number of runs, date range;
2. flagged regressions (:func:`parity.storage.history.find_regressions`), each linking
   to its run's divergence report;
3. latest status matrix: stages (phase order) x ``fixture/device/dtype``;
4. per fixture and series, small multiples (one panel per phase): max_rel per
   stage over runs (log y) with each tier's tolerance as a dashed line, and the
   phase times (minimum of the timing repeats, their spread as a band, the
   slowdown baseline dashed).  Stages and phases that moved in the latest run
   (status flip, error growth, slowdown) are drawn in colour, named in the legend
   and under the figure; everything else is grey, so what changed stands out;
5. recent runs.

The page renders with the package's one jinja environment
(:mod:`parity.rendering.templating`) and embeds its figures with the one image
helper (:func:`parity.rendering.figures.png_data_uri`).
"""

from __future__ import annotations

import math
import os
import re
import urllib.parse
from datetime import datetime, timezone
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

from parity.rendering.figures import png_data_uri
from parity.rendering.formatting import fmt_sci, fmt_seconds
from parity.rendering.templating import environment
from parity.storage.outputs import write_text_atomic
from parity.contract.results import Status
from parity.storage.history import HistoryStore, Regression, find_regressions, parse_timestamp
from parity.storage.regressions import COST_KINDS, GRADIENT_TARGETS, NUMERICAL_KINDS, RegressionKind, SlowdownRule

__all__ = ["render_dashboard"]

_TEMPLATE_NAME = "dashboard.html.j2"
#: Zero errors cannot sit on a log axis; they are drawn at this value.
_LOG_FLOOR = 1e-18
_STATUS_LABEL = {Status.PASS: "pass", Status.FAIL: "fail", Status.NOT_COMPARABLE: "n-c", Status.ERROR: "error"}
#: Colours of what moved (matplotlib's tab10 without its grey and olive); the rest is grey.
HIGHLIGHT_COLOURS = ("#d62728", "#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#17becf")
_GREY = "#b4bac1"
_DARK = "#3d444d"
#: Figure width in inches at _DPI: wider than the page's content, so CSS only ever scales it down.
_FIG_WIDTH_IN, _DPI = 15.0, 100
#: Heights of the error row and the time row (inches).
_ERROR_ROW_IN, _TIME_ROW_IN = 2.6, 1.9


# --------------------------------------------------------------------------- entry point


def render_dashboard(store: HistoryStore, out: Path, *, regressions: Sequence[Regression] | None = None,
                     recent: int = 50, rule: SlowdownRule | None = None) -> Path:
    """Write the dashboard of ``store`` to ``out`` (atomically) and return ``out``.

    Parameters
    ----------
    store
        An open history store.
    out
        The HTML file to write; its folder is created if missing.  Report links
        are relative to this folder when possible.
    regressions
        Already-computed regressions (e.g. with the nightly's own thresholds);
        computed with the defaults of :func:`find_regressions` when None.
    recent
        How many runs the "recent runs" table lists.
    """
    out = Path(out)
    out_dir = out.resolve().parent
    if regressions is None:
        regressions = find_regressions(store)
    context = {
        "header": _header(store),
        "regressions": _regression_rows(store, regressions, out_dir),
        "matrix": _status_matrix(store, out_dir),
        "fixtures": _fixture_sections(store, regressions, rule or SlowdownRule()),
        "recent": _recent_rows(store, out_dir, recent),
        "recent_limit": recent,
    }
    html = environment().get_template(_TEMPLATE_NAME).render(**context)
    write_text_atomic(out, html)
    return out


# --------------------------------------------------------------------------- formatting


def _fmt_when(started_at: str | None) -> str:
    if not started_at:
        return "—"
    return parse_timestamp(started_at).strftime("%Y-%m-%d %H:%M")


def _series_label(fixture: str, device: str, dtype: str) -> str:
    return f"{fixture} / {device} / {dtype}"


def report_link(store: HistoryStore, report_path: str | None, out_dir: Path) -> str | None:
    """URL of a stored report, relative to ``out_dir`` when possible (None if no report)."""
    target = store.resolve_report(report_path)
    if target is None:
        return None
    try:
        relative = Path(os.path.relpath(target, out_dir)).as_posix()
    except ValueError:  # another drive (Windows): no relative path exists
        return target.as_uri()
    return urllib.parse.quote(relative)


# --------------------------------------------------------------------------- context builders


def _header(store: HistoryStore) -> dict[str, Any]:
    span = store.time_range()
    return {
        "store_path": str(store.path.resolve()),
        "n_runs": store.count_runs(),
        "first": _fmt_when(span[0]) if span else None,
        "last": _fmt_when(span[1]) if span else None,
        "generated": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
    }


def _regression_rows(store: HistoryStore, regressions: Sequence[Regression], out_dir: Path) -> list[dict]:
    def value(regression: Regression, number: Any) -> str:
        if isinstance(number, str) or number is None:
            return fmt_sci(number)
        if regression.kind not in COST_KINDS:
            return fmt_sci(number)
        # A gradient cost ratio (forward+backward / forward) is flagged in its own unit, a peak in MiB.
        if regression.unit == "x":
            return f"x{number:.2f}"
        return f"{number:.0f} MiB" if regression.unit == "MiB" else fmt_seconds(number)

    return [{
        "series": _series_label(r.fixture, r.device, r.dtype),
        "target": r.target,
        "kind": r.kind.label,
        "kind_class": r.kind.value.replace("_", "-"),
        "previous": value(r, r.previous),
        "current": value(r, r.current),
        "message": r.message,
        "run_id": r.run_id,
        "link": report_link(store, r.report_path, out_dir),
    } for r in regressions]


def _status_matrix(store: HistoryStore, out_dir: Path) -> dict[str, Any]:
    """Rows: stages in phase order; columns: series; cells: latest status (or None)."""
    entries = store.latest_matrix()
    columns = sorted({(e["fixture"], e["device"], e["dtype"]) for e in entries})
    present = {e["stage"] for e in entries}
    by_cell = {(e["stage"], (e["fixture"], e["device"], e["dtype"])): e for e in entries}
    rows = []
    for stage, phase in store.stage_order():
        if stage not in present:
            continue
        cells = [_matrix_cell(store, by_cell.get((stage, column)), out_dir) for column in columns]
        rows.append({"stage": stage, "phase": "—" if phase is None else phase, "cells": cells})
    return {"columns": [{"fixture": f, "device": d, "dtype": t} for f, d, t in columns], "rows": rows}


def _matrix_cell(store: HistoryStore, entry: Mapping[str, Any] | None, out_dir: Path) -> dict | None:
    if entry is None:
        return None
    status = entry["status"]
    return {
        "label": _STATUS_LABEL.get(status, status),
        "css": "st-" + _STATUS_LABEL.get(status, "error"),
        "title": (f"max_rel {fmt_sci(entry['max_rel'])}, max_abs {fmt_sci(entry['max_abs'])}; "
                  f"run {entry['run_id']} at {_fmt_when(entry['started_at'])}"),
        "link": report_link(store, entry["report_path"], out_dir),
    }


def _fixture_sections(store: HistoryStore, regressions: Sequence[Regression],
                      rule: SlowdownRule) -> list[dict[str, Any]]:
    from parity.storage.history import judged_timings, timing_verdicts

    phase_of = dict(store.stage_order())
    sections: dict[str, list[dict[str, Any]]] = {}
    for key in store.series_keys():
        mine = [r for r in regressions if (r.fixture, r.device, r.dtype) == key]
        moved = moved_stages(mine)
        title = _series_label(*key)
        latest = store.runs(*key, limit=1, include_faults=False)[0]
        slow = slow_targets(mine)
        figure = series_figure(title, store.stage_error_series(*key), phase_of, judged_timings(store, *key),
                               moved=moved, tolerances=stage_tolerances(store.result(latest["id"])),
                               verdicts=timing_verdicts(store, *key, rule=rule), slow=slow)
        sections.setdefault(key[0], []).append({
            "label": title,
            "n_runs": len(store.runs(*key, include_faults=False)),
            "png": figure.uri,
            "moved": [{"name": h.name, "why": ", ".join(h.kinds), "colour": h.colour} for h in figure.highlights]
            # The gradient cost and memory have no panel of their own: their regressions are named
            # here (and listed above).
            + [{"name": r.target, "why": r.kind.label, "colour": _DARK}
               for r in mine if (r.kind is RegressionKind.SLOWDOWN and r.target in GRADIENT_TARGETS)
               or r.kind is RegressionKind.MEMORY_GROWTH],
            "timing_note": figure.note,
        })
    return [{"fixture": fixture, "series": series} for fixture, series in sections.items()]


def _recent_rows(store: HistoryStore, out_dir: Path, limit: int) -> list[dict[str, Any]]:
    return [{
        "id": run["id"],
        "when": _fmt_when(run["started_at"]),
        "commit": (run["git_commit"] or "")[:10] or "—",
        "fixture": run["fixture"],
        "device": run["device"],
        "device_name": run["device_name"] or "",
        "dtype": run["dtype"],
        "passed": run["passed"],
        "expected": _expected_outcome(run),
        "first_failure": run["first_failure"] or "",
        "fault": run["fault"] or "",
        "duration": fmt_seconds(run["duration_s"]),
        "link": report_link(store, run["report_path"], out_dir),
    } for run in store.runs(limit=limit)]


def third_opinion(fixture_label: str) -> str | None:
    """The other reference of a third-opinion run (``"5zck_p1 [upstream-eryx vs torch]"`` ->
    ``"upstream-eryx"``, see :func:`parity.storage.history.series_fixture`), None for the project's own
    reference (NumPy)."""
    match = re.fullmatch(r".* \[(.+) vs (.+)\]", str(fixture_label))
    return match.group(1) if match and match.group(1) != "numpy" else None


def _expected_outcome(run: Mapping[str, Any]) -> dict[str, str] | None:
    """Why a run that did not pass was expected not to (None when a failure is a failure):
    ``{"short": cell text, "why": the sentence}``.

    A third opinion (another implementation as reference, e.g. the original eryx) is
    judged by its changes, not by agreeing; an injected fault exists to make a run fail.
    """
    if run["passed"]:
        return None
    other = third_opinion(run["fixture"])
    if other:
        return {"short": "third opinion",
                "why": f"third opinion ({other} as reference): expected to differ, judged by its changes"}
    if run.get("fault"):
        return {"short": "fault injected", "why": "fault injected: the run is expected to diverge"}
    return None


# --------------------------------------------------------------------------- figures


def _mpl_text(text: str) -> str:
    # "$" would start mathtext (and can make savefig raise on odd names).
    return str(text).replace("$", r"\$")


@dataclass(frozen=True)
class Highlight:
    """A stage (or timed phase) drawn in colour: ``name``, why (``kinds``), ``colour``."""

    name: str
    kinds: tuple[str, ...]
    colour: str


@dataclass(frozen=True)
class FigureImage:
    """A rendered figure: the PNG data URI, what it highlights, its legend texts, the tier
    lines drawn (``(phase, tier, rtol + atol)``), a note."""

    uri: str
    highlights: list[Highlight]
    legend: list[str]
    tiers: list[tuple[str, str, float]] = field(default_factory=list)
    note: str = ""


def moved_stages(regressions: Sequence[Regression]) -> dict[str, tuple[str, ...]]:
    """``{stage: (kind labels, ...)}`` for the stage regressions (costs are per phase or gradient
    target, not here)."""
    moved: dict[str, list[str]] = {}
    for r in regressions:
        if r.kind in NUMERICAL_KINDS:
            moved.setdefault(r.target, []).append(r.kind.label)
    return {name: tuple(kinds) for name, kinds in moved.items()}


def slow_targets(regressions: Sequence[Regression]) -> set[str]:
    """The timing targets (``"4"``, ``"total"``) of the slowdowns among ``regressions``."""
    return {r.target.removeprefix("phase ") for r in regressions if r.kind is RegressionKind.SLOWDOWN}


def stage_tolerances(result: Mapping[str, Any]) -> dict[str, tuple[str, float]]:
    """``{stage: (tier, rtol + atol)}`` from a result: the largest error relative to
    ``max|expected|`` an element can have and still pass its tier."""
    out = {}
    for stage in result.get("stages") or []:
        rtol, atol = stage.get("rtol"), stage.get("atol")
        if isinstance(rtol, (int, float)) and isinstance(atol, (int, float)):
            out[stage["name"]] = (str(stage.get("tier")), float(rtol) + float(atol))
    return out


def _new_figure(n_columns: int):
    import matplotlib
    matplotlib.use("Agg")  # never open a window, work on headless CI
    from matplotlib.figure import Figure  # a bare Figure keeps no pyplot global state

    height = _ERROR_ROW_IN + _TIME_ROW_IN + 1.3
    fig = Figure(figsize=(_FIG_WIDTH_IN, height), dpi=_DPI)
    # Fixed margins in inches: a constrained layout costs twice the drawing time.
    fig.subplots_adjust(left=0.6 / _FIG_WIDTH_IN, right=1 - 0.12 / _FIG_WIDTH_IN, top=1 - 0.62 / height,
                        bottom=0.45 / height, wspace=0.2, hspace=0.42)
    grid = fig.add_gridspec(2, n_columns, height_ratios=(_ERROR_ROW_IN, _TIME_ROW_IN))
    return fig, grid


def _run_axis(ax, stamps: Sequence[str]) -> None:
    """x = run number (evenly spaced nights); a few ticks labelled with the run's date."""
    from matplotlib.ticker import FuncFormatter, MaxNLocator

    labels = [parse_timestamp(stamp).strftime("%m-%d\n%H:%M") for stamp in stamps]
    ax.xaxis.set_major_locator(MaxNLocator(nbins=4, integer=True))
    ax.xaxis.set_major_formatter(FuncFormatter(
        lambda x, _pos: labels[int(x)] if 0 <= int(x) < len(labels) and x == int(x) else ""))
    ax.tick_params(labelsize=7)
    ax.set_xlim(-0.5, max(len(stamps) - 0.5, 0.5))
    ax.grid(True, which="major", alpha=0.25)


def _phase_sort_key(phase: Any) -> tuple[bool, float]:
    try:
        return (False, float(phase))
    except (TypeError, ValueError):
        return (True, 0.0)


def series_figure(title: str, errors: Mapping[str, Sequence[Mapping[str, Any]]],
                  phase_of: Mapping[str, int | None], timings: Mapping[str, Any], *,
                  moved: Mapping[str, Sequence[str]] | None = None,
                  tolerances: Mapping[str, tuple[str, float]] | None = None,
                  verdicts: Mapping[str, Any] | None = None,
                  slow: set[str] | frozenset = frozenset()) -> FigureImage:
    """One series at a glance: small multiples, one column per phase.

    Top row: max_rel of each stage of the phase over the runs (log y; zeros drawn
    at 1e-18, null values leave gaps, an ``x`` marks a run where the stage did not
    pass), each tier's tolerance ``rtol + atol`` as a dashed line labelled with the
    tier.  Bottom row: the phase's time per run -- the minimum of the run's
    repeats, their spread as a band, the slowdown baseline (dashed) and threshold
    (dotted).  The last column holds the legend above the total time.

    Stages in ``moved`` (``{stage: kinds}``) and phases in ``slow`` are drawn in
    colour and named in the legend; everything else is grey.

    Parameters
    ----------
    errors
        :meth:`HistoryStore.stage_error_series` (``{stage: rows}``, oldest first).
    phase_of
        ``{stage: phase}``.
    timings
        :func:`parity.storage.history.judged_timings` of the series: the numbers the
        slowdown rule judges.
    tolerances
        ``{stage: (tier, rtol + atol)}`` (:func:`stage_tolerances`).
    verdicts
        ``{target: TimingVerdict}`` (:func:`parity.storage.history.timing_verdicts`).
    """
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    moved, tolerances, verdicts = dict(moved or {}), dict(tolerances or {}), dict(verdicts or {})
    timed = list(timings.get("runs") or [])
    run_ids = [run["run_id"] for run in timed]
    for rows in errors.values():
        run_ids.extend(row["run_id"] for row in rows if row["run_id"] not in run_ids)
    stamp_of = {run["run_id"]: run["started_at"] for run in timed}
    stamp_of.update({row["run_id"]: row["started_at"] for rows in errors.values() for row in rows})
    run_ids.sort(key=lambda rid: (stamp_of[rid], rid))
    index_of = {rid: i for i, rid in enumerate(run_ids)}
    stamps = [stamp_of[rid] for rid in run_ids]

    stages_in: dict[str, list[str]] = {}
    for name in errors:
        phase = phase_of.get(name)
        stages_in.setdefault("—" if phase is None else str(phase), []).append(name)
    clock = _clock_label(timings)
    targets = {t for run in timed for t in run["samples"]}
    columns = sorted(set(stages_in) | {t for t in targets if t.isdigit()}, key=_phase_sort_key)
    fig, grid = _new_figure(len(columns) + 1)
    highlights: list[Highlight] = []
    tiers: list[tuple[str, str, float]] = []
    colour_of: dict[str, str] = {}

    def colour_for(name: str, kinds: Sequence[str]) -> str:
        if name not in colour_of:
            colour_of[name] = HIGHLIGHT_COLOURS[len(colour_of) % len(HIGHLIGHT_COLOURS)]
            highlights.append(Highlight(name, tuple(kinds), colour_of[name]))
        return colour_of[name]

    first_error_ax = first_time_ax = None
    for col, phase in enumerate(columns):
        ax = fig.add_subplot(grid[0, col], sharex=first_error_ax)
        first_error_ax = first_error_ax or ax
        names = stages_in.get(phase, [])
        tiers.extend((phase, tier, tol) for tier, tol in _error_panel(ax, names, errors, index_of, moved,
                                                                      tolerances, colour_for))
        n_moved = sum(name in moved for name in names)
        ax.set_title(_mpl_text(f"phase {phase}: {len(names)} stages" + (f", {n_moved} moved" if n_moved else "")),
                     fontsize=9, loc="left", fontweight="bold" if n_moved else "normal")
        ax = fig.add_subplot(grid[1, col], sharex=first_error_ax)
        first_time_ax = first_time_ax or ax
        _time_panel(ax, phase, timed, index_of, verdicts.get(phase), phase in slow, colour_for)
    ax = fig.add_subplot(grid[1, len(columns)], sharex=first_error_ax)
    _time_panel(ax, "total", timed, index_of, verdicts.get("total"), "total" in slow, colour_for)
    for ax in fig.axes:
        _run_axis(ax, stamps)
    if first_error_ax is not None:
        first_error_ax.set_ylabel("max relative error", fontsize=8)
    if first_time_ax is not None:
        first_time_ax.set_ylabel(clock, fontsize=8)

    handles = [Line2D([], [], color=h.colour, linewidth=2.2, marker="o", markersize=4,
                      label=_mpl_text(f"{h.name} ({', '.join(h.kinds)})")) for h in highlights]
    handles += [
        Line2D([], [], color=_GREY, linewidth=1.0, label="unchanged stage"),
        Line2D([], [], color="black", linestyle=(0, (4, 3)), linewidth=0.9, label="tier tolerance (rtol+atol)"),
        Line2D([], [], linestyle="none", marker="x", color="black", markersize=6, label="not passed"),
        Line2D([], [], color=_DARK, linewidth=1.2, marker="o", markersize=3, label="time: min of repeats"),
        Patch(color=_GREY, alpha=0.45, label="time: spread of repeats"),
        Line2D([], [], color=_DARK, linestyle=(0, (4, 3)), linewidth=0.9, label="slowdown baseline"),
        Line2D([], [], color=_DARK, linestyle=":", linewidth=1.1, label="slowdown threshold"),
    ]
    legend_ax = fig.add_subplot(grid[0, len(columns)])
    legend_ax.axis("off")
    legend_ax.legend(handles=handles, loc="upper left", fontsize=7.5, frameon=False, borderaxespad=0,
                     title="moved in the latest run" if highlights else "nothing moved in the latest run",
                     title_fontsize=8, alignment="left")
    fig.suptitle(_mpl_text(f"{title}  ·  {len(stamps)} run{'s' if len(stamps) != 1 else ''}  ·  time: {clock}"),
                 fontsize=10, x=0.6 / _FIG_WIDTH_IN, ha="left")
    legend = [h.get_label() for h in handles]
    dropped = int(timings.get("dropped") or 0)
    note = f"{dropped} earlier run(s) timed with another clock are not drawn" if dropped else ""
    return FigureImage(png_data_uri(fig), highlights, legend, tiers, note)


def _clock_label(timings: Mapping[str, Any]) -> str:
    return {"cpu": "CPU s, 1 thread", "wall": "wall s"}.get(timings.get("clock"), str(timings.get("clock")))


def _error_panel(ax, names, errors, index_of, moved, tolerances, colour_for) -> list[tuple[str, float]]:
    for name in sorted(names, key=lambda n: n in moved):  # coloured lines on top
        rows = errors[name]
        x = [index_of[row["run_id"]] for row in rows]
        y = [math.nan if row["max_rel"] is None else max(row["max_rel"], _LOG_FLOOR) for row in rows]
        if name in moved:
            colour = colour_for(name, moved[name])
            ax.plot(x, y, color=colour, linewidth=2.2, marker="o", markersize=4, zorder=3)
        else:
            colour = _GREY
            ax.plot(x, y, color=colour, linewidth=0.9, marker="o", markersize=1.8, zorder=2)
        bad = [(xi, yi) for xi, yi, row in zip(x, y, rows) if row["status"] != Status.PASS and not math.isnan(yi)]
        if bad:
            ax.plot(*zip(*bad), linestyle="none", marker="x", markersize=7, markeredgewidth=1.6,
                    color=colour if name in moved else "black", zorder=4)
    ax.set_yscale("log")
    drawn = sorted({tolerances[n] for n in names if n in tolerances and tolerances[n][1] > 0}, key=lambda t: t[1])
    for tier, tol in drawn:
        ax.axhline(tol, color="black", linestyle=(0, (4, 3)), linewidth=0.9, zorder=1)
    if any(v is not None and v <= _LOG_FLOOR for rows in (errors[n] for n in names) for v in
           (row["max_rel"] for row in rows)):
        # Exact zeros cannot sit on a log scale: they are drawn on the floor, which says so.
        ax.axhline(_LOG_FLOOR, color=_GREY, linestyle=":", linewidth=0.8, zorder=1)
        ax.annotate(f"0 (exact) drawn at {_LOG_FLOOR:.0e}", (1, _LOG_FLOOR), xycoords=("axes fraction", "data"),
                    xytext=(-2, 1.5), textcoords="offset points", fontsize=6.5, va="bottom", ha="right",
                    color=_DARK)
    for text, tol in _tier_labels(ax, drawn):
        ax.annotate(_mpl_text(text), (0, tol), xycoords=("axes fraction", "data"),
                    xytext=(2, 1.5), textcoords="offset points", fontsize=_TIER_FONT_PT, va="bottom", color="black",
                    bbox={"facecolor": "white", "edgecolor": "none", "pad": 0.6, "alpha": 0.85}, zorder=5)
    return drawn


_TIER_FONT_PT = 6.5


def _tier_labels(ax, drawn: Sequence[tuple[str, float]]) -> list[tuple[str, float]]:
    """One label per group of tolerance lines too close to label apart, placed at the group's lowest line.

    Float32 runs judge each stage by a tier of its own, so a panel can hold several
    tolerances a few percent apart: their labels would print on top of each other. Lines
    closer (on the panel's log scale, in points) than a label's height share one label,
    ``"3 tiers 2e-6 … 5e-6"``; the lines themselves are all drawn.
    """
    if not drawn:
        return []
    lo, hi = ax.get_ylim()
    lo, hi = min(lo, drawn[0][1]), max(hi, drawn[-1][1])
    height_pt = ax.get_position().height * ax.figure.get_figheight() * 72.0
    decades = max(math.log10(hi) - math.log10(lo), 1e-12)
    min_gap = (_TIER_FONT_PT * 1.5) / max(height_pt, 1.0) * decades  # label height, in decades
    groups: list[list[tuple[str, float]]] = []
    for tier, tol in drawn:
        if groups and math.log10(tol) - math.log10(groups[-1][0][1]) < min_gap:
            groups[-1].append((tier, tol))
        else:
            groups.append([(tier, tol)])
    out = []
    for group in groups:
        if len(group) == 1:
            out.append((f"{group[0][0]} {group[0][1]:.0e}", group[0][1]))
        else:
            out.append((f"{len(group)} tiers {group[0][1]:.0e} \u2026 {group[-1][1]:.0e}", group[0][1]))
    return out


def _time_panel(ax, target, timed, index_of, verdict, is_slow, colour_for) -> None:
    x, lo, hi = [], [], []
    for run in timed:
        values = [v for v in run["samples"].get(target, []) if v is not None and math.isfinite(v)]
        if values:
            x.append(index_of[run["run_id"]])
            lo.append(min(values))
            hi.append(max(values))
    name = "total" if target == "total" else f"phase {target}"
    colour = colour_for(name, (RegressionKind.SLOWDOWN.label,)) if is_slow else _DARK
    ax.fill_between(x, lo, hi, color=colour if is_slow else _GREY, alpha=0.35, linewidth=0)
    ax.plot(x, lo, color=colour, linewidth=2.2 if is_slow else 1.2, marker="o", markersize=3, zorder=3)
    top = max(hi, default=0.0)
    if verdict is not None and verdict.baseline_s is not None:
        ax.axhline(verdict.baseline_s, color=_DARK, linestyle=(0, (4, 3)), linewidth=0.9)
        # A threshold far above the data (the absolute floor of a short phase) would squash
        # the curve to the bottom: then it is named in the corner instead of drawn.
        if verdict.threshold_s <= 2.0 * top:
            ax.axhline(verdict.threshold_s, color=_DARK, linestyle=":", linewidth=1.1)
            top = max(top, verdict.threshold_s)
        else:
            ax.annotate(f"slowdown threshold {verdict.threshold_s:.2g} s (off scale)", (0.98, 0.95),
                        xycoords="axes fraction", ha="right", va="top", fontsize=6.5, color=_DARK)
    ax.set_ylim(bottom=0, top=top * 1.15 if top > 0 else 1.0)
    ax.set_title(_mpl_text(f"{name} time" + (": SLOWDOWN" if is_slow else "")), fontsize=9, loc="left",
                 fontweight="bold" if is_slow else "normal")
