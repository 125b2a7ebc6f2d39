"""Root conftest: the project's own test settings.

The parity plugin itself loads through its ``pytest11`` entry point; the line below keeps
it loaded when this checkout runs uninstalled (the same name: no double registration).
"""
import importlib.util

import pytest

pytest_plugins = ["parity.pytest_plugin"]


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
