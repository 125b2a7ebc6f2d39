"""Timing-regression statistics: pure functions on series of repeated measurements.

A nightly timing is noisy in three ways: within a run (timer jitter, a repeat that
shares the CPU with something else), between runs (the machine is busier on some
nights) and in bursts (another job takes the cores for a few seconds to minutes).
On a machine shared with other jobs the noise is one-sided: contention only ever
adds time.  The rule below follows what the benchmark tools of the field do:

* **several repeats per run, summarised by their minimum** (``timeit``, pyperf's
  values after a warm-up, asv's samples): the fastest repeat is the best estimate
  of the code's own cost;
* **a baseline of earlier runs, at least** ``min_history`` **of them**, summarised
  by a low quantile of their minima (default the best of them, for the same reason;
  ``baseline_quantile=0.5`` gives the median);
* **a sustained step** (asv's ``step_detect`` models a series as piecewise
  constant and reports steps, not points): the last ``confirm`` runs must *all* be
  slow, so one or two busy nights are never a regression;
* **a significance test** on the raw repeats (asv's ``statistics.is_different`` and
  pyperf's ``compare_to`` refuse to call a difference that the spread of the samples
  explains): one-sided Mann-Whitney U of the last ``confirm`` runs' samples against
  the baseline runs' samples, ``p < alpha``;
* **a floor in absolute seconds and a relative threshold**: a change must be at
  least ``abs_floor_s`` and at least ``rel_threshold`` of the baseline, so that
  short phases (timer jitter is a large fraction of them) never flag and a small
  drift in a long phase does not either.

The defaults were chosen on the noise measured on the project's 2-core machine
(see ``tests/storage/test_history.py``): over simulated histories with that noise a night
of unchanged code is flagged with a probability of about 0.14 %, and a twofold
slowdown is flagged by its third night in about 98.8 % of the cases.  What no
threshold can separate: a machine that is 1.5x busier for three nights in a row
looks like a slowdown, and one that gets 1.5x faster just when the code gets 2x
slower hides it.

Everything here is a pure function of numbers, except the last three functions
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

import math
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Iterator, Mapping, Protocol, Sequence

from parity.contract.results import DIVERGING, Status
from parity.storage.memory_regressions import (MemoryRule, MemoryVerdict, judge_memory_series,
                                               memory_verdicts_of_runs, of_latest_workload)

__all__ = ["SlowdownRule", "TimingVerdict", "clean_samples", "judge_slowdown", "quantile", "Regression",
           "error_grew", "dtype_error_floor", "stage_regressions", "judge_timing_series", "verdicts_of_runs",
           "timing_regressions", "phase_key", "HistoryReader", "judged_timings", "timing_verdicts",
           "find_regressions", "REGRESSION_KINDS", "GRADIENT_TARGETS", "gradient_samples",
           "judge_gradient_series", "gradient_verdicts_of_runs", "gradient_regressions", "gradient_verdicts",
           "NUMERICAL_KINDS", "COST_KINDS", "memory_regressions", "memory_verdicts"]


@dataclass(frozen=True)
class SlowdownRule:
    """When a series of timings shows a slowdown (all conditions must hold).

    Attributes
    ----------
    min_history
        Earlier runs needed in the baseline before any verdict (the last
        ``confirm`` runs are not part of the baseline).
    window
        At most this many runs before the last ``confirm`` form the baseline.
    confirm
        The last ``confirm`` runs (the latest included) must all be slow.
    rel_threshold
        Each of them must exceed the baseline by at least this fraction of it.
    abs_floor_s
        ... and by at least this many seconds.
    alpha
        ... and their samples must be larger than the baseline's by a one-sided
        Mann-Whitney U test with ``p < alpha``.  Its smallest p-value is
        ``1 / C(m + n, m)`` for ``m`` and ``n`` samples: with 3 repeats per run the
        minimum history suffices; runs timed once need 7 baseline runs.
    baseline_quantile
        Which quantile of the baseline runs' minima is the baseline: 0 (default)
        the fastest earlier run, 0.5 the median.
    """

    min_history: int = 2
    window: int = 7
    confirm: int = 3
    rel_threshold: float = 0.5
    abs_floor_s: float = 0.2
    alpha: float = 0.01
    baseline_quantile: float = 0.0

    def __post_init__(self) -> None:
        for name in ("min_history", "window", "confirm"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"SlowdownRule.{name} must be an integer >= 1, got {value!r}")
        if self.window < self.min_history:
            raise ValueError(f"SlowdownRule.window ({self.window}) must be >= min_history ({self.min_history})")
        for name in ("rel_threshold", "abs_floor_s"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
                raise ValueError(f"SlowdownRule.{name} must be a finite number >= 0, got {value!r}")
        if not (isinstance(self.baseline_quantile, (int, float)) and 0 <= self.baseline_quantile <= 1):
            raise ValueError(f"SlowdownRule.baseline_quantile must be in [0, 1], got {self.baseline_quantile!r}")
        if not (isinstance(self.alpha, (int, float)) and 0 < self.alpha < 1):
            raise ValueError(f"SlowdownRule.alpha must be in (0, 1), got {self.alpha!r}")

    def describe(self) -> str:
        """One line for help texts and reports."""
        if self.baseline_quantile == 0:
            base = "the fastest"
        elif self.baseline_quantile == 0.5:
            base = "the median"
        else:
            base = f"the {self.baseline_quantile:g}-quantile"
        return (f"each of the last {self.confirm} runs, timed by its fastest repeat, slower than {base} of "
                f"up to {self.window} earlier runs (>= {self.min_history} needed) by >= "
                f"{self.rel_threshold:.0%} and >= {self.abs_floor_s:g} s, Mann-Whitney U p < {self.alpha:g}")


@dataclass(frozen=True)
class TimingVerdict:
    """The outcome of :func:`judge_slowdown` for one timed target.

    Attributes
    ----------
    status
        ``"slowdown"``, ``"ok"`` (judged, not slow) or ``"insufficient_history"``.
    baseline_s
        The baseline (seconds): the ``rule.baseline_quantile`` of the baseline runs'
        minima, None without a baseline.
    current_s
        The latest run's minimum (seconds), None for an empty series.
    threshold_s
        What each of the last ``confirm`` minima had to exceed, None without a baseline.
    p_value
        The Mann-Whitney U p-value, None when the test was not reached.
    n_baseline
        Baseline runs used.
    reason
        One human line.
    """

    status: str
    baseline_s: float | None
    current_s: float | None
    threshold_s: float | None
    p_value: float | None
    n_baseline: int
    reason: str

    @property
    def flagged(self) -> bool:
        return self.status == "slowdown"

    @property
    def ratio(self) -> float | None:
        if self.baseline_s is None or self.current_s is None or self.baseline_s <= 0:
            return None
        return self.current_s / self.baseline_s


def clean_samples(samples: Iterable[float | None] | float | None) -> tuple[float, ...]:
    """The finite, non-negative values of one run's repeats (seconds); a bare number is one repeat."""
    if samples is None:
        return ()
    if isinstance(samples, (int, float)):
        samples = [samples]
    out = []
    for value in samples:
        if value is None or isinstance(value, bool):
            continue
        value = float(value)
        if math.isfinite(value) and value >= 0:
            out.append(value)
    return tuple(out)


def quantile(values: Sequence[float], q: float) -> float:
    """The ``q``-quantile of ``values`` (linear interpolation between order statistics; 0.5: median)."""
    ordered = sorted(values)
    if not ordered:
        raise ValueError("quantile of no values")
    position = q * (len(ordered) - 1)
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def _mann_whitney_greater(candidate: Sequence[float], baseline: Sequence[float]) -> float:
    """One-sided p-value that ``candidate`` is stochastically larger than ``baseline``."""
    from scipy.stats import mannwhitneyu

    if len(set(candidate) | set(baseline)) == 1:
        return 1.0  # all equal: no evidence either way (scipy would divide by a zero variance)
    method = "exact" if len(candidate) < 8 and len(baseline) < 8 and \
        len(set(candidate) | set(baseline)) == len(candidate) + len(baseline) else "asymptotic"
    return float(mannwhitneyu(candidate, baseline, alternative="greater", method=method).pvalue)


def judge_slowdown(runs: Sequence[Sequence[float | None] | float | None],
                   rule: SlowdownRule = SlowdownRule()) -> TimingVerdict:
    """Is the end of a timing series a slowdown?

    Parameters
    ----------
    runs
        One entry per run, oldest first: the run's repeat timings in seconds (a
        sequence, or a single number for a run timed once).  None, NaN, inf and
        negative values are dropped; a run left without a sample is skipped (a
        crashed run has no timing).
    rule
        The thresholds (see :class:`SlowdownRule`).

    Returns
    -------
    TimingVerdict
        ``status == "slowdown"`` when the last ``rule.confirm`` runs are each
        slower than the baseline median of minima by at least
        ``max(rule.abs_floor_s, rule.rel_threshold * baseline)`` **and** their
        samples are significantly larger than the baseline runs' samples.  The
        baseline is the ``rule.baseline_quantile`` of the minima of up to
        ``rule.window`` runs before the last ``rule.confirm``.
    """
    series = [s for s in (clean_samples(run) for run in runs) if s]
    current = min(series[-1]) if series else None
    recent, earlier = series[-rule.confirm:], series[:-rule.confirm]
    baseline_runs = earlier[-rule.window:]
    if len(series) < rule.confirm or len(baseline_runs) < rule.min_history:
        return TimingVerdict("insufficient_history", None, current, None, None, len(baseline_runs),
                             f"needs {rule.min_history} earlier runs before the last {rule.confirm}, "
                             f"has {len(baseline_runs)}")
    baseline = quantile([min(run) for run in baseline_runs], rule.baseline_quantile)
    threshold = baseline + max(rule.abs_floor_s, rule.rel_threshold * baseline)
    minima = [min(run) for run in recent]
    common = dict(baseline_s=baseline, current_s=current, threshold_s=threshold, n_baseline=len(baseline_runs))
    fast = [i for i, value in enumerate(minima) if value <= threshold]
    if fast:
        which = "the latest run" if fast[-1] == len(minima) - 1 else f"run {fast[-1] + 1} of the last {rule.confirm}"
        return TimingVerdict("ok", p_value=None, reason=(
            f"{which} ({minima[fast[-1]]:.3g} s) is within {threshold:.3g} s "
            f"(baseline {baseline:.3g} s)"), **common)
    p_value = _mann_whitney_greater([v for run in recent for v in run], [v for run in baseline_runs for v in run])
    if p_value >= rule.alpha:
        return TimingVerdict("ok", p_value=p_value, reason=(
            f"{current:.3g} s vs baseline {baseline:.3g} s is not significant (p = {p_value:.2g})"), **common)
    return TimingVerdict("slowdown", p_value=p_value, reason=(
        f"{current:.3g} s vs baseline {baseline:.3g} s (x{current / baseline:.2f}) over the last "
        f"{rule.confirm} runs, p = {p_value:.2g}" if baseline > 0 else
        f"{current:.3g} s vs baseline 0 s over the last {rule.confirm} runs"), **common)


# ------------------------------------------------------------------ regressions of a history
#: Machine epsilon per dtype: relative errors below it are rounding, not signal.
_DTYPE_EPS = {"float64": 2.220446049250313e-16, "float32": 1.1920929e-07, "float16": 9.765625e-04,
              "complex128": 2.220446049250313e-16, "complex64": 1.1920929e-07}
_DEFAULT_ERROR_FLOOR = 1e-16
#: A stage missing from the previous run is compared with the last of this many runs that has it.
STAGE_LOOKBACK = 10
#: The kinds of regression of a stage's numbers (a nightly exits 1 on them).
NUMERICAL_KINDS = ("status_flip", "error_growth")
#: The kinds of regression of a cost: time or peak memory (reported; exit 1 only if asked).
COST_KINDS = ("slowdown", "memory_growth")
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
        One of :data:`REGRESSION_KINDS`.
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
    kind: str
    run_id: int
    previous: Any
    current: Any
    message: str
    report_path: str | None = None
    unit: str = "s"


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
            yield Regression(kind="status_flip", previous=before["status"], current=stage["status"],
                             message=f"{name}: {before['status']} -> {stage['status']}", **common)
        if error_grew(before["max_rel"], stage["max_rel"], factor=error_factor, floor=floor):
            yield Regression(kind="error_growth", previous=before["max_rel"], current=stage["max_rel"],
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
            yield Regression(fixture=fixture, device=device, dtype=dtype, target=label, kind="slowdown",
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
            yield Regression(fixture=fixture, device=device, dtype=dtype, target=target, kind="memory_growth",
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
