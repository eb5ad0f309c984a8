"""Loss-side regularizers: TRL-native entropy bonus / adaptive entropy / 80-20 forking tokens, and our own Clip-Cov,
KL-Cov (card 6) and SIREN (card 10).

Hooks (see ``workbench.shaping.base.Regularizer``): ``trl_args()`` is merged into GRPOConfig once;
``token_advantages(batch)`` rewrites the (B, T) advantages of one training micro-batch after its log-probs exist;
``loss(batch)`` returns a scalar added to TRL's loss for that micro-batch (``batch``: a
``workbench.shaping.loss_batch.LossBatch``).
"""

from __future__ import annotations

import math
from typing import Any

import torch

from workbench.shaping.base import Regularizer, register
from workbench.shaping.loss_batch import top_p_entropy  # noqa: F401  (SIREN's H^p; defined with the batch)

# ----------------------------------------------------------------------------------------------- TRL-native


@register
class EntropyBonus(Regularizer):
    """Entropy bonus: loss -= coef * mean token entropy, via TRL's ``entropy_coef`` (GRPOConfig, trl 1.16).

    TRL takes the plain mean over completion tokens whatever ``loss_type`` is, so ``coef`` means the same for every
    loss type; with ``top_entropy_quantile < 1`` (forking_tokens) TRL averages over the selected tokens only
    (the 80/20 paper used the full mask for its bonus). Do not combine with ``adaptive_entropy``: both set
    ``entropy_coef``. Default 1e-3: the usual veRL/EPO ``entropy_coeff`` (TRL's own default 0 means off).
    """

    name = "entropy_bonus"

    def __init__(self, coef: float = 1e-3):
        self.coef = float(coef)

    def trl_args(self) -> dict[str, Any]:
        return {"entropy_coef": self.coef}


@register
class AdaptiveEntropy(Regularizer):
    """Adaptive entropy control (Skywork-OR1, arXiv 2505.22312) via TRL's ``use_adaptive_entropy`` (trl 1.16).

    After each optimizer step TRL raises ``entropy_coef`` by ``coef_delta`` when the mean token entropy is at or
    below ``target`` and lowers it otherwise, within [coef_min, coef_max]; the bonus is applied only while entropy
    is at or below the target. Defaults are TRL's (target 0.2 nats, step 0.005, start 0). TRL's
    docs warn that 0.2 nats only triggers on near-collapse for typical LMs: set ``target`` near the entropy logged
    early in training (``entropy/mean``). TRL saves the coefficient with checkpoints itself.
    Do not combine with ``entropy_bonus`` (both set ``entropy_coef``).
    """

    name = "adaptive_entropy"

    def __init__(
        self,
        target: float = 0.2,
        coef_init: float = 0.0,
        coef_delta: float = 0.005,
        coef_min: float = 0.0,
        coef_max: float = 1.0,
    ):
        if not coef_min <= coef_init <= coef_max:
            raise ValueError(f"need coef_min <= coef_init <= coef_max, got {coef_min}, {coef_init}, {coef_max}")
        if target < 0 or coef_delta < 0:
            raise ValueError(f"target and coef_delta must be >= 0, got {target}, {coef_delta}")
        self.target, self.coef_init, self.coef_delta = float(target), float(coef_init), float(coef_delta)
        self.coef_min, self.coef_max = float(coef_min), float(coef_max)

    def trl_args(self) -> dict[str, Any]:
        return {
            "use_adaptive_entropy": True,
            "entropy_coef": self.coef_init,
            "entropy_target": self.target,
            "entropy_coef_delta": self.coef_delta,
            "entropy_coef_min": self.coef_min,
            "entropy_coef_max": self.coef_max,
        }


@register
class ForkingTokens(Regularizer):
    """Beyond the 80/20 Rule: policy gradient only on high-entropy "forking" tokens (Wang et al., arXiv 2506.01939;
    Shenzhi-Wang/Beyond-the-80-20-Rule-RLVR), card 7, via TRL's ``top_entropy_quantile`` (trl 1.16).

    TRL semantics (checked in ``grpo_trainer.py``): in each loss call it gathers the entropies of all valid
    completion tokens across processes, takes their ``1 - rho`` quantile and keeps tokens with entropy >= that
    threshold, so ``rho = 0.2`` keeps the **top 20%** (the paper's ``entropy_top_ratio=0.2``); rho = 1 keeps all.
    The quantile is taken per loss call (one micro-batch, gathered across processes), so it is noisy with a small
    ``per_device_train_batch_size``. The paper reports gains at 14B/32B and small or negative
    ones at 8B, so on a tiny model expect little.
    """

    name = "forking_tokens"

    def __init__(self, rho: float = 0.2):
        if not 0.0 <= rho <= 1.0:
            raise ValueError(f"rho must be in [0, 1], got {rho}")
        self.rho = float(rho)

    def trl_args(self) -> dict[str, Any]:
        return {"top_entropy_quantile": self.rho}


# ----------------------------------------------------------------------------------------------- covariance


def token_covariance(advantages: torch.Tensor, logps: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """cov_t = (A_t - mean A)(logp_t - mean logp) for the valid tokens (flattened, in row-major order).

    Means are over **all** valid tokens of the micro-batch, across sequences: with one sequence per micro-batch the
    GRPO advantage is constant and every cov_t is 0 (card 6 caveat).

    >>> A = torch.tensor([[1.0, 1.0], [-1.0, 0.0]])  # the last token is padding
    >>> lp = torch.tensor([[-1.0, -3.0], [-5.0, 0.0]])
    >>> [round(x, 4) for x in token_covariance(A, lp, torch.tensor([[1, 1], [1, 0]])).tolist()]
    [1.3333, 0.0, 2.6667]
    """
    valid = mask.bool()
    A = advantages.detach().double()[valid]
    lp = logps.detach().double()[valid]
    if A.numel() == 0:
        return A
    return (A - A.mean()) * (lp - lp.mean())


@register
class ClipCov(Regularizer):
    """Clip-Cov (Cui et al., "The Entropy Mechanism of RL for Reasoning LMs", arXiv 2505.22617;
    PRIME-RL/Entropy-Mechanism-of-RL ``core_algos.py``, veRL ``loss_mode=clip_cov``), card 6.

    Entropy falls by about Cov(logp, A) per step; Clip-Cov removes the gradient of a few tokens with large positive
    covariance. Over all valid tokens of the micro-batch: cov_t as in ``token_covariance``; candidates are tokens
    with lb < cov_t < ub; n = max(min_count, floor(ratio * N_valid)) of them (all, if fewer) are drawn uniformly at
    random and their advantage is set to 0, so they get no policy gradient (the original multiplies their PG loss by
    0; zeroing A does the same for every ratio-times-A surrogate and keeps them in the token-mean denominator, as
    the original does).

    Decisions: ``min_count=1`` follows the reference code's ``max(int(ratio * N), 1)``, so at least one candidate is
    cut whenever one exists; with the default ratio 2e-4 a 5,000-token micro-batch would otherwise cut 1 and a
    CPU-sized one 0. Set ``min_count=0`` for the pure ratio. The original also skips tokens already clipped by PPO;
    this hook runs before TRL's clipping and cannot see it (the reference scripts set clip ratios to 1, i.e. no
    clipping, and on-policy the ratio is 1 anyway). Defaults: ratio 2e-4, lb 1, ub 5 (recipe scripts).
    ``seed`` makes the draw reproducible; the generator state is in ``state_dict`` (a list of ints) so a resumed run
    draws the same tokens.
    """

    name = "clip_cov"

    def __init__(self, ratio: float = 2e-4, lb: float = 1.0, ub: float = 5.0, min_count: int = 1, seed: int = 0):
        if not 0.0 <= ratio <= 1.0:
            raise ValueError(f"ratio must be in [0, 1], got {ratio}")
        if not lb < ub:
            raise ValueError(f"need lb < ub, got {lb}, {ub}")
        if min_count < 0:
            raise ValueError(f"min_count must be >= 0, got {min_count}")
        self.ratio, self.lb, self.ub, self.min_count = float(ratio), float(lb), float(ub), int(min_count)
        self.generator = torch.Generator().manual_seed(int(seed))
        self._metrics: dict[str, float] = {}

    def select(self, advantages: torch.Tensor, logps: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """(B, T) bool: the tokens whose advantage is zeroed."""
        valid = mask.bool()
        selected = torch.zeros_like(valid)
        cov = token_covariance(advantages, logps, mask)
        n_valid = cov.numel()
        candidates = ((cov > self.lb) & (cov < self.ub)).nonzero().squeeze(1)
        n = min(candidates.numel(), max(self.min_count, math.floor(self.ratio * n_valid)))
        if n > 0:
            chosen = candidates[torch.randperm(candidates.numel(), generator=self.generator)[:n]]
            positions = valid.nonzero()[chosen]
            selected[positions[:, 0], positions[:, 1]] = True
        self._metrics = {"candidates": float(candidates.numel()), "clipped_tokens": float(n)}
        return selected

    def token_advantages(self, batch):
        selected = self.select(batch.advantages, batch.logps.detach(), batch.mask)
        return batch.advantages.masked_fill(selected, 0.0)

    def state_dict(self) -> dict[str, Any]:
        return {"generator": self.generator.get_state().tolist()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if "generator" in state:
            self.generator.set_state(torch.tensor(state["generator"], dtype=torch.uint8))

    def metrics(self) -> dict[str, float]:
        return dict(self._metrics)


def top_cov_mask(advantages: torch.Tensor, logps: torch.Tensor, mask: torch.Tensor, k_percent: float) -> torch.Tensor:
    """(B, T) bool: the top-k tokens by covariance, k = max(1, floor(N_valid * k_percent / 100)).

    ``k_percent`` is a percentage: 0.2 means 0.2% of the tokens (card 6: watch the /100).

    >>> A = torch.tensor([[1.0, 1.0], [-1.0, 0.0]])
    >>> lp = torch.tensor([[-1.0, -3.0], [-5.0, 0.0]])
    >>> top_cov_mask(A, lp, torch.tensor([[1, 1], [1, 0]]), 0.2).tolist()  # k = max(1, 0) = 1
    [[False, False], [True, False]]
    """
    valid = mask.bool()
    selected = torch.zeros_like(valid)
    cov = token_covariance(advantages, logps, mask)
    if cov.numel() == 0:
        return selected
    k = min(cov.numel(), max(1, math.floor(cov.numel() * k_percent / 100)))
    chosen = torch.topk(cov, k).indices
    positions = valid.nonzero()[chosen]
    selected[positions[:, 0], positions[:, 1]] = True
    return selected


@register
class KLCov(Regularizer):
    """KL-Cov (Cui et al., arXiv 2505.22617), card 6. Reference: PRIME-RL/Entropy-Mechanism-of-RL
    ``verl/trainer/ppo/core_algos.py::compute_policy_loss_kl_cov`` (veRL ``loss_mode=kl_cov``).

    Select the top-k tokens of the micro-batch by cov_t (``top_cov_mask``; k = max(1, floor(N k_percent/100)),
    k_percent 0.2 -> **0.2%** of tokens) and add beta * |logp - old_logp| on them, summed over the selected tokens
    and divided by the number of valid tokens N (the reference's token mean). Defaults: k_percent 0.2, beta
    (``ppo_kl_coef``) 1.

    What the project computes, exactly: this ``loss()`` is *added* to TRL's loss by the trainer's ``_compute_loss``
    override (``workbench/trainers.py``; divided by the gradient-accumulation steps, as TRL scales its own loss).
    TRL's loss is untouched: for ``loss_type`` grpo/bnpo/dr_grpo/dapo it is the clipped surrogate
    -min(r A, clip(r, 1 - epsilon, 1 + epsilon_high) A) on **every** valid token (trl 1.16
    ``GRPOTrainer._compute_loss``; conf/algo/grpo.yaml: dapo, epsilon 0.2 / 0.28). So the total is
    clipped-PPO + beta |logp - old_logp| on the selected tokens.
    The reference has **no PPO clip on any token** in this loss: -A r on every token, plus beta |logp - old_logp|
    on the selected ones, token-mean (its ``cliprange`` arguments are accepted and unused; the scripts' clip
    0.2 / 0.2 does not reach it).
    Why the difference: regularizer hooks add to or reshape TRL's loss; they do not replace its surrogate, and the
    clip is a run-wide TRL option (``algo.epsilon*``) that other terms share. When it matters: on-policy the ratio
    is 1, nothing is clipped and both agree (and the penalty is 0, see below). With ``num_iterations > 1`` a token
    whose ratio has left [1 - epsilon, 1 + epsilon_high] in the direction of its advantage gets no policy gradient
    here (only the penalty's, if selected), while the reference keeps pushing it with -A r: this is the more
    conservative KL-Cov-on-top-of-PPO. To reproduce the reference's unclipped surrogate, widen the clip for the
    run, e.g. ``algo.epsilon=1.0 algo.epsilon_high=1e9`` (lower bound 0, which a ratio never reaches);
    ``tests/test_shaping_kl_cov_trl.py`` pins both cases against TRL's own ``_compute_loss``.

    Finding (documented, tested): d|x|/dx at x = 0 is 0 in torch, and TRL uses ``old_logps = logps.detach()``
    when ``num_iterations == 1`` and generation and optimisation steps coincide. There the penalty is 0 **and so is
    its gradient**: on-policy, KL-Cov does nothing. It acts only once the policy has moved away from the sampling
    policy (``num_iterations > 1``, ``steps_per_generation > gradient_accumulation_steps``, or off-policy data), as
    in the original, whose |logp - old_logp| has the same property. Any penalty centred on old_logp (k2, k3) shares it.
    """

    name = "kl_cov"

    def __init__(self, k_percent: float = 0.2, beta: float = 1.0):
        if not 0.0 < k_percent <= 100.0:
            raise ValueError(f"k_percent must be in (0, 100], got {k_percent}")
        self.k_percent, self.beta = float(k_percent), float(beta)
        self._metrics: dict[str, float] = {}

    def loss(self, batch):
        logps, old_logps, mask = batch.logps, batch.old_logps, batch.mask
        selected = top_cov_mask(batch.advantages, logps, mask, self.k_percent)
        n_valid = mask.bool().sum().clamp(min=1)
        diff = torch.where(selected, logps - old_logps, torch.zeros_like(logps))
        penalty = self.beta * diff.abs().sum() / n_valid
        self._metrics = {"selected_tokens": float(selected.sum()), "penalty": float(penalty.detach())}
        return penalty

    def metrics(self) -> dict[str, float]:
        return dict(self._metrics)


# ----------------------------------------------------------------------------------------------- SIREN


def peak_entropy_mask(entropies: torch.Tensor, mask: torch.Tensor, quantile: float = 0.8) -> torch.Tensor:
    """(B, T) bool: per sequence, the valid tokens with entropy **strictly above** that sequence's ``quantile``
    quantile (linear interpolation over its valid tokens). Computed without gradient.

    As in SIREN's ``mask_by_quantile`` (``x > torch.nanquantile(...)``): a sequence whose valid entropies are all
    equal (or that has a single valid token) selects nothing, because no token exceeds its own quantile.

    >>> H = torch.tensor([[0.1, 0.9, 0.5, 0.3, 0.7], [1.0, 1.0, 0.0, 0.0, 0.0]])
    >>> m = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 0, 0, 0]])
    >>> peak_entropy_mask(H, m, 0.8).int().tolist()  # row 0: bound 0.74; row 1: bound 1.0, nothing above it
    [[0, 1, 0, 0, 0], [0, 0, 0, 0, 0]]
    """
    H = entropies.detach().float()
    valid = mask.bool()
    selected = torch.zeros_like(valid)
    for i in range(H.shape[0]):
        h = H[i][valid[i]]
        if h.numel() == 0:
            continue
        bound = torch.quantile(h, quantile)
        selected[i] = valid[i] & (H[i] > bound)
    return selected


def selective_entropy(entropies: torch.Tensor, selected: torch.Tensor) -> torch.Tensor:
    """Seq-mean-token-mean of the entropies over ``selected``; a sequence with no selected token counts as 0 and
    stays in the mean (SIREN's ``agg_loss(..., "seq-mean-token-mean")`` after its commit fa59a8d).

    >>> H = torch.tensor([[1.0, 3.0], [5.0, 0.0], [9.0, 9.0]])
    >>> round(float(selective_entropy(H, torch.tensor([[True, True], [True, False], [False, False]]))), 4)
    2.3333
    """
    if entropies.shape[0] == 0:
        return entropies.sum() * 0.0
    s = selected.to(entropies.dtype)
    n = s.sum(dim=1)
    kept = torch.where(selected, entropies, torch.zeros_like(entropies))  # no NaN from padded positions
    per_seq = kept.sum(dim=1) / n.clamp(min=1.0)  # 0 where nothing is selected
    return per_seq.mean()


@register
class SIREN(Regularizer):
    """SIREN: SelectIve entRopy rEgularizatioN (Jiang et al., "Rethinking Entropy Regularization in Large Reasoning
    Models", arXiv 2509.25133), card 10. Reference: github.com/Linn3a/siren ``verl/verl/workers/actor/dp_actor.py``
    (``mask_by_quantile``, ``update_policy``), ``verl/verl/trainer/ppo/core_algos.py`` (``agg_loss``) and
    ``verl/verl/trainer/ppo/ray_trainer.py`` (the anchor), at commit fa59a8d.

    loss = coef * (H_sel - H_anchor)^2, with H_sel the seq-mean-token-mean entropy over each sequence's
    peak-entropy tokens (entropy strictly above the sequence's ``quantile`` quantile, q = 0.8: its top 20%) and
    H_anchor the same quantity on the first call that selects a token (first training micro-batch), then fixed.
    Self-anchored: a squared deviation, not a bonus, so entropy can neither explode nor collapse. Gradient flows
    through the selected entropies only.

    As in the reference: the bound is strict (``>``), so a sequence with constant entropy, or a single token,
    selects nothing; such a sequence counts as 0 in H_sel and stays in the mean over sequences, pulling H_sel down
    in proportion to its share of the micro-batch. A micro-batch with no peak token at all gives H_sel = 0 and a
    constant loss coef * H_anchor^2 (no gradient). (The reference applies the quantile mask twice; for non-negative
    entropies the second pass keeps the same tokens.)

    The action subset: H^p_t is the entropy of the renormalised top-p (``top_p`` 0.8) nucleus of the top-k
    (``top_k`` 10,000) logits (``top_p_entropy``), computed from the loss batch's ``logits`` field, which the trainer
    fills by projecting the hidden states of TRL's own training forward pass through the LM head once more (TRL's
    fused head never materialises logits). ``top_p=1`` uses TRL's full-vocabulary entropy instead and needs no
    logits (cheaper; SIREN without its action mask).

    Deliberate differences: (1) the logits are those TRL trains on (divided by the rollout temperature, as the
    reference's entropy after its temperature scaling); models with logit soft-capping or a logit scale are
    refused for ``top_p < 1`` by the trainer rather than approximated. (2) The reference takes H_anchor once, on the whole first batch
    (from the old-log-prob pass); here it is the first training micro-batch, and a call that selects no token
    never sets it (an anchor of 0 would push peak entropy to collapse). The anchor is cross-step state
    (``state_dict``: ``{"anchor": float | None}``) so a resumed run keeps it.
    Defaults: coef 0.005 (``entropy_coeff``), quantile 0.8 (``mask_ratio`` in the repo's ``exp_scripts/siren.sh``),
    top_p 0.8 and top_k 10,000 (the reference's nucleus).
    The trainer must keep the entropies' graph (TRL computes them with grad when an entropy term is active).
    """

    name = "siren"

    def __init__(self, coef: float = 0.005, quantile: float = 0.8, top_p: float = 0.8, top_k: int = 10000):
        if not 0.0 <= quantile <= 1.0:
            raise ValueError(f"quantile must be in [0, 1], got {quantile}")
        if not 0.0 < top_p <= 1.0:
            raise ValueError(f"top_p must be in (0, 1], got {top_p}")
        if top_k < 1:
            raise ValueError(f"top_k must be >= 1, got {top_k}")
        self.coef, self.quantile, self.top_p, self.top_k = float(coef), float(quantile), float(top_p), int(top_k)
        # p < 1 needs the logits (one more LM-head projection in the training pass); p = 1 is TRL's own entropy
        self.fields = frozenset({"logits"}) if self.top_p < 1.0 else frozenset()
        self.anchor: float | None = None
        self._metrics: dict[str, float] = {}

    def entropies(self, batch) -> torch.Tensor:
        """(B, T) H^p_t: the top-p nucleus entropy (p < 1) or TRL's full-vocabulary entropy (p = 1)."""
        if self.top_p < 1.0:
            return batch.top_p_entropy(self.top_p, self.top_k, who="regularizer.siren")
        if batch.entropies is None:
            raise ValueError("regularizer.siren needs the per-token entropies of the training forward pass")
        return batch.entropies

    def loss(self, batch):
        mask = batch.mask
        entropies = self.entropies(batch)
        selected = peak_entropy_mask(entropies, mask, self.quantile)
        if self.anchor is None and not selected.any():
            self._metrics = {"selected_tokens": 0.0}
            return None
        h_sel = selective_entropy(entropies, selected)
        if self.anchor is None:
            self.anchor = float(h_sel.detach())
        self._metrics = {"selected_entropy": float(h_sel.detach()), "anchor": self.anchor,
                         "selected_tokens": float(selected.sum())}
        return self.coef * (h_sel - self.anchor) ** 2

    def state_dict(self) -> dict[str, Any]:
        return {"anchor": self.anchor}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.anchor = None if state.get("anchor") is None else float(state["anchor"])

    def metrics(self) -> dict[str, float]:
        return dict(self._metrics)
