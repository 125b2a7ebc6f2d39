"""The predicate of a reduction: does this input still show the SAME divergence?

A divergence is identified by its first failing stage and the diagnosis signature of that
stage (:func:`signature_key`); ``keep_stage`` relaxes the identity to the stage alone. An
input is judged by running only the stages needed to decide it: the selected stages in
registry (phase) order up to and including the target stage, stopping at the first
failure; every stage before the target must pass for the target to be the first failure.

Every candidate is validated by the reference itself: an input the reference refuses
(``make_run`` raises :class:`~eryx.errors.EryxInputError`, e.g. a rigid body of collinear
atoms, a grid the model refuses, spring constants out of range) is ``invalid``, never
"not reproducing" and never kept. When the run compares maps, so is an input whose maps
the reference would refuse (an undefined ADP scale) or that has no grid point off k = 0
(every map stage would compare nothing). Verdicts are memoised by the input's content hash, so
an input met twice is run once.
"""
from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

from eryx.errors import EryxInputError

from parity.running.runner import make_run, run_stages, stage_tier
from parity.contract.results import DIVERGING, Status
from parity.stages import Stage, get_stage
from parity.reduce.moves import Case

#: Signature kinds whose phrase names indices, counts or angles that change as the input
#: shrinks: compared by kind (and, for 'partial', the axes or subset) only.
KIND_ONLY = ("nan_pattern", "eigen_rotation", "eigenvalues", "incomplete", "internal_error", "shape")
#: CPU seconds the predicate allows the diagnosis of the failing stage when the run's own
#: diagnosis (:data:`parity.running.runner.DIAGNOSIS_BUDGET_S`, 0.05 s) was cut short.
#: That budget is counted in CPU time of the calling thread, so where it runs out depends on
#: the machine, its load and the thread counts (NumPy's BLAS work on other threads is not
#: counted, at 1 thread it is), not on the input: a cut-short diagnosis explains nothing
#: and its signature reads "no simple signature". The predicate's signature must not.
PREDICATE_DIAGNOSIS_BUDGET_S = 30.0
#: Verdicts of :class:`Outcome`.
REPRODUCES, OTHER, INVALID = "reproduces", "other divergence", "invalid"


def cut_short(record: Mapping[str, Any]) -> bool:
    """Whether a stage record's diagnosis ran out of its time budget."""
    return any((d.get("params") or {}).get("cut_short") for d in record.get("diagnosis") or ())


def settle_diagnosis(run, records: list[dict]) -> list[dict]:
    """``records`` with the first failure's diagnosis redone without the run's time limit, if it was cut short.

    The signature the predicate keeps is then a property of the input (and of the stage's
    tolerance tier, by which every hypothesis is judged), not of how fast this process got
    through the diagnosis (:data:`PREDICATE_DIAGNOSIS_BUDGET_S`).
    """
    failed = next((r for r in records if r["status"] in DIVERGING), None)
    if failed is None or not cut_short(failed):
        return records
    stage = get_stage(failed["name"])
    sigs, _, _ = stage.comparator.diagnose(stage, run, stage_tier(stage, run), None,
                                           budget_s=PREDICATE_DIAGNOSIS_BUDGET_S)
    failed["diagnosis"] = [sig.to_dict() for sig in sigs]
    return records


class NothingToReduce(Exception):
    """The initial run shows no divergence (message: "nothing to reduce: the run agrees")."""


def signature_key(record: Mapping[str, Any]) -> str:
    """The identity of a failing stage record's divergence, stable as the input shrinks.

    The best explaining signature's kind and phrase ("constant_factor: x 1/(2 pi)"), the
    kind alone where the phrase carries sizes (see :data:`KIND_ONLY`), the confining axes
    or subset for a partial divergence; "error: TYPE" for a stage that raised.
    """
    if record.get("status") == Status.ERROR:
        msg = str(record.get("message") or "")
        kind = next((w.rstrip(":") for w in msg.split() if w.endswith(("Error:", "Exception:", "Failure:"))), "")
        return f"error: {kind}".rstrip(": ") if kind else "error"
    best = next((d for d in record.get("diagnosis") or () if d.get("explains")), None)
    if best is None:
        return "no simple signature"
    kind, params = best.get("signature", ""), best.get("params") or {}
    if kind == "partial":
        if params.get("subset"):
            return f"partial: {params['subset']} ({params.get('mode', '')})"
        axes = [str(a[0]) for a in params.get("per_axis") or () if isinstance(a, (list, tuple)) and a]
        return "partial along " + " & ".join(axes) if axes else "partial"
    if kind in KIND_ONLY:
        return kind
    return f"{kind}: {best.get('phrase', '')}"


@dataclass(frozen=True)
class Target:
    """The divergence to keep: its first failing stage and signature (None: any signature).

    ``contains``, when given (``parity reduce --keep TEXT``), replaces the exact signature:
    a reduced input reproduces when its first failing stage's signature contains that text
    (case-insensitive), e.g. ``--keep transpose`` or ``--keep "1/(2 pi)"``.
    """

    stage: str
    signature: str | None
    contains: str | None = None

    def matches(self, signature: str) -> bool:
        """Whether a candidate's signature keeps the divergence (the stage is checked apart)."""
        if self.contains is not None:
            return self.contains.casefold() in signature.casefold()
        return self.signature is None or signature == self.signature

    def describe(self) -> str:
        if self.contains is not None:
            return f"{self.stage} [signature containing '{self.contains}']"
        return self.stage + (f" [{self.signature}]" if self.signature else " [any signature]")


@dataclass(frozen=True)
class Outcome:
    """The oracle's verdict on one input.

    Attributes
    ----------
    verdict : str
        :data:`REPRODUCES`, :data:`OTHER` (agrees, or diverges otherwise) or :data:`INVALID`
        (the reference refuses the input).
    first_failure, signature : str or None
        What failed first and how (None when nothing failed or the input is invalid).
    reason : str
        One line: why it is invalid, or what it showed instead.
    seconds : float
        Wall time of the evaluation (0 for a memoised verdict).
    cached : bool
    """

    verdict: str
    first_failure: str | None
    signature: str | None
    reason: str
    seconds: float
    cached: bool = False


class Oracle:
    """Runs candidate inputs through the harness and judges them against a :class:`Target`.

    Parameters
    ----------
    options : dict
        ``make_run`` keywords other than the input (reference, candidate, their paths and
        interpreters, fault, device, dtype, tier_overrides).
    stages : sequence of Stage
        The run's selected stages, in registry order.
    workdir : Path, optional
        Where candidate PDB files are written (default: a temporary folder, removed by
        :meth:`close`).
    """

    def __init__(self, options: Mapping[str, Any], stages: Sequence[Stage], workdir: Path | None = None) -> None:
        self.options = dict(options)
        self.stages = list(stages)
        self._tmp = None if workdir else tempfile.TemporaryDirectory(prefix="parity-reduce-")
        self.workdir = Path(workdir or self._tmp.name)  # type: ignore[union-attr]
        self.target: Target | None = None
        self.keep_stage = False
        self._memo: dict[str, Outcome] = {}
        self.n_runs = 0
        #: Judges candidates ahead in worker processes (a :class:`~parity.reduce.parallel.CandidatePool`,
        #: set by the driver for ``--jobs`` > 1); None: every candidate is judged here, when asked.
        self.pool: Any = None
        self._ahead: dict[str, Any] = {}  # case key -> Future of (Outcome, runs)

    def close(self) -> None:
        if self._tmp is not None:
            self._tmp.cleanup()

    # -- running
    def write(self, case: Case) -> Path:
        text = case.pdb_text()
        path = self.workdir / f"{case.key()[:16]}.pdb"
        if not path.exists():
            path.write_text(text)
        return path

    def _records(self, case: Case, stages: Sequence[Stage]) -> tuple[list[dict] | None, str]:
        """The records of ``stages`` (fail-fast), or (None, why the reference refuses the input)."""
        path = self.write(case)
        if any(s.is_map for s in self.stages) and not case.grid.bragg_free.any():  # decided before any build
            return None, "every grid point is a Bragg point (k = 0): the maps would compare nothing"
        try:
            run = make_run(str(path), samplings=case.samplings, params=case.param_dict, **self.options)
        except (EryxInputError, ValueError) as exc:
            return None, f"{type(exc).__name__}: {str(exc).replace(str(path), 'the candidate PDB')}"
        self.n_runs += 1
        refusal = self.map_refusal(run)
        if refusal:
            return None, refusal
        return settle_diagnosis(run, run_stages(run, stages, progress=False, fail_fast=True)), ""

    def map_refusal(self, run) -> str:
        """Why the reference will refuse this input's maps, when the run compares maps ('' otherwise).

        The project's models decide at construction whether the ADP scale is defined
        (``adp_undefined_reason``: no contacts between ASUs, only k = 0 with one ASU, ...);
        every map and gradient of such an input is refused by the reference, so a reduced
        case there would not be a whole run the reference accepts.
        """
        if not any(s.phase >= 3 for s in self.stages):
            return ""
        reason = getattr(getattr(run.reference_session, "model", None), "adp_undefined_reason", None)
        return f"UndefinedADPError: the ADP scale is undefined: {reason}" if reason else ""

    def establish(self, case: Case, keep_stage: bool = False, keep: str | None = None) -> Target:
        """Run the initial input over every selected stage (stopping at the first failure): its target.

        ``keep`` (a piece of signature text) makes the target "this stage with a signature
        containing ``keep``"; ``keep_stage`` makes it the stage alone.

        Raises
        ------
        NothingToReduce
            When no stage fails or errors, or the first failure's signature does not
            contain ``keep``.
        EryxInputError
            When the reference refuses the initial input.
        """
        path = self.write(case)
        run = make_run(str(path), samplings=case.samplings, params=case.param_dict, **self.options)
        self.n_runs += 1
        records = settle_diagnosis(run, run_stages(run, self.stages, progress=False, fail_fast=True))
        failed = next((r for r in records if r["status"] in DIVERGING), None)
        if failed is None:
            raise NothingToReduce("nothing to reduce: the run agrees")
        sig = signature_key(failed)
        if keep is not None and keep.casefold() not in sig.casefold():
            raise NothingToReduce(f"nothing to reduce with --keep '{keep}': the run's first failure "
                                  f"{failed['name']} shows [{sig}]")
        self.keep_stage = keep_stage
        self.target = Target(failed["name"], None if keep_stage else sig, keep)
        self._memo[case.key()] = Outcome(REPRODUCES, failed["name"], signature_key(failed), "the initial input", 0.0)
        return self.target

    def predicate_stages(self) -> list[Stage]:
        """The selected stages up to and including the target (all of them decide "first failure")."""
        assert self.target is not None, "establish() first"
        names = [s.name for s in self.stages]
        return self.stages[:names.index(self.target.stage) + 1] if self.target.stage in names else self.stages

    def prefetch(self, cases: Sequence[Case]) -> None:
        """Start judging ``cases`` in the pool (no-op without one); earlier queued ones not among them are dropped.

        The verdicts are only used when :meth:`evaluate` asks for these cases, in the
        caller's own order, so judging ahead never changes a reduction, only its speed.
        """
        if self.pool is None:
            return
        keys = {c.key() for c in cases}
        for key in [k for k in self._ahead if k not in keys]:
            if self._ahead[key].cancel():  # still queued: no longer wanted
                del self._ahead[key]
        for case in cases:
            key = case.key()
            if key not in self._memo and key not in self._ahead:
                self._ahead[key] = self.pool.submit(case)

    def _judged_ahead(self, key: str) -> Outcome | None:
        """A worker's verdict on the case ``key`` (waiting for it), or None: judge it here."""
        future = self._ahead.pop(key, None)
        if future is None or future.cancel():  # not submitted, or still queued: this process does it now
            return None
        try:
            outcome, runs = future.result()
        except Exception:  # a worker that died or failed: the case is judged here instead
            return None
        self.n_runs += runs
        return outcome

    def evaluate(self, case: Case) -> Outcome:
        """The verdict on ``case`` (memoised by content; judged ahead by the pool when it was prefetched)."""
        key = case.key()
        if key in self._memo:
            o = self._memo[key]
            return Outcome(o.verdict, o.first_failure, o.signature, o.reason, 0.0, True)
        ahead = self._judged_ahead(key)
        if ahead is not None:
            self._memo[key] = ahead
            return ahead
        t0 = time.perf_counter()
        records, refusal = self._records(case, self.predicate_stages())
        seconds = time.perf_counter() - t0
        if records is None:
            out = Outcome(INVALID, None, None, f"the reference refuses it: {refusal}", seconds)
        else:
            out = self.judge(records, seconds)
        self._memo[key] = out
        return out

    def judge(self, records: Sequence[Mapping[str, Any]], seconds: float = 0.0) -> Outcome:
        """The verdict on a run's stage records against the target."""
        assert self.target is not None
        refused = next((r for r in records if r["status"] == Status.NOT_COMPARABLE
                        and " refuses: " in str(r.get("message") or "")), None)
        if refused is not None:  # refused only once computing (e.g. a spectrum out of range)
            return Outcome(INVALID, None, None, f"{refused['name']}: {refused['message']}", seconds)
        failed = next((r for r in records if r["status"] in DIVERGING), None)
        if failed is None:
            return Outcome(OTHER, None, None, "no divergence", seconds)
        sig = signature_key(failed)
        if failed["name"] != self.target.stage:
            return Outcome(OTHER, failed["name"], sig, f"first failure moved to {failed['name']}", seconds)
        if not self.target.matches(sig):
            return Outcome(OTHER, failed["name"], sig, f"signature changed to [{sig}]", seconds)
        return Outcome(REPRODUCES, failed["name"], sig, "", seconds)
