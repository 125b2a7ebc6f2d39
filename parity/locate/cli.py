"""``parity locate``: its own options and the locating (:mod:`parity.commands.locate` adds the
run's options, builds the run and writes the outputs)."""
from __future__ import annotations

import argparse
import time
from datetime import datetime, timezone
from typing import Callable

from parity.contract.options import UsageError
from parity.stages import STAGE_NAMES
from parity.running.runner import Run, assemble_result
from parity.locate.run import locate_probes, locate_trace


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The "locate" options: the stage, the trace and its files, tiers, fault, outputs."""
    g = p.add_argument_group("locate")
    g.add_argument("--stage", default=None, help="stage to localise (default: the run's first failing stage)")
    g.add_argument("--trace", action="store_true",
                   help="trace every torch operation of the stage against a clean float64 CPU run of the same "
                        "code (precision, device, fault or commit); default: named probes against the reference")
    g.add_argument("--trace-against", default=None, metavar="FILE",
                   help="compare the trace with one saved by --trace-save (another torch version or commit)")
    g.add_argument("--trace-save", default=None, metavar="FILE", help="save the candidate's trace (.npz)")
    g.add_argument("--promote", type=int, default=0, metavar="N",
                   help="with --trace in float32: rerun the stage with its N operations of largest error growth "
                        "in float64 (kept in float64 downstream) and print the result's error before and after")
    g.add_argument("--tier", action="append", default=[], metavar="NAME=RTOL[,ATOL]",
                   help="override a tolerance tier (repeatable)")
    g.add_argument("--fault", default=None, help="inject a named fault into the candidate (see 'parity faults')")
    g.add_argument("--json", default=None, metavar="FILE", help="write the result (with a 'locate' key) as JSON")
    g.add_argument("--html", default=None, metavar="FILE",
                   help="write the HTML report with the locate section (aligned stream, error figure)")


def run_locate(args: argparse.Namespace, run: Run, write_result: Callable[[dict], None] | None = None) -> int:
    """Print the root probe or root operation; 1 when one was named, 0 when nothing diverges.

    With ``--json`` or ``--html``, the run's result with a ``locate`` key is passed to
    ``write_result`` (the CLI writes it; None: nothing is written).
    """
    if args.promote and not args.trace:
        raise UsageError("--promote needs --trace (it promotes traced operations)")
    if args.stage and args.stage not in STAGE_NAMES:
        raise UsageError(f"unknown stage {args.stage!r}; see 'parity stages'")
    started, t0 = datetime.now(timezone.utc).isoformat(timespec="seconds"), time.perf_counter()
    if args.trace or args.trace_against:
        result = locate_trace(run, args.stage, against=args.trace_against, save=args.trace_save,
                              promote=args.promote)
    else:
        result = locate_probes(run, args.stage)
    print(result.text())
    found = bool(result.raised) or (result.probes is not None and result.probes.root is not None) or (
        result.trace is not None and (result.trace.root is not None or result.trace.unaligned_root))
    if (args.json or args.html) and write_result is not None:
        out = assemble_result(run, result.records, started_at=started, duration_s=time.perf_counter() - t0)
        out["locate"] = result.to_dict()
        write_result(out)
    return 1 if found else 0
