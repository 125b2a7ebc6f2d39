"""Backends by name: the project's own, the public implementations, stored dumps, anyone's.

A backend is found by

- a registered name: the entry-point group ``eryx_parity.backends`` (a user's package adds
  ``[project.entry-points."eryx_parity.backends"] mine = "mypkg.parity:MyBackend"``), plus
  the built-ins below, which work without installing this package;
- ``module:callable``: any importable callable returning a :class:`Backend`.

The callable is called as ``factory(path=..., python=..., **options)``.
"""
from __future__ import annotations

import importlib
from typing import Any

from eryx.errors import EryxInputError

from parity.backends.base import Backend, BuildFailure, NotProvided, Session, build_failure

__all__ = ["Backend", "BuildFailure", "NotProvided", "Session", "build_failure", "ENTRY_POINT_GROUP",
           "BUILTIN_BACKENDS", "registered_backends", "backend_registrations", "backend_clashes", "get_backend", "resolve_backend",
           "BackendError"]

ENTRY_POINT_GROUP = "eryx_parity.backends"
BUILTIN_BACKENDS: dict[str, str] = {
    "numpy": "parity.backends.eryx_numpy:NumpyBackend",
    "torch": "parity.backends.eryx_torch:TorchBackend",
    "dump": "parity.backends.dump:DumpBackend",
    "upstream-eryx": "parity.backends.upstream:UpstreamEryxBackend",
    "torch-port": "parity.backends.port:TorchPortBackend",
}


class BackendError(ValueError):
    """An unknown backend, or one that cannot be loaded or configured (a usage error)."""


BUILTIN_DISTRIBUTION = "eryx-parity"


def backend_registrations() -> dict[str, list[tuple[str, str]]]:
    """name -> [(distribution, ``module:callable``), ...]: the built-ins, then every entry point.

    One pair per distinct target: this package's own entry points repeat its built-ins.
    """
    from importlib.metadata import entry_points

    found: dict[str, list[tuple[str, str]]] = {n: [(BUILTIN_DISTRIBUTION, t)] for n, t in BUILTIN_BACKENDS.items()}
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        dist = getattr(getattr(ep, "dist", None), "name", None) or "an unknown distribution"
        pairs = found.setdefault(ep.name, [])
        if all(target != ep.value for _, target in pairs):
            pairs.append((dist, ep.value))
    return found


def clash_message(name: str, pairs: list[tuple[str, str]]) -> str:
    """Why backend ``name`` is refused: two or more distributions register it."""
    who = " and ".join(f"{dist} ({target})" for dist, target in pairs)
    return (f"backend name {name!r} is registered by more than one distribution: {who}; uninstall one, "
            f"rename its entry point in group {ENTRY_POINT_GROUP!r}, or give 'module:callable'")


def backend_clashes() -> dict[str, str]:
    """name -> the refusal message, for every name registered to more than one target."""
    return {name: clash_message(name, pairs) for name, pairs in backend_registrations().items() if len(pairs) > 1}


def registered_backends() -> dict[str, str]:
    """name -> ``module:callable`` for the built-ins and every installed entry point
    (a clashing name maps to its first registration; :func:`get_backend` refuses it)."""
    return {name: pairs[0][1] for name, pairs in backend_registrations().items()}


def _load(target: str) -> Any:
    module_name, _, attr = target.partition(":")
    if not module_name or not attr:
        raise BackendError(f"backend {target!r}: expected a registered name or 'module:callable'")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise BackendError(f"backend {target!r}: cannot import {module_name!r} ({exc})") from None
    obj = module
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise BackendError(f"backend {target!r}: {module_name!r} has no attribute {attr!r}") from None
    return obj


def get_backend(name: str, *, path: str | None = None, python: str | None = None, **options: Any) -> Backend:
    """Instantiate backend ``name`` (a registered name or ``module:callable``).

    Raises
    ------
    BackendError
        Unknown name, import failure, a bad option, or a factory that returns no Backend.
    """
    registrations = backend_registrations()
    if len(registrations.get(name, ())) > 1:
        raise BackendError(clash_message(name, registrations[name]))
    known = {n: pairs[0][1] for n, pairs in registrations.items()}
    target = known.get(name, name if ":" in name else None)
    if target is None:
        raise BackendError(f"unknown backend {name!r}; known backends: {', '.join(sorted(known))} "
                           f"(or give 'module:callable')")
    factory = _load(target)
    try:
        backend = factory(path=path, python=python, **options)
    except (TypeError, ValueError) as exc:
        raise BackendError(f"backend {name!r}: {exc}") from None
    if not isinstance(backend, Backend):
        raise BackendError(f"backend {name!r}: {target} returned {type(backend).__name__}, not a "
                           f"parity.backends.Backend")
    return backend


def resolve_backend(which: str | Backend, path: str | None, python: str | None, options: dict,
                    side: str) -> Backend:
    """A backend given by name (or already built) for one side of a run (``side``: the option's name).

    Raises
    ------
    EryxInputError
        A usage error, named after the option: ``--reference: unknown backend ...``.
    """
    if isinstance(which, Backend):
        return which
    try:
        return get_backend(which, path=path, python=python, **options)
    except ValueError as exc:  # BackendError, a dump that cannot be read, a bad path
        raise EryxInputError(f"--{side}: {exc}") from None


def describe_backends() -> list[dict]:
    """One row per registered backend: name, target, description, provided quantities (or the load error)."""
    rows = []
    for name, pairs in sorted(backend_registrations().items()):
        row: dict[str, Any] = {"name": name, "target": pairs[0][1], "distribution": pairs[0][0]}
        if len(pairs) > 1:
            row["error"] = clash_message(name, pairs)
            rows.append(row)
            continue
        target = pairs[0][1]
        try:
            factory = _load(target)
            row["description"] = getattr(factory, "description", "") or (factory.__doc__ or "").strip().split("\n")[0]
            provides = getattr(factory, "static_provides", None)
            row["provides"] = sorted(provides()) if callable(provides) else None
            crossfeeds = getattr(factory, "static_crossfeeds", None)
            row["crossfeeds"] = sorted(crossfeeds()) if callable(crossfeeds) else None
        except BackendError as exc:
            row["error"] = str(exc)
        rows.append(row)
    return rows
