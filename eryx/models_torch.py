"""PyTorch OnePhonon: the reference numbers, vectorised, on any device, differentiable.

Same constructor as :class:`eryx.models.OnePhonon` plus ``device``, ``dtype``,
``q_vectors`` (arbitrary q-vector mode) and ``chunk_size``; the same intermediate
quantities under the same names, as tensors on the chosen device. Structure loading
is shared (:mod:`eryx.structure`); every number after it is computed in torch by the
pure functions of :mod:`eryx.functional_torch`; the maps are evaluated chunk by chunk by
the map engine :mod:`eryx.mapengine_torch` (its full-map gradient: :mod:`eryx.gridmap_torch`).

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

import math
import os
from typing import Sequence

import numpy as np
import torch

from eryx import gridmap_torch as gm
from eryx import functional_torch as st
from eryx import mapengine_torch as me
from eryx import structure
from eryx.build import run_build_steps
# Moved to the map engine (which runs the worker threads); still importable here.
from eryx.mapengine_torch import torch_threads  # noqa: F401
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
        with me.torch_threads(1 if (SINGLE_THREAD_SETUP and self.device.type == "cpu") else None):
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
            sf_chunk, axis_points = me.grid_chunk_points(self, self.map_settings()), sum(self.map_shape)
            group = GRID_GROUP_BYTES
            workers = torch.get_num_threads() if (GRID_WORKERS and self.device.type == "cpu") else 1
        else:
            sf_chunk, axis_points, group, workers = me.direct_chunk_points(self, self.map_settings()), 0, 0, 1
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

        "On the lattice" is to the precision of the dtype: 1e-9 relative in float64 (the
        NumPy reference's rule), 64 eps = 7.6e-6 in float32, whose q round the indices by
        more than 1e-9 (measured: all 10,000 grid q-vectors of 5zck_p1's standard grid came
        out off the lattice in float32, 1,389 k-points diagonalised instead of 27, the map
        5x slower than in float64).
        """
        L = torch.tensor(self.L, dtype=self.real_dtype, device=self.device)
        hkl = st.hkl_from_q(q.detach(), self.A_inv)
        self.q_hkl = hkl
        scaled = hkl * L
        nearest = torch.round(scaled)
        tol = max(1e-9, 64 * torch.finfo(self.real_dtype).eps)
        on_lattice = (torch.abs(scaled - nearest) <= tol * torch.clamp(torch.abs(scaled), min=1.0)).all(dim=1)
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
        step = me.direct_chunk_points(self, self.map_settings())
        parts = [
            st.structure_factors(q[s:s + step], self.xyz, self.ff_a[0], self.ff_b[0],
                                 self.ff_c[0], U, self.Amat)
            for s in range(0, len(q), step)
        ]
        return torch.cat(parts) if parts else torch.zeros(0, self.n_dof, dtype=self.complex_dtype, device=self.device)

    # ---------------------------------------------------------------- the map
    def map_settings(self) -> me.MapSettings:
        """The map engine's chunking and threads, from this module's knobs as they are now
        (a test or a tool may change ``GRID_CHUNK_BYTES``, ``GRID_WORKERS``, ... between maps)."""
        return me.MapSettings(grid_chunk_bytes=GRID_CHUNK_BYTES, grid_group_bytes=GRID_GROUP_BYTES,
                              grid_chunk_min_points=GRID_CHUNK_MIN_POINTS, direct_chunk_bytes=DIRECT_CHUNK_BYTES,
                              grid_workers=GRID_WORKERS)

    def _map(self, per_block, n_cols: int | None, use_data_adp: bool, full_map: bool = False) -> torch.Tensor:
        """A map through the engine (:func:`eryx.mapengine_torch.evaluate_map`, ``per_block`` there),
        with the analytic gradient of the full grid map when GRID_GRAD_ENGINE says so."""
        analytic = gm.analytic_full_map if GRID_GRAD_ENGINE == "analytic" else None
        return me.evaluate_map(self, self.map_settings(), per_block, n_cols, use_data_adp, full_map, analytic)

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
            return me.full_map_per_q(self, self.map_settings(), use_data_adp)
        if rank == -1:
            if me.grid_axes(self) is not None:
                return probe("Id", self._map(None, None, use_data_adp, full_map=True))
            Kinv_full = me.full_rank_inverse(self)
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

    # ----------------------------------------------------------------- utilities
    def bz_points(self):
        return list(np.ndindex(*self.L))
