"""A growth of the gradient benchmark's peak memory is caught like any other regression.

``parity nightly`` stores ``result["gradient_timing"]["peak_mb"]`` (peak RSS over the start of
a fresh process, MiB, of the forward map and of forward + backward); the rule
(:mod:`parity.storage.memory_regressions`) compares the latest run's peaks, and their ratio,
with the median of the earlier runs of the same workload, and :func:`find_regressions` turns a
flagged one into a ``memory_growth``. Expected values below are worked out by hand from the
synthetic peaks (default rule: x1.5 and +32 MiB, ratio x1.5, at least 3 earlier runs).
"""
from __future__ import annotations

import random
import shutil
from pathlib import Path
from typing import Any, Iterator

import pytest

from parity.storage.history import HistoryStore, find_regressions
from parity.storage.memory_regressions import (MemoryRule, judge_memory, judge_memory_series, memory_values,
                                               memory_verdicts_of_runs)
from parity.storage.regressions import REGRESSION_KINDS, memory_verdicts
from tests.storage.test_gradient_regressions import gradient_record, record_night

LEGACY = Path(__file__).resolve().parents[1] / "data" / "legacy"
FWD, FB, RATIO = ("gradient peak forward", "gradient peak forward+backward",
                  "gradient peak forward+backward / forward")
#: 5zck_p1's standard grid before issue 20's work (MiB): issue 20's table.
PEAK = {"forward": 223.0, "forward+backward": 1410.0}


def memory_record(rng: random.Random | None = None, *, fb_factor: float = 1.0, jitter: float = 0.05,
                  threads: int = 1, grid: list | None = None, peaks: dict[str, float] | None = None) -> dict[str, Any]:
    """One night's ``gradient_timing`` with ``peak_mb``: each peak within +-``jitter`` of ``peaks``
    (default :data:`PEAK`), the forward + backward's times ``fb_factor``."""
    rng = rng or random.Random(0)
    record = gradient_record(rng, threads=threads)
    if grid is not None:
        record["grid"] = grid
    peak = {name: mb * (fb_factor if name == "forward+backward" else 1.0) * rng.uniform(1 - jitter, 1 + jitter)
            for name, mb in (peaks or PEAK).items()}
    record["peak_mb"] = peak
    record["ratio"] = {"peak forward+backward / forward": peak["forward+backward"] / peak["forward"]}
    return record


@pytest.fixture
def store(tmp_path: Path) -> Iterator[HistoryStore]:
    with HistoryStore(tmp_path / "history.sqlite") as opened:
        yield opened


# --------------------------------------------------------------------------- the pure rule
def test_a_step_up_in_peak_memory_is_flagged_against_the_median():
    verdict = judge_memory([200.0, 220.0, 210.0, 400.0])
    assert verdict.flagged and verdict.status == "growth" and verdict.unit == "MiB"
    # median of 200, 220, 210 = 210; threshold max(1.5 * 210, 210 + 32) = 315
    assert (verdict.baseline, verdict.current, verdict.threshold, verdict.n_baseline) == (210.0, 400.0, 315.0, 3)
    assert verdict.reason == ("400 MiB vs baseline 210 MiB (median of 3 earlier runs) (x1.90) exceeds "
                              "x1.5 and +32 MiB over the baseline (315 MiB)")


def test_both_the_factor_and_the_floor_must_be_exceeded():
    # x2 but only +20 MiB: a small workload's loader noise, not flagged (threshold max(30, 52) = 52)
    small = judge_memory([20.0, 20.0, 20.0, 40.0])
    assert small.status == "ok" and small.threshold == 52.0 and "within 52 MiB" in small.reason
    # +100 MiB but only x1.1: drift of a large workload, not flagged (threshold 1500)
    large = judge_memory([1000.0, 1000.0, 1000.0, 1100.0])
    assert large.status == "ok" and large.threshold == 1500.0
    # just past both: 1501 > 1500
    assert judge_memory([1000.0, 1000.0, 1000.0, 1501.0]).flagged


def test_a_ratio_is_judged_on_the_relative_factor_alone():
    verdict = judge_memory([2.0, 2.2, 2.1, 3.2], unit="x")  # median 2.1, threshold 3.15
    assert verdict.flagged and verdict.unit == "x" and verdict.threshold == pytest.approx(3.15)
    assert verdict.reason == "x3.20 vs baseline x2.10 (median of 3 earlier runs) exceeds x1.5 the baseline (x3.15)"
    assert judge_memory([2.0, 2.2, 2.1, 3.1], unit="x").status == "ok"


def test_fewer_than_the_minimum_earlier_runs_judge_nothing():
    verdict = judge_memory([200.0, 200.0, 900.0])
    assert verdict.status == "insufficient_history" and not verdict.flagged and verdict.n_baseline == 2
    assert verdict.current == 900.0 and verdict.baseline is None
    assert judge_memory([200.0, 200.0, 900.0], MemoryRule(min_history=2)).flagged
    assert judge_memory([]).status == "insufficient_history"


def test_runs_without_a_value_are_skipped_and_the_window_bounds_the_baseline():
    # None / NaN / negative: runs that did not measure it; they neither count nor break the median
    assert judge_memory([200.0, None, float("nan"), 200.0, -1.0, 200.0, 400.0]).baseline == 200.0
    # window 3: the median of the last three earlier runs (300, 300, 300), not of the older 100s
    verdict = judge_memory([100.0, 100.0, 100.0, 300.0, 300.0, 300.0, 400.0], MemoryRule(window=3))
    assert verdict.baseline == 300.0 and verdict.status == "ok"


@pytest.mark.parametrize("seed", range(8))
def test_flat_memory_with_five_percent_jitter_is_not_flagged(seed):
    rng = random.Random(seed)
    runs = []
    for night in range(12):
        runs.append({"run_id": night, "started_at": "", "values": memory_values(memory_record(rng))})
        assert not any(v.flagged for v in memory_verdicts_of_runs(runs).values())
    assert {v.status for v in memory_verdicts_of_runs(runs).values()} == {"ok"}


def test_the_rule_refuses_nonsense_thresholds():
    for bad in (dict(min_history=0), dict(window=2, min_history=3), dict(rel_factor=0.5),
                dict(abs_floor_mb=-1), dict(ratio_factor=float("inf")), dict(min_history=True)):
        with pytest.raises(ValueError):
            MemoryRule(**bad)


# --------------------------------------------------------------------------- records and series
def test_values_of_a_record_and_records_without_peak_memory():
    assert memory_values({"peak_mb": {"forward": 200.0, "forward+backward": 500.0}}) == {
        FWD: 200.0, FB: 500.0, RATIO: 2.5}
    # old stores, a non-CPU device (no peak_mb), a failed measurement (memory_error, None): skipped
    assert memory_values(None) == memory_values({"times_s": {}}) == memory_values({"peak_mb": None}) == {}
    assert memory_values({"peak_mb": {"forward": 200.0, "forward+backward": None},
                          "memory_error": "exit -9: Killed"}) == {FWD: 200.0}
    assert memory_values({"peak_mb": {"forward": float("nan"), "forward+backward": 500.0}}) == {FB: 500.0}
    assert memory_values({"peak_mb": {"forward": 0.0, "forward+backward": 5.0}}) == {FWD: 0.0, FB: 5.0}


def test_another_workload_is_not_mixed_in():
    rng = random.Random(1)
    other_grid = [[-1, 1, 2], [-1, 1, 2], [-1, 1, 2]]
    series = ([{"run_id": i, "started_at": "", "record": memory_record(rng, threads=2)} for i in range(4)]
              + [{"run_id": 4 + i, "started_at": "", "record": memory_record(rng, grid=other_grid)} for i in range(3)]
              + [{"run_id": 7, "started_at": "", "record": memory_record(rng, fb_factor=2.0)},
                 {"run_id": 8, "started_at": "", "record": {"peak_mb": None}}])
    judged = judge_memory_series(series)
    # the latest with a peak is run 7 (1 thread, standard grid): only it is of its workload
    assert judged["dropped"] == 7 and [run["run_id"] for run in judged["runs"]] == [7]
    assert {v.status for v in memory_verdicts_of_runs(judged["runs"]).values()} == {"insufficient_history"}


def test_a_ratio_with_a_tiny_forward_peak_is_not_judged():
    peaks = {"forward": 4.0, "forward+backward": 12.0}
    runs = [{"run_id": i, "started_at": "",
             "values": memory_values({"peak_mb": dict(peaks, forward=fw)})} for i, fw in enumerate((4.0, 4.0, 4.0, 2.0))]
    verdicts = memory_verdicts_of_runs(runs)
    # the ratio went from x3 to x6 because the forward's 4 MiB became 2: noise of a tiny workload
    assert verdicts[RATIO].status == "too_small" and not verdicts[RATIO].flagged
    assert verdicts[RATIO].reason == "not judged: the forward peak's baseline (4 MiB) is under 32 MiB"
    assert verdicts[FWD].status == verdicts[FB].status == "ok"


# --------------------------------------------------------------------------- a real history store
def test_a_memory_step_comes_out_of_find_regressions_as_memory_growth(store):
    assert "memory_growth" in REGRESSION_KINDS
    rng = random.Random(20)
    for night in range(5):
        record_night(store, night, memory_record(rng))
        assert find_regressions(store) == []
    latest = record_night(store, 5, memory_record(rng, fb_factor=2.0, jitter=0.0))
    found = {r.target: r for r in find_regressions(store)}
    assert set(found) == {FB, RATIO}  # the forward's peak did not move
    assert all(r.kind == "memory_growth" and r.run_id == latest for r in found.values())
    assert found[FB].unit == "MiB" and found[FB].current == pytest.approx(2820.0)
    assert 1410 * 0.95 < found[FB].previous < 1410 * 1.05
    assert found[FB].message.startswith(FB + ": 2820 MiB vs baseline ")
    assert found[RATIO].unit == "x" and found[RATIO].current == pytest.approx(2820.0 / 223.0)
    assert 1410 / 223 * 0.9 < found[RATIO].previous < 1410 / 223 * 1.1


def test_a_latest_run_without_peak_memory_is_not_judged_on_an_older_one(store):
    rng = random.Random(3)
    for night in range(4):
        record_night(store, night, memory_record(rng))
    record_night(store, 4, memory_record(rng, fb_factor=3.0))
    assert {r.kind for r in find_regressions(store)} == {"memory_growth"}
    no_peak = memory_record(rng)
    del no_peak["peak_mb"]  # e.g. a cuda run, or --no-memory: times only
    record_night(store, 5, no_peak)
    assert find_regressions(store) == []
    assert memory_verdicts(store, "5zck_p1", "cpu", "float64", run_id=None)[FB].flagged  # the older run's


def test_a_store_written_before_peak_memory_opens_and_judges_new_ones(tmp_path):
    path = tmp_path / "history.sqlite"
    shutil.copyfile(LEGACY / "history.sqlite", path)  # written at 9706553: no gradient_timing anywhere
    with HistoryStore(path) as store:
        assert find_regressions(store) == []
        assert memory_verdicts(store, "synthetic", "cpu", "float64") == {}
        old = store.result(store.runs(dtype="float64")[0]["id"])
        rng = random.Random(11)
        for night in range(5):
            new = dict(old, run_uuid=f"00000000-0000-0000-0000-{night:012d}",
                       started_at=f"2099-01-{night + 1:02d}T00:00:00+00:00",
                       gradient_timing=memory_record(rng, fb_factor=2.0 if night == 4 else 1.0))
            store.record_run(new)
        assert {(r.fixture, r.kind, r.target) for r in find_regressions(store)} == {
            ("synthetic", "memory_growth", FB), ("synthetic", "memory_growth", RATIO)}


def test_the_dashboard_lists_a_memory_growth(store, tmp_path):
    pytest.importorskip("matplotlib")
    from parity.rendering.dashboard import render_dashboard

    rng = random.Random(20)
    for night in range(5):
        record_night(store, night, memory_record(rng, fb_factor=2.0 if night == 4 else 1.0, jitter=0.0))
    html = render_dashboard(store, tmp_path / "dashboard.html").read_text(encoding="utf-8")
    flags = html[html.index('id="regressions"'):html.index('id="matrix"')]
    assert "Flagged regressions (2)" in flags and "memory growth" in flags
    assert "1410 MiB" in flags and "2820 MiB" in flags and "x6.32" in flags and "x12.65" in flags
    assert html.count(FB) >= 2  # the regressions table and the series' "moved" line
