#!/bin/bash
# docs/reduce.md, "Judging candidates in parallel": parity reduce on 193l (linv_upper), serial
# (--jobs 1) and --jobs 2 interleaved, each run preceded by the load average.
# usage: docs/reduce-jobs-measure.sh OUTDIR [REPEATS]   (ERYX_FIXTURES_DIR set)
set -u
out=${1:?usage: docs/reduce-jobs-measure.sh OUTDIR [REPEATS]}
mkdir -p "$out"
for i in $(seq "${2:-3}"); do
  for jobs in 1 2; do
    echo "repeat $i, --jobs $jobs: load average $(cut -d' ' -f1-3 /proc/loadavg)"
    /usr/bin/time -f "  wall %e s, user %U s, sys %S s (main process; the workers, forked by the forkserver, are not counted)" parity reduce \
      --fixture 193l --reference torch --fault linv_upper --skip M_allatoms "--grid=-2,2,2;-2,2,2;-2,2,3" \
      --jobs "$jobs" --no-progress --out "$out/j${jobs}_$i" 2>&1 | grep -E "wall|^reduced Linv" | sed 's/^reduced .*; \([0-9]* steps.*\)/  \1/'
    # every verdict, move and size of the log, timings dropped: the two must be identical
    sed -E 's/^(step +[0-9]+) +[0-9.]+s/\1/; s/ \[[0-9.]+s\]$//; s/, [0-9.]+ s \(/ (/' "$out/j${jobs}_$i/reduction.log" \
      > "$out/j${jobs}_$i.verdicts"
  done
  cmp -s "$out/j1_$i.verdicts" "$out/j2_$i.verdicts" && echo "  repeat $i: same log verdicts and final case" \
    || echo "  repeat $i: LOGS DIFFER"
done
