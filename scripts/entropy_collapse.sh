#!/usr/bin/env bash
# Issue 23's entropy-collapse miniature in one command: plain GRPO and seven entropy methods (KL-Cov, Clip-Cov, the
# 80/20 forking-token rule, an entropy bonus, STEER, Lp-Reg, SIREN with top-p), 3 seeds each, same steps and
# evaluation (conf/experiment/entropy_collapse*.yaml, conf/sweep/entropy_collapse.yaml), on a task whose warm start
# has several valid solutions per problem (task=sum_orders), then the rl compare table, the entropy start -> end and
# the fitted R = -a exp(H) + b per method.
#   bash scripts/entropy_collapse.sh                     # start, or resume the newest *_entropy_collapse sweep
#   FRESH=1 bash scripts/entropy_collapse.sh             # start a new sweep even if an unfinished one exists
#   TABLES_ONLY=1 bash scripts/entropy_collapse.sh       # no sweep: the tables from what the newest one completed
#   N_JOBS=1 bash scripts/entropy_collapse.sh            # one run at a time (a shared machine); default 2
#   bash scripts/entropy_collapse.sh "hydra.sweeper.params.experiment='entropy_collapse,entropy_collapse_kl_cov'"
#                                                        # extra overrides for a new sweep (here: two methods)
# Prints every command it runs. Interrupted? Run it again: `rl sweep --resume` reruns only the jobs that did not
# complete. Writes runs/entropy_collapse/{report.html,table.md,entropy.md} and the README table between the
# entropy-collapse-table markers.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/sweep_lib.sh
OUT=${ENTROPY_COLLAPSE_OUT:-runs/entropy_collapse}
N_JOBS=${N_JOBS:-2}

# 1. The tiny model warm-started on sum_orders' random-order traces, built once before the sweep needs it
#    (~4-5 min on an idle machine; a cache hit takes seconds).
run "$PY" scripts/tiny_model.py experiment=entropy_collapse > /dev/null

# 2. The sweep: 24 runs, or the jobs of the newest entropy_collapse sweep that did not complete.
sweep entropy_collapse "hydra.launcher.n_jobs=$N_JOBS" "$@"

# 3. The comparison: one group per method (experiment_name), plain GRPO the baseline.
mkdir -p "$OUT"
run "$RL" compare "$SWEEP" --group-by experiment_name --baseline experiment_name=entropy_collapse \
  --metric eval/pass@1 --metric eval/pass@16 --metric entropy/mean \
  --report "$OUT/report.html" --format md > "$OUT/table.md"
cat "$OUT/table.md"

# 4. Entropy at the start and the end of training per method, and the entropy-law fit (the report's rule for when
#    it is meaningful: workbench.report.fit_omission).
run "$PY" - "$SWEEP" "$OUT/entropy.md" <<'EOF'
import sys
from pathlib import Path
import numpy as np
from workbench.compare import compare
from workbench.report import entropy_law

comp = compare([sys.argv[1]], metrics=["entropy/mean"], group_by=["experiment_name"],
               baseline="experiment_name=entropy_collapse")
_, fits, perf, omitted = entropy_law(comp)
fit_by = dict(fits)
why_by = dict(omitted)
lines = ["| method (experiment_name) | seeds | entropy, first 5 steps | entropy, last 10 steps | end / start | "
         f"end vs plain | held-out entropy, start -> end | pass@16, start -> end | R = -a e^H + b on ({perf}) |",
         "|---|---:|---:|---:|---:|---:|---|---|---|"]


def start_end(runs, metric):
    """Mean over runs of a held-out metric before and after training (summary.json), as 'start -> end'."""
    pairs = [(r.summary.get(f"{metric}_start"), r.summary.get(metric)) for r in runs]
    pairs = [p for p in pairs if all(isinstance(v, (int, float)) for v in p)]
    if not pairs:
        return "n/a"
    return f"{np.mean([p[0] for p in pairs]):.3f} -> {np.mean([p[1] for p in pairs]):.3f}"


base_end = None
for g in comp.groups:
    starts, ends = [], []
    for r in g.runs:
        h = [float(row["entropy/mean"]) for row in r.rows() if isinstance(row.get("entropy/mean"), (int, float))]
        if h:
            starts.append(np.mean(h[:5]))
            ends.append(np.mean(h[-10:]))
    name = str(g.flat.get("experiment_name", g.title))
    if not ends:
        continue
    start, end = float(np.mean(starts)), float(np.mean(ends))
    base_end = end if base_end is None else base_end
    fit = fit_by.get(g.title)
    law = (f"a={fit['a']:.3g}, b={fit['b']:.3g}, ceiling {fit['ceiling']:.3f}, R²={fit['r2']:.2f}" if fit
           else "no fit: " + why_by.get(g.title, "no points"))
    lines.append(f"| {name} | {len(ends)} | {start:.3f} | {end:.3f} | {end / start:.2f} | "
                 f"{end / base_end:.2f}x | {start_end(g.runs, 'eval/entropy/mean')} | "
                 f"{start_end(g.runs, 'eval/pass@16')} | {law} |")
lines.append("")
lines.append("Entropy: `entropy/mean` of the training rollouts (nats per token), mean over seeds of each run's first 5 "
             "and last 10 logged steps; end vs plain = the method's end entropy / plain GRPO's (the first row); held-out "
             "entropy and pass@16: the evaluation before and after training (100 problems x 16 samples, T = 1), mean "
             "over seeds. The fit: "
             "the report's per-group least squares on per-step (entropy, performance) pairs over all seeds "
             "(workbench.stats.fit_entropy_law), shown only where workbench.report.fit_omission finds it meaningful.")
Path(sys.argv[2]).write_text("\n".join(lines) + "\n")
print("\n".join(lines))
EOF

# 5. The README table, between its markers.
readme_table entropy-collapse-table "$SWEEP" "$OUT/table.md" "$OUT/entropy.md"

echo "entropy collapse: $SWEEP; report $OUT/report.html; tables $OUT/table.md $OUT/entropy.md;" \
  "$((SECONDS / 60)) min $((SECONDS % 60)) s" >&2
exit "$SWEEP_RC"
