"""Regressions of a history: status flips, error growth, slowdowns, gradient cost, memory.

The rule that decides a slowdown (several repeats per run, a baseline of earlier runs, a
sustained step, a significance test, an absolute and a relative floor) is
:mod:`parity.storage.step_detection`'s :func:`judge_slowdown`; its names are importable from
here too. Everything here is a pure function of rows, except the functions
(:func:`judged_timings`, :func:`timing_verdicts`, :func:`find_regressions`), which read the
rows they judge from a history store (:class:`parity.storage.history.HistoryStore`, or
anything with its read methods: :class:`HistoryReader`) and hand them to the pure ones.

Regressions of a series (:func:`find_regressions`, per ``(fixture, device, dtype)``, fault
runs ignored): a stage's status flipped from ``pass`` to ``fail``/``error``, a stage's
``max_rel`` grew more than tenfold above rounding level (:func:`error_grew`), a phase
or the total slowed down (:func:`judge_slowdown`), or the torch candidate's gradient cost
did (:data:`GRADIENT_TARGETS`: the forward map, forward + backward, the q-gradient, and the
ratio forward + backward / forward per interleaved round, which machine load scales away),
or its peak memory grew (``memory_growth``: the rule and its pure functions are in
:mod:`parity.storage.memory_regressions`).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Iterator, Mapping, Protocol, Sequence

from parity.contract.results import DIVERGING, Status
from parity.contract.statuses import TextEnum
from parity.storage.memory_regressions import (MemoryRule, MemoryVerdict, judge_memory_series,
                                               memory_verdicts_of_runs, of_latest_workload)
from parity.storage.step_detection import SlowdownRule, TimingVerdict, clean_samples, judge_slowdown, quantile

__all__ = ["SlowdownRule", "TimingVerdict", "clean_samples", "judge_slowdown", "quantile", "Regression",
           "error_grew", "dtype_error_floor", "stage_regressions", "judge_timing_series", "verdicts_of_runs",
           "timing_regressions", "phase_key", "HistoryReader", "judged_timings", "timing_verdicts",
           "find_regressions", "REGRESSION_KINDS", "GRADIENT_TARGETS", "gradient_samples",
           "judge_gradient_series", "gradient_verdicts_of_runs", "gradient_regressions", "gradient_verdicts",
           "NUMERICAL_KINDS", "COST_KINDS", "RegressionKind", "memory_regressions", "memory_verdicts"]


# ------------------------------------------------------------------ regressions of a history
#: Machine epsilon per dtype: relative errors below it are rounding, not signal.
_DTYPE_EPS = {"float64": 2.220446049250313e-16, "float32": 1.1920929e-07, "float16": 9.765625e-04,
              "complex128": 2.220446049250313e-16, "complex64": 1.1920929e-07}
_DEFAULT_ERROR_FLOOR = 1e-16
#: A stage missing from the previous run is compared with the last of this many runs that has it.
STAGE_LOOKBACK = 10


class RegressionKind(TextEnum):
    """What a :class:`Regression` is (``Regression.kind``; the same strings as before it
    existed, in JSON and in the nightly's output). Compare with these members, never with
    the bare strings."""

    STATUS_FLIP = "status_flip"
    ERROR_GROWTH = "error_growth"
    SLOWDOWN = "slowdown"
    MEMORY_GROWTH = "memory_growth"

    @property
    def label(self) -> str:
        """For people: ``"status flip"``, ``"memory growth"``, ..."""
        return self.value.replace("_", " ")


#: The kinds of regression of a stage's numbers (a nightly exits 1 on them).
NUMERICAL_KINDS = (RegressionKind.STATUS_FLIP, RegressionKind.ERROR_GROWTH)
#: The kinds of regression of a cost: time or peak memory (reported; exit 1 only if asked).
COST_KINDS = (RegressionKind.SLOWDOWN, RegressionKind.MEMORY_GROWTH)
#: The kinds of regression, in the order they are listed.
REGRESSION_KINDS = NUMERICAL_KINDS + COST_KINDS


def phase_key(phase: str) -> tuple[int, float, str]:
    """Sort "1" < "2" < "10" < "other" (numeric phases first)."""
    try:
        return (0, float(phase), phase)
    except ValueError:
        return (1, 0.0, phase)


class HistoryReader(Protocol):
    """The read methods of :class:`parity.storage.history.HistoryStore` the regression finder uses."""

    def series_keys(self) -> list[tuple[str, str, str]]: ...

    def runs(self, fixture: str | None = None, device: str | None = None, dtype: str | None = None,
             limit: int | None = None, *, include_faults: bool = True) -> list[dict[str, Any]]: ...

    def stages(self, run_id: int) -> list[dict[str, Any]]: ...

    def timing_series(self, fixture: str, device: str, dtype: str) -> list[dict[str, Any]]: ...

    def gradient_series(self, fixture: str, device: str, dtype: str) -> list[dict[str, Any]]: ...


@dataclass(frozen=True)
class Regression:
    """One flagged change in the latest run of a series.

    Attributes
    ----------
    fixture, device, dtype
        The series.
    target
        What regressed: a stage name (``status_flip``/``error_growth``),
        ``"phase N"`` or ``"total"`` (``slowdown``), a gradient target
        (``slowdown``, ``memory_growth``).
    kind
        A :class:`RegressionKind` (a string naming one is converted; another is refused).
    run_id
        The latest run, the one that shows the regression.
    previous, current
        Before/after: a status string, a max_rel, or seconds (for a slowdown,
        ``previous`` is the baseline -- the median of earlier runs' minima -- and
        ``current`` the latest run's minimum; for a memory growth, the median of
        earlier runs' peaks and the latest run's).
    message
        One human line.
    report_path
        The latest run's divergence report (as stored), if any.
    unit
        What ``previous`` and ``current`` of a cost regression count: ``"s"`` (seconds),
        ``"MiB"`` (a peak memory) or ``"x"`` (a ratio of two timings or two peaks, e.g.
        forward + backward / forward).
    """

    fixture: str
    device: str
    dtype: str
    target: str
    kind: RegressionKind
    run_id: int
    previous: Any
    current: Any
    message: str
    report_path: str | None = None
    unit: str = "s"

    def __post_init__(self) -> None:
        object.__setattr__(self, "kind", RegressionKind(self.kind))


def error_grew(previous: float | None, current: float | None, *, factor: float = 10.0,
               floor: float = _DEFAULT_ERROR_FLOOR) -> bool:
    """True when ``current`` exceeds ``factor`` times ``previous`` (both floored).

    The floor keeps rounding-level changes quiet: with the float64 floor,
    0 -> 1e-15 is not growth, 1e-15 -> 1e-12 is.  None (NaN/inf) on either
    side is not judged here; such stages fail and show up as status flips.
    """
    if previous is None or current is None:
        return False
    return max(current, floor) > factor * max(previous, floor)


def dtype_error_floor(dtype: str, floor: float | None = None) -> float:
    """``floor`` when given, else the dtype's machine epsilon (at least 1e-16)."""
    if floor is not None:
        return floor
    return max(_DEFAULT_ERROR_FLOOR, _DTYPE_EPS.get(dtype, 0.0))


def stage_regressions(key: tuple[str, str, str], latest: Mapping[str, Any],
                      previous_runs: Sequence[Mapping[str, Any]],
                      stages_of: Mapping[int, Mapping[str, Mapping[str, Any]]], *,
                      error_factor: float, floor: float) -> Iterator[Regression]:
    """Status flips and error growth of the latest run's stages against the runs before it.

    Parameters
    ----------
    key
        The series ``(fixture, device, dtype)``.
    latest, previous_runs
        Run rows (``id``, ``report_path``), newest first.
    stages_of
        ``{run id: {stage name: stage row (status, max_rel)}}`` for every run given.
    error_factor, floor
        See :func:`error_grew`.
    """
    fixture, device, dtype = key
    for name, stage in stages_of[latest["id"]].items():
        before = next((stages_of[run["id"]][name] for run in previous_runs
                       if name in stages_of[run["id"]]), None)
        if before is None:
            continue
        common = dict(fixture=fixture, device=device, dtype=dtype, target=name, run_id=latest["id"],
                      report_path=latest["report_path"])
        if before["status"] == Status.PASS and stage["status"] in DIVERGING:
            yield Regression(kind=RegressionKind.STATUS_FLIP, previous=before["status"], current=stage["status"],
                             message=f"{name}: {before['status']} -> {stage['status']}", **common)
        if error_grew(before["max_rel"], stage["max_rel"], factor=error_factor, floor=floor):
            yield Regression(kind=RegressionKind.ERROR_GROWTH, previous=before["max_rel"], current=stage["max_rel"],
                             message=(f"{name}: max_rel {before['max_rel']:.3g} -> {stage['max_rel']:.3g} "
                                      f"(more than x{error_factor:g})"), **common)


def judge_timing_series(series: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The timings slowdowns are judged on, from a series' timing rows (oldest first): one clock.

    Only runs timed with the latest run's clock are kept: process CPU time and wall
    time are different quantities.

    Parameters
    ----------
    series
        :meth:`HistoryStore.timing_series` rows: ``run_id, started_at, clock, samples``.

    Returns
    -------
    dict
        ``clock`` (``"cpu"``/``"wall"``), ``dropped`` (runs timed with another clock)
        and ``runs``: ``[{run_id, started_at, samples}]``.
    """
    if not series:
        return {"clock": "wall", "dropped": 0, "runs": []}
    clock = series[-1]["clock"]
    runs = [{key: run[key] for key in ("run_id", "started_at", "samples")} for run in series if run["clock"] == clock]
    return {"clock": clock, "dropped": len(series) - len(runs), "runs": runs}


def verdicts_of_runs(runs: Sequence[Mapping[str, Any]], rule: SlowdownRule | None = None) -> dict[str, TimingVerdict]:
    """The slowdown verdict of every timed target of the latest of ``runs`` (the ``runs`` of
    :func:`judge_timing_series`); targets are the phases (``"1"``..) and ``"total"``.

    Returns
    -------
    dict
        ``{target: TimingVerdict}`` (empty without runs).
    """
    rule = rule or SlowdownRule()
    if not runs:
        return {}
    targets = sorted(runs[-1]["samples"], key=lambda t: (t == "total", phase_key(t)))
    return {target: judge_slowdown([run["samples"].get(target) for run in runs], rule) for target in targets}


def _target_label(target: str) -> str:
    return "total" if target == "total" else f"phase {target}"


def _slowdowns(key: tuple[str, str, str], latest: Mapping[str, Any], verdicts: Mapping[str, TimingVerdict],
               describe: Callable[[str, TimingVerdict], tuple[str, str, str]]) -> Iterator[Regression]:
    """A ``slowdown`` per flagged verdict; ``describe(target, verdict)`` gives (label, message, unit)."""
    fixture, device, dtype = key
    for target, verdict in verdicts.items():
        if verdict.flagged:
            label, message, unit = describe(target, verdict)
            yield Regression(fixture=fixture, device=device, dtype=dtype, target=label, kind=RegressionKind.SLOWDOWN,
                             run_id=latest["id"], previous=verdict.baseline_s, current=verdict.current_s,
                             report_path=latest["report_path"], message=message, unit=unit)


def timing_regressions(key: tuple[str, str, str], latest: Mapping[str, Any],
                       verdicts: Mapping[str, TimingVerdict]) -> Iterator[Regression]:
    """A ``slowdown`` per flagged target of :func:`verdicts_of_runs` (``latest``: the run row)."""
    def describe(target: str, verdict: TimingVerdict) -> tuple[str, str, str]:
        return _target_label(target), f"{_target_label(target)}: {verdict.reason}", "s"

    return _slowdowns(key, latest, verdicts, describe)


def judged_timings(store: HistoryReader, fixture: str, device: str, dtype: str) -> dict[str, Any]:
    """:func:`judge_timing_series` of one series of ``store``."""
    return judge_timing_series(store.timing_series(fixture, device, dtype))


def timing_verdicts(store: HistoryReader, fixture: str, device: str, dtype: str,
                    rule: SlowdownRule | None = None) -> dict[str, TimingVerdict]:
    """The slowdown verdict of every timed target of a series' latest run (:func:`verdicts_of_runs`).

    Returns
    -------
    dict
        ``{target: TimingVerdict}`` (empty for a series without runs).
    """
    return verdicts_of_runs(judged_timings(store, fixture, device, dtype)["runs"], rule)


def find_regressions(store: HistoryReader, *, error_factor: float = 10.0, rule: SlowdownRule | None = None,
                     error_floor: float | None = None, memory_rule: MemoryRule | None = None) -> list[Regression]:
    """Compare the latest run of every series with the runs before it.

    Rules (per ``(fixture, device, dtype)``, fault runs ignored):

    * ``status_flip``: a stage was ``pass`` in its previous run and is now
      ``fail`` or ``error``.
    * ``error_growth``: a stage's max_rel grew by more than ``error_factor``
      against its previous run (see :func:`error_grew`).  The floor defaults to
      the dtype's machine epsilon (2.2e-16 for float64, 1.2e-7 for float32):
      changes below rounding level are not signal.
    * ``slowdown``: a phase, or the total, shows a sustained, significant step
      up per :func:`parity.storage.regressions.judge_slowdown` with ``rule`` (default
      :class:`~parity.storage.regressions.SlowdownRule`), on the runs' timing repeats;
      so does a gradient target (:data:`GRADIENT_TARGETS`), on the runs'
      ``gradient_timing`` rounds, when the latest run has one.
    * ``memory_growth``: the gradient benchmark's peak memory (forward, forward +
      backward, their ratio) of the latest run grew per
      :func:`parity.storage.memory_regressions.judge_memory` with ``memory_rule`` (default
      :class:`~parity.storage.memory_regressions.MemoryRule`), when the latest run has one.

    Returns
    -------
    list of Regression
        Sorted by series, then kind, then target.
    """
    rule = rule or SlowdownRule()
    found: list[Regression] = []
    for key in store.series_keys():
        runs = store.runs(*key, limit=STAGE_LOOKBACK + 1, include_faults=False)
        latest, previous_runs = runs[0], runs[1:]  # newest first
        if previous_runs:
            stages_of = {run["id"]: {row["name"]: row for row in store.stages(run["id"])} for run in runs}
            found.extend(stage_regressions(key, latest, previous_runs, stages_of, error_factor=error_factor,
                                           floor=dtype_error_floor(key[2], error_floor)))
        found.extend(timing_regressions(key, latest, timing_verdicts(store, *key, rule=rule)))
        found.extend(gradient_regressions(key, latest, gradient_verdicts(store, *key, latest["id"], rule=rule)))
        found.extend(memory_regressions(key, latest, memory_verdicts(store, *key, latest["id"], rule=memory_rule)))
    return sorted(found, key=lambda r: (r.fixture, r.device, r.dtype, REGRESSION_KINDS.index(r.kind), r.target))


# ------------------------------------------------------------------ gradient cost
#: Target label -> what it is taken from in a run's ``gradient_timing`` record
#: (:func:`parity.benchmarking.gradients.measure_gradients`): a contender's per-round
#: seconds, or the round-by-round ratio of two contenders (measured interleaved, so the
#: ratio cancels what the machine's load does to both; a step in it is the code's).
GRADIENT_TARGETS: dict[str, tuple[str, ...]] = {
    "gradient forward": ("forward",),
    "gradient forward+backward": ("forward+backward",),
    "gradient q gradient": ("q gradient",),
    "gradient forward+backward / forward": ("forward+backward", "forward"),
}


def gradient_samples(record: Mapping[str, Any] | None) -> dict[str, tuple[float, ...]]:
    """The samples of every :data:`GRADIENT_TARGETS` entry in one ``gradient_timing`` record.

    Parameters
    ----------
    record
        ``result["gradient_timing"]``: ``times_s`` maps a contender to its seconds per
        round (one call of every contender per round, interleaved).

    Returns
    -------
    dict
        ``{target: samples}``: seconds, or ratios per round (rounds where either side
        is missing or not positive are dropped); empty without usable times.
    """
    times = record.get("times_s") if isinstance(record, Mapping) else None
    if not isinstance(times, Mapping):
        return {}
    out: dict[str, tuple[float, ...]] = {}
    for target, parts in GRADIENT_TARGETS.items():
        if len(parts) == 1:
            samples = clean_samples(times.get(parts[0]))
        else:
            top, bottom = (times.get(p) if isinstance(times.get(p), Sequence) else () for p in parts)
            pairs = [clean_samples([a, b]) for a, b in zip(top, bottom)]
            samples = tuple(a / b for a, b in (p for p in pairs if len(p) == 2) if b > 0)
        if samples:
            out[target] = samples
    return out


def judge_gradient_series(series: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The gradient timings slowdowns are judged on (as :func:`judge_timing_series` for phases).

    Only runs that timed the latest run's workload (grid, dtype, device, threads, q
    points: :func:`parity.storage.memory_regressions.of_latest_workload`) are kept:
    another grid or thread count is another quantity.

    Parameters
    ----------
    series
        :meth:`HistoryStore.gradient_series` rows, oldest first: ``run_id, started_at, record``.

    Returns
    -------
    dict
        ``dropped`` (runs of another workload) and ``runs``: ``[{run_id, started_at, samples}]``.
    """
    rows = [row for row in series if gradient_samples(row["record"])]
    kept = of_latest_workload(rows)
    return {"dropped": len(rows) - len(kept),
            "runs": [{"run_id": row["run_id"], "started_at": row["started_at"],
                      "samples": gradient_samples(row["record"])} for row in kept]}


def gradient_verdicts_of_runs(runs: Sequence[Mapping[str, Any]],
                              rule: SlowdownRule | None = None) -> dict[str, TimingVerdict]:
    """``{target: TimingVerdict}`` of the gradient targets of the latest of ``runs``.

    The same rule as a phase's (:func:`judge_slowdown`); for a ratio its absolute floor
    is read in the ratio's units (the relative threshold is the binding one there).
    """
    rule = rule or SlowdownRule()
    if not runs:
        return {}
    return {target: judge_slowdown([run["samples"].get(target) for run in runs], rule)
            for target in GRADIENT_TARGETS if target in runs[-1]["samples"]}


def _gradient_slowdown(target: str, verdict: TimingVerdict) -> tuple[str, str, str]:
    """(label, message, unit) of a flagged gradient target."""
    if len(GRADIENT_TARGETS[target]) == 1:
        return target, f"{target}: {verdict.reason}", "s"
    # judge_slowdown words its reason in seconds; a ratio is worded as one.
    return target, (f"{target}: x{verdict.current_s:.2f} vs baseline x{verdict.baseline_s:.2f} over the last "
                    f"runs (threshold x{verdict.threshold_s:.2f}), p = {verdict.p_value:.2g}"), "x"


def gradient_regressions(key: tuple[str, str, str], latest: Mapping[str, Any],
                         verdicts: Mapping[str, TimingVerdict]) -> Iterator[Regression]:
    """A ``slowdown`` per flagged gradient target (``latest``: the run row)."""
    return _slowdowns(key, latest, verdicts, _gradient_slowdown)


def gradient_verdicts(store: HistoryReader, fixture: str, device: str, dtype: str, run_id: int | None = None,
                      rule: SlowdownRule | None = None) -> dict[str, TimingVerdict]:
    """The gradient targets' verdicts of one series of ``store``.

    ``run_id``: judge only when that run (the series' latest) has gradient timings;
    otherwise its latest timed run would be judged again under another run's name.
    """
    runs = judge_gradient_series(store.gradient_series(fixture, device, dtype))["runs"]
    if not runs or (run_id is not None and runs[-1]["run_id"] != run_id):
        return {}
    return gradient_verdicts_of_runs(runs, rule)


# ------------------------------------------------------------------ gradient peak memory
def memory_regressions(key: tuple[str, str, str], latest: Mapping[str, Any],
                       verdicts: Mapping[str, MemoryVerdict]) -> Iterator[Regression]:
    """A ``memory_growth`` per flagged verdict of :func:`memory_verdicts` (``latest``: the run row)."""
    fixture, device, dtype = key
    for target, verdict in verdicts.items():
        if verdict.flagged:
            yield Regression(fixture=fixture, device=device, dtype=dtype, target=target, kind=RegressionKind.MEMORY_GROWTH,
                             run_id=latest["id"], previous=verdict.baseline, current=verdict.current,
                             report_path=latest["report_path"], message=f"{target}: {verdict.reason}",
                             unit=verdict.unit)


def memory_verdicts(store: HistoryReader, fixture: str, device: str, dtype: str, run_id: int | None = None,
                    rule: MemoryRule | None = None) -> dict[str, MemoryVerdict]:
    """The peak-memory targets' verdicts of one series of ``store`` (as :func:`gradient_verdicts`:
    with ``run_id``, judged only when that run has a peak memory)."""
    runs = judge_memory_series(store.gradient_series(fixture, device, dtype))["runs"]
    if not runs or (run_id is not None and runs[-1]["run_id"] != run_id):
        return {}
    return memory_verdicts_of_runs(runs, rule)
