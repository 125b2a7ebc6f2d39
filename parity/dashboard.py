"""Self-contained HTML dashboard of the parity run history.

One file, no ``<script>``, no external URL: CSS is inline and figures are PNG
data URIs, so the page can be archived as a CI artifact or mailed and still
render.  All text that comes from results goes through jinja2 autoescaping.

Sections, in order of urgency:

1. header: store path, number of runs, date range;
2. flagged regressions (:func:`parity.history.find_regressions`), each linking
   to its run's divergence report;
3. latest status matrix: stages (phase order) x ``fixture/device/dtype``;
4. per fixture and series: max_rel per stage over runs (log y) and phase
   times over runs;
5. recent runs.
"""

from __future__ import annotations

import io
import math
import os
import urllib.parse
from base64 import b64encode
from datetime import datetime, timezone
from functools import lru_cache
from pathlib import Path
from typing import Any, Mapping, Sequence

import jinja2

from parity.io import write_text_atomic
from parity.history import HistoryStore, Regression, find_regressions, parse_timestamp

__all__ = ["render_dashboard"]

_TEMPLATE_DIR = Path(__file__).resolve().parent / "templates"
_TEMPLATE_NAME = "dashboard.html.j2"
#: Zero errors cannot sit on a log axis; they are drawn at this value.
_LOG_FLOOR = 1e-18
_STATUS_LABEL = {"pass": "pass", "fail": "fail", "not_comparable": "n-c", "error": "error"}
_KIND_LABEL = {"status_flip": "status flip", "error_growth": "error growth", "slowdown": "slowdown"}
_LINESTYLES = ("-", "--", ":", "-.")


# --------------------------------------------------------------------------- entry point


def render_dashboard(store: HistoryStore, out: Path, *, regressions: Sequence[Regression] | None = None,
                     recent: int = 50) -> Path:
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
        "fixtures": _fixture_sections(store),
        "recent": _recent_rows(store, out_dir, recent),
        "recent_limit": recent,
    }
    html = _environment().get_template(_TEMPLATE_NAME).render(**context)
    write_text_atomic(out, html)
    return out


@lru_cache(maxsize=1)
def _environment() -> jinja2.Environment:
    # autoescape=True, not select_autoescape(): the template ends in ".j2", which
    # select_autoescape's extension list would not escape.
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(_TEMPLATE_DIR)), autoescape=True,
                             undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    env.filters["sci"] = _fmt_sci
    env.filters["seconds"] = _fmt_seconds
    return env


# --------------------------------------------------------------------------- formatting


def _fmt_sci(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, str):
        return value
    return f"{float(value):.2e}"


def _fmt_seconds(value: Any) -> str:
    if value is None:
        return "—"
    seconds = float(value)
    return f"{seconds:.3g} s" if seconds < 100 else f"{seconds:.0f} s"


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
            return _fmt_sci(number)
        return _fmt_seconds(number) if regression.kind == "slowdown" else _fmt_sci(number)

    return [{
        "series": _series_label(r.fixture, r.device, r.dtype),
        "target": r.target,
        "kind": _KIND_LABEL.get(r.kind, r.kind),
        "kind_class": r.kind.replace("_", "-"),
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
        "title": (f"max_rel {_fmt_sci(entry['max_rel'])}, max_abs {_fmt_sci(entry['max_abs'])}; "
                  f"run {entry['run_id']} at {_fmt_when(entry['started_at'])}"),
        "link": report_link(store, entry["report_path"], out_dir),
    }


def _fixture_sections(store: HistoryStore) -> list[dict[str, Any]]:
    order = [name for name, _ in store.stage_order()]
    sections: dict[str, list[dict[str, Any]]] = {}
    for fixture, device, dtype in store.series_keys():
        errors = store.stage_error_series(fixture, device, dtype)
        timings = store.phase_time_series(fixture, device, dtype)
        title = _series_label(fixture, device, dtype)
        sections.setdefault(fixture, []).append({
            "label": title,
            "n_runs": len(timings),
            "error_png": error_figure(title, errors, order),
            "time_png": timing_figure(title, timings),
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
        "first_failure": run["first_failure"] or "",
        "fault": run["fault"] or "",
        "duration": _fmt_seconds(run["duration_s"]),
        "link": report_link(store, run["report_path"], out_dir),
    } for run in store.runs(limit=limit)]


# --------------------------------------------------------------------------- figures


def _mpl_text(text: str) -> str:
    # "$" would start mathtext (and can make savefig raise on odd names).
    return str(text).replace("$", r"\$")


def _new_axes(figsize: tuple[float, float]):
    import matplotlib
    matplotlib.use("Agg")  # never open a window, work on headless CI
    from matplotlib.figure import Figure  # a bare Figure keeps no pyplot global state

    fig = Figure(figsize=figsize, dpi=96)
    return fig, fig.add_subplot()


def _format_time_axis(ax) -> None:
    from matplotlib import dates as mdates

    locator = mdates.AutoDateLocator(minticks=3, maxticks=8)
    ax.xaxis.set_major_locator(locator)
    ax.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator))
    ax.grid(True, which="major", alpha=0.3)


def png_data_uri(fig) -> str:
    buffer = io.BytesIO()
    # Software=None drops matplotlib's PNG text chunk (it carries a URL).
    fig.savefig(buffer, format="png", bbox_inches="tight", metadata={"Software": None})
    return "data:image/png;base64," + b64encode(buffer.getvalue()).decode("ascii")


def _legend(ax, n_entries: int) -> None:
    if n_entries:
        ax.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize=7, frameon=False,
                  ncol=1 + (n_entries - 1) // 20)


def error_figure(title: str, series: Mapping[str, Sequence[Mapping[str, Any]]], order: Sequence[str]) -> str:
    """PNG data URI: max_rel per stage over runs, log y, one line per stage.

    Zeros are drawn at ``1e-18`` (log axes cannot show 0); null (NaN/inf)
    values leave gaps; runs where the stage did not pass get a large ``x``.
    """
    fig, ax = _new_axes((9.0, 3.6))
    names = [name for name in order if name in series] + sorted(set(series) - set(order))
    any_failure = False
    for index, name in enumerate(names):
        rows = series[name]
        color = f"C{index % 10}"
        x = [parse_timestamp(row["started_at"]) for row in rows]
        y = [math.nan if row["max_rel"] is None else max(row["max_rel"], _LOG_FLOOR) for row in rows]
        ax.plot(x, y, marker="o", markersize=3, linewidth=1.2, label=_mpl_text(name),
                color=color, linestyle=_LINESTYLES[(index // 10) % len(_LINESTYLES)])
        bad = [(xi, yi) for xi, yi, row in zip(x, y, rows) if row["status"] != "pass" and not math.isnan(yi)]
        if bad:
            any_failure = True
            ax.plot(*zip(*bad), linestyle="none", marker="x", markersize=9, markeredgewidth=2, color=color)
    if any_failure:
        ax.plot([], [], linestyle="none", marker="x", markersize=7, color="black", label="not passed")
        names.append("not passed")
    ax.set_yscale("log")
    ax.set_ylabel("max relative error")
    ax.set_title(_mpl_text(f"{title}: max_rel per stage (0 drawn at {_LOG_FLOOR:g})"), fontsize=9)
    _format_time_axis(ax)
    _legend(ax, len(names))
    return png_data_uri(fig)


def timing_figure(title: str, runs: Sequence[Mapping[str, Any]]) -> str:
    """PNG data URI: seconds per phase (and total, dashed) over runs."""
    fig, ax = _new_axes((9.0, 3.0))
    x = [parse_timestamp(run["started_at"]) for run in runs]
    phases: list[str] = []
    for run in runs:
        phases.extend(phase for phase in run["phases"] if phase not in phases)
    for index, phase in enumerate(phases):
        y = [_nan_if_none(run["phases"].get(phase)) for run in runs]
        ax.plot(x, y, marker="o", markersize=3, linewidth=1.2, color=f"C{index % 10}",
                label=_mpl_text(f"phase {phase}"))
    ax.plot(x, [_nan_if_none(run["duration_s"]) for run in runs], marker="s", markersize=3,
            linewidth=1.2, linestyle="--", color="black", label="total")
    ax.set_ylabel("seconds")
    ax.set_ylim(bottom=0)
    ax.set_title(_mpl_text(f"{title}: time per phase"), fontsize=9)
    _format_time_axis(ax)
    _legend(ax, len(phases) + 1)
    return png_data_uri(fig)


def _nan_if_none(value: float | None) -> float:
    return math.nan if value is None else float(value)
