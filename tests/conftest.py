"""The project's own test settings (the parity plugin loads through its ``pytest11`` entry point).

Here, not in a root conftest: ``pytest --parity`` collects ``parity/testing/stage_tests.py`` from
an editable checkout, and a conftest above it would apply to the user's session.
"""
import importlib.util

import pytest


def pytest_configure(config: pytest.Config) -> None:
    # Many tiny torch kernels on a shared 2-core machine: OpenMP threads oversubscribe and
    # stall (a run measured 0.8 s with 1 thread, 8.7 s with 2 under load). This suite
    # asserts no timings, so it runs single-threaded unless --torch-threads says otherwise;
    # benchmarks keep torch's default. (The plugin itself leaves threads alone.)
    if config.getoption("--torch-threads") or config.getoption("--benchmark-enable", default=False):
        return
    if importlib.util.find_spec("torch") is not None:
        import torch

        torch.set_num_threads(1)
