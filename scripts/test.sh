#!/usr/bin/env bash
# The README's second command: install, then run the test suite (fast tests; add `-m slow` for end-to-end ones).
#   bash scripts/test.sh [pytest args...]
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# The HTML-report test renders in a real headless browser (Debian's chromium); install it where we can.
if [ ! -x /usr/bin/chromium ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  (apt-get update -qq && apt-get install -y -qq chromium >/dev/null) || echo "warning: could not install chromium"
fi
exec .venv/bin/python -m pytest "$@"
