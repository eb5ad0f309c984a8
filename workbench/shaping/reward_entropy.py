"""Entropy reward terms: PEAR, the phase-entropy-aware reward (METHODS.md card 1).

Per-token entropies of the sampled completions reach reward terms through ``rollouts.entropies`` (signal
``entropy``), and the think/answer split through ``rollouts.think_mask`` / ``answer_mask`` / ``has_think_close``
(signal ``phase``).
"""

from __future__ import annotations

import torch

from workbench.rollouts import Rollouts
from workbench.shaping.base import RewardTerm, register


def masked_mean(x: torch.Tensor, mask: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """Mean of ``x`` over ``mask`` along ``dim``; 0 where the mask is empty (never NaN).

    >>> masked_mean(torch.tensor([[1., 3.], [5., 7.]]), torch.tensor([[1, 1], [0, 0]])).tolist()
    [2.0, 0.0]
    """
    m = mask.to(x.dtype)
    return (x * m).sum(dim) / m.sum(dim).clamp(min=1.0)


def phase_entropies(
    entropies: torch.Tensor,
    mask: torch.Tensor,
    think_mask: torch.Tensor | None = None,
    answer_mask: torch.Tensor | None = None,
    has_think_close: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean think-phase and answer-phase entropy per rollout, (B,) each.

    A rollout without ``</think>`` (or with no phase masks at all) is all thinking: every valid token counts as
    think and its answer entropy is 0. Empty phases give 0, never NaN.

    >>> H = torch.tensor([[1., 1., 0.2, 0.4], [2., 2., 2., 0.]])
    >>> mask = torch.tensor([[1, 1, 1, 1], [1, 1, 1, 0]])
    >>> think = torch.tensor([[1, 1, 0, 0], [0, 0, 0, 0]]).bool()
    >>> answer = torch.tensor([[0, 0, 1, 1], [0, 0, 0, 0]]).bool()
    >>> h_think, h_answer = phase_entropies(H, mask, think, answer, torch.tensor([True, False]))
    >>> [round(x, 4) for x in h_think.tolist()], [round(x, 4) for x in h_answer.tolist()]
    ([1.0, 2.0], [0.3, 0.0])
    """
    valid = mask.bool()
    if think_mask is None or answer_mask is None:
        think, answer = valid, torch.zeros_like(valid)
    else:
        closed = torch.ones(valid.shape[0], dtype=torch.bool) if has_think_close is None else has_think_close.bool()
        closed = closed.unsqueeze(1)
        think = torch.where(closed, think_mask.bool() & valid, valid)
        answer = answer_mask.bool() & valid & closed
    return masked_mean(entropies, think), masked_mean(entropies, answer)


def pear_reward(
    h_think: torch.Tensor,
    h_answer: torch.Tensor,
    answer_coef: float = 0.0,
    answer_cap: float = 1.0,
) -> torch.Tensor:
    """PEAR as implemented here: r = -H_think + answer_coef * min(H_answer, answer_cap).

    >>> r = pear_reward(torch.tensor([1.0, 2.0]), torch.tensor([0.3, 5.0]), answer_coef=0.5, answer_cap=1.0)
    >>> [round(x, 4) for x in r.tolist()]
    [-0.85, -1.5]
    """
    return -h_think + answer_coef * h_answer.clamp(max=answer_cap)


@register
class PEAR(RewardTerm):
    """PEAR: Phase Entropy Aware Reward (Huang, Lu, Zhang, arXiv 2510.08026, ICLR 2026; github.com/iNLP-Lab/PEAR),
    card 1.

    r_i = -H_think,i + answer_coef * min(H_answer,i, answer_cap), times ``weight`` (the penalty strength alpha).
    H_think is the mean per-token entropy (nats) of the tokens up to and including ``</think>``, H_answer the mean
    over the tokens after it, both from the entropies of the sampled completions (signal ``entropy``).

    Decision on the [UNCONFIRMED] formula (the paper's words: "penalize excessive entropy during the thinking phase
    and allow moderate exploration at the final answer phase"; the exact combination was not recovered):
    * the penalty is linear in the mean think entropy, so it does not depend on length by itself (a mean, not a
      sum); shorter thinking comes from lower-entropy (more committed) thinking, which the paper links to length;
    * the answer phase is **not penalised**. ``answer_coef`` (default 0) can add a small allowance for answer
      entropy, capped at ``answer_cap`` nats so it can never be farmed by emitting noise after ``</think>``;
    * the term applies to all rollouts, right and wrong (the card: "correctness minus a weighted penalty");
      ``correct_only=True`` restricts it to correct ones, which avoids the all-wrong-group failure DESIGN.md measured
      for length terms under per-group std scaling (there the entropy term is the only signal left);
    * weight: conf uses 0.1, so that even at the tiny model's maximum entropy (ln 48 = 3.9 nats) a correct answer
      still outscores a wrong one by >= 0.6 with correctness weight 1. The paper's weight is unknown.
    Edge cases: no ``</think>`` -> every token counts as thinking and H_answer = 0; zero-length completion or empty
    mask -> 0; no NaN. Third-party "PEAR entropy.py" copies with an "entropy relief" bonus are not PEAR (card 1).
    """

    name = "pear"
    needs = frozenset({"entropy", "phase", "correct"})

    def __init__(
        self, weight: float = 1.0, answer_coef: float = 0.0, answer_cap: float = 1.0, correct_only: bool = False
    ):
        super().__init__(weight)
        if answer_cap < 0:
            raise ValueError(f"answer_cap must be >= 0, got {answer_cap}")
        self.answer_coef = float(answer_coef)
        self.answer_cap = float(answer_cap)
        self.correct_only = bool(correct_only)
        self._metrics: dict[str, float] = {}

    def __call__(self, rollouts: Rollouts) -> torch.Tensor:
        if rollouts.entropies is None:
            raise ValueError("reward.pear needs per-token entropies (signal 'entropy'), but rollouts.entropies is None")
        H = rollouts.entropies.detach().float()
        mask = rollouts.mask
        if mask is None:
            mask = torch.arange(H.shape[1]).unsqueeze(0) < rollouts.lengths.unsqueeze(1)
        h_think, h_answer = phase_entropies(
            H, mask, rollouts.think_mask, rollouts.answer_mask, rollouts.has_think_close
        )
        r = pear_reward(h_think, h_answer, self.answer_coef, self.answer_cap)
        if self.correct_only:
            r = torch.where(rollouts.correct > 0.5, r, torch.zeros_like(r))
        self._metrics = {"think_entropy": float(h_think.mean()), "answer_entropy": float(h_answer.mean())}
        return r

    def metrics(self) -> dict[str, float]:
        return dict(self._metrics)
