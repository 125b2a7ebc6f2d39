"""The harness's stages as parametrised pytest tests: ``phase3::eigenspaces[5zck_p1]``.

Select with markers (``-m phase3``), fixtures with ``--parity-fixture NAME``
(repeatable), the device with ``--parity-device``, and write the CLI's JSON result
with ``--parity-json FILE``. Fixtures that are not available skip with the reason.
"""
from __future__ import annotations

import pytest

from parity.pytest_plugin import fixture_path_or_skip, parity_fixture_names, record_stage
from parity.runner import make_context, run_stage
from parity.stages import STAGES

_CONTEXTS: dict = {}


def pytest_generate_tests(metafunc):
    if "parity_stage" in metafunc.fixturenames:
        names = parity_fixture_names(metafunc.config)
        params, ids = [], []
        for stage in STAGES:
            for fixture in names:
                params.append(pytest.param(stage, fixture, marks=getattr(pytest.mark, f"phase{stage.phase}")))
                ids.append(f"{stage.id}[{fixture}]")
        metafunc.parametrize(("parity_stage", "parity_fixture"), params, ids=ids)


def _context(request, fixture: str):
    config = request.config
    key = (fixture, config.getoption("--parity-device"), config.getoption("--parity-dtype"))
    if key not in _CONTEXTS:
        fixture_path_or_skip(fixture)
        _CONTEXTS[key] = make_context(fixture, device=key[1], dtype=key[2])
    return _CONTEXTS[key]


def test_stage(request, parity_stage, parity_fixture):
    ctx = _context(request, parity_fixture)
    record = run_stage(parity_stage, ctx)
    record_stage(request.config, ctx, record)
    if record["status"] == "not_comparable":
        pytest.skip(f"{parity_stage.name} not comparable: {record['message']}")
    assert record["status"] == "pass", record.get("message")
