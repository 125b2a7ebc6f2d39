"""``parity nightly``: run a fixtures x dtypes x devices matrix into the history store.

For every combination of the matrix (fixture-major, then dtype, then device) the
nightly

1. runs the harness (:func:`parity.runner.run_parity`);
2. writes that run's HTML report to ``REPORTS_DIR/<run_uuid>.html``;
3. records the result in the :class:`~parity.history.HistoryStore` with the
   report's path and the invocation's shared ``nightly_id`` (one transaction per
   run, so a nightly killed half-way keeps every run it finished).

A combination that crashes (fixture that fails to load, out of memory, a bug in
the harness) is still recorded: as a result whose stages all say ``error`` with
the exception, so the history shows the night and the other combinations go on.

Then the regressions of this nightly's runs (:func:`parity.history.find_regressions`)
are printed, and the dashboard is rendered when asked.

Exit status: 0 when every run passed and nothing was flagged, 1 otherwise. Bad
matrix content raises :class:`MatrixError` (a ``UsageError`` and a ``ValueError``:
``parity`` prints one line and exits 2); an unusable history store raises
:class:`~parity.history.HistoryError` before anything runs (also exit 2).

The matrix (``--matrix FILE``, JSON or TOML)::

    fixtures = ["synthetic", "5zck_p1"]        # names (or PDB paths)
    dtypes   = ["float64", "float32"]
    devices  = ["cpu", "cuda"]
    phases   = [1, 2, 3, 4]                    # optional, default all
    [grid]                                     # optional, per fixture
    5zck_p1 = "-2,2,2"                         # 'min,max,L' or 'h;k;l' triples

Defaults (no file): the built-in ``synthetic`` fixture plus ``5zck_p1`` and
``7n2h`` when the fixtures directory has them; float64 and float32; ``cpu`` plus
``cuda`` when a CUDA device is present. Each fixture's grid defaults to
:data:`parity.runner.DEFAULT_GRIDS`.
"""
from __future__ import annotations

import datetime as _dt
import itertools
import json
import sys
import time
import traceback
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from .options import UsageError

__all__ = ["Matrix", "MatrixError", "default_matrix", "load_matrix", "run_nightly", "crash_result"]

DEFAULT_FIXTURES = ("synthetic", "5zck_p1", "7n2h")
DTYPES = ("float64", "float32")
MATRIX_KEYS = ("fixtures", "dtypes", "devices", "grid", "phases")


class MatrixError(UsageError, ValueError):
    """The matrix file is missing, unreadable or malformed (one line, exit 2)."""


@dataclass
class Matrix:
    fixtures: list[str]
    dtypes: list[str]
    devices: list[str]
    grid: dict[str, tuple[tuple[int, int, int], ...]] = field(default_factory=dict)
    phases: list[int] | None = None

    def combinations(self) -> list[tuple[str, str, str]]:
        return list(itertools.product(self.fixtures, self.dtypes, self.devices))


# ------------------------------------------------------------------ the matrix
def default_matrix(fixtures_dir: str | None = None) -> Matrix:
    import torch

    from eryx.fixtures import fixture_available

    fixtures = [f for f in DEFAULT_FIXTURES if f == "synthetic" or fixture_available(f, fixtures_dir)]
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    return Matrix(fixtures=fixtures, dtypes=list(DTYPES), devices=devices)


def _read_matrix_file(path: Path) -> Any:
    if not path.is_file():
        raise MatrixError(f"matrix file {path} not found")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise MatrixError(f"matrix file {path} cannot be read: {exc}") from None
    if path.suffix.lower() == ".toml":
        try:
            import tomllib
        except ModuleNotFoundError:  # Python 3.10
            try:
                import tomli as tomllib  # type: ignore[no-redef]
            except ModuleNotFoundError:
                raise MatrixError(f"matrix file {path}: reading TOML needs Python >= 3.11 or 'tomli'") from None
        try:
            return tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise MatrixError(f"matrix file {path} is not valid TOML: {exc}") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        kind = "JSON" if path.suffix.lower() == ".json" else "JSON (use .toml for TOML)"
        raise MatrixError(f"matrix file {path} is not valid {kind}: {exc.msg} at line {exc.lineno}") from None


def _names(data: dict, key: str, where: str) -> list[str] | None:
    if key not in data:
        return None
    value = data[key]
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not value:
        raise MatrixError(f"{where}: '{key}' must be a non-empty list of strings, got {value!r}")
    bad = [v for v in value if not isinstance(v, str) or not v.strip()]
    if bad:
        raise MatrixError(f"{where}: '{key}' must be a non-empty list of strings; bad entry {bad[0]!r}")
    return list(dict.fromkeys(v.strip() for v in value))


def _grid(value: Any, fixture: str, where: str) -> tuple[tuple[int, int, int], ...]:
    from eryx.errors import EryxInputError
    from eryx.validation import check_sampling

    from .options import parse_grid

    try:
        if isinstance(value, str):
            grid = parse_grid(value)
        elif isinstance(value, list) and len(value) == 3 and all(isinstance(v, int) for v in value):
            grid = (tuple(value),) * 3
        elif isinstance(value, list) and len(value) == 3 and all(isinstance(v, list) for v in value):
            grid = tuple(tuple(v) for v in value)
        else:
            raise MatrixError(f"{where}: grid for {fixture!r} must be 'min,max,L' or 'h;k;l' triples "
                              f"(e.g. \"-4,4,3;-17,17,3;-29,29,3\"), got {value!r}")
        return tuple(check_sampling(s, a).as_tuple() for s, a in zip(grid, "hkl"))
    except EryxInputError as exc:
        raise MatrixError(f"{where}: grid for {fixture!r}: {exc}") from None
    except UsageError as exc:
        if isinstance(exc, MatrixError):
            raise
        raise MatrixError(f"{where}: grid for {fixture!r}: {exc}") from None


def load_matrix(path: str | Path | None, fixtures_dir: str | None = None) -> Matrix:
    """The default matrix (``path`` None) or the validated one from a JSON/TOML file.

    Every problem raises :class:`MatrixError` naming the file and the key.
    """
    import torch

    from eryx.errors import EryxInputError
    from eryx.fixtures import resolve_fixture

    base = default_matrix(fixtures_dir)
    if path is None:
        return base
    path = Path(path)
    where = f"matrix file {path}"
    data = _read_matrix_file(path)
    if not isinstance(data, dict):
        raise MatrixError(f"{where}: expected an object/table with {', '.join(MATRIX_KEYS)}, "
                          f"got {type(data).__name__}")
    unknown = [k for k in data if k not in MATRIX_KEYS]
    if unknown:
        raise MatrixError(f"{where}: unknown key(s) {', '.join(map(repr, unknown))}; "
                          f"known keys: {', '.join(MATRIX_KEYS)}")
    fixtures = _names(data, "fixtures", where) or base.fixtures
    dtypes = _names(data, "dtypes", where) or base.dtypes
    devices = _names(data, "devices", where) or base.devices
    for fixture in fixtures:
        try:
            resolve_fixture(fixture, fixtures_dir)
        except EryxInputError as exc:
            raise MatrixError(f"{where}: fixture {fixture!r}: {str(exc).split(';')[0]}") from None
    bad = [d for d in dtypes if d not in DTYPES]
    if bad:
        raise MatrixError(f"{where}: unsupported dtype {bad[0]!r} in 'dtypes'; use {' or '.join(DTYPES)}")
    for device in devices:
        try:
            dev = torch.device(device)
        except (RuntimeError, ValueError) as exc:
            raise MatrixError(f"{where}: bad device {device!r} in 'devices': {exc}") from None
        if dev.type not in ("cpu", "cuda"):
            raise MatrixError(f"{where}: unsupported device {device!r} in 'devices'; use cpu or cuda[:N]")
        if dev.type == "cuda" and not torch.cuda.is_available():
            raise MatrixError(f"{where}: device {device!r} in 'devices' is not available on this machine "
                              f"(no CUDA); drop it or run this matrix on a GPU machine")
    grid: dict[str, tuple] = {}
    if "grid" in data:
        if not isinstance(data["grid"], dict):
            raise MatrixError(f"{where}: 'grid' must be an object {{fixture: \"min,max,L;...\"}}, "
                              f"got {data['grid']!r}")
        for fixture, value in data["grid"].items():
            if fixture not in fixtures:
                raise MatrixError(f"{where}: 'grid' names fixture {fixture!r}, which is not in 'fixtures'")
            grid[fixture] = _grid(value, fixture, where)
    phases = None
    if "phases" in data:
        value = data["phases"]
        if isinstance(value, str):
            value = [p for p in value.replace(" ", "").split(",") if p]
        if isinstance(value, int) and not isinstance(value, bool):
            value = [value]
        if (not isinstance(value, list) or not value
                or not all(isinstance(p, (int, str)) and not isinstance(p, bool) and str(p).isdigit() for p in value)):
            raise MatrixError(f"{where}: 'phases' must be a non-empty list of phase numbers 1-4, got {data['phases']!r}")
        phases = sorted({int(p) for p in value})
        bad_phases = [p for p in phases if p not in (1, 2, 3, 4)]
        if bad_phases:
            raise MatrixError(f"{where}: unknown phase(s) {bad_phases} in 'phases'; phases are 1, 2, 3, 4")
    return Matrix(fixtures=fixtures, dtypes=dtypes, devices=devices, grid=grid, phases=phases)


# ------------------------------------------------------------------ crashes
def crash_result(fixture: str, dtype: str, device: str, exc: BaseException, *, grid=None,
                 phases: Sequence[int] | None = None, fixtures_dir: str | None = None,
                 started_at: str, duration_s: float) -> dict:
    """A schema-1 result for a run that raised: every selected stage says ``error``."""
    from .runner import DEFAULT_PARAMS, SCHEMA_VERSION, default_grid, device_name, environment
    from .stages import select

    message = f"run crashed before the comparison finished: {type(exc).__name__}: {exc}"
    tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__, limit=12))
    stages = []
    for i, stage in enumerate(select(phases, None)):
        stages.append({
            "name": stage.name, "phase": stage.phase, "tier": stage.tier, "kind": stage.kind,
            "description": stage.description, "status": "error", "passed": False,
            "rtol": None, "atol": None, "max_abs": None, "max_rel": None, "n_mismatch": 0, "n_total": 0,
            "worst": None, "message": message, "duration_s": 0.0,
            "details": {"traceback": tb} if i == 0 else {},
        })
    try:
        from eryx.fixtures import resolve_fixture

        pdb_path = str(resolve_fixture(fixture, fixtures_dir))
    except Exception:  # the crash may be this very lookup
        pdb_path = None
    try:
        dev_name = device_name(device)
    except Exception:
        dev_name = str(device)
    samplings = grid or default_grid(fixture)
    return {
        "schema_version": SCHEMA_VERSION,
        "run_uuid": str(uuid.uuid4()),
        "fixture": fixture, "pdb_path": pdb_path,
        "grid": dict(zip(("hsampling", "ksampling", "lsampling"), [list(s) for s in samplings])),
        "params": dict(DEFAULT_PARAMS), "device": device, "device_name": dev_name, "dtype": dtype,
        "passed": False, "first_failure": stages[0]["name"] if stages else None, "fault": None,
        "started_at": started_at, "duration_s": duration_s, "environment": environment(),
        "phase_timings": {}, "stages": stages, "crash": {"type": type(exc).__name__, "message": str(exc)},
    }


# ------------------------------------------------------------------ the nightly
def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def run_nightly(matrix_path: str | Path | None = None, db: str | Path = "reports/history.sqlite",
                reports_dir: str | Path = "reports/runs", fixtures_dir: str | None = None,
                dashboard: str | Path | None = None, progress: bool = True) -> int:
    """Run the matrix, record every run, report regressions. Returns the exit status.

    Raises
    ------
    MatrixError
        Bad matrix file (before anything runs or is opened).
    parity.history.HistoryError
        The store cannot be opened or written (before anything runs: the file is
        left untouched), or a write fails later (earlier runs stay recorded).
    """
    from tqdm.auto import tqdm

    from .history import HistoryStore, find_regressions
    from .report import render_report
    from .runner import run_parity

    matrix = load_matrix(matrix_path, fixtures_dir)
    reports_dir = Path(reports_dir)
    nightly_id = f"nightly-{_dt.datetime.now(_dt.timezone.utc):%Y%m%dT%H%M%SZ}-{uuid.uuid4().hex[:8]}"
    combos = matrix.combinations()
    out = lambda s: tqdm.write(s, file=sys.stdout)  # noqa: E731  (prints above the bar)

    with HistoryStore(db) as store:  # HistoryError here: nothing has run, the file is untouched
        print(f"{nightly_id}: {len(combos)} run(s): fixtures {', '.join(matrix.fixtures)}; dtypes "
              f"{', '.join(matrix.dtypes)}; devices {', '.join(matrix.devices)}; store {db}", flush=True)
        run_ids: list[int] = []
        n_passed = n_crashed = 0
        bar = tqdm(combos, desc="parity nightly", unit="run", disable=not progress)
        for fixture, dtype, device in bar:
            bar.set_postfix_str(f"{fixture} {device} {dtype}")
            started, t0 = _now(), time.perf_counter()
            crashed = False
            try:
                result = run_parity(fixture, phases=matrix.phases, progress=False,
                                    samplings=matrix.grid.get(fixture), device=device, dtype=dtype,
                                    fixtures_dir=fixtures_dir)
            except Exception as exc:  # recorded as an all-error run; the others go on
                crashed = True
                result = crash_result(fixture, dtype, device, exc, grid=matrix.grid.get(fixture),
                                      phases=matrix.phases, fixtures_dir=fixtures_dir, started_at=started,
                                      duration_s=time.perf_counter() - t0)
            report_path: Path | None = reports_dir / f"{result['run_uuid']}.html"
            try:
                render_report(result, report_path)
            except Exception as exc:  # a report that cannot be drawn must not lose the run
                out(f"  warning: no HTML report for {fixture} {device} {dtype}: {type(exc).__name__}: {exc}")
                report_path = None
            run_ids.append(store.record_run(result, report_path=report_path, nightly_id=nightly_id))
            n_passed += bool(result["passed"])
            n_crashed += crashed
            out(_run_line(result, crashed, report_path))
        bar.close()

        mine = set(run_ids)
        regressions = [r for r in find_regressions(store) if r.run_id in mine]
        n = len(combos)
        print(f"{nightly_id}: {n_passed} of {n} run(s) passed"
              + (f", {n_crashed} crashed" if n_crashed else "")
              + f"; {len(regressions)} regression(s) flagged")
        for r in regressions:
            link = f"  report: {store.resolve_report(r.report_path)}" if r.report_path else ""
            print(f"  REGRESSION {r.fixture}/{r.device}/{r.dtype} {r.kind}: {r.message}{link}")
        if dashboard:
            from .dashboard import render_dashboard

            path = render_dashboard(store, Path(dashboard), regressions=find_regressions(store))
            print(f"dashboard: {path}")
    return 0 if n_passed == n and not regressions else 1


def _run_line(result: dict, crashed: bool, report_path: Path | None) -> str:
    what = f"  {result['fixture']} {result['device']} {result['dtype']}:"
    stages = result["stages"]
    if crashed:
        verdict = f"CRASHED ({result['crash']['type']}: {result['crash']['message']})"
    elif result["passed"]:
        verdict = f"passed ({sum(s['status'] == 'pass' for s in stages)} of {len(stages)} stages agree)"
    else:
        bad = sum(s["status"] in ("fail", "error") for s in stages)
        verdict = f"DIVERGED at {result['first_failure']} ({bad} of {len(stages)} stages fail or error)"
    dur = result.get("duration_s")
    return f"{what} {verdict}" + (f" {dur:.1f} s" if isinstance(dur, (int, float)) else "") + (
        f"; report {report_path}" if report_path else "")
