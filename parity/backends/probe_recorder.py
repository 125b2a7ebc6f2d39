"""Recording named probes (``eryx.probes``) while a backend computes.

A :class:`ProbeRecorder` is the listener: it keeps a NumPy copy of every probed value
(copies, because implementations reuse buffers) with its name, loop indices, the names of
its vectorised index axes, the tier it names and the source line of the probe call. Above
a memory budget the copies are spilled to ``.npy`` files and read back memory-mapped.
Backends use it to carry probes through a dump or a worker process; ``parity.locate``
aligns and compares the records of two sides.
"""
from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from parity.contract.values import as_numpy

#: Bytes of probe copies kept in memory per side; beyond it they go to disk (memory-mapped).
MEMORY_BUDGET = int(os.environ.get("PARITY_PROBE_BUDGET", 512 << 20))


@dataclass
class Record:
    """One probe call: ``value`` (NumPy copy or memory map) and where it came from."""

    seq: int
    name: str
    index: tuple[tuple[str, int], ...]
    axes: tuple[Any, ...]
    tier: str | None
    where: str
    value: np.ndarray


class ProbeRecorder:
    """The listener of ``eryx.probes``: ``with listen(recorder): run()``.

    Parameters
    ----------
    budget : int
        Bytes kept in memory; later values are written to ``spill_dir`` and memory-mapped.
    """

    def __init__(self, budget: int = MEMORY_BUDGET, spill_dir: str | None = None) -> None:
        self.records: list[Record] = []
        self.budget, self.bytes, self.spilled = int(budget), 0, 0
        self._spill_dir = spill_dir
        self._tmp: tempfile.TemporaryDirectory | None = None

    def __call__(self, name: str, value: Any, index: tuple, axes: tuple, tier: str | None, where: str) -> None:
        arr = np.array(as_numpy(value), copy=True)
        axes = tuple(a if isinstance(a, str) else (str(a[0]), np.asarray(as_numpy(a[1])).astype(np.int64))
                     for a in axes)
        if self.bytes + arr.nbytes > self.budget:
            arr = self._spill(arr)
        else:
            self.bytes += arr.nbytes
        path, _, line = where.rpartition(":")
        rel = os.path.relpath(path) if path else where
        where = f"{rel}:{line}" if path and not rel.startswith("..") else where
        self.records.append(Record(len(self.records), name, tuple(index), axes, tier, where, arr))

    def _spill(self, arr: np.ndarray) -> np.ndarray:
        if self._spill_dir is None:
            self._tmp = self._tmp or tempfile.TemporaryDirectory(prefix="parity-probes-")
            self._spill_dir = self._tmp.name
        path = os.path.join(self._spill_dir, f"probe{len(self.records)}.npy")
        np.save(path, arr, allow_pickle=False)
        self.spilled += arr.nbytes
        return np.load(path, mmap_mode="r")

    # -- transport (dumps, subprocess workers): plain arrays and JSON-able metadata
    def to_arrays(self) -> tuple[list[dict], dict[str, np.ndarray]]:
        """(metadata per record, arrays by key) for a dump or a worker's answer."""
        meta, arrays = [], {}
        for r in self.records:
            axes = []
            for j, a in enumerate(r.axes):
                if isinstance(a, str):
                    axes.append(a)
                else:
                    arrays[f"probe{r.seq}_axis{j}"] = a[1]
                    axes.append([a[0], f"probe{r.seq}_axis{j}"])
            arrays[f"probe{r.seq}"] = np.asarray(r.value)
            meta.append({"name": r.name, "index": [list(p) for p in r.index], "axes": axes, "tier": r.tier,
                         "where": r.where, "key": f"probe{r.seq}"})
        return meta, arrays

    @classmethod
    def from_arrays(cls, meta: Sequence[dict], arrays: Any) -> "ProbeRecorder":
        rec = cls()
        for m in meta:
            axes = tuple(a if isinstance(a, str) else (a[0], np.asarray(arrays[a[1]])) for a in m["axes"])
            rec(m["name"], np.asarray(arrays[m["key"]]), tuple((k, int(v)) for k, v in m["index"]), axes,
                m.get("tier"), m.get("where", "?"))
        return rec
