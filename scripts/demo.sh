#!/usr/bin/env bash
# The README's first command: install, build the tiny model, train GRPO briefly, evaluate, print a summary.
#   bash scripts/demo.sh [extra overrides...]
# ~8 minutes on a fresh 2-core machine: ~2 install, ~3 the tiny model's warm start (cached afterwards), ~2.5 training + evaluation.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
echo "+ rl train experiment=quickstart $*"
exec .venv/bin/rl train experiment=quickstart "$@"
