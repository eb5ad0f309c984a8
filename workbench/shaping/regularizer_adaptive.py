"""Loss-side terms that adapt the PPO surrogate token by token: HAPO-heterogeneous (card 16).

HAPO's token-level group advantage (its rollout-side half) is `workbench.shaping.advantage_adaptive`.
"""

from __future__ import annotations

from typing import Any

import torch

from workbench.shaping.base import Regularizer, register
from workbench.shaping.loss_batch import LossBatch

#: TRL's `epsilon` / `epsilon_high` while a term owns the clipping: wide enough that TRL's clamp never binds, so
#: TRL's surrogate is the plain ratio times the advantages the term hands it.
NO_TRL_CLIP = 1e6
NEGATIVE_SCALES = ("abs", "released")


def entropy_score(entropies: torch.Tensor, mask: torch.Tensor, pivot: float = 0.8, negative_scale: str = "abs",
                  eps: float = 1e-8) -> torch.Tensor:
    """HAPO's entropy score h_hat (B, T), detached: d = log H - q_pivot(log H), where q is the `pivot` quantile over
    the valid tokens (the sorted value at index round(pivot * (N - 1)), Python's rounding, as the authors'
    ``torch_quantile(..., interpolation="nearest")``); d is divided by its root-mean-square over the valid tokens;
    the positive part is then divided by its max. ``negative_scale="abs"`` divides the negative part by |min|, so
    h_hat is in [-1, 1] and h_hat <= 0 marks the low-entropy ~80% (the paper's and card 16's reading);
    ``"released"`` divides by min itself, as ``compute_entropy_h`` in the released code does, which makes every
    h_hat >= 0 (so no token is "low-entropy" and the lower clip bound never widens).

    >>> H = torch.tensor([[0.1, 1.0, 2.0, 4.0]])
    >>> [round(x, 4) for x in entropy_score(H, torch.ones(1, 4), pivot=0.5).tolist()[0]]
    [-1.0, -0.2314, 0.0, 1.0]
    """
    if negative_scale not in NEGATIVE_SCALES:
        raise ValueError(f"negative_scale={negative_scale!r}; choose from {', '.join(NEGATIVE_SCALES)}")
    valid = mask.bool()
    logh = torch.log(entropies.detach().double().clamp_min(eps))
    vals = logh[valid]
    if vals.numel() == 0:
        return torch.zeros_like(entropies, dtype=torch.float32)
    k = round(float(pivot) * (vals.numel() - 1))
    pivot_value = torch.sort(vals).values[k]
    d = logh - pivot_value
    rms = ((d.pow(2) * valid).sum() / valid.sum().clamp_min(1)).clamp_min(eps).sqrt()
    d = d / rms
    pos_max = torch.where(valid & (d > 0), d, torch.zeros_like(d)).max().clamp_min(eps)
    neg_min = torch.where(valid & (d < 0), d, torch.zeros_like(d)).min().clamp_max(-eps)
    neg_div = -neg_min if negative_scale == "abs" else neg_min
    return torch.where(d > 0, d / pos_max, d / neg_div).float()


@register
class HeteroEntropyHAPO(Regularizer):
    """HAPO-heterogeneous: entropy-adaptive clip bounds and advantage redistribution ("From Uniform to
    Heterogeneous: Tailoring Policy Optimization to Every Token's Nature", arXiv 2509.16591;
    starriver030515/HAPO ``core_algos.py::compute_entropy_h``, ``ada_clip``, ``ada_advantage``,
    ``compute_policy_loss``), card 16. Not the history-aware length reward ``reward=length_hapo`` (card G2-11).

    Per micro-batch, with h_hat = `entropy_score` of the update pass's entropies and ratio r = exp(logp - old):

    * clip bounds: eps_low_t = clip_low (1 - alpha h_hat) where h_hat <= 0 (wider for confident tokens),
      eps_high_t = clip_high (1 + alpha h_hat) where h_hat > 0 (more room to rise); the other bound stays;
    * advantage: A'_t = A_t (1 + beta h_hat_t) for a high-entropy token whose ratio is outside the band
      (1 - eps_low_t / 2, 1 + eps_high_t / 2), and for a low-entropy token whose ratio is inside it; A_t otherwise;
    * dual-clip PPO with those bounds (A' < 0 and r > clip_ratio_c: constant), token-mean.

    How it runs on TRL: TRL's clip is a scalar, so this term owns the clipping. ``trl_args`` widens TRL's
    ``epsilon`` / ``epsilon_high`` to `NO_TRL_CLIP`, which makes TRL's surrogate -r A; the token hook hands TRL
    A_eff = A' where HAPO's clipped dual-clip loss depends on r (A' > 0 and r <= 1 + eps_high_t; A' < 0 and
    1 - eps_low_t <= r <= clip_ratio_c) and 0 elsewhere. The gradient of TRL's loss is then exactly HAPO's
    (`tests/test_method_adaptive.py` checks it against the authors' function); TRL's loss *value* differs where
    HAPO's is clipped (a constant there, 0 here), and TRL's `clip_ratio/*` metrics read 0: the term logs its own.
    Requirements: a clipped-ratio TRL ``loss_type`` (dapo, the default, is the token-mean HAPO uses; bnpo, grpo and
    dr_grpo work with their own aggregation), ``importance_sampling_level=token``, no ``delta``. Base bounds are
    this term's ``clip_low`` / ``clip_high`` (any ``algo.epsilon*`` is overridden).

    Statistics (the quantile, the RMS, the max and min) are over the valid tokens of one loss call, as in the
    authors' veRL actor (one micro-batch); on-policy (num_iterations=1) r = 1, so the clip bounds never bind and
    only the redistribution acts: low-entropy tokens get A' (damped by 1 + beta h_hat <= 1), high-entropy ones A.

    Decisions: ``negative_scale="abs"`` (default) implements the paper's h_hat in [-1, 1]; the released code's
    ``compute_entropy_h`` divides the negative part by the (negative) min, so all its h_hat are >= 0
    (``negative_scale="released"`` reproduces that). Defaults: pivot 0.8, alpha 1, beta 1, clip 0.2/0.2, dual-clip
    10 (the recipe scripts). Adaptive-temperature sampling (a vLLM patch) is not part of this term. When a batch
    has no entropies (not in training, where TRL always computes them here) h_hat = 0: A' = A and base bounds.
    """

    name = "hetero_entropy_hapo"

    def __init__(self, pivot: float = 0.8, clip_alpha: float = 1.0, adv_beta: float = 1.0, clip_low: float = 0.2,
                 clip_high: float = 0.2, clip_ratio_c: float = 10.0, negative_scale: str = "abs"):
        if not 0.0 <= pivot <= 1.0:
            raise ValueError(f"pivot must be in [0, 1], got {pivot}")
        if clip_low <= 0 or clip_high <= 0:
            raise ValueError(f"clip_low and clip_high must be > 0, got {clip_low}, {clip_high}")
        if clip_ratio_c <= 1.0:
            raise ValueError(f"clip_ratio_c must be > 1 (dual-clip PPO), got {clip_ratio_c}")
        if negative_scale not in NEGATIVE_SCALES:
            raise ValueError(f"negative_scale={negative_scale!r}; choose from {', '.join(NEGATIVE_SCALES)}")
        self.pivot, self.clip_alpha, self.adv_beta = float(pivot), float(clip_alpha), float(adv_beta)
        self.clip_low, self.clip_high, self.clip_ratio_c = float(clip_low), float(clip_high), float(clip_ratio_c)
        self.negative_scale = negative_scale
        self._metrics: dict[str, float] = {}

    def trl_args(self) -> dict[str, Any]:
        return {"epsilon": NO_TRL_CLIP, "epsilon_high": NO_TRL_CLIP}

    def bounds(self, h_hat: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(eps_low_t, eps_high_t) from h_hat."""
        low = torch.where(h_hat <= 0, self.clip_low * (1 - self.clip_alpha * h_hat), torch.full_like(h_hat, self.clip_low))
        high = torch.where(h_hat > 0, self.clip_high * (1 + self.clip_alpha * h_hat),
                           torch.full_like(h_hat, self.clip_high))
        return low, high

    def token_advantages(self, batch: LossBatch) -> torch.Tensor:
        A = batch.advantages.detach().float()
        mask = batch.mask.bool()
        if batch.entropies is None:
            h_hat = torch.zeros_like(A)
        else:
            h_hat = entropy_score(batch.entropies, batch.mask, self.pivot, self.negative_scale).to(A.device)
        ratio = torch.exp(batch.logps.detach().float() - batch.old_logps.detach().float())
        low, high = self.bounds(h_hat)
        inside = (ratio > 1 - low / 2) & (ratio < 1 + high / 2)
        redistributed = A * (1 + self.adv_beta * h_hat)
        high_entropy = h_hat > 0
        A2 = torch.where(high_entropy ^ inside, redistributed, A)  # high & outside, or low & inside
        live = ((A2 > 0) & (ratio <= 1 + high)) | ((A2 < 0) & (ratio >= 1 - low) & (ratio <= self.clip_ratio_c))
        n = mask.sum().clamp_min(1).float()
        self._metrics = {
            "high_entropy_frac": float((high_entropy & mask).sum() / n),
            "redistributed_frac": float(((high_entropy ^ inside) & mask).sum() / n),
            "clipped_frac": float((~live & (A2 != 0) & mask).sum() / n),
            "eps_low_mean": float((low * mask).sum() / n),
            "eps_high_mean": float((high * mask).sum() / n),
        }
        return torch.where(live, A2, torch.zeros_like(A2)).to(batch.advantages.dtype)

    def metrics(self) -> dict[str, float]:
        return dict(self._metrics)
