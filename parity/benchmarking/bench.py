"""Benchmarks: the NumPy reference vs the torch port, per phase and end to end.

``parity bench [--quick] [--json FILE] [--device DEV ...]`` measures every case
itself in ONE process, so the speed-ups it prints compare NumPy and torch
timings taken on the same machine in the same run:

* each case is run once to warm up (imports, allocator, torch kernels), then
  ``repeats`` times with :func:`time.perf_counter`; the median and the
  interquartile range of the repeats are reported;
* CUDA work is synchronised before the clock stops;
* the peak resident memory of each end-to-end case is measured in a fresh
  subprocess (``resource.getrusage(RUSAGE_SELF).ru_maxrss``), so that cases do
  not inherit each other's peaks; the RSS of a subprocess that only imports the
  libraries is reported as ``baseline_rss_mb`` in the machine section.

What a "phase" times (on a model already built, so each phase is timed alone):

1. grid + k-vectors: Miller grid, q, resolution mask, BZ k-vectors
   (``_setup_grid``);
2. A/M/Linv + structure factors: the rigid-body projection, the projected mass
   matrix and its inverse Cholesky factor, then the projected structure factors
   at a fixed q sample (the harness's :data:`parity.running.runner.Q_SAMPLE_SIZE` points);
3. Hessian/K/phonons/covariance: contacts (NumPy: neighbour search + dense
   all-atom Hessian; torch: contact list + unit blocks), then K(k), the phonons,
   K^-1, the covariance and the ADP scaling (``_setup_phonons``);
4. ``apply_disorder()``: the full diffuse map.

End to end = model construction + ``apply_disorder()``.

The NumPy reference is skipped (not failed) where its memory estimate exceeds
:data:`NUMPY_MEMORY_CAP` (e.g. 193l's dense all-atom Hessian needs ~30 GiB):
the torch backend alone is timed there.

The pytest-benchmark suite in ``tests/benchmarks`` uses the same workloads
(:class:`Workload`) with pytest-benchmark's timer.
"""
from __future__ import annotations

import copy
import datetime as _dt
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np

Grid = tuple[tuple[int, int, int], tuple[int, int, int], tuple[int, int, int]]

#: The small grid: 5zck_p1's golden grid.
SMALL_GRID: Grid = ((-2, 2, 2), (-2, 2, 2), (-2, 2, 2))
#: The standard grid of the eryx paper's 5zck_p1 maps.
STANDARD_GRID: Grid = ((-4, 4, 3), (-17, 17, 3), (-29, 29, 3))
#: Grid-size sweep: 5zck_p1 with the standard h, k ranges and l in (-l, l); the
#: last point is the standard grid itself.
GRID_SWEEP_L = (3, 7, 14, 29)
#: The issue-7 scale case: 193l lysozyme (8 x 1001 atoms) on 41 x 41 x 25 points.
SCALE_GRID: Grid = ((-10, 10, 2), (-10, 10, 2), (-6, 6, 2))
#: Atom-count sweep on the small grid (n_asu x n_at: 4x28, 3x58, 1x1001, 8x1001).
ATOM_SWEEP = ("5zck_p1", "7n2h", "6o2h_clean", "193l")
#: The NumPy reference is not run where its own memory estimate is above this.
NUMPY_MEMORY_CAP = 4 * 2**30
PHASES = ("1", "2", "3", "4")
END_TO_END = "end_to_end"
#: pytest-benchmark groups / table labels.
PHASE_GROUPS = {
    "1": "phase1-grid-kvec",
    "2": "phase2-structure-factors",
    "3": "phase3-phonons-covariance",
    "4": "phase4-apply-disorder",
    END_TO_END: "end-to-end",
}
JSON_SCHEMA = "parity-bench/1"


def sweep_grid(l_max: int) -> Grid:
    return ((-4, 4, 3), (-17, 17, 3), (-l_max, l_max, 3))


def grid_points(grid: Sequence[Sequence[int]]) -> int:
    return int(np.prod([int(L * (hi - lo) + 1) for lo, hi, L in grid]))


def grid_label(grid: Sequence[Sequence[int]]) -> str:
    grid = tuple(tuple(int(v) for v in s) for s in grid)
    if grid == SMALL_GRID:
        return "small"
    if grid == STANDARD_GRID:
        return "standard"
    if grid == SCALE_GRID:
        return "scale"
    if grid[:2] == STANDARD_GRID[:2] and grid[2][0] == -grid[2][1] and grid[2][2] == 3:
        return f"l+-{grid[2][1]}"
    return ";".join(",".join(str(v) for v in s) for s in grid)


def q_sample_indices(grid: Sequence[Sequence[int]], size: int | None = None) -> np.ndarray:
    """The harness's fixed, evenly spread q sample (the phase-2 stages' points)."""
    from parity.contract.spec import Q_SAMPLE_SIZE

    n_q = grid_points(grid)
    size = Q_SAMPLE_SIZE if size is None else size
    return np.unique(np.linspace(0, n_q - 1, min(n_q, size)).round().astype(np.int64))


# ------------------------------------------------------------------ workloads
def _sync(device: str) -> None:
    if str(device).startswith("cuda"):
        import torch

        torch.cuda.synchronize(device)


@dataclass
class Workload:
    """One fixture x grid x backend: builds the model and hands out timed callables.

    ``backend`` is ``'numpy'`` (always float64 on the CPU) or ``'torch'``.
    """

    fixture: str
    grid: Grid
    backend: str
    dtype: str = "float64"
    device: str = "cpu"
    fixtures_dir: str | None = None
    _pdb: str | None = field(default=None, repr=False)
    _model: Any = field(default=None, repr=False)

    @property
    def pdb_path(self) -> str:
        if self._pdb is None:
            from eryx.fixtures import resolve_fixture

            self._pdb = str(resolve_fixture(self.fixture, self.fixtures_dir))
        return self._pdb

    @property
    def label(self) -> str:
        return backend_label(self.backend, self.dtype, self.device)

    def build(self):
        """A fresh model (construction only)."""
        if self.backend == "numpy":
            from eryx import models as npm

            return npm.OnePhonon(self.pdb_path, *self.grid, memory_limit=NUMPY_MEMORY_CAP)
        import torch

        from eryx import models_torch as tm

        dtype = {"float64": torch.float64, "float32": torch.float32}[self.dtype]
        model = tm.OnePhonon(self.pdb_path, *self.grid, device=self.device, dtype=dtype)
        _sync(self.device)
        return model

    @property
    def model(self):
        """A model built once and shared by the phase callables."""
        if self._model is None:
            self._model = self.build()
        return self._model

    def end_to_end(self) -> Callable[[], Any]:
        def run():
            out = self.build().apply_disorder()
            _sync(self.device)
            return out

        return run

    def phase(self, phase: str | int) -> Callable[[], Any]:
        """The callable that times ``phase`` on the prepared model (built here)."""
        phase = str(phase)
        if phase == END_TO_END:
            return self.end_to_end()
        m = self.model
        fns = _numpy_phases(m, self.grid) if self.backend == "numpy" else _torch_phases(m, self.grid, self.device)
        if phase not in fns:
            raise KeyError(f"unknown phase {phase!r}: phases are 1, 2, 3, 4 and {END_TO_END!r}")
        return fns[phase]

    def n_q(self, phase: str | int) -> int:
        return len(q_sample_indices(self.grid)) if str(phase) == "2" else grid_points(self.grid)

    def spec(self) -> dict:
        """JSON-able description (for the peak-RSS subprocess)."""
        return {"pdb": self.pdb_path, "fixture": self.fixture, "grid": [list(s) for s in self.grid],
                "backend": self.backend, "dtype": self.dtype, "device": self.device}


def _numpy_phases(m, grid) -> dict[str, Callable[[], Any]]:
    from eryx import models as npm

    c = m.crystal
    q_idx = q_sample_indices(grid)

    def phase1():
        copy.copy(m)._setup_grid()

    def phase2():
        A = npm.build_A(c.asu_xyz)
        Mmat = npm.build_Mmat(A, npm.build_M_allatoms(c.masses, c.n_asu))
        npm.build_Linv(Mmat)
        return m.structure_factors_at(q_idx)

    def phase3():
        neighbours = npm.find_neighbours(c.asu_xyz, c.cell_origin, m.gnm_cutoff)
        hessian = npm.project_hessian(npm.build_hessian_allatoms(neighbours, m.n_asu, m.n_at, m.gamma), m.Amat)
        m2 = copy.copy(m)
        m2.hessian = hessian
        m2._setup_phonons()

    return {"1": phase1, "2": phase2, "3": phase3, "4": m.apply_disorder}


def _torch_phases(m, grid, device) -> dict[str, Callable[[], Any]]:
    import torch

    from eryx import functional_torch as st

    q = m.q_grid[torch.as_tensor(q_sample_indices(grid), device=m.device)]
    c = m.crystal

    def synced(fn):
        def run():
            out = fn()
            _sync(device)
            return out

        return run

    def phase1():
        copy.copy(m)._setup_grid(getattr(m, "q_vectors", None))

    def phase2():
        A = st.build_A(m.asu_xyz)
        st.build_Linv(st.build_Mmat(A, m.masses))
        return m.structure_factors(q)

    def phase3():
        contacts = st.find_contacts(c.asu_xyz, c.cell_origin, m.gnm_cutoff)
        contacts = {k: torch.as_tensor(v, device=m.device) for k, v in contacts.items()}
        H_intra, H_inter = st.hessian_unit_blocks(contacts, m.Amat, m.n_asu)
        m2 = copy.copy(m)
        m2.hessian = st.combine_hessian(H_intra, H_inter, m.gamma_intra, m.gamma_inter)
        m2._setup_phonons()

    return {"1": synced(phase1), "2": synced(phase2), "3": synced(phase3), "4": synced(m.apply_disorder)}


def backend_label(backend: str, dtype: str, device: str) -> str:
    return "numpy" if backend == "numpy" else f"torch-{device}-{dtype}"


def backends(devices: Iterable[str]) -> list[tuple[str, str, str]]:
    """(backend, dtype, device): NumPy, then torch float64 and float32 per device."""
    out = [("numpy", "float64", "cpu")]
    for device in devices:
        out += [("torch", "float64", device), ("torch", "float32", device)]
    return out


def default_devices() -> list[str]:
    import torch

    return ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


# ------------------------------------------------------------------ timing
def measure(fn: Callable[[], Any], *, min_repeats: int = 3, max_repeats: int = 15,
            target_s: float = 2.0, warmup: int = 1) -> list[float]:
    """Warm up, then time ``fn`` at least ``min_repeats`` times and until ``target_s``
    seconds are spent (at most ``max_repeats``). Returns the per-call seconds."""
    for _ in range(warmup):
        fn()
    times: list[float] = []
    while len(times) < min_repeats or (sum(times) < target_s and len(times) < max_repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return times


def summarize(times: Sequence[float]) -> dict:
    q1, q3 = np.percentile(times, [25, 75]) if len(times) > 1 else (times[0], times[0])
    return {"median_s": float(statistics.median(times)), "iqr_s": float(q3 - q1), "repeats": len(times),
            "times_s": [float(t) for t in times]}


# ------------------------------------------------------------------ contention
class CpuContention:
    """CPU used by OTHER processes while a measurement ran, in cores (Linux /proc/stat).

    ``busy(all processes) - cpu(this process and its children)`` over the wall time:
    0 on a quiet machine; 1.0 means another process kept a whole core busy, which
    slows multi-threaded torch (and BLAS) far more than its share.
    """

    def __init__(self) -> None:
        self._start = self._sample()

    @staticmethod
    def _sample():
        try:
            fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
            ticks = [int(v) for v in fields]
            # user nice system idle iowait irq softirq steal [guest guest_nice: inside user/nice]
            busy = sum(ticks[:3]) + sum(ticks[5:8])
        except (OSError, ValueError, IndexError):
            return None
        t = os.times()
        return busy / os.sysconf("SC_CLK_TCK"), t.user + t.system + t.children_user + t.children_system, \
            time.perf_counter()

    def other_cores(self) -> float | None:
        end = self._sample()
        if self._start is None or end is None or end[2] - self._start[2] < 0.05:
            return None
        busy = end[0] - self._start[0]
        own = end[1] - self._start[1]
        return max(0.0, round((busy - own) / (end[2] - self._start[2]), 2))


#: Cases measured while other processes used more than this many cores are marked.
CONTENTION_WARN_CORES = 0.25


# ------------------------------------------------------------------ peak memory
_CHILD = "import sys; from parity.benchmarking.bench import _rss_child; _rss_child(sys.argv[1])"


def _rss_mb() -> float:
    """Peak resident memory of THIS process image, in MB.

    On Linux this is ``VmHWM`` from /proc/self/status: the high-water mark of the
    current address space, which starts afresh at exec. ``ru_maxrss`` is not used
    there because Linux carries it across fork + exec: a child of a 1 GB parent
    reports at least 1 GB however little it uses. Elsewhere ``ru_maxrss``.
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except (OSError, ValueError, IndexError):
        pass
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    return rss / 2**20 if sys.platform == "darwin" else rss / 1024


def _rss_child(spec_json: str) -> None:
    """Entry point of the peak-RSS subprocess: run one end-to-end case, print JSON."""
    spec = json.loads(spec_json)
    import torch  # noqa: F401  (the baseline includes the libraries every case imports)

    from eryx import models, models_torch  # noqa: F401

    out: dict[str, Any] = {}
    if spec.get("backend"):
        w = Workload(spec["fixture"], tuple(tuple(s) for s in spec["grid"]), spec["backend"],
                     spec["dtype"], spec["device"], _pdb=spec["pdb"])
        if str(spec["device"]).startswith("cuda"):
            torch.cuda.reset_peak_memory_stats(spec["device"])
        w.end_to_end()()
        if str(spec["device"]).startswith("cuda"):
            out["peak_gpu_mb"] = torch.cuda.max_memory_allocated(spec["device"]) / 2**20
    out["peak_rss_mb"] = _rss_mb()
    print("PARITY_BENCH_RSS " + json.dumps(out), flush=True)


def peak_memory(spec: dict | None, timeout: float = 1800.0) -> dict:
    """Peak RSS (MB) of one end-to-end run in a fresh interpreter (``spec`` None:
    the libraries imported, nothing run). Returns ``{'peak_rss_mb': ..}`` and, on
    CUDA, ``peak_gpu_mb``; ``{'error': ..}`` when the subprocess fails."""
    proc = subprocess.run([sys.executable, "-c", _CHILD, json.dumps(spec or {})], capture_output=True,
                          text=True, timeout=timeout)
    for line in proc.stdout.splitlines():
        if line.startswith("PARITY_BENCH_RSS "):
            return json.loads(line.split(" ", 1)[1])
    tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
    return {"error": f"peak-RSS subprocess failed (exit {proc.returncode}): {tail}"}


# ------------------------------------------------------------------ machine
def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _mem_total_gb() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 2**20, 1)
    except (OSError, ValueError):
        pass
    return None


def _git_dirty() -> bool | None:
    here = Path(__file__).resolve().parent
    try:
        out = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=here,
                             capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return bool(out.stdout.strip()) if out.returncode == 0 else None


def machine_info(devices: Sequence[str]) -> dict:
    import gemmi
    import scipy
    import torch

    from parity.contract.provenance import git_commit

    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count()
    names = []
    for device in devices:
        if str(device).startswith("cuda"):
            names.append({"device": device, "name": torch.cuda.get_device_name(device)})
        else:
            names.append({"device": device, "name": cpu_model()})
    return {
        "cpu_model": cpu_model(), "cores": os.cpu_count(), "usable_cores": usable,
        "torch_threads": torch.get_num_threads(), "torch_interop_threads": torch.get_num_interop_threads(),
        "thread_env": {k: os.environ[k] for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")
                       if k in os.environ},
        "mem_total_gb": _mem_total_gb(), "hostname": platform.node(), "platform": platform.platform(),
        "python": platform.python_version(), "numpy": np.__version__, "scipy": scipy.__version__,
        "torch": torch.__version__, "gemmi": gemmi.__version__,
        "cuda": torch.version.cuda if torch.cuda.is_available() else None,
        "git_commit": git_commit(), "git_dirty": _git_dirty(), "devices": names,
        "load_avg_start": _load_avg(),
    }


def _load_avg() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


# ------------------------------------------------------------------ the plan
@dataclass(frozen=True)
class Case:
    suite: str
    fixture: str
    grid: Grid
    phase: str
    backend: str
    dtype: str
    device: str

    @property
    def key(self) -> tuple:
        return (self.fixture, self.grid, self.phase)


def plan(quick: bool, devices: Sequence[str]) -> list[Case]:
    """The cases of a run, NumPy first within each (fixture, grid, phase)."""
    bk = backends(devices)
    cases: list[Case] = []

    def add(suite, fixture, grid, phases):
        for phase in phases:
            cases.extend(Case(suite, fixture, grid, phase, *b) for b in bk)

    add("small", "synthetic", SMALL_GRID, (END_TO_END,))
    add("small", "5zck_p1", SMALL_GRID, (END_TO_END,) + PHASES)
    if quick:
        add("atoms", "7n2h", SMALL_GRID, (END_TO_END,))
        return cases
    add("standard", "5zck_p1", STANDARD_GRID, (END_TO_END,) + PHASES)
    for l_max in GRID_SWEEP_L:
        if sweep_grid(l_max) != STANDARD_GRID:  # the standard grid is the sweep's last point
            add("grid-sweep", "5zck_p1", sweep_grid(l_max), (END_TO_END,))
    for fixture in ATOM_SWEEP:
        if fixture != "5zck_p1":  # measured in the small suite
            add("atoms", fixture, SMALL_GRID, (END_TO_END,))
    add("scale", "193l", SCALE_GRID, (END_TO_END,))
    return cases


# ------------------------------------------------------------------ running
def run_cases(cases: Sequence[Case], *, fixtures_dir: str | None = None, memory: bool = True,
              min_repeats: int = 3, target_s: float = 2.0, log: Callable[[str], None] | None = None) -> list[dict]:
    """Time every case (one process); returns the case records."""
    from eryx.errors import FixtureNotFoundError, MemoryBudgetError

    log = log or (lambda s: None)
    workloads: dict[tuple, Workload] = {}
    skipped_models: dict[tuple, str] = {}
    records = []
    for i, case in enumerate(cases, 1):
        wkey = (case.fixture, case.grid, case.backend, case.dtype, case.device)
        w = workloads.setdefault(wkey, Workload(case.fixture, case.grid, case.backend, case.dtype,
                                                case.device, fixtures_dir))
        rec: dict[str, Any] = {
            "suite": case.suite, "fixture": case.fixture, "grid": [list(s) for s in case.grid],
            "grid_label": grid_label(case.grid), "phase": case.phase, "group": PHASE_GROUPS[case.phase],
            "n_q": w.n_q(case.phase), "backend": case.backend, "dtype": case.dtype, "device": case.device,
            "status": "ok", "median_s": None, "iqr_s": None, "repeats": 0, "times_s": [],
            "peak_rss_mb": None, "other_cpu_cores": None, "reason": None,
        }
        try:
            if wkey in skipped_models:
                raise _Skip(skipped_models[wkey])
            fn = w.phase(case.phase)
            rec["n_atoms"] = int(w.model.n_asu * w.model.n_at)
            rec["n_asu"] = int(w.model.n_asu)
            contention = CpuContention()
            rec.update(summarize(measure(fn, min_repeats=min_repeats, target_s=target_s)))
            rec["other_cpu_cores"] = contention.other_cores()
            if memory and case.phase == END_TO_END:
                mem = peak_memory(w.spec())
                if "error" in mem:
                    rec["reason"] = mem["error"]
                rec["peak_rss_mb"] = mem.get("peak_rss_mb")
                if "peak_gpu_mb" in mem:
                    rec["peak_gpu_mb"] = mem["peak_gpu_mb"]
        except FixtureNotFoundError as exc:
            rec.update(status="skipped", reason=f"fixture not available ({str(exc).split(';')[0]})")
            skipped_models[wkey] = rec["reason"]
        except MemoryBudgetError as exc:
            rec.update(status="skipped", reason=f"too big for the bench's NumPy cap "
                                                f"({NUMPY_MEMORY_CAP / 2**30:g} GiB): {exc}")
            skipped_models[wkey] = rec["reason"]
        except _Skip as exc:
            rec.update(status="skipped", reason=str(exc))
        except Exception as exc:  # a broken case is reported, the others still run
            rec.update(status="error", reason=f"{type(exc).__name__}: {exc}")
        records.append(rec)
        log(f"[{i}/{len(cases)}] {_case_line(rec)}")
        if case.backend != "numpy" and str(case.device).startswith("cuda"):
            import torch

            torch.cuda.empty_cache()
    return records


class _Skip(Exception):
    pass


def ratios(records: Sequence[dict]) -> list[dict]:
    """Speed-up of each torch case over NumPy in the same run: numpy_s / torch_s."""
    numpy = {(r["fixture"], json.dumps(r["grid"]), r["phase"]): r for r in records
             if r["backend"] == "numpy" and r["status"] == "ok"}
    out = []
    for r in records:
        ref = numpy.get((r["fixture"], json.dumps(r["grid"]), r["phase"]))
        if r["backend"] == "numpy" or r["status"] != "ok" or ref is None:
            continue
        out.append({"fixture": r["fixture"], "grid": r["grid"], "grid_label": r["grid_label"], "phase": r["phase"],
                    "dtype": r["dtype"], "device": r["device"], "numpy_s": ref["median_s"],
                    "torch_s": r["median_s"], "speedup": ref["median_s"] / r["median_s"]})
    return out


# ------------------------------------------------------------------ output
def _fmt_s(x: float | None) -> str:
    if x is None:
        return "-"
    if x < 1e-3:
        return f"{x * 1e6:.0f} us"
    if x < 1:
        return f"{x * 1e3:.1f} ms"
    return f"{x:.2f} s"


def _case_line(rec: dict) -> str:
    what = f"{rec['fixture']} {rec['grid_label']} {rec['phase']} {backend_label(rec['backend'], rec['dtype'], rec['device'])}"
    if rec["status"] != "ok":
        return f"{what}: {rec['status']} ({rec['reason']})"
    return f"{what}: {_fmt_s(rec['median_s'])} (IQR {_fmt_s(rec['iqr_s'])}, n={rec['repeats']})"


def format_table(payload: dict) -> str:
    m = payload["machine"]
    lines = [f"parity bench  {m['cpu_model']}, {m['usable_cores']} cores, torch {m['torch']} "
             f"({m['torch_threads']} threads), numpy {m['numpy']}"
             + "".join(f"; {d['device']}: {d['name']}" for d in m["devices"] if d["device"] != "cpu"),
             f"commit {(m['git_commit'] or '?')[:12]}{' (dirty)' if m.get('git_dirty') else ''}; "
             f"median of N repeats after a warm-up; speed-up = NumPy time / torch time (same run); "
             f"peak RSS of a fresh process (baseline {_fmt_mb(m.get('baseline_rss_mb'))} after imports)",
             f"other processes used {m.get('other_cpu_cores_mean')} cores on average during the run "
             f"(0 = quiet machine)"]
    speed = {(r["fixture"], json.dumps(r["grid"]), r["phase"], r["dtype"], r["device"]): r["speedup"]
             for r in payload["ratios"]}
    header = (f"  {'fixture':<11} {'grid':<9} {'n_q':>7} {'phase':<26} {'backend':<20} {'median':>9} "
              f"{'IQR':>9} {'n':>3} {'speed-up':>8} {'peak RSS':>9}")
    suite = None
    for r in payload["cases"]:
        if r["suite"] != suite:
            suite = r["suite"]
            lines += ["", f"[{suite}]", header]
        label = backend_label(r["backend"], r["dtype"], r["device"])
        if r["status"] != "ok":
            lines.append(f"  {r['fixture']:<11} {r['grid_label']:<9} {r['n_q']:>7} {PHASE_GROUPS[r['phase']]:<26} "
                         f"{label:<20} {r['status'].upper()}: {(r['reason'] or '')[:90]}")
            continue
        s = speed.get((r["fixture"], json.dumps(r["grid"]), r["phase"], r["dtype"], r["device"]))
        s_txt = "-" if r["backend"] == "numpy" else ("n/a" if s is None else f"x{s:.2f}")
        busy = (r.get("other_cpu_cores") or 0) > CONTENTION_WARN_CORES
        lines.append(f"  {r['fixture']:<11} {r['grid_label']:<9} {r['n_q']:>7} {PHASE_GROUPS[r['phase']]:<26} "
                     f"{label:<20} {_fmt_s(r['median_s']):>9} {_fmt_s(r['iqr_s']):>9} {r['repeats']:>3} "
                     f"{s_txt:>8} {_fmt_mb(r['peak_rss_mb']):>9}"
                     + (f"  ! other processes: {r['other_cpu_cores']:.2f} cores" if busy else ""))
    n_bad = sum(1 for r in payload["cases"] if r["status"] == "error")
    lines += ["", f"{len(payload['cases'])} cases: {sum(1 for r in payload['cases'] if r['status'] == 'ok')} measured, "
                  f"{sum(1 for r in payload['cases'] if r['status'] == 'skipped')} skipped, {n_bad} errors "
                  f"({payload['duration_s']:.0f} s)"]
    return "\n".join(lines)


def _fmt_mb(x: float | None) -> str:
    return "-" if x is None else f"{x:.0f} MB"


# ------------------------------------------------------------------ markdown
DOC_BEGIN = "<!-- bench-results:begin (generated by: python -m parity.benchmarking.bench --update-doc JSON DOC) -->"
DOC_END = "<!-- bench-results:end -->"


def markdown_summary(payload: dict, source: str | None = None) -> str:
    """The results of a ``parity bench --json`` file as Markdown tables (for docs/benchmarks.md)."""
    m = payload["machine"]
    cases = [r for r in payload["cases"]]
    variants = []
    for r in cases:
        v = (r["backend"], r["dtype"], r["device"])
        if v not in variants:
            variants.append(v)
    by = {(r["fixture"], json.dumps(r["grid"]), r["phase"], r["backend"], r["dtype"], r["device"]): r for r in cases}

    def cell(r: dict | None, numpy: dict | None = None) -> str:
        if r is None:
            return "-"
        if r["status"] != "ok":
            return "skipped" if r["status"] == "skipped" else "error"
        txt = _fmt_s(r["median_s"])
        if numpy is not None and numpy.get("status") == "ok":
            txt += f" (x{numpy['median_s'] / r['median_s']:.2f})"
        if (r.get("other_cpu_cores") or 0) > CONTENTION_WARN_CORES:
            txt += " !"
        return txt

    def label(v) -> str:
        return "NumPy" if v[0] == "numpy" else f"torch {v[2]} {v[1]}"

    gpus = ", ".join(f"{d['device']}: {d['name']}" for d in m["devices"] if d["device"] != "cpu")
    lines = [
        f"Measured {payload['started_at'][:10]} by `parity bench{' --quick' if payload.get('quick') else ''}`"
        + (f" (`{source}`)" if source else "") + ".",
        "",
        f"* Machine: {m['cpu_model']}, {m['usable_cores']} usable cores, {m.get('mem_total_gb')} GiB RAM"
        + (f"; {gpus}" if gpus else "; no GPU") + f"; {m['platform']}",
        f"* Software: Python {m['python']}, NumPy {m['numpy']}, torch {m['torch']} ({m['torch_threads']} threads), "
        f"SciPy {m['scipy']}, gemmi {m['gemmi']}; commit `{(m.get('git_commit') or '?')[:12]}`"
        + (" with uncommitted changes" if m.get("git_dirty") else ""),
        f"* Other processes used {m.get('other_cpu_cores_mean')} cores on average during the run; cases marked "
        f"**!** were measured while they used more than {CONTENTION_WARN_CORES} cores (inflated timings).",
        "* Times: median of the repeats after one warm-up; (xN) = NumPy median / torch median in the same run "
        "(above 1: torch is faster).",
        "",
    ]
    for suite, fixture, grid in (("small", "5zck_p1", SMALL_GRID), ("standard", "5zck_p1", STANDARD_GRID)):
        rows = [p for p in (END_TO_END,) + PHASES
                if any((fixture, json.dumps([list(s) for s in grid]), p, *v) in by for v in variants)]
        if not rows:
            continue
        g = json.dumps([list(s) for s in grid])
        lines += [f"**{fixture}, {suite} grid** {[list(s) for s in grid]} ({grid_points(grid)} points; "
                  f"phase 2 at {len(q_sample_indices(grid))} q)", "",
                  "| phase | " + " | ".join(label(v) for v in variants) + " |",
                  "|---" * (len(variants) + 1) + "|"]
        for p in rows:
            numpy = by.get((fixture, g, p, "numpy", "float64", "cpu"))
            lines.append(f"| {PHASE_GROUPS[p]} | " + " | ".join(
                cell(by.get((fixture, g, p, *v)), None if v[0] == "numpy" else numpy) for v in variants) + " |")
        lines.append("")

    def sweep(title: str, keyed: list[tuple[str, Grid]], first_col: str, first) -> None:
        present = [(f, g) for f, g in keyed if any((f, json.dumps([list(s) for s in g]), END_TO_END, *v) in by
                                                   for v in variants)]
        if not present:
            return
        lines.extend([title, "", f"| {first_col} | " + " | ".join(label(v) for v in variants)
                      + " | peak RSS " + " / ".join(label(v) for v in variants) + " |",
                      "|---" * (len(variants) + 2) + "|"])
        for f, g in present:
            gk = json.dumps([list(s) for s in g])
            rs = [by.get((f, gk, END_TO_END, *v)) for v in variants]
            numpy = by.get((f, gk, END_TO_END, "numpy", "float64", "cpu"))
            mem = " / ".join(_fmt_mb(r.get("peak_rss_mb")) if r else "-" for r in rs)
            lines.append(f"| {first(f, g, rs)} | " + " | ".join(
                cell(r, None if v[0] == "numpy" else numpy) for r, v in zip(rs, variants)) + f" | {mem} |")
        lines.append("")

    sweep("**Grid-size sweep** (5zck_p1, end to end, h and k as the standard grid, l in (-l, l) at L = 3)",
          [("5zck_p1", sweep_grid(l)) for l in GRID_SWEEP_L], "l range (grid points)",
          lambda f, g, rs: f"+-{g[2][1]} ({grid_points(g)})")

    def atoms(f, g, rs):
        n = next((r.get("n_atoms") for r in rs if r and r.get("n_atoms")), None)
        n_asu = next((r.get("n_asu") for r in rs if r and r.get("n_asu")), None)
        return f"{f} ({n_asu} x {n // n_asu if n and n_asu else '?'} atoms)"

    sweep("**Atom-count sweep** (small grid, end to end)", [(f, SMALL_GRID) for f in ATOM_SWEEP],
          "fixture (ASUs x atoms)", atoms)
    skipped = [r for r in cases if r["status"] == "skipped"]
    for r in skipped:
        lines.append(f"* skipped: {r['fixture']} {r['grid_label']} {backend_label(r['backend'], r['dtype'], r['device'])}"
                     f": {r['reason']}")
    peak_b = m.get("baseline_rss_mb")
    lines.append(f"* Peak RSS: fresh process, construction + apply_disorder once; a process that only imports "
                 f"the libraries peaks at {_fmt_mb(peak_b)}.")
    return "\n".join(lines).rstrip() + "\n"


def update_doc(json_path: str | os.PathLike, doc_path: str | os.PathLike) -> None:
    """Replace the generated results block of ``doc_path`` with the tables of ``json_path``."""
    payload = json.loads(Path(json_path).read_text())
    doc = Path(doc_path)
    text = doc.read_text()
    if DOC_BEGIN not in text or DOC_END not in text:
        raise ValueError(f"{doc}: no generated block ({DOC_BEGIN} ... {DOC_END})")
    head, rest = text.split(DOC_BEGIN, 1)
    _, tail = rest.split(DOC_END, 1)
    rel = os.path.relpath(Path(json_path).resolve(), Path.cwd()) if Path(json_path).is_absolute() else str(json_path)
    doc.write_text(head + DOC_BEGIN + "\n" + markdown_summary(payload, rel) + DOC_END + tail)


def main(quick: bool = False, json_path: str | os.PathLike | None = None, devices: Sequence[str] | None = None,
         *, fixtures_dir: str | None = None, memory: bool = True, min_repeats: int = 3,
         target_s: float | None = None) -> int:
    """``parity bench``: run, print the table, optionally write JSON.

    Returns 0 when every case was measured or skipped (fixture missing, NumPy
    too big), 1 when a case raised (its error is in the table and the JSON).
    """
    import torch

    from parity.storage.outputs import check_output_path, write_json
    from parity.contract.options import UsageError

    if json_path is not None:  # refuse a bad output before measuring anything
        try:
            check_output_path(json_path, "--json")
        except ValueError as exc:
            raise UsageError(str(exc)) from None
    if target_s is None:
        target_s = 1.0 if quick else 2.0
    devices = list(dict.fromkeys(devices or default_devices()))
    for device in devices:
        if str(device).startswith("cuda") and not torch.cuda.is_available():
            raise UsageError(f"--device {device}: CUDA is not available on this machine")
        try:
            torch.device(device)
        except RuntimeError as exc:
            raise UsageError(f"--device {device!r}: {exc}") from None
    t0 = time.perf_counter()
    started = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    contention = CpuContention()
    machine = machine_info(devices)
    if memory:
        machine["baseline_rss_mb"] = peak_memory(None).get("peak_rss_mb")
    log = lambda s: print(s, file=sys.stderr, flush=True)  # noqa: E731
    records = run_cases(plan(quick, devices), fixtures_dir=fixtures_dir, memory=memory,
                        min_repeats=min_repeats, target_s=target_s, log=log)
    payload = {
        "schema": JSON_SCHEMA, "started_at": started, "quick": bool(quick),
        "duration_s": time.perf_counter() - t0, "machine": machine,
        "method": {"timer": "time.perf_counter", "warmup": 1, "min_repeats": min_repeats, "target_s": target_s,
                   "statistic": "median, IQR = p75 - p25", "speedup": "numpy median_s / torch median_s",
                   "peak_rss": "peak RSS of a fresh subprocess running construction + apply_disorder once: "
                               "VmHWM on Linux (ru_maxrss elsewhere; Linux carries ru_maxrss over fork+exec)",
                   "contention": "other_cpu_cores = CPU used by other processes during the case, in cores",
                   "numpy_memory_cap_gib": NUMPY_MEMORY_CAP / 2**30, "q_sample_phase2": len(q_sample_indices(STANDARD_GRID))},
        "cases": records,
    }
    payload["ratios"] = ratios(records)
    from parity.benchmarking import gradients as bench_gradients  # forward, forward+backward, d Id / d q, peak memory (issue 20)

    payload["gradients"] = bench_gradients.run_plan(quick, devices, fixtures_dir=fixtures_dir, memory=memory, log=log)
    machine["load_avg_end"] = _load_avg()
    machine["other_cpu_cores_mean"] = contention.other_cores()
    print(format_table(payload))
    print(bench_gradients.format_table(payload["gradients"]))
    busy = [r for r in records if (r.get("other_cpu_cores") or 0) > CONTENTION_WARN_CORES]
    if busy:
        print(f"warning: {len(busy)} of {len(records)} cases were measured while other processes used more "
              f"than {CONTENTION_WARN_CORES} cores (up to {max(r['other_cpu_cores'] for r in busy):.2f}; marked "
              f"'!' in the table): they compete with the measured threads, so those timings are inflated; "
              f"re-run on a quiet machine before quoting them", file=sys.stderr)
    if json_path:
        write_json(json_path, payload)
        print(f"JSON: {json_path}")
    return 1 if any(r["status"] == "error" for r in records + payload["gradients"]) else 0


if __name__ == "__main__":  # python -m parity.benchmarking.bench [--quick] [--json FILE]
    import argparse

    ap = argparse.ArgumentParser(prog="python -m parity.benchmarking.bench")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--json", default=None)
    ap.add_argument("--device", action="append", default=None)
    ap.add_argument("--fixtures-dir", default=None)
    ap.add_argument("--update-doc", nargs=2, metavar=("JSON", "DOC"), default=None,
                    help="only rewrite DOC's generated results block from a saved JSON")
    a = ap.parse_args()
    if a.update_doc:
        update_doc(*a.update_doc)
        sys.exit(0)
    sys.exit(main(a.quick, a.json, a.device, fixtures_dir=a.fixtures_dir))
