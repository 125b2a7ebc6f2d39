"""Eigenvector conditioning of the cluster maps (docs/hostile-input.md): max over BZ points of lambda_max / gap.

Usage: python tests/benchmarks/cluster_conditioning.py FIXTURE (prints it at unit springs and at gnm_cutoff 1e9).
"""
import sys
import numpy as np
from parity.runner import make_run
from parity.compare import cluster_eigenvalues
for params in ({}, {"gnm_cutoff": 1e9, "gamma_intra": 0.5, "gamma_inter": 0.5}):
    run = make_run(sys.argv[1], params=params, candidate="numpy")
    W = run.reference_value("Winv"); n = W.shape[-1]; W = W.reshape(-1, n)
    out = []
    for rank in (0, min(7, n - 1)):
        kap = 0
        for b in range(W.shape[0]):
            with np.errstate(divide="ignore"):
                lam = np.where(np.isfinite(W[b]) & (W[b] != 0), 1 / W[b], 0.0)
            cl = next(c for c in cluster_eigenvalues(W[b], rel_gap=1e-6) if rank in c)
            others = np.delete(lam, cl)
            gap = np.min(np.abs(others[:, None] - lam[cl][None, :])) if len(others) else np.inf
            kap = max(kap, np.abs(lam).max() / gap)
        out.append(kap)
    print(params, "kappa rank0 %.3g  rank_last %.3g" % tuple(out), flush=True)
