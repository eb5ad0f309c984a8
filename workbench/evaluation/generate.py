"""Batched sampling for evaluation: left padding, the KV cache, chunks sized to memory.

One `model.generate` call per chunk of prompts x samples, instead of one call per prompt (the plain loop that
`scripts/bench_eval.py` compares against).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
from transformers import LogitsProcessor, LogitsProcessorList

from workbench.prompts import add_special_tokens, render_prompt


class EntropyRecorder(LogitsProcessor):
    """Records, at every generated step, the entropy of the sampling distribution softmax(logits / T).

    Streaming: keeps one (B,) vector per step instead of `output_scores`' (B, V) logits per step, so entropy
    costs no memory worth mentioning even with a 150k-token vocabulary. It runs after the model's own logits
    processors and before the temperature/top-k/top-p warpers, so it divides by the temperature itself
    (greedy decoding: T=1). `sample` disables top-k/top-p, so this is exactly the distribution sampled from.
    """

    def __init__(self, temperature: float = 1.0):
        self.temperature = float(temperature) if temperature and temperature > 0 else 1.0
        self.steps: list[torch.Tensor] = []

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        logp = torch.log_softmax(scores.float() / self.temperature, dim=-1)
        p = logp.exp()
        self.steps.append(-(p * torch.where(p > 0, logp, torch.zeros_like(logp))).sum(-1))
        return scores

    def entropies(self) -> torch.Tensor:
        """(B, T) entropies of the T generated steps."""
        return torch.stack(self.steps, dim=1).cpu() if self.steps else torch.zeros(0, 0)


def fit_batch_size(model, batch_size: int, seq_len: int, memory_fraction: float = 0.5) -> int:
    """`batch_size`, lowered so one chunk's KV cache and logits fit in `memory_fraction` of free memory.

    Free memory is the free CUDA memory of the model's device, or available RAM on CPU. Per sequence the chunk
    holds a KV cache of 2 x layers x kv_heads x head_dim values per token over `seq_len` tokens, plus one
    step's float32 logits (vocabulary size). Never below 1; unknown model shapes leave `batch_size` as is.
    """
    cfg = getattr(model, "config", None)
    try:
        layers = int(cfg.num_hidden_layers)
        heads = int(getattr(cfg, "num_key_value_heads", None) or cfg.num_attention_heads)
        head_dim = int(getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads)
        vocab = int(cfg.vocab_size)
        param = next(model.parameters())
    except (AttributeError, TypeError, ValueError, StopIteration):
        return max(1, int(batch_size))
    per_seq = 2 * layers * heads * head_dim * seq_len * param.element_size() + 4 * vocab * 3
    try:
        if param.device.type == "cuda":
            free = torch.cuda.mem_get_info(param.device)[0]
        else:
            free = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError, RuntimeError):
        return max(1, int(batch_size))
    return max(1, min(int(batch_size), int(free * memory_fraction // max(per_seq, 1))))


@dataclass
class Sample:
    problem: int  # index of the problem
    text: str
    ids: list[int]
    truncated: bool
    entropy: list[float] | None = None  # per-token entropy of the sampling distribution


@torch.no_grad()
def sample(
    model,
    tokenizer,
    prompts: list[str],
    n: int = 1,
    temperature: float = 1.0,
    max_new_tokens: int = 80,
    batch_size: int = 64,
    use_chat_template: bool = False,
    with_entropy: bool = False,
    seed: int = 0,
    progress: Any = None,
) -> list[Sample]:
    """`n` samples for each prompt (greedy when temperature == 0). Returns len(prompts) * n samples, problem-major.

    `progress` is an optional callable(num_done) for a progress bar.
    """
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    old_side = tokenizer.padding_side
    tokenizer.padding_side = "left"
    eos = model.generation_config.eos_token_id
    eos_ids = set(eos if isinstance(eos, list) else [eos]) if eos is not None else {tokenizer.eos_token_id}
    jobs = [(i, render_prompt(tokenizer, p, use_chat_template)) for i, p in enumerate(prompts) for _ in range(n)]
    specials = add_special_tokens(use_chat_template, tokenizer)  # exactly as TRL tokenizes (workbench.prompts)
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(int(torch.randint(0, 2**31 - 1, (1,), generator=gen)))
    out: list[Sample] = []
    try:
        for start in range(0, len(jobs), batch_size):
            chunk = jobs[start : start + batch_size]
            enc = tokenizer([t for _, t in chunk], return_tensors="pt", padding=True, add_special_tokens=specials).to(device)
            recorder = EntropyRecorder(temperature) if with_entropy else None
            kwargs: dict[str, Any] = dict(
                max_new_tokens=max_new_tokens,
                pad_token_id=tokenizer.pad_token_id,
                eos_token_id=list(eos_ids),
                use_cache=True,
                return_dict_in_generate=True,
            )
            if recorder is not None:
                kwargs["logits_processor"] = LogitsProcessorList([recorder])
            if temperature > 0:
                kwargs.update(do_sample=True, temperature=temperature, top_k=0, top_p=1.0)
            else:
                kwargs.update(do_sample=False)
            res = model.generate(**enc, **kwargs)
            new = res.sequences[:, enc["input_ids"].size(1) :]
            ent = recorder.entropies() if recorder is not None else None  # (B, T) or None
            for row, (pi, _) in enumerate(chunk):
                ids = new[row].tolist()
                end = next((k for k, t in enumerate(ids) if t in eos_ids), None)
                truncated = end is None
                keep = ids if end is None else ids[: end + 1]
                text = tokenizer.decode(keep, skip_special_tokens=True)
                e = ent[row, : len(keep)].tolist() if ent is not None else None
                out.append(Sample(pi, text, keep, truncated, e))
            if progress is not None:
                progress(len(out))
    finally:
        tokenizer.padding_side = old_side
        model.train(was_training)
    return out
