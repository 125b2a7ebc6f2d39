"""Recording, aligning and comparing named probes (``eryx.probes``) of two implementations.

A :class:`ProbeRecorder` is the listener (``parity.backends.probe_recorder``, where the
backends that carry probes across a dump or a worker process find it; re-exported here).

:func:`groups` turns a side's records into :class:`Group` s: one per (name, index names),
the values stacked by their indices, so that a looped probe (``A_block[asu=1, atom=7]``,
one record per iteration) and a vectorised one (``axes=("asu", "atom")``, one record) are
the same probe. :func:`compare_probes` aligns the groups by name and index names, in the
reference's order, compares each under its tier and names the root: the first probe
whose value diverges while every probe before it agrees, and, inside it, the first
diverging iteration in the reference's order.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from parity.backends.probe_recorder import MEMORY_BUDGET, ProbeRecorder, Record  # noqa: F401 (re-exported)
from parity.comparison.engine import compare_arrays
from parity.contract.results import Status
from parity.contract.tiers import Tier

#: Probe name -> the registry stage whose tier (and term scaling) judges it.
PROBE_STAGES: dict[str, str] = {
    "q_grid": "q_grid", "bz_fraction": "kvec", "kvec": "kvec", "bz_index": "bz_index", "A_block": "Amat", "Mmat_block": "Mmat",
    "cholesky": "Linv", "Linv": "Linv", "hessian_block": "hessian", "K": "K", "D": "D", "Winv": "Winv",
    "V_Winv_VH": "Kinv", "Kinv": "Kinv", "covar_sum": "covar", "covar": "covar", "ADP": "ADP",
    "F": "structure_factors", "Id_part": "Id", "Id": "Id",
}


# ------------------------------------------------------------------ groups
@dataclass
class Group:
    """All values of one probe on one side, by loop index.

    ``rows`` (m, k) are the index tuples in record order, ``values`` (m, ...) their values.
    """

    key: str
    name: str
    index_names: tuple[str, ...]
    first_seq: int
    where: str
    tier: str | None
    rows: np.ndarray
    values: np.ndarray

    def dense(self) -> tuple[np.ndarray, np.ndarray]:
        """(array indexed by the loop indices then the value's axes, present mask over the indices)."""
        if not self.index_names:
            return self.values[0], np.ones((), dtype=bool)
        shape = tuple(int(n) + 1 for n in self.rows.max(axis=0))
        fill = np.nan if np.issubdtype(self.values.dtype, np.inexact) else 0
        out = np.full(shape + self.values.shape[1:], fill, dtype=self.values.dtype)
        present = np.zeros(shape, dtype=bool)
        idx = tuple(self.rows.T)
        out[idx] = self.values
        present[idx] = True
        return out, present

    def label(self, row: Sequence[int] | None = None) -> str:
        if not self.index_names or row is None:
            return self.key
        return f"{self.key}[{', '.join(f'{n}={int(v)}' for n, v in zip(self.index_names, row))}]"


def _expand(r: Record) -> tuple[tuple[str, ...], np.ndarray, np.ndarray]:
    """(index names, rows (m, k), values (m, ...)) of one record."""
    names = tuple(k for k, _ in r.index)
    const = [v for _, v in r.index]
    value = np.asarray(r.value)
    if not r.axes:
        return names, np.array([const], dtype=np.int64).reshape(1, len(const)), value[None]
    positions = []
    for d, a in enumerate(r.axes):
        if isinstance(a, str):
            names += (a,)
            positions.append(np.arange(value.shape[d]))
        else:
            names += (a[0],)
            positions.append(np.asarray(a[1], dtype=np.int64))
    mesh = np.meshgrid(*positions, indexing="ij")
    m = int(np.prod([len(p) for p in positions]))
    rows = np.column_stack([np.full(m, c, dtype=np.int64) for c in const] + [g.reshape(-1) for g in mesh])
    return names, rows.reshape(m, len(names)), value.reshape((m,) + value.shape[len(r.axes):])


def groups(records: Sequence[Record]) -> dict[str, Group]:
    """A side's records as groups, keyed ``name`` (``name#n`` for the n-th repeated call of an
    unindexed probe), in order of first appearance."""
    out: dict[str, Group] = {}
    parts: dict[str, list] = {}
    seen: Counter = Counter()
    for r in records:
        names, rows, values = _expand(r)
        key = r.name
        if not names:  # an unindexed probe called again: the n-th call is its own probe
            seen[r.name] += 1
            key = r.name if seen[r.name] == 1 else f"{r.name}#{seen[r.name]}"
        if key in out and out[key].index_names != names:
            key = f"{key}({','.join(names)})"
        if key not in out:
            out[key] = Group(key, r.name, names, r.seq, r.where, r.tier, rows, values)
            parts[key] = [(rows, values)]
        else:
            parts[key].append((rows, values))
    for key, g in out.items():
        if len(parts[key]) > 1:
            shapes = {v.shape[1:] for _, v in parts[key]}
            if len(shapes) == 1:
                g.rows = np.concatenate([p[0] for p in parts[key]])
                g.values = np.concatenate([p[1] for p in parts[key]])
    return out


# -------------------------------------------------------------- comparison
@dataclass
class ProbeResult:
    """One aligned probe's comparison."""

    key: str
    status: str  # pass | fail | unaligned
    tier: str = ""
    max_rel: float | None = None
    n_mismatch: int = 0
    n_total: int = 0
    first_bad: str | None = None
    first_bad_error: float | None = None
    where_reference: str = ""
    where_candidate: str = ""
    message: str = ""


@dataclass
class ProbeLocation:
    """What :func:`compare_probes` found."""

    results: list[ProbeResult]
    root: ProbeResult | None
    evidence: str
    only_reference: list[str] = field(default_factory=list)
    only_candidate: list[str] = field(default_factory=list)
    diagnosis: list = field(default_factory=list)

    def summary(self) -> str:
        if self.root is None:
            return self.evidence
        r = self.root
        return (f"root probe {r.first_bad or r.key}  at {r.where_candidate or r.where_reference}  "
                f"(reference: {r.where_reference})\n  {self.evidence}")

    def to_dict(self) -> dict:
        from dataclasses import asdict

        return {"kind": "probes", "root": asdict(self.root) if self.root else None, "evidence": self.evidence,
                "probes": [asdict(r) for r in self.results], "only_reference": self.only_reference,
                "only_candidate": self.only_candidate, "diagnosis": [d.to_dict() for d in self.diagnosis]}


def _conventions(e: np.ndarray, a: np.ndarray) -> np.ndarray:
    """The reference's complex storage of a real quantity (zero imaginary part), as real."""
    if np.iscomplexobj(e) and not np.iscomplexobj(a):
        imag = e.imag[np.isfinite(e.imag)]
        if not (imag.size and np.any(imag != 0)):
            return e.real
    return e


def _failing_mask(e: np.ndarray, a: np.ndarray, tier: Tier) -> np.ndarray:
    """Elements outside the tier (|a - e| > atol max|e| + rtol |e|; NaN pattern must match)."""
    fin = np.isfinite(e) & np.isfinite(a)
    scale = float(np.max(np.abs(e[fin]))) if fin.any() else 0.0
    with np.errstate(invalid="ignore"):
        bad = np.abs(a - e) > tier.atol * scale + tier.rtol * np.abs(e)
    return np.where(fin, bad, np.isnan(e) != np.isnan(a))


def probe_tier(g: Group, default: Tier, resolve) -> Tier:
    """The tier named by the probe, else its mapped stage's, else ``default``."""
    if g.tier:
        return resolve(g.tier, None)
    stage = PROBE_STAGES.get(g.name)
    return resolve(None, stage) if stage else default


def compare_group(e: Group, a: Group, tier: Tier, n_terms: int | None = None) -> ProbeResult:
    res = ProbeResult(e.key, Status.PASS.value, tier.name, where_reference=e.where, where_candidate=a.where)
    if e.index_names != a.index_names or e.values.shape[1:] != a.values.shape[1:]:
        res.status = Status.FAIL.value
        res.message = (f"alignment stopped: reference {e.label()}{list(e.index_names)} of value shape "
                       f"{e.values.shape[1:]}, candidate {list(a.index_names)} {a.values.shape[1:]}")
        return res
    ed, ep = e.dense()
    ad, ap = a.dense()
    if ed.shape != ad.shape or not np.array_equal(ep, ap):
        res.status = Status.FAIL.value
        res.message = f"the two sides probed different iterations of {e.key} (index ranges {ep.shape} vs {ap.shape})"
        return res
    ed = _conventions(ed, ad)
    cmp_ = compare_arrays(ad, ed, tier, name=e.key, n_terms=n_terms)
    used = tier
    t = cmp_.to_dict().get("details", {}).get("tier")
    if isinstance(t, dict):
        used = Tier(tier.name, float(t.get("rtol", tier.rtol)), float(t.get("atol", tier.atol)))
    d = cmp_.to_dict()
    res.max_rel, res.n_mismatch, res.n_total = d.get("max_rel"), int(d.get("n_mismatch") or 0), int(d.get("n_total") or 0)
    res.tier = used.describe()
    if cmp_.passed or d.get("status") == Status.NOT_COMPARABLE:
        res.status = Status.PASS.value if cmp_.passed else Status.NOT_COMPARABLE.value
        return res
    res.status, res.message = Status.FAIL.value, d.get("message", "")
    if np.iscomplexobj(ad) != np.iscomplexobj(ed):
        res.first_bad = e.label()
        return res
    bad = _failing_mask(np.asarray(ed), np.asarray(ad), used)
    if e.index_names:
        k = len(e.index_names)
        per_row = bad.reshape(bad.shape[:k] + (-1,)).any(axis=-1)
        order = [tuple(r) for r in e.rows]  # the reference's iteration order
        first = next((r for r in order if per_row[r]), None)
        if first is not None:
            res.first_bad = e.label(first)
            de, da = np.asarray(ed[first]), np.asarray(ad[first])
            scale = float(np.nanmax(np.abs(de))) if np.isfinite(de).any() else 0.0
            res.first_bad_error = float(np.nanmax(np.abs(da - de)) / scale) if scale else float(np.nanmax(np.abs(da - de)))
    else:
        res.first_bad = e.label()
    return res


def compare_probes(ref: Sequence[Record], cand: Sequence[Record], resolve, default: Tier,
                   n_terms=lambda stage: None, diagnose: bool = True) -> ProbeLocation:
    """Align both sides' probes and name the root (see the module docstring).

    ``resolve(tier_name or None, stage_name or None) -> Tier``; ``n_terms(stage) -> int | None``.
    """
    ge, ga = groups(ref), groups(cand)
    only_r = [k for k in ge if k not in ga]
    only_c = [k for k in ga if k not in ge]
    results: list[ProbeResult] = []
    root = None
    for key, e in sorted(((k, g) for k, g in ge.items() if k in ga), key=lambda kv: kv[1].first_seq):
        tier = probe_tier(e, default, resolve)
        res = compare_group(e, ga[key], tier, n_terms(PROBE_STAGES.get(e.name)))
        results.append(res)
        if root is None and res.status == Status.FAIL:
            root = res
    loc = ProbeLocation(results, root, "", only_r, only_c)
    agreed = [r for r in results[:results.index(root)]] if root else results
    worst = max((r.max_rel or 0.0 for r in agreed), default=0.0)
    if root is None:
        loc.evidence = (f"no probe diverges: {len(results)} probes aligned and agree (worst normwise error "
                        f"{worst:.2g})" + (f"; {len(only_r)} probes only on the reference, {len(only_c)} only on "
                                           f"the candidate" if only_r or only_c else ""))
        return loc
    inputs = (f"its inputs agree: the {len(agreed)} probes before it pass (worst normwise error {worst:.2g})"
              if agreed else "it is the first probe of the stream")
    err = f"{root.max_rel:.3g}" if root.max_rel is not None else "n/a"
    loc.evidence = (f"{inputs}; {root.key} diverges: normwise error {err}, {root.n_mismatch}/{root.n_total} "
                    f"elements outside {root.tier}"
                    + (f"; first diverging iteration {root.first_bad} (error {root.first_bad_error:.3g})"
                       if root.first_bad_error is not None else "")
                    + (f"; {root.message}" if root.message and root.n_total == 0 else ""))
    if diagnose:
        loc.diagnosis = _diagnose(ge[root.key], ga[root.key], resolve, default)
    return loc


def _diagnose(e: Group, a: Group, resolve, default: Tier) -> list:
    from parity.diagnosis import signatures as dg

    try:
        ed, _ = e.dense()
        ad, _ = a.dense()
        ed = _conventions(ed, ad)
        axes = e.index_names + tuple(f"axis {i}" for i in range(ed.ndim - len(e.index_names)))
        return dg.diagnose_arrays(ed, ad, probe_tier(e, default, resolve), axes=axes, matrix_axes=(),
                                  time_budget_s=0.2)
    except Exception:  # the diagnosis describes; it never decides
        return []
