"""The torch map engine: a diffuse map evaluated chunk by chunk over its points.

:class:`eryx.models_torch.OnePhonon` builds the model (grid, matrices, phonons); this
module turns a built model into a map (``apply_disorder``, ``mode_maps``) in bounded
memory. Two paths:

* **the direct formula** (q-vector mode, or any map that is not the grid): the points
  are grouped by k-point (:func:`bz_table`) and evaluated in batched blocks of
  structure factors ``F (n_rows, n_dof, c)``;
* **the grid's fast path** (:func:`map_grid`): the grid -> BZ mapping is a product over
  the axes (:func:`grid_axes`), so the structure factors come from per-axis phase tables
  (:func:`grid_tables`) over work units of rows x columns (:func:`grid_units`,
  :func:`grid_chunks`), pulled by worker threads on the CPU (:func:`parallel_units`).
  The full map is ``|W F|^2`` with W the inverse Cholesky factor of conj K(k); its
  analytic gradient (:mod:`eryx.gridmap_torch`) plugs in through ``analytic``.

The chunk sizes and the worker switch are the model module's knobs
(``eryx.models_torch.GRID_CHUNK_BYTES`` ...), read when a map starts and handed here as a
:class:`MapSettings`. The functions take the model as their first argument and read its
tensors (``q_grid``, ``bz_index``, ``_K_all``, ``_Winv_all`` ...); they never change it.
Every value is computed by the same operations whatever the chunking or the threads, so
the map is the same bit for bit (docs/performance.md).
"""
from __future__ import annotations

import contextlib
import math
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Iterator

import numpy as np
import torch

from eryx import functional_torch as st


@dataclass(frozen=True)
class MapSettings:
    """How a map is chunked and run (bytes; see ``eryx.models_torch``'s knobs of the same names).

    Attributes
    ----------
    grid_chunk_bytes : int
        Bytes of per-atom amplitudes per structure-factor chunk on the grid.
    grid_group_bytes : int
        Bytes of the per-row-group tables on the grid.
    grid_chunk_min_points : int
        Fewest points per grid chunk.
    direct_chunk_bytes : int
        Bytes of one direct-formula chunk's largest intermediate (phases of all atoms).
    grid_workers : bool
        Run the grid's work units in Python worker threads on the CPU.
    """

    grid_chunk_bytes: int
    grid_group_bytes: int
    grid_chunk_min_points: int
    direct_chunk_bytes: int
    grid_workers: bool


# ------------------------------------------------------------------ threads
@contextlib.contextmanager
def torch_threads(n: int | None) -> Iterator[None]:
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


def unit_size(unit: tuple) -> int:
    """Grid points of a work unit of :func:`grid_units` (its rows times its columns)."""
    return len(unit[3]) * len(unit[4])


def parallel_units(run: Callable[[Iterable], Any], units: list, workers: int,
                   size: Callable[[Any], int] = unit_size) -> list:
    """``[run(units_of_worker), ...]``: one result per worker thread, in worker order.

    The workers pull the units from one shared queue, largest first (``size``): a worker
    that the operating system deschedules (a shared machine) holds up only the unit it is
    on, the others take the rest. ``run`` gets an iterable of units and must not depend
    on which units it gets (the map writes each point once; the backward reduces per
    unit, in unit order). Shared by the map and its analytic backward
    (:mod:`eryx.gridmap_torch`). ``workers``: worker threads at most (1 or fewer: ``run``
    once, in this thread); torch runs single-threaded in each (the number of torch threads
    is restored afterwards).
    """
    n_workers = min(workers, len(units))
    if n_workers < 2:
        return [run(units)]
    queue = iter(sorted(units, key=lambda u: -size(u)))  # stable: ties keep their order
    lock = threading.Lock()

    def pull() -> Iterator:
        while True:
            with lock:
                unit = next(queue, None)
            if unit is None:
                return
            yield unit

    grad_enabled = torch.is_grad_enabled()  # thread-local: carry the caller's mode over

    def work(_):
        with torch.set_grad_enabled(grad_enabled):
            return run(pull())

    with torch_threads(1), ThreadPoolExecutor(max_workers=n_workers, thread_name_prefix="eryx-map") as pool:
        return list(pool.map(work, range(n_workers)))


def run_units(run: Callable[[list], tuple[list, list]], units: list, workers: int) -> tuple[list, list]:
    """``run(subset)`` -> (idx_parts, val_parts) over the work ``units``, in worker threads.

    With more than one worker, the units are pulled by ``workers`` Python threads while
    torch runs single-threaded (``torch.set_num_threads(1)``, restored afterwards): independent units scale
    without a fork/join per operation, and a CPU shared with other processes slows
    the map down in proportion instead of stalling every operation on its slowest
    OpenMP thread (docs/performance.md). Every value is computed by the same
    operations either way, so the map is the same bit for bit.
    """
    results = parallel_units(run, units, workers)  # one (idx_parts, val_parts) per worker
    return [p for r in results for p in r[0]], [p for r in results for p in r[1]]


# ------------------------------------------------------------------ points and chunks
def points(model) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(q (n, 3), bz index (n,), valid mask (n,)) of the map's points: the grid or the q-vectors."""
    if model.q_vectors is None:
        return model.q_grid, model.bz_index, model.res_mask
    return model.q_vectors, model.q_bz_index, model.q_res_mask


def bz_table(bz: torch.Tensor, compute: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Group the points to compute by k-point, by index arithmetic.

    Parameters
    ----------
    bz : (n,) int64
        Each point's k-point (BZ or extra).
    compute : (n,) bool
        The points to compute.

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


def direct_chunk_points(model, settings: MapSettings, extra_per_point: int = 0) -> int:
    """Points per chunk of the direct formula: the model's ``chunk_size``, and the phases of
    all atoms (plus ``extra_per_point`` bytes) within ``settings.direct_chunk_bytes``."""
    per_point = 2 * model.n_asu * model.n_at * model.real_dtype.itemsize + extra_per_point
    return max(1, min(model.chunk_size, settings.direct_chunk_bytes // per_point))


def grid_chunk_points(model, settings: MapSettings) -> int:
    """Grid points per structure-factor chunk (cache-sized, at most the model's ``chunk_size``)."""
    per_point = 2 * model.real_dtype.itemsize * model.n_asu * model.n_at
    return max(1, min(model.chunk_size, max(settings.grid_chunk_min_points, settings.grid_chunk_bytes // per_point)))


def grid_axes(model) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None:
    """Per-axis BZ indices (bh (n_h,), bk (n_k,), bl (n_l,)) when the map is the grid and its
    grid -> BZ mapping is a product over the axes (it always is: section 5); else None.

    Read from ``bz_index`` itself, so the map follows whatever mapping the model
    holds (a cross-fed one, or an injected fault).
    """
    if model.q_vectors is not None or model.bz_index.numel() != int(np.prod(model.map_shape)):
        return None
    nh, nk, nl = model.map_shape
    Lh, Lk, Ll = model.L
    bz3 = model.bz_index.reshape(nh, nk, nl)
    bh = torch.div(bz3[:, 0, 0], Lk * Ll, rounding_mode="floor")
    bk = torch.div(bz3[0, :, 0], Ll, rounding_mode="floor") % Lk
    bl = bz3[0, 0, :] % Ll
    if bh.min() < 0 or bh.max() >= Lh:
        return None
    rebuilt = (bh[:, None, None] * Lk + bk[None, :, None]) * Ll + bl[None, None, :]
    if not torch.equal(rebuilt, bz3):
        return None
    return bh, bk, bl


def grid_tables(model, use_data_adp: bool) -> dict:
    """What every grid chunk shares: per-axis phase tables, form-factor types, the
    projection operators, the Debye-Waller U."""
    nh, nk, nl = model.map_shape
    U = model.debye_waller_U(use_data_adp)
    frac = st.fractional_coordinates(model.xyz, model.A_inv)  # (n_asu, n_at, 3)
    hkl = model.hkl_grid.reshape(nh, nk, nl, 3)
    types, inverse = st.form_factor_types(model.ff_a[0], model.ff_b[0], model.ff_c[0])
    Q, Pq = st.projection_operators(model.Amat)
    needs_grad = torch.is_grad_enabled() and any(
        t.requires_grad for t in (U, model.xyz, model.Amat, model.A_inv, model.q_grid))
    return dict(
        axes=grid_axes(model), U=U, types=types, inverse=inverse, Q=Q, Pq=Pq, needs_grad=needs_grad,
        E_h=st.axis_phase_table(hkl[:, 0, 0, 0], frac[..., 0]),  # (n_asu, n_at, n_h)
        E_k=st.axis_phase_table(hkl[0, :, 0, 1], frac[..., 1]),
        E_l=st.axis_phase_table(hkl[0, 0, :, 2], frac[..., 2]),
    )


def grid_units(model, settings: MapSettings, tables: dict, blocks) -> list[tuple]:
    """Split the grid points of the BZ points ``blocks`` into work units.

    Each BZ point's grid points form a product grid: rows = (h, k) pairs, columns =
    l values. A unit is (bz, row_h, row_k, row_flat, cols, rows_per_chunk): a group
    of rows (within ``settings.grid_group_bytes`` of per-row tables) times a run of columns.
    """
    bh, bk, bl = tables["axes"]
    nk = model.map_shape[1]
    n_chunk = grid_chunk_points(model, settings)
    per_row_atoms = 2 * model.real_dtype.itemsize * model.n_asu * model.n_at
    units = []
    for b in blocks:
        dh, dk, dl = np.unravel_index(b, model.L)
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
        per_row = per_row_atoms + model.real_dtype.itemsize * (model.n_at + 4) * cols_l
        group = max(n_rows, settings.grid_group_bytes // per_row // n_rows * n_rows)
        for c0 in range(0, len(il), cols_l):
            for g0 in range(0, len(row_flat), group):
                g = slice(g0, g0 + group)
                units.append((b, row_h[g], row_k[g], row_flat[g], il[c0:c0 + cols_l], n_rows))
    return units


def grid_chunks(model, settings: MapSettings, tables: dict, units) -> Iterator[tuple[int, torch.Tensor, torch.Tensor]]:
    """Yield (bz, flat grid indices (n,), F (n_dof, n) complex) over the work units
    of :func:`grid_units`: F from :func:`functional_torch.structure_factors_product_T`
    with the per-axis phase tables, the amplitudes at ``q_grid`` and the same
    low-rank projection as the direct formula.
    """
    E_h, E_k, E_l = tables["E_h"], tables["E_k"], tables["E_l"]
    types, inverse, U, Q, Pq = (tables[k] for k in ("types", "inverse", "U", "Q", "Pq"))
    nl = model.map_shape[2]
    n_chunk = grid_chunk_points(model, settings)
    buf = None if tables["needs_grad"] else torch.empty(
        model.n_asu * model.n_at * n_chunk, dtype=model.complex_dtype, device=model.device)
    for b, row_h, row_k, row_flat, cl, n_rows in units:
        G, c = len(row_flat), len(cl)
        # Per group of rows: the phase products E_h E_k, q and the amplitudes.
        E_cols = E_l.index_select(2, cl)
        E_group = E_h.index_select(2, row_h) * E_k.index_select(2, row_k)
        idx_g = (row_flat[:, None] * nl + cl[None, :]).reshape(-1)
        qT_g = model.q_grid.index_select(0, idx_g).T.contiguous()  # (3, G c)
        amp_g = st.atomic_amplitudes(torch.sum(qT_g * qT_g, dim=0), types, inverse, U)
        # Complex once per group: the per-chunk product then needs no promotion.
        amp_g = amp_g.to(model.complex_dtype).reshape(model.n_at, G, c)
        qT_g = qT_g.reshape(3, G, c)
        # One split per row group: a slice per chunk would give each chunk's autograd
        # node a zero-filled gradient of the whole group (issue 20).
        sizes = [min(n_rows, G - r0) for r0 in range(0, G, n_rows)]
        for qT, amp, E_rows, idx in zip(qT_g.split(sizes, dim=1), amp_g.split(sizes, dim=1),
                                        E_group.split(sizes, dim=2), idx_g.split([s * c for s in sizes])):
            m = qT.shape[1]
            out = None if buf is None else buf[:model.n_asu * model.n_at * m * c].view(
                model.n_asu, model.n_at, m, c)
            F = st.structure_factors_product_T(
                qT.reshape(3, m * c).T, E_rows, E_cols, amp.reshape(model.n_at, m * c), Q, Pq, out)
            yield b, idx, F


# ------------------------------------------------------------------ maps
#: ``per_block(F (n_rows, n_dof, c) complex, ks (n_rows,)) -> (n_rows, c) or (n_rows, n_cols, c)``.
PerBlock = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
#: ``analytic(model, settings, W, U, use_data_adp, blocks, workers) -> (n_q,) map or None``:
#: the full grid map with an analytic gradient, None where it does not apply
#: (:func:`eryx.gridmap_torch.analytic_full_map`).
Analytic = Callable[..., "torch.Tensor | None"]


def evaluate_map(model, settings: MapSettings, per_block: PerBlock | None, n_cols: int | None,
                 use_data_adp: bool, full_map: bool = False, analytic: Analytic | None = None) -> torch.Tensor:
    """Evaluate a map over the valid points, k-point by k-point in batched blocks.

    ``per_block(F, ks)`` gets F as (n_rows, n_dof, c) complex (the points of each
    k-point ``ks[row]``) and returns (n_rows, c) or (n_rows, n_cols, c) reals.
    Points outside the resolution mask (and, for the full map, at k-points with
    zero modes) are NaN. On the grid the structure factors come from the per-axis
    phase tables (:func:`grid_chunks`); ``full_map`` then evaluates F K^-1 F^H
    through the inverse Cholesky factor of each K.

    Returns
    -------
    (n_q,) or (n_q, n_cols) real
    """
    if grid_axes(model) is not None:
        return map_grid(model, settings, per_block, n_cols, use_data_adp, full_map, analytic)
    q, bz, mask = points(model)
    zero_k = torch.isnan(model._Winv_all).any(dim=1)
    shape = (len(q),) if n_cols is None else (len(q), n_cols)
    out = torch.full(shape, math.nan, dtype=model.real_dtype, device=model.device)
    compute = mask if n_cols is not None else mask & ~zero_k[bz]
    ks, table = bz_table(bz, compute)
    if table.numel() == 0:
        return out
    U = model.debye_waller_U(use_data_adp)
    budget = direct_chunk_points(model, settings)
    cols = max(1, budget // len(ks))
    rows = max(1, budget // cols)
    idx_parts, val_parts = [], []
    for r0 in range(0, len(ks), rows):
        for s in range(0, table.shape[1], cols):
            sel = table[r0:r0 + rows, s:s + cols]
            valid = sel >= 0
            F = st.structure_factors_T(q[sel.clamp(min=0).reshape(-1)], model.xyz, model.ff_a[0],
                                       model.ff_b[0], model.ff_c[0], U, model.Amat)
            F = F.reshape(model.n_dof, *sel.shape).permute(1, 0, 2)  # (n_rows, n_dof, c)
            values = per_block(F, ks[r0:r0 + rows])
            if n_cols is not None:
                values = values.transpose(1, 2)  # (n_rows, c, n_cols)
            idx_parts.append(sel[valid])
            val_parts.append(values[valid])
    return out.index_put((torch.cat(idx_parts),), torch.cat(val_parts))


def map_grid(model, settings: MapSettings, per_block: PerBlock | None, n_cols: int | None, use_data_adp: bool,
             full_map: bool, analytic: Analytic | None = None) -> torch.Tensor:
    """:func:`evaluate_map` on the grid, with the per-axis phase tables (see there).

    On the CPU with worker threads (``settings.grid_workers``) the work units go to as many
    worker threads as torch has threads, and everything else here (the factors W, the
    tables, gathering the map: small or memory-bound operations) runs with one torch
    thread: split across OpenMP threads, such operations wait for a descheduled thread on
    a shared machine (docs/performance.md, section 5).
    """
    workers = torch.get_num_threads() if (settings.grid_workers and model.device.type == "cpu") else 1
    with torch_threads(1 if workers > 1 else None):
        return _map_grid(model, settings, per_block, n_cols, use_data_adp, full_map, analytic, workers)


def _map_grid(model, settings: MapSettings, per_block: PerBlock | None, n_cols: int | None, use_data_adp: bool,
              full_map: bool, analytic: Analytic | None, workers: int) -> torch.Tensor:
    zero_k = torch.isnan(model._Winv_all).any(dim=1)
    n_q = int(np.prod(model.map_shape))
    shape = (n_q,) if n_cols is None else (n_q, n_cols)
    out = torch.full(shape, math.nan, dtype=model.real_dtype, device=model.device)
    state = {}
    if full_map:
        eye = torch.eye(model.n_dof, dtype=model.complex_dtype, device=model.device)
        W, ok = st.hermitian_inverse_factor(torch.where(zero_k[:, None, None], eye, model._K_all))
        ok = ok.tolist()  # one device sync
    skip = zero_k.tolist() if n_cols is None else [False] * len(zero_k)
    blocks = [b for b in range(int(np.prod(model.L))) if not skip[b]]
    if full_map and analytic is not None and all(ok[b] for b in blocks):
        analytic_out = analytic(model, settings, W, model.debye_waller_U(use_data_adp), use_data_adp, blocks,
                                workers)
        if analytic_out is not None:
            mask = model.res_mask
            return analytic_out if bool(mask.all()) else torch.where(mask, analytic_out,
                                                                     torch.full_like(analytic_out, math.nan))
    tables = grid_tables(model, use_data_adp)
    units = grid_units(model, settings, tables, blocks)

    def run(subset):
        idx_parts, val_parts = [], []
        for b, idx, F in grid_chunks(model, settings, tables, subset):
            if full_map and ok[b]:
                values = st.intensity_factored(F, W[b])
            elif full_map:
                if "Kinv" not in state:
                    state["Kinv"] = full_rank_inverse(model)
                values = st.intensity_blocks(F[None], state["Kinv"][b:b + 1])[0]
            else:
                values = per_block(F[None], torch.tensor([b], device=model.device))[0]
                if n_cols is not None:
                    values = values.T  # (n, n_cols)
            idx_parts.append(idx)
            val_parts.append(values)
        return idx_parts, val_parts

    idx_parts, val_parts = run_units(run, units, workers=1 if tables["needs_grad"] else workers)
    if idx_parts:
        out = out.index_put((torch.cat(idx_parts),), torch.cat(val_parts))
    mask = model.res_mask
    if not bool(mask.all()):
        out = torch.where(mask if n_cols is None else mask[:, None], out, torch.full_like(out, math.nan))
    return out


def full_map_per_q(model, settings: MapSettings, use_data_adp: bool) -> torch.Tensor:
    """The full map (n_q,) with K(k(q)) per q-vector, so that d/dq includes the k-dependence.

    k(q) = q - 2 pi A_inv^T G with G piecewise constant, so dk/dq = I: each point's k
    is its k-point's value plus (q - q.detach()) (same value, identity gradient).
    """
    q, bz, mask = points(model)
    zero_k = torch.isnan(model._Winv_all).any(dim=1)
    out = torch.full((len(q),), math.nan, dtype=model.real_dtype, device=model.device)
    idx = torch.nonzero(mask & ~zero_k[bz]).reshape(-1)
    k_all = torch.cat([model.kvec.reshape(-1, 3), model.extra_kvec])
    U = model.debye_waller_U(use_data_adp)
    # K(k), its inverse and their temporaries per point, besides the phases.
    step = direct_chunk_points(model, settings, extra_per_point=3 * 2 * model.real_dtype.itemsize * model.n_dof**2)
    parts = []
    for s in range(0, len(idx), step):
        sel = idx[s:s + step]
        k = k_all[bz[sel]] + (q[sel] - q[sel].detach())
        Kinv = torch.linalg.inv(st.build_K(model.hessian, k, model.cell_origin))
        F = st.structure_factors_T(q[sel], model.xyz, model.ff_a[0], model.ff_b[0], model.ff_c[0], U, model.Amat)
        parts.append(st.intensity_blocks(F.T[:, :, None], Kinv)[:, 0])
    return out.index_put((idx,), torch.cat(parts)) if parts else out


def full_rank_inverse(model) -> torch.Tensor:
    """K(k)^-1 (n_bz, n_dof, n_dof) at every BZ point without zero modes (identity elsewhere, unused)."""
    zero = torch.isnan(model._Winv_all).any(dim=1)
    eye = torch.eye(model.n_dof, dtype=model.complex_dtype, device=model.device)
    safe = torch.where(zero[:, None, None], eye, model._K_all)
    return torch.linalg.inv(safe)
