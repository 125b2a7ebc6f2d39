"""The harness's stages as parametrised pytest tests: ``phase3::eigenspaces[5zck_p1]``.

Select with markers (``-m phase3``), fixtures with ``--parity-fixture NAME``
(repeatable), the device with ``--parity-device``, the backends with ``--reference`` and
``--candidate`` (and ``--reference-dump FILE``), and write the CLI's JSON result with
``--parity-json FILE``. Fixtures that are not available skip with the reason; a stage that
is not comparable skips with its reason (it is never a pass).
"""
from __future__ import annotations

import pytest

from parity.pytest_plugin import fixture_path_or_skip, parity_backend_options, parity_fixture_names, record_stage
from parity.runner import construction_records, make_run, run_stage
from parity.stages import STAGES

_RUNS: dict = {}


def pytest_generate_tests(metafunc):
    if "parity_stage" in metafunc.fixturenames:
        names = parity_fixture_names(metafunc.config)
        params, ids = [], []
        for stage in STAGES:
            for fixture in names:
                params.append(pytest.param(stage, fixture, marks=getattr(pytest.mark, f"phase{stage.phase}")))
                ids.append(f"{stage.id}[{fixture}]")
        metafunc.parametrize(("parity_stage", "parity_fixture"), params, ids=ids)


def _run(request, fixture: str):
    config = request.config
    backends = parity_backend_options(config)
    key = (fixture, config.getoption("--parity-device"), config.getoption("--parity-dtype"),
           tuple(sorted((k, str(v)) for k, v in backends.items())))
    if key not in _RUNS:
        fixture_path_or_skip(fixture)
        _RUNS[key] = make_run(fixture, device=key[1], dtype=key[2], **backends)
    return _RUNS[key]


def test_stage(request, parity_stage, parity_fixture):
    run = _run(request, parity_fixture)
    builds = construction_records(run)
    assert not builds, builds[0]["message"]
    record = run_stage(parity_stage, run)
    record_stage(request.config, run, record)
    if record["status"] == "not_comparable":
        pytest.skip(f"{parity_stage.name} not comparable: {record['message']}")
    assert record["status"] == "pass", record.get("message")
