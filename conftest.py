"""Root conftest: the parity pytest plugin loads itself (pytest11 entry point); this
repository's own suite also folds the skips for a missing data setting into one summary
line each (parity.pytest_skips)."""
pytest_plugins = ["parity.pytest_skips"]
