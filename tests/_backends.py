"""Deliberately wrong backends for the harness's own tests, loaded as ``tests._backends:NAME``.

They go through the same door a user's backend does (``module:callable``), so the tests
also prove the plug-in path. Each is the project's torch backend with one thing broken.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from eryx.errors import EryxInputError
from parity.backends import NotProvided
from parity.backends.eryx_torch import TorchBackend, TorchSession


class _Session(TorchSession):
    #: quantity -> callable(value) -> value (or raises)
    breaks: dict = {}

    def _compute(self, name: str) -> Any:
        value = super()._compute(name)
        if name in self.breaks:
            return self.breaks[name](value)
        return value


def _raise_input_error(value):
    raise EryxInputError("rank must be -1 or in [0, 24), got 99 (the candidate's own check)")


def _nan_q(value):
    raise EryxInputError("q_vectors contains NaN or infinite values")


class _Broken(TorchBackend):
    session_breaks: dict = {}

    def open(self, spec):
        session = _Session(self, spec)
        session.breaks = dict(self.session_breaks)
        return session


class RaisesInputErrorOnMaps(_Broken):
    """The candidate refuses to compute its maps with its own EryxInputError."""

    name = "raises-input-error"
    session_breaks = {"Id": _raise_input_error, "Id_data_adp": _nan_q}


class DoublesTheMap(_Broken):
    """Id twice as large: a plain numerical divergence."""

    name = "doubles-the-map"
    session_breaks = {"Id": lambda v: 2 * v}


class LacksTheHessian(_Broken):
    """Provides no hessian: that stage must be not comparable, never a pass."""

    name = "lacks-the-hessian"

    def provides(self):
        return super().provides() - {"hessian"}

    def open(self, spec):
        session = super().open(spec)
        original = session._compute

        def _compute(name):
            if name == "hessian":
                raise NotProvided("this backend keeps no projected Hessian")
            return original(name)
        session._compute = _compute
        return session


class FailsToBuildPhonons(_Broken):
    """Construction raises in its phonon step (phase 3), after the grid and matrices were built."""

    name = "fails-to-build-phonons"

    def open(self, spec):
        session = super().open(spec)
        original = session._build

        def _build():
            original()
            for attr in ("K", "D", "Winv", "V", "U", "Kinv", "covar", "ADP", "_K_all", "_Winv_all", "_V_all"):
                delattr(session.model, attr)  # what the phonon step would have made
            error = EryxInputError("undefined ADP scale (the candidate's own refusal)")
            error.build_step, error.build_phase = "phonons", 3
            raise error
        session._build = _build
        return session


def not_a_backend(**kwargs):
    """A factory returning something else: must be refused naming what it returned."""
    return np.zeros(3)
