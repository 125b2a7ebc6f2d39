"""``python -m parity.mutation``."""
import sys

from parity.mutation.cli import main

sys.exit(main())
