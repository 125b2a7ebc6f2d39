"""Re-measure issue 20's gradient table: forward, forward + backward, d Id / d q, peak memory.

Usage (from the repository root, fixtures under $ERYX_FIXTURES_DIR)::

    python benchmarks/gradients.py                       # 5zck_p1, standard grid, float64
    python benchmarks/gradients.py --pdb 193l --grid -2,2,2 --dtype float32
    python benchmarks/gradients.py --engine autograd     # the plain-autograd reference path

Times are medians of ``--repeat`` warm runs made in ONE process with the contenders
interleaved (forward, forward+backward, q-vector forward, q-vector gradient), so their
ratios are meaningful on a shared machine; the load average is printed with them.
Peak memory is measured in fresh child processes (one per contender: peak RSS over the
RSS after imports and model construction), so each peak is that contender's own.
``--fresh`` also times the first forward + backward in a fresh process (the issue's
"first call" row) at the default thread count and at 1 thread.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time

STANDARD = ((-4, 4, 3), (-17, 17, 3), (-29, 29, 3))


def _grid(text: str):
    if text == "standard":
        return STANDARD
    lo, hi, n = (int(float(v)) for v in text.split(","))
    return ((lo, hi, n),) * 3


def _pdb(name: str) -> str:
    if name == "synthetic" or os.path.exists(name):
        return name
    return os.path.join(os.environ.get("ERYX_FIXTURES_DIR", "."), f"{name}.pdb")


def _setup(args):
    import torch

    import eryx.models_torch as tm

    if args.engine and hasattr(tm, "GRID_GRAD_ENGINE"):
        tm.GRID_GRAD_ENGINE = args.engine
    dtype = getattr(torch, args.dtype)
    grid, pdb = _grid(args.grid), _pdb(args.pdb)

    def model(grad: bool, q=None):
        g = [torch.tensor(v, dtype=dtype, requires_grad=grad) for v in (1.0, 1.0)]
        return tm.OnePhonon(pdb, *grid, gamma_intra=g[0], gamma_inter=g[1], dtype=dtype, q_vectors=q), g

    base, _ = model(False)
    finite = torch.nonzero(torch.isfinite(base.apply_disorder())).reshape(-1)
    sel = finite[torch.linspace(0, len(finite) - 1, min(args.n_q, len(finite))).long()]
    q_sample = base.q_grid[sel].detach()

    def forward():
        with torch.no_grad():
            m, _ = model(False)
            return m.apply_disorder()

    def forward_backward():
        m, g = model(True)
        loss = torch.nansum(m.apply_disorder())
        return torch.autograd.grad(loss, g)

    def q_forward():
        with torch.no_grad():
            m, _ = model(False, q_sample.clone())
            return m.apply_disorder()

    def q_gradient():
        q = q_sample.clone().requires_grad_(True)
        m, _ = model(False, q)
        return torch.autograd.grad(torch.nansum(m.apply_disorder()), q)

    return {"forward": forward, "forward+backward": forward_backward, "q forward": q_forward,
            "q gradient": q_gradient}


def _rss_mb() -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def _child(args) -> None:
    """Peak RSS of one contender over the RSS before its call (fresh process)."""
    fns = _setup(args)
    import gc

    gc.collect()
    before = _rss_mb()
    # ru_maxrss is a high-water mark: reset it by writing to clear_refs where allowed.
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
    except OSError:
        pass
    t0 = time.perf_counter()
    fns[args.child]()
    wall = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    with open("/proc/self/status") as fh:
        hwm = next((int(line.split()[1]) / 1024 for line in fh if line.startswith("VmHWM:")), peak)
    print(json.dumps({"before_mb": before, "peak_mb": hwm, "wall_s": wall}))


def _run_child(args, which: str, threads: int | None = None) -> dict:
    env = dict(os.environ)
    if threads is not None:
        env["OMP_NUM_THREADS"] = str(threads)
    cmd = [sys.executable, __file__, "--child", which, "--pdb", args.pdb, "--grid", args.grid,
           "--dtype", args.dtype, "--n-q", str(args.n_q)] + (["--engine", args.engine] if args.engine else [])
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--pdb", default="5zck_p1")
    p.add_argument("--grid", default="standard", help="'standard' or lo,hi,n for all three axes")
    p.add_argument("--dtype", default="float64", choices=("float64", "float32"))
    p.add_argument("--n-q", type=int, default=10000, help="q-vectors of the d Id / d q row")
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument("--engine", default=None, help="models_torch.GRID_GRAD_ENGINE ('analytic' or 'autograd')")
    p.add_argument("--no-memory", action="store_true")
    p.add_argument("--fresh", action="store_true", help="also time a first call in fresh processes")
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        _child(args)
        return
    import torch

    fns = _setup(args)
    times = {k: [] for k in fns}
    for fn in fns.values():  # warm-up
        fn()
    for _ in range(args.repeat):
        for k, fn in fns.items():  # interleaved
            t0 = time.perf_counter()
            fn()
            times[k].append(time.perf_counter() - t0)
    med = {k: statistics.median(v) for k, v in times.items()}
    print(f"# {args.pdb} grid {args.grid} {args.dtype} engine={args.engine or 'default'} "
          f"threads={torch.get_num_threads()} load={os.getloadavg()[0]:.2f} torch {torch.__version__}")
    print("| contender | median s | vs its forward | peak MiB over start |")
    print("|---|---|---|---|")
    mem = {}
    if not args.no_memory:
        for k in fns:
            r = _run_child(args, k)
            mem[k] = r["peak_mb"] - r["before_mb"]
    for k in fns:
        ref = med["q forward"] if k.startswith("q") else med["forward"]
        m = f"{mem[k]:.0f}" if k in mem else "-"
        print(f"| {k} | {med[k]:.3f} | {med[k] / ref:.2f}x | {m} |")
    if args.fresh:
        for threads in (None, 1):
            r = _run_child(args, "forward+backward", threads)
            print(f"fresh process, forward+backward, OMP_NUM_THREADS={threads or 'default'}: {r['wall_s']:.2f} s")


if __name__ == "__main__":
    main()
