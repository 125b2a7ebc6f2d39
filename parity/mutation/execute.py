"""The fork server: each mutant in a forked child running ``parity run``; results and resume.

The parent imports numpy, torch, gemmi, scipy and the harness once and (by default)
computes the NumPy reference once (:func:`warm_reference`); every child applies its mutant
(:func:`parity.mutation.generate.apply_mutant`), calls :func:`parity.commands.cli.main` and exits
with its code. Exit 1 is a kill; 0 a survivor; a timeout, a crash, a mutant that does not
apply and any other exit code (2, 3) are recorded as such and are not kills.

The children read the parent's reference through public means only: their ``parity run``
names the reference backend :data:`WARM_REFERENCE` (the backends' ``module:callable`` form):
:class:`parity.mutation.reference.WarmNumpyBackend`, whose ``open`` returns the session the
parent computed for that spec (inherited across the fork) and a fresh one for any other spec.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import signal
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterable, Sequence

from parity.mutation.generate import DEFAULT_FILES, ROOT, Mutant, _cut, apply_mutant, file_hashes

if TYPE_CHECKING:  # the backends load NumPy: only after _limit_threads
    from parity.backends.base import Session

DEFAULT_FIXTURE = "5zck_p1"
#: Seconds one mutant's run may take before it is killed (a hang).
DEFAULT_TIMEOUT_S = 60.0
#: Exit code of a child whose harness raised past parity.commands.cli.main (a crash, not a verdict).
EXIT_CRASH = 97
#: Exit code of a child that could not apply its mutant (compile or exec error).
EXIT_INVALID = 98
RESULTS_SCHEMA = 1
#: The ``--reference`` of a child's ``parity run`` when the reference is computed once (a
#: string: importing the backend here would load NumPy before :func:`_limit_threads`).
WARM_REFERENCE = "parity.mutation.reference:WarmNumpyBackend"


@dataclass
class RunConfig:
    """How each mutant is judged.

    Attributes
    ----------
    fixture : str
        The fixture ``parity run`` uses (default 5zck_p1 on its default grid).
    parity_args : list of str
        Further ``parity run`` options (``--grid=...``, ``--res-limit 3``, ...).
    threads : int
        torch and BLAS threads of each child.
    timeout_s : float
        A child still running after this is killed (status ``timeout``).
    fail_fast : bool
        Pass ``--fail-fast`` (stop at the first divergence: the same exit code, sooner).
    reference_cache : bool
        Compute the NumPy reference once in the parent; every child's run then reads it
        (it never changes: only the torch backend is mutated).
    """

    fixture: str = DEFAULT_FIXTURE
    parity_args: list = dataclasses.field(default_factory=list)
    threads: int = 1
    timeout_s: float = DEFAULT_TIMEOUT_S
    fail_fast: bool = True
    reference_cache: bool = True

    def argv(self, json_path: str) -> list[str]:
        """The ``parity`` command line a child runs.

        With ``reference_cache``, the reference is :data:`WARM_REFERENCE` (the NumPy reference,
        served from :func:`warm_reference`'s sessions), unless ``parity_args`` choose a reference
        themselves (``--reference...``).
        """
        warm = self.reference_cache and not any(a.startswith("--reference") for a in self.parity_args)
        return (["run", "--fixture", self.fixture, "--no-progress"] + (["--fail-fast"] if self.fail_fast else [])
                + (["--reference", WARM_REFERENCE] if warm else []) + list(self.parity_args)
                + ["--json", json_path])


def default_jobs() -> int:
    """Concurrent mutant children: one core per child, one core left for everything else."""
    return max(1, (os.cpu_count() or 1) - 1)


def _limit_threads(threads: int) -> None:
    """BLAS/OpenMP thread counts for this process and its children (before numpy loads)."""
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(threads)


def _import_everything() -> None:
    """What every child needs, imported once in the parent (copy-on-write after fork)."""
    import gemmi  # noqa: F401
    import numpy  # noqa: F401
    import scipy.linalg  # noqa: F401
    import scipy.spatial  # noqa: F401
    import torch  # noqa: F401
    import tqdm.auto  # noqa: F401

    import eryx.models  # noqa: F401
    import eryx.models_torch  # noqa: F401
    import eryx.functional_torch  # noqa: F401
    import parity.backends.eryx_numpy  # noqa: F401
    import parity.backends.eryx_torch  # noqa: F401
    import parity.commands.cli  # noqa: F401
    import parity.diagnosis.signatures  # noqa: F401
    import parity.mutation.reference  # noqa: F401
    import parity.running.runner  # noqa: F401
    import parity.rendering.terminal  # noqa: F401


def warm_reference(config: RunConfig) -> "Session":
    """Compute every NumPy reference quantity the run reads, once, in this process.

    Runs all stages with the NumPy reference on both sides (no torch computation in the
    parent: children forked afterwards never inherit torch's thread pools) on the spec of the
    child's ``parity run`` options, and keeps the reference session for
    :class:`parity.mutation.reference.WarmNumpyBackend` (:data:`WARM_REFERENCE`). Returns the
    session.
    """
    # function-local: NumPy loads only after _limit_threads (run_mutation)
    from parity.commands.cli import build_parser
    from parity.commands.run_options import run_spec
    from parity.stages import STAGES
    from parity.mutation.reference import keep_session
    from parity.running.runner import make_run, run_stages

    spec = run_spec(build_parser().parse_args(["run", "--fixture", config.fixture, *config.parity_args]))
    run = make_run(spec.fixture, spec=spec, reference="numpy", candidate="numpy")
    run_stages(run, STAGES, progress=False)
    keep_session(run.reference_session)
    return run.reference_session


def _child(mutant: Mutant | None, config: RunConfig, json_path: str, log_path: str) -> None:
    """In the forked child: apply the mutant, run parity, exit with its code (never returns)."""
    rc = EXIT_CRASH
    try:
        fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        os.close(fd)
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        import torch

        torch.set_num_threads(config.threads)
        if mutant is not None:
            try:
                apply_mutant(mutant)
            except BaseException:
                import traceback

                traceback.print_exc()
                rc = EXIT_INVALID
                return
        from parity.commands import cli

        rc = cli.main(config.argv(json_path))
    except SystemExit as exc:
        rc = exc.code if isinstance(exc.code, int) else EXIT_CRASH
    except BaseException:
        import traceback

        traceback.print_exc()
        rc = EXIT_CRASH
    finally:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(rc)


def _status(rc: int | None, timed_out: bool) -> str:
    """killed (exit 1), survived (exit 0), timeout, crash, invalid, or ``exit N`` (e.g. 2, 3)."""
    if timed_out:
        return "timeout"
    named = {1: "killed", 0: "survived", EXIT_CRASH: "crash", EXIT_INVALID: "invalid"}
    return named.get(rc, f"exit {rc}" if rc is not None and rc > 0 else "crash")


def _tail(path: str, lines: int = 6) -> str:
    try:
        text = Path(path).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""
    return "\n".join(text.strip().splitlines()[-lines:])


def _first_failure(json_path: str) -> tuple[str | None, str]:
    """(first failing stage, its message) from a child's result JSON."""
    try:
        result = json.loads(Path(json_path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None, ""
    first = result.get("first_failure")
    message = next((s.get("message") or "" for s in result.get("stages", []) if s.get("name") == first), "")
    return first, _cut(message, 200)


def wait_child(pid: int, timeout_s: float, started: float) -> tuple[int | None, bool]:
    """Wait for one forked child: (exit code, False), or (None, True) after killing it at the timeout."""
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status), False
        if time.perf_counter() - started > timeout_s:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            return None, True
        time.sleep(0.02)


@dataclass
class _Job:
    pid: int
    mutant: Mutant | None
    started: float
    json_path: str
    log_path: str


def run_children(mutants: Sequence[Mutant | None], config: RunConfig, *, jobs: int = 1,
                 on_result: Callable[[Mutant | None, dict], None] | None = None) -> list[dict]:
    """Run each mutant (None: the unmutated backend) in a forked child, ``jobs`` at a time.

    Returns one record per mutant, in completion order: rc, status (killed, survived,
    timeout, crash, invalid), first_failure, message, seconds, and the output's tail for
    anything not killed. The caller must have prepared this process (imports, reference).
    """
    todo = list(mutants)
    running: dict[int, _Job] = {}
    records: list[dict] = []
    tmp = tempfile.mkdtemp(prefix="parity-mutation-")
    try:
        while todo or running:
            while todo and len(running) < jobs:
                mutant = todo.pop(0)
                n = len(records) + len(running)
                json_path, log_path = os.path.join(tmp, f"{n}.json"), os.path.join(tmp, f"{n}.log")
                sys.stdout.flush()
                sys.stderr.flush()
                pid = os.fork()
                if pid == 0:
                    _child(mutant, config, json_path, log_path)
                running[pid] = _Job(pid, mutant, time.perf_counter(), json_path, log_path)
            pid, status = os.waitpid(-1, os.WNOHANG)
            now = time.perf_counter()
            finished: list[tuple[_Job, int | None, bool]] = []
            if pid:
                job = running.pop(pid)
                rc = os.waitstatus_to_exitcode(status)
                finished.append((job, rc, False))
            for job in list(running.values()):
                if now - job.started > config.timeout_s:
                    os.kill(job.pid, signal.SIGKILL)
                    os.waitpid(job.pid, 0)
                    running.pop(job.pid)
                    finished.append((job, None, True))
            for job, rc, timed_out in finished:
                status_text = _status(rc, timed_out)
                first, message = _first_failure(job.json_path)
                rec = {"rc": rc, "status": status_text, "first_failure": first, "message": message,
                       "seconds": round(time.perf_counter() - job.started, 3)}
                if status_text != "killed":
                    rec["tail"] = _tail(job.log_path)
                for p in (job.json_path, job.log_path):
                    Path(p).unlink(missing_ok=True)
                records.append(rec)
                if on_result:
                    on_result(job.mutant, rec)
            if not pid and not finished:
                time.sleep(0.02)
    except BaseException:
        for job in running.values():
            os.kill(job.pid, signal.SIGKILL)
            os.waitpid(job.pid, 0)
        raise
    finally:
        for p in Path(tmp).glob("*"):
            p.unlink(missing_ok=True)
        os.rmdir(tmp)
    return records


# ------------------------------------------------------------------ results and resume
def harness_hash(root: Path = ROOT, mutated: Iterable[str] = DEFAULT_FILES) -> str:
    """sha256 over the harness and the reference (every .py of parity/ and eryx/ but the
    mutated files and this package): a change re-tests the survivors."""
    skip = {(root / f).resolve() for f in mutated}
    driver = Path(__file__).resolve().parent
    digest = hashlib.sha256()
    for path in sorted(list((root / "parity").rglob("*.py")) + list((root / "eryx").rglob("*.py"))):
        if path.resolve() in skip or path.resolve().parent == driver:
            continue
        digest.update(str(path.relative_to(root)).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


def config_key(config: RunConfig) -> dict:
    """What decides a verdict (threads and timeouts do not; a timeout is recorded as such)."""
    return {"fixture": config.fixture, "parity_args": list(config.parity_args)}


def load_results(path: str | os.PathLike | None) -> dict:
    """A results file (empty structure when there is none)."""
    if path and Path(path).is_file():
        data = json.loads(Path(path).read_text(encoding="utf-8"))
        if data.get("schema") != RESULTS_SCHEMA:
            raise ValueError(f"{path}: not a mutation results file of schema {RESULTS_SCHEMA}")
        return data
    return {"schema": RESULTS_SCHEMA, "mutants": {}, "runs": []}


def save_results(path: str | os.PathLike, data: dict) -> None:
    """Write the results atomically (a crash never leaves half a file)."""
    # Imported here: parity.storage imports NumPy, which must not load before the BLAS
    # thread limits are set (module docstring).
    from parity.storage.outputs import write_atomic

    text = json.dumps(data, indent=1, sort_keys=True)
    write_atomic(Path(path), lambda handle: handle.write(text.encode("utf-8")))


def needs_run(record: dict | None, *, source_sha: str, harness_sha: str, config: dict, retest: str) -> bool:
    """Whether a mutant must be (re-)run, given its cached record.

    ``retest``: ``auto`` runs what was never run with this source and config, and the
    survivors when the harness changed since; ``survivors`` re-runs every non-killed one;
    ``all`` re-runs everything.
    """
    if retest == "all" or record is None:
        return True
    if record.get("source_sha") != source_sha or record.get("config") != config:
        return True
    killed = record.get("status") == "killed"
    if retest == "survivors":
        return not killed
    return not killed and record.get("harness_sha") != harness_sha


def _line(i: int, n: int, mutant: Mutant | None, rec: dict) -> str:
    where = "baseline (no mutant)" if mutant is None else \
        f"{mutant.id} {mutant.location:<26} {mutant.operator:<17} {mutant.describe(40)}"
    extra = f"  [{rec['first_failure']}]" if rec.get("first_failure") else f"  rc={rec['rc']}"
    return f"[{i:>4}/{n}] {rec['status']:<8} {rec['seconds']:6.1f}s  {where}{extra}"


def _machine() -> str:
    """The machine a run ran on, in a few words (CPU model, cores, Python, torch)."""
    import platform

    import torch

    cpu = platform.processor() or platform.machine()
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                   if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"{cpu}, {os.cpu_count()} cores, Python {platform.python_version()}, torch {torch.__version__}"


def run_mutation(mutants: Sequence[Mutant], config: RunConfig, *, jobs: int = 1, results_path: str | None = None,
                 retest: str = "auto", out=sys.stdout) -> dict:
    """Run the mutants through ``parity run`` (resuming from ``results_path``); the results.

    The unmutated backend runs first and must exit 0, or nothing is judged.
    """
    data = load_results(results_path)
    files = sorted({m.file for m in mutants})
    shas = file_hashes(files)
    h_sha = harness_hash()
    key = config_key(config)
    todo = [m for m in mutants if needs_run(data["mutants"].get(m.id), source_sha=shas[m.file], harness_sha=h_sha,
                                            config=key, retest=retest)]
    print(f"mutation: {len(mutants)} mutants selected, {len(mutants) - len(todo)} cached, {len(todo)} to run "
          f"({jobs} job(s), {config.threads} thread(s) each, fixture {config.fixture}"
          f"{' ' + ' '.join(config.parity_args) if config.parity_args else ''})", file=out, flush=True)
    t0 = time.perf_counter()
    _limit_threads(config.threads)
    _import_everything()
    if config.reference_cache:
        t = time.perf_counter()
        warm_reference(config)
        print(f"mutation: NumPy reference computed once ({time.perf_counter() - t:.1f} s)", file=out, flush=True)
    base = run_children([None], config)[0]
    print(_line(0, len(todo), None, base), file=out, flush=True)
    if base["rc"] != 0:
        raise RuntimeError(f"the unmutated backend does not pass (exit {base['rc']}): fix that first\n"
                           f"{base.get('tail', '')}")
    run_info = {"started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "n_run": 0, "jobs": jobs,
                "threads": config.threads, "baseline_s": base["seconds"], "baseline_rc": base["rc"],
                "baseline_status": base["status"], "machine": _machine(), "config": key,
                "reference_cache": config.reference_cache, "fail_fast": config.fail_fast}
    data["runs"].append(run_info)
    done = [0]

    def on_result(mutant: Mutant | None, rec: dict) -> None:
        done[0] += 1
        print(_line(done[0], len(todo), mutant, rec), file=out, flush=True)
        data["mutants"][mutant.id] = {**mutant.to_dict(), **rec, "source_sha": shas[mutant.file],
                                      "harness_sha": h_sha, "config": key,
                                      "tested_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        run_info["n_run"] = done[0]
        run_info["wall_s"] = round(time.perf_counter() - t0, 1)
        if results_path:
            save_results(results_path, data)

    run_children(todo, config, jobs=jobs, on_result=on_result)
    run_info["wall_s"] = round(time.perf_counter() - t0, 1)
    data["files"] = {**data.get("files", {}), **shas}
    data["harness_sha"] = h_sha
    if results_path:
        save_results(results_path, data)
    return data
