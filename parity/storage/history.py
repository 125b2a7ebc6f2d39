"""SQLite history of parity runs: the store (SQL only).

One parity run produces one *result* dict (schema in ``docs/architecture.md``).
The nightly job records every result here; the dashboard and the regression
finder (:mod:`parity.benchmarking.regressions`, pure functions over the rows read
here; its names stay importable from this module) read it back. A result is checked
by the one result validator (:func:`parity.contract.results.validate_result`) before
it is recorded, and migrated when it is read back (:meth:`HistoryStore.result`).

Storage
-------
One SQLite file (default ``reports/history.sqlite``).  ``PRAGMA user_version``
holds the table layout's version (:data:`STORE_VERSION`; the results in it carry
their own ``schema_version``).  The database runs in WAL
mode with a busy timeout so that several writer processes (e.g. a CPU and a
GPU nightly) can record at the same time: each ``record_run`` takes the write
lock with ``BEGIN IMMEDIATE`` and waits for the other writer instead of
failing.

Tables (normalised; one row per run, per stage of a run, per phase of a run)::

    runs
      id            INTEGER PRIMARY KEY
      run_uuid      TEXT UNIQUE   result["run_uuid"] if present, else a UUID5 of
                                  the result's canonical JSON (so recording the
                                  same result twice is a no-op)
      started_at    TEXT          ISO 8601, normalised to UTC (sortable as text)
      fixture, device, device_name, dtype
      passed        INTEGER 0/1
      first_failure, fault        TEXT or NULL
      duration_s    REAL
      git_commit, hostname, platform   from result["environment"]
      versions      TEXT JSON     the rest of result["environment"] (package versions)
      params, grid  TEXT JSON
      report_path   TEXT          divergence report; relative to the store's
                                  folder when it lies inside it, else absolute
      result_json   TEXT          the whole result, so nothing is lost
      nightly_id    TEXT          groups the runs of one nightly invocation
      recorded_at   TEXT          when the row was written (UTC)
    stages
      run_id -> runs.id, seq (position in the result = registry order),
      name, phase, tier, status, max_abs, max_rel, n_mismatch, n_total, duration_s
      PRIMARY KEY (run_id, name)
    phase_timings
      run_id -> runs.id, phase (TEXT, the key in result["phase_timings"]), seconds
      PRIMARY KEY (run_id, phase)

Timing repeats (``result["timing"]``, written by ``parity nightly``) stay in
``result_json`` and are read back with SQLite's ``json_extract``, so stores
written before repeats existed need no migration (:meth:`HistoryStore.timing_series`).

A *series* is the runs of one ``(fixture, device, dtype)``; runs made with a
fault injection (``result["fault"]`` not null) deliberately break the port, so
they are kept out of the series, the latest-status matrix and regression
detection (they still appear in :meth:`HistoryStore.runs`).

Safety
------
A file that is not a SQLite database, fails ``PRAGMA quick_check``, belongs to
something else, or has a newer schema version raises :class:`HistoryError`
and is never modified: the store is never "repaired" by recreating it, because
that would silently throw away the history.

Test hook
---------
``PARITY_HISTORY_TEST_SLEEP`` (seconds, float): when set, :meth:`HistoryStore.record_run`
sleeps *inside* its transaction, between the run insert and the stage inserts,
after logging a warning ``"test hook: sleeping ..."``.  The test suite uses it to
SIGKILL a writer mid-transaction.  Never set it in production.
"""

from __future__ import annotations

import json
import logging
import math
import os
import sqlite3
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Mapping, Sequence

from parity.benchmarking.regressions import (Regression, error_grew, find_regressions,  # noqa: F401 (re-exported)
                                             judged_timings, phase_key, timing_verdicts)
from parity.contract.results import (HISTORY_REQUIRED, STATUSES, TIMING_CLOCKS,  # noqa: F401 (re-exported)
                                     ResultTypeError, validate_result as _validate_any)
from parity.contract.migrations import migrate
from parity.storage.outputs import json_safe

__all__ = [
    "STORE_VERSION",
    "SCHEMA_VERSION",
    "DEFAULT_PATH",
    "HistoryError",
    "HistoryStore",
    "Regression",
    "find_regressions",
    "timing_verdicts",
    "judged_timings",
    "error_grew",
]

_log = logging.getLogger(__name__)

#: Version of the table layout, stored in ``PRAGMA user_version``.
STORE_VERSION = 1
#: The old name of :data:`STORE_VERSION` (the table layout's version, not a result's), kept for importers.
SCHEMA_VERSION = STORE_VERSION
#: Where the CLI keeps the history unless told otherwise.
DEFAULT_PATH = Path("reports/history.sqlite")

TEST_SLEEP_ENV = "PARITY_HISTORY_TEST_SLEEP"

_SQLITE_MAGIC = b"SQLite format 3\x00"
# Namespace for content-derived run UUIDs (any fixed UUID works; this one is ours).
_RUN_NAMESPACE = uuid.UUID("6f1c7c2e-3b0e-4d55-9a55-2f1d4c6b8e01")

_SCHEMA_V1 = """
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

# Column lists returned by the queries (result_json is left out of listings: it is
# large; fetch it with HistoryStore.result()).
_RUN_COLUMNS = (
    "id", "run_uuid", "started_at", "fixture", "device", "device_name", "dtype", "passed",
    "first_failure", "fault", "duration_s", "git_commit", "hostname", "platform",
    "versions", "params", "grid", "report_path", "nightly_id", "recorded_at",
)
_JSON_COLUMNS = ("versions", "params", "grid")


class HistoryError(Exception):
    """The history store cannot be opened or written, or a result is malformed."""


# --------------------------------------------------------------------------- validation


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


def validate_result(result: Any) -> None:
    """Check that ``result`` has what the history needs: the one result validator.

    :func:`parity.contract.results.validate_result` with the keys the history cannot
    leave empty (:data:`parity.contract.results.HISTORY_REQUIRED`: ``schema_version``,
    ``fixture``, ``device``, ``dtype``, ``passed``, ``started_at`` (ISO 8601),
    ``duration_s``, ``phase_timings``, ``stages``), the same type rules as ``parity report``,
    applied to the result as it will be stored (:func:`parity.storage.outputs.json_safe`).

    Raises
    ------
    HistoryError
        ``"malformed result: <the first problem found>"``.
    """
    try:
        # As it will be stored: NumPy values as Python ones, non-finite numbers as null.
        _validate_any(json_safe(result), required=HISTORY_REQUIRED)
    except ResultTypeError as exc:
        raise HistoryError(f"malformed result: {exc.problem}") from None
    if result.get("started_at") is not None:
        parse_timestamp(result["started_at"])


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


def _test_sleep_seconds() -> float:
    raw = os.environ.get(TEST_SLEEP_ENV, "")
    try:
        return max(0.0, float(raw)) if raw else 0.0
    except ValueError:
        return 0.0


# --------------------------------------------------------------------------- the store


class HistoryStore:
    """The run history, one SQLite file.

    Parameters
    ----------
    path
        The database file; created (with missing parent folders) on first use.
    timeout
        Seconds a writer waits for another writer's lock before giving up.

    Raises
    ------
    HistoryError
        When the path cannot be created or written, the file is not a (healthy)
        SQLite database, belongs to something else, or has a newer schema
        version than :data:`STORE_VERSION`.  The file is left untouched.

    Examples
    --------
    >>> with HistoryStore(Path("reports/history.sqlite")) as store:   # doctest: +SKIP
    ...     run_id = store.record_run(result, report_path="reports/run/index.html")
    """

    def __init__(self, path: Path | str, *, timeout: float = 30.0) -> None:
        self.path = Path(path)
        self._timeout = timeout
        _check_path_writable(self.path)
        _check_sqlite_header(self.path)
        self._conn = self._connect()
        try:
            self._open_schema()
        except BaseException:
            self._conn.close()
            raise

    # -- lifecycle ---------------------------------------------------------------------

    def _connect(self) -> sqlite3.Connection:
        try:
            # isolation_level=None: we issue BEGIN IMMEDIATE / COMMIT ourselves.
            conn = sqlite3.connect(str(self.path), timeout=self._timeout, isolation_level=None)
        except sqlite3.Error as exc:
            raise HistoryError(f"cannot open history store {self.path}: {exc}") from exc
        conn.row_factory = sqlite3.Row
        return conn

    def _open_schema(self) -> None:
        """Check the file (read-only) and create the schema if it is new."""
        try:
            version = self._user_version()
            if version > STORE_VERSION:
                raise HistoryError(
                    f"history store {self.path} has schema version {version}, newer than this "
                    f"tool's version {STORE_VERSION}; upgrade eryx-parity to read it")
            problems = [" ".join(row[0].split()) for row in self._conn.execute("PRAGMA quick_check")]
            if problems != ["ok"]:
                raise HistoryError(
                    f"history store {self.path} is corrupted (PRAGMA quick_check: "
                    f"{'; '.join(problems[:5])}); it was left untouched - restore it from a backup "
                    f"or move it aside")
            if version == 0:
                self._create_schema()
            else:
                self._check_column_types()
            self._configure()
        except sqlite3.OperationalError as exc:  # locked, I/O, permissions: not corruption
            raise HistoryError(f"cannot open history store {self.path}: {exc}") from exc
        except sqlite3.DatabaseError as exc:  # "file is not a database", "malformed"
            raise HistoryError(
                f"history store {self.path} is corrupted or not a SQLite database ({exc}); it was "
                f"left untouched - restore it from a backup or move it aside") from exc

    #: Columns that hold numbers (SQLite stores whatever it is given: its types are affinities).
    _NUMERIC_COLUMNS = {"runs": ("passed", "duration_s"),
                        "stages": ("phase", "max_abs", "max_rel", "n_mismatch", "n_total", "duration_s"),
                        "phase_timings": ("seconds",)}

    def _check_column_types(self) -> None:
        """Refuse a store with text or blobs in a numeric column (written by something else)."""
        for table, columns in self._NUMERIC_COLUMNS.items():
            for column in columns:
                row = self._conn.execute(
                    f"SELECT count(*), min(rowid) FROM {table} "  # noqa: S608 (names from the table above)
                    f"WHERE typeof({column}) NOT IN ('integer', 'real', 'null')").fetchone()
                if row[0]:
                    raise HistoryError(
                        f"history store {self.path}: column {table}.{column} holds non-numbers in {row[0]} "
                        f"row(s) (first at rowid {row[1]}), so it was not written by parity; it was left "
                        "untouched - restore it from a backup or move it aside")

    def _user_version(self) -> int:
        return int(self._conn.execute("PRAGMA user_version").fetchone()[0])

    def _create_schema(self) -> None:
        with self._write_transaction():
            # Re-read under the write lock: another process may have created it meanwhile.
            if self._user_version() != 0:
                return
            tables = [row[0] for row in self._conn.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table'")]
            if tables:
                raise HistoryError(
                    f"{self.path} is a SQLite database of something else (tables: "
                    f"{', '.join(sorted(tables)[:5])}) and not a parity history store")
            for statement in _SCHEMA_V1.split(";"):
                if statement.strip():
                    self._conn.execute(statement)
            self._conn.execute(f"PRAGMA user_version = {STORE_VERSION}")

    def _configure(self) -> None:
        self._conn.execute(f"PRAGMA busy_timeout = {int(self._timeout * 1000)}")
        self._conn.execute("PRAGMA foreign_keys = ON")
        # WAL lets readers (the dashboard) work while a nightly writes, and lets two
        # writers queue on the lock instead of failing.  The mode is persistent.
        mode = self._conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            _log.warning("history store %s: journal_mode is %s, not wal", self.path, mode)
        # FULL: a committed nightly run survives a power cut, not just a crash.
        self._conn.execute("PRAGMA synchronous = FULL")

    def close(self) -> None:
        """Close the connection (idempotent)."""
        if self._conn is not None:
            self._conn.close()
            self._conn = None  # type: ignore[assignment]

    def __enter__(self) -> "HistoryStore":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"HistoryStore({str(self.path)!r})"

    # -- writing -----------------------------------------------------------------------

    def _write_transaction(self) -> "_Transaction":
        return _Transaction(self._conn, self.path)

    def record_run(self, result: Mapping[str, Any], *, report_path: str | os.PathLike | None = None,
                   nightly_id: str | None = None) -> int:
        """Record one parity result (run, stages, phase timings) in one transaction.

        Parameters
        ----------
        result
            A result dict (schema_version 1), as written by ``parity run --json``.
        report_path
            The run's divergence report, if one was written.  Stored relative to
            the store's folder when it lies inside it (so the reports tree can be
            moved as a whole), else absolute.
        nightly_id
            Groups the runs of one nightly invocation.

        Returns
        -------
        int
            The run's id.  Recording the same result again (same ``run_uuid``, or
            the same content when the result has none) writes nothing and returns
            the existing id, so a retried nightly does not duplicate runs.

        Raises
        ------
        HistoryError
            On a malformed result (nothing is written) or a database error (the
            transaction is rolled back: nothing is written).
        """
        validate_result(result)
        result_json = _dumps(result)
        run_uuid = str(result.get("run_uuid") or uuid.uuid5(_RUN_NAMESPACE, result_json))
        row = _run_row(result, result_json, run_uuid, self._store_report_path(report_path), nightly_id)
        with self._write_transaction():
            existing = self._conn.execute(
                "SELECT id FROM runs WHERE run_uuid = ?", (run_uuid,)).fetchone()
            if existing is not None:
                return int(existing[0])
            columns = ", ".join(row)
            marks = ", ".join(f":{key}" for key in row)
            run_id = int(self._conn.execute(
                f"INSERT INTO runs ({columns}) VALUES ({marks})", row).lastrowid)
            sleep_s = _test_sleep_seconds()
            if sleep_s:
                _log.warning("test hook: sleeping %.2f s inside the transaction of run %d", sleep_s, run_id)
                time.sleep(sleep_s)
            self._conn.executemany(
                "INSERT INTO stages (run_id, seq, name, phase, tier, status, max_abs, max_rel, "
                "n_mismatch, n_total, duration_s) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                _stage_rows(run_id, result["stages"]))
            self._conn.executemany(
                "INSERT INTO phase_timings (run_id, phase, seconds) VALUES (?, ?, ?)",
                _timing_rows(run_id, result["phase_timings"]))
        return run_id

    def _store_report_path(self, report_path: str | os.PathLike | None) -> str | None:
        if report_path is None or str(report_path) == "":
            return None
        absolute = Path(report_path).resolve()
        try:
            return absolute.relative_to(self.path.resolve().parent).as_posix()
        except ValueError:
            return str(absolute)

    def resolve_report(self, report_path: str | None) -> Path | None:
        """Turn a stored ``report_path`` back into an absolute path (None stays None)."""
        if not report_path:
            return None
        path = Path(report_path)
        return path if path.is_absolute() else self.path.resolve().parent / path

    # -- reading -----------------------------------------------------------------------

    def _query(self, sql: str, params: Sequence[Any] | Mapping[str, Any] = ()) -> list[dict[str, Any]]:
        try:
            return [dict(row) for row in self._conn.execute(sql, params)]
        except sqlite3.Error as exc:
            raise HistoryError(f"history store {self.path}: query failed: {exc}") from exc

    def count_runs(self) -> int:
        """Number of recorded runs (fault runs included)."""
        return int(self._query("SELECT COUNT(*) AS n FROM runs")[0]["n"])

    def time_range(self) -> tuple[str, str] | None:
        """``(first, last)`` ``started_at`` over all runs, or None when empty."""
        row = self._query("SELECT MIN(started_at) AS lo, MAX(started_at) AS hi FROM runs")[0]
        return None if row["lo"] is None else (row["lo"], row["hi"])

    def runs(self, fixture: str | None = None, device: str | None = None, dtype: str | None = None,
             limit: int | None = None, *, include_faults: bool = True) -> list[dict[str, Any]]:
        """Runs, newest first, optionally filtered.

        Returns
        -------
        list of dict
            One dict per run with the ``runs`` columns except ``result_json``;
            ``versions``/``params``/``grid`` are decoded, ``passed`` is a bool.
        """
        where, params = _series_filter(fixture, device, dtype, include_faults)
        sql = (f"SELECT {', '.join(_RUN_COLUMNS)} FROM runs {where} "
               "ORDER BY started_at DESC, id DESC")
        if limit is not None:
            sql += " LIMIT ?"
            params.append(int(limit))
        return [_decode_run(row) for row in self._query(sql, params)]

    def result(self, run_id: int) -> dict[str, Any]:
        """The whole stored result dict of run ``run_id``, migrated to the current result schema.

        Raises
        ------
        HistoryError
            No such run.
        """
        rows = self._query("SELECT result_json FROM runs WHERE id = ?", (run_id,))
        if not rows:
            raise HistoryError(f"history store {self.path}: no run with id {run_id}")
        # Migrated, not re-validated: the row was validated when it was recorded.
        return dict(migrate(json.loads(rows[0]["result_json"])))

    def stages(self, run_id: int) -> list[dict[str, Any]]:
        """The stage rows of one run, in registry order."""
        return self._query(
            "SELECT name, phase, tier, status, max_abs, max_rel, n_mismatch, n_total, duration_s "
            "FROM stages WHERE run_id = ? ORDER BY seq", (run_id,))

    def series_keys(self) -> list[tuple[str, str, str]]:
        """Every ``(fixture, device, dtype)`` with at least one fault-free run, sorted."""
        rows = self._query("SELECT DISTINCT fixture, device, dtype FROM runs WHERE fault IS NULL "
                           "ORDER BY fixture, device, dtype")
        return [(row["fixture"], row["device"], row["dtype"]) for row in rows]

    def stage_series(self, fixture: str, device: str, dtype: str, stage: str) -> list[dict[str, Any]]:
        """One stage's history in one series, oldest first.

        Returns
        -------
        list of dict
            Keys ``run_id, started_at, status, max_rel, max_abs, duration_s, report_path``.
        """
        return self._query(
            "SELECT r.id AS run_id, r.started_at, s.status, s.max_rel, s.max_abs, s.duration_s, "
            "r.report_path FROM stages s JOIN runs r ON r.id = s.run_id "
            "WHERE r.fixture = ? AND r.device = ? AND r.dtype = ? AND s.name = ? AND r.fault IS NULL "
            "ORDER BY r.started_at, r.id", (fixture, device, dtype, stage))

    def stage_error_series(self, fixture: str, device: str, dtype: str) -> dict[str, list[dict[str, Any]]]:
        """Every stage's history in one series (one query), oldest first, keyed by stage name."""
        rows = self._query(
            "SELECT s.name, r.id AS run_id, r.started_at, s.status, s.max_rel, s.max_abs, "
            "s.duration_s, r.report_path FROM stages s JOIN runs r ON r.id = s.run_id "
            "WHERE r.fixture = ? AND r.device = ? AND r.dtype = ? AND r.fault IS NULL "
            "ORDER BY r.started_at, r.id, s.seq", (fixture, device, dtype))
        series: dict[str, list[dict[str, Any]]] = {}
        for row in rows:
            series.setdefault(row.pop("name"), []).append(row)
        return series

    def phase_time_series(self, fixture: str, device: str, dtype: str,
                          phase: str | None = None) -> list[dict[str, Any]]:
        """Phase timings of one series, oldest first.

        Parameters
        ----------
        phase
            Only this phase (key as in ``result["phase_timings"]``, e.g. ``"2"``);
            all phases when None.

        Returns
        -------
        list of dict
            One dict per run: ``run_id, started_at, duration_s`` (total) and
            ``phases`` (``{phase: seconds}``).
        """
        runs = self._query(
            "SELECT id AS run_id, started_at, duration_s FROM runs "
            "WHERE fixture = ? AND device = ? AND dtype = ? AND fault IS NULL "
            "ORDER BY started_at, id", (fixture, device, dtype))
        timings = self._query(
            "SELECT t.run_id, t.phase, t.seconds FROM phase_timings t JOIN runs r ON r.id = t.run_id "
            "WHERE r.fixture = ? AND r.device = ? AND r.dtype = ? AND r.fault IS NULL",
            (fixture, device, dtype))
        by_run: dict[int, dict[str, float | None]] = {}
        for row in timings:
            if phase is None or row["phase"] == str(phase):
                by_run.setdefault(row["run_id"], {})[row["phase"]] = row["seconds"]
        for run in runs:
            run["phases"] = dict(sorted(by_run.get(run["run_id"], {}).items(), key=lambda kv: phase_key(kv[0])))
        return runs

    def timing_series(self, fixture: str, device: str, dtype: str) -> list[dict[str, Any]]:
        """Timing samples of one series, oldest first, for slowdown detection and plots.

        Returns
        -------
        list of dict
            One dict per run: ``run_id, started_at, clock`` and ``samples``
            (``{target: [seconds, ...]}``, targets ``"1"``..``"4"`` and ``"total"``).
            Runs with a ``timing`` block (``parity nightly``) give its repeats and
            clock; others give their own wall-clock ``phase_timings`` and
            ``duration_s`` as one sample each (clock ``"wall"``).
        """
        runs = self.phase_time_series(fixture, device, dtype)
        blocks = self._timing_blocks(fixture, device, dtype)
        series = []
        for run in runs:
            block = blocks.get(run["run_id"])
            if block is not None:
                samples = {str(k): [float(v) for v in values] for k, values in block["samples"].items()}
                clock = block["clock"]
            else:
                samples = {phase: [seconds] for phase, seconds in run["phases"].items() if seconds is not None}
                if run["duration_s"] is not None:
                    samples["total"] = [run["duration_s"]]
                clock = "wall"
            series.append({"run_id": run["run_id"], "started_at": run["started_at"], "clock": clock,
                           "samples": samples})
        return series

    def _timing_blocks(self, fixture: str, device: str, dtype: str) -> dict[int, dict[str, Any]]:
        where = "WHERE fixture = ? AND device = ? AND dtype = ? AND fault IS NULL"
        params = (fixture, device, dtype)
        try:
            rows = self._conn.execute(
                f"SELECT id, json_extract(result_json, '$.timing') FROM runs {where}", params).fetchall()
        except sqlite3.OperationalError:  # an SQLite built without JSON functions: parse in Python
            rows = [(row[0], json.dumps(json.loads(row[1]).get("timing")))
                    for row in self._conn.execute(f"SELECT id, result_json FROM runs {where}", params)]
        except sqlite3.Error as exc:
            raise HistoryError(f"history store {self.path}: query failed: {exc}") from exc
        blocks = {}
        for run_id, text in rows:
            block = json.loads(text) if text else None
            if isinstance(block, dict) and block.get("clock") in TIMING_CLOCKS and isinstance(block.get("samples"), dict):
                blocks[int(run_id)] = block
        return blocks

    def stage_order(self) -> list[tuple[str, int | None]]:
        """Stage names with their phase, in phase order then order of first appearance.

        First appearance is over all stored results, oldest run first, stages in
        result (= registry) order, so a stage added to the registry later still
        lands inside its phase.
        """
        rows = self._query(
            "SELECT s.name, s.phase FROM stages s JOIN runs r ON r.id = s.run_id "
            "ORDER BY r.started_at, r.id, s.seq")
        first: dict[str, tuple[int, int | None]] = {}
        for index, row in enumerate(rows):
            first.setdefault(row["name"], (index, row["phase"]))
        ordered = sorted(first.items(), key=lambda kv: (_phase_sort(kv[1][1]), kv[1][0]))
        return [(name, phase) for name, (_, phase) in ordered]

    def latest_matrix(self) -> list[dict[str, Any]]:
        """Latest status of every ``(fixture, device, dtype, stage)`` (fault runs excluded).

        Returns
        -------
        list of dict
            Keys ``fixture, device, dtype, stage, phase, status, max_rel, max_abs,
            run_id, started_at, report_path``, sorted by series then stage name.
        """
        return self._query(
            "SELECT fixture, device, dtype, stage, phase, status, max_rel, max_abs, run_id, "
            "started_at, report_path FROM ("
            "  SELECT r.fixture, r.device, r.dtype, s.name AS stage, s.phase, s.status, s.max_rel, "
            "  s.max_abs, r.id AS run_id, r.started_at, r.report_path, ROW_NUMBER() OVER ("
            "    PARTITION BY r.fixture, r.device, r.dtype, s.name "
            "    ORDER BY r.started_at DESC, r.id DESC) AS recency "
            "  FROM stages s JOIN runs r ON r.id = s.run_id WHERE r.fault IS NULL"
            ") WHERE recency = 1 ORDER BY fixture, device, dtype, stage")

    def integrity_check(self) -> list[str]:
        """``PRAGMA integrity_check`` messages (``["ok"]`` when healthy)."""
        return [row[0] for row in self._conn.execute("PRAGMA integrity_check")]


class _Transaction:
    """``BEGIN IMMEDIATE`` ... ``COMMIT``; ``ROLLBACK`` on any error.

    IMMEDIATE takes the write lock up front, so two writers queue on the busy
    timeout instead of one failing with SQLITE_BUSY when it upgrades a read lock.
    """

    def __init__(self, conn: sqlite3.Connection, path: Path) -> None:
        self._conn = conn
        self._path = path

    def __enter__(self) -> sqlite3.Connection:
        try:
            self._conn.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            raise HistoryError(f"history store {self._path}: cannot start a write: {exc}") from exc
        return self._conn

    def __exit__(self, exc_type: type | None, exc: BaseException | None, tb: object) -> bool:
        if exc_type is None:
            try:
                self._conn.execute("COMMIT")
                return False
            except sqlite3.Error as commit_exc:
                self._rollback()
                raise HistoryError(f"history store {self._path}: commit failed: {commit_exc}") from commit_exc
        self._rollback()
        if isinstance(exc, sqlite3.Error):
            raise HistoryError(f"history store {self._path}: write failed, rolled back: {exc}") from exc
        return False

    def _rollback(self) -> None:
        if self._conn.in_transaction:
            self._conn.execute("ROLLBACK")


# --------------------------------------------------------------------------- path checks


def _check_path_writable(path: Path) -> None:
    """Create missing parent folders; fail clearly when the store cannot be written."""
    if path.exists() and not path.is_file():
        raise HistoryError(f"history store path {path} exists and is not a file")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise HistoryError(f"history store path {path} is not writable: cannot create "
                           f"{path.parent} ({exc.strerror or exc})") from exc
    # WAL needs to create -wal/-shm files next to the database, so the folder
    # must be writable even when the file already exists.
    if not os.access(path.parent, os.W_OK | os.X_OK):
        raise HistoryError(f"history store path {path} is not writable: folder {path.parent} is read-only")
    if path.exists() and not os.access(path, os.R_OK | os.W_OK):
        raise HistoryError(f"history store path {path} is not writable (file permissions)")


def _check_sqlite_header(path: Path) -> None:
    """Reject a non-empty file without the SQLite magic before SQLite touches it."""
    if not path.exists() or path.stat().st_size == 0:
        return  # new or empty file: SQLite treats it as an empty database
    with path.open("rb") as handle:
        header = handle.read(len(_SQLITE_MAGIC))
    if header != _SQLITE_MAGIC:
        raise HistoryError(
            f"history store {path} is not a SQLite database (bad header); it was left untouched - "
            f"move it aside or point --history elsewhere")


# --------------------------------------------------------------------------- query helpers


def _series_filter(fixture: str | None, device: str | None, dtype: str | None,
                   include_faults: bool) -> tuple[str, list[Any]]:
    clauses: list[str] = []
    params: list[Any] = []
    for column, value in (("fixture", fixture), ("device", device), ("dtype", dtype)):
        if value is not None:
            clauses.append(f"{column} = ?")
            params.append(value)
    if not include_faults:
        clauses.append("fault IS NULL")
    return ("WHERE " + " AND ".join(clauses) if clauses else ""), params


def _decode_run(row: dict[str, Any]) -> dict[str, Any]:
    for column in _JSON_COLUMNS:
        row[column] = json.loads(row[column]) if row[column] else {}
    row["passed"] = bool(row["passed"])
    return row


def _phase_sort(phase: int | None) -> float:
    return math.inf if phase is None else float(phase)
