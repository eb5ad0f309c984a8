"""Lp-Reg (card 13c), STEER (card 14) and GTPO conflict tokens (card G2-4) against transcriptions of their authors'
functions, run on hand-made inputs, and through TRL's own ``GRPOTrainer._compute_loss`` (trl 1.16, run unbound on a
stand-in trainer that serves fixed log-probs, as ``tests/test_shaping_kl_cov_trl.py`` does): what the project
computes is TRL's loss on the rewritten advantages plus the term's added loss.

References (transcribed below, pure torch, distributed and logging parts left out):
* Lp-Reg: CarlanLark/Lp-Reg-dev ``verl/trainer/ppo/core_algos.py::compute_policy_loss_lp_reg``, ``kl_penalty``;
  ``verl/workers/actor/dp_actor.py::apply_min_p`` (hard min-p).
* STEER: zz-haooo/STEER ``verl/trainer/ppo/core_algos.py::compute_token_weights``,
  ``compute_policy_loss_with_entropy`` (dual-clip PPO, token-mean).
* GTPO: winstonsmith1897/GTPO ``gtpo/gtpo_training.py::build_conflict_mask``, ``gtpo_compute_loss``, the entropy
  shaping of ``UnslothEfficientGTPO.forward`` (ENT_THRESHOLD 0.7, ENT_SCALE 0.1, W_RAW 2).
"""

from __future__ import annotations

import logging
import types
from collections import defaultdict

import pytest
import torch

from workbench.shaping import build_terms
from workbench.shaping.loss_batch import LossBatch
from workbench.shaping.regularizer_token import (
    STEER,
    ConflictTokenGTPO,
    LpReg,
    gtpo_weights,
    min_p_proxy_logps,
)

grpo_trainer = pytest.importorskip("trl.trainer.grpo_trainer")


class OneProcess:
    num_processes = 1
    sync_gradients = True

    def gather(self, x):
        return x

    def reduce(self, x, reduction="sum"):
        return x


def trl_loss(logps, old_logps, advantages, mask, loss_type="dapo", epsilon=0.2, epsilon_high=0.28):
    """TRL's own loss (one process, no accumulation, no KL to a reference model) for (B, T) advantages."""
    B, T = logps.shape
    trainer = types.SimpleNamespace(
        _get_per_token_logps_and_entropies=lambda *args, **kwargs: (logps, torch.zeros_like(logps), None),
        aux_loss_enabled=False, top_entropy_quantile=1.0, off_policy_mask_threshold=None,
        importance_sampling_level="token", beta=0.0, loss_type=loss_type, epsilon_low=epsilon,
        epsilon_high=epsilon_high, args=types.SimpleNamespace(delta=None, steps_per_generation=1), use_vllm=False,
        model=types.SimpleNamespace(training=True), current_gradient_accumulation_steps=1, accelerator=OneProcess(),
        _entropy_bonus_enabled=False, _metrics=defaultdict(lambda: defaultdict(list)),
    )
    inputs = {
        "prompt_ids": torch.zeros(B, 1, dtype=torch.long), "prompt_mask": torch.ones(B, 1, dtype=torch.long),
        "completion_ids": torch.zeros(B, T, dtype=torch.long), "completion_mask": mask.long(),
        "advantages": advantages, "old_per_token_logps": old_logps, "num_items_in_batch": mask.sum(),
    }
    return grpo_trainer.GRPOTrainer._compute_loss(trainer, None, inputs)


def project_loss(term, logps, old_logps, advantages, mask, loss_type="dapo", **fields):
    """What ShapingMixin computes for one micro-batch: token hook -> TRL's loss on its advantages -> + term.loss."""
    batch = LossBatch.of(logps, old_logps, advantages, mask.float(), **fields)
    batch.advantages = term.token_advantages(batch)
    loss = trl_loss(logps, old_logps, batch.advantages.detach(), mask, loss_type)
    extra = term.loss(batch)
    return loss if extra is None else loss + extra


def token_mean(x, mask):
    return (x * mask).sum() / mask.sum()


def verl_kl_penalty(logprob, ref_logprob, kind):
    if kind == "kl":
        return torch.clamp(logprob - ref_logprob, min=-10, max=10)
    kl = ref_logprob - logprob
    return torch.clamp(torch.exp(kl) - kl - 1, min=-10, max=10)


# ----------------------------------------------------------------------------------------------- Lp-Reg


def apply_min_p_reference(logits, min_p):
    probs = torch.softmax(logits.detach(), dim=-1)
    invalid = ~(probs >= min_p * probs.amax(dim=-1, keepdim=True))
    out = logits.detach().clone()
    out[invalid] = -1e4
    return out


def lp_reg_reference(old_log_prob, log_prob, tgt_log_prob, advantages, response_mask, neg_k=0.01, pos_k=0.0,
                     coef=1.0, kl_type="low_var_kl", clip_low=0.2, clip_high=0.28):
    """compute_policy_loss_lp_reg, token-mean; returns (loss, number of regularised tokens)."""
    ratio = torch.exp(log_prob - old_log_prob)
    pg_losses = torch.maximum(-advantages * ratio, -advantages * ratio.clamp(1 - clip_low, 1 + clip_high))
    valid_idx = (response_mask > 0).reshape(-1).nonzero(as_tuple=True)[0]
    _, seq_len = advantages.shape
    adv_flat, lp_flat = advantages.reshape(-1), log_prob.reshape(-1)
    pos_indices = valid_idx[adv_flat[valid_idx] > 0]
    neg_indices = valid_idx[adv_flat[valid_idx] < 0]
    count = [0]

    def apply(target_flat_idx, tgt):
        b, s = target_flat_idx // seq_len, target_flat_idx % seq_len
        keep = log_prob[b, s].detach() < tgt[b, s]
        b, s = b[keep], s[keep]
        if len(b) == 0:
            return
        count[0] += len(b)
        pg_losses[b, s] = -advantages[b, s] * ratio[b, s] + coef * verl_kl_penalty(log_prob[b, s], tgt[b, s], kl_type)

    for indices, frac in ((pos_indices, pos_k), (neg_indices, neg_k)):
        if len(indices) > 0:
            k = max(1, int(len(indices) * frac))
            if k > 1:
                with torch.no_grad():
                    _, idx = lp_flat[indices].topk(k=k, largest=False)
                apply(indices[idx], tgt_log_prob)
    return token_mean(pg_losses, response_mask), count[0]


MIN_P = 0.05


def lp_inputs(B=8, T=50, V=11, seed=0, neg_rows=4):
    g = torch.Generator().manual_seed(seed)
    logits = (torch.randn(B, T, V, generator=g, dtype=torch.float64) * 2).requires_grad_(True)
    # sampled from the policy, as rollouts are: rare tokens are rare
    ids = torch.multinomial(torch.softmax(logits.detach(), -1).reshape(-1, V), 1, generator=g).reshape(B, T)
    mask = torch.ones(B, T)
    A = torch.tensor([-1.0] * neg_rows + [0.5] * (B - neg_rows)).unsqueeze(1).expand(B, T).double()
    return logits, ids, mask, A


def logps_of(logits, ids):
    return torch.log_softmax(logits, dim=-1).gather(-1, ids.unsqueeze(-1)).squeeze(-1)


def test_min_p_proxy_matches_the_reference_filter():
    logits, ids, _, _ = lp_inputs()
    ref = logps_of(apply_min_p_reference(logits, MIN_P), ids)
    ours = min_p_proxy_logps(logits, ids, MIN_P)
    assert torch.allclose(ours.double(), ref, atol=1e-5)
    assert (ours < -1e3).any() and (ours > -1e3).any()  # some sampled tokens filtered out, some kept


@pytest.mark.parametrize("neg_fraction, kl_type", [(0.01, "low_var_kl"), (0.1, "low_var_kl"), (0.1, "kl")])
def test_lp_reg_matches_the_reference_on_policy(neg_fraction, kl_type):
    logits, ids, mask, A = lp_inputs()
    term = LpReg(min_p=MIN_P, neg_fraction=neg_fraction, kl_type=kl_type)
    lp = logps_of(logits, ids)
    ours = project_loss(term, lp, lp.detach(), A[:, 0], mask, logits=logits, completion_ids=ids)
    (g_ours,) = torch.autograd.grad(ours, logits)
    lp2 = logps_of(logits, ids)
    tgt = logps_of(apply_min_p_reference(logits, MIN_P), ids)
    ref, n_ref = lp_reg_reference(lp2.detach(), lp2, tgt, A, mask, neg_k=neg_fraction, kl_type=kl_type)
    (g_ref,) = torch.autograd.grad(ref, logits)
    assert term.metrics()["regularized"] == n_ref
    assert term.metrics()["candidates"] == int(200 * neg_fraction)
    if neg_fraction == 0.1:
        assert n_ref > 0  # the comparison covers regularised tokens
    assert ours.item() == pytest.approx(ref.item(), abs=1e-6)
    assert torch.allclose(g_ours, g_ref, atol=1e-7)


def test_lp_reg_small_count_skip_is_exact_and_logged(caplog):
    logits, ids, mask, A = lp_inputs()
    lp = logps_of(logits, ids).detach()
    mask199 = mask.clone()
    mask199[0, 0] = 0.0  # 199 negative-advantage tokens
    term = LpReg(min_p=MIN_P, neg_fraction=0.01)
    with caplog.at_level(logging.WARNING, logger="workbench.shaping.regularizer_token"):
        term.loss(LossBatch.of(lp, lp, A, mask199, logits=logits, completion_ids=ids))
    m = term.metrics()
    assert m["neg_tokens"] == 199 and m["neg_skipped"] == 1.0 and m["candidates"] == 0 and m["penalty"] == 0.0
    assert "fewer than the 200" in caplog.text
    _, n_ref = lp_reg_reference(lp, lp, logps_of(apply_min_p_reference(logits, MIN_P), ids), A, mask199)
    assert n_ref == 0
    term.loss(LossBatch.of(lp, lp, A, mask, logits=logits, completion_ids=ids))
    assert term.metrics()["neg_tokens"] == 200 and term.metrics()["neg_skipped"] == 0.0
    assert term.metrics()["candidates"] == 2
    # min_candidates=1 acts on a CPU-sized batch
    small = LpReg(min_p=MIN_P, neg_fraction=0.01, min_candidates=1)
    small.loss(LossBatch.of(lp, lp, A, mask199, logits=logits, completion_ids=ids))
    assert small.metrics()["candidates"] == 1


# ----------------------------------------------------------------------------------------------- STEER


def steer_weights_reference(advantages, entropys, old_log_prob, log_prob, response_mask, wmin, wmax, linear):
    """compute_token_weights."""
    with torch.no_grad():
        x = torch.clamp(torch.exp(log_prob), min=1e-8, max=1.0 - 1e-8)
        f_x = x * (1 - x) * (torch.log(x) + entropys)
        old_prob = torch.clamp(torch.exp(old_log_prob), min=1e-8, max=1.0)
        metric = advantages / old_prob * f_x
        metric = torch.where(torch.isfinite(metric), metric, torch.zeros_like(metric)).abs()
        valid = response_mask.bool()
        vm = metric[valid]
        mn, mx = vm.min(), vm.max()
        w = torch.zeros_like(metric)
        if linear:
            if mx > mn:
                vw = wmax - (vm - mn) * (wmax - wmin) / (mx - mn)
            else:
                vw = torch.full_like(vm, (wmin + wmax) / 2)
            vw = vw.clamp(wmin, wmax)
        else:
            k = -torch.log(torch.tensor(wmin, dtype=metric.dtype)) / torch.maximum(mx, torch.tensor(0.02, dtype=metric.dtype))
            vw = torch.exp(-k * vm).clamp(wmin, 1.0)
        w[valid] = vw
        return w * response_mask


def steer_loss_reference(old_log_prob, log_prob, advantages, response_mask, entropys, wmin, wmax, linear,
                         clip_low=0.2, clip_high=0.28, clip_c=10.0):
    """compute_policy_loss_with_entropy (dual-clip PPO, token weights, token-mean)."""
    w = steer_weights_reference(advantages, entropys, old_log_prob, log_prob, response_mask, wmin, wmax, linear)
    ratio = torch.exp(torch.clamp(log_prob - old_log_prob, min=-20.0, max=20.0))
    l1 = -advantages * ratio
    clip1 = torch.maximum(l1, -advantages * torch.clamp(ratio, 1 - clip_low, 1 + clip_high))
    clip2 = torch.min(-advantages * clip_c, clip1)
    losses = torch.where(advantages < 0, clip2, clip1)
    return token_mean(losses * w, response_mask), w


def steer_inputs(seed=0, B=6, T=7):
    g = torch.Generator().manual_seed(seed)
    lp = (-torch.rand(B, T, generator=g, dtype=torch.float64) * 3).requires_grad_(True)
    old = lp.detach() + torch.randn(B, T, generator=g, dtype=torch.float64) * 0.2  # some ratios leave the clip range
    H = torch.rand(B, T, generator=g, dtype=torch.float64) * 2
    mask = torch.ones(B, T)
    mask[0, 5:] = 0
    mask[3, 2:] = 0
    A = torch.tensor([1.0, -0.5, 0.25, -1.0, 0.75, -0.25], dtype=torch.float64)
    return lp, old, H, mask, A


@pytest.mark.parametrize("mode, w_min, w_max", [("linear", 0.8, 1.2), ("exp", 0.8, 1.0), ("linear", 0.95, 1.05)])
@pytest.mark.parametrize("off_policy", [False, True])
def test_steer_matches_the_reference(mode, w_min, w_max, off_policy):
    lp, old, H, mask, A = steer_inputs()
    if not off_policy:
        old = lp.detach().clone()
    term = STEER(mode=mode, w_min=w_min, w_max=w_max)
    ours = project_loss(term, lp, old, A, mask, entropies=H)
    (g_ours,) = torch.autograd.grad(ours, lp)
    ref, w = steer_loss_reference(old, lp, A.unsqueeze(1).expand_as(lp), mask, H, w_min, w_max, mode == "linear")
    (g_ref,) = torch.autograd.grad(ref, lp)
    # the weights are computed in float32 (the reference: in the inputs' dtype, float64 here)
    assert ours.item() == pytest.approx(ref.item(), abs=1e-6)
    assert torch.allclose(g_ours, g_ref, atol=1e-7)
    valid = mask.bool()
    assert term.metrics()["weight_min"] == pytest.approx(float(w[valid].min()), abs=1e-6)
    assert term.metrics()["weight_max"] == pytest.approx(float(w[valid].max()), abs=1e-6)
    if mode == "linear":
        assert float(w[valid].min()) == pytest.approx(w_min) and float(w[valid].max()) == pytest.approx(w_max)


def test_steer_equal_omega_gives_the_midpoint():
    B, T = 2, 3
    lp = torch.full((B, T), -1.0, dtype=torch.float64)
    A = torch.ones(B, dtype=torch.float64)
    out = STEER().token_advantages(LossBatch.of(lp, lp, A, torch.ones(B, T), torch.full((B, T), 0.5)))
    assert torch.allclose(out, torch.ones(B, T, dtype=torch.float64))  # (0.8 + 1.2) / 2


# ----------------------------------------------------------------------------------------------- GTPO

PAD = 0  # the test's pad id (the reference hard-codes Llama-3's 128004)


def build_conflict_mask_reference(ids, mask, pos_flags, neg_flags, vocab_size, w_raw=2.0):
    """build_conflict_mask, debug prints left out (``mask`` long, as TRL's completion mask)."""
    mask = mask.long()
    G, L = ids.shape
    active_idx = (pos_flags | neg_flags).nonzero(as_tuple=True)[0]
    if active_idx.numel() == 0:
        return mask.float(), torch.zeros_like(mask, dtype=torch.float), torch.zeros(G, dtype=torch.long)
    ids_use, mask_use = ids[active_idx], mask[active_idx]
    pos_use, neg_use = pos_flags[active_idx], neg_flags[active_idx]
    step_idx = torch.arange(L).unsqueeze(0)
    keys = (step_idx * vocab_size + ids_use).view(-1)
    rpt_pos, rpt_neg = pos_use.repeat_interleave(L), neg_use.repeat_interleave(L)
    freq_pos = torch.bincount(keys[rpt_pos], minlength=vocab_size * L).clamp_max(1)
    freq_neg = torch.bincount(keys[rpt_neg], minlength=vocab_size * L).clamp_max(1)
    conflict_raw = (freq_pos.bool() & freq_neg.bool())[keys].view(-1, L)
    valid_mask = ids_use != PAD
    conflict_fwd = torch.cumprod(conflict_raw.to(torch.int), dim=1).bool() & valid_mask
    w_fwd = torch.where(conflict_fwd, torch.tensor(w_raw), torch.ones(()))
    delta_fwd = torch.where(~conflict_fwd, 1.0, torch.where(pos_use.unsqueeze(1), w_fwd, 0.0)) * mask_use
    seq_len = mask_use.sum(-1)
    pad_len = L - seq_len
    ids_rev = ids_use.flip(-1).gather(1, (step_idx + pad_len.unsqueeze(1)) % L)
    step_rev = torch.arange(L).flip(0).unsqueeze(0)
    keys_rev = (step_rev * vocab_size + ids_rev).view(-1)
    freq_pos_r = torch.bincount(keys_rev[rpt_pos], minlength=vocab_size * L).clamp_max(1)
    freq_neg_r = torch.bincount(keys_rev[rpt_neg], minlength=vocab_size * L).clamp_max(1)
    conflict_raw_rev = (freq_pos_r.bool() & freq_neg_r.bool())[keys_rev].view(-1, L)
    conflict_rev = torch.cumprod(conflict_raw_rev.to(torch.int), dim=1).bool() & valid_mask
    w_rev = torch.where(conflict_rev, torch.tensor(w_raw), torch.ones(()))
    delta_bw_rev = torch.where(~conflict_rev, 1.0, torch.where(pos_use.unsqueeze(1), w_rev, 0.0))
    delta_bw = delta_bw_rev.gather(1, (step_idx - pad_len.unsqueeze(1)) % L).flip(-1) * mask_use
    total_conflict = (conflict_fwd | conflict_rev) & mask_use.bool()
    n_use = total_conflict.sum(-1).long().clamp_min(1)
    delta = mask.float().clone()
    n = torch.zeros(G, dtype=torch.long)
    delta[active_idx] = delta_fwd * delta_bw
    n[active_idx] = n_use
    return delta, n


def gtpo_loss_reference(logits, ids, mask, adv, vocab_size, thr=0.7, scale=0.1):
    """UnslothEfficientGTPO.forward for one group: per-completion entropy (compute_completion_stats), conflict
    masks, entropy shaping, then gtpo_compute_loss per completion, **summed** over completions."""
    probs = torch.softmax(logits.detach(), dim=-1)
    ent_tok = -(probs * torch.log(probs.clamp_min(1e-6))).sum(-1)
    ent = (ent_tok * mask).sum(-1) / mask.sum(-1).clamp(min=1.0)
    delta, n = build_conflict_mask_reference(ids, mask, adv > 0, adv < 0, vocab_size)
    adv2 = torch.where(ent <= thr, adv - scale * ent, torch.zeros_like(adv))
    new_logp = torch.log_softmax(logits, dim=-1).gather(-1, ids.unsqueeze(-1)).squeeze(-1)
    ratio = torch.exp(new_logp - new_logp.detach())
    total = 0.0
    for i in range(ids.shape[0]):
        n_tok = mask[i].sum().clamp(min=1.0)
        loss_disp = (-(ratio[i] * adv2[i] * delta[i]) * mask[i]).sum() / n_tok
        total = total + (loss_disp / n[i].clamp(min=1))
    return total, delta, n


def gtpo_group(V=12):
    """One group of 5: shared openings [5, 6], shared endings [.., 4, 2] (right-aligned), a zero-advantage row."""
    ids = torch.tensor([
        [5, 6, 7, 8, 4, 2, PAD],   # +: opening 5 6 (and 7 with row 2), ending 4 2
        [5, 6, 9, 3, 4, 2, PAD],   # +: opening 5 6; from the end every token matches a negative row
        [5, 6, 7, 1, 4, 2, PAD],   # -: opening 5 6 7, ending 4 2
        [5, 10, 11, 9, 3, 2, 2],   # -: opening 5 only; ending 2 (its 3 2 vs 4 2) -> run of 1 from the end
        [5, 6, 7, 8, 4, 2, PAD],   # 0: takes no part
    ])
    mask = (ids != PAD).float()
    adv = torch.tensor([1.0, 0.5, -1.0, -0.5, 0.0], dtype=torch.float64)
    g = torch.Generator().manual_seed(0)
    # peaked logits on the sampled tokens (low entropy) for rows 0-2 and 4, flat ones for row 3 (filtered)
    logits = torch.randn(5, 7, V, generator=g, dtype=torch.float64) * 0.5
    peak = torch.nn.functional.one_hot(ids, V).double() * 6.0
    peak[3] = 0.0
    return ids, mask, adv, (logits + peak).requires_grad_(True)


def test_gtpo_conflict_mask_matches_the_reference():
    ids, mask, adv, _ = gtpo_group()
    delta, n = gtpo_weights(ids, mask, adv, 2.0)
    d_ref, n_ref = build_conflict_mask_reference(ids, mask, adv > 0, adv < 0, 12)
    assert torch.equal(delta, d_ref.float()) and torch.equal(n, n_ref)
    # row 0: forward run 5 6 7 (3 tokens, 7 shared with row 2), backward run 4 2 (2): max(3, 2) = 3, not 5;
    # row 1: forward 5 6 (2), backward the whole row (2 4 | 3 9 from row 3 | 6 5 from row 2, right-aligned): 6
    assert n.tolist() == [3, 6, 3, 1, 0]
    assert delta[0].tolist() == [2, 2, 2, 1, 2, 2, 0] and delta[2].tolist() == [0, 0, 0, 1, 0, 0, 0]


def test_gtpo_matches_the_reference_through_trl(monkeypatch):
    ids, mask, adv, logits = gtpo_group()
    # two groups, rows shuffled the way TRL shuffles them: the rollout index carries the layout
    ids2, mask2, adv2 = torch.cat([ids, ids.flip(0)]), torch.cat([mask, mask.flip(0)]), torch.cat([adv, -adv.flip(0)])
    base = logits.detach().clone()
    logits2 = torch.cat([base, base.flip(0)]).requires_grad_(True)
    perm = torch.tensor([7, 0, 3, 9, 1, 5, 2, 8, 4, 6])
    index = torch.arange(10)[perm]
    term = ConflictTokenGTPO()
    assert term.trl_args() == {"loss_type": "grpo"}
    lg = logits2[perm]
    lp = torch.log_softmax(lg, dim=-1).gather(-1, ids2[perm].unsqueeze(-1)).squeeze(-1)
    logp_all = torch.log_softmax(lg.detach(), dim=-1)
    H = -(logp_all.exp() * logp_all).sum(-1)
    ours = project_loss(term, lp, lp.detach(), adv2[perm], mask2[perm], loss_type="grpo", entropies=H,
                        completion_ids=ids2[perm], rollout_index=index, group_size=5)
    (g_ours,) = torch.autograd.grad(ours, logits2)
    ref = sum(gtpo_loss_reference(logits2[g * 5:(g + 1) * 5], ids2[g * 5:(g + 1) * 5], mask2[g * 5:(g + 1) * 5],
                                  adv2[g * 5:(g + 1) * 5], 12)[0] for g in range(2))
    (g_ref,) = torch.autograd.grad(ref, logits2)
    # the reference sums over completions, the project averages: a factor of the 10 completions of the call
    assert torch.allclose(g_ours * 10, g_ref, atol=1e-5)
    assert ours.item() * 10 == pytest.approx(ref.item(), abs=1e-5)
    assert term.metrics()["filtered"] == pytest.approx(2 / 10)  # row 3 of each group is over the threshold
    assert g_ref.abs().sum() > 0


def test_gtpo_needs_whole_groups():
    ids, mask, adv, _ = gtpo_group()
    lp = torch.zeros(4, 7)
    batch = LossBatch.of(lp, lp, adv[:4], mask[:4], torch.zeros(4, 7), completion_ids=ids[:4],
                         rollout_index=torch.tensor([0, 1, 2, 3]), group_size=5)
    with pytest.raises(ValueError, match="whole in one loss call"):
        ConflictTokenGTPO().token_advantages(batch)


def test_the_terms_build_from_config_and_reject_bad_options():
    from workbench.config import ConfigError

    names = ["lp_reg", "steer", "conflict_token_gtpo"]
    terms = build_terms("regularizer", {n: {} for n in names})
    assert [t.name for t in terms] == names and terms[0].fields == frozenset({"logits"})
    with pytest.raises(ConfigError, match="mode='cubic'; valid choices: linear, exp"):
        build_terms("regularizer", {"steer": {"mode": "cubic"}})
    with pytest.raises(ConfigError, match="kl_type='k2'; valid choices: low_var_kl, kl"):
        build_terms("regularizer", {"lp_reg": {"kl_type": "k2"}})
