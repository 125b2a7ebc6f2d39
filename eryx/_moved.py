"""Deprecation aliases for modules that moved: the old dotted name still imports.

``import parity.runner`` (moved to ``parity.running.runner``) imports the new module,
registers it under the old name too (so both names are the same module object and
``mock.patch("parity.runner.x")`` patches the real one) and warns once with a
:class:`DeprecationWarning` naming the new place. One table per package
(:data:`eryx.MOVED`, :data:`parity._moved.MOVED`); a finder on ``sys.meta_path``
serves them.
"""
from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys
import warnings
from typing import Mapping


class _AliasLoader(importlib.abc.Loader):
    def __init__(self, new: str) -> None:
        self.new = new

    def create_module(self, spec):
        warnings.warn(f"{spec.name} moved to {self.new}; import it from there "
                      f"(the old name will be removed in a future version)", DeprecationWarning, stacklevel=3)
        module = importlib.import_module(self.new)
        sys.modules[spec.name] = module
        return module

    def exec_module(self, module) -> None:  # the module is already executed under its new name
        pass


class MovedFinder(importlib.abc.MetaPathFinder):
    """Finds an old module name in a table of moves and loads the new module for it."""

    def __init__(self, table: Mapping[str, str]) -> None:
        self.table = dict(table)

    def find_spec(self, fullname, path=None, target=None):
        new = self.table.get(fullname)
        if new is None:
            return None
        return importlib.util.spec_from_loader(fullname, _AliasLoader(new))


def install(table: Mapping[str, str]) -> None:
    """Serve ``table``'s old names (old dotted name -> new dotted name) from now on."""
    if not any(isinstance(f, MovedFinder) and f.table == dict(table) for f in sys.meta_path):
        sys.meta_path.insert(0, MovedFinder(table))  # before the path finders: a stale old folder (a
        # namespace package of leftover __pycache__) must not shadow the alias
