"""``parity reduce --jobs``: judging ddmin rounds ahead in worker processes gives the serial
reduction; the predicate's signature does not depend on torch threads or the diagnosis clock."""
from __future__ import annotations

from concurrent.futures import Future
from dataclasses import replace

import pytest
import torch

from eryx.fixtures import resolve_fixture
from parity.commands import cli
from parity.reduce import REPRODUCES, Case, Oracle, Outcome, ddmin, reduce_case
from parity.reduce.crystal import read_atoms
from parity.reduce.parallel import default_jobs, worker_threads
from parity.running import runner
from parity.stages import select

PHASES_1_2 = select([1, 2])
GRID = ((-1, 1, 2),) * 3


@pytest.fixture(autouse=True)
def _isolated_cwd(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)


@pytest.fixture(scope="module")
def synthetic_case() -> Case:
    return Case.make(read_atoms(str(resolve_fixture("synthetic"))), GRID, {})


# ------------------------------------------------------------------ ddmin's prefetch
@pytest.mark.parametrize("need", [{3}, {0, 7}, {2, 5, 11}, {1, 4, 6, 9, 13}])
def test_prefetch_announces_ahead_but_never_changes_the_search(need):
    items = list(range(16))
    serial_calls, calls, announced = [], [], []

    def test_serial(xs):
        serial_calls.append(tuple(xs))
        return need <= set(xs)

    def test(xs):
        calls.append(tuple(xs))
        return need <= set(xs)

    serial = ddmin(items, test_serial)
    ahead = ddmin(items, test, prefetch=lambda cands: announced.append([tuple(c) for c in cands]))
    assert ahead.items == serial.items == sorted(need)
    assert calls == serial_calls  # same tests, same order
    # The first round announces both halves before testing the first one.
    assert announced[0] == [tuple(range(8)), tuple(range(8, 16))]
    # Each round's tests come in the order its candidates were announced.
    for round_ in announced:
        tested = [c for c in calls if c in round_]
        assert tested == [c for c in round_ if c in tested]


def test_default_jobs_is_serial_below_four_cores_and_workers_fit_the_cores():
    assert [default_jobs(c) for c in (1, 2, 3, 4, 6, 8, 64)] == [1, 1, 1, 2, 3, 4, 4]
    for cores in range(1, 33):
        for jobs in range(1, cores + 1):
            assert jobs * worker_threads(jobs, cores) <= cores and worker_threads(jobs, cores) >= 1


# ------------------------------------------------------------------ the signature is stable
def _signature_at(threads: int, case: Case, tmp_path) -> str:
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        oracle = Oracle({"fault": "linv_upper"}, PHASES_1_2, workdir=tmp_path)
        oracle.establish(case)
        return oracle.target.signature
    finally:
        torch.set_num_threads(before)


REDUCED = ((0, 0, 1),) * 3


def test_the_reduced_case_has_the_same_signature_at_1_and_2_torch_threads(synthetic_case, tmp_path):
    # The linv_upper fault returns the upper factor: a transpose, by construction of the fault.
    atoms = synthetic_case.atoms
    small = replace(synthetic_case, atoms=atoms.subset(list(range(3))), samplings=REDUCED)
    one, two = _signature_at(1, small, tmp_path), _signature_at(2, small, tmp_path)
    assert one == two == "transpose: transpose"


def test_a_diagnosis_cut_short_by_its_clock_does_not_change_the_kept_signature(synthetic_case, tmp_path,
                                                                              monkeypatch):
    # No CPU time at all for the run's own diagnosis: it is cut short before testing anything,
    # as a slow, loaded or single-threaded process would cut it on a bigger case.
    monkeypatch.setattr(runner, "DIAGNOSIS_BUDGET_S", 0.0)
    small = replace(synthetic_case, samplings=REDUCED)
    oracle = Oracle({"fault": "linv_upper"}, PHASES_1_2, workdir=tmp_path)
    assert oracle.establish(small).signature == "transpose: transpose"
    smaller = replace(small, atoms=small.atoms.subset(list(range(3))))
    assert oracle.evaluate(smaller).verdict == REPRODUCES


# ------------------------------------------------------------------ the oracle's judging ahead
class _FakePool:
    """Hands out futures the test controls: ``done`` ones carry a marker verdict, others stay queued."""

    def __init__(self, done: bool):
        self.done, self.submitted = done, []

    def submit(self, case):
        future = Future()
        if self.done:
            future.set_running_or_notify_cancel()
            future.set_result((Outcome(REPRODUCES, "Linv", "marker", "judged ahead", 1.5), 1))
        self.submitted.append(case.key())
        return future


@pytest.mark.parametrize("done", [True, False])
def test_the_oracle_uses_a_verdict_judged_ahead_and_judges_a_queued_one_itself(synthetic_case, tmp_path, done):
    small = replace(synthetic_case, samplings=REDUCED)
    oracle = Oracle({"fault": "linv_upper"}, PHASES_1_2, workdir=tmp_path)
    oracle.establish(small)
    cands = [replace(small, atoms=small.atoms.subset(list(range(k)))) for k in (3, 4)]
    oracle.pool = pool = _FakePool(done)
    oracle.prefetch(cands)
    assert pool.submitted == [c.key() for c in cands]
    runs = oracle.n_runs
    out = oracle.evaluate(cands[0])
    if done:  # the worker's verdict, its run counted, memoised as it came
        assert (out.signature, out.reason, oracle.n_runs) == ("marker", "judged ahead", runs + 1)
        assert oracle.evaluate(cands[0]).cached
    else:  # still queued: cancelled and judged here, for real
        assert out.signature == "transpose: transpose" and not out.cached and oracle.n_runs == runs + 1
    oracle.prefetch(cands)  # the memoised one is not submitted again
    assert pool.submitted.count(cands[0].key()) == 1


# ------------------------------------------------------------------ --jobs 2 is the serial reduction
def _steps(red):
    return [(s.move, s.verdict, s.first_failure, s.signature, s.reason, s.size["atoms"], s.size["n_q"])
            for s in red.steps]


def test_jobs_2_gives_the_serial_reduction(synthetic_case, tmp_path):
    # One grid point and phases 1-2: the reduction is all delta debugging over the structure.
    case = replace(synthetic_case, samplings=REDUCED)
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    serial = reduce_case(case, Oracle({"fault": "linv_upper"}, PHASES_1_2, workdir=tmp_path / "a"), jobs=1)
    parallel = reduce_case(case, Oracle({"fault": "linv_upper"}, PHASES_1_2, workdir=tmp_path / "b"), jobs=2)
    assert parallel.final.key() == serial.final.key()
    assert _steps(parallel) == _steps(serial)
    assert any(s.move.startswith("atoms: keep") for s in serial.steps)  # ddmin rounds were judged ahead
    assert serial.final.atoms.n_atoms < case.atoms.n_atoms


def test_cli_refuses_jobs_below_one(capsys, tmp_path):
    code = cli.main(["reduce", "--fault", "linv_upper", "--jobs", "0", "--out", str(tmp_path / "o")])
    _, err = capsys.readouterr()
    assert code == 2 and "--jobs 0" in err and not (tmp_path / "o").exists()
