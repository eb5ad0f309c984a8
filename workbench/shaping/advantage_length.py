"""Length-aware advantage transforms on the wrong answers: View-R1's STCR (card 15).

The mirror image of `positive_length` (workbench.shaping.advantage) and DRPO: there the length preference acts on the
correct answers only; here long *wrong* answers are pushed down harder and a correct answer never gets a length
penalty.
"""

from __future__ import annotations

import torch

from workbench.rollouts import Rollouts
from workbench.shaping.base import AdvantageTransform, register


def stcr_factors(lengths: torch.Tensor, correct: torch.Tensor, group_size: int, base: float = 1.00001) -> torch.Tensor:
    """(B,) STCR factors: 2 - base^(-(L_i - mean correct length)) for a wrong rollout longer than its group's mean
    correct length, 1 for everything else (correct rollouts, shorter wrong ones, groups with no correct rollout).

    Computed in float64 (the authors' float32 shifts factor - 1 by ~1.4e-3 relative at base 1.00001).

    >>> f = stcr_factors(torch.tensor([10, 20, 30, 99]), torch.tensor([1., 1., 0., 0.]), 4, base=1.1)
    >>> [round(x, 4) for x in f.tolist()]  # mean correct length 15: wrong ones 15 and 84 tokens longer
    [1.0, 1.0, 1.7606, 1.9997]
    """
    L = lengths.double().view(-1, group_size)
    c = correct.double().view(-1, group_size).trunc()  # the integer part, as the authors read it
    n_correct = c.sum(dim=1, keepdim=True)
    mean_correct = (L * c).sum(dim=1, keepdim=True) / (n_correct + 1e-9)
    diff = (L - mean_correct) * (1 - c)
    penalty = torch.where(diff > 0, 1 - torch.pow(torch.tensor(float(base), dtype=torch.float64), -diff),
                          torch.zeros_like(diff))
    penalty = torch.where(n_correct > 0, penalty, torch.zeros_like(penalty))
    return (1 + penalty).reshape(-1)


@register
class AsymSTCR(AdvantageTransform):
    """View-R1 STCR, Suboptimal Trajectory Complexity Regularization (APO: "Enhancing Reasoning Ability of MLLMs via
    Asymmetric Policy Optimization", arXiv 2506.21655; github.com/Indolent-Kawhi/View-R1,
    `openrlhf/trainer/ppo_utils/experience_maker.py::compute_advantages_and_returns`, `--use_stcr`), card 15.
    Not A²FM's APO (card 3): see METHODS.md "Name clashes".

    For each group, L̄+ = the mean length of its correct rollouts and, for a wrong rollout, Δ_i = L_i - L̄+. The
    advantage of every rollout is multiplied by f_i = 2 - base^(-Δ_i) when the group has a correct rollout, the
    rollout is wrong and Δ_i > 0; otherwise f_i = 1. f is in (1, 2): the longer a wrong answer than the correct
    ones, the harder its (negative) advantage pushes, saturating at twice the GRPO advantage.

    Defaults: base 1.00001 (hard-coded by the authors, ~1e-5 per token: Δ = 1000 tokens gives f ≈ 1.01, so on short
    completions the term is nearly inert; a tiny-model run needs e.g. base 1.05 to show an effect).
    Decisions and differences:
    * correctness is `rollouts.correct` (the task's score counted as correct), read through its integer part as the
      authors read the reward; their length is OpenRLHF's response length, here `rollouts.lengths` (the model's own
      tokens). Like the authors' code, the factor multiplies whatever advantage the rollout has, so a wrong answer
      with a positive advantage (a format bonus) is scaled up too (METHODS.md, "Details found").
    * float64 factors: the authors' float32 `1.00001 ** (-d)` differs by ~1.4e-3 relative in (f - 1).
    * applies to (B,) or (B, T) advantages (a per-rollout factor), so it may follow token-level transforms.
    """

    name = "asym_stcr"
    needs = frozenset({"correct", "lengths"})

    def __init__(self, base: float = 1.00001):
        if not base > 1.0:
            raise ValueError(f"base must be > 1 (1.00001 in the paper), got {base}")
        self.base = float(base)
        self._metrics: dict[str, float] = {}

    def __call__(self, advantages: torch.Tensor, rollouts: Rollouts, rewards: torch.Tensor) -> torch.Tensor:
        f = stcr_factors(rollouts.lengths, rollouts.correct, rollouts.group_size, self.base)
        scaled = f > 1.0
        self._metrics = {
            "scaled_frac": float(scaled.float().mean()) if f.numel() else 0.0,
            "factor_max": float(f.max()) if f.numel() else 1.0,
        }
        f = f.to(advantages.dtype)
        return advantages * (f if advantages.dim() == 1 else f.unsqueeze(1))

    def metrics(self) -> dict[str, float]:
        return dict(self._metrics)
