"""A regression in the torch candidate's gradient cost is caught like a phase slowdown.

``parity nightly`` stores ``result["gradient_timing"]`` (:func:`parity.benchmarking.gradients.measure_gradients`:
per contender the seconds of each interleaved round); the history reads it back
(:meth:`HistoryStore.gradient_series`) and :func:`find_regressions` judges the forward, the
forward + backward, the q-gradient and the round-by-round ratio forward + backward / forward
with the phases' rule. Synthetic nights below: costs in seconds with a noise model of a shared
machine (a night's load scales every contender of it; each call has its own jitter).
"""
from __future__ import annotations

import random
import shutil
from pathlib import Path
from typing import Any, Iterator

import pytest

from parity.storage.history import HistoryStore, find_regressions
from parity.storage.regressions import gradient_samples, gradient_verdicts
from tests.storage.test_history import make_result

LEGACY = Path(__file__).resolve().parents[1] / "data" / "legacy"
#: Seconds per call of each contender on an idle night (5zck_p1's standard grid, roughly).
COST = {"forward": 0.5, "forward+backward": 1.2, "q forward": 0.3, "q gradient": 0.5}
FB, RATIO = "gradient forward+backward", "gradient forward+backward / forward"


def gradient_record(rng: random.Random, *, fb_factor: float = 1.0, load: float | None = None,
                    threads: int = 1, repeats: int = 3) -> dict[str, Any]:
    """One night's ``gradient_timing``: ``load`` (default: random 1-1.4) scales the whole night,
    each call has up to +25 % jitter of its own; ``fb_factor`` scales the forward + backward."""
    load = rng.uniform(1.0, 1.4) if load is None else load
    times = {name: [cost * load * (fb_factor if name == "forward+backward" else 1.0) * rng.uniform(1.0, 1.25)
                    for _ in range(repeats)] for name, cost in COST.items()}
    return {"fixture": "5zck_p1", "grid": [[-4, 4, 3], [-17, 17, 3], [-29, 29, 3]], "dtype": "float64",
            "device": "cpu", "threads": threads, "n_q_gradient": 10000, "times_s": times,
            "median_s": {k: sorted(v)[len(v) // 2] for k, v in times.items()}}


def record_night(store: HistoryStore, night: int, gradient: dict[str, Any] | None) -> int:
    result = make_result(night=night)
    if gradient is not None:
        result["gradient_timing"] = gradient
    return store.record_run(result)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[HistoryStore]:
    with HistoryStore(tmp_path / "history.sqlite") as opened:
        yield opened


def test_samples_are_the_rounds_and_their_ratio():
    record = {"times_s": {"forward": [1.0, 2.0, None], "forward+backward": [2.5, 4.0, 3.0], "q gradient": []}}
    samples = gradient_samples(record)
    assert samples == {"gradient forward": (1.0, 2.0), FB: (2.5, 4.0, 3.0), RATIO: (2.5, 2.0)}
    assert gradient_samples(None) == gradient_samples({"status": "error"}) == {}


def test_a_twofold_step_in_gradient_cost_is_flagged_after_three_nights(store):
    rng = random.Random(20)
    for night in range(6):
        record_night(store, night, gradient_record(rng))
    for night in (6, 7):
        record_night(store, night, gradient_record(rng, fb_factor=2.0))
        assert find_regressions(store) == [], "one or two slow nights are not a regression"
    latest = record_night(store, 8, gradient_record(rng, fb_factor=2.0))
    found = {r.target: r for r in find_regressions(store)}
    assert set(found) == {FB, RATIO}  # the forward and the q-gradient did not move
    assert all(r.kind == "slowdown" and r.run_id == latest for r in found.values())
    assert found[FB].unit == "s" and found[FB].current / found[FB].previous == pytest.approx(2.0, rel=0.3)
    # idle-night ratio 2.4 (1.2 s / 0.5 s), within the jitter; doubled: about 4.8
    assert found[RATIO].unit == "x" and 1.9 < found[RATIO].previous < 3.0 < 4.0 < found[RATIO].current
    assert found[RATIO].message.startswith(RATIO + ": x") and "p = " in found[RATIO].message


@pytest.mark.parametrize("seed", range(6))
def test_noisy_flat_gradient_cost_is_not_flagged(store, seed):
    rng = random.Random(seed)
    for night in range(10):
        record_night(store, night, gradient_record(rng))
        assert find_regressions(store) == []


def test_a_busier_machine_moves_the_seconds_not_the_ratio(store):
    rng = random.Random(7)
    for night in range(5):
        record_night(store, night, gradient_record(rng, load=1.0))
    for night in range(5, 8):  # three nights on a machine 1.8x busier: every contender slows alike
        record_night(store, night, gradient_record(rng, load=1.8))
    verdicts = gradient_verdicts(store, "5zck_p1", "cpu", "float64")
    assert verdicts[FB].flagged and verdicts["gradient forward"].flagged
    assert not verdicts[RATIO].flagged and verdicts[RATIO].status == "ok"


def test_a_latest_run_without_gradient_timing_is_not_judged_on_an_older_one(store):
    rng = random.Random(3)
    for night in range(5):
        record_night(store, night, gradient_record(rng))
    for night in range(5, 8):
        record_night(store, night, gradient_record(rng, fb_factor=2.0))
    assert {r.target for r in find_regressions(store)} == {FB, RATIO}
    record_night(store, 8, None)  # this night's gradient measurement failed
    assert find_regressions(store) == []


def test_another_thread_count_is_another_series(store):
    rng = random.Random(5)
    for night in range(5):
        record_night(store, night, gradient_record(rng, threads=2))
    for night in range(5, 8):  # slower at one thread: not a regression of the two-thread series
        record_night(store, night, gradient_record(rng, threads=1, fb_factor=2.0))
    assert find_regressions(store) == []
    assert {v.status for v in gradient_verdicts(store, "5zck_p1", "cpu", "float64").values()} == {
        "insufficient_history"}


def test_a_store_written_before_gradient_timings_opens_and_judges_new_ones(tmp_path):
    path = tmp_path / "history.sqlite"
    shutil.copyfile(LEGACY / "history.sqlite", path)  # written at 9706553: no gradient_timing anywhere
    with HistoryStore(path) as store:
        assert store.gradient_series("synthetic", "cpu", "float64") == []
        assert find_regressions(store) == []
        old = store.result(store.runs(dtype="float64")[0]["id"])
        rng = random.Random(11)
        for night in range(8):
            new = dict(old, run_uuid=f"00000000-0000-0000-0000-{night:012d}",
                       started_at=f"2099-01-{night + 1:02d}T00:00:00+00:00",
                       gradient_timing=gradient_record(rng, fb_factor=2.0 if night >= 5 else 1.0))
            store.record_run(new)
        assert len(store.gradient_series("synthetic", "cpu", "float64")) == 8
        assert {(r.fixture, r.target) for r in find_regressions(store)} == {("synthetic", FB), ("synthetic", RATIO)}


def test_the_dashboard_flags_a_gradient_slowdown(store, tmp_path):
    pytest.importorskip("matplotlib")
    from parity.rendering.dashboard import render_dashboard

    rng = random.Random(20)
    for night in range(9):
        record_night(store, night, gradient_record(rng, fb_factor=2.0 if night >= 6 else 1.0))
    ratio = next(r for r in find_regressions(store) if r.target == RATIO)
    html = render_dashboard(store, tmp_path / "dashboard.html").read_text(encoding="utf-8")
    assert html.count(RATIO) >= 2  # the regressions table and the series' "moved" line
    assert f"x{ratio.current:.2f}" in html and f"x{ratio.previous:.2f}" in html
