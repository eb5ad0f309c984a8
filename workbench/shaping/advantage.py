"""Advantage transforms: positive-only length weighting (DRPO-lite, card 2), BNPO Beta normalisation (card G2-3)
and EMPG entropy modulation (card 8).

The trainer calls each transform after TRL's group normalisation as
``transform(advantages (B,), rollouts, rewards (B,)) -> (B,) or (B, T)``; groups are contiguous blocks of G.
"""

from __future__ import annotations

from typing import Any

import torch

from workbench.rollouts import Rollouts
from workbench.shaping.base import AdvantageTransform, register

# ----------------------------------------------------------------------------------------------- positive_length


def positive_length_weights(
    lengths: torch.Tensor, positive: torch.Tensor, group_size: int, strength: float = 0.5, clip: float = 2.0
) -> torch.Tensor:
    """Self-normalised length weights over each group's positive set P (mean 1 over P, exactly 1 elsewhere).

    z_i = clip((mean_P L - L_i) / std_P L, -clip, clip) (shorter -> positive; population std over P) and
    w_i = exp(strength z_i) / mean_{j in P} exp(strength z_j). Groups with |P| < 2 or all-equal lengths in P get 1.

    >>> w = positive_length_weights(torch.tensor([10, 30, 50, 99]), torch.tensor([True, True, False, False]), 4, 0.5)
    >>> [round(x, 4) for x in w.tolist()]
    [1.4621, 0.5379, 1.0, 1.0]
    """
    L = lengths.float().view(-1, group_size)
    P = positive.view(-1, group_size).bool()
    n = P.sum(dim=1, keepdim=True).float()
    Pf = P.float()
    mean = (L * Pf).sum(dim=1, keepdim=True) / n.clamp(min=1.0)
    var = (((L - mean) ** 2) * Pf).sum(dim=1, keepdim=True) / n.clamp(min=1.0)
    std = var.sqrt()
    active = (n >= 2) & (std > 1e-6)
    z = ((mean - L) / std.clamp(min=1e-6)).clamp(-clip, clip)
    e = torch.exp(strength * z) * Pf
    norm = e.sum(dim=1, keepdim=True) / n.clamp(min=1.0)
    w = e / norm.clamp(min=1e-30)
    w = torch.where(active & P, w, torch.ones_like(w))
    return w.reshape(-1)


@register
class PositiveLength(AdvantageTransform):
    """DRPO-lite: a length preference applied only *within* the correct rollouts, so a long correct answer never
    gets a negative advantage from length. Our variant of DRPO (Li et al., arXiv 2510.04474, ICLR 2026;
    Optimization-AI/DRPO ``compute_policy_loss_drpo``), card 2, last paragraph.

    For each group, P = the correct rollouts with a positive advantage. With z_i the length z-score inside P
    (shorter -> positive, clipped to +-``clip``) the advantage becomes A'_i = A_i * w_i,
    w_i = exp(strength z_i) / mean_{j in P} exp(strength z_j), for i in P; every other rollout is unchanged.

    Design (why multiplicative, not A_i + strength * z_i): DRPO lets length enter "only through self-normalised
    weights over the correct rollouts"; doing the same to the GRPO advantage gives by construction
    * A'_i > 0 whenever A_i > 0 and the answer is correct (w_i > 0), the key invariant;
    * sum_P A'_i = sum_P A_i when the positive advantages in a group are equal (the plain-correctness case), so the
      group still sums to zero and the correct-vs-wrong signal keeps its size; only its split among the correct
      answers moves toward the shorter ones;
    * incorrect rollouts, groups with fewer than two positive correct rollouts, all-correct groups (A = 0 there:
      DRPO drops them too) and groups whose correct lengths are all equal are unchanged.
    An additive bonus would either make long correct answers negative or need an ad-hoc floor, and in all-correct or
    all-wrong groups it would be the only signal left: exactly the collapse DESIGN.md measured for the Kimi term.
    Correct rollouts with A_i <= 0 (possible when other reward terms are active) are left alone: scaling a negative
    advantage by a length weight would push the wrong way.

    Defaults: strength 0.5 and clip 2 bound the ratio between the shortest and the longest correct answer's weight by
    exp(2 * 0.5 * 2) = e^2 ~ 7.4. DRPO's own weight exp((1 - L/L_max)/lambda), lambda 0.1, depends on L_max; the
    z-score makes this one scale-free. Needs a (B,) advantage: list it before token-level transforms such as empg.
    """

    name = "positive_length"
    needs = frozenset({"correct", "lengths"})

    def __init__(self, strength: float = 0.5, clip: float = 2.0):
        if strength < 0:
            raise ValueError(f"strength must be >= 0, got {strength}")
        if clip <= 0:
            raise ValueError(f"clip must be positive, got {clip}")
        self.strength, self.clip = float(strength), float(clip)
        self._metrics: dict[str, float] = {}

    def __call__(self, advantages: torch.Tensor, rollouts: Rollouts, rewards: torch.Tensor) -> torch.Tensor:
        if advantages.dim() != 1:
            raise ValueError(
                "advantage.positive_length needs (B,) advantages; list it before token-level transforms (e.g. empg)"
            )
        positive = (rollouts.correct > 0.5) & (advantages > 0)
        w = positive_length_weights(rollouts.lengths, positive, rollouts.group_size, self.strength, self.clip)
        changed = (w != 1.0).view(-1, rollouts.group_size).any(dim=1)
        self._metrics = {
            "groups_reweighted": float(changed.float().mean()) if changed.numel() else 0.0,
            "weight_max": float(w.max()) if w.numel() else 1.0,
        }
        return advantages * w.to(advantages.dtype)

    def metrics(self) -> dict[str, float]:
        return dict(self._metrics)


# ----------------------------------------------------------------------------------------------- BNPO


def beta_log_pdf(p: torch.Tensor, alpha: float, beta: float) -> torch.Tensor:
    """log Beta_pdf(p; alpha, beta), finite at p in {0, 1} when the matching parameter is 1 (xlogy: 0 * log 0 = 0).

    Same value as ``torch.distributions.Beta(alpha, beta).log_prob(p)`` inside (0, 1).

    >>> round(float(beta_log_pdf(torch.tensor(0.5), 2.0, 2.0).exp()), 4)
    1.5
    """
    p = p.double()
    a, b = torch.tensor(alpha, dtype=torch.float64), torch.tensor(beta, dtype=torch.float64)
    log_norm = torch.lgamma(a) + torch.lgamma(b) - torch.lgamma(a + b)
    return torch.xlogy(a - 1, p) + torch.xlogy(b - 1, 1 - p) - log_norm


def bnpo_parameters(group_means: torch.Tensor) -> tuple[float, float]:
    """BNPO's method-of-moments Beta parameters from the batch of group success rates p_q.

    a = (mu(1-mu)/v - 1) mu, b = (mu(1-mu)/v - 1)(1-mu), alpha = max(1, 1 + a/3), beta = max(1, 1 + b/3), with
    mu, v the mean and (unbiased) variance of p_q over the batch. Fewer than two groups or v = 0 -> (1, 1), the
    uniform Beta, under which BNPO is REINFORCE with the group-mean baseline.

    >>> bnpo_parameters(torch.tensor([0.0, 0.5, 1.0]))  # v = mu(1 - mu): a = b = 0
    (1.0, 1.0)
    >>> [round(x, 4) for x in bnpo_parameters(torch.tensor([0.4, 0.5, 0.6]))]  # v = 0.01: a = b = 12
    [5.0, 5.0]
    """
    p = group_means.double()
    if p.numel() < 2:
        return 1.0, 1.0
    mu, v = float(p.mean()), float(p.var())
    if not v > 1e-12:
        return 1.0, 1.0
    s = mu * (1 - mu) / v - 1
    return max(1.0, 1 + s * mu / 3), max(1.0, 1 + s * (1 - mu) / 3)


def bnpo_advantages(
    scores: torch.Tensor, group_size: int, max_inverse_pdf: float = 1e6
) -> tuple[torch.Tensor, float, float]:
    """A_i = (R_i - p_q) / Beta_pdf(p_q; alpha, beta) for scores already in [0, 1]; 1/pdf clamped to max_inverse_pdf.

    >>> A, a, b = bnpo_advantages(torch.tensor([0., 0., 1., 0., 1., 1.]), 2)  # p_q = 0, 0.5, 1: uniform Beta
    >>> A.tolist(), a, b
    ([0.0, 0.0, 0.5, -0.5, 0.0, 0.0], 1.0, 1.0)
    """
    R = scores.double().view(-1, group_size)
    p = R.mean(dim=1)
    alpha, beta = bnpo_parameters(p)
    inv_pdf = torch.exp(-beta_log_pdf(p, alpha, beta)).clamp(max=max_inverse_pdf)  # exp(+inf) = inf -> clamped
    A = (R - p.unsqueeze(1)) * inv_pdf.unsqueeze(1)
    return A.reshape(-1).float(), alpha, beta


@register
class BNPO(AdvantageTransform):
    """BNPO: Beta Normalization Policy Optimization (Xiao, Zhang, Cao, arXiv 2506.02864; changyi7231/BNPO
    ``recipe/bnpo/src/bnpo_ray_trainer.py::compute_bnpo_outcome_advantage``), card G2-3.

    **Replaces** the advantage (TRL's group normalisation and ``scale_rewards`` are ignored): with p_q the group's
    mean reward, alpha, beta fitted by method of moments over the batch's p_q (``bnpo_parameters``),
    A_i = (R_i - p_q) / Beta_pdf(p_q; alpha, beta), 1/pdf clamped to <= 1e6.

    Naming clash: TRL's ``loss_type="bnpo"`` is a loss *aggregation* mode (token mean over the local batch), not
    this paper; the two are independent.

    Rewards are rescaled into [0, 1] first (decision, the card's "[min,max]-scaled"): with ``reward_min`` and
    ``reward_max`` set, R' = clip((R - min)/(max - min), 0, 1) (the paper's fixed affine map); otherwise rewards
    already inside [0, 1] (binary correctness) are used as they are, and anything else is min-max scaled over the
    batch (an all-equal batch gives zero advantages). A group of one rollout gets p_q = R_i, hence A_i = 0 (the
    authors' code uses p_q = 0 there, which would scale a lone reward by up to 1e6). The paper's "advantage
    decomposition" (normalising each reward component separately) is not implemented.
    """

    name = "bnpo"

    def __init__(self, reward_min: float | None = None, reward_max: float | None = None, max_inverse_pdf: float = 1e6):
        if (reward_min is None) != (reward_max is None):
            raise ValueError("set both reward_min and reward_max, or neither")
        if reward_min is not None and not reward_max > reward_min:
            raise ValueError(f"reward_max must exceed reward_min, got {reward_min}, {reward_max}")
        if max_inverse_pdf <= 0:
            raise ValueError(f"max_inverse_pdf must be positive, got {max_inverse_pdf}")
        self.reward_min, self.reward_max = reward_min, reward_max
        self.max_inverse_pdf = float(max_inverse_pdf)
        self._metrics: dict[str, float] = {}

    def scale(self, rewards: torch.Tensor) -> torch.Tensor:
        r = rewards.double()
        if self.reward_min is not None:
            return ((r - self.reward_min) / (self.reward_max - self.reward_min)).clamp(0.0, 1.0)
        if r.numel() == 0 or (r.min() >= 0 and r.max() <= 1):
            return r
        lo, hi = r.min(), r.max()
        return (r - lo) / (hi - lo) if hi > lo else torch.zeros_like(r)

    def __call__(self, advantages: torch.Tensor, rollouts: Rollouts, rewards: torch.Tensor) -> torch.Tensor:
        A, alpha, beta = bnpo_advantages(self.scale(rewards), rollouts.group_size, self.max_inverse_pdf)
        self._metrics = {"alpha": alpha, "beta": beta}
        return A.to(advantages.dtype)

    def metrics(self) -> dict[str, float]:
        return dict(self._metrics)


# ----------------------------------------------------------------------------------------------- EMPG


def segment_index(
    completion_ids: list[list[int]],
    mask: torch.Tensor,
    delimiters: list[list[int]] | None = None,
    num_segments: int = 4,
    turns: bool = False,
) -> torch.Tensor:
    """Step index of every completion token, (B, T) long; -1 on padding (and on any other mask-0 token).

    With ``turns`` (tool use), a step is an agent turn: a maximal run of mask-1 tokens (the model's own), the
    tool-result tokens between runs being mask 0. Otherwise, with ``delimiters`` (token-id sequences), a step ends
    with each occurrence of a delimiter (the delimiter belongs to the step it closes); without them, each completion
    is cut into ``num_segments`` near-equal chunks.

    >>> mask = torch.tensor([[1, 1, 1, 1, 1, 0], [1, 1, 0, 0, 0, 0]])
    >>> segment_index([[5, 9, 5, 5, 7], [9, 9]], mask, delimiters=[[9]]).tolist()
    [[0, 0, 1, 1, 1, -1], [0, 1, -1, -1, -1, -1]]
    >>> segment_index([[5, 9, 5, 5, 7], [9, 9]], mask, num_segments=2).tolist()
    [[0, 0, 0, 1, 1, -1], [0, 1, -1, -1, -1, -1]]
    >>> segment_index([[5, 9, 3, 3, 7, 5]], torch.tensor([[1, 1, 0, 0, 1, 1]]), turns=True).tolist()  # 3 3: tool
    [[0, 0, -1, -1, 1, 1]]
    """
    B, T = mask.shape
    valid = mask.bool()
    out = torch.full((B, T), -1, dtype=torch.long)
    for i in range(B):
        positions = valid[i].nonzero().squeeze(1)  # the i-th completion's tokens, in order
        n = positions.numel()
        if n == 0:
            continue
        if turns:  # a new turn wherever the model's tokens resume after a gap (tool results)
            gaps = torch.zeros(n, dtype=torch.long)
            gaps[1:] = (positions[1:] - positions[:-1] > 1).long()
            out[i, positions] = gaps.cumsum(0)
        elif delimiters:
            ids = list(completion_ids[i][:n])
            seg, cur = [], 0
            for t in range(n):
                seg.append(cur)
                if any(len(d) <= t + 1 and ids[t + 1 - len(d) : t + 1] == d for d in delimiters):
                    cur += 1
            out[i, positions] = torch.tensor(seg)
        else:
            out[i, positions] = torch.arange(n) * num_segments // n
    return out


def turn_spans(model_mask: torch.Tensor) -> list[list[tuple[int, int]]]:
    """Each rollout's assistant turns as [start, end) completion positions, in order, from its (B, T) model-token mask
    (1 = the model's own token; 0 = a tool result or padding). A turn is a maximal run of model tokens
    (`segment_index(turns=True)`).

    >>> turn_spans(torch.tensor([[1, 1, 0, 0, 1, 1, 1], [1, 1, 1, 0, 0, 0, 0], [0, 0, 0, 0, 0, 0, 0]]))
    [[(0, 2), (4, 7)], [(0, 3)], []]
    """
    seg = segment_index([], model_mask, turns=True)
    spans: list[list[tuple[int, int]]] = []
    for row in seg:
        k = int(row.max()) + 1 if row.numel() else 0
        out = []
        for t in range(k):
            pos = (row == t).nonzero().squeeze(1)
            out.append((int(pos[0]), int(pos[-1]) + 1))
        spans.append(out)
    return spans


def empg_advantages(
    advantages: torch.Tensor,
    entropies: torch.Tensor,
    segments: torch.Tensor,
    k: float = 1.0,
    k_f: float = 1.0,
    zeta: float = 0.1,
    eps: float = 1e-6,
) -> tuple[torch.Tensor, int]:
    """EMPG on steps: A_hat_s = g(H_s) A + zeta f(H_{s+1}), broadcast to the step's tokens; (B, T) and #steps.

    H_s = mean token entropy of step s; H_hat = batch min-max normalised H_s; g = exp(-k H_hat) / mean(exp(-k H_hat))
    over all steps of the batch; f = exp(-k_f H_hat of the *next* step of the same rollout), 0 for a last step.
    ``advantages`` is (B,) or (B, T); padding (segment -1) gets 0.

    >>> H = torch.tensor([[0.0, 0.0, 1.0, 1.0]])
    >>> seg = torch.tensor([[0, 0, 1, 1]])
    >>> A, n = empg_advantages(torch.tensor([1.0]), H, seg)
    >>> [round(x, 4) for x in A[0].tolist()], n
    ([1.4989, 1.4989, 0.5379, 0.5379], 2)
    """
    B, T = entropies.shape
    valid = segments >= 0
    A_tok = advantages.unsqueeze(1).expand(B, T) if advantages.dim() == 1 else advantages
    out = torch.zeros(B, T, dtype=torch.float32)
    if not valid.any():
        return out, 0
    key = torch.arange(B).unsqueeze(1) * (T + 1) + segments.clamp(min=0)
    uniq, inv = torch.unique(key[valid], return_inverse=True)  # sorted: by rollout, then step
    H = entropies.detach().double()[valid]
    n = uniq.numel()
    sums = torch.zeros(n, dtype=torch.float64).index_add_(0, inv, H)
    counts = torch.zeros(n, dtype=torch.float64).index_add_(0, inv, torch.ones_like(H))
    H_s = sums / counts
    H_hat = (H_s - H_s.min()) / (H_s.max() - H_s.min() + eps)
    g = torch.exp(-k * H_hat)
    g = g / g.mean()
    row = uniq // (T + 1)
    has_next = torch.zeros(n, dtype=torch.bool)
    has_next[:-1] = row[1:] == row[:-1]
    next_H = torch.cat([H_hat[1:], H_hat.new_zeros(1)])
    f = torch.where(has_next, torch.exp(-k_f * next_H), torch.zeros_like(next_H))
    out[valid] = (g[inv] * A_tok[valid].double() + zeta * f[inv]).float()
    return out, n


@register
class EMPG(AdvantageTransform):
    """EMPG: Entropy-Modulated Policy Gradients (Wang, Liu, Fu et al., ByteDance Seed, arXiv 2509.09265, ICLR 2026;
    project-page pseudocode), card 8.

    Per step s: H_s = mean token entropy; H_hat_s = (H_s - min H)/(max H - min H + eps) over all steps of the
    batch; g = exp(-k H_hat_s) / mean_batch exp(-k H_hat) (mean 1: confident steps amplified, uncertain ones
    attenuated, and for A < 0 confident errors penalised harder); f = exp(-k_f H_hat_{s+1}) (future clarity, 0 for a
    rollout's last step); A_hat_s = g A + zeta f, broadcast to the step's tokens -> (B, T). Defaults k = k_f = 1,
    zeta = 0.1 (the pseudocode's signature). Entropies are those of the sampled completions (signal ``entropy``).

    Steps (decision; GRPO completions have no turn structure): a step ends at each occurrence of one of
    ``delimiters`` (strings: default newline, ". " style sentence ends via ".", and ``</think>``), which the trainer
    turns into token-id sequences by calling ``bind_tokenizer(tokenizer)`` once at setup (``delimiter_ids`` gives
    id sequences directly instead). If neither is available, or ``delimiters`` is empty, each completion is cut
    into ``num_segments`` equal chunks. BPE caveat: a delimiter is matched by its standalone encoding, so a merge
    such as ".\\n" into one token hides it; list such merged forms explicitly.

    With tools (decision): the steps are the agent turns, the paper's own unit (one step per assistant message).
    When ``rollouts.tool_log`` is set or ``rollouts.mask`` has a gap inside a completion (mask 0 before a later 1:
    TRL's ``tool_mask`` marks tool-result tokens 0), a step is a maximal run of the model's own tokens and the
    delimiters are not used. Tool-result tokens belong to no step and get advantage 0 (they are not the policy's
    actions; TRL's loss masks them too). A rollout that made no call is one step (g only, no f bonus).
    [UNCONFIRMED in the card: a final batch zero-mean normalisation of A_hat] not applied: the pseudocode was cut
    off there, and zeta f is a deliberate positive bonus that re-centring would cancel.
    """

    name = "empg"
    needs = frozenset({"entropy"})

    def __init__(
        self,
        k: float = 1.0,
        k_f: float = 1.0,
        zeta: float = 0.1,
        delimiters: Any = ("\n", ".", "</think>"),
        delimiter_ids: Any = None,
        num_segments: int = 4,
    ):
        if num_segments < 1:
            raise ValueError(f"num_segments must be >= 1, got {num_segments}")
        if isinstance(delimiters, str):
            raise ValueError(f"delimiters must be a list of strings, got the string {delimiters!r}")
        self.k, self.k_f, self.zeta = float(k), float(k_f), float(zeta)
        self.delimiters = [str(d) for d in delimiters if str(d)]
        self.delimiter_ids: list[list[int]] | None = None
        if delimiter_ids is not None:
            self.delimiter_ids = [[int(t) for t in (d if isinstance(d, (list, tuple)) else [d])] for d in delimiter_ids]
            self.delimiter_ids = [d for d in self.delimiter_ids if d]
        self.num_segments = int(num_segments)
        self._metrics: dict[str, float] = {}

    def bind_tokenizer(self, tokenizer: Any) -> None:
        """Turn ``delimiters`` into token-id sequences (unless ``delimiter_ids`` was given)."""
        if self.delimiter_ids is not None or not self.delimiters:
            return
        ids = [list(tokenizer.encode(d, add_special_tokens=False)) for d in self.delimiters]
        self.delimiter_ids = [d for d in ids if d]

    def __call__(self, advantages: torch.Tensor, rollouts: Rollouts, rewards: torch.Tensor) -> torch.Tensor:
        if rollouts.entropies is None:
            raise ValueError("advantage.empg needs per-token entropies (signal 'entropy'); rollouts.entropies is None")
        H = rollouts.entropies
        mask = rollouts.mask
        if mask is None:
            mask = torch.arange(H.shape[1]).unsqueeze(0) < rollouts.lengths.unsqueeze(1)
        m = mask.bool().long()
        turns = rollouts.tool_log is not None or bool((m.diff(dim=1) > 0).any())  # a 0 -> 1 step: tokens resume
        seg = segment_index(rollouts.completion_ids, mask, self.delimiter_ids, self.num_segments, turns=turns)
        out, n_steps = empg_advantages(advantages, H, seg, self.k, self.k_f, self.zeta)
        B = max(1, H.shape[0])
        self._metrics = {"steps_per_rollout": n_steps / B, "turn_steps": float(turns)}
        return out.to(advantages.dtype)

    def metrics(self) -> dict[str, float]:
        return dict(self._metrics)

