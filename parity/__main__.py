"""``python -m parity``: the same as the ``parity`` console command."""
import os
import sys

from .options import EXIT_INTERRUPTED, INTERRUPTED_MESSAGE


def _interrupted() -> None:
    # A KeyboardInterrupt that landed inside an extension module's import (torch) can leave
    # the interpreter flagged to re-raise SIGINT at shutdown (exit -2 instead of 130). The
    # outputs are already settled (nothing written), so end here with the documented code.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(EXIT_INTERRUPTED)


try:  # a Ctrl-C while the harness is still importing gets the same one line
    from .cli import main
except KeyboardInterrupt:
    print(INTERRUPTED_MESSAGE, file=sys.stderr)
    _interrupted()

code = main()
if code == EXIT_INTERRUPTED:
    _interrupted()
sys.exit(code)
