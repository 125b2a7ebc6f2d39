"""``parity nightly``: run a fixtures x dtypes x devices matrix into the history store.

For every combination of the matrix (fixture-major, then dtype, then device) the
nightly

1. runs the harness (:func:`parity.running.runner.run_parity`);
2. times it again ``repeats`` times (after a discarded warm-up) in a fresh
   single-threaded worker process (:func:`time_in_worker`) and adds the samples to
   the result as ``result["timing"]`` (see :func:`measure_timing`); the run's own
   ``phase_timings`` stay its wall-clock times; and measures the torch candidate's
   gradient cost (:func:`parity.benchmarking.gradients.measure_gradients`) into
   ``result["gradient_timing"]``, judged like a phase's time, its peak memory by
   :mod:`parity.storage.memory_regressions` (docs/gradients.md, section 4);
3. writes that run's HTML report to ``REPORTS_DIR/<run_uuid>.html``;
4. records the result in the :class:`~parity.storage.history.HistoryStore` with the
   report's path and the invocation's shared ``nightly_id`` (one transaction per
   run, so a nightly killed half-way keeps every run it finished).

A combination that crashes (fixture that fails to load, out of memory, a bug in
the harness) is still recorded: as a result whose stages all say ``error`` with
the exception, so the history shows the night and the other combinations go on.

Then the regressions of this nightly's runs (:func:`parity.storage.history.find_regressions`:
status flips, error growth, slowdowns of a phase, the total or the gradient cost, growth
of the gradient benchmark's peak memory) are printed and the dashboard is rendered (by default next to the store).

Outputs live next to the history store: reports in ``<db folder>/runs/``, the
dashboard in ``<db folder>/dashboard.html`` unless told otherwise; an output that
names the same file as an input (``--db``, ``--matrix``) is refused before
anything is opened.

Cost: the timing repeats cost ``warmup + repeats`` single-threaded runs per
combination plus one interpreter start.  Measured on the project's 2-core machine
(load average 3-5), matrix synthetic + 5zck_p1 x float64 + float32: the default
(1 + 3) took 24-49 s of nightlies of 36-72 s, i.e. 6-12 s per combination, about
3x the parity run itself.  ``--repeats 0`` turns it off.

Exit status: 0 when every run passed and no numerical regression (status flip,
error growth) was flagged, 1 otherwise; a slowdown or a growth of the gradient
benchmark's peak memory (``memory_growth``) alone exits 0 unless
``fail_on_slowdown``.  Bad matrix content raises :class:`MatrixError` (a
``UsageError`` and a ``ValueError``: ``parity`` prints one line and exits 2); an
unusable history store raises :class:`~parity.storage.history.HistoryError` before
anything runs (also exit 2).

The matrix (``--matrix FILE``, JSON or TOML)::

    fixtures = ["synthetic", "5zck_p1"]        # names (or PDB paths)
    dtypes   = ["float64", "float32"]
    devices  = ["cpu", "cuda"]
    phases   = [1, 2, 3, 4]                    # optional, default all
    [grid]                                     # optional, per fixture
    5zck_p1 = "-2,2,2"                         # 'min,max,L' or 'h;k;l' triples
    references = ["upstream-eryx"]             # optional: third opinions (or a table name = "path")

Third opinions: with ``$ERYX_PEERS_DIR`` holding the original eryx's snapshot, the default
matrix adds, per fixture, a float64 CPU run with reference ``upstream-eryx`` (the public
NumPy implementation) against the same candidate. It is kept in its own series
(``"<fixture> [upstream-eryx vs torch]"``) and judged by its changes only: its known
divergence (the shared Amat buffer) does not fail the nightly, a status flip or an error
that grows does.

Defaults (no file): the built-in ``synthetic`` fixture plus ``5zck_p1`` and
``7n2h`` when the fixtures directory has them; float64 and float32; ``cpu`` plus
``cuda`` when a CUDA device is present. Each fixture's grid defaults to
:data:`parity.running.runner.DEFAULT_GRIDS`.
"""
from __future__ import annotations

import datetime as _dt
import itertools
import json
import os
import subprocess
import sys
import time
import traceback
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, NamedTuple, Sequence, TextIO

from parity.storage.history import DEFAULT_PATH
from parity.storage.outputs import same_file
from parity.contract.options import UsageError
from parity.contract.results import DIVERGING, Status, Verdict, run_result, stage_record
from parity.contract.provenance import device_name, environment
from parity.benchmarking import timing
from parity.storage.regressions import NUMERICAL_KINDS, RegressionKind, SlowdownRule

__all__ = ["Combination", "Matrix", "MatrixError", "TimingError", "default_matrix", "load_matrix",
           "run_nightly", "crash_result", "default_outputs", "refuse_same_file", "measure_timing",
           "time_in_worker", "timing_clock", "DEFAULT_DB", "DEFAULT_REPEATS", "DEFAULT_WARMUP"]

DEFAULT_FIXTURES = ("synthetic", "5zck_p1", "7n2h")
DTYPES = ("float64", "float32")
MATRIX_KEYS = ("fixtures", "dtypes", "devices", "grid", "phases", "references")
#: The project's own reference; any other reference is a third opinion (see :class:`Combination`).
OWN_REFERENCE = "numpy"
#: The public implementation the nightly asks for a third opinion when its snapshot is found
#: (``$ERYX_PEERS_DIR/apeck12-eryx-*.tar.gz``).
THIRD_OPINION = "upstream-eryx"
#: The history store unless told otherwise (relative to the current folder).
DEFAULT_DB = DEFAULT_PATH


class MatrixError(UsageError, ValueError):
    """The matrix file is missing, unreadable or malformed (one line, exit 2)."""


class Combination(NamedTuple):
    """One cell of the matrix.  Adding an axis (e.g. a backend) is one field here,
    one key in :data:`MATRIX_KEYS`, one list in :class:`Matrix` and one entry in
    :meth:`run_options`."""

    fixture: str
    dtype: str
    device: str
    reference: str = OWN_REFERENCE
    reference_path: str | None = None

    @property
    def opinion(self) -> bool:
        """A third opinion (another reference): judged by its changes, not by agreeing.

        A public implementation with a known bug never agrees with the candidate; what the
        nightly watches there is whether the way they disagree changes (status flips, error
        growth), which are regressions like any other.
        """
        return self.reference != OWN_REFERENCE

    def run_options(self) -> dict[str, str]:
        """Keyword arguments of :func:`parity.running.runner.run_parity` besides the fixture."""
        options = {"dtype": self.dtype, "device": self.device}
        if self.opinion:
            options.update(reference=self.reference, reference_path=self.reference_path)
        return options

    def label(self) -> str:
        return f"{self.fixture} {self.device} {self.dtype}" + (f" vs {self.reference}" if self.opinion else "")


@dataclass
class Matrix:
    fixtures: list[str]
    dtypes: list[str]
    devices: list[str]
    grid: dict[str, tuple[tuple[int, int, int], ...]] = field(default_factory=dict)
    phases: list[int] | None = None
    #: Other references as third opinions: (backend name, its checkout or snapshot path).
    opinions: list[tuple[str, str | None]] = field(default_factory=list)

    def combinations(self) -> list[Combination]:
        """Fixture-major, then dtype, then device; then one float64 CPU run per fixture and third opinion
        (the public implementations compute in float64 on the CPU only)."""
        own = [Combination(*values) for values in itertools.product(self.fixtures, self.dtypes, self.devices)]
        return own + [Combination(f, "float64", "cpu", name, path) for name, path in self.opinions
                      for f in self.fixtures]

    def describe(self) -> str:
        return (f"fixtures {', '.join(self.fixtures)}; dtypes {', '.join(self.dtypes)}; "
                f"devices {', '.join(self.devices)}"
                + (f"; third opinion(s): reference {', '.join(n for n, _ in self.opinions)}" if self.opinions else ""))


# ------------------------------------------------------------------ the matrix
def default_matrix(fixtures_dir: str | None = None) -> Matrix:
    import torch

    from eryx.fixtures import fixture_available

    fixtures = [f for f in DEFAULT_FIXTURES if f == "synthetic" or fixture_available(f, fixtures_dir)]
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    snapshot = upstream_snapshot()
    opinions = [(THIRD_OPINION, snapshot)] if snapshot else []
    return Matrix(fixtures=fixtures, dtypes=list(DTYPES), devices=devices, opinions=opinions)


def upstream_snapshot() -> str | None:
    """The original eryx's snapshot in ``$ERYX_PEERS_DIR`` (the third opinion), or None."""
    import os

    root = os.environ.get("ERYX_PEERS_DIR")
    if not root:
        return None
    found = sorted(Path(root).glob("apeck12-eryx-*.tar.gz"))
    return str(found[0]) if found else None


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
    from eryx.validation import check_grid_size, check_sampling

    from parity.contract.options import parse_grid

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
        axes = tuple(check_sampling(s, a) for s, a in zip(grid, "hkl"))
        check_grid_size(axes)  # a grid no backend can hold is refused before the night starts
        return tuple(s.as_tuple() for s in axes)
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
    # A matrix file asks for third opinions explicitly; only the default matrix adds one on its own.
    opinions = _references(data["references"], where) if "references" in data else []
    return Matrix(fixtures=fixtures, dtypes=dtypes, devices=devices, grid=grid, phases=phases, opinions=opinions)


def _references(value: Any, where: str) -> list[tuple[str, str | None]]:
    """``references``: a list of backend names or a table {name: checkout path}; numpy is implied."""
    from parity.backends import registered_backends

    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        pairs = [(v, upstream_snapshot() if v == THIRD_OPINION else None) for v in value]
    elif isinstance(value, dict) and all(isinstance(k, str) and isinstance(v, (str, type(None)))
                                         for k, v in value.items()):
        pairs = list(value.items())
    else:
        raise MatrixError(f"{where}: 'references' must be a list of backend names or a table "
                          f"{{name = \"checkout path\"}}, got {value!r}")
    known = registered_backends()
    for name, _ in pairs:
        if name not in known and ":" not in name:
            raise MatrixError(f"{where}: unknown backend {name!r} in 'references'; known: {', '.join(sorted(known))}")
    return [(n, p) for n, p in pairs if n != OWN_REFERENCE]


# ------------------------------------------------------------------ crashes
def crash_result(fixture: str, dtype: str, device: str, exc: BaseException, *, grid=None,
                 phases: Sequence[int] | None = None, fixtures_dir: str | None = None,
                 started_at: str, duration_s: float) -> dict:
    """A schema-1 result for a run that raised: every selected stage says ``error``."""
    from parity.running.runner import DEFAULT_PARAMS, default_grid
    from parity.stages import select

    message = f"run crashed before the comparison finished: {type(exc).__name__}: {exc}"
    tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__, limit=12))
    stages = [stage_record(stage.name, stage.phase, status=Status.ERROR, tier=stage.tier, kind=stage.kind,
                           description=stage.description, message=message,
                           details={"traceback": tb} if i == 0 else {})
              for i, stage in enumerate(select(phases, None))]
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
    first = stages[0]["name"] if stages else None
    return run_result(
        fixture=fixture, pdb_path=pdb_path,
        grid=dict(zip(("hsampling", "ksampling", "lsampling"), [list(s) for s in samplings])),
        params=dict(DEFAULT_PARAMS), device=device, device_name=dev_name, dtype=dtype,
        verdict=Verdict.DIVERGED, first_failure=first, incomplete=[], fault=None, started_at=started_at,
        duration_s=duration_s, environment=environment(), phase_timings={}, stages=stages,
        crash={"type": type(exc).__name__, "message": str(exc)})


# ------------------------------------------------------------------ outputs
def default_outputs(db: str | Path) -> tuple[Path, Path]:
    """``(reports_dir, dashboard)`` next to the history store: ``<db folder>/runs``, ``<db folder>/dashboard.html``."""
    folder = Path(db).parent
    return folder / "runs", folder / "dashboard.html"


def refuse_same_file(outputs: Mapping[str, str | Path | None], inputs: Mapping[str, str | Path | None]) -> None:
    """Raise :class:`UsageError` when an output names the same file as an input.

    ``outputs``/``inputs`` map option names (``"--dashboard"``) to paths (None:
    not given).  Checked before anything is opened, so nothing is written.
    """
    for out_name, out_path in outputs.items():
        for in_name, in_path in inputs.items():
            if out_path is None or in_path is None or out_name == in_name:
                continue
            if same_file(out_path, in_path):
                raise UsageError(f"{out_name} and {in_name} both name {in_path}: the output would overwrite "
                                 f"the input; give {out_name} another path")


# ------------------------------------------------------------------ timing repeats
#: Timing repeats per run (after the warm-up) unless told otherwise.
DEFAULT_REPEATS = 3
#: Discarded runs before the repeats (first calls pay imports, allocator and kernel set-up).
DEFAULT_WARMUP = 1
#: A timing worker that takes longer than this is stopped (its run keeps no timing).
TIMING_TIMEOUT_S = 3600.0
#: The worker's environment: one thread for every math library, set before they load.
SINGLE_THREAD_ENV = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1",
                     "NUMEXPR_NUM_THREADS": "1", "VECLIB_MAXIMUM_THREADS": "1"}
_PACKAGE_ROOT = Path(__file__).resolve().parents[2]


class TimingError(RuntimeError):
    """The timing worker failed; the run is recorded without repeat timings."""


def timing_clock(device: str) -> str:
    """``"cpu"`` (process CPU time) on CPU devices, ``"wall"`` on accelerators.

    On a CPU shared with other jobs, wall time measures the machine's load as much
    as the code: single-threaded process CPU time does not count the time the
    process waits for a core (measured on the project's 2-core machine: wall time of
    phase 4 varied x12 between runs of unchanged code, single-threaded CPU time
    +-25 %).  Accelerator kernels run outside the process's CPU time, so there wall
    time is the measure.
    """
    import torch

    return "cpu" if torch.device(device).type == "cpu" else "wall"


def measure_timing(combination: "Combination", *, grid=None, phases: Sequence[int] | None = None,
                   fixtures_dir: str | None = None, repeats: int = DEFAULT_REPEATS,
                   warmup: int = DEFAULT_WARMUP) -> dict[str, Any]:
    """Time one combination ``warmup + repeats`` times in this process.

    Timed by :func:`parity.benchmarking.timing.time_call`. Each repeat is a full
    :func:`parity.running.runner.run_parity` on a fresh context (the
    same work as the recorded run); a phase's time is the clock's advance between
    the end of the stage before it and the end of its last stage, so the lazy model
    builds land in the phase that triggers them, as in the run's own timings.
    As ``timeit`` does, the cyclic garbage collector is run before each repeat and
    paused during it: collections triggered by earlier repeats' garbage otherwise
    land in random stages (measured: the gradient stages' CPU time varied x2 between
    repeats with the collector on, +-10 % with it paused).

    Returns
    -------
    dict
        ``{"clock": "cpu"|"wall", "threads": int, "repeats": int, "warmup": int,
        "statistic": "min", "samples": {phase: [seconds] * repeats, "total": [...]},
        "min": {...}, "spread": {target: max - min}}`` (seconds).
    """
    import torch

    from parity.running.runner import run_parity

    clock_name = timing_clock(combination.device)
    clock = timing.CLOCKS[clock_name]
    runs: list[dict[str, float]] = []  # per-phase seconds of every call, warm-ups included

    def once() -> None:
        per_phase: dict[str, float] = {}
        mark = [clock()]

        def on_result(record: dict) -> None:
            now = clock()
            key = str(record["phase"])
            per_phase[key] = per_phase.get(key, 0.0) + now - mark[0]
            mark[0] = now

        run_parity(combination.fixture, phases=phases, progress=False, samplings=grid,
                   fixtures_dir=fixtures_dir, on_result=on_result, **combination.run_options())
        runs.append(per_phase)

    totals = timing.time_call(once, warmup=warmup, min_repeats=repeats, clock=clock_name, pause_gc=True)
    samples: dict[str, list[float]] = {}
    for per_phase, total in zip(runs[warmup:], totals):
        for key, seconds in per_phase.items():
            samples.setdefault(key, []).append(seconds)
        samples.setdefault("total", []).append(total)
    return {"clock": clock_name, "threads": torch.get_num_threads(), "repeats": repeats, "warmup": warmup,
            "statistic": "min", "samples": samples,
            "min": {key: min(values) for key, values in samples.items()},
            "spread": {key: max(values) - min(values) for key, values in samples.items()}}


def time_in_worker(combination: "Combination", *, grid=None, phases: Sequence[int] | None = None,
                   fixtures_dir: str | None = None, repeats: int = DEFAULT_REPEATS,
                   warmup: int = DEFAULT_WARMUP, timeout_s: float = TIMING_TIMEOUT_S) -> dict[str, Any]:
    """:func:`measure_timing` in a fresh single-threaded Python process (pyperf's worker model).

    A separate process gives every night the same start (imports, allocator, kernel
    caches) and lets the thread counts be set before NumPy and torch load.

    Raises
    ------
    TimingError
        The worker exited non-zero, timed out or answered nonsense.
    """
    spec = {"combination": combination._asdict(), "grid": [list(s) for s in grid] if grid else None,
            "phases": list(phases) if phases else None, "fixtures_dir": fixtures_dir,
            "repeats": repeats, "warmup": warmup}
    env = {**os.environ, **SINGLE_THREAD_ENV}
    code = (f"import sys; sys.path.insert(0, {str(_PACKAGE_ROOT)!r}); "
            "from parity.benchmarking.nightly import _timing_worker_main; sys.exit(_timing_worker_main())")
    try:
        proc = subprocess.run([sys.executable, "-c", code], input=json.dumps(spec), capture_output=True,
                              text=True, timeout=timeout_s, env=env)
    except subprocess.TimeoutExpired:
        raise TimingError(f"timing worker did not finish within {timeout_s:g} s") from None
    if proc.returncode != 0:
        tail = [line for line in proc.stderr.splitlines() if line.strip()][-1:] or ["no output"]
        raise TimingError(f"timing worker exited with status {proc.returncode}: {tail[0]}")
    try:
        timing = json.loads(proc.stdout.strip().splitlines()[-1])
        if not isinstance(timing, dict) or not isinstance(timing.get("samples"), dict):
            raise ValueError("no samples")
    except (IndexError, ValueError) as exc:
        raise TimingError(f"timing worker answered no timing ({exc})") from None
    return timing


def _timing_worker_main() -> int:
    """Entry point of the worker process: a JSON spec on stdin, the timing as one JSON line on stdout."""
    spec = json.loads(sys.stdin.read())
    reply, sys.stdout = sys.stdout, sys.stderr  # whatever the run prints must not corrupt the reply
    import torch

    torch.set_num_threads(1)
    grid = tuple(tuple(s) for s in spec["grid"]) if spec["grid"] else None
    timing = measure_timing(Combination(**spec["combination"]), grid=grid, phases=spec["phases"],
                            fixtures_dir=spec["fixtures_dir"], repeats=spec["repeats"], warmup=spec["warmup"])
    reply.write(json.dumps(timing) + "\n")
    reply.flush()
    return 0


# ------------------------------------------------------------------ the nightly
def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def _progress_enabled(progress: bool, stream: TextIO | None = None) -> bool:
    """Bars only on a terminal: on a pipe or a log file tqdm's carriage-return frames are noise."""
    stream = sys.stderr if stream is None else stream
    isatty = getattr(stream, "isatty", None)
    return bool(progress and callable(isatty) and isatty())


def run_nightly(matrix_path: str | Path | None = None, db: str | Path = DEFAULT_DB,
                reports_dir: str | Path | None = None, fixtures_dir: str | None = None,
                dashboard: str | Path | None = None, *, write_dashboard: bool = True, progress: bool = True,
                repeats: int = DEFAULT_REPEATS, warmup: int = DEFAULT_WARMUP, fail_on_slowdown: bool = False,
                rule: SlowdownRule | None = None) -> int:
    """Run the matrix, record every run, report regressions. Returns the exit status.

    Parameters
    ----------
    matrix_path
        JSON/TOML matrix (None: :func:`default_matrix`).
    db
        The history store.
    reports_dir, dashboard
        Where the runs' HTML reports and the dashboard go; None: next to ``db``
        (:func:`default_outputs`).  ``write_dashboard=False`` skips the dashboard.
    progress
        Draw a progress bar -- only ever on a terminal (``sys.stderr.isatty()``).
    repeats, warmup
        Timing repeats per run (0: no repeats; slowdowns are then judged on the
        run's own wall-clock phase times), after ``warmup`` discarded runs, in a
        single-threaded worker process (:func:`time_in_worker`).
    fail_on_slowdown
        Exit 1 when a slowdown or a memory growth is flagged; otherwise one alone is printed
        and the exit status stays 0.  Numerical regressions (status flips, error
        growth) and failed runs always exit 1.
    rule
        The slowdown thresholds (default :class:`~parity.storage.regressions.SlowdownRule`).

    Raises
    ------
    UsageError
        An output names the same file as an input, or ``repeats``/``warmup`` < 0.
    MatrixError
        Bad matrix file (before anything runs or is opened).
    parity.storage.history.HistoryError
        The store cannot be opened or written (before anything runs: the file is
        left untouched), or a write fails later (earlier runs stay recorded).
    """
    from tqdm.auto import tqdm

    from parity.storage.history import HistoryStore, find_regressions
    from parity.storage.inputs import check_nightly_outputs
    from parity.rendering.report import render_report
    from parity.running.runner import run_parity

    if not isinstance(repeats, int) or repeats < 0 or not isinstance(warmup, int) or warmup < 0:
        raise UsageError(f"--repeats and --warmup must be integers >= 0, got {repeats!r} and {warmup!r}")
    default_reports, default_dashboard = default_outputs(db)
    reports_dir = Path(reports_dir) if reports_dir is not None else default_reports
    dashboard = (Path(dashboard) if dashboard is not None else default_dashboard) if write_dashboard else None
    refuse_same_file({"--dashboard": dashboard, "--reports-dir": reports_dir},
                     {"--db": db, "--matrix": matrix_path})
    check_nightly_outputs(db, reports_dir, dashboard)
    matrix = load_matrix(matrix_path, fixtures_dir)
    rule = rule or SlowdownRule()
    nightly_id = f"nightly-{_dt.datetime.now(_dt.timezone.utc):%Y%m%dT%H%M%SZ}-{uuid.uuid4().hex[:8]}"
    combos = matrix.combinations()
    out = lambda s: tqdm.write(s, file=sys.stdout)  # noqa: E731  (prints above the bar)
    t_start = time.perf_counter()
    timing_s = 0.0

    with HistoryStore(db) as store:  # HistoryError here: nothing has run, the file is untouched
        print(f"{nightly_id}: {len(combos)} run(s): {matrix.describe()}; store {db}; reports {reports_dir}",
              flush=True)
        run_ids: list[int] = []
        n_passed = n_crashed = n_opinions = n_opinions_crashed = 0
        bar = tqdm(combos, desc="parity nightly", unit="run", disable=not _progress_enabled(progress))
        try:
            for combo in bar:
                bar.set_postfix_str(combo.label())
                grid = matrix.grid.get(combo.fixture)
                started, t0 = _now(), time.perf_counter()
                crashed = False
                try:
                    result = run_parity(combo.fixture, phases=matrix.phases, progress=False, samplings=grid,
                                        fixtures_dir=fixtures_dir, **combo.run_options())
                except Exception as exc:  # recorded as an all-error run; the others go on
                    crashed = True
                    result = crash_result(combo.fixture, combo.dtype, combo.device, exc, grid=grid,
                                          phases=matrix.phases, fixtures_dir=fixtures_dir, started_at=started,
                                          duration_s=time.perf_counter() - t0)
                if repeats and not crashed and not combo.opinion:
                    t1 = time.perf_counter()
                    try:
                        result["timing"] = time_in_worker(combo, grid=grid, phases=matrix.phases,
                                                          fixtures_dir=fixtures_dir, repeats=repeats, warmup=warmup)
                    except TimingError as exc:  # the numbers still count; only this night's timing is lost
                        out(f"  warning: no timing repeats for {combo.label()}: {exc}")
                    try:  # the torch candidate's gradient cost and memory (parity.benchmarking.gradients)
                        from parity.benchmarking.gradients import measure_gradients
                        from parity.contract.spec import default_grid

                        result["gradient_timing"] = measure_gradients(
                            combo.fixture, grid or default_grid(combo.fixture), combo.dtype, combo.device,
                            fixtures_dir=fixtures_dir, repeats=repeats)
                    except Exception as exc:  # the run still counts; only this night's gradient timing is lost
                        out(f"  warning: no gradient timing for {combo.label()}: {type(exc).__name__}: {exc}")
                    timing_s += time.perf_counter() - t1
                report_path: Path | None = reports_dir / f"{result['run_uuid']}.html"
                try:
                    render_report(result, report_path)
                except Exception as exc:  # a report that cannot be drawn must not lose the run
                    out(f"  warning: no HTML report for {combo.label()}: {type(exc).__name__}: {exc}")
                    report_path = None
                run_ids.append(store.record_run(result, report_path=report_path, nightly_id=nightly_id))
                if combo.opinion:
                    n_opinions += 1
                    n_opinions_crashed += crashed
                else:
                    n_passed += bool(result["passed"])
                n_crashed += crashed
                out(_run_line(result, crashed, report_path))
            bar.close()

            mine = set(run_ids)
            all_regressions = find_regressions(store, rule=rule)
            regressions = [r for r in all_regressions if r.run_id in mine]
            numerical = [r for r in regressions if r.kind in NUMERICAL_KINDS]
            slowdowns = [r for r in regressions if r.kind is RegressionKind.SLOWDOWN]
            growths = [r for r in regressions if r.kind is RegressionKind.MEMORY_GROWTH]
            n = len(combos) - n_opinions
            print(f"{nightly_id}: {n_passed} of {n} run(s) passed"
                  + (f", {n_crashed} crashed" if n_crashed else "")
                  + (f"; {n_opinions} third-opinion run(s), judged by their changes" if n_opinions else "")
                  + f"; {len(numerical)} numerical regression(s), {len(slowdowns)} slowdown(s) flagged"
                  + (f", {len(growths)} memory growth(s) flagged" if growths else ""))
            for r in regressions:
                link = f"  report: {store.resolve_report(r.report_path)}" if r.report_path else ""
                print(f"  REGRESSION {r.fixture}/{r.device}/{r.dtype} {r.kind}: {r.message}{link}")
            if (slowdowns or growths) and not fail_on_slowdown:
                print("  (slowdowns and memory growths are reported, not failed: pass --fail-on-slowdown to "
                      "exit 1 on them)")
            if repeats:
                print(f"timing: {repeats} repeat(s) + {warmup} warm-up per run, single-threaded worker, "
                      f"{timing_s:.0f} s of the nightly's {time.perf_counter() - t_start:.0f} s")
            if dashboard is not None:
                from parity.rendering.dashboard import render_dashboard

                path = render_dashboard(store, dashboard, regressions=all_regressions, rule=rule)
                print(f"dashboard: {path}")
        except KeyboardInterrupt:
            if run_ids:  # what was recorded stays recorded (each run is committed on its own)
                from parity.contract.options import Interrupted

                raise Interrupted(f"parity: interrupted; {len(run_ids)} run(s) of this nightly were recorded in "
                                  f"{db} with their reports (the run in progress, if any, and the dashboard "
                                  "were not)") from None
            raise
    failed = (n_passed < n or n_opinions_crashed > 0 or bool(numerical)
              or (fail_on_slowdown and bool(slowdowns or growths)))
    return 1 if failed else 0


def _run_line(result: dict, crashed: bool, report_path: Path | None) -> str:
    from parity.storage.history import series_fixture

    what = f"  {series_fixture(result)} {result['device']} {result['dtype']}:"
    stages = result["stages"]
    if crashed:
        verdict = f"CRASHED ({result['crash']['type']}: {result['crash']['message']})"
    elif result["passed"]:
        verdict = f"passed ({sum(s['status'] == Status.PASS for s in stages)} of {len(stages)} stages agree)"
    else:
        bad = sum(s["status"] in DIVERGING for s in stages)
        verdict = f"DIVERGED at {result['first_failure']} ({bad} of {len(stages)} stages fail or error)"
    dur = result.get("duration_s")
    return f"{what} {verdict}" + (f" {dur:.1f} s" if isinstance(dur, (int, float)) else "") + (
        f"; report {report_path}" if report_path else "")

