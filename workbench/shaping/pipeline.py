"""The shaping pipeline: every active term, run in config order, with no TRL in sight.

`ShapingPipeline` owns what is true of the terms whatever trainer drives them:

* `needs` (the rollout signals to compute) and `fields` (the optional loss-batch fields to fill);
* a reward term's weight: from config (`reward.<name>.weight`) to `RewardTerm.weight` to `rewards()`, where the
  **one** weighted sum of the run is taken. The trainer hands TRL that sum as a single reward column of weight 1,
  so TRL's own sum and group normalisation see exactly this number;
* the NaN/inf checks that name the term, and the metric names: `shaping/<name>/mean` (a reward term's weighted
  mean), `rewards/<name>/mean|std` (its raw, unweighted output), `shaping/<name>/<key>` (a term's own
  `metrics()`), `shaping/<name>/loss` (a regularizer's added loss);
* term state for checkpoints (`state_dict`).

The hooks, in the order a trainer calls them for one step: `rewards(rollouts)` -> `advantages(adv, rollouts,
rewards)` -> per training micro-batch `token_advantages(batch)` then `loss(batch)`. Each returns its metrics as a
dict; the trainer only files them. `rl eval` calls `rewards()` on held-out rollouts for `eval/shaping/*`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from workbench.rollouts import Rollouts
from workbench.shaping.base import AdvantageTransform, Regularizer, RewardTerm, Term
from workbench.shaping.loss_batch import OPTIONAL_FIELDS, LossBatch


@dataclass
class RewardResult:
    total: torch.Tensor  # (B,) the weighted sum of the reward terms: the reward GRPO normalises per group
    raw: dict[str, torch.Tensor]  # each term's unweighted (B,) output, by name
    metrics: dict[str, float] = field(default_factory=dict)


class ShapingPipeline:
    def __init__(self, reward_terms: list[RewardTerm], advantage_terms: list[AdvantageTransform],
                 regularizers: list[Regularizer]):
        self.reward_terms = list(reward_terms)
        self.advantage_terms = list(advantage_terms)
        self.regularizers = list(regularizers)
        self.token_regs = [r for r in self.regularizers if r.has_token_hook]
        self.loss_regs = [r for r in self.regularizers if r.has_loss]
        self.needs: set[str] = set().union(*(t.needs for t in self.terms))
        self.fields: set[str] = set().union(*(getattr(r, "fields", frozenset()) for r in self.regularizers))
        unknown = self.fields - set(OPTIONAL_FIELDS)
        if unknown:
            raise ValueError(f"unknown loss-batch fields {sorted(unknown)}; valid: {sorted(OPTIONAL_FIELDS)}")

    @property
    def terms(self) -> list[Term]:
        return [*self.reward_terms, *self.advantage_terms, *self.regularizers]

    @property
    def weights(self) -> dict[str, float]:
        """Each reward term's weight, by name (the values `rewards()` sums with)."""
        return {t.name: t.weight for t in self.reward_terms}

    def bind_tokenizer(self, tokenizer: Any) -> None:
        for term in self.terms:
            term.bind_tokenizer(tokenizer)

    # ------------------------------------------------------------------ rollout side
    def rewards(self, rollouts: Rollouts) -> RewardResult:
        """Every reward term once, in config order (a combiner reads earlier terms' raw outputs from
        `rollouts.term_rewards`), and the weighted sum."""
        B = len(rollouts.completions)
        total = torch.zeros(B)
        raw: dict[str, torch.Tensor] = {}
        metrics: dict[str, float] = {}
        for term in self.reward_terms:
            out = term(rollouts).detach().float().cpu().reshape(-1)
            if out.numel() != B:
                raise ValueError(f"reward term '{term.name}' returned {out.numel()} values for {B} rollouts")
            bad = (~torch.isfinite(out)).nonzero().flatten().tolist()
            if bad:
                raise FloatingPointError(f"reward term '{term.name}' returned NaN/inf for rollouts {bad[:5]} "
                                         f"(e.g. completion {rollouts.completions[bad[0]]!r})")
            raw[term.name] = out
            rollouts.term_rewards[term.name] = out
            total += term.weight * out
            metrics[f"shaping/{term.name}/mean"] = float((term.weight * out).mean())
            metrics[f"rewards/{term.name}/mean"] = float(out.mean())
            metrics[f"rewards/{term.name}/std"] = float(out.std()) if B > 1 else 0.0
            metrics.update(_term_metrics(term))
        return RewardResult(total=total, raw=raw, metrics=metrics)

    def advantages(self, advantages: torch.Tensor, rollouts: Rollouts, rewards: torch.Tensor
                   ) -> tuple[torch.Tensor, dict[str, float]]:
        """The advantage transforms in config order on the group-normalised (B,) advantages; (B,) or (B, T) out."""
        metrics: dict[str, float] = {}
        for term in self.advantage_terms:
            advantages = term(advantages, rollouts, rewards)
            if not torch.isfinite(advantages).all():
                raise FloatingPointError(f"advantage transform '{term.name}' produced NaN/inf")
            metrics.update(_term_metrics(term))
        return advantages, metrics

    # ------------------------------------------------------------------ loss side
    def token_advantages(self, batch: LossBatch) -> torch.Tensor:
        """The token hooks in config order; each sees the previous one's advantages. Sets `batch.advantages`."""
        for reg in self.token_regs:
            batch.advantages = reg.token_advantages(batch)
        return batch.advantages

    def loss(self, batch: LossBatch) -> tuple[torch.Tensor | None, dict[str, float]]:
        """The sum of the regularizers' extra losses for one micro-batch (None when none adds one), and the
        regularizers' metrics (token-hook-only ones, Clip-Cov, report their counters here too)."""
        extra = None
        metrics: dict[str, float] = {}
        for reg in self.loss_regs:
            value = reg.loss(batch)
            if value is None:
                continue
            if not torch.isfinite(value):
                raise FloatingPointError(f"regularizer '{reg.name}' produced a NaN/inf loss")
            extra = value if extra is None else extra + value
            metrics[f"shaping/{reg.name}/loss"] = float(value.detach())
            metrics.update(_term_metrics(reg))
        for reg in self.token_regs:
            if reg not in self.loss_regs:
                metrics.update(_term_metrics(reg))
        return extra, metrics

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        state = {t.name: t.state_dict() for t in self.terms}
        return {k: v for k, v in state.items() if v}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for t in self.terms:
            if t.name in state:
                t.load_state_dict(state[t.name])


def _term_metrics(term: Term) -> dict[str, float]:
    return {f"shaping/{term.name}/{k}": float(v) for k, v in term.metrics().items()}
