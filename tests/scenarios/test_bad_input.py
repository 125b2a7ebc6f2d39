"""Bad input: every mistake a user can make fails fast with an EryxInputError that
names the offending parameter (both backends where the parameter exists)."""
from __future__ import annotations

import math
import os
import subprocess

import numpy as np
import pytest
import torch

from eryx import models as npm
from eryx import models_torch as tm
from eryx.errors import (
    EryxInputError, InputTypeError, MemoryBudgetError, SpringConstantError, StructureError,
    UndefinedADPError, format_bytes,
)

BACKENDS = {"numpy": npm.OnePhonon, "torch": tm.OnePhonon}
GRID = (-1, 1, 1)

CELL_OK = "CRYST1   10.000   12.000   14.000  90.00  90.00  90.00 P 1           1"
ATOMS = """\
ATOM      1  N   ALA A   1       1.000   2.000   3.000  1.00 10.00           N
ATOM      2  CA  ALA A   1       2.400   2.100   3.300  1.00 11.00           C
ATOM      3  C   ALA A   1       3.000   3.400   2.900  1.00 12.00           C
"""


@pytest.fixture(params=sorted(BACKENDS))
def model_cls(request):
    return BACKENDS[request.param]


@pytest.fixture
def pdb(fixture_pdb):
    return fixture_pdb("5zck_p1")


def raises_input_error(call, *fragments, cls=EryxInputError):
    """Run call(); it must raise `cls` (an EryxInputError) whose message holds every fragment.

    (That checks run before heavy work is tested where it matters, by replacing the heavy
    functions with ones that fail: see the memory tests. Wall-clock time is not asserted.)
    """
    assert issubclass(cls, EryxInputError)
    with pytest.raises(cls) as info:
        call()
    message = str(info.value)
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in error message {message!r}"
    assert "\n" not in message, f"the message must be one line: {message!r}"
    return info.value


def build(cls, pdb, **kw):
    args = dict(hsampling=GRID, ksampling=GRID, lsampling=GRID)
    args.update(kw)
    return cls(pdb, args.pop("hsampling"), args.pop("ksampling"), args.pop("lsampling"), **args)


# ------------------------------------------------------------------------- files
def test_missing_file(model_cls, tmp_path):
    missing = tmp_path / "nope" / "missing.pdb"
    raises_input_error(lambda: build(model_cls, missing), "not found", str(missing), cls=StructureError)


def test_directory_instead_of_file(model_cls, tmp_path):
    raises_input_error(lambda: build(model_cls, tmp_path), str(tmp_path), cls=StructureError)


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root can read any file")
def test_unreadable_file(model_cls, tmp_path):
    path = tmp_path / "secret.pdb"
    path.write_text(CELL_OK + "\n" + ATOMS)
    path.chmod(0)
    try:
        raises_input_error(lambda: build(model_cls, path), "readable", str(path), cls=StructureError)
    finally:
        path.chmod(0o600)


@pytest.mark.parametrize("content", [
    b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR garbage \xff\xfe\x00",
    b"this is not a PDB file\nat all\n",
    b"",
], ids=["binary", "text", "empty"])
def test_garbage_file(model_cls, tmp_path, content):
    path = tmp_path / "garbage.pdb"
    path.write_bytes(content)
    raises_input_error(lambda: build(model_cls, path), str(path), cls=StructureError)


def test_no_cryst1(model_cls, tmp_path):
    path = tmp_path / "nocell.pdb"
    path.write_text(ATOMS + "END\n")
    raises_input_error(lambda: build(model_cls, path), "CRYST1", cls=StructureError)


@pytest.mark.parametrize("cryst1", [
    "CRYST1    0.000    0.000    0.000  90.00  90.00  90.00 P 1           1",
    "CRYST1   10.000   12.000    0.000  90.00  90.00  90.00 P 1           1",
], ids=["all-zero", "zero-c"])
def test_zero_volume_cell(model_cls, tmp_path, cryst1):
    path = tmp_path / "flat.pdb"
    path.write_text(cryst1 + "\n" + ATOMS + "END\n")
    raises_input_error(lambda: build(model_cls, path), "unit cell", cls=StructureError)


def test_only_waters_and_hydrogens(model_cls, tmp_path):
    path = tmp_path / "water.pdb"
    path.write_text(CELL_OK + "\n"
                    "HETATM    1  O   HOH A 101       1.000   2.000   3.000  1.00 10.00           O\n"
                    "HETATM    2  H1  HOH A 101       1.500   2.000   3.000  1.00 10.00           H\n"
                    "ATOM      3  H   ALA B   1       5.000   2.000   3.000  1.00 10.00           H\n"
                    "END\n")
    raises_input_error(lambda: build(model_cls, path), "no atoms", cls=StructureError)


@pytest.mark.parametrize("atoms", [
    "ATOM      1  N   ALA A   1       1.000   2.000   3.000  1.00 10.00           N\n",
    "ATOM      1  N   ALA A   1       1.000   2.000   3.000  1.00 10.00           N\n"
    "ATOM      2  CA  ALA A   1       2.000   3.000   4.000  1.00 10.00           C\n"
    "ATOM      3  C   ALA A   1       3.000   4.000   5.000  1.00 10.00           C\n",
], ids=["one-atom", "collinear"])
def test_degenerate_rigid_body(model_cls, tmp_path, atoms):
    """One atom or atoms on a line: no rigid-body libration, singular mass matrix."""
    path = tmp_path / "line.pdb"
    path.write_text(CELL_OK + "\n" + atoms + "END\n")
    raises_input_error(lambda: build(model_cls, path), "singular", cls=StructureError)


# --------------------------------------------------------------------------- grid
@pytest.mark.parametrize("kw, fragments", [
    (dict(hsampling=(-2.5, 2, 2)), ("hsampling", "integer")),
    (dict(ksampling=(-2, 2.5, 2)), ("ksampling", "integer")),
    (dict(lsampling=(-2, 2, 0)), ("lsampling", "oversampling")),
    (dict(hsampling=(-2, 2, 1.5)), ("hsampling", "oversampling")),
    (dict(hsampling=(-2, 2, -1)), ("hsampling", "oversampling")),
    (dict(hsampling=(2, -2, 1)), ("hsampling", "lower bound")),
    (dict(ksampling=(-2, 2)), ("ksampling", "triple")),
    (dict(lsampling=(-2, 2, 2, 2)), ("lsampling", "triple")),
    (dict(hsampling=None), ("hsampling",)),
    (dict(hsampling=(-2, float("nan"), 1)), ("hsampling",)),
    (dict(hsampling=(True, 2, 1)), ("hsampling",)),
], ids=["h-frac", "k-frac", "over-0", "over-1.5", "over-neg", "hmin>hmax", "len-2", "len-4",
        "none", "nan", "bool"])
def test_bad_grid(model_cls, pdb, kw, fragments):
    raises_input_error(lambda: build(model_cls, pdb, **kw), *fragments)


def test_integral_floats_are_accepted(pdb):
    """2.0 is an integer bound: same grid as 2."""
    a = npm.OnePhonon(pdb, (-1.0, 1.0, 2.0), GRID, GRID)
    b = npm.OnePhonon(pdb, (-1, 1, 2), GRID, GRID)
    assert np.array_equal(a.hkl_grid, b.hkl_grid)


# ---------------------------------------------------------------------- parameters
BAD_NUMBERS = [-1.0, float("nan"), float("inf"), -float("inf")]


@pytest.mark.parametrize("name", ["gnm_cutoff", "gamma_intra", "gamma_inter", "res_limit"])
@pytest.mark.parametrize("value", BAD_NUMBERS, ids=["neg", "nan", "inf", "-inf"])
def test_bad_numbers(model_cls, pdb, name, value):
    raises_input_error(lambda: build(model_cls, pdb, **{name: value}), name)


@pytest.mark.parametrize("name, value", [
    ("gnm_cutoff", 0.0), ("gamma_intra", "abc"), ("gamma_inter", None), ("res_limit", "1A"),
    ("gamma_intra", torch.tensor([1.0, 2.0])), ("gamma_inter", torch.tensor(float("nan"))),
    ("gamma_inter", torch.tensor(-2.0, dtype=torch.float64, requires_grad=True)),
])
def test_bad_parameter_values(model_cls, pdb, name, value):
    raises_input_error(lambda: build(model_cls, pdb, **{name: value}), name)


def test_integer_tensor_gamma_torch(pdb):
    raises_input_error(lambda: build(tm.OnePhonon, pdb, gamma_inter=torch.tensor(1)), "gamma_inter")


@pytest.mark.parametrize("kw, fragments", [
    (dict(group_by="atom"), ("group_by", "atom")),
    (dict(model="rtb"), ("model", "rtb")),
])
def test_unsupported_options(model_cls, pdb, kw, fragments):
    raises_input_error(lambda: build(model_cls, pdb, **kw), *fragments)


def test_rank_out_of_range(model_cls, pdb):
    model = build(model_cls, pdb, hsampling=(-1, 1, 2))
    for rank in (-2, model.n_dof, 1000):
        raises_input_error(lambda: model.apply_disorder(rank=rank), "rank")


# --------------------------------------------------------------------------- memory
def test_memory_limit(model_cls, pdb):
    """A hopeless grid fails on its estimate, before anything grid-sized is allocated."""
    huge = (-2000, 2000, 50)  # 200,001 points per axis: 8e15 grid points
    n_q = (50 * 4000 + 1) ** 3
    limit = 2**30
    exc = raises_input_error(
        lambda: build(model_cls, pdb, hsampling=huge, ksampling=huge, lsampling=huge, memory_limit=limit),
        "memory limit", "memory_limit", cls=MemoryBudgetError)
    assert exc.limit_bytes == limit
    assert exc.estimate_bytes >= 3 * 8 * n_q  # the q-vectors alone need this much
    message = str(exc)
    assert format_bytes(exc.estimate_bytes) in message and format_bytes(limit) in message


def test_memory_limit_small_and_bad(model_cls, pdb):
    # The small golden grid fits in 1 GiB but not in 1 KiB.
    build(model_cls, pdb, hsampling=(-2, 2, 2), memory_limit=2**30)
    raises_input_error(lambda: build(model_cls, pdb, hsampling=(-2, 2, 2), memory_limit=1024),
                       "1.0 KiB", cls=MemoryBudgetError)
    for bad in (-1, 0, float("nan"), "lots"):
        raises_input_error(lambda: build(model_cls, pdb, memory_limit=bad), "memory_limit")


# ------------------------------------------------------------------- torch-specific
@pytest.mark.parametrize("device, fragments", [
    ("tpu", ("device", "tpu")),
    ("not a device", ("device",)),
])
def test_unknown_device(pdb, device, fragments):
    raises_input_error(lambda: build(tm.OnePhonon, pdb, device=device), *fragments)


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA device is present")
@pytest.mark.parametrize("device", ["cuda", "cuda:0"])
def test_cuda_absent(pdb, device):
    raises_input_error(lambda: build(tm.OnePhonon, pdb, device=device), "device", "no CUDA")


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.int32, torch.complex128,
                                   "int32", "float16", "double precision"])
def test_bad_dtype(pdb, dtype):
    raises_input_error(lambda: build(tm.OnePhonon, pdb, dtype=dtype), "dtype")


def test_string_dtypes_accepted(pdb):
    model = build(tm.OnePhonon, pdb, dtype="float32")
    assert model.Linv.dtype == torch.float32


@pytest.mark.parametrize("q, fragments", [
    (np.zeros((4, 2)), ("q_vectors", "(N, 3)")),
    (torch.zeros(3, dtype=torch.float64), ("q_vectors", "(N, 3)")),
    (torch.zeros(2, 3, 1, dtype=torch.float64), ("q_vectors", "(N, 3)")),
    (np.zeros((0, 3)), ("q_vectors", "N >= 1")),
    (np.ones((4, 3), dtype=complex), ("q_vectors", "real")),
    (torch.ones(4, 3, dtype=torch.complex128), ("q_vectors", "real")),
    (np.array([[0.1, 0.2, math.nan]]), ("q_vectors", "NaN")),
    (np.array([[0.1, math.inf, 0.3]]), ("q_vectors", "infinite")),
    (np.array([["a", "b", "c"]]), ("q_vectors", "real")),
], ids=["N2", "1d", "3d", "empty", "np-complex", "torch-complex", "nan", "inf", "strings"])
def test_bad_q_vectors(pdb, q, fragments):
    raises_input_error(lambda: build(tm.OnePhonon, pdb, q_vectors=q), *fragments)


def test_q_vectors_no_silent_downcast(pdb):
    q = torch.zeros(2, 3, dtype=torch.float64)
    raises_input_error(lambda: build(tm.OnePhonon, pdb, q_vectors=q, dtype=torch.float32), "q_vectors", "float32")


@pytest.mark.parametrize("chunk", [0, -5, 2.5, True, "100"])
def test_bad_chunk_size(pdb, chunk):
    raises_input_error(lambda: build(tm.OnePhonon, pdb, chunk_size=chunk), "chunk_size")


# ------------------------------------------------------------- atoms and the cell
def atom_line(serial, name="CA", x="1.000", y="2.000", z="3.000", b="10.00", element="C",
              resname="ALA", chain="A", resseq=1, record="ATOM  ") -> str:
    """One PDB ATOM record; numbers are given as text so that any field can be bad."""
    return (f"{record}{serial:5d} {name:<4s} {resname:>3s} {chain}{resseq:4d}    "
            f"{x:>8s}{y:>8s}{z:>8s}  1.00{b:>6s}          {element:>2s}")


GOOD_ATOMS = [dict(name="N", x="1.000", y="2.000", z="3.000", element="N"),
              dict(name="CA", x="2.400", y="2.100", z="3.300", element="C"),
              dict(name="C", x="3.000", y="3.400", z="2.900", element="C"),
              dict(name="O", x="2.500", y="4.300", z="2.200", element="O")]


def write_pdb(path, atoms, cryst1=CELL_OK):
    path.write_text(cryst1 + "\n" + "\n".join(atom_line(i + 1, **a) for i, a in enumerate(atoms)) + "\nEND\n")
    return path


def with_atom(index, **changes):
    atoms = [dict(a) for a in GOOD_ATOMS]
    atoms[index].update(changes)
    return atoms


def test_good_atoms_load(model_cls, tmp_path):
    """The reference file of the tests below builds (so each failure is the change made)."""
    build(model_cls, write_pdb(tmp_path / "ok.pdb", GOOD_ATOMS))


@pytest.mark.parametrize("symbol", ["Xx", "Q", "X"])
def test_unknown_element(model_cls, tmp_path, symbol):
    """gemmi reads an unknown symbol as the dummy element X (mass 1, oxygen-like f)."""
    path = write_pdb(tmp_path / "xx.pdb", with_atom(2, element=symbol))
    raises_input_error(lambda: build(model_cls, path), "unknown element", "'C' of ALA A 1 (serial 3)",
                       str(path), cls=StructureError)


@pytest.mark.parametrize("b", ["-5.00", "nan", "inf", "-inf"])
def test_bad_b_factor(model_cls, tmp_path, b):
    path = write_pdb(tmp_path / "b.pdb", with_atom(1, b=b))
    raises_input_error(lambda: build(model_cls, path), "B factor", "'CA' of ALA A 1 (serial 2)",
                       cls=StructureError)


@pytest.mark.parametrize("field, value", [("x", "nan"), ("y", "inf"), ("z", "-inf"), ("x", "1e400")])
def test_non_finite_coordinates(model_cls, tmp_path, field, value):
    """Today's symptom was 'SVD did not converge' from every stage."""
    path = write_pdb(tmp_path / "xyz.pdb", with_atom(3, **{field: value}))
    raises_input_error(lambda: build(model_cls, path), "non-finite", "'O' of ALA A 1 (serial 4)",
                       cls=StructureError)


def test_zero_b_factor_is_accepted(tmp_path):
    """B = 0 is a (sharp) B factor, not an error."""
    npm.OnePhonon(write_pdb(tmp_path / "b0.pdb", with_atom(0, b="0.00")), GRID, GRID, GRID)


@pytest.mark.parametrize("cryst1", [
    "CRYST1    0.500   12.000   14.000  90.00  90.00  90.00 P 1           1",
    "CRYST1   10.000    0.999   14.000  90.00  90.00  90.00 P 1           1",
], ids=["a=0.5", "b=0.999"])
def test_cell_edge_under_1A(model_cls, tmp_path, cryst1):
    path = write_pdb(tmp_path / "tiny.pdb", GOOD_ATOMS, cryst1)
    raises_input_error(lambda: build(model_cls, path), "unit cell edge", "under 1 A", cls=StructureError)


# ------------------------------------------------------------------ path kinds
def test_fifo_is_named_not_opened(model_cls, tmp_path):
    """A FIFO would block the reader forever: it must be refused without being opened."""
    fifo = tmp_path / "pipe.pdb"
    os.mkfifo(fifo)
    # If the model did open it (any number of times), a writer process feeds it garbage, so
    # the test fails on the message instead of hanging. A process, not a thread: the reader
    # (gemmi) may block in open() holding the GIL.
    writer = subprocess.Popen(["sh", "-c", 'while :; do echo garbage > "$0" || exit 0; done', str(fifo)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        raises_input_error(lambda: build(model_cls, fifo), "FIFO", str(fifo), cls=StructureError)
    finally:
        writer.kill()
        writer.wait(timeout=10)


@pytest.mark.skipif(not os.path.exists("/dev/null"), reason="no /dev/null")
def test_device_file(model_cls):
    raises_input_error(lambda: build(model_cls, "/dev/null"), "character device", cls=StructureError)


def test_directory_named_as_such(model_cls, tmp_path):
    raises_input_error(lambda: build(model_cls, tmp_path), "is a directory", cls=StructureError)


def test_fixture_resolution_names_the_kind(tmp_path):
    """The CLI resolves --fixture through eryx.fixtures: 'not found' only for what is absent."""
    from eryx.fixtures import resolve_fixture

    fifo = tmp_path / "pipe.pdb"
    os.mkfifo(fifo)
    (tmp_path / "dir.pdb").mkdir()
    raises_input_error(lambda: resolve_fixture(fifo), "FIFO", cls=StructureError)
    raises_input_error(lambda: resolve_fixture(str(tmp_path / "dir.pdb")), "is a directory", cls=StructureError)
    raises_input_error(lambda: resolve_fixture(str(tmp_path) + os.sep), "is a directory", cls=StructureError)
    raises_input_error(lambda: resolve_fixture(str(tmp_path / "absent.pdb")), "not found")
    raises_input_error(lambda: resolve_fixture(7), "int", cls=InputTypeError)


@pytest.mark.parametrize("path, type_name", [
    (12, "int"), (None, "NoneType"), (b"5zck_p1.pdb", "bytes"), (["a.pdb"], "list"), (1.5, "float"),
])
def test_non_string_path(model_cls, path, type_name):
    exc = raises_input_error(lambda: build(model_cls, path), "pdb_path", type_name, cls=InputTypeError)
    assert isinstance(exc, TypeError)  # also a TypeError, for callers that catch that


def test_pathlike_accepted(tmp_path):
    class Pathish:
        def __init__(self, p):
            self.p = p

        def __fspath__(self):
            return self.p

    path = write_pdb(tmp_path / "ok.pdb", GOOD_ATOMS)
    for value in (path, str(path), Pathish(str(path))):
        npm.OnePhonon(value, GRID, GRID, GRID)
    raises_input_error(lambda: build(npm.OnePhonon, Pathish(bytes(path))), "bytes", cls=InputTypeError)


# ------------------------------------------------------------------ device kinds
@pytest.mark.parametrize("device", ["meta", torch.device("meta"), "mps", "xpu", "ipu"])
def test_unsupported_device_kind(pdb, device):
    """Accepted today, then every stage failed: refused up front, naming the supported kinds."""
    raises_input_error(lambda: build(tm.OnePhonon, pdb, device=device), "not supported", "cpu, cuda")


# ------------------------------------------------------------ undefined ADP scale
def np_map(Id):
    return Id.detach().numpy() if hasattr(Id, "detach") else np.asarray(Id)


@pytest.mark.parametrize("kw, grid, fragments", [
    (dict(gnm_cutoff=1.0), (-1, 1, 2), ("no atom contacts", "gnm_cutoff = 1 A")),
    (dict(gnm_cutoff=2.0), (-1, 1, 2), ("no contacts between ASUs", "gnm_cutoff = 2 A")),
    (dict(gamma_inter=1e-300), (-1, 1, 2), ("too weak", "gamma_inter = 1e-300")),
], ids=["no-contacts", "no-inter-contacts", "weak-gamma-inter"])
def test_undefined_adp_names_the_cause(model_cls, pdb, kw, grid, fragments):
    """5zck_p1 has four ASUs and is sampled at oversampling 2: the message must not blame
    the sampling, but say what made the scale undefined."""
    model = build(model_cls, pdb, hsampling=grid, ksampling=grid, lsampling=grid, **kw)
    assert model.n_asu == 4 and model.L == (2, 2, 2)
    for call in (model.apply_disorder, model.mode_maps, lambda: model.apply_disorder(rank=model.n_dof - 1)):
        exc = raises_input_error(call, "ADP scale is undefined", *fragments, "use_data_adp=True",
                                 cls=UndefinedADPError)
        assert "oversampling" not in str(exc) and exc.reason in str(exc)
    # The file's B factors need no ADP scale: a map (here all NaN: every k has zero modes).
    Id = model.apply_disorder(use_data_adp=True)
    Id = Id.detach().numpy() if hasattr(Id, "detach") else Id
    assert Id.shape == (model.map_shape[0] * model.map_shape[1] * model.map_shape[2],) and np.isnan(Id).all()


def test_undefined_adp_only_k0_one_asu(model_cls, fixture_pdb):
    model = build(model_cls, fixture_pdb("synth_triclinic"))
    assert model.n_asu == 1 and model.L == (1, 1, 1)
    raises_input_error(model.apply_disorder, "ADP scale is undefined", "only k = 0 is sampled",
                       "oversampling >= 2", cls=UndefinedADPError)
    ADP = build(model_cls, fixture_pdb("synth_triclinic"), hsampling=(-1, 1, 2)).ADP
    assert np.isfinite(np_map(ADP)).all()


def test_undefined_adp_q_vectors(pdb):
    """The torch q-vector mode and the NumPy one refuse the same way."""
    q = npm.OnePhonon(pdb, GRID, GRID, GRID).q_grid[:5]
    n = build(npm.OnePhonon, pdb, gnm_cutoff=1.0)
    raises_input_error(lambda: n.apply_disorder_at(q), "no atom contacts", cls=UndefinedADPError)
    t = build(tm.OnePhonon, pdb, gnm_cutoff=1.0, q_vectors=q)
    raises_input_error(t.apply_disorder, "no atom contacts", cls=UndefinedADPError)
    q_grad = torch.tensor(q, requires_grad=True)
    t = build(tm.OnePhonon, pdb, gnm_cutoff=1.0, q_vectors=q_grad)
    raises_input_error(t.apply_disorder, "no atom contacts", cls=UndefinedADPError)


# ------------------------------------------------------- spring constants at edges
EDGE_GRID = dict(hsampling=(-2, 2, 2), ksampling=(-2, 2, 2), lsampling=(-2, 2, 2))


@pytest.mark.parametrize("name", ["gamma_intra", "gamma_inter"])
@pytest.mark.parametrize("value", [0.0, -0.0, -1.0, -1e-300, math.nan, math.inf, -math.inf],
                         ids=["zero", "minus-zero", "negative", "tiny-negative", "nan", "inf", "-inf"])
def test_spring_constant_refused_up_front(model_cls, pdb, name, value):
    """Spring constants must be positive and finite (ALGORITHM.md section 6): refused with
    the parameter's name before any work (no build step)."""
    exc = raises_input_error(lambda: build(model_cls, pdb, **EDGE_GRID, **{name: value}), name)
    assert not hasattr(exc, "build_step")
    if model_cls is tm.OnePhonon:
        t = torch.tensor(value, dtype=torch.float64, requires_grad=True)
        raises_input_error(lambda: build(model_cls, pdb, **EDGE_GRID, **{name: t}), name)


@pytest.mark.parametrize("kw, kind", [
    (dict(gamma_intra=1e300), "too_stiff"),
    (dict(gamma_inter=1e300), "too_stiff"),
    (dict(gamma_intra=1e300, gamma_inter=1e300), "too_stiff"),
    (dict(gamma_intra=1e3, gamma_inter=1e3), "too_stiff"),
    (dict(gamma_intra=1e-300, gamma_inter=1e-300), "too_soft"),
    (dict(gamma_intra=1e-20, gamma_inter=1e-20), "too_soft"),
    (dict(gamma_inter=1e-12), "ill_conditioned"),
], ids=["intra-1e300", "inter-1e300", "both-1e300", "both-1e3", "both-1e-300", "both-1e-20", "inter-1e-12"])
def test_spring_constants_outside_the_spectrum_range(model_cls, pdb, kw, kind):
    """Values for which the zero-mode cutoff (w^2 < 1e-12) and the pseudo-inverse cutoff
    (n eps max) disagree: today NumPy lost the Bragg NaNs at 1e300 while torch raised, or
    torch returned all-NaN maps; now both refuse in phase 3 with the same kind."""
    exc = raises_input_error(lambda: build(model_cls, pdb, **EDGE_GRID, **kw), "spring constants",
                             "docs/model-edges.md", cls=SpringConstantError)
    assert exc.kind == kind
    # Too stiff is decided before the Hessian when one ASU's block already shows it
    # (eryx.stiffness), the others from the full spectrum.
    step = "stiffness" if kind == "too_stiff" else "phonons"
    assert (exc.build_step, exc.build_phase) == (step, 3)
    for value in kw.values():
        assert f"{value:g}" in str(exc)


def test_tiny_gamma_intra_is_valid(pdb):
    """gamma_intra -> 0 is a regular limit (the springs between ASUs hold every mode): both
    backends agree at the end-to-end tier, NaN exactly at the Bragg points, and the map
    is continuous (1e-300 against 1e-30)."""
    maps = {}
    for cls in (npm.OnePhonon, tm.OnePhonon):
        for g in (1e-300, 1e-30):
            maps[cls, g] = np_map(build(cls, pdb, **EDGE_GRID, gamma_intra=g).apply_disorder())
    default = np_map(build(npm.OnePhonon, pdb, **EDGE_GRID).apply_disorder())
    ref = maps[npm.OnePhonon, 1e-300]
    assert np.array_equal(np.isnan(ref), np.isnan(default)) and np.isfinite(ref).any()
    finite = np.isfinite(ref)
    scale = np.abs(ref[finite]).max()
    for (cls, g), Id in maps.items():
        assert np.array_equal(np.isnan(Id), np.isnan(ref)), (cls, g)
        assert np.abs(Id[finite] - ref[finite]).max() <= 1e-11 * scale, (cls, g)


@pytest.mark.parametrize("gamma_inter", [1e-300, 1e-20])
def test_tiny_gamma_inter_leaves_adp_undefined_in_both(pdb, gamma_inter):
    """The ASUs' translations are zero modes at every k in both backends; the model's ADP
    map is refused with the cause (before, at 1e-20 torch returned an all-NaN map where
    NumPy raised), the data-ADP map is all NaN."""
    for cls in (npm.OnePhonon, tm.OnePhonon):
        model = build(cls, pdb, **EDGE_GRID, gamma_inter=gamma_inter)
        raises_input_error(model.apply_disorder, f"gamma_inter = {gamma_inter:g}", "too weak",
                           cls=UndefinedADPError)
        assert np.isnan(np_map(model.apply_disorder(use_data_adp=True))).all()


@pytest.mark.parametrize("scale", [1e-10, 1e-4, 100.0])
def test_common_scale_of_spring_constants(pdb, scale):
    """Inside the valid range a common factor s scales the map by 1 / s and leaves the ADPs
    unchanged (section 8's scale absorbs it), in both backends, NaN pattern unchanged."""
    base = np_map(build(npm.OnePhonon, pdb, **EDGE_GRID).apply_disorder())
    finite = np.isfinite(base)
    for cls in (npm.OnePhonon, tm.OnePhonon):
        model = build(cls, pdb, **EDGE_GRID, gamma_intra=scale, gamma_inter=scale)
        Id = np_map(model.apply_disorder())
        assert np.array_equal(np.isnan(Id), np.isnan(base)), (cls, scale)
        assert np.abs(Id[finite] * scale - base[finite]).max() <= 1e-12 * np.abs(base[finite]).max()
