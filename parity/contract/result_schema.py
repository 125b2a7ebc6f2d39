"""The one validator of parity results: the keys, version and field types a result must have.

A result file is input: ``parity report`` renders whatever it is given, and the history
store records whatever the nightly hands it. Both call :func:`validate_result`, which
brings a result written by an earlier schema version up to date
(:func:`parity.contract.migrations.migrate`) and refuses, in one line naming the field,
valid JSON with a field of the wrong type (a string where an object belongs, a complex
value with a text part, an infinite phase, a half bisection, an unknown status), instead
of failing somewhere inside the rendering or the SQL. The two callers differ only in the
keys they require (:data:`REPORT_REQUIRED`, :data:`HISTORY_REQUIRED`).
"""
from __future__ import annotations

import math
import numbers
from datetime import datetime
from typing import Any, Callable, Mapping

from parity.contract.migrations import migrate
from parity.contract.statuses import SCHEMA_VERSION, Status, Verdict

__all__ = ["MAX_DEPTH", "TIMING_CLOCKS", "REPORT_REQUIRED", "HISTORY_REQUIRED", "ResultTypeError",
           "validate_result", "check_result_shape", "check_result_types"]

#: Nesting deeper than any result the harness writes (its deepest: ~6 levels).
MAX_DEPTH = 32
#: Clocks a timing block may name (see parity.benchmarking.nightly.measure_timing).
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
        if _int(version) and version > SCHEMA_VERSION:
            raise ResultTypeError(f"unsupported schema_version {version!r}: newer than this parity's "
                                  f"{SCHEMA_VERSION}; upgrade eryx-parity to read it")
        raise ResultTypeError(f"unsupported schema_version {version!r} (this parity reads 1 to {SCHEMA_VERSION})")
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
    try:
        _check_shape(result, required)
    except ResultTypeError as exc:
        raise ResultTypeError(f"{source}: {exc}", problem=str(exc)) from None
    return migrate(result)


def check_result_types(result: Mapping[str, Any], source: str) -> None:
    """Refuse a result whose fields have the wrong type (the keys were checked already).

    :func:`validate_result` does this and the rest; this part alone is kept for its callers.
    """
    try:
        _check_types(result)
    except ResultTypeError as exc:
        raise ResultTypeError(f"{source}: {exc}", problem=str(exc)) from None
