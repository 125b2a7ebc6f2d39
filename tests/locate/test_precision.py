"""Precision comparisons: operations ranked by error growth, the amplifiers' factor, and
``PromoteOps`` (promotion cast back, or kept in float64 downstream).

The computations are small and their float32 errors known from arithmetic: adding 1e3 to
values in [0.1, 1] and subtracting it again loses about log2(1e3) ~ 10 bits in float32
(each result is off by up to half a float32 ulp of 1e3, 3e-5, against values near 1).
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from parity.commands.cli import main
from parity.locate.precision import rank_sites, ranking_table, sites_of
from parity.locate.run import locate_trace, promotion_note
from parity.locate.trace import OpTrace, PromoteOps, compare_traces, rel_error
from parity.running.runner import make_run

HERE = "tests/locate/test_precision.py"


def _cancelling(x: torch.Tensor) -> torch.Tensor:
    y = x * 3.0
    z = (y + 1e3) - 1e3  # the sub cancels: its relative error is ~1e3 times its inputs'
    return z.sin()


def _line(func, text: str) -> str:
    import inspect

    lines, start = inspect.getsourcelines(func)
    return f"{HERE}:{start + next(i for i, s in enumerate(lines) if text in s)}"


def _traces():
    x64 = torch.linspace(0.1, 1.0, 257, dtype=torch.float64)
    out = []
    for x in (x64, x64.to(torch.float32)):
        with OpTrace() as tr:
            r = _cancelling(x)
            tr.mark_result(r)
        out.append(tr)
    return out


def test_rank_sites_puts_the_cancelling_subtraction_first():
    ref, cand = _traces()
    cmp_ = compare_traces(ref, cand, precision=True)
    ranks = rank_sites(cmp_)
    first = ranks[0]
    assert first.site == ("sub", _line(_cancelling, "- 1e3")), ranking_table(ranks)
    # inputs within a few float32 ulps; the output off by up to ~0.5 ulp(1e3) / 3 ~ 1e-5
    assert first.input_error < 1e-6 < first.error < 3e-5
    assert first.growth > 30 and first.added == pytest.approx(first.error - first.input_error, rel=1e-6)
    assert all(r.growth <= first.growth for r in ranks)
    ops = {r.op for r in ranks}
    # y + 1e3 is rounded relative to 1e3: its error (< eps) carries nothing to the result
    assert {"sub", "sin"} <= ops and "add" not in ops


def test_lowered_amplify_factor_names_what_the_default_does_not():
    ref, cand = _traces()
    growth = rank_sites(compare_traces(ref, cand, precision=True))[0].growth
    above = compare_traces(ref, cand, precision=True, amplify=growth * 2)
    below = compare_traces(ref, cand, precision=True, amplify=growth / 2)
    assert not above.amplifiers
    assert [a.label.split("  ")[0] for a in below.amplifiers][:1] == [_line(_cancelling, "- 1e3")]
    assert f"output error > {growth / 2:g}" in below.summary()


def test_promote_cast_back_cannot_undo_a_rounded_output_keep_can():
    """The add's output rounded at 1e3's scale is the damage: promoting the add and the sub
    and casting back leaves it; keeping the add's output in float64 removes it."""
    x = torch.linspace(0.1, 1.0, 257, dtype=torch.float64)
    exact = _cancelling(x)
    plain = _cancelling(x.to(torch.float32))
    sites = {("add", _line(_cancelling, "- 1e3")), ("sub", _line(_cancelling, "- 1e3"))}
    err = lambda v: float((v.double() - exact).abs().max())  # noqa: E731
    with PromoteOps(sites) as p:
        back = _cancelling(x.to(torch.float32))
    assert p.hits == 2 and back.dtype == torch.float32
    assert err(plain) > 1e-6 and err(back) > 1e-6  # ~ulp(1e3) / 2 = 3e-5 at worst
    with PromoteOps({("add", _line(_cancelling, "- 1e3"))}, keep=True) as k:
        kept = _cancelling(x.to(torch.float32))
    assert k.hits == 3 and kept.dtype == torch.float64  # the add, then the sub and the sin
    assert err(kept) < 1e-6  # x's float32 rounding only: ~3 eps


def _accumulate(x: torch.Tensor) -> torch.Tensor:
    buf = torch.zeros(4, 2, dtype=x.dtype)
    flat = buf.view(8)  # written through a view: the write must land in buf
    flat.index_add_(0, torch.tensor([0, 0, 0]), x)
    return buf.sum(dim=1) * 1.0


def test_promote_keep_accumulates_in_a_kept_buffer_and_stays_float64():
    x = torch.tensor([1.0, 1e-8, 1e-8], dtype=torch.float32)  # 1 + 2e-8: below float32's resolution
    with PromoteOps({_line(_accumulate, "torch.zeros(")}, keep=True):
        kept = _accumulate(x)
    assert kept.dtype == torch.float64
    # float32's stored 1e-8 values, summed in float64
    assert float(kept[0]) == float(np.float64(1.0) + 2 * np.float64(np.float32(1e-8)))
    assert float(_accumulate(x)[0]) == 1.0  # float32 loses them
    with PromoteOps({_line(_accumulate, "torch.zeros(")}):  # cast back: the buffer stays float32
        back = _accumulate(x)
    assert back.dtype == torch.float32 and float(back[0]) == 1.0


def test_promote_keep_ignores_float64_data_converted_on_the_way_in():
    """A float32 tensor made from float64 data is narrow: only what the mode widened propagates."""
    data = np.linspace(0, 1, 5)  # float64
    with PromoteOps({("no_such_op", "nowhere:1")}, keep=True) as p:
        t = torch.as_tensor(data, dtype=torch.float32) * 2
    assert t.dtype == torch.float32 and p.hits == 0


def test_sites_of_round_trip_to_promote_ops():
    ref, cand = _traces()
    ranks = rank_sites(compare_traces(ref, cand, precision=True), top=2)
    assert len(ranks) == 2 and sites_of(ranks) == {r.site for r in ranks}


def test_promotion_note_reports_the_results_error_before_and_after():
    ref, cand = _traces()
    cmp_ = compare_traces(ref, cand, precision=True)
    x32 = torch.linspace(0.1, 1.0, 257, dtype=torch.float64).to(torch.float32)

    def retrace(sites):
        with PromoteOps(sites, keep=True) as mode, OpTrace() as tr:
            tr.mark_result(_cancelling(x32))
        tr.result = tr.ops[tr.result_op].value
        return tr, mode.hits

    ref.result, cand.result = ref.ops[ref.result_op].value, cand.ops[cand.result_op].value
    note = promotion_note(cmp_, ref, cand, 1, retrace)
    before = rel_error(ref.result, cand.result)
    assert f"the top 1 sites by error growth ({_line(_cancelling, '- 1e3')} aten.sub)" in note
    # keeping the sub's output in float64 leaves the add's rounded output: the error stays
    assert f"{before:.3g} -> " in note and "2 calls" in note  # the sub, then the sin


def test_locate_trace_promote_on_a_float32_run():
    run = make_run("synthetic", samplings=((-2, 2, 3),) * 3, dtype="float32", build=False)
    result = locate_trace(run, "Id", promote=2)
    notes = [n for n in result.trace.notes if n.startswith("promotion:")]
    assert len(notes) == 1 and "kept downstream" in notes[0] and " -> " in notes[0], result.text()


def test_cli_promote_needs_trace(capsys):
    assert main(["locate", "--fixture", "synthetic", "--promote", "2"]) == 2
    assert "--promote needs --trace" in capsys.readouterr().err
