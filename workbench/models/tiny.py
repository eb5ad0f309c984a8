"""The tiny model: a ~1M-parameter Qwen2-style decoder that the workbench builds, warm-starts and caches itself.

Why it exists: this machine has no GPU and no network, yet RL needs a policy that is right some of the
time (GRPO learns nothing from groups that are all wrong). A short supervised warm start on the task's own
reference traces gets the ~1M-parameter model to 65-80% greedy held-out accuracy on 2-digit a±b (default
task, 700 steps of batch 64; 80% measured end to end): ~4.5 min (0.38 s/step) on the one torch thread every
build uses, so that a build gives the same weights whatever the machine's load (two idle cores would take ~3 min).
The format is learned within ~100 steps, the arithmetic only after ~500 (as in the DESIGN.md prototype: 79.5% after
700 steps).

Recipe, top to bottom (`load_tiny`):
1. Collect the task's text: training prompts and, for each, a concise and a verbose warm-start trace.
   The text determines the tokenizer vocabulary and, hashed, the cache key.
2. Cache lookup at `<cache>/tiny/<hash>/`, where hash = sha256 of (CACHE_FORMAT, TinyModelConfig fields,
   task name + fingerprint of its data and traces). Same config + same task -> hit; any change -> miss.
3. On a miss (under a per-hash file lock so parallel runs build once): build the character tokenizer and
   the model, warm-start, measure greedy held-out accuracy, save everything into a temp dir and rename it
   into place, so a killed build never leaves a half-written cache.
4. Load model + tokenizer from the cache directory with plain `from_pretrained`.

The parts, one idea each: `tiny_tokenizer` (character tokenizer, chat templates), `tiny_arch` (the Qwen2 config and
its checks), `tiny_warm_start` (traces, batches, the training loop, greedy accuracy on rl eval's sampling loop),
`tiny_cache` (material, key, locked build, `ensure_cached`); the build runs on a fixed torch thread count,
`workbench.progress.build_threads()` (1 unless $RL_TINY_BUILD_THREADS says otherwise, which then enters the key).
This module loads the result (`load_tiny`) and re-exports the parts' names.

The cache directory is a normal `save_pretrained` folder (model.safetensors, config.json,
generation_config.json, tokenizer.json, tokenizer_config.json) plus `warm_start.json` (key, losses,
accuracy, sample completions), so `AutoModelForCausalLM.from_pretrained(<dir>)` works on it directly.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from transformers import PreTrainedTokenizerFast, Qwen2ForCausalLM

from workbench.config import ModelConfig
from workbench.models.tiny_arch import build_model, check_tiny_config
from workbench.models.tiny_cache import (
    META_FILE,
    cache_hash,
    cache_key,
    collect_task_material,
    ensure_cached,
    quiet_transformers,
)
from workbench.models.tiny_tokenizer import (
    CHAT_TEMPLATE,
    TOOL_CHAT_TEMPLATE,
    TOOL_RESPONSE_TEMPLATE,
    build_tokenizer,
    encode_example,
)
from workbench.models.tiny_warm_start import length_buckets, make_batch, warm_start, warm_start_loss, warm_start_trace
from workbench.tasks.base import Task

# The parts' names callers and tests import from here (re-exported).
__all__ = [
    "CHAT_TEMPLATE", "META_FILE", "TOOL_CHAT_TEMPLATE", "PreTrainedTokenizerFast", "build_model", "build_tokenizer",
    "cache_hash", "cache_key", "check_tiny_config", "collect_task_material", "encode_example", "length_buckets",
    "load_tiny", "make_batch", "warm_start", "warm_start_loss", "warm_start_trace",
]


def load_tiny(
    cfg: ModelConfig, task: Task, cache_root: Path, progress: bool = True, padding_side: str = "left"
) -> tuple[Qwen2ForCausalLM, PreTrainedTokenizerFast, dict[str, Any]]:
    """The `tiny` branch of `load_model_and_tokenizer`: build-or-load the cached warm-started model."""
    from workbench.models import torch_dtype

    dtype = torch_dtype(cfg.dtype)
    start = time.perf_counter()
    path, hit = ensure_cached(cache_root, cfg.tiny, task, progress=progress)
    from workbench.models.hf import load_tokenizer

    tokenizer = load_tokenizer(path, padding_side=padding_side)
    if tokenizer.chat_template == TOOL_CHAT_TEMPLATE:
        tokenizer.response_template = TOOL_RESPONSE_TEMPLATE
    with quiet_transformers():
        model = Qwen2ForCausalLM.from_pretrained(path, dtype=dtype, attn_implementation="sdpa")
    model.eval()
    meta = json.loads((path / META_FILE).read_text())
    info = {
        "kind": "tiny",
        "name_or_path": str(path),
        "cache_path": str(path),
        "cache_hit": hit,
        "load_seconds": round(time.perf_counter() - start, 3),
        "warm_start_seconds": meta.get("warm_start_seconds"),
        "warm_start_accuracy": meta.get("warm_start_accuracy"),
        "warm_start_loss_initial": meta.get("warm_start_loss_initial"),
        "warm_start_loss_final": meta.get("warm_start_loss_final"),
        "warm_start_eval_examples": meta.get("warm_start_eval_examples"),
    }
    return model, tokenizer, info
