"""``parity new-backend NAME``: an installable package that plugs an implementation into the harness.

The package has a ``pyproject.toml`` registering the backend under the entry-point group
``eryx_parity.backends``, a backend skeleton with one method per quantity of the contract
(generated from :data:`parity.contract.quantities.QUANTITIES`, so it lists every one), and a test
file that runs the contract self-test and one test per registry stage. Nothing is written
when the name is invalid or the directory is not empty.
"""
from __future__ import annotations

import re
from pathlib import Path

from eryx.errors import EryxInputError

from parity.backends import BUILTIN_BACKENDS
from parity.contract.quantities import QUANTITIES

NAME_RE = re.compile(r"[a-z][a-z0-9_-]{0,40}")


def module_name(name: str) -> str:
    """The Python package of backend ``name`` (``my-port`` -> ``my_port_parity``)."""
    return name.replace("-", "_") + "_parity"


def _quantity_methods() -> str:
    out = []
    for q in QUANTITIES:
        doc = f"{q.shape} {q.dtype}" + (f", {q.units}" if q.units else "") + f": {q.description}"
        out.append(f'    def q_{q.name}(self):\n        """{doc}"""\n'
                   f'        raise NotProvided("{q.name} is not implemented yet")\n')
    return "\n".join(out)


BACKEND_TEMPLATE = '''\
"""The {name} backend: how the eryx-parity harness reads this implementation.

Fill in one ``q_<quantity>`` method per quantity you compute, add its name to
PROVIDES, and check with ``parity backends --check {name}``. Shapes, dtypes, units and
conventions: docs/writing-a-backend.md of eryx-parity (and each method's docstring).
"""
from __future__ import annotations

from parity.backend_api import Backend, NotProvided, Session

#: The quantities this backend computes (the harness asks for no others).
PROVIDES = frozenset()


class {cls}Session(Session):
    """One model for one RunSpec (self.spec): built once, quantities computed on demand."""

    def _build(self):
        spec = self.spec
        # Construct your model here from spec.pdb_path, spec.samplings, spec.params,
        # spec.device and spec.dtype. Whatever it raises is reported as the construction
        # failure (raise parity.backend_api.BuildFailure to name the step and phase).
        self.model = None

    def _compute(self, name):
        return getattr(self, "q_" + name)()

{methods}

class {cls}Backend(Backend):
    """{name}: one line saying what this implementation is."""

    name = "{name}"
    description = "{name} (scaffolded by parity new-backend)"

    @classmethod
    def static_provides(cls):
        return PROVIDES

    def open(self, spec):
        return {cls}Session(self, spec)

    def info(self):
        return {{"name": self.name, "description": self.description, "version": "0.1.0",
                 "origin": __name__}}
'''

PYPROJECT_TEMPLATE = '''\
[build-system]
requires = ["setuptools>=64"]
build-backend = "setuptools.build_meta"

[project]
name = "{dist}"
version = "0.1.0"
description = "The {name} implementation as an eryx-parity backend"
requires-python = ">=3.10"
dependencies = ["eryx-parity"]

# How the harness finds the backend: parity run --candidate {name}
[project.entry-points."eryx_parity.backends"]
{name} = "{module}.backend:{cls}Backend"

[tool.setuptools]
packages = ["{module}"]

[tool.pytest.ini_options]
testpaths = ["tests"]
# the stage tests (tests/test_parity.py) compare this backend with the NumPy reference
parity_candidate = "{name}"
parity_fixtures = ["synthetic"]
'''

TEST_TEMPLATE = '''\
"""The {name} backend against the contract and the reference, one test per registry stage."""
from parity.backend_api import check_backend, format_report
from parity.testing.stage_tests import test_stage  # noqa: F401  (one test per stage, from eryx-parity)


def test_contract():
    report = check_backend("{name}")
    assert report.ok, format_report(report)
'''

README_TEMPLATE = '''\
# {dist}

The {name} implementation as an eryx-parity backend (see eryx-parity's
docs/writing-a-backend.md).

    pip install -e .
    parity backends --check {name}     # the contract self-test
    parity run --candidate {name}      # compared with the NumPy reference
    pytest                             # the same, one test per stage
'''


def scaffold(name: str, directory: str | Path | None = None) -> list[Path]:
    """Write the package of backend ``name`` into ``directory`` (default ``./NAME``).

    Returns
    -------
    list of Path
        The files written.

    Raises
    ------
    EryxInputError
        An invalid or built-in name, or a directory that exists and is not empty.
    """
    if not NAME_RE.fullmatch(name):
        raise EryxInputError(f"backend name {name!r}: use lower-case letters, digits, '-' and '_', starting "
                             f"with a letter")
    if name in BUILTIN_BACKENDS:
        raise EryxInputError(f"backend name {name!r} is a built-in backend's; choose another")
    root = Path(directory if directory is not None else name)
    if root.exists() and (not root.is_dir() or any(root.iterdir())):
        raise EryxInputError(f"{root} exists and is not an empty directory: nothing written")
    module = module_name(name)
    cls = "".join(part.capitalize() for part in re.split(r"[-_]", name))
    fields = dict(name=name, dist=f"{name}-parity", module=module, cls=cls)
    files = {
        "pyproject.toml": PYPROJECT_TEMPLATE.format(**fields),
        "README.md": README_TEMPLATE.format(**fields),
        f"{module}/__init__.py": f'"""The {name} backend for eryx-parity."""\n',
        f"{module}/backend.py": BACKEND_TEMPLATE.format(methods=_quantity_methods(), **fields),
        "tests/test_parity.py": TEST_TEMPLATE.format(**fields),
    }
    written = []
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        written.append(path)
    return written
