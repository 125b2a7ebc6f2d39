"""``parity nightly`` + ``parity dashboard``: the matrix, the history, regressions, crashes,
bad input, and a real SIGKILL half-way through a nightly.

Everything runs on the built-in ``synthetic`` fixture (no external files needed).
"""
from __future__ import annotations

import copy
import datetime as dt
import hashlib
import io
import json
import os
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import torch

from parity.commands import cli
from parity.storage.history import HistoryStore, find_regressions, parse_timestamp

REPO = Path(__file__).resolve().parents[2]
SMALL = {"fixtures": ["synthetic"], "dtypes": ["float64"], "devices": ["cpu"]}


def write_matrix(folder: Path, data, name: str = "matrix.json") -> Path:
    path = folder / name
    path.write_text(data if isinstance(data, str) else json.dumps(data))
    return path


#: What the tests that are not about timing or the dashboard pass: no timing worker, no dashboard.
QUICK = ("--repeats", "0", "--no-dashboard")


def nightly(folder: Path, matrix: Path | None, *extra: str, db: Path | None = None, quick: bool = True) -> int:
    args = ["nightly", "--db", str(db or folder / "history.sqlite"), "--reports-dir", str(folder / "runs"),
            "--no-progress", *(QUICK if quick else ()), *extra]
    if matrix is not None:
        args += ["--matrix", str(matrix)]
    return cli.main(args)


def one_line_error(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, f"expected one error line, got:\n{err}"
    assert lines[0].startswith("parity: error: "), lines[0]
    assert "Traceback" not in err
    return lines[0]


def fingerprint(path: Path) -> tuple[str, int]:
    return hashlib.sha256(path.read_bytes()).hexdigest(), path.stat().st_mtime_ns


def seed_copy(store: HistoryStore, base_id: int, *, seconds: int = 1, degrade: str | None = None,
              time_scale: float | None = None) -> int:
    """Record a copy of run ``base_id`` as a new run ``seconds`` later (optionally one stage
    degraded, or every wall-clock time scaled by ``time_scale`` and the repeats dropped)."""
    result = copy.deepcopy(store.result(base_id))
    result["run_uuid"] = str(uuid.uuid4())
    result["started_at"] = (parse_timestamp(result["started_at"]) + dt.timedelta(seconds=seconds)).isoformat()
    if time_scale is not None:
        result.pop("timing", None)
        result["phase_timings"] = {k: v * time_scale for k, v in result["phase_timings"].items()}
        result["duration_s"] *= time_scale
    if degrade:
        stage = next(s for s in result["stages"] if s["name"] == degrade)
        stage["max_rel"] *= 1e4
        if stage.get("max_abs") is not None:
            stage["max_abs"] *= 1e4
        stage["status"], stage["passed"] = "fail", False
        result["passed"], result["first_failure"] = False, degrade
    return store.record_run(result, nightly_id="seeded")


def worst_passing_stage(store: HistoryStore, run_id: int) -> str:
    """The passing stage with the largest non-zero max_rel (so x1e4 is clearly growth)."""
    rows = [r for r in store.stages(run_id) if r["status"] == "pass" and r["max_rel"]]
    return max(rows, key=lambda r: r["max_rel"])["name"]


# ----------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def two_nightlies(tmp_path_factory):
    """A store with two real nightly runs of (synthetic, cpu, float64)."""
    folder = tmp_path_factory.mktemp("nightly")
    matrix = write_matrix(folder, SMALL)
    codes = [nightly(folder, matrix), nightly(folder, matrix)]
    return folder, codes


@pytest.fixture
def store_copy(two_nightlies, tmp_path):
    """A private copy of the two-run store (and its reports)."""
    folder, _ = two_nightlies
    shutil.copy(folder / "history.sqlite", tmp_path / "history.sqlite")
    shutil.copytree(folder / "runs", tmp_path / "runs")
    return tmp_path / "history.sqlite"


# ----------------------------------------------------------------------------- the happy path
def test_two_nightlies_then_dashboard(two_nightlies, tmp_path, capsys):
    folder, codes = two_nightlies
    assert codes == [0, 0]  # both passed; the second is an identical rerun: nothing flagged
    db = folder / "history.sqlite"
    with HistoryStore(db) as store:
        runs = store.runs()
        assert len(runs) == 2
        assert {(r["fixture"], r["device"], r["dtype"]) for r in runs} == {("synthetic", "cpu", "float64")}
        assert all(r["passed"] for r in runs)
        assert len({r["nightly_id"] for r in runs}) == 2 and all(r["nightly_id"] for r in runs)
        for run in runs:
            report = store.resolve_report(run["report_path"])
            assert report.is_file() and report.name == f"{run['run_uuid']}.html"
            assert "<html" in report.read_text()[:500].lower()
        assert [r for r in find_regressions(store) if r.kind != "slowdown"] == []
    out = tmp_path / "dash" / "dashboard.html"
    assert cli.main(["dashboard", "--db", str(db), "--out", str(out)]) == 0
    html = out.read_text()
    assert re.search(r"\b2 runs\b", html), "the dashboard header should count 2 runs"
    assert html.count('<td class="num">') >= 2 and "synthetic" in html
    assert "dashboard:" in capsys.readouterr().out


def test_nightly_renders_dashboard_and_defaults(tmp_path, monkeypatch, capsys):
    """No --matrix: the default matrix (synthetic + the real fixtures present x 2 dtypes x devices)."""
    from parity.benchmarking import nightly as nightly_mod

    monkeypatch.delenv("ERYX_FIXTURES_DIR", raising=False)
    m = nightly_mod.default_matrix()
    assert m.fixtures == ["synthetic"] and m.dtypes == ["float64", "float32"]
    assert m.devices == ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    # The defaults pick up 5zck_p1/7n2h only when the directory has them.
    (tmp_path / "fx").mkdir()
    (tmp_path / "fx" / "7n2h.pdb").write_text("REMARK placeholder: only its presence matters here\n")
    assert nightly_mod.default_matrix(str(tmp_path / "fx")).fixtures == ["synthetic", "7n2h"]
    # A dashboard is rendered when asked.
    matrix = write_matrix(tmp_path, SMALL)
    assert nightly(tmp_path, matrix, "--repeats", "0", "--dashboard", str(tmp_path / "d.html"), quick=False) == 0
    assert (tmp_path / "d.html").is_file()
    assert "dashboard:" in capsys.readouterr().out


def test_toml_matrix_with_grid_and_phases(tmp_path):
    matrix = write_matrix(tmp_path, 'fixtures = ["synthetic"]\ndtypes = ["float32"]\ndevices = ["cpu"]\n'
                                    'phases = [1, 2]\n[grid]\nsynthetic = "-1,1,2"\n', "matrix.toml")
    assert nightly(tmp_path, matrix) == 0
    with HistoryStore(tmp_path / "history.sqlite") as store:
        (run,) = store.runs()
        assert run["dtype"] == "float32"
        assert run["grid"] == {"hsampling": [-1, 1, 2], "ksampling": [-1, 1, 2], "lsampling": [-1, 1, 2]}
        assert {s["phase"] for s in store.stages(run["id"])} == {1, 2}


# ----------------------------------------------------------------------------- regressions
def test_seeded_degraded_run_is_flagged_identical_rerun_is_not(store_copy, tmp_path, capsys):
    with HistoryStore(store_copy) as store:
        latest = store.runs()[0]
        # An identical rerun (same numbers, later): nothing about the stages is flagged.
        same = seed_copy(store, latest["id"], seconds=1)
        flagged = find_regressions(store)
        assert [r for r in flagged if r.kind != "slowdown"] == []
        # Identical timings cannot be a slowdown against runs that include them either
        # unless the earlier run was itself much faster; the stage checks are the point here.
        # A degraded run: one stage's error x 1e4 and failing.
        stage = worst_passing_stage(store, same)
        bad = seed_copy(store, same, seconds=2, degrade=stage)
        flagged = [r for r in find_regressions(store) if r.run_id == bad]
        kinds = {(r.kind, r.target) for r in flagged}
        assert ("error_growth", stage) in kinds and ("status_flip", stage) in kinds
    out = tmp_path / "dashboard.html"
    assert cli.main(["dashboard", "--db", str(store_copy), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    n = int(re.search(r"\((\d+) regression\(s\) flagged\)", printed).group(1))
    assert n >= 2
    html = out.read_text()
    assert "error growth" in html and "status flip" in html and stage in html


def test_nightly_exits_1_and_prints_a_regression(store_copy, tmp_path, monkeypatch, capsys):
    """A nightly whose own run degrades a stage: exit 1, the regression printed."""
    from parity.running import runner

    real = runner.run_parity
    with HistoryStore(store_copy) as store:
        stage = worst_passing_stage(store, store.runs()[0]["id"])

    def degraded(*args, **kwargs):
        result = real(*args, **kwargs)
        s = next(s for s in result["stages"] if s["name"] == stage)
        s["max_rel"] *= 1e4
        return result

    monkeypatch.setattr(runner, "run_parity", degraded)
    matrix = write_matrix(tmp_path, SMALL)
    assert nightly(tmp_path, matrix, db=store_copy) == 1
    out = capsys.readouterr().out
    assert "REGRESSION synthetic/cpu/float64 error_growth" in out and stage in out


def test_a_crashing_run_is_recorded_and_the_others_go_on(tmp_path, monkeypatch, capsys):
    from parity.running import runner

    real = runner.run_parity

    def crash_float32(fixture, **kwargs):
        if kwargs.get("dtype") == "float32":
            raise RuntimeError("boom: simulated crash")
        return real(fixture, **kwargs)

    monkeypatch.setattr(runner, "run_parity", crash_float32)
    matrix = write_matrix(tmp_path, {**SMALL, "dtypes": ["float32", "float64"]})
    assert nightly(tmp_path, matrix) == 1
    out = capsys.readouterr().out
    assert "CRASHED (RuntimeError: boom: simulated crash)" in out
    with HistoryStore(tmp_path / "history.sqlite") as store:
        runs = {r["dtype"]: r for r in store.runs()}
        assert set(runs) == {"float32", "float64"}
        assert runs["float64"]["passed"] and not runs["float32"]["passed"]
        assert runs["float32"]["nightly_id"] == runs["float64"]["nightly_id"]
        stages = store.stages(runs["float32"]["id"])
        assert stages and {s["status"] for s in stages} == {"error"}
        assert "boom" in store.result(runs["float32"]["id"])["stages"][0]["message"]
        assert store.resolve_report(runs["float32"]["report_path"]).is_file()


# ----------------------------------------------------------------------------- bad input
BAD_MATRICES = [
    ("not json", "{fixtures: [", "not valid JSON"),
    ("not an object", "[1, 2]", "expected an object"),
    ("unknown key", {**SMALL, "fixture": ["synthetic"]}, "unknown key(s) 'fixture'"),
    ("bad dtype", {**SMALL, "dtypes": ["float16"]}, "unsupported dtype 'float16'"),
    ("empty fixtures", {**SMALL, "fixtures": []}, "'fixtures' must be a non-empty list"),
    ("unknown fixture", {**SMALL, "fixtures": ["no_such_fixture"]}, "fixture 'no_such_fixture'"),
    ("bad device", {**SMALL, "devices": ["tpu"]}, "device 'tpu'"),
    ("bad grid", {**SMALL, "grid": {"synthetic": "-2,2"}}, "grid for 'synthetic'"),
    ("grid for other fixture", {**SMALL, "grid": {"5zck_p1": "-2,2,2"}}, "not in 'fixtures'"),
    ("bad phase", {**SMALL, "phases": [5]}, "unknown phase(s) [5]"),
]


@pytest.mark.parametrize("label, content, expected", BAD_MATRICES, ids=[b[0] for b in BAD_MATRICES])
def test_bad_matrix_exits_2_in_one_line(tmp_path, capsys, label, content, expected):
    matrix = write_matrix(tmp_path, content)
    assert nightly(tmp_path, matrix) == 2
    line = one_line_error(capsys.readouterr().err)
    assert expected in line and str(matrix) in line
    assert not (tmp_path / "history.sqlite").exists() and not (tmp_path / "runs").exists()


def test_bad_toml_and_missing_matrix_exit_2(tmp_path, capsys):
    matrix = write_matrix(tmp_path, "fixtures = [synthetic\n", "m.toml")
    assert nightly(tmp_path, matrix) == 2
    assert "not valid TOML" in one_line_error(capsys.readouterr().err)
    assert nightly(tmp_path, tmp_path / "missing.json") == 2
    assert "not found" in one_line_error(capsys.readouterr().err)


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is present here")
def test_matrix_device_not_present_exits_2(tmp_path, capsys):
    matrix = write_matrix(tmp_path, {**SMALL, "devices": ["cpu", "cuda"]})
    assert nightly(tmp_path, matrix) == 2
    assert "not available on this machine" in one_line_error(capsys.readouterr().err)


@pytest.mark.parametrize("kind", ["garbage", "other_sqlite", "truncated"])
def test_corrupt_store_exits_2_and_is_untouched(tmp_path, capsys, kind, two_nightlies):
    db = tmp_path / "history.sqlite"
    if kind == "garbage":
        db.write_bytes(b"this is not a database\n" * 200)
    elif kind == "other_sqlite":
        with sqlite3.connect(db) as conn:
            conn.execute("CREATE TABLE invoices (id INTEGER PRIMARY KEY, total REAL)")
            conn.execute("INSERT INTO invoices (total) VALUES (12.5)")
        conn.close()
    else:  # a real history store cut in half
        data = (two_nightlies[0] / "history.sqlite").read_bytes()
        db.write_bytes(data[: len(data) // 2])
    before = fingerprint(db)
    matrix = write_matrix(tmp_path, SMALL)
    assert nightly(tmp_path, matrix, db=db) == 2
    one_line_error(capsys.readouterr().err)
    assert fingerprint(db) == before
    assert not (tmp_path / "runs").exists(), "nothing may run when the store is unusable"


def test_unwritable_store_exits_2(tmp_path, capsys):
    blocker = tmp_path / "a_file"
    blocker.write_text("a regular file where a folder should be")
    before = fingerprint(blocker)
    matrix = write_matrix(tmp_path, SMALL)
    assert nightly(tmp_path, matrix, db=blocker / "history.sqlite") == 2
    assert "not writable" in one_line_error(capsys.readouterr().err)
    assert fingerprint(blocker) == before and not (tmp_path / "runs").exists()


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root ignores file permissions")
def test_read_only_folder_store_exits_2(tmp_path, capsys, two_nightlies):
    folder = tmp_path / "ro"
    folder.mkdir()
    db = folder / "history.sqlite"
    shutil.copy(two_nightlies[0] / "history.sqlite", db)
    before = fingerprint(db)
    folder.chmod(0o555)
    try:
        assert nightly(tmp_path, write_matrix(tmp_path, SMALL), db=db) == 2
        assert "not writable" in one_line_error(capsys.readouterr().err)
        assert fingerprint(db) == before
    finally:
        folder.chmod(0o755)


# ----------------------------------------------------------------------------- SIGKILL
def _committed_runs(db: Path) -> int:
    try:
        conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1)
    except sqlite3.Error:
        return 0
    try:
        return int(conn.execute("SELECT COUNT(*) FROM runs").fetchone()[0])
    except sqlite3.Error:
        return 0
    finally:
        conn.close()


def _wait_for(predicate, timeout: float, proc: subprocess.Popen, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if proc.poll() is not None:
            pytest.fail(f"parity nightly exited ({proc.returncode}) before {what}")
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.05)


def test_sigkill_mid_nightly_keeps_the_earlier_runs(tmp_path, capsys):
    """SIGKILL `parity nightly` inside the second run's write transaction: the store stays
    healthy, the first run is intact, the half-written second run is gone, and the next
    nightly appends to it."""
    db = tmp_path / "history.sqlite"
    matrix = write_matrix(tmp_path, {**SMALL, "dtypes": ["float64", "float32"]})
    env = {**os.environ, "PARITY_HISTORY_TEST_SLEEP": "2.0", "PYTHONUNBUFFERED": "1"}
    err_path = tmp_path / "stderr.txt"
    with open(err_path, "w") as err, open(tmp_path / "stdout.txt", "w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "parity.commands.cli", "nightly", "--matrix", str(matrix), "--db", str(db),
             "--reports-dir", str(tmp_path / "runs"), "--no-progress", *QUICK],
            cwd=REPO, env=env, stdout=out, stderr=err)
        try:
            _wait_for(lambda: _committed_runs(db) >= 1, 180, proc, "the first run was committed")
            # The second run's transaction has started (row inserted, not committed) when the
            # test hook logs its second sleep.
            _wait_for(lambda: err_path.read_text().count("test hook: sleeping") >= 2, 180, proc,
                      "the second run's write transaction")
            os.kill(proc.pid, signal.SIGKILL)
            assert proc.wait(timeout=30) == -signal.SIGKILL
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()

    with HistoryStore(db) as store:
        assert store.integrity_check() == ["ok"]
        runs = store.runs()
        assert len(runs) == 1, "the interrupted run must not be half-recorded"
        (first,) = runs
        assert (first["fixture"], first["dtype"], first["passed"]) == ("synthetic", "float64", True)
        result = store.result(first["id"])
        assert len(store.stages(first["id"])) == len(result["stages"]) > 0
        assert store.resolve_report(first["report_path"]).is_file()
    conn = sqlite3.connect(db)
    try:
        orphans = conn.execute("SELECT (SELECT COUNT(*) FROM stages WHERE run_id NOT IN (SELECT id FROM runs))"
                               " + (SELECT COUNT(*) FROM phase_timings WHERE run_id NOT IN "
                               "(SELECT id FROM runs))").fetchone()[0]
    finally:
        conn.close()
    assert orphans == 0
    # The store keeps working: the next nightly appends.
    assert nightly(tmp_path, write_matrix(tmp_path, SMALL, "again.json"), db=db) == 0
    with HistoryStore(db) as store:
        assert store.count_runs() == 2


# ----------------------------------------------------------------------------- timing and slowdowns
def test_nightly_times_each_run_in_a_single_threaded_worker(tmp_path):
    matrix = write_matrix(tmp_path, {**SMALL, "phases": [1, 2]})
    assert nightly(tmp_path, matrix, "--repeats", "2", "--no-dashboard", quick=False) == 0
    with HistoryStore(tmp_path / "history.sqlite") as store:
        (run,) = store.runs()
        result = store.result(run["id"])
        series = store.timing_series("synthetic", "cpu", "float64")
    timing = result["timing"]
    assert (timing["clock"], timing["threads"], timing["repeats"], timing["warmup"]) == ("cpu", 1, 2, 1)
    assert set(timing["samples"]) == {"1", "2", "total"}
    assert all(len(v) == 2 and all(x > 0 for x in v) for v in timing["samples"].values())
    assert timing["min"] == {k: min(v) for k, v in timing["samples"].items()}
    assert set(result["phase_timings"]) >= {"1", "2"}  # the run's own wall-clock times stay
    grad = result["gradient_timing"]  # parity.benchmarking.gradients: gradient cost and memory
    assert set(grad["median_s"]) == {"forward", "forward+backward", "q forward", "q gradient"}
    assert grad["ratio"]["forward+backward / forward"] > 0 and grad["peak_mb"]["forward+backward"] > 0
    assert series == [{"run_id": run["id"], "started_at": run["started_at"], "clock": "cpu",
                       "samples": timing["samples"]}]


def test_a_slowdown_alone_exits_0_unless_fail_on_slowdown(tmp_path, capsys):
    """Seven much faster nights and two as slow as a real run (seeded copies of it), then a
    real run: a sustained slowdown (the third slow night).  It is printed and exits 0; the
    same night with --fail-on-slowdown exits 1."""
    db = tmp_path / "history.sqlite"
    matrix = write_matrix(tmp_path, SMALL)
    assert nightly(tmp_path, matrix) == 0
    with HistoryStore(db) as store:
        real = store.runs()[0]["id"]
        for k in range(7):  # older nights, every time / 100 (single wall-clock samples: 7 needed)
            seed_copy(store, real, seconds=-86400 * (9 - k), time_scale=0.01)
        seed_copy(store, real, seconds=-86400, time_scale=1.0)  # the first slow night
    twin = tmp_path / "twin.sqlite"
    shutil.copy(db, twin)  # the same history for the --fail-on-slowdown night
    capsys.readouterr()
    assert nightly(tmp_path, matrix) == 0
    out = capsys.readouterr().out
    assert "1 of 1 run(s) passed; 0 numerical regression(s)" in out
    assert "REGRESSION synthetic/cpu/float64 slowdown: phase 4" in out and "--fail-on-slowdown" in out
    assert nightly(tmp_path, matrix, "--fail-on-slowdown", db=twin) == 1
    out = capsys.readouterr().out
    assert "1 of 1 run(s) passed; 0 numerical regression(s)" in out
    assert "REGRESSION synthetic/cpu/float64 slowdown: phase 4" in out


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_bar_is_drawn_only_on_a_terminal(tmp_path, capsys, monkeypatch):
    matrix = write_matrix(tmp_path, {**SMALL, "phases": [1]})
    argv = ["nightly", "--matrix", str(matrix), "--db", str(tmp_path / "h.sqlite"), *QUICK]  # no --no-progress
    assert cli.main(argv) == 0  # stderr is pytest's capture: not a terminal, like a log file
    out, err = capsys.readouterr()
    assert "\r" not in out and "\r" not in err and "run/s" not in err and "parity nightly:" not in err
    # The same command on a terminal does draw the bar (so the check above can fail).
    terminal = _Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    assert cli.main(argv) == 0
    assert "\r" in terminal.getvalue() and "parity nightly" in terminal.getvalue()


# ----------------------------------------------------------------------------- defaults and outputs
def test_help_shows_the_defaults(capsys):
    for argv in (["nightly", "--help"], ["dashboard", "--help"]):
        with pytest.raises(SystemExit) as exit_info:
            cli.main(argv)
        assert exit_info.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    nightly_help, dashboard_help = text.split("usage: parity dashboard")
    assert "--db FILE SQLite history store (default: reports/history.sqlite, relative to the current folder)" \
        in nightly_help
    assert "(default: runs/ in the --db file's folder)" in nightly_help
    assert "(default: dashboard.html in the --db file's folder)" in nightly_help
    assert "(default: 3;" in nightly_help and "--no-dashboard" in nightly_help
    assert re.search(r"--fail-on-slowdown exit 1 when a slowdown is flagged \(.*>= 0.2 s.*\) or the gradient "
                     r"benchmark's peak memory grew \(.*x1.5.*32 MiB.*\); off by default: either alone is printed "
                     r"and exits 0", nightly_help)
    assert "(default: reports/history.sqlite)" in dashboard_help
    assert "(default: dashboard.html in the --db file's folder)" in dashboard_help


def test_reports_and_dashboard_go_next_to_the_store(tmp_path, monkeypatch):
    cwd = tmp_path / "somewhere_else"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    db = tmp_path / "store" / "history.sqlite"
    matrix = write_matrix(tmp_path, {**SMALL, "phases": [1]})
    assert cli.main(["nightly", "--matrix", str(matrix), "--db", str(db), "--repeats", "0", "--no-progress"]) == 0
    assert list(cwd.iterdir()) == [], "nothing may be written into the current folder"
    with HistoryStore(db) as store:
        report = store.resolve_report(store.runs()[0]["report_path"])
    assert report.parent == (db.parent / "runs").resolve() and report.is_file()
    dashboard = db.parent / "dashboard.html"
    assert dashboard.is_file()
    dashboard.unlink()
    assert cli.main(["dashboard", "--db", str(db)]) == 0
    assert dashboard.is_file() and list(cwd.iterdir()) == []


@pytest.mark.parametrize("existing", [False, True], ids=["new-store", "existing-store"])
def test_an_output_that_is_an_input_is_refused(tmp_path, capsys, existing, two_nightlies):
    db = tmp_path / "h.sqlite"
    if existing:
        shutil.copy(two_nightlies[0] / "history.sqlite", db)
    matrix = write_matrix(tmp_path, SMALL)
    before = {p.name: fingerprint(p) for p in tmp_path.iterdir()}
    same_db = str(tmp_path / "sub" / ".." / "h.sqlite")  # the same file, spelled differently
    cases = [
        (["nightly", "--matrix", str(matrix), "--db", str(db), "--dashboard", same_db], "--dashboard", "--db"),
        (["nightly", "--matrix", str(matrix), "--db", str(db), "--dashboard", str(matrix)], "--dashboard", "--matrix"),
        (["nightly", "--matrix", str(matrix), "--db", str(db), "--reports-dir", str(db)], "--reports-dir", "--db"),
        (["dashboard", "--db", str(db), "--out", same_db], "--out", "--db"),
    ]
    for argv, output, source in cases:
        assert cli.main(argv + (["--no-progress"] if argv[0] == "nightly" else [])) == 2, argv
        line = one_line_error(capsys.readouterr().err)
        assert f"{output} and {source}" in line and "overwrite" in line, line
        assert {p.name: fingerprint(p) for p in tmp_path.iterdir()} == before, f"{argv} wrote something"


# ----------------------------------------------------------------------------- real nights
#: A grid on which the synthetic crystal's phase 4 does about twice the work of the default
#: grid's (oversampling 3 instead of 2: 27 instead of 8 k-points): a real slowdown of the
#: same series (the series is fixture/device/dtype; the grid is not part of it).
TWICE_THE_WORK = "-2,2,3"


def _real_nightly(folder: Path, matrix: Path, *extra: str) -> tuple[int, str]:
    """``python -m parity nightly`` as cron would run it: stderr into a log file, no
    --no-progress (the bar must not be drawn there)."""
    log = folder / "nightly.log"
    with open(log, "a") as err:
        proc = subprocess.run([sys.executable, "-m", "parity", "nightly", "--matrix", str(matrix),
                               "--db", str(folder / "store" / "history.sqlite"), "--no-dashboard", *extra],
                              cwd=REPO, stdout=subprocess.PIPE, stderr=err, text=True, timeout=900)
    return proc.returncode, proc.stdout


@pytest.mark.slow
def test_five_real_nightlies_flag_no_slowdown_then_a_real_twofold_one_is_flagged(tmp_path):
    """Five real nightlies in a row on an unchanged tree (synthetic, float64, cpu, default
    repeats): no timing flag, although the rule is armed on the fifth (2 earlier runs + 3).
    Then the work of phase 4 doubles (a denser grid): flagged on the third slow night, exit
    0 before and 1 with --fail-on-slowdown."""
    from parity.storage.history import timing_verdicts

    matrix = write_matrix(tmp_path, SMALL)
    for night in range(5):
        code, out = _real_nightly(tmp_path, matrix)
        assert code == 0 and "0 numerical regression(s), 0 slowdown(s) flagged" in out, out
    with HistoryStore(tmp_path / "store" / "history.sqlite") as store:
        verdicts = timing_verdicts(store, "synthetic", "cpu", "float64")
        assert set(verdicts) == {"1", "2", "3", "4", "total"}
        assert {v.status for v in verdicts.values()} == {"ok"}, verdicts  # judged, not flagged
        assert all(run["clock"] == "cpu" for run in store.timing_series("synthetic", "cpu", "float64"))
    log = (tmp_path / "nightly.log").read_text()
    assert "\r" not in log, "no progress-bar frames in a log file"

    slower = write_matrix(tmp_path, {**SMALL, "grid": {"synthetic": TWICE_THE_WORK}}, "slower.json")
    for night in range(2):
        code, out = _real_nightly(tmp_path, slower)
        assert code == 0 and "slowdown: phase 4" not in out, "one or two slow nights are not yet a regression"
    code, out = _real_nightly(tmp_path, slower, "--fail-on-slowdown")
    assert "REGRESSION synthetic/cpu/float64 slowdown: phase 4" in out, \
        f"a twofold slowdown of phase 4 was not flagged on its third night:\n{out}"
    assert code == 1 and "1 of 1 run(s) passed; 0 numerical regression(s)" in out, out


def test_negative_repeats_exit_2(tmp_path, capsys):
    matrix = write_matrix(tmp_path, SMALL)
    assert nightly(tmp_path, matrix, "--repeats", "-1", quick=False) == 2
    assert "--repeats" in one_line_error(capsys.readouterr().err)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["matrix.json"]


# ----------------------------------------------------------------------------- a third opinion
def _upstream_snapshot() -> str:
    from parity.benchmarking.nightly import upstream_snapshot

    found = upstream_snapshot()
    if not found:
        pytest.skip("no snapshot of the original eryx (set ERYX_PEERS_DIR to ../shared/peers)")
    return found


def test_the_default_matrix_asks_upstream_eryx_for_a_third_opinion(monkeypatch):
    from parity.benchmarking.nightly import THIRD_OPINION, default_matrix

    snapshot = _upstream_snapshot()
    combos = default_matrix().combinations()
    opinions = [c for c in combos if c.opinion]
    assert opinions and all(c.reference == THIRD_OPINION and c.reference_path == snapshot for c in opinions)
    assert {c.fixture for c in opinions} == {c.fixture for c in combos}
    assert all(c.dtype == "float64" and c.device == "cpu" for c in opinions)
    monkeypatch.delenv("ERYX_PEERS_DIR")
    assert not any(c.opinion for c in default_matrix().combinations())


def test_a_third_opinion_is_its_own_series_and_judged_by_its_changes(tmp_path, capsys):
    """upstream-eryx diverges at Amat (its shared-buffer bug): that alone does not fail the
    nightly; its runs go to their own series, next to the project's own."""
    snapshot = _upstream_snapshot()
    matrix = write_matrix(tmp_path, {**SMALL, "phases": [1, 2], "grid": {"synthetic": "-1,1,3"},
                                     "references": {"upstream-eryx": snapshot}})
    code = nightly(tmp_path, matrix)
    out = capsys.readouterr().out
    assert code == 0, out
    assert "1 third-opinion run(s), judged by their changes" in out
    assert "synthetic [upstream-eryx vs torch] cpu float64: DIVERGED at Amat" in out
    with HistoryStore(tmp_path / "history.sqlite") as store:
        keys = store.series_keys()
    assert ("synthetic", "cpu", "float64") in keys and ("synthetic [upstream-eryx vs torch]", "cpu", "float64") in keys


def test_unknown_reference_in_the_matrix_exits_2(tmp_path, capsys):
    matrix = write_matrix(tmp_path, {**SMALL, "references": ["nosuch"]})
    assert nightly(tmp_path, matrix) == 2
    assert "unknown backend 'nosuch' in 'references'" in one_line_error(capsys.readouterr().err)
