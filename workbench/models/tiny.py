"""The tiny model: a ~1M-parameter Qwen2-style decoder that the workbench builds, warm-starts and caches itself.

Why it exists: this machine has no GPU and no network, yet RL needs a policy that is right some of the
time (GRPO learns nothing from groups that are all wrong). A short supervised warm start on the task's own
reference traces gets the ~1M-parameter model to 65-80% greedy held-out accuracy on 2-digit a±b (default
task, 700 steps of batch 64; 80% measured end to end): ~3 min on 2 idle cores (0.27 s/step), ~4.5 min on
one core (0.38 s/step). The format is learned within ~100 steps, the arithmetic only after ~500 (as in the
DESIGN.md prototype: 79.5% after 700 steps).

Recipe, top to bottom (`load_tiny`):
1. Collect the task's text: training prompts and, for each, a concise and a verbose warm-start trace.
   The text determines the tokenizer vocabulary and, hashed, the cache key.
2. Cache lookup at `<cache>/tiny/<hash>/`, where hash = sha256 of (CACHE_FORMAT, TinyModelConfig fields,
   task name + fingerprint of its data and traces). Same config + same task -> hit; any change -> miss.
3. On a miss (under a per-hash file lock so parallel runs build once): build the character tokenizer and
   the model, warm-start, measure greedy held-out accuracy, save everything into a temp dir and rename it
   into place, so a killed build never leaves a half-written cache.
4. Load model + tokenizer from the cache directory with plain `from_pretrained`.

The cache directory is a normal `save_pretrained` folder (model.safetensors, config.json,
generation_config.json, tokenizer.json, tokenizer_config.json) plus `warm_start.json` (key, losses,
accuracy, sample completions), so `AutoModelForCausalLM.from_pretrained(<dir>)` works on it directly.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import math
import os
import random
import shutil
import string
import sys
import tempfile
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from filelock import FileLock
from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers
from transformers import (
    GenerationConfig,
    PreTrainedTokenizerFast,
    Qwen2Config,
    Qwen2ForCausalLM,
)

from workbench.config import VERBOSE_STYLES, ConfigError, ModelConfig, TinyModelConfig
from workbench.progress import num_cores
from workbench.signals import completion_transcript
from workbench.tasks.base import THINK_CLOSE, THINK_OPEN, Task, padded_trace

# Bump when the build recipe (tokenizer, architecture, warm-start loop) changes, so stale caches miss.
CACHE_FORMAT = 2
# Warm-start optimiser details not exposed in TinyModelConfig. Held-out accuracy on 2-digit a+-b climbs
# steeply between steps 500 and 700 (the model is still "grokking" the carries when the schedule ends), so
# the LR decays to 10% of its peak rather than to 0, and AdamW weight decay is 0.1 (the nanoGPT values).
# Measured, 700 steps, 200 held-out problems, seed 0: decay to 0 + wd 0.01 -> 43.5%; floor 0.1 -> 63%;
# wd 0.1 -> 55%; both -> 68% (seed 1 with floor 0.1: 76.5%). Run-to-run spread is +-10 points.
LR_FLOOR = 0.1
WEIGHT_DECAY = 0.1
ADAM_BETAS = (0.9, 0.95)
META_FILE = "warm_start.json"
# Held-out examples for the greedy accuracy measured after the warm start (~2 s on 2 cores).
EVAL_EXAMPLES = 100
# Training examples whose traces enter the cache fingerprint verbatim (all prompts/answers always do).
FINGERPRINT_TRACES = 64

PAD, EOS, BOS, UNK = "<pad>", "<eos>", "<bos>", "<unk>"
SPECIAL_TOKENS = (PAD, EOS, BOS, UNK)  # ids 0..3, in this order
THINK_TOKENS = (THINK_OPEN, THINK_CLOSE)  # ids 4, 5: single, non-special tokens
# Printable ASCII plus tab and newline are always in the vocabulary, whatever the task's text, so prompts
# written by hand (rl eval, chat templates) never hit <unk> on ordinary characters.
BASE_CHARS = frozenset(string.printable) - frozenset("\x0b\x0c\r")
# Concatenate message contents: the tiny model was warm-started on raw prompts, so use_chat_template=true
# must produce the same raw prompt.
CHAT_TEMPLATE = "{% for message in messages %}{{ message['content'] }}{% endfor %}"
# With tools (task.tools): a chat template TRL's multi-turn tool loop accepts (it renders a full tool-calling
# conversation and is prefix-preserving). An assistant turn is a newline (its header, also the generation prompt),
# its text, its calls as `<call>NAME key=value</call>` and `<eos>`; a tool result is `<result>...</result>`. So "347*86=" asks
# "347*86=\n", and a calculator rollout reads `[agentic]<call>calculator expression=347*86</call><eos>`
# `<result>29842</result>\n29842<eos>`. The tool list is not rendered: the tiny model learns its tools from the
# warm start, not from a schema it could not read.
TOOL_CHAT_TEMPLATE = (
    "{%- for m in messages -%}"
    "{%- if m['role'] == 'assistant' -%}"
    "{{ '\\n' }}{{ m['content'] or '' }}"
    "{%- for tc in (m['tool_calls'] or []) -%}"
    "{%- set f = tc['function'] if 'function' in tc else tc -%}"
    "<call>{{ f['name'] }}{% for k, v in (f['arguments'] or {}).items() %} {{ k }}={{ v }}{% endfor %}</call>"
    "{%- endfor -%}{{ eos_token }}"
    "{%- elif m['role'] == 'tool' -%}<result>{{ m['content'] }}</result>"
    "{%- else -%}{{ m['content'] }}"
    "{%- endif -%}{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '\\n' }}{%- endif -%}"
)
# How transformers' `parse_response` (which TRL calls on every completion) reads the template's assistant turns
# back into {content, tool_calls}: the turn starts after the generation prompt's newline.
TOOL_RESPONSE_TEMPLATE = {
    "defaults": {"role": "assistant"},
    "start_anchor": "\n",
    "fields": {
        "tool_calls": {
            "open_pattern": r"<call>(?P<name>\w+)",
            "close": "</call>",
            "repeats": True,
            "content": "xml-inline",
            "content_args": {"tag_pattern": r"(?P<key>\w+)=(?P<value>[^<]*?)(?=\s+\w+=|$)"},
            "transform": {"type": "function", "function": {"name": "{name}", "arguments": "{content}"}},
        },
        "content": {"close_pattern": r"<eos>", "content": "text"},
    },
}


# ----------------------------------------------------------------------------------------------- tokenizer


def build_tokenizer(
    chars: Iterable[str], max_length: int = 256, padding_side: str = "left", tools: bool = False
) -> PreTrainedTokenizerFast:
    """A character-level tokenizer over BASE_CHARS plus `chars`, with `<think>`/`</think>` as single tokens.

    Layout: `<pad>`=0, `<eos>`=1, `<bos>`=2, `<unk>`=3, `<think>`=4, `</think>`=5, then the characters in
    sorted order. Nothing is added around encoded text (no BOS/EOS). The think tags are added tokens that
    are *not* special, so `decode(..., skip_special_tokens=True)` (what TRL does) keeps them.

    >>> tok = build_tokenizer("")
    >>> tok.convert_ids_to_tokens(tok("<think>1 2</think>")["input_ids"])
    ['<think>', '1', ' ', '2', '</think>']
    """
    symbols = sorted((BASE_CHARS | {c for c in chars if len(c) == 1}) - set(SPECIAL_TOKENS))
    vocab = {tok: i for i, tok in enumerate([*SPECIAL_TOKENS, *THINK_TOKENS, *symbols])}
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token=UNK))
    # One pre-token per character. "(?m)" makes "." match newlines too (Oniguruma/Ruby syntax); no
    # normalizer, so spaces and newlines are ordinary tokens and survive the round trip.
    backend.pre_tokenizer = pre_tokenizers.Split(Regex("(?m)."), behavior="isolated")
    # Fuse concatenates tokens; without a decoder `tokenizers` would join them with spaces.
    backend.decoder = decoders.Fuse()
    backend.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in SPECIAL_TOKENS])
    backend.add_tokens([AddedToken(t, special=False, normalized=False) for t in THINK_TOKENS])
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        pad_token=PAD,
        eos_token=EOS,
        bos_token=BOS,
        unk_token=UNK,
        # The default cleanup would turn "a ." into "a." and break decode(encode(s)) == s.
        clean_up_tokenization_spaces=False,
        padding_side=padding_side,
        model_max_length=max_length,
    )
    tokenizer.chat_template = TOOL_CHAT_TEMPLATE if tools else CHAT_TEMPLATE
    if tools:
        tokenizer.response_template = TOOL_RESPONSE_TEMPLATE
    return tokenizer


def uses_tools(task: Task) -> bool:
    return bool(getattr(task, "tools", ()))


def encode_example(tokenizer: PreTrainedTokenizerFast, prompt: str, trace: Any, tools: bool
                   ) -> tuple[list[int], list[int], list[int] | None]:
    """(prompt ids, completion ids, trainable mask or None = all) of one warm-start example, without the final eos.

    Without tools: the raw prompt and the trace, as always. With tools: the prompt and every turn rendered by the
    tokenizer's chat template (the layout TRL's tool loop produces), turn by turn so that tool results (and the
    generation prompt after them) are marked untrainable, as TRL's tool_mask marks them in RL.
    """
    if not tools:
        return (tokenizer(prompt, add_special_tokens=False)["input_ids"],
                tokenizer(trace, add_special_tokens=False)["input_ids"], None)
    messages = [{"role": "user", "content": prompt}]
    previous = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    prompt_ids = tokenizer(previous, add_special_tokens=False)["input_ids"]
    turns = [{"role": "assistant", "content": trace}] if isinstance(trace, str) else list(trace)
    ids: list[int] = []
    trainable: list[int] = []
    for k, turn in enumerate(turns):
        messages.append(turn)
        then_assistant = k + 1 < len(turns) and turns[k + 1]["role"] == "assistant"
        text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=then_assistant)
        if not text.startswith(previous):
            raise ValueError("the tool chat template is not prefix-preserving")
        piece = text[len(previous):]
        previous = text
        if k == len(turns) - 1 and piece.endswith(tokenizer.eos_token):
            piece = piece[: -len(tokenizer.eos_token)]  # make_batch appends the final eos
        piece_ids = tokenizer(piece, add_special_tokens=False)["input_ids"]
        ids += piece_ids
        trainable += [1 if turn["role"] == "assistant" else 0] * len(piece_ids)
    return prompt_ids, ids, trainable


# ----------------------------------------------------------------------------------------------- model


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


# ----------------------------------------------------------------------------------------------- task text


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


@dataclasses.dataclass
class TaskMaterial:
    """What the tiny model needs from a task: its examples, its characters and a fingerprint for the cache."""

    train: list[dict[str, Any]]
    eval: list[dict[str, Any]]
    chars: set[str]
    fingerprint: str
    max_completion_chars: int


def collect_task_material(task: Task, tiny: TinyModelConfig) -> TaskMaterial:
    """Generate a concise and a verbose trace for every training example (cheap: string formatting).

    Raises ConfigError if the task provides no warm-start traces.
    """
    name = getattr(task, "name", type(task).__name__)
    train = list(task.examples("train"))
    if not train:
        raise ConfigError(f"model=tiny needs training examples to warm-start on; task '{name}' has none")
    try:
        evals = list(task.examples("eval"))[:EVAL_EXAMPLES]
    except (KeyError, ValueError):
        evals = []
    rng = random.Random(f"tiny-vocab-{tiny.seed}")  # separate stream: does not shift the warm-start data
    chars: set[str] = set()
    digest = hashlib.sha256()
    longest = 0
    for i, ex in enumerate(train):
        traces = [warm_start_trace(task, ex, rng, verbose, tiny.verbose_style) for verbose in (False, True)]
        if traces[0] is None or traces[1] is None:
            raise ConfigError(
                f"model=tiny needs a task that provides warm-start traces; task '{name}' does not (use model=hf)"
            )
        # a message trace (tool calls) as text, with its calls and results written out (the markup is ASCII)
        for text in (str(ex["prompt"]), *map(completion_transcript, traces)):
            chars.update(text.replace(THINK_OPEN, "").replace(THINK_CLOSE, ""))
        longest = max(longest, *(len(completion_transcript(t)) for t in traces))
        record = [str(ex["prompt"]), str(ex["answer"])]
        if i < FINGERPRINT_TRACES:  # a change in the trace format changes the key
            record += traces
        digest.update(json.dumps(record).encode())
    for ex in evals:
        chars.update(str(ex["prompt"]))
        digest.update(json.dumps(["eval", str(ex["prompt"]), str(ex["answer"])]).encode())
    extra = getattr(task, "fingerprint", None)  # optional task-provided identity (e.g. its config)
    if callable(extra):
        extra = extra()
    if extra is not None:
        digest.update(json.dumps(["task-fingerprint", extra], sort_keys=True, default=str).encode())
    return TaskMaterial(train, evals, chars, digest.hexdigest(), longest)


def cache_key(tiny: TinyModelConfig, task: Task, material: TaskMaterial) -> dict[str, Any]:
    """The JSON object whose sha256 names the cache directory."""
    fields = dataclasses.asdict(tiny)
    if fields.get("verbose_style") == "steps":  # the default is left out: caches built before the key existed hit
        del fields["verbose_style"]
    return {
        "cache_format": CACHE_FORMAT,
        "tiny": fields,
        "task": {"name": getattr(task, "name", type(task).__name__), "fingerprint": material.fingerprint},
    }


def cache_hash(key: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]


# ----------------------------------------------------------------------------------------------- warm start


class ThreadChooser:
    """Chooses torch's intra-op thread count (1 or all cores) by measured time per token, as load changes.

    Why: on this 2-core machine two OpenMP threads make a warm-start step ~1.4x faster when the machine is
    idle (0.27 vs 0.38 s), but 4-40x *slower* when other processes compete for the cores (measured: 0.26 s
    vs 11 s per 1000 tokens), because every op ends in a barrier that waits for whichever thread was
    descheduled. So: warm up on 1 thread, try each option once, then use the faster, re-trying the other
    one after `probe_every` steps; each probe that loses doubles the wait (up to 8x), so a heavily loaded
    machine pays for few probes.
    """

    def __init__(self, max_threads: int, probe_every: int = 50) -> None:
        self.options = sorted({1, max(1, max_threads)})
        self.probe_every = probe_every
        self.cost: dict[int, float] = {}  # threads -> moving average of seconds per token
        self._current = self.options[0]
        self._next_probe = probe_every
        self._interval = probe_every

    def best(self) -> int:
        measured = [o for o in self.options if o in self.cost]
        return min(measured, key=self.cost.__getitem__) if measured else self.options[0]

    def threads_for(self, step: int) -> int:
        if step == 0 or len(self.options) == 1:  # step 0 pays one-off allocation costs: cheap option
            return self.options[0]
        for option in self.options:
            if option not in self.cost:
                return option
        if step >= self._next_probe:
            return next(o for o in self.options if o != self._current)
        return self._current

    def record(self, step: int, threads: int, seconds: float, tokens: int) -> None:
        if step == 0 or tokens <= 0:
            return
        cost = seconds / tokens
        previous = self.cost.get(threads)
        self.cost[threads] = cost if previous is None else 0.5 * previous + 0.5 * cost
        if threads != self._current and step >= self._next_probe:  # a probe: back off if it lost
            won = self.cost[threads] < self.cost[self._current]
            self._interval = self.probe_every if won else min(8 * self.probe_every, 2 * self._interval)
            self._next_probe = step + self._interval
        if all(o in self.cost for o in self.options):
            self._current = self.best()


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


def _console() -> Any:
    from rich.console import Console

    return Console(stderr=True, highlight=False, soft_wrap=True)


def warm_start(
    model: Qwen2ForCausalLM,
    tokenizer: PreTrainedTokenizerFast,
    task: Task,
    train: list[dict[str, Any]],
    tiny: TinyModelConfig,
    progress: bool = True,
    threads: ThreadChooser | None = None,
) -> list[float]:
    """Supervised training on `prompt + trace + <eos>` (loss on trace and eos only). Returns per-step losses.

    Speed on 2 CPU cores: float32, no attention mask (right padding + causal attention already hides the
    padding from every real token, and sdpa can take its is_causal fast path), no KV cache, and each batch
    split into at most two length buckets (`length_buckets`) padded to their own longest sequence.
    """
    rng = random.Random(tiny.seed)
    steps, batch_size = tiny.warm_start_steps, tiny.warm_start_batch_size
    tools = uses_tools(task)
    prompt_ids = tokenizer([str(ex["prompt"]) for ex in train], add_special_tokens=False)["input_ids"]
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=tiny.warm_start_lr, betas=ADAM_BETAS, weight_decay=WEIGHT_DECAY, foreach=True
    )
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _lr_lambda(steps))
    losses: list[float] = []
    threads = threads or ThreadChooser(num_cores())
    saved_threads = torch.get_num_threads()
    model.train()
    with contextlib.ExitStack() as stack:
        stack.callback(torch.set_num_threads, saved_threads)
        from workbench.progress import Progress

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
            longest = max(len(p) + len(c) + 1 for p, c in zip(prompts, completion_ids))
            if longest > tiny.max_positions:
                raise ConfigError(
                    f"model.tiny.max_positions={tiny.max_positions} is too small for task "
                    f"'{getattr(task, 'name', '?')}': a warm-start sequence has {longest} tokens"
                )
            groups = length_buckets([len(p) + len(c) for p, c in zip(prompts, completion_ids)])
            batches = [
                make_batch([prompts[r] for r in g], [completion_ids[r] for r in g],
                           tokenizer.eos_token_id, tokenizer.pad_token_id, [trainable[r] for r in g])
                for g in groups
            ]
            num_threads = threads.threads_for(step)
            torch.set_num_threads(num_threads)
            start = time.perf_counter()
            optimizer.zero_grad(set_to_none=True)
            loss = warm_start_loss(model, batches)
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            scheduler.step()
            threads.record(step, num_threads, time.perf_counter() - start, sum(b[0].numel() for b in batches))
            losses.append(loss)
            bar.update(step + 1, f"loss {losses[-1]:.3f}  threads {num_threads}")
    model.eval()
    return losses


@torch.no_grad()
def greedy_accuracy(
    model: Any,
    tokenizer: Any,
    task: Task,
    examples: list[dict[str, Any]],
    max_new_tokens: int,
    batch_size: int = 100,
) -> tuple[float, list[str]]:
    """Greedy accuracy by `task.score`, generating in left-padded batches. Returns (accuracy, completions)."""
    if not examples:
        return float("nan"), []
    was_training = model.training
    model.eval()
    side, tokenizer.padding_side = tokenizer.padding_side, "left"
    completions: list[str] = []
    try:
        for start in range(0, len(examples), batch_size):
            chunk = examples[start : start + batch_size]
            enc = tokenizer([str(ex["prompt"]) for ex in chunk], return_tensors="pt", padding=True,
                            add_special_tokens=False)
            out = model.generate(
                **enc,
                max_new_tokens=max_new_tokens,
                do_sample=False,
                pad_token_id=tokenizer.pad_token_id,
                eos_token_id=tokenizer.eos_token_id,
            )
            completions += tokenizer.batch_decode(out[:, enc["input_ids"].shape[1] :], skip_special_tokens=True)
    finally:
        tokenizer.padding_side = side
        model.train(was_training)
    scores = [float(task.score(c, ex)) for c, ex in zip(completions, examples)]
    return sum(scores) / len(scores), completions


# ----------------------------------------------------------------------------------------------- cache


def is_complete(path: Path) -> bool:
    """A cache entry is complete when its metadata file exists (it is written last, before the rename)."""
    return (path / META_FILE).is_file()


def build_into(directory: Path, tiny: TinyModelConfig, task: Task, material: TaskMaterial, key: dict[str, Any],
               progress: bool) -> None:
    """Build tokenizer + model, warm-start, evaluate and save everything into `directory` (which exists)."""
    saved_threads = torch.get_num_threads()
    threads = ThreadChooser(num_cores())
    try:
        with torch.random.fork_rng(devices=[]):  # leave the caller's global RNG state untouched
            torch.manual_seed(tiny.seed)
            tokenizer = build_tokenizer(material.chars, max_length=tiny.max_positions, tools=uses_tools(task))
            model = build_model(tiny, tokenizer)
            start = time.perf_counter()
            losses = warm_start(model, tokenizer, task, material.train, tiny, progress=progress, threads=threads)
            train_seconds = time.perf_counter() - start
            # Room for the longest trace (characters >= tokens) plus slack, within the position budget.
            longest_prompt = max((len(tokenizer(str(ex["prompt"]))["input_ids"]) for ex in material.eval), default=0)
            max_new = max(1, min(material.max_completion_chars + 8, tiny.max_positions - longest_prompt))
            torch.set_num_threads(threads.best())
            start = time.perf_counter()
            if uses_tools(task):  # single-turn greedy decoding cannot run tools: rl eval measures these models
                accuracy, completions = float("nan"), []
            else:
                accuracy, completions = greedy_accuracy(model, tokenizer, task, material.eval, max_new)
            eval_seconds = time.perf_counter() - start
    finally:
        torch.set_num_threads(saved_threads)

    tail = losses[-min(10, len(losses)) :] if losses else []
    meta = {
        "cache_format": CACHE_FORMAT,
        "key": key,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "versions": {"torch": torch.__version__, "transformers": _transformers_version()},
        "num_params": sum(p.numel() for p in model.parameters()),
        "vocab_size": len(tokenizer),
        "warm_start_steps": tiny.warm_start_steps,
        "warm_start_seconds": round(train_seconds, 3),
        "warm_start_seconds_per_step": round(train_seconds / max(1, len(losses)), 4),
        # measured seconds per 1000 padded tokens by torch thread count (see ThreadChooser)
        "warm_start_ms_per_ktoken_by_threads": {str(k): round(v * 1e6, 2) for k, v in threads.cost.items()},
        # initial = loss of the first step (the untrained model); final = mean of the last <=10 steps
        "warm_start_loss_initial": losses[0] if losses else None,
        "warm_start_loss_final": sum(tail) / len(tail) if tail else None,
        # None: the task has no eval split, or uses tools (greedy single-turn decoding cannot run them)
        "warm_start_accuracy": accuracy if material.eval and not uses_tools(task) else None,
        "warm_start_eval_examples": len(material.eval),
        "warm_start_eval_seconds": round(eval_seconds, 3),
        "losses": [round(x, 5) for x in losses],
        "samples": [
            {"prompt": ex["prompt"], "answer": ex["answer"], "completion": c}
            for ex, c in zip(material.eval[:8], completions[:8])
        ],
    }
    with _quiet_transformers():
        model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    (directory / META_FILE).write_text(json.dumps(meta, indent=2, default=str))


@contextlib.contextmanager
def _quiet_transformers() -> Iterator[None]:
    """Hide transformers' per-shard tqdm bars ("Writing model shards", "Loading weights") for a 4 MB model."""
    from transformers.utils import logging as hf_logging

    was_enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_enabled:
            hf_logging.enable_progress_bar()


def _transformers_version() -> str:
    import transformers

    return transformers.__version__


def ensure_cached(cache_root: Path, tiny: TinyModelConfig, task: Task, progress: bool = True) -> tuple[Path, bool]:
    """Return (cache entry directory, whether it already existed), building it if needed."""
    check_tiny_config(tiny)
    material = collect_task_material(task, tiny)
    key = cache_key(tiny, task, material)
    digest = cache_hash(key)
    base = Path(cache_root) / "tiny"
    base.mkdir(parents=True, exist_ok=True)
    final = base / digest
    if is_complete(final):
        return final, True
    with FileLock(base / f".{digest}.lock"):  # parallel runs of one config build the cache once
        if is_complete(final):  # another process built it while we waited
            return final, True
        # Leftovers of killed builds of this entry (we hold its lock, so nobody else is writing them).
        for stale in base.glob(f".tmp-{digest}-*"):
            shutil.rmtree(stale, ignore_errors=True)
        if final.exists():  # incomplete entry (should not happen with the rename, but never trust it)
            shutil.rmtree(final)
        tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{digest}-", dir=base))
        os.chmod(tmp, 0o755)  # mkdtemp makes it 0700; the final entry should look like any other folder
        say = _console().print if progress else (lambda *a, **k: None)
        say(f"tiny model: not cached, building {final} ({tiny.warm_start_steps} warm-start steps; "
            f"cached afterwards)")
        try:
            build_into(tmp, tiny, task, material, key, progress)
            os.rename(tmp, final)  # atomic on one filesystem: the entry appears complete or not at all
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        meta = json.loads((final / META_FILE).read_text())
        acc = meta.get("warm_start_accuracy")
        say(f"tiny model: warm start took {meta['warm_start_seconds']:.0f} s; greedy held-out accuracy "
            + (f"{100 * acc:.1f}% on {meta['warm_start_eval_examples']} problems" if acc is not None else "n/a"))
    return final, False


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
    with _quiet_transformers():
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
