"""The result's enumerations: the schema version, a stage's status, a run's verdict.

Below the result types (:mod:`parity.contract.results`), the one validator
(:mod:`parity.contract.result_schema`) and the migrations
(:mod:`parity.contract.migrations`), which all read them; import them from
:mod:`parity.contract.results`, which re-exports them.
"""
from __future__ import annotations

import enum

__all__ = ["SCHEMA_VERSION", "TextEnum", "Status", "Verdict", "DIVERGING", "STATUSES"]

#: The result schema version this parity writes (and the newest it reads).
SCHEMA_VERSION = 1


class TextEnum(str, enum.Enum):
    """A string enumeration that reads as its bare value: ``str()`` and f-strings give
    ``"pass"``, as the bare string did (Python 3.11 changed the default), and its members
    equal those strings (so JSON and stored results are unchanged). The base of
    :class:`Status`, :class:`Verdict` and the history's ``RegressionKind``."""

    __str__ = str.__str__
    __format__ = str.__format__


class Status(TextEnum):
    """The outcome of one stage (``record["status"]``).

    The four values stage records have ever had: ``pass`` (compared and agreed), ``fail``
    (compared and differs), ``error`` (a backend or the harness raised: a divergence),
    ``not_comparable`` (nothing could be compared; the message says why). Other tools' case
    outcomes (the bench's ``skipped``, mutation's ``killed``, locate's ``hit``/``miss``)
    are not stage statuses.
    """

    PASS = "pass"
    FAIL = "fail"
    NOT_COMPARABLE = "not_comparable"
    ERROR = "error"

    @property
    def diverges(self) -> bool:
        """True for ``fail`` and ``error``: the stage counts as a divergence."""
        return self in DIVERGING


#: Every stage status, in the order the history's table constraint lists them.
STATUSES: tuple[Status, ...] = tuple(Status)
#: The statuses that count as a divergence, in the order of preference for "first".
DIVERGING: tuple[Status, ...] = (Status.FAIL, Status.ERROR)


class Verdict(TextEnum):
    """The outcome of a run (``result["verdict"]``)."""

    PASS = "pass"
    DIVERGED = "diverged"
    INCOMPLETE = "incomplete"
