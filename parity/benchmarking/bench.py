"""Benchmarks: the NumPy reference vs the torch port, per phase and end to end.

``parity bench [--quick] [--json FILE] [--device DEV ...]`` measures every case
itself in ONE process, so the speed-ups it prints compare NumPy and torch
timings taken on the same machine in the same run:

* each case is timed by the one timing engine (:func:`parity.benchmarking.timing.measure`):
  run once to warm up (imports, allocator, torch kernels), then ``repeats`` times with
  :func:`time.perf_counter`; the median and the interquartile range of the repeats are
  reported;
* every case is built and run through its backend's session
  (:meth:`parity.backends.base.Session.timed_phase`; workloads in
  :mod:`parity.benchmarking.workloads`); CUDA work is synchronised before the clock stops;
* the peak resident memory of each end-to-end case is measured in a fresh
  subprocess (``resource.getrusage(RUSAGE_SELF).ru_maxrss``), so that cases do
  not inherit each other's peaks; the RSS of a subprocess that only imports the
  libraries is reported as ``baseline_rss_mb`` in the machine section.

What a "phase" times (on a model already built, so each phase is timed alone):

1. grid + k-vectors: Miller grid, q, resolution mask, BZ k-vectors
   (the model's ``grid`` build step);
2. A/M/Linv + structure factors: the rigid-body projection, the projected mass
   matrix and its inverse Cholesky factor, then the projected structure factors
   at a fixed q sample (the harness's :data:`parity.running.runner.Q_SAMPLE_SIZE` points);
3. Hessian/K/phonons/covariance: contacts (NumPy: neighbour search + dense
   all-atom Hessian; torch: contact list + unit blocks), then K(k), the phonons,
   K^-1, the covariance and the ADP scaling (the ``hessian`` and ``phonons`` build steps);
4. ``apply_disorder()``: the full diffuse map.

End to end = model construction + ``apply_disorder()``.

The NumPy reference is skipped (not failed) where its memory estimate exceeds
:data:`NUMPY_MEMORY_CAP` (e.g. 193l's dense all-atom Hessian needs ~30 GiB):
the torch backend alone is timed there.

The pytest-benchmark suite in ``tests/benchmarks`` uses the same workloads
(:class:`Workload`) with pytest-benchmark's timer. Output: :mod:`parity.benchmarking.tables`;
machine, contention and peak memory: :mod:`parity.benchmarking.machine`.
"""
from __future__ import annotations

import datetime as _dt
import json
import os
import sys
import time
from dataclasses import dataclass
from typing import Any, Callable, Sequence

from eryx.errors import FixtureNotFoundError, MemoryBudgetError
from parity.backends.base import NotProvided
from parity.benchmarking import gradients as bench_gradients  # forward, forward+backward, d Id / d q (issue 20)
from parity.benchmarking import timing
from parity.benchmarking.machine import (  # noqa: F401  (peak_memory and friends: bench's public names)
    CONTENTION_WARN_CORES, CpuContention, _load_avg, _rss_child, _rss_mb, cpu_model, machine_info, peak_memory,
)
from parity.benchmarking.tables import (  # noqa: F401  (bench's public names)
    DOC_BEGIN, DOC_END, _case_line, _fmt_mb, _fmt_s, format_table, markdown_summary, update_doc,
)
from parity.benchmarking.timing import summarize  # noqa: F401  (bench's public name)
from parity.benchmarking.workloads import (  # noqa: F401  (bench's public names)
    ATOM_SWEEP, END_TO_END, GRID_SWEEP_L, NUMPY_MEMORY_CAP, PHASE_GROUPS, PHASES, SCALE_GRID, SMALL_GRID,
    STANDARD_GRID, Grid, Workload, backend_label, backends, default_devices, grid_label, grid_points, is_reference,
    q_sample_indices, sweep_grid,
)
from parity.contract.options import UsageError
from parity.storage.outputs import check_output_path, write_json

JSON_SCHEMA = "parity-bench/1"
#: Most timed repeats of one case (fewer once ``target_s`` seconds are spent).
MAX_REPEATS = 15


def measure(fn: Callable[[], Any], *, min_repeats: int = 3, max_repeats: int = MAX_REPEATS,
            target_s: float = 2.0, warmup: int = 1) -> list[float]:
    """Warm up, then time ``fn`` at least ``min_repeats`` times and until ``target_s``
    seconds are spent (at most ``max_repeats``): :func:`parity.benchmarking.timing.time_call`."""
    return timing.time_call(fn, warmup=warmup, min_repeats=min_repeats, max_repeats=max_repeats, target_s=target_s)


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
            rec.update(w.sizes())
            contention = CpuContention()
            rec.update(timing.summarize(timing.time_call(fn, warmup=1, min_repeats=min_repeats,
                                                         max_repeats=MAX_REPEATS, target_s=target_s)))
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
        except NotProvided as exc:  # the backend cannot time it here (the reference refused for memory)
            rec.update(status="skipped", reason=f"not timed by {w.label} (bench cap "
                                                f"{NUMPY_MEMORY_CAP / 2**30:g} GiB for the reference): {exc}")
            skipped_models[wkey] = rec["reason"]
        except _Skip as exc:
            rec.update(status="skipped", reason=str(exc))
        except Exception as exc:  # a broken case is reported, the others still run
            rec.update(status="error", reason=f"{type(exc).__name__}: {exc}")
        records.append(rec)
        log(f"[{i}/{len(cases)}] {_case_line(rec)}")
        if str(case.device).startswith("cuda"):
            import torch  # only with a CUDA device in the plan

            torch.cuda.empty_cache()
    return records


class _Skip(Exception):
    pass


def ratios(records: Sequence[dict]) -> list[dict]:
    """Speed-up of each case over the reference backend (NumPy) in the same run: numpy_s / torch_s."""
    numpy = {(r["fixture"], json.dumps(r["grid"]), r["phase"]): r for r in records
             if is_reference(r["backend"]) and r["status"] == "ok"}
    out = []
    for r in records:
        ref = numpy.get((r["fixture"], json.dumps(r["grid"]), r["phase"]))
        if is_reference(r["backend"]) or r["status"] != "ok" or ref is None:
            continue
        out.append({"fixture": r["fixture"], "grid": r["grid"], "grid_label": r["grid_label"], "phase": r["phase"],
                    "dtype": r["dtype"], "device": r["device"], "numpy_s": ref["median_s"],
                    "torch_s": r["median_s"], "speedup": ref["median_s"] / r["median_s"]})
    return out


def main(quick: bool = False, json_path: str | os.PathLike | None = None, devices: Sequence[str] | None = None,
         *, fixtures_dir: str | None = None, memory: bool = True, min_repeats: int = 3,
         target_s: float | None = None) -> int:
    """``parity bench``: run, print the table, optionally write JSON.

    Returns 0 when every case was measured or skipped (fixture missing, NumPy
    too big), 1 when a case raised (its error is in the table and the JSON).
    """
    import torch  # the device checks (torch loads with the backends anyway)

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
                   "numpy_memory_cap_gib": NUMPY_MEMORY_CAP / 2**30,
                   "q_sample_phase2": len(q_sample_indices(STANDARD_GRID))},
        "cases": records,
    }
    payload["ratios"] = ratios(records)
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
