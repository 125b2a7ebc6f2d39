"""``parity dump``: every quantity one backend provides, written to one .npz file."""
from __future__ import annotations

import argparse
import sys

from parity.commands.command import Command
from parity.commands.output_files import refuse_bad_outputs
from parity.commands.run_options import add_model_options, spec_options
from parity.contract.options import EXIT_DIVERGED, EXIT_OK


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_model_options(p, subject="the backend", dump_default=False)
    g = p.add_argument_group("backend and output")
    g.add_argument("--backend", default="torch", metavar="NAME", help="backend to dump (default torch)")
    g.add_argument("--backend-path", default=None, metavar="PATH",
                   help="checkout (folder) or .tar.gz the backend loads its code from")
    g.add_argument("--backend-python", default=None, metavar="PYTHON", help="interpreter for a subprocess backend")
    g.add_argument("--fault", default=None,
                   help="inject a named fault into the dumped backend (a backend that takes faults: torch)")
    g.add_argument("--out", required=True, metavar="FILE", help="the .npz file to write")
    g.add_argument("--no-progress", action="store_true", help="no progress bar")
    g.add_argument("--probes", action="store_true",
                   help="record the named probes too, so that 'parity locate --reference-dump' can use them")


def _progress(backend: str, no_progress: bool):
    """A per-quantity callback drawing a bar on a terminal, or None."""
    if not sys.stderr.isatty() or no_progress:
        return None
    # function-local: tqdm and the quantity list only when a bar is drawn
    from tqdm.auto import tqdm

    from parity.contract.quantities import QUANTITY_NAMES

    bar = tqdm(total=len(QUANTITY_NAMES), desc=f"dump {backend}", unit="quantity", leave=False)
    return lambda name: (bar.set_postfix_str(name), bar.update(1))


def handle(args: argparse.Namespace) -> int:
    # function-local: the dump writer and the runner (NumPy, the backends) only for this subcommand
    from parity.backends.dump import write_dump
    from parity.running.runner import _backend, make_run

    refuse_bad_outputs(args)
    options = spec_options(args)
    fault = options.pop("fault")
    # One backend, resolved here so that its errors name --backend (not a run's two sides).
    backend = _backend(args.backend, args.backend_path, args.backend_python,
                       {"fault": fault} if fault is not None else {}, "backend")
    run = make_run(**options, reference=backend, candidate=backend, build=False)
    manifest = write_dump(run.candidate_session, args.out, on_quantity=_progress(args.backend, args.no_progress),
                          probes=args.probes)
    n, missing, errors = len(manifest["quantities"]), manifest["missing"], manifest["errors"]
    print(f"dump: {args.out}: {n} quantities of backend {args.backend} ({manifest['compute_seconds']:.1f} s)"
          + (f"; not provided: {', '.join(missing)}" if missing else "")
          + (f"; ERRORS: {', '.join(errors)}" if errors else ""))
    if manifest.get("build_error"):
        print(f"  construction failed: {manifest['build_error']['message']}")
    return EXIT_DIVERGED if errors or manifest.get("build_error") else EXIT_OK


COMMAND = Command(
    "dump", help="write every quantity a backend provides to one .npz file",
    description="Compute every quantity of the contract that the backend provides and write them, each under "
                "its stage name, with a manifest, to one .npz (readable with numpy.load, no pickle). Compare "
                "dumps with 'parity compare'.",
    add_arguments=add_arguments, handle=handle)
