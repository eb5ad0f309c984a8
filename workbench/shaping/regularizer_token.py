"""Per-token loss-side terms: Lp-Reg (card 13c), STEER (card 14) and GTPO with conflict tokens (card G2-4).

Each works on one training micro-batch (``workbench.shaping.loss_batch.LossBatch``): STEER and GTPO rewrite the
per-token advantages TRL's surrogate reads (``token_advantages``), Lp-Reg adds a penalty (``loss``) on a few tokens.
"""

from __future__ import annotations

import logging
import math
from typing import Any

import torch

from workbench.shaping.base import Regularizer, register
from workbench.shaping.loss_batch import LossBatch
from workbench.shaping.regularizer_objective import group_rows

log = logging.getLogger(__name__)


def token_entropies(batch: LossBatch, who: str) -> torch.Tensor:
    """(B, T) detached entropies of the training pass: TRL's (``batch.entropies``), else from ``batch.logits``."""
    if batch.entropies is not None:
        return batch.entropies.detach().float()
    if batch.logits is not None:
        logp = torch.log_softmax(batch.logits.detach().float(), dim=-1)
        return -(logp.exp() * logp).sum(dim=-1)
    raise ValueError(f"{who} needs the per-token entropies of the training forward pass")


# ----------------------------------------------------------------------------------------------- Lp-Reg


def min_p_proxy_logps(logits: torch.Tensor, ids: torch.Tensor, min_p: float, chunk_size: int = 1024) -> torch.Tensor:
    """(B, T) log pi_proxy(o_t): the sampled token's log-prob under the min-p filtered, renormalised distribution.

    Entries with p < min_p * max p get logit -1e4 (Lp-Reg's ``apply_min_p``, hard mode), then log-softmax; a
    filtered-out sampled token gets about -1e4. No gradient.

    >>> logits = torch.tensor([[[2.0, 1.0, -3.0]]])  # p = (0.727, 0.268, 0.005)
    >>> [round(float(min_p_proxy_logps(logits, torch.tensor([[i]]), 0.1)), 4) for i in (0, 1)]
    [-0.3133, -1.3133]
    >>> float(min_p_proxy_logps(logits, torch.tensor([[2]]), 0.1)) < -1e3
    True
    """
    flat = logits.detach().reshape(-1, logits.shape[-1])
    idx = ids.reshape(-1, 1)
    out = []
    for start in range(0, flat.shape[0], chunk_size):
        lg = flat[start : start + chunk_size].float()
        p = torch.softmax(lg, dim=-1)
        keep = p >= min_p * p.amax(dim=-1, keepdim=True)
        out.append(torch.log_softmax(lg.masked_fill(~keep, -1e4), dim=-1).gather(1, idx[start : start + chunk_size]))
    if not out:
        return flat.new_zeros(ids.shape, dtype=torch.float32)
    return torch.cat(out).reshape(ids.shape)


def kl_estimate(logps: torch.Tensor, target_logps: torch.Tensor, kl_type: str) -> torch.Tensor:
    """Per-token KL(pi || target) estimate, clamped to [-10, 10] as veRL's ``kl_penalty``: ``low_var_kl`` (k3,
    e^d - d - 1 with d = target - logp) or ``kl`` (k1, logp - target)."""
    if kl_type == "kl":
        kl = logps - target_logps
    else:
        d = target_logps - logps
        kl = torch.exp(d) - d - 1.0
    return kl.clamp(min=-10.0, max=10.0)


def lowest_logp_tokens(logps: torch.Tensor, candidates: torch.Tensor, fraction: float, min_count: int) -> torch.Tensor:
    """(B, T) bool: the k = max(1, floor(fraction * n)) candidates with the lowest log-prob, or none when k <
    ``min_count`` (Lp-Reg's skip, min_count 2: fewer than 200 candidates at 1% select nothing).

    >>> lp = torch.tensor([[-1.0, -5.0, -3.0, -0.5]])
    >>> lowest_logp_tokens(lp, torch.ones(1, 4, dtype=torch.bool), 0.5, 2).int().tolist()
    [[0, 1, 1, 0]]
    >>> lowest_logp_tokens(lp, torch.ones(1, 4, dtype=torch.bool), 0.25, 2).any().item()  # k = 1 < 2: skipped
    False
    """
    selected = torch.zeros_like(candidates)
    n = int(candidates.sum())
    if n == 0:
        return selected
    k = max(1, math.floor(n * fraction))
    if k < min_count:
        return selected
    flat = candidates.reshape(-1).nonzero().squeeze(1)
    chosen = flat[torch.topk(logps.detach().reshape(-1)[flat], k, largest=False).indices]
    selected.view(-1)[chosen] = True
    return selected


@register
class LpReg(Regularizer):
    """Lp-Reg: Low-probability Regularization (Huang et al., "Low-probability Tokens Sustain Exploration in RLVR",
    arXiv 2510.03222), card 13c. Reference: CarlanLark/Lp-Reg-dev ``verl/trainer/ppo/core_algos.py::
    compute_policy_loss_lp_reg``, ``verl/workers/actor/dp_actor.py::apply_min_p``,
    ``recipe/lp_reg/Qwen3_14b_lp_reg_onpolicy_64gpu.sh``; ``tests/test_method_token.py`` transcribes them.

    Proxy: pi_proxy = the min-p filtered policy (p < ``min_p`` * max p set to logit -1e4, renormalised;
    ``min_p_proxy_logps``). Selection, per side: among the valid tokens with A < 0 (A > 0 for the positive side),
    the k = max(1, floor(``neg_fraction`` * n)) with the lowest current log-prob, **only if k >= 2**, and of those the
    ones with pi(o_t) < pi_proxy(o_t) (a token the filter removed has pi_proxy ~ e^-1e4 and is never kept). Loss:
    ``beta`` * KL_low_var(pi || pi_proxy) (clamped at 10) on the selected tokens, summed and divided by the call's
    valid-token count (the reference's token-mean), added to TRL's surrogate.

    The small-count skip (the reference's ``if k > 1``): with the default 1% a side is regularised only when the
    loss call holds >= 200 of its tokens (199 -> nothing, 200 -> 2 tokens); ``min_candidates`` (default 2, the
    reference's) moves the threshold, 1 regularises from the first token. On the quick-start CPU batch (64 rollouts
    of ~20-55 tokens, one loss call a step) the negative side passes it whenever about a sixth of the rollouts are
    wrong and fails on steps with fewer wrong answers: every step logs ``neg_tokens``, ``neg_skipped`` (1 when the
    side had candidates but fewer than 200), ``candidates`` and ``regularized``, and the first skip is logged as a
    warning. The positive side is off (``pos_fraction`` 0, as the scripts).

    Deliberate differences: (1) the reference replaces the clipped surrogate by the unclipped -A r on the selected
    tokens; here TRL's clipped surrogate stays on every token and only the penalty is added. On-policy (ratio 1)
    the two are the same; with reused rollouts a selected token outside TRL's clip range keeps its penalty gradient
    but loses the -A r one (the recipe's clip 1.0 / 9.0 is effectively unclipped: ``algo.epsilon=1.0
    algo.epsilon_high=9.0`` reproduces it). (2) The proxy comes from the logits of TRL's own training pass
    (loss-batch field ``logits``, detached) rather than a separate old-policy pass (``minp_old_log_prob=True``):
    identical on-policy, the current rather than the sampling policy's distribution when rollouts are reused.
    Defaults (the Qwen3-14B on-policy script): min_p 0.02, neg_fraction 0.01, pos_fraction 0, beta (``ppo_kl_coef``)
    1, kl_type ``low_var_kl``.
    """

    name = "lp_reg"
    fields = frozenset({"logits"})

    def __init__(self, min_p: float = 0.02, neg_fraction: float = 0.01, pos_fraction: float = 0.0, beta: float = 1.0,
                 kl_type: str = "low_var_kl", min_candidates: int = 2):
        if not 0.0 < min_p <= 1.0:
            raise ValueError(f"min_p must be in (0, 1], got {min_p}")
        for key, value in (("neg_fraction", neg_fraction), ("pos_fraction", pos_fraction)):
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{key} must be in [0, 1], got {value}")
        if kl_type not in ("low_var_kl", "kl"):
            raise ValueError(f"kl_type={kl_type!r}; valid choices: low_var_kl, kl")
        if min_candidates < 1:
            raise ValueError(f"min_candidates must be >= 1, got {min_candidates}")
        self.min_p, self.neg_fraction, self.pos_fraction = float(min_p), float(neg_fraction), float(pos_fraction)
        self.beta, self.kl_type, self.min_candidates = float(beta), kl_type, int(min_candidates)
        self._warned = False
        self._metrics: dict[str, float] = {}

    def select(self, batch: LossBatch, proxy: torch.Tensor) -> torch.Tensor:
        """(B, T) bool: the regularised tokens (both sides), and the counters in ``metrics()``."""
        valid = batch.mask.bool()
        logps = batch.logps.detach()
        A = batch.advantages
        selected = torch.zeros_like(valid)
        counts: dict[str, float] = {}
        for side, candidates, fraction in (("neg", valid & (A < 0), self.neg_fraction),
                                           ("pos", valid & (A > 0), self.pos_fraction)):
            if side == "pos" and fraction == 0.0:
                continue
            chosen = lowest_logp_tokens(logps, candidates, fraction, self.min_candidates)
            n = int(candidates.sum())
            counts[f"{side}_tokens"] = float(n)
            counts[f"{side}_skipped"] = float(n > 0 and not chosen.any())
            counts["candidates"] = counts.get("candidates", 0.0) + float(chosen.sum())
            selected |= chosen & (logps < proxy)
        if counts.get("neg_skipped") and not self._warned:
            need = math.ceil(self.min_candidates / self.neg_fraction) if self.neg_fraction > 0 else float("inf")
            log.warning("regularizer.lp_reg: %d negative-advantage tokens in this loss call, fewer than the %s the "
                        "small-count skip needs: nothing regularised (logged per step as shaping/lp_reg/neg_skipped)",
                        int(counts["neg_tokens"]), need)
            self._warned = True
        self._metrics = {**counts, "regularized": float(selected.sum())}
        return selected

    def loss(self, batch: LossBatch) -> torch.Tensor | None:
        logits = batch.require("logits", f"regularizer.{self.name}")
        if batch.completion_ids is None:  # a hand-made batch: no sampled ids, no proxy (the trainer always has them)
            self._metrics = {"regularized": 0.0}
            return None
        proxy = min_p_proxy_logps(logits, batch.completion_ids, self.min_p).to(batch.logps.device)
        selected = self.select(batch, proxy)
        kl = kl_estimate(batch.logps, proxy, self.kl_type)
        penalty = self.beta * torch.where(selected, kl, torch.zeros_like(kl)).sum() / batch.mask.sum().clamp(min=1.0)
        self._metrics["penalty"] = float(penalty.detach())
        return penalty

    def metrics(self) -> dict[str, float]:
        return dict(self._metrics)


# ----------------------------------------------------------------------------------------------- STEER


def entropy_change_estimate(advantages, logps, old_logps, entropies) -> torch.Tensor:
    """(B, T) Omega_t = |A_t / q_t * p_t (1 - p_t) * (log p_t + H_t)|, p = pi(o_t) clamped to [1e-8, 1 - 1e-8],
    q = pi_old(o_t) clamped to [1e-8, 1]; non-finite values count as 0 (STEER's ``compute_token_weights``).

    >>> p, H = torch.tensor([[0.5]]), torch.tensor([[1.0]])
    >>> round(float(entropy_change_estimate(torch.tensor([[2.0]]), p.log(), p.log(), H)), 4)  # 2/.5*.25*(1-.6931)
    0.3069
    """
    p = logps.detach().float().exp().clamp(1e-8, 1.0 - 1e-8)
    q = old_logps.detach().float().exp().clamp(1e-8, 1.0)
    omega = advantages.detach().float() / q * (p * (1.0 - p)) * (p.log() + entropies.detach().float())
    return torch.where(torch.isfinite(omega), omega, torch.zeros_like(omega)).abs()


STEER_MODES = ("linear", "exp")


def steer_weights(omega: torch.Tensor, mask: torch.Tensor, mode: str, w_min: float, w_max: float) -> torch.Tensor:
    """(B, T) token weights from Omega over the valid tokens of the call (1 elsewhere).

    ``linear``: w = w_max - (Omega - min)(w_max - w_min)/(max - min), clamped to [w_min, w_max] (all equal: the
    midpoint); ``exp``: w = clamp(exp(-k Omega), w_min, 1), k = -ln(w_min) / max(Omega_max, 0.02).

    >>> w = steer_weights(torch.tensor([[0.0, 1.0, 2.0]]), torch.ones(1, 3), "linear", 0.8, 1.2)
    >>> [round(x, 4) for x in w[0].tolist()]
    [1.2, 1.0, 0.8]
    """
    valid = mask.bool()
    weights = torch.ones_like(omega)
    if not valid.any():
        return weights
    v = omega[valid]
    lo, hi = v.min(), v.max()
    if mode == "linear":
        if hi > lo:
            w = (w_max - (v - lo) * (w_max - w_min) / (hi - lo)).clamp(w_min, w_max)
        else:
            w = torch.full_like(v, (w_min + w_max) / 2)
    else:
        k = -math.log(w_min) / torch.clamp(hi, min=0.02)
        w = torch.exp(-k * v).clamp(w_min, 1.0)
    weights[valid] = w
    return weights


@register
class STEER(Regularizer):
    """STEER: Stabilizing Token-level Entropy-changE via Reweighting (Hao et al., "Rethinking Entropy Interventions
    in RLVR: An Entropy Change Perspective", arXiv 2510.10150), card 14. Reference: zz-haooo/STEER
    ``verl/trainer/ppo/core_algos.py::compute_token_weights`` / ``compute_policy_loss_with_entropy``,
    ``run/run_linear.sh``, ``run/run_exp.sh``; ``tests/test_method_token.py`` transcribes them.

    Omega_t = |A_t / pi_old(o_t) * p_t (1 - p_t) (log p_t + H_t)| (``entropy_change_estimate``: the first-order
    entropy change of the token's update; the released code's p(1-p), not the p(1-p)^2 a variable name suggests),
    mapped per loss call onto weights (``steer_weights``): the token that would move entropy most gets ``w_min``.
    The weight multiplies A_t: since w_t > 0 does not change the sign of A, w A inside TRL's clipped surrogate
    equals the reference's w times the clipped loss. Min and max are over all valid tokens of the loss call (the
    reference's micro-batch). p_t and H_t come from TRL's training pass (the reference's update pass), pi_old from
    TRL's old log-probs (the current ones, detached, on-policy).

    Deliberate difference: the reference's loss is dual-clip PPO (c = 10 caps the loss of A < 0 tokens at -c A);
    TRL has no dual clip. On-policy the ratio is 1 and the cap never binds; it matters only for reused rollouts
    whose ratio exceeds 10 on a negative token.
    Defaults: ``run_linear.sh``: mode linear, [w_min, w_max] = [0.8, 1.2] (``run_exp.sh``: mode exp, w_min 0.8,
    cap 1). Metrics: ``weight_mean``, ``weight_min``, ``weight_max``, ``omega_mean``, ``omega_max`` (Omega is the
    predicted entropy change per token: comparable across entropy methods).
    """

    name = "steer"

    def __init__(self, mode: str = "linear", w_min: float = 0.8, w_max: float = 1.2):
        if mode not in STEER_MODES:
            raise ValueError(f"mode={mode!r}; valid choices: {', '.join(STEER_MODES)}")
        if not 0.0 < w_min <= w_max:
            raise ValueError(f"need 0 < w_min <= w_max, got {w_min}, {w_max}")
        if mode == "exp" and w_min >= 1.0:
            raise ValueError(f"mode=exp needs w_min < 1, got {w_min}")
        self.mode, self.w_min, self.w_max = mode, float(w_min), float(w_max)
        self._metrics: dict[str, float] = {}

    def token_advantages(self, batch: LossBatch) -> torch.Tensor:
        H = token_entropies(batch, f"regularizer.{self.name}")
        omega = entropy_change_estimate(batch.advantages, batch.logps, batch.old_logps, H)
        w = steer_weights(omega, batch.mask, self.mode, self.w_min, self.w_max)
        valid = batch.mask.bool()
        if valid.any():
            self._metrics = {"weight_mean": float(w[valid].mean()), "weight_min": float(w[valid].min()),
                             "weight_max": float(w[valid].max()), "omega_mean": float(omega[valid].mean()),
                             "omega_max": float(omega[valid].max())}
        return batch.advantages * w.to(batch.advantages.dtype)

    def metrics(self) -> dict[str, float]:
        return dict(self._metrics)


# ----------------------------------------------------------------------------------------------- GTPO


def conflict_runs(ids: torch.Tensor, valid: torch.Tensor, pos: torch.Tensor, neg: torch.Tensor) -> torch.Tensor:
    """(G, T) bool, one group: positions in the contiguous run from the start where the row's token also sits at
    that position in a positive-advantage and in a negative-advantage row (the row itself counts); rows with zero
    advantage take no part. Only valid positions match.

    >>> ids = torch.tensor([[5, 6, 7], [5, 6, 8], [5, 9, 7]])
    >>> conflict_runs(ids, torch.ones(3, 3, dtype=torch.bool), torch.tensor([1, 0, 0]).bool(),
    ...               torch.tensor([0, 1, 1]).bool()).int().tolist()
    [[1, 1, 1], [1, 1, 0], [1, 0, 0]]
    """
    active = pos | neg
    same = (ids.unsqueeze(1) == ids.unsqueeze(0)) & valid.unsqueeze(0) & valid.unsqueeze(1)  # (G_i, G_j, T)
    in_pos = (same & pos.view(1, -1, 1)).any(dim=1)
    in_neg = (same & neg.view(1, -1, 1)).any(dim=1)
    raw = in_pos & in_neg & valid & active.unsqueeze(1)
    return torch.cumprod(raw.int(), dim=1).bool()


def right_aligned(x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Each row's first ``lengths[i]`` entries reversed (row i's last valid token first); the rest kept in place.
    Its own inverse.

    >>> right_aligned(torch.tensor([[1, 2, 3, 0], [4, 5, 0, 0]]), torch.tensor([3, 2])).tolist()
    [[3, 2, 1, 0], [5, 4, 0, 0]]
    """
    T = x.shape[1]
    k = torch.arange(T, device=x.device).unsqueeze(0)
    n = lengths.to(x.device).long().unsqueeze(1)
    src = torch.where(k < n, n - 1 - k, k)
    return x.gather(1, src)


def gtpo_weights(ids, mask, seq_advantages, conflict_weight: float) -> tuple[torch.Tensor, torch.Tensor]:
    """One group: (delta (G, T), n_conflict (G,)) of GTPO's ``build_conflict_mask``.

    delta = 1, but ``conflict_weight`` (2) on a positive row's conflict token and 0 on a negative row's, for the
    runs from the start and from the end (rows right-aligned on their last valid token), the two masks multiplied;
    zero-advantage rows keep delta = 1 and n = 0. n_conflict counts, as the reference, the positions k with
    k < a or k < b (a, b the two run lengths; the reference ORs a forward and a reversed mask): max(a, b).
    """
    valid = mask.bool()
    lengths = valid.sum(dim=1)  # the reference's seq_len = mask.sum (completions are left-aligned, padding right)
    pos, neg = seq_advantages > 0, seq_advantages < 0
    fwd = conflict_runs(ids, valid, pos, neg)
    rev = conflict_runs(right_aligned(ids, lengths), right_aligned(valid, lengths), pos, neg)
    bwd = right_aligned(rev, lengths) & valid
    weight_if_conflict = torch.where(pos, conflict_weight, 0.0).to(torch.float32).unsqueeze(1)
    delta = torch.where(fwd, weight_if_conflict, 1.0) * torch.where(bwd, weight_if_conflict, 1.0) * mask.float()
    n_conflict = ((fwd | rev) & valid).sum(dim=1)
    return delta, n_conflict


@register
class ConflictTokenGTPO(Regularizer):
    """GTPO: Group-relative Trajectory-based Policy Optimization, conflict tokens + entropy filter (arXiv 2508.03772;
    not the Group Token PO of 2508.04349), card G2-4. Reference: winstonsmith1897/GTPO ``gtpo/gtpo_training.py``
    (``build_conflict_mask``, ``gtpo_compute_loss``, ``UnslothEfficientGTPO.forward``); ``tests/test_method_token.py``
    transcribes them.

    Per group (whole in the loss call: ``group_rows``): conflict tokens are the positions where the same token id
    sits in a positive- and a negative-advantage completion, in the contiguous run from the start and separately in
    the run from the end (completions right-aligned); delta = 2 on a positive completion's conflict token, 0 on a
    negative one's, 1 elsewhere (``gtpo_weights``). Entropy filter: H_i = completion i's mean token entropy (TRL's
    training pass, detached); A'_i = A_i - 0.1 H_i if H_i <= 0.7, else 0 (zero-advantage completions too get
    -0.1 H_i). Loss: per completion the token mean of -A'_i delta_{i,t} r_{i,t} divided by its conflict count
    n_i (>= 1), averaged over completions. Here: the token advantages become A' delta / n, and ``trl_args`` sets
    TRL's ``loss_type=grpo`` (per-sequence token mean, then the mean over completions), so TRL's surrogate is this
    loss (on-policy r = 1 and TRL's clip never binds, as the reference's ratio to a detached copy of itself).

    Decisions and differences: (1) the reference **sums** over completions; this is the mean (the card's
    formula): the gradient is the reference's divided by the number of completions in the loss call (a constant
    learning-rate factor at a fixed batch size; the test checks the factor). (2) The conflict count is the
    reference's max(a, b) (forward and reversed masks ORed position-wise), not a + b. (3) Validity comes from the
    loss mask, not a hard-coded pad id (the reference's 128004, Llama-3's): a pad token equal to a real token (EOS
    as pad) cannot make a false conflict. (4) Entropies are TRL's, at the rollout temperature; the reference's
    Unsloth head applies none (equal at temperature 1). (5) With rollouts reused (``num_iterations > 1``) TRL's
    ratio and clip act, while the reference's ratio is always 1. Sign of A_i: the mean of its token advantages.
    Defaults: entropy_threshold 0.7, entropy_scale 0.1, conflict_weight 2 (the module's constants); no KL.
    Metrics: ``conflict_tokens`` (conflict positions per completion with nonzero advantage), ``filtered``
    (fraction of completions over the entropy threshold), ``entropy_mean``.
    """

    name = "conflict_token_gtpo"

    def __init__(self, entropy_threshold: float = 0.7, entropy_scale: float = 0.1, conflict_weight: float = 2.0):
        if entropy_threshold < 0 or entropy_scale < 0 or conflict_weight < 0:
            raise ValueError(f"entropy_threshold, entropy_scale and conflict_weight must be >= 0, got "
                             f"{entropy_threshold}, {entropy_scale}, {conflict_weight}")
        self.entropy_threshold, self.entropy_scale = float(entropy_threshold), float(entropy_scale)
        self.conflict_weight = float(conflict_weight)
        self._metrics: dict[str, float] = {}

    def trl_args(self) -> dict[str, Any]:
        return {"loss_type": "grpo"}

    def token_advantages(self, batch: LossBatch) -> torch.Tensor:
        mask = batch.mask.float()
        A = batch.advantages.detach().float()
        H = token_entropies(batch, f"regularizer.{self.name}")
        n_tok = mask.sum(dim=1).clamp(min=1.0)
        h_mean = (H * mask).sum(dim=1) / n_tok
        seq_adv = (A * mask).sum(dim=1) / n_tok
        ids = batch.completion_ids if batch.completion_ids is not None else torch.zeros_like(mask, dtype=torch.long)
        delta = torch.ones_like(mask)
        n_conflict = torch.zeros(mask.shape[0], device=mask.device)
        for rows in group_rows(batch, f"regularizer.{self.name}"):
            d, n = gtpo_weights(ids[rows].to(mask.device), batch.mask[rows], seq_adv[rows], self.conflict_weight)
            delta[rows], n_conflict[rows] = d, n.float()
        keep = h_mean <= self.entropy_threshold
        shaped = torch.where(keep.unsqueeze(1), A - self.entropy_scale * h_mean.unsqueeze(1), torch.zeros_like(A))
        active = seq_adv != 0
        self._metrics = {
            "conflict_tokens": float(n_conflict[active].mean()) if active.any() else 0.0,
            "filtered": float((~keep).float().mean()) if keep.numel() else 0.0,
            "entropy_mean": float(h_mean.mean()) if h_mean.numel() else 0.0,
        }
        out = shaped * delta / n_conflict.clamp(min=1.0).unsqueeze(1)
        return torch.where(batch.mask.bool(), out, torch.zeros_like(out)).to(batch.advantages.dtype)

    def metrics(self) -> dict[str, float]:
        return dict(self._metrics)
