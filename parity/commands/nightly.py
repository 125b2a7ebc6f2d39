"""``parity nightly``: a fixtures x dtypes x devices matrix, timed, into the history store."""
from __future__ import annotations

import argparse

from parity.commands.command import Command


def add_arguments(p: argparse.ArgumentParser) -> None:
    # function-local: the defaults shown in the help live with the nightly (NumPy); only when
    # the parser is built, not when this module is imported
    from parity.storage.memory_regressions import MemoryRule
    from parity.storage.regressions import SlowdownRule
    from parity.benchmarking.nightly import DEFAULT_DB, DEFAULT_REPEATS

    p.add_argument("--matrix", default=None, metavar="FILE",
                   help="JSON or TOML with 'fixtures', 'dtypes', 'devices' (and optional 'grid', 'phases'); "
                        "default: synthetic (+ 5zck_p1, 7n2h when present) x float64, float32 x cpu (+ cuda)")
    p.add_argument("--db", default=str(DEFAULT_DB), metavar="FILE",
                   help="SQLite history store (default: %(default)s, relative to the current folder)")
    p.add_argument("--reports-dir", default=None, metavar="DIR",
                   help="where each run's HTML report goes (default: runs/ in the --db file's folder)")
    p.add_argument("--dashboard", default=None, metavar="FILE",
                   help="where the dashboard is rendered (default: dashboard.html in the --db file's folder)")
    p.add_argument("--no-dashboard", action="store_true", help="do not render the dashboard")
    p.add_argument("--repeats", type=int, default=DEFAULT_REPEATS, metavar="N",
                   help="timing repeats per run, single-threaded CPU time in a worker process, after one "
                        "warm-up (default: %(default)s; 0: judge slowdowns on the run's own wall-clock times)")
    p.add_argument("--fail-on-slowdown", action="store_true",
                   help=f"exit 1 when a slowdown is flagged ({SlowdownRule().describe().replace('%', '%%')}) "
                        f"or the gradient benchmark's peak memory grew "
                        f"({MemoryRule().describe().replace('%', '%%')}); "
                        "off by default: either alone is printed and exits 0")
    p.add_argument("--fixtures-dir", default=None, help="directory of NAME.pdb fixtures (default: $ERYX_FIXTURES_DIR)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar (one is drawn only on a terminal)")


def handle(args: argparse.Namespace) -> int:
    from parity.benchmarking.nightly import run_nightly

    return run_nightly(matrix_path=args.matrix, db=args.db, reports_dir=args.reports_dir,
                       fixtures_dir=args.fixtures_dir, dashboard=args.dashboard,
                       write_dashboard=not args.no_dashboard, progress=not args.no_progress,
                       repeats=args.repeats, fail_on_slowdown=args.fail_on_slowdown)


COMMAND = Command(
    "nightly", help="run a fixtures x dtypes x devices matrix into the history store",
    description="Run the matrix, time every run again in a single-threaded worker, record it in the history "
                "store and print the regressions. Exit 0 when every run passed and no numerical regression "
                "(status flip, error growth) was flagged, 1 otherwise; a slowdown or a growth of the gradient "
                "benchmark's peak memory alone exits 0 unless --fail-on-slowdown. Reports and the dashboard go "
                "next to the --db file unless told otherwise.",
    add_arguments=add_arguments, handle=handle)
