#!/usr/bin/env bash
# Issue 14's miniature in one command: plain GRPO (conf/experiment/agentic_plain.yaml) against GRPO with cost terms
# (agentic_cost.yaml) on mixed_arithmetic with real tool calls, 3 seeds each (conf/sweep/agentic_cost.yaml), then the
# rl compare report and table: accuracy, cost of pass, tool calls per problem, and mode shares on easy vs hard.
#   bash scripts/agentic_cost.sh            # start, or resume the newest runs/sweeps/*_agentic_cost sweep
#   FRESH=1 bash scripts/agentic_cost.sh    # start a new sweep even if an unfinished one exists
#   bash scripts/agentic_cost.sh seed=0     # extra overrides for a new sweep (here: one seed, 2 runs)
#   AGENTIC_TABLE=agentic-apo FRESH=1 bash scripts/agentic_cost.sh \
#     "hydra.sweeper.params.experiment='agentic_plain,agentic_apo'"   # APO vs plain, README's agentic-apo table
# Prints every command it runs; rerun it after an interruption (`rl sweep --resume` redoes only unfinished jobs).
# Needs the whole 2-core machine (two runs at a time, one thread each). Writes runs/agentic_cost/{report.html,
# table.md,modes.md} and the README table between the agentic-cost-table markers.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/sweep_lib.sh
OUT=${AGENTIC_OUT:-runs/agentic_cost}
TABLE=${AGENTIC_TABLE:-agentic-cost}  # the README markers the tables go between: <!-- $TABLE-table:start/end -->

# 1. The tiny model warm-started on all three modes (instant, reasoning, agentic), built once with both cores.
run "$PY" scripts/tiny_model.py experiment=agentic_plain > /dev/null

# 2. The sweep: 6 runs, or the jobs of the newest agentic_cost sweep that did not complete.
sweep agentic_cost "$@"

# 3. The comparison: one group per arm (experiment_name), plain GRPO the baseline. Held-out numbers are the end
#    evaluation of each run (100 problems x 4 samples, tools running), mean over seeds +- half the 95% t interval.
mkdir -p "$OUT"
CMP=("$RL" compare "$SWEEP" --group-by experiment_name --baseline experiment_name=agentic_plain)
run "${CMP[@]}" --metric eval/accuracy --metric eval/cost_of_pass --metric eval/tools/calls_per_problem \
  --metric eval/tools/dollars_mean --metric eval/length/mean \
  --report "$OUT/report.html" --format md > "$OUT/table.md"
run "${CMP[@]}" --metric eval/by/easy/accuracy --metric eval/by/easy/modes/instant \
  --metric eval/by/easy/modes/agentic --metric eval/by/easy/cost_of_pass --metric eval/by/hard/accuracy \
  --metric eval/by/hard/modes/instant --metric eval/by/hard/modes/agentic --metric eval/by/hard/cost_of_pass \
  --format md > "$OUT/modes.md"
cat "$OUT/table.md" "$OUT/modes.md"

# 4. The README table, between its markers.
echo "By difficulty:" > "$OUT/modes_head.md"
readme_table "$TABLE-table" "$SWEEP" "$OUT/table.md" "$OUT/modes_head.md" "$OUT/modes.md"

echo "agentic cost: $SWEEP; report $OUT/report.html; tables $OUT/table.md $OUT/modes.md; $((SECONDS / 60)) min $((SECONDS % 60)) s" >&2
exit "$SWEEP_RC"
