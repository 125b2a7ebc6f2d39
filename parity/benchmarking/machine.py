"""The machine a benchmark ran on, how busy it was, and the peak memory of one case in a fresh process.

* :func:`machine_info`: CPU, cores, memory, library versions, thread settings, devices,
  git commit (the "machine" section of ``parity bench``'s JSON);
* :class:`CpuContention`: CPU time other processes used during a measurement;
* :func:`peak_memory`: peak resident memory of one end-to-end case (construction + the
  full map) in a fresh interpreter, so that cases do not inherit each other's peaks,
  plus the CUDA allocator's peak there (:func:`parity.benchmarking.timing.peak_memory`).
"""
from __future__ import annotations

import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from parity.benchmarking import timing
from parity.benchmarking.workloads import Workload


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
_CHILD = "import sys; from parity.benchmarking.machine import _rss_child; _rss_child(sys.argv[1])"


def status_mb(field: str) -> float | None:
    """A memory field of /proc/self/status (``VmRSS``: resident now, ``VmHWM``: its peak), in MiB;
    None where there is no such file (not Linux)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def _rss_mb() -> float:
    """Peak resident memory of THIS process image, in MB.

    On Linux this is ``VmHWM`` from /proc/self/status: the high-water mark of the
    current address space, which starts afresh at exec. ``ru_maxrss`` is not used
    there because Linux carries it across fork + exec: a child of a 1 GB parent
    reports at least 1 GB however little it uses. Elsewhere ``ru_maxrss``.
    """
    hwm = status_mb("VmHWM")
    if hwm is not None:
        return hwm
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    return rss / 2**20 if sys.platform == "darwin" else rss / 1024


def _rss_child(spec_json: str) -> None:
    """Entry point of the peak-RSS subprocess: run one end-to-end case, print JSON."""
    spec = json.loads(spec_json)
    import torch  # noqa: F401  (the baseline includes the libraries every case imports)

    from eryx import models, models_torch  # noqa: F401

    out: dict[str, Any] = {}
    if spec.get("backend"):
        w = Workload.from_spec(spec)
        out.update({k: v for k, v in timing.peak_memory(w.end_to_end(), device=spec["device"], trace=False).items()
                    if k == "peak_gpu_mb"})
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
