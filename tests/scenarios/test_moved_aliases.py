"""Modules that moved keep importing under their old names (issue 17: deprecation aliases).

Each old dotted name in the alias tables imports the new module itself (one module object,
so a ``mock.patch`` through the old name patches the real one) and warns with a
DeprecationWarning naming the new place. Run in one fresh interpreter (importing the
harness's modules never registers an old name, so each old name is first met here).
"""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

import eryx
from parity._moved import MOVED

TABLE = {**eryx.MOVED, **MOVED}

_PROBE = r'''
import importlib, json, sys, warnings
out = {}
for old, new in sorted(json.loads(sys.argv[1]).items()):  # a package before its modules
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        a = importlib.import_module(old)
    b = importlib.import_module(new)
    out[old] = {"same": a is b, "name": a.__name__,
                "warnings": [str(w.message) for w in caught if issubclass(w.category, DeprecationWarning)]}
print(json.dumps(out))
'''


@pytest.fixture(scope="module")
def imported():
    done = subprocess.run([sys.executable, "-c", _PROBE, json.dumps(TABLE)], capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("old", sorted(TABLE))
def test_old_name_is_the_new_module_with_a_warning(old, imported):
    new, got = TABLE[old], imported[old]
    assert got["same"] and got["name"] == new
    assert any(old in w and new in w for w in got["warnings"]), got["warnings"]


def test_every_new_name_exists_and_no_old_file_is_left():
    import importlib.util
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    for old, new in TABLE.items():
        assert importlib.util.find_spec(new) is not None, new
        leftover = root.joinpath(*old.split(".")).with_suffix(".py")
        assert not leftover.exists(), f"{leftover} still exists beside its alias"


def test_an_unknown_old_name_is_still_an_import_error():
    with pytest.raises(ModuleNotFoundError):
        __import__("parity.no_such_module_anywhere")
