"""The measurements behind docs/locate.md (``python -m parity.locate.experiments NAME``).

- ``float32``: trace the torch model (construction and the full map) in float64 and in
  float32 on a fixture, name the amplifiers, run those operations in float64
  (:class:`~parity.locate.trace.PromoteOps`) and measure the float32 map's error before
  and after;
- ``overhead``: the cost of the probe calls when nothing listens, in one process,
  interleaved with a run where ``probe`` is replaced by a bare identity;
- ``trace-time``: seconds to trace one stage on the default grid and on a standard grid.

Each writes JSON to ``reports/locate/`` and prints a summary. Timings are noisy on a
shared machine: ratios are measured in one process with the contenders interleaved.
"""
from __future__ import annotations

import json
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

OUT = Path(__file__).resolve().parents[2] / "reports" / "locate"


def _session(spec, dtype: str):
    from parity.backends.eryx_torch import TorchBackend

    s = TorchBackend().open(replace(spec, dtype=dtype, device="cpu"))
    return s


def trace_model(spec, dtype: str, promote=None, quantity: str = "Id"):
    """(OpTrace of building the torch model and computing ``quantity``, its value) in ``dtype``."""
    import contextlib

    import eryx.models_torch as tm

    from parity.locate.trace import OpTrace

    before, tm.GRID_WORKERS = tm.GRID_WORKERS, False
    try:
        with (promote or contextlib.nullcontext()), OpTrace() as tr:
            s = _session(spec, dtype)
            s.build()
            if s.build_error:
                raise s.build_error
            Id = s.get(quantity)
            tr.mark_result(Id)
    finally:
        tm.GRID_WORKERS = before
    return tr, np.asarray(Id.detach().cpu().double().numpy())


def map_error(ref: np.ndarray, x: np.ndarray) -> float:
    fin = np.isfinite(ref) & np.isfinite(x)
    return float(np.max(np.abs(x[fin] - ref[fin])) / np.max(np.abs(ref[fin])))


def float32(fixture: str = "5zck_p1") -> dict:
    from parity.contract.spec import make_spec
    from parity.locate.trace import PromoteOps, amplifier_sites, compare_traces

    spec = make_spec(fixture)
    t0 = time.perf_counter()
    tr64, Id64 = trace_model(spec, "float64")
    tr32, Id32 = trace_model(spec, "float32")
    cmp_ = compare_traces(tr64, tr32, precision=True)
    sites = amplifier_sites(cmp_.amplifiers)
    promote = PromoteOps(sites)
    _, Id32p = trace_model(spec, "float32", promote)
    e0, e1 = map_error(Id64, Id32), map_error(Id64, Id32p)
    # Without a trace, the same promotion (it needs only the mode): the result must not depend on tracing.
    import eryx.models_torch as tm

    s = _session(spec, "float32")
    with PromoteOps(sites) as again:
        s.build()
        before, tm.GRID_WORKERS = tm.GRID_WORKERS, False
        try:
            Id32q = np.asarray(s.get("Id").detach().double().numpy())
        finally:
            tm.GRID_WORKERS = before
    out = {"fixture": fixture, "grid": [list(x) for x in spec.samplings], "n_ops": [cmp_.n_ref, cmp_.n_cand],
           "alignment": cmp_.alignment, "amplify_factor": 100.0,
           "amplifiers": [{"label": a.label, "input_error": a.input_error, "error": a.error,
                           "amplification": a.amplification} for a in cmp_.amplifiers],
           "sites": sorted(f"{op} @ {where}" for op, where in sites), "promoted_calls": promote.hits,
           "map_error_float32": e0, "map_error_promoted": e1, "map_error_promoted_untraced": map_error(Id64, Id32q),
           "factor": e0 / e1 if e1 else float("inf"), "seconds": time.perf_counter() - t0}
    print(cmp_.summary())
    print(f"float32 map error {e0:.3g}; with the {len(sites)} amplifier sites in float64 ({promote.hits} calls): "
          f"{e1:.3g} (x{out['factor']:.3g} lower); untraced run with the same promotion: "
          f"{out['map_error_promoted_untraced']:.3g}")
    return out


def overhead(fixture: str = "5zck_p1", repeats: int = 7) -> dict:
    """Model construction + full map, with the probe calls (nobody listening) vs without them."""
    import eryx.models as npm
    import eryx.models_torch as tm
    import eryx.functional_torch as st

    from parity.contract.spec import make_spec

    spec = make_spec(fixture)

    def identity(name, value, **kw):
        return value

    def once():
        t = time.perf_counter()
        m = npm.OnePhonon(spec.pdb_path, *spec.samplings, **spec.model_kwargs)
        m.apply_disorder()
        t_np = time.perf_counter() - t
        t = time.perf_counter()
        mt = tm.OnePhonon(spec.pdb_path, *spec.samplings, **spec.model_kwargs)
        mt.apply_disorder()
        return t_np, time.perf_counter() - t

    originals = (npm.probe, tm.probe, st.probe)
    with_p, without = [], []
    once()  # warm-up
    for _ in range(repeats):  # interleaved
        with_p.append(once())
        npm.probe = tm.probe = st.probe = identity
        try:
            without.append(once())
        finally:
            npm.probe, tm.probe, st.probe = originals
    a, b = np.median(np.array(with_p), axis=0), np.median(np.array(without), axis=0)
    out = {"fixture": fixture, "repeats": repeats, "numpy_s": [float(a[0]), float(b[0])],
           "torch_s": [float(a[1]), float(b[1])], "numpy_overhead": float(a[0] / b[0] - 1),
           "torch_overhead": float(a[1] / b[1] - 1)}
    # The probe call itself, nobody listening (with an index dict built at the call, as in
    # the NumPy loops), and the number of calls of one run: an estimate free of run-time noise.
    from eryx.probes import probe

    x = np.ones(3)
    n = 200_000
    t = time.perf_counter()
    for i in range(n):
        probe("x", x, at={"asu": i, "atom": 1})
    out["probe_call_ns"] = (time.perf_counter() - t) / n * 1e9
    calls = {"numpy": 0, "torch": 0}

    def counter(which):
        def count(name, value, **kw):
            calls[which] += 1
            return value
        return count
    npm.probe = counter("numpy")
    tm.probe = st.probe = counter("torch")
    try:
        once()
    finally:
        npm.probe, tm.probe, st.probe = originals
    out["calls_per_run"] = calls
    out["estimated_overhead"] = {k: calls[k] * out["probe_call_ns"] * 1e-9 / (b[0] if k == "numpy" else b[1])
                                 for k in calls}
    print(json.dumps(out, indent=1))
    return out


STANDARD_GRID = ((-4, 4, 3), (-17, 17, 3), (-29, 29, 3))  # docs/benchmarks.md


def trace_time(fixture: str = "5zck_p1") -> dict:
    """Seconds (and trace memory) of ``parity locate --trace`` for the stages K and Id."""
    from parity.running.runner import make_run
    from parity.locate.run import locate_trace

    out = {}
    for label, samplings in (("default", None), ("standard", STANDARD_GRID)):
        for stage in ("K", "Id"):
            run = make_run(fixture, samplings=samplings, build=False)
            t = time.perf_counter()
            res = locate_trace(run, stage)
            out[f"{label} {stage}"] = {"grid": [list(x) for x in run.spec.samplings], "n_q": int(run.spec.n_q),
                                       "seconds": time.perf_counter() - t, "n_ops": res.trace.n_ref,
                                       "notes": res.trace.notes, "root": res.trace.root is not None}
            print(label, stage, out[f"{label} {stage}"], flush=True)
    return out


if __name__ == "__main__":
    name = sys.argv[1] if len(sys.argv) > 1 else "float32"
    result = {"float32": float32, "overhead": overhead, "trace-time": trace_time}[name](*sys.argv[2:])
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / f"{name}.json").write_text(json.dumps(result, indent=1, default=float), encoding="utf-8")
