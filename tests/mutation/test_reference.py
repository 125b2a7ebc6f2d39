"""The mutation tool's reference computed once (issue 17, item 5): served to each mutant's
``parity run`` through the public ``--reference module:callable`` form, nothing patched."""
from __future__ import annotations

import json

import pytest

from parity.backends import get_backend
from parity.backends.eryx_numpy import NumpyBackend, NumpySession
from parity.commands import cli
from parity.contract.spec import make_spec
from parity.mutation.execute import WARM_REFERENCE, RunConfig, warm_reference
from parity.mutation.reference import WarmNumpyBackend, forget_sessions, keep_session

GRID = ((-1, 1, 3),) * 3


@pytest.fixture(autouse=True)
def _no_kept_sessions():
    forget_sessions()
    yield
    forget_sessions()


@pytest.fixture
def numpy_builds(monkeypatch):
    """How many NumPy reference models were built (a list with one counter)."""
    count = [0]
    real = NumpySession._build

    def counting(self):
        count[0] += 1
        return real(self)

    monkeypatch.setattr(NumpySession, "_build", counting)
    return count


def test_child_argv_names_the_warm_reference_only_when_it_is_used():
    argv = RunConfig(fixture="synthetic").argv("r.json")
    assert argv[argv.index("--reference") + 1] == WARM_REFERENCE
    assert "--reference" not in RunConfig(reference_cache=False).argv("r.json")
    # a reference chosen in the run's own options is left alone (no clash with --reference-dump)
    for own in (["--reference", "upstream-eryx"], ["--reference-dump", "d.npz"]):
        argv = RunConfig(parity_args=own).argv("r.json")
        assert WARM_REFERENCE not in argv and argv[-2:] == ["--json", "r.json"]


def test_warm_backend_opens_the_kept_session_of_its_spec_only():
    backend = get_backend(WARM_REFERENCE)  # the public module:callable form, as a child resolves it
    assert isinstance(backend, WarmNumpyBackend) and isinstance(backend, NumpyBackend)
    assert backend.name == "numpy"
    spec = make_spec("synthetic", samplings=GRID)
    fresh = backend.open(spec)
    assert isinstance(fresh, NumpySession)  # nothing kept yet: a new session
    kept = NumpyBackend().open(spec)
    keep_session(kept)
    assert backend.open(make_spec("synthetic", samplings=GRID)) is kept  # an equal spec, built anew
    for other in (make_spec("synthetic", samplings=((-1, 1, 2),) * 3),
                  make_spec("synthetic", samplings=GRID, dtype="float32"),
                  make_spec("synthetic", samplings=GRID, params={"gamma_inter": 2.0})):
        assert backend.open(other) is not kept
    assert NumpyBackend().open(spec) is not kept  # the plain backend is untouched


def test_a_childs_run_reads_the_kept_reference_instead_of_building_it(numpy_builds, tmp_path):
    pytest.importorskip("torch")
    session = NumpyBackend().open(make_spec("synthetic", samplings=GRID))
    session.build()
    keep_session(session)
    numpy_builds[0] = 0
    args = ["--grid=-1,1,3", "--phases", "1"]
    warm = RunConfig(fixture="synthetic", parity_args=args).argv(str(tmp_path / "warm.json"))
    assert cli.main(warm) == 0 and numpy_builds[0] == 0
    result = json.loads((tmp_path / "warm.json").read_text())
    assert result["reference"]["name"] == "numpy" and result["verdict"] == "pass"
    cold = RunConfig(fixture="synthetic", parity_args=args, reference_cache=False).argv(str(tmp_path / "cold.json"))
    assert cli.main(cold) == 0 and numpy_builds[0] == 1  # without it, the child builds its own


@pytest.mark.slow
def test_warm_reference_computes_once_and_patches_nothing(numpy_builds, tmp_path):
    """The whole path: the parent's warm-up, then a child's run with no NumPy model built."""
    pytest.importorskip("torch")
    open_before = NumpyBackend.open
    config = RunConfig(fixture="synthetic", parity_args=["--grid=-1,1,3"])
    session = warm_reference(config)
    assert numpy_builds[0] == 2 and NumpyBackend.open is open_before  # both sides are NumPy there
    assert get_backend(WARM_REFERENCE).open(make_spec("synthetic", samplings=GRID)) is session
    assert cli.main(config.argv(str(tmp_path / "r.json"))) == 0 and numpy_builds[0] == 2
