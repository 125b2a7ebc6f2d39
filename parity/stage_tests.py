"""The harness's stages as pytest tests, shipped with the package: ``phase3::eigenspaces[synthetic]``.

Use them in any repository, without a conftest:

- ``pytest --parity`` adds this module to the collection, or
- one line in a test file: ``from parity.stage_tests import test_stage``.

The plugin (:mod:`parity.pytest_plugin`, loaded through the ``pytest11`` entry point)
parametrises :func:`test_stage` with one case per registry stage and fixture, marked
``phase1``-``phase4``. Choose the sides with ``--candidate`` / ``--reference`` (or the ini
options ``parity_candidate`` / ``parity_reference``), the fixtures with ``--parity-fixture``
(ini ``parity_fixtures``). A stage that is not comparable skips with its reason unless
``--parity-require`` names it; a failing stage's message carries the divergence diagnosis
and says whether it is a root cause or inherited, and from which stage.
"""
from __future__ import annotations

from typing import Any

import pytest

from .pytest_plugin import fixture_path_or_skip, parity_backend_options, record_stage

_RUNS: dict = {}


def _run(request, fixture: str) -> dict:
    """The run of (fixture, device, dtype, backends), built once per session: {"run", "records", "error"}."""
    from eryx.errors import EryxInputError

    from .runner import make_run

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
    from .runner import run_stage

    if stage.name not in entry["records"]:
        entry["records"][stage.name] = run_stage(stage, entry["run"])
    return entry["records"][stage.name]


def upstream_stages(stage) -> list:
    """Registry stages producing ``stage``'s inputs, transitively, in phase order."""
    from .stages import STAGES

    producers: dict[str, list] = {}
    for s in STAGES:
        if s.kind not in ("invariant", "oracle", "dtype"):
            producers.setdefault(s.quantity, []).append(s)
    seen: dict[str, Any] = {}
    todo = list(stage.inputs)
    while todo:
        for s in producers.get(todo.pop(), ()):
            if s.name not in seen and s.name != stage.name:
                seen[s.name] = s
                todo.extend(s.inputs)
    order = {s.name: i for i, s in enumerate(STAGES)}
    return sorted(seen.values(), key=lambda s: order[s.name])


def lineage(entry: dict, stage, record: dict) -> str:
    """'root cause ...' or 'inherited from STAGE ...' for a failing stage (cross-feeding when possible)."""
    from .bisect import INHERITED, ROOT, classify

    details = record.get("details") or {}
    if details.get("build_step"):
        side = "reference" if (record.get("message") or "").startswith("the reference") else "candidate"
        return (f"inherited from construction:{side} (the root cause: the {side} failed to build at step "
                f"{details['build_step']!r})")
    upstream = [s for s in upstream_stages(stage) if _record(entry, s)["status"] in ("fail", "error")]
    first = upstream[0].name if upstream else None
    verdict = classify(entry["run"], [record]).verdicts[0]
    if verdict.verdict == ROOT:
        return f"root cause: {stage.name} still diverges when fed the reference's inputs"
    if verdict.verdict == INHERITED:
        return (f"inherited from {first}: {stage.name} agrees when fed the reference's inputs" if first else
                f"inherited: {stage.name} agrees when fed the reference's inputs")
    if first:
        return f"inherited from {first} (presumed: {first} is an upstream input that diverges; no cross-feed)"
    return f"root cause: no upstream input of {stage.name} diverges"


def failure_message(entry: dict, stage, record: dict) -> str:
    """The assertion message of a failing stage: status, lineage, diagnosis, the comparison."""
    message = (record.get("message") or "").strip()
    why = lineage(entry, stage, record)
    phrase = (record.get("details") or {}).get("diagnosis_phrase")
    # the first line is what pytest's short summary shows: where, which kind, why
    head = why.split(":")[0]
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
    if record["status"] == "not_comparable":
        why = f"{parity_stage.name} not comparable: {record['message']}"
        if parity_stage.name in getattr(request.config, "_parity_require", ()):
            pytest.fail(f"{why} (required by --parity-require)", pytrace=False)
        pytest.skip(why)
    if record["status"] != "pass":
        pytest.fail(failure_message(entry, parity_stage, record), pytrace=False)
