#!/usr/bin/env bash
# The tiny model on reasoning-gym datasets (README "The tiny model on reasoning-gym datasets"): for each dataset, one
# `rl train model=tiny task=gym task.name=<dataset>` (answer-only warm-start traces; worked solutions where the
# dataset has them), a short GRPO run, and a table row: the warm start's greedy held-out accuracy (100 problems),
# then sampled held-out accuracy (200 problems x 2, T=1) before and after GRPO, with its 95% interval.
#   bash scripts/gym_tiny.sh                          # the README's datasets, one run at a time
#   DATASETS="lcm gcd" bash scripts/gym_tiny.sh       # others (a dataset's params: edit PARAMS below)
#   bash scripts/gym_tiny.sh algo.max_steps=60        # extra overrides for every run
# Writes runs/gym_tiny/table.md and prints it. ~10 min a dataset on a loaded 2-core machine (most of it the warm
# start: 300 steps; a cached model starts at once).
set -euo pipefail
cd "$(dirname "$0")/.."
RL=.venv/bin/rl
PY=.venv/bin/python
OUT=${GYM_TINY_OUT:-runs/gym_tiny}
DATASETS=${DATASETS:-"spell_backward chain_sum simple_equations number_sequence"}
# Per-dataset task.params (empty: the dataset's defaults). chain_sum's defaults (2-6 terms of up to 4 digits) leave
# an answer-only 1M model at 0, so it runs on two terms of up to 2 digits (the arithmetic preset without its working).
declare -A PARAMS=([chain_sum]="task.params.max_terms=2 task.params.max_digits=2")
COMMON="model=tiny task=gym task.prompt_style=compact model.tiny.warm_start_steps=300 algo.max_steps=30"
mkdir -p "$OUT"
SECONDS=0
for ds in $DATASETS; do
  args="$COMMON task.name=$ds ${PARAMS[$ds]:-}"
  echo "+ $RL train $args $* --name gym-tiny-$ds" >&2
  # shellcheck disable=SC2086
  $RL train $args "$@" --name "gym-tiny-$ds" | tee "$OUT/$ds.log"
  ls -d runs/*/*_gym-tiny-"$ds" | tail -n 1 > "$OUT/$ds.run"
done
"$PY" - "$OUT" $DATASETS <<'PY' | tee "$OUT/table.md"
import json, sys
from pathlib import Path
out, names = Path(sys.argv[1]), sys.argv[2:]
print("| dataset | overrides | warm start greedy | GRPO start | GRPO end (30 steps) |")
print("|---|---|---|---|---|")
for ds in names:
    run = Path((out / f"{ds}.run").read_text().strip())
    s, m = json.loads((run / "summary.json").read_text()), json.loads((run / "meta.json").read_text())["model"]
    params = " ".join(line.strip() for line in (run / "overrides.txt").read_text().split() if "params" in line)
    start = f"{s['eval/accuracy_start']:.3f} [{s['eval/accuracy_start/ci_low']:.3f}, {s['eval/accuracy_start/ci_high']:.3f}]"
    end = f"{s['eval/accuracy']:.3f} [{s['eval/accuracy/ci_low']:.3f}, {s['eval/accuracy/ci_high']:.3f}]"
    print(f"| {ds} | {params or '-'} | {m['warm_start_accuracy']:.2f} | {start} | {end} |")
PY
echo "gym_tiny: $SECONDS s" >&2
