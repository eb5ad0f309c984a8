#!/usr/bin/env bash
# Issue 13's miniature replication in one command: plain GRPO and six length/entropy methods (Kimi, DRPO-style
# positive-only length weighting, HAPO, PEAR, KL-Cov, Clip-Cov), 3 seeds each, same steps and evaluation
# (conf/experiment/replication*.yaml, conf/sweep/replication.yaml), then the rl compare report and table.
#   bash scripts/replicate.sh              # start, or resume the newest runs/sweeps/*_replication sweep
#   FRESH=1 bash scripts/replicate.sh      # start a new sweep even if an unfinished one exists
#   bash scripts/replicate.sh seed=0       # extra overrides for a new sweep (here: one seed, 7 runs)
# Prints every command it runs. Interrupted (Ctrl-C, a killed shell)? Run it again: `rl sweep --resume` reruns
# only the jobs that did not complete. Needs the whole 2-core machine (two runs at a time, one thread each).
# Writes runs/replication/{report.html,table.md} (+ report.png when chromium is installed) and the README table
# between the replication-table markers.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/sweep_lib.sh
OUT=${REPLICATION_OUT:-runs/replication}

# 1. The tiny model with padded traces (the experiment's model.tiny), built once with both cores before the two
#    parallel jobs need it (~4-5 min; a cache hit takes seconds).
run "$PY" scripts/tiny_model.py experiment=replication > /dev/null

# 2. The sweep: 21 runs, or the jobs of the newest replication sweep that did not complete.
sweep replication "$@"

# 3. The comparison: one group per method (experiment_name), plain GRPO the baseline.
mkdir -p "$OUT"
run "$RL" compare "$SWEEP" --group-by experiment_name --baseline experiment_name=replication \
  --metric eval/pass@1 --metric eval/length/mean --metric entropy/mean \
  --report "$OUT/report.html" --format md > "$OUT/table.md"
cat "$OUT/table.md"

# 4. A screenshot of the report, when chromium is installed (apt-get install -y chromium).
if [ -x /usr/bin/chromium ]; then
  run /usr/bin/chromium --headless --no-sandbox --disable-gpu --disable-quic --no-first-run \
    --disable-background-networking --disable-component-update --disable-sync --hide-scrollbars \
    --user-data-dir="$(mktemp -d)" --screenshot="$OUT/report.png" --window-size=1400,5200 \
    "file://$(pwd)/$OUT/report.html" || echo "chromium failed; the report is still at $OUT/report.html" >&2
fi

# 5. The README table, between its markers.
readme_table replication-table "$SWEEP" "$OUT/table.md"

echo "replication: $SWEEP; report $OUT/report.html; table $OUT/table.md; $((SECONDS / 60)) min $((SECONDS % 60)) s" >&2
exit "$SWEEP_RC"
