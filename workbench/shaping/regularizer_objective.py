"""Loss-side terms that replace TRL's surrogate with another objective: DRPO's full loss and DisCO (card 2).

How a term here replaces the surrogate, exactly: its ``token_advantages`` hook returns zeros, so every loss type of
TRL's ``_compute_loss`` (each is a ratio times the advantage) contributes a policy loss of exactly 0 with gradient 0;
its ``loss`` hook returns the method's whole objective, which the trainer adds to TRL's loss divided by the
gradient-accumulation steps (as veRL divides each micro-batch's loss). What TRL still adds on its own is the
KL-to-reference (``algo.beta``, 0 by default) and an entropy bonus (``algo.entropy_coef``, 0 by default), as the
reference's actor also would (``use_kl_loss``, ``entropy_coeff``). Token hooks that run *after* this term in config
order see zero advantages and cannot revive TRL's surrogate; combine a term here with reward terms and loss-adding
regularizers, not with other surrogate rewrites (STEER, GTPO, Clip-Cov).

``group_rows`` is the one check that a loss call holds whole groups, shared with the group-level token hooks
(``workbench.shaping.regularizer_token``).
"""

from __future__ import annotations

import torch

from workbench.shaping.base import Regularizer, register
from workbench.shaping.loss_batch import LossBatch

KL_TYPES = ("kl", "low_var_kl")


def group_rows(batch: LossBatch, who: str) -> torch.Tensor:
    """(Q, G) long: the row indices of each prompt group of the loss call, or a one-line error when a group is not
    whole in it. The layout is `batch.group_ids` (the trainer's rollout index // G); a hand-made batch without a
    rollout index is read as consecutive groups of `batch.group_size` rows.

    >>> b = LossBatch.of(torch.zeros(4, 1), torch.zeros(4, 1), torch.zeros(4), torch.ones(4, 1), group_size=2,
    ...                  rollout_index=torch.tensor([3, 0, 2, 1]))
    >>> group_rows(b, "x").tolist()
    [[1, 3], [0, 2]]
    """
    B, G = batch.logps.shape[0], max(1, int(batch.group_size))
    gid = batch.group_ids
    if gid is None:
        gid = torch.arange(B, device=batch.logps.device) // G
    gid = gid.to(batch.logps.device).long()
    order = torch.argsort(gid, stable=True)
    counts = torch.unique(gid, return_counts=True)[1] if B else torch.zeros(0, dtype=torch.long)
    if B % G or (counts != G).any():
        raise ValueError(
            f"{who} needs every prompt group whole in one loss call (each of {G} rollouts of a prompt), but this "
            f"micro-batch of {B} rows holds groups of sizes {sorted(set(counts.tolist()))}: use one micro-batch per "
            f"generation batch (algo.gradient_accumulation_steps=1, algo.steps_per_generation=1) with "
            f"algo.per_device_train_batch_size a multiple of algo.num_generations, on one process")
    return order.view(-1, G)


def sequence_scores(logps: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(B,) s_i = mean_t logp_{i,t} over the valid tokens (0 for an empty completion), with grad.

    >>> sequence_scores(torch.tensor([[-1.0, -3.0], [-2.0, -9.0]]), torch.tensor([[1.0, 1.0], [1.0, 0.0]])).tolist()
    [-2.0, -2.0]
    """
    return (logps * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1.0)


def trust_region_kl(logps: torch.Tensor, old_logps: torch.Tensor, mask: torch.Tensor, kl_type: str) -> torch.Tensor:
    """The token-mean KL(pi_old || pi) estimate over all valid tokens of the call, with grad: ``kl`` is
    logp_old - logp (k1), ``low_var_kl`` is r - 1 - log r with r = pi/pi_old (k3, as DRPO's code writes it)."""
    log_ratio = logps - old_logps
    per_token = -log_ratio if kl_type == "kl" else -log_ratio + torch.exp(log_ratio) - 1.0
    return (per_token * mask).sum() / mask.sum().clamp(min=1.0)


def drpo_objective(
    logps: torch.Tensor,
    old_logps: torch.Tensor,
    mask: torch.Tensor,
    groups: torch.Tensor,
    correct: torch.Tensor | None,
    *,
    tau: float,
    lam: float | None,
    width: float,
    delta: float,
    beta: float,
    kl_type: str,
) -> tuple[torch.Tensor, dict[str, float]]:
    """DRPO's loss for one call (DisCO when ``lam`` is None: weight 1), and its diagnostics.

    ``groups`` (Q, G): row indices per prompt (`group_rows`). Per mixed group q (a correct and a wrong rollout):
    J_q = sum_{i in +} w^_i s_i - tau * LSE_{j in -}(s_j / tau), w^ = softmax over the positives of
    (1 - L_i / width) / lam (= exp(...) / sum exp(...), stable for any lam). The loss is
    -sum_q J_q / Q (Q = all groups of the call, uniform ones included) + max(beta (KL - delta), 0).detach() * KL.
    """
    scores = sequence_scores(logps, mask)
    Q, G = groups.shape
    s = scores[groups]  # (Q, G)
    if correct is None:  # a hand-made batch without labels: no rollout is positive or negative
        pos = neg = torch.zeros_like(s, dtype=torch.bool)
    else:
        c = correct.to(s.device).float()[groups]
        pos, neg = c == 1.0, c == 0.0  # exactly 1 / exactly 0, as the reference; anything else is neither
    mixed = pos.any(dim=1) & neg.any(dim=1)
    kl = trust_region_kl(logps, old_logps, mask, kl_type)
    stats: dict[str, float] = {"groups": float(Q), "mixed_groups": float(mixed.sum()), "kl": float(kl.detach())}
    if mixed.any():
        s_m, pos_m, neg_m = s[mixed], pos[mixed], neg[mixed]
        if lam is None:
            logit_w = torch.zeros_like(s_m)
        else:
            lengths = mask.sum(dim=1)[groups][mixed]
            logit_w = (1.0 - lengths / width) / lam
        w_hat = torch.softmax(logit_w.masked_fill(~pos_m, float("-inf")), dim=1).detach()
        positive = (w_hat * s_m.masked_fill(~pos_m, 0.0)).sum(dim=1)
        negative = tau * torch.logsumexp((s_m / tau).masked_fill(~neg_m, float("-inf")), dim=1)
        objective = (positive - negative).sum() / Q
        stats.update(pos_score=float(s_m[pos_m].mean().detach()), neg_score=float(s_m[neg_m].mean().detach()))
        if lam is not None:
            stats["weight_max"] = float(w_hat.max(dim=1).values.mean())  # 1/n_pos = uniform, 1 = one answer
    else:
        objective = scores.sum() * 0.0
    coef = torch.clamp(beta * (kl.detach() - delta), min=0.0)
    stats.update(objective=float(objective.detach()), constraint_active=float(kl.detach() > delta))
    return -objective + coef * kl, stats


@register
class DRPO(Regularizer):
    """DRPO's full loss (Li, Chen, Lin, Yang, "Decoupled Reward Policy Optimization", arXiv 2510.04474, card 2).
    Reference: Optimization-AI/DRPO ``verl/verl/trainer/ppo/core_algos.py::compute_policy_loss_drpo`` and
    ``scripts/train/run_drpo_1.5b_8k.sh``; ``tests/test_method_drpo.py`` transcribes it and compares gradients.

    Formula (``drpo_objective``): s_i = mean_t logp_{i,t} (length-normalised log-likelihood); groups with no correct
    or no wrong rollout contribute nothing but still count in Q; per mixed group
    J_q = sum_{i in +} w_i s_i / sum_{i in +} w_i - tau * LSE_{j in -}(s_j / tau), w_i = exp((1 - L_i / width) / lam);
    loss = -sum_q J_q / Q + max(beta (KL - delta), 0).detach() * KL, KL the token mean over the call of
    KL(pi_old || pi) (``kl_type``). No clipping. The length enters only through the self-normalised weights over
    the correct rollouts, so a long correct answer is never pushed down.

    How it replaces TRL's surrogate: advantages set to 0 (TRL's policy loss is 0) and this objective added
    (module docstring). Decisions:

    * ``width`` is the W of L_i / W. The reference divides by the padded width of veRL's response tensor, which
      veRL pads to the budget; TRL pads to the longest completion of the batch, so W is the run's
      ``algo.max_completion_length`` (the loss batch's ``max_completion_length``) when ``width`` is 0, the default;
      a hand-made batch without it falls back to its padded width. The width used is logged as ``width``.
    * Positives/negatives are the task's ``correct`` (exactly 1 / exactly 0), not the shaped reward: the reference
      reads its 0/1 task reward, and the workbench's shaped reward may carry a format bonus.
    * Groups must be whole in one loss call (``group_rows`` raises otherwise): the quick-start layout (one
      64-row micro-batch per generation batch, ``gradient_accumulation_steps=1``) satisfies it. The reference
      all-gathers across ranks; here each process scores its own rows, so with N processes each process needs
      whole groups and Q is per process (DDP then averages the N losses: the reference's global objective when
      every process holds the same number of groups).
    * The loss value uses the true log-sum-exp; the reference substitutes a detached surrogate of value 1
      (S / S.detach()), so its value differs by a constant per group and the **gradients are equal** (the test
      compares gradients). Its masked means divide by a zero mask count (NaN); here a count of 0 gives 0.
    * The weights are computed as a softmax over the positives: identical to exp(...) / sum exp(...) and finite
      for any lam (exp(1 / lam) overflows float32 for lam < 0.012).

    Defaults: tau 10, lam (``Lambda``) 0.1, delta 1e-4, beta 1e3, ``kl_type=kl`` (the run script's
    ``ppo_kl_type=kl``; the function's default is ``low_var_kl``). On-policy (``num_iterations=1``) the KL is 0,
    so the trust region only acts when rollouts are reused.
    Metrics: ``groups``, ``mixed_groups``, ``objective`` (sum_q J_q / Q), ``pos_score`` / ``neg_score`` (mean s over
    the mixed groups' positives / negatives), ``kl``, ``constraint_active`` (KL > delta), ``weight_max`` (mean
    over mixed groups of the largest positive weight), ``width``.
    """

    name = "drpo"

    def __init__(self, tau: float = 10.0, lam: float = 0.1, width: int = 0, delta: float = 1e-4, beta: float = 1e3,
                 kl_type: str = "kl"):
        self._init(tau=tau, width=width, delta=delta, beta=beta, kl_type=kl_type)
        if lam <= 0:
            raise ValueError(f"lam must be > 0, got {lam}")
        self.lam: float | None = float(lam)

    def _init(self, tau: float, width: int, delta: float, beta: float, kl_type: str) -> None:
        if tau <= 0:
            raise ValueError(f"tau must be > 0, got {tau}")
        if width < 0:
            raise ValueError(f"width must be >= 0 (0 = the loss call's padded width), got {width}")
        if delta < 0 or beta < 0:
            raise ValueError(f"delta and beta must be >= 0, got {delta}, {beta}")
        if kl_type not in KL_TYPES:
            raise ValueError(f"kl_type={kl_type!r}; valid choices: {', '.join(KL_TYPES)}")
        self.tau, self.width, self.delta, self.beta, self.kl_type = float(tau), int(width), float(delta), float(
            beta), kl_type
        self._metrics: dict[str, float] = {}

    def token_advantages(self, batch: LossBatch) -> torch.Tensor:
        return torch.zeros_like(batch.advantages)  # TRL's surrogate contributes nothing; loss() is the objective

    def loss(self, batch: LossBatch) -> torch.Tensor:
        groups = group_rows(batch, f"regularizer.{self.name}")
        width = float(self.width or batch.max_completion_length or batch.logps.shape[1])
        value, stats = drpo_objective(batch.logps, batch.old_logps, batch.mask, groups, batch.correct, tau=self.tau,
                                      lam=self.lam, width=max(width, 1.0), delta=self.delta, beta=self.beta,
                                      kl_type=self.kl_type)
        self._metrics = {**stats, **({"width": width} if self.lam is not None else {})}
        return value

    def metrics(self) -> dict[str, float]:
        return dict(self._metrics)


@register
class DisCO(DRPO):
    """DisCO (Li et al., "DisCO: Reinforcing Large Reasoning Models with Discriminative Constrained Optimization",
    arXiv 2505.12366; Optimization-AI/DisCO ``verl/verl/trainer/ppo/core_algos.py::compute_policy_loss_disco_logL``),
    card 2: DRPO's loss with the length weight off (w = 1), i.e. a plain mean of s_i over each mixed group's
    correct rollouts minus tau * LSE over its wrong ones, the same division by all groups and the same KL trust
    region. Everything else, decisions included, is `DRPO`'s; ``tests/test_method_drpo.py`` checks it against a
    transcription of the DisCO function.

    A registered name of its own (not a ``drpo`` option): DisCO is its own paper and repository, with no length
    option at all (so no ``lam``/``width`` keys that would mean nothing), and ``regularizer=[disco]`` says what runs.
    Defaults: tau 10, delta 1e-4, beta 1e3, ``kl_type=kl`` (DisCO's ``scripts/train/run_disco_logL_1.5b_8k.sh``).
    """

    name = "disco"

    def __init__(self, tau: float = 10.0, delta: float = 1e-4, beta: float = 1e3, kl_type: str = "kl"):
        self._init(tau=tau, width=0, delta=delta, beta=beta, kl_type=kl_type)
        self.lam = None
