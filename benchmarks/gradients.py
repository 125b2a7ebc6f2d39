"""Re-measure issue 20's gradient table: forward, forward + backward, d Id / d q, peak memory.

Usage (from the repository root, fixtures under $ERYX_FIXTURES_DIR)::

    python benchmarks/gradients.py                       # 5zck_p1, standard grid, float64
    python benchmarks/gradients.py --pdb 193l --grid='-10,10,2;-10,10,2;-6,6,2' --dtype float32
    python benchmarks/gradients.py --engine autograd     # the plain-autograd path (the "before")
    python benchmarks/gradients.py --fresh               # + a first call in fresh processes

The contenders and the method are :mod:`parity.benchmarking.gradients`'s (what ``parity bench``
and ``parity nightly`` record): medians of ``--repeat`` warm runs in ONE process with
the contenders interleaved (ratios meaningful on a shared machine; the load average is
printed), peak memory of each contender in a fresh process. ``--engine`` sets
``eryx.models_torch.GRID_GRAD_ENGINE`` here and in the child processes (through
``ERYX_GRID_GRAD_ENGINE``, read by this script's children only).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

STANDARD = ((-4, 4, 3), (-17, 17, 3), (-29, 29, 3))


def _grid(text: str):
    """'standard', 'lo,hi,n' for all three axes, or 'h;k;l' triples ('-10,10,2;-10,10,2;-6,6,2')."""
    if text == "standard":
        return STANDARD
    axes = [tuple(int(float(v)) for v in part.split(",")) for part in text.split(";")]
    return tuple(axes) if len(axes) == 3 else (axes[0],) * 3


def _engine(name: str | None) -> None:
    if name:
        import eryx.models_torch as tm

        tm.GRID_GRAD_ENGINE = name


def _fresh(args, threads: int | None) -> float:
    """Wall time of the first forward + backward in a fresh process."""
    env = dict(os.environ)
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    code = ("import sys, json; sys.path.insert(0, %r); import gradients as g; g._fresh_child(json.loads(sys.argv[1]))"
            % os.path.dirname(os.path.abspath(__file__)))
    spec = {"pdb": args.pdb, "grid": args.grid, "dtype": args.dtype, "engine": args.engine}
    out = subprocess.run([sys.executable, "-c", code, json.dumps(spec)], capture_output=True, text=True, env=env,
                         check=True)
    return float(out.stdout.strip().splitlines()[-1])


def _fresh_child(spec: dict) -> None:
    import time

    from eryx.fixtures import resolve_fixture
    from parity.benchmarking.gradients import gradient_callables

    _engine(spec["engine"])
    fns = gradient_callables(str(resolve_fixture(spec["pdb"])), _grid(spec["grid"]), spec["dtype"], n_q=1)
    t0 = time.perf_counter()
    fns["forward+backward"]()
    print(time.perf_counter() - t0)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--pdb", default="5zck_p1")
    p.add_argument("--grid", default="standard", help="'standard' or lo,hi,n for all three axes")
    p.add_argument("--dtype", default="float64", choices=("float64", "float32"))
    p.add_argument("--n-q", type=int, default=10000, help="q-vectors of the d Id / d q row")
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--engine", default=None, help="models_torch.GRID_GRAD_ENGINE ('analytic' or 'autograd')")
    p.add_argument("--no-memory", action="store_true")
    p.add_argument("--fresh", action="store_true", help="also time a first call in fresh processes")
    args = p.parse_args(argv)
    import torch

    from parity.benchmarking import gradients as bg

    _engine(args.engine)
    if args.engine:  # the peak-memory children must run the same engine
        os.environ["ERYX_GRID_GRAD_ENGINE"] = args.engine
    rec = bg.measure_gradients(args.pdb, _grid(args.grid), args.dtype, repeats=args.repeat,
                               memory=not args.no_memory, n_q=args.n_q)
    med, peak = rec["median_s"], rec.get("peak_mb") or {}
    print(f"# {args.pdb} grid {args.grid} {args.dtype} engine={args.engine or 'default'} "
          f"threads={torch.get_num_threads()} load={rec['load_avg_start']:.2f}-{rec['load_avg_end']:.2f} "
          f"torch {torch.__version__}")
    print("| contender | median s | vs its forward | peak MiB over start |")
    print("|---|---|---|---|")
    for k in bg.CONTENDERS:
        ref = med["q forward"] if k.startswith("q") else med["forward"]
        m = f"{peak[k]:.0f}" if peak.get(k) is not None else "-"
        print(f"| {k} | {med[k]:.3f} | {med[k] / ref:.2f}x | {m} |")
    if args.fresh:
        for threads in (None, 1):
            print(f"fresh process, first forward+backward, OMP_NUM_THREADS={threads or 'default'}: "
                  f"{_fresh(args, threads):.2f} s")


if __name__ == "__main__":
    main()
