"""The NumPy reference computed once per spec and served to every mutant's run.

:func:`keep_session` stores a computed NumPy reference session in this process (the fork
server's parent, :func:`parity.mutation.execute.warm_reference`); :class:`WarmNumpyBackend`,
named in a child's ``parity run --reference parity.mutation.reference:WarmNumpyBackend`` (the
backends' public ``module:callable`` form), opens that session again for the same spec. A
forked child inherits the stored sessions: its run reads the reference's quantities without
computing them. Nothing is patched; any other spec gets a fresh NumPy session.
"""
from __future__ import annotations

from parity.backends.base import Session
from parity.backends.eryx_numpy import NumpyBackend
from parity.contract.spec import RunSpec

#: Spec key -> the NumPy reference session computed in this process (see :func:`spec_key`).
_SESSIONS: dict[tuple, Session] = {}


def spec_key(spec: RunSpec) -> tuple:
    """What makes two specs the same reference input: the fixture file, the grid (h, k, l
    ``(min, max, oversampling)`` triples), the model parameters, the device and the dtype."""
    return (spec.pdb_path, tuple(map(tuple, spec.samplings)), tuple(sorted(dict(spec.params).items())),
            spec.device, spec.dtype)


def keep_session(session: Session) -> None:
    """Serve ``session`` (a NumPy reference session, its quantities computed) to every
    :class:`WarmNumpyBackend` opened on the same spec in this process and its forked children."""
    _SESSIONS[spec_key(session.spec)] = session


def forget_sessions() -> None:
    """Drop every kept session (the next :meth:`WarmNumpyBackend.open` computes afresh)."""
    _SESSIONS.clear()


class WarmNumpyBackend(NumpyBackend):
    """The NumPy reference (``numpy``), opening the kept session of a spec when there is one.

    The NumPy reference does not change between mutants (only the torch backend is mutated),
    so a run against this backend decides as a run against ``numpy``.
    """

    def open(self, spec: RunSpec) -> Session:
        kept = _SESSIONS.get(spec_key(spec))
        return kept if kept is not None else super().open(spec)
