"""The reduction loop: moves in rounds, largest first, while the same divergence persists.

:func:`reduce_case` establishes the target divergence on the initial input, then applies
the passes of :mod:`parity.reduce.moves` in rounds (grid, structure by ddmin, the space
group to P1, the structure again, elements / B factors / occupancies, model parameters)
until a round changes nothing or the budget is spent; every candidate is judged by the
:class:`~parity.reduce.oracle.Oracle`. The case in hand is always one that reproduces, so
stopping at any point (the budget) leaves the best input so far.
"""
from __future__ import annotations

import shlex
import time
from dataclasses import asdict, dataclass, field
from typing import Callable, Sequence

from eryx import structure

from parity.reduce.ddmin import ddmin
from parity.reduce.moves import Case, Probe, grid_pass, p1_pass, param_pass, simplify_pass, structure_pass
from parity.reduce.parallel import CandidatePool
from parity.reduce.oracle import REPRODUCES, Oracle, Target

#: Rounds of all passes at most (a round that changes nothing ends the reduction earlier).
MAX_ROUNDS = 3


@dataclass(frozen=True)
class Step:
    """One judged candidate: what was tried, its size, the verdict."""

    n: int
    elapsed_s: float
    move: str
    size: dict
    verdict: str
    first_failure: str | None
    signature: str | None
    reason: str
    seconds: float
    cached: bool

    def line(self) -> str:
        s = self.size
        what = (f"{s['atoms']} at x {s['n_asu']} ASU, {s['n_q']} pts/{s['n_bz']} BZ")
        extra = f" ({self.reason})" if self.reason else ""
        return (f"step {self.n:4d} {self.elapsed_s:8.1f}s  {self.verdict:<16} {what:<34} {self.move}{extra}"
                + (" [memo]" if self.cached else f" [{self.seconds:.2f}s]"))


@dataclass
class Reduction:
    """The outcome of :func:`reduce_case`."""

    initial: Case
    final: Case
    target: Target
    steps: list[Step] = field(default_factory=list)
    elapsed_s: float = 0.0
    budget_reached: bool = False
    n_runs: int = 0

    def summary(self) -> str:
        stop = "budget reached: best so far" if self.budget_reached else "no move reproduces any more"
        return (f"reduced {self.target.describe()}: {self.initial.describe()}  ->  {self.final.describe()}; "
                f"{len(self.steps)} steps, {self.n_runs} runs, {self.elapsed_s:.1f} s ({stop})")

    def log_text(self) -> str:
        head = [f"# parity reduce: target {self.target.describe()}",
                f"# initial: {self.initial.describe()}"]
        tail = [f"# final:   {self.final.describe()}", f"# {self.summary()}"]
        return "\n".join(head + [s.line() for s in self.steps] + tail) + "\n"

    def to_dict(self) -> dict:
        return {"target": asdict(self.target), "initial": self.initial.size(), "final": self.final.size(),
                "steps": [asdict(s) for s in self.steps], "elapsed_s": self.elapsed_s,
                "budget_reached": self.budget_reached, "n_runs": self.n_runs}


def reduce_case(case: Case, oracle: Oracle, *, budget_s: float | None = None, keep_stage: bool = False,
                keep: str | None = None, on_step: Callable[[Step], None] | None = None, max_rounds: int = MAX_ROUNDS,
                jobs: int = 1) -> Reduction:
    """Shrink ``case`` while ``oracle`` says the initial divergence persists.

    Parameters
    ----------
    case : Case
        The failing input (it must diverge: :class:`~parity.reduce.oracle.NothingToReduce` otherwise).
    budget_s : float, optional
        Seconds for the search after the initial run; the best input so far is returned
        when they are spent.
    keep_stage : bool
        Keep only the first failing stage, not its signature.
    keep : str, optional
        Keep the first failing stage with any signature containing this text.
    on_step : callable (Step) -> None, optional
        Called after every judged candidate (progress).
    jobs : int
        Processes judging candidates: above 1, each ddmin round's candidates are judged
        ahead in ``jobs`` worker processes (:mod:`parity.reduce.parallel`); the verdicts
        are consumed in the serial order, so the reduction is the serial one.
    """
    t0 = time.monotonic()
    target = oracle.establish(case, keep_stage, keep)
    t_search = time.monotonic()
    red = Reduction(initial=case, final=case, target=target)

    def out_of_budget() -> bool:
        if budget_s is not None and time.monotonic() - t_search >= budget_s:
            red.budget_reached = True
        return red.budget_reached

    def accept(label: str, cand: Case) -> bool:
        if out_of_budget():
            return False
        o = oracle.evaluate(cand)
        step = Step(len(red.steps) + 1, time.monotonic() - t0, label, cand.size(), o.verdict, o.first_failure,
                    o.signature, o.reason, o.seconds, o.cached)
        red.steps.append(step)
        if on_step:
            on_step(step)
        return o.verdict == REPRODUCES

    def ddmin_fn(items: Sequence, probe: Probe) -> list:
        made: dict[tuple, tuple[str, Case]] = {}

        def candidate(sub: list) -> tuple[str, Case]:  # built once: judged ahead, then accepted
            if tuple(sub) not in made:
                made[tuple(sub)] = probe(sub)
            return made[tuple(sub)]

        def prefetch(subs: list[list]) -> None:
            if not out_of_budget():
                oracle.prefetch([candidate(sub)[1] for sub in subs])

        return ddmin(items, lambda sub: accept(*candidate(sub)), should_stop=out_of_budget,
                     prefetch=prefetch if oracle.pool is not None else None).items

    def expand(c: Case):
        return structure.load_crystal(oracle.write(c), True).xyz

    current = case
    pool = CandidatePool(oracle, jobs) if jobs > 1 else None
    oracle.pool = pool
    try:
        for _ in range(max_rounds):
            before = current.key()
            current = grid_pass(current, accept)
            current = structure_pass(current, accept, ddmin_fn)
            current = p1_pass(current, accept, expand)
            current = structure_pass(current, accept, ddmin_fn)
            current = simplify_pass(current, accept, ddmin_fn)
            current = param_pass(current, accept)
            if current.key() == before or out_of_budget():
                break
    finally:
        oracle.pool = None
        if pool is not None:
            pool.close()
    red.final = current
    red.elapsed_s = time.monotonic() - t0
    red.n_runs = oracle.n_runs
    return red


def grid_text(samplings) -> str:
    return ";".join(",".join(str(v) for v in s) for s in samplings)


def command_text(case: Case, run_args: Sequence[str], pdb_name: str = "reduced.pdb",
                 json_name: str = "reduced.json", html_name: str = "reduced.html") -> str:
    """``command.txt``: one ``parity run`` reproducing the reduced divergence from its folder.

    Parameters
    ----------
    run_args : sequence of str
        The run's own options (backends, fault, device, dtype, tiers, stage selection).
    """
    p = case.param_dict
    args = ["parity", "run", "--fixture", pdb_name, f"--grid={grid_text(case.samplings)}",
            "--gnm-cutoff", repr(p["gnm_cutoff"]), "--gamma-intra", repr(p["gamma_intra"]),
            "--gamma-inter", repr(p["gamma_inter"]), "--res-limit", repr(p["res_limit"])]
    if not p.get("expand_p1", True):
        args.append("--no-expand-p1")
    args += list(run_args) + ["--no-progress", "--json", json_name, "--html", html_name]
    return ("# Reproduces the divergence reduced by 'parity reduce'. Run from this folder: bash command.txt\n"
            + shlex.join(args) + "\n")
