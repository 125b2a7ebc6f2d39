"""``parity nightly`` reports a step in the gradient cost as a slowdown, like a phase's.

The measurements are replaced by synthetic ones (the real ones are
``tests/running/test_nightly.py::test_nightly_times_each_run_in_a_single_threaded_worker``'s):
the nightly's own run, recording, regression finding and printing are real.
"""
from __future__ import annotations

import copy
import random
import uuid

import pytest

import parity.benchmarking.gradients as gradients
import parity.benchmarking.nightly as nightly_module
from parity.storage.history import HistoryStore, parse_timestamp
from tests.running.test_nightly import SMALL, nightly, write_matrix
from tests.storage.test_gradient_regressions import RATIO, gradient_record


@pytest.fixture
def fake_measurements(monkeypatch):
    """The gradient cost of the next nightly: ``state["fb_factor"]`` times the usual."""
    state = {"fb_factor": 1.0, "rng": random.Random(4)}
    monkeypatch.setattr(nightly_module, "time_in_worker",
                        lambda *a, **k: {"clock": "cpu", "repeats": 1, "samples": {"total": [1.0]}})
    monkeypatch.setattr(gradients, "measure_gradients",
                        lambda *a, **k: gradient_record(state["rng"], fb_factor=state["fb_factor"]))
    return state


def test_a_twofold_gradient_cost_is_printed_as_a_slowdown(tmp_path, capsys, fake_measurements):
    matrix = write_matrix(tmp_path, {**SMALL, "phases": [1]})
    args = ("--repeats", "1", "--no-dashboard")
    assert nightly(tmp_path, matrix, *args, quick=False) == 0
    with HistoryStore(tmp_path / "history.sqlite") as store:
        real = store.result(store.runs()[0]["id"])
        for night in range(4):  # earlier nights at the usual cost
            copied = copy.deepcopy(real)
            copied.update(run_uuid=str(uuid.uuid4()), started_at=(
                parse_timestamp(real["started_at"]).replace(year=2000, day=night + 1)).isoformat(),
                gradient_timing=gradient_record(fake_measurements["rng"]))
            store.record_run(copied)
    fake_measurements["fb_factor"] = 2.0  # from tonight on
    for slow_night in range(3):
        capsys.readouterr()
        assert nightly(tmp_path, matrix, *args, quick=False) == 0  # a slowdown alone exits 0
        out = capsys.readouterr().out
        if slow_night < 2:  # one or two slow nights are not a regression
            assert "0 numerical regression(s), 0 slowdown(s) flagged" in out
    assert "0 numerical regression(s), 2 slowdown(s) flagged" in out
    assert f"REGRESSION synthetic/cpu/float64 slowdown: {RATIO}: x" in out
    assert "REGRESSION synthetic/cpu/float64 slowdown: gradient forward+backward: " in out


def test_a_doubled_gradient_peak_memory_is_printed_as_a_memory_growth(tmp_path, capsys, monkeypatch):
    from tests.storage.test_memory_regressions import FB, memory_record

    state = {"fb_factor": 1.0, "rng": random.Random(8)}
    monkeypatch.setattr(nightly_module, "time_in_worker",
                        lambda *a, **k: {"clock": "cpu", "repeats": 1, "samples": {"total": [1.0]}})
    monkeypatch.setattr(gradients, "measure_gradients",
                        lambda *a, **k: memory_record(state["rng"], fb_factor=state["fb_factor"]))
    matrix = write_matrix(tmp_path, {**SMALL, "phases": [1]})
    args = ("--repeats", "1", "--no-dashboard")
    for night in range(3):  # three nights at the usual peak: the baseline
        assert nightly(tmp_path, matrix, *args, quick=False) == 0
    state["fb_factor"] = 2.0
    capsys.readouterr()
    assert nightly(tmp_path, matrix, *args, quick=False) == 0  # a memory growth alone exits 0
    out = capsys.readouterr().out
    assert "0 numerical regression(s), 0 slowdown(s) flagged, 2 memory growth(s) flagged" in out, out
    assert f"REGRESSION synthetic/cpu/float64 memory_growth: {FB}: " in out
    assert "pass --fail-on-slowdown to exit 1 on them" in out
    assert nightly(tmp_path, matrix, *args, "--fail-on-slowdown", quick=False) == 1  # still grown, now failed
