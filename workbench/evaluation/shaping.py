"""What the run's shaping terms say about held-out samples: `eval/shaping/<term>/mean`.

`rl eval` of a run's checkpoint builds the same `Rollouts` record training builds (`workbench.rollouts.
build_rollouts`, from the samples.jsonl rows: the model's own token ids, per-token entropies, scores, tool logs)
and runs the run's reward terms on it through the same pipeline (`workbench.shaping.pipeline`), so
`eval/shaping/<term>/mean` means exactly what `shaping/<term>/mean` means in training: the term's weighted mean,
here over the held-out samples, each problem's `eval.n` samples forming one group.

What differs from training, by construction: terms with cross-step state (HAPO's per-prompt history) start
fresh; the think/answer split is the one the rows already carry (`think_tokens`, found by the same
`ThinkSplitter`); with `eval.backend=vllm` the per-token entropies are vLLM's top-k lower bound (its docstring).
"""

from __future__ import annotations

from typing import Any

from workbench.config import PriceConfig
from workbench.rollouts import Rollouts, build_rollouts
from workbench.signals import fill_signals, phase_masks


def eval_rollouts(rows: list[dict[str, Any]], group_size: int, max_completion_length: int,
                  price: PriceConfig) -> Rollouts:
    """The rollout record of samples.jsonl rows (ordered by problem, then sample: each problem is a group).

    Needs the rows' `ids` (the model's own tokens) and, for the entropy signal, `token_entropy`."""
    tools_on = bool(rows) and all("tool_calls" in r for r in rows)
    with_entropy = bool(rows) and all(r.get("token_entropy") is not None for r in rows)
    r = build_rollouts(
        completions=[row["completion"] for row in rows],
        completion_ids=[row["ids"] for row in rows],
        prompt_lengths=[row["prompt_tokens"] for row in rows],
        scores=[row["score"] for row in rows],
        eos_ids=frozenset(),
        truncated=[row["truncated"] for row in rows],
        group_size=group_size,
        prompt_keys=[row.get("id", row["problem"]) for row in rows],
        max_completion_length=max_completion_length,
        price_prompt=price.prompt_per_million,
        price_completion=price.completion_per_million,
        context_tokens=[row.get("context_tokens", 0) for row in rows],
        tool_logs=[row["tool_calls"] for row in rows] if tools_on else None,
        turns=[row.get("turns", 1) for row in rows] if tools_on else None,
        transcripts=[row.get("transcript", row["completion"]) for row in rows] if tools_on else None,
        entropies=[row["token_entropy"] for row in rows] if with_entropy else None,
    )
    r.think_mask, r.answer_mask, r.has_think_close = phase_masks(
        [row.get("think_tokens") for row in rows], [len(row["ids"]) for row in rows], r.mask.size(1))
    return r


class _Context:
    """What `fill_signals` reads besides the record: the task (answers, modes)."""

    def __init__(self, task: Any):
        self.task = task
        self.splitter = None  # phase comes from the rows (eval_rollouts), never re-split here


def reward_terms_of(reward_config: dict[str, Any] | None) -> list[Any]:
    """Fresh reward terms from a run's `reward` config (`{name: options}`); none for a model without a run."""
    from workbench.shaping.base import build_terms

    return build_terms("reward", dict(reward_config or {})) if reward_config else []


def shaping_metrics(rows: list[dict[str, Any]], reward_terms: list[Any], task: Any, group_size: int,
                    max_completion_length: int, price: PriceConfig) -> dict[str, float]:
    """`eval/shaping/<term>/mean` for every reward term of the run, on held-out rows. Empty when the rows lack the
    token ids (samples saved before rows carried them) or a term needs entropies the rows lack."""
    from workbench.shaping.pipeline import ShapingPipeline

    if not rows or not reward_terms or not all("ids" in r for r in rows):
        return {}
    pipeline = ShapingPipeline(reward_terms, [], [])
    if "entropy" in pipeline.needs and not all(r.get("token_entropy") is not None for r in rows):
        return {}
    rollouts = eval_rollouts(rows, group_size, max_completion_length, price)
    fill_signals(rollouts, (pipeline.needs - {"phase"}) | ({"modes"} if getattr(task, "modes", ()) else set()),
                 _Context(task))
    result = pipeline.rewards(rollouts)
    return {f"eval/{k}": v for k, v in result.metrics.items() if k.startswith("shaping/") and k.endswith("/mean")}
