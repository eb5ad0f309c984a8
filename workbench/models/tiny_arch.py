"""The tiny model's architecture: a Qwen2-style decoder sized by `TinyModelConfig`, and the checks that fail early
on shapes Qwen2 cannot build or a warm start cannot run.
"""

from __future__ import annotations

from transformers import GenerationConfig, PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM

from workbench.config import VERBOSE_STYLES, ConfigError, TinyModelConfig


def check_tiny_config(tiny: TinyModelConfig) -> None:
    """Fail early, naming the key, on shapes Qwen2 cannot build or a warm start cannot run."""
    positive = ["hidden_size", "num_layers", "num_heads", "num_kv_heads", "intermediate_size", "max_positions",
                "warm_start_batch_size"]
    for name in positive:
        if getattr(tiny, name) <= 0:
            raise ConfigError(f"model.tiny.{name} must be positive, got {getattr(tiny, name)}")
    if tiny.hidden_size % tiny.num_heads:
        raise ConfigError(
            f"model.tiny.hidden_size={tiny.hidden_size} must be divisible by model.tiny.num_heads={tiny.num_heads}"
        )
    if tiny.num_heads % tiny.num_kv_heads:
        raise ConfigError(
            f"model.tiny.num_heads={tiny.num_heads} must be divisible by model.tiny.num_kv_heads={tiny.num_kv_heads}"
        )
    if (tiny.hidden_size // tiny.num_heads) % 2:
        raise ConfigError("model.tiny.hidden_size / model.tiny.num_heads must be even (rotary embeddings)")
    if tiny.warm_start_steps < 0:
        raise ConfigError(f"model.tiny.warm_start_steps must be >= 0, got {tiny.warm_start_steps}")
    if tiny.warm_start_lr <= 0:
        raise ConfigError(f"model.tiny.warm_start_lr must be positive, got {tiny.warm_start_lr}")
    if not 0.0 <= tiny.verbose_fraction <= 1.0:
        raise ConfigError(f"model.tiny.verbose_fraction must be in [0, 1], got {tiny.verbose_fraction}")
    if tiny.verbose_style not in VERBOSE_STYLES:
        raise ConfigError(f"model.tiny.verbose_style must be one of {', '.join(VERBOSE_STYLES)}, "
                          f"got {tiny.verbose_style!r}")


def build_model(tiny: TinyModelConfig, tokenizer: PreTrainedTokenizerFast) -> Qwen2ForCausalLM:
    """A randomly initialised Qwen2ForCausalLM sized by `tiny` (defaults: 128 hidden, 4 layers, ~1.0M params)."""
    ids = dict(pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
               bos_token_id=tokenizer.bos_token_id)
    config = Qwen2Config(
        vocab_size=len(tokenizer),
        hidden_size=tiny.hidden_size,
        intermediate_size=tiny.intermediate_size,
        num_hidden_layers=tiny.num_layers,
        num_attention_heads=tiny.num_heads,
        num_key_value_heads=tiny.num_kv_heads,
        max_position_embeddings=tiny.max_positions,
        tie_word_embeddings=True,  # the embedding is a large share of a 1M model; tying also regularises
        use_sliding_window=False,
        **ids,
    )
    config._attn_implementation = "sdpa"
    model = Qwen2ForCausalLM(config)
    model.generation_config = GenerationConfig(**ids)
    return model
