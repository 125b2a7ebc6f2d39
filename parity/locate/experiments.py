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

import contextlib
import json
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

OUT = Path(__file__).resolve().parents[2] / "reports" / "locate"


def _session(spec, dtype: str):
    from parity.backends.eryx_torch import TorchBackend

    s = TorchBackend().open(replace(spec, dtype=dtype, device="cpu"))
    return s


def trace_model(spec, dtype: str, promote=None, quantity: str = "Id"):
    """(OpTrace of building the torch model and computing ``quantity``, its value) in ``dtype``."""
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


#: Stage quantities compared stage by stage (eigenvectors V are defined up to a gauge: not compared).
STAGE_QUANTITIES = ("q_grid", "kvec", "Amat", "Mmat", "Linv", "hessian", "K", "D", "Winv", "Kinv", "covar", "ADP",
                    "structure_factors", "Id")


@contextlib.contextmanager
def float32_inputs():
    """Round the torch model's inputs to float32 (values kept in the model's dtype): the
    crystal's arrays (coordinates, cell, reciprocal basis, ADPs, form factors, masses) and
    the Miller indices of the grid. A float64 run inside computes exactly, from the
    float32 run's inputs: its error is the inputs' rounding alone."""
    import eryx.functional_torch as st
    import eryx.models_torch as tm

    crystal_arrays = ("cell", "A_inv", "unit_cell_axes", "xyz", "asu_xyz", "adp", "ff_a", "ff_b", "ff_c", "masses",
                      "cell_origin")
    original_tensors, original_grid = tm.OnePhonon._tensors_from_crystal, st.generate_grid

    def tensors(model):
        original_tensors(model)
        for name in crystal_arrays:
            t = getattr(model, name)
            setattr(model, name, t.to(torch.float32).to(t.dtype))

    def grid(samplings, *, dtype, device):
        return original_grid(samplings, dtype=dtype, device=device).to(torch.float32).to(dtype)

    tm.OnePhonon._tensors_from_crystal, st.generate_grid = tensors, grid
    try:
        yield
    finally:
        tm.OnePhonon._tensors_from_crystal, st.generate_grid = original_tensors, original_grid


def _values(spec, dtype: str, quantities=STAGE_QUANTITIES, promote=None) -> dict:
    """{quantity: float64/complex128 NumPy array} of a torch session in ``dtype`` (single-threaded map)."""
    import eryx.models_torch as tm

    before, tm.GRID_WORKERS = tm.GRID_WORKERS, False
    try:
        with (promote or contextlib.nullcontext()):
            s = _session(spec, dtype)
            s.build()
            if s.build_error:
                raise s.build_error
            out = {}
            for q in quantities:
                v = torch.as_tensor(s.get(q)).detach().cpu()
                out[q] = v.to(torch.complex128 if v.is_complex() else torch.float64).numpy()
    finally:
        tm.GRID_WORKERS = before
    return out


def stage_errors(spec) -> dict:
    """Per stage quantity: the normwise relative error of the float32 run and of a float64 run
    fed float32-rounded inputs (:func:`float32_inputs`), both against the float64 run."""
    exact = _values(spec, "float64")
    f32 = _values(spec, "float32")
    with float32_inputs():
        rounded = _values(spec, "float64")
    return {q: {"float32": map_error(exact[q], f32[q]), "float64_rounded_inputs": map_error(exact[q], rounded[q])}
            for q in STAGE_QUANTITIES}


#: The torch backend's stages behind the full map, in dependency order (each cross-fed from the ones before).
MAP_CHAIN = ("Amat", "hessian", "kvec", "K", "Kinv", "ADP", "Id")


def stage_attribution(spec) -> dict:
    """The full map's error when only some stages of :data:`MAP_CHAIN` run in float32.

    Every stage is cross-fed its inputs (``Session.crossfeed``): a stage run in float32
    gets them rounded to float32 and hands its output on; the others run in float64. The
    stream's leaves (coordinates, q-vectors, cell origins, ...) are exact or rounded to
    float32 (``inputs``). Keys: "inputs", "only STAGE" (that stage alone in float32),
    "all" (every stage in float32, inputs rounded: the float32 run), "float64 STAGE+..."
    (those stages in float64 inside an otherwise float32 run).
    """
    from parity.backends.eryx_torch import crossfeed_inputs

    import eryx.models_torch as tm

    sessions = {d: _session(spec, d) for d in ("float64", "float32")}
    before, tm.GRID_WORKERS = tm.GRID_WORKERS, False
    try:
        for s in sessions.values():
            s.build()
        leaves = {k: sessions["float64"].get(k) for n in MAP_CHAIN for k in crossfeed_inputs(n) if k not in MAP_CHAIN}

        def chain(in32: Sequence[str] = (), rounded: bool = False) -> np.ndarray:
            vals = dict(leaves)
            if rounded:
                vals = {k: v.to(torch.float32).to(v.dtype) if isinstance(v, torch.Tensor) and v.dtype == torch.float64
                        else v for k, v in vals.items()}
            for n in MAP_CHAIN:
                s = sessions["float32" if n in in32 else "float64"]
                vals[n] = s.crossfeed(n, {k: s.tensor(vals[k]) for k in crossfeed_inputs(n)})
            return torch.as_tensor(vals["Id"]).detach().double().numpy()

        exact = chain()
        out = {"inputs": map_error(exact, chain(rounded=True))}
        out.update({f"only {n}": map_error(exact, chain((n,))) for n in MAP_CHAIN})
        out["all"] = map_error(exact, chain(MAP_CHAIN, rounded=True))
        for kept in (("hessian",), ("K",), ("Id",), ("hessian", "K"), ("K", "Id"), ("hessian", "K", "Id")):
            out["float64 " + "+".join(kept)] = map_error(exact, chain([n for n in MAP_CHAIN if n not in kept], True))
    finally:
        tm.GRID_WORKERS = before
    return out


def conditioning(spec) -> dict:
    """Condition numbers behind the amplifications seen (float64 model): cond(Mmat) (its
    Cholesky and inverse: Linv), the spread of the nonzero eigenvalues of D (Winv = 1/lambda),
    and cond(K(k)) per k-point (the map inverts K through its Cholesky factor)."""
    import eryx.models_torch as tm

    m = tm.OnePhonon(spec.pdb_path, *spec.samplings, dtype=torch.float64, **spec.model_kwargs)
    n = m.Mmat.shape[0] * m.Mmat.shape[1]
    lam = 1 / m.Winv.reshape(-1).numpy()
    lam = np.abs(lam[np.isfinite(lam)])
    ev = np.abs(np.linalg.eigvalsh(m.K.detach().numpy()))
    return {"cond_Mmat": float(np.linalg.cond(m.Mmat.reshape(n, -1).detach().numpy())),
            "D_eigenvalue_spread": float(lam.max() / lam.min()),
            "cond_K_per_k": sorted(float(x) for x in ev.max(-1) / ev.min(-1))}


def _line_of(func, text: str) -> str:
    """``file:line`` (relative to the repository) of the first line of ``func`` containing ``text``."""
    import inspect

    lines, start = inspect.getsourcelines(func)
    k = next(i for i, line in enumerate(lines) if text in line)
    path = Path(inspect.getsourcefile(func)).resolve().relative_to(Path(__file__).resolve().parents[2])
    return f"{path.as_posix()}:{start + k}"


def float32(fixture: str = "5zck_p1") -> dict:
    """Where the float32 map's error comes from, and what promoting operations to float64 buys.

    1. stage by stage, the float32 run's error against the error of a float64 run fed the
       float32-rounded inputs (the part no operation's promotion can remove);
    2. the trace of the whole model (construction and full map) in both precisions, its
       amplifiers (factor 100), and every site ranked by error growth (:func:`rank_sites`);
    3. the map's error with the top 1, 3 and 10 ranked sites, and with every ranked site,
       run in float64 (:class:`PromoteOps`), with and without the trace listening; then the
       same with their outputs kept in float64 downstream (``keep=True``).
    """
    from parity.contract.spec import make_spec
    from parity.locate.precision import rank_sites, ranking_table, sites_of
    from parity.locate.trace import PromoteOps, compare_traces

    spec = make_spec(fixture)
    t0 = time.perf_counter()
    stages = stage_errors(spec)
    attribution = stage_attribution(spec)
    cond = conditioning(spec)
    tr64, Id64 = trace_model(spec, "float64")
    tr32, Id32 = trace_model(spec, "float32")
    cmp_ = compare_traces(tr64, tr32, precision=True)
    ranks = rank_sites(cmp_)
    e0 = map_error(Id64, Id32)
    with float32_inputs():
        _, Id_rounded = trace_model(spec, "float64")
    promotions = {}
    ladder = [(f"{label}{' kept' if keep else ''}", chosen, keep) for keep in (False, True)
              for label, chosen in (("top 1", ranks[:1]), ("top 3", ranks[:3]), ("top 10", ranks[:10]),
                                    ("all ranked", ranks))]
    # The hessian's accumulation buffer (stage attribution: the hessian and K carry the map's
    # error): made at a kept site it accumulates in float64, and so does all that follows.
    import eryx.functional_torch as ft

    buffer = _line_of(ft.hessian_unit_blocks, "torch.zeros(")
    ladder.append((f"hessian buffer {buffer} kept", [buffer], True))
    for label, chosen, keep in ladder:
        sites = set(chosen) if isinstance(chosen[0], str) else sites_of(chosen)
        promote = PromoteOps(sites, keep=keep)
        _, Id_p = trace_model(spec, "float32", promote)
        untraced = _values(spec, "float32", ("Id",), PromoteOps(sites, keep=keep))["Id"]
        e1 = map_error(Id64, Id_p)
        promotions[label] = {"keep": keep, "sites": sorted(map(str, sites)) if len(sites) <= 10 else len(sites),
                             "promoted_calls": promote.hits, "map_error": e1,
                             "map_error_untraced": map_error(Id64, untraced), "factor": e0 / e1 if e1 else None}
    out = {"fixture": fixture, "grid": [list(x) for x in spec.samplings], "n_ops": [cmp_.n_ref, cmp_.n_cand],
           "alignment": cmp_.alignment, "amplify_factor": cmp_.amplify,
           "stages": stages,
           "amplifiers": [{"label": a.label, "input_error": a.input_error, "error": a.error,
                           "amplification": a.amplification} for a in cmp_.amplifiers],
           "ranking": [{"site": f"{r.op} @ {r.where}", "calls": r.calls, "growth": r.growth,
                        "input_error": r.input_error, "error": r.error, "added": r.added} for r in ranks[:20]],
           "n_ranked_sites": len(ranks),
           "map_error_float32": e0, "map_error_float64_rounded_inputs": map_error(Id64, Id_rounded),
           "promotions": promotions, "stage_attribution": attribution, "conditioning": cond, "seconds": time.perf_counter() - t0}
    print("stage by stage (normwise relative error vs float64):  float32 run | float64 run on float32 inputs")
    for q, e in stages.items():
        print(f"  {q:18s} {e['float32']:10.3g} | {e['float64_rounded_inputs']:10.3g}")
    print(f"conditioning: cond(Mmat) {cond['cond_Mmat']:.3g}, D's nonzero eigenvalues spread "
          f"{cond['D_eigenvalue_spread']:.3g}, cond(K(k)) {', '.join(f'{c:.3g}' for c in cond['cond_K_per_k'])}")
    print("map error with only these stages in float32 (cross-fed), or these in float64:")
    for k, e in attribution.items():
        print(f"  {k:28s} {e:10.3g}")
    print(cmp_.summary())
    print(ranking_table(ranks, 15))
    print(f"float32 map error {e0:.3g}; float64 run fed the float32-rounded inputs: "
          f"{out['map_error_float64_rounded_inputs']:.3g}")
    for label, p in promotions.items():
        print(f"  {label:15s}: in float64 ({p['promoted_calls']} calls): map error {p['map_error']:.3g} "
              f"(untraced {p['map_error_untraced']:.3g}), factor {p['factor']:.3g}")
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
