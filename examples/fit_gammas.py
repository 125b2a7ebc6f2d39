"""Fit the spring constants (and an overall scale) of the torch OnePhonon model to a map.

The purpose of the torch port: gradient-based fitting. This example simulates a diffuse
map at known ``gamma_intra``, ``gamma_inter`` and scale, adds Gaussian noise, and
recovers the parameters with ``torch.optim.LBFGS`` on log-parameters (positive by
construction), each step one forward and one backward pass of the full map.

**What a map can tell.** K is linear in the two spring constants and the model's ADPs
are rescaled to the file's B factors, so scaling both gammas by t divides the map by t:
``s Id(gi, ge) = (s / ge) Id(gi / ge, 1)``. With a free overall scale, only the ratio
``gi / ge`` and ``s / ge`` are determined by the data (any other "recovery" of all three
would be the optimiser's starting point talking). So:

* ``--scale known`` (default): the scale is the simulated one; fits both gammas.
* ``--scale free``: fits ``gi / ge`` and the scale with ``ge`` held at its true value
  (equivalently: the ratio and ``s / ge``).

Usage::

    python examples/fit_gammas.py                                  # built-in synthetic crystal
    python examples/fit_gammas.py --pdb 5zck_p1 --grid default     # needs $ERYX_FIXTURES_DIR
    python examples/fit_gammas.py --scale free --figure fit.png

Prints the loss and the parameters at every step, the loss curve, and writes a figure
(loss curve, simulated vs fitted map along a line of the grid).
"""
from __future__ import annotations

import argparse
import math
import sys
import time
from dataclasses import dataclass, field

import numpy as np
import torch

from eryx.fixtures import resolve_fixture
from eryx.models_torch import OnePhonon

SMALL_GRID = ((-2, 2, 2), (-2, 2, 2), (-2, 2, 3))
STANDARD_GRID = ((-4, 4, 3), (-17, 17, 3), (-29, 29, 3))


@dataclass
class FitResult:
    """Fitted parameters, the loss after every optimiser step and the maps."""

    gamma_intra: float
    gamma_inter: float
    scale: float
    losses: list[float] = field(default_factory=list)
    evaluations: int = 0
    seconds: float = 0.0
    target: np.ndarray | None = None
    fitted: np.ndarray | None = None


def grid_of(name: str, pdb: str):
    """'small', 'standard', 'default' (the harness's grid for the fixture) or 'lo,hi,n'."""
    if name == "small":
        return SMALL_GRID
    if name == "standard":
        return STANDARD_GRID
    if name == "default":
        from parity.contract.spec import default_grid

        return default_grid(pdb)
    lo, hi, n = (int(v) for v in name.split(","))
    return ((lo, hi, n),) * 3


def simulate(pdb: str, grid, gamma_intra: float, gamma_inter: float, scale: float, noise: float,
             seed: int = 0) -> torch.Tensor:
    """scale * Id(gamma_intra, gamma_inter) with relative Gaussian noise, (n_q,); NaN kept."""
    with torch.no_grad():
        Id = OnePhonon(pdb, *grid, gamma_intra=gamma_intra, gamma_inter=gamma_inter).apply_disorder()
    gen = torch.Generator().manual_seed(seed)
    return scale * Id * (1 + noise * torch.randn(Id.shape, generator=gen, dtype=Id.dtype))


def fit(pdb: str, grid, target: torch.Tensor, *, init=(1.0, 1.0, 1.0), fixed: dict | None = None,
        max_steps: int = 30, tol: float = 1e-8, log=print) -> FitResult:
    """Least squares (relative to |target|^2) over the finite points, LBFGS on log-parameters.

    Parameters
    ----------
    target : (n_q,) map, NaN where undefined
    init : starting (gamma_intra, gamma_inter, scale)
    fixed : {"gamma_inter": v} or {"scale": v}: parameters held at a value (see the
        module docstring for why a free scale needs one gamma held)
    """
    fixed = dict(fixed or {})
    names = ("gamma_intra", "gamma_inter", "scale")
    logs = {n: torch.tensor(math.log(fixed.get(n, v)), dtype=torch.float64, requires_grad=n not in fixed)
            for n, v in zip(names, init)}
    free = [logs[n] for n in names if n not in fixed]
    finite = torch.isfinite(target)
    t = target[finite]
    norm = torch.sum(t * t)
    result = FitResult(*init)
    # A few LBFGS iterations per step, so that the printed loss curve shows the progress.
    opt = torch.optim.LBFGS(free, lr=1.0, max_iter=4, max_eval=16, tolerance_grad=1e-12, tolerance_change=1e-14,
                            line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        p = {n: torch.exp(v) for n, v in logs.items()}
        model = OnePhonon(pdb, *grid, gamma_intra=p["gamma_intra"], gamma_inter=p["gamma_inter"])
        loss = torch.sum((p["scale"] * model.apply_disorder()[finite] - t) ** 2) / norm
        loss.backward()
        result.evaluations += 1
        return loss

    t0 = time.perf_counter()
    previous = math.inf
    for step in range(max_steps):
        loss = float(opt.step(closure).detach())  # the loss at the start of this step
        p = {n: math.exp(float(v.detach())) for n, v in logs.items()}
        result.losses.append(loss)
        log(f"step {step:2d}  loss {loss:.6e}  gamma_intra {p['gamma_intra']:.6f}  "
            f"gamma_inter {p['gamma_inter']:.6f}  scale {p['scale']:.6f}  ({result.evaluations} evaluations, "
            f"{time.perf_counter() - t0:.1f} s)")
        if abs(previous - loss) <= tol * max(loss, 1e-300):
            break
        previous = loss
    with torch.no_grad():
        result.losses.append(float(closure_value(logs, pdb, grid, finite, t, norm)))
    result.seconds = time.perf_counter() - t0
    result.gamma_intra, result.gamma_inter, result.scale = (p[n] for n in names)
    with torch.no_grad():
        model = OnePhonon(pdb, *grid, gamma_intra=result.gamma_intra, gamma_inter=result.gamma_inter)
        result.fitted = (result.scale * model.apply_disorder()).numpy()
    result.target = target.numpy()
    return result


def closure_value(logs: dict, pdb: str, grid, finite, t, norm) -> float:
    """The loss at the current parameters (no gradient): the curve's last point."""
    p = {n: torch.exp(v) for n, v in logs.items()}
    model = OnePhonon(pdb, *grid, gamma_intra=p["gamma_intra"], gamma_inter=p["gamma_inter"])
    return float(torch.sum((p["scale"] * model.apply_disorder()[finite] - t) ** 2) / norm)


def figure(result: FitResult, grid, path: str) -> None:
    """Loss curve and the simulated vs fitted map along the central line of the grid."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shape = tuple(int(n * (hi - lo) + 1) for lo, hi, n in grid)
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 4))
    a.semilogy(range(len(result.losses)), result.losses, "o-")
    a.set_xlabel("LBFGS step")
    a.set_ylabel("relative squared residual")
    a.set_title("loss")
    line = (shape[0] // 2, shape[1] // 2)
    b.plot(result.target.reshape(shape)[line], ".", label="simulated + noise")
    b.plot(result.fitted.reshape(shape)[line], "-", label="fitted")
    b.set_xlabel("l index (h, k at the grid centre)")
    b.set_ylabel("intensity")
    b.legend()
    fig.suptitle(f"gamma_intra {result.gamma_intra:.4f}, gamma_inter {result.gamma_inter:.4f}, "
                 f"scale {result.scale:.4f}")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--pdb", default="synthetic", help="fixture name or PDB path (default: built-in synthetic)")
    p.add_argument("--grid", default="small", help="small, standard, default (the harness's) or lo,hi,n")
    p.add_argument("--true", default="1.6,0.6,2.5", help="simulated gamma_intra,gamma_inter,scale")
    p.add_argument("--init", default="1.0,1.0,1.0", help="starting gamma_intra,gamma_inter,scale")
    p.add_argument("--noise", type=float, default=0.02, help="relative Gaussian noise (default 0.02)")
    p.add_argument("--scale", choices=("known", "free"), default="known")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    p.add_argument("--figure", default="fit_gammas.png")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    pdb = str(resolve_fixture(args.pdb))
    grid = grid_of(args.grid, args.pdb)
    gi, ge, s = (float(v) for v in args.true.split(","))
    init = tuple(float(v) for v in args.init.split(","))
    target = simulate(pdb, grid, gi, ge, s, args.noise)
    fixed = {"scale": s} if args.scale == "known" else {"gamma_inter": ge}
    print(f"{args.pdb}, grid {grid}: {int(torch.isfinite(target).sum())} finite points; "
          f"true gamma_intra {gi}, gamma_inter {ge}, scale {s}; noise {args.noise:.1%}; held: {fixed}")
    result = fit(pdb, grid, target, init=init, fixed=fixed)
    print("loss curve:", " ".join(f"{v:.3e}" for v in result.losses))
    print(f"fitted gamma_intra {result.gamma_intra:.5f} (true {gi}), gamma_inter {result.gamma_inter:.5f} "
          f"(true {ge}), scale {result.scale:.5f} (true {s}); {result.evaluations} forward+backward passes, "
          f"{result.seconds:.1f} s")
    figure(result, grid, args.figure)
    print(f"figure: {args.figure}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
