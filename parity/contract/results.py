"""The result of a parity run, typed: statuses, verdicts, stage records, run results, provenance.

One parity run produces one *result* (JSON, ``schema_version`` :data:`SCHEMA_VERSION`; every
key is listed in docs/architecture.md). This module is the one place where results are

* **built**: :func:`stage_record` (a stage's record) and :func:`run_result` (the whole
  result) are the only constructors; the runner, its construction failures and the
  nightly's crash result all call them, so every record has the same keys;
* **validated** by one validator, :func:`parity.contract.result_schema.validate_result`:
  ``parity report`` and the history store both call it (the history requires more keys:
  the columns it cannot leave empty); the type rules are the same for both;
* **migrated** on load: the validator first brings a result written by an earlier
  schema version up to date (:mod:`parity.contract.migrations`, asv's ``update_to_N``);
  :meth:`RunResult.from_dict` also fills the keys added within version 1 (``update_to_1``).

Compatibility (decided here): results cross every boundary -- ``run_parity``'s return
value, JSON files, history rows, the pytest plugin -- as plain ``dict`` objects with the
same keys and values as before, so ``result["verdict"]`` keeps working everywhere and the
runner may still fill a record in place. The typed classes are how a result is made
(:func:`stage_record`, :func:`run_result` build a :class:`StageRecord` / :class:`RunResult`
and return its :meth:`~RunResult.to_dict`) and how a loaded one is read
(:meth:`RunResult.from_dict`); both classes are also read-only ``Mapping`` views of their
``to_dict()``, so code written for dicts reads them unchanged.

:class:`Status` and :class:`Verdict` are ``str`` enumerations: each member *is* its old
string (``Status.NOT_COMPARABLE == "not_comparable"``, ``f"{Status.PASS}" == "pass"``) and
JSON writes the same text.
"""
from __future__ import annotations

import enum
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any, Iterator

__all__ = ["SCHEMA_VERSION", "Status", "Verdict", "DIVERGING", "STATUSES", "StageRecord", "RunResult", "Provenance",
           "stage_record", "run_result", "CONSTRUCTION", "is_construction"]

from parity.contract.migrations import update_to_1
from parity.contract.result_schema import validate_result
from parity.contract.statuses import DIVERGING, SCHEMA_VERSION, STATUSES, Status, Verdict  # noqa: F401  (re-exported)


# =================================================================== the types
class _MappingView(Mapping):
    """A read-only ``Mapping`` over ``to_dict()`` (for code written for dicts)."""

    def to_dict(self) -> dict:  # pragma: no cover - every subclass overrides it
        raise NotImplementedError

    def __getitem__(self, key: str) -> Any:
        return self.to_dict()[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self.to_dict())

    def __len__(self) -> int:
        return len(self.to_dict())


def _split(data: Mapping[str, Any], cls: type) -> tuple[dict, dict]:
    """``(known fields, other keys)`` of ``data`` for dataclass ``cls``."""
    names = {f.name for f in fields(cls)} - {"extra"}
    return {k: v for k, v in data.items() if k in names}, {k: v for k, v in data.items() if k not in names}


def _plain(value: Any) -> Any:
    """An enumeration member as its JSON text."""
    return value.value if isinstance(value, enum.Enum) else value


@dataclass(eq=False)
class Provenance(_MappingView):
    """Where a result was made (``result["environment"]``): library versions, commit, machine."""

    python: str | None = None
    numpy: str | None = None
    scipy: str | None = None
    torch: str | None = None
    gemmi: str | None = None
    git_commit: str | None = None
    hostname: str | None = None
    platform: str | None = None
    extra: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {**{f.name: getattr(self, f.name) for f in fields(self) if f.name != "extra"}, **self.extra}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> "Provenance":
        known, extra = _split(data or {}, cls)
        return cls(**known, extra=extra)


#: A stage record's keys before the outcome, in the order the runner has always written them.
_STAGE_HEAD = ("name", "phase", "tier", "kind", "rtol", "atol", "description", "max_abs", "max_rel",
               "max_rel_elementwise", "n_mismatch", "n_total", "n_compared", "worst", "message", "details",
               "diagnosis")


@dataclass(eq=False)
class StageRecord(_MappingView):
    """One stage's record (``result["stages"][i]``).

    ``rtol``/``atol``: the tolerances the stage was judged by (None in a crash result);
    ``max_abs``/``max_rel``: the errors (None: nothing finite compared); ``n_*``: element
    counts; ``duration_s``: seconds. ``status``, ``passed`` and ``duration_s`` are written
    once the outcome is known; ``cause`` only on failing stages (root cause or inherited,
    :mod:`parity.running.causes`); ``extra`` keeps any other key unchanged.
    """

    name: str
    phase: int
    tier: str | None = None
    kind: str | None = None
    rtol: float | None = None
    atol: float | None = None
    description: str | None = None
    max_abs: float | None = None
    max_rel: float | None = None
    max_rel_elementwise: float | None = None
    n_mismatch: int | None = 0
    n_total: int | None = 0
    n_compared: int | None = 0
    worst: dict | None = None
    message: str = ""
    details: dict = field(default_factory=dict)
    diagnosis: list = field(default_factory=list)
    status: Status | None = None
    passed: bool | None = None
    duration_s: float | None = None
    cause: dict | None = None
    extra: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        """The JSON-ready record (the same ``details``/``worst`` objects, not copies)."""
        out = {key: getattr(self, key) for key in _STAGE_HEAD}
        if self.status is not None:
            out.update(status=_plain(self.status), passed=self.passed, duration_s=self.duration_s)
        if self.cause is not None:
            out["cause"] = self.cause
        return {**out, **self.extra}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "StageRecord":
        """A record from its dict (unvalidated: :meth:`RunResult.from_dict` validates first)."""
        known, extra = _split(data, cls)
        if known.get("status") is not None:
            known["status"] = Status(known["status"])
        return cls(**known, extra=extra)


def stage_record(name: str, phase: int, *, status: Status | str | None = None, **values: Any) -> dict:
    """A stage's record as a dict, with every key of the schema: the one constructor.

    Parameters
    ----------
    name, phase
        The stage.
    status
        Given for a record decided when it is made (a failed construction, a crash):
        ``passed`` follows and ``duration_s`` defaults to 0. Left out for a record the
        runner fills after the comparison (it writes ``status``, ``passed``, ``duration_s``).
    **values
        Any other :class:`StageRecord` field (``tier``, ``rtol``, ``message``, ``details``, ...).

    Returns
    -------
    dict
        The record.
    """
    if status is not None:
        status = Status(status)
        values.setdefault("passed", status is Status.PASS)
        values.setdefault("duration_s", 0.0)
    return StageRecord(name, phase, status=status, **values).to_dict()


@dataclass(eq=False)
class RunResult(_MappingView):
    """A whole run's result (docs/architecture.md lists every key).

    ``reference``/``candidate`` (each side's backend info) are left out of the JSON when
    unknown (a run that crashed before its backends were built); ``extra`` keeps the keys
    some commands add (``timing``, ``crash``, ``bisect``, ...) unchanged, after ``stages``.
    """

    fixture: str
    stages: list = field(default_factory=list)
    passed: bool = False
    schema_version: int = SCHEMA_VERSION
    run_uuid: str | None = None
    pdb_path: str | None = None
    fixture_sha256: str | None = None
    grid: dict | None = None
    params: dict | None = None
    device: str | None = None
    device_name: str | None = None
    dtype: str | None = None
    reference: dict | None = None
    candidate: dict | None = None
    verdict: Verdict | None = None
    first_failure: str | None = None
    incomplete: list = field(default_factory=list)
    n_compared: int = 0
    notes: list = field(default_factory=list)
    fault: str | None = None
    tier_overrides: list = field(default_factory=list)
    started_at: str | None = None
    duration_s: float | None = None
    environment: dict = field(default_factory=dict)
    phase_timings: dict = field(default_factory=dict)
    extra: dict = field(default_factory=dict)

    @property
    def provenance(self) -> Provenance:
        """``environment``, typed."""
        return Provenance.from_dict(self.environment)

    @property
    def stage_records(self) -> list[StageRecord]:
        """``stages``, typed."""
        return [s if isinstance(s, StageRecord) else StageRecord.from_dict(s) for s in self.stages]

    def to_dict(self) -> dict:
        """The JSON-ready result, keys in the order results have always had."""
        out: dict[str, Any] = {}
        for key in _RUN_ORDER:
            value = getattr(self, key)
            if key in ("reference", "candidate") and value is None:
                continue
            if key == "stages":
                value = [s.to_dict() if isinstance(s, StageRecord) else s for s in value]
            out[key] = _plain(value)
        return {**out, **self.extra}

    @classmethod
    def from_dict(cls, data: Any, source: str | None = None) -> "RunResult":
        """A loaded result, typed: migrated, validated (as ``parity report`` does), completed.

        Raises
        ------
        parity.contract.result_schema.ResultTypeError
            One line naming ``source`` and the first problem.
        """
        known, extra = _split(update_to_1(validate_result(data, source)), cls)
        known["stages"] = [StageRecord.from_dict(s) for s in known["stages"]]
        if known.get("verdict") is not None:
            known["verdict"] = Verdict(known["verdict"])
        return cls(**known, extra=extra)


_RUN_ORDER = ("schema_version", "run_uuid", "fixture", "pdb_path", "fixture_sha256", "grid", "params", "device",
              "device_name", "dtype", "reference", "candidate", "passed", "verdict", "first_failure", "incomplete",
              "n_compared", "notes", "fault", "tier_overrides", "started_at", "duration_s", "environment",
              "phase_timings", "stages")


#: The ``kind`` of a record that is not a stage's comparison but a side's failed
#: construction (``construction:reference``, ``construction:candidate``).
CONSTRUCTION = "construction"


def is_construction(record: Mapping[str, Any]) -> bool:
    """True for the record of a side's failed construction (not a stage's comparison)."""
    return record.get("kind") == CONSTRUCTION


def run_result(*, fixture: str, stages: list, verdict: Verdict | str, first_failure: str | None,
               incomplete: list[str], **values: Any) -> dict:
    """A run's JSON-ready result dict, with every key of the schema: the one constructor.

    Parameters
    ----------
    fixture
        The fixture's name.
    stages
        The stage records (dicts from :func:`stage_record`, in run order).
    verdict, first_failure, incomplete
        The run's outcome; ``passed`` follows from ``verdict``.
    **values
        Any other :class:`RunResult` field (``n_compared`` defaults to the stages' sum,
        ``run_uuid`` to a fresh UUID4); other keys go to ``extra``, after ``stages``.
    """
    known, extra = _split(values, RunResult)
    known.setdefault("n_compared", int(sum(s.get("n_compared") or 0 for s in stages)))
    known.setdefault("run_uuid", str(uuid.uuid4()))
    verdict = Verdict(verdict)
    return RunResult(fixture=fixture, stages=stages, verdict=verdict, passed=verdict is Verdict.PASS,
                     first_failure=first_failure, incomplete=incomplete, **known, extra=extra).to_dict()
