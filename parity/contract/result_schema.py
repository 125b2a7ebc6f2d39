"""The types a saved parity result's fields must have (kept for importers).

The checks now live with the result types, in :mod:`parity.contract.results` (one
validator for ``parity report`` and the history store); these names stay importable.
"""
from __future__ import annotations

from parity.contract.results import MAX_DEPTH, ResultTypeError, check_result_types

__all__ = ["MAX_DEPTH", "ResultTypeError", "check_result_types"]
