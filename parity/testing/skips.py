"""pytest plugin: skips for a missing data setting folded into one summary line per setting.

Without ``ERYX_FIXTURES_DIR`` (or ``ERYX_GOLDENS_DIR``, ``ERYX_PEERS_DIR``) every test
that needs real data skips, each with its own reason at its own location, so pytest's
short summary (``-rs``) prints one line per test: about a hundred lines that all say
"this setting is not set". This plugin gives such skips one reason and one location per
setting, which pytest then folds into one line with a count, e.g.::

    SKIPPED [87] data settings: ERYX_FIXTURES_DIR is not set: the real PDB fixtures (...) ...

A setting that names no folder (a relative path read from another folder) is folded the
same way, naming the folder it resolved to. A skip for any other reason (a fixture
missing from a folder that exists, no GPU) keeps its own words and place. Loaded by the
project's ``conftest.py``; usable elsewhere with ``-p parity.pytest_skips`` (its registered plugin name).
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest

#: Data settings and what a test that skips for want of one was missing.
DATA_SETTINGS = {
    "ERYX_FIXTURES_DIR": "the real PDB fixtures (5zck_p1, 7n2h, ...)",
    "ERYX_GOLDENS_DIR": "the golden outputs",
    "ERYX_PEERS_DIR": "the peer implementations' snapshots",
}
#: The location the folded skips are reported under (pytest prints it before the reason).
LOCATION = "data settings"


def grouped_reason(reason: str, environ: os._Environ | dict | None = None) -> str | None:
    """One shared reason for a skip caused by an unset data setting, else None.

    Parameters
    ----------
    reason : str
        The skip's own reason, e.g. ``"fixture '5zck_p1' not available: unknown fixture
        '5zck_p1' (ERYX_FIXTURES_DIR is not set) (set ERYX_FIXTURES_DIR)"``.
    environ : mapping, optional
        The environment to judge "not set" by (default ``os.environ``).
    """
    environ = os.environ if environ is None else environ
    for setting, what in DATA_SETTINGS.items():
        if setting not in reason:
            continue
        value = environ.get(setting)
        if not value:
            return f"{setting} is not set: {what} are not available (set it to their folder to run these tests)"
        folder = Path(value).expanduser()
        if not folder.is_dir():  # set, but to nothing: a relative path read from another folder, a typo
            where = f"{value}" + ("" if folder.is_absolute() else f" ({Path.cwd() / folder}, relative to the "
                                                                    f"current folder)")
            return f"{setting}={where} is not a folder: {what} are not available"
    return None


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    longrepr = report.longrepr
    if report.skipped and isinstance(longrepr, tuple) and len(longrepr) == 3:
        reason = grouped_reason(str(longrepr[2]))
        if reason is not None:
            report.longrepr = (LOCATION, None, reason)
