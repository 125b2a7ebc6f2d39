"""Gradient benchmarks of the torch backend: forward, forward + backward, d Id / d q, peak memory.

Used by ``parity bench`` (its "gradients" table and JSON section), ``parity nightly``
(``result["gradient_timing"]``) and ``benchmarks/gradients.py`` (issue 20's table).
Each workload times four contenders interleaved in ONE process, after a warm-up
(:func:`parity.benchmarking.timing.measure`):

* ``forward``: ``OnePhonon(...)`` + ``apply_disorder()`` without autograd;
* ``forward+backward``: the same with both spring constants ``requires_grad``, then
  ``torch.autograd.grad(nansum(Id), (gamma_intra, gamma_inter))`` (one backward);
* ``q forward`` / ``q gradient``: q-vector mode at ``n_q`` finite grid points, without
  and with d sum(Id) / d q.

Ratios (forward+backward / forward, q gradient / q forward) are what to compare across
machines and nights; peak memory is measured per contender in a fresh process (peak
RSS over the RSS before the call; on a CUDA device the peak of device memory allocated
over what was allocated before it). Targets (issue 20): forward+backward <= 2.5x the
forward, its peak memory <= 2x, q gradient <= 3x.
"""
from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from typing import Any, Callable

from parity.benchmarking import timing
from parity.benchmarking.machine import status_mb
from parity.benchmarking.workloads import SCALE_GRID, SMALL_GRID, STANDARD_GRID

#: q-vectors of the q-gradient contender.
N_Q = 10_000
CONTENDERS = ("forward", "forward+backward", "q forward", "q gradient")


def gradient_callables(pdb: str, grid, dtype: str = "float64", device: str = "cpu",
                       n_q: int = N_Q) -> dict[str, Callable[[], Any]]:
    """The four contenders as callables (see the module docstring)."""
    import torch

    from eryx import models_torch as tm

    real = getattr(torch, dtype)

    def model(grad: bool, q=None):
        g = [torch.tensor(1.0, dtype=real, device=device, requires_grad=grad) for _ in range(2)]
        return tm.OnePhonon(pdb, *grid, gamma_intra=g[0], gamma_inter=g[1], dtype=real, device=device,
                            q_vectors=q), g

    with torch.no_grad():
        base, _ = model(False)
        finite = torch.nonzero(torch.isfinite(base.apply_disorder())).reshape(-1)
    pick = torch.linspace(0, max(len(finite) - 1, 0), min(n_q, len(finite)), device=finite.device).long()
    q_sample = base.q_grid[finite[pick]].detach()

    def forward():
        with torch.no_grad():
            return model(False)[0].apply_disorder()

    def forward_backward():
        m, g = model(True)
        return torch.autograd.grad(torch.nansum(m.apply_disorder()), g)

    def q_forward():
        with torch.no_grad():
            return model(False, q_sample.clone())[0].apply_disorder()

    def q_gradient():
        q = q_sample.clone().requires_grad_(True)
        return torch.autograd.grad(torch.nansum(model(False, q)[0].apply_disorder()), q)

    return {"forward": forward, "forward+backward": forward_backward, "q forward": q_forward,
            "q gradient": q_gradient}


def _status_mb(field: str) -> float:
    """:func:`parity.benchmarking.machine.status_mb`, NaN where there is no /proc (not Linux)."""
    value = status_mb(field)
    return float("nan") if value is None else value


def apply_benchmark_knobs() -> None:
    """``benchmarks/gradients.py``'s ``--engine`` and ``--chunk-bytes`` in its child processes
    (``ERYX_GRID_GRAD_ENGINE``, ``ERYX_GRID_CHUNK_BYTES``: read by the benchmark's children only)."""
    from eryx import models_torch as tm

    if os.environ.get("ERYX_GRID_GRAD_ENGINE"):  # the engine (before/after)
        tm.GRID_GRAD_ENGINE = os.environ["ERYX_GRID_GRAD_ENGINE"]
    if os.environ.get("ERYX_GRID_CHUNK_BYTES"):  # the chunk size (a GPU sweep)
        tm.GRID_CHUNK_BYTES = int(os.environ["ERYX_GRID_CHUNK_BYTES"])
        tm.GRID_GROUP_BYTES = max(tm.GRID_GROUP_BYTES, 4 * tm.GRID_CHUNK_BYTES)


def peak_child(spec_json: str) -> None:
    """Subprocess entry point: one contender once; prints its peak memory over the start (MiB).

    On the CPU: the peak RSS over the RSS before the call. On a CUDA device: the peak of
    memory allocated on the device over what was allocated before the call (torch's
    allocator statistics; the host RSS is not the quantity there).
    """
    spec = json.loads(spec_json)
    import gc

    apply_benchmark_knobs()

    fns = gradient_callables(spec["pdb"], spec["grid"], spec["dtype"], spec["device"], spec["n_q"])
    gc.collect()
    cuda = str(spec["device"]).startswith("cuda")
    if cuda:
        import torch

        torch.cuda.synchronize(spec["device"])
        torch.cuda.reset_peak_memory_stats(spec["device"])
        before = torch.cuda.memory_allocated(spec["device"]) / 2**20
    else:
        before = _status_mb("VmRSS")
        try:  # reset the high-water mark to the current RSS (Linux)
            with open("/proc/self/clear_refs", "w") as fh:
                fh.write("5")
        except OSError:
            pass
    t0 = time.perf_counter()
    fns[spec["contender"]]()
    if cuda:
        torch.cuda.synchronize(spec["device"])
        peak = torch.cuda.max_memory_allocated(spec["device"]) / 2**20 - before
    else:
        peak = _status_mb("VmHWM") - before
    print("PARITY_GRAD_PEAK " + json.dumps({"peak_mb": peak, "wall_s": time.perf_counter() - t0}))


def peak_memory(spec: dict, contender: str, env: dict | None = None, timeout: float = 1800.0) -> dict:
    """``{'peak_mb', 'wall_s'}`` of one contender in a fresh process, or ``{'error': ...}``."""
    code = "import sys; from parity.benchmarking.gradients import peak_child; peak_child(sys.argv[1])"
    proc = subprocess.run([sys.executable, "-c", code, json.dumps({**spec, "contender": contender})],
                          capture_output=True, text=True, timeout=timeout, env=env)
    for line in proc.stdout.splitlines():
        if line.startswith("PARITY_GRAD_PEAK "):
            return json.loads(line.split(" ", 1)[1])
    tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
    return {"error": f"exit {proc.returncode}: {tail}"}


def measure_gradients(fixture: str, grid, dtype: str = "float64", device: str = "cpu", *,
                      fixtures_dir: str | None = None, repeats: int = 3, memory: bool = True,
                      n_q: int = N_Q) -> dict:
    """One workload's record: medians, ratios, peak memory (JSON-ready)."""
    import torch

    from eryx.fixtures import resolve_fixture

    pdb = str(resolve_fixture(fixture, fixtures_dir))
    grid = tuple(tuple(int(v) for v in s) for s in grid)
    rec: dict[str, Any] = {"fixture": fixture, "grid": [list(s) for s in grid], "dtype": dtype, "device": device,
                           "threads": torch.get_num_threads(), "load_avg_start": os.getloadavg()[0],
                           "n_q_gradient": n_q}
    fns = gradient_callables(pdb, grid, dtype, device, n_q)
    sync = (lambda: torch.cuda.synchronize(device)) if str(device).startswith("cuda") else None
    # Interleaved after one warm-up of each: the ratios see the same machine state.
    times = timing.measure(fns, warmup=1, min_repeats=repeats, sync=sync)
    med = {k: statistics.median(v) for k, v in times.items()}
    rec.update(median_s=med, times_s=times, load_avg_end=os.getloadavg()[0],
               ratio={"forward+backward / forward": med["forward+backward"] / med["forward"],
                      "q gradient / q forward": med["q gradient"] / med["q forward"]})
    if memory and (device == "cpu" or str(device).startswith("cuda")):
        spec = {"pdb": pdb, "grid": [list(s) for s in grid], "dtype": dtype, "device": device, "n_q": n_q}
        peaks = {k: peak_memory(spec, k) for k in ("forward", "forward+backward")}
        rec["peak_mb"] = {k: v.get("peak_mb") for k, v in peaks.items()}
        errors = [v["error"] for v in peaks.values() if "error" in v]
        if errors:
            rec["memory_error"] = errors[0]
        elif rec["peak_mb"]["forward"]:
            rec["ratio"]["peak forward+backward / forward"] = rec["peak_mb"]["forward+backward"] / rec["peak_mb"]["forward"]
    return rec


def plan(quick: bool) -> list[tuple[str, tuple, str]]:
    """(fixture, grid, dtype) of ``parity bench``'s gradient section."""
    cases = [("5zck_p1", SMALL_GRID, "float64"), ("5zck_p1", SMALL_GRID, "float32")]
    if not quick:
        cases += [("5zck_p1", STANDARD_GRID, "float64"), ("5zck_p1", STANDARD_GRID, "float32"),
                  ("193l", SCALE_GRID, "float64")]
    return cases


def run_plan(quick: bool, devices, *, fixtures_dir: str | None = None, memory: bool = True,
             log: Callable[[str], None] | None = None) -> list[dict]:
    """Every gradient workload of the plan on every torch device; missing fixtures skipped."""
    from eryx.errors import FixtureNotFoundError

    log = log or (lambda s: None)
    out = []
    for device in devices:
        for fixture, grid, dtype in plan(quick):
            try:
                rec = measure_gradients(fixture, grid, dtype, device, fixtures_dir=fixtures_dir,
                                        memory=memory, n_q=1000 if quick else N_Q)
                rec["status"] = "ok"
            except FixtureNotFoundError as exc:
                rec = {"fixture": fixture, "grid": [list(s) for s in grid], "dtype": dtype, "device": device,
                       "status": "skipped", "reason": f"fixture not available ({str(exc).split(';')[0]})"}
            except Exception as exc:  # reported, the others still run
                rec = {"fixture": fixture, "grid": [list(s) for s in grid], "dtype": dtype, "device": device,
                       "status": "error", "reason": f"{type(exc).__name__}: {exc}"}
            log("gradients: " + format_record(rec))
            out.append(rec)
    return out


def format_record(rec: dict) -> str:
    what = f"{rec['fixture']} {rec['grid']} torch-{rec['device']}-{rec['dtype']}"
    if rec.get("status", "ok") != "ok":
        return f"{what}: {rec['status']} ({rec['reason']})"
    m, r = rec["median_s"], rec["ratio"]
    peak = rec.get("peak_mb") or {}
    mem = (f"; peak {peak['forward']:.0f} / {peak['forward+backward']:.0f} MiB"
           if peak.get("forward") is not None and peak.get("forward+backward") is not None else "")
    return (f"{what}: forward {m['forward']:.3f} s, forward+backward {m['forward+backward']:.3f} s "
            f"(x{r['forward+backward / forward']:.2f}), q gradient x{r['q gradient / q forward']:.2f} "
            f"of the q forward{mem}")


def format_table(records: list[dict]) -> str:
    """The gradient section of ``parity bench``'s terminal output."""
    lines = ["", "[gradients] times in one process, contenders interleaved; peak memory over the start of "
                 "a fresh process (forward / forward+backward)"]
    lines += ["  " + format_record(r) for r in records]
    return "\n".join(lines)
