"""Record what the harness says today, so a refactor can show it says the same (issue 17).

``python tests/scenarios/behaviour/record.py`` writes ``tests/scenarios/behaviour/baseline.json``: for the
clean run and every named fault on the synthetic crystal (grid -2,2,3 on every axis,
where a phase sign is visible), the verdict, the first failure and, per stage, the status,
the best diagnosis signature's kind and the cause ("root cause" / "inherited from X");
the same for the two public implementations through their adapters (apeck12/eryx on the
synthetic crystal, the slac-dynaboost torch port on the one-ASU triclinic one, as
tests/backends/test_adapters.py runs them; recorded when ``ERYX_PEERS_DIR`` holds the snapshots);
and the exit code of a set of CLI cases. ``tests/scenarios/behaviour/test_behaviour.py`` recomputes
the same records and requires them equal. Numbers (errors, residuals) are left out on
purpose: the behaviour is what is decided, not the round-off.
"""
from __future__ import annotations

import contextlib
import io
import json
import sys
from pathlib import Path

BASELINE = Path(__file__).with_name("baseline.json")
GRID3 = ((-2, 2, 3),) * 3
#: CLI cases whose exit codes are recorded (no output files; each is seconds at most).
CLI_CASES: list[list[str]] = [
    ["run", "--phases", "1,2", "--no-progress"],
    ["run", "--fault", "linv_upper", "--phases", "1,2", "--no-progress"],
    ["run", "--fault", "nosuch"],
    ["run", "--grid=-2,2,1000000"],
    ["run", "--dtype", "float16"],
    ["run", "--device", "meta"],
    ["check", "--fault", "linv_upper", "--phase", "1,2"],
    ["check", "--fault", "linv_upper", "--stage", "Id"],
    ["check", "--fault", "nosuch"],
    ["check", "--stage", "no_such_stage"],
    ["check", "--fixture", "no_such_fixture"],
    ["compare"],
    ["report"],
    ["stages"],
    ["faults"],
]


def _signature(record: dict) -> str | None:
    best = next((d for d in record.get("diagnosis") or () if d.get("explains")), None)
    return best.get("signature") if best else None


def stage_summary(record: dict) -> dict:
    """What was decided about one stage: status, signature kind, cause."""
    cause = record.get("cause") or {}
    return {"status": record["status"], "signature": _signature(record), "cause": cause.get("text")}


def result_summary(result) -> dict:
    """What a run decided: verdict, first failure, every stage's summary."""
    return {"verdict": result["verdict"], "first_failure": result.get("first_failure"),
            "stages": {r["name"]: stage_summary(r) for r in result["stages"]}}


def run_summary(fault: str | None) -> dict:
    from parity.running.runner import run_parity

    return result_summary(run_parity("synthetic", samplings=GRID3, fault=fault, progress=False))


#: The peers' runs: candidate backend -> (snapshot prefix, fixture, samplings or None for the default).
PEER_RUNS = {
    "upstream-eryx": ("apeck12-eryx", "synthetic", None),
    "torch-port": ("slac-dynaboost-eryx", "synth_triclinic", ((-2, 2, 2), (-2, 2, 2), (-2, 2, 3))),
}


def peer_snapshot(prefix: str) -> Path | None:
    """The peer's snapshot tarball in ERYX_PEERS_DIR, or None."""
    import os

    folder = os.environ.get("ERYX_PEERS_DIR")
    found = sorted(Path(folder).glob(f"{prefix}-*.tar.gz")) if folder else []
    return found[0] if found else None


def peer_summary(candidate: str) -> dict:
    from parity.running.runner import run_parity

    prefix, fixture, samplings = PEER_RUNS[candidate]
    tar = peer_snapshot(prefix)
    if tar is None:
        raise FileNotFoundError(f"no {prefix}-*.tar.gz in ERYX_PEERS_DIR")
    kwargs = {"samplings": samplings} if samplings else {}
    return result_summary(run_parity(fixture, candidate=candidate, candidate_path=str(tar), progress=False,
                                     **kwargs))


def cli_code(argv: list[str]) -> int:
    from parity.commands import cli

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            return int(cli.main(argv))
        except SystemExit as exc:  # argparse
            return int(exc.code or 0)


def record() -> dict:
    from parity.backends.faults import FAULTS

    return {"runs": {name or "clean": run_summary(name) for name in [None, *sorted(FAULTS)]},
            "peers": {name: peer_summary(name) for name in PEER_RUNS},
            "cli": {" ".join(argv): cli_code(argv) for argv in CLI_CASES}}


if __name__ == "__main__":
    data = record()
    BASELINE.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    print(f"wrote {BASELINE} ({len(data['runs'])} runs, {len(data['peers'])} peers, {len(data['cli'])} CLI cases)", file=sys.stderr)
