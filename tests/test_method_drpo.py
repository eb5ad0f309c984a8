"""DRPO's full loss and DisCO (card 2) against transcriptions of their authors' functions on hand-made inputs.

References (transcribed below, pure torch, the non-distributed branch):
* DRPO: Optimization-AI/DRPO ``verl/verl/trainer/ppo/core_algos.py::compute_policy_loss_drpo``;
* DisCO: Optimization-AI/DisCO ``verl/verl/trainer/ppo/core_algos.py::compute_policy_loss_disco_logL``.

Both return a loss whose negative term is a detached surrogate of value 1 (S / S.detach()) in place of the
log-sum-exp, so only the gradients equal the paper's objective: the tests compare gradients, and check the value
difference is exactly tau * sum_q (LSE_q - 1) / Q.
"""

from __future__ import annotations

import pytest
import torch
from test_method_token import trl_loss

from workbench.shaping import build_terms
from workbench.shaping.loss_batch import LossBatch
from workbench.shaping.regularizer_objective import DRPO, DisCO


def masked_mean(values, mask):
    return (values * mask).sum() / mask.sum()


def drpo_reference(old_log_prob, log_prob, eos_mask, uid, rewards, delta, beta, tau, Lambda, kl_type):
    """compute_policy_loss_drpo (Lambda given) / compute_policy_loss_disco_logL (Lambda None): (loss, ppo_kl)."""
    negative_approx_kl = log_prob - old_log_prob
    ratio = torch.exp(negative_approx_kl)
    if kl_type == "low_var_kl":
        ppo_kl = masked_mean(-negative_approx_kl + ratio - 1, eos_mask)
    else:
        ppo_kl = masked_mean(-negative_approx_kl, eos_mask)
    scores = (log_prob * eos_mask).sum(dim=1) / eos_mask.sum(dim=1)
    length_ratio = eos_mask.sum(dim=1) / eos_mask.size(-1)
    _, indices = uid.sort()
    nq = uid.unique().numel()
    nr = uid.size(0) // nq
    s = scores[indices].view(nq, nr)
    r = rewards[indices].view(nq, nr)
    lr = length_ratio[indices].view(nq, nr)
    pos, neg = r == 1, r == 0
    valid = (pos.sum(dim=1) != 0) & (neg.sum(dim=1) != 0)
    if valid.sum() > 0:
        s, lr, pos, neg = s[valid], lr[valid], pos[valid], neg[valid]
        neg_masked = (s / tau).masked_fill(~neg, float("-inf"))
        neg_max, _ = neg_masked.max(dim=-1, keepdim=True)
        neg_max = torch.where(neg_max == float("-inf"), torch.zeros_like(neg_max), neg_max)
        neg_exp = torch.exp(((s / tau) - neg_max.detach()) * neg) * neg
        neg_sum_exp = neg_exp.sum(dim=-1, keepdim=True)
        neg_lme = neg_sum_exp / (neg_sum_exp.detach() + torch.finfo(neg_sum_exp.dtype).eps)
        if Lambda is None:  # DisCO
            pg_losses = ((s - tau * neg_lme) * pos).sum(dim=1, keepdim=True) / pos.sum(dim=1, keepdim=True)
        else:
            weight = torch.exp((1 - lr) / Lambda)
            pg_losses = (weight * (s - tau * neg_lme) * pos).sum(dim=1, keepdim=True) / (weight * pos).sum(
                dim=1, keepdim=True)
        pg_loss = pg_losses.sum() / nq
    else:
        pg_loss = torch.tensor(0.0) * scores.mean()
    constraint = torch.maximum(beta * (ppo_kl - delta), torch.zeros_like(ppo_kl)).detach() * ppo_kl
    return -pg_loss + constraint, ppo_kl


G = 4
# group 0 mixed (2 correct / 2 wrong), 1 all correct (dropped), 2 mixed (1 / 3), 3 partial credit: no wrong (dropped)
REWARDS = torch.tensor([1, 0, 1, 0, 1, 1, 1, 1, 0, 0, 1, 0, 1, 0.5, 0.5, 0.5], dtype=torch.float64)
LENGTHS = [6, 3, 2, 5, 4, 4, 6, 1, 6, 2, 3, 5, 2, 2, 3, 6]


def inputs(seed=0, T=6, off_policy=0.0):
    g = torch.Generator().manual_seed(seed)
    B = len(LENGTHS)
    mask = torch.zeros(B, T, dtype=torch.float64)
    for i, n in enumerate(LENGTHS):
        mask[i, :n] = 1.0
    lp = (-torch.rand(B, T, generator=g, dtype=torch.float64) * 4).requires_grad_(True)
    old = lp.detach() + off_policy * (1.0 + torch.randn(B, T, generator=g, dtype=torch.float64))  # KL > 0 for k1 too
    return lp, old, mask


def ours(term, lp, old, mask, rollout_index=None):
    batch = LossBatch.of(lp, old, torch.zeros(lp.shape[0], dtype=lp.dtype), mask, group_size=G,
                         rollout_index=rollout_index, correct=REWARDS)
    if rollout_index is not None:
        batch.correct = REWARDS[rollout_index]
    batch.advantages = term.token_advantages(batch)
    return term.loss(batch), batch


def lse_gap(lp, mask, tau):
    """tau * sum_q (LSE_q(s / tau over the wrong rollouts) - 1) / Q: our value minus the reference's."""
    s = ((lp * mask).sum(1) / mask.sum(1)).detach().view(-1, G)
    r = REWARDS.view(-1, G)
    mixed = ((r == 1).any(1) & (r == 0).any(1)).nonzero().flatten()
    gap = sum(float(torch.logsumexp(s[q][r[q] == 0] / tau, 0)) - 1.0 for q in mixed)
    return tau * gap / s.shape[0]


@pytest.mark.parametrize("name", ["drpo", "disco"])
@pytest.mark.parametrize("kl_type, off_policy", [("kl", 0.0), ("kl", 0.05), ("low_var_kl", 0.05)])
def test_matches_the_reference_gradient(name, kl_type, off_policy):
    lp, old, mask = inputs(off_policy=off_policy)
    term = build_terms("regularizer", {name: {"kl_type": kl_type, **({"width": 6} if name == "drpo" else {})}})[0]
    loss, _ = ours(term, lp, old, mask)
    (g_ours,) = torch.autograd.grad(loss, lp)
    ref, kl = drpo_reference(old, lp, mask, torch.arange(16) // G, REWARDS, 1e-4, 1e3, 10.0,
                             0.1 if name == "drpo" else None, kl_type)
    (g_ref,) = torch.autograd.grad(ref, lp)
    assert torch.allclose(g_ours, g_ref, atol=1e-12, rtol=1e-9)
    assert loss.item() - ref.item() == pytest.approx(lse_gap(lp, mask, 10.0), abs=1e-9)
    m = term.metrics()
    assert m["groups"] == 4 and m["mixed_groups"] == 2
    assert m["constraint_active"] == float(kl.item() > 1e-4) == (1.0 if off_policy else 0.0)


def test_drpo_length_weight_is_against_the_budget_not_the_batch_width():
    """TRL pads to the longest completion of the batch, veRL to the budget: with width=16 our loss on the 6-wide
    batch equals the reference's on the same batch padded to 16, and differs from width 0 (= 6)."""
    lp, old, mask = inputs()
    loss, _ = ours(DRPO(width=16), lp, old, mask)
    (g_ours,) = torch.autograd.grad(loss, lp)
    lp16 = torch.nn.functional.pad(lp, (0, 10))
    mask16 = torch.nn.functional.pad(mask, (0, 10))
    ref, _ = drpo_reference(torch.nn.functional.pad(old, (0, 10)), lp16, mask16, torch.arange(16) // G, REWARDS,
                            1e-4, 1e3, 10.0, 0.1, "kl")
    (g_ref,) = torch.autograd.grad(ref, lp)
    assert torch.allclose(g_ours, g_ref, atol=1e-12, rtol=1e-9)
    loss6, _ = ours(DRPO(width=0), lp, old, mask)
    (g6,) = torch.autograd.grad(loss6, lp)
    assert not torch.allclose(g6, g_ours)
    term = DRPO()
    ours(term, lp, old, mask)
    assert term.metrics()["width"] == 6.0


def test_drpo_rows_shuffled_by_trl_give_the_same_gradient():
    lp, old, mask = inputs()
    perm = torch.randperm(16, generator=torch.Generator().manual_seed(1))
    loss, _ = ours(DRPO(width=6), lp, old, mask)
    (g,) = torch.autograd.grad(loss, lp)
    lp_p = lp.detach()[perm].clone().requires_grad_(True)
    loss_p, _ = ours(DRPO(width=6), lp_p, old[perm], mask[perm], rollout_index=perm)
    (g_p,) = torch.autograd.grad(loss_p, lp_p)
    assert loss_p.item() == pytest.approx(loss.item(), abs=1e-12)
    assert torch.allclose(g_p, g[perm], atol=1e-12)


def test_drpo_replaces_trls_surrogate():
    """The token hook zeroes the advantages, so TRL's own loss (its surrogate) is 0 with gradient 0 and the total
    gradient is DRPO's alone."""
    lp, old, mask = inputs(off_policy=0.05)
    A = torch.randn(16, dtype=torch.float64)
    batch = LossBatch.of(lp, old, A, mask, group_size=G, correct=REWARDS)
    batch.advantages = DRPO(width=6).token_advantages(batch)
    assert (batch.advantages == 0).all()
    surrogate = trl_loss(lp, old, batch.advantages, mask)
    (g,) = torch.autograd.grad(surrogate, lp)
    assert surrogate.item() == 0.0 and (g == 0).all()


def test_groups_must_be_whole_and_uniform_groups_still_count():
    lp, old, mask = inputs()
    with pytest.raises(ValueError, match="whole in one loss call"):
        DRPO().loss(LossBatch.of(lp[:6], old[:6], torch.zeros(6), mask[:6], group_size=G, correct=REWARDS[:6]))
    # dropping the two uniform groups from the call halves Q: the loss of the mixed groups doubles
    term = DisCO()
    full, _ = ours(term, lp, old, mask)
    keep = torch.tensor([0, 1, 2, 3, 8, 9, 10, 11])
    part = term.loss(LossBatch.of(lp[keep], old[keep], torch.zeros(8), mask[keep], group_size=G,
                                  correct=REWARDS[keep]))
    assert part.item() == pytest.approx(2 * full.item(), abs=1e-12)


def test_bad_options_name_the_key():
    from workbench.config import ConfigError

    with pytest.raises(ConfigError, match="kl_type='k3'; valid choices: kl, low_var_kl"):
        build_terms("regularizer", {"drpo": {"kl_type": "k3"}})
    with pytest.raises(ConfigError, match="unknown key 'regularizer.disco.lam'"):
        build_terms("regularizer", {"disco": {"lam": 0.1}})
