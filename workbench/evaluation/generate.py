"""Batched sampling for evaluation: left padding, the KV cache, chunks sized to memory.

One `model.generate` call per chunk of prompts x samples, instead of one call per prompt (the plain loop that
`scripts/bench_eval.py` compares against). `generate_ids` is that call on token ids; `sample` (plain generation)
and `generate_with_tools` (the multi-turn tool loop) both use it.

`generate_with_tools` runs tool calls the way TRL 1.16's GRPOTrainer does in training (`_tool_call_loop`), so a
tool-using model is measured under the rules it was trained under:

* the prompt is rendered with the tools (`workbench.prompts`), the completion parsed with TRL's own
  `parse_response` (the tokenizer's `response_template`, with TRL's fallback to plain text on a malformed call);
* each call goes to the sample's own environment (`workbench.tools`, reset on the example), an unknown tool or bad
  arguments come back as `{'error': ...}` exactly as TRL words them, a failing tool as `error: ...` (the
  environment's own wording); results are appended as `tool` messages whose token ids are TRL's
  `_get_tool_suffix_ids` (called on a small shim, not re-implemented), and generation continues from
  prompt + completion + suffix without re-tokenising;
* at most `max_tool_calls` tool-calling turns; `max_new_tokens` bounds the whole completion including tool-result
  tokens (TRL's max_completion_length): results that would not fit are dropped and the rollout ends (the call was
  made and is still charged, as in training), and the last turn is cut at the budget.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any, Callable, Iterator

import torch
from transformers import LogitsProcessor, LogitsProcessorList

from workbench.prompts import prompt_token_ids
from workbench.signals import completion_text


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
    text: str  # what is scored: the model's own text (assistant messages only, with tools)
    ids: list[int]  # completion token ids (with tools: tool-result tokens included)
    truncated: bool
    entropy: list[float] | None = None  # per-token entropy of the sampling distribution, model tokens only
    # With tools only:
    tool_mask: list[int] | None = None  # per id: 1 = written by the model, 0 = tool result (TRL's tool_mask)
    messages: list[dict[str, Any]] | None = None  # the completion as chat messages (assistant / tool)
    calls: list[dict[str, Any]] = field(default_factory=list)  # workbench.tools.ToolCall dicts, in order


#: One generation step: (token id sequences, max new tokens) -> per sequence (new ids up to and including the first
#: eos, their entropies or None). `model_step` is the real one; tests pass a scripted one.
Step = Callable[[list[list[int]], int], list[tuple[list[int], list[float] | None]]]


def eos_token_ids(model: Any, tokenizer: Any) -> set[int]:
    """The ids that end a completion: the model's generation config, else the tokenizer's eos."""
    eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    return set(eos if isinstance(eos, list) else [eos]) if eos is not None else {tokenizer.eos_token_id}


@contextlib.contextmanager
def _eval_mode(model: Any) -> Iterator[None]:
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


def _seed(seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(int(torch.randint(0, 2**31 - 1, (1,), generator=gen)))


@torch.no_grad()
def generate_ids(model, sequences: list[list[int]], max_new_tokens: int, eos_ids: set[int], pad_id: int | None,
                 temperature: float = 1.0, with_entropy: bool = False) -> list[tuple[list[int], list[float] | None]]:
    """One batched `model.generate` on left-padded token ids (sampling: top-k/top-p off; greedy at temperature 0).

    Per sequence: the new ids up to and including the first eos (all of them if none: truncated), and with
    `with_entropy` the entropy of each of those tokens' sampling distributions."""
    device = next(model.parameters()).device
    pad = int(pad_id if pad_id is not None else min(eos_ids))
    width = max(len(s) for s in sequences)
    input_ids = torch.full((len(sequences), width), pad, dtype=torch.long)
    attention = torch.zeros((len(sequences), width), dtype=torch.long)
    for row, seq in enumerate(sequences):
        if seq:
            input_ids[row, width - len(seq):] = torch.tensor(seq, dtype=torch.long)
            attention[row, width - len(seq):] = 1
    recorder = EntropyRecorder(temperature) if with_entropy else None
    kwargs: dict[str, Any] = dict(
        max_new_tokens=int(max_new_tokens),
        pad_token_id=pad,
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
    res = model.generate(input_ids=input_ids.to(device), attention_mask=attention.to(device), **kwargs)
    new = res.sequences[:, width:].tolist()
    ent = recorder.entropies() if recorder is not None else None  # (B, T) or None
    out = []
    for row, ids in enumerate(new):
        end = next((k for k, t in enumerate(ids) if t in eos_ids), None)
        keep = ids if end is None else ids[: end + 1]
        out.append((keep, ent[row, : len(keep)].tolist() if ent is not None else None))
    return out


def model_step(model: Any, tokenizer: Any, temperature: float, with_entropy: bool) -> Step:
    """`generate_ids` for `model` as a `Step`."""
    eos_ids = eos_token_ids(model, tokenizer)

    def step(sequences: list[list[int]], max_new_tokens: int) -> list[tuple[list[int], list[float] | None]]:
        return generate_ids(model, sequences, max_new_tokens, eos_ids, tokenizer.pad_token_id, temperature,
                            with_entropy)

    return step


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
    eos_ids = eos_token_ids(model, tokenizer)
    prompt_ids = [prompt_token_ids(tokenizer, p, use_chat_template) for p in prompts]  # exactly as TRL tokenizes
    jobs = [i for i in range(len(prompts)) for _ in range(n)]
    _seed(seed)
    out: list[Sample] = []
    with _eval_mode(model):
        for start in range(0, len(jobs), batch_size):
            chunk = jobs[start : start + batch_size]
            res = generate_ids(model, [prompt_ids[i] for i in chunk], max_new_tokens, eos_ids, tokenizer.pad_token_id,
                               temperature, with_entropy)
            for pi, (keep, e) in zip(chunk, res):
                truncated = not keep or keep[-1] not in eos_ids
                out.append(Sample(pi, tokenizer.decode(keep, skip_special_tokens=True), keep, truncated, e))
            if progress is not None:
                progress(len(out))
    return out


# ----------------------------------------------------------------------------------------------- tools


def tool_suffix_ids(tokenizer: Any, tool_messages: list[dict[str, Any]]) -> list[int]:
    """Token ids of `tool` result messages plus the next generation prompt: TRL's own `_get_tool_suffix_ids`,
    called on a shim carrying the attributes it reads, so eval and training append the very same ids."""
    from trl import GRPOTrainer

    shim = SimpleNamespace(processing_class=tokenizer, _tokenizer=tokenizer, chat_template=None,
                           chat_template_kwargs={}, _is_vlm=False)
    return list(GRPOTrainer._get_tool_suffix_ids(shim, tool_messages))


def parse_completion(tokenizer: Any, ids: list[int], prefix: list[int], tools: list[Any]) -> dict[str, Any]:
    """One assistant turn as a message, as TRL reads it: its `parse_response` (tool calls, eos stripped, plain text
    on a malformed call) when the tokenizer has a response template, else the decoded text (no calls)."""
    if getattr(tokenizer, "response_template", None) is None and getattr(tokenizer, "response_schema", None) is None:
        return {"role": "assistant", "content": tokenizer.decode(ids, skip_special_tokens=True)}
    from trl.chat_template_utils import parse_response

    return parse_response(tokenizer, ids, prefix=prefix, tools=tools)


def call_tools(tools: dict[str, Callable[..., Any]], tool_calls: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Run one turn's calls; the `tool` messages for the model, worded as TRL's loop words them."""
    messages = []
    for call in tool_calls:
        if call.get("type") == "function":
            name = call["function"]["name"]
            try:
                if name not in tools:
                    raise ValueError(f"Tool {name} not found.")
                result: Any = tools[name](**call["function"]["arguments"])
            except Exception as e:  # bad arguments, unknown tool: an answer to the model, as in training
                result = {"error": str(e)}
        else:
            name = call.get("name", "unknown")
            result = {"error": f"Unsupported tool call type: {call.get('type')}"}
        messages.append({"role": "tool", "name": name, "content": str(result)})
    return messages


@dataclass
class _Rollout:
    """One sample's state in the tool loop."""

    problem: int
    env: Any
    prompt: list[int]
    tools: list[Any] = field(default_factory=list)
    ids: list[int] = field(default_factory=list)
    mask: list[int] = field(default_factory=list)
    entropy: list[float] | None = field(default_factory=list)
    messages: list[dict[str, Any]] = field(default_factory=list)

    def add(self, ids: list[int], entropy: list[float] | None, model: bool) -> None:
        self.ids += ids
        self.mask += [int(model)] * len(ids)
        if model:
            self.entropy = None if entropy is None or self.entropy is None else self.entropy + list(entropy)


def generate_with_tools(model: Any, tokenizer: Any, examples: list[dict[str, Any]], make_env: Callable[[], Any],
                        n: int = 1, temperature: float = 1.0, max_new_tokens: int = 80, max_tool_calls: int = 2,
                        batch_size: int = 64, use_chat_template: bool = True, with_entropy: bool = False,
                        seed: int = 0, progress: Any = None, step: Step | None = None) -> list[Sample]:
    """`n` tool-using rollouts per example (problem-major), run as in training (see the module docstring).

    Every rollout gets a fresh environment from `make_env`, reset on its example. Chunks of `batch_size` rollouts
    run the whole loop together: one batched generation per turn for the rollouts still calling tools. `step`
    replaces the model's generation (tests script it); `model` may then be None. Entropies cover the model's own
    tokens of every turn, never tool results."""
    from workbench.tools import tool_functions

    if step is None:
        step = model_step(model, tokenizer, temperature, with_entropy)
    eos_ids = eos_token_ids(model, tokenizer)
    max_positions = getattr(getattr(model, "config", None), "max_position_embeddings", None)
    rollouts: list[_Rollout] = []
    prompts: dict[int, list[int]] = {}
    for i, ex in enumerate(examples):
        for _ in range(n):
            env = make_env()
            env.reset(**ex)
            tools = tool_functions(env)
            if i not in prompts:  # every environment offers the same tools: one prompt per problem
                prompts[i] = prompt_token_ids(tokenizer, ex["prompt"], use_chat_template, tools)
            rollouts.append(_Rollout(i, env, prompts[i], tools))
    _seed(seed)
    out: list[Sample] = []
    with _eval_mode(model) if model is not None else contextlib.nullcontext():
        for start in range(0, len(rollouts), batch_size):
            chunk = rollouts[start : start + batch_size]
            _tool_loop(chunk, step, tokenizer, max_new_tokens, max_tool_calls, max_positions)
            for r in chunk:
                truncated = not r.ids or r.ids[-1] not in eos_ids
                out.append(Sample(r.problem, completion_text(r.messages), r.ids, truncated, r.entropy, r.mask,
                                  r.messages, [c.to_dict() for c in r.env.calls]))
            if progress is not None:
                progress(len(out))
    return out


def _tool_loop(chunk: list[_Rollout], step: Step, tokenizer: Any, max_new_tokens: int, max_tool_calls: int,
               max_positions: int | None) -> None:
    """TRL's `_tool_call_loop` on one chunk of rollouts (ids, masks, messages and entropies filled in place)."""
    for r, (ids, ent) in zip(chunk, step([r.prompt for r in chunk], max_new_tokens)):
        r.add(ids, ent, model=True)
        r.messages.append(parse_completion(tokenizer, ids, r.prompt, r.tools))
    calling = [r for r in chunk if r.messages[-1].get("tool_calls")]
    for _ in range(max_tool_calls):
        ready = []
        for r in calling:
            results = call_tools({f.__name__: f for f in r.tools}, r.messages[-1]["tool_calls"])
            suffix = tool_suffix_ids(tokenizer, results)
            too_long = len(r.ids) + len(suffix) > max_new_tokens or (
                max_positions is not None and len(r.prompt) + len(r.ids) + len(suffix) >= max_positions)
            if too_long:  # TRL drops the results and ends the rollout; the calls were made (and are charged)
                continue
            r.messages += results
            r.add(suffix, None, model=False)
            ready.append(r)
        if not ready:
            break
        budgets = [max_new_tokens - len(r.ids) for r in ready]
        go = [r for r, b in zip(ready, budgets) if b > 0]
        generated = dict(zip(map(id, go), step([r.prompt + r.ids for r in go], max(budgets)) if go else []))
        calling = []
        for r, budget in zip(ready, budgets):
            prefix = r.prompt + r.ids
            ids, ent = generated.get(id(r), ([], []))
            ids, ent = ids[:budget], (ent[:budget] if ent is not None else None)  # the completion budget
            r.add(ids, ent, model=True)
            if ids:  # a turn cut to nothing adds no message (TRL)
                r.messages.append(parse_completion(tokenizer, ids, prefix, r.tools))
                if r.messages[-1].get("tool_calls"):
                    calling.append(r)
