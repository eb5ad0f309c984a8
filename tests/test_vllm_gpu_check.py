"""The parts of the prepared GPU check (scripts/gpu_check.sh, scripts/gpu_check.py) that run without a GPU: the
shell script parses, and `--dry-run` prints the steps, the vLLM step's commands where vLLM imports and its one skip
line where it does not (the real check needs CUDA: it has not run on this machine)."""

from __future__ import annotations

import importlib.util
import subprocess
import sys

from tests.conftest import ROOT

HAS_VLLM = importlib.util.find_spec("vllm") is not None


def test_gpu_check_script_parses():
    res = subprocess.run(["bash", "-n", "scripts/gpu_check.sh"], cwd=ROOT, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr


def test_gpu_check_dry_run_plans_the_vllm_step_or_skips_it_in_one_line():
    res = subprocess.run([sys.executable, "scripts/gpu_check.py", "--dry-run"], cwd=ROOT, capture_output=True,
                         text=True, timeout=300)
    assert res.returncode == 0, res.stdout + res.stderr
    lines = res.stdout.strip().splitlines()
    assert lines[0].startswith("gpu_check (dry run): rl train experiment=quickstart model.dtype=bfloat16"), lines
    skipped = [x for x in lines if x.startswith("gpu_check: vLLM step skipped: ")]
    if not HAS_VLLM:
        assert skipped == ["gpu_check: vLLM step skipped: vllm is not installed (on a CPU machine: bash "
                           "scripts/setup_vllm.sh, then use .venv-vllm)"], lines
        assert not any("use_vllm" in x for x in lines), lines
        return
    assert not skipped, lines
    (train,) = [x for x in lines if "algo.use_vllm=true algo.vllm_mode=colocate" in x]
    assert train.startswith("gpu_check (dry run): rl train experiment=quickstart") and "runs-vllm" in train, train
    assert any(x.startswith("gpu_check (dry run): rl eval RUN_DIR eval.backend=vllm eval.n=4") for x in lines), lines
