"""Bringing results written by earlier versions up to date, one function per version step.

Modelled on asv's ``Results`` (``update_to_2``, ...): the function ``update_to_N`` takes a
result of version ``N - 1`` and returns it in version ``N``; :func:`migrate` applies
every step from the result's ``schema_version`` up to
:data:`parity.contract.results.SCHEMA_VERSION`, in order, on load
(:func:`parity.contract.result_schema.validate_result` calls it, so ``parity report``, the history
store and :meth:`parity.contract.results.RunResult.from_dict` all read old files the same
way). A step never changes its input: it returns a new dict.

Version 1 grew by additions only (docs/architecture.md lists them: ``reference``,
``candidate``, ``verdict``, ``incomplete``, ``n_compared``, ``notes``, ``tier_overrides``,
per stage ``n_compared``, ``max_rel_elementwise``, ``diagnosis``), so a version-1 file may
lack them. :func:`update_to_1` completes such a result: the typed loader
(:meth:`RunResult.from_dict`) applies it; the dict loaders leave the file's keys as they
are (a renderer shows an absent key as "-").

To change the schema: raise ``SCHEMA_VERSION``, write ``update_to_<new>`` here, add it to
:data:`MIGRATIONS`, and commit a result written by the old version under
``tests/data/legacy/`` (the tests load every file there).
"""
from __future__ import annotations

from typing import Any, Callable, Mapping

from parity.contract.statuses import DIVERGING, SCHEMA_VERSION, Status, Verdict

__all__ = ["MIGRATIONS", "migrate", "update_to_1"]


def _derived_verdict(result: Mapping[str, Any]) -> str:
    """The verdict of a result written before ``verdict`` existed.

    Such results had ``passed`` only; ``incomplete`` (a map stage compared nothing) came
    with ``verdict``, so an old result either passed or diverged.
    """
    return Verdict.PASS.value if result.get("passed") else Verdict.DIVERGED.value


def _first_failure(stages: list[Mapping[str, Any]]) -> str | None:
    return next((s["name"] for s in stages if s.get("status") in DIVERGING), None)


def update_to_1(result: Mapping[str, Any]) -> dict:
    """Complete a version-1 result written before the keys added within version 1.

    Absent keys get the value a run without them means: ``verdict`` from ``passed``;
    ``incomplete``, ``notes``, ``tier_overrides`` empty; ``n_compared`` the stages' sum
    (each stage's ``n_compared``: its ``n_total`` when it was compared, else 0);
    ``first_failure`` the first failing stage; per stage ``max_rel_elementwise`` null
    and ``diagnosis`` empty. Present keys are kept as they are.

    Returns
    -------
    dict
        A new result (``result`` is not changed).
    """
    stages = []
    for stage in result.get("stages") or []:
        compared = stage.get("status") in (Status.PASS, Status.FAIL)
        stages.append({"max_rel_elementwise": None, "diagnosis": [],
                       "n_compared": (stage.get("n_total") or 0) if compared else 0, **stage})
    out = dict(result)
    out["stages"] = stages
    out.setdefault("verdict", _derived_verdict(result))
    out.setdefault("first_failure", _first_failure(stages))
    for key in ("incomplete", "notes", "tier_overrides"):
        out.setdefault(key, [])
    out.setdefault("n_compared", int(sum(s["n_compared"] or 0 for s in stages)))
    return out


#: ``{N: update_to_N}``: the step from version N - 1 to N (none yet above version 1).
MIGRATIONS: dict[int, Callable[[Mapping[str, Any]], dict]] = {}


def migrate(result: Mapping[str, Any]) -> Mapping[str, Any]:
    """``result`` brought from its ``schema_version`` to :data:`SCHEMA_VERSION`.

    Parameters
    ----------
    result
        A result whose ``schema_version`` is an integer from 1 to ``SCHEMA_VERSION``
        (:func:`parity.contract.result_schema.validate_result` checks that first).

    Returns
    -------
    Mapping
        ``result`` itself when it is current, else a new, migrated dict.
    """
    version = result["schema_version"]
    for step in range(version + 1, SCHEMA_VERSION + 1):
        result = {**MIGRATIONS[step](result), "schema_version": step}
    return result
