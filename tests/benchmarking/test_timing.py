"""The one timing engine (parity.benchmarking.timing) and bench's workloads built through backend sessions."""
from __future__ import annotations

import gc
import time

import numpy as np
import pytest

from eryx.errors import MemoryBudgetError
from parity.backends.base import TIMED_PHASES, NotProvided
from parity.benchmarking import bench, timing, workloads

TINY = ((-1, 1, 2),) * 3


def test_contenders_are_warmed_up_then_interleaved():
    calls = []
    times = timing.measure({"a": lambda: calls.append("a"), "b": lambda: calls.append("b")}, warmup=2,
                           min_repeats=3)
    assert calls == ["a", "b"] * 5  # two warm-up rounds, three timed rounds, a before b in each
    assert [len(v) for v in times.values()] == [3, 3] and all(t >= 0 for v in times.values() for t in v)


def test_rounds_continue_until_the_target_within_max_repeats():
    assert len(timing.time_call(lambda: time.sleep(0.002), warmup=0, min_repeats=2, max_repeats=50,
                                target_s=0.03)) in range(10, 17)
    assert len(timing.time_call(lambda: None, warmup=0, min_repeats=2, max_repeats=4, target_s=10.0)) == 4
    assert timing.time_call(lambda: None, warmup=0, min_repeats=0) == []


def test_the_cpu_clock_does_not_count_waiting_and_sync_is_timed():
    (cpu,) = timing.time_call(lambda: time.sleep(0.05), warmup=0, min_repeats=1, clock="cpu")
    (wall,) = timing.time_call(lambda: None, warmup=0, min_repeats=1, sync=lambda: time.sleep(0.05))
    assert cpu < 0.03 and wall >= 0.05


def test_pause_gc_pauses_the_collector_during_each_call_only():
    seen = []
    timing.time_call(lambda: seen.append(gc.isenabled()), warmup=1, min_repeats=2, pause_gc=True)
    assert seen == [False] * 3 and gc.isenabled()


def test_summary_and_traced_peak_memory():
    s = timing.summarize([1.0, 2.0, 3.0, 4.0, 10.0])
    assert (s["median_s"], s["iqr_s"], s["repeats"]) == (3.0, 2.0, 5)
    peak = timing.peak_memory(lambda: np.ones(2**20))  # 8 MiB, freed when the call returns
    assert 7.5 < peak["peak_traced_mb"] < 12 and "peak_gpu_mb" not in peak


@pytest.mark.parametrize("backend", ["numpy", "torch"])
def test_every_phase_is_timed_through_the_backend_session(backend):
    w = workloads.Workload("synthetic", TINY, backend)
    Id = w.session.get("Id")
    for phase in TIMED_PHASES:
        out = w.phase(phase)()
        if phase in ("4", "end_to_end"):
            np.testing.assert_array_equal(np.asarray(out), np.asarray(Id))  # the same map, recomputed
    np.testing.assert_array_equal(np.asarray(w.session.get("Id")), np.asarray(Id))  # the session is unchanged
    assert w.sizes()["n_asu"] >= 1 and w.sizes()["n_atoms"] % w.sizes()["n_asu"] == 0
    with pytest.raises(KeyError, match="unknown phase"):
        w.phase("5")


def test_a_refused_reference_is_not_timed(monkeypatch):
    monkeypatch.setitem(workloads.BACKEND_OPTIONS, "numpy", {"memory_limit": 1000})
    w = workloads.Workload("synthetic", TINY, "numpy")
    with pytest.raises(NotProvided, match="does not fit"):
        w.phase("4")
    with pytest.raises(MemoryBudgetError):
        w.phase(bench.END_TO_END)()


def test_a_backend_without_timed_phases_says_so():
    from parity.backends.base import Session

    class Plain(Session):
        def _build(self):
            pass

        def _compute(self, name):
            raise NotProvided(name)

    session = Plain(workloads.Workload("synthetic", TINY, "numpy").open_backend(), None)
    with pytest.raises(NotProvided, match="does not time its phases"):
        session.timed_phase("1")
    with pytest.raises(KeyError):
        session.timed_phase("grid")


def test_run_cases_records_keep_their_keys_and_ratios_compare_with_the_reference():
    cases = [bench.Case("small", "synthetic", TINY, phase, *b) for phase in ("1", bench.END_TO_END)
             for b in (("numpy", "float64", "cpu"), ("torch", "float64", "cpu"))]
    records = bench.run_cases(cases, memory=False, min_repeats=1, target_s=0.0)
    assert [r["status"] for r in records] == ["ok"] * 4, [r["reason"] for r in records]
    assert set(records[0]) == {"suite", "fixture", "grid", "grid_label", "phase", "group", "n_q", "backend", "dtype",
                               "device", "status", "median_s", "iqr_s", "repeats", "times_s", "peak_rss_mb",
                               "other_cpu_cores", "reason", "n_atoms", "n_asu"}
    ratios = bench.ratios(records)
    assert [(r["phase"], r["speedup"]) for r in ratios] == [
        (p, records[i]["median_s"] / records[i + 1]["median_s"]) for i, p in ((0, "1"), (2, bench.END_TO_END))]
    assert "torch-cpu-float64" in bench.format_table({"machine": {
        "cpu_model": "x", "usable_cores": 1, "torch": "t", "torch_threads": 1, "numpy": "n", "devices": [],
        "git_commit": None}, "cases": records, "ratios": ratios, "duration_s": 1.0})
