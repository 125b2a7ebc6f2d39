"""Parity harness: proves the NumPy reference and the PyTorch port of OnePhonon agree."""

from eryx._moved import install as _install_moved  # noqa: E402
from parity._moved import MOVED as _MOVED  # noqa: E402

_install_moved(_MOVED)
