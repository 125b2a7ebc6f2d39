"""PyTorch OnePhonon: the reference numbers, vectorised, on any device, differentiable.

Same constructor as :class:`eryx.models.OnePhonon` plus ``device``, ``dtype``,
``q_vectors`` (arbitrary q-vector mode) and ``chunk_size``; the same intermediate
quantities under the same names, as tensors on the chosen device. Structure loading
is shared (:mod:`eryx.structure`); every number after it is computed in torch by the
pure functions of :mod:`eryx.functional_torch`.

Differentiable in ``gamma_intra``, ``gamma_inter`` (pass tensors with
``requires_grad``) and, in q-vector mode, in ``q_vectors``. The full map
(``rank=-1``) is computed as F K(k)^-1 F^H (on the grid as |W F|^2 with W the inverse
Cholesky factor of conj K), which needs no eigenvectors, so its gradients stay finite
at degenerate eigenvalues. On the grid the structure factors use per-axis phase
tables (docs/performance.md). A single mode's map
(``rank >= 0``) needs eigenvectors: its gradient is finite only where that mode's
eigenvalue is non-degenerate (torch's eigh backward divides by eigenvalue gaps).
"""
from __future__ import annotations

import contextlib
import math
import os
from typing import Sequence

import numpy as np
import torch

from eryx import gridmap_torch as gm
from eryx import functional_torch as st
from eryx import structure
from eryx.build import run_build_steps
from eryx.errors import EryxInputError, SpringConstantError, UndefinedADPError
from eryx.probes import listening as _listening
from eryx.probes import probe
from eryx.structure import ID_CELL_REF
from eryx.stiffness import check_model_stiffness
from eryx.validation import (
    check_common, check_memory, check_spectrum, contact_upper_bound, estimate_torch_memory,
    resolve_memory_limit, undefined_adp_reason,
)

SUPPORTED_DTYPES = {torch.float64: torch.complex128, torch.float32: torch.complex64}
#: Default number of q-points per structure-factor chunk (bounds memory).
DEFAULT_CHUNK = 32768
#: Bytes of per-atom amplitudes (complex, all atoms of the cell) per structure-factor chunk
#: on the grid: small enough to stay in the L2/L3 caches between the passes over it.
GRID_CHUNK_BYTES = 2 * 2**20
#: Bytes of the per-row-group tables on the grid (phase products, q, amplitudes).
GRID_GROUP_BYTES = 8 * 2**20
#: Run the grid's BZ points in torch.get_num_threads() Python worker threads, each
#: with single-threaded torch operations (instead of every operation split across
#: the OpenMP threads): see docs/performance.md.
GRID_WORKERS = True
#: How the full map's gradient is computed: "analytic" (eryx.gridmap_torch: chunk by
#: chunk, bounded memory, first-order only) or "autograd" (plain autograd through every
#: chunk: all intermediates kept, supports double backward). docs/gradients.md.
GRID_GRAD_ENGINE = "analytic"
#: Build the model (everything before apply_disorder) with one torch thread on the CPU.
SINGLE_THREAD_SETUP = True
#: Fewest points per grid chunk (large ASUs: bounds the Python overhead per chunk).
GRID_CHUNK_MIN_POINTS = 64
#: Bytes of one q-vector-mode chunk's largest intermediate (phases of all atoms).
DIRECT_CHUNK_BYTES = 16 * 2**20


#: Sentinel: take the q-vectors given to the constructor.
_FROM_INPUT = object()
#: Device kinds the backend runs on (float64 and complex128 linear algebra everywhere).
SUPPORTED_DEVICE_TYPES = ("cpu", "cuda")


def resolve_device(device: str | torch.device | None) -> torch.device:
    """A torch device that exists here, or a clear error."""
    if device is None:
        return torch.device("cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise EryxInputError(f"unknown device {device!r}: {exc}") from exc
    if dev.type not in SUPPORTED_DEVICE_TYPES:
        # 'meta' holds no data, 'mps' has no float64; others lack the linear algebra used.
        raise EryxInputError(
            f"device {device!r}: device type {dev.type!r} is not supported by the torch backend "
            f"(supported: {', '.join(SUPPORTED_DEVICE_TYPES)})")
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise EryxInputError(f"device {device!r} requested but no CUDA device is present")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise EryxInputError(f"device {device!r}: only {torch.cuda.device_count()} CUDA device(s)")
    return dev


def resolve_dtype(dtype) -> torch.dtype:
    """torch.float64 (default) or torch.float32; strings 'float64'/'float32' accepted."""
    if isinstance(dtype, str):
        dtype = getattr(torch, dtype, None) if dtype in ("float64", "float32") else dtype
    if dtype not in SUPPORTED_DTYPES:
        raise EryxInputError(f"unsupported dtype {dtype!r}: use torch.float64 or torch.float32")
    return dtype


@contextlib.contextmanager
def torch_threads(n: int | None):
    """Run the block with ``torch.set_num_threads(n)`` (None: unchanged), then restore."""
    before = torch.get_num_threads()
    if n is None or n == before:
        yield
        return
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _run_units(run, units: list, parallel: bool):
    """``run(subset)`` -> (idx_parts, val_parts) over the work ``units``, in worker threads.

    With ``parallel`` and more than one torch thread, the units are dealt to
    ``torch.get_num_threads()`` Python threads while torch runs single-threaded
    (``torch.set_num_threads(1)``, restored afterwards): independent units scale
    without a fork/join per operation, and a CPU shared with other processes slows
    the map down in proportion instead of stalling every operation on its slowest
    OpenMP thread (docs/performance.md). Every value is computed by the same
    operations either way, so the map is the same bit for bit.
    """
    results = gm.parallel_units(run, units, parallel)  # one (idx_parts, val_parts) per worker
    return [p for r in results for p in r[0]], [p for r in results for p in r[1]]


class OnePhonon:
    """One-phonon diffuse scattering (PyTorch backend); see :class:`eryx.models.OnePhonon`.

    Extra parameters
    ----------------
    device : str or torch.device
        Any torch device present ('cpu', 'cuda', 'cuda:1', ...).
    dtype : torch.dtype
        torch.float64 (default) or torch.float32; complex types follow.
    q_vectors : (N, 3) tensor or array, optional
        Arbitrary q-vectors (inverse Angstrom). The sampling arguments still define
        the BZ grid used for covariance and ADPs; ``apply_disorder`` returns the map
        at these q.
    chunk_size : int
        Most q-points per structure-factor chunk; peak memory grows with the chunk, not
        with n_q. Chunks are also capped in bytes (GRID_CHUNK_BYTES on the grid,
        DIRECT_CHUNK_BYTES in q-vector mode), so large ASUs take fewer points.
    """

    def __init__(
        self, pdb_path: str | os.PathLike, hsampling: Sequence, ksampling: Sequence,
        lsampling: Sequence, expand_p1: bool = True, group_by: str = "asu",
        res_limit: float = 0.0, model: str = "gnm", gnm_cutoff: float = 4.0,
        gamma_intra=1.0, gamma_inter=1.0, *, device: str | torch.device | None = "cpu",
        dtype=torch.float64, q_vectors=None, chunk_size: int = DEFAULT_CHUNK,
        memory_limit: float | None = None,
    ) -> None:
        samplings = check_common(
            hsampling, ksampling, lsampling, res_limit=res_limit, gnm_cutoff=gnm_cutoff,
            gamma_intra=gamma_intra, gamma_inter=gamma_inter, group_by=group_by, model=model,
            memory_limit=memory_limit,
        )
        self.device = resolve_device(device)
        self.real_dtype = resolve_dtype(dtype)
        self.complex_dtype = SUPPORTED_DTYPES[self.real_dtype]
        if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
            raise EryxInputError(f"chunk_size must be a positive integer, got {chunk_size!r}")
        self.chunk_size = chunk_size
        self.samplings = samplings
        self.hsampling, self.ksampling, self.lsampling = (s.as_tuple() for s in samplings)
        self.L = tuple(s.oversampling for s in samplings)
        self.res_limit = float(res_limit)
        self.gnm_cutoff = float(gnm_cutoff)
        self.gamma_intra = self._parameter(gamma_intra, "gamma_intra")
        self.gamma_inter = self._parameter(gamma_inter, "gamma_inter")
        self.memory_limit = resolve_memory_limit(memory_limit)
        self.expand_p1 = bool(expand_p1)
        self._q_input = self._check_q_vectors(q_vectors)
        self.pdb_input = structure.check_pdb_path(pdb_path)
        # Construction is many small operations (the largest are n_q-element passes):
        # on the CPU they run single-threaded, which costs a few ms on an idle machine
        # and avoids an OpenMP stall per operation on a busy one (docs/performance.md).
        with torch_threads(1 if (SINGLE_THREAD_SETUP and self.device.type == "cpu") else None):
            run_build_steps(self, self.BUILD_STEPS)

    #: Construction, in order: (step name, phase, method). See :mod:`eryx.build`: a step
    #: that raises re-raises with ``build_step``, ``build_phase`` and ``partial_model``.
    BUILD_STEPS = (
        ("structure", 2, "_load_structure"),
        ("memory", 2, "_check_memory"),
        ("tensors", 2, "_tensors_from_crystal"),
        ("grid", 1, "_setup_grid"),
        ("stiffness", 3, "_check_stiffness"),
        ("contacts", 3, "_find_contacts"),
        ("matrices", 2, "_setup_matrices"),
        ("hessian", 3, "_setup_hessian"),
        ("phonons", 3, "_setup_phonons"),
    )

    # ------------------------------------------------------------------ helpers
    def _parameter(self, value, name: str) -> torch.Tensor:
        """Spring constants as tensors on the device, keeping the caller's autograd graph."""
        if isinstance(value, torch.Tensor):
            if not value.is_floating_point() or value.numel() != 1:
                raise EryxInputError(f"{name}: spring constants must be real scalars, got {value!r}")
            return value.reshape(()).to(device=self.device, dtype=self.real_dtype)
        return torch.tensor(float(value), dtype=self.real_dtype, device=self.device)

    def _gamma_values(self) -> tuple[float, float]:
        """(gamma_intra, gamma_inter) as floats, for checks and messages."""
        return float(self.gamma_intra.detach()), float(self.gamma_inter.detach())

    def _check_q_vectors(self, q):
        if q is None:
            return None
        if not isinstance(q, torch.Tensor):
            arr = np.asarray(q)
            if arr.dtype.kind not in "fiu":
                raise EryxInputError(f"q_vectors must be real numbers, got dtype {arr.dtype}")
            if arr.dtype.itemsize > 8:  # longdouble: torch has no such type, and no silent down-cast
                raise EryxInputError(f"q_vectors is {arr.dtype}, wider than float64: convert explicitly "
                                     "(no silent down-cast)")
            q = torch.as_tensor(arr)
        if q.device.type == "meta":
            raise EryxInputError("q_vectors is on the 'meta' device (a shape without values): give real "
                                 "values on a real device")
        if q.is_complex() or not (q.is_floating_point() or q.dtype in (torch.int32, torch.int64)):
            raise EryxInputError(f"q_vectors must be a real tensor, got dtype {q.dtype}")
        if q.ndim != 2 or q.shape[1] != 3 or q.shape[0] == 0:
            raise EryxInputError(f"q_vectors must have shape (N, 3) with N >= 1, got {tuple(q.shape)}")
        if not torch.isfinite(q.detach()).all():
            raise EryxInputError("q_vectors contains NaN or infinite values")
        if q.is_floating_point() and q.dtype != self.real_dtype and q.dtype.itemsize > self.real_dtype.itemsize:
            raise EryxInputError(
                f"q_vectors is {q.dtype} but the model computes in {self.real_dtype}: "
                "pass dtype=torch.float64 or convert explicitly (no silent down-cast)"
            )
        return q.to(device=self.device, dtype=self.real_dtype)

    def _t(self, array, dtype=None) -> torch.Tensor:
        return torch.as_tensor(np.asarray(array), dtype=dtype or self.real_dtype, device=self.device)

    def _load_structure(self) -> None:
        self.crystal = structure.load_crystal(self.pdb_input, self.expand_p1)
        self.n_asu, self.n_at = self.crystal.n_asu, self.crystal.n_at
        self.n_dof = 6 * self.n_asu
        self.map_shape = tuple(s.n_points for s in self.samplings)

    def _check_memory(self) -> None:
        """The one memory decision, before the neighbour search and anything grid-sized.

        The contacts enter as a cheap upper bound (cell lists, linear in the atoms even
        where thousands of atoms coincide and a k-d tree would take quadratic time).
        """
        q = self._q_input
        n_q = int(np.prod(self.map_shape)) if q is None else len(q)
        self.n_contacts_bound = contact_upper_bound(self.crystal.asu_xyz, self.crystal.cell_origin,
                                                    self.gnm_cutoff)
        if q is None:
            sf_chunk, axis_points, group = self._grid_chunk_points(), sum(self.map_shape), GRID_GROUP_BYTES
            workers = torch.get_num_threads() if (GRID_WORKERS and self.device.type == "cpu") else 1
        else:
            sf_chunk, axis_points, group, workers = self._direct_chunk_points(), 0, 0, 1
        self.memory_estimate = check_memory(
            estimate_torch_memory(self.n_asu, self.n_at, n_q, int(np.prod(self.L)), self.n_contacts_bound,
                                  min(sf_chunk, n_q), self.real_dtype.itemsize,
                                  axis_points=axis_points, group_bytes=group, workers=workers,
                                  grad=self._backward_kind()),
            self.memory_limit, "the torch model",
        )

    def _backward_kind(self) -> str | None:
        """GRID_GRAD_ENGINE when a parameter or q carries a gradient (memory estimate), else None."""
        q = self._q_input
        wants = self.gamma_intra.requires_grad or self.gamma_inter.requires_grad or (
            q is not None and q.requires_grad)
        return GRID_GRAD_ENGINE if wants else None

    def _tensors_from_crystal(self) -> None:
        c = self.crystal
        self.cell, self.A_inv = self._t(c.cell), self._t(c.A_inv)
        self.unit_cell_axes = self._t(c.unit_cell_axes)
        self.xyz, self.asu_xyz = self._t(c.xyz), self._t(c.asu_xyz)
        self.adp, self.ff_a, self.ff_b, self.ff_c = self._t(c.adp), self._t(c.ff_a), self._t(c.ff_b), self._t(c.ff_c)
        self.masses = self._t(c.masses)
        self.cell_hkl, self.cell_origin = self._t(c.cell_hkl), self._t(c.cell_origin)

    def _check_stiffness(self) -> None:
        """Refuse clearly too stiff spring constants before the Hessian (eryx.stiffness)."""
        check_model_stiffness(self.crystal, self.L, self.gnm_cutoff, self._gamma_values())

    def _find_contacts(self) -> None:
        self._contacts_np = st.find_contacts(self.crystal.asu_xyz, self.crystal.cell_origin, self.gnm_cutoff)
        self.contacts = {k: torch.as_tensor(v, device=self.device) for k, v in self._contacts_np.items()}
        c = self._contacts_np
        self.n_contacts = len(c["i"])
        self.n_inter_contacts = int(np.count_nonzero((c["c"] != ID_CELL_REF) | (c["i"] != c["j"])))

    # ------------------------------------------------------------------- stages
    def _setup_grid(self, q_vectors=_FROM_INPUT) -> None:
        if q_vectors is _FROM_INPUT:
            q_vectors = self._q_input
        dt, dev = self.real_dtype, self.device
        self.kvec = probe("kvec", st.build_kvec(self.A_inv, self.L))
        self.kvec_norm = st.kvec_norm(self.kvec)
        self.hkl_grid = st.generate_grid([s.as_tuple() for s in self.samplings], dtype=dt, device=dev)
        self.q_grid = probe("q_grid", st.q_from_hkl(self.hkl_grid, self.A_inv))
        self.res_mask = st.res_mask(self.hkl_grid, self.cell, self.res_limit)
        self.bz_index = probe("bz_index", st.grid_bz_index(self.map_shape, self.L, dev), axes=("q",))
        self.q_vectors = q_vectors
        if q_vectors is not None:
            self._setup_q_vectors(q_vectors)

    def _setup_q_vectors(self, q: torch.Tensor) -> None:
        """Map each q to its k-vector with the grid's centring convention.

        q on the oversampled lattice (every Miller index a multiple of 1/L) takes the
        grid's own BZ point, hence bit for bit the grid's k; other q get
        k = q - 2 pi A_inv^T G with G the nearest reciprocal lattice vector (ties go to
        -1/2, as the grid's convention). Phonons are computed once per distinct k.
        """
        L = torch.tensor(self.L, dtype=self.real_dtype, device=self.device)
        hkl = st.hkl_from_q(q.detach(), self.A_inv)
        self.q_hkl = hkl
        scaled = hkl * L
        nearest = torch.round(scaled)
        on_lattice = (torch.abs(scaled - nearest) <= 1e-9 * torch.clamp(torch.abs(scaled), min=1.0)).all(dim=1)
        idx = torch.remainder(nearest.long(), torch.tensor(self.L, device=self.device))
        bz_of_q = (idx[:, 0] * self.L[1] + idx[:, 1]) * self.L[2] + idx[:, 2]
        frac = hkl - torch.floor(hkl + 0.5)
        k_off = st.TWO_PI * (frac @ self.A_inv)
        n_bz = int(np.prod(self.L))
        # Distinct off-lattice k-points get extra slots after the grid's BZ points.
        off = ~on_lattice
        extra_k = k_off[off]
        if len(extra_k):
            uniq, inv = torch.unique(extra_k, dim=0, return_inverse=True)
            bz_of_q = bz_of_q.clone()
            bz_of_q[off] = n_bz + inv
            self.extra_kvec = uniq
        else:
            self.extra_kvec = torch.zeros(0, 3, dtype=self.real_dtype, device=self.device)
        self.q_bz_index = bz_of_q
        self.q_res_mask = st.resolution(hkl, self.cell) > self.res_limit

    def _setup_matrices(self) -> None:
        self.Amat = st.build_A(self.asu_xyz)
        probe("A_block", self.Amat.reshape(self.n_asu, -1, 3, 6), axes=("asu", "atom"))
        self.Mmat = st.build_Mmat(self.Amat, self.masses)
        probe("Mmat_block", self.Mmat.permute(0, 2, 1, 3), axes=("asu_i", "asu_j"))
        self.Linv = probe("Linv", st.build_Linv(self.Mmat))

    def _setup_hessian(self) -> None:
        self.H_intra, self.H_inter = st.hessian_unit_blocks(self.contacts, self.Amat, self.n_asu)
        self.hessian = st.combine_hessian(self.H_intra, self.H_inter, self.gamma_intra, self.gamma_inter)
        probe("hessian_block", self.hessian.permute(2, 0, 3, 1, 4), axes=("cell", "asu_i", "asu_j"))
        if not bool(torch.isfinite(self.hessian.detach()).all()):
            raise SpringConstantError(
                "spring constants too large (gamma_intra={:g}, gamma_inter={:g}): ".format(*self._gamma_values())
                + f"the projected Hessian overflows {self.real_dtype} "
                "(docs/model-edges.md)", "overflow")

    @property
    def M_allatoms(self) -> torch.Tensor:
        """Dense all-atom mass matrix (built on demand; not used by the model)."""
        return st.build_M_allatoms(self.masses, self.n_asu)

    @property
    def hessian_allatoms(self) -> torch.Tensor:
        """Dense all-atom Hessian from the contact list (on demand, small systems only)."""
        return st.dense_hessian_allatoms(
            self.contacts, self.n_asu, self.n_at, self.gamma_intra, self.gamma_inter,
            dtype=self.real_dtype, device=self.device,
        )

    def _setup_phonons(self) -> None:
        kflat = self.kvec.reshape(-1, 3)
        self.K = probe("K", st.build_K(self.hessian, kflat, self.cell_origin), axes=("bz",))  # (n_bz, n_dof, n_dof)
        self.D = probe("D", st.dynamical_matrix(self.K, self.Linv), axes=("bz",))
        self._check_spectrum()
        Winv, U = st.phonons(self.D)
        self.U = U
        self.Winv = Winv.reshape(self.L + (self.n_dof,))
        self.V = st.mass_weighted_modes(U, self.Linv).reshape(self.L + (self.n_dof, self.n_dof))
        if _listening():  # V is defined up to phases and mixing: probe the phase-free V Winv V^H
            probe("Winv", Winv, axes=("bz",))
            Vf = self.V.reshape(-1, self.n_dof, self.n_dof)
            probe("V_Winv_VH", (Vf * torch.nan_to_num(Winv)[:, None, :]) @ Vf.conj().transpose(-1, -2), axes=("bz",))
        self.Kinv = probe("Kinv", st.pinv_hermitian(self.K), axes=("bz",))
        covar = probe("covar_sum", st.covariance(self.Kinv, kflat, self.cell_origin))
        self.ADP, self.covar = st.adp_scaled(covar, self.Amat, self.adp)
        probe("ADP", self.ADP)
        probe("covar", self.covar)
        self.adp_undefined_reason = None if not bool(torch.isnan(self.ADP.detach()).any()) else \
            undefined_adp_reason(self.n_asu, self.L, self.n_contacts, self.n_inter_contacts, self.gnm_cutoff,
                                 *self._gamma_values())
        # Bragg BZ points (any zero mode) give NaN everywhere in the full map.
        self.bz_has_zero_mode = torch.isnan(Winv).any(dim=1)
        if self.q_vectors is not None and len(self.extra_kvec):
            K_extra = st.build_K(self.hessian, self.extra_kvec, self.cell_origin)
            W_extra, U_extra = st.phonons(st.dynamical_matrix(K_extra, self.Linv))
            self._K_all = torch.cat([self.K, K_extra])
            self._Winv_all = torch.cat([Winv, W_extra])
            self._V_all = torch.cat([self.V.reshape(-1, self.n_dof, self.n_dof),
                                     st.mass_weighted_modes(U_extra, self.Linv)])
        else:
            self._K_all, self._Winv_all = self.K, Winv
            self._V_all = self.V.reshape(-1, self.n_dof, self.n_dof)

    def _check_spectrum(self) -> None:
        """Refuse spring constants outside the model's range (validation.check_spectrum),
        from |eigenvalues| of D and K at the grid's BZ points (no gradient; one sync)."""
        with torch.no_grad():
            K_herm = 0.5 * (self.K + self.K.conj().transpose(-1, -2))
            both = torch.linalg.eigvalsh(torch.cat([self.D.to(K_herm.dtype), K_herm])).abs()  # one call
            D_abs, K_abs = both.cpu().double().numpy().reshape(2, len(self.K), -1)
        check_spectrum(D_abs, K_abs, list(np.ndindex(*self.L)),
                       self._gamma_values(), torch.finfo(self.real_dtype).eps)

    # ---------------------------------------------------------------- intensity
    def debye_waller_U(self, use_data_adp: bool = False) -> torch.Tensor:
        """Per-atom U (A^2) of one ASU: the scaled model ADP, or the file's B / 8 pi^2.

        Raises UndefinedADPError (with the reason) when the model's ADP scale is undefined.
        """
        if use_data_adp:
            return self.adp[0] / (8 * math.pi**2)
        if self.adp_undefined_reason is not None or torch.isnan(self.ADP.detach()).any():
            raise UndefinedADPError(self.adp_undefined_reason or "the scaled ADPs are NaN")
        return self.ADP

    def structure_factors(self, q: torch.Tensor, use_data_adp: bool = False) -> torch.Tensor:
        """F(q), (n, n_dof) complex, computed in chunks (at most ``chunk_size`` points)."""
        U = self.debye_waller_U(use_data_adp)
        step = self._direct_chunk_points()
        parts = [
            st.structure_factors(q[s:s + step], self.xyz, self.ff_a[0], self.ff_b[0],
                                 self.ff_c[0], U, self.Amat)
            for s in range(0, len(q), step)
        ]
        return torch.cat(parts) if parts else torch.zeros(0, self.n_dof, dtype=self.complex_dtype, device=self.device)

    def _points(self):
        """(q, bz index, valid mask) of the map's points: the grid or the q-vectors."""
        if self.q_vectors is None:
            return self.q_grid, self.bz_index, self.res_mask
        return self.q_vectors, self.q_bz_index, self.q_res_mask

    def _bz_table(self, bz: torch.Tensor, compute: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Group the points to compute by k-point, by index arithmetic.

        Returns
        -------
        ks : (n_rows,) int64
            The k-points (BZ or extra) that serve at least one point.
        table : (n_rows, n_max) int64
            Point indices served by each k, padded with -1.
        """
        idx = torch.nonzero(compute).reshape(-1)
        b = bz[idx]
        b, order = torch.sort(b, stable=True)
        idx = idx[order]
        ks, counts = torch.unique_consecutive(b, return_counts=True)
        starts = torch.cumsum(counts, 0) - counts
        row = torch.repeat_interleave(torch.arange(len(ks), device=idx.device), counts)
        pos = torch.arange(len(idx), device=idx.device) - starts[row]
        n_max = int(counts.max()) if len(counts) else 0
        table = torch.full((len(ks), n_max), -1, dtype=torch.long, device=idx.device)
        table[row, pos] = idx
        return ks, table

    def _map(self, per_block, n_cols: int | None, use_data_adp: bool, full_map: bool = False) -> torch.Tensor:
        """Evaluate a map over the valid points, k-point by k-point in batched blocks.

        ``per_block(F, ks)`` gets F as (n_rows, n_dof, c) complex (the points of each
        k-point ``ks[row]``) and returns (n_rows, c) or (n_rows, n_cols, c) reals.
        Points outside the resolution mask (and, for the full map, at k-points with
        zero modes) are NaN. On the grid the structure factors come from the per-axis
        phase tables (:meth:`_grid_chunks`); ``full_map`` then evaluates F K^-1 F^H
        through the inverse Cholesky factor of each K.
        """
        if self._grid_axes() is not None:
            return self._map_grid(per_block, n_cols, use_data_adp, full_map)
        q, bz, mask = self._points()
        zero_k = torch.isnan(self._Winv_all).any(dim=1)
        shape = (len(q),) if n_cols is None else (len(q), n_cols)
        out = torch.full(shape, math.nan, dtype=self.real_dtype, device=self.device)
        compute = mask if n_cols is not None else mask & ~zero_k[bz]
        ks, table = self._bz_table(bz, compute)
        if table.numel() == 0:
            return out
        U = self.debye_waller_U(use_data_adp)
        budget = self._direct_chunk_points()
        cols = max(1, budget // len(ks))
        rows = max(1, budget // cols)
        idx_parts, val_parts = [], []
        for r0 in range(0, len(ks), rows):
            for s in range(0, table.shape[1], cols):
                sel = table[r0:r0 + rows, s:s + cols]
                valid = sel >= 0
                F = st.structure_factors_T(q[sel.clamp(min=0).reshape(-1)], self.xyz, self.ff_a[0],
                                           self.ff_b[0], self.ff_c[0], U, self.Amat)
                F = F.reshape(self.n_dof, *sel.shape).permute(1, 0, 2)  # (n_rows, n_dof, c)
                values = per_block(F, ks[r0:r0 + rows])
                if n_cols is not None:
                    values = values.transpose(1, 2)  # (n_rows, c, n_cols)
                idx_parts.append(sel[valid])
                val_parts.append(values[valid])
        return out.index_put((torch.cat(idx_parts),), torch.cat(val_parts))

    # ------------------------------------------------------ the grid's fast path
    def _grid_axes(self):
        """Per-axis BZ indices (bh, bk, bl) when the map is the grid and its grid -> BZ
        mapping is a product over the axes (it always is: section 5); else None.

        Read from ``bz_index`` itself, so the map follows whatever mapping the model
        holds (a cross-fed one, or an injected fault).
        """
        if self.q_vectors is not None or self.bz_index.numel() != int(np.prod(self.map_shape)):
            return None
        nh, nk, nl = self.map_shape
        Lh, Lk, Ll = self.L
        bz3 = self.bz_index.reshape(nh, nk, nl)
        bh = torch.div(bz3[:, 0, 0], Lk * Ll, rounding_mode="floor")
        bk = torch.div(bz3[0, :, 0], Ll, rounding_mode="floor") % Lk
        bl = bz3[0, 0, :] % Ll
        if bh.min() < 0 or bh.max() >= Lh:
            return None
        rebuilt = (bh[:, None, None] * Lk + bk[None, :, None]) * Ll + bl[None, None, :]
        if not torch.equal(rebuilt, bz3):
            return None
        return bh, bk, bl

    def _direct_chunk_points(self, extra_per_point: int = 0) -> int:
        """Points per chunk of the direct formula: ``chunk_size``, and the phases of all
        atoms (plus ``extra_per_point`` bytes) within DIRECT_CHUNK_BYTES."""
        per_point = 2 * self.n_asu * self.n_at * self.real_dtype.itemsize + extra_per_point
        return max(1, min(self.chunk_size, DIRECT_CHUNK_BYTES // per_point))

    def _grid_chunk_points(self) -> int:
        """Grid points per structure-factor chunk (cache-sized, at most ``chunk_size``)."""
        per_point = 2 * self.real_dtype.itemsize * self.n_asu * self.n_at
        return max(1, min(self.chunk_size, max(GRID_CHUNK_MIN_POINTS, GRID_CHUNK_BYTES // per_point)))

    def _grid_tables(self, use_data_adp: bool) -> dict:
        """What every grid chunk shares: per-axis phase tables, form-factor types, the
        projection operators, the Debye-Waller U."""
        nh, nk, nl = self.map_shape
        U = self.debye_waller_U(use_data_adp)
        frac = st.fractional_coordinates(self.xyz, self.A_inv)  # (n_asu, n_at, 3)
        hkl = self.hkl_grid.reshape(nh, nk, nl, 3)
        types, inverse = st.form_factor_types(self.ff_a[0], self.ff_b[0], self.ff_c[0])
        Q, Pq = st.projection_operators(self.Amat)
        needs_grad = torch.is_grad_enabled() and any(
            t.requires_grad for t in (U, self.xyz, self.Amat, self.A_inv, self.q_grid))
        return dict(
            axes=self._grid_axes(), U=U, types=types, inverse=inverse, Q=Q, Pq=Pq, needs_grad=needs_grad,
            E_h=st.axis_phase_table(hkl[:, 0, 0, 0], frac[..., 0]),  # (n_asu, n_at, n_h)
            E_k=st.axis_phase_table(hkl[0, :, 0, 1], frac[..., 1]),
            E_l=st.axis_phase_table(hkl[0, 0, :, 2], frac[..., 2]),
        )

    def _grid_units(self, tables: dict, blocks) -> list[tuple]:
        """Split the grid points of the BZ points ``blocks`` into work units.

        Each BZ point's grid points form a product grid: rows = (h, k) pairs, columns =
        l values. A unit is (bz, row_h, row_k, row_flat, cols, rows_per_chunk): a group
        of rows (within GRID_GROUP_BYTES of per-row tables) times a run of columns.
        """
        bh, bk, bl = tables["axes"]
        nk = self.map_shape[1]
        n_chunk = self._grid_chunk_points()
        per_row_atoms = 2 * self.real_dtype.itemsize * self.n_asu * self.n_at
        units = []
        for b in blocks:
            dh, dk, dl = np.unravel_index(b, self.L)
            ih = torch.nonzero(bh == dh).reshape(-1)
            ik = torch.nonzero(bk == dk).reshape(-1)
            il = torch.nonzero(bl == dl).reshape(-1)
            if min(len(ih), len(ik), len(il)) == 0:
                continue
            row_h = ih.repeat_interleave(len(ik))  # (h, k) pairs, k fastest
            row_k = ik.repeat(len(ih))
            row_flat = row_h * nk + row_k
            cols_l = min(len(il), n_chunk)
            n_rows = max(1, n_chunk // cols_l)
            per_row = per_row_atoms + self.real_dtype.itemsize * (self.n_at + 4) * cols_l
            group = max(n_rows, GRID_GROUP_BYTES // per_row // n_rows * n_rows)
            for c0 in range(0, len(il), cols_l):
                for g0 in range(0, len(row_flat), group):
                    g = slice(g0, g0 + group)
                    units.append((b, row_h[g], row_k[g], row_flat[g], il[c0:c0 + cols_l], n_rows))
        return units

    def _grid_chunks(self, tables: dict, units):
        """Yield (bz, flat grid indices (n,), F (n_dof, n) complex) over the work units
        of :meth:`_grid_units`: F from :func:`functional_torch.structure_factors_product_T`
        with the per-axis phase tables, the amplitudes at ``q_grid`` and the same
        low-rank projection as the direct formula.
        """
        E_h, E_k, E_l = tables["E_h"], tables["E_k"], tables["E_l"]
        types, inverse, U, Q, Pq = (tables[k] for k in ("types", "inverse", "U", "Q", "Pq"))
        nl = self.map_shape[2]
        n_chunk = self._grid_chunk_points()
        buf = None if tables["needs_grad"] else torch.empty(
            self.n_asu * self.n_at * n_chunk, dtype=self.complex_dtype, device=self.device)
        for b, row_h, row_k, row_flat, cl, n_rows in units:
            G, c = len(row_flat), len(cl)
            # Per group of rows: the phase products E_h E_k, q and the amplitudes.
            E_cols = E_l.index_select(2, cl)
            E_group = E_h.index_select(2, row_h) * E_k.index_select(2, row_k)
            idx_g = (row_flat[:, None] * nl + cl[None, :]).reshape(-1)
            qT_g = self.q_grid.index_select(0, idx_g).T.contiguous()  # (3, G c)
            amp_g = st.atomic_amplitudes(torch.sum(qT_g * qT_g, dim=0), types, inverse, U)
            # Complex once per group: the per-chunk product then needs no promotion.
            amp_g = amp_g.to(self.complex_dtype).reshape(self.n_at, G, c)
            qT_g = qT_g.reshape(3, G, c)
            # One split per row group: a slice per chunk would give each chunk's autograd
            # node a zero-filled gradient of the whole group (issue 20).
            sizes = [min(n_rows, G - r0) for r0 in range(0, G, n_rows)]
            for qT, amp, E_rows, idx in zip(qT_g.split(sizes, dim=1), amp_g.split(sizes, dim=1),
                                            E_group.split(sizes, dim=2), idx_g.split([s * c for s in sizes])):
                m = qT.shape[1]
                out = None if buf is None else buf[:self.n_asu * self.n_at * m * c].view(
                    self.n_asu, self.n_at, m, c)
                F = st.structure_factors_product_T(
                    qT.reshape(3, m * c).T, E_rows, E_cols, amp.reshape(self.n_at, m * c), Q, Pq, out)
                yield b, idx, F

    def _map_grid(self, per_block, n_cols: int | None, use_data_adp: bool, full_map: bool) -> torch.Tensor:
        """:meth:`_map` on the grid, with the per-axis phase tables (see there)."""
        zero_k = torch.isnan(self._Winv_all).any(dim=1)
        n_q = int(np.prod(self.map_shape))
        shape = (n_q,) if n_cols is None else (n_q, n_cols)
        out = torch.full(shape, math.nan, dtype=self.real_dtype, device=self.device)
        state = {}
        if full_map:
            eye = torch.eye(self.n_dof, dtype=self.complex_dtype, device=self.device)
            W, ok = st.hermitian_inverse_factor(torch.where(zero_k[:, None, None], eye, self._K_all))
            ok = ok.tolist()  # one device sync
        skip = zero_k.tolist() if n_cols is None else [False] * len(zero_k)
        blocks = [b for b in range(int(np.prod(self.L))) if not skip[b]]
        if full_map and GRID_GRAD_ENGINE == "analytic" and all(ok[b] for b in blocks):
            U = self.debye_waller_U(use_data_adp)
            if gm.analytic_applies(self, W, U):
                parallel = GRID_WORKERS and self.device.type == "cpu"
                out = gm.FullGridMap.apply(W, U, self, use_data_adp, blocks, parallel)
                mask = self.res_mask
                return out if bool(mask.all()) else torch.where(mask, out, torch.full_like(out, math.nan))
        tables = self._grid_tables(use_data_adp)
        units = self._grid_units(tables, blocks)

        def run(subset):
            idx_parts, val_parts = [], []
            for b, idx, F in self._grid_chunks(tables, subset):
                if full_map and ok[b]:
                    values = st.intensity_factored(F, W[b])
                elif full_map:
                    if "Kinv" not in state:
                        state["Kinv"] = self._full_rank_inverse()
                    values = st.intensity_blocks(F[None], state["Kinv"][b:b + 1])[0]
                else:
                    values = per_block(F[None], torch.tensor([b], device=self.device))[0]
                    if n_cols is not None:
                        values = values.T  # (n, n_cols)
                idx_parts.append(idx)
                val_parts.append(values)
            return idx_parts, val_parts

        idx_parts, val_parts = _run_units(run, units, parallel=(
            GRID_WORKERS and self.device.type == "cpu" and not tables["needs_grad"]))
        if idx_parts:
            out = out.index_put((torch.cat(idx_parts),), torch.cat(val_parts))
        mask = self.res_mask
        if not bool(mask.all()):
            out = torch.where(mask if n_cols is None else mask[:, None], out, torch.full_like(out, math.nan))
        return out

    def apply_disorder(self, rank: int = -1, use_data_adp: bool = False) -> torch.Tensor:
        """Diffuse intensity, (n_q,) real (grid order, or the q-vectors' order).

        Parameters
        ----------
        rank : int
            -1 for the full map (F K^-1 F^H, no eigenvectors), else mode r's map.
        use_data_adp : bool
            Debye-Waller factor from the file's B factors instead of the model ADPs.
        """
        if rank != -1 and not (isinstance(rank, int) and 0 <= rank < self.n_dof):
            raise EryxInputError(f"rank must be -1 or in [0, {self.n_dof}), got {rank!r}")
        self.debye_waller_U(use_data_adp)  # refuses an undefined ADP scale, whatever is sampled
        if rank == -1 and self.q_vectors is not None and self.q_vectors.requires_grad:
            if GRID_GRAD_ENGINE == "analytic" and torch.is_grad_enabled():
                return gm.full_map_q_grad(self, use_data_adp)
            return self._full_map_per_q(use_data_adp)
        if rank == -1:
            if self._grid_axes() is not None:
                return probe("Id", self._map(None, None, use_data_adp, full_map=True))
            Kinv_full = self._full_rank_inverse()
            return self._map(lambda F, ks: st.intensity_blocks(F, Kinv_full[ks]), None, use_data_adp)
        maps = self._map(
            lambda F, ks: st.mode_intensity_blocks(F, self._V_all[ks][:, :, rank:rank + 1],
                                                   self._Winv_all[ks][:, rank:rank + 1]),
            1, use_data_adp,
        )
        return maps[:, 0]

    def mode_maps(self, use_data_adp: bool = False) -> torch.Tensor:
        """Every single-mode map, (n_q, n_dof): column r = apply_disorder(rank=r)."""
        self.debye_waller_U(use_data_adp)
        return self._map(lambda F, ks: st.mode_intensity_blocks(F, self._V_all[ks], self._Winv_all[ks]),
                         self.n_dof, use_data_adp)

    def _full_map_per_q(self, use_data_adp: bool) -> torch.Tensor:
        """The full map with K(k(q)) per q-vector, so that d/dq includes the k-dependence.

        k(q) = q - 2 pi A_inv^T G with G piecewise constant, so dk/dq = I: each point's k
        is its k-point's value plus (q - q.detach()) (same value, identity gradient).
        """
        q, bz, mask = self._points()
        zero_k = torch.isnan(self._Winv_all).any(dim=1)
        out = torch.full((len(q),), math.nan, dtype=self.real_dtype, device=self.device)
        idx = torch.nonzero(mask & ~zero_k[bz]).reshape(-1)
        k_all = torch.cat([self.kvec.reshape(-1, 3), self.extra_kvec])
        U = self.debye_waller_U(use_data_adp)
        # K(k), its inverse and their temporaries per point, besides the phases.
        step = self._direct_chunk_points(extra_per_point=3 * 2 * self.real_dtype.itemsize * self.n_dof**2)
        parts = []
        for s in range(0, len(idx), step):
            sel = idx[s:s + step]
            k = k_all[bz[sel]] + (q[sel] - q[sel].detach())
            Kinv = torch.linalg.inv(st.build_K(self.hessian, k, self.cell_origin))
            F = st.structure_factors_T(q[sel], self.xyz, self.ff_a[0], self.ff_b[0], self.ff_c[0], U, self.Amat)
            parts.append(st.intensity_blocks(F.T[:, :, None], Kinv)[:, 0])
        return out.index_put((idx,), torch.cat(parts)) if parts else out

    def _full_rank_inverse(self) -> torch.Tensor:
        """K(k)^-1 at every BZ point without zero modes (identity elsewhere, unused)."""
        zero = torch.isnan(self._Winv_all).any(dim=1)
        eye = torch.eye(self.n_dof, dtype=self.complex_dtype, device=self.device)
        safe = torch.where(zero[:, None, None], eye, self._K_all)
        return torch.linalg.inv(safe)

    # ----------------------------------------------------------------- utilities
    def bz_points(self):
        return list(np.ndindex(*self.L))
