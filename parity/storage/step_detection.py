"""Step detection for timings: pure functions on series of repeated measurements.

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

Used by :mod:`parity.storage.regressions` (which judges a history's phases, totals and
gradient cost with it) and by ``parity nightly``'s settings (:class:`SlowdownRule`).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable, Sequence

__all__ = ["SlowdownRule", "TimingVerdict", "clean_samples", "quantile", "judge_slowdown"]


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
