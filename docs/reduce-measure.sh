#!/bin/bash
# The measurements of docs/reduce.md: parity reduce on 193l (sulphur_mass, linv_upper) and
# on the public torch port (kvec), then the reduced cases re-run.
# usage: docs/reduce-measure.sh OUTDIR   (ERYX_FIXTURES_DIR, ERYX_PEERS_DIR set)
set -u
out=${1:?usage: docs/reduce-measure.sh OUTDIR}
mkdir -p "$out"
# 193l with the torch backend as reference: the dense NumPy reference refuses 193l (memory
# estimate), and the dense all-atom mass matrix stage (M_allatoms, 24,024^2 doubles = 4.6 GB
# per side) is skipped. Grid: the fallback -2,2,2;-2,2,2;-2,2,3 (1,053 points; the fixture's
# default 62,197-point grid needs > 20 GB in the torch backend's construction on 193l).
for case in "sulphur sulphur_mass" "linv linv_upper"; do
  set -- $case
  /usr/bin/time -f "$1: reduce wall %e s, max rss %M kB" parity reduce --fixture 193l --reference torch \
    --fault "$2" --skip M_allatoms "--grid=-2,2,2;-2,2,2;-2,2,3" --out "$out/193l_$1" 2> "$out/193l_$1.err"
  tail -1 "$out/193l_$1.err"
done
# The public torch port: one run is ~2 minutes here (worker start, their construction).
/usr/bin/time -f "port: reduce wall %e s, max rss %M kB" parity reduce --candidate torch-port \
  --candidate-path "$ERYX_PEERS_DIR/slac-dynaboost-eryx-d27a4c7.tar.gz" --grid=-1,1,3 --budget 1200 \
  --out "$out/port_kvec" 2> "$out/port_kvec.err"
tail -1 "$out/port_kvec.err"
# ... and under the final validity rules, from a 3-point grid with a point off k = 0.
/usr/bin/time -f "port (rerun): reduce wall %e s, max rss %M kB" parity reduce --candidate torch-port \
  --candidate-path "$ERYX_PEERS_DIR/slac-dynaboost-eryx-d27a4c7.tar.gz" "--grid=0,0,1;0,0,1;0,1,2" --budget 900 \
  --out "$out/port_kvec2" 2> "$out/port_kvec2.err"
tail -1 "$out/port_kvec2.err"
# The reduced cases: bash command.txt (a new process: imports, the run, JSON + HTML), three times.
for d in "$out"/193l_sulphur "$out"/193l_linv "$out"/port_kvec "$out"/port_kvec2; do
  for i in 1 2 3; do
    ( cd "$d" && /usr/bin/time -f "$(basename "$d"): bash command.txt wall %e s (exit code follows)" \
      bash command.txt > /dev/null; echo "exit $?" )
  done
  python -c "import json,sys; r=json.load(open(sys.argv[1])); print(r['first_failure'], \
[s['details'].get('diagnosis_phrase') for s in r['stages'] if s['name']==r['first_failure']], \
'stages %.3f s, setup ref %.3f s, cand %.3f s' % (r['duration_s'], r['phase_timings']['setup_reference'], \
r['phase_timings']['setup_candidate']))" "$d/reduced.json"
done
