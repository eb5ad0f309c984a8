"""Risk-sensitive advantages: RiskPO's mixed value-at-risk advantage over bundles of questions (card G2-10)."""

from __future__ import annotations

from typing import Any

import torch

from workbench.rollouts import Rollouts
from workbench.shaping.base import AdvantageTransform, register

#: RiskPO's tracked quantile levels (the authors' grid, 0.05 .. 0.95)
QUANTILE_LEVELS = tuple(round(0.05 * k, 2) for k in range(1, 20))
QUANTILE_MODES = ("track", "batch", "mix")
CREDIT_MODES = ("std", "uniform", "sum-mean")


def paper_scores(rewards: torch.Tensor, group_size: int, bundle_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Bundles and papers: consecutive groups (questions) are cut into bundles of `bundle_size` (the last may be
    smaller); the j-th rollout of every question of a bundle forms the bundle's j-th paper.
    Returns (B,) the bundle id of each rollout and (num_bundles, G) the paper scores (sums of their rewards).

    >>> b, S = paper_scores(torch.tensor([1., 0., 1., 1., 0., 0.]), 2, 2)  # 3 questions of 2 rollouts
    >>> b.tolist(), S.tolist()
    ([0, 0, 0, 0, 1, 1], [[2.0, 1.0], [0.0, 0.0]])
    """
    R = rewards.double().view(-1, group_size)
    question_bundle = torch.arange(R.shape[0]) // bundle_size
    nb = int(question_bundle.max()) + 1 if R.shape[0] else 0
    S = torch.zeros(nb, group_size, dtype=torch.float64).index_add_(0, question_bundle, R)
    return question_bundle.repeat_interleave(group_size), S


def mvar_paper_advantages(S: torch.Tensor, a: torch.Tensor, b: torch.Tensor, alpha: float, beta: float,
                          w_mix: float = 1.5, eps: float = 1e-6) -> torch.Tensor:
    """(num_bundles, G) mixed-VaR advantage of each paper from its score S and the quantiles a (lower) and b (upper)
    per bundle: RVaR = [(S - a)+ - (S - b)+ + (a - b)] / (beta - alpha), CVaR = -(a - S)+ / alpha,
    A = (w CVaR + RVaR) / (w + 1), divided by the std (unbiased) of the bundle's paper scores; a bundle of one paper,
    or of papers that all score the same, is divided by 1 instead.

    >>> S = torch.tensor([[5., 3., 1., 0.]])
    >>> [round(x, 4) for x in mvar_paper_advantages(S, torch.tensor([1.]), torch.tensor([4.]), 0.2, 0.9)[0].tolist()]
    [0.0, -0.2577, -0.7731, -2.1261]
    """
    a, b = a.double().unsqueeze(1), b.double().unsqueeze(1)
    rvar = ((S - a).clamp(min=0) - (S - b).clamp(min=0) + (a - b)) / (beta - alpha + eps)
    cvar = -(a - S).clamp(min=0) / (alpha + eps)
    adv = (w_mix * cvar + rvar) / (w_mix + 1)
    std = S.std(dim=1, keepdim=True) if S.shape[1] > 1 else torch.ones_like(S[:, :1])
    std = torch.where(std > 1e-6, std, torch.ones_like(std))
    return adv / (std + eps)


@register
class RiskPOMVaR(AdvantageTransform):
    """RiskPO: risk-based policy optimisation with a Mixed Value-at-Risk objective (Ren et al., arXiv 2510.00911;
    github.com/RTkenny/RiskPO, `verl/trainer/ppo/core_algos.py::
    compute_grpo_bundle_rvar_outcome_advantage_quantile_tracking`, tracker in `verl/trainer/ppo/ray_trainer.py`),
    card G2-10.

    Replaces the advantage. Consecutive questions (groups) are cut into bundles of `bundle_size`; the j-th rollout
    of every question of a bundle forms the j-th "paper", scored S = the sum of its rewards. With a, b the alpha-
    and beta-quantiles of paper scores, each paper gets the mixed-VaR advantage of `mvar_paper_advantages`
    (RVaR caps gains above b, CVaR pushes papers below a down harder), and each rollout of the paper its credit:
    `std` (the maths script) divides by the std of the rollout's own question's rewards (1 when it is <= 1e-3),
    `uniform` gives the paper's advantage, `sum-mean` splits it in proportion to r - question mean.

    Quantiles (`quantile_mode`): `batch` = per-bundle quantiles of this batch's papers (torch.quantile, linear);
    `track` (default) = the tracked quantiles: a persistent set over the authors' grid of levels 0.05..0.95, set to
    the batch quantiles of all paper scores at the first step, then moved each step by one SGD step on the pinball
    loss, q_l <- q_l + lr_q * (l - mean(S < q_l)); a and b are the grid entries nearest alpha and beta. `mix`
    averages the two. The tracked values are in `state_dict`, so they survive a resume.

    Defaults: the maths script's bundle 5, alpha 0.2, beta 0.9, w 1.5, lr_q 0.1, credit std.
    Decisions and differences (METHODS.md, "Details found"):
    * as released the trainer writes the tracked quantiles after the advantage is computed, so they never reach
      it (track behaves as batch). Here the advantage of step t uses the tracker as it stood after step t-1 (the
      first step uses the batch quantiles), then the tracker moves with step t's papers: the intended order;
    * a bundle whose papers all score the same is divided by 1, not by 0 + 1e-6 (the released -2e6); with batch
      quantiles its advantage is 0 anyway;
    * rewards are the pipeline's shaped reward (binary with `correctness` alone); the last bundle of a batch may
      hold fewer questions. Every advantage is <= 0 (as released): the objective only penalises the tails.
    """

    name = "riskpo_mvar"
    needs = frozenset({"correct"})

    def __init__(self, bundle_size: int = 5, quantile_down: float = 0.2, quantile_up: float = 0.9,
                 w_mix: float = 1.5, lr_q: float = 0.1, quantile_mode: str = "track", credit: str = "std"):
        if bundle_size < 1:
            raise ValueError(f"bundle_size must be >= 1, got {bundle_size}")
        if not 0.0 < quantile_down < quantile_up < 1.0:
            raise ValueError(f"need 0 < quantile_down < quantile_up < 1, got {quantile_down}, {quantile_up}")
        if quantile_mode not in QUANTILE_MODES:
            raise ValueError(f"quantile_mode={quantile_mode!r}; valid: {', '.join(QUANTILE_MODES)}")
        if credit not in CREDIT_MODES:
            raise ValueError(f"credit={credit!r}; valid: {', '.join(CREDIT_MODES)}")
        if w_mix < 0 or lr_q < 0:
            raise ValueError(f"w_mix and lr_q must be >= 0, got {w_mix}, {lr_q}")
        self.bundle_size, self.w_mix, self.lr_q = int(bundle_size), float(w_mix), float(lr_q)
        self.alpha, self.beta = float(quantile_down), float(quantile_up)
        self.quantile_mode, self.credit = quantile_mode, credit
        levels = torch.tensor(QUANTILE_LEVELS, dtype=torch.float64)
        self._down = int((levels - self.alpha).abs().argmin())
        self._up = int((levels - self.beta).abs().argmin())
        self.tracked: list[float] | None = None  # the tracker over QUANTILE_LEVELS
        self._metrics: dict[str, float] = {}

    def update_tracker(self, scores: torch.Tensor) -> None:
        """One step of the quantile tracker on this batch's paper scores (first call: set to their quantiles)."""
        levels = torch.tensor(QUANTILE_LEVELS, dtype=torch.float64)
        flat = scores.double().reshape(-1)
        if flat.numel() == 0:
            return
        if self.tracked is None:
            self.tracked = torch.quantile(flat, levels).tolist()
            return
        q = torch.tensor(self.tracked, dtype=torch.float64)
        below = (flat.unsqueeze(0) < q.unsqueeze(1)).double().mean(dim=1)
        self.tracked = (q + self.lr_q * (levels - below)).tolist()

    def __call__(self, advantages: torch.Tensor, rollouts: Rollouts, rewards: torch.Tensor) -> torch.Tensor:
        G = rollouts.group_size
        r = rewards.double().reshape(-1)
        bundle, S = paper_scores(r, G, self.bundle_size)
        qa = torch.quantile(S, self.alpha, dim=1) if S.numel() else S.new_zeros(0)
        qb = torch.quantile(S, self.beta, dim=1) if S.numel() else S.new_zeros(0)
        if self.quantile_mode != "batch" and self.tracked is not None:
            ta, tb = self.tracked[self._down], self.tracked[self._up]
            if self.quantile_mode == "track":
                qa, qb = torch.full_like(qa, ta), torch.full_like(qb, tb)
            else:
                qa, qb = (qa + ta) / 2, (qb + tb) / 2
        paper_adv = mvar_paper_advantages(S, qa, qb, self.alpha, self.beta, self.w_mix)  # (bundles, G)
        j = torch.arange(r.numel()) % G
        adv = paper_adv[bundle, j]
        Rq = r.view(-1, G)
        if self.credit == "std":
            std = Rq.std(dim=1, keepdim=True) if G > 1 else torch.ones_like(Rq[:, :1])
            std = torch.where(std > 1e-3, std, torch.ones_like(std))
            adv = adv / (std + 1e-6).expand_as(Rq).reshape(-1)
        elif self.credit == "sum-mean":
            dev = (Rq - Rq.mean(dim=1, keepdim=True)).reshape(-1)  # r - question mean
            paper = bundle * G + j
            total = torch.zeros(int(paper.max()) + 1 if r.numel() else 0, dtype=torch.float64).index_add_(0, paper, dev)
            count = torch.zeros_like(total).index_add_(0, paper, torch.ones_like(dev))
            split = total[paper].abs() > 1e-6
            adv = torch.where(split, adv * dev / torch.where(split, total[paper], torch.ones_like(dev)),
                              adv / count[paper])
        if self.quantile_mode != "batch":
            self.update_tracker(S)
        self._metrics = {"quantile_down": float(qa.mean()) if qa.numel() else 0.0,
                         "quantile_up": float(qb.mean()) if qb.numel() else 0.0,
                         "tail_frac": float((S < qa.unsqueeze(1)).double().mean()) if S.numel() else 0.0}
        return adv.to(advantages.dtype)

    def state_dict(self) -> dict[str, Any]:
        return {"tracked": list(self.tracked)} if self.tracked is not None else {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("tracked") is not None:
            self.tracked = [float(x) for x in state["tracked"]]

    def metrics(self) -> dict[str, float]:
        return dict(self._metrics)
