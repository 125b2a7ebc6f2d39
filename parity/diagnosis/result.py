"""The result of a diagnosis: :class:`Signature`, one hypothesis tested against the data.

Public API
----------
Signature
NO_SIGNATURE
summary_phrase(signatures) -> str
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Iterable

from parity.storage.outputs import json_safe

#: What :func:`summary_phrase` says when no signature explains the difference.
NO_SIGNATURE = "no simple signature"


@dataclass(frozen=True)
class Signature:
    """One hypothesis about a divergence, tested against the data.

    Attributes
    ----------
    name : str
        Kind of signature (``"constant_factor"``, ``"transpose"``, ``"shift"``, ...;
        see ``docs/diagnosis.md``).
    phrase : str
        At most about 40 characters, for the terminal table (``"x 1/3"``).
    sentence : str
        One full sentence for the HTML report.
    params : dict
        JSON-safe parameters: factor and its expression, axis, shift, counts,
        ``error_before`` (the normwise error the signature is asked to explain),
        ``allowed`` (the residual bound it was judged by), ``cut_short``.
    residual : float
        ``max|candidate - T(reference)| / max|T(reference)|`` left after applying
        the signature (for descriptive signatures: see ``docs/diagnosis.md``).
    explains : bool
        True when the residual is within the stage's tier (or the stated allowance).
    """

    name: str
    phrase: str
    sentence: str
    params: dict = field(default_factory=dict)
    residual: float = math.nan
    explains: bool = False

    def to_dict(self) -> dict:
        """JSON-safe dict (NaN/inf -> None, complex -> {"re", "im"})."""
        return json_safe({"signature": self.name, "phrase": self.phrase, "sentence": self.sentence,
                          "params": self.params, "residual": self.residual, "explains": self.explains})


def summary_phrase(signatures: Iterable[Signature]) -> str:
    """The phrase of the best explaining signature, or ``"no simple signature"``.

    Parameters
    ----------
    signatures : iterable of Signature
        As returned by the ``diagnose_*`` functions (best first).

    Returns
    -------
    str
    """
    for s in signatures:
        if s.explains:
            return s.phrase
    return NO_SIGNATURE
