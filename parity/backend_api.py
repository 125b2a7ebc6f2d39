"""The public API for writing a backend: import everything a backend needs from here.

A backend is any implementation of the OnePhonon model the harness can judge. It is a
:class:`Backend` subclass (a factory with a name) whose :meth:`Backend.open` returns a
:class:`Session` for one :class:`RunSpec`; the session builds the model once
(:meth:`Session._build`) and computes quantities of the contract by name
(:meth:`Session._compute`), raising :class:`NotProvided` for the ones it does not offer.
Register it under the entry-point group :data:`ENTRY_POINT_GROUP`; check it with
``parity backends --check NAME``; see ``docs/writing-a-backend.md``.

The names below are stable: a name that moves keeps an alias here that warns
(DeprecationWarning) for at least one minor release.

Example
-------
>>> from parity.backend_api import Backend, NotProvided, Session
>>> class MySession(Session):
...     def _build(self):
...         self.model = None  # construct your model from self.spec here
...     def _compute(self, name):
...         raise NotProvided(f"{name} is not computed yet")
>>> class MyBackend(Backend):
...     name = "mine"
...     @classmethod
...     def static_provides(cls):
...         return frozenset()
...     def open(self, spec):
...         return MySession(self, spec)
>>> MyBackend().provides()
frozenset()
"""
from __future__ import annotations

import warnings
from typing import Any

from parity.backends import ENTRY_POINT_GROUP, BackendError, get_backend, registered_backends
from parity.backends.base import Backend, BuildFailure, NotProvided, Session, build_failure
from parity.backends.selfcheck import ContractReport, check_backend, expected_shape, format_report, shape_symbols
from parity.contract.quantities import QUANTITIES, QUANTITY_NAMES, Quantity, get_quantity
from parity.contract.spec import (GEMMI_SAMPLE_SIZE, GRAD_Q_SAMPLE_SIZE, OFFGRID_SHIFT_Q, PROBE_CELL, Q_SAMPLE_SIZE, RunSpec,
                   make_spec)

#: Version of this API: bumped when a name here changes meaning.
API_VERSION = 1

#: What a backend reads from a :class:`RunSpec` (attribute -> meaning). Nothing else is
#: handed to a backend.
SPEC_FIELDS: dict[str, str] = {
    "pdb_path": "the resolved PDB file (str)",
    "samplings": "((hmin, hmax, L_h), (kmin, kmax, L_k), (lmin, lmax, L_l)): integer grid bounds and oversampling",
    "params": "model parameters: gnm_cutoff (A), gamma_intra, gamma_inter, res_limit (A), expand_p1 (bool)",
    "model_kwargs": "params as keyword arguments (a copy)",
    "device": "'cpu', 'cuda', 'cuda:0', ...: where a backend that can choose computes",
    "dtype": "'float64' or 'float32': the run's real precision (complex is complex128 / complex64)",
    "real_dtype": "dtype as a numpy.dtype",
    "map_shape": "(n_h, n_k, n_l) of the grid",
    "n_q": "grid points, n_h n_k n_l",
    "oversampling": "(L_h, L_k, L_l)",
    "n_bz": "L_h L_k L_l BZ points",
    "q_sample": "(n_s,) int64 flat grid indices of the q sample (form_factors, structure_factors, d_spacing, "
                "Id_q_sample)",
    "grad_q_sample": "(n_g,) int64 flat grid indices off k = 0 (grad_q, Id_q_offgrid)",
    "offgrid_shift_q": "(3,) 1/A, in the run's dtype: added to the grad_q_sample's q for Id_q_offgrid",
    "oracle_hkl": "(n_hkl, 3) float integer reflections for F_hkl",
    "bragg_free": "(n_q,) bool, grid points off k = 0",
}

#: Old name -> (module attribute path, new name). Empty: nothing has moved yet.
_DEPRECATED: dict[str, tuple[Any, str]] = {}


def __getattr__(name: str) -> Any:
    if name in _DEPRECATED:
        value, new = _DEPRECATED[name]
        warnings.warn(f"parity.backend_api.{name} is deprecated; use {new}", DeprecationWarning, stacklevel=2)
        return value
    raise AttributeError(f"module 'parity.backend_api' has no attribute {name!r}")


__all__ = ["API_VERSION", "Backend", "Session", "NotProvided", "BuildFailure", "build_failure", "RunSpec",
           "make_spec", "SPEC_FIELDS", "Quantity", "QUANTITIES", "QUANTITY_NAMES", "get_quantity",
           "OFFGRID_SHIFT_Q", "PROBE_CELL", "Q_SAMPLE_SIZE", "GRAD_Q_SAMPLE_SIZE", "GEMMI_SAMPLE_SIZE",
           "ENTRY_POINT_GROUP", "BackendError", "get_backend", "registered_backends", "check_backend",
           "ContractReport", "format_report", "expected_shape", "shape_symbols"]
