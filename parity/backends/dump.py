"""Stage dumps: every quantity a backend provides, in one ``.npz`` file, and a dump as a backend.

A dump is a NumPy ``.npz`` archive (``numpy.load(path)`` reads it; no pickle anywhere):
each quantity of ``parity.contract.quantities`` under its own name, at full size and in the
backend's own dtype, plus ``__manifest__``, a 0-d unicode array holding JSON:

``schema`` ("eryx-parity-dump"), ``schema_version``, ``created_at``, ``backend`` (its
info: name, version or commit, origin), ``spec`` (fixture, fixture_sha256, samplings,
params, device, dtype), ``environment`` (library versions, host), ``quantities``
({name: {shape, dtype}}), ``missing`` ({name: why the backend does not provide it}),
``errors`` ({name: {message, traceback}}), ``build_error`` (or null), ``dtypes`` (the
backend's dtype audit), ``seconds`` ({name: time to compute}).

Written atomically (a temporary file in the target folder, then ``os.replace``): a reader
never sees half a dump.
"""
from __future__ import annotations

import datetime as _dt
import json
import math
import os
import time
import traceback as _tb
import zipfile
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np

from eryx.errors import format_bytes
from eryx.probes import listen
from eryx.validation import default_memory_limit

from parity.storage.outputs import check_output_path, json_safe, write_atomic
from parity.contract.provenance import environment as _environment
from parity.contract.quantities import QUANTITY_NAMES
from parity.contract.spec import RunSpec
from parity.backends.base import Backend, BuildFailure, NotProvided, Session
from parity.backends.probe_recorder import ProbeRecorder
from parity.contract.values import as_numpy

DUMP_SCHEMA = "eryx-parity-dump"
DUMP_SCHEMA_VERSION = 1
MANIFEST_KEY = "__manifest__"


class DumpError(ValueError):
    """A dump that cannot be read, or one made from other inputs (a usage error)."""


class DumpedError(RuntimeError):
    """A quantity whose computation raised when the dump was made (message and traceback kept)."""


def to_numpy(value: Any) -> np.ndarray:
    """A quantity as a NumPy array (torch tensors detached, conjugation resolved)."""
    return np.asarray(as_numpy(value))


def collect(session: Session, names: Iterable[str] = QUANTITY_NAMES,
            on_quantity: Callable[[str], None] | None = None) -> tuple[dict, dict]:
    """Compute every quantity ``session`` provides: (arrays, manifest parts).

    Never raises for a quantity: what the backend does not provide goes to ``missing``,
    what raises goes to ``errors`` (message and traceback), a construction failure to
    ``build_error``.
    """
    session.build()
    arrays: dict[str, np.ndarray] = {}
    parts: dict[str, Any] = {"missing": {}, "errors": {}, "seconds": {}, "dtypes": None,
                             "build_error": None}
    if session.build_error is not None:
        b = session.build_error
        parts["build_error"] = {"step": b.step, "phase": b.phase, "message": f"{type(b.error).__name__}: {b.error}",
                                "traceback": b.traceback}
    for name in names:
        if on_quantity:
            on_quantity(name)
        t0 = time.perf_counter()
        try:
            value = session.get(name)
            if name == "dtypes":
                parts["dtypes"] = dict(value)
            else:
                arrays[name] = to_numpy(value)
        except NotProvided as exc:
            parts["missing"][name] = str(exc)
        except BuildFailure as exc:
            parts["errors"][name] = {"message": str(exc), "traceback": exc.traceback, "build": True}
        except Exception as exc:
            parts["errors"][name] = {"message": f"{type(exc).__name__}: {exc}",
                                     "traceback": "".join(_tb.format_exception(type(exc), exc, exc.__traceback__,
                                                                               limit=12))}
        parts["seconds"][name] = time.perf_counter() - t0
    return arrays, parts


def write_dump(session: Session, path: str | os.PathLike, *, names: Iterable[str] = QUANTITY_NAMES,
               environment: dict | None = None, on_quantity: Callable[[str], None] | None = None,
               probes: bool = False) -> dict:
    """Compute and write every quantity of ``session`` to ``path`` (atomic); returns the manifest.

    ``probes``: also record the named probes of the construction and of the map
    (``parity.locate``), stored as ``probe*`` entries listed in ``manifest["probes"]``.
    """
    path = Path(path)
    check_output_path(path)
    t0 = time.perf_counter()
    probe_meta, probe_arrays = _record_probes(session) if probes else (None, {})
    arrays, parts = collect(session, names, on_quantity)
    arrays.update(probe_arrays)
    if probe_meta is not None:
        parts["probes"] = probe_meta
    manifest = {
        "schema": DUMP_SCHEMA, "schema_version": DUMP_SCHEMA_VERSION,
        "created_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "backend": session.backend.info(), "spec": session.spec.to_dict(),
        "environment": environment if environment is not None else _environment(),
        "quantities": {k: {"shape": list(v.shape), "dtype": str(v.dtype)} for k, v in arrays.items()
                       if k not in probe_arrays},
        **parts, "compute_seconds": time.perf_counter() - t0,
    }
    text = json.dumps(json_safe(manifest), allow_nan=False)
    save_npz_atomic(path, {**arrays, MANIFEST_KEY: np.array(text)})
    return manifest


def _record_probes(session: Session) -> tuple[list, dict]:
    """The probes of ``session``'s construction and map: (metadata, arrays) for the dump."""
    rec = ProbeRecorder()
    session.want_probes = True  # type: ignore[attr-defined]  (subprocess adapters)
    with listen(rec):
        session.build()
        try:
            session.get("Id")
        except Exception:  # collect() records the error
            pass
    foreign = getattr(session, "probe_records", None)
    if foreign is not None and foreign() is not None:
        rec.records = list(foreign())
    return rec.to_arrays()


def save_npz_atomic(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """``numpy.savez`` written atomically (:func:`parity.storage.outputs.write_atomic`)."""
    write_atomic(path, lambda handle: np.savez(handle, **arrays))


def read_manifest(path: str | os.PathLike) -> dict:
    """The manifest of dump ``path`` (DumpError naming the problem: missing, truncated, other schema)."""
    path = Path(path)
    if not path.is_file():
        raise DumpError(f"dump {path}: no such file" if not path.exists() else f"dump {path}: not a regular file")
    if not zipfile.is_zipfile(path):  # else numpy.load would take it for a pickle and say so
        raise DumpError(f"dump {path}: unreadable or truncated: not a complete .npz archive (a dump written by "
                        "'parity dump' is a zip file)")
    try:
        with np.load(path, allow_pickle=False) as data:
            if MANIFEST_KEY not in data.files:
                raise DumpError(f"dump {path}: not an eryx-parity dump (no {MANIFEST_KEY} entry)")
            manifest = json.loads(str(data[MANIFEST_KEY]))
    except DumpError:
        raise
    except (zipfile.BadZipFile, EOFError, OSError, ValueError) as exc:
        raise DumpError(f"dump {path}: unreadable or truncated ({type(exc).__name__}: {exc})") from None
    if not isinstance(manifest, dict):
        raise DumpError(f"dump {path}: its manifest is a JSON {type(manifest).__name__}, not an object")
    if manifest.get("schema") != DUMP_SCHEMA:
        raise DumpError(f"dump {path}: schema {manifest.get('schema')!r} is not {DUMP_SCHEMA!r}")
    if manifest.get("schema_version") != DUMP_SCHEMA_VERSION:
        raise DumpError(f"dump {path}: schema version {manifest.get('schema_version')!r}; this parity reads "
                        f"version {DUMP_SCHEMA_VERSION}")
    check_manifest(manifest, str(path))
    return manifest


def _bad(path: str, what: str) -> DumpError:
    return DumpError(f"dump {path}: malformed manifest: {what} (was it written by 'parity dump'?)")


def check_manifest(manifest: dict, path: str) -> None:
    """Refuse a manifest whose fields a reader relies on are missing or of the wrong type.

    Raises
    ------
    DumpError
        Naming the field and what it should be.
    """
    spec = manifest.get("spec")
    if not isinstance(spec, dict):
        raise _bad(path, "'spec' (the fixture, grid and parameters it was made from) is missing or not an object")
    for key, kind in (("fixture", str), ("pdb_path", str), ("fixture_sha256", str), ("params", dict)):
        if not isinstance(spec.get(key), kind):
            raise _bad(path, f"spec.{key} is missing or not a{'n object' if kind is dict else ' string'}")
    samplings = spec.get("samplings")
    if not (isinstance(samplings, list) and len(samplings) == 3
            and all(isinstance(x, list) and len(x) == 3 and all(type(v) is int for v in x) for x in samplings)):
        raise _bad(path, f"spec.samplings must be three [min, max, oversampling] integer triples, got {samplings!r}"[:300])
    for key in ("device", "dtype"):
        if key in spec and not isinstance(spec[key], str):
            raise _bad(path, f"spec.{key} is not a string")
    quantities = manifest.get("quantities")
    if not isinstance(quantities, dict):
        raise _bad(path, "'quantities' is missing or not an object")
    for name, entry in quantities.items():
        if not (isinstance(entry, dict) and isinstance(entry.get("shape"), list)
                and all(type(n) is int and n >= 0 for n in entry["shape"]) and isinstance(entry.get("dtype"), str)):
            raise _bad(path, f"quantities.{name} must be {{shape: [non-negative integers], dtype: text}}")
        try:
            itemsize = np.dtype(entry["dtype"]).itemsize
        except TypeError:
            raise _bad(path, f"quantities.{name} has an unknown dtype {entry['dtype']!r}"[:200]) from None
        size = math.prod(entry["shape"]) * itemsize
        if size > default_memory_limit():
            raise DumpError(f"dump {path}: quantities.{name} declares {format_bytes(size)}, over the memory limit "
                            f"of {format_bytes(default_memory_limit())}: not a dump this machine can read")
    for key in ("missing", "errors"):
        if not isinstance(manifest.get(key, {}), dict):
            raise _bad(path, f"'{key}' is not an object")
    for name, err in manifest.get("errors", {}).items():
        if not (isinstance(err, dict) and isinstance(err.get("message"), str)):
            raise _bad(path, f"errors.{name} must be an object with a 'message'")
    be = manifest.get("build_error")
    if be is not None and not (isinstance(be, dict) and isinstance(be.get("step"), str)
                               and type(be.get("phase")) is int and isinstance(be.get("message"), str)):
        raise _bad(path, "build_error must be null or an object with step, phase and message")
    if manifest.get("dtypes") is not None and not isinstance(manifest["dtypes"], dict):
        raise _bad(path, "'dtypes' must be null or an object")
    if not isinstance(manifest.get("backend", {}), dict):
        raise _bad(path, "'backend' is not an object")


def _load_entry(path: str, name: str, declared: dict) -> np.ndarray:
    """One array of the dump, after checking its stored header against the manifest and memory.

    A crafted archive can declare an array of any size in its header: it is refused by
    what it declares, before anything is allocated.
    """
    with zipfile.ZipFile(path) as archive:
        try:
            handle = archive.open(f"{name}.npy")
        except KeyError:
            raise DumpError(f"dump {path}: the manifest lists {name}, but the archive holds no such entry") from None
        with handle:
            version = np.lib.format.read_magic(handle)
            read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                           else np.lib.format.read_array_header_2_0)
            shape, _, dtype = read_header(handle)
    if list(shape) != list(declared["shape"]) or str(dtype) != declared["dtype"]:
        raise DumpError(f"dump {path}: entry {name} holds {dtype} {tuple(shape)}, but the manifest says "
                        f"{declared['dtype']} {tuple(declared['shape'])}")
    size = int(np.prod(shape, dtype=object)) * dtype.itemsize
    if size > default_memory_limit():
        raise DumpError(f"dump {path}: entry {name} declares {format_bytes(size)}, over the memory limit of "
                        f"{format_bytes(default_memory_limit())}")
    with np.load(path, allow_pickle=False) as data:
        return data[name]


def spec_from_manifest(manifest: dict, path: str = "") -> RunSpec:
    """The RunSpec a dump was made for (its identity is the manifest's, not a re-hash)."""
    s = manifest["spec"]
    return RunSpec(fixture=s["fixture"], pdb_path=s["pdb_path"],
                   samplings=tuple(tuple(int(v) for v in x) for x in s["samplings"]), params=dict(s["params"]),
                   device=s.get("device", "cpu"), dtype=s.get("dtype", "float64"),
                   sha256=s["fixture_sha256"])


class DumpSession(Session):
    """Quantities read from a dump (lazily, one array at a time)."""

    backend: "DumpBackend"

    def _build(self) -> None:
        be = self.backend.manifest.get("build_error")
        if be:
            raise BuildFailure(be["step"], be["phase"], DumpedError(be["message"]), be.get("traceback", ""))

    def _compute(self, name: str) -> Any:
        m = self.backend.manifest
        if name == "dtypes":
            if m.get("dtypes") is None:
                raise NotProvided(f"dump {self.backend.path} holds no dtype audit")
            return m["dtypes"]
        if name in m["quantities"]:
            try:
                return _load_entry(self.backend.path, name, m["quantities"][name])
            except DumpError:
                raise
            except (zipfile.BadZipFile, EOFError, OSError, ValueError) as exc:
                raise DumpError(f"dump {self.backend.path}: entry {name} unreadable ({exc})") from None
        if name in m.get("errors", {}):
            err = m["errors"][name]
            be = m.get("build_error")
            if err.get("build") and be:
                raise BuildFailure(be["step"], be["phase"], DumpedError(be["message"]), be.get("traceback", ""))
            raise DumpedError(f"{err['message']} (when the dump was made)\n{err.get('traceback', '')}")
        reason = m.get("missing", {}).get(name)
        raise NotProvided(f"{self.backend.describe()} does not hold {name}" + (f": {reason}" if reason else ""))


    def probe_records(self) -> list | None:
        """The probes the dump holds (``parity dump --probes``), or None."""
        meta = self.backend.manifest.get("probes")
        if meta is None:
            return None
        with np.load(self.backend.path, allow_pickle=False) as data:
            return ProbeRecorder.from_arrays(meta, data).records


class DumpBackend(Backend):
    """A stored dump (``parity dump``) as a backend: the quantities a backend computed elsewhere."""

    name = "dump"
    description = "a stored stage dump (.npz written by 'parity dump')"

    def __init__(self, *, path: str | None = None, python: str | None = None, **options: Any) -> None:
        super().__init__(path=path, python=python, **options)
        if not path:
            raise ValueError("the dump backend needs the dump file (--reference-dump FILE, or --*-path FILE)")
        self.path = str(path)
        self.manifest = read_manifest(self.path)

    def describe(self) -> str:
        b = self.manifest.get("backend", {})
        return f"dump {self.path} (of backend {b.get('name')!r})"

    @classmethod
    def static_provides(cls) -> frozenset[str]:
        return frozenset()

    def provides(self) -> frozenset[str]:
        m = self.manifest
        return frozenset(m["quantities"]) | frozenset(m.get("errors", {})) | (
            {"dtypes"} if m.get("dtypes") is not None else frozenset())

    @property
    def spec(self) -> RunSpec:
        return spec_from_manifest(self.manifest, self.path)

    def check_spec(self, spec: RunSpec) -> None:
        diffs = RunSpec.differences(self.manifest["spec"], spec.identity())
        if diffs:
            raise DumpError(f"{self.describe()} was made from other inputs: " + "; ".join(diffs))

    def open(self, spec: RunSpec) -> DumpSession:
        self.check_spec(spec)
        return DumpSession(self, spec)

    def info(self) -> dict:
        b = dict(self.manifest.get("backend", {}))
        return {"name": f"dump of {b.get('name')}", "description": self.description, "version": b.get("version"),
                "origin": os.path.abspath(self.path), "commit": b.get("commit"), "dumped_backend": b,
                "created_at": self.manifest.get("created_at"), "environment": self.manifest.get("environment"),
                "device": self.manifest["spec"].get("device"), "dtype": self.manifest["spec"].get("dtype")}
