"""What both adapter workers share: the request/answer protocol, import pinning, recorders.

Standalone on purpose: the standard library and NumPy only. It never imports eryx-parity
(this project's ``eryx`` would clash with theirs); the session in
``parity/backends/external.py`` starts ``python WORKER.py request.json outdir``.

Protocol
--------
``outdir/status.jsonl`` gets one JSON line per event:

- ``{"event": "built", "seconds", "info"}`` or ``{"event": "build_failed", "step", "phase",
  "type", "message", "traceback", "info"}`` once, after their model's construction;
- ``{"event": "result", "name", "status": "ok", "file": "NAME.npy", "shape", "dtype",
  "seconds"}`` (or ``"value"`` for the text quantity ``dtypes``), ``{"status":
  "not_provided", "reason"}`` or ``{"status": "error", "type", "message", "traceback"}`` for
  each ``{"compute": NAME}`` line read from stdin. ``NAME.npy`` is written with
  ``numpy.save`` (no pickle) to a temporary name and renamed, before its line.

``{"quit": true}`` or the end of stdin ends the worker.
"""
from __future__ import annotations

import importlib.machinery
import importlib.util
import json
import os
import platform
import sys
import time
import traceback
from pathlib import Path
from typing import Any, Callable

import numpy as np

TRACEBACK_LIMIT = 25
#: Methods of their OnePhonon (both implementations) -> (construction step, phase) of a
#: failure raised inside them; the innermost one on the traceback names the step.
STEPS: dict[str, tuple[str, int]] = {
    "_setup": ("structure and grid", 1), "_build_kvec_Brillouin": ("grid", 1),
    "_build_A": ("matrices", 2), "_build_M": ("matrices", 2), "_build_M_allatoms": ("matrices", 2),
    "_project_M": ("matrices", 2), "_setup_gnm": ("network", 3), "_setup_gamma_parameters": ("network", 3),
    "compute_hessian": ("phonons", 3), "compute_gnm_phonons": ("phonons", 3),
    "compute_covariance_matrix": ("covariance", 3),
}


class NotProvidedHere(Exception):
    """The adapter does not provide this quantity for this run (the message says why)."""


class LayoutError(ValueError):
    """Their array does not have the layout this adapter maps (the message names both)."""


# ------------------------------------------------------------------ protocol
class Channel:
    """The status file (JSON lines, flushed per event)."""

    def __init__(self, outdir: str) -> None:
        self.outdir = Path(outdir)
        self._file = open(self.outdir / "status.jsonl", "a", encoding="utf-8")

    def emit(self, **event: Any) -> None:
        self._file.write(json.dumps(event, default=str) + "\n")
        self._file.flush()

    def save(self, name: str, array: np.ndarray) -> str:
        """Write ``NAME.npy`` atomically (no pickle); returns the file name."""
        final = self.outdir / f"{name}.npy"
        tmp = self.outdir / f".{name}.npy.tmp"
        with open(tmp, "wb") as handle:
            np.save(handle, array, allow_pickle=False)
        os.replace(tmp, final)
        return final.name


def format_exc(exc: BaseException) -> str:
    return "".join(traceback.format_exception(type(exc), exc, exc.__traceback__, limit=TRACEBACK_LIMIT))


def to_numpy(x: Any) -> np.ndarray:
    """A NumPy array of ``x`` (torch tensors detached to the CPU, lazy conjugates resolved)."""
    if hasattr(x, "detach") and hasattr(x, "cpu"):
        t = x.detach().cpu()
        if getattr(t, "is_conj", lambda: False)():
            t = t.resolve_conj()
        if getattr(t, "is_neg", lambda: False)():
            t = t.resolve_neg()
        return t.numpy().copy()
    if isinstance(x, (list, tuple)) and x and all(hasattr(v, "detach") for v in x):
        return np.stack([to_numpy(v) for v in x])
    arr = np.asarray(x)
    if arr.dtype == object:
        raise TypeError(f"not a numeric array (a {type(x).__name__} of objects)")
    return arr


def real_checked(x: Any, what: str) -> np.ndarray:
    """Their complex array carrying a zero imaginary part, as real (a convention, not a fix).

    Raises ValueError when a finite imaginary part is not zero: that would be a number,
    not a convention, and it is theirs to report.
    """
    x = to_numpy(x)
    if np.iscomplexobj(x):
        imag = x.imag[np.isfinite(x.imag)]
        if imag.size and np.any(imag != 0):
            raise ValueError(f"their {what} has a non-zero imaginary part (max {np.max(np.abs(imag)):.3g}); "
                             f"the contract's {what} is real")
        return x.real.copy()
    return x


def expect_shape(x: Any, shape: tuple, what: str, layout: str) -> np.ndarray:
    """``x`` as NumPy, refusing any shape but the one this adapter knows how to map.

    A reshape of an unexpected layout of the same size would scramble it silently.
    """
    x = to_numpy(x)
    if tuple(x.shape) != tuple(shape):
        raise LayoutError(f"their {what} has shape {tuple(x.shape)}; this adapter maps {layout} = {tuple(shape)}")
    return x


def attribute(obj: Any, path: str, owner: str = "their OnePhonon") -> Any:
    """``obj.a.b`` with an error naming the missing attribute."""
    value, walked = obj, owner
    for part in path.split("."):
        if not hasattr(value, part):
            raise AttributeError(f"{walked} has no attribute {part!r} (another version of their code?)")
        value, walked = getattr(value, part), f"{walked}.{part}"
    return value


# ------------------------------------------------------- shared mapping
def masses(m: Any) -> np.ndarray:
    """The diagonal of their all-atom mass matrix (``_build_M_allatoms``) at each atom's x row."""
    M = to_numpy(m._build_M_allatoms())
    n = M.shape[0] * M.shape[1]
    return np.diagonal(M.reshape(n, n))[::3].copy()


def n_dof(m: Any) -> int:
    """Rigid-body degrees of freedom per cell of their model."""
    return int(attribute(m, "n_asu")) * int(attribute(m, "n_dof_per_asu"))


def _recorded_real(key: str, what: str) -> Callable:
    def getter(m, request, rec):
        return real_checked(rec.get(key, f"their {what}")[0], what)
    return getter


#: Quantities both implementations expose the same way (their OnePhonon keeps the
#: original's attribute names): contract name -> (model, request, recorder) -> value.
SHARED_GETTERS: dict[str, Callable[[Any, dict, "Recorder"], Any]] = {
    **{name: (lambda name: lambda m, r, rec: attribute(m, f"model.{name}"))(name)
       for name in ("cell", "A_inv", "unit_cell_axes", "xyz", "adp", "ff_a", "ff_b", "ff_c")},
    **{name: (lambda name: lambda m, r, rec: attribute(m, name))(name)
       for name in ("hkl_grid", "q_grid", "res_mask", "Amat", "Linv", "covar", "ADP")},
    "n_asu": lambda m, r, rec: np.int64(attribute(m, "n_asu")),
    "asu_xyz": lambda m, r, rec: np.stack([to_numpy(m.crystal.get_asu_xyz(i)) for i in range(attribute(m, "n_asu"))]),
    "masses": lambda m, r, rec: masses(m),
    "cell_origin": lambda m, r, rec: np.array([to_numpy(m.crystal.get_unitcell_origin(m.crystal.id_to_hkl(c)))
                                               for c in range(attribute(m, "n_cell"))]),
    "map_shape": lambda m, r, rec: np.array(attribute(m, "map_shape"), dtype=np.int64),
    "M_allatoms": lambda m, r, rec: m._build_M_allatoms(),
    "Mmat": lambda m, r, rec: m._project_M(m._build_M_allatoms()),
    "hessian_allatoms": _recorded_real("hessian_allatoms", "all-atom Hessian"),
    "hessian": _recorded_real("hessian", "projected Hessian"),
    "Id": lambda m, r, rec: m.apply_disorder(),
    "mode_maps": lambda m, r, rec: np.stack([to_numpy(m.apply_disorder(rank=i)) for i in range(n_dof(m))], axis=1),
    "Id_data_adp": lambda m, r, rec: m.apply_disorder(use_data_adp=True),
    # The dtype audit: every array or tensor their model holds.
    "dtypes": lambda m, r, rec: {k: str(v.dtype).replace("torch.", "") for k, v in vars(m).items()
                                 if hasattr(v, "dtype") and hasattr(v, "shape")},
}


# ------------------------------------------------------------ import pinning
class PinnedFinder:
    """First on ``sys.meta_path``: ``NAME.*`` is found in the pinned package's own folders or nowhere.

    Without it, a module their code imports that their checkout lacks could be served by
    another finder, e.g. an editable install of this project mapping ``eryx`` to its own
    folder.
    """

    def __init__(self, name: str, checkout: str) -> None:
        self.name, self.checkout = name, checkout

    def find_spec(self, fullname: str, path=None, target=None):
        if not fullname.startswith(self.name + "."):
            return None
        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        if spec is None:
            raise ModuleNotFoundError(f"No module named {fullname!r} in the checkout {self.checkout}", name=fullname)
        return spec


def pin_package(name: str, checkout: str, project_root: str | None) -> Any:
    """Import package ``name`` from ``checkout`` only, whatever else is installed.

    Their package may be a namespace package (apeck12/eryx has no ``__init__.py``): a
    regular package of the same name anywhere on ``sys.path`` would win over it, so the
    module is created from the checkout's spec and put in ``sys.modules`` first, and a
    :class:`PinnedFinder` resolves its submodules. This project's root leaves ``sys.path``.
    """
    root = Path(project_root).resolve() if project_root else None
    sys.path[:] = [p for p in sys.path if p and not (root and Path(p).resolve() == root)]
    sys.path.insert(0, checkout)
    spec = importlib.machinery.PathFinder.find_spec(name, [checkout])
    if spec is None:
        raise ImportError(f"no package {name!r} in {checkout}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    sys.meta_path.insert(0, PinnedFinder(name, checkout))
    if spec.loader is not None:
        try:
            spec.loader.exec_module(module)
        except BaseException:
            sys.modules.pop(name, None)
            raise
    return module


def foreign_modules(name: str, checkout: str) -> list[str]:
    """Modules ``name`` / ``name.*`` loaded from anywhere but ``checkout``."""
    base = Path(checkout).resolve()
    out = []
    for mod_name, mod in list(sys.modules.items()):
        if mod is None or not (mod_name == name or mod_name.startswith(name + ".")):
            continue
        files = [getattr(mod, "__file__", None)] + list(getattr(mod, "__path__", []) or [])
        files = [f for f in files if f]
        if files and not all(base in Path(f).resolve().parents for f in files):
            out.append(f"{mod_name} ({files[0]})")
    return out


# ---------------------------------------------------------------- recorders
class Recorder:
    """Keeps what chosen functions of their code return while their construction runs.

    Their model does not store every intermediate (K, Kinv, D, the all-atom Hessian are
    locals of its methods); wrapping the functions that compute them records their
    values exactly as their pipeline used them, without recomputing or changing
    anything. ``scope`` holds the names of their methods currently running, so a
    recording can be limited to calls made from one method.
    """

    def __init__(self) -> None:
        self.calls: dict[str, list] = {}
        self.scope: list[str] = []
        self.missing: dict[str, str] = {}
        self.enabled = True

    def record(self, owner: Any, attr: str, key: str, keep: Callable[[tuple, dict, Any], Any],
               within: str | None = None) -> None:
        """Record ``keep(args, kwargs, result)`` of every call of ``owner.attr`` (inside ``within``)."""
        original = getattr(owner, attr, None)
        if original is None:
            self.missing[key] = f"their code has no {getattr(owner, '__name__', owner)}.{attr}"
            return
        recorder = self

        def wrapper(*args, **kwargs):
            result = original(*args, **kwargs)
            if recorder.enabled and (within is None or within in recorder.scope):
                recorder.calls.setdefault(key, []).append(keep(args, kwargs, result))
            return result

        wrapper.__wrapped__ = original  # type: ignore[attr-defined]
        setattr(owner, attr, wrapper)

    def track(self, owner: Any, attr: str) -> None:
        """Maintain :attr:`scope` around every call of method ``owner.attr``."""
        original = getattr(owner, attr, None)
        if original is None:
            return
        recorder = self

        def wrapper(*args, **kwargs):
            recorder.scope.append(attr)
            try:
                return original(*args, **kwargs)
            finally:
                recorder.scope.pop()

        wrapper.__wrapped__ = original  # type: ignore[attr-defined]
        setattr(owner, attr, wrapper)

    def get(self, key: str, what: str) -> list:
        if key in self.calls:
            return self.calls[key]
        raise LookupError(f"{what} was not recorded during their construction: "
                          + self.missing.get(key, "the function that computes it was never called"))


# ------------------------------------------------------------------ probes
class ProbeSink:
    """Named probes of their code, for ``parity locate`` (``eryx.probes``' format, standalone).

    Their code is not edited: :meth:`on_calls` wraps one of the functions their code calls
    (inside a method of theirs tracked by the :class:`Recorder`) and turns each call into a
    probe, named after the contract's probe and placed at the line of their code that made
    the call. After construction :meth:`save` writes ``probes.json`` and ``probes.npz``.
    """

    def __init__(self, checkout: str) -> None:
        self.meta: list[dict] = []
        self.arrays: dict[str, np.ndarray] = {}
        self.checkout = str(Path(checkout).resolve())
        self.finishers: list[Callable[[Any], None]] = []

    def emit(self, name: str, value: Any, index: dict | None = None, where: str = "?") -> None:
        key = f"probe{len(self.meta)}"
        self.arrays[key] = np.array(to_numpy(value), copy=True)  # their buffers are reused
        self.meta.append({"name": name, "index": [[k, int(v)] for k, v in (index or {}).items()], "axes": [],
                          "tier": None, "where": where, "key": key})

    def caller(self, frame) -> str:
        name = frame.f_code.co_filename
        rel = os.path.relpath(name, self.checkout) if name.startswith(self.checkout) else name
        return f"{rel}:{frame.f_lineno}"

    def on_calls(self, recorder: "Recorder", owner: Any, attr: str, within: str,
                 handle: Callable[["ProbeSink", int, tuple, Any, str], None]) -> None:
        """Call ``handle(sink, n, args, result, where)`` for the n-th call of ``owner.attr`` inside ``within``."""
        original = getattr(owner, attr)
        sink, count = self, [0]

        def wrapper(*args, **kwargs):
            result = original(*args, **kwargs)
            if within in recorder.scope:
                handle(sink, count[0], args, result, sink.caller(sys._getframe(1)))
                count[0] += 1
            return result
        wrapper.__wrapped__ = original  # type: ignore[attr-defined]
        setattr(owner, attr, wrapper)

    def save(self, outdir: Path, model: Any) -> None:
        for finish in self.finishers:
            finish(model)
        with open(outdir / ".probes.npz.tmp", "wb") as handle:
            np.savez(handle, **self.arrays)
        os.replace(outdir / ".probes.npz.tmp", outdir / "probes.npz")
        (outdir / "probes.json").write_text(json.dumps(self.meta), encoding="utf-8")


# ------------------------------------------------------------------ the loop
def build_step(exc: BaseException, checkout: str, steps: dict[str, tuple[str, int]]) -> tuple[str, int]:
    """(step, phase) of the innermost frame of their code whose function is in ``steps``."""
    base = str(Path(checkout).resolve())
    for frame in reversed(traceback.extract_tb(exc.__traceback__)):
        if frame.name in steps and str(Path(frame.filename).resolve()).startswith(base):
            return steps[frame.name]
    return ("construct", 1)


def environment(modules: tuple[str, ...]) -> dict:
    libs = {}
    for name in modules:
        mod = sys.modules.get(name)
        if mod is not None:
            libs[name] = str(getattr(mod, "__version__", "?"))
    return {"python": platform.python_version(), "executable": sys.executable, "libraries": libs}


def serve(argv: list[str], *, package: str, construct: Callable[[dict, Recorder], Any],
          getters: dict[str, Callable[[Any, dict, Recorder], Any]], steps: dict[str, tuple[str, int]],
          setup: Callable[[dict, Recorder], dict], libraries: tuple[str, ...],
          probes: Callable[[dict, Recorder, ProbeSink], None] | None = None) -> int:
    """Run one worker: pin their package, construct their model, answer requests.

    Parameters
    ----------
    construct : (request, recorder) -> their model
    getters : {quantity: (model, request, recorder) -> value}
    steps : {their method name: (step, phase)} for naming a construction failure
    setup : (request, recorder) -> info; applies the shims and installs the recorders,
        after their package is pinned
    probes : (request, recorder, sink) -> None, optional; installs probe wrappers when the
        request asks for probes (``parity locate``)
    """
    request = json.loads(Path(argv[1]).read_text(encoding="utf-8"))
    channel = Channel(argv[2])
    checkout = request["checkout"]
    info: dict = {}
    t0 = time.perf_counter()
    recorder = Recorder()
    try:
        mod = pin_package(package, checkout, request.get("project_root"))
        info["imported_from"] = list(getattr(mod, "__path__", []) or [getattr(mod, "__file__", "")])
        info.update(setup(request, recorder))
        sink = ProbeSink(checkout) if (request.get("probes") and probes is not None) else None
        if sink is not None:
            probes(request, recorder, sink)
        model = construct(request, recorder)
        if sink is not None:
            sink.save(channel.outdir, model)
        foreign = foreign_modules(package, checkout)
        if foreign:
            raise ImportError(f"modules of {package!r} came from outside the checkout: {', '.join(foreign)}")
    except (Exception, SystemExit) as exc:
        step, phase = build_step(exc, checkout, steps)
        info.update(environment(libraries))
        channel.emit(event="build_failed", step=step, phase=phase, type=type(exc).__name__, message=str(exc),
                     traceback=format_exc(exc), info=info, seconds=time.perf_counter() - t0)
        return 0
    recorder.enabled = False
    info.update(environment(libraries))
    channel.emit(event="built", seconds=time.perf_counter() - t0, info=info)
    cache: dict[str, Any] = {}
    while True:
        line = sys.stdin.readline()
        if not line:
            return 0
        try:
            command = json.loads(line)
        except json.JSONDecodeError:
            continue
        if command.get("quit"):
            return 0
        name = command.get("compute")
        t1 = time.perf_counter()
        getter = getters.get(name)
        try:
            if getter is None:
                raise NotProvidedHere(f"this worker does not map {name}")
            value = getter(model, request, recorder) if name not in cache else cache[name]
            cache[name] = value
            if isinstance(value, dict):
                channel.emit(event="result", name=name, status="ok", value=value, seconds=time.perf_counter() - t1)
                continue
            array = to_numpy(value)
            channel.emit(event="result", name=name, status="ok", file=channel.save(name, array),
                         shape=list(array.shape), dtype=str(array.dtype), seconds=time.perf_counter() - t1)
        except NotProvidedHere as exc:
            channel.emit(event="result", name=name, status="not_provided", reason=str(exc),
                         seconds=time.perf_counter() - t1)
        except (Exception, SystemExit) as exc:
            channel.emit(event="result", name=name, status="error", type=type(exc).__name__, message=str(exc),
                         traceback=format_exc(exc), seconds=time.perf_counter() - t1)
