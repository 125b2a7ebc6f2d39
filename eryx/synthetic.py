"""Synthetic crystals: a space group and a cell in, a PDB file out.

The project needs fixtures of its own, built by its own code, so that a fresh
clone runs the model and most tests without external files, and so that
property tests can sweep the crystal systems. :func:`build_crystal` makes a
small random chain of C/N/O(/S) atoms, places it in the cell and writes the
PDB text the loader of ALGORITHM.md section 1 reads: ``CRYST1``, a full
wwPDB-style ``REMARK 290`` block (``NNN555`` operator lines and Cartesian
``SMTRY`` lines) and ``ATOM`` records.

A placement is only accepted when the crystal it makes is a good model input:

* the model's P1 packing rule (section 1.5), applied to the operators as
  written (rounded), puts every ASU exactly where the true symmetry image with
  its centre of mass wrapped into the unit cell lies, so the model's crystal
  is a real crystal (the packing rule alone does not guarantee that for
  oblique cells);
* no two atoms of different ASUs (in any cell) are closer than
  :data:`MIN_CLASH_DISTANCE`;
* with springs up to :data:`CONTACT_CUTOFF` (just below the GNM cutoff of
  4 A) the ASUs of the 3x3x3 supercell form one connected network, and every
  ASU touches another ASU and a neighbouring cell; otherwise the Gaussian
  network has zero modes besides the three acoustic ones at k = 0;
* every contact of a reference-cell ASU lies inside the 27-cell supercell, so
  the model sees all springs;
* no atom pair sits within :data:`CUTOFF_MARGIN` of the 4 A cutoff, so the
  neighbour lists cannot change with round-off between backends.

Everything is drawn from generators seeded by ``spec.seed`` (and the attempt
number), so the same spec gives byte-identical text.
"""
from __future__ import annotations

import dataclasses
import functools
import itertools
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import gemmi
import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from scipy.spatial import cKDTree

__all__ = [
    "CrystalSpec",
    "SPECS",
    "DEFAULT_FIXTURE",
    "build_crystal",
    "write_crystal",
    "ensure_fixture",
    "default_cache_dir",
]

#: The GNM cutoff of the model (ALGORITHM.md section 6), Angstrom.
GNM_CUTOFF = 4.0
#: Contacts that make the network connected must be at least this short, so the
#: network stays connected at the 4 A cutoff whatever the round-off.
CONTACT_CUTOFF = 3.9
#: No atom pair may lie this close to the GNM cutoff (either side), Angstrom.
CUTOFF_MARGIN = 0.002
#: Minimum distance between atoms of different ASUs or cells, Angstrom (tests
#: check 2.0; the margin keeps the crystals plausible).
MIN_CLASH_DISTANCE = 2.4
#: Bond lengths and angles of the random chain (plausible for C/N/O).
BOND_LENGTH = (1.35, 1.55)
BOND_ANGLE_DEG = (105.0, 120.0)
#: Minimum distance between chain atoms three or more bonds apart, Angstrom.
MIN_NONBONDED = 2.7
#: Rejection-loop sizes: chains tried, and placements tried per chain.
MAX_CHAINS = 1000
PLACEMENTS_PER_CHAIN = 16

#: Residues used to label the chain: (name, atom names). Elements are the first
#: letter of the atom name.
_RESIDUES: dict[str, tuple[str, ...]] = {
    "GLY": ("N", "CA", "C", "O"),
    "ALA": ("N", "CA", "C", "O", "CB"),
    "SER": ("N", "CA", "C", "O", "CB", "OG"),
    "CYS": ("N", "CA", "C", "O", "CB", "SG"),
}


@dataclass(frozen=True)
class CrystalSpec:
    """Recipe for one synthetic crystal.

    Attributes
    ----------
    name : str
        Fixture name (also the file stem, ``<name>.pdb``).
    space_group : str
        Hermann-Mauguin symbol as gemmi knows it, e.g. ``"P 21 21 21"``.
    cell : tuple of 6 float
        a, b, c (Angstrom), alpha, beta, gamma (degrees); must suit the space group.
    n_atoms : int
        Atoms per asymmetric unit (at least 4).
    seed : int
        Seed of every random choice; the same spec always gives the same file.
    """

    name: str
    space_group: str
    cell: tuple[float, float, float, float, float, float]
    n_atoms: int
    seed: int = 0


def _spec(*args, **kwargs) -> tuple[str, CrystalSpec]:
    """A ``(name, spec)`` item for :data:`SPECS`."""
    spec = CrystalSpec(*args, **kwargs)
    return spec.name, spec


#: The built-in specs. ``"synthetic"`` is the default fixture of the project:
#: tiny (4 ASUs x 14 atoms) so that the whole model runs on it in well under a
#: second. The others cover one space group per crystal system. The cells are
#: tuned to the atom counts: small enough that every ASU touches its
#: neighbours within 4 A, large enough that clash-free placements are common
#: (a handful of rejection rounds each).
SPECS: dict[str, CrystalSpec] = dict(
    [
        _spec("synthetic", "P 21 21 21", (10.5, 11.5, 12.5, 90.0, 90.0, 90.0), 14, seed=0),
        _spec("synth_triclinic", "P 1", (7.7, 8.2, 8.8, 80.0, 95.0, 105.0), 18, seed=1),
        _spec("synth_monoclinic", "P 1 21 1", (8.8, 9.4, 11.0, 90.0, 104.0, 90.0), 16, seed=2),
        _spec("synth_orthorhombic", "P 21 21 21", (13.0, 14.0, 15.5, 90.0, 90.0, 90.0), 20, seed=3),
        _spec("synth_trigonal", "P 31", (12.5, 12.5, 10.5, 90.0, 90.0, 120.0), 14, seed=4),
        _spec("synth_tetragonal", "P 43 21 2", (12.0, 12.0, 15.5, 90.0, 90.0, 90.0), 8, seed=5),
    ]
)

#: Name of the built-in default fixture.
DEFAULT_FIXTURE = "synthetic"


# --------------------------------------------------------------------------- symmetry
@dataclass(frozen=True)
class _Symmetry:
    """The operators of a spec, in gemmi's order, as the PDB file will hold them."""

    triplets: tuple[str, ...]
    rot_frac: np.ndarray  # (n_ops, 3, 3) fractional rotations
    tran_frac: np.ndarray  # (n_ops, 3) fractional translations
    rot_cart: np.ndarray  # (n_ops, 3, 3) Cartesian rotations, rounded as written
    tran_cart: np.ndarray  # (n_ops, 3) Cartesian translations (A), rounded as written
    orth: np.ndarray  # (3, 3) fractional -> Cartesian, columns a, b, c
    frac: np.ndarray  # (3, 3) Cartesian -> fractional


def _symmetry(spec: CrystalSpec) -> _Symmetry:
    """Operators of the spec's space group; raise ValueError on a bad spec."""
    try:
        sg = gemmi.SpaceGroup(spec.space_group)
    except (ValueError, RuntimeError) as exc:
        raise ValueError(f"spec {spec.name!r}: unknown space group {spec.space_group!r}") from exc
    if len(spec.cell) != 6:
        raise ValueError(f"spec {spec.name!r}: cell needs 6 numbers, got {spec.cell!r}")
    cell = gemmi.UnitCell(*spec.cell)
    if not cell.is_compatible_with_spacegroup(sg):
        raise ValueError(f"spec {spec.name!r}: cell {spec.cell} does not suit {sg.hm}")
    orth = np.array(cell.orth.mat.tolist())
    frac = np.array(cell.frac.mat.tolist())
    ops = list(sg.operations())
    rot_frac = np.array([np.array(op.rot, dtype=float) / op.DEN for op in ops])
    tran_frac = np.array([np.array(op.tran, dtype=float) / op.DEN for op in ops])
    # Round like the SMTRY columns (%10.6f, %15.5f) so that the acceptance checks
    # see exactly the operators the loader will read back.
    rot_cart = np.round(orth @ rot_frac @ frac, 6) + 0.0  # + 0.0 turns -0.0 into 0.0
    tran_cart = np.round(tran_frac @ orth.T, 5) + 0.0
    return _Symmetry(
        triplets=tuple(op.triplet().upper() for op in ops),
        rot_frac=rot_frac,
        tran_frac=tran_frac,
        rot_cart=rot_cart,
        tran_cart=tran_cart,
        orth=orth,
        frac=frac,
    )


def _model_packing(xyz: np.ndarray, sym: _Symmetry, lengths: np.ndarray) -> np.ndarray:
    """The model's P1 expansion of one ASU (ALGORITHM.md section 1.5), (n_ops, n, 3)."""
    axes = sym.orth.T  # unit_cell_axes: cell vectors as rows
    out = np.empty((len(sym.rot_cart),) + xyz.shape)
    for i, (rc, tc, rf) in enumerate(zip(sym.rot_cart, sym.tran_cart, sym.rot_frac)):
        copy = xyz @ rc.T + tc
        com = copy.mean(axis=0)
        shift = np.abs(np.sum(axes.T @ rf, axis=1))
        copy = np.where(com < 0, copy + shift, copy)
        copy = np.where(com > lengths, copy - shift, copy)
        out[i] = copy
    return out


def _wrapped_packing(xyz: np.ndarray, sym: _Symmetry) -> np.ndarray:
    """True symmetry images with each centre of mass wrapped into [0, 1)^3, (n_ops, n, 3)."""
    f = xyz @ sym.frac.T
    images = np.einsum("oij,nj->oni", sym.rot_frac, f) + sym.tran_frac[:, None, :]
    images -= np.floor(images.mean(axis=1, keepdims=True))
    return images @ sym.orth.T


# --------------------------------------------------------------------------- geometry
def _random_rotation(rng: np.random.Generator) -> np.ndarray:
    """Uniform random rotation matrix (from a normalised Gaussian quaternion).

    Written out rather than taken from SciPy so that the stream of random
    numbers, hence the file, does not depend on the SciPy version.
    """
    w, x, y, z = (q := rng.normal(size=4)) / np.linalg.norm(q)
    return np.array(
        [
            [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
            [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
            [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
        ]
    )


def _random_chain(n: int, rng: np.random.Generator, max_tries: int = 100) -> np.ndarray | None:
    """A self-avoiding chain of ``n`` atoms with plausible bonds and angles, centred.

    Returns None when it walks into a dead end ``max_tries`` times.
    """
    pos = np.zeros((n, 3))
    if n > 1:
        pos[1] = [rng.uniform(*BOND_LENGTH), 0.0, 0.0]
    for i in range(2, n):
        prev = pos[i - 1] - pos[i - 2]
        prev /= np.linalg.norm(prev)
        # Orthonormal frame around the previous bond for the dihedral angle.
        helper = np.array([0.0, 0.0, 1.0]) if abs(prev[2]) < 0.9 else np.array([1.0, 0.0, 0.0])
        e1 = np.cross(prev, helper)
        e1 /= np.linalg.norm(e1)
        e2 = np.cross(prev, e1)
        for _ in range(max_tries):
            bond = rng.uniform(*BOND_LENGTH)
            turn = np.pi - np.deg2rad(rng.uniform(*BOND_ANGLE_DEG))
            phi = rng.uniform(-np.pi, np.pi)
            step = np.cos(turn) * prev + np.sin(turn) * (np.cos(phi) * e1 + np.sin(phi) * e2)
            candidate = pos[i - 1] + bond * step
            # Atoms three or more bonds back must keep their distance.
            if i < 3 or np.min(np.linalg.norm(pos[: i - 2] - candidate, axis=1)) >= MIN_NONBONDED:
                pos[i] = candidate
                break
        else:
            return None
    return pos - pos.mean(axis=0)


_CELL_STEPS = np.array(list(itertools.product((-2, -1, 0, 1, 2), repeat=3)), dtype=float)


def _placement_ok(xyz: np.ndarray, sym: _Symmetry, lengths: np.ndarray) -> bool:
    """Whether the rounded ASU ``xyz`` makes an acceptable crystal (module docstring)."""
    wrapped = _wrapped_packing(xyz, sym)
    # The model's packing must coincide with the true, wrapped crystal.
    if np.max(np.abs(_model_packing(xyz, sym, lengths) - wrapped)) > 1e-3:
        return False
    n_ops, n_at = wrapped.shape[:2]
    # 5x5x5 cells: enough to see contacts that would fall outside the 27-cell supercell.
    shifts = _CELL_STEPS @ sym.orth.T  # (125, 3)
    every = (shifts[:, None, None, :] + wrapped[None]).reshape(-1, 3)
    owner = np.arange(len(every)) // n_at  # (cell step, asu) instance of each atom
    ref_step = len(_CELL_STEPS) // 2
    ref = wrapped.reshape(-1, 3)
    pairs = cKDTree(ref).sparse_distance_matrix(
        cKDTree(every), GNM_CUTOFF + CUTOFF_MARGIN, output_type="ndarray"
    )
    dist = pairs["v"]
    inst_a = pairs["i"] // n_at  # ASU index in the reference cell
    inst_b = owner[pairs["j"]]
    other = inst_b != ref_step * n_ops + inst_a
    if np.any(np.abs(dist - GNM_CUTOFF) < CUTOFF_MARGIN):
        return False
    if np.any(other & (dist < MIN_CLASH_DISTANCE)):
        return False
    contact = other & (dist <= CONTACT_CUTOFF)
    step_b = _CELL_STEPS[inst_b // n_ops]
    if np.any(np.abs(step_b[other & (dist <= GNM_CUTOFF)]) > 1):
        return False  # a spring the 27-cell model would miss
    asu_b = inst_b % n_ops
    for i in range(n_ops):
        mine = contact & (inst_a == i)
        if n_ops > 1 and not np.any(mine & (asu_b != i)):
            return False
        if not np.any(mine & np.any(step_b != 0, axis=1)):
            return False
    return _supercell_connected(inst_a[contact], asu_b[contact], step_b[contact], n_ops)


def _supercell_connected(
    asu_a: np.ndarray, asu_b: np.ndarray, step_b: np.ndarray, n_ops: int
) -> bool:
    """Whether the ASU contact network of the 3x3x3 supercell is one component.

    Each contact (reference ASU ``a``) -- (ASU ``b`` in the cell at ``step_b``)
    is repeated from every cell of the supercell whose partner cell is inside it.
    """
    cells = np.array(list(itertools.product((-1, 0, 1), repeat=3)))
    rows, cols = [], []
    for c in cells:
        partner = c + step_b
        inside = np.all(np.abs(partner) <= 1, axis=1)
        idx_c = np.ravel_multi_index(tuple(c + 1), (3, 3, 3))
        idx_p = np.ravel_multi_index(tuple((partner[inside] + 1).T.astype(int)), (3, 3, 3))
        rows.append(idx_c * n_ops + asu_a[inside])
        cols.append(idx_p * n_ops + asu_b[inside])
    n = 27 * n_ops
    r, c = np.concatenate(rows), np.concatenate(cols)
    graph = coo_matrix((np.ones(len(r)), (r, c)), shape=(n, n))
    n_comp, _ = connected_components(graph, directed=False)
    return n_comp == 1


def _place_asu(spec: CrystalSpec, sym: _Symmetry) -> np.ndarray:
    """Rejection loop: the first acceptable ASU (n_atoms, 3), rounded to 0.001 A."""
    lengths = np.array(spec.cell[:3], dtype=float)
    for attempt in range(MAX_CHAINS):
        rng = np.random.default_rng([spec.seed, 1, attempt])
        chain = _random_chain(spec.n_atoms, rng)
        if chain is None:
            continue
        chain = chain @ _random_rotation(rng).T
        for _ in range(PLACEMENTS_PER_CHAIN):
            centre = sym.orth @ rng.random(3)
            # Rounded as the ATOM records will be, so the checks see the file's atoms.
            xyz = np.round(chain + centre, 3) + 0.0
            if _placement_ok(xyz, sym, lengths):
                return xyz
    raise RuntimeError(
        f"spec {spec.name!r}: no acceptable placement in {MAX_CHAINS} chains; "
        "try another seed, a smaller cell or more atoms"
    )


# --------------------------------------------------------------------------- labels
def _residue_plan(n_atoms: int, rng: np.random.Generator) -> list[str]:
    """Residue names whose atom counts add up to ``n_atoms`` (at most one CYS)."""
    sizes = {name: len(atoms) for name, atoms in _RESIDUES.items()}

    @functools.cache
    def feasible(rest: int, cys_left: bool) -> bool:
        if rest == 0:
            return True
        return any(
            size <= rest and feasible(rest - size, cys_left and name != "CYS")
            for name, size in sizes.items()
            if name != "CYS" or cys_left
        )

    if not feasible(n_atoms, True):
        raise ValueError(f"cannot label a chain of {n_atoms} atoms with whole residues")
    plan: list[str] = []
    rest, cys_left = n_atoms, True
    while rest:
        options = [
            name
            for name, size in sizes.items()
            if (name != "CYS" or cys_left)
            and size <= rest
            and feasible(rest - size, cys_left and name != "CYS")
        ]
        name = options[int(rng.integers(len(options)))]
        plan.append(name)
        rest -= sizes[name]
        cys_left = cys_left and name != "CYS"
    return plan


# --------------------------------------------------------------------------- PDB text
def _record(text: str) -> str:
    """One PDB line, padded to 80 columns like the wwPDB files."""
    if len(text) > 80:
        raise ValueError(f"PDB line longer than 80 columns: {text!r}")
    return f"{text:<80}"


def _continued(record: str, text: str) -> list[str]:
    """A record with continuation lines (``TITLE``, ``TITLE    2 ...``), word-wrapped."""
    lines, current = [], ""
    for word in text.split():
        if current and len(current) + 1 + len(word) > 69:
            lines.append(current)
            current = word
        else:
            current = f"{current} {word}" if current else word
    lines.append(current)
    return [
        _record(f"{record:<6}    {line}" if k == 0 else f"{record:<6}{k + 1:>4} {line}")
        for k, line in enumerate(lines)
    ]


def _remark_290(spec: CrystalSpec, sym: _Symmetry) -> list[str]:
    """The REMARK 290 block in the wwPDB layout, then REMARK 300."""
    hm = gemmi.SpaceGroup(spec.space_group).hm
    body = [
        "",
        "CRYSTALLOGRAPHIC SYMMETRY",
        f"SYMMETRY OPERATORS FOR SPACE GROUP: {hm}",
        "",
        "     SYMOP   SYMMETRY",
        "    NNNMMM   OPERATOR",
    ]
    body += [f"{f'{k + 1}555':>10}   {t}" for k, t in enumerate(sym.triplets)]
    body += [
        "",
        "    WHERE NNN -> OPERATOR NUMBER",
        "          MMM -> TRANSLATION VECTOR",
        "",
        "CRYSTALLOGRAPHIC SYMMETRY TRANSFORMATIONS",
        "THE FOLLOWING TRANSFORMATIONS OPERATE ON THE ATOM/HETATM",
        "RECORDS IN THIS ENTRY TO PRODUCE CRYSTALLOGRAPHICALLY",
        "RELATED MOLECULES.",
    ]
    for k, (rot, tran) in enumerate(zip(sym.rot_cart, sym.tran_cart)):
        for row in range(3):
            r = rot[row]
            body.append(
                f"  SMTRY{row + 1} {k + 1:3d}{r[0]:10.6f}{r[1]:10.6f}{r[2]:10.6f}{tran[row]:15.5f}"
            )
    body += ["", "REMARK: NULL"]
    lines = [_record(f"REMARK 290 {text}".rstrip()) for text in body]
    lines += [
        _record("REMARK 300"),
        _record("REMARK 300 SYNTHETIC CRYSTAL: NO BIOLOGICAL ASSEMBLY IS DEFINED."),
    ]
    return lines


def _atom_records(spec: CrystalSpec, xyz: np.ndarray) -> list[str]:
    """ATOM records of one chain A, then TER."""
    # Labels and B factors come from their own stream, independent of how many
    # placement attempts the geometry needed.
    rng = np.random.default_rng([spec.seed, 2])
    plan = _residue_plan(spec.n_atoms, rng)
    b_iso = np.round(rng.uniform(10.0, 40.0, size=spec.n_atoms), 2)
    lines, serial = [], 0
    for seq, resname in enumerate(plan, start=1):
        for name in _RESIDUES[resname]:
            x, y, z = xyz[serial]
            element = name[0]
            # Names of one-letter elements start in column 14 (" CA ").
            atom_name = f" {name:<3}"
            serial += 1
            lines.append(
                _record(
                    f"ATOM  {serial:5d} {atom_name:4s} {resname:3s} A{seq:4d}    "
                    f"{x:8.3f}{y:8.3f}{z:8.3f}{1.0:6.2f}{b_iso[serial - 1]:6.2f}"
                    f"          {element:>2s}  "
                )
            )
    lines.append(_record(f"TER   {serial + 1:5d}      {plan[-1]:3s} A{len(plan):4d}"))
    return lines


def build_crystal(spec: CrystalSpec) -> str:
    """The PDB text of a synthetic crystal.

    Parameters
    ----------
    spec : CrystalSpec
        Space group, cell, atoms per ASU and seed.

    Returns
    -------
    str
        HEADER, TITLE, REMARK 290/300, CRYST1, ATOM, TER and END records, 80
        columns each, newline-terminated. The same spec gives the same text.

    Raises
    ------
    ValueError
        Unknown space group, a cell that does not suit it, or too few atoms.
    RuntimeError
        No acceptable placement found (cell too large or too small for the ASU).
    """
    # A list-valued cell would be unhashable for the cache; a tuple of floats is canonical.
    return _build_cached(dataclasses.replace(spec, cell=tuple(float(x) for x in spec.cell)))


@functools.lru_cache(maxsize=32)
def _build_cached(spec: CrystalSpec) -> str:
    # Cached because the rejection loop is the expensive part and tests and the
    # fixture resolver ask for the same specs again and again.
    if spec.n_atoms < 4:
        raise ValueError(f"spec {spec.name!r}: n_atoms must be at least 4, got {spec.n_atoms}")
    sym = _symmetry(spec)
    xyz = _place_asu(spec, sym)
    a, b, c, alpha, beta, gamma = spec.cell
    hm = gemmi.SpaceGroup(spec.space_group).hm
    lines = [_record(f"HEADER    {'SYNTHETIC CRYSTAL':<40}{'01-JAN-26':9}   SYNT")]
    lines += _continued(
        "TITLE",
        f"SYNTHETIC CRYSTAL {spec.name} MADE BY ERYX.SYNTHETIC FROM SPEC {spec.name}: "
        f"{hm}, {spec.n_atoms} ATOMS PER ASU, SEED {spec.seed}",
    )
    lines += _remark_290(spec, sym)
    lines.append(
        _record(
            f"CRYST1{a:9.3f}{b:9.3f}{c:9.3f}{alpha:7.2f}{beta:7.2f}{gamma:7.2f} "
            f"{hm:<11s}{len(sym.triplets):4d}"
        )
    )
    lines += _atom_records(spec, xyz)
    lines.append(_record("END"))
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- files
def write_crystal(spec: CrystalSpec, path: Path) -> Path:
    """Write :func:`build_crystal` text to ``path`` atomically.

    The text goes to a temporary file in the same directory, which then
    replaces ``path`` in one step: readers in other processes see the old
    file or the new one, never half of one.

    Returns
    -------
    Path
        ``path``.
    """
    path = Path(path)
    text = build_crystal(spec)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="ascii", newline="\n") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; a fixture is ordinary data
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def default_cache_dir() -> Path:
    """Per-user fixture cache: ``$XDG_CACHE_HOME/eryx-parity/fixtures`` (or ``~/.cache/...``)."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "eryx-parity" / "fixtures"


def ensure_fixture(name: str, directory: Path | None = None) -> Path:
    """Path of the synthetic fixture ``name``, written on first use.

    Parameters
    ----------
    name : str
        A key of :data:`SPECS`.
    directory : Path, optional
        Where to keep ``<name>.pdb``; default :func:`default_cache_dir`.

    Returns
    -------
    Path
        The file. It is rewritten (atomically) only when missing or when its
        content differs from what the spec builds now.

    Raises
    ------
    KeyError
        ``name`` is not a known spec; the message lists the known names.
    """
    try:
        spec = SPECS[name]
    except KeyError:
        raise KeyError(
            f"unknown synthetic fixture {name!r}; known: {', '.join(sorted(SPECS))}"
        ) from None
    path = Path(directory if directory is not None else default_cache_dir()) / f"{name}.pdb"
    text = build_crystal(spec)
    try:
        if path.read_text(encoding="ascii") == text:
            return path
    except (OSError, UnicodeDecodeError):
        pass  # missing or unreadable: (re)write it below
    return write_crystal(spec, path)
