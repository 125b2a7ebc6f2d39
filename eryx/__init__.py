"""eryx: the OnePhonon diffuse-scattering model with a NumPy reference and a PyTorch port.

- :mod:`eryx.models` -- NumPy reference (``from eryx.models import OnePhonon``)
- :mod:`eryx.models_torch` -- PyTorch backend (``from eryx.models_torch import OnePhonon``)
- :mod:`eryx.structure` -- structure loading shared by both
- :mod:`eryx.fixtures` / :mod:`eryx.synthetic` -- fixtures, real and generated
"""
__version__ = "0.1.0"

#: Modules that moved (old dotted name -> new); the old names still import, with a
#: DeprecationWarning (:mod:`eryx._moved`).
MOVED = {
    "eryx.stages_torch": "eryx.functional_torch",
}

from eryx._moved import install as _install_moved  # noqa: E402

_install_moved(MOVED)
