"""``python -m parity.mutation``: list, run, diff and report (see the package docstring)."""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Sequence

from parity.mutation import __doc__ as PACKAGE_DOC
from parity.mutation.diff import CASE_SETS, diff_mutants, diff_verdict
from parity.mutation.execute import (DEFAULT_FIXTURE, DEFAULT_TIMEOUT_S, RunConfig, default_jobs, load_results, run_mutation,
                      save_results)
from parity.mutation.generate import DEFAULT_FILES, OPERATORS, ROOT, Mutant, _cut, all_mutants, select_mutants
from parity.mutation.report import (DEFAULT_VERDICTS, equivalent_ids, format_report, format_summary, load_verdicts, merge_diffs,
                     summarize)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m parity.mutation", description=PACKAGE_DOC.split("\n\n")[0])
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def selection(q: argparse.ArgumentParser) -> None:
        q.add_argument("--files", nargs="+", default=list(DEFAULT_FILES), metavar="FILE",
                       help="files to mutate, relative to the repository root (default: %(default)s)")
        q.add_argument("--operators", default=None, help=f"comma-separated mutation classes ({', '.join(OPERATORS)})")
        q.add_argument("--ids", default=None, help="comma-separated mutant ids (see 'list')")
        q.add_argument("--sample", type=int, default=None, metavar="K", help="a random sample of K mutants")
        q.add_argument("--seed", type=int, default=0, help="seed of --sample (default 0)")
        q.add_argument("--limit", type=int, default=None, metavar="N", help="only the first N mutants (after the rest)")

    q = sub.add_parser("list", help="list the mutants")
    selection(q)
    q.add_argument("--counts", action="store_true", help="only the counts per file and operator class")

    q = sub.add_parser("run", help="run mutants through 'parity run' (killed iff it exits 1)")
    selection(q)
    q.add_argument("--fixture", default=DEFAULT_FIXTURE, help="fixture of the parity run (default %(default)s)")
    q.add_argument("--jobs", type=int, default=None, help="concurrent children (default: CPU cores - 1, at least 1)")
    q.add_argument("--threads", type=int, default=1, help="torch/BLAS threads per child (default 1)")
    q.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT_S, help="seconds per mutant (default %(default)s)")
    q.add_argument("--json", default=None, metavar="FILE", help="results file; also the cache a re-run resumes from")
    q.add_argument("--retest", choices=("auto", "survivors", "all"), default="auto",
                   help="auto: run what is not cached for this source and config, and re-run the survivors when "
                        "the harness changed; survivors: re-run every survivor; all: re-run everything")
    q.add_argument("--report", default=None, metavar="FILE", help="also write the Markdown report (as 'report') here")
    q.add_argument("--no-fail-fast", action="store_true", help="run every stage (slower; same verdicts)")
    q.add_argument("--fresh-reference", action="store_true",
                   help="let every child compute the NumPy reference itself (slower; same verdicts)")
    q.add_argument("parity_args", nargs="*", metavar="-- PARITY_RUN_OPTION",
                   help="further 'parity run' options after '--', e.g. -- --grid='-1,1,3' --res-limit 3")

    q = sub.add_parser("diff", help="differential check of mutants against the original torch model")
    selection(q)
    q.add_argument("--survivors-of", default=None, metavar="FILE",
                   help="check the survivors recorded in this results file (with the other selections)")
    q.add_argument("--all-cases", action="store_true", help="every case, not only up to the first that differs")
    q.add_argument("--cases", choices=sorted(CASE_SETS), default="default",
                   help="default: fixtures, grids, parameters, float32; probe: edge inputs (tiny chunks, one "
                        "value on an axis, all masked, soft springs, res_limit at a grid point's d); all: both")
    q.add_argument("--only", default="all", choices=("all", "same"),
                   help="with --survivors-of and --diff-of: 'same' keeps the survivors the default cases found "
                        "identical")
    q.add_argument("--diff-of", default=None, metavar="FILE", help="an earlier 'diff --json' file (for --only)")
    q.add_argument("--threads", type=int, default=1, help="torch/BLAS threads (default 1)")
    q.add_argument("--json", default=None, metavar="FILE", help="write (merge) the outcomes into this file")

    q = sub.add_parser("report", help="the score and the survivors of a results file, as Markdown")
    q.add_argument("json", metavar="FILE", help="results file written by 'run --json'")
    q.add_argument("--verdicts", default=str(DEFAULT_VERDICTS), metavar="FILE",
                   help="verdicts on survivors (id -> verdict, reason; default %(default)s)")
    q.add_argument("--diff", nargs="*", default=[], metavar="FILE",
                   help="outcomes of 'diff --json' (one or more), shown as evidence")
    q.add_argument("--also", nargs="*", default=[], metavar="FILE",
                   help="results of the survivors under other parity run options ('killed by' column)")
    q.add_argument("--output", "-o", default=None, metavar="FILE", help="write the Markdown here (default: stdout)")
    return p


def _selected(args) -> list[Mutant]:
    for f in args.files:
        if not (ROOT / f).is_file():
            raise SystemExit(f"mutation: error: no such file {f!r} under {ROOT}")
    mutants = all_mutants(args.files)
    try:
        return select_mutants(mutants, sample=args.sample, seed=args.seed, limit=args.limit,
                              ids=[i.strip() for i in args.ids.split(",") if i.strip()] if args.ids else None,
                              operators=[o.strip() for o in args.operators.split(",") if o.strip()]
                              if args.operators else None)
    except ValueError as exc:
        raise SystemExit(f"mutation: error: {exc}") from None


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "list":
        mutants = _selected(args)
        if args.counts:
            counts: dict[tuple[str, str], int] = {}
            for m in mutants:
                counts[(m.file, m.operator)] = counts.get((m.file, m.operator), 0) + 1
            for (f, op), n in sorted(counts.items()):
                print(f"{f:<24} {op:<18} {n:>5}")
            print(f"{'total':<43} {len(mutants):>5}")
        else:
            for m in mutants:
                print(f"{m.id}  {m.location:<26} {m.function:<34} {m.operator:<17} {m.describe(60)}")
        return 0
    if args.command == "run":
        mutants = _selected(args)
        config = RunConfig(fixture=args.fixture, parity_args=list(args.parity_args), threads=max(1, args.threads),
                           timeout_s=args.timeout, fail_fast=not args.no_fail_fast,
                           reference_cache=not args.fresh_reference)
        jobs = args.jobs or default_jobs()
        data = run_mutation(mutants, config, jobs=jobs, results_path=args.json, retest=args.retest)
        records = [{"id": m.id, **data["mutants"][m.id]} for m in mutants]
        verdicts = load_verdicts()
        print(format_summary(summarize(records, equivalent_ids(verdicts)), records, verdicts))
        if args.report:
            Path(args.report).write_text(format_report(data, verdicts) + "\n", encoding="utf-8")
        return 0
    if args.command == "diff":
        mutants = _selected(args)
        if args.survivors_of:
            recorded = load_results(args.survivors_of)["mutants"]
            mutants = [m for m in mutants if m.id in recorded and recorded[m.id]["status"] != "killed"]
        previous = json.loads(Path(args.json).read_text(encoding="utf-8")) if args.json and Path(
            args.json).is_file() else {}
        if args.only == "same":
            earlier = json.loads(Path(args.diff_of).read_text(encoding="utf-8")) if args.diff_of else {}
            mutants = [m for m in mutants if earlier.get(m.id, {}).get("verdict") == "same"]
        cases = CASE_SETS[args.cases]
        print(f"diff: {len(mutants)} mutants x {len(cases)} cases", flush=True)

        def show(m: Mutant, res: dict) -> None:
            previous[m.id] = {**m.to_dict(), "verdict": diff_verdict(res), "cases": res}
            where = next((f"{k}: {v}" for k, v in res.items() if k != "seconds" and v), "")
            print(f"{m.id} {diff_verdict(res):<8} {res['seconds']:5.1f}s {m.location:<26} {m.operator:<17} "
                  f"{m.describe(36)}  {_cut(str(where), 110)}", flush=True)
            if args.json:
                save_results(args.json, previous)

        diff_mutants(mutants, cases=cases, threads=max(1, args.threads), stop_at_first=not args.all_cases,
                     on_result=show)
        return 0
    if args.command == "report":
        data = load_results(args.json)
        diffs = merge_diffs([json.loads(Path(f).read_text(encoding="utf-8")) for f in args.diff])
        text = format_report(data, load_verdicts(args.verdicts), diffs, [load_results(f) for f in args.also])
        if args.output:
            Path(args.output).write_text(text + "\n", encoding="utf-8")
        else:
            print(text)
        return 0
    return 2
