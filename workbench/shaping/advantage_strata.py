"""Stratified advantages: Stratified GRPO's SAN (card G2-5), strata by the real tool-call count."""

from __future__ import annotations

import torch

from workbench.rollouts import Rollouts
from workbench.shaping.base import AdvantageTransform, register


def stratified_advantages(rewards: torch.Tensor, strata: torch.Tensor, group_size: int, eps: float = 1e-4
                          ) -> torch.Tensor:
    """(B,) SAN advantages: (R_i - mean_s) / (std_s + eps) over the rollouts of the same group *and* stratum,
    std the unbiased one (as TRL's group std); a stratum of one rollout gets 0 (no peer to compare with).

    >>> r = torch.tensor([1., 0., 1., 1., 0., 0.])
    >>> s = torch.tensor([0., 0., 1., 1., 1., 2.])  # strata {0, 1} {2, 3, 4} {5} in one group of 6
    >>> [round(x, 4) for x in stratified_advantages(r, s, 6).tolist()]
    [0.707, -0.707, 0.5773, 0.5773, -1.1545, 0.0]
    """
    B = rewards.numel()
    r = rewards.double().reshape(-1)
    group = torch.arange(B) // group_size
    # one key per (group, stratum): strata values are small counts, so group * (max + 1) + stratum is unique
    s = strata.reshape(-1).round().long()
    s = s - s.min() if B else s
    key = group * (int(s.max()) + 1 if B else 1) + s
    _, inv = torch.unique(key, return_inverse=True)
    k = int(inv.max()) + 1 if B else 0
    n = torch.zeros(k, dtype=torch.float64).index_add_(0, inv, torch.ones_like(r))
    mean = torch.zeros(k, dtype=torch.float64).index_add_(0, inv, r) / n
    sq = torch.zeros(k, dtype=torch.float64).index_add_(0, inv, (r - mean[inv]) ** 2)
    std = (sq / (n - 1).clamp(min=1)).sqrt()
    adv = (r - mean[inv]) / (std[inv] + eps)
    return torch.where(n[inv] > 1, adv, torch.zeros_like(adv)).to(rewards.dtype)


@register
class StratifiedGRPO(AdvantageTransform):
    """Stratified GRPO's Stratified Advantage Normalization, blended (Zhu et al., "Stratified GRPO: Handling
    Structural Heterogeneity in Reinforcement Learning of LLM Search Agents", arXiv 2510.06214), card G2-5.

    A rollout's stratum is its number of tool calls (signal `tool_calls`: the real calls counted by the tool
    environments when tools ran, else the tool-call tags in the text). Within each group, A_SAN,i =
    (R_i - mean_s) / (std_s + eps) over the rollouts of the same stratum s; the advantage handed on is
    A_i = alpha * A_SAN,i + (1 - alpha) * A_global,i, with A_global the incoming (group-normalised) advantage, so
    trajectories are compared with the ones that searched as often as they did, and the global part keeps a signal
    across strata (a stratum of one rollout has A_SAN = 0).

    No released code was found, so these are our documented choices:
    * alpha = 0.5 (equal blend; the paper's value was not recovered). alpha = 1 is pure SAN, alpha = 0 plain GRPO.
    * strata are formed inside each prompt's group (GRPO's scope), not over the whole batch;
    * std_s is the unbiased std (TRL's group std), eps 1e-4 (TRL's); strata of one rollout get A_SAN = 0;
    * R is the shaped reward the pipeline summed (what TRL normalised), A_global TRL's advantage (so it keeps the
      run's `scale_rewards`); list it first among advantage transforms, it needs (B,) advantages.
    """

    name = "stratified_grpo"
    needs = frozenset({"tool_calls"})

    def __init__(self, alpha: float = 0.5, eps: float = 1e-4):
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"alpha must be in [0, 1], got {alpha}")
        if not eps > 0:
            raise ValueError(f"eps must be positive, got {eps}")
        self.alpha, self.eps = float(alpha), float(eps)
        self._metrics: dict[str, float] = {}

    def __call__(self, advantages: torch.Tensor, rollouts: Rollouts, rewards: torch.Tensor) -> torch.Tensor:
        if advantages.dim() != 1:
            raise ValueError("advantage.stratified_grpo needs (B,) advantages; list it before token-level transforms")
        if rollouts.tool_calls is None:
            raise ValueError("advantage.stratified_grpo needs tool-call counts (signal 'tool_calls')")
        strata = rollouts.tool_calls.float()
        san = stratified_advantages(rewards.float(), strata, rollouts.group_size, self.eps)
        G = rollouts.group_size
        per_group = [len(set(row)) for row in strata.view(-1, G).round().long().tolist()] if strata.numel() else [0]
        self._metrics = {"strata_per_group": sum(per_group) / max(1, len(per_group)),
                         "san_abs_mean": float(san.abs().mean()) if san.numel() else 0.0}
        return self.alpha * san.to(advantages.dtype) + (1 - self.alpha) * advantages

    def metrics(self) -> dict[str, float]:
        return dict(self._metrics)
