"""The tiny model's warm start: supervised training on the task's own reference traces (`warm_start_trace`), in
length-bucketed micro-batches, on a fixed torch thread count (`workbench.progress.build_threads`, so the weights do
not depend on the load), and the greedy held-out accuracy measured afterwards (`greedy_accuracy`, on
`workbench.evaluation.generate`'s loop).
"""

from __future__ import annotations

import contextlib
import math
import random
import sys
from typing import Any

import torch
import torch.nn.functional as F
from transformers import PreTrainedTokenizerFast, Qwen2ForCausalLM

from workbench.config import ConfigError, TinyModelConfig
from workbench.evaluation.generate import sample
from workbench.models.tiny_tokenizer import encode_example, uses_tools
from workbench.progress import Progress, build_threads
from workbench.tasks.base import Task, is_correct, padded_trace

# Warm-start optimiser details not exposed in TinyModelConfig. Held-out accuracy on 2-digit a+-b climbs
# steeply between steps 500 and 700 (the model is still "grokking" the carries when the schedule ends), so
# the LR decays to 10% of its peak rather than to 0, and AdamW weight decay is 0.1 (the nanoGPT values).
# Measured, 700 steps, 200 held-out problems, seed 0: decay to 0 + wd 0.01 -> 43.5%; floor 0.1 -> 63%;
# wd 0.1 -> 55%; both -> 68% (seed 1 with floor 0.1: 76.5%). Run-to-run spread is +-10 points.
LR_FLOOR = 0.1
WEIGHT_DECAY = 0.1
ADAM_BETAS = (0.9, 0.95)


def warm_start_trace(task: Task, example: dict[str, Any], rng: random.Random, verbose: bool,
                     style: str = "steps") -> str | None:
    """One warm-start trace.

    `steps` (default, today's behaviour): the task's concise or step-by-step trace (`warm_start_completion`),
    exactly the calls it always made, so default caches and data are unchanged. `padded`: the short style is the
    task's working trace (`warm_start_working`, e.g. `<think>63-40=23. 23-5=18</think>18`; the concise trace when
    the task has none) and the long style restates it (`padded_trace`, 3 copies), so both are equally informative
    and a model can be short and right. The working matters: with the concise direct answer as the short style
    the 1M model reached only 22% greedy held-out accuracy after the 700-step warm start (65-80% with steps).
    """
    if style == "steps":
        return task.warm_start_completion(example, rng, verbose)
    short = task.warm_start_working(example, rng) or task.warm_start_completion(example, rng, False)
    if short is None or not verbose:
        return short
    return padded_trace(short)


def _lr_lambda(steps: int, floor: float = LR_FLOOR) -> Any:
    """Linear warm-up over the first 5% of steps, then cosine decay to `floor` x the peak.

    Not transformers' get_cosine_with_min_lr_schedule_with_warmup_lr_rate (min_lr_rate=floor), though it has the
    same floor: its decay runs one step ahead of this one, so every cached tiny model (and the warm-start figures
    in DESIGN.md) would change with it; swap it in together with a CACHE_FORMAT bump."""
    warmup = max(1, steps // 20)

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, steps - warmup)
        return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return factor


def make_batch(
    prompt_ids: list[list[int]], completion_ids: list[list[int]], eos_id: int, pad_id: int,
    trainable: list[list[int] | None] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded `prompt + completion + eos` and labels that are -100 except on completion and eos (and, with
    `trainable` masks, except on completion tokens marked 0: tool results)."""
    seqs = [p + c + [eos_id] for p, c in zip(prompt_ids, completion_ids)]
    width = max(len(s) for s in seqs)
    input_ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    labels = torch.full((len(seqs), width), -100, dtype=torch.long)
    for row, (p, s) in enumerate(zip(prompt_ids, seqs)):
        input_ids[row, : len(s)] = torch.tensor(s)
        target = torch.tensor(s[len(p) :])
        keep = trainable[row] if trainable is not None else None
        if keep is not None:
            target = torch.where(torch.tensor([*keep, 1], dtype=torch.bool), target, torch.tensor(-100))
        labels[row, len(p) : len(s)] = target
    return input_ids, labels


def length_buckets(lengths: list[int], min_saving: float = 0.15) -> list[list[int]]:
    """Split row indices into at most two groups by length when that saves >= `min_saving` of padded tokens.

    Warm-start batches mix ~25-token concise and ~65-token verbose traces, so padding everything to the
    longest wastes ~25% of the compute; two length-sorted micro-batches (same summed loss, so the same
    gradient) cut a step from ~0.33 s to ~0.25 s on 2 cores. The split point minimises padded tokens.
    """
    order = sorted(range(len(lengths)), key=lengths.__getitem__)
    n, longest = len(order), lengths[order[-1]]
    best_k, best_cost = n, n * longest
    for k in range(1, n):
        cost = k * lengths[order[k - 1]] + (n - k) * longest
        if cost < best_cost:
            best_k, best_cost = k, cost
    if best_k == n or best_cost > (1.0 - min_saving) * n * longest:
        return [order]
    return [order[:best_k], order[best_k:]]


def warm_start_loss(model: Any, batches: list[tuple[torch.Tensor, torch.Tensor]], backward: bool = True) -> float:
    """Mean next-token loss over all labelled tokens of `batches` (micro-batches of one step); backprops it."""
    total_tokens = sum(int((labels[:, 1:] != -100).sum()) for _, labels in batches)
    total = 0.0
    for input_ids, labels in batches:
        logits = model(input_ids=input_ids, use_cache=False).logits
        loss = F.cross_entropy(
            logits[:, :-1].reshape(-1, logits.shape[-1]), labels[:, 1:].reshape(-1),
            ignore_index=-100, reduction="sum",
        ) / max(1, total_tokens)
        if backward:
            loss.backward()
        total += loss.item()
    return total


def check_positions(tiny: TinyModelConfig, task: Task, tokens: int) -> None:
    """ConfigError naming model.tiny.max_positions (and a value that fits) when a `tokens`-long sequence does not."""
    if tokens > tiny.max_positions:
        fits = 1 << (tokens - 1).bit_length()
        natural = getattr(getattr(task, "cfg", None), "prompt_style", None) == "natural"
        raise ConfigError(
            f"model.tiny.max_positions={tiny.max_positions} is too small for task '{getattr(task, 'name', '?')}': a "
            f"warm-start sequence has {tokens} tokens (set model.tiny.max_positions={fits}"
            + (", or shorten the prompts with task.prompt_style=compact)" if natural else ")")
        )


def warm_start(
    model: Qwen2ForCausalLM,
    tokenizer: PreTrainedTokenizerFast,
    task: Task,
    train: list[dict[str, Any]],
    tiny: TinyModelConfig,
    progress: bool = True,
    threads: int | None = None,
) -> list[float]:
    """Supervised training on `prompt + trace + <eos>` (loss on trace and eos only). Returns per-step losses.

    Speed on 2 CPU cores: float32, no attention mask (right padding + causal attention already hides the
    padding from every real token, and sdpa can take its is_causal fast path), no KV cache, and each batch
    split into at most two length buckets (`length_buckets`) padded to their own longest sequence. Runs on `threads`
    torch threads (default `build_threads()`) and restores the caller's count afterwards.
    """
    rng = random.Random(tiny.seed)
    steps, batch_size = tiny.warm_start_steps, tiny.warm_start_batch_size
    tools = uses_tools(task)
    prompt_ids = tokenizer([str(ex["prompt"]) for ex in train], add_special_tokens=False)["input_ids"]
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=tiny.warm_start_lr, betas=ADAM_BETAS, weight_decay=WEIGHT_DECAY, foreach=True
    )
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _lr_lambda(steps))
    check_positions(tiny, task, max(map(len, prompt_ids), default=0) + 3)  # long prompts fail now, not at step k
    losses: list[float] = []
    saved_threads = torch.get_num_threads()
    model.train()
    with contextlib.ExitStack() as stack:
        stack.callback(torch.set_num_threads, saved_threads)
        torch.set_num_threads(threads or build_threads())
        bar = Progress("tiny warm start", steps, enabled=progress, stream=sys.stderr)
        stack.callback(bar.close)
        for step in range(steps):
            idx = [rng.randrange(len(train)) for _ in range(batch_size)]
            traces = [warm_start_trace(task, train[i], rng, rng.random() < tiny.verbose_fraction, tiny.verbose_style)
                      for i in idx]
            if tools:
                encoded = [encode_example(tokenizer, str(train[i]["prompt"]), t, True) for i, t in zip(idx, traces)]
                prompts = [e[0] for e in encoded]
                completion_ids = [e[1] for e in encoded]
                trainable = [e[2] for e in encoded]
            else:
                completion_ids = tokenizer(traces, add_special_tokens=False)["input_ids"]
                prompts = [prompt_ids[i] for i in idx]
                trainable = [None] * len(idx)
            check_positions(tiny, task, max(len(p) + len(c) + 1 for p, c in zip(prompts, completion_ids)))
            groups = length_buckets([len(p) + len(c) for p, c in zip(prompts, completion_ids)])
            batches = [
                make_batch([prompts[r] for r in g], [completion_ids[r] for r in g],
                           tokenizer.eos_token_id, tokenizer.pad_token_id, [trainable[r] for r in g])
                for g in groups
            ]
            optimizer.zero_grad(set_to_none=True)
            loss = warm_start_loss(model, batches)
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            scheduler.step()
            losses.append(loss)
            bar.update(step + 1, f"loss {losses[-1]:.3f}")
    model.eval()
    return losses


def greedy_accuracy(
    model: Any,
    tokenizer: Any,
    task: Task,
    examples: list[dict[str, Any]],
    max_new_tokens: int,
    batch_size: int = 100,
) -> tuple[float, list[str]]:
    """Greedy accuracy (full credit by `task.score`, `is_correct`: a partial-credit near miss is wrong, as in rl eval)
    on the raw prompts, in left-padded batches of `batch_size`: rl eval's sampling loop (`generate.sample`) at
    temperature 0, so it reseeds torch's global RNG (`build_into` runs it in a fork). Returns (accuracy, completions).
    """
    if not examples:
        return float("nan"), []
    samples = sample(model, tokenizer, [str(ex["prompt"]) for ex in examples], n=1, temperature=0.0,
                     max_new_tokens=max_new_tokens, batch_size=batch_size)
    completions = [s.text for s in samples]
    scores = [float(is_correct(task.score(c, ex))) for c, ex in zip(completions, examples)]
    return sum(scores) / len(scores), completions
