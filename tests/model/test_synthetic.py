"""Tests of the synthetic crystal generator (eryx/synthetic.py).

The files are checked the way the model will read them: with gemmi for the
cell, space group and atoms, and with an independent parse of REMARK 290.
Symmetry is applied with gemmi's fractional operators, not with the
generator's own code, so that a bug there cannot hide itself.
"""
from __future__ import annotations

import itertools
import os
import re
from pathlib import Path

import gemmi
import numpy as np
import pytest
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from scipy.spatial import cKDTree

from eryx import synthetic
from eryx.synthetic import SPECS, CrystalSpec, build_crystal, ensure_fixture, write_crystal

SPEC_NAMES = sorted(SPECS)
CRYSTAL_SYSTEMS = {
    "synth_triclinic": "triclinic",
    "synth_monoclinic": "monoclinic",
    "synth_orthorhombic": "orthorhombic",
    "synth_trigonal": "trigonal",
    "synth_tetragonal": "tetragonal",
}
CELLS = np.array(list(itertools.product((-1, 0, 1), repeat=3)))
REF_CELL = 13


# --------------------------------------------------------------------------- helpers
@pytest.fixture(scope="module")
def pdb_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Every spec written once for the module."""
    directory = tmp_path_factory.mktemp("synthetic")
    for name in SPEC_NAMES:
        ensure_fixture(name, directory)
    return directory


def _read(pdb_dir: Path, name: str) -> gemmi.Structure:
    return gemmi.read_pdb(str(pdb_dir / f"{name}.pdb"))


def _asu_xyz(st: gemmi.Structure) -> np.ndarray:
    return np.array([a.pos.tolist() for r in st[0][0] for a in r])


def _parse_remark_290(text: str) -> tuple[list[str], np.ndarray]:
    """Operator triplets and Cartesian [R | t] (n_ops, 3, 4), read independently."""
    triplets, smtry = [], {}
    for line in text.splitlines():
        if line.startswith("REMARK 300"):
            break
        m = re.match(r"^REMARK 290 +(\d+)555 +(\S+) *$", line)
        if m:
            assert int(m.group(1)) == len(triplets) + 1
            triplets.append(m.group(2))
        m = re.match(r"^REMARK 290   SMTRY([123]) +(\d+)(.{10})(.{10})(.{10})(.{15})", line)
        if m:
            row = smtry.setdefault(int(m.group(2)), np.zeros((3, 4)))
            row[int(m.group(1)) - 1] = [float(m.group(k)) for k in range(3, 7)]
    return triplets, np.array([smtry[k] for k in sorted(smtry)])


def _gemmi_ops(hm: str) -> list[tuple[np.ndarray, np.ndarray]]:
    return [
        (np.array(op.rot, float) / op.DEN, np.array(op.tran, float) / op.DEN)
        for op in gemmi.SpaceGroup(hm).operations()
    ]


def _unit_cell_asus(st: gemmi.Structure) -> tuple[np.ndarray, np.ndarray]:
    """ASUs of the unit cell from gemmi's operators, centres of mass wrapped into it.

    Returns the coordinates (n_asu, n_at, 3) and the cell axes as rows (3, 3).
    """
    orth = np.array(st.cell.orth.mat.tolist())
    frac = np.array(st.cell.frac.mat.tolist())
    f = _asu_xyz(st) @ frac.T
    asus = []
    for rot, tran in _gemmi_ops(st.spacegroup_hm):
        g = f @ rot.T + tran
        g -= np.floor(g.mean(axis=0))
        asus.append(g @ orth.T)
    return np.array(asus), orth.T


def _contacts(asus: np.ndarray, axes: np.ndarray, cutoff: float):
    """Atom pairs within ``cutoff``: reference-cell ASU i atom a -- cell c ASU j atom b."""
    origins = CELLS @ axes
    out = []
    for i, c, j in itertools.product(range(len(asus)), range(27), range(len(asus))):
        d = cKDTree(asus[i]).sparse_distance_matrix(
            cKDTree(asus[j] + origins[c]), cutoff, output_type="ndarray"
        )
        out.extend((i, int(a), c, j, int(b), float(v)) for a, b, v in zip(d["i"], d["j"], d["v"]))
    return out


def _rigid_body_k(asus: np.ndarray, axes: np.ndarray, kfrac: np.ndarray) -> np.ndarray:
    """K(k) of the Gaussian network projected on rigid ASUs (ALGORITHM.md section 6)."""
    n_asu, n_at = asus.shape[:2]
    amat = np.zeros((n_asu, n_at, 3, 6))
    for i in range(n_asu):
        c = asus[i] - asus[i].mean(axis=0)
        x, y, z = c.T
        amat[i, :, :, :3] = np.eye(3)
        amat[i, :, 0, 4], amat[i, :, 0, 5] = z, -y
        amat[i, :, 1, 3], amat[i, :, 1, 5] = -z, x
        amat[i, :, 2, 3], amat[i, :, 2, 4] = y, -x
    hrb = np.zeros((n_asu, 6, 27, n_asu, 6))
    for i, a, c, j, b, _ in _contacts(asus, axes, 4.0):
        if c == REF_CELL and i == j and a == b:
            continue  # the self pair does not count
        hrb[i, :, REF_CELL, i, :] += amat[i, a].T @ amat[i, a]
        hrb[i, :, c, j, :] -= amat[i, a].T @ amat[j, b]
    k = 2 * np.pi * np.linalg.inv(axes) @ kfrac  # 2 pi A_inv^T h, A_inv = axes^-T
    phase = np.exp(1j * (CELLS @ axes) @ k)
    return np.einsum("iacjb,c->iajb", hrb, phase).reshape(6 * n_asu, 6 * n_asu)


# --------------------------------------------------------------------------- specs
def test_required_specs_exist() -> None:
    assert {"synthetic", *CRYSTAL_SYSTEMS} <= set(SPECS)
    for name, system in CRYSTAL_SYSTEMS.items():
        sg = gemmi.SpaceGroup(SPECS[name].space_group)
        assert sg.crystal_system_str() == system, name
    for name, spec in SPECS.items():
        assert spec.name == name


def test_default_fixture_is_small() -> None:
    spec = SPECS["synthetic"]
    assert gemmi.SpaceGroup(spec.space_group).hm == "P 21 21 21"
    assert len(gemmi.SpaceGroup(spec.space_group).operations()) == 4  # n_asu
    assert 12 <= spec.n_atoms <= 20
    assert max(spec.cell[:3]) <= 14.0


# --------------------------------------------------------------------------- PDB layout
@pytest.mark.parametrize("name", SPEC_NAMES)
def test_gemmi_round_trip(pdb_dir: Path, name: str) -> None:
    spec = SPECS[name]
    st = _read(pdb_dir, name)
    cell = st.cell
    assert [cell.a, cell.b, cell.c, cell.alpha, cell.beta, cell.gamma] == pytest.approx(
        list(spec.cell), abs=1e-3
    )
    assert st.spacegroup_hm == gemmi.SpaceGroup(spec.space_group).hm
    assert len(st) == 1 and len(st[0]) == 1
    atoms = [a for r in st[0][0] for a in r]
    assert len(atoms) == spec.n_atoms
    assert {a.element.name for a in atoms} <= {"C", "N", "O", "S"}
    assert {"C", "N", "O"} <= {a.element.name for a in atoms}
    assert all(a.occ == 1.0 and a.altloc == "\0" for a in atoms)
    assert all(10.0 <= a.b_iso <= 40.0 for a in atoms)
    assert len({a.b_iso for a in atoms}) > 1
    assert not any(r.is_water() for r in st[0][0])
    assert "SYNTHETIC" in st.info["_struct.title"] and name in st.info["_struct.title"]


@pytest.mark.parametrize("name", SPEC_NAMES)
def test_fixed_columns(name: str) -> None:
    spec = SPECS[name]
    lines = build_crystal(spec).splitlines()
    assert all(len(line) == 80 for line in lines)
    assert lines[0].startswith("HEADER") and lines[1].startswith("TITLE ")
    assert lines[-1].startswith("END")
    (cryst1,) = [line for line in lines if line.startswith("CRYST1")]
    values = [float(cryst1[s]) for s in (slice(6, 15), slice(15, 24), slice(24, 33),
                                         slice(33, 40), slice(40, 47), slice(47, 54))]
    assert values == pytest.approx(list(spec.cell))
    assert cryst1[55:66].strip() == gemmi.SpaceGroup(spec.space_group).hm
    assert int(cryst1[66:70]) == len(gemmi.SpaceGroup(spec.space_group).operations())
    atoms = [line for line in lines if line.startswith("ATOM  ")]
    assert len(atoms) == spec.n_atoms
    for serial, line in enumerate(atoms, start=1):
        assert int(line[6:11]) == serial
        assert line[21] == "A" and line[16] == " "  # one chain, no altloc
        assert float(line[54:60]) == 1.0
        assert 10.0 <= float(line[60:66]) <= 40.0
        assert line[76:78].strip() == line[12:16].strip()[0]  # element, cols 77-78
        assert line[13] != " "  # one-letter element names start in column 14


@pytest.mark.parametrize("name", SPEC_NAMES)
def test_remark_290_layout_and_operators(name: str) -> None:
    spec = SPECS[name]
    text = build_crystal(spec)
    lines = text.splitlines()
    start = lines.index(next(line for line in lines if line.startswith("REMARK 290")))
    first_300 = next(k for k, line in enumerate(lines) if line.startswith("REMARK 300"))
    cryst1 = next(k for k, line in enumerate(lines) if line.startswith("CRYST1"))
    assert start < first_300 < cryst1
    assert lines[first_300 - 1].startswith("REMARK 290 REMARK: NULL")
    assert "REMARK 290     NNNMMM   OPERATOR" in text
    assert "REMARK 290   SMTRY1   1  1.000000  0.000000  0.000000        0.00000" in text

    triplets, smtry = _parse_remark_290(text)
    sg = gemmi.SpaceGroup(spec.space_group)
    assert triplets == [op.triplet().upper() for op in sg.operations()]
    assert smtry.shape == (len(triplets), 3, 4)

    # SMTRY is Cartesian: frac(R x + t) must equal gemmi's fractional operator on frac(x).
    st = gemmi.read_pdb_string(text)
    frac = np.array(st.cell.frac.mat.tolist())
    xyz = _asu_xyz(st)
    for (rot, tran), op in zip(_gemmi_ops(spec.space_group), smtry):
        via_smtry = (xyz @ op[:, :3].T + op[:, 3]) @ frac.T
        via_gemmi = (xyz @ frac.T) @ rot.T + tran
        np.testing.assert_allclose(via_smtry, via_gemmi, atol=1e-5)


# --------------------------------------------------------------------------- determinism
@pytest.mark.parametrize("name", SPEC_NAMES)
def test_deterministic(name: str) -> None:
    first = build_crystal(SPECS[name])
    synthetic._build_cached.cache_clear()  # rebuild from scratch, not from the cache
    assert build_crystal(SPECS[name]) == first


def test_seed_changes_crystal() -> None:
    spec = SPECS["synthetic"]
    other = CrystalSpec(spec.name, spec.space_group, spec.cell, spec.n_atoms, seed=spec.seed + 1)
    assert build_crystal(other) != build_crystal(spec)


# --------------------------------------------------------------------------- geometry
@pytest.mark.parametrize("name", SPEC_NAMES)
def test_chain_geometry(pdb_dir: Path, name: str) -> None:
    xyz = _asu_xyz(_read(pdb_dir, name))
    bonds = np.linalg.norm(np.diff(xyz, axis=0), axis=1)
    assert np.all((bonds >= 1.3) & (bonds <= 1.6))
    d = np.linalg.norm(xyz[:, None] - xyz[None], axis=-1)
    assert np.min(d[np.triu_indices(len(xyz), 1)]) >= 1.2


@pytest.mark.parametrize("name", SPEC_NAMES)
def test_no_clashes_and_connected(pdb_dir: Path, name: str) -> None:
    asus, axes = _unit_cell_asus(_read(pdb_dir, name))
    n_asu = len(asus)
    contacts = _contacts(asus, axes, 4.0)
    other = [(i, c, j, dist) for i, a, c, j, b, dist in contacts if (c, j) != (REF_CELL, i)]
    assert min(dist for *_, dist in other) >= 2.0, "atoms of different ASUs clash"

    for i in range(n_asu):
        mine = [(c, j) for ii, c, j, _ in other if ii == i]
        if n_asu > 1:
            assert any(j != i for _, j in mine), f"ASU {i} touches no other ASU"
        assert any(c != REF_CELL for c, _ in mine), f"ASU {i} touches no other cell"

    # Contact graph over all ASUs of the 27 cells: repeat each reference-cell contact
    # from every cell whose partner cell is still inside the supercell.
    rows, cols = [], []
    for i, c, j, _ in other:
        for h in CELLS:
            partner = h + CELLS[c]
            if np.all(np.abs(partner) <= 1):
                rows.append(np.ravel_multi_index(tuple(h + 1), (3, 3, 3)) * n_asu + i)
                cols.append(np.ravel_multi_index(tuple(partner + 1), (3, 3, 3)) * n_asu + j)
    n = 27 * n_asu
    graph = coo_matrix((np.ones(len(rows)), (rows, cols)), shape=(n, n))
    assert connected_components(graph, directed=False)[0] == 1


@pytest.mark.parametrize("name", SPEC_NAMES)
def test_only_acoustic_zero_modes(pdb_dir: Path, name: str) -> None:
    """The Gaussian network has 3 zero modes at k = 0 and none elsewhere."""
    asus, axes = _unit_cell_asus(_read(pdb_dir, name))
    rng = np.random.default_rng(0)
    kpoints = [np.zeros(3), np.array([-0.5, 0.0, 0.0]), np.array([-0.5, -0.5, -0.5]),
               np.array([0.0, 0.0, 0.25]), rng.uniform(-0.5, 0.5, 3)]
    for kfrac in kpoints:
        kmat = _rigid_body_k(asus, axes, kfrac)
        # Hermitian only if every spring has its partner inside the 27 cells.
        np.testing.assert_allclose(kmat, kmat.conj().T, atol=1e-9)
        eig = np.linalg.eigvalsh(kmat)
        n_zero = int(np.sum(eig < 1e-8 * eig[-1]))
        assert n_zero == (3 if not kfrac.any() else 0), (kfrac, eig[:4])


# --------------------------------------------------------------------------- files
def test_ensure_fixture_writes_once(tmp_path: Path) -> None:
    path = ensure_fixture("synthetic", tmp_path)
    assert path == tmp_path / "synthetic.pdb"
    assert path.read_text() == build_crystal(SPECS["synthetic"])
    before = os.stat(path)
    assert ensure_fixture("synthetic", tmp_path) == path
    after = os.stat(path)
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["synthetic.pdb"]


def test_ensure_fixture_regenerates_changed_file(tmp_path: Path) -> None:
    path = tmp_path / "synthetic.pdb"
    path.write_text("stale\n")
    assert ensure_fixture("synthetic", tmp_path) == path
    assert path.read_text() == build_crystal(SPECS["synthetic"])


def test_write_is_atomic(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "sub" / "x.pdb"
    target.parent.mkdir()
    target.write_text("old\n")
    calls = []
    real_replace = os.replace

    def spy(src, dst):
        # At the moment of the swap the full text sits in a sibling temp file and the
        # target still holds the old content.
        calls.append((Path(src), Path(dst)))
        assert Path(src).parent == Path(dst).parent
        assert Path(src).read_text() == build_crystal(SPECS["synthetic"])
        assert Path(dst).read_text() == "old\n"
        real_replace(src, dst)

    monkeypatch.setattr(synthetic.os, "replace", spy)
    assert write_crystal(SPECS["synthetic"], target) == target
    assert len(calls) == 1 and calls[0][1] == target
    assert sorted(p.name for p in target.parent.iterdir()) == ["x.pdb"]


def test_failed_write_leaves_no_temp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(synthetic.os, "replace", boom)
    with pytest.raises(OSError):
        write_crystal(SPECS["synthetic"], tmp_path / "x.pdb")
    assert list(tmp_path.iterdir()) == []


def test_default_cache_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    path = ensure_fixture("synthetic")
    assert path == tmp_path / "eryx-parity" / "fixtures" / "synthetic.pdb"
    assert path.is_file()


def test_unknown_name_lists_known() -> None:
    with pytest.raises(KeyError) as info:
        ensure_fixture("no_such_crystal")
    message = str(info.value)
    assert "no_such_crystal" in message
    assert all(name in message for name in SPECS)


@pytest.mark.parametrize(
    "spec",
    [
        CrystalSpec("bad_sg", "P 99 99", (10.0, 10.0, 10.0, 90.0, 90.0, 90.0), 8),
        CrystalSpec("bad_cell", "P 31", (10.0, 11.0, 9.0, 90.0, 90.0, 90.0), 8),
        CrystalSpec("too_small", "P 1", (10.0, 10.0, 10.0, 90.0, 90.0, 90.0), 2),
    ],
)
def test_bad_spec_raises_value_error(spec: CrystalSpec) -> None:
    with pytest.raises(ValueError):
        build_crystal(spec)
