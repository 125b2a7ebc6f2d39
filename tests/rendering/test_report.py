"""Tests of the self-contained HTML divergence report (``parity.rendering.report``)."""

from __future__ import annotations

import copy
import json
import math
import os
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from parity.rendering import report
from parity.rendering.report import divergence_summary, load_result, render_report

try:  # tests/ is not a package; both import styles must work
    from tests._chromium import check_page, chromium_unavailable_reason, find_chromium
except ImportError:  # pragma: no cover - depends on how pytest set sys.path
    from _chromium import check_page, chromium_unavailable_reason, find_chromium

XSS = "<script>alert(1)</script>"
ESCAPED_XSS = "&lt;script&gt;alert(1)&lt;/script&gt;"


# --------------------------------------------------------------------------- #
# Hand-built results
# --------------------------------------------------------------------------- #
def _stage(name: str, phase: int, tier: str = "tight", status: str = "pass",
           n_total: int = 24, **extra: Any) -> dict:
    """A stage record as the runner writes it (passing unless told otherwise)."""
    tiers = {"tight": (1e-12, 1e-14), "decomposition": (1e-9, 1e-12),
             "end_to_end": (1e-9, 1e-12), "exact": (0.0, 0.0)}
    rtol, atol = tiers[tier]
    stage = {
        "name": name, "phase": phase, "tier": tier, "kind": "array",
        "status": status, "passed": status == "pass",
        "rtol": rtol, "atol": atol, "max_abs": 0.0, "max_rel": 0.0,
        "n_mismatch": 0, "n_total": n_total, "worst": None,
        "message": f"{name}: all {n_total} elements within {tier}",
        "duration_s": 0.0012, "details": {},
    }
    stage.update(extra)
    return stage


def _base(stages: list[dict], passed: bool, first_failure: str | None = None) -> dict:
    return {
        "schema_version": 1,
        "fixture": "5zck_p1",
        "pdb_path": "/data/fixtures/5zck_p1.pdb",
        "grid": {"hsampling": [-2, 2, 2], "ksampling": [-2, 2, 2], "lsampling": [-2, 2, 2]},
        "params": {"gnm_cutoff": 4.0, "gamma_intra": 1.0, "gamma_inter": 1.0,
                   "res_limit": 0.0, "expand_p1": True},
        "device": "cpu", "device_name": "CPU (x86_64)", "dtype": "float64",
        "passed": passed, "first_failure": first_failure, "fault": None,
        "started_at": "2026-11-26T07:30:00+00:00", "duration_s": 3.2,
        "environment": {"python": "3.11.7", "numpy": "2.4.6", "scipy": "1.14.1",
                        "torch": "2.5.1", "gemmi": "0.7.0", "git_commit": "abc123def456",
                        "hostname": "ci-runner-3", "platform": "Linux-x86_64"},
        "phase_timings": {"1": 0.1, "2": 0.3, "3": 0.5, "4": 1.2},
        "stages": stages,
    }


def _passing_stages() -> list[dict]:
    return [
        _stage("hkl_grid", 1, "exact", n_total=375),
        _stage("q_grid", 1, n_total=375),
        _stage("res_mask", 1, "exact", n_total=125),
        _stage("Amat", 2, n_total=2592),
        _stage("Mmat", 2, n_total=1296),
        _stage("F", 2, n_total=4000),
        _stage("Kmat", 3, n_total=1728),
        _stage("V", 3, "decomposition", kind="eigenspace", n_total=192),
        _stage("Winv", 3, "decomposition", n_total=192),
        _stage("covar", 3, "decomposition", n_total=144),
        _stage("Id", 4, "end_to_end", n_total=729),
    ]


def passing_result() -> dict:
    """Every stage passes; one stage is not comparable (still a pass)."""
    stages = _passing_stages()
    stages.insert(10, _stage("ADP", 3, "decomposition", status="not_comparable",
                             max_abs=None, max_rel=None, n_mismatch=None, n_total=None,
                             message="ADP is only defined after the torch backend's "
                                     "covariance reduction; gauge differs"))
    return _base(stages, passed=True)


def _slice_arrays() -> tuple[list[list[float | None]], list[list[float | None]]]:
    """Expected/actual ``l = 0`` slice of the 9x9 (h, k) grid, rows = h, columns = k.

    The worst point is (h,k)=(0.5,-1.5), (0,0) is NaN in both backends and
    (1.5,0.5) is NaN in the torch backend only.
    """
    h = np.linspace(-2.0, 2.0, 9)[:, None]
    k = np.linspace(-2.0, 2.0, 9)[None, :]
    expected = 1e3 * np.exp(-(h ** 2 + k ** 2) / 2.0) + 5.0
    actual = expected * (1.0 + 1e-11 * np.cos(3 * k))  # agreement within end_to_end ...
    actual[5, 1] = expected[5, 1] * 1.09                  # ... except at the worst point
    actual[6, 0] = expected[6, 0] * 1.03
    expected[4, 4] = actual[4, 4] = np.nan
    actual[7, 5] = np.nan

    def to_json(a: np.ndarray) -> list[list[float | None]]:
        return [[None if math.isnan(v) else float(v) for v in row] for row in a]
    return to_json(expected), to_json(actual)


def _eigen_table() -> list[dict]:
    rows = []
    for i, bz in enumerate([(0, 0, 0), (1, 0, 1), (0, 1, 0), (1, 1, 1), (0, 0, 1)]):
        rows.append({"bz": list(bz), "cluster_sizes": [3, 1, 2] if i % 2 else [1] * 6,
                     "max_projector_err": [1e-13, 4.2e-3, 2e-12, 3e-8, 1e-14][i],
                     "residual": 1e-14 * (i + 1), "orthonormality": 2e-15})
    rows.append({"bz": [1, 1, 0], "cluster_sizes": [2, 2, 2], "max_projector_err": None,
                 "residual": None, "orthonormality": 1e-15})
    return rows


def _hist(rtol_exp: int) -> dict:
    edges = list(range(-17, 1))
    counts = [0] * (len(edges) - 1)
    counts[0], counts[2], counts[5], counts[rtol_exp + 17 + 3] = 600, 80, 30, 12
    return {"edges": edges, "counts": counts}


def failing_result(eigen_fails: bool = True) -> dict:
    """A diverging run.

    Parameters
    ----------
    eigen_fails : bool
        When true the eigenspace stage ``V`` (phase 3) is the first
        divergence and ``Id`` (phase 4) fails downstream; when false only
        ``Id`` fails.
    """
    stages = _passing_stages()
    by_name = {s["name"]: s for s in stages}
    expected, actual = _slice_arrays()
    by_name["Id"].update(
        status="fail", passed=False, max_abs=26.235, max_rel=0.09, n_mismatch=12, n_total=729,
        worst={"index": [5, 1, 4], "location": "(h,k,l)=(0.5,-1.5,0)",
               "expected": 291.5047968601901, "actual": 317.74022857760724},
        message="Id: 12 of 729 elements outside end_to_end\n"
                "NaN pattern differs at 1 element, first at (h,k,l)=(1.5,0.5,0)",
        details={
            "log10_rel_hist": _hist(-9),
            "nan_pattern": {"expected_nan": 8, "actual_nan": 9, "mismatched": 1},
            "ulp": {"median": 3, "p99": 120000, "max": 4.5e13},
            "slice": {"title": "l = 0 through the worst point", "xlabel": "k", "ylabel": "h",
                      "extent": [-2.0, 2.0, -2.0, 2.0], "expected": expected, "actual": actual},
            "worst_elements": [
                {"index": [5, 1, 4], "location": "(h,k,l)=(0.5,-1.5,0)",
                 "expected": 291.5047968601901, "actual": 317.74022857760724,
                 "abs": 26.235431717417157, "rel": 0.09},
                {"index": [7, 5, 4], "location": "(h,k,l)=(1.5,0.5,0)",
                 "expected": 291.5047968601901, "actual": None, "abs": None, "rel": None},
                {"index": [6, 0, 4], "location": "(h,k,l)=(1,-2,0)",
                 "expected": 87.0849986238988, "actual": 89.69754858261577,
                 "abs": 2.6125499587169685, "rel": 0.03},
            ],
        })
    if eigen_fails:
        by_name["V"].update(
            status="fail", passed=False, kind="eigenspace", max_abs=4.2e-3, max_rel=4.2e-3,
            n_mismatch=2, n_total=192,
            worst={"index": [1, 0, 1], "location": "BZ (dh,dk,dl)=(1,0,1)",
                   "expected": 0.032, "actual": 0.035},
            message="V: eigenspace projectors differ at 2 of 8 BZ points",
            details={"log10_rel_hist": _hist(-9), "eigen_table": _eigen_table(),
                     "worst_elements": [{"index": [1, 0, 1], "location": "BZ (dh,dk,dl)=(1,0,1)",
                                         "expected": 0.032, "actual": 0.035,
                                         "abs": 0.003, "rel": 0.09375}]})
    stages.insert(10, _stage("ADP", 3, "decomposition", status="not_comparable",
                             max_abs=None, max_rel=None, n_mismatch=None, n_total=None,
                             message="ADP: shapes differ (expected (8,), actual (9,))"))
    stages.append(_stage("grad_Id", 4, "end_to_end", status="error", max_abs=None,
                         max_rel=None, n_mismatch=None, n_total=None,
                         message="Traceback (most recent call last):\n  ...\n"
                                 "RuntimeError: element 0 of tensors does not require grad"))
    first = "V" if eigen_fails else "Id"
    return _base(stages, passed=False, first_failure=first)


def _body(html: str) -> str:
    """The document without its ``<style>`` block (CSS names every class)."""
    return re.sub(r"<style>.*?</style>", "", html, flags=re.S)


def _row_html(html: str, stage_name: str) -> str:
    """The ``<tr>`` of the phase table for ``stage_name``."""
    match = re.search(r'<tr id="stage-\d+-' + re.escape(stage_name) + r'"[^>]*>.*?</tr>',
                      html, flags=re.S)
    assert match, f"no table row for {stage_name}"
    return match.group(0)


# --------------------------------------------------------------------------- #
# Content
# --------------------------------------------------------------------------- #
def test_passing_report_is_short_and_clean() -> None:
    result = passing_result()
    html = _body(render_report(result))
    assert "PASSED" in html and "DIVERGED" not in html
    for stage in result["stages"]:
        assert f">{stage['name']}<" in html
    assert "data:image/png;base64," not in html
    assert 'class="detail' not in html
    assert "first-divergence" not in html
    assert "First divergence" not in html
    # identity and legend
    for text in ("5zck_p1", "/data/fixtures/5zck_p1.pdb", "CPU (x86_64)", "float64",
                 "abc123def456", "ci-runner-3", "gnm_cutoff", "2026-11-26 07:30:00",
                 "How to read this report", "atol&middot;max|e| + rtol&middot;|e|"):
        assert text in html, text
    # the not-comparable stage shows its reason
    assert "Reason: ADP is only defined after" in html
    assert "not comparable" in _row_html(html, "ADP")
    assert divergence_summary(result) is None


def test_failing_report_content() -> None:
    result = failing_result()
    html = _body(render_report(result))
    assert "DIVERGED" in html and "PASSED" not in html
    for stage in result["stages"]:
        assert f">{stage['name']}<" in html, stage["name"]
    # verdict sentence names the first divergence in words
    summary = divergence_summary(result)
    assert summary == ("First divergence: phase 3, stage `V` \u2014 2 of 192 elements outside "
                       "tier `decomposition` (rtol 1e-9); worst at BZ (dh,dk,dl)=(1,0,1): "
                       "expected 0.032, got 0.035; normwise rel err (max|a-e|/max|e|) 0.0042")
    assert "First divergence: phase 3, stage <code>V</code>" in html
    # the first diverging row (only) is highlighted; status is text, not colour only
    assert "first-divergence" in _row_html(html, "V")
    assert "first-divergence" not in _row_html(html, "Id")
    assert "FAIL" in _row_html(html, "Id") and "pass" in _row_html(html, "Amat")
    assert html.count("FIRST DIVERGENCE") == 2  # table row + detail heading
    # not comparable and error stages show their messages
    assert "Reason: ADP: shapes differ" in html
    assert "Error: RuntimeError: element 0 of tensors does not require grad" in html
    assert "Traceback (most recent call last):" in html  # full message in the detail <pre>
    # detail sections: V, Id, grad_Id (fail + error), with figures
    assert html.count('class="detail card') == 3
    assert html.count("data:image/png;base64,") == 3  # V hist, Id hist, Id slice
    assert "This stage comes after the first divergence" in html
    assert "l = 0 through the worst point" in html
    assert "positions that differ" in html
    assert "317.74022857760724" in html and "NaN/inf" in html


def test_failing_report_first_divergence_in_phase_4() -> None:
    result = failing_result(eigen_fails=False)
    html = _body(render_report(result))
    assert "first-divergence" in _row_html(html, "Id")
    assert "first-divergence" not in _row_html(html, "V")
    assert divergence_summary(result).startswith(
        "First divergence: phase 4, stage `Id` \u2014 12 of 729 elements outside tier "
        "`end_to_end` (rtol 1e-9); worst at (h,k,l)=(0.5,-1.5,0): expected 292, got 318; "
        "normwise rel err (max|a-e|/max|e|) 9%")
    assert html.count("data:image/png;base64,") == 2  # Id hist + slice


def test_first_divergence_without_first_failure_field() -> None:
    result = failing_result()
    result["first_failure"] = None
    assert report.first_divergence(result)[1]["name"] == "V"


def test_eigen_table_sorted_worst_first() -> None:
    html = render_report(failing_result())
    table = re.search(r'<table class="small eigen">.*?</table>', html, flags=re.S).group(0)
    bz = re.findall(r'<td class="mono">(\([-\d,]+\))</td>', table)
    # NaN (null) first, then 4.2e-3, 3e-8, 2e-12, 1e-13, 1e-14
    assert bz == ["(1,1,0)", "(1,0,1)", "(1,1,1)", "(0,1,0)", "(0,0,0)", "(0,0,1)"]
    assert table.count("num bad") == 3  # NaN, 4.2e-3, 3e-8 exceed rtol 1e-9


@pytest.mark.parametrize("make", [passing_result, failing_result], ids=["pass", "fail"])
def test_self_contained(make: Any) -> None:
    html = render_report(make())
    assert "<script" not in html.lower()
    assert "http://" not in html and "https://" not in html
    assert "<link" not in html.lower() and "@import" not in html
    assert not re.search(r"""src=["'](?!data:)""", html)


def test_escaping() -> None:
    result = failing_result()
    result["fixture"] = XSS
    result["pdb_path"] = f"/tmp/{XSS}.pdb"
    result["environment"]["hostname"] = XSS
    result["fault"] = XSS
    for stage in result["stages"]:
        if stage["name"] in ("Id", "ADP", "grad_Id"):
            stage["message"] = XSS
    result["stages"][0]["name"] = XSS
    html = render_report(result)
    assert "<script" not in html.lower()
    assert html.count(ESCAPED_XSS) >= 6


def test_escaping_in_verdict_with_code_spans() -> None:
    result = failing_result()
    first = next(s for s in result["stages"] if s["name"] == "V")
    first.update(n_mismatch=None, n_total=None, message=f"`{XSS}` differs from `ref`")
    html = render_report(result)
    assert "<script" not in html.lower()
    assert f"<code>{ESCAPED_XSS}</code> differs from <code>ref</code>" in html


def test_tier_in_verdict_is_code() -> None:
    html = render_report(failing_result())
    assert "2 of 192 elements outside tier <code>decomposition</code> (rtol 1e-9)" in html


def test_fault_is_shown() -> None:
    result = failing_result()
    result["fault"] = "winv_perturb"
    html = render_report(result)
    assert "Injected fault:" in html and "winv_perturb" in html
    assert "Injected fault:" not in render_report(passing_result())


# --------------------------------------------------------------------------- #
# Loading and writing
# --------------------------------------------------------------------------- #
def test_load_result_roundtrip(tmp_path: Path) -> None:
    path = tmp_path / "result.json"
    result = failing_result()
    path.write_text(json.dumps(result))
    assert load_result(path) == result


@pytest.mark.parametrize("text, match", [
    ("{not json", "invalid JSON"),
    ("[1, 2, 3]", "expected a JSON object"),
    ('{"schema_version": 1, "fixture": "x"}', "missing key.*passed.*stages"),
    ('{"schema_version": 2, "fixture": "x", "passed": true, "stages": []}',
     "unsupported schema_version 2"),
    ('{"schema_version": 1, "fixture": "x", "passed": true, "stages": {}}', "'stages' must be a list"),
    ('{"schema_version": 1, "fixture": "x", "passed": true, "stages": [{"name": "a"}]}',
     r"stages\[0\] is missing key.*phase"),
])
def test_load_result_rejects(tmp_path: Path, text: str, match: str) -> None:
    path = tmp_path / "bad.json"
    path.write_text(text)
    with pytest.raises(ValueError, match=match) as info:
        load_result(path)
    assert str(path) in str(info.value)


def test_render_rejects_non_result() -> None:
    with pytest.raises(ValueError, match="not a parity result"):
        render_report({"hello": 1})


def test_atomic_write(tmp_path: Path) -> None:
    path = tmp_path / "nested" / "dir" / "report.html"
    html = render_report(passing_result(), path)
    assert path.read_text(encoding="utf-8") == html
    assert sorted(p.name for p in path.parent.iterdir()) == ["report.html"]
    # overwrite in place, still no temp file left
    html2 = render_report(failing_result(), path)
    assert path.read_text(encoding="utf-8") == html2
    assert sorted(p.name for p in path.parent.iterdir()) == ["report.html"]


def test_atomic_write_failure_keeps_old_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "report.html"
    path.write_text("old")

    def boom(src: str, dst: str) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(report.os, "replace", boom)
    with pytest.raises(OSError, match="disk full"):
        render_report(passing_result(), path)
    assert path.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.html"]


def test_render_does_not_mutate_result() -> None:
    result = failing_result()
    snapshot = copy.deepcopy(result)
    render_report(result)
    assert result == snapshot


# --------------------------------------------------------------------------- #
# Real browser
# --------------------------------------------------------------------------- #
@pytest.mark.parametrize("make", [passing_result, failing_result], ids=["pass", "fail"])
def test_renders_in_chromium_offline(make: Any, tmp_path: Path) -> None:
    browser = find_chromium()
    if browser is None:
        pytest.skip(chromium_unavailable_reason())
    path = tmp_path / "report.html"
    render_report(make(), path)
    check = check_page(path, browser)
    assert check.requests == []
    assert check.console_errors == []
    assert check.screenshot_path is not None and check.screenshot_path.exists()
    png = check.screenshot_path.read_bytes()
    assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 10_000
    if os.environ.get("PARITY_REPORT_ARTIFACTS"):  # keep the screenshots for a human look
        out = Path(os.environ["PARITY_REPORT_ARTIFACTS"])
        out.mkdir(parents=True, exist_ok=True)
        (out / f"report-{make.__name__}.html").write_bytes(path.read_bytes())
        (out / f"report-{make.__name__}.png").write_bytes(png)


def test_chromium_helper_is_not_vacuous(tmp_path: Path) -> None:
    """The browser check does see requests, console errors and exceptions."""
    browser = find_chromium()
    if browser is None:
        pytest.skip(chromium_unavailable_reason())
    path = tmp_path / "bad.html"
    path.write_text('<!DOCTYPE html><html><body><img src="http://127.0.0.1:9/x.png">'
                    '<script>console.error("boom"); throw new Error("kaput");</script>'
                    "</body></html>")
    check = check_page(path, browser)
    assert check.requests == ["http://127.0.0.1:9/x.png"]
    joined = "\n".join(check.console_errors)
    assert "boom" in joined and "kaput" in joined


def test_render_accepts_numpy_values() -> None:
    """An in-memory result (NumPy scalars and arrays, not JSON) renders the same way."""
    result = failing_result(eigen_fails=False)
    stage = next(s for s in result["stages"] if s["name"] == "Id")
    stage["n_mismatch"], stage["n_total"] = np.int64(12), np.int64(729)
    stage["max_abs"] = np.float64(26.235)
    sl = stage["details"]["slice"]
    sl["expected"] = np.array(sl["expected"], dtype=float)
    sl["actual"] = np.array(sl["actual"], dtype=float)
    html = _body(render_report(result))
    assert "12 / 729" in _row_html(html, "Id")
    assert html.count("data:image/png;base64,") == 2


def test_bisect_section_names_root_cause_and_inherited(tmp_path):
    from parity.running.crossfeed import classify
    from parity.running.runner import execute, make_run
    from parity.stages import select

    ctx = make_run("synthetic", samplings=((-2, 2, 3),) * 3, fault="amat_shared_buffer")
    result = execute(ctx, select([1, 2]), progress=False)
    result["bisect"] = classify(ctx, result["stages"]).to_dict()
    html = render_report(result, tmp_path / "bisect.html")
    assert "Bisection: root cause vs inherited" in html
    section = html[html.index('id="bisect"'):html.index('id="identity"')]
    assert "<code>Amat</code>" in section and "root cause" in section and "inherited" in section
    # A run without bisection has no such section.
    del result["bisect"]
    assert 'id="bisect"' not in render_report(result)


# --------------------------------------------------------------------------- #
# One way to say "relative error"; overrides; not comparable
# --------------------------------------------------------------------------- #
def test_both_relative_errors_are_shown_and_labelled() -> None:
    result = failing_result(eigen_fails=False)
    stage = next(s for s in result["stages"] if s["name"] == "Id")
    stage.update(max_rel=0.0187, max_rel_elementwise=94.9)
    html = _body(render_report(result))
    row = _row_html(html, "Id")
    assert ">0.0187<" in row and ">94.9<" in row
    assert "normwise rel err<br><span class=\"mono\">max|a&minus;e|<wbr>/max|e|</span>" in html
    assert "element-wise rel err<br><span class=\"mono\">max |a&minus;e|<wbr>/|e|</span>" in html
    detail = html[html.index('id="stage-'):]
    assert "normwise rel err (max|a-e|/max|e|) 0.0187" in detail
    assert "element-wise rel err (max |a-e|/|e|) 94.9" in detail
    assert "|a &minus; e| / |e| (element-wise)" in html
    # The verdict sentence quotes the normwise figure, labelled, not a third one.
    assert divergence_summary(result).endswith("normwise rel err (max|a-e|/max|e|) 1.87%")


def test_elementwise_error_of_older_results_is_read_from_details() -> None:
    result = failing_result(eigen_fails=False)
    stage = next(s for s in result["stages"] if s["name"] == "Id")
    stage["details"]["max_rel_elementwise"] = 94.9
    assert ">94.9<" in _row_html(_body(render_report(result)), "Id")


def test_ulp_distance_is_readable() -> None:
    html = _body(render_report(failing_result(eigen_fails=False)))
    assert "median 3 ulp, 99th percentile 1.2e5 ulp, max 4.5e13 ulp" in html


def test_overrides_are_shown_with_their_source() -> None:
    result = failing_result()
    result["tier_overrides"] = [{"tier": "tight", "key": "rtol", "value": 1e-9, "table_value": 1e-13,
                                 "source": "/repo/pyproject.toml"}]
    html = _body(render_report(result))
    section = html[html.index('id="overrides"'):]
    section = section[:section.index("</table>")]
    assert "Tier overrides in force" in section and "<code>tight</code>" in section
    assert ">1e-9<" in section and ">1e-13<" in section and "/repo/pyproject.toml" in section
    result["tier_overrides"] = []
    assert "Tier overrides: none" in render_report(result)
    del result["tier_overrides"]
    assert 'id="overrides"' not in render_report(result)


def test_scaled_tier_is_shown() -> None:
    result = failing_result(eigen_fails=False)
    stage = next(s for s in result["stages"] if s["name"] == "Id")
    stage["details"]["tier"] = {"name": "end_to_end", "rtol": 1e-9, "atol": 1.9e-11, "n_terms": 84644}
    html = _body(render_report(result))
    assert '1.9e-11<span class="terms">(84644 terms)</span>' in _row_html(html, "Id")
    assert "scaled for 84644 summed terms" in html


def test_a_run_that_only_failed_to_compare_is_labelled_not_comparable() -> None:
    result = passing_result()
    result["passed"] = False
    adp = next(s for s in result["stages"] if s["name"] == "ADP")
    adp["reason"] = "no element to compare numerically: all 8 element(s) are NaN/inf in both arrays"
    html = _body(render_report(result))
    assert "NOT COMPARABLE" in html and "DIVERGED" not in html
    assert "Reason: no element to compare numerically" in html
    assert divergence_summary(result).endswith("not comparable: no element to compare numerically: "
                                               "all 8 element(s) are NaN/inf in both arrays")


def test_report_of_a_real_comparison_uses_its_fields() -> None:
    """A stage record built from a Comparison (as the runner copies it) renders both figures."""
    from parity.comparison.engine import compare_arrays
    from parity.contract.tiers import TIERS

    e = np.array([1.0, 1e-3, -2.0])
    comparison = compare_arrays(np.array([1.0 + 1e-3, 2e-3, -2.0]), e, TIERS["tight"], name="Id")
    record = _stage("Id", 4, "end_to_end", status=comparison.status, passed=comparison.passed,
                    **{k: v for k, v in comparison.to_dict().items()
                       if k in ("max_abs", "max_rel", "max_rel_elementwise", "n_mismatch", "n_total",
                                "n_compared", "worst", "message", "details")})
    result = _base([_stage("hkl_grid", 1, "exact"), record], passed=False, first_failure="Id")
    row = _row_html(_body(render_report(result)), "Id")
    assert ">0.0005<" in row and ">1<" in row
