"""``parity reduce``: shrink a failing run's input while the same divergence persists.

The reduction itself is :mod:`parity.reduce` (its options: :func:`parity.reduce.command.add_arguments`);
this module checks the options, runs it and writes the reduced case.
"""
from __future__ import annotations

import argparse

from parity.commands.command import Command
from parity.commands.output_files import write_together
from parity.commands.run_options import (add_backend_options, add_model_options, add_selection_options, selection,
                                         spec_options, tier_overrides)
from parity.contract.options import EXIT_OK, UsageError
from parity.reduce.command import add_arguments as add_reduction_options


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_model_options(p)
    add_backend_options(p)
    add_selection_options(p)
    add_reduction_options(p)


def handle(args: argparse.Namespace) -> int:
    # function-local: the reduction (the runner, NumPy, the backends) only for this subcommand
    from parity.contract.spec import make_spec
    from parity.reduce.command import NothingToReduce, check_out_dir, reduce_outputs, run_arguments
    from parity.reduce.parallel import default_jobs

    if args.reference_dump:
        raise UsageError("--reference-dump: a dump holds one fixed input; 'parity reduce' needs a live reference")
    if args.jobs is not None and args.jobs < 1:
        raise UsageError(f"--jobs {args.jobs}: must be at least 1")
    if args.budget is not None and not args.budget >= 0:
        raise UsageError(f"--budget {args.budget:g}: must be a number of seconds >= 0")
    try:
        out = check_out_dir(args.out)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    stages, opts, tiers = selection(args), spec_options(args), tier_overrides(args.tier)
    spec = make_spec(opts["fixture"], samplings=opts["samplings"], params=opts["params"], device=args.device,
                     dtype=args.dtype, fixtures_dir=args.fixtures_dir)
    options = {"reference": args.reference or "numpy", "candidate": args.candidate or "torch",
               "reference_path": args.reference_path, "candidate_path": args.candidate_path,
               "reference_python": args.reference_python, "candidate_python": args.candidate_python,
               "fault": args.fault, "device": args.device, "dtype": args.dtype, "tier_overrides": tiers}
    try:
        red, result, files = reduce_outputs(spec, options, run_arguments(vars(args), tiers.values), stages,
                                            budget_s=args.budget, keep_stage=args.keep_stage, keep=args.keep,
                                            progress=not args.no_progress,
                                            jobs=args.jobs if args.jobs is not None else default_jobs())
    except NothingToReduce as exc:
        raise UsageError(str(exc)) from None
    write_together({out / name: text for name, text in files.items()})
    print(red.summary())
    print(f"reduced run: first failure {result.get('first_failure')} "
          f"[{result['reduce']['reduced_signature']}], {result['duration_s']:.2f} s of stages "
          "(with the report's figures)")
    print(f"reduced case: {out}/ (reproduce: cd {out} && bash command.txt)")
    return EXIT_OK


COMMAND = Command(
    "reduce", help="shrink a failing run's input while the same divergence persists",
    description="Shrink the input of a failing run (structure by delta debugging, space group to P1, "
                "elements/B factors, grid, parameters) while the same first stage fails with the same "
                "signature; write the reduced case to --out. Exit 0 reduced, 2 usage error or nothing to "
                "reduce (the run agrees). See docs/reduce.md.",
    add_arguments=add_arguments, handle=handle)
