"""Structure loading (eryx/structure.py) against the goldens and independent computations.

Expectations come from the golden files (made by the original implementation),
from ALGORITHM.md sections 1-2 re-derived here by hand (cell matrices, REMARK 290
parsing, the gemmi space-group fallback, the packing rule), never from the code
under test.
"""
from __future__ import annotations

import math

import gemmi
import numpy as np
import pytest

from eryx import structure
from eryx.errors import StructureError

STRUCTURE_KEYS = (
    "cell", "A_inv", "unit_cell_axes", "xyz", "adp", "ff_a", "ff_b", "ff_c", "masses",
    "asu_xyz", "cell_hkl", "cell_origin",
)
GOLDEN_STRUCTURES = ("5zck_p1_small", "7n2h_small")


def assert_rel(actual, expected, tol, what=""):
    """max|actual - expected| <= tol * max|expected|, shapes equal, no NaN anywhere."""
    actual, expected = np.asarray(actual, dtype=float), np.asarray(expected, dtype=float)
    assert actual.shape == expected.shape, f"{what}: shape {actual.shape} != {expected.shape}"
    assert np.isfinite(actual).all() and np.isfinite(expected).all(), what
    scale = np.abs(expected).max() if expected.size else 0.0
    err = np.abs(actual - expected).max() if expected.size else 0.0
    assert err <= tol * scale, f"{what}: max abs err {err:.3g} > {tol:g} * {scale:.3g}"


def orthogonalization(cell) -> np.ndarray:
    """O (fractional -> Cartesian) from the cell parameters, PDB convention, by formula."""
    a, b, c = cell[:3]
    al, be, ga = (math.radians(x) for x in cell[3:])
    volume = a * b * c * math.sqrt(
        1 - math.cos(al) ** 2 - math.cos(be) ** 2 - math.cos(ga) ** 2
        + 2 * math.cos(al) * math.cos(be) * math.cos(ga)
    )
    return np.array([
        [a, b * math.cos(ga), c * math.cos(be)],
        [0.0, b * math.sin(ga), c * (math.cos(al) - math.cos(be) * math.cos(ga)) / math.sin(ga)],
        [0.0, 0.0, volume / (a * b * math.sin(ga))],
    ])


def pack(xyz: np.ndarray, transformations: np.ndarray, sym_ops: np.ndarray, cell: np.ndarray,
         axes: np.ndarray) -> np.ndarray:
    """P1 expansion written from ALGORITHM.md section 1.5, for comparison."""
    out = []
    for (tr, rot) in zip(transformations, sym_ops):
        X = np.einsum("ij,aj->ai", tr[:, :3], xyz) + tr[:, 3]
        com = X.mean(axis=0)
        s = np.abs((axes.T @ rot).sum(axis=1))
        for d in range(3):
            if com[d] < 0:
                X[:, d] += s[d]
            elif com[d] > cell[d]:
                X[:, d] -= s[d]
        out.append(X)
    return np.array(out)


def clean_atoms(path) -> tuple[np.ndarray, list[str]]:
    """Positions and element names after removing H and waters, read with gemmi directly."""
    st = gemmi.read_pdb(str(path))
    pos, names = [], []
    for chain in st[0]:
        for res in chain:
            if res.is_water():
                continue
            for atom in res:
                if atom.element.name in ("H", "D"):
                    continue
                pos.append(atom.pos.tolist())
                names.append(atom.element.name)
    return np.array(pos), names


# ---------------------------------------------------------------- golden structures
@pytest.mark.parametrize("golden_name", GOLDEN_STRUCTURES)
def test_structure_matches_golden(golden, fixture_pdb, golden_name):
    arrays, meta = golden(golden_name)
    pdb = fixture_pdb(meta["pdb"].removesuffix(".pdb"))
    crystal = structure.load_crystal(pdb, meta["params"]["expand_p1"])
    assert crystal.n_asu == meta["n_asu"]
    assert crystal.n_at == meta["n_atoms_per_asu"]
    for key in STRUCTURE_KEYS:
        assert_rel(getattr(crystal, key), arrays[key], 1e-12, key)


@pytest.mark.parametrize("name", ["5zck_p1", "7n2h", "2ol9"])
def test_cell_matrices_independent(fixture_pdb, name):
    """unit_cell_axes has the cell's lengths and angles; A_inv inverts O; 27 cell origins."""
    crystal = structure.load_crystal(fixture_pdb(name))
    cell = crystal.cell
    st = gemmi.read_pdb(str(fixture_pdb(name)))
    assert_rel(cell, [st.cell.a, st.cell.b, st.cell.c, st.cell.alpha, st.cell.beta, st.cell.gamma], 0, "cell")
    axes = crystal.unit_cell_axes
    a, b, c = axes
    assert_rel(np.linalg.norm(axes, axis=1), cell[:3], 1e-14, "axis lengths")

    def angle(u, v):
        return math.degrees(math.acos(np.dot(u, v) / np.linalg.norm(u) / np.linalg.norm(v)))

    assert_rel([angle(b, c), angle(a, c), angle(a, b)], cell[3:], 1e-12, "axis angles")
    assert axes[0, 1] == axes[0, 2] == axes[1, 2] == 0.0  # a along x, b in the xy plane
    O = orthogonalization(cell)
    assert_rel(axes.T, O, 1e-13, "axes vs orthogonalization")
    assert_rel(crystal.A_inv @ O, np.eye(3), 1e-13, "A_inv O")
    expected_hkl = np.array([(h, k, l) for h in (-1, 0, 1) for k in (-1, 0, 1) for l in (-1, 0, 1)])
    assert np.array_equal(crystal.cell_hkl, expected_hkl)
    assert_rel(crystal.cell_origin, expected_hkl @ axes, 1e-14, "cell_origin")
    assert np.array_equal(crystal.cell_origin[structure.ID_CELL_REF], np.zeros(3))


# ------------------------------------------------------------------- REMARK 290
P212121_REMARKS = """\
REMARK 290
REMARK 290 CRYSTALLOGRAPHIC SYMMETRY
REMARK 290 SYMMETRY OPERATORS FOR SPACE GROUP: P 21 21 21
REMARK 290
REMARK 290      SYMOP   SYMMETRY
REMARK 290     NNNMMM   OPERATOR
REMARK 290       1555   X,Y,Z
REMARK 290       2555   -X+1/2,-Y,Z+1/2
REMARK 290       3555   -X,Y+1/2,-Z+1/2
REMARK 290       4555   X+1/2,-Y+1/2,-Z
REMARK 290
REMARK 290     WHERE NNN -> OPERATOR NUMBER
REMARK 290           MMM -> TRANSLATION VECTOR
REMARK 290
REMARK 290 CRYSTALLOGRAPHIC SYMMETRY TRANSFORMATIONS
REMARK 290   SMTRY1   1  1.000000  0.000000  0.000000        0.00000
REMARK 290   SMTRY2   1  0.000000  1.000000  0.000000        0.00000
REMARK 290   SMTRY3   1  0.000000  0.000000  1.000000        0.00000
REMARK 290   SMTRY1   2 -1.000000  0.000000  0.000000        5.00000
REMARK 290   SMTRY2   2  0.000000 -1.000000  0.000000        0.00000
REMARK 290   SMTRY3   2  0.000000  0.000000  1.000000        7.00000
REMARK 290   SMTRY1   3 -1.000000  0.000000  0.000000        0.00000
REMARK 290   SMTRY2   3  0.000000  1.000000  0.000000        6.00000
REMARK 290   SMTRY3   3  0.000000  0.000000 -1.000000        7.00000
REMARK 290   SMTRY1   4  1.000000  0.000000  0.000000        5.00000
REMARK 290   SMTRY2   4  0.000000 -1.000000  0.000000        6.00000
REMARK 290   SMTRY3   4  0.000000  0.000000 -1.000000        0.00000
REMARK 290
REMARK 290 REMARK: NULL
REMARK 300
REMARK 300 BIOMOLECULE: 1
REMARK 290       5555   -X,-Y,-Z
REMARK 290   SMTRY1   5 -1.000000  0.000000  0.000000        0.00000
"""
# Hand-derived from the operator triplets (section 1.3).
P212121_ROT = np.array([
    np.diag([1.0, 1.0, 1.0]), np.diag([-1.0, -1.0, 1.0]), np.diag([-1.0, 1.0, -1.0]), np.diag([1.0, -1.0, -1.0]),
])
P212121_TRANS = np.array([[0, 0, 0], [5, 0, 7], [0, 6, 7], [5, 6, 0]], dtype=float)

ATOMS = """\
ATOM      1  N   ALA A   1       1.000   2.000   3.000  1.00 10.00           N
ATOM      2  CA  ALA A   1       2.400   2.100   3.300  1.00 11.00           C
ATOM      3  C   ALA A   1       3.000   3.400   2.900  1.00 12.00           C
ATOM      4  O   ALA A   1       2.500   4.300   2.200  1.00 13.00           O
ATOM      5  CB  ALA A   1       2.900   0.900   4.000  1.00 14.00           C
HETATM    6  O   HOH A 101       8.000   8.000   8.000  1.00 20.00           O
ATOM      7  H   ALA A   1       0.500   1.500   2.500  1.00 10.00           H
"""


def test_parse_remark_290_snippet():
    sym_ops, transformations = structure.parse_remark_290(P212121_REMARKS.splitlines())
    assert sym_ops.shape == (4, 3, 3) and transformations.shape == (4, 3, 4)
    assert np.array_equal(sym_ops, P212121_ROT)
    assert np.array_equal(transformations[:, :, :3], P212121_ROT)
    assert np.array_equal(transformations[:, :, 3], P212121_TRANS)


def test_parse_remark_290_trigonal_rotation():
    """X-Y style terms: +1 for the bare letter, -1 for the letter after a minus."""
    lines = [
        "REMARK 290       1555   X,Y,Z",
        "REMARK 290       2555   -Y,X-Y,Z+1/3",
        "REMARK 290       3555   -X+Y,-X,Z+2/3",
    ]
    for op in (1, 2, 3):
        for row in (1, 2, 3):
            lines.append(f"REMARK 290   SMTRY{row}   {op}  1.000000  0.000000  0.000000        0.00000")
    sym_ops, _ = structure.parse_remark_290(lines)
    expected = np.array([
        np.eye(3),
        [[0, -1, 0], [1, -1, 0], [0, 0, 1]],
        [[-1, 1, 0], [-1, 0, 0], [0, 0, 1]],
    ], dtype=float)
    assert np.array_equal(sym_ops, expected)


def test_parse_remark_290_absent_and_inconsistent():
    assert structure.parse_remark_290(["REMARK 2 RESOLUTION. 1.50 ANGSTROMS."]) is None
    lines = P212121_REMARKS.splitlines()
    # Drop operator 4's SMTRY lines: 4 operators but 3 SMTRY matrices is an error, not a guess.
    broken = [ln for ln in lines if not (ln.startswith("REMARK 290   SMTRY") and ln.split()[3] == "4")]
    with pytest.raises(StructureError, match="SMTRY"):
        structure.parse_remark_290(broken)


def _write_pdb(path, cryst1: str, remarks: str = "") -> None:
    path.write_text(cryst1 + "\n" + remarks + ATOMS + "END\n")


def test_load_crystal_uses_remark_290(tmp_path):
    pdb = tmp_path / "p212121.pdb"
    _write_pdb(pdb, "CRYST1   10.000   12.000   14.000  90.00  90.00  90.00 P 21 21 21    4",
               P212121_REMARKS)
    crystal = structure.load_crystal(pdb)
    assert crystal.n_asu == 4 and crystal.n_at == 5  # water and hydrogen removed
    assert np.array_equal(crystal.sym_ops, P212121_ROT)
    assert np.array_equal(crystal.transformations[:, :, 3], P212121_TRANS)
    xyz, names = clean_atoms(pdb)
    assert crystal.elements == tuple(names)
    axes = np.diag([10.0, 12.0, 14.0])
    expected = pack(xyz, crystal.transformations, P212121_ROT, np.array([10.0, 12.0, 14.0]), axes)
    assert_rel(crystal.xyz, expected, 1e-14, "xyz")
    assert_rel(crystal.adp, np.tile([10.0, 11.0, 12.0, 13.0, 14.0], (4, 1)), 0, "adp")
    weights = [gemmi.Element(n).weight for n in names]
    assert_rel(crystal.masses, np.tile(weights, 4), 0, "masses")
    # asu_xyz: the expansion of xyz[0], again by the packing rule.
    assert_rel(crystal.asu_xyz, pack(crystal.xyz[0], crystal.transformations, P212121_ROT,
                                     np.array([10.0, 12.0, 14.0]), axes), 1e-14, "asu_xyz")


# ------------------------------------------------------- gemmi space-group fallback
HISTIDINE_OPS = [  # P 21 21 21 in gemmi's order: (rotation, translation), fractional
    (np.diag([1.0, 1.0, 1.0]), [0.0, 0.0, 0.0]),
    (np.diag([-1.0, -1.0, 1.0]), [0.5, 0.0, 0.5]),
    (np.diag([1.0, -1.0, -1.0]), [0.5, 0.5, 0.0]),
    (np.diag([-1.0, 1.0, -1.0]), [0.0, 0.5, 0.5]),
]


def test_gemmi_fallback_histidine(fixture_pdb):
    path = fixture_pdb("histidine")
    assert not any(line.startswith("REMARK 290") for line in path.read_text().splitlines())
    crystal = structure.load_crystal(path)
    assert crystal.n_asu == 4
    st = gemmi.read_pdb(str(path))
    ops = [(np.array(op.rot, float) / op.DEN, np.array(op.tran, float) / op.DEN)
           for op in gemmi.SpaceGroup(st.spacegroup_hm).operations()]
    # The test's own table agrees with gemmi's operator order.
    for (r, t), (r_ref, t_ref) in zip(ops, HISTIDINE_OPS):
        assert np.array_equal(r, r_ref) and np.array_equal(t, t_ref)
    O = orthogonalization(crystal.cell)
    assert_rel(O, np.diag([15.36, 8.92, 6.88]), 1e-15, "O")
    O_inv = np.linalg.inv(O)
    for i, (rot, tran) in enumerate(ops):
        assert np.array_equal(crystal.sym_ops[i], rot)
        assert_rel(crystal.transformations[i, :, :3], O @ rot @ O_inv, 1e-14, f"R_cart[{i}]")
        assert_rel(crystal.transformations[i, :, 3], O @ tran, 1e-14, f"t_cart[{i}]")
    # The Cartesian operator maps Cartesian positions: applying it equals
    # fractionalise -> fractional operator -> orthogonalise.
    xyz, names = clean_atoms(path)
    assert crystal.n_at == len(names) == 11  # 21 atoms, 10 of them hydrogens
    frac = xyz @ O_inv.T
    for i, (rot, tran) in enumerate(ops):
        tr = crystal.transformations[i]
        assert_rel(xyz @ tr[:, :3].T + tr[:, 3], (frac @ rot.T + tran) @ O.T, 1e-13, f"op {i}")
    assert_rel(crystal.xyz, pack(xyz, crystal.transformations, crystal.sym_ops, crystal.cell,
                                 crystal.unit_cell_axes), 1e-13, "packed xyz")


def test_expand_p1_false_gives_one_asu(fixture_pdb):
    for name in ("histidine", "5zck_p1"):
        path = fixture_pdb(name)
        crystal = structure.load_crystal(path, False)
        xyz, names = clean_atoms(path)
        assert crystal.n_asu == 1
        assert crystal.xyz.shape == (1, len(names), 3)
        assert np.array_equal(crystal.transformations[0], np.hstack([np.eye(3), np.zeros((3, 1))]))
        # Identity operator: positions unchanged unless the packing rule shifts the whole ASU.
        shift = crystal.xyz[0] - xyz
        assert np.allclose(shift, shift[0], rtol=0, atol=1e-12)
        assert crystal.adp.shape == (1, len(names)) and crystal.masses.shape == (len(names),)
