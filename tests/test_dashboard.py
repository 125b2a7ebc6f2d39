"""Tests of parity.dashboard: the self-contained HTML page of the run history."""

from __future__ import annotations

import base64
import re
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Iterator

import pytest

pytest.importorskip("jinja2")
pytest.importorskip("matplotlib")

from parity.dashboard import render_dashboard  # noqa: E402
from parity.history import HistoryStore, find_regressions  # noqa: E402

# --------------------------------------------------------------------------- synthetic results

STAGES = [("kvec", 1), ("amat", 2), ("hessian", 3), ("eigen", 3), ("intensity", 4)]
T0 = datetime(2026, 11, 1, 7, 30, tzinfo=timezone.utc)


def make_result(*, night: int = 0, fixture: str = "5zck_p1", device: str = "cpu", dtype: str = "float64",
                max_rel: float = 1e-14, stages: dict[str, dict[str, Any]] | None = None,
                phase_scale: float = 1.0) -> dict[str, Any]:
    """A minimal schema_version-1 result; ``stages`` overrides fields per stage name."""
    rows = []
    for name, phase in STAGES:
        row = {"name": name, "phase": phase, "tier": "tight", "status": "pass", "max_abs": max_rel,
               "max_rel": max_rel, "n_mismatch": 0, "n_total": 8, "duration_s": 0.01}
        row.update((stages or {}).get(name, {}))
        row["passed"] = row["status"] == "pass"
        rows.append(row)
    failures = [row["name"] for row in rows if row["status"] != "pass"]
    timings = {"1": 0.1 * phase_scale, "2": 0.3, "3": 0.5, "4": 1.2}
    return {
        "schema_version": 1, "fixture": fixture, "grid": {}, "params": {}, "device": device,
        "device_name": "CPU", "dtype": dtype, "passed": not failures,
        "first_failure": failures[0] if failures else None, "fault": None,
        "started_at": (T0 + timedelta(days=night)).isoformat(), "duration_s": sum(timings.values()),
        "environment": {"git_commit": f"{night:02d}abcdef0123456789", "python": "3.11"},
        "phase_timings": timings, "stages": rows,
    }


@pytest.fixture
def reports(tmp_path: Path) -> Path:
    folder = tmp_path / "reports"
    folder.mkdir()
    return folder


@pytest.fixture
def store(reports: Path) -> Iterator[HistoryStore]:
    with HistoryStore(reports / "history.sqlite") as opened:
        yield opened


def _seed_with_regression(store: HistoryStore, reports: Path) -> None:
    for night in range(4):
        for fixture in ("5zck_p1", "synthetic_p21"):
            store.record_run(make_result(night=night, fixture=fixture),
                             report_path=reports / "runs" / f"{fixture}-{night}" / "index.html")
    store.record_run(make_result(night=4, stages={"eigen": {"status": "fail", "max_rel": 1e-9}},
                                 phase_scale=30.0),
                     report_path=reports / "runs" / "5zck_p1-4" / "index.html")


def _png_images(html: str) -> list[bytes]:
    return [base64.b64decode(data) for data in re.findall(r'src="data:image/png;base64,([^"]+)"', html)]


# --------------------------------------------------------------------------- tests


def test_dashboard_contents(store: HistoryStore, reports: Path) -> None:
    _seed_with_regression(store, reports)
    out = render_dashboard(store, reports / "dashboard.html")
    html = out.read_text(encoding="utf-8")

    # Header.
    assert str(store.path.resolve()) in html and "9 runs" in html and "2026-11-01" in html
    # Regressions come first, with kinds and a relative link to the run's report.
    flags = html[html.index('id="regressions"'):html.index('id="matrix"')]
    assert "Flagged regressions (4)" in flags  # eigen flip + growth, phase 1 + total slower
    assert {"status flip", "error growth", "slowdown"} <= set(re.findall(r"<td>([a-z ]+)</td>", flags))
    assert 'href="runs/5zck_p1-4/index.html"' in flags
    assert html.index('id="regressions"') < html.index('id="matrix"') < html.index('id="trends"')
    # Status matrix: stages in phase order, one column per series, coloured cells with links.
    matrix = html[html.index('id="matrix"'):html.index('id="trends"')]
    assert [m for m in re.findall(r"<td>(\w+)</td>", matrix)] == [name for name, _ in STAGES]
    assert matrix.count('class="col"') == 2
    assert 'class="cell st-fail"' in matrix and 'class="cell st-pass"' in matrix
    assert 'href="runs/synthetic_p21-3/index.html"' in matrix
    # Figures: two PNGs per series, real PNGs without matplotlib's URL-bearing text chunk.
    images = _png_images(html)
    assert len(images) == 4
    assert all(image.startswith(b"\x89PNG\r\n\x1a\n") and b"matplotlib.org" not in image for image in images)
    # Recent runs table.
    recent = html[html.index('id="recent"'):]
    assert recent.count("<tr>") == 1 + 9 and "04abcdef01" in recent
    # Self-contained.
    assert "<script" not in html.lower() and not re.search(r"https?://", html)
    assert not list(reports.glob(".dashboard.html.*"))  # no temp file left behind


def test_report_links_are_relative_to_the_dashboard_folder(store: HistoryStore, reports: Path) -> None:
    _seed_with_regression(store, reports)
    html = render_dashboard(store, reports / "site" / "index.html").read_text(encoding="utf-8")
    assert 'href="../runs/5zck_p1-4/index.html"' in html


def test_precomputed_regressions_are_used(store: HistoryStore, reports: Path) -> None:
    _seed_with_regression(store, reports)
    only_errors = [r for r in find_regressions(store) if r.kind == "error_growth"]
    html = render_dashboard(store, reports / "d.html", regressions=only_errors).read_text(encoding="utf-8")
    assert "Flagged regressions (1)" in html


def test_identical_history_shows_no_flags(store: HistoryStore, reports: Path) -> None:
    for night in range(3):
        store.record_run(make_result(night=night))
    html = render_dashboard(store, reports / "d.html").read_text(encoding="utf-8")
    assert "Flagged regressions (0)" in html and "No regressions flagged" in html


def test_text_from_results_is_escaped(store: HistoryStore, reports: Path) -> None:
    evil = '<script>alert("x")</script>$\\frac$'
    for night in range(2):
        result = make_result(night=night, fixture=evil,
                             stages={"eigen": {"status": "fail"}} if night else None)
        result["stages"][0]["name"] = "<img src=x onerror=alert(1)>"
        store.record_run(result, report_path=reports / 'a "quoted" & <odd> #name.html')
    html = render_dashboard(store, reports / "d.html").read_text(encoding="utf-8")
    assert "<script" not in html.lower() and "<img src=x" not in html
    assert "&lt;script&gt;" in html and "&lt;img src=x onerror=alert(1)&gt;" in html
    assert 'href="a%20%22quoted%22%20%26%20%3Codd%3E%20%23name.html"' in html
    assert len(_png_images(html)) == 2  # "$" in names did not break the figures


def test_empty_store_renders(store: HistoryStore, reports: Path) -> None:
    html = render_dashboard(store, reports / "d.html").read_text(encoding="utf-8")
    assert "0 runs" in html and "No runs recorded yet." in html


def test_rerender_replaces_the_page(store: HistoryStore, reports: Path) -> None:
    out = reports / "d.html"
    out.write_text("stale")
    store.record_run(make_result())
    render_dashboard(store, out)
    assert out.read_text(encoding="utf-8").startswith("<!DOCTYPE html>")
    assert out.stat().st_mode & 0o644 == 0o644
