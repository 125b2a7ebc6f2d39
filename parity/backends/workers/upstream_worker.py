"""Worker of the ``upstream-eryx`` adapter: apeck12/eryx's ``eryx.models.OnePhonon`` in its own process.

Run as ``python upstream_worker.py request.json outdir`` by
``parity.backends.upstream``; standalone (the standard library, NumPy, gemmi and their
code), it never imports eryx-parity. See ``worker_common`` for the protocol and
``docs/adapters.md`` for every mapping below (contract quantity <- their expression).

Shims (run-time only, none touches their numerics):

- ``gemmi.UnitCell.fractionalization_matrix``: gemmi 0.7 removed it; the same matrix is
  ``cell.frac.mat`` (given as a property when missing);
- ``n_processes=1`` to their constructor: otherwise their structure factors start a
  ``multiprocess`` pool of 8 processes per call.
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from worker_common import (SHARED_GETTERS, STEPS, Recorder, attribute, expect_shape, n_dof,  # noqa: E402
                           real_checked, serve)

def setup(request: dict, rec: Recorder) -> dict:
    """Apply the shims and install the recorders (after their package is pinned)."""
    shims = []
    try:
        import gemmi
    except ImportError:  # their code will say so at its own import
        gemmi = None
    if gemmi is not None and not hasattr(gemmi.UnitCell, "fractionalization_matrix"):
        gemmi.UnitCell.fractionalization_matrix = property(lambda cell: cell.frac.mat)
        shims.append("gemmi.UnitCell.fractionalization_matrix = cell.frac.mat")
    from eryx import models

    pdb = sys.modules.get("eryx.pdb")
    one = models.OnePhonon
    rec.track(one, "compute_gnm_phonons")
    rec.track(one, "compute_covariance_matrix")
    first = lambda a, k, r: r  # noqa: E731  (their arrays are not modified after they return)
    rec.record(one, "compute_hessian", "hessian", first)
    gnm = getattr(pdb, "GaussianNetworkModel", None) if pdb is not None else None
    if gnm is None:
        rec.missing.update({k: "their code has no eryx.pdb.GaussianNetworkModel"
                            for k in ("hessian_allatoms", "K", "Kinv")})
    else:
        rec.record(gnm, "compute_hessian", "hessian_allatoms", first)
        rec.record(gnm, "compute_K", "K", lambda a, k, r: np.array(r), within="compute_gnm_phonons")
        rec.record(gnm, "compute_Kinv", "Kinv", lambda a, k, r: np.array(r), within="compute_covariance_matrix")
    # The SVD their phonon loop takes: its input is their D, its vectors their U.
    rec.record(np.linalg, "svd", "svd", lambda a, k, r: (np.array(a[0]), np.array(r[0])),
               within="compute_gnm_phonons")
    return {"shims": shims + ["n_processes=1"], "version": None, "device": "cpu", "dtype": "float64"}


def probes(request: dict, rec: Recorder, sink) -> None:
    """Probe A per atom: the ``np.hstack([Adiag, Atmp])`` their ``_build_A`` loop calls once per
    (ASU, atom), i.e. the A block of that iteration, exactly as their buffer holds it."""
    from eryx import models

    rec.track(models.OnePhonon, "_build_A")
    calls: list = []
    sink.on_calls(rec, np, "hstack", "_build_A", lambda s, n, a, r, where: calls.append((n, r, where)))

    def finish(m) -> None:  # call n of the loop is (asu, atom) = divmod(n, atoms per ASU)
        n_at = int(attribute(m, "n_atoms_per_asu"))
        for n, block, where in calls:
            sink.emit("A_block", block, {"asu": n // n_at, "atom": n % n_at}, where)
    sink.finishers.append(finish)


def construct(request: dict, rec: Recorder):
    from eryx.models import OnePhonon

    p = request["params"]
    h, k, l = (tuple(int(v) for v in s) for s in request["samplings"])
    return OnePhonon(request["pdb_path"], h, k, l, expand_p1=bool(p["expand_p1"]), group_by="asu",
                     res_limit=float(p["res_limit"]), model="gnm", gnm_cutoff=float(p["gnm_cutoff"]),
                     gamma_intra=float(p["gamma_intra"]), gamma_inter=float(p["gamma_inter"]), n_processes=1)


# ------------------------------------------------------------------- mapping
def n_bz(request: dict) -> int:
    return int(np.prod([s[2] for s in request["samplings"]]))


def square(c, n_asu: int, what: str) -> np.ndarray:
    """One of their per-BZ-point matrices as (n_dof, n_dof): from (n_asu, 6, n_asu, 6) as their own code reshapes."""
    c = np.asarray(c)
    size = 6 * n_asu
    if c.shape == (n_asu, 6, n_asu, 6):
        return c.reshape(size, size)
    return expect_shape(c, (size, size), what, "(n_dof, n_dof)")


def per_bz(rec: Recorder, key: str, what: str, request: dict, m) -> np.ndarray:
    """Their per-BZ-point matrices, in their loop order (dh, dk, dl nested: C order), (n_bz, n_dof, n_dof)."""
    calls = rec.get(key, what)
    n = n_bz(request)
    if len(calls) != n:
        raise ValueError(f"their code computed {what} {len(calls)} times during construction; the grid has "
                         f"{n} BZ points")
    return np.stack([square(c, int(attribute(m, "n_asu")), what) for c in calls])


def bz_index(m, request: dict) -> np.ndarray:
    """Their grid-point -> BZ-point mapping, from their own ``_at_kvec_from_miller_points``."""
    L = tuple(s[2] for s in request["samplings"])
    out = np.full(int(np.prod(attribute(m, "map_shape"))), -1, dtype=np.int64)
    for flat, bz in enumerate(np.ndindex(*L)):
        out[np.asarray(m._at_kvec_from_miller_points(bz))] = flat
    return out


def structure_factors_sample(m, request: dict) -> np.ndarray:
    """F at the q sample exactly as their ``apply_disorder(use_data_adp=True)`` builds it, ASUs side by side."""
    from eryx.scatter import structure_factors

    q = attribute(m, "q_grid")[np.asarray(request["q_sample"], dtype=int)]
    model = attribute(m, "model")
    adp = model.adp[0] / (8 * np.pi * np.pi)
    blocks = [structure_factors(q, model.xyz[i], model.ff_a[i], model.ff_b[i], model.ff_c[i], U=adp,
                                batch_size=m.batch_size, n_processes=m.n_processes, compute_qF=True,
                                project_on_components=m.Amat[i], sum_over_atoms=False) for i in range(m.n_asu)]
    return np.concatenate(blocks, axis=1)


def F_hkl(m, request: dict) -> np.ndarray:
    """Their structure factors of every atom at the oracle's reflections, U = 0 (their q = 2 pi A_inv^T hkl)."""
    from eryx.scatter import structure_factors

    model = attribute(m, "model")
    hkl = np.asarray(request["oracle_hkl"], dtype=float)
    q = 2 * np.pi * np.inner(model.A_inv.T, hkl).T
    return structure_factors(q, model.xyz.reshape(-1, 3), model.ff_a.reshape(-1, 4), model.ff_b.reshape(-1, 4),
                             model.ff_c.reshape(-1), U=None, n_processes=1)


def form_factors(m, request: dict) -> np.ndarray:
    from eryx.scatter import compute_form_factors

    model = attribute(m, "model")
    q = attribute(m, "q_grid")[np.asarray(request["q_sample"], dtype=int)]
    return compute_form_factors(q, model.ff_a[0], model.ff_b[0], model.ff_c[0])


def svd_part(index: int):
    def getter(m, request, rec):
        calls = rec.get("svd", "their SVD of D")
        n, size = n_bz(request), n_dof(m)
        if len(calls) != n:
            raise ValueError(f"their phonon loop took {len(calls)} SVDs; the grid has {n} BZ points")
        # U: their singular vectors in the order their code uses them (reversed: w ascending).
        return np.stack([expect_shape(c[0], (size, size), "D", "(n_dof, n_dof)") if index == 0
                         else expect_shape(c[1], (size, size), "U", "(n_dof, n_dof)")[:, ::-1] for c in calls])
    return getter


GETTERS = {
    **SHARED_GETTERS,
    "kvec": lambda m, r, rec: attribute(m, "kvec"),
    "kvec_norm": lambda m, r, rec: attribute(m, "kvec_norm"),
    "bz_index": lambda m, r, rec: bz_index(m, r),
    "form_factors": lambda m, r, rec: form_factors(m, r),
    "structure_factors": lambda m, r, rec: structure_factors_sample(m, r),
    "F_hkl": lambda m, r, rec: F_hkl(m, r),
    "K": lambda m, r, rec: per_bz(rec, "K", "K(k)", r, m),
    "Kinv": lambda m, r, rec: per_bz(rec, "Kinv", "Kinv(k)", r, m),
    "D": svd_part(0),
    "U": svd_part(1),
    "Winv": lambda m, r, rec: real_checked(attribute(m, "Winv"), "Winv"),
    "V": lambda m, r, rec: attribute(m, "V"),
}

if __name__ == "__main__":
    sys.exit(serve(sys.argv, package="eryx", construct=construct, getters=GETTERS, steps=STEPS, setup=setup,
                   libraries=("numpy", "scipy", "gemmi"), probes=probes))
