"""How the cost grows: with the number of grid points (5zck_p1, l range swept) and with
the number of atoms (5zck_p1, 7n2h, 6o2h_clean, 193l on the small grid).

End to end (construction + apply_disorder), peak RSS in ``extra_info``. The NumPy
reference runs only where its memory estimate fits the bench cap
(:data:`parity.benchmarking.bench.NUMPY_MEMORY_CAP`); 193l's dense all-atom Hessian does not, so
193l is torch only (the NumPy variant skips, saying why).
"""
from __future__ import annotations

import pytest

from parity.benchmarking import bench

from _benchutil import BACKENDS, describe, record_memory, run_pedantic, workload

pytestmark = [pytest.mark.benchmark, pytest.mark.slow]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("l_max", bench.GRID_SWEEP_L, ids=lambda v: f"l{v}")
def test_grid_sweep(benchmark, l_max, backend, baseline_rss_mb):
    w, fn, seconds = workload("5zck_p1", bench.sweep_grid(l_max), backend, bench.END_TO_END)
    describe(benchmark, w, bench.END_TO_END)
    benchmark.group = f"scaling-grid:5zck_p1-{w.label}"
    benchmark.extra_info["l_max"] = l_max
    run_pedantic(benchmark, fn, seconds)
    record_memory(benchmark, w, baseline_rss_mb)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("fixture", bench.ATOM_SWEEP)
def test_atom_sweep(benchmark, fixture, backend, baseline_rss_mb):
    w, fn, seconds = workload(fixture, bench.SMALL_GRID, backend, bench.END_TO_END)
    describe(benchmark, w, bench.END_TO_END)
    benchmark.group = f"scaling-atoms:small-{w.label}"
    benchmark.extra_info["n_atoms"] = w.sizes()["n_atoms"]
    run_pedantic(benchmark, fn, seconds)
    record_memory(benchmark, w, baseline_rss_mb)
