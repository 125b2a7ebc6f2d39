"""Stage dumps: written atomically, read without pickle, compared through the same registry and exit codes."""
from __future__ import annotations

import json


from pathlib import Path

import numpy as np
import pytest

from parity.commands import cli
from parity.backends.dump import DUMP_SCHEMA_VERSION, MANIFEST_KEY, DumpBackend, DumpError, read_manifest
from parity.contract.quantities import QUANTITY_NAMES
from tests._cli import run_cli

GRID = "--grid=-2,2,3"
FOREIGN = Path(__file__).resolve().parents[2] / "reports" / "dumps"


@pytest.fixture(scope="module")
def dumps(tmp_path_factory):
    """A float64 dump of the torch backend and one of the NumPy reference, same inputs."""
    tmp = tmp_path_factory.mktemp("dumps")
    paths = {}
    for backend in ("torch", "numpy"):
        paths[backend] = tmp / f"{backend}.npz"
        assert cli.main(["dump", "--backend", backend, GRID, "--out", str(paths[backend]), "--no-progress"]) == 0
    return paths


def _edited(src: Path, dst: Path, edit) -> Path:
    with np.load(src, allow_pickle=False) as data:
        arrays = {k: data[k] for k in data.files}
    edit(arrays)
    with open(dst, "wb") as handle:
        np.savez(handle, **arrays)
    return dst


def test_dump_holds_every_provided_quantity_without_pickle(dumps):
    with np.load(dumps["torch"], allow_pickle=False) as data:
        files = set(data.files)
        manifest = json.loads(str(data[MANIFEST_KEY]))
        assert data["Id"].dtype == np.float64 and data["K"].dtype == np.complex128
        assert data["Id"].shape == (13 ** 3,)
    assert files - {MANIFEST_KEY} <= set(QUANTITY_NAMES)
    assert {"hkl_grid", "Amat", "Linv", "K", "Winv", "V", "covar", "ADP", "Id", "mode_maps", "grad_q"} <= files
    assert manifest["schema"] == "eryx-parity-dump" and manifest["schema_version"] == DUMP_SCHEMA_VERSION
    assert manifest["backend"]["name"] == "torch" and manifest["backend"]["version"]
    spec = manifest["spec"]
    assert spec["samplings"] == [[-2, 2, 3]] * 3 and spec["dtype"] == "float64" and spec["device"] == "cpu"
    assert len(spec["fixture_sha256"]) == 64 and spec["params"]["gnm_cutoff"] == 4.0
    for key in ("numpy", "torch", "gemmi", "python", "hostname"):
        assert manifest["environment"][key], key
    assert manifest["created_at"] and manifest["dtypes"]["K"] == "complex128"
    assert set(manifest["quantities"]) == files - {MANIFEST_KEY}
    assert not list(dumps["torch"].parent.glob(".*.tmp"))


def test_compare_of_two_agreeing_dumps_passes(capsys, dumps, tmp_path):
    code, out, err = run_cli(capsys, "compare", str(dumps["numpy"]), str(dumps["torch"]), "--no-progress",
                             "--json", str(tmp_path / "c.json"), "--html", str(tmp_path / "c.html"))
    assert code == 0, out + err
    assert "PASSED:" in out and "reference dump of numpy" in out
    result = json.loads((tmp_path / "c.json").read_text())
    statuses = {s["name"]: s["status"] for s in result["stages"]}
    assert statuses["Id"] == statuses["eigenspaces"] == statuses["grad_gamma_inter"] == "pass"
    assert result["reference"]["dumped_backend"]["name"] == "numpy"
    assert (tmp_path / "c.html").read_text().lstrip().lower().startswith("<!doctype html")


def test_a_dump_altered_by_one_element_fails_at_that_stage(capsys, dumps, tmp_path):
    def edit(arrays):
        arrays["Amat"][1, 5, 2] *= 1 + 1e-9

    bad = _edited(dumps["torch"], tmp_path / "bad.npz", edit)
    code, out, _ = run_cli(capsys, "compare", str(dumps["numpy"]), str(bad), "--no-progress",
                           "--json", str(tmp_path / "c.json"))
    assert code == 1
    result = json.loads((tmp_path / "c.json").read_text())
    failing = [s for s in result["stages"] if s["status"] != "pass"]
    assert [s["name"] for s in failing] == ["Amat"], [(s["name"], s["message"]) for s in failing]
    assert failing[0]["n_mismatch"] == 1 and failing[0]["worst"]["index"] == [1, 5, 2]


def test_live_candidate_against_a_stored_reference_dump(capsys, dumps):
    code, out, err = run_cli(capsys, "run", "--reference-dump", str(dumps["numpy"]), "--no-progress")
    assert code == 0, out + err
    assert "PASSED:" in out
    # the grid and parameters came from the dump; asking for other ones is refused by name
    code, out, err = run_cli(capsys, "run", "--reference-dump", str(dumps["numpy"]), "--gamma-inter", "2",
                             "--no-progress")
    assert code == 2 and "parameter gamma_inter differs (1.0 vs 2.0)" in err
    code, out, err = run_cli(capsys, "run", "--reference-dump", str(dumps["numpy"]), "--grid=-2,2,2",
                             "--no-progress")
    assert code == 2 and "samplings differ" in err and len(err.strip().splitlines()) == 1


def test_dumps_from_other_inputs_are_refused_naming_the_difference(capsys, dumps, tmp_path):
    other = tmp_path / "other.npz"
    assert cli.main(["dump", "--backend", "numpy", "--grid=-2,2,2", "--out", str(other), "--no-progress"]) == 0
    code, out, err = run_cli(capsys, "compare", str(dumps["numpy"]), str(other), "--no-progress")
    assert code == 2 and "samplings differ" in err and "Phase 1" not in out

    def other_fixture(arrays):
        manifest = json.loads(str(arrays[MANIFEST_KEY]))
        manifest["spec"]["fixture_sha256"] = "0" * 64
        arrays[MANIFEST_KEY] = np.array(json.dumps(manifest))

    forged = _edited(dumps["numpy"], tmp_path / "forged.npz", other_fixture)
    code, _, err = run_cli(capsys, "compare", str(dumps["numpy"]), str(forged), "--no-progress")
    assert code == 2 and "fixture content differs" in err


@pytest.mark.parametrize("damage, fragment", [
    ("truncate", "unreadable or truncated"),
    ("schema", "schema version 99"),
    ("not_a_dump", "not an eryx-parity dump"),
    ("missing", "no such file"),
])
def test_bad_dumps_are_usage_errors_with_one_line(capsys, dumps, tmp_path, damage, fragment):
    path = tmp_path / f"{damage}.npz"
    if damage == "truncate":
        data = dumps["torch"].read_bytes()
        path.write_bytes(data[: len(data) // 2])
    elif damage == "schema":
        def edit(arrays):
            manifest = json.loads(str(arrays[MANIFEST_KEY]))
            manifest["schema_version"] = 99
            arrays[MANIFEST_KEY] = np.array(json.dumps(manifest))
        _edited(dumps["torch"], path, edit)
    elif damage == "not_a_dump":
        np.savez(path, a=np.zeros(3))
    out_json = tmp_path / "never.json"
    code, out, err = run_cli(capsys, "compare", str(dumps["numpy"]), str(path), "--json", str(out_json))
    assert code == 2, out + err
    assert fragment in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert not out_json.exists()
    with pytest.raises(DumpError, match=fragment):
        DumpBackend(path=str(path))


def test_a_failing_dump_writes_nothing(tmp_path, monkeypatch, capsys):
    from parity.backends import dump as dump_module

    original = dump_module.collect

    def interrupted(*args, **kwargs):
        original(*args, **kwargs)
        raise KeyboardInterrupt

    monkeypatch.setattr(dump_module, "collect", interrupted)
    out = tmp_path / "d.npz"
    code = cli.main(["dump", "--backend", "numpy", GRID, "--out", str(out), "--no-progress"])
    assert code == 130 and not out.exists() and not list(tmp_path.iterdir())
    assert "interrupted" in capsys.readouterr().err


def test_quantities_that_raise_are_recorded_not_fatal(tmp_path, capsys):
    out = tmp_path / "broken.npz"
    code = cli.main(["dump", "--backend", "tests._backends:RaisesInputErrorOnMaps", GRID, "--out", str(out),
                     "--no-progress"])
    assert code == 1  # written, but the backend raised: a divergence to look at
    manifest = read_manifest(out)
    assert "Id" in manifest["errors"] and "the candidate's own check" in manifest["errors"]["Id"]["message"]
    assert "Traceback" in manifest["errors"]["Id"]["traceback"]
    code, stdout, _ = run_cli(capsys, "run", "--reference-dump", str(out), "--stages", "Amat,Id", "--no-progress")
    # the reference dump's error is reported on the stage, never as a pass
    assert code == 1 and "Id" in stdout and "ERROR" in stdout


@pytest.mark.skipif(not list(FOREIGN.glob("*.npz")), reason="no dump from another environment in reports/dumps")
def test_a_dump_from_another_environment_compares(capsys, tmp_path):
    """A NumPy-reference dump made in a second virtualenv (another NumPy and SciPy) against this one's."""
    (foreign,) = sorted(FOREIGN.glob("*.npz"))[:1]
    manifest = read_manifest(foreign)
    import scipy

    assert (manifest["environment"]["numpy"], manifest["environment"]["scipy"]) != (np.__version__, scipy.__version__)
    code, out, err = run_cli(capsys, "run", "--reference-dump", str(foreign), "--candidate", "numpy",
                             "--no-progress", "--json", str(tmp_path / "r.json"))
    assert code == 0, out + err
    result = json.loads((tmp_path / "r.json").read_text())
    assert result["reference"]["environment"]["numpy"] == manifest["environment"]["numpy"]



