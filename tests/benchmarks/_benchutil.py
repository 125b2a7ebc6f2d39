"""Shared helpers of the benchmark modules (workloads, groups, rounds, memory).

Workloads are built through the backends (:class:`parity.benchmarking.workloads.Workload`)
and single calls timed by the one timing engine (:mod:`parity.benchmarking.timing`);
pytest-benchmark times the rounds.
"""
from __future__ import annotations

import pytest

from parity.benchmarking import bench, timing
from parity.testing.plugin import fixture_path_or_skip

#: (backend, dtype, device) variants; the CUDA ones are marked ``gpu``.
BACKENDS = [
    pytest.param(("numpy", "float64", "cpu"), id="numpy"),
    pytest.param(("torch", "float64", "cpu"), id="torch-cpu-float64"),
    pytest.param(("torch", "float32", "cpu"), id="torch-cpu-float32"),
    pytest.param(("torch", "float64", "cuda"), id="torch-cuda-float64", marks=pytest.mark.gpu),
    pytest.param(("torch", "float32", "cuda"), id="torch-cuda-float32", marks=pytest.mark.gpu),
]
GRIDS = [pytest.param(bench.SMALL_GRID, id="small"), pytest.param(bench.STANDARD_GRID, id="standard")]

_WORKLOADS: dict[tuple, bench.Workload] = {}


def workload(fixture: str, grid, backend, phase: str) -> tuple[bench.Workload, object, float]:
    """A shared workload, the callable that times ``phase`` through its backend session and
    the seconds of its warm-up call (skip when the fixture is missing or the NumPy reference
    is too big for the bench cap)."""
    from eryx.errors import MemoryBudgetError
    from parity.backends.base import NotProvided

    fixture_path_or_skip(fixture)
    key = (fixture, tuple(grid), *backend)
    w = _WORKLOADS.setdefault(key, bench.Workload(fixture, tuple(grid), *backend))
    try:
        fn = w.phase(phase)
        seconds = time_once(fn)  # the warm-up call; a refused reference refuses here
    except (MemoryBudgetError, NotProvided) as exc:
        pytest.skip(f"{fixture}: the NumPy reference is too big for the bench cap "
                    f"({bench.NUMPY_MEMORY_CAP / 2**30:g} GiB): {exc}")
    return w, fn, seconds


def run_pedantic(benchmark, fn, seconds_hint: float | None = None):
    """Three rounds for slow cases (``seconds_hint``, the time of a warm-up call already
    made, above 0.5 s), pytest-benchmark's own calibration otherwise."""
    if seconds_hint is not None and seconds_hint > 0.5:
        return benchmark.pedantic(fn, rounds=3, iterations=1, warmup_rounds=0)
    return benchmark(fn)


def describe(benchmark, w: bench.Workload, phase: str) -> None:
    benchmark.group = f"{bench.PHASE_GROUPS[phase]}:{w.fixture}-{bench.grid_label(w.grid)}"
    benchmark.extra_info.update({
        "fixture": w.fixture, "grid": [list(s) for s in w.grid], "grid_label": bench.grid_label(w.grid),
        "n_q": w.n_q(phase), "backend": w.backend, "dtype": w.dtype, "device": w.device, "phase": phase,
    })


def time_once(fn) -> float:
    """Seconds of one call (no warm-up): :func:`parity.benchmarking.timing.time_call`."""
    return timing.time_call(fn, warmup=0, min_repeats=1)[0]


def record_memory(benchmark, w: bench.Workload, baseline) -> None:
    """Peak RSS of one end-to-end run in a fresh subprocess -> extra_info."""
    mem = bench.peak_memory(w.spec())
    assert "error" not in mem, mem.get("error")
    benchmark.extra_info["peak_rss_mb"] = mem["peak_rss_mb"]
    benchmark.extra_info["baseline_rss_mb"] = baseline
    if "peak_gpu_mb" in mem:
        benchmark.extra_info["peak_gpu_mb"] = mem["peak_gpu_mb"]
