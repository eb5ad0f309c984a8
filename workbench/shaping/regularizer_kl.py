"""Loss-side terms that reshape TRL's KL-to-reference penalty: View-R1's DADS (card 15).

TRL computes the reference log-probs and adds its own uniform penalty ``beta * k3`` only when ``beta > 0``; a term
here sets ``beta`` through ``trl_args`` and then corrects TRL's penalty through its ``loss`` hook, so the sum of the
two is the method's penalty. The reference log-probs reach the hook as the loss batch's ``ref_logps`` field.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from workbench.shaping.base import Regularizer, register
from workbench.shaping.loss_batch import LossBatch


def dads_weights(advantages: torch.Tensor, group_accuracy: torch.Tensor, e: float = math.e) -> torch.Tensor:
    """(B,) DADS's per-rollout KL weight: w = 1 - exp(-e (1 - d)) with difficulty d = 1 - group accuracy, for a
    rollout with positive advantage and 0 < d < 1; 1 otherwise (zero or negative advantage, d = 0 or d = 1).

    ``advantages`` (B,) is each rollout's sequence advantage (the reference reads the first token's).

    >>> [round(v, 4) for v in dads_weights(torch.tensor([1.0, 1.0, -1.0, 1.0]),
    ...                                    torch.tensor([0.25, 0.75, 0.25, 1.0])).tolist()]
    [0.4932, 0.8698, 1.0, 1.0]
    """
    d = 1.0 - group_accuracy.double()
    w = 1.0 - torch.exp(-float(e) * (1.0 - d))
    weighted = (advantages.double() > 0) & (d > 0) & (d < 1)
    return torch.where(weighted, w, torch.ones_like(w)).to(advantages.dtype if advantages.is_floating_point()
                                                           else torch.float32)


def k3_kl(logps: torch.Tensor, ref_logps: torch.Tensor) -> torch.Tensor:
    """(B, T) per-token k3 estimate of KL(pi || pi_ref), with grad through ``logps``: exp(r) - r - 1 with
    r = ref_logps - logps (TRL's ``per_token_kl``; the reference's ``compute_approx_kl(kl_estimator="k3")``)."""
    r = ref_logps - logps
    return torch.exp(r) - r - 1.0


@register
class AsymDadsKL(Regularizer):
    """DADS, Difficulty-Adaptive Divergence Shaping: View-R1's KL-to-reference penalty weighted per rollout by the
    difficulty of its prompt (arXiv 2506.21655, card 15; the advantage half, STCR, is ``advantage=[asym_stcr]``).
    Reference: Indolent-Kawhi/View-R1 ``openrlhf/trainer/ray/ppo_actor.py`` (``calculate_kl_weight`` and the KL part
    of ``ActorPPOTrainer.training_step``); ``tests/test_method_dads.py`` transcribes both.

    Formula: d_i = 1 - (share of correct rollouts in rollout i's group); w_i = 1 - exp(-e (1 - d_i)) when A_i > 0 and
    0 < d_i < 1, else 1 (``dads_weights``). KL_i = the token mean over rollout i's completion of the k3 estimate
    exp(r) - r - 1, r = log pi_ref - log pi (``k3_kl``). Penalty: beta * mean_i (w_i KL_i), the mean over the
    rollouts of the loss call; the rollout's correct answer to a hard prompt is held only weakly to the reference
    (w -> 0 as accuracy -> 0), an easy one's almost fully (w = 1 - e^-e ~ 0.934 at accuracy 1 - epsilon).

    How it is made exact on TRL: ``trl_args`` sets TRL's ``beta`` (so TRL computes ``ref_per_token_logps`` with its
    reference model and adds beta * k3 to every token's loss) and ``loss_type=grpo`` (TRL's loss, KL included, is
    then the per-completion token mean averaged over the completions of the micro-batch: the reference's
    ``masked_mean(kl, action_mask, dim=-1).mean()``, and its ``PolicyLoss`` aggregation). The ``loss`` hook adds
    beta * mean_i ((w_i - 1) KL_i) with KL from the same per-token formula on the same log-probs; TRL's beta *
    mean_i KL_i plus that is beta * mean_i (w_i KL_i), the reference's penalty. Both are divided by the
    gradient-accumulation steps alike (the trainer divides the hook's loss as TRL divides its own).

    Decisions and differences: (1) ``beta`` and ``loss_type`` are set by this term and override ``algo.beta`` /
    ``algo.loss_type``; beta defaults to the reference script's ``init_kl_coef`` 1e-3 (a fixed coefficient: the
    script's ``kl_target`` is unset, so the reference's controller is constant too). (2) Correctness is the task's
    (``correct``), where the reference reads the integer part of its reward; the group accuracy is taken over the
    whole group at generation time and carried to the loss with each row (``group_accuracy``), so it is right in
    any micro-batch split. (3) A_i is the sequence advantage TRL's loss sees, after earlier token hooks (its first
    token's, as the reference reads ``advantage[0]``). (4) TRL's ``use_bias_correction_kl`` (off by default)
    multiplies TRL's per-token KL by the ratio; the correction does not, so leave it off. (5) ``e`` is the
    reference's hard-coded Euler number, an option here. Metrics: ``weight_mean`` (mean w over the call's rollouts),
    ``weighted`` (share of rollouts with w != 1), ``kl_mean`` (unweighted mean_i KL_i; TRL's own ``kl`` metric is
    the token mean over all the call's tokens instead),
    ``weighted_kl`` (mean_i w_i KL_i, the penalty divided by beta).
    """

    name = "asym_dads_kl"
    fields = frozenset({"ref_logps", "group_accuracy"})

    def __init__(self, beta: float = 1e-3, e: float = math.e):
        if not beta > 0:
            raise ValueError(f"beta must be > 0 (the KL coefficient; TRL computes reference log-probs only then), "
                             f"got {beta}")
        if e < 0:
            raise ValueError(f"e must be >= 0, got {e}")
        self.beta, self.e = float(beta), float(e)
        self._metrics: dict[str, float] = {}

    def trl_args(self) -> dict[str, Any]:
        return {"beta": self.beta, "loss_type": "grpo"}

    def loss(self, batch: LossBatch) -> torch.Tensor:
        who = f"regularizer.{self.name}"
        ref = batch.require("ref_logps", who).to(batch.logps.device)
        acc = batch.require("group_accuracy", who).to(batch.logps.device)
        mask = batch.mask.float()
        kl = (k3_kl(batch.logps, ref) * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1.0)  # (B,) token means
        adv = batch.advantages.detach()
        seq_adv = adv[:, 0] if adv.dim() == 2 else adv
        w = dads_weights(seq_adv, acc.float(), self.e).to(kl.dtype)
        self._metrics = {
            "weight_mean": float(w.mean()) if w.numel() else 0.0,
            "weighted": float((w != 1).float().mean()) if w.numel() else 0.0,
            "kl_mean": float(kl.detach().mean()) if kl.numel() else 0.0,
            "weighted_kl": float((w * kl.detach()).mean()) if kl.numel() else 0.0,
        }
        if not kl.numel():
            return batch.logps.sum() * 0.0
        return self.beta * ((w - 1.0) * kl).mean()

    def metrics(self) -> dict[str, float]:
        return dict(self._metrics)
