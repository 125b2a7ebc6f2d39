"""Tolerance tiers: the table, dtype mapping, and overrides from pyproject / CLI."""

from __future__ import annotations

from pathlib import Path

import pytest

from parity.contract.tiers import (
    CLI_SOURCE,
    F32_FLOOR,
    F32_MARGIN,
    F32_MEASURED,
    F32_STAGE_TIERS,
    TIERS,
    Tier,
    _toml_module,
    describe_overrides,
    find_pyproject,
    gather_overrides,
    load_overrides,
    parse_tier_override,
    resolve_tier,
    validate_overrides,
)

BASE_TIERS = ("exact", "tight", "decomposition", "end_to_end", "gradient", "oracle_gemmi")
F32_TIERS = ("tight_f32", "decomposition_f32", "end_to_end_f32", "gradient_f32")


def test_table_has_required_tiers_with_notes():
    for name in BASE_TIERS + F32_TIERS:
        tier = TIERS[name]
        assert tier.name == name
        assert tier.note, f"{name} must say where its number comes from"
        assert tier.rtol >= 0 and tier.atol >= 0


def test_exact_is_bitwise_and_others_are_not():
    assert TIERS["exact"].is_exact
    assert (TIERS["exact"].rtol, TIERS["exact"].atol) == (0.0, 0.0)
    assert not any(TIERS[n].is_exact for n in BASE_TIERS[1:] + F32_TIERS)


def test_f32_counterparts_are_looser():
    # float32 tiers are normwise (rtol 0): their whole allowance is atol * max|expected|.
    for name in F32_TIERS:
        base = TIERS[name.removesuffix("_f32")]
        assert TIERS[name].rtol == 0.0 and TIERS[name].atol > max(base.rtol, base.atol)
    for tier in F32_STAGE_TIERS.values():
        assert tier.rtol == 0.0 and tier.atol >= F32_FLOOR


def test_tier_is_frozen():
    with pytest.raises(AttributeError):
        TIERS["tight"].rtol = 1.0  # type: ignore[misc]


@pytest.mark.parametrize("dtype", ["float32", "complex64", "torch.float32"])
def test_resolve_maps_single_precision(dtype):
    assert resolve_tier("tight", dtype).name == "tight_f32"
    assert resolve_tier("decomposition", dtype).name == "decomposition_f32"
    assert resolve_tier("exact", dtype).name == "exact"
    # No f32 counterpart: the base tier is used as is.
    assert resolve_tier("oracle_gemmi", dtype).name == "oracle_gemmi"


@pytest.mark.parametrize("dtype", ["float64", "complex128", "torch.complex128"])
def test_resolve_double_precision_is_identity(dtype):
    assert resolve_tier("tight", dtype) == TIERS["tight"]


def test_resolve_unknown_name_lists_known_tiers():
    with pytest.raises(KeyError) as err:
        resolve_tier("tigth")
    assert "tigth" in str(err.value) and "decomposition" in str(err.value)


def test_resolve_unknown_dtype():
    with pytest.raises(ValueError, match="int64"):
        resolve_tier("tight", "int64")


def test_resolve_applies_override_of_resolved_name_only():
    overrides = {"tight": {"rtol": 1e-10}, "decomposition_f32": {"atol": 1e-3}}
    tight = resolve_tier("tight", overrides=overrides)
    assert tight.rtol == 1e-10 and tight.atol == TIERS["tight"].atol
    assert "overridden" in tight.note
    assert resolve_tier("tight", "float32", overrides) == TIERS["tight_f32"]
    assert resolve_tier("decomposition", "float32", overrides).atol == 1e-3


def test_resolve_rejects_bad_override():
    with pytest.raises(ValueError, match="rtol"):
        resolve_tier("tight", overrides={"tight": {"rtol": -1.0}})


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "pyproject.toml"
    path.write_text(text)
    return path


def test_load_overrides_reads_tables(tmp_path):
    path = _write(tmp_path, """
[project]
name = "x"
[tool.parity.tiers.decomposition]
rtol = 1e-8
atol = 1e-11
[tool.parity.tiers.end_to_end]
rtol = 2e-9
""")
    assert load_overrides(path) == {"decomposition": {"rtol": 1e-8, "atol": 1e-11},
                                    "end_to_end": {"rtol": 2e-9}}


def test_load_overrides_missing_file_or_table(tmp_path):
    assert load_overrides(tmp_path / "nope.toml") == {}
    assert load_overrides(_write(tmp_path, "[tool.parity]\n")) == {}
    assert load_overrides(_write(tmp_path, "[project]\nname = 'x'\n")) == {}


def test_load_overrides_default_finds_nearest_pyproject(tmp_path, monkeypatch):
    _write(tmp_path, "[tool.parity.tiers.tight]\nrtol = 1e-11\n")
    sub = tmp_path / "a" / "b"
    sub.mkdir(parents=True)
    monkeypatch.chdir(sub)
    assert load_overrides() == {"tight": {"rtol": 1e-11}}


@pytest.mark.parametrize("body, key", [
    ("[tool.parity.tiers.tigth]\nrtol = 1e-9\n", "tool.parity.tiers.tigth"),
    ("[tool.parity.tiers.tight]\nrtol = -1e-9\n", "tool.parity.tiers.tight.rtol"),
    ("[tool.parity.tiers.tight]\natol = 0.0\n", "tool.parity.tiers.tight.atol"),
    ("[tool.parity.tiers.tight]\nrtol = nan\n", "tool.parity.tiers.tight.rtol"),
    ("[tool.parity.tiers.tight]\nrtol = inf\n", "tool.parity.tiers.tight.rtol"),
    ("[tool.parity.tiers.tight]\nrtol = 'small'\n", "tool.parity.tiers.tight.rtol"),
    ("[tool.parity.tiers.tight]\nrtol = true\n", "tool.parity.tiers.tight.rtol"),
    ("[tool.parity.tiers.tight]\nrtool = 1e-9\n", "tool.parity.tiers.tight.rtool"),
    ("[tool.parity.tiers.exact]\nrtol = 1e-9\n", "tool.parity.tiers.exact"),
])
def test_load_overrides_rejects_bad_entries(tmp_path, body, key):
    with pytest.raises(ValueError) as err:
        load_overrides(_write(tmp_path, body))
    assert key in str(err.value)


def test_project_pyproject_ships_no_overrides():
    # The project's own pyproject.toml must not loosen any tier behind the table's back.
    root = Path(__file__).resolve().parents[2] / "pyproject.toml"
    assert root.is_file()
    assert load_overrides(root) == {}


def test_pyproject_overrides_reach_the_resolved_tiers(tmp_path, monkeypatch):
    """Real overrides, found from the working directory, change the tiers the stages get."""
    _write(tmp_path, "[tool.parity.tiers.tight]\nrtol = 3e-12\natol = 4e-14\n"
                     "[tool.parity.tiers.ADP_f32]\natol = 2e-5\n")
    monkeypatch.chdir(tmp_path)
    overrides = load_overrides()
    assert overrides == {"tight": {"rtol": 3e-12, "atol": 4e-14}, "ADP_f32": {"atol": 2e-5}}
    for name, values in overrides.items():  # every override is a known tier, and it takes effect
        assert name in TIERS or name in {t.name for t in F32_STAGE_TIERS.values()}
    tight = resolve_tier("tight", "float64", overrides)
    assert (tight.rtol, tight.atol) == (3e-12, 4e-14) != (TIERS["tight"].rtol, TIERS["tight"].atol)
    adp = resolve_tier("decomposition", "float32", overrides, stage="ADP")
    assert adp.name == "ADP_f32" and adp.atol == 2e-5 != F32_STAGE_TIERS["ADP"].atol
    assert "[overridden]" in tight.note and "[overridden]" in adp.note
    # Unrelated tiers keep the table's numbers.
    assert resolve_tier("decomposition", "float64", overrides) == TIERS["decomposition"]


@pytest.mark.parametrize("text, expected", [
    ("tight=1e-10", ("tight", {"rtol": 1e-10})),
    ("tight=1e-10,1e-13", ("tight", {"rtol": 1e-10, "atol": 1e-13})),
    (" decomposition = 1e-8 , 1e-11 ", ("decomposition", {"rtol": 1e-8, "atol": 1e-11})),
])
def test_parse_tier_override(text, expected):
    assert parse_tier_override(text) == expected


@pytest.mark.parametrize("text", [
    "tight", "=1e-10", "tight=", "tight=abc", "tight=1e-10,1e-13,1", "tight=-1e-10",
    "tight=nan", "tight=1e-10,0", "nosuch=1e-10", "exact=1e-10",
])
def test_parse_tier_override_rejects_malformed(text):
    with pytest.raises(ValueError) as err:
        parse_tier_override(text)
    assert "\n" not in str(err.value)


def test_describe_mentions_numbers():
    assert "bitwise" in TIERS["exact"].describe()
    assert "1e-12" in Tier("t", 1e-12, 1e-14).describe()

def test_float64_tiers_are_at_least_as_strict_as_the_requirements():
    # Issue requirements: direct quantities <= 1e-12, decomposition-derived and Id <= 1e-9,
    # gradients <= 1e-6. The measured tiers must not be looser than that.
    assert max(TIERS["tight"].rtol, TIERS["tight"].atol) <= 1e-12
    for name in ("decomposition", "end_to_end"):
        assert max(TIERS[name].rtol, TIERS[name].atol) <= 1e-9
    assert max(TIERS["gradient"].rtol, TIERS["gradient"].atol) <= 1e-6


# --------------------------------------------------------------------------
# Absurd overrides, unreadable files, and where overrides come from
# --------------------------------------------------------------------------


@pytest.mark.parametrize("value", ["1e300", "1.0", "1", "2.5"])
def test_absurd_tolerance_in_pyproject_is_refused_naming_file_and_key(tmp_path, value):
    path = _write(tmp_path, f"[tool.parity.tiers.tight]\nrtol = {value}\n")
    with pytest.raises(ValueError) as err:
        load_overrides(path)
    text = str(err.value)
    assert str(path) in text and "tool.parity.tiers.tight.rtol" in text and "absurd" in text and "below 1" in text


@pytest.mark.parametrize("text", ["tight=1e300", "tight=1e-12,1", "decomposition=5"])
def test_absurd_tolerance_on_the_command_line_is_refused(text):
    with pytest.raises(ValueError, match="absurd"):
        parse_tier_override(text)


def test_absurd_override_given_directly_is_refused():
    with pytest.raises(ValueError, match="absurd"):
        resolve_tier("tight", overrides={"tight": {"rtol": 1e300}})


def test_unparsable_pyproject_names_the_file(tmp_path):
    path = _write(tmp_path, "[tool.parity.tiers.tight\nrtol = 1e-9\n")
    with pytest.raises(ValueError) as err:
        load_overrides(path)
    assert str(path) in str(err.value) and "not valid TOML" in str(err.value)


def test_gather_overrides_records_sources_and_describes_them(tmp_path):
    path = _write(tmp_path, "[tool.parity.tiers.tight]\nrtol = 3e-12\natol = 4e-14\n")
    active = gather_overrides(["tight=2e-12", "gradient=1e-6,2e-6"], pyproject_path=path)
    assert active.values == {"tight": {"rtol": 2e-12, "atol": 4e-14}, "gradient": {"rtol": 1e-6, "atol": 2e-6}}
    assert active.sources["tight"] == {"rtol": CLI_SOURCE, "atol": str(path)}
    rows = {(r["tier"], r["key"]): r for r in active.rows()}
    assert rows[("tight", "atol")] == {"tier": "tight", "key": "atol", "value": 4e-14,
                                       "table_value": TIERS["tight"].atol, "source": str(path)}
    lines = active.describe()
    assert f"tier tight: atol 4e-14 (table 5e-14) from {path}" in lines
    assert f"tier tight: rtol 2e-12 (table 1e-13) from {CLI_SOURCE}" in lines
    assert len(lines) == 4 and bool(active)
    assert not gather_overrides([], pyproject_path=tmp_path / "none.toml")
    assert gather_overrides([], pyproject_path=path, use_pyproject=False).values == {}


def test_gather_overrides_default_reads_the_nearest_pyproject(tmp_path, monkeypatch):
    path = _write(tmp_path, "[tool.parity.tiers.end_to_end]\natol = 2e-11\n")
    monkeypatch.chdir(tmp_path)
    assert find_pyproject() == path
    active = gather_overrides()
    assert active.describe() == [f"tier end_to_end: atol 2e-11 (table 1e-11) from {path}"]


def test_describe_overrides_of_a_plain_mapping():
    assert describe_overrides({}) == []
    assert describe_overrides({"tight": {"rtol": 1e-12}}, "run options") == [
        "tier tight: rtol 1e-12 (table 1e-13) from run options"]
    assert describe_overrides({"tight": {"rtol": 1e-12}}) == [
        "tier tight: rtol 1e-12 (table 1e-13) from source not recorded"]


def _real_toml():
    """tomllib (3.11+) or, on Python 3.10, the real tomli the project depends on there."""
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib
    return tomllib


def test_toml_reader_falls_back_to_tomli_on_python_310(monkeypatch):
    import sys
    import types

    tomllib = _real_toml()

    fake = types.ModuleType("tomli")
    fake.load, fake.loads, fake.TOMLDecodeError = tomllib.load, tomllib.loads, tomllib.TOMLDecodeError
    monkeypatch.setitem(sys.modules, "tomllib", None)  # as on Python 3.10: no tomllib
    monkeypatch.setitem(sys.modules, "tomli", fake)
    assert _toml_module() is fake
    monkeypatch.setitem(sys.modules, "tomli", None)
    with pytest.raises(ModuleNotFoundError, match="pip install tomli"):
        _toml_module()


def test_toml_fallback_reads_overrides(tmp_path, monkeypatch):
    import sys
    import types

    tomllib = _real_toml()

    fake = types.ModuleType("tomli")
    fake.load, fake.TOMLDecodeError = tomllib.load, tomllib.TOMLDecodeError
    monkeypatch.setitem(sys.modules, "tomllib", None)
    monkeypatch.setitem(sys.modules, "tomli", fake)
    path = _write(tmp_path, "[tool.parity.tiers.tight]\nrtol = 1e-12\n")
    assert load_overrides(path) == {"tight": {"rtol": 1e-12}}


# --------------------------------------------------------------------------
# Size scaling
# --------------------------------------------------------------------------


def test_scaled_raises_atol_to_the_summation_bound():
    eps = 2.0**-52
    tight = TIERS["tight"]
    big = tight.scaled(84_644, eps)
    assert big.atol == pytest.approx(84_644 * eps) and big.rtol == tight.rtol and big.n_terms == 84_644
    assert big.name == "tight" and "scaled for 84644 summed terms" in big.describe()
    small = tight.scaled(100, eps)  # 100 eps = 2.2e-14 < 5e-14: the measured tier stands
    assert small.atol == tight.atol and small.n_terms == 100
    assert tight.scaled(1, eps) is tight
    assert TIERS["exact"].scaled(10**6, eps) is TIERS["exact"]
    oracle = TIERS["oracle_gemmi"].scaled(10**10, eps)
    assert oracle.rtol == 0.0 and oracle.atol == pytest.approx(10**10 * eps)


@pytest.mark.parametrize("n_terms, eps", [(0, 1e-16), (-3, 1e-16), (2.5, 1e-16), (True, 1e-16),
                                          (10, 0.0), (10, 1.0), (10**9, 2.0**-23)])
def test_scaled_rejects_bad_arguments(n_terms, eps):
    with pytest.raises(ValueError):
        TIERS["tight"].scaled(n_terms, eps)


# --------------------------------------------------------------------------
# float32: per-stage tiers from measurement
# --------------------------------------------------------------------------

#: Stages measuring a physical quantity: a 1e-4 relative error in one must fail in float32.
#: Not listed: eigenspaces, Id_cluster0, Id_cluster_last, whose float32 error is set by
#: near-degenerate eigenvalue gaps (eps_32 / gap), see docs/tiers.md.
PHYSICAL = ("hkl_grid", "q_grid", "kvec", "kvec_norm", "xyz", "asu_xyz", "Amat", "M_allatoms", "Mmat",
            "Linv", "form_factors", "structure_factors", "hessian_allatoms", "hessian", "K", "D", "Winv",
            "Kinv", "covar", "ADP", "Id", "Id_data_adp", "Id_qvectors", "grad_gamma_inter",
            "grad_gamma_intra", "qvectors_sample")


def test_every_compared_stage_has_a_float32_tier_of_its_own():
    from parity.stages import STAGES

    compared = {s.name for s in STAGES if s.tier != "exact" and s.kind != "oracle"} | {"qvectors_sample"}
    assert compared <= set(F32_STAGE_TIERS), compared - set(F32_STAGE_TIERS)
    assert set(F32_STAGE_TIERS) == set(F32_MEASURED)
    for stage, tier in F32_STAGE_TIERS.items():
        assert tier.name == stage + "_f32"


def test_float32_tiers_are_the_measurement_times_the_margin():
    for stage, (kind, worst, where) in F32_MEASURED.items():
        tier = F32_STAGE_TIERS[stage]
        want = max(F32_MARGIN * worst, F32_FLOOR)
        assert want <= tier.atol <= 1.1 * want, stage  # rounded up to two digits, never down
        assert where in tier.note and f"{worst:.3g}" in tier.note
    for kind in ("tight", "decomposition", "end_to_end", "gradient"):
        members = [F32_STAGE_TIERS[s].atol for s, (k, _, _) in F32_MEASURED.items() if k == kind]
        assert TIERS[kind + "_f32"].atol == max(members)


@pytest.mark.parametrize("stage", PHYSICAL)
def test_float32_tier_sees_a_1e_minus_4_error_in_a_physical_quantity(stage):
    tier = F32_STAGE_TIERS[stage]
    # An element-wise 1e-4 relative error fails at the largest element iff rtol + atol < 1e-4.
    assert tier.rtol + tier.atol < 1e-4, (stage, tier)


def test_resolve_tier_picks_the_stage_float32_tier():
    assert resolve_tier("decomposition", "float32", stage="ADP") == F32_STAGE_TIERS["ADP"]
    assert resolve_tier("decomposition", "complex64", stage="ADP").name == "ADP_f32"
    assert resolve_tier("decomposition", "float64", stage="ADP") == TIERS["decomposition"]
    assert resolve_tier("exact", "float32", stage="ADP") == TIERS["exact"]
    assert resolve_tier("tight", "float32", stage="no_such_stage") == TIERS["tight_f32"]
    assert resolve_tier("oracle_gemmi", "float32", stage="gemmi_oracle") == TIERS["oracle_gemmi"]
    # Overriding the kind tier does not touch a stage's own tier, and vice versa.
    assert resolve_tier("decomposition", "float32", {"decomposition_f32": {"atol": 0.5}}, stage="ADP") == \
        F32_STAGE_TIERS["ADP"]


def test_pyproject_overrides_reach_a_run(tmp_path, monkeypatch):
    """The overrides found in pyproject.toml are the tiers a run's stages are judged by."""
    try:
        from tests._parity_today import run_parity
    except ImportError:  # pragma: no cover - depends on how pytest set sys.path
        from _parity_today import run_parity

    _write(tmp_path, "[tool.parity.tiers.tight]\nrtol = 3e-12\natol = 4e-14\n")
    monkeypatch.chdir(tmp_path)
    result = run_parity("synthetic", stage_names=["kvec", "Amat", "Linv"], tier_overrides=load_overrides(),
                        progress=False)
    by_name = {s["name"]: s for s in result["stages"]}
    assert (by_name["kvec"]["rtol"], by_name["kvec"]["atol"]) == (3e-12, 4e-14)
    assert (by_name["Amat"]["rtol"], by_name["Amat"]["atol"]) == (3e-12, 4e-14)
    assert by_name["Linv"]["rtol"] == TIERS["decomposition"].rtol  # another tier: untouched


def test_validate_overrides_accepts_stage_tiers_and_refuses_bad_ones():
    assert validate_overrides({"ADP_f32": {"atol": 2e-5}, "tight": {"rtol": 1e-12}}) == {
        "ADP_f32": {"atol": 2e-5}, "tight": {"rtol": 1e-12}}
    for bad in ({"ADP_f64": {"atol": 1e-5}}, {"tight": {"rtol": 2.0}}, {"exact": {"rtol": 1e-3}}):
        with pytest.raises(ValueError):
            validate_overrides(bad)
