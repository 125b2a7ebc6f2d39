"""The harness decides today what it decided when the baseline was recorded (issue 17:
"behaviour unchanged, shown, not claimed"). Re-record on purpose, never to make this pass:
``python tests/scenarios/behaviour/record.py``, and say why in the commit."""
from __future__ import annotations

import json

import pytest

from . import record as rec

BASELINE = json.loads(rec.BASELINE.read_text(encoding="utf-8"))


@pytest.mark.parametrize("name", sorted(BASELINE["runs"]))
def test_runs_decide_as_recorded(name):
    got = rec.run_summary(None if name == "clean" else name)
    want = BASELINE["runs"][name]
    assert (got["verdict"], got["first_failure"]) == (want["verdict"], want["first_failure"])
    changed = {s: (want["stages"].get(s), v) for s, v in got["stages"].items() if want["stages"].get(s) != v}
    assert not changed and set(got["stages"]) == set(want["stages"]), changed


def test_cli_exit_codes_as_recorded():
    got = {" ".join(argv): rec.cli_code(argv) for argv in rec.CLI_CASES}
    assert got == BASELINE["cli"]


def test_the_comparison_can_fail():
    # A different decision is seen: the clean run's record is not a fault's.
    assert BASELINE["runs"]["clean"] != BASELINE["runs"]["linv_upper"]
    assert BASELINE["runs"]["linv_upper"]["stages"]["Linv"]["cause"] == "root cause"


@pytest.mark.parametrize("candidate", sorted(BASELINE["peers"]))
def test_peers_decide_as_recorded(candidate):
    """The public implementations through their adapters: same verdicts, failures, causes."""
    if rec.peer_snapshot(rec.PEER_RUNS[candidate][0]) is None:
        pytest.skip("no peer snapshots: set ERYX_PEERS_DIR to the folder of the apeck12/slac-dynaboost tarballs")
    got, want = rec.peer_summary(candidate), BASELINE["peers"][candidate]
    assert (got["verdict"], got["first_failure"]) == (want["verdict"], want["first_failure"])
    changed = {s: (want["stages"].get(s), v) for s, v in got["stages"].items() if want["stages"].get(s) != v}
    assert not changed and set(got["stages"]) == set(want["stages"]), changed
