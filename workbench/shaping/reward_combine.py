"""Reward transforms that combine the raw outputs of earlier reward terms: PAR (card G2-12), gated reward
accumulation G-RA (card G2-14) and reward ensembles (card G2-13).

The trainer runs reward terms in config order and stores each raw (unweighted) output in
``rollouts.term_rewards[name]`` before the next term runs, so a combiner must come *after* the terms it reads.
A combiner's output is multiplied by its own ``weight``; the terms it reads keep theirs, so give them weight 0
when the combiner should replace them rather than add to them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from workbench.config import ConfigError
from workbench.rollouts import Rollouts
from workbench.shaping.base import REGISTRY, RewardTerm, register


def _check_known(owner: str, key: str, names: list[str]) -> None:
    """Fail at build time when a referenced name is not a reward term at all (a typo).

    The message omits the ``reward.<owner>`` prefix because ``build_terms`` adds it.
    """
    known = REGISTRY["reward"]
    for n in names:
        if n not in known:
            raise ConfigError(f"{key}={n!r} is not a reward term; choose from: {', '.join(sorted(known))}")
        if n == owner:
            raise ConfigError(f"{key}={n!r} refers to {owner!r} itself")


def earlier(rollouts: Rollouts, owner: str, key: str, name: str) -> torch.Tensor:
    """The raw output of an earlier reward term, or a one-line error naming the key and the earlier terms."""
    if name not in rollouts.term_rewards:
        have = ", ".join(rollouts.term_rewards) or "(none)"
        raise ConfigError(
            f"reward.{owner}.{key}={name!r} is not an earlier reward term; earlier terms: {have} "
            f"(list {name!r} before {owner!r} under reward:)"
        )
    return rollouts.term_rewards[name].float()


# ----------------------------------------------------------------------------------------------- PAR


def par_reward(reward: torch.Tensor, references: torch.Tensor, k: float = 1.0) -> torch.Tensor:
    """r_PAR = mean_j sigmoid(k (r - r_ref,j)); ``references`` is (B, M).

    >>> [round(x, 4) for x in par_reward(torch.tensor([1.0, 0.0]), torch.tensor([[0.5], [0.5]]), 2.0).tolist()]
    [0.7311, 0.2689]
    """
    return torch.sigmoid(k * (reward.unsqueeze(1) - references)).mean(dim=1)


@register
class PAR(RewardTerm):
    """PAR: Preference As Reward (Fu et al., "Reward Shaping to Mitigate Reward Hacking in RLHF", arXiv 2502.18770;
    PorUna-byte/PAR ``trainers/reward_shaper.py``), card G2-12.

    r = (1/M) sum_j sigmoid(k (r_src - r_ref,j)): the Bradley-Terry probability that this rollout beats the
    reference responses. Bounded in (0, 1), steep near the reference and flat far from it, which is what makes the
    policy stop chasing ever-larger reward-model scores.

    ``source`` names an earlier reward term (its raw output is r_src). ``reference`` picks the references:
    * ``group_mean`` (default): M = 1, r_ref = the mean of the source over the prompt's group (the paper shows one
      reference suffices; the group mean is a reference we have without SFT samples);
    * ``group``: M = G, every rollout of the group (itself included) is a reference, so r is a smoothed rank.
    A per-prompt dataset column of reference rewards (the paper's SFT references) can be added later.
    Default k = 1 (``sigmoid_k`` in the paper's code). Give the source weight 0 when PAR should replace it.
    """

    name = "par"

    def __init__(self, weight: float = 1.0, source: str = "correctness", reference: str = "group_mean", k: float = 1.0):
        super().__init__(weight)
        if reference not in ("group_mean", "group"):
            raise ValueError(f"reference must be 'group_mean' or 'group', got {reference!r}")
        _check_known(self.name, "source", [source])
        self.source, self.reference, self.k = source, reference, float(k)

    def __call__(self, rollouts: Rollouts) -> torch.Tensor:
        r = earlier(rollouts, self.name, "source", self.source)
        G = rollouts.group_size
        grouped = r.view(-1, G)
        if self.reference == "group_mean":
            refs = grouped.mean(dim=1, keepdim=True).expand(-1, G).reshape(-1, 1)
        else:
            refs = grouped.repeat_interleave(G, dim=0)
        return par_reward(r, refs, self.k)


# ----------------------------------------------------------------------------------------------- gated


def _term_weights(terms: Any) -> dict[str, float]:
    """``terms`` as a list of names (weight 1 each) or a mapping name -> weight."""
    if isinstance(terms, str):
        raise ValueError(f"terms must be a list of reward term names, got the string {terms!r}")
    if isinstance(terms, Mapping):
        out = {str(k): float(v) for k, v in terms.items()}
    else:
        out = {str(n): 1.0 for n in terms}
    if not out:
        raise ValueError("terms must name at least one earlier reward term")
    return out


@register
class Gated(RewardTerm):
    """G-RA: Gated Reward Accumulation (Sun et al., arXiv 2508.10548), card G2-14.

    r = 1[r_gate >= threshold] * sum_k w_k r_k: the immediate rewards listed in ``terms`` (raw outputs of earlier
    reward terms, weighted by w_k when ``terms`` is a mapping name -> weight, else 1) count only when the outcome
    reward ``gate`` meets the threshold, so the policy cannot farm step/format rewards while failing the task.
    The outcome reward itself is not included: it is its own term (the paper's R = R_outcome + gated sum).
    Give the listed terms weight 0 so they are not also counted ungated.

    Decision on the [UNCONFIRMED] gate form: a hard indicator with ``>=``; defaults gate=correctness, threshold 1.0
    (the answer must be correct), terms=[format].
    """

    name = "gated"

    def __init__(
        self, weight: float = 1.0, gate: str = "correctness", threshold: float = 1.0, terms: Any = ("format",)
    ):
        super().__init__(weight)
        self.term_weights = _term_weights(terms)
        _check_known(self.name, "gate", [gate])
        _check_known(self.name, "terms", list(self.term_weights))
        self.gate, self.threshold = gate, float(threshold)
        self._metrics: dict[str, float] = {}

    def __call__(self, rollouts: Rollouts) -> torch.Tensor:
        g = earlier(rollouts, self.name, "gate", self.gate)
        total = torch.zeros_like(g)
        for n, w in self.term_weights.items():
            total = total + w * earlier(rollouts, self.name, "terms", n)
        open_ = g >= self.threshold
        self._metrics = {"open_fraction": float(open_.float().mean()) if open_.numel() else 0.0}
        return torch.where(open_, total, torch.zeros_like(total))

    def metrics(self) -> dict[str, float]:
        return dict(self._metrics)


# ----------------------------------------------------------------------------------------------- ensemble


def ensemble_reward(scores: torch.Tensor, mode: str = "mean", lam: float = 0.5) -> torch.Tensor:
    """Combine K reward scores (K, B): mean, worst (min over k) or uncertainty (mean - lam * Var_k, population var).

    >>> s = torch.tensor([[1.0, 0.0], [0.0, 0.0]])
    >>> [ensemble_reward(s, m).tolist() for m in ("mean", "worst", "uncertainty")]
    [[0.5, 0.0], [0.0, 0.0], [0.375, 0.0]]
    """
    if mode == "mean":
        return scores.mean(dim=0)
    if mode == "worst":
        return scores.min(dim=0).values
    if mode == "uncertainty":
        return scores.mean(dim=0) - lam * scores.var(dim=0, unbiased=False)
    raise ValueError(f"mode must be 'mean', 'worst' or 'uncertainty', got {mode!r}")


@register
class Ensemble(RewardTerm):
    """Reward-model ensembles (Coste et al., "Reward Model Ensembles Help Mitigate Overoptimization", ICLR 2024),
    card G2-13.

    Over the raw outputs of the earlier reward terms listed in ``terms``: ``mean`` R = mean_k R_k, ``worst`` (WCO)
    R = min_k R_k, ``uncertainty`` (UWO) R = mean_k R_k - lam * Var_k R_k (population variance over the K members,
    so K = 1 gives variance 0, not NaN). TRL sums reward functions; min and variance need this wrapper.
    ``normalize`` z-scores each member over the batch first (population std; a constant member becomes 0), the
    paper's "normalise each RM" step, needed when members live on different scales; off by default because our
    terms are already on comparable [0, 1] scales. Default lam 0.5 [UNCONFIRMED: the paper sweeps it].
    Give the members weight 0 when the ensemble should replace them.
    """

    name = "ensemble"

    def __init__(
        self,
        weight: float = 1.0,
        terms: Any = ("correctness",),
        mode: str = "mean",
        lam: float = 0.5,
        normalize: bool = False,
    ):
        super().__init__(weight)
        if mode not in ("mean", "worst", "uncertainty"):
            raise ValueError(f"mode must be 'mean', 'worst' or 'uncertainty', got {mode!r}")
        if isinstance(terms, (str, Mapping)):
            raise ValueError(f"terms must be a list of reward term names, got {terms!r}")
        self.terms = [str(t) for t in terms]
        if not self.terms:
            raise ValueError("terms must name at least one earlier reward term")
        _check_known(self.name, "terms", self.terms)
        self.mode, self.lam, self.normalize = mode, float(lam), bool(normalize)

    def __call__(self, rollouts: Rollouts) -> torch.Tensor:
        scores = torch.stack([earlier(rollouts, self.name, "terms", n) for n in self.terms])
        if self.normalize:
            mean = scores.mean(dim=1, keepdim=True)
            std = scores.std(dim=1, unbiased=False, keepdim=True)
            scores = torch.where(std > 1e-8, (scores - mean) / std.clamp(min=1e-8), torch.zeros_like(scores))
        return ensemble_reward(scores, self.mode, self.lam)
