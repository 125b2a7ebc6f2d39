"""pytest integration: options, markers and fixtures for parity tests.

Options
-------
--fixtures-dir DIR     where real fixtures live (default: $ERYX_FIXTURES_DIR)
--goldens-dir DIR      where golden outputs live (default: $ERYX_GOLDENS_DIR)
--parity-fixture NAME  fixtures the parity stages run on (repeatable; default: the
                       built-in synthetic one plus 5zck_p1 and 7n2h when present)
--parity-device DEV    torch device for the parity stages (default: cpu)
--parity-dtype DT      float64 (default) or float32
--parity-json FILE     write the parity result (the CLI's JSON format) to FILE
--reference NAME, --candidate NAME
                       the two backends the stage tests compare (default numpy, torch);
                       --reference-path/--candidate-path DIR, --candidate-python PYTHON and
                       --reference-dump FILE as for ``parity run``
--parity               add the packaged stage tests (:mod:`parity.testing.stage_tests`): one test per
                       registry stage and fixture, in any repository, without a conftest
--parity-require all|STAGES
                       fail (not skip) a required stage that is not comparable; STAGES is a
                       comma-separated list of stage names and ``phaseN``
--torch-threads N      set torch's CPU threads for the session (default: left alone)

The ini options ``parity_candidate``, ``parity_reference``, ``parity_fixtures`` and
``parity_require`` set the same defaults from a project's ``pyproject.toml``.

The plugin is registered through the ``pytest11`` entry point (installing eryx-parity
is enough); its markers ``phase1``-``phase4`` and ``gpu`` are registered with it.
"""
from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path

import pytest

# Everything else (the registry, the runner, torch) is imported inside the hooks that need
# it: this plugin loads in every pytest session of an environment with eryx-parity
# installed, most of which never run a stage.

GOLDENS_ENV = "ERYX_GOLDENS_DIR"
DEFAULT_PARITY_FIXTURES = ("synthetic", "5zck_p1", "7n2h")


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("parity", "eryx-parity harness")
    group.addoption("--fixtures-dir", default=None, help="directory of real fixture PDB files ($ERYX_FIXTURES_DIR)")
    group.addoption("--goldens-dir", default=None, help="directory of golden .npz/.json files ($ERYX_GOLDENS_DIR)")
    group.addoption("--parity", action="store_true", default=False,
                    help="collect the packaged parity stage tests (parity.testing.stage_tests) too")
    group.addoption("--parity-require", default=None, metavar="all|STAGES",
                    help="fail, instead of skip, these stages when not comparable: 'all' or stage names / "
                         "phaseN, comma-separated (ini: parity_require)")
    group.addoption("--parity-fixture", action="append", default=None, help="fixture for the parity stages (repeatable)")
    group.addoption("--parity-device", default="cpu", help="torch device for the parity stages")
    group.addoption("--parity-dtype", default="float64", choices=("float64", "float32"))
    group.addoption("--parity-json", default=None, help="write the parity stages' result JSON here")
    group.addoption("--reference", "--parity-reference", dest="parity_reference", default=None,
                    help="reference backend of the parity stage tests (default: ini parity_reference, else numpy)")
    group.addoption("--candidate", "--parity-candidate", dest="parity_candidate", default=None,
                    help="candidate backend of the parity stage tests (default: ini parity_candidate, else torch)")
    group.addoption("--reference-path", dest="parity_reference_path", default=None,
                    help="checkout the reference backend loads its code from")
    group.addoption("--candidate-path", dest="parity_candidate_path", default=None,
                    help="checkout the candidate backend loads its code from")
    group.addoption("--candidate-python", dest="parity_candidate_python", default=None,
                    help="interpreter for a subprocess candidate backend")
    group.addoption("--reference-dump", dest="parity_reference_dump", default=None,
                    help="a stored dump ('parity dump') as the reference")
    group.addoption("--torch-threads", type=int, default=None,
                    help="torch CPU threads for the whole session (default: torch's own, untouched)")
    parser.addini("parity_candidate", "candidate backend of the parity stage tests", default="torch")
    parser.addini("parity_reference", "reference backend of the parity stage tests", default="numpy")
    parser.addini("parity_fixtures", "fixtures of the parity stage tests", type="args", default=[])
    parser.addini("parity_require", "stages that must be comparable ('all' or names / phaseN)", default="")


MARKERS = (
    "phase1: parity phase 1 (grid and precision)",
    "phase2: parity phase 2 (A/M matrices and structure factors)",
    "phase3: parity phase 3 (phonons and covariance)",
    "phase4: parity phase 4 (end-to-end intensity)",
    "gpu: needs a CUDA device (skipped when none is present)",
)


def pytest_configure(config: pytest.Config) -> None:
    if config.getoption("--fixtures-dir"):
        os.environ["ERYX_FIXTURES_DIR"] = str(Path(config.getoption("--fixtures-dir")).resolve())
    if config.getoption("--goldens-dir"):
        os.environ[GOLDENS_ENV] = str(Path(config.getoption("--goldens-dir")).resolve())
    config._parity_results = {}  # fixture -> list of stage dicts, filled by the stage tests
    for line in MARKERS:
        config.addinivalue_line("markers", line)
    config._parity_require = parse_require(parity_setting(config, "--parity-require", "parity_require") or "")
    # Only on request: the plugin is loaded in every suite of an environment that has
    # eryx-parity installed, and threads are the user's business.
    threads = config.getoption("--torch-threads")
    if threads and importlib.util.find_spec("torch") is not None:
        import torch

        torch.set_num_threads(threads)
    if config.getoption("--parity"):
        # Found, not imported: pytest imports it as a test module (assertions rewritten).
        path = str(Path(importlib.util.find_spec("parity.testing.stage_tests").origin).resolve())
        if path not in config.args:
            config.args.append(path)


def parity_setting(config: pytest.Config, option: str, ini: str):
    """A command-line option, else the ini value of the same setting."""
    value = config.getoption(option)
    return value if value not in (None, [], "") else config.getini(ini)


def parse_require(text: str) -> frozenset[str]:
    """Stage names required comparable, from 'all' or 'NAME,phaseN,...' (pytest.UsageError naming unknowns)."""
    words = [w.strip() for w in str(text).split(",") if w.strip()]
    if not words:
        return frozenset()
    from parity.stages import STAGES

    out: set[str] = set()
    for word in words:
        if word == "all":
            out |= {s.name for s in STAGES}
        elif word.startswith("phase") and word[5:].isdigit():
            hit = {s.name for s in STAGES if s.phase == int(word[5:])}
            if not hit:
                raise pytest.UsageError(f"--parity-require: no stage in {word}")
            out |= hit
        elif word in {s.name for s in STAGES}:
            out.add(word)
        else:
            raise pytest.UsageError(f"--parity-require: unknown stage {word!r}; see 'parity stages'")
    return frozenset(out)


def unavailable_device(device: str) -> str | None:
    """Why ``device`` cannot run here (one line), or None when it can."""
    if importlib.util.find_spec("torch") is None:
        return None if device == "cpu" else f"device {device!r} needs torch, which is not installed"
    from eryx.errors import EryxInputError
    from eryx.models_torch import resolve_device

    try:
        resolve_device(device)
    except EryxInputError as exc:
        return str(exc)
    return None


def pytest_collection_modifyitems(config: pytest.Config, items: list) -> None:
    stage_items = [item for item in items if "parity_stage" in getattr(item, "fixturenames", ())]
    if stage_items:  # one reason for every stage test, decided once
        why = unavailable_device(config.getoption("--parity-device"))
        if why:
            skip = pytest.mark.skip(reason=f"parity stages skipped: {why}")
            for item in stage_items:
                item.add_marker(skip)
    # The harness runs without torch (the NumPy reference against itself or a dump).
    if importlib.util.find_spec("torch") is not None:
        import torch

        if torch.cuda.is_available():
            return
    skip = pytest.mark.skip(reason="needs a CUDA device; none is present")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


def pytest_generate_tests(metafunc) -> None:
    """One test per registry stage and fixture for any test taking ``parity_stage``."""
    if "parity_stage" not in metafunc.fixturenames:
        return
    from parity.stages import STAGES

    names = parity_fixture_names(metafunc.config)
    params, ids = [], []
    for stage in STAGES:
        for fixture in names:
            params.append(pytest.param(stage, fixture, marks=getattr(pytest.mark, f"phase{stage.phase}")))
            ids.append(f"{stage.id}[{fixture}]")
    metafunc.parametrize(("parity_stage", "parity_fixture"), params, ids=ids)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Write the parity stages' results in the CLI's JSON format (one object per fixture).

    Under pytest-xdist each worker hands its results to the controller (``workeroutput``),
    which merges them per fixture and writes the one file: workers never write it.
    """
    config = session.config
    path = config.getoption("--parity-json")
    if not path:
        return
    from parity.storage.outputs import write_json
    from parity.running.runner import assemble_result, merge_results

    results = [assemble_result(run["run"], run["records"], started_at=run["started_at"],
                               duration_s=sum(r["duration_s"] for r in run["records"]))
               for run in getattr(config, "_parity_results", {}).values()]
    if hasattr(config, "workeroutput"):  # an xdist worker: the controller writes
        from parity.storage.outputs import json_safe

        config.workeroutput["parity_results"] = json.dumps(json_safe(results))
        return
    results += getattr(config, "_parity_worker_results", [])
    if not results:
        return
    by_fixture: dict[str, list[dict]] = {}
    for result in results:
        by_fixture.setdefault(result["fixture"], []).append(result)
    out = [merge_results(group) for group in by_fixture.values()]
    write_json(path, out[0] if len(out) == 1 else out)


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node, error) -> None:
    """xdist controller: collect a finished worker's parity results."""
    text = getattr(node, "workeroutput", {}).get("parity_results")
    if text:
        node.config._parity_worker_results = getattr(node.config, "_parity_worker_results", []) + json.loads(text)


def parity_fixture_names(config: pytest.Config) -> list[str]:
    """Fixtures the parametrised stage tests run on."""
    return list(config.getoption("--parity-fixture") or config.getini("parity_fixtures") or DEFAULT_PARITY_FIXTURES)


def parity_backend_options(config: pytest.Config) -> dict:
    """``make_run`` keyword arguments for the backends chosen on the command line."""
    dump = config.getoption("parity_reference_dump")
    return {"reference": "dump" if dump else parity_setting(config, "parity_reference", "parity_reference"),
            "candidate": parity_setting(config, "parity_candidate", "parity_candidate"),
            "reference_path": dump or config.getoption("parity_reference_path"),
            "candidate_path": config.getoption("parity_candidate_path"),
            "candidate_python": config.getoption("parity_candidate_python")}


def record_stage(config: pytest.Config, run_obj, record: dict) -> None:
    """Keep a stage record for the --parity-json output."""
    import datetime as dt

    runs = config._parity_results
    run = runs.setdefault(run_obj.fixture, {"run": run_obj, "records": [],
                                        "started_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")})
    run["records"].append(record)


# ----------------------------------------------------------------------- fixtures
def fixture_path_or_skip(name: str) -> Path:
    """Resolve a fixture, or skip the test naming the setting that would provide it."""
    from eryx.errors import FixtureNotFoundError
    from eryx.fixtures import resolve_fixture

    try:
        return resolve_fixture(name)
    except FixtureNotFoundError as exc:
        pytest.skip(f"fixture {name!r} not available: {str(exc).split(';')[0]} (set ERYX_FIXTURES_DIR)")


def goldens_dir() -> Path | None:
    value = os.environ.get(GOLDENS_ENV)
    return Path(value) if value else None


def golden_or_skip(name: str) -> tuple[dict, dict]:
    """(arrays, metadata) of golden NAME, or skip naming ERYX_GOLDENS_DIR."""
    import numpy as np

    root = goldens_dir()
    if root is None or not (root / f"{name}.npz").is_file():
        pytest.skip(f"golden {name!r} not available (set {GOLDENS_ENV} to the goldens directory)")
    with np.load(root / f"{name}.npz") as data:
        arrays = {k: data[k] for k in data.files}
    meta = json.loads((root / f"{name}.json").read_text())
    return arrays, meta


@pytest.fixture
def fixture_pdb():
    """Factory: ``fixture_pdb('5zck_p1')`` -> path, or skip with the reason."""
    return fixture_path_or_skip


@pytest.fixture
def golden():
    """Factory: ``golden('5zck_p1_small')`` -> (arrays, meta), or skip with the reason."""
    return golden_or_skip
