"""The dashboard reads right (issue 21): float32 tier labels never print on top of each
other (their boxes measured by matplotlib's renderer, the one that draws the PNG), exact
zeros are labelled where they are drawn, third-opinion runs are not a red "passed: no"."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

pytest.importorskip("matplotlib")

from parity.rendering import dashboard  # noqa: E402
from parity.rendering.dashboard import render_dashboard, series_figure  # noqa: E402
from parity.storage.history import HistoryStore  # noqa: E402

try:  # tests/ is not a package; both import styles must work
    from tests._chromium import check_page, chromium_unavailable_reason, find_chromium
except ImportError:  # pragma: no cover
    from _chromium import check_page, chromium_unavailable_reason, find_chromium

T0 = datetime(2026, 11, 1, 7, 30, tzinfo=timezone.utc)

#: Per-stage float32 tolerances as F32_STAGE_TIERS makes them: several a few percent apart.
F32_TOLERANCES = {"hessian": ("hessian_f32", 2.1e-6), "K": ("K_f32", 2.4e-6), "D": ("D_f32", 2.9e-6),
                  "Kinv": ("Kinv_f32", 3.3e-5), "covar": ("covar_f32", 3.6e-5), "Winv": ("Winv_f32", 4.0e-5),
                  "ADP": ("ADP_f32", 2.0e-4)}


def _series(values: dict[str, list[float | None]]):
    errors = {name: [{"run_id": i + 1, "started_at": (T0 + timedelta(days=i)).isoformat(), "status": "pass",
                      "max_rel": v, "max_abs": v, "duration_s": 0.01, "report_path": None}
                     for i, v in enumerate(vals)] for name, vals in values.items()}
    runs = [{"run_id": i + 1, "started_at": (T0 + timedelta(days=i)).isoformat(),
             "samples": {"3": [1.0], "total": [2.0]}} for i in range(len(next(iter(values.values()))))]
    return errors, {"clock": "cpu", "runs": runs, "dropped": 0}


def _figure(monkeypatch, values, tolerances):
    """series_figure's matplotlib figure (captured on its way to PNG) and its result."""
    captured = []
    original = dashboard.png_data_uri

    def keep(fig):
        captured.append(fig)
        return original(fig)

    monkeypatch.setattr(dashboard, "png_data_uri", keep)
    errors, timings = _series(values)
    image = series_figure("5zck_p1", errors, {name: 3 for name in values}, timings, tolerances=tolerances)
    return captured[0], image


def _text_overlaps(fig) -> list[tuple[str, str]]:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = FigureCanvasAgg(fig)  # the canvas savefig draws the PNG with
    canvas.draw()
    renderer = canvas.get_renderer()
    bad = []
    for ax in fig.axes:
        boxes = [(t.get_text(), t.get_window_extent(renderer)) for t in ax.texts if t.get_text()]
        for i, (a, box_a) in enumerate(boxes):
            for b, box_b in boxes[i + 1:]:
                if box_a.overlaps(box_b):
                    bad.append((a, b))
    return bad


def test_float32_tier_labels_do_not_overlap(monkeypatch):
    values = {name: [1e-7, 2e-7, 1.5e-7] for name in F32_TOLERANCES}
    fig, image = _figure(monkeypatch, values, F32_TOLERANCES)
    assert _text_overlaps(fig) == []
    texts = [t.get_text() for ax in fig.axes for t in ax.texts]
    assert any(t.startswith("3 tiers 2e-06") for t in texts), texts  # the close ones share a label
    # every tolerance is still drawn as its own line
    assert sorted(tol for _, _, tol in image.tiers) == sorted(tol for _, tol in F32_TOLERANCES.values())


def test_overlap_measurement_is_not_vacuous(monkeypatch):
    # One label per line (the old drawing) overlaps on the same data.
    monkeypatch.setattr(dashboard, "_tier_labels", lambda ax, drawn: [(f"{t} {v:.0e}", v) for t, v in drawn])
    values = {name: [1e-7, 2e-7, 1.5e-7] for name in F32_TOLERANCES}
    fig, _ = _figure(monkeypatch, values, F32_TOLERANCES)
    assert _text_overlaps(fig)


def test_well_separated_tiers_keep_their_own_labels(monkeypatch):
    tolerances = {"K": ("tight", 1.5e-13), "Kinv": ("decomposition", 2e-10)}
    fig, _ = _figure(monkeypatch, {"K": [1e-15, 2e-15], "Kinv": [1e-12, 1e-12]}, tolerances)
    texts = {t.get_text() for ax in fig.axes for t in ax.texts}
    assert {"tight 1e-13", "decomposition 2e-10"} <= texts


def test_exact_zeros_are_labelled_where_they_are_drawn(monkeypatch):
    fig, _ = _figure(monkeypatch, {"K": [0.0, 1e-15, 0.0]}, {"K": ("tight", 1.5e-13)})
    texts = [t.get_text() for ax in fig.axes for t in ax.texts]
    assert "0 (exact) drawn at 1e-18" in texts
    assert _text_overlaps(fig) == []
    fig, _ = _figure(monkeypatch, {"K": [1e-15, 2e-15]}, {"K": ("tight", 1.5e-13)})
    assert not any("exact" in t.get_text() for ax in fig.axes for t in ax.texts)


# ------------------------------------------------------------------ recent runs: third opinions
def _result(fixture, passed, reference="numpy", night=0, fault=None):
    rows = [{"name": "K", "phase": 3, "tier": "tight", "status": "pass" if passed else "fail", "passed": passed,
             "max_abs": 1e-15, "max_rel": 1e-15, "n_mismatch": 0, "n_total": 8, "duration_s": 0.01}]
    return {"schema_version": 1, "fixture": fixture, "grid": {}, "params": {}, "device": "cpu",
            "device_name": "CPU", "dtype": "float64", "passed": passed, "first_failure": None if passed else "K",
            "fault": fault, "started_at": (T0 + timedelta(days=night)).isoformat(), "duration_s": 1.0,
            "reference": {"name": reference}, "candidate": {"name": "torch"},
            "environment": {"git_commit": "abc", "python": "3.11"}, "phase_timings": {"3": 1.0},
            "stages": rows}


def test_third_opinion_runs_are_not_shown_as_failures(tmp_path):
    with HistoryStore(tmp_path / "h.sqlite") as store:
        store.record_run(_result("5zck_p1", True))
        store.record_run(_result("5zck_p1", False, reference="upstream-eryx", night=1))
        store.record_run(_result("5zck_p1", False, night=2))
        out = render_dashboard(store, tmp_path / "d.html")
    page = Path(out).read_text()
    recent = page[page.index('id="recent"'):]
    rows = recent.split("<tr>")[2:]
    upstream = next(r for r in rows if "upstream-eryx" in r)
    own_fail = next(r for r in rows if "upstream-eryx" not in r and 'class="bad"' in r)
    assert 'class="bad"' not in upstream and "no, expected (third opinion)" in upstream
    assert "upstream-eryx as reference): expected to differ" in upstream
    assert ">no<" in own_fail  # the project's own pair failing is still red


def test_injected_fault_runs_are_expected_failures(tmp_path):
    with HistoryStore(tmp_path / "h.sqlite") as store:
        store.record_run(_result("5zck_p1", False, fault="phase_sign"))
        out = render_dashboard(store, tmp_path / "d.html")
    recent = Path(out).read_text().split('id="recent"')[1]
    assert 'class="bad"' not in recent and "fault injected" in recent


def test_dashboard_tables_do_not_spill_in_chromium(tmp_path):
    browser = find_chromium()
    if browser is None:
        pytest.skip(chromium_unavailable_reason())
    with HistoryStore(tmp_path / "h.sqlite") as store:
        for night in range(3):
            store.record_run(_result("5zck_p1", True, night=night))
            store.record_run(_result("5zck_p1", False, reference="upstream-eryx", night=night))
        out = render_dashboard(store, tmp_path / "d.html")
    js = r"""(() => {
      const spill = [];
      for (const cell of document.querySelectorAll('td, th'))
        if (cell.scrollWidth > cell.clientWidth + 1) spill.push(cell.innerText.trim().slice(0, 60));
      const imgs = Array.from(document.querySelectorAll('img.trend')).map(i => i.getBoundingClientRect());
      let overlap = 0;
      for (let i = 0; i < imgs.length; i++) for (let j = i + 1; j < imgs.length; j++) {
        const a = imgs[i], b = imgs[j];
        if (a.right > b.left && a.left < b.right && a.bottom > b.top && a.top < b.bottom) overlap++;
      }
      // labels of the page itself: the status matrix's column heads and the recent runs' cells
      const boxes = Array.from(document.querySelectorAll('table.matrix th, table.recent td')).map(e => {
        const r = document.createRange(); r.selectNodeContents(e); return r.getBoundingClientRect(); })
        .filter(b => b.width > 0);
      let labels = 0;
      for (let i = 0; i < boxes.length; i++) for (let j = i + 1; j < boxes.length; j++) {
        const a = boxes[i], b = boxes[j];
        if (a.right > b.left + 0.5 && a.left < b.right - 0.5 &&
            a.bottom > b.top + 0.5 && a.top < b.bottom - 0.5) labels++;
      }
      return {spill: spill, overlap: overlap, imgs: imgs.length, labels: labels, boxes: boxes.length};
    })()"""
    check = check_page(Path(out), browser, evaluate=[js])
    layout = check.values[js]
    assert check.console_errors == [] and check.requests == []
    assert layout["imgs"] >= 2 and layout["overlap"] == 0 and layout["spill"] == [], layout
    assert layout["boxes"] > 20 and layout["labels"] == 0, layout
