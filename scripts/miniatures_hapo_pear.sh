#!/usr/bin/env bash
# Issue 23's HAPO and PEAR miniatures in one command, each plain GRPO against the method over 3 seeds:
#   HAPO with repeated prompts: the replication's tiny model (padded traces) trained on a pool of 64 prompts,
#     so 60 batches of 8 revisit each prompt ~7.5 times (conf/experiment/hapo_repeat*.yaml, conf/sweep/hapo_repeat).
#   PEAR where long traces explore: task=arithmetic_explore, whose long warm-start traces try sampled candidates
#     (conf/experiment/pear_explore*.yaml, conf/sweep/pear_explore: weights 0.1 and 1.0); its premise is measured
#     after the warm start.
#   bash scripts/miniatures_hapo_pear.sh            # both; resumes the newest sweep of each when one exists
#   ONLY=hapo bash scripts/miniatures_hapo_pear.sh  # one miniature (hapo | pear)
#   FRESH=1 bash scripts/miniatures_hapo_pear.sh    # new sweeps even where unfinished ones exist
#   N_JOBS=2 ONLY=pear bash scripts/miniatures_hapo_pear.sh  # PEAR's 9 runs two at a time (an idle machine)
# Prints every command it runs. One training process at a time, one torch thread. Writes runs/hapo_repeat/ and
# runs/pear_explore/ (table.md, report.html; pear: entropy_by_style.{json,md}) and the README tables between the
# hapo-repeat-table and pear-explore-table markers.
set -euo pipefail
cd "$(dirname "$0")/.."
export OMP_NUM_THREADS=1
. scripts/sweep_lib.sh

# The tiny model of an experiment (built once and cached; a cache hit takes seconds): prints its cache folder.
tiny_model() {
  run "$PY" scripts/tiny_model.py "$@" | tail -n 1
}

# compare NAME METRICS...: the rl compare table of $SWEEP (baseline: experiment NAME) into runs/NAME/table.md.
compare() {
  local name=$1 out=runs/$1
  shift
  mkdir -p "$out"
  local metrics=()
  for m in "$@"; do metrics+=(--metric "$m"); done
  run "$RL" compare "$SWEEP" --group-by experiment_name --baseline experiment_name="$name" "${metrics[@]}" \
    --report "$out/report.html" --format md > "$out/table.md"
  cat "$out/table.md"
}

if [ "${ONLY:-hapo}" = hapo ] || [ -z "${ONLY:-}" ]; then
  # 1. The replication's tiny model (padded traces), warm-started on all 2,000 arithmetic problems; the pool runs
  #    load it as a local model (warm-starting on the pool task would see only the 64 pool problems).
  TINY=$(tiny_model experiment=replication)
  # 2. Plain GRPO and HAPO, 3 seeds, on the pool of 64 prompts.
  sweep hapo_repeat model.name_or_path="$TINY"
  # 3. Table: held-out pass@1 and length, and the share of HAPO's rollouts whose prompt had a history (last 10 steps).
  compare hapo_repeat eval/pass@1 eval/length/mean length/mean shaping/length_hapo/with_history
  readme_table hapo-repeat-table "$SWEEP" runs/hapo_repeat/table.md
fi

if [ "${ONLY:-pear}" = pear ] || [ -z "${ONLY:-}" ]; then
  mkdir -p runs/pear_explore
  # 1. The tiny model warm-started on arithmetic_explore's traces (short: the working; long: + sampled tries).
  tiny_model experiment=pear_explore > /dev/null
  # 2. PEAR's premise, measured: 200 held-out problems x 4 samples at T = 1 from the warm-started model, each
  #    sample's mean think-phase entropy (tokens up to and including </think>, as PEAR's term), long vs short.
  run "$PY" - experiment=pear_explore <<'EOF'
import json, re, statistics, sys
from workbench.compose import compose
from workbench.config import to_train_config
from workbench.evaluation.generate import sample
from workbench.models import load_model_and_tokenizer
from workbench.tasks import THINK_CLOSE, build_task
cfg = to_train_config(compose("train", sys.argv[1:]))
task = build_task(cfg.task)
model, tok, _ = load_model_and_tokenizer(cfg.model, task)
evals = task.examples("eval")
samples = sample(model, tok, [e["prompt"] for e in evals], n=4, temperature=1.0, max_new_tokens=80,
                 with_entropy=True, seed=0)
close = tok.convert_tokens_to_ids(THINK_CLOSE)
tried = re.compile(r"-?\d+[+-]\d+=-?\d+ (ok|no)")  # a checked candidate: only the long, exploratory style has one
rows = {"long": [], "short": []}
for s in samples:
    end = s.ids.index(close) + 1 if close in s.ids else len(s.ids)
    rows["long" if tried.search(s.text) else "short"].append(
        (statistics.fmean(s.entropy[:end]) if end else 0.0, len(s.ids), task.score(s.text, evals[s.problem])))
stats = {k: {"samples": len(v), "share": len(v) / len(samples),
             "think_entropy": statistics.fmean(r[0] for r in v) if v else None,
             "length": statistics.fmean(r[1] for r in v) if v else None,
             "accuracy": statistics.fmean(r[2] for r in v) if v else None} for k, v in rows.items()}
json.dump(stats, open("runs/pear_explore/entropy_by_style.json", "w"), indent=2)
fmt = lambda x, spec: "n/a" if x is None else format(x, spec)
lines = ["PEAR's premise after the warm start (200 held-out problems x 4 samples, T = 1; think entropy: mean per-token "
         "entropy in nats up to and including `</think>`, averaged over samples):", "",
         "| style | samples | share | mean think entropy | length (tokens) | accuracy |", "|---|---:|---:|---:|---:|---:|"]
for k, v in stats.items():
    lines.append(f"| {k} | {v['samples']} | {v['share']:.2f} | {fmt(v['think_entropy'], '.3f')} | "
                 f"{fmt(v['length'], '.1f')} | {fmt(v['accuracy'], '.3f')} |")
open("runs/pear_explore/entropy_by_style.md", "w").write("\n".join(lines) + "\n")
print("\n".join(lines), file=sys.stderr)
EOF
  # 3. Plain GRPO and PEAR at weights 0.1 and 1.0, 3 seeds (N_JOBS=2: two runs at a time on an idle machine).
  sweep pear_explore "hydra.launcher.n_jobs=${N_JOBS:-1}"
  # 4. Table: held-out pass@1, length and think entropy (final eval), and the think entropy PEAR penalised in
  #    training (its own metric, last 10 steps).
  compare pear_explore eval/pass@1 eval/length/mean eval/entropy/think shaping/pear/think_entropy
  readme_table pear-explore-table "$SWEEP" runs/pear_explore/entropy_by_style.md runs/pear_explore/table.md
fi
echo "miniatures: $((SECONDS / 60)) min $((SECONDS % 60)) s" >&2
