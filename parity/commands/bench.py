"""``parity bench``: NumPy vs torch timings, per phase and end to end."""
from __future__ import annotations

import argparse

from parity.commands.command import Command


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--quick", action="store_true", help="small grids only (a minute)")
    p.add_argument("--json", default=None, metavar="FILE", help="write the measurements as JSON")
    p.add_argument("--fixtures-dir", default=None, help="directory of NAME.pdb fixtures (default: $ERYX_FIXTURES_DIR)")
    p.add_argument("--device", action="append", default=None, help="devices (default: cpu and cuda if present)")


def handle(args: argparse.Namespace) -> int:
    # function-local: the benchmark (torch) only for this subcommand
    from parity.benchmarking.bench import main as bench_main
    from parity.contract.devices import check_device

    for device in args.device or ():
        check_device(device)  # the one device check (EryxInputError: exit 2, one line)
    return bench_main(quick=args.quick, json_path=args.json, devices=args.device, fixtures_dir=args.fixtures_dir)


COMMAND = Command(
    "bench", help="benchmarks: NumPy vs torch, per phase and end to end",
    description="Time the NumPy and torch backends per phase and end to end on the fixtures at hand, on each "
                "device, and print (or write) the measurements.",
    add_arguments=add_arguments, handle=handle)
