"""Benchmarks (pytest-benchmark): NumPy reference vs torch, per phase and end to end.

Every test collected under this directory is marked ``benchmark`` and ``slow``, so the
default run (``-m "not slow"``, ``--benchmark-disable``) skips them. Run them with::

    ERYX_FIXTURES_DIR=/path/to/pdbs python -m pytest tests/benchmarks -m slow --benchmark-enable

They skip (naming ERYX_FIXTURES_DIR) when the real fixtures are not available; the
CUDA variants carry ``gpu`` and skip when no CUDA device is present.
"""
from __future__ import annotations

from pathlib import Path

import pytest

from parity.benchmarking import bench

HERE = Path(__file__).resolve().parent


def pytest_collection_modifyitems(config, items):
    for item in items:
        if HERE in Path(str(item.fspath)).resolve().parents:
            item.add_marker(pytest.mark.benchmark)
            item.add_marker(pytest.mark.slow)


@pytest.fixture(scope="session")
def baseline_rss_mb():
    """Peak RSS of a fresh interpreter that only imports the libraries (MB)."""
    return bench.peak_memory(None).get("peak_rss_mb")
