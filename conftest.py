"""Root conftest: load the parity pytest plugin (options, markers, fixtures) and fold the
skips for a missing data setting into one summary line each (parity.pytest_skips)."""
pytest_plugins = ["parity.pytest_plugin", "parity.pytest_skips"]
