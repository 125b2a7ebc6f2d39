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

from .base import Backend, BuildFailure, NotProvided, Session, build_failure

__all__ = ["Backend", "BuildFailure", "NotProvided", "Session", "build_failure", "ENTRY_POINT_GROUP",
           "BUILTIN_BACKENDS", "registered_backends", "get_backend", "BackendError"]

ENTRY_POINT_GROUP = "eryx_parity.backends"
BUILTIN_BACKENDS: dict[str, str] = {
    "numpy": "parity.backends.numpy:NumpyBackend",
    "torch": "parity.backends.torch:TorchBackend",
    "dump": "parity.backends.dump:DumpBackend",
    "upstream-eryx": "parity.backends.upstream:UpstreamEryxBackend",
    "torch-port": "parity.backends.port:TorchPortBackend",
}


class BackendError(ValueError):
    """An unknown backend, or one that cannot be loaded or configured (a usage error)."""


def registered_backends() -> dict[str, str]:
    """name -> ``module:callable`` for the built-ins and every installed entry point."""
    found = dict(BUILTIN_BACKENDS)
    from importlib.metadata import entry_points

    for ep in entry_points(group=ENTRY_POINT_GROUP):
        found.setdefault(ep.name, ep.value)
    return found


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
    known = registered_backends()
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


def describe_backends() -> list[dict]:
    """One row per registered backend: name, target, description, provided quantities (or the load error)."""
    rows = []
    for name, target in sorted(registered_backends().items()):
        row: dict[str, Any] = {"name": name, "target": target}
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
