"""Hit rate of ``parity locate`` (probes) over killed mutants of the torch backend.

``python -m parity.mutation.locate_hits --sample 40 --seed 0`` takes the mutants the mutation
campaign killed (``reports/mutation/results.json``, docs/mutation.md) that still exist in
today's sources, samples them, and for each one, in a forked child (the mutant is exec'd
into the live module there only, as ``parity.mutation`` does), runs ``parity locate`` on
5zck_p1 with the run's first failing stage. A **hit**: the root probe named is one that
the mutated function computes (:data:`PRODUCERS`: the probes downstream of each function
of the torch backend, in the order the model calls them, the nearest first). Results go
to ``reports/locate/mutants.json``.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

#: Function of the torch backend -> the probes whose value it computes (directly or as the
#: model's next probed step). A root probe in this set is a hit.
PRODUCERS: dict[str, set[str]] = {
    "linspace": {"q_grid", "bz_index"}, "generate_grid": {"q_grid"}, "q_from_hkl": {"q_grid"},
    "center_index": {"kvec"}, "bz_fractions": {"kvec"}, "build_kvec": {"kvec"}, "grid_bz_index": {"bz_index"},
    "build_A": {"A_block"}, "build_Mmat": {"Mmat_block"}, "build_Linv": {"cholesky", "Linv"},
    "hessian_unit_blocks": {"hessian_block"}, "combine_hessian": {"hessian_block"}, "build_K": {"K"},
    "expi": {"K", "covar_sum", "Id"}, "dynamical_matrix": {"D"}, "phonons": {"Winv", "V_Winv_VH"},
    "zero_mode_cutoff": {"Winv", "V_Winv_VH"}, "mass_weighted_modes": {"V_Winv_VH"}, "pinv_hermitian": {"Kinv"},
    "covariance": {"covar_sum"}, "adp_scaled": {"ADP", "covar"}, "_setup_grid": {"q_grid", "kvec", "bz_index"},
    "_setup_matrices": {"A_block", "Mmat_block", "Linv"}, "_setup_hessian": {"hessian_block"},
    "_setup_phonons": {"K", "D", "Winv", "V_Winv_VH", "Kinv", "covar_sum", "ADP", "covar"},
}
#: Map-stage functions: their only probe is the map itself.
MAP_FUNCTIONS = ("structure_factors", "form_factor", "atomic_amplitudes", "projection_operators", "amat_low_rank",
                 "axis_phase_table", "fractional_coordinates", "intensity", "hermitian_inverse_factor", "_map",
                 "_grid", "_points", "_bz_table", "apply_disorder", "debye_waller_U", "_unique_rows",
                 "_direct_chunk", "_full_rank_inverse", "mode_maps",
                 # the map engine (eryx/mapengine_torch.py, moved out of models_torch.OnePhonon)
                 "points", "bz_table", "evaluate_map", "grid_", "direct_chunk", "full_rank_inverse", "run_units",
                 "parallel_units")


def expected(function: str) -> set[str]:
    name = function.split(".")[-1]
    if name in PRODUCERS:
        return PRODUCERS[name]
    if any(name.startswith(m) or m in name for m in MAP_FUNCTIONS):
        return {"Id"}
    return set()


def _child(mutant, out_path: str) -> None:
    rc = 3
    try:
        fd = os.open(os.devnull, os.O_WRONLY)
        os.dup2(fd, 1), os.dup2(fd, 2)
        import torch

        torch.set_num_threads(1)
        from parity.mutation.generate import apply_mutant

        apply_mutant(mutant)
        from parity.locate.run import locate_probes
        from parity.running.runner import make_run

        res = locate_probes(make_run("5zck_p1", build=False))
        root = res.probes.root if res.probes else None
        Path(out_path).write_text(json.dumps({"stage": res.stage, "root": root.key if root else None,
                                              "first_bad": root.first_bad if root else None,
                                              "where": root.where_candidate if root else None,
                                              "raised": res.raised}))
        rc = 0
    except BaseException as exc:  # noqa: BLE001 -- the child reports, never raises
        Path(out_path).write_text(json.dumps({"error": f"{type(exc).__name__}: {exc}"}))
        rc = 1
    finally:
        os._exit(rc)


def main(argv=None) -> int:
    from parity.mutation.execute import wait_child
    from parity.mutation.generate import all_mutants

    p = argparse.ArgumentParser(prog="python -m parity.mutation.locate_hits")
    p.add_argument("--results", default=str(ROOT / "reports" / "mutation" / "results.json"))
    p.add_argument("--sample", type=int, default=40)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--timeout", type=float, default=120.0)
    p.add_argument("--json", default=str(ROOT / "reports" / "locate" / "mutants.json"))
    args = p.parse_args(argv)
    killed = {k for k, v in json.loads(Path(args.results).read_text())["mutants"].items() if v["status"] == "killed"}
    current = [m for m in all_mutants() if m.id in killed]
    sample = random.Random(args.seed).sample(current, min(args.sample, len(current)))
    rows, t0 = [], time.perf_counter()
    for m in sample:
        fd, out = tempfile.mkstemp(suffix=".json")
        os.close(fd)
        started = time.perf_counter()
        pid = os.fork()
        if pid == 0:
            _child(m, out)
        rc, timed_out = wait_child(pid, args.timeout, started)
        try:
            got = json.loads(Path(out).read_text() or "{}")
        except ValueError:
            got = {}
        os.unlink(out)
        want = expected(m.function)
        root = got.get("root")
        raised_in = (got.get("raised") or "").split(": ")[0].split(" in ")[-1]
        if got.get("raised") and raised_in == m.function.split(".")[-1]:
            status = "hit (raised)"  # the candidate raised inside the mutated function: its line is the root
        else:
            status = ("timeout" if timed_out else "error" if "error" in got else "no probe covers it" if not want
                      else "hit" if root in want else "miss")
        rows.append({"id": m.id, "file": m.file, "line": m.line, "function": m.function, "operator": m.operator,
                     "change": f"{m.original} -> {m.mutated}", "expected": sorted(want), **got, "status": status,
                     "seconds": time.perf_counter() - started})
        print(f"{status:20s} {m.id} {m.function:28s} root={got.get('first_bad') or root} stage={got.get('stage')} "
              f"raised={(got.get('raised') or '')[:80]}", flush=True)
    judged = [r for r in rows if r["status"] in ("hit", "hit (raised)", "miss")]
    summary = {"sampled": len(rows), "killed_and_current": len(current), "seed": args.seed,
               "hits": sum(r["status"].startswith("hit") for r in rows),
               "hits_raised": sum(r["status"] == "hit (raised)" for r in rows),
               "misses": sum(r["status"] == "miss" for r in rows),
               "uncovered": sum(r["status"] == "no probe covers it" for r in rows),
               "errors": sum(r["status"] in ("error", "timeout") for r in rows),
               "hit_rate": (sum(r["status"].startswith("hit") for r in judged) / len(judged)) if judged else None,
               "seconds": time.perf_counter() - t0}
    print(json.dumps(summary, indent=1))
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps({"summary": summary, "mutants": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
