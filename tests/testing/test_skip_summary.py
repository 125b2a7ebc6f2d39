"""Skips for a missing data setting fold into one summary line per setting (issue 21)."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap

from parity.testing.skips import grouped_reason

TESTS = textwrap.dedent('''
    import pytest
    from parity.testing.plugin import fixture_path_or_skip, golden_or_skip

    @pytest.mark.parametrize("name", ["5zck_p1", "7n2h", "193l", "2ol9", "6o2h_clean"])
    def test_fixture(name):
        fixture_path_or_skip(name)

    @pytest.mark.parametrize("name", ["g1", "g2", "g3"])
    def test_golden(name):
        golden_or_skip(name)

    def test_other():
        pytest.skip("needs a GPU")
''')


def _summary(tmp_path, env_updates):
    (tmp_path / "test_data.py").write_text(TESTS)
    env = {k: v for k, v in os.environ.items() if k not in ("ERYX_FIXTURES_DIR", "ERYX_GOLDENS_DIR")}
    env.update(env_updates)
    proc = subprocess.run([sys.executable, "-m", "pytest", "-p", "parity.pytest_skips", "-p", "no:cacheprovider",
                           "-rs", "-q", "test_data.py"], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=120)
    return [line for line in proc.stdout.splitlines() if line.startswith("SKIPPED")]


def test_unset_settings_give_one_line_each(tmp_path):
    lines = _summary(tmp_path, {})
    assert len(lines) == 3, lines
    assert any(line.startswith("SKIPPED [5] data settings: ERYX_FIXTURES_DIR is not set") for line in lines)
    assert any(line.startswith("SKIPPED [3] data settings: ERYX_GOLDENS_DIR is not set") for line in lines)
    assert any("needs a GPU" in line for line in lines)  # other reasons keep their words
    for line in lines:  # each says it once
        for setting in ("ERYX_FIXTURES_DIR", "ERYX_GOLDENS_DIR"):
            assert line.count(setting) <= 1, line


def test_a_set_setting_keeps_the_specific_reasons(tmp_path):
    (tmp_path / "pdbs").mkdir()
    lines = _summary(tmp_path, {"ERYX_FIXTURES_DIR": str(tmp_path / "pdbs")})
    assert sum("unknown fixture" in line for line in lines) == 5  # a real gap in a real folder: one each
    assert not any("ERYX_FIXTURES_DIR is not set" in line for line in lines)


def test_grouped_reason(tmp_path):
    reason = ("fixture '5zck_p1' not available: unknown fixture '5zck_p1' (ERYX_FIXTURES_DIR is not set) "
              "(set ERYX_FIXTURES_DIR)")
    assert grouped_reason(reason, {}) .startswith("ERYX_FIXTURES_DIR is not set")
    assert grouped_reason(reason, {"ERYX_FIXTURES_DIR": str(tmp_path)}) is None  # a real folder: its own reason
    assert "is not a folder" in grouped_reason(reason, {"ERYX_FIXTURES_DIR": str(tmp_path / "no")})
    assert grouped_reason("needs a GPU", {}) is None
    assert grouped_reason("no peer snapshots: set ERYX_PEERS_DIR to the folder", {}).startswith("ERYX_PEERS_DIR")


def test_a_setting_naming_no_folder_is_one_line_naming_where_it_looked(tmp_path):
    lines = _summary(tmp_path, {"ERYX_FIXTURES_DIR": "../shared/fixtures/pdbs", "ERYX_GOLDENS_DIR": "/nonexistent"})
    fixtures = [line for line in lines if "ERYX_FIXTURES_DIR" in line]
    assert len(fixtures) == 1 and fixtures[0].startswith("SKIPPED [5] data settings: ERYX_FIXTURES_DIR=../shared")
    assert str(tmp_path / "../shared/fixtures/pdbs") in fixtures[0] and "is not a folder" in fixtures[0]
    assert sum(line.startswith("SKIPPED [3] data settings: ERYX_GOLDENS_DIR=/nonexistent is not a folder")
               for line in lines) == 1
