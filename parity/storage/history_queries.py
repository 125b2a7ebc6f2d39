"""The history store's read queries (a mixin of :class:`parity.storage.history.HistoryStore`).

Every method reads; none writes. Rows come back as plain dicts; stored results are
migrated to the current result schema when they are read (:meth:`HistoryQueries.result`).
"""
from __future__ import annotations

import json
import math
import sqlite3
from pathlib import Path
from typing import Any, Mapping, Sequence

from parity.storage.regressions import phase_key
from parity.contract.migrations import migrate
from parity.contract.result_schema import TIMING_CLOCKS
from parity.storage.history_rows import HistoryError

__all__ = ["HistoryQueries"]

# Column lists returned by the queries (result_json is left out of listings: it is
# large; fetch it with HistoryStore.result()).
_RUN_COLUMNS = (
    "id", "run_uuid", "started_at", "fixture", "device", "device_name", "dtype", "passed",
    "first_failure", "fault", "duration_s", "git_commit", "hostname", "platform",
    "versions", "params", "grid", "report_path", "nightly_id", "recorded_at",
)
_JSON_COLUMNS = ("versions", "params", "grid")



class HistoryQueries:
    """The read methods of the history store; the store provides ``path`` and ``_conn``."""

    path: Path
    _conn: sqlite3.Connection

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

    def gradient_series(self, fixture: str, device: str, dtype: str) -> list[dict[str, Any]]:
        """The torch candidate's gradient timings of one series, oldest first.

        Returns
        -------
        list of dict
            One dict per run that has one: ``run_id, started_at`` and ``record`` (the
            ``result["gradient_timing"]`` object written by ``parity nightly``, see
            :func:`parity.benchmarking.gradients.measure_gradients`). Like the timing
            repeats it is read from ``result_json``, so stores written before it existed
            need no migration.
        """
        stamps = {row["id"]: row["started_at"] for row in self._query(
            "SELECT id, started_at FROM runs WHERE fixture = ? AND device = ? AND dtype = ? AND fault IS NULL",
            (fixture, device, dtype))}
        records = self._result_objects(fixture, device, dtype, "gradient_timing")
        return [{"run_id": run_id, "started_at": stamps[run_id], "record": record}
                for run_id, record in sorted(records.items(), key=lambda kv: (stamps[kv[0]], kv[0]))]

    def _timing_blocks(self, fixture: str, device: str, dtype: str) -> dict[int, dict[str, Any]]:
        blocks = self._result_objects(fixture, device, dtype, "timing")
        return {run_id: block for run_id, block in blocks.items()
                if block.get("clock") in TIMING_CLOCKS and isinstance(block.get("samples"), dict)}

    def _result_objects(self, fixture: str, device: str, dtype: str, key: str) -> dict[int, dict[str, Any]]:
        """``{run id: result[key]}`` for the series' fault-free runs where it is an object."""
        where = "WHERE fixture = ? AND device = ? AND dtype = ? AND fault IS NULL"
        params = (fixture, device, dtype)
        try:
            rows = self._conn.execute(
                f"SELECT id, json_extract(result_json, '$.{key}') FROM runs {where}", params).fetchall()
        except sqlite3.OperationalError:  # an SQLite built without JSON functions: parse in Python
            rows = [(row[0], json.dumps(json.loads(row[1]).get(key)))
                    for row in self._conn.execute(f"SELECT id, result_json FROM runs {where}", params)]
        except sqlite3.Error as exc:
            raise HistoryError(f"history store {self.path}: query failed: {exc}") from exc
        objects = {}
        for run_id, text in rows:
            value = json.loads(text) if text else None
            if isinstance(value, dict):
                objects[int(run_id)] = value
        return objects

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
