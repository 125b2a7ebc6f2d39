"""parity.benchmarking.gradients: the gradient section of ``parity bench`` and ``parity nightly``."""
from __future__ import annotations

import pytest

from parity.benchmarking import gradients as bg

GRID = ((-1, 1, 2),) * 3


def test_a_gradient_record_has_times_ratios_and_peak_memory():
    rec = bg.measure_gradients("synthetic", GRID, "float64", repeats=1, n_q=20)
    assert set(rec["median_s"]) == set(bg.CONTENDERS) and all(v > 0 for v in rec["median_s"].values())
    r = rec["ratio"]
    assert r["forward+backward / forward"] == rec["median_s"]["forward+backward"] / rec["median_s"]["forward"]
    assert rec["peak_mb"]["forward"] is not None and rec["peak_mb"]["forward+backward"] is not None
    assert "x" in bg.format_record({**rec, "status": "ok"})


def test_float32_and_a_missing_fixture(tmp_path):
    rec = bg.measure_gradients("synthetic", GRID, "float32", repeats=1, memory=False, n_q=20)
    assert rec["dtype"] == "float32" and "peak_mb" not in rec
    (missing,) = [r for r in bg.run_plan(True, ["cpu"], fixtures_dir=str(tmp_path), memory=False)
                  if r["dtype"] == "float64"]
    assert missing["status"] == "skipped" and "fixture not available" in missing["reason"]


@pytest.mark.gpu
def test_on_a_cuda_device_the_record_has_device_peak_memory():
    """benchmarks/device_gradients.sh's table: times on the GPU, peak device memory per contender."""
    rec = bg.measure_gradients("synthetic", GRID, "float64", "cuda", repeats=1, n_q=20)
    assert rec["device"] == "cuda" and all(v > 0 for v in rec["median_s"].values())
    assert rec["peak_mb"]["forward"] > 0 and rec["peak_mb"]["forward+backward"] > 0, rec.get("memory_error")
