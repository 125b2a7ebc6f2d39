"""The types a saved parity result's fields must have, checked when a result is loaded.

A result file is input: ``parity report`` renders whatever it is given. Valid JSON with a
field of the wrong type (a string where an object belongs, a complex value with a text
part, an infinite phase, a half bisection) is refused here, in one line naming the field,
instead of failing somewhere inside the rendering.
"""
from __future__ import annotations

import math
import numbers
from typing import Any, Callable, Mapping

#: Nesting deeper than any result the harness writes (its deepest: ~6 levels).
MAX_DEPTH = 32


class ResultTypeError(ValueError):
    """A field of a result with the wrong type (the message names the field)."""


def _num(x: Any) -> bool:
    return isinstance(x, numbers.Real) and not isinstance(x, bool) and math.isfinite(x)


def _int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _text(x: Any) -> bool:
    return isinstance(x, str)


def _obj(x: Any) -> bool:
    return isinstance(x, Mapping)


def _list(x: Any) -> bool:
    return isinstance(x, list)


def _opt(check: Callable[[Any], bool]) -> Callable[[Any], bool]:
    return lambda x: x is None or check(x)


def _list_of(check: Callable[[Any], bool]) -> Callable[[Any], bool]:
    return lambda x: isinstance(x, list) and all(check(v) for v in x)


_WHAT = {_num: "a finite number", _int: "an integer", _text: "text", _obj: "an object", _list: "a list"}

#: Top-level fields: (check, what it should be). Absent fields are fine (rendered as "-").
_TOP: dict[str, tuple[Callable[[Any], bool], str]] = {
    "fixture": (_text, "text"), "pdb_path": (_opt(_text), "text"), "fixture_sha256": (_opt(_text), "text"),
    "grid": (_opt(_obj), "an object"), "params": (_opt(_obj), "an object"), "device": (_opt(_text), "text"),
    "device_name": (_opt(_text), "text"), "dtype": (_opt(_text), "text"), "reference": (_opt(_obj), "an object"),
    "candidate": (_opt(_obj), "an object"), "passed": (lambda x: isinstance(x, bool), "true or false"),
    "verdict": (_opt(_text), "text"), "first_failure": (_opt(_text), "text or null"),
    "incomplete": (_opt(_list_of(_text)), "a list of stage names"), "n_compared": (_opt(_int), "an integer"),
    "notes": (_opt(_list_of(_text)), "a list of text"), "fault": (_opt(_text), "text or null"),
    "tier_overrides": (_opt(_list), "a list"), "started_at": (_opt(_text), "text"),
    "duration_s": (_opt(_num), "a finite number"), "environment": (_opt(_obj), "an object"),
    "phase_timings": (_opt(_obj), "an object"), "bisect": (_opt(_obj), "an object"),
    "run_uuid": (_opt(_text), "text"),
}
_STAGE: dict[str, tuple[Callable[[Any], bool], str]] = {
    "name": (_text, "text"), "phase": (_int, "an integer"), "status": (_text, "text"),
    "tier": (_opt(_text), "text"), "kind": (_opt(_text), "text"), "description": (_opt(_text), "text"),
    "message": (_opt(_text), "text"), "passed": (_opt(lambda x: isinstance(x, bool)), "true or false"),
    "worst": (_opt(_obj), "an object"), "details": (_opt(_obj), "an object"),
    "diagnosis": (_opt(_list), "a list"), "n_mismatch": (_opt(_int), "an integer"),
    "n_total": (_opt(_int), "an integer"), "n_compared": (_opt(_int), "an integer"),
    **{k: (_opt(_num), "a finite number") for k in ("rtol", "atol", "max_abs", "max_rel", "max_rel_elementwise",
                                                     "duration_s")},
}
_DETAILS: dict[str, tuple[Callable[[Any], bool], str]] = {
    "worst_elements": (_list_of(_obj), "a list of objects"), "eigen_table": (_list_of(_obj), "a list of objects"),
    "ulp": (_obj, "an object"), "tier": (_obj, "an object"), "values": (_obj, "an object"),
    "log10_rel_hist": (_obj, "an object"), "nan_pattern": (_obj, "an object"), "offenders": (_list, "a list"),
    "asu_order": (_list, "a list"), "scale": (_opt(_num), "a finite number"), "limit": (_opt(_num), "a number"),
    "rel_gap": (_opt(_num), "a finite number"), "n_compared": (_opt(_int), "an integer"),
}
_BISECT: dict[str, tuple[Callable[[Any], bool], str]] = {
    "first_divergence": (_opt(_text), "text or null"), "root_causes": (_list_of(_text), "a list of stage names"),
    "inherited": (_list_of(_text), "a list of stage names"),
    "crossfeed_supported": (lambda x: isinstance(x, bool), "true or false"),
    "verdicts": (_list_of(_obj), "a list of objects"),
}
_VERDICT: dict[str, tuple[Callable[[Any], bool], str]] = {
    "stage": (_text, "text"), "phase": (_int, "an integer"), "verdict": (_text, "text"),
    "diagnosis": (_opt(_text), "text or null"),
}


def _fields(obj: Mapping, table: Mapping[str, tuple[Callable[[Any], bool], str]], where: str,
            required: tuple[str, ...] = ()) -> None:
    for key in required:
        if key not in obj:
            raise ResultTypeError(f"{where} lacks the field {key!r}")
    for key, (check, what) in table.items():
        if key in obj and not check(obj[key]):
            raise ResultTypeError(f"{where}.{key} must be {what}, got {_show(obj[key])}")


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


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


def check_result_types(result: Mapping[str, Any], source: str) -> None:
    """Refuse a result whose fields the report relies on have the wrong type.

    Parameters
    ----------
    result : mapping
        Decoded JSON with the required keys present (``parity.rendering.report`` checks them first).
    source : str
        The file, for the message.

    Raises
    ------
    ResultTypeError
        One line: ``"<source>: not a valid parity result: stages[3].worst must be an object, got 'x'"``.
    """
    try:
        _walk(result, "result")
        _fields(result, _TOP, "result")
        for i, stage in enumerate(result["stages"]):
            where = f"stages[{i}]"
            _fields(stage, _STAGE, where)
            if _obj(stage.get("details")):
                _fields(stage["details"], _DETAILS, f"{where}.details")
            if _list(stage.get("diagnosis")) and not all(_text(d) or _obj(d) for d in stage["diagnosis"]):
                raise ResultTypeError(f"{where}.diagnosis must hold text or objects")
        bisect = result.get("bisect")
        if bisect is not None:
            _fields(bisect, _BISECT, "bisect", required=tuple(_BISECT))
            for i, verdict in enumerate(bisect["verdicts"]):
                _fields(verdict, _VERDICT, f"bisect.verdicts[{i}]", required=("stage", "verdict"))
    except ResultTypeError as exc:
        raise ResultTypeError(f"{source}: not a valid parity result: {exc}") from None
