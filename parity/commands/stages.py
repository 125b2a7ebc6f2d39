"""``parity stages``: the stage registry in phase order."""
from __future__ import annotations

import argparse

from parity.commands.command import Command, no_arguments
from parity.contract.options import EXIT_OK


def handle(args: argparse.Namespace) -> int:
    # function-local: the registry (NumPy) only for this subcommand
    from parity.stages import PHASE_TITLES, STAGES

    phase = None
    for s in STAGES:
        if s.phase != phase:
            phase = s.phase
            print(f"Phase {phase}: {PHASE_TITLES[phase]}")
        print(f"  {s.name:<18} {s.kind:<11} {s.tier:<14} {s.description}")
    return EXIT_OK


COMMAND = Command(
    "stages", help="list the stage registry in phase order",
    description="List every stage of the registry in phase order: name, kind, tolerance tier and what it "
                "compares.",
    add_arguments=no_arguments, handle=handle)
