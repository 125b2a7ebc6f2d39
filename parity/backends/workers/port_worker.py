"""Worker of the ``torch-port`` adapter: slac-dynaboost/eryx's ``eryx.models_torch.OnePhonon``.

Run as ``python port_worker.py request.json outdir`` by ``parity.backends.port``;
standalone (the standard library, NumPy, torch and their code), it never imports
eryx-parity. See ``worker_common`` for the protocol and ``docs/adapters.md`` for every
mapping below (contract quantity <- their expression, convention change).

No shim is needed: the fork reads ``cell.frac.mat`` (gemmi 0.7) itself and its torch
structure factors ignore ``n_processes``. The device is passed as their API wants it
(``device=torch.device(...)``); their precision is fixed (float64 / complex128).

Their model keeps one flat BZ axis (``kvec`` (n_bz, 3), ``V`` (n_bz, n_dof, n_dof),
``Winv`` (n_bz, n_dof)) in C order of (dh, dk, dl) (their ``_3d_to_flat_indices_bz``):
reshaped to the contract's (L_h, L_k, L_l, ...). Their phonon step works on the *unique*
k-vectors (``torch.unique`` sorts them), so recorded K, D and U rows are put back in BZ
order by matching their k-vectors to their own ``kvec``.
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from worker_common import (SHARED_GETTERS, STEPS, Recorder, attribute, expect_shape, n_dof,  # noqa: E402
                           real_checked, serve, to_numpy)

#: Their k-vectors are rounded to 1e-10 before torch.unique; a match within this is the same point.
K_MATCH_ATOL = 1e-9


def _np(x):
    return to_numpy(x)


def probes(request: dict, rec: Recorder, sink) -> None:
    """Probe the k-vectors where their ``_build_kvec_Brillouin`` computes them: the
    ``torch.matmul(hkl_fractional, A_inv)`` it calls gives ``bz_fraction`` (its first argument)
    and ``kvec`` (its result), both in their flat C order, reshaped to (L_h, L_k, L_l, 3)."""
    import torch
    from eryx import models_torch

    rec.track(models_torch.OnePhonon, "_build_kvec_Brillouin")
    L = tuple(int(s[2]) for s in request["samplings"])

    def handle(s, n, args, result, where):
        if n == 0 and len(args) == 2 and tuple(args[0].shape) == (int(np.prod(L)), 3):
            s.emit("bz_fraction", _np(args[0]).reshape(L + (3,)), where=where)
            s.emit("kvec", _np(result).reshape(L + (3,)), where=where)
    sink.on_calls(rec, torch, "matmul", "_build_kvec_Brillouin", handle)


def setup(request: dict, rec: Recorder) -> dict:
    """Install the recorders (after their package is pinned); no shim is needed."""
    import torch
    from eryx import models_torch

    one = models_torch.OnePhonon
    rec.track(one, "compute_gnm_phonons")
    rec.track(one, "compute_covariance_matrix")
    rec.record(one, "compute_hessian", "hessian", lambda a, k, r: _np(r))
    pdb_torch = sys.modules.get("eryx.pdb_torch")
    gnm = getattr(pdb_torch, "GaussianNetworkModel", None)
    if gnm is None:
        rec.missing.update({k: "their code has no eryx.pdb_torch.GaussianNetworkModel"
                            for k in ("hessian_allatoms", "K", "Kinv")})
    else:
        rec.record(gnm, "compute_hessian", "hessian_allatoms", lambda a, k, r: _np(r))
        rec.record(gnm, "compute_K", "K", lambda a, k, r: (_np(a[2] if len(a) > 2 else k["kvec_batch"]), _np(r)),
                   within="compute_gnm_phonons")
        rec.record(gnm, "compute_Kinv", "Kinv", lambda a, k, r: (_np(a[2] if len(a) > 2 else k["kvec_batch"]),
                                                                 _np(r)), within="compute_covariance_matrix")
    # The eigensolver their phonon loop calls: its input is their D, its vectors their U.
    rec.record(torch.linalg, "eigh", "eigh", lambda a, k, r: (_np(a[0]), _np(r[1])), within="compute_gnm_phonons")
    return {"shims": [], "version": getattr(sys.modules.get("eryx"), "__version__", None),
            "device": request["device"], "dtype": "float64"}


def _model(request: dict, **extra):
    import torch
    from eryx.models_torch import OnePhonon

    p = request["params"]
    h, k, l = (tuple(int(v) for v in s) for s in request["samplings"])
    return OnePhonon(request["pdb_path"], h, k, l, expand_p1=bool(p["expand_p1"]), group_by="asu",
                     res_limit=float(p["res_limit"]), model="gnm", gnm_cutoff=float(p["gnm_cutoff"]),
                     gamma_intra=float(p["gamma_intra"]), gamma_inter=float(p["gamma_inter"]),
                     device=torch.device(request["device"]), **extra)


def construct(request: dict, rec: Recorder):
    return _model(request)


# ------------------------------------------------------------------- mapping
def L_of(request: dict) -> tuple:
    return tuple(int(s[2]) for s in request["samplings"])


def per_bz(m, request: dict, what: str, layout: str, array, tail: tuple) -> np.ndarray:
    """Their flat-BZ array (n_bz, *tail) as the contract's (L_h, L_k, L_l, *tail)."""
    L = L_of(request)
    x = expect_shape(array, (int(np.prod(L)), *tail), what, layout)
    return x.reshape(*L, *tail)


def bz_rows(m, kvecs: np.ndarray, what: str) -> np.ndarray:
    """For every BZ point (their ``kvec`` order), the row of ``kvecs`` holding the same k-vector."""
    their = _np(attribute(m, "kvec")).reshape(-1, 3)
    dist = np.linalg.norm(their[:, None, :] - np.asarray(kvecs)[None, :, :], axis=-1)
    rows = np.argmin(dist, axis=1)
    off = dist[np.arange(len(their)), rows]
    if np.any(off > K_MATCH_ATOL):
        raise ValueError(f"{what}: BZ point {int(np.argmax(off))} has no k-vector among the ones their code "
                         f"used (nearest {off.max():.3g} 1/A away)")
    return rows


def square(c: np.ndarray, n_asu: int, what: str) -> np.ndarray:
    """Their per-k matrices (n, n_asu, 6, n_asu, 6) or (n, n_dof, n_dof) as (n, n_dof, n_dof)."""
    size = 6 * n_asu
    if c.ndim == 5 and c.shape[1:] == (n_asu, 6, n_asu, 6):
        return c.reshape(c.shape[0], size, size)
    return expect_shape(c, (c.shape[0], size, size), what, "(n_k, n_dof, n_dof)")


def recorded_K(m, request: dict, rec: Recorder, key: str, what: str) -> np.ndarray:
    """The last batch their construction computed, rows put in BZ order: (n_bz, n_dof, n_dof)."""
    kvecs, mats = rec.get(key, what)[-1]
    mats = square(mats, int(attribute(m, "n_asu")), what)
    return mats[bz_rows(m, kvecs, what)]


def recorded_eigh(m, request: dict, rec: Recorder, index: int) -> np.ndarray:
    """Their eigensolver's input (D, index 0) or vectors (U, index 1) per BZ point."""
    calls = rec.get("eigh", "their eigendecomposition of D")
    kvecs, _ = rec.get("K", "K(k)")[-1]
    n_u = len(kvecs)
    if len(calls) < n_u:
        raise ValueError(f"their phonon loop took {len(calls)} eigendecompositions for {n_u} k-vectors")
    # Their loop decomposes each unique k-vector in order (their code runs the loop twice;
    # the last pass is the one whose results they keep).
    mats = np.stack([c[index] for c in calls[-n_u:]])
    return square(mats, int(attribute(m, "n_asu")), "D" if index == 0 else "U")[bz_rows(m, kvecs, "D")]


def bz_index(m, request: dict) -> np.ndarray:
    """Their grid -> BZ mapping: ``_3d_to_flat_indices_bz`` and ``_at_kvec_from_miller_points``."""
    import torch

    out = np.full(int(np.prod(attribute(m, "map_shape"))), -1, dtype=np.int64)
    for bz in np.ndindex(*L_of(request)):
        flat = int(m._3d_to_flat_indices_bz(*(torch.tensor([i]) for i in bz)).item())
        out[_np(m._at_kvec_from_miller_points(bz))] = flat
    return out


def _t(m, x):
    import torch

    return torch.as_tensor(np.asarray(x), dtype=torch.float64, device=m.device)


def structure_factors_sample(m, request: dict):
    """F at the q sample as their ``apply_disorder(use_data_adp=True)`` builds it, ASUs side by side."""
    import torch
    from eryx.scatter_torch import structure_factors

    q = attribute(m, "q_grid")[torch.as_tensor(request["q_sample"], device=m.device)].detach()
    model = attribute(m, "model")
    adp = _t(m, model.adp[0]) / (8 * torch.pi * torch.pi)
    blocks = [structure_factors(q, _t(m, _np(m.crystal.get_asu_xyz(i))), _t(m, model.ff_a[i]), _t(m, model.ff_b[i]),
                                _t(m, model.ff_c[i]), U=adp, compute_qF=True, project_on_components=m.Amat[i],
                                sum_over_atoms=False) for i in range(m.n_asu)]
    return torch.cat(blocks, dim=1)


def F_hkl(m, request: dict):
    """Their structure factors of every atom at the oracle's reflections, U = 0 (q as their _setup forms it)."""
    import torch
    from eryx.scatter_torch import structure_factors

    model = attribute(m, "model")
    hkl = _t(m, request["oracle_hkl"])
    q = 2 * torch.pi * torch.matmul(_t(m, model.A_inv).T, hkl.T).T
    return structure_factors(q, _t(m, model.xyz.reshape(-1, 3)), _t(m, model.ff_a.reshape(-1, 4)),
                             _t(m, model.ff_b.reshape(-1, 4)), _t(m, model.ff_c.reshape(-1)), U=None)


def form_factors(m, request: dict):
    import torch
    from eryx.scatter_torch import compute_form_factors

    model = attribute(m, "model")
    q = attribute(m, "q_grid")[torch.as_tensor(request["q_sample"], device=m.device)].detach()
    return compute_form_factors(q, _t(m, model.ff_a[0]), _t(m, model.ff_b[0]), _t(m, model.ff_c[0]))


_CACHE: dict = {}


def gamma_gradients(m, request: dict) -> dict:
    """Their autograd of sum(finite Id) w.r.t. their spring-constant tensors (both in one pass)."""
    if "gamma" not in _CACHE:
        import torch

        try:
            total = torch.nansum(m.apply_disorder())
            wrt = [attribute(m, "gamma_inter"), attribute(m, "gamma_intra")]
            grads = torch.autograd.grad(total, wrt, allow_unused=True, retain_graph=True)
            _CACHE["gamma"] = {"grad_gamma_inter": grads[0], "grad_gamma_intra": grads[1]}
        except Exception as exc:  # both quantities report what their autograd raised
            _CACHE["gamma"] = exc
    got = _CACHE["gamma"]
    if isinstance(got, Exception):
        raise got
    return got


def gamma_gradient(which: str):
    def getter(m, request, rec):
        g = gamma_gradients(m, request)[which]
        if g is None:
            raise ValueError(f"their intensity does not depend on {which[len('grad_'):]} through autograd "
                             f"(torch.autograd.grad returned None)")
        return _np(g).reshape(1)
    return getter


def q_mode(m, request: dict) -> dict:
    """One model of theirs in arbitrary-q mode at [grid q; q sample; q-gradient sample], and its Id.

    Each point's intensity depends on its own q only, so one model serves the three
    quantities (their construction costs minutes).
    """
    if "q" not in _CACHE:
        import torch

        q = attribute(m, "q_grid").detach()
        qs = torch.as_tensor(request["q_sample"], device=q.device)
        qg = torch.as_tensor(request["grad_q_sample"], device=q.device)
        Q = torch.cat([q, q[qs], q[qg]]).clone().requires_grad_(True)
        mq = _model(request, q_vectors=Q)
        _CACHE["q"] = {"Q": Q, "Id": mq.apply_disorder(), "n_q": len(q), "n_s": len(qs), "n_g": len(qg)}
    return _CACHE["q"]


def grad_q(m, request: dict):
    import torch

    got = q_mode(m, request)
    start = got["n_q"] + got["n_s"]
    Id = got["Id"][start:start + got["n_g"]]
    finite = torch.isfinite(Id)
    out = torch.full((got["n_g"], 3), float("nan"), dtype=torch.float64)
    if bool(finite.any()):
        (g,) = torch.autograd.grad(Id[finite].sum(), got["Q"], allow_unused=True, retain_graph=True)
        if g is None:
            raise ValueError("their arbitrary-q intensity does not depend on q through autograd")
        rows = g[start:start + got["n_g"]].detach().cpu()
        out = torch.where(finite.cpu()[:, None], rows, out)
    return out


def id_q_sample(m, request):
    got = q_mode(m, request)
    return got["Id"][got["n_q"]:got["n_q"] + got["n_s"]]


GETTERS = {
    **SHARED_GETTERS,
    "kvec": lambda m, r, rec: per_bz(m, r, "kvec", "(n_bz, 3)", attribute(m, "kvec"), (3,)),
    "kvec_norm": lambda m, r, rec: per_bz(m, r, "kvec_norm", "(n_bz, 1)", attribute(m, "kvec_norm"), (1,)),
    "bz_index": lambda m, r, rec: bz_index(m, r),
    "form_factors": lambda m, r, rec: form_factors(m, r),
    "structure_factors": lambda m, r, rec: structure_factors_sample(m, r),
    "F_hkl": lambda m, r, rec: F_hkl(m, r),
    "K": lambda m, r, rec: recorded_K(m, r, rec, "K", "K(k)"),
    "Kinv": lambda m, r, rec: recorded_K(m, r, rec, "Kinv", "Kinv(k)"),
    "D": lambda m, r, rec: recorded_eigh(m, r, rec, 0),
    "U": lambda m, r, rec: recorded_eigh(m, r, rec, 1),
    "Winv": lambda m, r, rec: per_bz(m, r, "Winv", "(n_bz, n_dof)", real_checked(attribute(m, "Winv"), "Winv"),
                                     (n_dof(m),)),
    "V": lambda m, r, rec: per_bz(m, r, "V", "(n_bz, n_dof, n_dof)", attribute(m, "V"), (n_dof(m), n_dof(m))),
    "Id_qvectors": lambda m, r, rec: q_mode(m, r)["Id"][:q_mode(m, r)["n_q"]],
    "Id_q_sample": lambda m, r, rec: id_q_sample(m, r),
    "grad_gamma_inter": gamma_gradient("grad_gamma_inter"),
    "grad_gamma_intra": gamma_gradient("grad_gamma_intra"),
    "grad_q": lambda m, r, rec: grad_q(m, r),
}

if __name__ == "__main__":
    sys.exit(serve(sys.argv, package="eryx", construct=construct, getters=GETTERS, steps=STEPS, setup=setup,
                   libraries=("numpy", "scipy", "gemmi", "torch"), probes=probes))
