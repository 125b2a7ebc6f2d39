"""Differential check of survivors: the mutant's maps and gradients vs the original torch model's.

Evidence for equivalence: a survivor whose every output (maps, single-mode maps, the
arbitrary-q map, d/d gamma, d/d q) is identical to the original's on several fixtures,
grids, parameters and float32 cannot be told apart by any parity run on those inputs.
"""
from __future__ import annotations

import json
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

from parity.mutation.execute import _import_everything, _limit_threads, wait_child
from parity.mutation.generate import Mutant, _cut, apply_mutant


@dataclass(frozen=True)
class DiffCase:
    """One configuration of the differential check: a model and what is computed with it.

    Attributes
    ----------
    name : str
    fixture : str
    samplings : ((min, max, L) x 3), or None for the fixture's default grid
    params : dict
        Constructor keywords of the torch model (res_limit, gnm_cutoff, gammas, expand_p1,
        chunk_size, dtype as 'float32').
    gradients : bool
        Also d sum(Id) / d gamma (both) and the arbitrary-q map with d Id / d q.
    modes : bool
        Also every single-mode map and apply_disorder(rank) for a few ranks.
    """

    name: str
    fixture: str
    samplings: tuple | None = None
    params: tuple = ()
    gradients: bool = True
    modes: bool = True


#: The configurations, the most telling first (the check stops at the first that differs).
DIFF_CASES: tuple[DiffCase, ...] = (
    DiffCase("5zck_p1 default grid", "5zck_p1"),
    DiffCase("5zck_p1 odd L on every axis, gammas 0.7/1.3", "5zck_p1", ((-1, 1, 3), (-1, 1, 3), (-1, 1, 5)),
             (("gamma_intra", 0.7), ("gamma_inter", 1.3))),
    DiffCase("2ol9 (triclinic) non-symmetric grid, res_limit 2.5", "2ol9", ((-2, 1, 2), (-1, 2, 3), (-1, 1, 3)),
             (("res_limit", 2.5),)),
    DiffCase("synth_triclinic default grid", "synth_triclinic"),
    DiffCase("7n2h default grid (3 ASUs, hexagonal)", "7n2h"),
    DiffCase("5zck_p1 chunk_size 29", "5zck_p1", None, (("chunk_size", 29),)),
    DiffCase("5zck_p1 float32", "5zck_p1", None, (("dtype", "float32"),)),
    DiffCase("5zck_p1 standard-size grid (8,281 points)", "5zck_p1", ((-3, 3, 3), (-5, 5, 1), (-5, 5, 3)),
             (), gradients=False, modes=False),
    DiffCase("histidine gnm_cutoff 6, res_limit 1.5", "histidine", None, (("gnm_cutoff", 6.0), ("res_limit", 1.5))),
)
_SMALL = ((-1, 1, 3), (-1, 1, 3), (-1, 1, 5))
#: Edge inputs, for the survivors the default cases find identical: tiny chunks, one value
#: on an axis, everything masked, soft springs, a res_limit equal to a grid point's d.
PROBE_CASES: tuple[DiffCase, ...] = (
    DiffCase("5zck_p1 one h value", "5zck_p1", ((0, 0, 1), (-2, 2, 3), (-2, 2, 3))),
    DiffCase("5zck_p1 one l value", "5zck_p1", ((-2, 2, 3), (-2, 2, 3), (0, 0, 1))),
    DiffCase("5zck_p1 res_limit 1000 (all masked)", "5zck_p1", _SMALL, (("res_limit", 1000.0),), gradients=False),
    DiffCase("5zck_p1 gamma_inter 1e-6", "5zck_p1", _SMALL, (("gamma_inter", 1e-6),)),
    DiffCase("5zck_p1 gammas 5e-10", "5zck_p1", _SMALL, (("gamma_intra", 5e-10), ("gamma_inter", 5e-10))),
    DiffCase("5zck_p1 res_limit = c/1 (29.564)", "5zck_p1", ((0, 0, 1), (0, 0, 1), (-2, 2, 3)),
             (("res_limit", 29.564),), gradients=False),
    DiffCase("5zck_p1 res_limit = c/2 (14.782)", "5zck_p1", ((0, 0, 1), (0, 0, 1), (-2, 2, 3)),
             (("res_limit", 14.782),), gradients=False),
    DiffCase("5zck_p1 res_limit = b (17.151)", "5zck_p1", ((0, 0, 1), (-2, 2, 3), (0, 0, 1)),
             (("res_limit", 17.151),), gradients=False),
    DiffCase("5zck_p1 small grid chunk_size 2", "5zck_p1", _SMALL, (("chunk_size", 2),)),
    DiffCase("5zck_p1 default grid chunk_size 7", "5zck_p1", None, (("chunk_size", 7),), gradients=False),
)
CASE_SETS = {"default": DIFF_CASES, "probe": PROBE_CASES, "all": DIFF_CASES + PROBE_CASES}
#: Relative difference (to max |original|) above which a mutant's output differs.
DIFF_RTOL = {"float64": 1e-9, "float32": 1e-4}
#: Ranks whose single-mode map is also computed through apply_disorder(rank).
DIFF_RANKS = (0, 4, 11)


def diff_outputs(case: DiffCase, fixtures_dir: str | None = None) -> dict[str, Any]:
    """Every map and gradient of the torch model for one case, as NumPy arrays (float64).

    Returns name -> array, or name -> the error text when the model raised computing it.
    """
    import numpy as np
    import torch

    from eryx import models_torch as tm
    from eryx.fixtures import resolve_fixture
    from parity.contract.spec import default_grid

    pdb = str(resolve_fixture(case.fixture, fixtures_dir))
    grid = case.samplings or default_grid(case.fixture)
    params = dict(case.params)
    dtype = torch.float32 if params.pop("dtype", "float64") == "float32" else torch.float64
    out: dict[str, Any] = {}

    def model(**extra):
        return tm.OnePhonon(pdb, *grid, dtype=dtype, **{**params, **extra})

    def record(name, fn):
        try:
            value = fn()
            out[name] = np.asarray(value.detach().double().cpu() if isinstance(value, torch.Tensor) else value,
                                   dtype=float)
        except Exception as exc:  # a mutant that raises where the original computes: differs
            out[name] = f"{type(exc).__name__}: {_cut(str(exc), 160)}"

    m = None
    try:
        m = model()
    except Exception as exc:
        out["construction"] = f"{type(exc).__name__}: {_cut(str(exc), 160)}"
        return out
    record("Id", m.apply_disorder)
    record("Id_data_adp", lambda: m.apply_disorder(use_data_adp=True))
    if case.modes:
        record("mode_maps", m.mode_maps)
        for r in DIFF_RANKS:
            if r < m.n_dof:
                record(f"Id_rank{r}", lambda r=r: m.apply_disorder(rank=r))
    rng = np.random.default_rng(7)
    lo = np.array([s[0] for s in grid], float)
    hi = np.array([s[1] for s in grid], float)
    hkl = lo + (hi - lo) * rng.random((40, 3))
    q = torch.as_tensor(2 * np.pi * hkl @ m.A_inv.detach().cpu().double().numpy(), dtype=dtype)
    record("Id_q", lambda: model(q_vectors=q).apply_disorder())
    if case.modes:
        record("Id_q_rank0", lambda: model(q_vectors=q).apply_disorder(rank=0))
    if case.gradients:
        def grad_gamma():
            g = {k: torch.tensor(float(params.get(k, 1.0)), dtype=torch.float64, requires_grad=True)
                 for k in ("gamma_intra", "gamma_inter")}
            total = torch.nansum(model(**g).apply_disorder())
            grads = torch.autograd.grad(total, [g["gamma_intra"], g["gamma_inter"]], allow_unused=True)
            return torch.stack([x if x is not None else torch.zeros(()) for x in grads])

        def grad_q():
            qq = q.clone().requires_grad_(True)
            Id = model(q_vectors=qq).apply_disorder()
            finite = torch.isfinite(Id)
            (g,) = torch.autograd.grad(Id[finite].sum(), qq)
            return torch.cat([Id.detach()[:, None], g], dim=1)

        record("grad_gamma", grad_gamma)
        record("Id_q_grad", grad_q)
    return out


def compare_outputs(original: dict, mutated: dict, rtol: float) -> dict[str, str]:
    """name -> how the mutant's output differs from the original's (only those that do)."""
    import numpy as np

    diffs = {}
    for name in sorted(set(original) | set(mutated)):
        a, b = mutated.get(name), original.get(name)
        if isinstance(a, str) or isinstance(b, str) or a is None or b is None:
            if not (isinstance(a, str) and isinstance(b, str) and a == b):
                diffs[name] = f"mutant: {a if isinstance(a, str) else 'array'}; original: " \
                              f"{b if isinstance(b, str) else 'array'}" if not (a is None or b is None) else "missing"
            continue
        if a.shape != b.shape:
            diffs[name] = f"shape {a.shape} vs {b.shape}"
            continue
        nan_a, nan_b = ~np.isfinite(a), ~np.isfinite(b)
        if not np.array_equal(nan_a, nan_b):
            diffs[name] = f"non-finite pattern differs ({int(nan_a.sum())} vs {int(nan_b.sum())})"
            continue
        ok = ~nan_b
        if not ok.any():
            continue
        scale = float(np.max(np.abs(b[ok]))) or 1.0
        err = float(np.max(np.abs(a[ok] - b[ok]))) / scale
        if err > rtol:
            diffs[name] = f"max rel diff {err:.2e}"
    return diffs


def _diff_child(mutant: Mutant | None, cases: Sequence[DiffCase], store: str, out_path: str,
                stop_at_first: bool, threads: int) -> None:
    """Forked child of :func:`diff_mutants`: originals into ``store`` (mutant None) or a comparison."""
    import pickle

    import torch

    torch.set_num_threads(threads)
    rc = 0
    try:
        if mutant is None:
            with open(store, "wb") as handle:
                pickle.dump({c.name: diff_outputs(c) for c in cases}, handle)
        else:
            with open(store, "rb") as handle:
                originals = pickle.load(handle)
            apply_mutant(mutant)
            result = {}
            for c in cases:
                rtol = DIFF_RTOL["float32" if ("dtype", "float32") in c.params else "float64"]
                d = compare_outputs(originals[c.name], diff_outputs(c), rtol)
                result[c.name] = d
                if d and stop_at_first:
                    break
            Path(out_path).write_text(json.dumps(result), encoding="utf-8")
    except BaseException:
        import traceback

        Path(out_path).write_text(json.dumps({"error": traceback.format_exc(limit=6)}), encoding="utf-8")
        rc = 1
    finally:
        os._exit(rc)


def diff_mutants(mutants: Sequence[Mutant], *, cases: Sequence[DiffCase] = DIFF_CASES, threads: int = 1,
                 stop_at_first: bool = True, timeout_s: float = 600.0,
                 on_result: Callable[[Mutant, dict], None] | None = None) -> dict[str, dict]:
    """Differential check: each mutant's maps and gradients vs the original torch model's.

    Returns mutant id -> {case name: {output: difference}} (empty dicts: no difference in
    that case); ``stop_at_first`` stops a mutant at the first case that differs.
    """
    _limit_threads(threads)
    _import_everything()
    tmp = tempfile.mkdtemp(prefix="parity-mutation-diff-")
    store = os.path.join(tmp, "originals.pkl")
    results: dict[str, dict] = {}
    try:
        for mutant in [None, *mutants]:
            out_path = os.path.join(tmp, "result.json")
            t0 = time.perf_counter()
            pid = os.fork()
            if pid == 0:
                _diff_child(mutant, cases, store, out_path, stop_at_first, threads)
            wait_child(pid, timeout_s, t0)
            if mutant is None:
                if not Path(store).is_file():
                    raise RuntimeError("the original torch model's outputs could not be computed")
                continue
            try:
                res = json.loads(Path(out_path).read_text(encoding="utf-8"))
            except (OSError, ValueError):
                res = {"error": f"no result (timed out after {timeout_s:.0f} s or crashed)"}
            res["seconds"] = round(time.perf_counter() - t0, 1)
            Path(out_path).unlink(missing_ok=True)
            results[mutant.id] = res
            if on_result:
                on_result(mutant, res)
    finally:
        for p in Path(tmp).glob("*"):
            p.unlink(missing_ok=True)
        os.rmdir(tmp)
    return results


def diff_verdict(res: dict) -> str:
    """'differs' (some case differs), 'same' (no case differs), or 'error'."""
    if "error" in res:
        return "error"
    return "differs" if any(v for k, v in res.items() if k != "seconds") else "same"
