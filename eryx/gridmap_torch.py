"""Gradients of the torch full map at about the cost of a forward pass, in bounded memory.

Two derivatives of the full diffuse map ``apply_disorder()`` (rank -1) are computed here
without keeping the map's intermediates alive (docs/gradients.md):

* **On the grid, with respect to the spring constants** (and anything else that reaches
  the map only through W, the inverse Cholesky factor of conj K(k) per BZ point, and U,
  the per-atom Debye-Waller displacement): :class:`FullGridMap`, a custom autograd
  function whose backward recomputes each chunk's structure factors and applies the
  analytic adjoint of Id = |W F|^2 summed over the degrees of freedom:

      dL/dW_b = 2 W_b S_b,   S_b = sum_p g_p F_p F_p^H,   dL/dF_p = 2 g_p (W_b^H W_b) F_p,
      dL/dU_a = sum_p g_amp(a, p) amp(a, p) (-|q_p|^2 / 2),

  where g_amp follows F's linear chain (rank-4 projection, q weighting) backwards. Cost:
  one forward's arithmetic plus two products of the degrees of freedom and one of the
  size of the atom contraction; memory: one chunk per worker thread plus map-sized
  gradients. The units' shares are summed in unit order: the same gradient bit for bit
  at any thread count. The backward is
  first-order only: a backward with ``create_graph=True`` (double backward) raises
  :class:`FirstOrderOnlyError` saying so; set ``models_torch.GRID_GRAD_ENGINE =
  "autograd"`` for the plain-autograd path, which supports double backward.

* **In q-vector mode, with respect to q**: :func:`full_map_q_grad`, with the points
  grouped by k-point: K(k) is factorised once per k-point and its k-dependence enters as
  the exact first-order term -Re(Y^H (dK/dk_x)^T Y) dk_x, Y = K^-T F, dK/dk from forward-mode
  AD of :func:`functional_torch.build_K` (so an injected fault in ``build_K`` still reaches
  the gradient). Its k-term is also first-order only (same error on a double backward).

Both are exact: the same values as the plain-autograd paths to round-off (tests compare
them at every chunk size, and against finite differences of the NumPy reference).
"""
from __future__ import annotations

import contextlib
import math
import threading

import torch

from eryx import functional_torch as st
from eryx import mapengine_torch as me
# Old home of these two (they moved to the map engine with the chunk scheduling): still importable here.
from eryx.mapengine_torch import parallel_units, torch_threads  # noqa: F401

#: The stage functions the analytic backward differentiates by hand. If any of them is
#: replaced (a fault injection), the model falls back to plain autograd, so the gradient
#: is always the derivative of the map that was computed.
_HAND_DIFFERENTIATED = ("structure_factors_product_T", "intensity_factored", "atomic_amplitudes",
                        "axis_phase_table", "hermitian_inverse_factor")
_ORIGINALS = {name: getattr(st, name) for name in _HAND_DIFFERENTIATED}

#: The error of a double backward (``create_graph=True``) through a first-order backward.
FIRST_ORDER_ONLY = (
    "the torch map's analytic gradient is first-order only: create_graph=True (a double "
    "backward, a Hessian) is not supported by {what}; set eryx.models_torch.GRID_GRAD_ENGINE "
    "= 'autograd' for the plain-autograd path, which supports it")


class FirstOrderOnlyError(RuntimeError):
    """A double backward through one of this module's first-order backward passes."""


#: The caller's torch thread count while a backward pass runs with one thread
#: (:class:`_OneThreadBackward`); per Python thread, as the CPU autograd engine runs a
#: backward pass in the thread that called it.
_CALLER_THREADS = threading.local()


def _restore_caller_threads() -> None:
    """Give the caller its torch thread count back (no-op when none is pending)."""
    count = getattr(_CALLER_THREADS, "count", None)
    if count is not None:
        _CALLER_THREADS.count = None
        torch.set_num_threads(count)


@contextlib.contextmanager
def _restoring_threads():
    """Around a backward of this module: an error ends the backward pass without the
    engine's callbacks, so restore the caller's thread count here before it propagates."""
    try:
        yield
    except BaseException:
        _restore_caller_threads()
        raise


def _refuse_create_graph(what: str) -> None:
    # The engine runs a backward with grad mode on exactly when create_graph=True; then a
    # later derivative of these gradients would silently miss their dependence on W, U, q.
    if torch.is_grad_enabled():
        raise FirstOrderOnlyError(FIRST_ORDER_ONLY.format(what=what))


def stages_are_original() -> bool:
    """True when none of the hand-differentiated stage functions is replaced."""
    return all(getattr(st, name) is fn for name, fn in _ORIGINALS.items())


def analytic_applies(model, W: torch.Tensor, U: torch.Tensor) -> bool:
    """Whether :class:`FullGridMap` computes this grid map's gradient exactly.

    It covers gradients reaching the map through W and U only: nothing else on the grid
    path (coordinates, projections, q) may carry a gradient.
    """
    if not torch.is_grad_enabled() or not (W.requires_grad or U.requires_grad):
        return False
    if any(t.requires_grad for t in (model.xyz, model.Amat, model.A_inv, model.q_grid)):
        return False
    return stages_are_original()


def _forward_values(model, settings: me.MapSettings, tables: dict, units: list, W: torch.Tensor, workers: int):
    """(idx_parts, val_parts) of the full map over ``units`` (no autograd)."""
    def run(subset):
        idx_parts, val_parts = [], []
        for b, idx, F in me.grid_chunks(model, settings, tables, subset):
            idx_parts.append(idx)
            val_parts.append(st.intensity_factored(F, W[b]))
        return idx_parts, val_parts

    results = me.parallel_units(run, units, workers)
    return [p for r in results for p in r[0]], [p for r in results for p in r[1]]


def _backward_unit(model, tables: dict, unit, W: torch.Tensor, g: torch.Tensor, need_U: bool,
                   buf: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """One work unit's share of dL/dW[b] (n_dof, n_dof) and of dL/dU (n_at,) (None
    without ``need_U``), b the unit's BZ point.

    Recomputes the unit's structure factors as :func:`functional_torch.structure_factors_product_T`
    does, keeping the amplitude-weighted phases A (needed for dL/dU), then runs the chain
    backwards (the module docstring). ``buf``: an optional complex buffer of at least
    n_asu n_at times the chunk's points for A, reused across chunks (as the forward's).
    """
    E_h, E_k, E_l, types, inverse, U, Q, Pq = (tables[k] for k in ("E_h", "E_k", "E_l", "types", "inverse",
                                                                   "U", "Q", "Pq"))
    b, row_h, row_k, row_flat, cl, n_rows = unit
    nl = model.map_shape[2]
    n_asu, n_at, r = Q.shape[0], Q.shape[2], Q.shape[1]
    G, c = len(row_flat), len(cl)
    E_cols = E_l.index_select(2, cl)
    E_group = E_h.index_select(2, row_h) * E_k.index_select(2, row_k)
    idx_g = (row_flat[:, None] * nl + cl[None, :]).reshape(-1)
    qT_g = model.q_grid.index_select(0, idx_g).T.contiguous()  # (3, G c)
    q2_g = torch.sum(qT_g * qT_g, dim=0)
    amp_g = st.atomic_amplitudes(q2_g, types, inverse, U).to(model.complex_dtype)  # (n_at, G c)
    # dL/dR from dL/dRQ: sum over x of q_x, times d amp / d U / amp = -|q|^2 / 2 (the
    # same for every atom), folded into one weight per point and axis.
    # Complex once per unit: the per-chunk products with complex tensors then need no
    # promotion (a real operand is copied to complex by every such product).
    wq_g = (qT_g * (-0.5 * q2_g)).to(model.complex_dtype)
    g_g = g.index_select(0, idx_g).to(model.complex_dtype)
    Wb = W[b]
    # L = sum_p g_p |W F_p|^2 = sum_p g_p F_p^H (W^H W) F_p, so dL/dW = 2 W S with
    # S = sum_p g_p F_p F_p^H, and dL/dF_p = 2 g_p (W^H W) F_p: two products per chunk
    # (S and, for dL/dU, dL/dF); Z = W F is never formed.
    S = torch.zeros_like(Wb)
    WhW2 = 2 * (Wb.conj().T @ Wb)
    M = torch.zeros((n_asu, n_at, r), dtype=model.real_dtype, device=model.device) if need_U else None
    sizes = [min(n_rows, G - r0) * c for r0 in range(0, G, n_rows)]
    # One split per row group (a slice per chunk would make autograd-style zero-filled
    # row-group gradients; here it simply avoids re-slicing).
    for qT, wq, amp, gp, E_rows in zip(qT_g.split(sizes, dim=1), wq_g.split(sizes, dim=1),
                                       amp_g.split(sizes, dim=1), g_g.split(sizes), E_group.split(n_rows, dim=2)):
        m, n = E_rows.shape[2], qT.shape[1]
        out = None if buf is None else buf[:n_asu * n_at * n].view(n_asu, n_at, m, c)
        A = torch.mul(E_rows[..., :, None], E_cols[..., None, :], out=out) if out is not None else \
            E_rows[..., :, None] * E_cols[..., None, :]
        A.mul_(amp.reshape(1, n_at, m, c))  # (n_asu, n_at, m, c)
        Ar = torch.view_as_real(A).reshape(n_asu, n_at, 2 * n)
        Rc = torch.view_as_complex(torch.bmm(Q, Ar).reshape(n_asu, r, n, 2))
        RQ = Rc[:, None, :, :] * qT[None, :, None, :]  # (n_asu, 3, r, n)
        F = torch.view_as_complex(torch.bmm(Pq, torch.view_as_real(RQ).reshape(n_asu, 3 * r, 2 * n))
                                  .reshape(6 * n_asu, n, 2))
        gpF = F * gp
        S += gpF @ F.conj().T
        if not need_U:
            continue
        gF = WhW2 @ gpF  # dL/dF, (n_dof, n)
        gRQ = torch.bmm(Pq.transpose(1, 2), torch.view_as_real(gF).reshape(n_asu, 6, 2 * n))
        wgR = (torch.view_as_complex(gRQ.reshape(n_asu, 3, r, n, 2)) * wq[None, :, None, :]).sum(dim=1)
        # Re(sum_p conj(A_iap) wgR_isp) as one real product over (p, re/im).
        M.baddbmm_(Ar, torch.view_as_real(wgR).reshape(n_asu, r, 2 * n).transpose(1, 2))  # (n_asu, n_at, r)
    gU = torch.einsum("isa,ias->a", Q, M) if need_U else None
    return 2 * (Wb @ S), gU


class FullGridMap(torch.autograd.Function):
    """The full map on the grid as a function of (W, U), with the analytic backward.

    ``forward(ctx, W, U, model, settings, use_data_adp, blocks, workers)`` returns the (n_q,)
    map (NaN where no BZ point serves a point, before the resolution mask); ``settings``: the
    map's chunking (:class:`eryx.mapengine_torch.MapSettings`).
    """

    @staticmethod
    def forward(ctx, W, U, model, settings, use_data_adp, blocks, workers):
        tables = me.grid_tables(model, use_data_adp)
        tables["U"] = U.detach()
        units = me.grid_units(model, settings, tables, blocks)
        n_q = model.q_grid.shape[0]
        out = torch.full((n_q,), math.nan, dtype=model.real_dtype, device=model.device)
        idx_parts, val_parts = _forward_values(model, settings, tables, units, W.detach(), workers)
        if idx_parts:
            out = out.index_put((torch.cat(idx_parts),), torch.cat(val_parts))
        ctx.save_for_backward(W, U)
        # The backward gives its units to as many worker threads as the forward had (it runs
        # with one torch thread: :func:`analytic_full_map`).
        ctx.model, ctx.tables, ctx.units, ctx.workers, ctx.settings = model, tables, units, workers, settings
        return out

    @staticmethod
    def backward(ctx, g):
        with _restoring_threads():
            return FullGridMap._backward(ctx, g)

    @staticmethod
    def _backward(ctx, g):
        _refuse_create_graph("the grid map's backward (eryx.gridmap_torch.FullGridMap)")
        W, U = ctx.saved_tensors
        need_W, need_U = ctx.needs_input_grad[:2]
        model, tables = ctx.model, ctx.tables
        # NaN at points no BZ point serves never reach a loss with a finite gradient
        # (nansum, masks): give them zero weight rather than propagate 0 * NaN.
        g = torch.nan_to_num(g.detach(), nan=0.0)

        n_chunk = me.grid_chunk_points(model, ctx.settings)

        def run(subset):
            buf = torch.empty(model.n_asu * model.n_at * n_chunk, dtype=model.complex_dtype, device=model.device)
            return [(i, _backward_unit(model, tables, unit, W, g, need_U, buf)) for i, unit in subset]

        # Each unit's share is summed in unit order, whichever worker computed it: the
        # gradient is the same bit for bit at any thread count.
        shares = dict(p for part in me.parallel_units(run, list(enumerate(ctx.units)), ctx.workers,
                                                      size=lambda iu: me.unit_size(iu[1])) for p in part)
        gW = torch.zeros_like(W)
        gU = torch.zeros_like(U)
        for i, unit in enumerate(ctx.units):
            gWb, gUu = shares[i]
            gW[unit[0]] += gWb
            if need_U:
                gU += gUu
        return (gW if need_W else None), (gU if need_U else None), None, None, None, None, None


def analytic_full_map(model, settings: me.MapSettings, W: torch.Tensor, U: torch.Tensor, use_data_adp: bool,
                      blocks: list, workers: int) -> torch.Tensor | None:
    """The full grid map (n_q,) through :class:`FullGridMap` where :func:`analytic_applies`,
    else None (the map engine then runs its plain chunks): the ``analytic`` hook of
    :func:`eryx.mapengine_torch.map_grid`."""
    if not analytic_applies(model, W, U):
        return None
    out = FullGridMap.apply(W, U, model, settings, use_data_adp, blocks, workers)
    # The rest of the backward after this map (W and U back to the spring constants) is
    # thousands of small operations on 24 x 24 matrices: run it with one torch thread, as
    # the q-vector gradient does (split across OpenMP threads, one first backward next to
    # a CPU-bound process was measured to stall 1.2 s in them, against 4 ms warm).
    return _OneThreadBackward.apply(out) if SMALL_OPS_SINGLE_THREAD and model.device.type == "cpu" else out


# ------------------------------------------------------------ q-vector mode: d Id / d q
class _FirstOrderK(torch.autograd.Function):
    """sum_x dk_x S_x with S the (detached) derivative of Id along k: value 0 (dk = 0),
    gradient S with respect to dk. First-order only: create_graph=True raises."""

    @staticmethod
    def forward(ctx, dk, S):
        ctx.save_for_backward(S)
        return (dk * S).sum(-1)

    @staticmethod
    def backward(ctx, g):
        with _restoring_threads():
            _refuse_create_graph("the q-vector map's k-term (eryx.gridmap_torch.full_map_q_grad)")
            (S,) = ctx.saved_tensors
            return g[..., None] * S, None


def k_derivative(hessian: torch.Tensor, k: torch.Tensor, cell_origin: torch.Tensor) -> torch.Tensor:
    """dK/dk_x at the k-points ``k`` (n_k, 3): (3, n_k, n_dof, n_dof) complex, no autograd.

    Forward-mode AD of :func:`functional_torch.build_K` (whatever function it currently is).
    """
    import torch.autograd.forward_ad as fwAD

    out = []
    with torch.no_grad(), fwAD.dual_level():
        for x in range(3):
            tangent = torch.zeros_like(k)
            tangent[:, x] = 1.0
            K = st.build_K(hessian.detach(), fwAD.make_dual(k.detach(), tangent), cell_origin)
            out.append(fwAD.unpack_dual(K).tangent)
    return torch.stack(out)


#: Most distinct k-points in a q-vector chunk for the grouped products (else gathered).
MAX_GROUPS_PER_CHUNK = 64


def _q_terms_grouped(F, KinvT, dKT, rows: list, counts: list):
    """(F^H K^-T F (n,), d Id / d k (n, 3)) for points sorted by k-point, one product per k-point."""
    values, S = [], []
    for b, Fg in zip(rows, F.split(counts, dim=1)):
        Y = KinvT[b] @ Fg  # K^-T F, (n_dof, n_g)
        values.append(torch.real(torch.sum(Y * Fg.conj(), dim=0)))  # as intensity_blocks
        with torch.no_grad():
            Yd = Y.detach()
            S.append(-torch.real(torch.sum(Yd.conj() * (dKT[:, b] @ Yd), dim=1)).T)  # -Re(Y^H dK_x^T Y)
    return torch.cat(values), torch.cat(S)


def _q_terms_gathered(F, KinvT, dKT, r):
    """:func:`_q_terms_grouped` with each point's K^-T and dK^T gathered (many k-points)."""
    Fp = F.T[:, :, None]  # (n, n_dof, 1)
    Y = KinvT.index_select(0, r) @ Fp
    values = torch.real(torch.sum(Y * Fp.conj(), dim=(1, 2)))
    with torch.no_grad():
        Yd = Y.detach()
        S = -torch.real(torch.sum(Yd[None].conj() * (dKT.index_select(1, r) @ Yd[None]), dim=(2, 3))).T
    return values, S


#: On the CPU, run the q-vector gradient's forward and backward with one torch thread:
#: thousands of small operations, each split across OpenMP threads, stall on a shared
#: machine (docs/performance.md, sections 5 and 8).
Q_GRAD_SINGLE_THREAD = True
#: On the CPU, run the grid map's backward with one torch thread from the map's output on
#: (its own units still go to worker threads, as many as the forward had).
SMALL_OPS_SINGLE_THREAD = True


class _OneThreadBackward(torch.autograd.Function):
    """Identity whose backward switches torch to one thread for the rest of that backward
    pass and restores the caller's count when the pass ends (an engine callback), or when
    one of this module's backward functions raises (:func:`_restoring_threads`: the engine
    runs no callback after an error)."""

    @staticmethod
    def forward(ctx, x):
        return x.view_as(x)

    @staticmethod
    def backward(ctx, g):
        before = torch.get_num_threads()
        if before != 1 and getattr(_CALLER_THREADS, "count", None) is None:
            _CALLER_THREADS.count = before
            torch.set_num_threads(1)
            torch.autograd.Variable._execution_engine.queue_callback(_restore_caller_threads)
        return g


def full_map_q_grad(model, use_data_adp: bool) -> torch.Tensor:
    """The full map at the model's q-vectors, differentiable in q (and the gammas),
    with one K factorisation per k-point: see the module docstring.

    Returns (n_q,) real, NaN outside the resolution mask and at k-points with zero modes.
    """
    if not (Q_GRAD_SINGLE_THREAD and model.device.type == "cpu"):
        return _full_map_q_grad(model, use_data_adp)
    with me.torch_threads(1):
        out = _full_map_q_grad(model, use_data_adp)
    return _OneThreadBackward.apply(out) if out.requires_grad else out


def _full_map_q_grad(model, use_data_adp: bool) -> torch.Tensor:
    q, bz, mask = me.points(model)
    zero_k = torch.isnan(model._Winv_all).any(dim=1)
    out = torch.full((len(q),), math.nan, dtype=model.real_dtype, device=model.device)
    idx = torch.nonzero(mask & ~zero_k[bz]).reshape(-1)
    if len(idx) == 0:
        return out
    ks, row = torch.unique(bz[idx], return_inverse=True)  # the k-points served, each point's row
    k_all = torch.cat([model.kvec.reshape(-1, 3), model.extra_kvec])
    U = model.debye_waller_U(use_data_adp)
    # One K(k)^-1 and dK/dk per k-point: (n_k, n_dof, n_dof) and (3, n_k, n_dof, n_dof).
    KinvT = torch.linalg.inv(st.build_K(model.hessian, k_all[ks], model.cell_origin)).transpose(1, 2)
    dKT = k_derivative(model.hessian, k_all[ks], model.cell_origin).transpose(-1, -2)
    # Points sorted by k-point: a chunk's points of one k-point take one matrix product
    # with that k-point's K^-T and dK^T (few k-points per chunk, as on grid samples); a
    # chunk spread over many k-points (off-lattice q) gathers them per point instead.
    order = torch.argsort(row, stable=True)
    idx, row = idx[order], row[order]
    step = me.direct_chunk_points(model, model.map_settings(),
                                  extra_per_point=6 * 2 * model.real_dtype.itemsize * model.n_dof**2)
    parts = []
    for s in range(0, len(idx), step):
        sel, r = idx[s:s + step], row[s:s + step]
        F = st.structure_factors_T(q[sel], model.xyz, model.ff_a[0], model.ff_b[0], model.ff_c[0], U,
                                   model.Amat)  # (n_dof, n)
        rows, counts = torch.unique_consecutive(r, return_counts=True)
        if len(rows) <= MAX_GROUPS_PER_CHUNK:
            values, S = _q_terms_grouped(F, KinvT, dKT, rows.tolist(), counts.tolist())
        else:
            values, S = _q_terms_gathered(F, KinvT, dKT, r)
        dk = q[sel] - q[sel].detach()  # value 0, d dk / d q = I (k = q - G, G piecewise constant)
        parts.append(values + _FirstOrderK.apply(dk, S))
    return out.index_put((idx,), torch.cat(parts))
