"""The one timing engine: warm-up, repeats, contenders interleaved, min / median / IQR, peak memory.

``parity bench`` (:mod:`parity.benchmarking.bench`), its gradient section
(:mod:`parity.benchmarking.gradients`), ``parity nightly``'s repeat timings
(:func:`parity.benchmarking.nightly.measure_timing`) and the pytest benchmarks' helper
(``tests/benchmarks/_benchutil.py``) all measure through :func:`measure`:

* every contender is called ``warmup`` times first (imports, allocator, kernel caches);
* then in rounds, one call of each contender per round, in the given order
  (interleaved: two contenders compared see the same machine state, so their ratio
  survives a load that changes during the measurement);
* rounds continue until ``min_repeats`` are done and, up to ``max_repeats``, until the
  timed calls add up to ``target_s`` seconds;
* the clock is ``"wall"`` (:func:`time.perf_counter`) or ``"cpu"`` (:func:`time.process_time`:
  on a CPU shared with other jobs, the time this process computed, not the time it waited);
* ``sync`` (e.g. ``torch.cuda.synchronize``) runs inside the timed region, so that
  asynchronous device work is counted;
* ``pause_gc``: as ``timeit``, the cyclic garbage collector runs before each call and is
  paused during it (collections triggered by earlier calls' garbage otherwise land in
  random calls).

:func:`peak_memory` measures one call's peak memory in this process: Python and NumPy
allocations through :mod:`tracemalloc`, and the torch CUDA allocator's peak on a CUDA device.
"""
from __future__ import annotations

import gc
import statistics
import time
import tracemalloc
from typing import Any, Callable, Mapping, Sequence

import numpy as np

#: Clock name -> clock (seconds).
CLOCKS: dict[str, Callable[[], float]] = {"wall": time.perf_counter, "cpu": time.process_time}


def measure(contenders: Mapping[str, Callable[[], Any]], *, warmup: int = 1, min_repeats: int = 3,
            max_repeats: int | None = None, target_s: float = 0.0, clock: str = "wall",
            sync: Callable[[], None] | None = None, pause_gc: bool = False) -> dict[str, list[float]]:
    """Time the contenders interleaved (see the module docstring); seconds per call.

    Parameters
    ----------
    contenders : mapping name -> callable
        The calls to time; one contender is timed alone.
    warmup : int
        Untimed calls of each contender before the first round.
    min_repeats, max_repeats : int
        Fewest and most timed rounds (``max_repeats`` None: ``min_repeats``).
    target_s : float
        Seconds (summed over every timed call) to reach before stopping, within
        ``max_repeats``; 0 runs exactly ``min_repeats`` rounds.
    clock : "wall" or "cpu"
    sync : callable, optional
        Called after each call, inside the timed region (device synchronisation).
    pause_gc : bool
        Collect before each call and pause the collector during it.

    Returns
    -------
    dict
        name -> [seconds] * rounds, in the contenders' order.
    """
    tick = CLOCKS[clock]
    max_repeats = min_repeats if max_repeats is None else max(max_repeats, min_repeats)

    def timed(fn: Callable[[], Any]) -> float:
        if pause_gc:
            gc.collect()
            gc.disable()
        try:
            t0 = tick()
            fn()
            if sync is not None:
                sync()
            return tick() - t0
        finally:
            if pause_gc:
                gc.enable()

    for _ in range(warmup):
        for fn in contenders.values():
            timed(fn)
    times: dict[str, list[float]] = {name: [] for name in contenders}
    spent, rounds = 0.0, 0
    while rounds < min_repeats or (spent < target_s and rounds < max_repeats):
        for name, fn in contenders.items():
            seconds = timed(fn)
            times[name].append(seconds)
            spent += seconds
        rounds += 1
    return times


def time_call(fn: Callable[[], Any], **options: Any) -> list[float]:
    """:func:`measure` of one callable: its seconds per timed call."""
    return measure({"call": fn}, **options)["call"]


def summarize(times: Sequence[float]) -> dict:
    """``{"median_s", "iqr_s" (p75 - p25), "repeats", "times_s"}`` of the seconds ``times``
    (the minimum, the nightly's statistic, is ``min(times)``)."""
    q1, q3 = np.percentile(times, [25, 75]) if len(times) > 1 else (times[0], times[0])
    return {"median_s": float(statistics.median(times)), "iqr_s": float(q3 - q1), "repeats": len(times),
            "times_s": [float(t) for t in times]}


def peak_memory(fn: Callable[[], Any], *, device: str | None = None, trace: bool = True) -> dict:
    """Run ``fn`` once and return its peak memory in this process (MiB).

    Returns
    -------
    dict
        ``peak_traced_mb``: the peak of Python allocations (NumPy arrays included) during
        the call, over what was allocated before it (``trace``; tracemalloc slows the call,
        so never time a traced call); ``peak_gpu_mb``: the torch CUDA allocator's peak
        during the call, when ``device`` is a CUDA device.
    """
    cuda = device is not None and str(device).startswith("cuda")
    out: dict[str, float] = {}
    if cuda:
        import torch  # only where a CUDA device is measured (keeps this module light)

        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
    started = trace and not tracemalloc.is_tracing()
    if started:
        tracemalloc.start()
    try:
        if trace:
            tracemalloc.reset_peak()
            before = tracemalloc.get_traced_memory()[0]
        fn()
        if trace:
            out["peak_traced_mb"] = (tracemalloc.get_traced_memory()[1] - before) / 2**20
    finally:
        if started:
            tracemalloc.stop()
    if cuda:
        torch.cuda.synchronize(device)
        out["peak_gpu_mb"] = torch.cuda.max_memory_allocated(device) / 2**20
    return out
