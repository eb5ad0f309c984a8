#!/usr/bin/env bash
# The README's second command: install, then run the test suite (fast tests; add `-m slow` for end-to-end ones).
#   bash scripts/test.sh [pytest args...]
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/python -m pytest "$@"
