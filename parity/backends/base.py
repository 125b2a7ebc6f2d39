"""The backend protocol: anything that turns a :class:`~parity.contract.spec.RunSpec` into named quantities.

A :class:`Backend` is a factory with an identity (name, version, where its code came from).
:meth:`Backend.open` builds a :class:`Session` for one spec: the backend's model constructed
once, its quantities (``parity.contract.quantities``) computed on demand and cached. The harness
judges every implementation through this protocol only, the project's own NumPy and torch
code included (as Polygraphy judges every runtime through one runner interface).

Failure is data, not control flow:

- :class:`NotProvided`: the backend does not compute this quantity (or cannot here, e.g. a
  dense reference that does not fit in memory). Stages reading it are ``not_comparable``.
- :class:`BuildFailure`: the backend's construction failed at a named step; quantities that
  need that step raise it, and the runner reports the step as the first failure.
- Any other exception while computing a quantity is that quantity's error.
"""
from __future__ import annotations

import abc
import time
import traceback as _tb
from typing import Any, Callable, ClassVar, Mapping

from parity.contract.spec import RunSpec
from parity.contract.quantities import QUANTITY_NAMES


class NotProvided(Exception):
    """The backend does not provide this quantity (the message says why)."""


class BuildFailure(Exception):
    """A backend's construction failed.

    Attributes
    ----------
    step : str
        The construction step that raised ("structure", "grid", "matrices", "phonons", ...,
        or "construct" when the backend cannot tell).
    phase : int
        The phase that step belongs to (1-4).
    error : BaseException
        What it raised.
    traceback : str
    """

    def __init__(self, step: str, phase: int, error: BaseException, traceback: str = "") -> None:
        self.step, self.phase, self.error, self.traceback = step, int(phase), error, traceback
        super().__init__(f"construction failed at step {step!r} (phase {phase}): "
                         f"{type(error).__name__}: {error}")


def build_failure(exc: BaseException, default_step: str = "construct", default_phase: int = 1) -> BuildFailure:
    """Wrap an exception raised while building a model.

    The project's models set ``build_step`` / ``build_phase`` on what their construction
    raises (eryx.models*.OnePhonon.BUILD_STEPS); other code gets the defaults.
    """
    return BuildFailure(getattr(exc, "build_step", default_step), getattr(exc, "build_phase", default_phase),
                        exc, "".join(_tb.format_exception(type(exc), exc, exc.__traceback__, limit=12)))


#: What :meth:`Session.timed_phase` may be asked for: the four phases of the model
#: (1 grid + k-vectors; 2 A/M/Linv + structure factors at the spec's q sample; 3 Hessian,
#: K, phonons, covariance and ADPs; 4 the full map ``Id``) and ``"end_to_end"``
#: (construction + the full map). ``parity bench`` times these.
TIMED_PHASES = ("1", "2", "3", "4", "end_to_end")


class Session(abc.ABC):
    """One backend's model for one spec; quantities on demand, computed once.

    Subclasses implement :meth:`_build` (construct the model; raise what construction
    raises) and :meth:`_compute` (one quantity by name; raise :class:`NotProvided` for
    names they do not provide), and optionally :meth:`_crossfeed`.
    """

    def __init__(self, backend: "Backend", spec: RunSpec) -> None:
        self.backend, self.spec = backend, spec
        self.build_error: BuildFailure | None = None
        self.build_seconds: float | None = None
        self._built = False
        self._cache: dict[str, tuple[bool, Any]] = {}

    # -- construction
    def build(self) -> "Session":
        """Construct the model once; a failure is kept in :attr:`build_error`, not raised."""
        if not self._built:
            self._built = True
            t0 = time.perf_counter()
            try:
                self._build()
            except BuildFailure as exc:
                self.build_error = exc
            except Exception as exc:
                self.build_error = build_failure(exc)
            finally:
                self.build_seconds = time.perf_counter() - t0
        return self

    def input_refusal(self, name: str) -> Exception | None:
        """The input error this built session will raise for quantity ``name``, when known up front.

        None by default (unknown until computed). The runner refuses the whole run (exit 2)
        when the reference knows it refuses a selected stage for a reason in the input.
        """
        return None

    @abc.abstractmethod
    def _build(self) -> None:
        """Construct the backend's model for :attr:`spec`."""

    # -- quantities
    def get(self, name: str) -> Any:
        """Quantity ``name`` (cached, exceptions included).

        A name the backend does not declare in :meth:`Backend.provides` is NotProvided
        without calling :meth:`_compute`: the declaration is what the harness trusts.
        """
        self.build()
        if name not in self._cache:
            if not self.provides(name):
                self._cache[name] = (False, NotProvided(self.backend.not_provided_reason(name)))
            else:
                try:
                    self._cache[name] = (True, self._compute(name))
                except Exception as exc:
                    self._cache[name] = (False, exc)
        ok, value = self._cache[name]
        if not ok:
            raise value
        return value

    @abc.abstractmethod
    def _compute(self, name: str) -> Any:
        """Compute quantity ``name`` (NotProvided when this backend has no such quantity)."""

    def provides(self, name: str) -> bool:
        """Whether this backend offers quantity ``name`` at all (before computing it)."""
        return name in self.backend.provides()

    # -- cross-feeding (bisection)
    def crossfeed(self, name: str, inputs: Mapping[str, Any]) -> Any:
        """Recompute quantity ``name`` from the given input quantities (another backend's).

        Raises NotProvided when this backend cannot cross-feed ``name``.
        """
        self.build()
        if name not in self.backend.crossfeeds():
            raise NotProvided(f"backend {self.backend.name!r} cannot recompute {name} from given inputs")
        return self._crossfeed(name, inputs)

    def _crossfeed(self, name: str, inputs: Mapping[str, Any]) -> Any:
        raise NotProvided(f"backend {self.backend.name!r} does not cross-feed")

    # -- benchmarks
    def timed_phase(self, phase: str) -> Callable[[], Any]:
        """A callable that redoes one phase of this session's computation, for benchmarks.

        ``phase`` is one of :data:`TIMED_PHASES`. Phases 1-4 redo that phase's work on the
        built model (each alone: what it needs is already built); ``"end_to_end"``
        constructs a fresh model and computes its full map. The callable returns when the
        work is done (device work synchronised) and leaves the session's quantities as
        they were. ``parity bench`` times what it returns.

        Raises
        ------
        NotProvided
            The backend cannot time this phase (the default: every phase), or not for
            this spec (e.g. a model refused for memory); the message says why.
        KeyError
            ``phase`` is not one of :data:`TIMED_PHASES`.
        """
        if phase not in TIMED_PHASES:
            raise KeyError(f"unknown phase {phase!r}: phases are {', '.join(TIMED_PHASES)}")
        raise NotProvided(f"backend {self.backend.name!r} does not time its phases")

    def close(self) -> None:
        """Release what the session holds (subprocesses, files)."""
        self._cache.clear()


class Backend(abc.ABC):
    """A named implementation of the OnePhonon model, judged through its quantities.

    Parameters
    ----------
    path : str, optional
        Where the backend loads its code from (a checkout), for backends that take one.
    python : str, optional
        Interpreter to run the backend's code with, for backends that run in a subprocess.
    **options
        Backend-specific options (e.g. ``fault`` for the project's torch backend); unknown
        options raise ValueError naming them.
    """

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    #: Options this backend accepts besides path and python.
    options: ClassVar[tuple[str, ...]] = ()
    #: Whether the backend loads its code from ``path`` / runs it with ``python``. A backend
    #: that does not refuses them: ignoring them would silently test other code.
    takes_path: ClassVar[bool] = True
    takes_python: ClassVar[bool] = True

    def __init__(self, *, path: str | None = None, python: str | None = None, **options: Any) -> None:
        unknown = sorted(set(options) - set(self.options))
        if unknown:
            raise ValueError(f"backend {self.name!r} does not take option(s) {', '.join(unknown)}"
                             + (f" (it takes {', '.join(self.options)})" if self.options else ""))
        for value, what in ((path, "path"), (python, "python")):
            if value is not None and not getattr(self, f"takes_{what}"):
                raise ValueError(f"the {what} {value} does not apply: this backend runs this installation's "
                                 f"code in this interpreter (leave the --...-{what} option out, or use a "
                                 "backend that loads a checkout: see 'parity backends')")
        self.path, self.python, self.opts = path, python, dict(options)

    @classmethod
    def static_provides(cls) -> frozenset[str]:
        """Quantity names the backend provides whatever the spec (``parity backends`` lists them).

        Default: every quantity of the contract (``parity.contract.quantities``); override it to
        declare fewer.
        """
        return frozenset(QUANTITY_NAMES)

    def provides(self) -> frozenset[str]:
        """Quantity names this backend can compute (``parity.contract.quantities``); default
        :meth:`static_provides`. The harness asks the session for no other name: a stage
        reading an undeclared quantity is not comparable."""
        return self.static_provides()

    def not_provided_reason(self, name: str) -> str:
        """Why quantity ``name`` (not in :meth:`provides`) is not provided: the stage's reason."""
        return f"{name} is not in backend {self.name!r}'s provides()"

    def crossfeeds(self) -> frozenset[str]:
        """Quantity names this backend can recompute from another backend's inputs."""
        return frozenset()

    @abc.abstractmethod
    def open(self, spec: RunSpec) -> Session:
        """A session for ``spec`` (not yet built: the runner times :meth:`Session.build`)."""

    def info(self) -> dict:
        """Identity for results and reports: name, version, origin (JSON-safe)."""
        return {"name": self.name, "description": self.description, "version": None, "origin": None}

    def check_spec(self, spec: RunSpec) -> None:
        """Refuse a spec this backend cannot run at all (ValueError naming why); default: accept."""
