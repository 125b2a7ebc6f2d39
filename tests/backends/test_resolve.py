"""resolve_backend: a side's backend by name, usage errors named after the side's option."""
import pytest

from eryx.errors import EryxInputError
from parity.backends import resolve_backend
from parity.backends.eryx_numpy import NumpyBackend
from parity.running import runner


def test_a_name_is_resolved_and_a_backend_passes_through():
    assert isinstance(resolve_backend("numpy", None, None, {}, "reference"), NumpyBackend)
    built = NumpyBackend()
    assert resolve_backend(built, None, None, {}, "candidate") is built


def test_an_unknown_backend_is_a_usage_error_named_after_the_option():
    with pytest.raises(EryxInputError, match=r"^--candidate: unknown backend 'no-such'"):
        resolve_backend("no-such", None, None, {}, "candidate")


def test_a_dump_that_cannot_be_read_is_a_usage_error(tmp_path):
    with pytest.raises(EryxInputError, match=r"^--reference: "):
        resolve_backend("dump", str(tmp_path / "missing.npz"), None, {}, "reference")


def test_the_runner_keeps_its_old_private_name():
    assert runner._backend is resolve_backend
