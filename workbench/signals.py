"""Per-rollout and per-token signals: ONE definition, used by the trainer, the shaping terms and `rl eval`.

A metric name must mean the same thing in training and in evaluation, with any tokenizer. So the think/answer
split, phase entropies, token cost, tool-call counts and the text of a completion are computed here and nowhere
else:

* `completion_text`: a completion as text, whether TRL hands it over as a string or (conversational prompts) as a
  list of chat messages.
* `ThinkSplitter.boundary(ids)`: how many leading tokens make up the think phase: up to and including the token
  that completes the first `</think>` in the decoded text. It works on character offsets of the decoded
  completion, so it holds where `</think>` is one token (the tiny tokenizer), several (SmolLM2 and Qwen2.5 BPE
  spell it `</`, `think`, `>`), or spelled out by the model character by character. The answer text that
  `split_think` cuts from the decoded string and the token masks always agree.
* `phase_masks`: the (B, T) think/answer masks from those boundaries; `phase_entropy`: one sample's mean / think /
  answer entropy from its per-token entropies.
* `token_cost`: $ for prompt + completion tokens at per-million prices (tensors or plain numbers).
* `tool_call_count`: tool-call tags in a completion's text (the fallback when no tool ran).
* Real tool use (`task.tools`, `workbench.tools`): `rollout_cost` ($ of tokens plus tool calls),
  `assistant_turns`, `completion_transcript` (the text with calls and results, for samples) and
  `completion_mode` (the leading `[mode]` tag of A^2FM-style tasks).
* `DERIVED_SIGNALS`: the table of signals computed from a gathered batch's text and ids, by the name shaping terms
  list in `needs` (`phase`, `answers`, `tool_calls`). `fill_signals` fills exactly those an active term needs.
  Adding a signal = a `Rollouts` field + one function in this table; the trainer and the registry's check of
  `needs` (`SIGNALS`) both read the table.

Without `</think>`, every token counts as thinking and the answer phase is empty (the same rule for training's
`entropy/think` and eval's `eval/entropy/think`).

Import-light (torch only where tensors are built).
"""

from __future__ import annotations

import math
from typing import Any, Callable, Sequence

from workbench.tasks.base import THINK_CLOSE

#: Text of a tool call in a completion (Hermes / Qwen style), counted by `tool_call_count`.
TOOL_CALL_OPEN = "<tool_call>"
PER_MILLION = 1e-6


def completion_text(completion: Any) -> str:
    """A completion as plain text: strings pass through; a list of chat messages (TRL's conversational format)
    becomes the concatenated `content` of its assistant messages.

    >>> completion_text([{"role": "assistant", "content": "<think>1+1=2</think>2"}])
    '<think>1+1=2</think>2'
    """
    if isinstance(completion, str):
        return completion
    if isinstance(completion, dict):
        return str(completion.get("content") or "")
    if isinstance(completion, (list, tuple)):
        parts = [m.get("content") or "" for m in completion if isinstance(m, dict) and m.get("role", "assistant") == "assistant"]
        return "".join(p if isinstance(p, str) else str(p) for p in parts)
    return "" if completion is None else str(completion)


class ThinkSplitter:
    """Finds the think/answer boundary of token sequences for one tokenizer (see the module docstring)."""

    def __init__(self, tokenizer: Any, close_text: str = THINK_CLOSE):
        self.tokenizer = tokenizer
        self.close_text = close_text

    def decode(self, ids: Sequence[int]) -> str:
        # special tokens kept: a `</think>` that a tokenizer marks special must still be found
        return self.tokenizer.decode(list(ids), skip_special_tokens=False)

    def boundary(self, ids: Sequence[int]) -> int | None:
        """Number of leading tokens up to and including the one that completes the first `</think>`; None if the
        decoded completion has no `</think>`. Binary search over prefixes: containment is monotone in the prefix."""
        return prefix_boundary(ids, self.decode, self.close_text)


def prefix_boundary(ids: Sequence[int], decode: Callable[[Sequence[int]], str], close_text: str = THINK_CLOSE) -> int | None:
    """The shortest prefix length of `ids` whose decoded text contains `close_text` (None if the whole does not)."""
    ids = list(ids)
    if not ids or close_text not in decode(ids):
        return None
    lo, hi = 1, len(ids)
    while lo < hi:
        mid = (lo + hi) // 2
        if close_text in decode(ids[:mid]):
            hi = mid
        else:
            lo = mid + 1
    return lo


def phase_masks(boundaries: Sequence[int | None], lengths: Sequence[int], T: int):
    """(think_mask, answer_mask, has_close) as (B, T) bool, (B, T) bool, (B,) bool tensors.

    Think = the first `boundary` tokens (all `length` tokens when there is no `</think>`); answer = the rest of the
    completion; padding is in neither.
    """
    import torch

    B = len(lengths)
    idx = torch.arange(T).expand(B, T)
    L = torch.tensor([int(n) for n in lengths], dtype=torch.long).view(B, 1)
    has = torch.tensor([b is not None for b in boundaries], dtype=torch.bool)
    cut = torch.tensor([int(n) if b is None else min(int(b), int(n)) for b, n in zip(boundaries, lengths)],
                       dtype=torch.long).view(B, 1)
    valid = idx < L
    think = (idx < cut) & valid
    answer = (idx >= cut) & valid
    return think, answer, has


def _mean(values: Sequence[float]) -> float | None:
    vals = [v for v in values if v is not None and math.isfinite(v)]
    return float(sum(vals) / len(vals)) if vals else None


def phase_entropy(entropy: Sequence[float] | None, boundary: int | None) -> tuple[float | None, float | None, float | None]:
    """(mean, think, answer) token entropy of one sample, with the think/answer rule of `phase_masks`.

    >>> phase_entropy([1.0, 3.0, 0.5], 2)
    (1.5, 2.0, 0.5)
    """
    if not entropy:
        return None, None, None
    entropy = list(entropy)
    cut = len(entropy) if boundary is None else min(boundary, len(entropy))
    return _mean(entropy), _mean(entropy[:cut]), _mean(entropy[cut:]) if cut < len(entropy) else None


def token_cost(prompt_tokens: Any, completion_tokens: Any, price_prompt: float, price_completion: float) -> Any:
    """$ for prompt + completion tokens, prices in $ per million tokens; tensors (B,) -> float tensor (B,), numbers
    -> float. The trainer's `cost/*`, the cost reward terms and `rl eval`'s `eval/cost/*` all use this.

    >>> round(token_cost(100, 1000, 1.0, 2.0), 8)
    0.0021
    """
    if hasattr(prompt_tokens, "double"):  # torch tensors: computed in float64, returned as float32
        return (prompt_tokens.double() * price_prompt + completion_tokens.double() * price_completion).float() * PER_MILLION
    return (float(prompt_tokens) * price_prompt + float(completion_tokens) * price_completion) * PER_MILLION


def tool_call_count(text: str) -> int:
    """Number of tool-call tags (`<tool_call>`) in a completion's text."""
    return text.count(TOOL_CALL_OPEN)


def rollout_cost(prompt_tokens: Any, model_tokens: Any, context_tokens: Any, tool_dollars: Any,
                 price_prompt: float, price_completion: float) -> Any:
    """$ of one rollout with tools: the prompt and the tool results it read back (`context_tokens`) at the prompt
    price, the tokens the model wrote at the completion price, plus what its tool calls cost. Tensors or numbers,
    like `token_cost` (without tools, context_tokens = tool_dollars = 0 and it is `token_cost`).

    >>> round(rollout_cost(100, 20, 10, 0.0001, 1.0, 2.0), 8)
    0.00025
    """
    return token_cost(prompt_tokens + context_tokens, model_tokens, price_prompt, price_completion) + tool_dollars


def assistant_turns(completion: Any) -> int:
    """Assistant turns in a completion: 1 for text, the number of assistant messages for a conversation."""
    if isinstance(completion, (list, tuple)):
        return max(1, sum(1 for m in completion if isinstance(m, dict) and m.get("role", "assistant") == "assistant"))
    return 1


def completion_transcript(completion: Any) -> str:
    """A completion with its tool calls and results written out, for samples.jsonl and eval samples (scoring uses
    `completion_text`, the model's own words only).

    >>> completion_transcript([{"role": "assistant", "content": "[agentic]", "tool_calls": [{"type": "function",
    ...     "function": {"name": "calculator", "arguments": {"expression": "2*3"}}}]},
    ...     {"role": "tool", "name": "calculator", "content": "6"}, {"role": "assistant", "content": "6"}])
    '[agentic]<call>calculator expression=2*3</call><result>6</result>6'
    """
    if not isinstance(completion, (list, tuple)):
        return completion_text(completion)
    parts: list[str] = []
    for m in completion:
        if not isinstance(m, dict):
            continue
        if m.get("role") == "tool":
            parts.append(f"<result>{m.get('content')}</result>")
            continue
        parts.append(str(m.get("content") or ""))
        for tc in m.get("tool_calls") or []:
            f = tc.get("function", tc)
            args = "".join(f" {k}={v}" for k, v in (f.get("arguments") or {}).items())
            parts.append(f"<call>{f.get('name')}{args}</call>")
    return "".join(parts)


def completion_mode(text: str, modes: Sequence[str]) -> str | None:
    """The mode a completion declares with its leading `[mode]` tag, if it is one of `modes`; else None.

    >>> completion_mode("[agentic]...", ("instant", "reasoning", "agentic")), completion_mode("42", ("instant",))
    ('agentic', None)
    """
    head = text.lstrip()
    for mode in modes:
        if head.startswith(f"[{mode}]"):
            return mode
    return None


# ----------------------------------------------------------------------------------------------- the signal table


def _fill_phase(rollouts: Any, ctx: Any) -> None:
    ids = rollouts.completion_ids
    T = rollouts.mask.size(1) if rollouts.mask is not None else max(1, max((len(c) for c in ids), default=1))
    rollouts.think_mask, rollouts.answer_mask, rollouts.has_think_close = phase_masks(
        [ctx.splitter.boundary(c) for c in ids], [len(c) for c in ids], T)


def _fill_answers(rollouts: Any, ctx: Any) -> None:
    rollouts.answers = [ctx.task.extract_answer(c) for c in rollouts.completions]


def _fill_tool_calls(rollouts: Any, ctx: Any) -> None:
    import torch

    if rollouts.tool_calls is not None:  # real calls, counted by the tool environments
        return
    rollouts.tool_calls = torch.tensor([tool_call_count(c) for c in rollouts.completions], dtype=torch.float32)


def _fill_modes(rollouts: Any, ctx: Any) -> None:
    modes = tuple(getattr(ctx.task, "modes", ()) or ())
    rollouts.mode_names = modes
    rollouts.modes = [completion_mode(c, modes) for c in rollouts.completions]


#: Signals derived from the gathered batch, by name -> function(rollouts, ctx) that fills its `Rollouts` field(s).
#: `ctx` carries `splitter` (a ThinkSplitter for the run's tokenizer) and `task`.
DERIVED_SIGNALS: dict[str, Callable[[Any, Any], None]] = {
    "phase": _fill_phase,  # think_mask, answer_mask, has_think_close
    "answers": _fill_answers,  # answers: the task's extracted final answers
    "tool_calls": _fill_tool_calls,  # tool_calls: real calls per rollout, else tool-call tags in the text
    "modes": _fill_modes,  # modes: each completion's declared mode (None: no tag); mode_names: the task's, cheapest first
}
#: Signals every batch has: `correct` and `lengths` (the metrics need them), `cost` (token $, also a metric) and
#: `entropy` (per-token entropies of the sampled completions, read off the generation passes when a term needs them).
BASE_SIGNALS = frozenset({"correct", "lengths", "cost", "entropy"})
SIGNALS = BASE_SIGNALS | frozenset(DERIVED_SIGNALS)


def fill_signals(rollouts: Any, needs: set[str] | frozenset[str], ctx: Any) -> None:
    """Fill the derived signals in `needs` (others cost nothing)."""
    for name, fill in DERIVED_SIGNALS.items():
        if name in needs:
            fill(rollouts, ctx)
