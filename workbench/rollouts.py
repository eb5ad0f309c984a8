"""One rollout record: the facts of a batch of sampled completions, as training and `rl eval` both see them.

`Rollouts` is what every shaping term reads (reward terms, advantage transforms) and what the step metrics are
computed from. It is built by one function, `build_rollouts`, from plain per-rollout facts (texts, token ids, the
model's-own-token masks, task scores, tool logs, per-token entropies), whichever loop produced them:

* training: the TRL adapter (`workbench.trainers`) gathers its generation batch across processes and calls it;
* evaluation: `rl eval` calls it on its held-out samples, so `eval/shaping/<term>/mean` comes from the same terms,
  on the same record, as `shaping/<term>/mean` in training.

`step_metrics(rollouts)` is the one definition of the per-batch metrics (`train/accuracy`, `length/*`, `cost/*`,
`tools/*`, `turns/mean`, `modes/*`; their meanings are in `workbench.metric_catalog` and the README table).

The signals that terms list in `needs` and that are derived from the text and ids (`phase`, `answers`,
`tool_calls`, `modes`) are filled afterwards by `workbench.signals.fill_signals`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import torch

from workbench.config import PriceConfig
from workbench.signals import rollout_cost
from workbench.tasks.base import is_correct


@dataclass
class Rollouts:
    """One generation batch as shaping terms see it. B = number of rollouts, T = padded completion length."""

    completions: list[str]
    completion_ids: list[list[int]]
    lengths: torch.Tensor  # (B,) long: completion tokens the model wrote (tool results excluded)
    prompt_lengths: torch.Tensor  # (B,) long: prompt tokens
    truncated: torch.Tensor  # (B,) bool: hit max_completion_length without EOS
    correct: torch.Tensor  # (B,) float in {0, 1}: the task score counts as correct (tasks.base.is_correct)
    group_size: int  # G
    prompt_keys: list[Any]  # a stable id per rollout's prompt (dataset `id`), for cross-step state (HAPO)
    max_completion_length: int
    step: int = 0  # optimizer step (trainer_state.global_step)
    mask: torch.Tensor | None = None  # (B, T) completion mask
    entropies: torch.Tensor | None = None  # (B, T) per-token entropy of the sampled completions ("entropy")
    think_mask: torch.Tensor | None = None  # (B, T) bool: tokens up to and including </think> ("phase")
    answer_mask: torch.Tensor | None = None  # (B, T) bool: tokens after </think> ("phase")
    has_think_close: torch.Tensor | None = None  # (B,) bool ("phase")
    answers: list[str | None] | None = None  # extracted final answers ("answers")
    cost: torch.Tensor | None = None  # (B,) $ per rollout ("cost")
    # the run's token prices, $ per 1M tokens (conf/train.yaml price.*)
    price_prompt: float = PriceConfig.prompt_per_million
    price_completion: float = PriceConfig.completion_per_million
    tool_calls: torch.Tensor | None = None  # (B,) float ("tool_calls"): real calls when tools ran
    # With tools (task.tools): assistant turns, $ spent on tool calls, and each rollout's call log
    # (workbench.tools.ToolCall dicts); `mask` then covers the model's own tokens only (tool results are 0).
    turns: torch.Tensor | None = None  # (B,) float; None without tools (one turn each)
    tool_cost: torch.Tensor | None = None  # (B,) float $
    tool_log: list[list[dict[str, Any]]] | None = None
    modes: list[str | None] | None = None  # ("modes") the mode each completion declared
    mode_names: tuple[str, ...] = ()  # the task's modes, cheapest first
    transcripts: list[str] | None = None  # with tools: completions with calls and results written out
    turn_probs: list[list[float]] | None = None  # IGPO: p_0..p_{K-1} per rollout (workbench.info_gain), else None
    # (B,) float in [0, 1]: the task scorer's raw score (partial credit kept); None means `correct` is the score
    scores: torch.Tensor | None = None
    # Raw (unweighted) outputs of reward terms computed earlier in the list, by name; combiners read these.
    term_rewards: dict[str, torch.Tensor] = field(default_factory=dict)

    @property
    def num_groups(self) -> int:
        return len(self.completions) // self.group_size

    def grouped(self, x: torch.Tensor) -> torch.Tensor:
        """View a (B,) tensor as (num_groups, G)."""
        return x.view(-1, self.group_size)


def build_rollouts(
    *,
    completions: Sequence[str],
    completion_ids: Sequence[Sequence[int]],
    prompt_lengths: Sequence[int],
    scores: Sequence[float],
    eos_ids: set[int] | frozenset[int],
    group_size: int,
    prompt_keys: Sequence[Any],
    max_completion_length: int,
    price_prompt: float = PriceConfig.prompt_per_million,
    price_completion: float = PriceConfig.completion_per_million,
    step: int = 0,
    model_token_masks: Sequence[Sequence[int]] | None = None,
    tool_logs: Sequence[Sequence[dict[str, Any]]] | None = None,
    turns: Sequence[float] | None = None,
    transcripts: Sequence[str] | None = None,
    entropies: torch.Tensor | Sequence[Sequence[float]] | None = None,
    truncated: Sequence[bool] | None = None,
    context_tokens: Sequence[int] | None = None,
    turn_probs: Sequence[Sequence[float]] | None = None,
) -> Rollouts:
    """The one builder of a `Rollouts` record, from per-rollout facts (all of length B, in rollout order; rollouts
    g*G .. (g+1)*G - 1 share a prompt).

    * `model_token_masks[i][t]` is 1 for a token the model wrote and 0 for a tool result inside the completion
      (TRL's `tool_mask`); None: every token is the model's. `lengths` counts the model's tokens, the tool results
      count as context at the prompt price in `cost` (`workbench.signals.rollout_cost`).
    * `tool_logs`: each rollout's tool-call log (`workbench.tools.ToolCall` dicts) when tools ran, else None.
    * `entropies`: per-token entropies of the sampled tokens, a (B, T') tensor or ragged lists; zero-padded or
      cut to the batch width and zeroed on tool-result tokens.
    * `truncated`: None means "the last token is not an EOS id" (`eos_ids`), the rule training uses.
    * `context_tokens`: tool-result tokens read back, for callers whose ids are the model's own tokens only
      (`rl eval`'s rows); None: counted from `model_token_masks`.
    * `turn_probs`: IGPO's per-turn probabilities of the true answer (`workbench.info_gain`), empty for one-turn
      rollouts; None when no term asks for them.
    """
    B = len(completions)
    ids = [list(c) for c in completion_ids]
    masks = [list(m) for m in model_token_masks] if model_token_masks is not None else [[1] * len(c) for c in ids]
    if not (len(ids) == len(masks) == len(prompt_lengths) == len(scores) == len(prompt_keys) == B):
        raise ValueError(f"build_rollouts: per-rollout facts of different lengths (B={B})")
    T = max(1, max((len(c) for c in ids), default=0))
    mask = torch.zeros(B, T)
    for i, m in enumerate(masks):
        mask[i, : len(m)] = torch.tensor(m, dtype=torch.float32)
    lengths = torch.tensor([sum(m) for m in masks], dtype=torch.long)
    context = torch.tensor([len(m) - sum(m) for m in masks] if context_tokens is None
                           else [int(c) for c in context_tokens], dtype=torch.long)
    if truncated is None:
        truncated = [len(c) > 0 and c[-1] not in eos_ids for c in ids]
    score = torch.tensor([float(s) for s in scores], dtype=torch.float32)
    tools_on = tool_logs is not None
    tool_cost = torch.tensor([sum(float(c["price"]) for c in log) for log in tool_logs] if tools_on else [0.0] * B,
                             dtype=torch.float64)
    plen = torch.tensor([int(n) for n in prompt_lengths], dtype=torch.long)
    r = Rollouts(
        completions=list(completions),
        completion_ids=ids,
        lengths=lengths,
        prompt_lengths=plen,
        truncated=torch.tensor([bool(t) for t in truncated], dtype=torch.bool),
        correct=torch.tensor([float(is_correct(s)) for s in score.tolist()], dtype=torch.float32),
        scores=score,
        group_size=int(group_size),
        prompt_keys=list(prompt_keys),
        max_completion_length=int(max_completion_length),
        step=int(step),
        mask=mask,
        price_prompt=float(price_prompt),
        price_completion=float(price_completion),
    )
    if tools_on:
        r.tool_log = [list(log) for log in tool_logs]
        r.tool_calls = torch.tensor([float(len(log)) for log in tool_logs])
        r.tool_cost = tool_cost.float()
        r.turns = torch.tensor([float(t) for t in turns] if turns is not None else [1.0] * B)
        r.transcripts = list(transcripts) if transcripts is not None else None
    if turn_probs is not None:
        r.turn_probs = [list(p) for p in turn_probs]
    r.cost = rollout_cost(plen, lengths, context, tool_cost, r.price_prompt, r.price_completion).float()
    if entropies is not None:
        if not isinstance(entropies, torch.Tensor):
            rows = [list(e) for e in entropies]
            width = max(1, max((len(e) for e in rows), default=0))
            ent = torch.zeros(B, width)
            for i, e in enumerate(rows):
                ent[i, : len(e)] = torch.tensor(e, dtype=torch.float32)
            entropies = ent
        r.entropies = torch.zeros(B, T)
        w = min(T, entropies.size(1))
        r.entropies[:, :w] = entropies[:, :w].float() * mask[:, :w]
    return r


def step_metrics(r: Rollouts) -> dict[str, float]:
    """The per-batch metrics of one rollout record (names as logged by training; `rl eval` prefixes `eval/`)."""
    L = r.lengths.float()
    c = r.correct.bool()
    nan = float("nan")
    m = {
        "train/accuracy": float(r.correct.mean()),
        "length/mean": float(L.mean()),
        "length/clip_ratio": float(r.truncated.float().mean()),
        "length/correct_mean": float(L[c].mean()) if c.any() else nan,
        "length/incorrect_mean": float(L[~c].mean()) if (~c).any() else nan,
        "cost/mean": float(r.cost.mean()),
        "cost/per_correct": float(r.cost.sum() / c.sum()) if c.any() else nan,
    }
    if r.tool_log is not None and r.tool_calls is not None and r.tool_cost is not None:  # real tool use
        m["tools/calls_mean"] = float(r.tool_calls.mean())
        # our tools answer errors as text ("error: ..."), so TRL's tools/failure_frequency stays 0: count them here
        calls = [call for log in r.tool_log for call in log]
        m["tools/error_rate"] = sum(not call["ok"] for call in calls) / len(calls) if calls else 0.0
        m["cost/tool_mean"] = float(r.tool_cost.mean())
        if r.turns is not None:
            m["turns/mean"] = float(r.turns.mean())
    if r.modes is not None and r.mode_names:
        for mode in (*r.mode_names, None):
            m[f"modes/{mode or 'none'}"] = sum(1 for x in r.modes if x == mode) / max(1, len(r.modes))
    return m
