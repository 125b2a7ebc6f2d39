"""Record what the harness says today, so a refactor can show it says the same (issue 17).

``python tests/behaviour/record.py`` writes ``tests/behaviour/baseline.json``: for the
clean run and every named fault on the synthetic crystal (grid -2,2,3 on every axis,
where a phase sign is visible), the verdict, the first failure and, per stage, the status,
the best diagnosis signature's kind and the cause ("root cause" / "inherited from X");
and the exit code of a set of CLI cases. ``tests/behaviour/test_behaviour.py`` recomputes
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


def run_summary(fault: str | None) -> dict:
    from parity.running.runner import run_parity

    result = run_parity("synthetic", samplings=GRID3, fault=fault, progress=False)
    return {"verdict": result["verdict"], "first_failure": result.get("first_failure"),
            "stages": {r["name"]: stage_summary(r) for r in result["stages"]}}


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
            "cli": {" ".join(argv): cli_code(argv) for argv in CLI_CASES}}


if __name__ == "__main__":
    data = record()
    BASELINE.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    print(f"wrote {BASELINE} ({len(data['runs'])} runs, {len(data['cli'])} CLI cases)", file=sys.stderr)
