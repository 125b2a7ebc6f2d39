"""The hostile-input battery (issue 21), part 1, the command line, class by class: inputs
never destroyed, input errors refused up front with exit 2 (never a divergence), nothing
accepted silently, outputs refused before the work, no traceback, messages that name the
problem. Every test is fast: what is refused is refused before any model is built. Part 2 (PDB files, the models' API,
tiers for accepted input): test_hostile_structure.py."""
from __future__ import annotations

import copy
import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
from tests.rendering.test_report import failing_result

from eryx import models as npm
from eryx import models_torch as tm
from eryx.errors import EryxInputError, MemoryBudgetError, StructureError
from eryx.fixtures import resolve_fixture
from eryx.validation import MAX_GRID_INTEGER, Sampling, check_grid_size
from parity.backends.dump import MANIFEST_KEY, DumpBackend, DumpError, save_npz_atomic
from parity.storage.outputs import OutputPathError, check_output_path, check_outputs
from parity.contract.result_schema import ResultTypeError, check_result_types
from tests._cli import run_cli

GRID = "--grid=-1,1,2"


def refused(capsys, *argv, fragment: str = "") -> str:
    """The command exits 2 with one line naming ``fragment``, before any stage ran."""
    code, out, err = run_cli(capsys, *argv)
    assert code == 2, (code, out, err)
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert fragment in err, err
    assert "Phase 1" not in out and "PASSED" not in out and "DIVERGED" not in out, out
    return err


@pytest.fixture(autouse=True)
def _cwd(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)


@pytest.fixture
def pdb(tmp_path) -> Path:
    """A writable copy of the synthetic fixture."""
    path = tmp_path / "in.pdb"
    shutil.copyfile(resolve_fixture("synthetic"), path)
    return path


# ------------------------------------------------------------------ inputs destroyed
@pytest.mark.parametrize("link", ["same", "symlink", "hardlink", "dot", "through-a-new-folder"])
@pytest.mark.parametrize("argv", [["run", "--json"], ["run", "--html"], ["bisect", "--json"], ["dump", "--out"]])
def test_the_fixture_is_never_overwritten(capsys, pdb, argv, link):
    before = pdb.read_bytes()
    target = {"same": str(pdb), "dot": f"./{pdb.name}",
              # 'new/..' names the PDB once the output's folder is created (run and report create it)
              "through-a-new-folder": f"new/../{pdb.name}"}.get(link, f"other-{link}.pdb")
    if link == "symlink":
        os.symlink(pdb, target)
    elif link == "hardlink":
        os.link(pdb, target)
    refused(capsys, argv[0], "--fixture", str(pdb), GRID, argv[1], target, fragment="--fixture")
    assert pdb.read_bytes() == before


def test_a_fixture_named_in_the_fixtures_folder_counts_as_an_input(capsys, pdb):
    refused(capsys, "run", "--fixtures-dir", str(pdb.parent), "--fixture", "in", GRID, "--json", str(pdb),
            fragment="--fixture")


def test_two_inputs_may_be_the_same_file():
    check_outputs({"--json": "out.json"}, {"REF": "a.npz", "CAND": "a.npz"})  # comparing a dump with itself


# ------------------------------------------------------------- giant grids: exit 2 up front
GIANT = ["--grid=-1000,1000,10", "--grid=-2,2,1000000", "--grid=-2,2,100000000000000000000",
         "--grid=-99999999999999999999999,2,1", "--grid=0,9223372036854775808,1"]


@pytest.mark.parametrize("grid", GIANT)
@pytest.mark.parametrize("command", ["run", "bisect", "dump"])
def test_giant_grids_are_input_errors(capsys, grid, command):
    extra = ["--out", "d.npz"] if command == "dump" else []
    refused(capsys, command, grid, "--no-progress", *extra, fragment="sampling" if "99999" in grid or "922" in grid
            or "1000000000" in grid else "the grid")
    assert not Path("d.npz").exists()


@pytest.mark.parametrize("grid", GIANT[:2])
def test_giant_grids_do_not_make_check_say_diverged(capsys, grid):
    code, out, err = run_cli(capsys, "check", "--stage", "hkl_grid", grid)
    # The same at every commit: abort the bisection (128), not skip (125) or bad (1, 2).
    assert code == 128 and "the grid" in err and "Traceback" not in err, (code, err)


@pytest.mark.parametrize("cls", [npm.OnePhonon, tm.OnePhonon])
def test_giant_grids_refused_by_both_models_before_building(cls, pdb):
    with pytest.raises(MemoryBudgetError, match="the grid"):
        cls(str(pdb), (-1000, 1000, 10), (-1000, 1000, 10), (-1000, 1000, 10))


def test_nightly_matrix_with_a_giant_grid_is_refused(capsys, tmp_path):
    matrix = tmp_path / "m.json"
    matrix.write_text(json.dumps({"fixtures": ["synthetic"], "dtypes": ["float64"], "devices": ["cpu"],
                                  "grid": {"synthetic": "-1000,1000,10"}}))
    refused(capsys, "nightly", "--matrix", str(matrix), "--db", str(tmp_path / "h.db"), "--no-dashboard",
            fragment="the grid")
    assert not (tmp_path / "h.db").exists()


def test_check_grid_size_counts_exactly_and_without_overflow(monkeypatch):
    from eryx import validation

    axes = [Sampling(-2, 2, 2)] * 3
    assert check_grid_size(axes, memory_limit=10**9) == 9 ** 3
    monkeypatch.setattr(validation, "default_memory_limit", lambda: 729 * 80)
    check_grid_size(axes)  # 729 points x 80 bytes: exactly at the limit is accepted
    with pytest.raises(MemoryBudgetError):
        check_grid_size([Sampling(-2, 2, 2)] * 2 + [Sampling(-2, 3, 2)])  # 891 points
    # A smaller limit of the caller's is left to the model's full estimate (its "memory" step).
    check_grid_size(axes, memory_limit=1024)
    with pytest.raises(EryxInputError, match="beyond"):
        check_grid_size([Sampling(0, MAX_GRID_INTEGER + 1, 1)] + axes[:2])
    # int64 would wrap this product to a small number; Python integers do not.
    with pytest.raises(MemoryBudgetError):
        check_grid_size([Sampling(0, 2**31 - 2, 2**31 - 1)] * 3)


# ------------------------------------------------ the reference refuses: an input error, not a divergence
@pytest.mark.parametrize("option, fragment", [("--gnm-cutoff=0.1", "no atom contacts"),
                                               ("--gamma-inter=1e-300", "too weak")])
def test_undefined_adp_is_an_input_error_naming_the_stages(capsys, option, fragment):
    err = refused(capsys, "run", GRID, option, "--no-progress", fragment=fragment)
    assert "--skip Id," in err and "Id_data_adp" not in err  # the B-factor map needs no model ADPs


def test_undefined_adp_does_not_refuse_the_stages_that_do_not_need_it(capsys):
    code, out, err = run_cli(capsys, "run", GRID, "--gnm-cutoff=0.1", "--phases", "1,2", "--no-progress")
    assert code == 0 and "PASSED" in out, err


# ------------------------------------------------------------------ accepted silently
@pytest.mark.parametrize("argv, fragment", [
    (["run", "--fixture", ""], "--fixture names nothing"),
    (["run", "--fixture", "  "], "--fixture names nothing"),
    (["run", "--json", ""], "--json names no file"),
    (["run", "--html", ""], "--html names no file"),
    (["dump", "--out", ""], "--out names no file"),
    (["report", "r.json", "--out", ""], "--out names no file"),
    (["dashboard", "--db", "r.json", "--out", ""], "--out names no file"),
    (["dashboard", "--db", "r.json", "--out", "x" * 300], "bytes long"),
    (["run", "--candidate-path", "/tmp"], "does not apply"),
    (["run", "--reference-path", "/tmp"], "does not apply"),
    (["run", "--candidate-python", sys.executable], "does not apply"),
    (["dump", "--backend", "numpy", "--backend-path", "/tmp", "--out", "d.npz"], "does not apply"),
])
def test_options_that_would_be_ignored_are_refused(capsys, argv, fragment):
    Path("r.json").write_text(json.dumps(failing_result()))
    refused(capsys, *argv, *([GRID] if argv[0] not in ("report", "dashboard") else []), fragment=fragment)


def test_empty_fixture_in_the_api_is_refused():
    with pytest.raises(EryxInputError, match="empty"):
        resolve_fixture("")


def test_nightly_db_through_a_symlink_and_reports_dir_file_are_refused(capsys, tmp_path):
    real = tmp_path / "real.db"
    real.write_bytes(b"")
    os.symlink(real, tmp_path / "link.db")
    refused(capsys, "nightly", "--db", str(tmp_path / "link.db"), "--no-dashboard", fragment="symbolic link")
    (tmp_path / "file").write_text("x")
    refused(capsys, "nightly", "--db", str(tmp_path / "h.db"), "--reports-dir", str(tmp_path / "file"),
            "--no-dashboard", fragment="is a file, not a folder")
    assert not (tmp_path / "h.db").exists() and real.read_bytes() == b""


# ----------------------------------------------------------- outputs refused before the work
@pytest.mark.parametrize("kind", ["symlink", "device", "folder", "readonly"])
def test_nightly_dashboard_refused_before_any_run(capsys, tmp_path, kind):
    target = tmp_path / "dash.html"
    if kind == "symlink":
        os.symlink(tmp_path / "elsewhere.html", target)
    elif kind == "device":
        target = Path("/dev/null")
    elif kind == "folder":
        target.mkdir()
    else:
        ro = tmp_path / "ro"
        ro.mkdir()
        ro.chmod(0o555)
        target = ro / "dash.html"
        if os.access(ro, os.W_OK):
            pytest.skip("root writes into read-only folders")
    refused(capsys, "nightly", "--db", str(tmp_path / "h.db"), "--dashboard", str(target), fragment="--dashboard")
    assert not (tmp_path / "h.db").exists()


@pytest.mark.parametrize("argv", [["run", GRID, "--json"], ["dump", GRID, "--out"], ["report", "r.json", "--out"]])
def test_a_name_longer_than_the_file_system_allows_is_refused_up_front(capsys, argv):
    Path("r.json").write_text(json.dumps(failing_result()))
    refused(capsys, *argv, "x" * 300 + ".out", fragment="bytes long")


def test_name_length_limit_is_the_file_systems():
    check_output_path("x" * 200 + ".json")  # fits, with the atomic writer's temporary name
    with pytest.raises(OutputPathError, match="bytes long"):
        check_output_path("x" * 250 + ".json")
    with pytest.raises(OutputPathError, match="bytes long"):
        check_output_path("d" * 300 + "/r.json")  # a missing folder with too long a name


def test_dumps_go_into_missing_folders(tmp_path):
    target = tmp_path / "new" / "sub" / "d.npz"
    save_npz_atomic(target, {"a": np.arange(3)})
    assert np.load(target)["a"].tolist() == [0, 1, 2]


# ------------------------------------------------------------------ report on hostile results
def _mutations():
    base = failing_result()
    i = next(i for i, s in enumerate(base["stages"]) if s.get("details"))
    cases = {
        "worst is text": lambda r: r["stages"][i].__setitem__("worst", "x"),
        "details is a list": lambda r: r["stages"][i].__setitem__("details", [1, "a"]),
        "details is a number": lambda r: r["stages"][i].__setitem__("details", 5),
        "eigen_table holds numbers": lambda r: r["stages"][i]["details"].__setitem__("eigen_table", [1, 2]),
        "ulp is text": lambda r: r["stages"][i]["details"].__setitem__("ulp", "many"),
        "worst_elements is a dict": lambda r: r["stages"][i]["details"].__setitem__("worst_elements", {"a": 1}),
        "complex with a string part": lambda r: r["stages"][i].__setitem__("worst", {"expected": {"re": "a", "im": 1}}),
        "infinite phase": lambda r: r["stages"][i].__setitem__("phase", float("inf")),
        "phase is a list": lambda r: r["stages"][i].__setitem__("phase", [1]),
        "diagnosis is a number": lambda r: r["stages"][i].__setitem__("diagnosis", 3),
        "partial bisect": lambda r: r.__setitem__("bisect", {"root_causes": ["Winv"]}),
        "bisect verdicts of numbers": lambda r: r.__setitem__("bisect", {
            "first_divergence": "Winv", "root_causes": [], "inherited": [], "crossfeed_supported": True,
            "verdicts": [1]}),
        "deeply nested arrays": lambda r: r.__setitem__("notes", json.loads("[" * 200 + "]" * 200)),
        "grid is text": lambda r: r.__setitem__("grid", "-2,2,2"),
        "passed is text": lambda r: r.__setitem__("passed", "yes"),
        "duration is infinite": lambda r: r.__setitem__("duration_s", float("inf")),
    }
    return base, cases


@pytest.mark.parametrize("case", sorted(_mutations()[1]))
def test_report_on_wrong_typed_fields_is_a_one_line_error(capsys, case):
    base, cases = _mutations()
    result = copy.deepcopy(base)
    cases[case](result)
    Path("r.json").write_text(json.dumps(result))  # allow_nan: Infinity tokens, as a hostile file has
    refused(capsys, "report", "r.json", fragment="r.json")
    assert not Path("r.html").exists()


def test_report_on_json_nested_beyond_the_parsers_limit(capsys):
    Path("r.json").write_text('{"stages": ' + "[" * 100000 + "]" * 100000 + "}")
    refused(capsys, "report", "r.json", fragment="nested too deeply")


def test_a_valid_result_still_renders_and_the_checks_can_fail(capsys):
    Path("r.json").write_text(json.dumps(failing_result()))
    code, out, err = run_cli(capsys, "report", "r.json")
    assert code == 0 and Path("r.html").exists(), err
    check_result_types(failing_result(), "x")  # the reference result passes the type checks
    with pytest.raises(ResultTypeError, match=r"stages\[0\]\.name must be text"):
        check_result_types({**failing_result(), "stages": [{"name": 1, "phase": 1, "status": "pass"}]}, "x")


@pytest.mark.parametrize("kind", ["fifo", "device", "latin1"])
def test_report_refuses_non_regular_and_non_text_files(capsys, tmp_path, kind):
    if kind == "fifo":
        path = tmp_path / "pipe.json"
        os.mkfifo(path)  # reading it would block for ever
        fragment = "not a regular file"
    elif kind == "device":
        path, fragment = "/dev/zero", "not a regular file"  # reading it never ends
    else:
        path = tmp_path / "l.json"
        path.write_bytes(b'{"fixture": "caf\xe9"}')
        fragment = "not UTF-8"
    refused(capsys, "report", str(path), "--out", str(tmp_path / "o.html"), fragment=fragment)


# ------------------------------------------------------------------ hostile dumps
def _manifest() -> dict:
    return {"schema": "eryx-parity-dump", "schema_version": 1, "backend": {"name": "numpy"},
            "spec": {"fixture": "synthetic", "pdb_path": "x.pdb", "fixture_sha256": "0" * 64,
                     "samplings": [[-1, 1, 2]] * 3, "params": {}, "device": "cpu", "dtype": "float64"},
            "quantities": {"hkl_grid": {"shape": [3], "dtype": "float64"}}, "missing": {}, "errors": {},
            "build_error": None, "dtypes": None}


def _write_dump(path: Path, manifest, arrays=None) -> Path:
    arrays = {"hkl_grid": np.zeros(3)} if arrays is None else arrays
    save_npz_atomic(path, {**arrays, MANIFEST_KEY: np.array(json.dumps(manifest))})
    return path


@pytest.mark.parametrize("edit, fragment", [
    (lambda m: [m], "manifest is a JSON list"),
    (lambda m: {k: v for k, v in m.items() if k != "spec"}, "'spec'"),
    (lambda m: {**m, "spec": {**m["spec"], "samplings": "x"}}, "spec.samplings"),
    (lambda m: {k: v for k, v in m.items() if k != "quantities"}, "'quantities'"),
    (lambda m: {**m, "quantities": {"hkl_grid": {"shape": [10**12, 10**6], "dtype": "float64"}}}, "memory limit"),
    (lambda m: {**m, "quantities": {"hkl_grid": {"shape": [3], "dtype": "nonsense"}}}, "unknown dtype"),
    (lambda m: {**m, "errors": {"K": "boom"}}, "errors.K"),
    (lambda m: {**m, "build_error": {"step": 1}}, "build_error"),
])
def test_malformed_dump_manifests_are_named(capsys, tmp_path, edit, fragment):
    ref = _write_dump(tmp_path / "a.npz", edit(_manifest()))
    cand = _write_dump(tmp_path / "b.npz", _manifest())
    refused(capsys, "compare", str(ref), str(cand), fragment=fragment)


def test_a_text_file_given_as_a_dump(capsys, tmp_path):
    (tmp_path / "a.npz").write_text("hello")
    err = refused(capsys, "compare", str(tmp_path / "a.npz"), str(tmp_path / "a.npz"), fragment="not a complete .npz archive")
    assert "pickle" not in err


def test_an_entry_declaring_an_enormous_array_is_not_loaded(tmp_path):
    path = tmp_path / "a.npz"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr(MANIFEST_KEY + ".npy", _npy_bytes(np.array(json.dumps(_manifest()))))
        header = {"descr": "<f8", "fortran_order": False, "shape": (10**12,)}
        with archive.open("hkl_grid.npy", "w") as handle:
            np.lib.format.write_array_header_1_0(handle, header)
    backend = DumpBackend(path=str(path))
    with pytest.raises(DumpError, match="holds float64 \\(1000000000000,\\)"):
        backend.open(backend.spec).get("hkl_grid")


def _npy_bytes(array) -> bytes:
    import io

    buf = io.BytesIO()
    np.save(buf, array)
    return buf.getvalue()


# ------------------------------------------------------------------ no traceback: disk full, Ctrl-C
@pytest.fixture
def tiny_disk(tmp_path):
    mount = tmp_path / "tiny"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mount)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tiny tmpfs here: {done.stderr.decode().strip()}")
    yield mount
    subprocess.run(["umount", str(mount)], capture_output=True)


def test_a_full_disk_is_one_line(capsys, tiny_disk):
    Path("r.json").write_text(json.dumps(failing_result()))
    (tiny_disk / "fill").write_bytes(b"\0" * 60_000)  # leave too little for the report
    code, out, err = run_cli(capsys, "report", "r.json", "--out", str(tiny_disk / "r.html"))
    assert code == 2 and "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert "No space left" in err
    assert not [p for p in tiny_disk.iterdir() if p.name != "fill"]  # no temporary file left behind


@pytest.mark.parametrize("argv", [["run", GRID, "--stages", "hkl_grid", "--no-progress", "--json"],
                                  ["dump", GRID, "--backend", "numpy", "--no-progress", "--out"]])
def test_a_full_disk_during_run_and_dump_is_one_line(capsys, tiny_disk, argv):
    (tiny_disk / "fill").write_bytes(b"\0" * 60_000)
    code, out, err = run_cli(capsys, *argv, str(tiny_disk / "out.bin"))
    assert code == 2 and "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert "No space left" in err
    assert not [p for p in tiny_disk.iterdir() if p.name != "fill"]


def test_the_console_script_entry_point_guards_its_imports():
    """pip's generated script imports the entry point module, then calls it: that module must
    not import the CLI (or NumPy/torch) itself, so a Ctrl-C during those imports is handled."""
    code = ("import sys; import parity.commands.entry; "
            "print(sorted(m for m in ('parity.commands.cli', 'numpy', 'torch') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"
    from importlib.metadata import entry_points

    scripts = {e.name: e.value for e in entry_points(group="console_scripts")}
    assert scripts.get("parity") == "parity.commands.entry:main"


def test_ctrl_c_during_the_imports_of_the_installed_script_exits_130():
    """Deliver SIGINT as the first thing the CLI's import does (deterministic, no timing race)."""
    code = ("import builtins, os, signal, sys\n"
            "real = builtins.__import__\n"
            "def imp(name, *a, **k):\n"
            "    if name in ('cli',) or name.endswith('parity.commands.cli'):\n"
            "        builtins.__import__ = real; os.kill(os.getpid(), signal.SIGINT)\n"
            "    return real(name, *a, **k)\n"
            "builtins.__import__ = imp\n"
            "from parity.commands.entry import main\n"
            "sys.argv = ['parity', 'stages']\n"
            "sys.exit(main())\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 130, (done.returncode, done.stderr)
    assert "Traceback" not in done.stderr and "interrupted" in done.stderr


# ------------------------------------------------------------------ hostile history stores
@pytest.mark.parametrize("table, column, value", [("stages", "max_rel", "'abc'"), ("runs", "duration_s", "'x'"),
                                                   ("phase_timings", "seconds", "x'00'")])
def test_dashboard_on_a_history_with_text_in_a_numeric_column(capsys, tmp_path, table, column, value):
    import sqlite3

    from tests.rendering.test_dashboard import make_result

    from parity.storage.history import HistoryStore

    db = tmp_path / "h.sqlite"
    with HistoryStore(db) as store:
        store.record_run(make_result())
    with sqlite3.connect(db) as conn:
        conn.execute(f"UPDATE {table} SET {column} = {value}")
    before = db.read_bytes()
    refused(capsys, "dashboard", "--db", str(db), "--out", str(tmp_path / "d.html"), fragment=f"{table}.{column}")
    assert db.read_bytes() == before and not (tmp_path / "d.html").exists()


# ------------------------------------------------------------------ interrupted nightly, warnings, paths
def test_ctrl_c_in_a_nightly_after_a_recorded_run_says_what_was_kept(capsys, tmp_path, monkeypatch):
    import uuid

    from tests.rendering.test_dashboard import make_result

    from parity.running import runner
    from parity.storage.history import HistoryStore

    calls = []

    def fake_run(fixture, **options):
        calls.append(fixture)
        if len(calls) > 1:
            raise KeyboardInterrupt
        return {**make_result(dtype=options.get("dtype", "float64")), "run_uuid": str(uuid.uuid4())}

    monkeypatch.setattr(runner, "run_parity", fake_run)
    matrix = tmp_path / "m.json"
    matrix.write_text(json.dumps({"fixtures": ["synthetic"], "dtypes": ["float64", "float32"], "devices": ["cpu"]}))
    code, out, err = run_cli(capsys, "nightly", "--matrix", str(matrix), "--db", str(tmp_path / "h.db"),
                             "--repeats", "0", "--no-dashboard", "--no-progress")
    assert code == 130 and "1 run(s) of this nightly were recorded" in err and "nothing was written" not in err
    with HistoryStore(tmp_path / "h.db") as store:
        assert len(store.runs()) == 1


def test_warnings_reach_the_user_as_one_line():
    code = ("import sys, warnings\n"
            "sys.argv = ['parity', 'stages']\n"
            "import parity.commands.entry as e\n"
            "import parity.commands.cli\n"
            "real = parity.commands.cli.main\n"
            "def noisy(argv=None):\n"
            "    import numpy as np\n"
            "    np.array([0.0]) / 0.0\n"
            "    warnings.warn('first line\\nsecond line', UserWarning)\n"
            "    return 0\n"
            "parity.commands.cli.main = noisy\n"
            "sys.exit(e.main())\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 2 and all(line.startswith("parity: warning: ") for line in lines), lines
    assert "RuntimeWarning" in lines[0] and "first line second line" in lines[1]


def test_a_folder_that_cannot_be_searched_is_not_called_missing(tmp_path, monkeypatch):
    """(Root searches any folder, so the refusal of the file system is simulated.)"""
    real = os.lstat

    def lstat(path, *args, **kwargs):
        if str(path).startswith(str(tmp_path / "locked")):
            raise PermissionError(13, "Permission denied", str(path))
        return real(path, *args, **kwargs)

    monkeypatch.setattr(os, "lstat", lstat)
    with pytest.raises(StructureError, match="permission denied"):
        resolve_fixture(tmp_path / "locked" / "in.pdb")
    with pytest.raises(EryxInputError, match="not found"):
        resolve_fixture(tmp_path / "missing" / "in.pdb")
