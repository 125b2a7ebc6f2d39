"""The files a subcommand writes: refused before any work when they clash, written all or none.

:func:`refuse_bad_outputs` checks ``--json``/``--html``/``--out`` against the inputs before a
backend runs; :func:`write_result` writes a run's JSON result and HTML report together
through :func:`write_together` (every file or none, Ctrl-C held off while they are
replaced) and names them; :func:`exit_code` is a run's exit code from its verdict.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from parity.contract.results import Verdict
from parity.contract.options import EXIT_DIVERGED, EXIT_INCOMPLETE, EXIT_OK, UsageError
from parity.storage.inputs import fixture_inputs
from parity.storage.outputs import check_outputs, json_safe, write_together


def refuse_bad_outputs(args: argparse.Namespace, inputs: dict | None = None) -> None:
    """Refuse, before any work, outputs that cannot or must not be written (UsageError).

    ``inputs``: option -> path of further files read (``--reference-dump``, ``RESULT``); the
    fixture file is added from ``--fixture``.
    """
    outputs = {"--json": getattr(args, "json", None) if isinstance(getattr(args, "json", None), str) else None,
               "--html": getattr(args, "html", None), "--out": getattr(args, "out", None)}
    try:
        check_outputs(outputs, {**fixture_inputs(args), **(inputs or {})})
    except ValueError as exc:
        raise UsageError(str(exc)) from None


def write_result(args: argparse.Namespace, result: dict) -> None:
    """Write ``result`` as JSON (``--json``) and as an HTML report (``--html``), together; print
    one line per file written."""
    files: dict[Path, str] = {}
    if getattr(args, "json", None):
        files[Path(args.json)] = json.dumps(json_safe(result), indent=1, allow_nan=False)
    if getattr(args, "html", None):
        # function-local: the report's renderer (jinja2, matplotlib) only when a report is asked for
        from parity.rendering.report import render_report

        files[Path(args.html)] = render_report(result)
    write_together(files)
    for option, label in (("json", "JSON result"), ("html", "HTML report")):
        if getattr(args, option, None):
            print(f"{label}: {getattr(args, option)}")


def exit_code(result: dict) -> int:
    """A run's exit code: 0 pass, 3 incomplete, 1 anything else (a divergence)."""
    return {Verdict.PASS: EXIT_OK, Verdict.INCOMPLETE: EXIT_INCOMPLETE}.get(result.get("verdict", ""), EXIT_DIVERGED)
