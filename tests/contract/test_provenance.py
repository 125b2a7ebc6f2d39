"""Provenance lives in one low-level module; the runner's old names are the same functions."""
import platform

import numpy as np

from parity.contract import provenance
from parity.running import runner


def test_environment_names_the_libraries_commit_and_machine():
    env = provenance.environment()
    assert set(env) == {"python", "numpy", "scipy", "torch", "gemmi", "git_commit", "hostname", "platform"}
    assert env["numpy"] == np.__version__
    assert env["python"] == platform.python_version()


def test_git_commit_is_a_full_hash_in_a_checkout_or_none():
    commit = provenance.git_commit()
    assert commit is None or (len(commit) == 40 and int(commit, 16) >= 0)


def test_an_unusable_device_is_named_not_raised():
    name = provenance.device_name("no-such-device:7")
    assert name.startswith("no-such-device:7 (unavailable: ")
    assert provenance.device_name("cpu").startswith("CPU (")


def test_the_runner_still_exports_the_same_functions():
    assert runner.environment is provenance.environment
    assert runner.git_commit is provenance.git_commit
    assert runner.device_name is provenance.device_name
