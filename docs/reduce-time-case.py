"""Time a reduced case (docs/reduce.md): its command.txt run in-process, with and without the HTML report.

usage: python docs/reduce-time-case.py DIR [DIR ...]   (each DIR written by parity reduce)
Prints, per folder and repeat: the stages' seconds, both sessions' construction seconds and
the wall time of the whole in-process `parity run` (imports already done: the first repeat
of the first folder pays them), alternating the two variants.
"""
import contextlib
import io
import json
import os
import shlex
import sys
import time

from parity.commands import cli

for folder in sys.argv[1:]:
    argv = shlex.split(open(os.path.join(folder, "command.txt")).read().splitlines()[-1])[1:]
    plain = [a for i, a in enumerate(argv) if a != "--html" and (i == 0 or argv[i - 1] != "--html")]
    plain[plain.index("--json") + 1] = "timing.json"
    os.chdir(folder)
    for repeat in range(3):
        with_html = plain + ["--html", "timing.html"]
        for label, args in (("no html", plain), ("with html", with_html)):
            t0 = time.perf_counter()
            with contextlib.redirect_stdout(io.StringIO()):
                code = cli.main(args)
            wall = time.perf_counter() - t0
            r = json.load(open("timing.json"))
            t = r["phase_timings"]
            print(f"{os.path.basename(folder)} {label:<9} exit {code} first {r['first_failure']}: stages "
                  f"{r['duration_s']:.3f} s + construction {t['setup_reference'] + t['setup_candidate']:.3f} s, "
                  f"in-process wall {wall:.2f} s")
    for f in ("timing.json", "timing.html"):
        os.remove(f)
    os.chdir("..")
