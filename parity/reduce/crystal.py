"""The structure a reduction shrinks: the model's cleaned atoms as arrays, written back with gemmi.

A :class:`Atoms` holds exactly the atoms the model reads (model 0 after section 1.1's
cleaning, in file order: :func:`eryx.structure.iter_clean_atoms`), their labels, and the
crystal around them (cell, space group, the file's REMARK 290 symmetry records). Every
move is a pure function of an ``Atoms`` returning another; :func:`to_pdb` writes one as a
PDB text through gemmi, so the reduced file is read by the same code as the original.
"""
from __future__ import annotations

import string
from dataclasses import dataclass, replace

import gemmi
import numpy as np

from eryx import structure

#: Element every atom is moved towards (and the value B factors and occupancies are).
SIMPLE_ELEMENT = "C"
SIMPLE_B = 10.0
SIMPLE_OCC = 1.0


@dataclass(frozen=True, eq=False)  # arrays inside: no elementwise ==
class Atoms:
    """A crystal as the model reads it.

    Attributes
    ----------
    chain, resname, name, element, icode, het : ndarray of str, (n,)
        ``het`` is the residue's record kind: 'A' (ATOM) or 'H' (HETATM).
    seqnum : ndarray of int, (n,)
    xyz : ndarray, (n, 3), Angstrom
    b_iso, occ : ndarray, (n,), A^2 and fraction
    cell : tuple of 6 floats
        a, b, c (A), alpha, beta, gamma (degrees).
    space_group : str
        Hermann-Mauguin symbol written in CRYST1.
    symmetry_remarks : tuple of str
        The file's REMARK 290 lines (the model prefers them to the space group); empty
        once the crystal is expanded to P1.
    n_asu : int
        Asymmetric units of the cell (operators the model applies).
    """

    chain: np.ndarray
    resname: np.ndarray
    seqnum: np.ndarray
    icode: np.ndarray
    name: np.ndarray
    element: np.ndarray
    xyz: np.ndarray
    b_iso: np.ndarray
    occ: np.ndarray
    het: np.ndarray
    cell: tuple
    space_group: str
    symmetry_remarks: tuple
    n_asu: int

    @property
    def n_atoms(self) -> int:
        return int(self.xyz.shape[0])

    def subset(self, index) -> "Atoms":
        """The atoms at ``index`` (any integer index or boolean mask), order kept."""
        idx = np.sort(np.asarray(index, dtype=np.int64))
        return replace(self, **{f: getattr(self, f)[idx] for f in _PER_ATOM})

    def groups(self, level: str) -> list[list[int]]:
        """Atom indices grouped by ``level``: 'chain', 'residue' or 'atom' (file order)."""
        if level == "atom":
            return [[i] for i in range(self.n_atoms)]
        keys = list(self.chain) if level == "chain" else \
            list(zip(self.chain, self.seqnum.tolist(), self.icode))
        out: dict = {}
        for i, k in enumerate(keys):
            out.setdefault(k, []).append(i)
        return list(out.values())


_PER_ATOM = ("chain", "resname", "seqnum", "icode", "name", "element", "xyz", "b_iso", "occ", "het")


def _n_operators(space_group: str, remarks: tuple) -> int:
    sym = structure.parse_remark_290(list(remarks))
    if sym is not None:
        return len(sym[0])
    sg = gemmi.find_spacegroup_by_name(space_group)
    return len(sg.operations()) if sg is not None else 1


def read_atoms(pdb_path: str) -> Atoms:
    """The cleaned atoms of a PDB file (raises what the model's reader raises)."""
    st = structure.read_structure(pdb_path)
    rows = [(ch.name, res.name, res.seqid.num, res.seqid.icode, at.name, at.element.name, at.pos.x, at.pos.y,
             at.pos.z, at.b_iso, at.occ, res.het_flag) for ch, res, at in structure.iter_clean_atoms(st)]
    cols = list(zip(*rows)) if rows else [()] * 12
    remarks = tuple(r for r in st.raw_remarks if r.startswith("REMARK 290"))
    cell = (st.cell.a, st.cell.b, st.cell.c, st.cell.alpha, st.cell.beta, st.cell.gamma)
    return Atoms(chain=np.array(cols[0], dtype=object), resname=np.array(cols[1], dtype=object),
                 seqnum=np.array(cols[2], dtype=np.int64), icode=np.array(cols[3], dtype=object),
                 name=np.array(cols[4], dtype=object), element=np.array(cols[5], dtype=object),
                 xyz=np.array(list(zip(*cols[6:9])), dtype=np.float64).reshape(-1, 3),
                 b_iso=np.array(cols[9], dtype=np.float64), occ=np.array(cols[10], dtype=np.float64),
                 het=np.array(cols[11], dtype=object),
                 cell=cell, space_group=st.spacegroup_hm, symmetry_remarks=remarks,
                 n_asu=_n_operators(st.spacegroup_hm, remarks))


def to_pdb(atoms: Atoms) -> str:
    """The crystal as PDB text (CRYST1, the REMARK 290 lines kept, ATOM records), via gemmi."""
    st = gemmi.Structure()
    st.cell = gemmi.UnitCell(*atoms.cell)
    st.spacegroup_hm = atoms.space_group
    st.raw_remarks = list(atoms.symmetry_remarks)
    model = gemmi.Model("1")
    chains: dict[str, gemmi.Chain] = {}
    order: list[str] = []
    residues: dict[tuple, gemmi.Residue] = {}
    res_order: list[tuple] = []
    for i in range(atoms.n_atoms):
        cname = str(atoms.chain[i])
        if cname not in chains:
            chains[cname] = gemmi.Chain(cname)
            order.append(cname)
        key = (cname, int(atoms.seqnum[i]), str(atoms.icode[i]))
        if key not in residues:
            res = gemmi.Residue()
            res.name = str(atoms.resname[i])
            res.seqid = gemmi.SeqId(int(atoms.seqnum[i]), str(atoms.icode[i]) or " ")
            res.het_flag = str(atoms.het[i]) if atoms.het[i] in ("A", "H") else "A"
            residues[key] = res
            res_order.append(key)
        atom = gemmi.Atom()
        atom.name = str(atoms.name[i])
        atom.element = gemmi.Element(str(atoms.element[i]))
        atom.pos = gemmi.Position(*map(float, atoms.xyz[i]))
        atom.b_iso = float(atoms.b_iso[i])
        atom.occ = float(atoms.occ[i])
        residues[key].add_atom(atom)
    for key in res_order:
        chains[key[0]].add_residue(residues[key])
    for cname in order:
        model.add_chain(chains[cname])
    st.add_model(model)
    st.assign_serial_numbers()
    return st.make_pdb_string(gemmi.PdbWriteOptions(minimal=False))


def chain_names(n: int) -> list[str]:
    """``n`` distinct chain names (one or two characters, as PDB columns allow)."""
    alphabet = string.ascii_uppercase + string.ascii_lowercase + string.digits
    if n <= len(alphabet):
        return list(alphabet[:n])
    return [a + b for a in alphabet for b in alphabet][:n]


def expanded_p1(atoms: Atoms, xyz: np.ndarray) -> Atoms:
    """The whole cell written out as one P1 asymmetric unit, one chain per former ASU.

    Parameters
    ----------
    xyz : ndarray, (n_asu, n_at, 3)
        The model's P1-expanded coordinates of ``atoms`` (:attr:`eryx.structure.Crystal.xyz`).
    """
    n_asu = xyz.shape[0]
    names = chain_names(n_asu)

    def tile(x):
        return np.concatenate([x] * n_asu)
    return replace(atoms, chain=np.array([c for c in names for _ in range(atoms.n_atoms)], dtype=object),
                   resname=tile(atoms.resname), seqnum=tile(atoms.seqnum), icode=tile(atoms.icode),
                   name=tile(atoms.name), element=tile(atoms.element), xyz=xyz.reshape(-1, 3).copy(),
                   b_iso=tile(atoms.b_iso), occ=tile(atoms.occ), het=tile(atoms.het), space_group="P 1",
                   symmetry_remarks=(),
                   n_asu=1)
