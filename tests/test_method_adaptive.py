"""HAPO-heterogeneous (card 16), COPO (card G2-9) and EPO (card 9) against small pure-torch transcriptions of the
authors' functions on hand-made inputs:

* HAPO: starriver030515/HAPO ``verl/trainer/ppo/core_algos.py`` (``compute_entropy_h``, ``ada_clip``,
  ``ada_advantage``, ``compute_policy_loss`` with dual clip and token-mean, ``compute_hapo_outcome_advantage``);
* COPO: hijih/copo-code ``verl/trainer/ppo/core_algos.py`` (``compute_score_global``,
  ``compute_grpo_outcome_advantage_with_global``, ``compute_policy_loss_with_global``, ``agg_loss``);
* EPO: WujiangXu/EPO ``verl/workers/actor/dp_actor.py`` (``generate_entropy_penalty`` token mode, the policy-loss
  assembly ``pg_loss - (H - P * smooth) * coef``).

The workbench hands TRL rewritten advantages, so what must match is the gradient of TRL's surrogate (written out
in `trl_surrogate`, trl 1.16 ``_compute_loss``) with the gradient of the authors' loss.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict

import pytest
import torch

from workbench.shaping.advantage_adaptive import HeteroHAPOTokenAdvantage
from workbench.shaping.advantage_consistency import COPO_MODES, CopoConsistency, answer_entropy_bits
from workbench.shaping.loss_batch import LossBatch
from workbench.shaping.regularizer_adaptive import NO_TRL_CLIP, HeteroEntropyHAPO, entropy_score
from workbench.shaping.regularizer_agent import EPOEntropy, epoch_weight, turn_index
from workbench.rollouts import Rollouts


def trl_surrogate(logps, old, A, mask, eps_low, eps_high, loss_type="dapo"):
    """TRL 1.16's clipped surrogate for loss types dapo / bnpo (token mean) and grpo (sequence mean of token means)."""
    coef_1 = torch.exp(logps - old)
    coef_2 = torch.clamp(coef_1, 1 - eps_low, 1 + eps_high)
    per_token = -torch.min(coef_1 * A, coef_2 * A)
    if loss_type == "grpo":
        return ((per_token * mask).sum(-1) / mask.sum(-1).clamp(min=1.0)).mean()
    return (per_token * mask).sum() / mask.sum().clamp(min=1.0)


def grad_of(loss_fn, logps):
    x = logps.detach().clone().requires_grad_(True)
    loss_fn(x).backward()
    return x.grad


# =============================================================================================== HAPO references


def hapo_entropy_h_ref(entropy, mask, pivot, fix_sign=False, eps=1e-8):
    """compute_entropy_h as released; fix_sign=True divides the negative part by |min| (the paper's [-1, 1])."""
    mask = mask.bool()
    entropy = torch.log(entropy.clamp_min(eps))
    vals = entropy[mask].reshape(-1)
    idx = round(pivot * (vals.shape[0] - 1))  # torch_quantile(..., interpolation="nearest")
    median = torch.kthvalue(vals, idx + 1, 0).values.nan_to_num(0.0)
    h = entropy - median
    N = mask.sum().clamp_min(1.0)
    std = (h.pow(2).masked_fill(~mask, 0.0).sum() / N).clamp_min(eps).sqrt()
    h = h / std
    pos_max = h.masked_fill(~(mask & (h > 0)), 0.0).max().clamp_min(eps)
    neg_min = h.masked_fill(~(mask & (h < 0)), 0.0).min().clamp_max(-eps)
    scale_neg = 1.0 / (neg_min.abs() if fix_sign else neg_min)
    return torch.where(h > 0, h * (1.0 / pos_max), torch.where(h <= 0, h * scale_neg, torch.zeros_like(h)))


def hapo_policy_loss_ref(old, logps, A, mask, entropy, pivot=0.8, clip_low=0.2, clip_high=0.2, c=10.0, alpha=1.0,
                         beta=1.0, fix_sign=False):
    """compute_policy_loss with adaptive_clip and adaptive_advantage on, dual clip, token-mean."""
    ratio = torch.exp(logps - old)
    with torch.no_grad():
        h_hat = hapo_entropy_h_ref(entropy, mask, pivot, fix_sign)
        lo = torch.full_like(h_hat, clip_low)
        hi = torch.full_like(h_hat, clip_high)
        lo_ent, hi_ent = lo * (1 - h_hat * alpha), hi * (1 + h_hat * alpha)
        lo[h_hat <= 0] = lo_ent[h_hat <= 0]
        hi[h_hat > 0] = hi_ent[h_hat > 0]
        A_ent = A * (1 + beta * h_hat)
        band = (ratio > 1.0 - lo / 2) & (ratio < 1.0 + hi / 2)
        A = torch.where(h_hat > 0, torch.where(band, A, A_ent), torch.where(band, A_ent, A))
    l1 = -A * ratio
    l2 = -A * torch.clamp(ratio, 1.0 - lo, 1.0 + hi)
    clip1 = torch.maximum(l1, l2)
    clip2 = torch.min(-A * c, clip1)
    losses = torch.where(A < 0, clip2, clip1)
    return (losses * mask).sum() / mask.sum()


def hapo_outcome_advantage_ref(scores, lengths, index, grpo, eps=1e-6):
    """compute_hapo_outcome_advantage, per rollout (the per-token value is constant on the mask)."""
    B = len(scores)
    out = torch.zeros(B)
    groups = defaultdict(list)
    for i in range(B):
        groups[index[i]].append(i)
    for rows in groups.values():
        vals = torch.cat([torch.full((int(lengths[i]),), float(scores[i])) for i in rows])
        mean, std = vals.mean(), vals.std(unbiased=False)
        normed = (scores[rows] - mean) / (std + eps)
        out[rows] = grpo[rows] if torch.any(normed.abs() >= 5) else normed
    return out


def verl_grpo(scores, G, eps=1e-6):
    s = scores.view(-1, G)
    return ((s - s.mean(1, keepdim=True)) / (s.std(1, keepdim=True) + eps)).reshape(-1)


def hapo_inputs(seed=0):
    g = torch.Generator().manual_seed(seed)
    B, T = 4, 9
    mask = torch.ones(B, T)
    mask[1, 6:] = 0
    mask[3, 4:] = 0
    entropy = torch.rand(B, T, generator=g) * 2.5 + 1e-3
    old = -torch.rand(B, T, generator=g) * 2
    # ratios across the whole range: inside the half band, between half band and clip, beyond both clips, and
    # beyond the dual-clip bound c = 10
    log_r = torch.tensor([-0.6, -0.3, -0.12, -0.05, 0.0, 0.05, 0.12, 0.3, 0.6])
    log_r = torch.stack([log_r.roll(i) for i in range(B)])
    log_r[2, 0] = 2.5  # ratio 12 > c
    logps = old + log_r
    A = torch.tensor([1.3, -0.7, -1.1, 0.4]).unsqueeze(1).expand(B, T).clone()
    return logps, old, A, mask, entropy


# =============================================================================================== HAPO tests


@pytest.mark.parametrize("pivot", [0.8, 0.5, 0.0, 1.0])
def test_entropy_score_matches_the_authors(pivot):
    _, _, _, mask, H = hapo_inputs()
    released = entropy_score(H, mask, pivot, "released")
    assert torch.allclose(released, hapo_entropy_h_ref(H, mask, pivot).float(), atol=1e-6)
    ours = entropy_score(H, mask, pivot, "abs")
    assert torch.allclose(ours, hapo_entropy_h_ref(H, mask, pivot, fix_sign=True).float(), atol=1e-6)
    valid = mask.bool()
    assert ours[valid].min() >= -1 - 1e-6 and ours[valid].max() <= 1 + 1e-6
    assert (released[valid] >= 0).all()  # the released sign: no token scores as low-entropy


def test_entropy_score_marks_the_top_fifth_as_high_entropy():
    H = torch.linspace(0.1, 3.0, 100).unsqueeze(0)
    h = entropy_score(H, torch.ones(1, 100), 0.8)
    assert int((h > 0).sum()) == 20  # sorted index round(0.8 * 99) = 79 is the pivot: 20 tokens above it


@pytest.mark.parametrize("negative_scale", ["abs", "released"])
@pytest.mark.parametrize("loss_type", ["dapo", "bnpo"])
def test_hapo_gradient_through_trl_equals_the_authors_loss(negative_scale, loss_type):
    logps, old, A, mask, H = hapo_inputs()
    term = HeteroEntropyHAPO(negative_scale=negative_scale)
    args = term.trl_args()
    assert args == {"epsilon": NO_TRL_CLIP, "epsilon_high": NO_TRL_CLIP}
    A_eff = term.token_advantages(LossBatch.of(logps, old, A, mask, H))
    ours = grad_of(lambda x: trl_surrogate(x, old, A_eff, mask, args["epsilon"], args["epsilon_high"], loss_type),
                   logps)
    ref = grad_of(lambda x: hapo_policy_loss_ref(old, x, A, mask, H, fix_sign=negative_scale == "abs"), logps)
    assert ref.abs().sum() > 0 and (ref == 0).sum() > (1 - mask).sum()  # some tokens clipped, some live
    assert torch.allclose(ours, ref, atol=1e-7), (ours - ref).abs().max()
    m = term.metrics()
    assert 0 < m["clipped_frac"] < 1 and m["eps_low_mean"] >= 0.2 and m["eps_high_mean"] >= 0.2


def test_hapo_on_policy_damps_low_entropy_tokens_only():
    logps, _, A, mask, H = hapo_inputs()
    term = HeteroEntropyHAPO()
    out = term.token_advantages(LossBatch.of(logps, logps.detach(), A, mask, H))  # ratio 1
    h = entropy_score(H, mask, 0.8)
    low = (h <= 0) & mask.bool()
    assert torch.allclose(out[low], (A * (1 + h))[low])
    assert torch.equal(out[(h > 0) & mask.bool()], A[(h > 0) & mask.bool()])
    assert (out[low].abs() <= A[low].abs() + 1e-7).all()


def test_hapo_options_are_checked():
    with pytest.raises(ValueError, match="negative_scale"):
        HeteroEntropyHAPO(negative_scale="neg")
    with pytest.raises(ValueError, match="clip_ratio_c"):
        HeteroEntropyHAPO(clip_ratio_c=1.0)


def rollouts_of(correct, lengths, G, answers=None):
    B = len(correct)
    return Rollouts(completions=["x"] * B, completion_ids=[[1] * int(n) for n in lengths],
                    lengths=torch.tensor(lengths), prompt_lengths=torch.full((B,), 3),
                    truncated=torch.zeros(B, dtype=torch.bool), correct=torch.tensor(correct, dtype=torch.float32),
                    group_size=G, prompt_keys=[i // G for i in range(B)], max_completion_length=200,
                    answers=answers)


def test_hapo_token_advantage_matches_the_authors_with_its_fallback():
    G = 4
    scores = torch.tensor([1.0, 0, 0, 1, 1, 0, 0, 0, 0, 0, 0, 0])
    lengths = [3, 7, 2, 5, 1, 100, 120, 90, 4, 4, 4, 4]
    grpo = verl_grpo(scores, G)
    r = rollouts_of(scores.tolist(), lengths, G)
    term = HeteroHAPOTokenAdvantage()
    out = term(grpo, r, scores)
    ref = hapo_outcome_advantage_ref(scores, lengths, [i // G for i in range(12)], grpo)
    assert torch.allclose(out, ref, atol=1e-5), (out - ref).abs().max()
    assert torch.equal(out[4:8], grpo[4:8])  # the skewed group fell back (z of the short correct answer > 5)
    assert term.metrics()["fallback_frac"] == pytest.approx(4 / 12)
    assert not torch.allclose(out[:4], grpo[:4])  # token weighting changes the ordinary advantage


# =============================================================================================== COPO references


def copo_score_global_ref(local_reward, answers, reward_coef_flg):
    n = len(local_reward)
    lamda = (1 - 1 / n) / math.log2(n)
    counts = Counter(answers)
    probs = torch.tensor([c / n for c in counts.values()], dtype=torch.float32)
    probs = probs[probs > 0]
    entropy = -torch.sum(probs * torch.log2(probs + 1e-8))
    coef = (1 - lamda * entropy) if reward_coef_flg else 1
    return sum(local_reward) / n * coef, entropy


def copo_advantages_ref(scores, index, answers, reward_coef_flg=False, eps=1e-6):
    """compute_grpo_outcome_advantage_with_global (norm_adv_by_std_in_grpo=True): local, global, entropy, raw."""
    B = len(scores)
    id2score, id2ans = defaultdict(list), defaultdict(list)
    for i in range(B):
        id2score[index[i]].append(float(scores[i]))
        id2ans[index[i]].append(answers[i])
    id2g, id2H, id2mean, id2std = {}, {}, {}, {}
    for idx in id2score:
        id2g[idx], id2H[idx] = copo_score_global_ref(id2score[idx], id2ans[idx], reward_coef_flg)
        id2mean[idx] = torch.mean(torch.tensor(id2score[idx]))
        id2std[idx] = torch.std(torch.tensor([id2score[idx]]))
    g = torch.tensor([float(v) for v in id2g.values()])
    g_mean, g_std = g.mean(), g.std()
    local, glob, H = torch.zeros(B), torch.zeros(B), torch.zeros(B)
    for i in range(B):
        local[i] = (scores[i] - id2mean[index[i]]) / (id2std[index[i]] + eps)
        glob[i] = (float(id2g[index[i]]) - g_mean) / (g_std + eps)
        H[i] = id2H[index[i]]
    return local, glob, H, scores.clone()


def copo_loss_ref(local_reward, mode, old, logps, A, mask, A_glob, H, clip=0.2, c=3.0, b=1.0, k=5.0):
    """compute_policy_loss_with_global + agg_loss('seq-mean-token-mean'); the mode names with spaces."""
    ratio = torch.exp(logps - old)

    def dual_clip(adv):
        l1, l2 = -adv * ratio, -adv * torch.clamp(ratio, 1 - clip, 1 + clip)
        c1 = torch.maximum(l1, l2)
        return torch.where(adv < 0, torch.min(-adv * c, c1), c1)

    pg, gpg = dual_clip(A), dual_clip(A_glob)
    w = torch.sigmoid(k * (H - b))
    not_zero = (local_reward != 0).float().unsqueeze(1).expand(-1, A.shape[1])
    all_same = (A != 0).float()[:, 0]
    if mode == "no global":
        loss = pg
    elif mode == "soft with forced":
        w = w * all_same
        loss = gpg * (1 - w)[:, None] + pg * w[:, None]
    elif mode == "only zero":
        loss = gpg * (1 - not_zero) + pg * not_zero
    elif mode == "soft with zero":
        w = w.unsqueeze(1) * not_zero
        loss = gpg * (1 - w) + pg * w
    elif mode == "only forced":
        loss = gpg * (1 - all_same)[:, None] + pg * all_same[:, None]
    elif mode == "only soft":
        loss = gpg * (1 - w)[:, None] + pg * w[:, None]
    elif mode == "only global":
        loss = gpg
    else:
        raise TypeError(mode)
    return ((loss * mask).sum(-1) / mask.sum(-1)).mean()


def copo_inputs():
    G = 4
    scores = torch.tensor([1.0, 1, 1, 1, 1, 0, 0, 1, 1, 0, 0, 0, 1, 0, 1, 0])
    answers = ["7", "7", "7", "7", "5", "2", "3", "5", "1", "9", "4", "8", "6", "6", "6", "0"]
    B, T = len(scores), 5
    mask = torch.ones(B, T)
    mask[::3, 3:] = 0
    g = torch.Generator().manual_seed(4)
    old = -torch.rand(B, T, generator=g)
    return G, scores, answers, mask, old


# =============================================================================================== COPO tests


def test_answer_entropy_matches_the_authors():
    for answers in (["7"] * 4, ["5", "2", "3", "5"], ["1", "9", "4", "8"], [None, None, "3", "3"]):
        _, ref = copo_score_global_ref([0.0] * 4, answers, False)
        assert answer_entropy_bits(answers) == pytest.approx(float(ref), abs=1e-6)


@pytest.mark.parametrize("mode", COPO_MODES)
@pytest.mark.parametrize("reward_coef", [False, True])
def test_copo_gradient_on_policy_equals_the_authors_loss(mode, reward_coef):
    G, scores, answers, mask, old = copo_inputs()
    index = [i // G for i in range(len(scores))]
    local, glob, H, raw = copo_advantages_ref(scores, index, answers, reward_coef)
    r = rollouts_of(scores.tolist(), [5] * len(scores), G, answers)
    term = CopoConsistency(mode=mode, reward_coef=reward_coef)
    blended = term(local, r, scores)
    T = mask.shape[1]
    A_b = blended.unsqueeze(1).expand(-1, T)
    A_l, A_g = local.unsqueeze(1).expand(-1, T), glob.unsqueeze(1).expand(-1, T)
    logps = old.clone()  # on-policy: ratio 1
    ours = grad_of(lambda x: trl_surrogate(x, old, A_b, mask, 0.2, 0.2, "grpo"), logps)
    ref = grad_of(lambda x: copo_loss_ref(raw, mode.replace("_", " "), old, x, A_l, mask, A_g, H), logps)
    assert torch.allclose(ours, ref, atol=1e-6), (ours - ref).abs().max()
    assert glob[:4].abs().min() > 0  # the all-correct group gets a global advantage; its local one is 0
    assert set(term.metrics()) == {"answer_entropy", "local_weight", "global_adv_abs"}


def test_copo_off_policy_is_exact_where_local_and_global_agree_in_sign():
    G, scores, answers, mask, old = copo_inputs()
    index = [i // G for i in range(len(scores))]
    local, glob, H, raw = copo_advantages_ref(scores, index, answers)
    B, T = mask.shape
    g = torch.Generator().manual_seed(5)
    logps = old + (torch.rand(B, T, generator=g) - 0.5) * 1.2  # ratios 0.55 .. 1.8: many outside the clip
    blended = CopoConsistency()(local, rollouts_of(scores.tolist(), [5] * B, G, answers), scores)
    ours = grad_of(lambda x: trl_surrogate(x, old, blended.unsqueeze(1).expand(-1, T), mask, 0.2, 0.2, "grpo"), logps)
    ref = grad_of(lambda x: copo_loss_ref(raw, "soft with zero", old, x, local.unsqueeze(1).expand(-1, T), mask,
                                          glob.unsqueeze(1).expand(-1, T), H), logps)
    agree = (local * glob >= 0)
    assert agree.any() and (~agree).any()
    assert torch.allclose(ours[agree], ref[agree], atol=1e-6)
    # the documented difference: rows with opposite signs differ only where the ratio leaves the clip band
    ratio = torch.exp(logps - old)
    inside = (ratio >= 0.8) & (ratio <= 1.2)
    rows = (~agree).unsqueeze(1).expand(-1, T)
    assert torch.allclose(ours[rows & inside], ref[rows & inside], atol=1e-6)
    assert not torch.allclose(ours[rows & ~inside], ref[rows & ~inside], atol=1e-6)


def test_copo_mode_spellings_and_errors():
    assert CopoConsistency(mode="soft-with-zero").mode == CopoConsistency(mode="soft with zero").mode == "soft_with_zero"
    with pytest.raises(ValueError, match="choose from"):
        CopoConsistency(mode="soft")
    with pytest.raises(ValueError, match="answers"):
        CopoConsistency()(torch.zeros(4), rollouts_of([1, 0, 1, 0], [2] * 4, 2), torch.zeros(4))


# =============================================================================================== EPO references


def epo_penalty_ref(history, entropy, rollout_step, min_ratio, max_ratio, out_range_penalty):
    """generate_entropy_penalty, mask_mode='token'."""
    avg = torch.tensor([history[int(s)] for s in rollout_step], dtype=entropy.dtype).unsqueeze(-1).expand_as(entropy)
    within = (entropy > avg * min_ratio) & (entropy < avg * max_ratio)
    return torch.where(within, 0, out_range_penalty)


def epo_loss_ref(entropy, pen_mask, response_mask, coef, smooth):
    """The policy-loss assembly minus pg_loss: -(agg(H) - agg(P) * smooth) * coef, token-mean."""
    agg = lambda x: (x * response_mask).sum() / response_mask.sum()  # noqa: E731
    return -(agg(entropy) - agg(pen_mask) * smooth) * coef


def epo_batch(H, mask, step=0):
    B, T = H.shape
    return LossBatch.of(torch.zeros(B, T), torch.zeros(B, T), torch.zeros(B), mask, H, step=step)


# =============================================================================================== EPO tests


def test_epo_released_penalty_matches_the_authors_and_has_no_gradient():
    H = torch.tensor([[0.5, 1.0, 2.0, 0.9], [1.1, 0.2, 3.0, 1.0]])
    mask = torch.tensor([[1.0, 1, 1, 1], [1, 1, 1, 0]])
    term = EPOEntropy(penalty="released", entropy_coef=0.01, smooth_coef=1.0)
    term.load_state_dict({"past": {"0": [2.0, 2.0]}})  # two earlier steps with mean entropy 1.0 at turn 0
    x = H.clone().requires_grad_(True)
    loss = term.loss(epo_batch(x, mask))
    current = float((H * mask).sum() / mask.sum())
    hist = {0: (2.0 + current) / 3}  # this step's running mean joins the history, as the released trainer does
    pen = epo_penalty_ref(hist, H, [0, 0], 0.8, 1.2, 0.1)
    ref = epo_loss_ref(H, pen, mask, 0.01, 1.0)
    assert float(loss.detach()) == pytest.approx(float(ref), abs=1e-7)
    loss.backward()
    assert torch.allclose(x.grad, -0.01 * mask / mask.sum())  # only the entropy bonus moves the policy
    assert term.metrics()["out_of_band_frac"] == pytest.approx(float(((pen > 0).float() * mask).sum() / mask.sum()))


def test_epo_hinge_penalty_pulls_out_of_band_tokens_back():
    H = torch.tensor([[0.5, 1.0, 2.0, 0.9], [1.1, 0.2, 3.0, 1.0]])
    mask = torch.tensor([[1.0, 1, 1, 1], [1, 1, 1, 0]])
    term = EPOEntropy(entropy_coef=0.01, smooth_coef=1.0)
    term.load_state_dict({"past": {"0": [2.0, 2.0]}})
    x = H.clone().requires_grad_(True)
    loss = term.loss(epo_batch(x, mask))
    h = (2.0 + float((H * mask).sum() / mask.sum())) / 3
    lo, hi = 0.8 * h, 1.2 * h
    n = mask.sum()
    P = (torch.relu(H - hi) + torch.relu(lo - H)) * mask
    assert float(loss.detach()) == pytest.approx(float(-0.01 * ((H * mask).sum() / n - P.sum() / n)), abs=1e-7)
    loss.backward()
    expected = -0.01 / n * mask * (1 - ((H > hi).float() - (H < lo).float()))
    assert torch.allclose(x.grad, expected)
    assert (x.grad[H > hi] == 0).all()  # above the band: bonus and penalty cancel, no push up
    below = (H < lo) & mask.bool()
    assert below.any() and torch.allclose(x.grad[below], torch.full_like(x.grad[below], -0.02 / float(n)))  # doubled push up


def test_epo_history_is_per_turn_and_survives_checkpoints():
    mask = torch.tensor([[1.0, 1, 0, 0, 1, 1], [1, 1, 1, 1, 0, 0]])  # row 0: turn 0, tool result, turn 1
    assert turn_index(mask)[0].tolist()[:2] == [0, 0] and turn_index(mask)[0, 4:].tolist() == [1, 1]
    term = EPOEntropy()
    H = torch.tensor([[1.0, 1.0, 9.0, 9.0, 3.0, 3.0], [1.0, 1.0, 1.0, 1.0, 0.0, 0.0]])
    term.loss(epo_batch(H, mask, step=0))
    assert term.history() == pytest.approx({0: 1.0, 1: 3.0})  # tool-result tokens never count
    term.loss(epo_batch(H * 2, mask, step=1))  # a new step commits step 0
    assert term.history() == pytest.approx({0: 1.5, 1: 4.5})
    fresh = EPOEntropy()
    fresh.load_state_dict(term.state_dict())
    assert fresh.past == {0: [1.0, 1.0], 1: [3.0, 1.0]}  # step 0's means, one step each


def test_epo_start_turn_and_schedule():
    mask = torch.tensor([[1.0, 1, 0, 1, 1]])
    H = torch.tensor([[0.1, 5.0, 0.0, 0.1, 5.0]])
    only_late = EPOEntropy(smooth_start_turn=1)
    everywhere = EPOEntropy()
    a, b = only_late.loss(epo_batch(H, mask)), everywhere.loss(epo_batch(H, mask))
    assert only_late.metrics()["penalty"] < everywhere.metrics()["penalty"] and float(a) < float(b)
    assert epoch_weight(0, 150) == 1.0 and epoch_weight(75, 150) == pytest.approx(1 - 0.2 * (1 - math.exp(-2)))
    assert epoch_weight(150, 150) == pytest.approx(0.8 * math.exp(-3))
    scheduled = EPOEntropy(schedule_steps=10)
    scheduled.loss(epo_batch(H, mask, step=10))
    assert scheduled.metrics()["penalty"] == pytest.approx(everywhere.metrics()["penalty"] * 0.8 * math.exp(-3))
    with pytest.raises(ValueError, match="penalty"):
        EPOEntropy(penalty="soft")
