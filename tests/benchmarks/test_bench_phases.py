"""Per-phase benchmarks on 5zck_p1: NumPy vs torch (CPU float64/float32, CUDA when present).

Groups: ``phase1-grid-kvec``, ``phase2-structure-factors``, ``phase3-phonons-covariance``,
``phase4-apply-disorder`` (suffixed with fixture and grid), so pytest-benchmark's table
compares the backends of one phase on one grid.
"""
from __future__ import annotations

import pytest

from parity.benchmarking import bench

from _benchutil import BACKENDS, GRIDS, describe, run_pedantic, workload

pytestmark = [pytest.mark.benchmark, pytest.mark.slow]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("grid", GRIDS)
@pytest.mark.parametrize("phase", bench.PHASES)
def test_phase(benchmark, phase, grid, backend):
    w, fn, seconds = workload("5zck_p1", grid, backend, phase)
    describe(benchmark, w, phase)
    run_pedantic(benchmark, fn, seconds)
