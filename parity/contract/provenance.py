"""Provenance: where a result was computed (library versions, git commit, machine).

One low-level module (standard library, NumPy and the scientific stack only) so that
backends, the runner, the nightly and the benchmarks all describe a run the same way
without importing the runner. The keys of :func:`environment` are the result's
``environment`` object (docs/architecture.md).
"""
from __future__ import annotations

import importlib.metadata
import platform
import socket
import subprocess
from pathlib import Path

import numpy as np


def environment() -> dict:
    """Library versions, git commit and machine, for the result's identity.

    Returns
    -------
    dict
        ``python``, ``numpy``, ``scipy``, ``torch`` (None without torch), ``gemmi``,
        ``git_commit`` (None outside a git checkout), ``hostname``, ``platform``.
    """
    # Imported here: gemmi and scipy cost start-up time and torch may be absent (a
    # NumPy-only environment, e.g. a dump of the reference made elsewhere).
    import gemmi
    import scipy

    try:
        import torch
    except ImportError:
        torch = None
    return {
        "python": platform.python_version(), "numpy": np.__version__, "scipy": scipy.__version__,
        "torch": torch.__version__ if torch is not None else None, "gemmi": gemmi.__version__,
        "git_commit": git_commit(),
        "hostname": socket.gethostname(), "platform": platform.platform(),
    }


def package_version(distribution: str = "eryx-parity") -> str | None:
    """The installed version of ``distribution`` (None when it is not installed, e.g. run from a checkout)."""
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


def git_commit() -> str | None:
    """HEAD of the repository holding this package, if it is one (None otherwise)."""
    here = Path(__file__).resolve().parent
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def device_name(device: str) -> str:
    """A person's name for ``device`` (the GPU's model, or the CPU and its threads); never raises."""
    try:
        import torch  # torch-free environments still name their CPU
    except ImportError:
        return f"CPU ({platform.machine()})"
    try:
        dev = torch.device(device)
        if dev.type == "cuda":
            return torch.cuda.get_device_name(dev)
    except (RuntimeError, AssertionError, ValueError) as exc:  # never a traceback for a name
        return f"{device} (unavailable: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__})"
    return f"CPU ({platform.machine()}, {torch.get_num_threads()} threads)"
