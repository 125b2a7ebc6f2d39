"""What ``parity bench`` and the pytest benchmarks time: fixtures x grids x backends, built through the backends.

A :class:`Workload` is one fixture on one grid in one backend variant (backend name,
dtype, device). It opens a session of that backend (:mod:`parity.backends`) and asks it
for the callable of each phase (:meth:`parity.backends.base.Session.timed_phase`): the
benchmark never builds a model itself, so any backend that implements ``timed_phase``
can be benchmarked, and what is timed is what the harness compares.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np

from parity.backends import get_backend
from parity.backends.base import TIMED_PHASES, Backend, NotProvided, Session
from parity.contract.spec import Q_SAMPLE_SIZE, make_spec

Grid = tuple[tuple[int, int, int], tuple[int, int, int], tuple[int, int, int]]

#: The small grid: 5zck_p1's golden grid.
SMALL_GRID: Grid = ((-2, 2, 2), (-2, 2, 2), (-2, 2, 2))
#: The standard grid of the eryx paper's 5zck_p1 maps.
STANDARD_GRID: Grid = ((-4, 4, 3), (-17, 17, 3), (-29, 29, 3))
#: Grid-size sweep: 5zck_p1 with the standard h, k ranges and l in (-l, l); the
#: last point is the standard grid itself.
GRID_SWEEP_L = (3, 7, 14, 29)
#: The issue-7 scale case: 193l lysozyme (8 x 1001 atoms) on 41 x 41 x 25 points.
SCALE_GRID: Grid = ((-10, 10, 2), (-10, 10, 2), (-6, 6, 2))
#: Atom-count sweep on the small grid (n_asu x n_at: 4x28, 3x58, 1x1001, 8x1001).
ATOM_SWEEP = ("5zck_p1", "7n2h", "6o2h_clean", "193l")
#: The NumPy reference is not run where its own memory estimate is above this.
NUMPY_MEMORY_CAP = 4 * 2**30
#: The backend every other one's speed-up is measured against (speed-up = its time / theirs).
REFERENCE_BACKEND = "numpy"
#: Backend options of the benchmark, per backend name: the reference is capped in memory.
BACKEND_OPTIONS: dict[str, dict[str, Any]] = {REFERENCE_BACKEND: {"memory_limit": NUMPY_MEMORY_CAP}}
#: Backends with no dtype or device choice (float64 on the CPU): labelled by name alone.
FIXED_PRECISION = frozenset({REFERENCE_BACKEND})
PHASES = TIMED_PHASES[:4]
END_TO_END = TIMED_PHASES[4]
#: pytest-benchmark groups / table labels.
PHASE_GROUPS = {
    "1": "phase1-grid-kvec",
    "2": "phase2-structure-factors",
    "3": "phase3-phonons-covariance",
    "4": "phase4-apply-disorder",
    END_TO_END: "end-to-end",
}


def sweep_grid(l_max: int) -> Grid:
    """The grid-sweep grid with l in (-l_max, l_max) (standard h, k ranges; L = 3)."""
    return ((-4, 4, 3), (-17, 17, 3), (-l_max, l_max, 3))


def grid_points(grid: Sequence[Sequence[int]]) -> int:
    """Number of grid points of ``grid``."""
    return int(np.prod([int(L * (hi - lo) + 1) for lo, hi, L in grid]))


def grid_label(grid: Sequence[Sequence[int]]) -> str:
    """'small', 'standard', 'scale', 'l+-N' (the sweep) or the grid written out."""
    grid = tuple(tuple(int(v) for v in s) for s in grid)
    if grid == SMALL_GRID:
        return "small"
    if grid == STANDARD_GRID:
        return "standard"
    if grid == SCALE_GRID:
        return "scale"
    if grid[:2] == STANDARD_GRID[:2] and grid[2][0] == -grid[2][1] and grid[2][2] == 3:
        return f"l+-{grid[2][1]}"
    return ";".join(",".join(str(v) for v in s) for s in grid)


def q_sample_indices(grid: Sequence[Sequence[int]], size: int | None = None) -> np.ndarray:
    """The harness's fixed, evenly spread q sample (the phase-2 stages' points)."""
    n_q = grid_points(grid)
    size = Q_SAMPLE_SIZE if size is None else size
    return np.unique(np.linspace(0, n_q - 1, min(n_q, size)).round().astype(np.int64))


def is_reference(backend: str) -> bool:
    """Whether records of ``backend`` are the speed-up baseline (:data:`REFERENCE_BACKEND`)."""
    return backend == REFERENCE_BACKEND


def backend_label(backend: str, dtype: str, device: str) -> str:
    """'numpy' for a fixed-precision backend, else '<backend>-<device>-<dtype>'."""
    return backend if backend in FIXED_PRECISION else f"{backend}-{device}-{dtype}"


def backends(devices: Iterable[str]) -> list[tuple[str, str, str]]:
    """(backend, dtype, device): the reference, then torch float64 and float32 per device."""
    out = [(REFERENCE_BACKEND, "float64", "cpu")]
    for device in devices:
        out += [("torch", "float64", device), ("torch", "float32", device)]
    return out


def default_devices() -> list[str]:
    import torch  # the benchmark's device list only (keeps the import of this module light)

    return ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@dataclass
class Workload:
    """One fixture x grid x backend variant: a backend session that hands out timed callables.

    ``backend`` is a backend name (``'numpy'``, ``'torch'``, ...), opened with
    :data:`BACKEND_OPTIONS`; ``dtype`` and ``device`` go into the run spec.
    """

    fixture: str
    grid: Grid
    backend: str
    dtype: str = "float64"
    device: str = "cpu"
    fixtures_dir: str | None = None
    _pdb: str | None = field(default=None, repr=False)
    _session: Session | None = field(default=None, repr=False)

    @property
    def pdb_path(self) -> str:
        if self._pdb is None:
            from eryx.fixtures import resolve_fixture

            self._pdb = str(resolve_fixture(self.fixture, self.fixtures_dir))
        return self._pdb

    @property
    def label(self) -> str:
        return backend_label(self.backend, self.dtype, self.device)

    def open_backend(self) -> Backend:
        return get_backend(self.backend, **BACKEND_OPTIONS.get(self.backend, {}))

    def opened(self) -> Session:
        """The backend's session for this workload, opened once, not yet built
        (FixtureNotFoundError when the fixture is missing)."""
        if self._session is None:
            spec = make_spec(self.pdb_path, samplings=self.grid, device=self.device, dtype=self.dtype)
            self._session = self.open_backend().open(spec)
        return self._session

    @property
    def session(self) -> Session:
        """:meth:`opened`, built (a failed build raises the build's error)."""
        session = self.opened().build()
        if session.build_error is not None:
            raise session.build_error.error
        return session

    def phase(self, phase: str | int) -> Callable[[], Any]:
        """The callable that times ``phase`` (1-4 or :data:`END_TO_END`) through the session;
        end to end builds nothing here (its callable constructs the model).

        Raises NotProvided where the backend does not (here: a model refused for memory)."""
        phase = str(phase)
        if phase not in TIMED_PHASES:
            raise KeyError(f"unknown phase {phase!r}: phases are 1, 2, 3, 4 and {END_TO_END!r}")
        return (self.opened() if phase == END_TO_END else self.session).timed_phase(phase)

    def end_to_end(self) -> Callable[[], Any]:
        return self.phase(END_TO_END)

    def sizes(self) -> dict[str, int]:
        """``{"n_atoms", "n_asu"}`` of the fixture (from the session's quantities)."""
        xyz, n_asu = self.session.get("xyz"), int(self.session.get("n_asu"))
        return {"n_atoms": int(np.prod(tuple(xyz.shape)[:-1])), "n_asu": n_asu}

    def n_q(self, phase: str | int) -> int:
        return len(q_sample_indices(self.grid)) if str(phase) == "2" else grid_points(self.grid)

    def spec(self) -> dict:
        """JSON-able description (for the peak-RSS subprocess)."""
        return {"pdb": self.pdb_path, "fixture": self.fixture, "grid": [list(s) for s in self.grid],
                "backend": self.backend, "dtype": self.dtype, "device": self.device}

    @classmethod
    def from_spec(cls, spec: Mapping[str, Any]) -> "Workload":
        """The workload of :meth:`spec`'s description."""
        return cls(spec["fixture"], tuple(tuple(s) for s in spec["grid"]), spec["backend"], spec["dtype"],
                   spec["device"], _pdb=spec["pdb"])


__all__ = ["ATOM_SWEEP", "BACKEND_OPTIONS", "END_TO_END", "GRID_SWEEP_L", "Grid", "NUMPY_MEMORY_CAP", "NotProvided",
           "PHASES", "PHASE_GROUPS", "REFERENCE_BACKEND", "SCALE_GRID", "SMALL_GRID", "STANDARD_GRID", "Workload",
           "backend_label", "backends", "default_devices", "grid_label", "grid_points", "is_reference",
           "q_sample_indices", "sweep_grid"]
