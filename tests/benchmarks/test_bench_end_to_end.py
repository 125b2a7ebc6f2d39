"""End-to-end benchmarks (construction + apply_disorder) on 5zck_p1, with peak RSS.

The peak resident memory of each case is measured once in a fresh subprocess
(VmHWM, :func:`parity.benchmarking.machine.peak_memory`) and stored in ``benchmark.extra_info['peak_rss_mb']`` (plus
``baseline_rss_mb``: a subprocess that only imports the libraries).
"""
from __future__ import annotations

import pytest

from parity.benchmarking import bench

from _benchutil import BACKENDS, GRIDS, describe, record_memory, run_pedantic, workload

pytestmark = [pytest.mark.benchmark, pytest.mark.slow]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("grid", GRIDS)
def test_end_to_end(benchmark, grid, backend, baseline_rss_mb):
    w, fn, seconds = workload("5zck_p1", grid, backend, bench.END_TO_END)
    describe(benchmark, w, bench.END_TO_END)
    run_pedantic(benchmark, fn, seconds)
    record_memory(benchmark, w, baseline_rss_mb)
