"""The moves of a reduction: pure functions from a case to smaller or simpler candidates.

A :class:`Case` is one complete input of a run: the crystal (:class:`~parity.reduce.crystal.Atoms`),
the grid and the model parameters. Candidate generators return candidates largest move
first; the structural moves are delta debugging over chains, residues and atoms
(:func:`parity.reduce.ddmin.ddmin`). Whether a candidate is valid (the reference accepts
it) and still shows the divergence is the oracle's business, never decided here.
"""
from __future__ import annotations

import functools
import hashlib
import json
from dataclasses import dataclass, replace
from typing import Any, Callable, Mapping

import numpy as np

from parity.contract.spec import DEFAULT_PARAMS, RunSpec
from parity.reduce.crystal import SIMPLE_B, SIMPLE_ELEMENT, SIMPLE_OCC, Atoms, expanded_p1, to_pdb

Sampling = tuple[int, int, int]
#: Contact cutoffs (A) tried below the current one: fewer contacts, smaller Hessians.
SMALLER_CUTOFFS = (3.0, 2.0)


@dataclass(frozen=True, eq=False)  # arrays inside: compare by content with key()
class Case:
    """One input of a run.

    Attributes
    ----------
    atoms : Atoms
    samplings : ((hmin, hmax, L_h), (kmin, kmax, L_k), (lmin, lmax, L_l))
    params : tuple of (name, value)
        Model parameters (sorted items; see :data:`parity.contract.spec.DEFAULT_PARAMS`).
    """

    atoms: Atoms
    samplings: tuple[Sampling, Sampling, Sampling]
    params: tuple

    @classmethod
    def make(cls, atoms: Atoms, samplings, params: Mapping[str, Any]) -> "Case":
        return cls(atoms, tuple(tuple(int(v) for v in s) for s in samplings),  # type: ignore[arg-type]
                   tuple(sorted({**DEFAULT_PARAMS, **params}.items())))

    @property
    def param_dict(self) -> dict:
        return dict(self.params)

    @property
    def grid(self) -> RunSpec:
        """The grid's sizes as a run computes them (a spec with no structure behind it)."""
        return RunSpec("", "", self.samplings)

    @property
    def cell_atoms(self) -> int:
        n_asu = self.atoms.n_asu if self.param_dict.get("expand_p1", True) else 1
        return self.atoms.n_atoms * n_asu

    @functools.cached_property
    def _pdb(self) -> str:
        return to_pdb(self.atoms)

    @functools.cached_property
    def _key(self) -> str:
        digest = hashlib.sha256(self._pdb.encode())
        digest.update(json.dumps([self.samplings, self.params]).encode())
        return digest.hexdigest()

    def pdb_text(self) -> str:
        """The crystal as PDB text (written once per case)."""
        return self._pdb

    def key(self) -> str:
        """Content hash of the whole input (equal inputs, equal keys: the oracle's memo)."""
        return self._key

    def size(self) -> dict:
        """Sizes for the log: atoms per ASU, ASUs, atoms in the cell, grid points, BZ points."""
        g = self.grid
        return {"atoms": self.atoms.n_atoms, "n_asu": self.atoms.n_asu, "cell_atoms": self.cell_atoms,
                "grid": list(g.map_shape), "n_q": g.n_q, "n_bz": g.n_bz}

    def describe(self) -> str:
        s = self.size()
        return (f"{s['atoms']} atom(s) x {s['n_asu']} ASU, {self.atoms.space_group}; grid "
                f"{'x'.join(map(str, s['grid']))} = {s['n_q']} point(s), {s['n_bz']} BZ point(s)")

    def with_atoms(self, atoms: Atoms) -> "Case":
        return replace(self, atoms=atoms)


# ------------------------------------------------------------------ structure
def structure_levels(atoms: Atoms) -> list[str]:
    """The ddmin levels worth running, coarsest first (a level with one group is skipped)."""
    return [lvl for lvl in ("chain", "residue", "atom") if len(atoms.groups(lvl)) > 1]


def keep_groups(atoms: Atoms, groups: list[list[int]]) -> Atoms:
    """The atoms of the kept groups."""
    return atoms.subset([i for g in groups for i in g])


def p1_candidate(atoms: Atoms, expanded_xyz: np.ndarray) -> Atoms | None:
    """The crystal as its explicit P1 expansion (one ASU), or None when it is one already."""
    if atoms.n_asu <= 1:
        return None
    return expanded_p1(atoms, expanded_xyz)


def element_kinds(atoms: Atoms) -> list[str]:
    """Element kinds other than the simple one, in first-seen order (ddmin units)."""
    seen: list[str] = []
    for e in atoms.element:
        if e != SIMPLE_ELEMENT and e not in seen:
            seen.append(str(e))
    return seen


def with_elements_kept(atoms: Atoms, keep: list[str]) -> Atoms:
    """Every atom whose element is not in ``keep`` becomes :data:`SIMPLE_ELEMENT`."""
    element = np.array([e if e in keep else SIMPLE_ELEMENT for e in atoms.element], dtype=object)
    return replace(atoms, element=element)


def simple_value_candidates(atoms: Atoms) -> list[tuple[str, Atoms]]:
    """B factors and occupancies set to one simple value each (only where they differ from it)."""
    out = []
    if not np.all(atoms.b_iso == SIMPLE_B):
        out.append((f"B factors -> {SIMPLE_B:g}", replace(atoms, b_iso=np.full(atoms.n_atoms, SIMPLE_B))))
    if not np.all(atoms.occ == SIMPLE_OCC):
        out.append((f"occupancies -> {SIMPLE_OCC:g}", replace(atoms, occ=np.full(atoms.n_atoms, SIMPLE_OCC))))
    return out


# ------------------------------------------------------------------ grid
def n_points(s: Sampling) -> int:
    lo, hi, L = s
    return int(L * (hi - lo) + 1)


def range_candidates(s: Sampling) -> list[Sampling]:
    """Smaller (min, max) ranges of one axis, fewest points first; the oversampling is kept.

    Windows around 0 of growing half-width (0, 1, 2, 4, ...) and the two halves of the
    range; each strictly smaller than ``s``.
    """
    lo, hi, L = s
    cands = set()
    r = 0
    while r < max(abs(lo), abs(hi)):
        a, b = max(lo, -r), min(hi, r)
        if a <= b:
            cands.add((a, b, L))
        r = 1 if r == 0 else 2 * r
    mid = (lo + hi) // 2
    cands.update({(lo, mid, L), (mid, hi, L), (lo, lo, L), (hi, hi, L)})
    cands = {c for c in cands if c[0] <= c[1] and n_points(c) < n_points(s)}
    return sorted(cands, key=lambda c: (n_points(c), abs(c[0]) + abs(c[1]), c))


def oversampling_candidates(s: Sampling) -> list[Sampling]:
    """Smaller oversamplings of one axis, smallest first (1, 2, ...).

    An odd oversampling keeps k and -k apart; whether the divergence needs that is the
    oracle's verdict on the even candidates, which are simply refused when it does.
    """
    lo, hi, L = s
    return [(lo, hi, m) for m in range(1, L)]


def with_axis(samplings: tuple, axis: int, s: Sampling) -> tuple:
    out = list(samplings)
    out[axis] = s
    return tuple(out)


# ------------------------------------------------------------------ parameters
def param_candidates(params: Mapping[str, Any]) -> list[tuple[str, dict]]:
    """Parameters moved towards the defaults, and the contact cutoff towards fewer contacts."""
    out = []
    for key in ("res_limit", "gamma_intra", "gamma_inter"):
        if key in params and params[key] != DEFAULT_PARAMS[key]:
            out.append((f"{key} -> {DEFAULT_PARAMS[key]:g} (default)", {**params, key: DEFAULT_PARAMS[key]}))
    # The cutoff only ever decreases (towards fewer contacts), so the moves cannot cycle.
    cutoff = float(params.get("gnm_cutoff", DEFAULT_PARAMS["gnm_cutoff"]))
    for c in sorted({DEFAULT_PARAMS["gnm_cutoff"], *SMALLER_CUTOFFS}):
        if c < cutoff:
            out.append((f"gnm_cutoff -> {c:g} (fewer contacts)", {**params, "gnm_cutoff": c}))
    return out


# ------------------------------------------------------------------ passes
Accept = Callable[[str, Case], bool]
#: A ddmin pass's candidate for a sub-list of its units: (log label, the input).
Probe = Callable[[list], tuple[str, Case]]
#: ``ddmin_fn(units, probe) -> kept units``: delta debugging, judging ``probe(sub-list)``
#: with the pass's ``accept`` (the driver's; it may judge a round's candidates ahead).
DdminFn = Callable[[list, Probe], list]


def grid_pass(case: Case, accept: Accept) -> Case:
    """Each axis's range, then each axis's oversampling, first accepted candidate kept, until none is."""
    for make, what in ((range_candidates, "range"), (oversampling_candidates, "oversampling")):
        changed = True
        while changed:
            changed = False
            for axis in range(3):
                for cand in make(case.samplings[axis]):
                    new = replace(case, samplings=with_axis(case.samplings, axis, cand))
                    if accept(f"grid {'hkl'[axis]} {what} -> {cand[0]},{cand[1]},{cand[2]}", new):
                        case, changed = new, True
                        break
    return case


def param_pass(case: Case, accept: Accept) -> Case:
    changed = True
    while changed:
        changed = False
        for label, params in param_candidates(case.param_dict):
            new = replace(case, params=tuple(sorted(params.items())))
            if accept(label, new):
                case, changed = new, True
                break
    return case


def simplify_pass(case: Case, accept: Accept, ddmin_fn: DdminFn) -> Case:
    """Elements towards carbon (all at once, else ddmin over the kinds that must stay), then B and occupancy."""
    kinds = element_kinds(case.atoms)
    if kinds:
        everything = case.with_atoms(with_elements_kept(case.atoms, []))
        if accept(f"elements -> {SIMPLE_ELEMENT}", everything):
            case = everything
        elif len(kinds) > 1:
            base = case
            found = ddmin_fn(kinds, lambda keep: (f"elements other than {'/'.join(keep)} -> {SIMPLE_ELEMENT}",
                                                  base.with_atoms(with_elements_kept(base.atoms, keep))))
            case = base.with_atoms(with_elements_kept(base.atoms, found))
    for label, atoms in simple_value_candidates(case.atoms):
        new = case.with_atoms(atoms)
        if accept(label, new):
            case = new
    return case


def structure_pass(case: Case, accept: Accept, ddmin_fn: DdminFn) -> Case:
    """ddmin over chains, then residues, then atoms (cell and space group kept)."""
    for level in structure_levels(case.atoms):
        base = case
        groups = base.atoms.groups(level)
        kept = ddmin_fn(list(range(len(groups))), lambda idx: (
            f"{level}s: keep {len(idx)} of {len(groups)}",
            base.with_atoms(keep_groups(base.atoms, [groups[i] for i in idx]))))
        case = base.with_atoms(keep_groups(base.atoms, [groups[i] for i in kept]))
    return case


def p1_pass(case: Case, accept: Accept, expand: Callable[[Case], np.ndarray | None]) -> Case:
    """The space group replaced by the explicit P1 expansion of the cell (one rigid body)."""
    if not case.param_dict.get("expand_p1", True) or case.atoms.n_asu <= 1:
        return case
    xyz = expand(case)
    new_atoms = p1_candidate(case.atoms, xyz) if xyz is not None else None
    if new_atoms is not None:
        new = case.with_atoms(new_atoms)
        if not any(L >= 2 and n_points(s) >= 2 for s in case.samplings for L in (s[2],)):
            # One ASU sampled at k = 0 only has an undefined ADP scale (its translations are
            # the zero modes): a point off k = 0 along l (l = lo + 1/2) goes with the move.
            lo, hi, L = case.samplings[2]
            new = replace(new, samplings=with_axis(case.samplings, 2, (lo, max(hi, lo + 1), max(L, 2))))
        if accept(f"space group {case.atoms.space_group} -> P 1 (explicit expansion, {case.atoms.n_asu} ASUs "
                  "as one)", new):
            return new
    return case
