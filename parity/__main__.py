"""``python -m parity``: the same as the ``parity`` console command."""
import sys

from parity.commands.entry import main

sys.exit(main())
