"""benchmarks/gradients.py --matrix: its ratios and its CPU-bound contenders (no model is run)."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "gradients.py"


@pytest.fixture(scope="module")
def script():
    spec = importlib.util.spec_from_file_location("gradients_script", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_matrix_row_takes_warm_ratios_in_one_process_and_fresh_ones_across_two(script):
    fb_child = {"first_s": 3.0, "threads": 2, "load": [1.0, 1.5],
                "warm_s": {"forward": [1.0, 0.8, 1.2], "forward+backward": [2.0, 2.4, 2.2]}}
    fwd_child = {"first_s": 1.5, "threads": 2, "load": [0.5, 2.0], "warm_s": {}}
    row = script.matrix_row(fb_child, fwd_child)
    assert row["warm_forward_s"] == 1.0 and row["warm_fb_s"] == 2.2  # medians of the rounds
    assert row["warm_ratio"] == pytest.approx(2.2)
    assert row["fresh_ratio"] == pytest.approx(2.0) and row["fresh_fb_vs_warm"] == pytest.approx(3.0)
    assert row["load"] == (0.5, 2.0) and row["threads"] == 2


def test_the_target_judges_the_warm_and_the_fresh_ratio(script):
    row = {"warm_ratio": 2.4, "fresh_ratio": 2.1, "fresh_fb_vs_warm": 2.9}
    assert script.target_met(row)  # the stricter figure is not judged
    assert not script.target_met({**row, "warm_ratio": 2.6})
    assert not script.target_met({**row, "fresh_ratio": 2.51})
    assert script.target_met({**row, "warm_ratio": 2.5, "fresh_ratio": 2.5})  # <= 2.5x


def test_busy_contenders_run_until_stopped(script):
    procs = script._busy(2)
    try:
        assert len(procs) == 2 and all(p.poll() is None for p in procs)
    finally:
        script._stop(procs)
    assert all(p.returncode is not None for p in procs)


def test_the_prepared_device_command_parses_and_its_carried_folders_are_ignored():
    """benchmarks/device_gradients.sh (docs/performance.md, section 9): valid bash, and the
    folders it is carried with (.whl, .devdata) are git-ignored, so they never get committed
    and travel only when named in the device tool's carry."""
    import subprocess

    device_script = SCRIPT.parent / "device_gradients.sh"
    assert subprocess.run(["bash", "-n", str(device_script)], capture_output=True).returncode == 0
    text = device_script.read_text()
    assert 'carry=[".whl", ".devdata"]' in text and "--device cuda" in text and "-m gpu" in text
    ignored = (SCRIPT.parents[1] / ".gitignore").read_text().split()
    assert ".whl/" in ignored and ".devdata/" in ignored
