"""Measured cluster-map differences against their allowance (atol from parity.stages._cluster_terms).

Usage: python tests/benchmarks/cluster_bound.py [FIXTURE ...]; prints, per fixture at unit
springs and at gnm_cutoff 1e9 (gammas 0.5), each cluster map's normwise torch-vs-NumPy
difference, its allowance (atol) and the ratio.
"""
import subprocess
import sys
import json
import tempfile

fixtures = sys.argv[1:] or ["synthetic", "synth_trigonal", "synth_triclinic", "5zck_p1", "7n2h"]
for fx in fixtures:
    for extra in ([], ["--gnm-cutoff", "1e9", "--gamma-intra", "0.5", "--gamma-inter", "0.5"]):
        with tempfile.NamedTemporaryFile(suffix=".json") as f:
            subprocess.run(["parity", "run", "--fixture", fx, "--stages", "Id_cluster0,Id_cluster_last",
                            "--no-progress", "--json", f.name] + extra, capture_output=True)
            try:
                stages = json.load(open(f.name))["stages"]
            except (ValueError, KeyError):
                print(fx, extra[1:2], "refused or failed to run", flush=True)
                continue
        for s in stages:
            print(f"{fx:16s} {'1e9' if extra else 'unit':5s} {s['name']:16s} {s['status']:5s} "
                  f"normwise {s['max_rel']:.3g}  atol {s['atol']:.3g}  ratio {s['max_rel'] / s['atol']:.3g}",
                  flush=True)
