#!/usr/bin/env bash
# CPU and wall time of the standard-grid parity run, trees interleaved (docs/performance.md, 8).
#
#   benchmarks/parity_run_time.sh OUTDIR LABEL=TREE [LABEL=TREE ...] [-- ROUNDS]
#
# Each TREE is a source tree (e.g. `git archive BASE | tar -x -C /tmp/before`); it runs
# with PYTHONPATH=TREE in the current Python environment (which must hold the
# dependencies), so the trees are compared in one environment. The trees run in turn,
# ROUNDS times (default 2): before, after, before, after. Per run OUTDIR gets LABEL-N.time
# (/usr/bin/time -v), LABEL-N.json (the run's JSON, per-stage seconds) and one summary
# line on stdout: label, round, load average at the start, wall, user+sys, peak RSS, exit.
set -u
out=$1; shift
trees=(); rounds=2
while [ $# -gt 0 ]; do
  if [ "$1" = "--" ]; then rounds=$2; break; fi
  trees+=("$1"); shift
done
mkdir -p "$out"; out=$(cd "$out" && pwd)
for round in $(seq 1 "$rounds"); do
  for entry in "${trees[@]}"; do
    label=${entry%%=*}; tree=${entry#*=}
    load=$(cut -d' ' -f1-3 /proc/loadavg)
    (cd "$tree" && PYTHONPATH="$tree" /usr/bin/time -v -o "$out/$label-$round.time" \
      python -m parity run --fixture 5zck_p1 --grid='-4,4,3;-17,17,3;-29,29,3' --no-progress \
      --json "$out/$label-$round.json" > "$out/$label-$round.out" 2>&1)
    rc=$?
    python - "$out/$label-$round.time" "$label" "$round" "$load" "$rc" <<'PY'
import re, sys
text = open(sys.argv[1]).read()
user = float(re.search(r"User time \(seconds\): ([\d.]+)", text).group(1))
sys_ = float(re.search(r"System time \(seconds\): ([\d.]+)", text).group(1))
wall = re.search(r"Elapsed \(wall clock\) time \(h:mm:ss or m:ss\): ([\d:.]+)", text).group(1)
secs = sum(float(p) * 60 ** i for i, p in enumerate(reversed(wall.split(":"))))
rss = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", text).group(1))
label, rnd, load, rc = sys.argv[2:]
print(f"{label} round {rnd}: load {load} | wall {secs:.1f} s | user+sys {user + sys_:.1f} s "
      f"| peak RSS {rss / 1e6:.2f} GB | exit {rc}", flush=True)
PY
  done
done
