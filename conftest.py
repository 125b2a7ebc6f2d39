"""Root conftest: load the parity pytest plugin (options, markers, fixtures)."""
pytest_plugins = ["parity.pytest_plugin"]
