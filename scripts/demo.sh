#!/usr/bin/env bash
# The README's first command: install, build the tiny model, train GRPO briefly, evaluate, print a summary.
#   bash scripts/demo.sh [extra overrides...]
# ~6-7 minutes on 2 CPU cores the first time (4 of them the tiny model's warm start, cached afterwards).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
echo "+ rl train experiment=quickstart $*"
exec .venv/bin/rl train experiment=quickstart "$@"
