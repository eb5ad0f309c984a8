"""Model + tokenizer factory: `load_model_and_tokenizer(cfg.model, task)` for both model kinds.

- `tiny`: the workbench's own ~1M-parameter Qwen2-style model with a character tokenizer built from the
  task's text, warm-started by supervised training on the task's reference traces and cached by config hash
  under `<cache>/tiny/<hash>/` (see `workbench.models.tiny`).
- `hf`: any causal LM that `transformers` can load by hub name (from the local HF cache) or from a local
  directory, e.g. a run's `final/` folder (see `workbench.models.hf`); or a GGUF file (`gguf_file`), converted
  once to an HF directory cached under `<cache>/gguf/` (see `workbench.models.gguf`; `model=smollm2-135m`).

LoRA (peft) is applied on top of either kind when `model.lora.enabled` is true.

This module imports torch/transformers lazily so that importing `workbench.models` stays cheap.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from workbench.config import ConfigError, LoraConfig, ModelConfig

if TYPE_CHECKING:  # pragma: no cover
    from workbench.tasks.base import Task

__all__ = ["load_model_and_tokenizer", "default_cache_dir", "apply_lora", "count_params", "torch_dtype"]

CACHE_ENV = "RL_CACHE_DIR"


def default_cache_dir() -> Path:
    """`$RL_CACHE_DIR` if set, else `~/.cache/rl-workbench`."""
    env = os.environ.get(CACHE_ENV)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "rl-workbench"


def torch_dtype(name: str) -> Any:
    import torch

    try:
        return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[name]
    except KeyError:
        raise ConfigError(f"model.dtype={name!r} is not valid; choose one of: float32, bfloat16, float16") from None


def count_params(model: Any) -> tuple[int, int]:
    """(total, trainable) parameter counts; tied weights are counted once."""
    seen: set[int] = set()
    total = trainable = 0
    for p in model.parameters():
        if id(p) in seen:
            continue
        seen.add(id(p))
        total += p.numel()
        if p.requires_grad:
            trainable += p.numel()
    return total, trainable


def apply_lora(model: Any, lora: LoraConfig) -> Any:
    """Wrap `model` in a peft LoRA adapter; only the adapter weights stay trainable."""
    import peft

    peft_cfg = peft.LoraConfig(
        r=lora.r,
        lora_alpha=lora.alpha,
        lora_dropout=lora.dropout,
        target_modules=list(lora.target_modules),
        bias="none",
        task_type="CAUSAL_LM",
    )
    try:
        return peft.get_peft_model(model, peft_cfg)
    except ValueError as e:  # e.g. no module matches target_modules
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ConfigError(f"model.lora.target_modules={list(lora.target_modules)}: {msg}") from None


def load_model_and_tokenizer(
    cfg: ModelConfig,
    task: Task,
    cache_dir: Path | str | None = None,
    progress: bool = True,
    padding_side: str = "left",
) -> tuple[Any, Any, dict[str, Any]]:
    """Build or load the model and tokenizer described by `cfg` (the `model` config group).

    Returns `(model, tokenizer, info)`. `info` always has the keys: kind, name_or_path, dtype, num_params,
    num_trainable_params, lora, vocab_size, load_seconds, cache_path, cache_hit, warm_start_seconds,
    warm_start_accuracy, warm_start_loss_initial, warm_start_loss_final (the last six are None for `hf`).

    `task` is needed by the tiny model (tokenizer vocabulary, warm-start traces, cache key); `hf` ignores it.
    `padding_side` is set on the returned tokenizer ("left" suits generation, which is what RL does).
    """
    if padding_side not in ("left", "right"):
        raise ValueError(f"padding_side must be 'left' or 'right', got {padding_side!r}")
    if cfg.kind == "tiny":
        from workbench.models.tiny import load_tiny

        cache = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
        model, tokenizer, info = load_tiny(cfg, task, cache, progress=progress, padding_side=padding_side)
    elif cfg.kind == "hf" and cfg.gguf_file:
        import dataclasses

        from workbench.models.gguf import convert_gguf
        from workbench.models.hf import load_hf

        cache = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
        folder, gguf_info = convert_gguf(cfg.gguf_file, cache, progress=progress)
        model, tokenizer, info = load_hf(dataclasses.replace(cfg, name_or_path=str(folder), gguf_file=None),
                                         padding_side=padding_side)
        info.update(gguf_info, name_or_path=str(folder))
    elif cfg.kind == "hf":
        from workbench.models.hf import load_hf

        model, tokenizer, info = load_hf(cfg, padding_side=padding_side)
    else:
        raise ConfigError(f"model.kind={cfg.kind!r} is not valid; choose one of: hf, tiny")

    if cfg.lora.enabled:
        model = apply_lora(model, cfg.lora)
    total, trainable = count_params(model)
    info.update(
        num_params=total,
        num_trainable_params=trainable,
        lora=cfg.lora.enabled,
        dtype=cfg.dtype,
        vocab_size=len(tokenizer),
    )
    return model, tokenizer, info
