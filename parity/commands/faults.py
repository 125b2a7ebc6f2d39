"""``parity faults``: the named fault injections, in the phase order of the stage each lands on."""
from __future__ import annotations

import argparse

from parity.commands.command import Command, no_arguments
from parity.contract.options import EXIT_OK


def faults_in_phase_order() -> list:
    """The named faults ordered by their stage's place in the registry (phase order), then name."""
    # function-local: the fault table and the registry (NumPy, torch) only for this subcommand
    from parity.backends.faults import FAULTS
    from parity.stages import STAGES

    place = {s.name: i for i, s in enumerate(STAGES)}
    return sorted(FAULTS.values(), key=lambda f: (f.phase, place.get(f.stage, len(place)), f.name))


def handle(args: argparse.Namespace) -> int:
    for f in faults_in_phase_order():
        print(f"{f.name:<20} phase {f.phase}  stage {f.stage:<12} {f.description}")
    return EXIT_OK


COMMAND = Command(
    "faults", help="list the named fault injections in phase order",
    description="List the named faults ('--fault NAME') in the phase order of the stage each one is "
                "documented to land on.",
    add_arguments=no_arguments, handle=handle)
