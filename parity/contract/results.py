"""The result of a parity run, typed: statuses, verdicts, stage records, run results, provenance.

One parity run produces one *result* (JSON, ``schema_version`` :data:`SCHEMA_VERSION`; every
key is listed in docs/architecture.md). This module is the one place where results are

* **built**: :func:`stage_record` (a stage's record) and :func:`run_result` (the whole
  result) are the only constructors; the runner, its construction failures and the
  nightly's crash result all call them, so every record has the same keys;
* **validated**: :func:`validate_result` is the one validator; ``parity report``
  (:data:`REPORT_REQUIRED`) and the history store (:data:`HISTORY_REQUIRED`: the columns
  it cannot leave empty) both call it; only the set of required keys differs;
* **migrated** on load: :func:`validate_result` first brings a result written by an
  earlier schema version up to date (:mod:`parity.contract.migrations`, asv's
  ``update_to_N``); :meth:`RunResult.from_dict` also fills the keys added within
  version 1 (``update_to_1``).

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
import math
import numbers
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from datetime import datetime
from typing import Any, Callable, Iterator

__all__ = ["SCHEMA_VERSION", "Status", "Verdict", "DIVERGING", "STATUSES", "StageRecord", "RunResult", "Provenance",
           "stage_record", "run_result", "ResultTypeError", "validate_result", "check_result_shape",
           "check_result_types",
           "REPORT_REQUIRED", "HISTORY_REQUIRED", "MAX_DEPTH", "TIMING_CLOCKS"]

#: The result schema version this parity writes (and the newest it reads).
SCHEMA_VERSION = 1


class Status(str, enum.Enum):
    """The outcome of one stage (``record["status"]``).

    The four values stage records have ever had: ``pass`` (compared and agreed), ``fail``
    (compared and differs), ``error`` (a backend or the harness raised: a divergence),
    ``not_comparable`` (nothing could be compared; the message says why). Other tools' case
    outcomes (the bench's ``skipped``, mutation's ``killed``, locate's ``hit``/``miss``)
    are not stage statuses.
    """

    PASS = "pass"
    FAIL = "fail"
    NOT_COMPARABLE = "not_comparable"
    ERROR = "error"

    # str() and f-strings give "pass", as the bare string did (Python 3.11 changed the default).
    __str__ = str.__str__
    __format__ = str.__format__

    @property
    def diverges(self) -> bool:
        """True for ``fail`` and ``error``: the stage counts as a divergence."""
        return self in DIVERGING


#: Every stage status, in the order the history's table constraint lists them.
STATUSES: tuple[Status, ...] = tuple(Status)
#: The statuses that count as a divergence, in the order of preference for "first".
DIVERGING: tuple[Status, ...] = (Status.FAIL, Status.ERROR)


class Verdict(str, enum.Enum):
    """The outcome of a run (``result["verdict"]``)."""

    PASS = "pass"
    DIVERGED = "diverged"
    INCOMPLETE = "incomplete"

    __str__ = str.__str__
    __format__ = str.__format__


# =================================================================== validation
#: Nesting deeper than any result the harness writes (its deepest: ~6 levels).
MAX_DEPTH = 32
#: Clocks a timing block may name (see parity.running.nightly.measure_timing).
TIMING_CLOCKS = ("cpu", "wall")
#: Keys a result must have to be rendered (``parity report``).
REPORT_REQUIRED = ("schema_version", "fixture", "passed", "stages")
#: Keys a result must have to be recorded in the history (its NOT NULL columns).
HISTORY_REQUIRED = ("schema_version", "fixture", "device", "dtype", "passed", "started_at", "duration_s",
                    "phase_timings", "stages")
_STAGE_REQUIRED = ("name", "phase", "status")


class ResultTypeError(ValueError):
    """A result that cannot be loaded: a missing key, a field of the wrong type, an unknown version.

    ``problem`` is the message without the source (the history prefixes its own).
    """

    def __init__(self, message: str, problem: str | None = None) -> None:
        super().__init__(message)
        self.problem = message if problem is None else problem


def _num(x: Any) -> bool:
    return isinstance(x, numbers.Real) and not isinstance(x, bool) and math.isfinite(x)


def _int(x: Any) -> bool:
    return isinstance(x, numbers.Integral) and not isinstance(x, bool)


def _text(x: Any) -> bool:
    return isinstance(x, str)


def _name(x: Any) -> bool:
    return isinstance(x, str) and bool(x)


def _obj(x: Any) -> bool:
    return isinstance(x, Mapping)


def _list(x: Any) -> bool:
    return isinstance(x, list)


def _bool(x: Any) -> bool:
    return isinstance(x, bool)


def _opt(check: Callable[[Any], bool]) -> Callable[[Any], bool]:
    return lambda x: x is None or check(x)


def _list_of(check: Callable[[Any], bool]) -> Callable[[Any], bool]:
    return lambda x: isinstance(x, list) and all(check(v) for v in x)


def _one_of(values: tuple[str, ...]) -> Callable[[Any], bool]:
    return lambda x: isinstance(x, str) and x in values


def _iso(x: Any) -> bool:
    try:
        datetime.fromisoformat(x)
    except (TypeError, ValueError):
        return False
    return True


_Table = dict[str, tuple[Callable[[Any], bool], str]]
_STATUS_TEXT = "one of " + ", ".join(s.value for s in Status)

#: Top-level fields: (check, what it should be). Absent fields are fine unless required.
_TOP: _Table = {
    "fixture": (_name, "text (not empty)"), "pdb_path": (_opt(_text), "text"), "fixture_sha256": (_opt(_text), "text"),
    "grid": (_opt(_obj), "an object"), "params": (_opt(_obj), "an object"), "device": (_name, "text (not empty)"),
    "device_name": (_opt(_text), "text"), "dtype": (_name, "text (not empty)"), "reference": (_opt(_obj), "an object"),
    "candidate": (_opt(_obj), "an object"), "passed": (_bool, "true or false"),
    "verdict": (_opt(_one_of(tuple(v.value for v in Verdict))), "one of " + ", ".join(v.value for v in Verdict)),
    "first_failure": (_opt(_text), "text or null"),
    "incomplete": (_opt(_list_of(_text)), "a list of stage names"), "n_compared": (_opt(_int), "an integer"),
    "notes": (_opt(_list_of(_text)), "a list of text"), "fault": (_opt(_text), "text or null"),
    "tier_overrides": (_opt(_list), "a list"), "started_at": (_opt(_iso), "an ISO 8601 time"),
    "duration_s": (_opt(_num), "a finite number"), "environment": (_opt(_obj), "an object"),
    "phase_timings": (_opt(_obj), "an object"), "bisect": (_opt(_obj), "an object"),
    "run_uuid": (_opt(_text), "text"), "timing": (_opt(_obj), "an object"),
}
_STAGE: _Table = {
    "name": (_name, "text (not empty)"), "phase": (_int, "an integer"), "status": (_one_of(tuple(Status)), _STATUS_TEXT),
    "tier": (_opt(_text), "text"), "kind": (_opt(_text), "text"), "description": (_opt(_text), "text"),
    "message": (_opt(_text), "text"), "passed": (_opt(_bool), "true or false"),
    "worst": (_opt(_obj), "an object"), "details": (_opt(_obj), "an object"),
    "diagnosis": (_opt(_list), "a list"), "n_mismatch": (_opt(_int), "an integer"),
    "n_total": (_opt(_int), "an integer"), "n_compared": (_opt(_int), "an integer"),
    **{k: (_opt(_num), "a finite number") for k in ("rtol", "atol", "max_abs", "max_rel", "max_rel_elementwise",
                                                     "duration_s")},
}
_DETAILS: _Table = {
    "worst_elements": (_list_of(_obj), "a list of objects"), "eigen_table": (_list_of(_obj), "a list of objects"),
    "ulp": (_obj, "an object"), "tier": (_obj, "an object"), "values": (_obj, "an object"),
    "log10_rel_hist": (_obj, "an object"), "nan_pattern": (_obj, "an object"), "offenders": (_list, "a list"),
    "asu_order": (_list, "a list"), "scale": (_opt(_num), "a finite number"), "limit": (_opt(_num), "a number"),
    "rel_gap": (_opt(_num), "a finite number"), "n_compared": (_opt(_int), "an integer"),
}
_BISECT: _Table = {
    "first_divergence": (_opt(_text), "text or null"), "root_causes": (_list_of(_text), "a list of stage names"),
    "inherited": (_list_of(_text), "a list of stage names"),
    "crossfeed_supported": (_bool, "true or false"), "verdicts": (_list_of(_obj), "a list of objects"),
}
_VERDICT: _Table = {
    "stage": (_text, "text"), "phase": (_int, "an integer"), "verdict": (_text, "text"),
    "diagnosis": (_opt(_text), "text or null"),
}
_TIMING: _Table = {
    "clock": (_one_of(TIMING_CLOCKS), "one of " + ", ".join(TIMING_CLOCKS)),
    "samples": (_obj, "an object {target: [seconds]}"),
}


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _fields(obj: Mapping, table: _Table, where: str, required: tuple[str, ...] = ()) -> None:
    for key in required:
        if key not in obj:
            raise ResultTypeError(f"{where} lacks the field {key!r}")
    for key, (check, what) in table.items():
        if key in obj and not check(obj[key]):
            raise ResultTypeError(f"{where}.{key} must be {what}, got {_show(obj[key])}")


def _walk(value: Any, where: str, depth: int = 0) -> None:
    """Nesting depth, and every complex value ``{"re": x, "im": y}`` made of numbers (or null)."""
    if depth > MAX_DEPTH:
        raise ResultTypeError(f"{where} is nested more than {MAX_DEPTH} levels deep")
    if isinstance(value, Mapping):
        # A complex value; ``{"re": {...}, "im": {...}}`` (per-part statistics, e.g. ULP) is not one.
        if set(value) == {"re", "im"} and not any(isinstance(v, (Mapping, list)) for v in value.values()):
            for part in ("re", "im"):
                if not (value[part] is None or _num(value[part])):
                    raise ResultTypeError(f"{where}.{part} (a complex value's part) must be a finite number or "
                                          f"null, got {_show(value[part])}")
        for key, item in value.items():
            _walk(item, f"{where}.{key}", depth + 1)
    elif isinstance(value, list):
        for i, item in enumerate(value):
            _walk(item, f"{where}[{i}]", depth + 1)
    elif isinstance(value, float) and not math.isfinite(value):
        raise ResultTypeError(f"{where} is {value} (parity writes null for non-finite numbers)")


def _check_shape(result: Any, required: tuple[str, ...]) -> None:
    """The keys and containers every further check relies on (problem text without the source)."""
    if not isinstance(result, Mapping):
        raise ResultTypeError(f"not a parity result (expected a JSON object, got {type(result).__name__})")
    missing = [key for key in required if key not in result]
    if missing:
        raise ResultTypeError(f"not a parity result: missing key(s) {', '.join(missing)}")
    version = result.get("schema_version")
    if not _int(version) or not 1 <= version <= SCHEMA_VERSION:
        newer = " (newer than this parity's: upgrade eryx-parity to read it)" if _int(version) and version > 1 else ""
        raise ResultTypeError(f"unsupported schema_version {version!r}{newer} "
                              f"(this parity reads versions 1 to {SCHEMA_VERSION})")
    stages = result.get("stages")
    if not isinstance(stages, list):
        raise ResultTypeError(f"'stages' must be a list, got {type(stages).__name__}")
    for i, stage in enumerate(stages):
        if not isinstance(stage, Mapping):
            raise ResultTypeError(f"stages[{i}] must be an object")
        absent = [key for key in _STAGE_REQUIRED if key not in stage]
        if absent:
            raise ResultTypeError(f"stages[{i}] is missing key(s) {', '.join(absent)}")


def _check_types(result: Mapping[str, Any]) -> None:
    """Every field's type (problem text without the source)."""
    try:
        _walk(result, "result")
        _fields(result, _TOP, "result")
        seen: set[str] = set()
        for i, stage in enumerate(result["stages"]):
            where = f"stages[{i}]"
            _fields(stage, _STAGE, where)
            if stage["name"] in seen:
                raise ResultTypeError(f"duplicate stage name {stage['name']!r}")
            seen.add(stage["name"])
            if _obj(stage.get("details")):
                _fields(stage["details"], _DETAILS, f"{where}.details")
            if _list(stage.get("diagnosis")) and not all(_text(d) or _obj(d) for d in stage["diagnosis"]):
                raise ResultTypeError(f"{where}.diagnosis must hold text or objects")
        for phase, seconds in (result.get("phase_timings") or {}).items():
            if not (seconds is None or _num(seconds)):
                raise ResultTypeError(f"result.phase_timings[{phase!r}] must be a number or null, got {_show(seconds)}")
        if result.get("timing") is not None:
            _fields(result["timing"], _TIMING, "timing", required=tuple(_TIMING))
            for target, values in result["timing"]["samples"].items():
                if not _list_of(_num)(values):
                    raise ResultTypeError(f"timing.samples[{target!r}] must be a list of numbers")
        bisect = result.get("bisect")
        if bisect is not None:
            _fields(bisect, _BISECT, "bisect", required=tuple(_BISECT))
            for i, verdict in enumerate(bisect["verdicts"]):
                _fields(verdict, _VERDICT, f"bisect.verdicts[{i}]", required=("stage", "verdict"))
    except ResultTypeError as exc:
        raise ResultTypeError(f"not a valid parity result: {exc}") from None


def validate_result(result: Any, source: str | None = None, *,
                    required: tuple[str, ...] = REPORT_REQUIRED) -> dict:
    """Migrate a loaded result to :data:`SCHEMA_VERSION` and check every field: the one validator.

    Parameters
    ----------
    result : Any
        Decoded JSON (a file, a history row, a dict built in memory).
    source : str, optional
        Where it came from (a path), put first in the message.
    required : tuple of str
        Keys that must be present: :data:`REPORT_REQUIRED` (default) or :data:`HISTORY_REQUIRED`.

    Returns
    -------
    dict
        The result migrated to the current schema version (``result`` itself when it is
        current). The keys added within version 1 are left as they are.

    Raises
    ------
    ResultTypeError
        One line: ``"<source>: not a valid parity result: stages[3].worst must be an object,
        got 'x'"``; its ``problem`` is the text after the source.
    """
    # The migrations import this module's enumerations: imported here to break the cycle.
    from parity.contract.migrations import migrate

    try:
        _check_shape(result, required)
        result = migrate(result)
        _check_types(result)
    except ResultTypeError as exc:
        raise ResultTypeError(f"{source}: {exc}" if source else str(exc), problem=str(exc)) from None
    return result


def check_result_shape(result: Any, source: str, *, required: tuple[str, ...] = REPORT_REQUIRED) -> dict:
    """The keys, version and containers of a result built in memory, migrated; not every field's type.

    For a result handed over by code rather than read from a file (``render_report``): its
    numbers may still be NumPy scalars, which :func:`validate_result` would refuse.

    Raises
    ------
    ResultTypeError
        As :func:`validate_result`.
    """
    from parity.contract.migrations import migrate  # imports this module (see validate_result)

    try:
        _check_shape(result, required)
    except ResultTypeError as exc:
        raise ResultTypeError(f"{source}: {exc}", problem=str(exc)) from None
    return migrate(result)


def check_result_types(result: Mapping[str, Any], source: str) -> None:
    """Refuse a result whose fields have the wrong type (the keys were checked already).

    Kept for :mod:`parity.contract.result_schema`'s callers; :func:`validate_result` does
    this and the rest.
    """
    try:
        _check_types(result)
    except ResultTypeError as exc:
        raise ResultTypeError(f"{source}: {exc}", problem=str(exc)) from None


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
    :mod:`parity.diagnosis.causes`); ``extra`` keeps any other key unchanged.
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
        ResultTypeError
            One line naming ``source`` and the first problem.
        """
        from parity.contract.migrations import update_to_1  # imports this module (see validate_result)

        known, extra = _split(update_to_1(validate_result(data, source)), cls)
        known["stages"] = [StageRecord.from_dict(s) for s in known["stages"]]
        if known.get("verdict") is not None:
            known["verdict"] = Verdict(known["verdict"])
        return cls(**known, extra=extra)


_RUN_ORDER = ("schema_version", "run_uuid", "fixture", "pdb_path", "fixture_sha256", "grid", "params", "device",
              "device_name", "dtype", "reference", "candidate", "passed", "verdict", "first_failure", "incomplete",
              "n_compared", "notes", "fault", "tier_overrides", "started_at", "duration_s", "environment",
              "phase_timings", "stages")


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
