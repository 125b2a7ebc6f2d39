"""Why on the first screen: the diagnosis in the banner and the summaries, compare's provenance, whole reasons."""
from __future__ import annotations

import json
import re

import numpy as np
import pytest

from parity.commands import cli
from parity.backends.dump import MANIFEST_KEY
from parity.rendering.report import render_report
from parity.running.runner import run_parity
from parity.rendering.terminal import REASON_WIDTH, format_table
from tests._cli import run_cli

SMALL = ((-1, 1, 3),) * 3


@pytest.fixture(scope="module")
def linv_upper():
    return run_parity("synthetic", samplings=SMALL, fault="linv_upper", phases=[2, 3], progress=False)


def test_the_banner_says_why(linv_upper):
    html = render_report(linv_upper)
    banner = html[html.index('id="verdict"'):html.index('id="identity"')]
    assert "stage <code>Linv</code>" in banner
    assert "Why: diagnosis: transpose \u00b7 root cause" in banner
    # and each failing stage's row says what it is
    assert "diagnosis: transpose \u00b7 root cause" in html[html.index('id="phase-2"'):]
    assert "inherited from Linv" in html[html.index('id="phase-3"'):]


def test_the_terminal_summary_says_why(linv_upper):
    text = format_table(linv_upper)
    summary = text[text.index("DIVERGED:"):]
    assert "diagnosis: transpose" in summary and "root cause: Linv" in summary


# ------------------------------------------------------------------ compare: both sides' provenance
@pytest.fixture(scope="module")
def two_environments(tmp_path_factory):
    """A torch dump, and a copy of it whose manifest says it was made elsewhere (NumPy 1.26.4, host 'other')."""
    tmp = tmp_path_factory.mktemp("prov")
    here = tmp / "here.npz"
    assert cli.main(["dump", "--backend", "torch", "--grid=-1,1,2", "--out", str(here), "--no-progress"]) == 0
    with np.load(here, allow_pickle=False) as data:
        arrays = {k: data[k] for k in data.files}
    manifest = json.loads(str(arrays[MANIFEST_KEY]))
    manifest["environment"].update(numpy="1.26.4", hostname="other-host")
    arrays[MANIFEST_KEY] = np.array(json.dumps(manifest))
    there = tmp / "there.npz"
    with open(there, "wb") as handle:
        np.savez(handle, **arrays)
    return there, here


def test_compare_shows_both_provenances_in_the_terminal(capsys, two_environments):
    there, here = two_environments
    code, out, err = run_cli(capsys, "compare", str(there), str(here), "--no-progress")
    assert code == 0, out + err
    lines = out.splitlines()
    numpy_row = next(ln for ln in lines if re.match(r"^\* numpy\s", ln))
    assert "1.26.4" in numpy_row and np.__version__ in numpy_row and numpy_row.endswith("<- differs")
    assert re.search(r"^\* host\s+other-host\s+\S+\s+<- differs$", out, re.M)
    assert re.search(r"^  dtype\s+float64\s+float64$", out, re.M)  # equal rows are not marked
    assert re.search(r"^  backend\s+torch\s+torch$", out, re.M)


def test_compare_shows_both_provenances_in_the_html(capsys, two_environments, tmp_path):
    there, here = two_environments
    html_path = tmp_path / "c.html"
    code, out, err = run_cli(capsys, "compare", str(there), str(here), "--no-progress", "--html", str(html_path))
    assert code == 0, out + err
    html = html_path.read_text()
    section = html[html.index('id="provenance"'):html.index('id="how-to-read"')]
    rows = re.findall(r"<tr( class=\"differs\"[^>]*)?><th>([^<]+?)(?: &#8800;)?</th><td class=\"mono\">([^<]*)</td>"
                      r"<td class=\"mono\">([^<]*)</td></tr>", section)
    table = {label: (bool(differs), a, b) for differs, label, a, b in rows}
    assert table["numpy"] == (True, "1.26.4", np.__version__)
    assert table["host"][0] and table["host"][1] == "other-host"
    assert table["dtype"] == (False, "float64", "float64")


def test_a_run_of_live_backends_has_no_provenance_table(linv_upper):
    assert 'id="provenance"' not in render_report(linv_upper)
    assert "provenance" not in format_table(linv_upper)


# ------------------------------------------------------------------ reasons are never cut
def test_long_reasons_wrap_at_words_under_their_column(linv_upper):
    result = dict(linv_upper)
    reason = ("the candidate (maps-only) does not provide structure_factors: this implementation computes the "
              "diffuse map without an explicit projected structure factor array, so there is nothing to compare "
              "with the reference's (n_q_sample, n_dof) array")
    stages = [dict(s) for s in result["stages"]]
    sf = next(s for s in stages if s["name"] == "structure_factors")
    sf.update(status="not_comparable", message=reason, max_abs=None, max_rel=None, max_rel_elementwise=None)
    result["stages"] = stages
    text = format_table(result)
    lines = text.splitlines()
    i = next(i for i, ln in enumerate(lines) if ln.lstrip().startswith("structure_factors "))
    start = lines[i].index("the candidate")
    block = [lines[i][start:]]
    for ln in lines[i + 1:]:
        if ln[:start].strip():
            break
        block.append(ln[start:])
    assert len(block) > 1 and all(len(b) <= REASON_WIDTH for b in block)
    assert " ".join(block) == reason  # every word whole, in order, nothing dropped
