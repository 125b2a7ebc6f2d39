"""``python -m parity``: the same as the ``parity`` console command."""
import sys

from .cli import main

sys.exit(main())
