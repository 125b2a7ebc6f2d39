"""The harness's stages as pytest tests, shipped with the package: ``phase3::eigenspaces[synthetic]``.

Use them in any repository, without a conftest:

- ``pytest --parity`` adds this module to the collection, or
- one line in a test file: ``from parity.testing.stage_tests import test_stage``.

The plugin (:mod:`parity.testing.plugin`, loaded through the ``pytest11`` entry point)
parametrises :func:`test_stage` with one case per registry stage and fixture, marked
``phase1``-``phase4``. Choose the sides with ``--candidate`` / ``--reference`` (or the ini
options ``parity_candidate`` / ``parity_reference``), the fixtures with ``--parity-fixture``
(ini ``parity_fixtures``). A stage that is not comparable skips with its reason unless
``--parity-require`` names it; a failing stage's message carries the divergence diagnosis
and says whether it is a root cause or inherited, and from which stage.
"""
from __future__ import annotations

import pytest

from eryx.errors import EryxInputError

from parity.stages import STAGES, get_stage
from parity.running.causes import upstream
from parity.running.crossfeed import classify
from parity.running.runner import make_run, run_stage
from parity.testing.plugin import fixture_path_or_skip, parity_backend_options, record_stage
from parity.contract.results import Status

_RUNS: dict = {}


def _run(request, fixture: str) -> dict:
    """The run of (fixture, device, dtype, backends), built once per session: {"run", "records", "error"}."""
    config = request.config
    backends = parity_backend_options(config)
    key = (fixture, config.getoption("--parity-device"), config.getoption("--parity-dtype"),
           tuple(sorted((k, str(v)) for k, v in backends.items())))
    if key not in _RUNS:
        fixture_path_or_skip(fixture)
        try:
            _RUNS[key] = {"run": make_run(fixture, device=key[1], dtype=key[2], **backends), "records": {},
                          "error": None}
        except EryxInputError as exc:  # bad options: one line per test, no traceback
            _RUNS[key] = {"run": None, "records": {}, "error": str(exc)}
    return _RUNS[key]


def _record(entry: dict, stage) -> dict:
    if stage.name not in entry["records"]:
        entry["records"][stage.name] = run_stage(stage, entry["run"])
    return entry["records"][stage.name]


def upstream_stages(stage) -> list:
    """Registry stages upstream of ``stage`` in the input graph (inputs, recomputed and read
    quantities), transitively, in phase order."""
    seen: set[str] = set()
    todo = list(upstream(stage))
    while todo:
        name = todo.pop()
        if name not in seen and name != stage.name:
            seen.add(name)
            todo.extend(upstream(get_stage(name)))
    return [s for s in STAGES if s.name in seen]


def lineage(entry: dict, stage, record: dict) -> str:
    """'root cause' or 'inherited from STAGE' for a failing stage, with its basis.

    The same rule as ``parity run`` and ``parity bisect`` (:mod:`parity.running.causes`): the
    stage and every stage upstream of it are classified together, cross-feeding where the
    candidate can and by the registry's input graph where it cannot.
    """
    records = [_record(entry, s) for s in upstream_stages(stage)] + [record]
    verdict = next(v for v in classify(entry["run"], records).verdicts if v.stage == stage.name)
    return f"{verdict.text} (by {verdict.basis})"


def failure_message(entry: dict, stage, record: dict) -> str:
    """The assertion message of a failing stage: status, lineage, diagnosis, the comparison."""
    message = (record.get("message") or "").strip()
    why = lineage(entry, stage, record)
    phrase = (record.get("details") or {}).get("diagnosis_phrase")
    # the first line is what pytest's short summary shows: where, which kind, why
    head = why.split(" (by ")[0]
    lines = [f"{stage.name} diverges ({head}" + (f"; diagnosis: {phrase})" if phrase else ")"), why]
    if phrase:
        lines.append(f"diagnosis: {phrase}")
    lines.append(message.splitlines()[0] if message else "(no message)")
    return "\n".join(lines)


def test_stage(request, parity_stage, parity_fixture):
    """One registry stage on one fixture: pass, fail with the diagnosis, or skip when not comparable."""
    entry = _run(request, parity_fixture)
    if entry["error"]:
        pytest.fail(f"parity run not possible: {entry['error']}", pytrace=False)
    record = _record(entry, parity_stage)
    record_stage(request.config, entry["run"], record)
    if record["status"] == Status.NOT_COMPARABLE:
        why = f"{parity_stage.name} not comparable: {record['message']}"
        if parity_stage.name in getattr(request.config, "_parity_require", ()):
            pytest.fail(f"{why} (required by --parity-require)", pytrace=False)
        pytest.skip(why)
    if record["status"] != Status.PASS:
        pytest.fail(failure_message(entry, parity_stage, record), pytrace=False)
