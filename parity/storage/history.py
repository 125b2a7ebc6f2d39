"""SQLite history of parity runs: the store (SQL only).

One parity run produces one *result* dict (schema in ``docs/architecture.md``).
The nightly job records every result here; the dashboard and the regression
finder (:mod:`parity.storage.regressions`, pure functions over the rows read
here; its names stay importable from this module) read it back. A result is checked
by the one result validator (:func:`parity.contract.result_schema.validate_result`) before
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

import logging
import os
import sqlite3
import time
import uuid
from pathlib import Path
from typing import Any, Mapping

# Re-exported: these names were defined here before the store and the regression logic were split.
from parity.storage.regressions import (Regression, error_grew, find_regressions,  # noqa: F401
                                             judged_timings, timing_verdicts)
from parity.contract.result_schema import (HISTORY_REQUIRED, TIMING_CLOCKS, ResultTypeError,  # noqa: F401
                                           validate_result as _validate_any)
from parity.contract.results import STATUSES  # noqa: F401
from parity.storage.history_queries import HistoryQueries
from parity.storage.history_rows import (SCHEMA_V1, HistoryError, _dumps, _run_row, _stage_rows,  # noqa: F401
                                         _timing_rows, parse_timestamp, series_fixture)
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
    "series_fixture",
    "parse_timestamp",
    "validate_result",
    "STATUSES",
    "TIMING_CLOCKS",
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


def validate_result(result: Any) -> None:
    """Check that ``result`` has what the history needs: the one result validator.

    :func:`parity.contract.result_schema.validate_result` with the keys the history cannot
    leave empty (:data:`parity.contract.result_schema.HISTORY_REQUIRED`: ``schema_version``,
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


def _test_sleep_seconds() -> float:
    raw = os.environ.get(TEST_SLEEP_ENV, "")
    try:
        return max(0.0, float(raw)) if raw else 0.0
    except ValueError:
        return 0.0


# --------------------------------------------------------------------------- the store


class HistoryStore(HistoryQueries):
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
            for statement in SCHEMA_V1.split(";"):
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
