"""``parity reduce``: ddmin, the moves' validity, the predicate (same stage + signature), budget, refusal, CLI."""
from __future__ import annotations

import json
import random
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as hst

from eryx.errors import EryxInputError
from eryx.fixtures import resolve_fixture
from eryx.structure import load_crystal
from eryx.validation import check_sampling
from parity.commands import cli
from parity.reduce import (INVALID, OTHER, REPRODUCES, Case, NothingToReduce, Oracle, ddmin, is_one_minimal,
                           reduce_case, signature_key)
from parity.reduce.crystal import read_atoms, to_pdb
from parity.reduce.ddmin import split
from parity.reduce.moves import (keep_groups, oversampling_candidates, p1_candidate, param_candidates,
                                 range_candidates, simple_value_candidates, with_elements_kept)
from parity.running.runner import make_run
from parity.contract.spec import DEFAULT_PARAMS
from parity.stages import STAGES

GRID = ((-1, 1, 3), (-1, 1, 2), (-1, 1, 2))
POINT = ((0, 0, 1),) * 3


@pytest.fixture(autouse=True)
def _isolated_cwd(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)


@pytest.fixture(scope="module")
def synthetic_case() -> Case:
    return Case.make(read_atoms(str(resolve_fixture("synthetic"))), GRID, {})


def _oracle(fault, tmp_path, stages=STAGES, **kw):
    return Oracle({"fault": fault, **kw}, stages, workdir=tmp_path)


# ------------------------------------------------------------------ ddmin
def test_split_covers_in_order():
    assert split(list(range(7)), 3) == [[0, 1, 2], [3, 4], [5, 6]]
    assert split([1, 2], 5) == [[1], [2]]


def test_ddmin_finds_the_needed_pair_and_is_one_minimal():
    calls = []

    def test(xs):
        calls.append(list(xs))
        return 3 in xs and 17 in xs
    found = ddmin(list(range(40)), test)
    assert found.items == [3, 17] and found.minimal
    assert [] not in calls
    assert len(calls) == len({tuple(c) for c in calls}) == found.n_tests, "a sub-list was tested twice"
    assert is_one_minimal(found.items, test)


@settings(max_examples=60, deadline=None)
@given(n=hst.integers(1, 40), need=hst.sets(hst.integers(0, 39), max_size=5), k=hst.integers(1, 3))
def test_ddmin_is_one_minimal_on_random_monotone_and_threshold_predicates(n, need, k):
    need = {x for x in need if x < n}

    def contains(xs):
        return need <= set(xs)
    res = ddmin(list(range(n)), contains)
    assert res.minimal and contains(res.items) and is_one_minimal(res.items, contains)
    if need:
        assert set(res.items) == need

    # Not monotone: at least k even numbers (many 1-minimal answers; any one is fine).
    def evens(xs):
        return sum(1 for x in xs if x % 2 == 0) >= k
    if evens(list(range(n))):
        r = ddmin(list(range(n)), evens)
        assert evens(r.items) and is_one_minimal(r.items, evens) and len(r.items) == k


def test_ddmin_is_one_minimal_on_a_non_monotone_predicate():
    # True on sets of size exactly 3 holding 5, or exactly {1, 2}: ddmin ends 1-minimal.
    def odd(xs):
        return (len(xs) == 3 and 5 in xs) or set(xs) == {1, 2}
    rng = random.Random(0)
    for _ in range(20):
        items = rng.sample(range(30), 12) + [1, 2]
        res = ddmin(items, lambda xs: odd(xs) or len(xs) == len(items))
        assert is_one_minimal(res.items, lambda xs: odd(xs) or len(xs) == len(items))


def test_ddmin_stops_when_told_with_a_passing_best_so_far():
    n_calls = 0

    def test(xs):
        nonlocal n_calls
        n_calls += 1
        return 7 in xs
    res = ddmin(list(range(64)), test, should_stop=lambda: n_calls >= 3)
    assert not res.minimal and 7 in res.items and n_calls == 3 and len(res.items) < 64


# ------------------------------------------------------------------ moves: pure candidates
def test_grid_candidates_are_valid_and_strictly_smaller():
    for s in [(-10, 10, 2), (-6, 6, 3), (0, 4, 1), (-3, 1, 5), (2, 2, 3)]:
        for c in range_candidates(s):
            check_sampling(c, "h")
            assert c[2] == s[2] and c[1] - c[0] < s[1] - s[0]
        assert [c[2] for c in oversampling_candidates(s)] == list(range(1, s[2]))
    assert range_candidates((-10, 10, 2))[0] == (0, 0, 2)  # the largest move first


def test_param_candidates_move_towards_defaults_and_fewer_contacts_only():
    params = {**DEFAULT_PARAMS, "gamma_intra": 3.0, "res_limit": 2.0, "gnm_cutoff": 5.0}
    got = dict(param_candidates(params))
    assert any(p["gamma_intra"] == 1.0 for p in got.values()) and any(p["res_limit"] == 0.0 for p in got.values())
    assert sorted(p["gnm_cutoff"] for p in got.values() if p["gnm_cutoff"] != 5.0) == [2.0, 3.0, 4.0]
    # From the defaults, only smaller cutoffs: no move can undo another (no cycles).
    assert all(p["gnm_cutoff"] < 4.0 for _, p in param_candidates(DEFAULT_PARAMS))


# ------------------------------------------------------------------ moves: the reference accepts them
def _reference_accepts(case: Case, tmp_path: Path) -> None:
    path = tmp_path / f"{case.key()[:12]}.pdb"
    path.write_text(case.pdb_text())
    make_run(str(path), samplings=case.samplings, params=case.param_dict, candidate="numpy")


def test_written_structure_reads_back_identical(synthetic_case, tmp_path):
    path = tmp_path / "rt.pdb"
    path.write_text(to_pdb(synthetic_case.atoms))
    a, b = load_crystal(resolve_fixture("synthetic")), load_crystal(path)
    for name in ("xyz", "asu_xyz", "adp", "masses", "ff_a", "ff_b", "ff_c", "cell", "transformations", "sym_ops"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)


def test_every_move_gives_input_the_reference_accepts(synthetic_case, tmp_path):
    case = replace(synthetic_case, samplings=POINT)
    atoms = case.atoms
    residues = atoms.groups("residue")
    xyz = load_crystal(resolve_fixture("synthetic")).xyz
    moved = {
        "residues": keep_groups(atoms, residues[:1]),
        "atoms": atoms.subset([0, 1, 2]),
        "p1": p1_candidate(atoms, xyz),
        "elements": with_elements_kept(atoms, []),
        **{label: a for label, a in simple_value_candidates(atoms)},
    }
    for label, new in moved.items():
        _reference_accepts(case.with_atoms(new), tmp_path)
    p1 = moved["p1"]
    assert p1.n_asu == 1 and p1.space_group == "P 1" and not p1.symmetry_remarks
    np.testing.assert_allclose(p1.xyz, xyz.reshape(-1, 3), atol=5e-4)  # PDB columns: 3 decimals
    assert set(moved["elements"].element) == {"C"}
    for s in range_candidates(GRID[0]) + oversampling_candidates(GRID[0]):
        _reference_accepts(replace(case, samplings=(s,) + GRID[1:]), tmp_path)


def test_an_input_the_reference_refuses_is_invalid_never_reproducing(synthetic_case, tmp_path):
    oracle = _oracle("sulphur_mass", tmp_path)
    case = replace(synthetic_case, samplings=POINT)
    oracle.establish(case)
    for bad in (case.with_atoms(case.atoms.subset([0, 1])),      # two atoms: a line, singular rigid body
                case.with_atoms(case.atoms.subset([5]))):
        with pytest.raises(EryxInputError):
            _reference_accepts(bad, tmp_path)
        out = oracle.evaluate(bad)
        assert out.verdict == INVALID and "refuses" in out.reason
    # Built, but every map refused: three atoms, no contact between ASUs (ADP scale undefined).
    s_atom = int(np.flatnonzero(case.atoms.element == "S")[0])
    no_maps = replace(case.with_atoms(case.atoms.subset([s_atom - 2, s_atom - 1, s_atom])),
                      samplings=((0, 0, 1), (0, 0, 1), (0, 1, 2)))
    _reference_accepts(no_maps, tmp_path)
    out = oracle.evaluate(no_maps)
    assert out.verdict == INVALID and "ADP scale is undefined" in out.reason
    # A grid of Bragg points only: every map stage would compare nothing.
    out = oracle.evaluate(case.with_atoms(case.atoms.subset([0, 1, 2, 3])))
    assert out.verdict == INVALID and "Bragg point" in out.reason
    phases12 = _oracle("sulphur_mass", tmp_path, [s for s in STAGES if s.phase <= 2])
    phases12.establish(case)
    assert phases12.evaluate(no_maps).verdict == REPRODUCES  # maps not compared: valid there


# ------------------------------------------------------------------ the predicate
def test_a_move_that_changes_the_signature_is_rejected(synthetic_case, tmp_path):
    case = replace(synthetic_case, samplings=POINT)
    atoms = case.atoms
    s_atom = int(np.flatnonzero(atoms.element == "S")[0])
    mixed = case.with_atoms(atoms.subset([s_atom - 2, s_atom - 1, s_atom]))     # C, C, S: some rows differ
    all_s = mixed.with_atoms(replace(mixed.atoms, element=np.array(["S"] * 3, dtype=object)))  # every row
    # Phases 1-2 only: on 3 atoms sampled at k = 0 the maps would be refused (undefined ADP scale).
    phases12 = [s for s in STAGES if s.phase <= 2]
    strict, loose = _oracle("sulphur_mass", tmp_path / "a", phases12), _oracle("sulphur_mass", tmp_path / "b", phases12)
    for o in (strict, loose):
        o.workdir.mkdir()
    target = strict.establish(case)
    assert target.stage == "M_allatoms" and target.signature.startswith("partial along atom row")
    assert strict.evaluate(mixed).verdict == REPRODUCES
    out = strict.evaluate(all_s)
    assert out.verdict == OTHER and out.first_failure == "M_allatoms" and "signature changed" in out.reason
    assert out.signature != target.signature
    loose.establish(case, keep_stage=True)
    assert loose.evaluate(all_s).verdict == REPRODUCES
    # --keep TEXT: the stage with any signature containing TEXT (here: partial along atom row).
    named = _oracle("sulphur_mass", tmp_path / "c", phases12)
    named.workdir.mkdir()
    assert named.establish(case, keep="ALONG ATOM ROW").contains == "ALONG ATOM ROW"
    assert named.evaluate(mixed).verdict == REPRODUCES
    assert named.target.matches(out.signature) == ("along atom row" in out.signature)
    other = _oracle("sulphur_mass", tmp_path / "d", phases12)
    other.workdir.mkdir()
    with pytest.raises(NothingToReduce, match="--keep 'transpose'.*M_allatoms shows"):
        other.establish(case, keep="transpose")


def test_signature_key_ignores_sizes_but_not_factors():
    def rec(kind, phrase, **params):
        return {"status": "fail", "diagnosis": [{"signature": kind, "phrase": phrase, "params": params,
                                                 "explains": True}]}
    assert signature_key(rec("partial", "only atom 3 differ", per_axis=[["atom", [3]]])) == \
        signature_key(rec("partial", "only atom 7-9 differ", per_axis=[["atom", [7, 8, 9]]]))
    assert signature_key(rec("constant_factor", "x 1/3")) != signature_key(rec("constant_factor", "x 1/2"))
    assert signature_key({"status": "fail", "diagnosis": []}) == "no simple signature"


def test_a_correct_candidate_is_refused_up_front(synthetic_case, tmp_path):
    with pytest.raises(NothingToReduce, match="nothing to reduce: the run agrees"):
        _oracle(None, tmp_path).establish(replace(synthetic_case, samplings=POINT))


def test_budget_stops_with_the_best_so_far(synthetic_case, tmp_path):
    oracle = _oracle("linv_upper", tmp_path)
    red = reduce_case(synthetic_case, oracle, budget_s=0.0)
    assert red.budget_reached and red.final.key() == synthetic_case.key() and red.steps == []
    oracle2 = _oracle("linv_upper", tmp_path)
    red = reduce_case(synthetic_case, oracle2, budget_s=2.0)
    assert red.budget_reached or red.final.key() != synthetic_case.key()
    # Whatever was kept reproduces: every accepted step was judged REPRODUCES.
    assert oracle2.evaluate(red.final).verdict == REPRODUCES


# ------------------------------------------------------------------ the command
def _cli(capsys, *argv):
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_refuses_a_run_that_agrees(capsys, tmp_path):
    code, out, err = _cli(capsys, "reduce", "--grid=0,0,1", "--out", str(tmp_path / "r"), "--no-progress")
    assert code == 2
    assert err.strip() == "parity: error: nothing to reduce: the run agrees"
    assert not (tmp_path / "r").exists() or not any((tmp_path / "r").iterdir())


def test_cli_refuses_bad_options(capsys, tmp_path):
    (tmp_path / "file").write_text("x")
    code, _, err = _cli(capsys, "reduce", "--fault", "linv_upper", "--out", str(tmp_path / "file"))
    assert code == 2 and "not a folder" in err
    code, _, err = _cli(capsys, "reduce", "--fault", "linv_upper", "--budget", "-1", "--out", str(tmp_path / "o"))
    assert code == 2 and "--budget" in err
    code, _, err = _cli(capsys, "reduce", "--fault", "linv_upper", "--keep", "x", "--keep-stage",
                        "--out", str(tmp_path / "o"))
    assert code == 2 and "not allowed with" in err
    code, _, err = _cli(capsys, "reduce", "--fault", "linv_upper", "--phases", "1,2", "--keep", "conjugate",
                        "--no-progress", "--out", str(tmp_path / "k"))
    assert code == 2 and "--keep 'conjugate'" in err and "Linv shows [transpose" in err and not (tmp_path / "k").exists()


def test_cli_budget_zero_writes_the_initial_case_as_best_so_far(capsys, tmp_path):
    out_dir = tmp_path / "b"
    code, out, err = _cli(capsys, "reduce", "--fault", "linv_upper", "--phases", "1,2", "--grid=-1,1,2",
                          "--budget", "0", "--out", str(out_dir), "--no-progress")
    assert code == 0, err
    assert "budget reached: best so far" in out
    assert load_crystal(out_dir / "reduced.pdb").n_at == 14
    result = json.loads((out_dir / "reduced.json").read_text())
    assert result["first_failure"] == "Linv" and result["reduce"]["budget_reached"]
    assert result["reduce"]["steps"] == [] and "--grid=-1,1,2;-1,1,2;-1,1,2" in (out_dir / "command.txt").read_text()


def test_reduce_end_to_end_fast_phases_1_2(capsys, tmp_path, monkeypatch):
    """The fast sibling of the end-to-end test: phases 1-2, command.txt re-run in-process."""
    import shlex

    out_dir = tmp_path / "red"
    code, out, err = _cli(capsys, "reduce", "--fault", "linv_upper", "--phases", "1,2", "--grid=-1,1,2",
                          "--out", str(out_dir), "--no-progress")
    assert code == 0, err
    result = json.loads((out_dir / "reduced.json").read_text())
    assert result["first_failure"] == "Linv" and result["reduce"]["target"]["signature"] == "transpose: transpose"
    assert result["reduce"]["reduced_signature"] == "transpose: transpose"
    assert result["reduce"]["final"]["cell_atoms"] <= 4 and result["reduce"]["final"]["n_q"] == 1
    command = (out_dir / "command.txt").read_text().splitlines()[-1]
    argv = shlex.split(command)
    assert argv[:2] == ["parity", "run"] and "--phases" in argv
    monkeypatch.chdir(out_dir)
    (out_dir / "reduced.json").unlink()
    assert cli.main(argv[1:]) == 1
    again = json.loads((out_dir / "reduced.json").read_text())
    assert again["first_failure"] == "Linv"
    assert signature_key(next(s for s in again["stages"] if s["name"] == "Linv")) == "transpose: transpose"


@pytest.mark.slow
def test_reduce_end_to_end_sulphur_mass(capsys, tmp_path):
    out_dir = tmp_path / "red"
    code, out, err = _cli(capsys, "reduce", "--fault", "sulphur_mass", "--grid=-1,1,3", "--out", str(out_dir))
    assert code == 0, err
    assert {p.name for p in out_dir.iterdir()} >= {"reduced.pdb", "command.txt", "reduced.json", "reduced.html",
                                                   "reduction.log"}
    assert "reduce: step" in err  # progress
    result = json.loads((out_dir / "reduced.json").read_text())
    assert result["first_failure"] == "M_allatoms"
    assert result["reduce"]["reduced_signature"] == result["reduce"]["target"]["signature"]
    # The whole reduced run is one the reference accepts: no stage refused, none raised.
    assert not [(s["name"], s["message"]) for s in result["stages"] if s["status"] == "error"
                or "refuses" in (s.get("message") or "")]
    crystal = load_crystal(out_dir / "reduced.pdb")   # the reference reads it
    assert crystal.n_asu * crystal.n_at <= 4 and "S" in crystal.elements
    assert result["reduce"]["final"]["n_q"] <= 27
    log = (out_dir / "reduction.log").read_text()
    assert "reproduces" in log and "# final:" in log
    # command.txt reproduces it with one parity run, from the folder.
    (out_dir / "reduced.json").unlink()
    proc = subprocess.run(["bash", "command.txt"], cwd=out_dir, capture_output=True, text=True, timeout=300,
                          env={**__import__("os").environ, "PATH": f"{Path(sys.executable).parent}:"
                               + __import__("os").environ.get("PATH", "")})
    assert proc.returncode == 1, proc.stderr
    again = json.loads((out_dir / "reduced.json").read_text())
    assert again["first_failure"] == "M_allatoms"
    first = next(s for s in again["stages"] if s["name"] == "M_allatoms")
    assert signature_key(first) == result["reduce"]["target"]["signature"]
