#!/usr/bin/env bash
# The prepared GPU check: on a CUDA machine with no network, train the tiny model in bf16 for a few GRPO steps,
# evaluate it, and print what ran on the GPU (under 5 minutes on one H100/H200). Not part of the CPU test suite.
# With 2+ GPUs it also trains on 2 processes through conf/accelerate/ddp.yaml and prints that step time. Where vLLM
# imports it then trains with algo.use_vllm=true (colocate) and evaluates with eval.backend=vllm, printing tokens/s
# and the logprob gap next to HF generation's; without vLLM one line says the step is skipped.
#   bash scripts/gpu_check.sh              (--dry-run: print the steps, run nothing; works without a GPU)
# The machine's python3 must have torch with CUDA. Packages it lacks come from .whl/ (made by scripts/gpu_wheels.sh
# on a machine with PyPI access) and are installed offline into a temporary folder; nothing else is touched.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
if [ -d .whl ]; then
  SITE="${RL_GPU_SITE:-/tmp/rl-gpu-site}"
  "$PY" -m pip install --quiet --no-index --no-deps --no-build-isolation --no-compile --target "$SITE" .whl/*
  export PYTHONPATH="$SITE:$PWD${PYTHONPATH:+:$PYTHONPATH}"
else
  export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
exec "$PY" scripts/gpu_check.py "$@"
