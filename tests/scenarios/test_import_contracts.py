"""The import contracts of pyproject.toml ([tool.importlinter]) hold, and they bite.

import-linter is part of the test extra (``pip install -e ".[test]"``): without it this
file fails to import, on purpose (CI runs the same contracts with ``lint-imports``).
"""
import shutil
import subprocess
import sys
from pathlib import Path

import importlinter  # noqa: F401 (a missing test extra fails here, not as a skip)

ROOT = Path(__file__).resolve().parents[2]
LINT = "import sys; from importlinter.cli import lint_imports; sys.exit(lint_imports(no_cache=True, no_logo=True))"


def _lint(where: Path) -> tuple[int, str]:
    """lint-imports in ``where`` (its pyproject.toml; its eryx/ and parity/ first on the path)."""
    done = subprocess.run([sys.executable, "-c", LINT], cwd=where, capture_output=True, text=True, timeout=120)
    return done.returncode, done.stdout + done.stderr


def test_the_import_contracts_are_kept():
    code, out = _lint(ROOT)
    assert code == 0, out
    assert "3 kept, 0 broken" in out


def _copy_tree(dst: Path) -> None:
    for pkg in ("eryx", "parity"):
        shutil.copytree(ROOT / pkg, dst / pkg, ignore=shutil.ignore_patterns("__pycache__", "*.j2"))
    shutil.copy(ROOT / "pyproject.toml", dst / "pyproject.toml")


def test_a_backend_importing_the_runner_breaks_the_layers(tmp_path):
    _copy_tree(tmp_path)
    base = tmp_path / "parity" / "backends" / "base.py"
    base.write_text(base.read_text(encoding="utf-8") + "\n\ndef _late():\n    from parity.running import runner\n",
                    encoding="utf-8")
    code, out = _lint(tmp_path)
    assert code != 0
    assert "parity.backends is not allowed to import parity.running" in out


def test_the_model_importing_the_harness_is_forbidden(tmp_path):
    _copy_tree(tmp_path)
    errors = tmp_path / "eryx" / "errors.py"
    errors.write_text(errors.read_text(encoding="utf-8") + "\n\nimport parity.contract.spec  # noqa\n",
                      encoding="utf-8")
    code, out = _lint(tmp_path)
    assert code != 0
    assert "eryx.errors -> parity.contract.spec" in out
