"""d Id / d q against the q-vector forward, both gradient engines interleaved in one process.

    python benchmarks/q_gradient_engines.py            # torch's default thread count
    python benchmarks/q_gradient_engines.py --threads 1

5zck_p1, standard grid, 10,000 finite grid q-vectors (as in docs/performance.md, section 8).
Each line: engine, q forward s, q gradient s, their ratio (construction included in both).
"""
from __future__ import annotations

import argparse
import time

import torch

import eryx.models_torch as tm
from eryx.fixtures import resolve_fixture

GRID = ((-4, 4, 3), (-17, 17, 3), (-29, 29, 3))


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--pdb", default="5zck_p1")
    p.add_argument("--n-q", type=int, default=10_000)
    p.add_argument("--rounds", type=int, default=2)
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    pdb = str(resolve_fixture(args.pdb))
    with torch.no_grad():
        base = tm.OnePhonon(pdb, *GRID)
        finite = torch.nonzero(torch.isfinite(base.apply_disorder())).reshape(-1)
    q0 = base.q_grid[finite[torch.linspace(0, len(finite) - 1, args.n_q).long()]].clone()

    def forward():
        with torch.no_grad():
            return tm.OnePhonon(pdb, *GRID, q_vectors=q0.clone()).apply_disorder()

    def gradient():
        q = q0.clone().requires_grad_(True)
        return torch.autograd.grad(torch.nansum(tm.OnePhonon(pdb, *GRID, q_vectors=q).apply_disorder()), q)

    forward(), gradient()  # warm-up
    print(f"# threads={torch.get_num_threads()}")
    for _ in range(args.rounds):
        for engine in ("analytic", "autograd"):
            tm.GRID_GRAD_ENGINE = engine
            t0 = time.perf_counter()
            forward()
            t1 = time.perf_counter()
            gradient()
            t2 = time.perf_counter()
            print(f"{engine}: q forward {t1 - t0:.3f} s, q gradient {t2 - t1:.3f} s, ratio {(t2 - t1) / (t1 - t0):.2f}")


if __name__ == "__main__":
    main()
