"""``parity reduce``: the command's glue (the CLI parses, this reduces and assembles the outputs).

:func:`add_arguments` adds the reduction's own options to the subcommand's parser
(:mod:`parity.commands.reduce` adds the run options and handles the command).

Outputs (all written together at the end, nothing half-way): ``reduced.pdb``,
``command.txt`` (``bash command.txt`` in the folder re-runs the divergence with one
``parity run``), ``reduced.json`` and ``reduced.html`` (the reduced input's full run),
``reduction.log`` (one line per judged candidate: size, verdict) and ``reduction.json``.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Mapping, Sequence

from parity.storage.outputs import json_safe
from parity.running.runner import execute, make_run
from parity.contract.spec import RunSpec
from parity.stages import Stage
from parity.diagnosis.result import NO_SIGNATURE
from parity.reduce.crystal import read_atoms
from parity.reduce.driver import Reduction, command_text, reduce_case
from parity.reduce.moves import Case
from parity.reduce.parallel import MAX_DEFAULT_JOBS, MIN_CORES_FOR_PARALLEL, default_jobs
from parity.reduce.oracle import NothingToReduce, Oracle, cut_short, settle_diagnosis, signature_key  # noqa: F401

OUTPUT_NAMES = ("reduced.pdb", "command.txt", "reduced.json", "reduced.html", "reduction.log", "reduction.json")


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The "reduction" options: what must persist (``--keep-stage``/``--keep``), ``--budget``, ``--out``."""
    g = p.add_argument_group("reduction")
    keep = g.add_mutually_exclusive_group()
    keep.add_argument("--keep-stage", action="store_true",
                      help="keep only the first failing stage, not its diagnosis signature")
    keep.add_argument("--keep", default=None, metavar="SIGNATURE",
                      help="keep the first failing stage with any signature containing this text "
                           "(e.g. 'transpose', '1/(2 pi)'); default: its exact signature")
    g.add_argument("--budget", type=float, default=None, metavar="SECONDS",
                   help="stop after this many seconds of search with the best input so far (default: none)")
    g.add_argument("--out", required=True, metavar="DIR", help="folder for the reduced case (created if absent)")
    g.add_argument("--jobs", type=int, default=None, metavar="N",
                   help="processes judging candidates: above 1, each delta-debugging round's candidates are "
                        "judged ahead in N worker processes, same result as serial (default: 1 on a machine "
                        f"with fewer than {MIN_CORES_FOR_PARALLEL} usable cores, else half of them, at most "
                        f"{MAX_DEFAULT_JOBS}; here {default_jobs()})")
    g.add_argument("--no-progress", action="store_true", help="no progress lines on stderr")


def initial_case(spec: RunSpec) -> Case:
    """The run's input as a :class:`Case` (the fixture read and cleaned as the model reads it)."""
    return Case.make(read_atoms(spec.pdb_path), spec.samplings, dict(spec.params))


def final_run(case: Case, oracle: Oracle, stages: Sequence[Stage]) -> dict:
    """The reduced input's full run (every selected stage, figures on): the reduced JSON result."""
    path = oracle.write(case)
    run = make_run(str(path), samplings=case.samplings, params=case.param_dict, **oracle.options)
    run.figures = True
    result = execute(run, stages, progress=False)
    first = next((r for r in result["stages"] if r["name"] == result.get("first_failure")), None)
    if first is not None and cut_short(first):  # the signature as the predicate judged it (see settle_diagnosis)
        settle_diagnosis(run, [first])
        first["details"]["diagnosis_phrase"] = next(
            (d.get("phrase") for d in first["diagnosis"] if d.get("explains")), NO_SIGNATURE)
    return result


def reduce_outputs(spec: RunSpec, options: Mapping[str, Any], run_args: Sequence[str], stages: Sequence[Stage],
                   *, budget_s: float | None = None, keep_stage: bool = False, keep: str | None = None,
                   progress: bool = True, jobs: int = 1) -> tuple[Reduction, dict, dict[str, str]]:
    """Reduce the run of ``spec`` and return (reduction, reduced result, {file name: text}).

    Raises
    ------
    NothingToReduce
        The run agrees (the CLI's exit 2).
    """
    from parity.rendering.report import render_report

    oracle = Oracle(options, stages)
    try:
        case = initial_case(spec)
        if progress:
            print(f"reduce: initial run: {case.describe()}", file=sys.stderr, flush=True)

        def on_step(step):
            if progress:
                print(f"reduce: {step.line()}", file=sys.stderr, flush=True)
        red = reduce_case(case, oracle, budget_s=budget_s, keep_stage=keep_stage, keep=keep, on_step=on_step,
                          jobs=jobs)
        result = final_run(red.final, oracle, stages)
        pdb_text = red.final.pdb_text()
    finally:
        oracle.close()
    result["fixture"] = "reduced.pdb"
    result["pdb_path"] = "reduced.pdb"
    first = next((s for s in result["stages"] if s["name"] == result.get("first_failure")), None)
    result["reduce"] = {**red.to_dict(), "reduced_first_failure": result.get("first_failure"),
                        "reduced_signature": signature_key(first) if first else None}
    files = {"reduced.pdb": pdb_text, "command.txt": command_text(red.final, run_args),
             "reduced.json": json.dumps(json_safe(result), indent=1, allow_nan=False),
             "reduced.html": render_report(result), "reduction.log": red.log_text(),
             "reduction.json": json.dumps(json_safe(red.to_dict()), indent=1, allow_nan=False)}
    return red, result, files


def check_out_dir(out: str) -> Path:
    """The output folder: absent (created) or a folder; ValueError naming the problem otherwise."""
    path = Path(out)
    if path.exists() and not path.is_dir():
        raise ValueError(f"--out {out}: exists and is not a folder")
    for name in OUTPUT_NAMES:
        target = path / name
        if target.exists() and not target.is_file():
            raise ValueError(f"--out {out}: {name} exists there and is not a regular file")
    return path


def run_arguments(args: Mapping[str, Any], overrides: Mapping[str, Mapping[str, float]]) -> list[str]:
    """The ``parity run`` options of a run other than its input (for ``command.txt``).

    Parameters
    ----------
    args : mapping
        The parsed command line (``vars(namespace)``): backends, their paths and
        interpreters (made absolute), fault, device, dtype, stage selection.
    overrides : mapping
        The tier overrides in force (``pyproject.toml``'s included: the reduced case is
        re-run from another folder), ``{tier: {"rtol"/"atol": value}}``.
    """
    from parity.contract.tiers import resolve_tier

    out: list[str] = []
    for key in ("reference", "candidate", "fault", "phases", "stages", "skip"):
        if args.get(key):
            out += [f"--{key}", str(args[key])]
    for key in ("reference_path", "candidate_path", "reference_python", "candidate_python"):
        if args.get(key):
            value = str(args[key])
            out += [f"--{key.replace('_', '-')}", str(Path(value).resolve()) if Path(value).exists() else value]
    out += ["--device", str(args.get("device") or "cpu"), "--dtype", str(args.get("dtype") or "float64")]
    for name in sorted(overrides):
        vals = overrides[name]
        rtol = vals.get("rtol", resolve_tier(name).rtol)
        out.append(f"--tier={name}={rtol!r}" + (f",{vals['atol']!r}" if "atol" in vals else ""))
    return out
