"""The history store's table layout and the rows it writes (SQL text and pure row builders).

:mod:`parity.storage.history` writes these rows; the layout is described in its docstring.
"""
from __future__ import annotations

import json
import math
from datetime import datetime, timezone
from typing import Any, Mapping, Sequence

from parity.contract.results import STATUSES
from parity.storage.outputs import json_safe

__all__ = ["HistoryError", "parse_timestamp", "series_fixture", "SCHEMA_V1"]


class HistoryError(Exception):
    """The history store cannot be opened or written, or a result is malformed."""


#: The tables (described in parity.storage.history's docstring); user_version is set apart.
SCHEMA_V1 = """
CREATE TABLE runs (
    id            INTEGER PRIMARY KEY,
    run_uuid      TEXT NOT NULL UNIQUE,
    started_at    TEXT NOT NULL,
    fixture       TEXT NOT NULL,
    device        TEXT NOT NULL,
    device_name   TEXT,
    dtype         TEXT NOT NULL,
    passed        INTEGER NOT NULL CHECK (passed IN (0, 1)),
    first_failure TEXT,
    fault         TEXT,
    duration_s    REAL,
    git_commit    TEXT,
    hostname      TEXT,
    platform      TEXT,
    versions      TEXT NOT NULL,
    params        TEXT NOT NULL,
    grid          TEXT NOT NULL,
    report_path   TEXT,
    result_json   TEXT NOT NULL,
    nightly_id    TEXT,
    recorded_at   TEXT NOT NULL
);
CREATE INDEX runs_series ON runs (fixture, device, dtype, started_at);
CREATE INDEX runs_started ON runs (started_at);
CREATE TABLE stages (
    run_id     INTEGER NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    seq        INTEGER NOT NULL,
    name       TEXT NOT NULL,
    phase      INTEGER,
    tier       TEXT,
    status     TEXT NOT NULL CHECK (status IN ({statuses})),
    max_abs    REAL,
    max_rel    REAL,
    n_mismatch INTEGER,
    n_total    INTEGER,
    duration_s REAL,
    PRIMARY KEY (run_id, name)
);
CREATE INDEX stages_name ON stages (name);
CREATE TABLE phase_timings (
    run_id  INTEGER NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    phase   TEXT NOT NULL,
    seconds REAL,
    PRIMARY KEY (run_id, phase)
);
""".format(statuses=", ".join(f"'{s.value}'" for s in STATUSES))


def parse_timestamp(text: str) -> datetime:
    """Parse an ISO 8601 timestamp into an aware UTC datetime (naive means UTC).

    Raises
    ------
    HistoryError
        When ``text`` is not an ISO 8601 timestamp.
    """
    try:
        stamp = datetime.fromisoformat(text)
    except (TypeError, ValueError) as exc:
        raise HistoryError(f"malformed result: started_at {text!r} is not ISO 8601") from exc
    if stamp.tzinfo is None:
        stamp = stamp.replace(tzinfo=timezone.utc)
    return stamp.astimezone(timezone.utc)


def _utc_text(stamp: datetime) -> str:
    # A fixed format (always microseconds, always +00:00) makes text order = time order.
    return stamp.astimezone(timezone.utc).isoformat(timespec="microseconds")


# --------------------------------------------------------------------------- JSON helpers


def _dumps(value: Any) -> str:
    return json.dumps(json_safe(value), sort_keys=True, separators=(",", ":"), allow_nan=False)


def _real_or_none(value: Any) -> float | None:
    if value is None:
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def _int_or_none(value: Any) -> int | None:
    return None if value is None else int(value)


# --------------------------------------------------------------------------- row builders


def series_fixture(result: Mapping[str, Any]) -> str:
    """The fixture label a run's series is kept under.

    Runs of the default pair of backends (reference ``numpy``, candidate ``torch``) are
    kept under the fixture's name; any other pair (a third opinion such as reference
    ``upstream-eryx``) under ``"<fixture> [<reference> vs <candidate>]"``, so that series of
    different pairs never mix.
    """
    names = []
    for side, default in (("reference", "numpy"), ("candidate", "torch")):
        info = result.get(side)
        names.append(str(info.get("name")) if isinstance(info, Mapping) and info.get("name") else default)
    if names == ["numpy", "torch"]:
        return str(result["fixture"])
    return f"{result['fixture']} [{names[0]} vs {names[1]}]"


def _run_row(result: Mapping[str, Any], result_json: str, run_uuid: str, report_path: str | None,
             nightly_id: str | None) -> dict[str, Any]:
    environment = dict(result.get("environment") or {})
    git_commit = environment.pop("git_commit", None)
    hostname = environment.pop("hostname", None)
    platform = environment.pop("platform", None)
    return {
        "run_uuid": run_uuid,
        "started_at": _utc_text(parse_timestamp(result["started_at"])),
        "fixture": series_fixture(result),
        "device": result["device"],
        "device_name": result.get("device_name"),
        "dtype": result["dtype"],
        "passed": int(bool(result["passed"])),
        "first_failure": result.get("first_failure"),
        "fault": result.get("fault"),
        "duration_s": _real_or_none(result.get("duration_s")),
        "git_commit": None if git_commit is None else str(git_commit),
        "hostname": None if hostname is None else str(hostname),
        "platform": None if platform is None else str(platform),
        "versions": _dumps(environment),
        "params": _dumps(result.get("params") or {}),
        "grid": _dumps(result.get("grid") or {}),
        "report_path": report_path,
        "result_json": result_json,
        "nightly_id": nightly_id,
        "recorded_at": _utc_text(datetime.now(timezone.utc)),
    }


def _stage_rows(run_id: int, stages: Sequence[Mapping[str, Any]]) -> list[tuple]:
    return [
        (run_id, seq, stage.get("name"), _int_or_none(stage.get("phase")), stage.get("tier"),
         stage.get("status"), _real_or_none(stage.get("max_abs")), _real_or_none(stage.get("max_rel")),
         _int_or_none(stage.get("n_mismatch")), _int_or_none(stage.get("n_total")),
         _real_or_none(stage.get("duration_s")))
        for seq, stage in enumerate(stages)
    ]


def _timing_rows(run_id: int, timings: Mapping[str, Any]) -> list[tuple]:
    return [(run_id, str(phase), _real_or_none(seconds)) for phase, seconds in timings.items()]
