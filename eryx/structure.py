"""Structure loading shared by both backends (ALGORITHM.md sections 1-2).

Everything here is plain NumPy on the CPU and runs once per model: reading and
cleaning the PDB with gemmi, the cell and its matrices, the symmetry operators,
the P1 expansion with its packing rule, per-atom scattering and mass data, and
the 3x3x3 supercell. The PyTorch backend converts these arrays to tensors and
computes everything numeric after them itself.
"""
from __future__ import annotations

import itertools
import os
import re
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import gemmi
import numpy as np

from eryx.errors import InputTypeError, StructureError

#: Index of the reference cell [0, 0, 0] in the 27-cell supercell.
ID_CELL_REF = 13
#: Number of cells in the 3x3x3 supercell.
N_CELL = 27


@dataclass(frozen=True)
class Crystal:
    """A cleaned, P1-expanded crystal: the model's inputs after section 2.

    Attributes
    ----------
    pdb_path : str
        The file it was read from.
    title : str
        The PDB TITLE (may be empty); shown in reports, so treat as untrusted text.
    space_group : str
        Hermann-Mauguin symbol from CRYST1.
    cell : ndarray, (6,)
        a, b, c (Angstrom), alpha, beta, gamma (degrees).
    A_inv : ndarray, (3, 3)
        Fractionalization matrix (Cartesian -> fractional), gemmi's ``cell.frac.mat``.
    unit_cell_axes : ndarray, (3, 3)
        Cell vectors a, b, c as rows (Angstrom).
    sym_ops : ndarray, (n_asu, 3, 3)
        Rotation parts of the symmetry operators, fractional basis.
    transformations : ndarray, (n_asu, 3, 4)
        Cartesian operators [R | t] (t in Angstrom).
    xyz : ndarray, (n_asu, n_at, 3)
        P1-expanded coordinates (Angstrom).
    adp, ff_c : ndarray, (n_asu, n_at)
        Isotropic B factors (A^2) and IT92 constant term, tiled to every ASU.
    ff_a, ff_b : ndarray, (n_asu, n_at, 4)
        IT92 Gaussian coefficients, tiled to every ASU.
    masses : ndarray, (n_asu * n_at,)
        Atomic weights (Dalton), ASU-major.
    elements : tuple of str, (n_at,)
        Element symbols of one ASU.
    asu_xyz : ndarray, (n_asu, n_at, 3)
        ASU coordinates in the reference cell (re-expansion of ``xyz[0]``).
    cell_hkl, cell_origin : ndarray, (27, 3)
        Supercell numbering (l fastest) and cell origins (Angstrom).
    """

    pdb_path: str
    title: str
    space_group: str
    cell: np.ndarray
    A_inv: np.ndarray
    unit_cell_axes: np.ndarray
    sym_ops: np.ndarray
    transformations: np.ndarray
    xyz: np.ndarray
    adp: np.ndarray
    ff_a: np.ndarray
    ff_b: np.ndarray
    ff_c: np.ndarray
    masses: np.ndarray
    elements: tuple[str, ...]
    asu_xyz: np.ndarray
    cell_hkl: np.ndarray
    cell_origin: np.ndarray
    raw_atom_count: int = field(default=0)

    @property
    def n_asu(self) -> int:
        """Number of ASUs per unit cell."""
        return int(self.xyz.shape[0])

    @property
    def n_at(self) -> int:
        """Number of atoms per ASU."""
        return int(self.xyz.shape[1])

    @property
    def n_dof(self) -> int:
        """Rigid-body degrees of freedom per cell (6 per ASU)."""
        return 6 * self.n_asu


# --------------------------------------------------------------------------- reading
#: Shortest unit-cell edge accepted (Angstrom): shorter is not a crystal of atoms.
MIN_CELL_EDGE = 1.0


def check_pdb_path(pdb_path: object) -> Path:
    """The PDB path as a :class:`Path`, after checking it names a readable regular file.

    Parameters
    ----------
    pdb_path : str or os.PathLike
        Anything else (bytes, numbers, None) is refused, naming its type.

    Raises
    ------
    InputTypeError
        Not a ``str`` or ``os.PathLike`` (or a path-like that is not text).
    StructureError
        Missing, or a directory, FIFO, device or socket, or unreadable. Nothing is
        opened: a FIFO would block the reader.
    """
    if not isinstance(pdb_path, (str, os.PathLike)):
        raise InputTypeError(
            f"pdb_path must be a str or os.PathLike, got {type(pdb_path).__name__} ({pdb_path!r})")
    text = os.fspath(pdb_path)
    if not isinstance(text, str):
        raise InputTypeError(f"pdb_path must be a text path, got {type(text).__name__} ({text!r})")
    if not text:
        raise StructureError("pdb_path is empty")
    path = Path(text)
    try:
        mode = os.stat(path).st_mode  # follows symbolic links, like open() would
    except (FileNotFoundError, NotADirectoryError):
        raise StructureError(f"PDB file not found: {path}") from None
    except OSError as exc:  # e.g. a directory on the way that may not be searched
        raise StructureError(f"PDB file is not a readable file: {path} ({exc.strerror})") from None
    kind = _non_regular_kind(mode)
    if kind is not None:
        raise StructureError(f"PDB path {path} is {kind}, not a PDB file")
    if not os.access(path, os.R_OK):
        raise StructureError(f"PDB file is not a readable file: {path} (permission denied)")
    return path


def _non_regular_kind(mode: int) -> str | None:
    """What a non-regular file is, in words; None for a regular file."""
    for test, kind in ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO (named pipe)"),
                       (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
                       (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return kind
    return None if stat.S_ISREG(mode) else "not a regular file"


#: Records whose bytes are numbers or fixed codes: a byte that is not text there is damage.
_DATA_RECORDS = (b"ATOM  ", b"HETATM", b"ANISOU", b"CRYST1", b"SCALE", b"ORIGX", b"MODEL ", b"REMARK 290")


#: Columns (0-based, end exclusive) of the numbers of an ATOM/HETATM record; x, y, z are required.
_ATOM_NUMBER_FIELDS = (("x", 30, 38, True), ("y", 38, 46, True), ("z", 46, 54, True),
                       ("occupancy", 54, 60, False), ("B factor", 60, 66, False))


def _check_atom_numbers(data: bytes, path: Path) -> None:
    """Refuse an ATOM/HETATM record whose coordinate, occupancy or B field is not a number.

    gemmi reads such a field (``abc.def``) as 0 without a word: the atom would silently sit
    at the origin.
    """
    for number, line in enumerate(data.split(b"\n"), 1):
        if not line.startswith((b"ATOM  ", b"HETATM")):
            continue
        for name, start, end, required in _ATOM_NUMBER_FIELDS:
            field_ = line[start:end].strip()
            if not field_ and not required:
                continue
            try:
                float(field_)
            except ValueError:
                shown = field_.decode("latin-1") if field_ else "(blank)"
                raise StructureError(f"PDB file {path}, line {number}: the {name} field (columns {start + 1}-{end}) "
                                     f"is not a number: {shown!r}") from None


def _pdb_text(path: Path) -> str | None:
    """The file's text when gemmi cannot be given the file as it is, else None.

    Refused with the reason: gzip bytes (gemmi would see no records and report a missing
    CRYST1) and classic-Mac CR-only line endings (one long line). Free text that is not
    UTF-8 (a Latin-1 byte in TITLE or COMPND) is read as Latin-1, which every byte is;
    such a byte in a coordinate, cell or symmetry record is refused, naming the line.
    """
    with open(path, "rb") as handle:
        data = handle.read()
    if data[:2] == b"\x1f\x8b":
        raise StructureError(f"PDB file {path} is gzip-compressed (it starts with the gzip signature): "
                             "decompress it first, e.g. gunzip -c FILE > plain.pdb")
    if b"\r" in data and b"\n" not in data:
        raise StructureError(f"PDB file {path} has CR-only line endings (classic Mac OS), so it reads as one "
                             "line: convert them to LF, e.g. tr '\\r' '\\n' < FILE > fixed.pdb")
    _check_atom_numbers(data, path)
    try:
        data.decode("utf-8")
        return None
    except UnicodeDecodeError:
        pass
    for number, line in enumerate(data.split(b"\n"), 1):
        if line.startswith(_DATA_RECORDS) and any(b >= 0x80 for b in line):
            raise StructureError(f"PDB file {path}, line {number}: a byte that is not text in a "
                                 f"{line[:6].decode('latin-1').strip()} record: the file is damaged")
    return data.decode("latin-1")


def read_structure(pdb_path: str | os.PathLike) -> gemmi.Structure:
    """Read a PDB file with gemmi and check its unit cell (section 1.1, 1.2).

    The structure is returned as read: cleaning (section 1.1) happens while the atoms
    are collected (:func:`clean_atoms`), in one linear pass.

    Raises
    ------
    InputTypeError, StructureError
        A bad path (:func:`check_pdb_path`), an unreadable file, no atom records, or
        no usable unit cell (missing CRYST1, zero volume, an edge under 1 A).
    """
    path = check_pdb_path(pdb_path)
    text = _pdb_text(path)
    try:
        st = gemmi.read_pdb(str(path)) if text is None else gemmi.read_pdb_string(text)
    except Exception as exc:  # gemmi raises RuntimeError/ValueError with its own text, often several lines
        raise StructureError(f"cannot read PDB file {path}: {' '.join(str(exc).split())}") from exc
    if len(st) == 0:
        raise StructureError(f"no models (no ATOM/HETATM records) in PDB file {path}")
    if not st.cell.is_crystal() or not np.isfinite(st.cell.volume) or st.cell.volume <= 0:
        raise StructureError(
            f"PDB file {path} has no usable unit cell (missing CRYST1 record or zero volume)"
        )
    for axis, edge in zip("abc", (st.cell.a, st.cell.b, st.cell.c)):
        if edge < MIN_CELL_EDGE:
            raise StructureError(
                f"PDB file {path}: unit cell edge {axis} = {edge:g} A is under {MIN_CELL_EDGE:g} A (CRYST1)")
    return st


def iter_clean_atoms(st: gemmi.Structure) -> Iterator[tuple[gemmi.Chain, gemmi.Residue, gemmi.Atom]]:
    """The atoms of model 0 that section 1.1's cleaning keeps, in file order.

    Same result as gemmi's ``remove_alternative_conformations`` (keep the first residue
    of each sequence id in a chain, then the first atom of each name in a residue),
    ``remove_hydrogens`` (H and D), ``remove_waters`` and ``remove_empty_chains``, in
    that order; but in one pass with hash sets. gemmi erases from vectors one element
    at a time, quadratic in the atoms of a residue (a 50 MB file of one repeated residue
    took hours).

    Yields
    ------
    (chain, residue, atom)
    """
    for chain in st[0]:
        seen_seqids = set()
        for residue in chain:
            seqid = (residue.seqid.num, residue.seqid.icode)
            if seqid in seen_seqids:  # microheterogeneity: the first residue wins
                continue
            seen_seqids.add(seqid)
            if residue.is_water():
                continue
            seen_names = set()
            for atom in residue:
                name = atom.name
                if name in seen_names:  # alternative conformations: the first atom wins
                    continue
                seen_names.add(name)
                if not atom.is_hydrogen():
                    yield chain, residue, atom


def clean_atoms(st: gemmi.Structure) -> list[tuple[gemmi.Chain, gemmi.Residue, gemmi.Atom]]:
    """:func:`iter_clean_atoms` as a list."""
    return list(iter_clean_atoms(st))


def unit_cell_axes(cell: np.ndarray) -> np.ndarray:
    """Cell vectors as rows (section 1.2), shape (3, 3), Angstrom."""
    a, b, c = cell[:3]
    alpha, beta, gamma = np.deg2rad(cell[3:])
    f = (np.cos(alpha) - np.cos(beta) * np.cos(gamma)) / np.sin(gamma)
    return np.array(
        [
            [a, 0.0, 0.0],
            [b * np.cos(gamma), b * np.sin(gamma), 0.0],
            [c * np.cos(beta), c * f, c * np.sqrt(1.0 - np.cos(beta) ** 2 - f**2)],
        ]
    )


_OPERATOR_LINE = re.compile(r"^REMARK 290\s+(\d+)\s+(\S+)\s*$")
_SMTRY_LINE = re.compile(r"^REMARK 290\s+SMTRY([123])\s+(\d+)\s+(\S+)\s+(\S+)\s+(\S+)\s+(\S+)")


def _rotation_from_triplet(triplet: str) -> np.ndarray:
    """Fractional rotation of an operator like ``-Y,X-Y,Z+1/3`` (section 1.3)."""
    terms = triplet.upper().split(",")
    if len(terms) != 3:
        raise StructureError(f"malformed REMARK 290 symmetry operator: {triplet!r}")
    rot = np.zeros((3, 3))
    for i, term in enumerate(terms):
        for j, axis in enumerate("XYZ"):
            if "-" + axis in term:
                rot[i, j] = -1.0
            elif axis in term:
                rot[i, j] = 1.0
    return rot


def parse_remark_290(remarks: list[str]) -> tuple[np.ndarray, np.ndarray] | None:
    """Symmetry from REMARK 290, or None when it has no operator lines.

    Returns
    -------
    sym_ops : ndarray, (n_ops, 3, 3)
        Fractional rotations from the ``NNN555`` operator lines.
    transformations : ndarray, (n_ops, 3, 4)
        Cartesian [R | t] from the SMTRY lines.
    """
    rotations: list[np.ndarray] = []
    smtry: dict[int, np.ndarray] = {}
    for line in remarks:
        if line.startswith("REMARK 300"):
            break
        if not line.startswith("REMARK 290"):
            continue
        line = line.rstrip()
        m = _SMTRY_LINE.match(line)
        if m:
            row, op = int(m.group(1)) - 1, int(m.group(2))
            try:
                values = [float(m.group(k)) for k in range(3, 7)]
            except ValueError as exc:
                raise StructureError(f"malformed SMTRY line: {line!r}") from exc
            if not all(np.isfinite(values)):
                raise StructureError(f"SMTRY line with a non-finite number: {line!r}")
            smtry.setdefault(op, np.zeros((3, 4)))[row] = values
            continue
        m = _OPERATOR_LINE.match(line)
        if m and "555" in m.group(1):
            rotations.append(_rotation_from_triplet(m.group(2)))
    if not rotations:
        return None
    if sorted(smtry) != list(range(1, len(smtry) + 1)) or len(smtry) != len(rotations):
        raise StructureError(
            f"REMARK 290 lists {len(rotations)} operators but SMTRY lines for {len(smtry)}"
        )
    return np.array(rotations), np.array([smtry[k] for k in sorted(smtry)])


#: How far a symmetry operator's Cartesian rotation may be from orthogonal: SMTRY lines
#: carry 6 decimals (round-off ~1e-6); a space group that does not fit the cell is off by O(0.1).
SYMMETRY_ORTHOGONALITY_TOL = 1e-4
#: Largest distance (A) of an operator's translation from a multiple of 1/24 of the cell:
#: SMTRY prints 5 decimals, and a cell rounded to CRYST1's 3 decimals moves a translation
#: by at most 5e-4 A.
SYMMETRY_TRANSLATION_TOL_A = 1e-2


def check_symmetry(transformations: np.ndarray, cell: np.ndarray, space_group: str, path: str) -> None:
    """Refuse symmetry operators that are not rotations of this cell (section 1.3).

    A space group that does not fit the cell (P 6 2 2 on an orthorhombic CRYST1) or a
    damaged SMTRY line gives Cartesian "rotations" that stretch the molecule: the copies
    overlap, and every later stage computes on a crystal that cannot exist.

    Parameters
    ----------
    transformations : ndarray, (n_ops, 3, 4)
        Cartesian [R | t] of each operator.
    """
    rot = np.asarray(transformations, dtype=np.float64)[:, :, :3]
    err = np.abs(rot @ np.swapaxes(rot, 1, 2) - np.eye(3)).max(axis=(1, 2))
    worst = int(np.argmax(err))
    a, b, c, al, be, ga = (float(x) for x in cell)
    if not np.isfinite(err).all() or err[worst] > SYMMETRY_ORTHOGONALITY_TOL:
        raise StructureError(
            f"{path}: the symmetry does not fit the unit cell: operator {worst + 1} of space group "
            f"{space_group or '?'} is not a rotation in the cell {a:g} {b:g} {c:g} {al:g} {be:g} {ga:g} "
            f"(|R R^T - I| = {err[worst]:.2g}); check CRYST1's cell and space group and REMARK 290")
    # Translations must be crystallographic: multiples of 1/24 of the cell (gemmi's and
    # the International Tables' denominator). SMTRY translations are in A: a CRYST1 edited
    # without its REMARK 290 (a 5 A translation in a 99,999 A cell) packs the copies
    # half a cell away from where the space group puts them.
    ucell = gemmi.UnitCell(a, b, c, al, be, ga)
    frac = np.array(ucell.frac.mat.tolist())
    orth = np.array(ucell.orth.mat.tolist())
    t = np.asarray(transformations, dtype=np.float64)[:, :, 3]
    t_frac = t @ frac.T
    off = np.linalg.norm((t_frac - np.round(t_frac * 24) / 24) @ orth.T, axis=1)
    worst = int(np.argmax(off))
    if off[worst] > SYMMETRY_TRANSLATION_TOL_A:
        raise StructureError(
            f"{path}: the symmetry does not fit the unit cell: operator {worst + 1}'s translation "
            f"{np.round(t[worst], 5).tolist()} A is {np.round(t_frac[worst], 6).tolist()} of the cell "
            f"{a:g} {b:g} {c:g} {al:g} {be:g} {ga:g}, {off[worst]:.3g} A from a crystallographic translation "
            f"(multiples of 1/24); check that REMARK 290 was written for this CRYST1")


def symmetry_from_space_group(hm: str, cell: gemmi.UnitCell) -> tuple[np.ndarray, np.ndarray]:
    """Symmetry from gemmi's space group when REMARK 290 is absent (section 1.3).

    The Cartesian operator is O R O^-1 with translation O t; the original code used the
    fractional operator as if it were Cartesian, a bug not reproduced here.
    """
    sg = gemmi.find_spacegroup_by_name(hm) if hm else None
    if sg is None:
        raise StructureError(f"unknown space group {hm!r} and no REMARK 290 operators")
    orth = np.array(cell.orth.mat.tolist())
    frac = np.array(cell.frac.mat.tolist())
    sym_ops, transformations = [], []
    for op in sg.operations():
        rot = np.array(op.rot, dtype=float) / op.DEN
        tran = np.array(op.tran, dtype=float) / op.DEN
        sym_ops.append(rot)
        transformations.append(np.hstack([orth @ rot @ frac, (orth @ tran)[:, None]]))
    return np.array(sym_ops), np.array(transformations)


def _atom_label(chain: gemmi.Chain, residue: gemmi.Residue, atom: gemmi.Atom) -> str:
    """``atom 'CA' of ALA A 12 (serial 7)``: where to look in the file."""
    return (f"atom {atom.name!r} of {residue.name} {chain.name} {residue.seqid.num}"
            f"{residue.seqid.icode.strip()} (serial {atom.serial})")


def _refuse_atoms(st: gemmi.Structure, path: str, bad: np.ndarray, what: str, values=None) -> None:
    """Raise StructureError naming up to three offending atoms (indices into the cleaned
    atoms) and their count. The labels come from a second pass, on failure only."""
    wanted = {int(i): k for k, i in enumerate(bad[:3])}
    labels = [""] * len(wanted)
    for n, cra in enumerate(iter_clean_atoms(st)):
        if n in wanted:
            extra = f" = {values[n]:g}" if values is not None else ""
            labels[wanted[n]] = _atom_label(*cra) + extra
            if n >= max(wanted):
                break
    more = f" and {len(bad) - 3} more" if len(bad) > 3 else ""
    raise StructureError(f"{path}: {what} for {len(bad)} atom(s): {'; '.join(labels)}{more}")


def atom_arrays(st: gemmi.Structure, path: str = "") -> dict[str, np.ndarray]:
    """Per-atom data of model 0 after cleaning, in file order (section 1.4).

    One pass over the atoms, linear in their number; per-element data are looked up
    once per element.

    Raises
    ------
    StructureError
        No atoms left; an element gemmi does not know (it reads ``Xx`` as the dummy
        element X of mass 1 with an oxygen-like form factor); an element without IT92
        coefficients; a non-finite coordinate; a negative or non-finite B factor.
    """
    per_element: dict[str, tuple] = {}
    pos, b_iso, names = [], [], []
    for chain, residue, atom in iter_clean_atoms(st):
        el = atom.element
        name = el.name
        if name not in per_element:
            if el.atomic_number != 0 and el.it92 is None:
                raise StructureError(f"no IT92 form factor for element {name!r} "
                                     f"({_atom_label(chain, residue, atom)})")
            per_element[name] = (el.atomic_number, el.it92)
        p = atom.pos
        pos.append((p.x, p.y, p.z))
        b_iso.append(atom.b_iso)
        names.append(name)
    if not names:
        raise StructureError(f"no atoms left in {path} after removing hydrogens and waters")
    names = np.array(names)
    xyz = np.array(pos, dtype=np.float64)
    adp = np.array(b_iso, dtype=np.float64)
    unknown = [n for n, (z, _) in per_element.items() if z == 0]
    if unknown:
        _refuse_atoms(st, path, np.flatnonzero(np.isin(names, unknown)),
                      "unknown element symbol (columns 77-78 of the ATOM/HETATM record; gemmi "
                      "reads it as the dummy element X, mass 1)")
    bad_xyz = np.flatnonzero(~np.isfinite(xyz).all(axis=1))
    if len(bad_xyz):
        _refuse_atoms(st, path, bad_xyz, "non-finite (NaN or infinite) coordinates")
    bad_b = np.flatnonzero(~np.isfinite(adp) | (adp < 0))
    if len(bad_b):
        _refuse_atoms(st, path, bad_b, "negative or non-finite B factor", values=adp)
    # Per-element tables, gathered per atom.
    kinds, inverse = np.unique(names, return_inverse=True)
    it92 = [per_element[k][1] for k in kinds]
    weight = np.array([gemmi.Element(k).weight for k in kinds], dtype=np.float64)
    return {
        "xyz": xyz,
        "adp": adp,
        "ff_a": np.array([list(t.a) for t in it92], dtype=np.float64)[inverse],
        "ff_b": np.array([list(t.b) for t in it92], dtype=np.float64)[inverse],
        "ff_c": np.array([t.c for t in it92], dtype=np.float64)[inverse],
        "masses": weight[inverse],
        "elements": names,
    }


def expand_p1(
    xyz: np.ndarray, transformations: np.ndarray, sym_ops: np.ndarray, cell: np.ndarray,
    axes: np.ndarray,
) -> np.ndarray:
    """Apply every operator and pack the copies into the cell (section 1.5).

    Parameters
    ----------
    xyz : ndarray, (n_at, 3)
    transformations : ndarray, (n_ops, 3, 4)
    sym_ops : ndarray, (n_ops, 3, 3)
    cell : ndarray, (6,)
    axes : ndarray, (3, 3)
        ``unit_cell_axes``.

    Returns
    -------
    ndarray, (n_ops, n_at, 3)
    """
    out = np.zeros((len(transformations),) + xyz.shape)
    for i, (tr, rot) in enumerate(zip(transformations, sym_ops)):
        copy = xyz @ tr[:, :3].T + tr[:, 3]
        com = copy.mean(axis=0)
        # The packing shift: how far one cell step moves along each axis under this op.
        shift = np.abs(np.sum(axes.T @ rot, axis=1))
        copy = np.where(com < 0, copy + shift, copy)
        copy = np.where(com > cell[:3], copy - shift, copy)
        out[i] = copy
    return out


def supercell(axes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Supercell numbering and origins (section 2).

    Returns
    -------
    cell_hkl : ndarray, (27, 3)
        (h, k, l) of each cell, nested loops over (-1, 0, 1) with l fastest.
    cell_origin : ndarray, (27, 3)
        h a + k b + l c, Angstrom.
    """
    cell_hkl = np.array(list(itertools.product((-1, 0, 1), repeat=3)), dtype=np.float64)
    return cell_hkl, cell_hkl @ axes


#: Atoms of one ASU closer than this (A) are the same position: no two atoms can be.
COINCIDENT_ATOMS_A = 1e-3
#: How far (in cell diagonals) an atom may sit from its ASU's centre. The contacts are
#: searched in the 3 x 3 x 3 supercell around the reference cell (ALGORITHM.md section 2):
#: an ASU reaching further than a cell diagonal can have contacts it would miss. Measured
#: on every fixture and synthetic crystal: at most 0.64 (6o2h_clean).
MAX_ASU_REACH_DIAGONALS = 1.0


def check_atom_layout(xyz: np.ndarray, axes: np.ndarray, path: str) -> None:
    """Refuse coincident atoms and an ASU that reaches beyond the supercell the model searches.

    Parameters
    ----------
    xyz : ndarray, (n_at, 3), Angstrom
        The file's atoms (one ASU), after cleaning.
    axes : ndarray, (3, 3), Angstrom
        The unit cell's axes (rows).

    Raises
    ------
    StructureError
        Naming the first coincident pair, or the farthest atom and the cell diagonal.
    """
    xyz = np.asarray(xyz, dtype=np.float64)
    keys = np.round(xyz / COINCIDENT_ATOMS_A)
    _, first, inverse, counts = np.unique(keys, axis=0, return_index=True, return_inverse=True, return_counts=True)
    if (counts > 1).any():
        group = int(np.argmax(counts > 1))
        members = np.flatnonzero(inverse.reshape(-1) == group)
        raise StructureError(
            f"{path}: {int((counts[counts > 1]).sum())} atoms share a position with another atom (e.g. atoms "
            f"{members[0] + 1} and {members[1] + 1} of the cleaned list at ({', '.join(f'{v:.3f}' for v in xyz[members[0]])})); "
            "coincident atoms cannot be a structure (duplicated records?)")
    diagonal = float(np.linalg.norm(np.asarray(axes, dtype=np.float64).sum(axis=0)))
    reach = np.linalg.norm(xyz - xyz.mean(axis=0), axis=1)
    far = int(np.argmax(reach))
    if reach[far] > MAX_ASU_REACH_DIAGONALS * diagonal:
        raise StructureError(
            f"{path}: atom {far + 1} of the cleaned list, at ({', '.join(f'{v:.6g}' for v in xyz[far])}), is "
            f"{reach[far]:.6g} A from the ASU's centre, beyond the unit cell's diagonal ({diagonal:.6g} A): the "
            "model searches contacts in the 3x3x3 cells around the reference cell only (ALGORITHM.md section 2); "
            "check the coordinates and CRYST1")


def load_crystal(pdb_path: str | os.PathLike, expand_p1_: bool = True) -> Crystal:
    """Read, clean and expand a crystal: sections 1 and 2 of ALGORITHM.md.

    With ``expand_p1_=False`` the file is taken as the whole cell content: one ASU and
    the identity operator only.
    """
    path = check_pdb_path(pdb_path)
    st = read_structure(path)
    cell = np.array(
        [st.cell.a, st.cell.b, st.cell.c, st.cell.alpha, st.cell.beta, st.cell.gamma]
    )
    A_inv = np.array(st.cell.frac.mat.tolist())
    axes = unit_cell_axes(cell)
    sym = parse_remark_290(list(st.raw_remarks))
    if sym is None:
        sym = symmetry_from_space_group(st.spacegroup_hm, st.cell)
    sym_ops, transformations = sym
    check_symmetry(transformations, cell, st.spacegroup_hm, str(path))
    if not expand_p1_:
        sym_ops = np.eye(3)[None]
        transformations = np.hstack([np.eye(3), np.zeros((3, 1))])[None]
    atoms = atom_arrays(st, str(path))
    # A rigid body needs atoms spanning at least a plane: one atom, or atoms on a line,
    # give a singular rigid-body mass matrix (section 4) and a bare LinAlgError later.
    centred = atoms["xyz"] - atoms["xyz"].mean(axis=0)
    sv = np.linalg.svd(centred, compute_uv=False) if len(centred) > 1 else np.zeros(1)
    if len(sv) < 2 or sv[1] <= 1e-8 * max(sv[0], 1.0):
        raise StructureError(
            f"{path}: the {len(centred)} atom(s) of the asymmetric unit are a single point "
            "or lie on a line, so its rigid-body mass matrix is singular"
        )
    check_atom_layout(atoms["xyz"], axes, str(path))
    n_asu = len(transformations)
    xyz = expand_p1(atoms["xyz"], transformations, sym_ops, cell, axes)
    # The reference-cell ASUs come from re-expanding the first expanded copy.
    asu_xyz = expand_p1(xyz[0], transformations, sym_ops, cell, axes)
    cell_hkl, cell_origin = supercell(axes)
    return Crystal(
        pdb_path=str(path.resolve()),
        title=" ".join(st.info["_struct.title"].split()) if "_struct.title" in st.info else "",
        space_group=st.spacegroup_hm,
        cell=cell,
        A_inv=A_inv,
        unit_cell_axes=axes,
        sym_ops=sym_ops,
        transformations=transformations,
        xyz=xyz,
        adp=np.tile(atoms["adp"], (n_asu, 1)),
        ff_a=np.tile(atoms["ff_a"], (n_asu, 1, 1)),
        ff_b=np.tile(atoms["ff_b"], (n_asu, 1, 1)),
        ff_c=np.tile(atoms["ff_c"], (n_asu, 1)),
        masses=np.tile(atoms["masses"], n_asu),
        elements=tuple(str(e) for e in atoms["elements"]),
        asu_xyz=asu_xyz,
        cell_hkl=cell_hkl,
        cell_origin=cell_origin,
        raw_atom_count=len(atoms["xyz"]),
    )
