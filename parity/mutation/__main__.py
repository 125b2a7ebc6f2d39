"""``python -m parity.mutation``."""
import sys

from .cli import main

sys.exit(main())
