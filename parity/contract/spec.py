"""What one parity run computes: the fixture, the grid, the model parameters, the precision.

A :class:`RunSpec` is the single input every backend receives (the harness never hands a
backend anything else), and the identity a stored dump carries: two results are comparable
only when their specs agree (:meth:`RunSpec.differences`). The q sample and the integer
reflections used by sampled stages are functions of the spec alone, so every backend
evaluates them at the same points.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from eryx.errors import EryxInputError
from eryx.fixtures import resolve_fixture
from eryx.validation import check_common, check_sampling

from parity.contract.devices import check_device

#: Grids used when the caller names none. Each has an odd oversampling on at least one
#: axis: at oversampling <= 2 every k-point is its own Friedel mate (k = -k modulo the
#: reciprocal lattice), K(k) is real, and sign errors in a phase (k.r, q.r, a missing
#: conjugate, a transposed Hermitian factor) cannot change any compared number.
DEFAULT_GRIDS: dict[str, tuple[tuple[int, int, int], ...]] = {
    "5zck_p1": ((-2, 2, 2), (-2, 2, 2), (-2, 2, 3)),
    "7n2h": ((-3, 3, 2), (-3, 3, 2), (-1, 1, 3)),
    "193l": ((-10, 10, 2), (-10, 10, 2), (-6, 6, 3)),
}
FALLBACK_GRID = ((-2, 2, 2), (-2, 2, 2), (-2, 2, 3))
DEFAULT_PARAMS: dict[str, Any] = {"gnm_cutoff": 4.0, "gamma_intra": 1.0, "gamma_inter": 1.0,
                                  "res_limit": 0.0, "expand_p1": True}
DTYPES = ("float64", "float32")
#: Points of the fixed q sample used by the structure-factor and q-gradient stages.
Q_SAMPLE_SIZE = 512
#: Points of the q sample at which d Id / d q is compared (each costs 6 reference maps).
GRAD_Q_SAMPLE_SIZE = 24
#: Integer reflections compared with gemmi.
GEMMI_SAMPLE_SIZE = 200
#: Added to the q-gradient sample's q-vectors (1/A) for the off-grid q-vector stage: a
#: fraction of a BZ step on every fixture, so the points sit between the grid's k-points.
#: Backends read it in the run's precision through :attr:`RunSpec.offgrid_shift_q` (a
#: float64 shift added to float32 q-vectors would promote the q-vectors to float64).
OFFGRID_SHIFT_Q = np.array([0.0123, -0.0217, 0.0311])
#: A triclinic cell (A, degrees) on which every term of the d-spacing formula matters; the
#: fixture's own cell (often orthogonal) leaves the angle terms unseen.
PROBE_CELL = np.array([31.3, 37.9, 43.1, 71.3, 83.7, 102.9])
_LOW_ORDER = np.array([(1, 0, 0), (0, 1, 0), (0, 0, 1), (1, 1, 0), (1, 0, 1), (0, 1, 1), (1, 1, 1)], dtype=float)


def default_grid(fixture: str) -> tuple[tuple[int, int, int], ...]:
    """The grid a run uses when none is given (see :data:`DEFAULT_GRIDS`)."""
    return DEFAULT_GRIDS.get(Path(str(fixture)).stem, FALLBACK_GRID)


def file_sha256(path: str | Path) -> str:
    """Content hash of a fixture file (identifies a dump's structure, whatever its path)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@dataclass(frozen=True)
class RunSpec:
    """The inputs of one run, as every backend sees them.

    Attributes
    ----------
    fixture : str
        Fixture name or path as the user gave it.
    pdb_path : str
        The resolved PDB file.
    samplings : ((hmin, hmax, L_h), (kmin, kmax, L_k), (lmin, lmax, L_l))
        Integer grid bounds and oversampling factors.
    params : dict
        Model parameters: gnm_cutoff (A), gamma_intra, gamma_inter, res_limit (A), expand_p1.
    device, dtype : str
        Where and in which precision a backend that can choose computes ('cpu', 'cuda:0', ...;
        'float64' or 'float32'). Backends that cannot choose say what they used in their info.
    """

    fixture: str
    pdb_path: str
    samplings: tuple[tuple[int, int, int], ...]
    params: Mapping[str, Any] = field(default_factory=lambda: dict(DEFAULT_PARAMS))
    device: str = "cpu"
    dtype: str = "float64"
    #: Content hash of the fixture when known without the file (a dump read elsewhere).
    sha256: str | None = None

    # -- derived sizes
    @property
    def map_shape(self) -> tuple[int, int, int]:
        return tuple(int(L * (hi - lo) + 1) for lo, hi, L in self.samplings)  # type: ignore[return-value]

    @property
    def n_q(self) -> int:
        return int(np.prod(self.map_shape))

    @property
    def oversampling(self) -> tuple[int, int, int]:
        return tuple(s[2] for s in self.samplings)  # type: ignore[return-value]

    @property
    def n_bz(self) -> int:
        return int(np.prod(self.oversampling))

    @property
    def sees_phase_signs(self) -> bool:
        """False when every k-point is its own Friedel mate (oversampling <= 2 on every axis)."""
        return any(L > 2 for L in self.oversampling)

    @property
    def model_kwargs(self) -> dict:
        """Keyword arguments of the project's OnePhonon constructors."""
        return dict(self.params)

    # -- sampled points, the same for every backend
    @property
    def q_sample(self) -> np.ndarray:
        """Flat grid indices of an evenly spread sample (structure factors, form factors)."""
        n_q = self.n_q
        return np.unique(np.linspace(0, n_q - 1, min(n_q, Q_SAMPLE_SIZE)).round().astype(np.int64))

    @property
    def real_dtype(self) -> np.dtype:
        """The NumPy real dtype of the run (float64 or float32)."""
        return np.dtype(self.dtype)

    @property
    def offgrid_shift_q(self) -> np.ndarray:
        """(3,) :data:`OFFGRID_SHIFT_Q` in the run's real dtype (1/A): add it to the q-vectors of
        :attr:`grad_q_sample` for the off-grid quantity ``Id_q_offgrid``."""
        return OFFGRID_SHIFT_Q.astype(self.real_dtype)

    @property
    def bragg_free(self) -> np.ndarray:
        """(n_q,) bool: grid points whose BZ point is not k = 0 (ALGORITHM.md 5)."""
        axes = [np.arange(n) % L != 0 for n, L in zip(self.map_shape, self.oversampling)]
        off = np.logical_or.outer(np.logical_or.outer(axes[0], axes[1]), axes[2])
        return off.reshape(-1)

    @property
    def grad_q_sample(self) -> np.ndarray:
        """Flat grid indices where d Id / d q is compared, evenly spread over the non-Bragg points."""
        candidates = np.flatnonzero(self.bragg_free)
        if candidates.size == 0:
            return candidates
        pick = np.linspace(0, candidates.size - 1, min(candidates.size, GRAD_Q_SAMPLE_SIZE)).round()
        return candidates[np.unique(pick.astype(np.int64))]

    @property
    def oracle_hkl(self) -> np.ndarray:
        """Integer reflections (n, 3) of the grid compared with gemmi, plus the lowest orders.

        The lowest-order reflections are always included: the oracle tier's yardstick is
        max|F|, and a grid holding only weak reflections would judge gemmi's single-precision
        error against far too small a scale.
        """
        axes = [np.linspace(lo, hi, int(L * (hi - lo) + 1)) for lo, hi, L in self.samplings]
        ints = [a[np.isclose(a, np.round(a))].round() for a in axes]
        hkl = np.stack(np.meshgrid(*ints, indexing="ij"), axis=-1).reshape(-1, 3)
        hkl = hkl[np.any(hkl != 0, axis=1)]
        if len(hkl):
            hkl = hkl[np.unique(np.linspace(0, len(hkl) - 1, min(len(hkl), GEMMI_SAMPLE_SIZE)).round().astype(int))]
        return np.unique(np.concatenate([hkl, _LOW_ORDER]), axis=0)

    # -- identity
    @property
    def fixture_sha256(self) -> str:
        if self.sha256 is None:
            object.__setattr__(self, "sha256", file_sha256(self.pdb_path))
        return self.sha256

    def identity(self) -> dict:
        """What must agree between two results for them to be comparable (JSON-safe)."""
        return {"fixture_sha256": self.fixture_sha256,
                "samplings": [list(s) for s in self.samplings],
                "params": {k: self.params[k] for k in sorted(self.params)}}

    def to_dict(self) -> dict:
        return {"fixture": self.fixture, "pdb_path": self.pdb_path, **self.identity(),
                "device": self.device, "dtype": self.dtype}

    @staticmethod
    def differences(a: Mapping[str, Any], b: Mapping[str, Any]) -> list[str]:
        """Human-readable differences between two :meth:`identity` dicts (empty when equal)."""
        out = []
        if a.get("fixture_sha256") != b.get("fixture_sha256"):
            out.append(f"fixture content differs (sha256 {str(a.get('fixture_sha256'))[:12]}... vs "
                       f"{str(b.get('fixture_sha256'))[:12]}...)")
        if [list(s) for s in a.get("samplings", [])] != [list(s) for s in b.get("samplings", [])]:
            out.append(f"samplings differ ({a.get('samplings')} vs {b.get('samplings')})")
        pa, pb = dict(a.get("params") or {}), dict(b.get("params") or {})
        for key in sorted(set(pa) | set(pb)):
            if pa.get(key) != pb.get(key):
                out.append(f"parameter {key} differs ({pa.get(key)!r} vs {pb.get(key)!r})")
        return out


def make_spec(fixture: str, *, samplings: Sequence[Sequence[int]] | None = None,
              params: Mapping[str, Any] | None = None, device: str = "cpu", dtype: str = "float64",
              fixtures_dir: str | None = None) -> RunSpec:
    """Resolve the fixture and validate every option (raises EryxInputError in one line)."""
    check_device(device)  # the one device check, before any backend runs
    pdb = resolve_fixture(fixture, fixtures_dir)
    samplings = samplings or default_grid(fixture)
    if len(samplings) != 3:
        raise EryxInputError(f"samplings must give three (min, max, oversampling) triples (h, k, l), got {samplings!r}")
    grid = tuple(check_sampling(s, a).as_tuple() for s, a in zip(samplings, "hkl"))
    if dtype not in DTYPES:
        raise EryxInputError(f"unsupported dtype {dtype!r}: use float64 or float32")
    merged = {**DEFAULT_PARAMS, **(params or {})}
    unknown = set(merged) - set(DEFAULT_PARAMS)
    if unknown:
        raise EryxInputError(f"unknown model parameter(s): {', '.join(sorted(unknown))}")
    check_common(*grid, res_limit=merged["res_limit"], gnm_cutoff=merged["gnm_cutoff"],
                 gamma_intra=merged["gamma_intra"], gamma_inter=merged["gamma_inter"], group_by="asu", model="gnm")
    merged = {k: (bool(v) if k == "expand_p1" else float(v)) for k, v in merged.items()}
    return RunSpec(fixture=str(fixture), pdb_path=str(pdb), samplings=grid, params=merged,
                   device=str(device), dtype=dtype)
