"""What the HTML report shows reads right (issue 21): the atol column is not covered by
the status badge (measured in Chromium), headers stay in their column, "(N terms)" is
explained, counts name their units, each tier is listed once, no repeated residual, ULP
distances leave out sign flips, the duration says what it covers."""
from __future__ import annotations

import html as html_lib
import re
from pathlib import Path

import numpy as np
import pytest

from parity.comparison.arrays import compare_arrays
from parity.comparison.common import format_ulp
from parity.rendering.report import render_report
from parity.contract.tiers import TIERS

try:  # tests/ is not a package; both import styles must work
    from tests._chromium import check_page, chromium_unavailable_reason, find_chromium
except ImportError:  # pragma: no cover
    from _chromium import check_page, chromium_unavailable_reason, find_chromium


def _stage(name, phase, *, tier="tight", status="pass", rtol=1e-13, atol=5e-14, n_terms=1, kind="array",
           n_total=6912, n_mismatch=0, n_compared=None, **extra):
    stage = {"name": name, "phase": phase, "tier": tier, "kind": kind, "status": status,
             "passed": status == "pass", "rtol": rtol, "atol": atol, "max_abs": 45.5, "max_rel": 0.0345,
             "max_rel_elementwise": 5.68, "n_mismatch": n_mismatch, "n_total": n_total,
             "n_compared": n_total if n_compared is None else n_compared,
             "worst": {"index": [4, 21, 9], "location": "BZ (dh,dk,dl)=(0,1,1)"},
             "message": f"{name}: message", "duration_s": 0.054,
             "details": {"tier": {"name": tier, "rtol": rtol, "atol": atol, "n_terms": n_terms}}}
    stage.update(extra)
    return stage


def _result(stages, passed=False, first="K"):
    return {"schema_version": 1, "fixture": "5zck_p1", "passed": passed, "first_failure": first,
            "verdict": "pass" if passed else "fail", "dtype": "float64", "device": "cpu",
            "started_at": "2026-12-05T20:00:00+00:00", "duration_s": 114.0,
            "phase_timings": {"1": 1.0, "3": 100.0, "setup_reference": 40.0, "setup_candidate": 44.0},
            "stages": stages}


def wide_result():
    """Long atol values with many summed terms next to FAIL badges, in every column."""
    stages = [
        _stage("hessian", 3, atol=7.37e-14, n_terms=84644),
        _stage("K", 3, status="fail", atol=7.37e-14, n_terms=84644, n_mismatch=1104),
        _stage("Kinv", 3, tier="decomposition", status="fail", rtol=1e-10, atol=1.88e-11, n_terms=84644,
               n_mismatch=4224),
        _stage("eigenspaces", 3, tier="decomposition", kind="eigenspace", status="fail", rtol=1e-10,
               atol=1e-10, n_terms=163, n_total=12, n_mismatch=8, n_compared=177),
        _stage("Id", 4, tier="end_to_end", rtol=1e-11, atol=1e-11),
    ]
    return _result(stages)


def _text(page: str) -> str:
    body = re.sub(r"<style>.*?</style>", "", page, flags=re.S)
    return re.sub(r"\s+", " ", html_lib.unescape(re.sub(r"<[^>]+>", " ", body)))


def _metrics(page: str, name: str) -> str:
    section = re.search(r'id="[^"]*' + re.escape(name) + r'-detail".*?<p class="metrics">(.*?)</p>', page, re.S)
    assert section, name
    return re.sub(r"\s+", " ", html_lib.unescape(re.sub(r"<[^>]+>", "", section.group(1)))).strip()


# ------------------------------------------------------------------ content
def test_terms_are_shown_under_the_atol_and_explained():
    page = render_report(wide_result())
    row = re.search(r'<tr id="stage-\d+-K".*?</tr>', page, re.S).group(0)
    assert re.search(r'<td class="num tol">7\.37e-14<span class="terms">\(84644 terms\)</span></td>', row)
    legend = _text(re.search(r'id="how-to-read".*?</section>', page, re.S).group(0))
    assert "(N terms)" in legend and "sums of N terms" in legend


def test_terms_are_not_explained_in_words_that_are_wrong():
    # The legend's rule is the tiers' own: atol raised to N * eps where that is larger.
    page = render_report(wide_result())
    legend = _text(re.search(r'id="how-to-read".*?</section>', page, re.S).group(0))
    assert "N·ε" in legend and "rtol is unchanged" in legend
    t = TIERS["tight"].scaled(84644, float(np.finfo(np.float64).eps))
    assert t.atol == max(TIERS["tight"].atol, 84644 * float(np.finfo(np.float64).eps)) and t.rtol == TIERS["tight"].rtol


def test_eigenspace_counts_name_their_units():
    metrics = _metrics(render_report(wide_result()), "eigenspaces")
    assert "8 of 12 BZ points outside tolerance" in metrics
    assert "177 eigenvalue clusters compared numerically" in metrics
    assert "177 of 12" not in metrics


def test_array_counts_keep_of_total_and_spacing():
    metrics = _metrics(render_report(wide_result()), "K")
    assert "1104 of 6912 elements outside tolerance · 6912 of 6912 elements compared numerically · max abs err" \
        in metrics
    assert not re.search(r"\S·|·\S", metrics), metrics  # "tolerance· 6912" was the old layout


def test_invariant_counts_one_check_over_many_elements():
    stage = _stage("K_hermitian", 3, tier="exact", kind="invariant", status="fail", rtol=0.0, atol=0.0,
                   n_total=1, n_mismatch=1, n_compared=6912)
    metrics = _metrics(render_report(_result([stage], first="K_hermitian")), "K_hermitian")
    assert "1 of 1 checks outside tolerance" in metrics and "6912 elements compared numerically" in metrics


def test_each_tier_is_listed_once_and_scaling_is_said():
    stages = [_stage(f"s{i}", 3, atol=a) for i, a in enumerate((5e-14, 7.37e-14, 1.2e-13, 5e-14))]
    stages.append(_stage("Winv", 3, tier="decomposition", rtol=1e-10, atol=1e-10))
    page = render_report(_result(stages, passed=True, first=None))
    tiers = _text(re.search(r"Tiers in this run:.*?</p>", page, re.S).group(0))
    assert tiers.count("tight") == 1 and tiers.count("decomposition") == 1
    assert "tight (rtol 1e-13, atol 5e-14 … 1.2e-13, scaled per stage" in tiers
    assert "decomposition (rtol 1e-10, atol 1e-10)" in tiers


def test_diagnosis_residual_is_not_repeated():
    sentence = "candidate = conj(reference); residual 6.05e-16 of max|reference|, within tier tight."
    stage = _stage("K", 3, status="fail", n_mismatch=3,
                   diagnosis=[{"signature": "conjugate", "phrase": "conjugate", "sentence": sentence,
                               "residual": 6.05e-16, "explains": True},
                              {"signature": "shift", "phrase": "shift", "sentence": "shifted by one along h",
                               "residual": 0.25, "explains": False}])
    text = _text(render_report(_result([stage])))
    assert text.count("6.05e-16") == 1
    assert "shifted by one along h (residual 0.25)" in text  # a sentence without it keeps it


def test_duration_says_what_it_covers():
    text = _text(render_report(wide_result()))
    assert re.search(r"Duration 1 min 54 s \(computing and comparing the stages; building both sides took "
                     r"1 min 24 s more; start-up, imports and writing the outputs not included\)", text), text


# ------------------------------------------------------------------ ULP and sign flips
def test_ulp_distance_leaves_out_sign_flips():
    e = np.array([1.0, 2.0, -3.0, 1e-300, 5.0])
    a = np.array([1.0, np.nextafter(2.0, 3.0), 3.0, -1e-300, 6.0])  # two sign flips
    result = compare_arrays(a, e, TIERS["tight"], name="x")
    ulp = result.details["ulp"]
    assert ulp["sign_flips"] == 2
    assert ulp["max"] < 1e16  # 5 -> 6 is 2**50 ulps; a flip would have been ~9.2e18
    assert "2 pair(s) across zero (opposite signs, or zero on one side) not measured" in format_ulp(ulp)
    assert "9.2e18" not in result.message


def test_ulp_of_complex_sign_flips_only():
    e = np.array([1 + 2j, 3 - 4j])
    a = np.conj(e)  # the imaginary parts all flip; the real parts agree
    ulp = compare_arrays(a, e, TIERS["tight"], name="K").details["ulp"]
    assert ulp["parts"]["im"]["sign_flips"] == 2 and ulp["parts"]["im"]["max"] is None
    assert ulp["parts"]["re"]["max"] == 0 and ulp["max"] == 0
    assert format_ulp(ulp["parts"]["im"]).startswith("2 pair(s) across zero")


def test_ulp_two_zeros_agree_and_zero_against_a_tiny_value_is_not_measured():
    e = np.array([0.0, 0.0, 1e-320, 1.0])
    a = np.array([-0.0, 1e-17, 2e-320, 1.0])
    ulp = compare_arrays(a, e, TIERS["tight"], name="x").details["ulp"]
    assert ulp["sign_flips"] == 1  # 0 vs 1e-17: ~4.4e18 ulps, left out
    # positive floats: their bit patterns are ordered, so subtracting them counts the floats between
    apart = int(np.float64(2e-320).view(np.int64) - np.float64(1e-320).view(np.int64))
    assert ulp["max"] == apart and 1000 < apart < 5000  # subnormals a few thousand ulps apart: measured
    assert ulp["median"] == 0.0


# ------------------------------------------------------------------ real browser
_LAYOUT_JS = r"""(() => {
  const spill = [], covered = [];
  for (const cell of document.querySelectorAll('table.stages td, table.stages th')) {
    if (cell.scrollWidth > cell.clientWidth + 1) spill.push(cell.innerText.trim().slice(0, 60));
  }
  for (const row of document.querySelectorAll('tr.stage-row')) {
    const tol = row.querySelector('td.tol'), badge = row.querySelector('.status');
    if (!tol || !badge) continue;
    const range = document.createRange(); range.selectNodeContents(tol);
    const ink = Array.from(range.getClientRects()), b = badge.getBoundingClientRect();
    const cell = tol.getBoundingClientRect();
    for (const r of ink) {
      if (r.width === 0) continue;
      if (r.right > b.left && r.left < b.right && r.bottom > b.top && r.top < b.bottom)
        covered.push(tol.innerText.trim() + ' under ' + badge.innerText.trim());
      if (r.left < cell.left - 0.5 || r.right > cell.right + 0.5)
        covered.push(tol.innerText.trim() + ' leaves its cell');
    }
  }
  return {spill: spill, covered: covered, rows: document.querySelectorAll('tr.stage-row').length};
})()"""


@pytest.mark.parametrize("width", [1360, 1024])
def test_atol_column_is_not_covered_in_chromium(tmp_path: Path, width: int) -> None:
    browser = find_chromium()
    if browser is None:
        pytest.skip(chromium_unavailable_reason())
    path = tmp_path / "report.html"
    render_report(wide_result(), path)
    if width != 1360:  # a narrower window: the page's own max-width keeps the layout, the cells shrink
        page = path.read_text().replace("max-width: 1320px", f"max-width: {width - 40}px")
        path.write_text(page)
    check = check_page(path, browser, evaluate=[_LAYOUT_JS])
    layout = check.values[_LAYOUT_JS]
    assert layout["rows"] == 5
    assert layout["covered"] == [], layout["covered"]
    assert layout["spill"] == [], layout["spill"]


def test_layout_check_sees_a_covered_atol(tmp_path: Path) -> None:
    """The measurement is not vacuous: the old layout (terms inline, nowrap) is caught."""
    browser = find_chromium()
    if browser is None:
        pytest.skip(chromium_unavailable_reason())
    path = tmp_path / "report.html"
    render_report(wide_result(), path)
    page = path.read_text()
    page = re.sub(r'<span class="terms">(\([^)]*\))</span>', r" \1", page)
    page = page.replace('<col style="width:8%">\n      <col style="width:10%">',
                        '<col style="width:6%">\n      <col style="width:11%">')
    path.write_text(page)
    layout = check_page(path, browser, evaluate=[_LAYOUT_JS]).values[_LAYOUT_JS]
    assert layout["covered"] and layout["spill"]


# ------------------------------------------------------------------ slice figure labels
@pytest.mark.parametrize("ylabel, upright", [("l", True), ("h", True), ("row", False)])
def test_one_letter_axis_label_of_a_slice_stays_upright(monkeypatch, ylabel, upright):
    from matplotlib.figure import Figure

    from parity.rendering.report import _slice_figure

    drawn = []
    original = Figure.savefig

    def record(self, *args, **kwargs):
        drawn.append(self)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(Figure, "savefig", record)
    grid = [[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]]
    uri = _slice_figure({"expected": grid, "actual": [[1.0, 2.0, 3.0], [4.0, 5.5, 6.0]],
                         "extent": [-1.0, 1.0, 0.0, 1.0], "xlabel": "k", "ylabel": ylabel})
    assert uri and uri.startswith("data:image/png;base64,") and len(drawn) == 1
    rotations = {ax.yaxis.label.get_rotation() for ax in drawn[0].axes if ax.get_ylabel() == ylabel}
    assert rotations == ({0.0} if upright else {90.0})
