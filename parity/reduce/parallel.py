"""Judging a round's candidates ahead, in worker processes (``parity reduce --jobs N``).

A ddmin round knows which candidates it may test before testing the first one
(:func:`parity.reduce.ddmin.ddmin`'s ``prefetch``). :class:`CandidatePool` starts judging
them in ``N`` worker processes, each with its own :class:`~parity.reduce.oracle.Oracle`
holding the same target; the serial search then consumes the verdicts in its own order and
keeps the first candidate that reproduces, so the reduction (every verdict, the final
input) is the serial one. What a worker judged beyond that first success is wasted work:
parallel judging pays only where cores are free for it.

The workers are started by ``forkserver`` (``spawn`` where it is missing), never by a
plain ``fork`` of a process whose torch thread pools already run. Each worker sets
its torch threads so that ``jobs x threads`` stays within the usable cores.
"""
from __future__ import annotations

import multiprocessing
import os
from concurrent.futures import Future, ProcessPoolExecutor
from typing import Any, Mapping, Sequence

from parity.reduce.moves import Case
from parity.reduce.oracle import Oracle, Outcome, Target
from parity.stages import get_stage

#: Below this many usable cores the default is one process (serial): measured on 2 cores,
#: judging ahead was slower than the serial search (docs/reduce.md).
MIN_CORES_FOR_PARALLEL = 4
#: The default number of worker processes never exceeds this (most ddmin rounds have 2-4
#: candidates before the first success, so more workers mostly judge what is thrown away).
MAX_DEFAULT_JOBS = 4


def usable_cores() -> int:
    """The cores this process may run on (its CPU affinity), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # no affinity on this platform
        return max(1, os.cpu_count() or 1)


def default_jobs(cores: int | None = None) -> int:
    """``--jobs`` by default: 1 below :data:`MIN_CORES_FOR_PARALLEL` cores, else half of them, at most 4."""
    cores = usable_cores() if cores is None else cores
    return 1 if cores < MIN_CORES_FOR_PARALLEL else min(MAX_DEFAULT_JOBS, cores // 2)


def worker_threads(jobs: int, cores: int | None = None) -> int:
    """Torch threads per worker so that ``jobs x threads <= cores`` (at least 1)."""
    cores = usable_cores() if cores is None else cores
    return max(1, cores // max(1, jobs))


def _context():
    if "forkserver" not in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("spawn")
    ctx = multiprocessing.get_context("forkserver")
    # The server imports the harness (and torch) once; each worker is then a cheap fork of
    # it, made before any torch thread pool exists.
    ctx.set_forkserver_preload(["parity.reduce.parallel", "parity.running.runner"])
    return ctx


# -- in the worker process
_ORACLE: Oracle | None = None


def _start_worker(options: Mapping[str, Any], stage_names: Sequence[str], target: Target, keep_stage: bool,
                  threads: int) -> None:
    # function-local: keeps torch out of this module's import (it serves `parity reduce --help`)
    import torch

    global _ORACLE
    torch.set_num_threads(threads)
    _ORACLE = Oracle(options, [get_stage(n) for n in stage_names])
    _ORACLE.target, _ORACLE.keep_stage = target, keep_stage


def _ready() -> bool:
    return _ORACLE is not None


def _judge(case: Case) -> tuple[Outcome, int]:
    """A worker's verdict on one candidate and the runs it took (0 or 1)."""
    assert _ORACLE is not None, "worker not started"
    before = _ORACLE.n_runs
    outcome = _ORACLE.evaluate(case)
    return outcome, _ORACLE.n_runs - before


class CandidatePool:
    """``jobs`` worker processes judging candidates against ``oracle``'s target.

    Parameters
    ----------
    oracle : Oracle
        The established oracle (its options, stages and target go to every worker).
    jobs : int
        Worker processes (>= 2 to be useful).
    threads : int, optional
        Torch threads per worker (default: :func:`worker_threads`).
    """

    def __init__(self, oracle: Oracle, jobs: int, threads: int | None = None) -> None:
        assert oracle.target is not None, "establish() first"
        self.jobs = jobs
        self.threads = threads or worker_threads(jobs)
        self._pool = ProcessPoolExecutor(
            max_workers=jobs, mp_context=_context(), initializer=_start_worker,
            initargs=(oracle.options, [s.name for s in oracle.stages], oracle.target, oracle.keep_stage,
                      self.threads))
        # Workers start on the first submission: start them now, while the serial passes
        # before the first ddmin round (the grid) run.
        for _ in range(jobs):
            self._pool.submit(_ready)

    def submit(self, case: Case) -> "Future[tuple[Outcome, int]]":
        return self._pool.submit(_judge, case)

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)
