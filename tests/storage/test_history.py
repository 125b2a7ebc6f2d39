"""Tests of parity.storage.history: the SQLite run history and regression detection."""

from __future__ import annotations

import copy
import json
import math
import os
import random
import signal
import sqlite3
import statistics
import subprocess
import sys
import threading
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Iterator

import pytest

from parity.storage import history
from parity.storage.history import (HistoryError, HistoryStore, error_grew, find_regressions, judged_timings,
                            timing_verdicts)
from parity.storage.regressions import SlowdownRule, judge_slowdown

REPO_ROOT = Path(__file__).resolve().parents[2]

# --------------------------------------------------------------------------- synthetic results

#: (name, phase) in registry order; small but spans all four phases.
STAGES = [("kvec", 1), ("hkl_grid", 1), ("amat", 2), ("structure_factors", 2),
          ("hessian", 3), ("eigen", 3), ("covariance", 3), ("intensity", 4)]
PHASE_SECONDS = {"1": 0.1, "2": 0.3, "3": 0.5, "4": 1.2}
T0 = datetime(2026, 11, 1, 7, 30, tzinfo=timezone.utc)


def make_result(*, night: int = 0, fixture: str = "5zck_p1", device: str = "cpu",
                dtype: str = "float64", max_rel: float = 1e-14,
                stages: dict[str, dict[str, Any]] | None = None,
                phase_seconds: dict[str, float] | None = None, fault: str | None = None,
                commit: str = "0123456789abcdef") -> dict[str, Any]:
    """A schema_version-1 result dict; ``night`` days after T0.

    ``stages`` overrides fields per stage name, e.g. ``{"eigen": {"status": "fail"}}``;
    ``passed``/``first_failure`` follow from the statuses; ``duration_s`` is the
    sum of the phase times.
    """
    overrides = stages or {}
    rows = []
    for name, phase in STAGES:
        row = {"name": name, "phase": phase, "tier": "tight", "kind": "array", "status": "pass",
               "rtol": 1e-12, "atol": 1e-14, "max_abs": max_rel / 10, "max_rel": max_rel,
               "n_mismatch": 0, "n_total": 24, "worst": None, "message": f"{name} ok",
               "duration_s": 0.01, "details": {}}
        row.update(overrides.get(name, {}))
        row["passed"] = row["status"] == "pass"
        rows.append(row)
    timings = dict(phase_seconds or PHASE_SECONDS)
    failures = [row["name"] for row in rows if row["status"] != "pass"]
    return {
        "schema_version": 1, "fixture": fixture, "pdb_path": f"/fixtures/{fixture}.pdb",
        "grid": {"hsampling": [-2, 2, 2], "ksampling": [-2, 2, 2], "lsampling": [-2, 2, 2]},
        "params": {"gnm_cutoff": 4.0, "gamma_intra": 1.0, "gamma_inter": 1.0, "res_limit": 0.0,
                   "expand_p1": True},
        "device": device, "device_name": "CPU (x86_64)" if device == "cpu" else "NVIDIA H100",
        "dtype": dtype, "passed": not failures, "first_failure": failures[0] if failures else None,
        "fault": fault, "started_at": (T0 + timedelta(days=night)).isoformat(),
        "duration_s": round(sum(timings.values()), 6),
        "environment": {"python": "3.11.7", "numpy": "2.4.6", "torch": "2.5.0",
                        "git_commit": commit, "hostname": "ci-1", "platform": "Linux"},
        "phase_timings": timings, "stages": rows,
    }


@pytest.fixture
def store(tmp_path: Path) -> Iterator[HistoryStore]:
    with HistoryStore(tmp_path / "reports" / "history.sqlite") as opened:
        yield opened


def _table_counts(path: Path) -> dict[str, int]:
    conn = sqlite3.connect(path)
    try:
        return {table: conn.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]
                for table in ("runs", "stages", "phase_timings")}
    finally:
        conn.close()


def _python_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    env.pop(history.TEST_SLEEP_ENV, None)
    return env


# --------------------------------------------------------------------------- record / query


def test_round_trip_and_queries(store: HistoryStore) -> None:
    results = [make_result(night=n, max_rel=10.0 ** (-15 + n)) for n in range(3)]
    ids = [store.record_run(r, report_path=store.path.parent / f"run-{n}" / "index.html",
                            nightly_id=f"nightly-{n}") for n, r in enumerate(results)]

    runs = store.runs()
    assert [run["id"] for run in runs] == ids[::-1]  # newest first
    newest = runs[0]
    assert newest["fixture"] == "5zck_p1" and newest["device"] == "cpu" and newest["dtype"] == "float64"
    assert newest["passed"] is True and newest["git_commit"] == "0123456789abcdef"
    assert newest["versions"] == {"python": "3.11.7", "numpy": "2.4.6", "torch": "2.5.0"}
    assert newest["params"]["gnm_cutoff"] == 4.0 and newest["grid"]["hsampling"] == [-2, 2, 2]
    assert newest["nightly_id"] == "nightly-2"
    assert newest["report_path"] == "run-2/index.html"  # relative to the store's folder
    assert store.resolve_report(newest["report_path"]) == store.path.resolve().parent / "run-2/index.html"
    assert store.runs(limit=1) == runs[:1]
    assert store.runs(fixture="other") == []

    assert store.result(ids[1]) == results[1]  # the whole result survives

    series = store.stage_series("5zck_p1", "cpu", "float64", "eigen")
    assert [row["run_id"] for row in series] == ids
    assert [row["max_rel"] for row in series] == pytest.approx([1e-15, 1e-14, 1e-13])
    assert {"started_at", "status", "max_abs", "duration_s", "report_path"} <= set(series[0])

    timings = store.phase_time_series("5zck_p1", "cpu", "float64")
    assert timings[-1]["phases"] == PHASE_SECONDS and timings[-1]["duration_s"] == pytest.approx(2.1)
    assert store.phase_time_series("5zck_p1", "cpu", "float64", phase="3")[0]["phases"] == {"3": 0.5}

    matrix = store.latest_matrix()
    assert len(matrix) == len(STAGES) and {row["run_id"] for row in matrix} == {ids[-1]}
    assert [name for name, _ in store.stage_order()] == [name for name, _ in STAGES]
    assert store.count_runs() == 3 and store.integrity_check() == ["ok"]


def test_started_at_is_normalised_to_utc_for_ordering(store: HistoryStore) -> None:
    early = make_result(night=0)
    early["started_at"] = "2026-11-01T09:00:00+02:00"  # 07:00 UTC
    late = make_result(night=0)
    late["started_at"] = "2026-11-01T07:30:00+00:00"
    late_id = store.record_run(late)
    store.record_run(early)
    assert store.runs()[0]["id"] == late_id


def test_recording_the_same_result_twice_is_a_no_op(store: HistoryStore) -> None:
    result = make_result()
    assert store.record_run(result) == store.record_run(copy.deepcopy(result))
    assert store.count_runs() == 1


def test_schema_version_and_wal(store: HistoryStore) -> None:
    conn = sqlite3.connect(store.path)
    try:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == history.SCHEMA_VERSION
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    finally:
        conn.close()


def test_non_finite_and_numpy_values_are_stored_as_null(store: HistoryStore) -> None:
    np = pytest.importorskip("numpy")
    result = make_result(stages={"eigen": {"status": "fail", "max_rel": float("nan"),
                                           "max_abs": np.float64(np.inf), "n_total": np.int64(24)}})
    run_id = store.record_run(result)
    eigen = next(row for row in store.stages(run_id) if row["name"] == "eigen")
    assert eigen["max_rel"] is None and eigen["max_abs"] is None and eigen["n_total"] == 24
    assert store.result(run_id)["stages"][5]["max_rel"] is None


def _drop(key: str):
    return lambda r: r.pop(key)


@pytest.mark.parametrize("corrupt", [
    _drop("fixture"),
    _drop("stages"),
    lambda r: r.update(schema_version=2),
    lambda r: r.update(passed="yes"),
    lambda r: r.update(started_at="last tuesday"),
    lambda r: r["stages"][3].pop("name"),
    lambda r: r["stages"][3].update(status="maybe"),
    lambda r: r["stages"][3].update(max_rel="small"),
    lambda r: r["stages"].append(dict(r["stages"][0])),  # duplicate name
    lambda r: r.update(phase_timings=[1, 2]),
    lambda r: r.update(timing={"clock": "sundial", "samples": {"1": [0.1]}}),
    lambda r: r.update(timing={"clock": "cpu", "samples": {"1": ["fast"]}}),
    lambda r: r.update(timing={"clock": "cpu", "samples": [0.1, 0.2]}),
], ids=["no-fixture", "no-stages", "schema-2", "passed-str", "bad-date", "stage-no-name",
        "bad-status", "bad-max-rel", "duplicate-stage", "timings-list", "timing-clock", "timing-sample",
        "timing-samples-list"])
def test_malformed_result_is_rejected_and_nothing_written(store: HistoryStore, corrupt) -> None:
    result = make_result()
    corrupt(result)
    with pytest.raises(HistoryError, match="malformed result"):
        store.record_run(result)
    assert _table_counts(store.path) == {"runs": 0, "stages": 0, "phase_timings": 0}


def test_failure_inside_the_transaction_leaves_no_run(store: HistoryStore,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    store.record_run(make_result(night=0))
    # Get a bad stage row past validation so the failure happens mid-transaction,
    # after the run row was inserted (NOT NULL on stages.name).
    monkeypatch.setattr(history, "validate_result", lambda result: None)
    bad = make_result(night=1)
    del bad["stages"][4]["name"]
    with pytest.raises(HistoryError, match="rolled back"):
        store.record_run(bad)
    assert _table_counts(store.path) == {"runs": 1, "stages": len(STAGES), "phase_timings": 4}
    store.record_run(make_result(night=2))  # the connection is still usable
    assert store.count_runs() == 2


# --------------------------------------------------------------------------- real processes

_WRITER_SCRIPT = r"""
import json, logging, os, sys, time
from pathlib import Path
from parity.storage.history import HistoryStore

logging.basicConfig(stream=sys.stdout, level=logging.WARNING, format="%(message)s")
db, results_file, go_file = sys.argv[1], sys.argv[2], sys.argv[3]
n_fast, slow_s = int(sys.argv[4]), sys.argv[5]  # runs after the first n_fast hold the lock slow_s
results = json.loads(Path(results_file).read_text())
print("ready", flush=True)
while go_file != "-" and not os.path.exists(go_file):  # start barrier for concurrent writers
    time.sleep(0.005)
with HistoryStore(Path(db)) as store:
    for index, result in enumerate(results):
        if index == n_fast:
            os.environ["PARITY_HISTORY_TEST_SLEEP"] = slow_s
        print(f"committed {store.record_run(result)}", flush=True)
        time.sleep(0.002)  # let the other writer in between our transactions
"""


def _start_writer(tmp_path: Path, db: Path, results: list[dict], tag: str, *, n_fast: int,
                  slow_s: float, go_file: str = "-") -> subprocess.Popen:
    """A writer process recording ``results``; from run ``n_fast`` on, each
    transaction sleeps ``slow_s`` (test hook) between its run and stage inserts."""
    script = tmp_path / "writer.py"
    script.write_text(_WRITER_SCRIPT)
    results_file = tmp_path / f"results-{tag}.json"
    results_file.write_text(json.dumps(results))
    return subprocess.Popen([sys.executable, str(script), str(db), str(results_file), go_file, str(n_fast),
                             str(slow_s)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_python_env())


def test_sigkill_mid_transaction_leaves_a_consistent_store(tmp_path: Path) -> None:
    db = tmp_path / "history.sqlite"
    results = [make_result(night=n) for n in range(6)]
    proc = _start_writer(tmp_path, db, results, "kill", n_fast=4, slow_s=60.0)
    watchdog = threading.Timer(30.0, proc.kill)  # never hang the suite
    watchdog.start()
    committed: list[int] = []
    try:
        for line in proc.stdout:
            if line.startswith("committed "):
                committed.append(int(line.split()[1]))
            if line.startswith("test hook: sleeping"):
                # Run 5's row is inserted, its stages are not: kill now, mid-transaction.
                os.kill(proc.pid, signal.SIGKILL)
                break
        proc.wait(timeout=10)
    finally:
        watchdog.cancel()
        proc.stdout.close()
        proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL, "the writer must die by SIGKILL mid-transaction"
    assert len(committed) == 4

    with HistoryStore(db) as store:
        assert store.integrity_check() == ["ok"]
        assert sorted(run["id"] for run in store.runs()) == sorted(committed)
    conn = sqlite3.connect(db)
    try:
        orphans = conn.execute("SELECT COUNT(*) FROM runs r WHERE NOT EXISTS "
                               "(SELECT 1 FROM stages s WHERE s.run_id = r.id)").fetchone()[0]
        per_run = {row[0] for row in conn.execute("SELECT COUNT(*) FROM stages GROUP BY run_id")}
    finally:
        conn.close()
    assert orphans == 0 and per_run == {len(STAGES)}


def test_two_concurrent_writer_processes(tmp_path: Path) -> None:
    db = tmp_path / "fresh" / "history.sqlite"  # both processes also race to create it
    go_file = tmp_path / "go"
    batches = {tag: [make_result(night=n, device=device) for n in range(20)]
               for tag, device in (("a", "cpu"), ("b", "cuda"))}
    # Every transaction holds the write lock for 10 ms, so the writers must queue on it.
    procs = [_start_writer(tmp_path, db, results, tag, n_fast=0, slow_s=0.01, go_file=str(go_file))
             for tag, results in batches.items()]
    for proc in procs:
        assert proc.stdout.readline().strip() == "ready"
    go_file.touch()
    outputs = [proc.communicate(timeout=60) for proc in procs]
    for proc, (_, stderr) in zip(procs, outputs):
        assert proc.returncode == 0, stderr
    with HistoryStore(db) as store:
        assert store.count_runs() == 40
        assert len(store.runs(device="cpu")) == 20 and len(store.runs(device="cuda")) == 20
        assert store.integrity_check() == ["ok"]
    assert _table_counts(db) == {"runs": 40, "stages": 40 * len(STAGES), "phase_timings": 160}


# --------------------------------------------------------------------------- refusing bad files


def test_newer_schema_version_is_refused_untouched(tmp_path: Path) -> None:
    db = tmp_path / "history.sqlite"
    with HistoryStore(db) as store:
        store.record_run(make_result())
    conn = sqlite3.connect(db)
    conn.execute("PRAGMA user_version = 7")
    conn.close()
    before = db.read_bytes()
    with pytest.raises(HistoryError, match=r"schema version 7.*version 1"):
        HistoryStore(db)
    assert db.read_bytes() == before


def test_garbage_file_is_refused_untouched(tmp_path: Path) -> None:
    db = tmp_path / "history.sqlite"
    garbage = bytes(random.Random(0).randrange(256) for _ in range(8192))
    db.write_bytes(garbage)
    with pytest.raises(HistoryError, match="not a SQLite database"):
        HistoryStore(db)
    assert db.read_bytes() == garbage


def test_corrupted_pages_are_refused_untouched(tmp_path: Path) -> None:
    db = tmp_path / "history.sqlite"
    with HistoryStore(db) as store:
        for night in range(10):
            store.record_run(make_result(night=night))
    data = bytearray(db.read_bytes())
    page_size = int.from_bytes(data[16:18], "big")
    assert len(data) > 4 * page_size
    noise = random.Random(1)
    for offset in range(page_size, len(data)):  # keep page 1 (header + schema), scramble the rest
        data[offset] = noise.randrange(256)
    db.write_bytes(bytes(data))
    with pytest.raises(HistoryError, match="corrupted"):
        HistoryStore(db)
    assert db.read_bytes() == bytes(data)


def test_damaged_btree_pages_fail_quick_check_untouched(tmp_path: Path) -> None:
    """Small damage that SQLite can still parse is caught by PRAGMA quick_check."""
    db = tmp_path / "history.sqlite"
    with HistoryStore(db) as store:
        for night in range(10):
            store.record_run(make_result(night=night))
    pristine = db.read_bytes()
    page_size = int.from_bytes(pristine[16:18], "big")
    messages = []
    for page in range(1, len(pristine) // page_size):
        data = bytearray(pristine)
        at = page * page_size + 8  # inside the b-tree page header
        data[at:at + 4] = b"\xff\xfe\x00\x07"
        db.write_bytes(bytes(data))
        with pytest.raises(HistoryError, match="corrupted") as caught:
            HistoryStore(db)
        assert db.read_bytes() == bytes(data)
        messages.append(str(caught.value))
    assert any("quick_check" in message for message in messages)


def test_foreign_database_is_refused_untouched(tmp_path: Path) -> None:
    db = tmp_path / "other.sqlite"
    conn = sqlite3.connect(db)
    conn.execute("CREATE TABLE customers (id INTEGER)")
    conn.commit()
    conn.close()
    before = db.read_bytes()
    with pytest.raises(HistoryError, match="not a parity history store"):
        HistoryStore(db)
    assert db.read_bytes() == before


def test_path_under_a_file_is_unwritable(tmp_path: Path) -> None:
    blocker = tmp_path / "some_file"
    blocker.write_text("not a folder")
    path = blocker / "history.sqlite"
    with pytest.raises(HistoryError, match="some_file"):
        HistoryStore(path)


def test_folder_without_write_permission_is_reported(tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    # Root ignores permission bits, so simulate what access(2) says to a normal user.
    folder = tmp_path / "locked"
    folder.mkdir()
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda path, mode: False if Path(path) == folder
                        else real_access(path, mode))
    with pytest.raises(HistoryError, match=r"locked is read-only"):
        HistoryStore(folder / "history.sqlite")
    assert list(folder.iterdir()) == []


def test_read_only_directory_is_unwritable(tmp_path: Path) -> None:
    if os.geteuid() == 0:
        pytest.skip("root ignores directory permissions (covered by the path-under-a-file test)")
    folder = tmp_path / "locked"
    folder.mkdir()
    folder.chmod(0o500)
    try:
        with pytest.raises(HistoryError, match="locked"):
            HistoryStore(folder / "history.sqlite")
    finally:
        folder.chmod(0o700)


# --------------------------------------------------------------------------- regressions


def _seed(store: HistoryStore, nights: int, **kwargs: Any) -> None:
    for night in range(nights):
        store.record_run(make_result(night=night, **kwargs))


def test_degraded_stage_and_status_flip_are_flagged(store: HistoryStore) -> None:
    _seed(store, 5)
    latest_id = store.record_run(
        make_result(night=5, stages={"eigen": {"max_rel": 1e-9, "max_abs": 1e-10},
                                     "covariance": {"status": "fail"}}),
        report_path=store.path.parent / "latest" / "index.html")
    found = {(r.kind, r.target): r for r in find_regressions(store)}
    assert set(found) == {("error_growth", "eigen"), ("status_flip", "covariance")}
    growth = found[("error_growth", "eigen")]
    assert growth.previous == pytest.approx(1e-14) and growth.current == pytest.approx(1e-9)
    assert growth.run_id == latest_id and growth.report_path == "latest/index.html"
    assert (growth.fixture, growth.device, growth.dtype) == ("5zck_p1", "cpu", "float64")
    flip = found[("status_flip", "covariance")]
    assert (flip.previous, flip.current) == ("pass", "fail") and "covariance" in flip.message


def test_identical_rerun_is_not_flagged(store: HistoryStore) -> None:
    _seed(store, 6)
    assert find_regressions(store) == []


def test_error_floor_ignores_rounding_level_changes(store: HistoryStore) -> None:
    assert not error_grew(0.0, 1e-15, floor=1e-16)
    assert error_grew(1e-15, 1e-12, floor=1e-16)
    assert not error_grew(None, 1e-3)
    _seed(store, 3, max_rel=0.0)
    store.record_run(make_result(night=3, max_rel=1e-15))
    assert find_regressions(store) == []
    # float32 series: the floor is float32 epsilon.
    _seed(store, 3, dtype="float32", max_rel=1e-8)
    store.record_run(make_result(night=3, dtype="float32", max_rel=5e-7))
    assert find_regressions(store) == []
    store.record_run(make_result(night=4, dtype="float32", max_rel=1e-5))
    assert {(r.dtype, r.kind) for r in find_regressions(store)} == {("float32", "error_growth")}


def _noisy(rng: random.Random, scale: float = 1.0, phase: str | None = None) -> dict[str, float]:
    """Phase times with +-10 % noise; ``phase`` (if given) is ``scale`` times slower."""
    return {p: s * rng.uniform(0.9, 1.1) * (scale if p == phase else 1.0) for p, s in PHASE_SECONDS.items()}


def test_sustained_threefold_slowdown_is_flagged_on_wall_timings(store: HistoryStore) -> None:
    """Results without timing repeats are judged on their own wall-clock phase times (one
    sample a run: the significance test needs 7 earlier runs)."""
    rng = random.Random(3)
    for night in range(7):
        store.record_run(make_result(night=night, phase_seconds=_noisy(rng)))
    for night in (7, 8):
        store.record_run(make_result(night=night, phase_seconds=_noisy(rng, 3.0, phase="3")))
        assert find_regressions(store) == [], "one or two slow nights are not a regression (confirm = 3)"
    store.record_run(make_result(night=9, phase_seconds=_noisy(rng, 3.0, phase="3")))
    found = find_regressions(store)
    assert [(r.kind, r.target) for r in found] == [("slowdown", "phase 3")]
    assert found[0].current / found[0].previous == pytest.approx(3.0, rel=0.25)
    assert "p = " in found[0].message


@pytest.mark.parametrize("seed", range(5))
def test_ordinary_timing_noise_is_not_flagged(store: HistoryStore, seed: int) -> None:
    rng = random.Random(seed)
    for night in range(8):
        store.record_run(make_result(night=night, phase_seconds=_noisy(rng)))
    assert find_regressions(store) == []


def test_no_slowdown_verdict_without_enough_earlier_runs(store: HistoryStore) -> None:
    store.record_run(make_result(night=0))
    for night in (1, 2, 3):
        store.record_run(make_result(night=night, phase_seconds={p: 10 * s for p, s in PHASE_SECONDS.items()}))
    assert find_regressions(store) == []
    verdicts = timing_verdicts(store, "5zck_p1", "cpu", "float64")
    assert {v.status for v in verdicts.values()} == {"insufficient_history"}


def _timed(result: dict[str, Any], clock: str, samples: dict[str, list[float]]) -> dict[str, Any]:
    result["timing"] = {"clock": clock, "repeats": len(next(iter(samples.values()))), "warmup": 1,
                        "threads": 1, "statistic": "min", "samples": samples}
    return result


def test_timing_repeats_are_judged_and_clocks_are_not_mixed(store: HistoryStore) -> None:
    """Runs with repeats are judged on them; wall-only runs before them are ignored."""
    for night in range(4):  # old wall-clock runs, 10x slower than the CPU timings below
        store.record_run(make_result(night=night, phase_seconds={p: 10 * s for p, s in PHASE_SECONDS.items()}))
    for night in range(4, 7):
        store.record_run(_timed(make_result(night=night), "cpu", {"4": [1.0, 1.05, 1.1], "total": [2.0, 2.1, 2.2]}))
    assert find_regressions(store) == []
    series = store.timing_series("5zck_p1", "cpu", "float64")
    assert [run["clock"] for run in series] == ["wall"] * 4 + ["cpu"] * 3
    judged = judged_timings(store, "5zck_p1", "cpu", "float64")
    assert (judged["clock"], judged["dropped"], len(judged["runs"])) == ("cpu", 4, 3)
    assert series[0]["samples"]["3"] == [5.0] and series[-1]["samples"]["4"] == [1.0, 1.05, 1.1]
    for night in (7, 8, 9):
        store.record_run(_timed(make_result(night=night), "cpu", {"4": [2.0, 2.1, 2.3], "total": [2.9, 3.1, 3.3]}))
    found = find_regressions(store)
    assert [(r.kind, r.target) for r in found] == [("slowdown", "phase 4")]  # total: +45 % < 50 %
    assert (found[0].previous, found[0].current) == (pytest.approx(1.0), pytest.approx(2.0))


# ------------------------------------------------------------- the statistics, on series
#
# The noise of this project's 2-core machine (a KVM guest with 2 vCPUs shared by several
# engineers' jobs), as ``parity nightly`` sees it: two sessions of 8 nightlies in a row of
# unchanged code, matrix synthetic + 5zck_p1 x float64 + float32, every run timed by the
# worker (single-threaded CPU time, 3 repeats after a warm-up, garbage collector paused).
# Phase 4 CPU seconds, per night the 3 repeats.  Session "heavy": load average 6-9 (the
# machine 3-4x oversubscribed); session "moderate": load average 3-5.
MEASURED: dict[str, list[list[float]]] = {
    "heavy 5zck_p1/cpu/float32": [[0.6821, 0.6689, 0.7436], [0.7312, 0.8393, 0.6627], [0.8061, 0.7857, 0.8027],
                                  [0.5201, 0.5529, 0.5255], [0.4586, 0.5202, 0.4824], [0.5894, 0.5521, 0.5154],
                                  [0.496, 0.6442, 0.5285], [0.5246, 0.5143, 0.5072]],
    "heavy 5zck_p1/cpu/float64": [[0.6246, 0.5453, 0.5026], [0.5607, 0.8821, 0.6193], [0.8133, 0.668, 0.737],
                                  [0.7116, 0.9021, 0.7019], [0.5099, 0.4513, 0.5021], [0.6379, 0.6004, 0.5397],
                                  [0.6437, 0.8304, 0.4659], [0.7975, 0.6468, 0.4677]],
    "heavy synthetic/cpu/float32": [[0.4921, 0.5254, 0.5199], [0.5277, 0.6655, 0.5214], [0.5257, 0.3802, 0.389],
                                    [0.376, 0.4064, 0.6463], [0.4739, 0.5077, 0.4678], [0.689, 0.3643, 0.3656],
                                    [0.4168, 0.5379, 0.4249], [0.3751, 0.4908, 0.3477]],
    "heavy synthetic/cpu/float64": [[0.3616, 0.3766, 0.3524], [0.3697, 0.4801, 0.3826], [0.4226, 0.5128, 0.6133],
                                    [0.5081, 0.4042, 0.6825], [0.5702, 0.4827, 0.4996], [0.3298, 0.3327, 0.3391],
                                    [0.4536, 0.4364, 0.4643], [0.7142, 0.6952, 0.7419]],
    "moderate 5zck_p1/cpu/float32": [[0.4336, 0.4462, 0.7519], [0.4471, 0.4379, 0.4211], [0.588, 0.5261, 0.6728],
                                     [0.4448, 0.6504, 0.4522], [0.4387, 0.527, 0.4421], [0.4605, 0.5514, 0.7805],
                                     [0.4653, 0.4594, 0.45], [0.6523, 0.5353, 0.4994]],
    "moderate 5zck_p1/cpu/float64": [[0.4982, 0.4971, 0.4774], [0.4178, 0.4097, 0.3989], [0.4738, 0.4733, 0.5221],
                                     [0.4105, 0.4413, 0.4201], [0.5586, 0.6357, 0.4695], [0.4129, 0.4179, 0.4127],
                                     [0.4182, 0.4194, 0.4367], [0.5278, 0.5287, 0.5525]],
    "moderate synthetic/cpu/float32": [[0.3397, 0.3454, 0.3422], [0.3053, 0.306, 0.3006], [0.3662, 0.3523, 0.3678],
                                       [0.4889, 0.3531, 0.3473], [0.3517, 0.3267, 0.3389], [0.4, 0.3958, 0.3932],
                                       [0.3124, 0.3137, 0.3231], [0.3454, 0.3628, 0.5164]],
    "moderate synthetic/cpu/float64": [[0.3808, 0.3439, 0.3447], [0.3889, 0.3175, 0.3158], [0.423, 0.5994, 0.3889],
                                       [0.3178, 0.3307, 0.3253], [0.3246, 0.3234, 0.3261], [0.472, 0.3701, 0.3822],
                                       [0.3713, 0.3241, 0.415], [0.354, 0.3459, 0.3434]],
}
# The heavy session's 32 nights: a night's fastest repeat exceeds the series' fastest
# night by a median of 14 %, 90th percentile 48 %, worst 2.1x; a repeat exceeds its
# night's fastest by a median of 9 %, 90th percentile 45 %, worst 1.9x.  The moderate
# session: a night's fastest varies by x1.16-1.32 over the 8 nights.


def _night(rng: random.Random, cost_s: float, *, night_sd: float, burst_p: float, repeat_sd: float,
           repeat_burst_p: float, burst: tuple[float, float], repeats: int = 3) -> list[float]:
    """One night's repeats of a phase that costs ``cost_s``: a log-normal machine factor for
    the night, times a contention burst ``uniform(*burst)`` with probability ``burst_p``
    (another job for the whole night's measurement); per repeat a log-normal jitter and,
    with probability ``repeat_burst_p``, a burst of its own."""
    night = math.exp(rng.gauss(0.0, night_sd)) * (rng.uniform(*burst) if rng.random() < burst_p else 1.0)
    return [cost_s * night * math.exp(rng.gauss(0.0, repeat_sd))
            * (rng.uniform(*burst) if rng.random() < repeat_burst_p else 1.0) for _ in range(repeats)]


#: Noise models: "measured" reproduces the quantiles summarised above (a night's excess
#: over the best night: median 14 %, 90th percentile 67 %; a repeat's excess over its
#: night's best: median 10 %, 90th percentile 45 %); "heavy" has twice the contention
#: bursts, for margin.
NOISE = {
    "measured": dict(night_sd=0.06, burst_p=0.2, repeat_sd=0.08, repeat_burst_p=0.1, burst=(1.2, 1.8)),
    "heavy": dict(night_sd=0.08, burst_p=0.4, repeat_sd=0.08, repeat_burst_p=0.1, burst=(1.1, 1.7)),
}
#: (largest false-alarm rate of a fifth night, smallest detection rate by the third slow night)
#: Measured with the default rule: fifth-night false alarms 0.13 % / 0.4 %, detection 98.8 % / 98.2 %.
BOUNDS = {"measured": (0.005, 0.98), "heavy": (0.01, 0.97)}


def _history(rng: random.Random, nights: int, cost_s: float, noise: str, *, step_at: int | None = None,
             step: float = 2.0) -> list[list[float]]:
    return [[v * (step if step_at is not None and n >= step_at else 1.0) for v in _night(rng, cost_s, **NOISE[noise])]
            for n in range(nights)]


def test_the_noise_model_matches_the_measurement() -> None:
    """The "measured" model's medians are those of the heavy session of MEASURED (within
    sampling error), so the rates below are about this machine, not a made-up noise."""
    def excess(series_list):
        nights, repeats = [], []
        for series in series_list:
            best = min(min(n) for n in series)
            nights += [math.log(min(n) / best) for n in series]
            repeats += [math.log(v / min(n)) for n in series for v in n if v != min(n)]
        return statistics.median(nights), statistics.median(repeats)

    measured = excess(series for name, series in MEASURED.items() if name.startswith("heavy"))
    rng = random.Random(5)
    simulated = excess(_history(rng, 8, 1.0, "measured") for _ in range(2000))
    assert measured == pytest.approx(simulated, abs=0.05), (measured, simulated)


@pytest.mark.parametrize("noise", sorted(NOISE))
def test_unchanged_code_is_not_flagged_over_five_nights(noise: str) -> None:
    """(a) 4000 simulated five-night histories of unchanged code: the fifth night is judged
    (the rule is armed: 2 earlier runs + 3) and flagged at most at the bound's rate."""
    rng = random.Random(2026)
    verdicts = [judge_slowdown(_history(rng, 5, rng.uniform(0.5, 3.0), noise)) for _ in range(4000)]
    assert all(v.status != "insufficient_history" for v in verdicts)
    rate = sum(v.flagged for v in verdicts) / len(verdicts)
    assert rate <= BOUNDS[noise][0], rate


def test_unchanged_code_is_rarely_flagged_over_a_long_history() -> None:
    """Every night from the fifth of 300 simulated 30-night histories is judged; false alarms
    stay below 0.5 % of the nights (measured: 0.14 %, about one a year)."""
    rng = random.Random(7)
    judged = flagged = 0
    for _ in range(300):
        series = _history(rng, 30, rng.uniform(0.5, 3.0), "measured")
        for n in range(5, 31):
            judged += 1
            flagged += judge_slowdown(series[:n]).flagged
    assert flagged / judged <= 0.005, flagged / judged


@pytest.mark.parametrize("noise", sorted(NOISE))
def test_a_twofold_slowdown_is_flagged_within_three_nights(noise: str) -> None:
    """(b) a phase of 0.5 s or more becomes 2x slower after 2 to 12 normal nights: flagged by
    its third slow night in at least the bound's share of 4000 histories."""
    rng = random.Random(11)
    found = 0
    for _ in range(4000):
        before = rng.randint(2, 12)
        series = _history(rng, before + 3, rng.uniform(0.5, 5.0), noise, step_at=before)
        found += any(judge_slowdown(series[:n]).flagged for n in range(before + 1, before + 4))
    assert found / 4000 >= BOUNDS[noise][1], found / 4000


def test_the_recorded_nights_flag_nothing_and_steps_in_them_are_found() -> None:
    """The measured series themselves: no night of them is flagged.  Made 2x slower from
    each possible night on (after at least 2 earlier nights) for three nights, the step is
    found in 30 of the 32 cases: in "heavy 5zck_p1/cpu/float32" the machine got 1.5x faster
    from the fourth night on, which hides a 2x step starting on the third or fourth night
    (x1.38 is left on one of the three nights; the threshold is x1.5)."""
    for name, series in MEASURED.items():
        statuses = [judge_slowdown(series[:end]).status for end in range(5, len(series) + 1)]
        assert statuses == ["ok"] * (len(series) - 4), (name, statuses)
    missed = []
    for name, series in MEASURED.items():
        for step_at in range(2, len(series) - 2):
            stepped = series[:step_at] + [[2 * v for v in night] for night in series[step_at:step_at + 3]]
            if not judge_slowdown(stepped).flagged:
                missed.append((name, step_at))
    assert missed == [("heavy 5zck_p1/cpu/float32", 2), ("heavy 5zck_p1/cpu/float32", 3)], missed


def test_judge_slowdown_rules() -> None:
    base = [[1.0, 1.1, 1.05], [1.02, 1.2, 1.1], [0.98, 1.0, 1.3]]
    slow = [[2.0, 2.2, 2.1], [2.1, 2.05, 2.3], [1.95, 2.0, 2.4]]
    verdict = judge_slowdown(base + slow)
    assert verdict.flagged and verdict.baseline_s == pytest.approx(0.98) and verdict.current_s == pytest.approx(1.95)
    assert verdict.p_value < 0.01 and verdict.ratio == pytest.approx(1.95 / 0.98)
    assert verdict.threshold_s == pytest.approx(0.98 * 1.5)
    # Persistence: any of the last three nights within the threshold -> not flagged.
    for fast in range(3):
        nights = [night if i != fast else [1.0, 1.1, 1.0] for i, night in enumerate(slow)]
        assert judge_slowdown(base + nights).status == "ok", fast
    # Absolute floor: a 2x step of a 50 ms phase is timer-level noise for a nightly.
    assert not judge_slowdown([[v / 20 for v in n] for n in base + slow]).flagged
    # Relative threshold: +0.3 s on a 3 s phase is 10 %.
    assert not judge_slowdown([[3 * v for v in n] for n in base] + [[3.3, 3.4, 3.35]] * 3).flagged
    # Significance: a baseline whose repeats overlap the new ones is no evidence.
    wide = [[1.0, 2.5, 2.6], [1.0, 2.4, 2.7], [1.0, 2.6, 2.5]]
    verdict = judge_slowdown(wide + [[2.0, 2.3, 2.6], [2.1, 2.4, 2.5], [2.2, 2.3, 2.45]])
    assert verdict.status == "ok" and verdict.p_value is not None and verdict.p_value >= 0.01
    # Minimum history: one earlier run is not enough.
    assert judge_slowdown(base[:1] + slow).status == "insufficient_history"
    assert judge_slowdown(base[:2] + slow).status == "slowdown"
    # Missing data (a crashed night) is skipped, bad values dropped.
    assert judge_slowdown(base + [None, [float("nan"), 2.0, 2.1], [2.2, -1.0, 2.1], [2.0, 2.3]]).flagged
    # The baseline is the fastest earlier night by default, the median on request.
    bumpy = [[1.0], [1.6], [1.7]] * 3
    assert judge_slowdown(bumpy + [[2.4]] * 3).baseline_s == pytest.approx(1.0)
    assert judge_slowdown(bumpy + [[2.4]] * 3, SlowdownRule(baseline_quantile=0.5)).baseline_s == pytest.approx(1.6)
    # A stricter rule via parameters.
    assert not judge_slowdown(base + slow, SlowdownRule(rel_threshold=1.5)).flagged


def test_slowdown_rule_rejects_bad_parameters() -> None:
    for bad in (dict(min_history=0), dict(confirm=0), dict(window=2, min_history=3), dict(rel_threshold=-1),
                dict(abs_floor_s=float("nan")), dict(alpha=0.0), dict(alpha=1.5), dict(baseline_quantile=2)):
        with pytest.raises(ValueError, match="SlowdownRule"):
            SlowdownRule(**bad)


def test_fault_runs_are_left_out_of_regressions(store: HistoryStore) -> None:
    _seed(store, 4)
    store.record_run(make_result(night=4, fault="flip_sign", stages={"eigen": {"status": "fail",
                                                                              "max_rel": 1.0}}))
    assert find_regressions(store) == []
    assert len(store.runs()) == 5 and len(store.runs(include_faults=False)) == 4
