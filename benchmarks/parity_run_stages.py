"""Per-stage wall seconds of parity runs from their --json files (docs/performance.md, 8).

    python benchmarks/parity_run_stages.py OUTDIR/*.json

One line per file: the run's verdict, its stages of 1 s or more (largest first), the rest
summed, and the stage durations' total.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path


def summary(path: Path, floor: float = 1.0) -> str:
    """One line: verdict, stages >= ``floor`` seconds, the rest summed, the total."""
    run = json.loads(path.read_text())
    times = sorted(((s.get("duration_s") or 0.0, s["name"]) for s in run["stages"]), reverse=True)
    big = ", ".join(f"{name} {t:.1f}" for t, name in times if t >= floor)
    rest = sum(t for t, _ in times if t < floor)
    total = sum(t for t, _ in times)
    return (f"{path.stem}: {run['verdict']}, {len(times)} stages | {big} | "
            f"others {rest:.1f} | stages total {total:.1f} s")


if __name__ == "__main__":
    for arg in sys.argv[1:]:
        print(summary(Path(arg)))
