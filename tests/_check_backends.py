"""User-style backends for the check, cause and device tests, loaded as ``tests._check_backends:NAME``.

Unlike ``tests._backends`` (the torch backend with one thing broken), most of these are
written the way a user's backend would be: a plain :class:`parity.backends.Backend` with no
``check_spec``, no cross-feed, its values taken from the NumPy reference and edited.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from parity.backends import Backend, NotProvided, Session
from parity.backends.eryx_numpy import NumpyBackend

from ._backends import FailsToBuildPhonons


class _EditedSession(Session):
    """The NumPy reference's quantities, some edited, some withheld."""

    def __init__(self, backend, spec) -> None:
        super().__init__(backend, spec)
        self.inner = NumpyBackend().open(spec)

    def _build(self) -> None:
        self.backend.before_build(self.spec)
        self.inner.build()
        if self.inner.build_error is not None:
            raise self.inner.build_error

    def _compute(self, name: str) -> Any:
        if name not in self.backend.provides():
            raise NotProvided(f"{self.backend.name} does not compute {name}")
        value = self.inner.get(name)
        edit = self.backend.edits.get(name)
        return edit(self, np.asarray(value)) if edit else value


class _UserBackend(Backend):
    name = "user"
    description = "a user's backend (test)"
    edits: dict = {}
    withheld: frozenset = frozenset()

    def provides(self) -> frozenset[str]:
        return NumpyBackend.static_provides() - self.withheld

    def open(self, spec) -> Session:
        return _EditedSession(self, spec)

    def before_build(self, spec) -> None:
        pass


class UsesItsDevice(_UserBackend):
    """Puts a tensor on the spec's device while building, with no check_spec: a device that
    does not exist here would raise inside it (a traceback, exit 1) without the central check."""

    name = "uses-its-device"

    def before_build(self, spec) -> None:
        import torch

        torch.zeros(1, device=spec.device)


def _regularised_linv(session, Linv):
    M = session.inner.get("Mmat")
    M = np.asarray(M).reshape(Linv.shape)
    return np.linalg.inv(np.linalg.cholesky(M + 1e-6 * np.eye(len(M))))


class PortLike(_UserBackend):
    """Three independent defects, like the public torch port's: k without 2 pi (phase 1),
    ASU coordinates rounded to float32 and Linv of Mmat + 1e-6 I (phase 2). asu_xyz and
    Linv do not depend on kvec: three independent root causes, by the input graph."""

    name = "port-like"
    edits = {
        "kvec": lambda s, v: v / (2 * np.pi),
        "asu_xyz": lambda s, v: v.astype(np.float32).astype(np.float64),
        "Linv": _regularised_linv,
        # their K uses their k (what a port with that kvec computes), so K inherits kvec
        "K": lambda s, v: _k_with(s, np.asarray(s.inner.get("kvec")) / (2 * np.pi)),
    }


def _k_with(session, kvec):
    """K(k) of ALGORITHM.md section 6 at the given k (n_bz, n_dof, n_dof)."""
    H = np.asarray(session.inner.get("hessian"))
    origins = np.asarray(session.inner.get("cell_origin"))
    n_dof = H.shape[0] * H.shape[1]
    kk = kvec.reshape(-1, 3)
    phase = np.cos(kk @ origins.T) + 1j * np.sin(kk @ origins.T)
    return np.einsum("bc,iacjd->biajd", phase, H).reshape(-1, n_dof, n_dof)


class MapsOnly(_UserBackend):
    """Provides only the diffuse map Id (and the grid it is on): every other stage is not comparable."""

    name = "maps-only"

    def provides(self) -> frozenset[str]:
        return frozenset({"Id", "hkl_grid", "map_shape", "q_grid"})


class MapsOnlyDoubled(MapsOnly):
    """The same, with Id twice as large."""

    name = "maps-only-doubled"
    edits = {"Id": lambda s, v: 2 * v}


class DivergesEarlyRefusesLate(FailsToBuildPhonons):
    """k 1 % too long (phase 1), then its construction refuses in phase 3."""

    name = "diverges-early-refuses-late"
    session_breaks = {"kvec": lambda v: 1.01 * v}
