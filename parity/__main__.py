"""``python -m parity``: the same as the ``parity`` console command."""
import sys

from ._entry import main

sys.exit(main())
