"""Outside oracles: what both backends share, checked against code that neither uses.

Structure loading, symmetry expansion and P1 packing (``eryx/structure.py``) feed both of
the project's backends, so a bug there passes every reference-vs-candidate comparison
(a wrong sign in a symmetry operator changed the 7n2h map by 120 % and passed). These
checks judge the *reference* side against gemmi directly:

- ``structure_oracle``: the unit cell and the number of ASUs against gemmi's reading of
  the file (CRYST1 and its space group's operations);
- ``p1_oracle``: the P1-expanded coordinates against gemmi's own space-group operations
  (fractional rotation and translation, through gemmi's orthogonalization), packed by the
  documented convention (ALGORITHM.md 1.5), ASUs matched in any order;
- ``gemmi_oracle``: structure factors at integer reflections against gemmi's
  ``StructureFactorCalculatorX`` (from the reference's own coordinates).

Each is called as ``check(run, tier)`` like an invariant (``parity.comparison.invariants``):
``run`` the narrow view :class:`parity.contract.run_view.CheckView`, ``tier`` the stage's
own tier (``oracle_symmetry``, ``oracle_gemmi``: the same in every precision).
"""
from __future__ import annotations

from pathlib import Path

import gemmi
import numpy as np

from parity.comparison.engine import Comparison, compare_arrays
from parity.comparison.invariants import invariant, not_applicable
from parity.contract.run_view import CheckView
from parity.contract.tiers import Tier


def _gemmi_structure(path: str) -> gemmi.Structure:
    st = gemmi.read_pdb(str(path))
    st.remove_alternative_conformations()
    st.remove_hydrogens()
    st.remove_waters()
    st.remove_empty_chains()
    return st


def _file_or_none(run: CheckView) -> str | None:
    path = Path(run.spec.pdb_path)
    return str(path) if path.is_file() else None


def gemmi_p1(path: str, expand: bool = True) -> tuple[np.ndarray, np.ndarray, int]:
    """(xyz (n_ops, n_at, 3), cell (6,), n_ops) by gemmi's operations and the packing rule.

    Independent of ``eryx.structure``: the operations are gemmi's (not REMARK 290's), the
    orthogonalization gemmi's; only the packing rule is the documented convention
    (X += s where the copy's centre of mass < 0, X -= s where it is beyond (a, b, c),
    s = |row sums of axes^T R|, componentwise).
    """
    st = _gemmi_structure(path)
    cell = np.array([st.cell.a, st.cell.b, st.cell.c, st.cell.alpha, st.cell.beta, st.cell.gamma])
    orth = np.array(st.cell.orth.mat.tolist())
    frac = np.array(st.cell.frac.mat.tolist())
    x = np.array([a.pos.tolist() for ch in st[0] for res in ch for a in res])
    ops = st.find_spacegroup().operations() if (expand and st.find_spacegroup()) else None
    if ops is None:
        return x[None], cell, 1
    axes = orth.T  # rows are the cell vectors a, b, c (the PDB convention gemmi follows)
    out = []
    for op in ops:
        rot = np.array(op.rot, dtype=float) / op.DEN
        tran = np.array(op.tran, dtype=float) / op.DEN
        copy = (x @ frac.T @ rot.T + tran) @ orth.T
        com = copy.mean(axis=0)
        shift = np.abs(np.sum(axes.T @ rot, axis=1))
        copy = np.where(com < 0, copy + shift, copy)
        copy = np.where(com > cell[:3], copy - shift, copy)
        out.append(copy)
    return np.array(out), cell, len(out)


def check_structure(run: CheckView, tier: Tier) -> Comparison:
    """Cell and ASU count of the reference against gemmi's reading of the file (exact: ``tier`` unused)."""
    path = _file_or_none(run)
    if path is None:
        return not_applicable(f"the fixture file {run.spec.pdb_path} is not available here")
    st = gemmi.read_pdb(path)
    cell = np.array([st.cell.a, st.cell.b, st.cell.c, st.cell.alpha, st.cell.beta, st.cell.gamma])
    expand = run.spec.params.get("expand_p1", True)
    sg = st.find_spacegroup()
    n_ops = (len(sg.operations()) if sg else None) if expand else 1
    ref_cell = run.reference_value("cell")
    n_asu = int(run.reference_value("n_asu"))
    cell_err = float(np.max(np.abs(ref_cell - cell))) if ref_cell.shape == cell.shape else np.inf
    ok = cell_err <= 1e-12 * np.max(np.abs(cell)) and n_ops == n_asu
    return invariant(ok, cell_err, 0.0, f"cell {np.round(ref_cell, 4).tolist()} vs gemmi "
                     f"{np.round(cell, 4).tolist()} (max diff {cell_err:.2g}); {n_asu} ASUs vs gemmi's "
                     f"{n_ops} operations of {sg.hm if sg else 'an unknown space group'}", n_compared=7)


def check_p1(run: CheckView, tier: Tier) -> Comparison:
    """The reference's P1-expanded coordinates against gemmi's operations within ``tier`` (ASUs in any order)."""
    path = _file_or_none(run)
    if path is None:
        return not_applicable(f"the fixture file {run.spec.pdb_path} is not available here")
    want, _, n_ops = gemmi_p1(path, run.spec.params.get("expand_p1", True))
    got = run.reference_value("xyz")
    if got.shape != want.shape:
        return invariant(False, np.inf, 0.0, f"P1 expansion has shape {got.shape}; gemmi's {n_ops} operations "
                         f"give {want.shape}", n_compared=0)
    # Pair each reference ASU with the gemmi copy nearest to it (their orders may differ).
    cost = np.array([[np.max(np.abs(g - w)) for w in want] for g in got])
    order = np.argmin(cost, axis=1)
    if len(set(order.tolist())) != len(order):
        return invariant(False, float(cost.min(axis=1).max()), 0.0,
                         f"P1 expansion: ASUs {np.flatnonzero(np.bincount(order) > 1).tolist()} of gemmi's "
                         "operations are matched more than once (a wrong or duplicated operator)",
                         n_compared=got.size)
    result = compare_arrays(got, want[order], tier, name="xyz vs gemmi's operations")
    result.kind = "oracle"
    result.details["asu_order"] = order.tolist()
    return result


def _gemmi_sf(run: CheckView) -> np.ndarray:
    xyz = run.reference_value("xyz").reshape(-1, 3)
    cell = run.reference_value("cell")
    path = _file_or_none(run)
    if path is None:
        raise FileNotFoundError(run.spec.pdb_path)
    src = _gemmi_structure(path)
    elements = [a.element.name for ch in src[0] for res in ch for a in res]
    n_asu = xyz.shape[0] // len(elements)
    st = gemmi.Structure()
    st.cell = gemmi.UnitCell(*cell)
    st.spacegroup_hm = "P 1"
    model, chain, res = gemmi.Model("1"), gemmi.Chain("A"), gemmi.Residue()
    res.name, res.seqid = "UNK", gemmi.SeqId(1, " ")
    for pos, el in zip(xyz, elements * n_asu):
        atom = gemmi.Atom()
        atom.pos, atom.element, atom.b_iso, atom.occ, atom.name = gemmi.Position(*pos), gemmi.Element(el), 0.0, 1.0, el
        res.add_atom(atom)
    chain.add_residue(res)
    model.add_chain(chain)
    st.add_model(model)
    st.setup_cell_images()
    calc = gemmi.StructureFactorCalculatorX(st.cell)
    return np.array([calc.calculate_sf_from_model(st[0], [int(v) for v in h]) for h in run.spec.oracle_hkl],
                    dtype=complex)


def check_gemmi_sf(run: CheckView, tier: Tier) -> Comparison:
    """Reference F at integer hkl (B = 0) against gemmi's StructureFactorCalculatorX, within ``tier``."""
    if _file_or_none(run) is None:
        return not_applicable(f"the fixture file {run.spec.pdb_path} is not available here")
    result = compare_arrays(run.reference_value("F_hkl"), _gemmi_sf(run), tier, name="F_hkl vs gemmi")
    result.kind = "oracle"
    return result
