"""Advantage transforms built on how consistent a prompt's answers are: COPO (card G2-9)."""

from __future__ import annotations

import math
from collections import Counter

import torch

from workbench.rollouts import Rollouts
from workbench.shaping.base import AdvantageTransform, register

#: COPO's blending modes (the authors' `global_flg`; their snapshots spell them with spaces or hyphens).
COPO_MODES = ("soft_with_zero", "only_soft", "soft_with_forced", "only_zero", "only_forced", "only_global",
              "no_global")


def answer_entropy_bits(answers: list) -> float:
    """Entropy in bits of the empirical distribution of one group's answers (exact string match; None is one more
    value, "no answer").

    >>> answer_entropy_bits(["4", "4", "5", "6"]), answer_entropy_bits(["4", "4"])
    (1.5, 0.0)
    """
    counts = Counter(answers)
    n = len(answers)
    return max(0.0, -sum(c / n * math.log2(c / n) for c in counts.values())) if n else 0.0


def copo_parts(correct: torch.Tensor, answers: list, group_size: int, reward_coef: bool = False, eps: float = 1e-6
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(global advantage, answer entropy H_q in bits, global score g_q), each (B,), one value per group given to all
    its rollouts. g_q = pass rate x (1 - lambda H_q) with lambda = (1 - 1/G) / log2 G when `reward_coef`, else the
    pass rate; the global advantage is g_q z-scored over the batch's prompts (unbiased std + eps, as the authors';
    one prompt: std undefined, advantage 0).

    >>> A, H, g = copo_parts(torch.tensor([1., 1, 0, 0, 1, 1]), ["4", "4", "5", "6", "2", "2"], 2)
    >>> [round(x, 3) for x in A.tolist()], H.tolist(), g.tolist()
    ([0.577, 0.577, -1.155, -1.155, 0.577, 0.577], [0.0, 0.0, 1.0, 1.0, 0.0, 0.0], [1.0, 1.0, 0.0, 0.0, 1.0, 1.0])
    """
    G = group_size
    n_groups = correct.numel() // G
    H = torch.tensor([answer_entropy_bits(list(answers[q * G:(q + 1) * G])) for q in range(n_groups)],
                     dtype=torch.float64)
    g = correct.double().view(n_groups, G).mean(dim=1)
    if reward_coef and G > 1:
        g = g * (1 - (1 - 1 / G) / math.log2(G) * H)
    if n_groups > 1:
        A = (g - g.mean()) / (g.std() + eps)
    else:
        A = torch.zeros_like(g)
    expand = lambda x: x.repeat_interleave(G).float()  # noqa: E731
    return expand(A), expand(H), expand(g)


def copo_local_weight(H: torch.Tensor, rewards: torch.Tensor, local: torch.Tensor, mode: str, k: float, b: float
                      ) -> torch.Tensor:
    """(B,) weight w of the local loss (1 - w on the global one) for each rollout under COPO's `mode`:
    sigma(k (H_q - b)), times 1[reward != 0] (soft_with_zero) or 1[local advantage != 0] (soft_with_forced); the
    indicators alone (only_zero, only_forced); 1 (no_global); 0 (only_global).

    >>> copo_local_weight(torch.tensor([1.0, 3.0]), torch.tensor([1.0, 0.0]), torch.ones(2), "soft_with_zero", 5, 1)
    tensor([0.5000, 0.0000])
    """
    soft = torch.sigmoid(k * (H.float() - b))
    nonzero_reward = (rewards != 0).float()
    nonzero_local = (local != 0).float()
    return {
        "soft_with_zero": soft * nonzero_reward,
        "only_soft": soft,
        "soft_with_forced": soft * nonzero_local,
        "only_zero": nonzero_reward,
        "only_forced": nonzero_local,
        "only_global": torch.zeros_like(soft),
        "no_global": torch.ones_like(soft),
    }[mode]


@register
class CopoConsistency(AdvantageTransform):
    """COPO: Consistency-Aware Policy Optimization (arXiv 2508.04138; hijih/copo-code
    ``core_algos.py::compute_score_global``, ``compute_grpo_outcome_advantage_with_global``,
    ``compute_policy_loss_with_global``; ``verl/run_copo.sh``), card G2-9.

    Per prompt q: the answer entropy H_q (bits, exact string match of the task's extracted answers), the global score
    g_q (pass rate; x (1 - lambda H_q) with ``reward_coef``) and the global advantage A_glob = g_q z-scored over the
    batch's prompts (`copo_parts`), non-zero also for all-correct and all-wrong groups. COPO's loss blends two
    dual-clip PPO losses per rollout, L = w L(A_local) + (1 - w) L(A_glob), w from `copo_local_weight`
    (w = sigma(k (H_q - b)), 0 for zero-reward rollouts in the default mode): consistent groups lean on the global
    loss. A_local is the incoming advantage (TRL's group-normalised one and any transform before this one).

    How it runs on TRL: the transform hands TRL the blended advantage A = w A_local + (1 - w) A_glob, one per
    rollout. The clipped surrogate is linear in A wherever the clip does not bind, so TRL's loss has exactly COPO's
    gradient whenever the ratio is inside [1 - eps_low, 1 + eps_high], in particular always on-policy
    (``algo.num_iterations=1``, the workbench default: ratio = 1), and off-policy whenever A_local and A_glob have
    the same sign. The one difference: off-policy, a token with A_local and A_glob of opposite signs and its ratio
    outside the band keeps in COPO the gradient of the unclipped one of its two losses, here all or none of the
    blend. An exact off-policy version needs A_glob and w per row in the loss batch (a new optional LossBatch
    field), which does not exist yet.

    Decisions: ``run_copo.sh`` (commit c15c75f) runs ``global_flg=soft-with-zero``, a name only the hyphenated
    snapshot of ``core_algos.py`` knows (commit f66883f; commit 095afa5 spells every mode with spaces and would
    raise on it); the arithmetic of that mode is the same in both, checked line by line. Default
    ``soft_with_zero``, k 5, b 1, ``reward_coef`` off (the script's ``reward_coef_flg=false``); the mode accepts
    underscores, hyphens or spaces. The hyphenated snapshot's two extra modes (``only-zero-wrong``,
    ``only-soft-with-coef``) are not offered. The pass rate is the task's correctness (the authors' mean score, the same for
    a 0/1 reward); "reward != 0" is the run's shaped reward. The script's other settings map to
    ``algo.loss_type=grpo`` (seq-mean-token-mean), ``algo.epsilon_high=0.2``, ``algo.scale_rewards=group`` (std
    GRPO advantage), G = 6. The symbolic answer canonicalisation in the code is commented out there and absent here.
    """

    name = "copo_consistency"
    needs = frozenset({"answers"})

    def __init__(self, mode: str = "soft_with_zero", k: float = 5.0, b: float = 1.0, reward_coef: bool = False):
        norm = str(mode).replace("-", "_").replace(" ", "_")
        if norm not in COPO_MODES:
            raise ValueError(f"mode={mode!r}; choose from {', '.join(COPO_MODES)}")
        self.mode, self.k, self.b, self.reward_coef = norm, float(k), float(b), bool(reward_coef)
        self._metrics: dict[str, float] = {}

    def __call__(self, advantages: torch.Tensor, rollouts: Rollouts, rewards: torch.Tensor) -> torch.Tensor:
        if rollouts.answers is None:
            raise ValueError("copo_consistency needs the extracted answers (signal 'answers')")
        local = advantages if advantages.dim() == 1 else advantages[:, 0]
        A_glob, H, _ = copo_parts(rollouts.correct, rollouts.answers, rollouts.group_size, self.reward_coef)
        w = copo_local_weight(H, rewards, local, self.mode, self.k, self.b).to(advantages.dtype)
        A_glob = A_glob.to(advantages.dtype)
        if advantages.dim() == 2:
            w, A_glob = w.unsqueeze(1), A_glob.unsqueeze(1)
        self._metrics = {
            "answer_entropy": float(H.mean()) if H.numel() else 0.0,
            "local_weight": float(w.mean()) if w.numel() else 0.0,
            "global_adv_abs": float(A_glob.abs().mean()) if A_glob.numel() else 0.0,
        }
        return w * advantages + (1 - w) * A_glob

    def metrics(self) -> dict[str, float]:
        return dict(self._metrics)
