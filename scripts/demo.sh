#!/usr/bin/env bash
# The README's first command: install, build the tiny model, train GRPO briefly, evaluate, print a summary.
#   bash scripts/demo.sh [extra overrides...]
# On a fresh 2-core machine: ~2 min install, then the tiny model's warm start (on 1 thread, so the same
# model whatever the load; cached afterwards) and training + evaluation: 16 + 4 min beside other jobs (2026-12-02).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# threads=1: training on one torch thread too, so an idle machine (where auto picks 2) prints the README's figures
echo "+ rl train experiment=quickstart threads=1 $*"
exec .venv/bin/rl train experiment=quickstart threads=1 "$@"
