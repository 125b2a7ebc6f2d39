"""External implementations as backends: their code in a subprocess, their numbers through files.

The public OnePhonon implementations (apeck12/eryx, the slac-dynaboost PyTorch fork) are
both imported as a package named ``eryx``, which clashes with this project's own. An
:class:`ExternalBackend` therefore never imports them: its session starts ONE worker
process (``[python, worker.py, request.json, outdir]``, ``parity/backends/workers/``) with
the checkout first on ``sys.path`` and this project nowhere on it. The worker constructs
their model once, then answers requests, one quantity at a time:

- the session writes ``{"compute": NAME}`` (a JSON line) to the worker's stdin;
- the worker writes ``NAME.npy`` (plain ``numpy.save``, no pickle; atomically), then a JSON
  line to ``outdir/status.jsonl``: ``ok`` / ``not_provided`` with the reason / ``error`` with
  their exception and traceback (the worker's stdout and stderr, where their code prints,
  go to ``outdir/worker.log``).

Everything the external code does wrong becomes a status of the stage that asked for it,
never an exit 2 once the run has started:

- construction raises, hangs past ``build_timeout`` or kills the process: a
  :class:`~parity.backends.base.BuildFailure` (the step and phase are those of their method
  that raised, when the worker can tell), which the runner reports as the run's first failure;
- a quantity raises: that stage's error, their traceback attached (``__cause__``);
- a quantity runs past ``timeout``: the worker is killed, the stage errors "timed out after
  N s computing NAME", every later quantity "not computed: the worker was stopped (...)";
- the process dies (a segfault, ``os._exit``): the stage errors with the exit code and the
  tail of the worker's log;
- NaN-filled results, missing attributes, a different array layout: compared (and failed),
  or errors naming the attribute and the layout the adapter expected.

Bad input is refused before anything runs (``ValueError``, exit 2 with one line): a path
that is not a checkout of the expected code (``.tar.gz`` snapshots made by ``git archive``
are accepted and extracted once to a cache folder, the commit read from their pax
header), an interpreter that does not run, a non-positive timeout, a precision or device
their code cannot use.

Timeouts: the backend options ``timeout`` and ``build_timeout`` (seconds), else the
environment variables ``PARITY_EXTERNAL_TIMEOUT`` / ``PARITY_EXTERNAL_BUILD_TIMEOUT``, else
:data:`DEFAULT_TIMEOUT` / :data:`DEFAULT_BUILD_TIMEOUT`.
"""
from __future__ import annotations

import atexit
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import time
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Mapping

import numpy as np

from parity.contract.spec import RunSpec
from parity.backends.base import Backend, BuildFailure, NotProvided, Session
from parity.backends.probe_recorder import ProbeRecorder

#: Seconds one quantity may take in the worker (generous: mode_maps on a standard grid
#: is n_dof full maps).
DEFAULT_TIMEOUT = 1800.0
#: Seconds their model's construction may take (the PyTorch port needs minutes).
DEFAULT_BUILD_TIMEOUT = 3600.0
TIMEOUT_ENV, BUILD_TIMEOUT_ENV = "PARITY_EXTERNAL_TIMEOUT", "PARITY_EXTERNAL_BUILD_TIMEOUT"
#: Where extracted snapshots are cached (default ``$XDG_CACHE_HOME/eryx-parity/peers``).
CACHE_ENV = "PARITY_PEERS_CACHE"
#: Lines of the worker's log quoted when it dies.
LOG_TAIL_LINES = 40
WORKERS_DIR = Path(__file__).resolve().parent / "workers"
#: This project's root: kept off the worker's sys.path (its ``eryx`` would shadow theirs).
PROJECT_ROOT = Path(__file__).resolve().parents[2]
_POLL_S = 0.05
_COMMIT_RE = re.compile(r"^[0-9a-f]{40}$")


class ExternalError(RuntimeError):
    """The external code raised, hung, or its process died while computing a quantity."""


class RemoteTraceback(Exception):
    """Their traceback (or the worker's log tail) as text, attached as ``__cause__``."""

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.text = text

    def __str__(self) -> str:
        return self.text


# ------------------------------------------------------------------ checkouts
@dataclass(frozen=True)
class Checkout:
    """Where the external code lives.

    Attributes
    ----------
    root : Path
        The folder holding their ``eryx/`` package.
    commit : str or None
        Their git commit (``git rev-parse HEAD`` of a checkout, the pax header of a
        ``git archive`` tarball), when known.
    source : str
        What the user gave (the folder or the tarball).
    """

    root: Path
    commit: str | None
    source: str


def _marker_problem(root: Path, marker: str, pattern: str) -> str | None:
    """Why ``root`` is not a checkout holding ``marker`` with a line matching ``pattern`` (None if it is)."""
    path = root / marker
    if not path.is_file():
        return f"no {marker}"
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        return f"{marker} unreadable ({exc})"
    if not re.search(pattern, text, flags=re.MULTILINE):
        return f"{marker} has no line matching {pattern!r}"
    return None


def git_head(root: Path) -> str | None:
    """HEAD of the git checkout at ``root`` (None when it is not one or git is absent)."""
    if not (root / ".git").exists():
        return None
    try:
        out = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True,
                             timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    head = out.stdout.strip()
    return head if out.returncode == 0 and _COMMIT_RE.match(head) else None


def cache_dir() -> Path:
    """Folder of extracted snapshots (``$PARITY_PEERS_CACHE``, else the user cache)."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV])
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "eryx-parity" / "peers"


def _safe_members(tar: tarfile.TarFile, label: str) -> tuple[str, list[tarfile.TarInfo]]:
    """The single top folder of a snapshot and its members (ValueError for anything unsafe)."""
    members = tar.getmembers()
    tops = {m.name.split("/", 1)[0] for m in members if m.name not in ("", ".")}
    if len(tops) != 1:
        raise ValueError(f"{label}: expected one top folder (a 'git archive' snapshot), found {len(tops)}")
    for m in members:
        parts = Path(m.name).parts
        if m.name.startswith("/") or ".." in parts or not (m.isfile() or m.isdir() or m.issym()):
            raise ValueError(f"{label}: unsafe member {m.name!r} (absolute, '..', or a device/link)")
        if m.issym() and (m.linkname.startswith("/") or ".." in Path(m.linkname).parts):
            raise ValueError(f"{label}: unsafe link {m.name!r} -> {m.linkname!r}")
    return tops.pop(), members


def extract_snapshot(tarball: Path, marker: str, pattern: str, what: str) -> Checkout:
    """Extract a ``git archive`` tarball once into :func:`cache_dir`; its commit from the pax header.

    The archive is checked (one top folder, ``marker`` present with ``pattern``) before
    anything is written; extraction goes to a temporary folder renamed into place, so a
    half-extracted snapshot is never used.
    """
    label = f"{tarball}"
    try:
        with tarfile.open(tarball, "r:*") as tar:
            top, members = _safe_members(tar, label)
            names = {m.name for m in members}
            if f"{top}/{marker}" not in names:
                raise ValueError(f"{label} is not a snapshot of {what}: no {marker} in it")
            text = tar.extractfile(f"{top}/{marker}").read().decode("utf-8", "replace")  # type: ignore[union-attr]
            if not re.search(pattern, text, flags=re.MULTILINE):
                raise ValueError(f"{label} is not a snapshot of {what}: its {marker} has no OnePhonon class")
            comment = str(tar.pax_headers.get("comment", "")).strip()
            commit = comment if _COMMIT_RE.match(comment) else None
            digest = hashlib.sha256(tarball.read_bytes()).hexdigest()[:16]
            dest = cache_dir() / f"{top}-{digest}"
            if not (dest / top / marker).is_file():
                dest.parent.mkdir(parents=True, exist_ok=True)
                tmp = Path(tempfile.mkdtemp(dir=dest.parent, prefix=f".{dest.name}."))
                try:
                    if hasattr(tarfile, "data_filter"):
                        tar.extractall(tmp, members=members, filter="data")
                    else:  # Python < 3.10.12: members were checked above
                        tar.extractall(tmp, members=members)
                    try:
                        os.replace(tmp, dest)
                    except OSError:  # another process extracted it first
                        if not (dest / top / marker).is_file():
                            raise
                finally:
                    shutil.rmtree(tmp, ignore_errors=True)
    except (tarfile.TarError, EOFError, OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"{label}: unreadable or truncated snapshot ({type(exc).__name__}: {exc})") from None
    return Checkout(root=dest / top, commit=commit, source=str(tarball))


def resolve_checkout(path: str | os.PathLike | None, marker: str, pattern: str, what: str,
                     refuse: Mapping[str, str] | None = None) -> Checkout:
    """The checkout at ``path`` (a folder, or a ``.tar.gz`` snapshot of one).

    Parameters
    ----------
    marker, pattern : str
        A file the checkout must hold and a regular expression one of its lines must match.
    what : str
        The expected code, for messages ("apeck12/eryx").
    refuse : {file: why}, optional
        Files whose presence means this is another implementation.

    Raises
    ------
    ValueError
        One line naming the problem.
    """
    if not path:
        raise ValueError(f"needs the path of a checkout of {what} (or its .tar.gz snapshot): "
                         f"--candidate-path DIR")
    p = Path(path).expanduser()
    if not p.exists():
        raise ValueError(f"{p}: no such file or folder (expected a checkout of {what})")
    if p.is_file():
        if not (p.name.endswith((".tar.gz", ".tgz", ".tar"))):
            raise ValueError(f"{p} is not a checkout of {what}: a file that is not a .tar.gz snapshot")
        checkout = extract_snapshot(p.resolve(), marker, pattern, what)
    else:
        root = p.resolve()
        problem = _marker_problem(root, marker, pattern)
        if problem:
            raise ValueError(f"{p} is not a checkout of {what}: {problem}")
        checkout = Checkout(root=root, commit=git_head(root), source=str(p))
    for other, why in (refuse or {}).items():
        if (checkout.root / other).exists():
            raise ValueError(f"{p} is not a checkout of {what}: it holds {other} ({why})")
    return checkout


def check_python(python: str | None) -> str:
    """The interpreter to run the worker with (default: this one); ValueError when it does not run."""
    if not python:
        return sys.executable
    exe = shutil.which(python) or python
    if not (os.path.isfile(exe) and os.access(exe, os.X_OK)):
        raise ValueError(f"--candidate-python {python}: no such executable")
    try:
        out = subprocess.run([exe, "-c", "import sys, numpy; print(sys.version_info >= (3, 8))"],
                             capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.SubprocessError) as exc:
        raise ValueError(f"--candidate-python {python}: cannot run it ({exc})") from None
    if out.returncode != 0 or out.stdout.strip() != "True":
        tail = (out.stderr.strip().splitlines() or ["no output"])[-1]
        raise ValueError(f"--candidate-python {python}: not a Python 3.8+ with numpy ({tail})")
    return exe


def _seconds(value: Any, env: str, default: float, option: str) -> float:
    raw = value if value is not None else os.environ.get(env) or default
    try:
        seconds = float(raw)
    except (TypeError, ValueError):
        raise ValueError(f"{option} must be a number of seconds, got {raw!r}") from None
    if not np.isfinite(seconds) or seconds <= 0:
        raise ValueError(f"{option} must be a positive number of seconds, got {raw!r}")
    return seconds


# -------------------------------------------------------------------- worker
def worker_env(checkout: Path) -> dict:
    """Environment of the worker: the checkout first on PYTHONPATH, this project off it."""
    env = dict(os.environ)
    keep = [p for p in env.get("PYTHONPATH", "").split(os.pathsep)
            if p and Path(p).resolve() != PROJECT_ROOT]
    env["PYTHONPATH"] = os.pathsep.join([str(checkout), *keep])
    env["PYTHONUNBUFFERED"] = "1"
    env.setdefault("MPLBACKEND", "Agg")  # the fork imports matplotlib; no display here
    return env


def _kill(proc: subprocess.Popen) -> None:
    """Kill the worker and whatever it started (its own process group)."""
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError, AttributeError):
        proc.kill()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        pass


def _cleanup(proc: subprocess.Popen | None, outdir: str | None) -> None:
    if proc is not None:
        try:
            if proc.poll() is None and proc.stdin and not proc.stdin.closed:
                proc.stdin.write(b'{"quit": true}\n')
                proc.stdin.flush()
                proc.wait(timeout=5)
        except (OSError, ValueError, subprocess.TimeoutExpired):
            pass
        _kill(proc)
        for stream in (proc.stdin,):
            try:
                if stream:
                    stream.close()
            except OSError:
                pass
    if outdir:
        shutil.rmtree(outdir, ignore_errors=True)


_LIVE: "weakref.WeakSet[ExternalSession]" = weakref.WeakSet()


@atexit.register
def _close_all() -> None:  # a run that never closes its sessions still leaves nothing behind
    for session in list(_LIVE):
        session.close()


class ExternalSession(Session):
    """One worker process holding their model for one spec."""

    backend: "ExternalBackend"

    def __init__(self, backend: "ExternalBackend", spec: RunSpec) -> None:
        super().__init__(backend, spec)
        self.proc: subprocess.Popen | None = None
        self.outdir: str | None = None
        self.worker_info: dict = {}
        self._offset = 0
        self._events: list[dict] = []
        self._stopped: str | None = None  # why the worker is gone
        self._log = None
        _LIVE.add(self)

    # -- the worker's files
    def _read_events(self) -> None:
        """Append the complete new lines of status.jsonl to the event list."""
        path = Path(self.outdir) / "status.jsonl"  # type: ignore[arg-type]
        try:
            with open(path, "rb") as handle:
                handle.seek(self._offset)
                chunk = handle.read()
        except FileNotFoundError:
            return
        end = chunk.rfind(b"\n") + 1
        for line in chunk[:end].splitlines():
            if line.strip():
                try:
                    self._events.append(json.loads(line))
                except json.JSONDecodeError:
                    self._events.append({"event": "garbled", "line": line[:200].decode("utf-8", "replace")})
        self._offset += end

    def log_tail(self, n: int = LOG_TAIL_LINES) -> str:
        """The last ``n`` lines of what the worker (and their code) printed."""
        if not self.outdir:
            return ""
        try:
            text = (Path(self.outdir) / "worker.log").read_text(encoding="utf-8", errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-n:])

    def _wait(self, match, timeout: float, doing: str) -> dict:
        """The first event satisfying ``match``; ExternalError on a timeout or a dead worker."""
        t0 = time.monotonic()
        while True:
            self._read_events()
            for i, ev in enumerate(self._events):
                if match(ev):
                    return self._events.pop(i)
            rc = self.proc.poll() if self.proc else -1
            if rc is not None:
                self._read_events()  # a line written just before exiting
                for i, ev in enumerate(self._events):
                    if match(ev):
                        return self._events.pop(i)
                self._stop(f"the worker exited with code {rc} while {doing}")
                raise ExternalError(f"the worker exited with code {rc} while {doing} (log tail attached)") \
                    from RemoteTraceback(self.log_tail() or "(the worker printed nothing)")
            if time.monotonic() - t0 > timeout:
                self._stop(f"timed out after {timeout:g} s {doing}")
                raise ExternalError(f"timed out after {timeout:g} s {doing}") \
                    from RemoteTraceback(self.log_tail() or "(the worker printed nothing)")
            time.sleep(_POLL_S)

    def _stop(self, why: str) -> None:
        self._stopped = why
        if self.proc is not None:
            _kill(self.proc)

    # -- construction
    def _request(self) -> dict:
        s = self.spec
        return {"adapter": self.backend.name, "checkout": str(self.backend.checkout.root),
                "project_root": str(PROJECT_ROOT), "pdb_path": str(Path(s.pdb_path).resolve()),
                "samplings": [list(x) for x in s.samplings], "params": dict(s.params), "device": s.device,
                "dtype": s.dtype, "map_shape": list(s.map_shape), "q_sample": s.q_sample.tolist(),
                "grad_q_sample": s.grad_q_sample.tolist(), "oracle_hkl": s.oracle_hkl.tolist(),
                "probes": bool(getattr(self, "want_probes", False))}  # parity locate (worker_common.ProbeSink)

    def _build(self) -> None:
        self.outdir = tempfile.mkdtemp(prefix=f"parity-{self.backend.name}-")
        request = Path(self.outdir) / "request.json"
        request.write_text(json.dumps(self._request()), encoding="utf-8")
        self._log = open(Path(self.outdir) / "worker.log", "wb")
        cmd = [self.backend.python, str(WORKERS_DIR / self.backend.worker_script), str(request), self.outdir]
        try:
            self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=self._log, stderr=subprocess.STDOUT,
                                         cwd=self.outdir, env=worker_env(self.backend.checkout.root),
                                         start_new_session=True)
        except OSError as exc:
            raise BuildFailure("construct", 1, ExternalError(f"cannot start the worker: {exc}")) from None
        weakref.finalize(self, _cleanup, self.proc, self.outdir)
        try:
            ev = self._wait(lambda e: e.get("event") in ("built", "build_failed"), self.backend.build_timeout,
                            "constructing their OnePhonon")
        except ExternalError as exc:
            raise BuildFailure("construct", 1, exc, f"{exc}\n{exc.__cause__}") from None
        self.worker_info = dict(ev.get("info") or {})
        self.backend.worker_info = self.worker_info
        if ev["event"] == "build_failed":
            self._stopped = "their OnePhonon could not be constructed"
            err = ExternalError(f"{ev.get('type', 'Exception')}: {ev.get('message', '')}")
            raise BuildFailure(ev.get("step") or "construct", int(ev.get("phase") or 1), err,
                               ev.get("traceback", ""))
        self.worker_info["build_seconds"] = ev.get("seconds")

    # -- quantities
    def _compute(self, name: str) -> Any:
        if name not in self.backend.provides():
            raise NotProvided(self.backend.not_provided_reason(name))
        if self.build_error is not None:
            raise self.build_error
        if self._stopped:
            raise ExternalError(f"not computed: the worker was stopped ({self._stopped})")
        try:
            self.proc.stdin.write((json.dumps({"compute": name}) + "\n").encode())  # type: ignore[union-attr]
            self.proc.stdin.flush()  # type: ignore[union-attr]
        except (OSError, ValueError):
            pass  # a dead worker: _wait reports its exit code and log
        ev = self._wait(lambda e: e.get("event") == "result" and e.get("name") == name, self.backend.timeout,
                        f"computing {name}")
        status = ev.get("status")
        if status == "ok":
            if "value" in ev:
                return ev["value"]
            try:
                return np.load(Path(self.outdir) / ev["file"], allow_pickle=False)  # type: ignore[arg-type]
            except (OSError, ValueError, KeyError) as exc:
                raise ExternalError(f"the worker's {name}.npy is unreadable ({exc})") from None
        if status == "not_provided":
            raise NotProvided(ev.get("reason") or f"{self.backend.repository} does not provide {name}")
        raise ExternalError(f"their code raised computing {name}: {ev.get('type', 'Exception')}: "
                            f"{ev.get('message', '')}") from RemoteTraceback(ev.get("traceback", ""))

    def probe_records(self) -> list | None:
        """The probes the worker recorded during construction (``parity locate``), or None."""
        meta = Path(self.outdir or "") / "probes.json"
        if not self.outdir or not meta.is_file():
            return None
        with np.load(Path(self.outdir) / "probes.npz", allow_pickle=False) as arrays:
            return ProbeRecorder.from_arrays(json.loads(meta.read_text(encoding="utf-8")), arrays).records

    def close(self) -> None:
        _cleanup(self.proc, self.outdir)
        if self._log is not None:
            self._log.close()
            self._log = None
        self.proc, self.outdir = None, None
        self._stopped = self._stopped or "the session was closed"
        super().close()


class ExternalBackend(Backend):
    """A public implementation run in its own process (subclasses name the code and the worker).

    Parameters
    ----------
    path : str
        A checkout of their repository, or a ``.tar.gz`` snapshot of it.
    python : str, optional
        Interpreter for the worker (default: this one), e.g. a virtualenv with their pins.
    timeout, build_timeout : float, optional
        Seconds per quantity and for their construction.
    """

    options = ("timeout", "build_timeout")
    #: Their repository ("owner/name").
    repository: ClassVar[str] = ""
    #: The worker script in parity/backends/workers/.
    worker_script: ClassVar[str] = ""
    #: (file, regular expression) that identify a checkout of their code.
    marker: ClassVar[tuple[str, str]] = ("eryx/models.py", r"^class OnePhonon\b")
    #: {file: why} whose presence means a checkout of the other implementation.
    refuse: ClassVar[dict[str, str]] = {}
    #: Quantities the worker maps, and why the others are not provided.
    provided: ClassVar[frozenset[str]] = frozenset()
    missing: ClassVar[dict[str, str]] = {}
    #: Run-time compatibility shims the worker applies (name: reason), for the record.
    shims: ClassVar[dict[str, str]] = {}

    def __init__(self, *, path: str | None = None, python: str | None = None, **options: Any) -> None:
        super().__init__(path=path, python=python, **options)
        self.timeout = _seconds(options.get("timeout"), TIMEOUT_ENV, DEFAULT_TIMEOUT, "timeout")
        self.build_timeout = _seconds(options.get("build_timeout"), BUILD_TIMEOUT_ENV, DEFAULT_BUILD_TIMEOUT,
                                      "build_timeout")
        self.checkout = resolve_checkout(path, *self.marker, self.repository, self.refuse)
        self.python = check_python(python)
        self.worker_info: dict = {}

    @classmethod
    def static_provides(cls) -> frozenset[str]:
        return cls.provided

    def provides(self) -> frozenset[str]:
        return self.provided

    def not_provided_reason(self, name: str) -> str:
        return self.missing.get(name, f"the {self.name} adapter does not map {name}")

    def open(self, spec: RunSpec) -> ExternalSession:
        return ExternalSession(self, spec)

    def check_spec(self, spec: RunSpec) -> None:
        """Refuse a precision their code cannot run (neither implementation has a precision option)."""
        if spec.dtype != "float64":
            raise ValueError(f"{self.name} computes in float64 only (their code has no precision option); "
                             f"use --dtype float64")

    def info(self) -> dict:
        w = self.worker_info
        return {"name": self.name, "description": self.description, "repository": self.repository,
                "version": w.get("version"), "commit": self.checkout.commit, "origin": str(self.checkout.root),
                "source": self.checkout.source, "python": self.python, "python_version": w.get("python"),
                "libraries": w.get("libraries"), "imported_from": w.get("imported_from"),
                "shims": dict(self.shims), "device": w.get("device", "cpu"), "dtype": w.get("dtype", "float64"),
                "timeout_s": self.timeout, "build_timeout_s": self.build_timeout,
                "build_seconds": w.get("build_seconds")}
