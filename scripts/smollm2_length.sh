#!/usr/bin/env bash
# Issue 23's real-model result in one command: SmolLM2-135M-Instruct (LoRA, chat template) on reasoning-gym's
# chain_sum asked in words, plain GRPO against GRPO with the Kimi k1.5 length reward, 3 seeds each
# (conf/experiment/smollm2_length*.yaml, conf/sweep/smollm2_length.yaml), then the rl compare table.
#   bash scripts/smollm2_length.sh            # start, or resume the newest runs/sweeps/*_smollm2_length sweep
#   FRESH=1 bash scripts/smollm2_length.sh    # a new sweep even if an unfinished one exists
#   bash scripts/smollm2_length.sh seed=0     # extra overrides for a new sweep (here: one seed, 2 runs)
# Prints every command it runs. Needs the whole 2-core machine (two runs at a time, one thread each; ~25 min a
# pair). Writes runs/smollm2_length/{report.html,table.md,start.md} and the README table between the
# smollm2-length-table markers.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/sweep_lib.sh
OUT=${SMOLLM2_LENGTH_OUT:-runs/smollm2_length}

# 1. The GGUF file converted to an HF folder once (~1 min), before the two parallel jobs would both convert it.
run "$PY" scripts/tiny_model.py experiment=smollm2_length > /dev/null

# 2. The sweep: 6 runs, or the jobs of the newest smollm2_length sweep that did not complete.
sweep smollm2_length "$@"

# 3. The comparison at the end of training (40 held-out problems x 4 samples at T = 0.7 per run), plain GRPO the
#    baseline, and the same table for the evaluation before training (every run starts from the same model, so
#    the two arms should agree there: a check on the evaluation's own spread).
mkdir -p "$OUT"
CMP=("$RL" compare "$SWEEP" --group-by experiment_name --baseline experiment_name=smollm2_length)
run "${CMP[@]}" --metric eval/pass@1 --metric eval/length/mean --metric eval/entropy/mean --metric length/mean \
  --report "$OUT/report.html" --format md > "$OUT/table.md"
run "${CMP[@]}" --metric eval/accuracy_start --metric eval/length/mean_start --format md > "$OUT/start.md"
cat "$OUT/table.md" "$OUT/start.md"

# 4. The README table, between its markers.
echo "Before training (the same base model in every run):" > "$OUT/start_head.md"
readme_table smollm2-length-table "$SWEEP" "$OUT/table.md" "$OUT/start_head.md" "$OUT/start.md"

echo "smollm2 length: $SWEEP; report $OUT/report.html; table $OUT/table.md; $((SECONDS / 60)) min" \
  "$((SECONDS % 60)) s" >&2
exit "$SWEEP_RC"
