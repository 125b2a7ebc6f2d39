"""Tests of parity.rendering.dashboard: the self-contained HTML page of the run history."""

from __future__ import annotations

import base64
import re
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Iterator

import pytest

pytest.importorskip("jinja2")
pytest.importorskip("matplotlib")

from parity.rendering.dashboard import HIGHLIGHT_COLOURS, render_dashboard, series_figure  # noqa: E402
from parity.storage.history import HistoryStore, find_regressions  # noqa: E402

try:  # tests/ is not a package; both import styles must work
    from tests._chromium import check_page, chromium_unavailable_reason, find_chromium
except ImportError:  # pragma: no cover - depends on how pytest set sys.path
    from _chromium import check_page, chromium_unavailable_reason, find_chromium

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
    """Seven quiet nights of two series; then three nights where 5zck_p1's phase 1 is 30x
    slower (a sustained slowdown), the last one with ``eigen`` failing (flip + growth)."""
    for night in range(7):
        for fixture in ("5zck_p1", "synthetic_p21"):
            store.record_run(make_result(night=night, fixture=fixture),
                             report_path=reports / "runs" / f"{fixture}-{night}" / "index.html")
    for night in (7, 8):
        store.record_run(make_result(night=night, phase_scale=30.0),
                         report_path=reports / "runs" / f"5zck_p1-{night}" / "index.html")
    store.record_run(make_result(night=9, stages={"eigen": {"status": "fail", "max_rel": 1e-9}},
                                 phase_scale=30.0),
                     report_path=reports / "runs" / "5zck_p1-9" / "index.html")


def _png_images(html: str) -> list[bytes]:
    return [base64.b64decode(data) for data in re.findall(r'src="data:image/png;base64,([^"]+)"', html)]


# --------------------------------------------------------------------------- tests


def test_dashboard_contents(store: HistoryStore, reports: Path) -> None:
    _seed_with_regression(store, reports)
    out = render_dashboard(store, reports / "dashboard.html")
    html = out.read_text(encoding="utf-8")

    # Header.
    assert str(store.path.resolve()) in html and "17 runs" in html and "2026-11-01" in html
    # Regressions come first, with kinds and a relative link to the run's report.
    flags = html[html.index('id="regressions"'):html.index('id="matrix"')]
    assert "Flagged regressions (4)" in flags  # eigen flip + growth, phase 1 + total slower
    assert {"status flip", "error growth", "slowdown"} <= set(re.findall(r"<td>([a-z ]+)</td>", flags))
    assert 'href="runs/5zck_p1-9/index.html"' in flags
    assert html.index('id="regressions"') < html.index('id="matrix"') < html.index('id="trends"')
    # Status matrix: stages in phase order, one column per series, coloured cells with links.
    matrix = html[html.index('id="matrix"'):html.index('id="trends"')]
    assert [m for m in re.findall(r"<td>(\w+)</td>", matrix)] == [name for name, _ in STAGES]
    assert matrix.count('class="col"') == 2
    assert 'class="cell st-fail"' in matrix and 'class="cell st-pass"' in matrix
    assert 'href="runs/synthetic_p21-6/index.html"' in matrix
    # Figures: one PNG per series, real PNGs without matplotlib's URL-bearing text chunk.
    images = _png_images(html)
    assert len(images) == 2
    assert all(image.startswith(b"\x89PNG\r\n\x1a\n") and b"matplotlib.org" not in image for image in images)
    # Recent runs table.
    recent = html[html.index('id="recent"'):]
    assert recent.count("<tr>") == 1 + 17 and "09abcdef01" in recent
    # Self-contained.
    assert "<script" not in html.lower() and not re.search(r"https?://", html)
    assert not list(reports.glob(".dashboard.html.*"))  # no temp file left behind


def test_report_links_are_relative_to_the_dashboard_folder(store: HistoryStore, reports: Path) -> None:
    _seed_with_regression(store, reports)
    html = render_dashboard(store, reports / "site" / "index.html").read_text(encoding="utf-8")
    assert 'href="../runs/5zck_p1-9/index.html"' in html


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
    assert len(_png_images(html)) == 1  # "$" in names did not break the figure


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


# --------------------------------------------------------------------------- the trend figures


def registry_result(*, night: int, fixture: str, dtype: str = "float64", failing: str | None = None,
                    phase4_scale: float = 1.0) -> dict[str, Any]:
    """A result shaped like a real run: the registry's 38 stages with their tiers' tolerances,
    stage errors spread over decades, and a timing block of 3 repeats."""
    from parity.stages import STAGES as REGISTRY
    from parity.contract.tiers import resolve_tier

    rows = []
    for index, stage in enumerate(REGISTRY):
        tier = resolve_tier(stage.tier, dtype)
        max_rel = 0.0 if index % 7 == 0 else 10.0 ** (-16 + (index % 5)) * (1 + 0.01 * night)
        row = {"name": stage.name, "phase": stage.phase, "tier": tier.name, "status": "pass", "passed": True,
               "rtol": tier.rtol, "atol": tier.atol, "max_abs": max_rel, "max_rel": max_rel,
               "n_mismatch": 0, "n_total": 100, "duration_s": 0.01}
        if stage.name == failing:
            row.update(status="fail", passed=False, max_rel=1e-8, max_abs=1e-8)
        rows.append(row)
    base = {"1": 0.08, "2": 0.05, "3": 0.12, "4": 0.62}
    jitter = [1.0, 1.08, 1.21]
    samples = {p: [v * (phase4_scale if p == "4" else 1.0) * (1 + 0.02 * ((night * 3 + i) % 4)) * j
                   for i, j in enumerate(jitter)] for p, v in base.items()}
    samples["total"] = [sum(samples[p][i] for p in base) + 0.05 for i in range(3)]
    return {
        "schema_version": 1, "fixture": fixture, "grid": {}, "params": {}, "device": "cpu", "device_name": "CPU",
        "dtype": dtype, "passed": failing is None, "first_failure": failing, "fault": None,
        "started_at": (T0 + timedelta(days=night)).isoformat(), "duration_s": 2.0,
        "environment": {"git_commit": f"{night:02d}abcdef0123456789"}, "phase_timings": dict(base),
        "stages": rows,
        "timing": {"clock": "cpu", "threads": 1, "repeats": 3, "warmup": 1, "statistic": "min", "samples": samples},
    }


def _seed_registry(store: HistoryStore) -> None:
    """Two series over 10 nights; in 5zck_p1 Kinv fails on the last night and phase 4 is
    2x slower on the last three; synthetic stays quiet."""
    for night in range(10):
        store.record_run(registry_result(night=night, fixture="synthetic"))
        store.record_run(registry_result(night=night, fixture="5zck_p1", failing="Kinv" if night == 9 else None,
                                         phase4_scale=2.0 if night >= 7 else 1.0))


def test_only_what_moved_is_coloured_and_named_in_the_legend(store: HistoryStore) -> None:
    _seed_registry(store)
    regressions = find_regressions(store)
    assert {(r.fixture, r.kind, r.target) for r in regressions} == {
        ("5zck_p1", "status_flip", "Kinv"), ("5zck_p1", "error_growth", "Kinv"),
        ("5zck_p1", "slowdown", "phase 4"), ("5zck_p1", "slowdown", "total")}
    from parity.rendering.dashboard import moved_stages, slow_targets, stage_tolerances
    from parity.storage.history import judged_timings, timing_verdicts

    order = dict(store.stage_order())
    figures = {}
    for fixture in ("5zck_p1", "synthetic"):
        mine = [r for r in regressions if r.fixture == fixture]
        key = (fixture, "cpu", "float64")
        figures[fixture] = series_figure(
            fixture, store.stage_error_series(*key), order, judged_timings(store, *key), moved=moved_stages(mine),
            tolerances=stage_tolerances(store.result(store.runs(*key, limit=1)[0]["id"])),
            verdicts=timing_verdicts(store, *key), slow=slow_targets(mine))
    moved = figures["5zck_p1"]
    assert [(h.name, h.kinds) for h in moved.highlights] == [
        ("Kinv", ("status flip", "error growth")), ("phase 4", ("slowdown",)), ("total", ("slowdown",))]
    assert [h.colour for h in moved.highlights] == list(HIGHLIGHT_COLOURS[:3])
    assert "Kinv (status flip, error growth)" in moved.legend and "phase 4 (slowdown)" in moved.legend
    assert figures["synthetic"].highlights == []
    assert not any("(" in label and "rtol" not in label for label in figures["synthetic"].legend)
    # Tier tolerances are drawn: one dashed line per tier of each phase, at rtol + atol.
    from parity.stages import STAGES as REGISTRY
    from parity.contract.tiers import resolve_tier

    expected = {(str(s.phase), resolve_tier(s.tier).name, resolve_tier(s.tier).rtol + resolve_tier(s.tier).atol)
                for s in REGISTRY if resolve_tier(s.tier).rtol + resolve_tier(s.tier).atol > 0}
    assert set(moved.tiers) == expected and len(moved.tiers) == len(expected)
    assert "tier tolerance (rtol+atol)" in moved.legend


def _pixels_near(pixels, box, colour: str | None = None, tolerance: float = 45.0) -> int:
    """Pixels of an RGB(A) screenshot inside box=(x, y, w, h) close to ``colour`` (a hex
    string), or, with ``colour`` None, all clearly coloured (not grey) pixels."""
    import numpy as np

    x, y, w, h = (int(round(v)) for v in box)
    rgb = pixels[y:y + h, x:x + w, :3].astype(float)
    if rgb.max() <= 1.0:
        rgb = rgb * 255
    if colour is None:
        return int(np.count_nonzero(rgb.max(axis=2) - rgb.min(axis=2) > 60))
    target = np.array([int(colour[i:i + 2], 16) for i in (1, 3, 5)], dtype=float)
    return int(np.count_nonzero(np.linalg.norm(rgb - target, axis=2) < tolerance))


_LAYOUT_JS = """JSON.stringify({
  clientWidth: document.documentElement.clientWidth,
  scrollWidth: document.documentElement.scrollWidth,
  images: Array.from(document.querySelectorAll('img.trend')).map(function (img) {
    var r = img.getBoundingClientRect();
    return {x: r.left + window.scrollX, y: r.top + window.scrollY, w: r.width, h: r.height,
            natural: img.naturalWidth, complete: img.complete, alt: img.alt};
  }),
  moved: Array.from(document.querySelectorAll('p.moved')).map(function (p) { return p.textContent; })
})"""


def test_dashboard_in_a_real_browser(store: HistoryStore, reports: Path) -> None:
    """Headless Chromium: the trend figures fill the page width without a horizontal scroll
    bar, the series that moved has coloured lines named in its legend, the quiet one none."""
    browser = find_chromium()
    if browser is None:
        pytest.skip(chromium_unavailable_reason())
    import json

    from matplotlib.image import imread

    _seed_registry(store)
    out = render_dashboard(store, reports / "dashboard.html")
    check = check_page(out, browser, evaluate=[_LAYOUT_JS])
    assert check.requests == [] and check.console_errors == []
    layout = json.loads(check.values[_LAYOUT_JS])
    assert layout["scrollWidth"] <= layout["clientWidth"], "the page scrolls sideways"
    images = layout["images"]
    assert len(images) == 2 and all(img["complete"] for img in images)
    for img in images:
        assert img["w"] >= 0.9 * layout["clientWidth"], (img, layout["clientWidth"])
        assert img["natural"] >= img["w"], "figures are drawn at least as wide as shown (never blurred up)"
    moved, quiet = layout["moved"]  # fixtures in order: 5zck_p1, synthetic
    assert "Kinv (status flip, error growth)" in moved and "phase 4 (slowdown)" in moved
    assert "Nothing moved" in quiet
    shot = imread(check.screenshot_path)
    by_alt = {("5zck_p1" in img["alt"]): img for img in images}
    moved_img, quiet_img = by_alt[True], by_alt[False]
    top = (moved_img["x"], moved_img["y"], moved_img["w"], moved_img["h"] / 2)  # the error row
    bottom = (moved_img["x"], moved_img["y"] + moved_img["h"] / 2, moved_img["w"], moved_img["h"] / 2)
    kinv, phase4 = HIGHLIGHT_COLOURS[0], HIGHLIGHT_COLOURS[1]
    assert _pixels_near(shot, top, kinv) > 150, "Kinv's line is drawn in its colour"
    assert _pixels_near(shot, bottom, phase4) > 150, "phase 4's slow times are drawn in their colour"
    assert _pixels_near(shot, bottom, kinv) < 10, "the error colour stays in the error row"
    box = (quiet_img["x"], quiet_img["y"], quiet_img["w"], quiet_img["h"])
    assert _pixels_near(shot, box) == 0, "nothing moved in the quiet series: it is drawn in greys only"
