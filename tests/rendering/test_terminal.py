"""What a run prints (``parity.rendering.terminal``): the phase table, wrapped reasons, the summary.

The expected lines are written by hand from the documented output: the README's real run
(its header and rows are quoted verbatim below), docs/bisection.md ("ROOT CAUSE: ..." /
"inherited from K: ..." in the table; "diagnosis: ..." and "root cause(s): ..." in the
summary; reasons wrap at word boundaries under their column, never cut).
"""
from __future__ import annotations

import pytest

from parity.rendering.terminal import REASON_WIDTH, format_summary, format_table, stage_reason, wrap_reason

#: The table's column header, as the README's real run prints it.
HEADER = ("  stage              tier            status            max abs  normwise  elemwise  "
          "worst location / diagnosis")
#: Characters before the last column with an 18-character stage name: 2 + 18 + 1 + 15 + 1 + 15 + 1
#: + 9 + 1 + 9 + 1 + 9 + 2 (indent, stage, tier, status, three numbers, their separators).
REASON_COLUMN = 84

ROOT = {"verdict": "root_cause", "text": "root cause", "basis": "input graph"}
INHERITED = {"verdict": "inherited", "inherited_from": ["K"], "text": "inherited from K", "basis": "input graph"}


def _stage(name, phase, tier="tight", status="pass", max_abs=0.0, max_rel=0.0, elementwise=0.0,
           location=None, **extra):
    stage = {"name": name, "phase": phase, "tier": tier, "kind": "array", "status": status,
             "max_abs": max_abs, "max_rel": max_rel, "max_rel_elementwise": elementwise,
             "worst": {"location": location} if location else None, "message": f"{name}: ok"}
    stage.update(extra)
    return stage


def _result(stages, passed=True, first_failure=None, **extra):
    result = {"fixture": "5zck_p1", "device": "cpu", "device_name": "CPU (x86_64, 2 threads)", "dtype": "float64",
              "grid": {"hsampling": [-2, 2, 2], "ksampling": [-2, 2, 2], "lsampling": [-2, 2, 3]},
              "passed": passed, "first_failure": first_failure, "fault": None,
              "n_compared": 558476, "duration_s": 13.24, "stages": stages}
    result.update(extra)
    return result


# ------------------------------------------------------------------ the phase table
def test_header_and_rows_are_laid_out_as_in_the_readme():
    stages = [
        _stage("hkl_grid", 1, "exact"),
        _stage("d_spacing", 1, max_abs=1.42e-14, max_rel=1.18e-16, elementwise=2.72e-16, location="index (0, 0)"),
        _stage("dtype_audit", 1, "exact", max_abs=None, max_rel=None, elementwise=None),
        _stage("Id", 4, "end_to_end", max_abs=1.34e-11, max_rel=4.11e-15, elementwise=1.40e-14,
               location="(h,k,l)=(0,0,-0.333333)"),
    ]
    lines = format_table(_result(stages)).splitlines()
    assert lines[0] == ("parity 5zck_p1  grid [-2, 2, 2] [-2, 2, 2] [-2, 2, 3]  device cpu "
                        "(CPU (x86_64, 2 threads))  dtype float64")
    assert lines[1:] == [
        "",
        "Phase 1: grid and precision",
        HEADER,
        "  hkl_grid           exact           pass             0.00e+00  0.00e+00  0.00e+00  ",
        "  d_spacing          tight           pass             1.42e-14  1.18e-16  2.72e-16  index (0, 0)",
        "  dtype_audit        exact           pass                    -         -         -  ",
        "",  # phases with no stage (2, 3) get no heading
        "Phase 4: end-to-end intensity",
        HEADER,
        "  Id                 end_to_end      pass             1.34e-11  4.11e-15  1.40e-14  (h,k,l)=(0,0,-0.333333)",
        "",
        "PASSED: 4 of 4 stages agree; 558,476 elements compared (13.2 s)",
    ]


def test_a_pass_with_no_error_names_no_location():
    stage = _stage("q_grid", 1, max_abs=0.0, location="index (3, 1)")
    row = next(ln for ln in format_table(_result([stage])).splitlines() if ln.startswith("  q_grid "))
    assert row == "  q_grid             tight           pass             0.00e+00  0.00e+00  0.00e+00  "


def test_stages_that_did_not_pass_show_status_cause_and_diagnosis():
    stages = [
        _stage("K", 3, status="fail", max_abs=4.09e-3, max_rel=1.02e-3, elementwise=3.74,
               location="BZ (dh,dk,dl)=(1,0,0)", cause=ROOT, details={"diagnosis_phrase": "transpose"}),
        _stage("Kinv", 3, "decomposition", status="fail", max_abs=2.5e-2, max_rel=3.0e-3, elementwise=None,
               location="BZ (dh,dk,dl)=(0,1,1)", cause=INHERITED),
        _stage("ADP", 3, "decomposition", status="not_comparable", max_abs=None, max_rel=None, elementwise=None,
               message="ADP: shapes differ (expected (8,), actual (9,))\nsecond line not shown"),
        _stage("covar", 3, "decomposition", status="error", max_abs=None, max_rel=None, elementwise=None,
               message="RuntimeError: singular matrix"),
    ]
    lines = format_table(_result(stages, passed=False, first_failure="K")).splitlines()
    rows = lines[lines.index(HEADER) + 1:lines.index(HEADER) + 5]
    assert rows == [
        "  K                  tight           FAIL             4.09e-03  1.02e-03  3.74e+00  "
        "ROOT CAUSE: BZ (dh,dk,dl)=(1,0,0)  [transpose]",
        "  Kinv               decomposition   FAIL             2.50e-02  3.00e-03         -  "
        "inherited from K: BZ (dh,dk,dl)=(0,1,1)",
        "  ADP                decomposition   NOT_COMPARABLE          -         -         -  "
        "ADP: shapes differ (expected (8,), actual (9,))",
        "  covar              decomposition   ERROR                   -         -         -  "
        "RuntimeError: singular matrix",
    ]


def test_a_failed_construction_is_listed_apart_from_the_phases():
    build = {"name": "construction:candidate", "phase": 3, "kind": "construction", "status": "error",
             "message": "step contacts raised\nTraceback ..."}
    stages = [build, _stage("hkl_grid", 1, "exact")]
    lines = format_table(_result(stages, passed=False, first_failure="construction:candidate")).splitlines()
    at = lines.index("Construction")
    assert lines[at + 1] == "  construction:candidate             ERROR (phase 3)  step contacts raised"
    assert lines[at + 3] == "Phase 1: grid and precision"  # the construction record is in no phase table
    assert not any(ln.startswith("  construction:candidate ") for ln in lines[at + 3:])


def test_tier_overrides_are_printed_in_the_header_with_their_source():
    rows = [{"tier": "tight", "key": "rtol", "value": 1e-11, "table_value": 1e-12, "source": "--tier"}]
    lines = format_table(_result([_stage("hkl_grid", 1)], tier_overrides=rows)).splitlines()
    assert "tier override: tight.rtol = 1e-11 (table 1e-12) from --tier" in lines[:3]


# ------------------------------------------------------------------ reasons wrap at word boundaries
def test_wrap_reason_breaks_between_words_and_indents_continuations():
    assert wrap_reason("aaa bbb ccc", 4, width=7) == "aaa bbb\n    ccc"
    assert wrap_reason("short", 10) == "short"
    assert wrap_reason("", 10) == ""


def test_wrap_reason_never_cuts_a_word_or_a_hyphenated_name():
    assert wrap_reason("hessian_allatoms-torch x", 2, width=5) == "hessian_allatoms-torch\n  x"
    assert wrap_reason("ab-cd ef", 2, width=4) == "ab-cd\n  ef"


def test_long_reason_in_the_table_continues_under_its_column():
    words = [f"word{i:02d}" for i in range(40)]  # 40 words of 6 characters: 279 characters
    reason = " ".join(words)
    stage = _stage("structure_factors", 2, status="not_comparable", max_abs=None, max_rel=None,
                   elementwise=None, message=reason)
    lines = format_table(_result([stage], passed=False, first_failure=stage["name"])).splitlines()
    first = next(i for i, ln in enumerate(lines) if ln.startswith("  structure_factors "))
    assert lines[first].index("word00") == REASON_COLUMN
    block = [lines[first][REASON_COLUMN:]]
    for ln in lines[first + 1:]:
        if not ln.startswith(" " * REASON_COLUMN):
            break
        assert ln[REASON_COLUMN] != " "  # exactly under the column, not further right
        block.append(ln[REASON_COLUMN:])
    # 72 columns hold ten 6-letter words and their nine spaces (69) but not eleven (76)
    assert [len(piece.split()) for piece in block] == [10, 10, 10, 10]
    assert all(len(piece) <= REASON_WIDTH for piece in block)
    assert " ".join(block) == reason


def test_a_longer_stage_name_moves_the_continuation_column_with_it():
    reason = " ".join(["lorem"] * 30)
    stage = _stage("a_stage_name_of_25_chars_", 2, status="error", max_abs=None, max_rel=None,
                   elementwise=None, message=reason)
    lines = format_table(_result([stage], passed=False, first_failure=stage["name"])).splitlines()
    first = next(i for i, ln in enumerate(lines) if ln.startswith("  a_stage_name_of_25_chars_ "))
    column = REASON_COLUMN + (25 - 18)
    assert lines[first].index("lorem") == column
    assert lines[first + 1].index("lorem") == column


# ------------------------------------------------------------------ what a stage says
@pytest.mark.parametrize("stage, expected", [
    (_stage("a", 1), ""),
    (_stage("a", 1, status="fail", max_abs=1.0, location="index (2,)"), "index (2,)"),
    (_stage("a", 1, status="fail", max_abs=None, location="index (2,)"), ""),
    (_stage("a", 1, status="fail", max_abs=1.0, location="index (2,)", details={"diagnosis_phrase": "sign flip"}),
     "index (2,)  [sign flip]"),
    (_stage("a", 1, status="error", message="\n  ValueError: bad\nmore"), "ValueError: bad"),
    (_stage("a", 1, status="error", message="ValueError: bad", cause=ROOT), "ROOT CAUSE: ValueError: bad"),
    (_stage("a", 1, status="fail", max_abs=None, cause=INHERITED), "inherited from K"),
])
def test_stage_reason(stage, expected):
    assert stage_reason(stage) == expected


# ------------------------------------------------------------------ the summary line
def test_passed_summary():
    stages = [_stage("a", 1), _stage("b", 2), _stage("c", 3)]
    assert format_summary(_result(stages)) == "PASSED: 3 of 3 stages agree; 558,476 elements compared (13.2 s)"


def test_passed_summary_counts_what_could_not_be_compared():
    stages = [_stage("a", 1), _stage("b", 2, status="not_comparable"), _stage("c", 3)]
    text = format_summary(_result(stages, n_compared=10, duration_s=0.96))
    assert text == "PASSED: 2 of 3 stages agree, 1 not comparable; 10 elements compared (1.0 s)"


def test_incomplete_summary_names_the_map_stages_that_compared_nothing():
    stages = [_stage("a", 1), _stage("Id", 4)]
    text = format_summary(_result(stages, verdict="incomplete", incomplete=["Id", "Id_cluster0"], n_compared=0,
                                  duration_s=0.5))
    assert text == ("INCOMPLETE: no divergence, but map stage(s) Id, Id_cluster0 compared nothing; "
                    "2 of 2 stages agree; 0 elements compared (0.5 s)")


def test_diverged_summary_names_the_first_failure_its_diagnosis_and_root_cause():
    stages = [
        _stage("hkl_grid", 1),
        _stage("K", 3, status="fail", cause=ROOT, details={"diagnosis_phrase": "transpose"},
               message="K: 12 of 192 elements outside tight\n  worst at BZ (1,0,0)"),
        _stage("Kinv", 3, status="fail", cause=INHERITED),
        _stage("Id", 4, status="error", message="RuntimeError: boom"),
    ]
    text = format_summary(_result(stages, passed=False, first_failure="K", n_compared=1000, duration_s=2.0))
    assert text.splitlines() == [
        "DIVERGED: first failure K (phase 3); 2 failed, 1 errors of 4 stages; 1,000 elements compared (2.0 s)",
        "  K: 12 of 192 elements outside tight",
        "  diagnosis: transpose",
        "  root cause: K",
    ]


def test_several_root_causes_are_independent_and_an_inherited_first_failure_says_from_where():
    from_kvec = {"verdict": "inherited", "inherited_from": ["kvec"], "text": "inherited from kvec"}
    stages = [
        _stage("kvec", 1, status="fail", cause=ROOT),
        _stage("K", 3, status="fail", cause=from_kvec),
        _stage("Linv", 2, status="fail", cause=ROOT),
    ]
    lines = format_summary(_result(stages, passed=False, first_failure="K")).splitlines()
    assert lines[-1] == "  root causes: kvec, Linv (independent); K is inherited from kvec"


def test_diverged_summary_wraps_a_long_first_message_at_110_columns():
    message = " ".join(["segment"] * 40)  # 319 characters
    stages = [_stage("K", 3, status="fail", message=message)]
    lines = format_summary(_result(stages, passed=False, first_failure="K")).splitlines()
    pieces = lines[1:]
    assert all(ln.startswith("  ") and not ln.startswith("   ") for ln in pieces)
    # 110 columns hold thirteen "segment"s (13 * 8 - 1 = 103) but not fourteen (111)
    assert [len(ln.split()) for ln in pieces] == [13, 13, 13, 1]
    assert " ".join(ln.strip() for ln in pieces) == message


def test_notes_follow_the_verdict():
    text = format_summary(_result([_stage("a", 1)], notes=["gradients skipped: no torch"]))
    assert text.splitlines()[-1] == "NOTE: gradients skipped: no torch"
