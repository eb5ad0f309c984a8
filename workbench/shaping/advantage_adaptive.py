"""Advantage transforms that adapt to the rollouts' token structure: HAPO-heterogeneous's token-level group
advantage (card 16; its loss side is `workbench.shaping.regularizer_adaptive.HeteroEntropyHAPO`)."""

from __future__ import annotations

import torch

from workbench.rollouts import Rollouts
from workbench.shaping.base import AdvantageTransform, register


def token_group_advantages(rewards: torch.Tensor, lengths: torch.Tensor, group_size: int, fallback: torch.Tensor,
                           norm_by_std: bool = True, eps: float = 1e-6, max_abs: float = 5.0
                           ) -> tuple[torch.Tensor, torch.Tensor]:
    """(advantages (B,), fell_back (B,) bool): each rollout's reward z-scored with the mean and population std over
    the valid **tokens** of its group (rollout i counted L_i times), so long responses weigh more in the statistics.
    A group where any |z| >= max_abs takes `fallback` (the ordinary per-sequence advantage) instead. Groups are
    contiguous blocks of `group_size`; a group with no tokens gives 0.

    >>> A, fb = token_group_advantages(torch.tensor([1.0, 0.0, 0.0, 1.0]), torch.tensor([1, 3, 2, 2]), 2,
    ...                                torch.zeros(4))
    >>> [round(x, 3) for x in A.tolist()], fb.tolist()
    ([1.732, -0.577, -1.0, 1.0], [False, False, False, False])
    """
    R = rewards.double().view(-1, group_size)
    L = lengths.double().view(-1, group_size)
    n = L.sum(dim=1, keepdim=True)
    mean = (R * L).sum(dim=1, keepdim=True) / n.clamp_min(1.0)
    var = (((R - mean) ** 2) * L).sum(dim=1, keepdim=True) / n.clamp_min(1.0)
    z = (R - mean) / (var.sqrt() + eps) if norm_by_std else R - mean
    z = torch.where(n > 0, z, torch.zeros_like(z))
    fell_back = (z.abs() >= max_abs).any(dim=1, keepdim=True).expand_as(z)
    out = torch.where(fell_back, fallback.double().view(-1, group_size), z)
    return out.reshape(-1).float(), fell_back.reshape(-1)


@register
class HeteroHAPOTokenAdvantage(AdvantageTransform):
    """HAPO-heterogeneous's token-level group average (arXiv 2509.16591; starriver030515/HAPO
    ``core_algos.py::compute_hapo_outcome_advantage``), card 16: A_i = (R_i - mu_tok) / (sigma_tok + 1e-6), where
    mu_tok and sigma_tok (population) are over all valid tokens of the group (`token_group_advantages`). A group
    with any |A_i| >= 5 keeps the incoming advantage (TRL's group-normalised one; the authors fall back to their
    GRPO advantage with the unbiased std: set ``algo.scale_rewards=group`` to match it; TRL adds 1e-4, not 1e-6).
    Pair with ``regularizer=hetero_entropy_hapo`` for the whole method.

    L_i is the number of tokens the model wrote (``Rollouts.lengths``: through EOS, tool results out), the
    response mask the authors count. ``norm_by_std=false`` is their Dr.GRPO switch (mean only). The reward is the
    run's shaped reward (the value TRL normalises). This transform replaces the advantage: put it first when
    combining with other transforms.
    """

    name = "hetero_hapo_token_advantage"

    def __init__(self, norm_by_std: bool = True, max_abs: float = 5.0):
        if max_abs <= 0:
            raise ValueError(f"max_abs must be > 0, got {max_abs}")
        self.norm_by_std, self.max_abs = bool(norm_by_std), float(max_abs)
        self._metrics: dict[str, float] = {}

    def __call__(self, advantages: torch.Tensor, rollouts: Rollouts, rewards: torch.Tensor) -> torch.Tensor:
        A = advantages if advantages.dim() == 1 else advantages[:, 0]
        out, fell_back = token_group_advantages(rewards, rollouts.lengths, rollouts.group_size, A,
                                                self.norm_by_std, max_abs=self.max_abs)
        self._metrics = {"fallback_frac": float(fell_back.float().mean()) if fell_back.numel() else 0.0}
        return out.to(advantages.dtype)

    def metrics(self) -> dict[str, float]:
        return dict(self._metrics)
