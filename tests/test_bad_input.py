"""Bad input: every mistake a user can make fails fast with an EryxInputError that
names the offending parameter (both backends where the parameter exists)."""
from __future__ import annotations

import math
import os
import time

import numpy as np
import pytest
import torch

from eryx import models as npm
from eryx import models_torch as tm
from eryx.errors import EryxInputError, MemoryBudgetError, StructureError, format_bytes

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
    """Run call(); it must raise `cls` (an EryxInputError) whose message holds every fragment."""
    assert issubclass(cls, EryxInputError)
    start = time.perf_counter()
    with pytest.raises(cls) as info:
        call()
    elapsed = time.perf_counter() - start
    message = str(info.value)
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in error message {message!r}"
    assert elapsed < 5, f"the error took {elapsed:.1f} s: checks must run before heavy work"
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
