"""Peak-memory regressions of the gradient benchmark: pure functions on one value per run.

``parity nightly`` keeps :func:`parity.benchmarking.gradients.measure_gradients`'s record
in every run's result as ``gradient_timing``; its ``peak_mb`` holds the peak RSS over the
RSS before the call (MiB; on CUDA the device memory) of the forward map and of forward +
backward, each measured once in a fresh process.  Unlike a time, such a peak is nearly deterministic (the same
code allocates the same tensors; what varies is the allocator's and the loader's few
MiB), so a run has one value, no repeats, and no significance test is needed: the rule
(:class:`MemoryRule`) compares the latest run's value with the median of the runs before
it and flags a growth beyond a relative factor **and** an absolute floor in MiB -- the
floor keeps small workloads (a few MiB, where a lazily loaded library page is a large
fraction) quiet, the factor keeps a large workload's drift quiet.

Targets (:data:`MEMORY_TARGETS`): both peaks, and their ratio forward + backward /
forward (what issue 20's target is stated in: <= 2x).  The ratio is judged on the
relative factor alone, and only where the forward's peak is large enough for a ratio of
two RSS deltas to mean something (``MemoryRule.ratio_min_forward_mb``).

Only runs of the latest run's workload (:data:`WORKLOAD_KEYS`: grid, dtype, device,
threads, q points) form a series; records without a usable ``peak_mb`` (stores written
before it, a failed measurement -- ``memory_error`` --) are skipped. On a CUDA device the
peaks are the device memory allocated over the start (the device is part of the series'
key, so they are never mixed with RSS peaks).
Everything here is a pure function of the records; :mod:`parity.storage.regressions`
reads them from a history store and turns the flagged verdicts into ``memory_growth``
regressions.
"""
from __future__ import annotations

import math
import statistics
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

__all__ = ["MemoryRule", "MemoryVerdict", "MEMORY_TARGETS", "WORKLOAD_KEYS", "of_latest_workload",
           "memory_values", "judge_memory", "judge_memory_series", "memory_verdicts_of_runs"]

#: What must match for two runs' gradient records to be one series (the workload, the threads).
WORKLOAD_KEYS = ("grid", "dtype", "device", "threads", "n_q_gradient")
#: Target label -> the ``peak_mb`` entries it is taken from: one peak (MiB), or the ratio of two.
MEMORY_TARGETS: dict[str, tuple[str, ...]] = {
    "gradient peak forward": ("forward",),
    "gradient peak forward+backward": ("forward+backward",),
    "gradient peak forward+backward / forward": ("forward+backward", "forward"),
}

#: ``peak_mb`` entry -> its peak target (the ratio's denominator is judged for its size).
_PEAK_TARGET = {parts[0]: target for target, parts in MEMORY_TARGETS.items() if len(parts) == 1}


@dataclass(frozen=True)
class MemoryRule:
    """When a series of peak memories shows a growth (one value per run).

    Attributes
    ----------
    min_history
        Earlier runs (of the same workload, with a value) needed before any verdict.
    window
        At most this many runs before the latest form the baseline (their median).
    rel_factor
        A peak (MiB) is flagged above ``rel_factor`` times the baseline ...
    abs_floor_mb
        ... and more than ``abs_floor_mb`` MiB above it (both must hold).
    ratio_factor
        The ratio forward + backward / forward is flagged above ``ratio_factor`` times
        its baseline (no absolute floor: it has no unit) ...
    ratio_min_forward_mb
        ... and judged only when the forward's baseline peak is at least this many MiB
        (below it, a few MiB of loader noise in the denominator moves the ratio by more
        than ``ratio_factor``).
    """

    min_history: int = 3
    window: int = 7
    rel_factor: float = 1.5
    abs_floor_mb: float = 32.0
    ratio_factor: float = 1.5
    ratio_min_forward_mb: float = 32.0

    def __post_init__(self) -> None:
        for name in ("min_history", "window"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"MemoryRule.{name} must be an integer >= 1, got {value!r}")
        if self.window < self.min_history:
            raise ValueError(f"MemoryRule.window ({self.window}) must be >= min_history ({self.min_history})")
        for name in ("rel_factor", "ratio_factor"):
            value = getattr(self, name)
            if not (_is_number(value) and value >= 1):
                raise ValueError(f"MemoryRule.{name} must be a finite number >= 1, got {value!r}")
        for name in ("abs_floor_mb", "ratio_min_forward_mb"):
            value = getattr(self, name)
            if not (_is_number(value) and value >= 0):
                raise ValueError(f"MemoryRule.{name} must be a finite number >= 0, got {value!r}")

    def describe(self) -> str:
        """One line for help texts and reports."""
        return (f"the latest run's peak above the median of up to {self.window} earlier runs "
                f"(>= {self.min_history} needed) by more than x{self.rel_factor:g} and "
                f"+{self.abs_floor_mb:g} MiB; the ratio forward+backward / forward above "
                f"x{self.ratio_factor:g} its median (forward peak >= {self.ratio_min_forward_mb:g} MiB)")


@dataclass(frozen=True)
class MemoryVerdict:
    """The outcome of :func:`judge_memory` for one target.

    Attributes
    ----------
    status
        ``"growth"``, ``"ok"`` (judged, not grown), ``"insufficient_history"`` or
        ``"too_small"`` (a ratio whose forward peak is under the rule's minimum).
    baseline
        The median of the baseline runs' values, None without a baseline.
    current
        The latest run's value, None for an empty series.
    threshold
        What ``current`` had to exceed to be flagged, None without a baseline.
    n_baseline
        Baseline runs used.
    unit
        ``"MiB"`` (a peak) or ``"x"`` (the ratio of two peaks).
    reason
        One human line.
    """

    status: str
    baseline: float | None
    current: float | None
    threshold: float | None
    n_baseline: int
    unit: str
    reason: str

    @property
    def flagged(self) -> bool:
        return self.status == "growth"


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _fmt(value: float, unit: str) -> str:
    return f"x{value:.2f}" if unit == "x" else f"{value:.0f} MiB"


def of_latest_workload(rows: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """The ``rows`` (``{"record": ...}``, oldest first) whose record has the last row's workload
    (:data:`WORKLOAD_KEYS`); another grid or thread count is another quantity."""
    if not rows:
        return []
    workload = [rows[-1]["record"].get(key) for key in WORKLOAD_KEYS]
    return [row for row in rows if [row["record"].get(key) for key in WORKLOAD_KEYS] == workload]


def memory_values(record: Mapping[str, Any] | None) -> dict[str, float]:
    """The value of every :data:`MEMORY_TARGETS` entry in one ``gradient_timing`` record.

    Parameters
    ----------
    record
        ``result["gradient_timing"]``: ``peak_mb`` maps ``"forward"`` and
        ``"forward+backward"`` to a peak RSS over the start (MiB), or None where that
        measurement failed.

    Returns
    -------
    dict
        ``{target: value}``: MiB for a peak, the ratio for the ratio (needs both peaks,
        the forward's positive); a peak that is missing, not a finite number or negative
        is left out, so a record without ``peak_mb`` gives ``{}``.
    """
    peaks = record.get("peak_mb") if isinstance(record, Mapping) else None
    if not isinstance(peaks, Mapping):
        return {}
    clean = {name: float(value) for name, value in peaks.items() if _is_number(value) and value >= 0}
    out: dict[str, float] = {}
    for target, parts in MEMORY_TARGETS.items():
        if not all(part in clean for part in parts):
            continue
        if len(parts) == 1:
            out[target] = clean[parts[0]]
        elif clean[parts[1]] > 0:
            out[target] = clean[parts[0]] / clean[parts[1]]
    return out


def judge_memory(values: Sequence[float | None], rule: MemoryRule = MemoryRule(), *,
                 unit: str = "MiB") -> MemoryVerdict:
    """Is the latest of a series of peak memories (or of their ratios) a growth?

    Parameters
    ----------
    values
        One value per run, oldest first: MiB (``unit="MiB"``) or a ratio (``unit="x"``).
        None, NaN, inf and negative values are dropped (a run that did not measure it).
    rule
        The thresholds (see :class:`MemoryRule`).
    unit
        ``"MiB"``: flagged when the latest value exceeds
        ``max(rule.rel_factor * baseline, baseline + rule.abs_floor_mb)``; ``"x"``: when it
        exceeds ``rule.ratio_factor * baseline``.  The baseline is the median of up to
        ``rule.window`` values before the latest.

    Returns
    -------
    MemoryVerdict
    """
    if unit not in ("MiB", "x"):
        raise ValueError(f"judge_memory: unit must be 'MiB' or 'x', got {unit!r}")
    series = [float(v) for v in values if _is_number(v) and v >= 0]
    current = series[-1] if series else None
    earlier = series[:-1][-rule.window:]
    if len(earlier) < rule.min_history:
        return MemoryVerdict("insufficient_history", None, current, None, len(earlier), unit,
                             f"needs {rule.min_history} earlier runs, has {len(earlier)}")
    baseline = statistics.median(earlier)
    if unit == "x":
        threshold = rule.ratio_factor * baseline
        limits = f"x{rule.ratio_factor:g} the baseline"
    else:
        threshold = max(rule.rel_factor * baseline, baseline + rule.abs_floor_mb)
        limits = f"x{rule.rel_factor:g} and +{rule.abs_floor_mb:g} MiB over the baseline"
    common = dict(baseline=baseline, current=current, threshold=threshold, n_baseline=len(earlier), unit=unit)
    versus = (f"{_fmt(current, unit)} vs baseline {_fmt(baseline, unit)} "
              f"(median of {len(earlier)} earlier runs)")
    if current <= threshold:
        return MemoryVerdict("ok", reason=f"{versus} is within {_fmt(threshold, unit)}", **common)
    growth = f" (x{current / baseline:.2f})" if baseline > 0 and unit == "MiB" else ""
    return MemoryVerdict("growth", reason=f"{versus}{growth} exceeds {limits} ({_fmt(threshold, unit)})",
                         **common)


def judge_memory_series(series: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The peak memories growth is judged on, from a series' gradient records (oldest first).

    Parameters
    ----------
    series
        :meth:`HistoryStore.gradient_series` rows: ``run_id, started_at, record``.

    Returns
    -------
    dict
        ``dropped`` (runs of another workload) and ``runs``: ``[{run_id, started_at,
        values}]`` (:func:`memory_values`), only runs with at least one value.
    """
    rows = [row for row in series if memory_values(row["record"])]
    kept = of_latest_workload(rows)
    return {"dropped": len(rows) - len(kept),
            "runs": [{"run_id": row["run_id"], "started_at": row["started_at"],
                      "values": memory_values(row["record"])} for row in kept]}


def memory_verdicts_of_runs(runs: Sequence[Mapping[str, Any]],
                            rule: MemoryRule | None = None) -> dict[str, MemoryVerdict]:
    """``{target: MemoryVerdict}`` of the targets the latest of ``runs`` (the ``runs`` of
    :func:`judge_memory_series`) has; empty without runs."""
    rule = rule or MemoryRule()
    if not runs:
        return {}
    out: dict[str, MemoryVerdict] = {}
    for target, parts in MEMORY_TARGETS.items():
        if target not in runs[-1]["values"]:
            continue
        values = [run["values"].get(target) for run in runs]
        if len(parts) == 1:
            out[target] = judge_memory(values, rule, unit="MiB")
            continue
        verdict = judge_memory(values, rule, unit="x")
        # The denominator's own baseline, over the runs that measured it (as a peak target's).
        forward = judge_memory([run["values"].get(_PEAK_TARGET[parts[1]]) for run in runs], rule, unit="MiB")
        if forward.baseline is not None and forward.baseline < rule.ratio_min_forward_mb:
            verdict = MemoryVerdict("too_small", verdict.baseline, verdict.current, None, verdict.n_baseline, "x",
                                    f"not judged: the {parts[1]} peak's baseline ({forward.baseline:.0f} MiB) "
                                    f"is under {rule.ratio_min_forward_mb:g} MiB")
        out[target] = verdict
    return out
