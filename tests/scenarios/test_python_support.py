"""The harness on every supported Python, with or without torch.

These tests import nothing from torch, so the tox environments ``py310-notorch`` and
``py313-notorch`` (the oldest and newest Python that pyproject.toml claims) run them
without a multi-GB torch download: the NumPy reference against itself through the whole
harness (registry, tiers and their TOML overrides, CLI, dumps, HTML reports). With torch
installed they run in the main suite too.
"""
from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
HAS_TORCH = importlib.util.find_spec("torch") is not None


def parity(*argv: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "parity", *argv], cwd=cwd, capture_output=True, text=True,
                          timeout=600)


def test_python_is_one_that_the_project_claims():
    import re

    text = (REPO / "pyproject.toml").read_text()
    minimum = re.search(r'requires-python = ">=3\.(\d+)"', text)
    assert minimum and sys.version_info[:2] >= (3, int(minimum.group(1)))
    assert f"Programming Language :: Python :: 3.{sys.version_info[1]}" in text


def test_tier_overrides_are_read_from_pyproject(tmp_path):
    """tomllib on 3.11+, tomli below: the same overrides either way."""
    from parity.contract.tiers import gather_overrides

    (tmp_path / "pyproject.toml").write_text("[tool.parity.tiers.tight]\nrtol = 1e-12\natol = 1e-14\n")
    active = gather_overrides((), pyproject_path=tmp_path / "pyproject.toml")
    assert active.values == {"tight": {"rtol": 1e-12, "atol": 1e-14}}
    (tmp_path / "pyproject.toml").write_text("[tool.parity.tiers.tight\n")
    with pytest.raises(ValueError, match="pyproject.toml"):
        gather_overrides((), pyproject_path=tmp_path / "pyproject.toml")


def test_numpy_against_itself_through_the_whole_harness(tmp_path):
    out_json, out_html = tmp_path / "r.json", tmp_path / "r.html"
    done = parity("run", "--candidate", "numpy", "--no-progress", "--json", str(out_json), "--html", str(out_html),
                  cwd=tmp_path)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert "PASSED:" in done.stdout
    result = json.loads(out_json.read_text())
    assert result["verdict"] == "pass" and result["n_compared"] > 0
    assert result["candidate"]["name"] == "numpy" and result["reference"]["name"] == "numpy"
    assert all(s["status"] == "pass" for s in result["stages"])
    assert out_html.read_text().lstrip().lower().startswith("<!doctype html")


def test_a_dump_round_trips_and_compares(tmp_path):
    a, b = tmp_path / "a.npz", tmp_path / "b.npz"
    for path in (a, b):
        done = parity("dump", "--backend", "numpy", "--grid=-1,1,3", "--out", str(path), cwd=tmp_path)
        assert done.returncode == 0, done.stderr[-2000:]
    done = parity("compare", str(a), str(b), "--no-progress", cwd=tmp_path)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert "PASSED:" in done.stdout


@pytest.mark.skipif(HAS_TORCH, reason="torch is installed: the torch backend is available")
def test_without_torch_the_torch_backend_is_refused_in_one_line(tmp_path):
    done = parity("run", "--no-progress", "--json", str(tmp_path / "r.json"), cwd=tmp_path)
    assert done.returncode == 2
    assert done.stderr.strip().count("\n") == 0 and "No module named 'torch'" in done.stderr
    assert not (tmp_path / "r.json").exists()
