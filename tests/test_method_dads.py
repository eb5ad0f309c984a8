"""DADS (card 15, `regularizer=[asym_dads_kl]`) against a transcription of View-R1's code.

Reference: Indolent-Kawhi/View-R1 `openrlhf/trainer/ray/ppo_actor.py` (`calculate_kl_weight`, the KL part of
`ActorPPOTrainer.training_step`) and `openrlhf/models/utils.py::compute_approx_kl` (k3), transcribed below.
"""

from __future__ import annotations

import math

import pytest
import torch

from workbench.config import ConfigError
from workbench.shaping.base import build_terms
from workbench.shaping.loss_batch import OPTIONAL_FIELDS, LossBatch
from workbench.shaping.regularizer_kl import AsymDadsKL, dads_weights, k3_kl


# ---------------------------------------------------------------- the authors' code, transcribed (reference only)
def ref_calculate_kl_weight(x):  # f(d) = 1 - e^(-e * (1 - d))
    if not 0.0 <= x <= 1.0:
        raise ValueError("value Error")
    if x == 0.0 or x == 1.0:
        return 1.0
    e = math.exp(1)
    weight = 1 - math.exp(-e * (1 - x))
    return weight


def ref_compute_approx_kl_k3(log_probs, log_probs_base):
    log_ratio = log_probs.float() - log_probs_base.float()
    log_ratio = -log_ratio
    log_ratio = log_ratio.exp() - 1 - log_ratio
    return log_ratio


def ref_masked_mean(tensor, mask, dim=None):
    return (tensor * mask).sum(axis=dim) / mask.sum(axis=dim)


def ref_dads_kl_loss(action_log_probs, base_action_log_probs, advantages, difficulties, action_mask):
    """The KL part of training_step with use_kl_loss and use_dads (advantages (B, T), difficulties (B,))."""
    KL_weights = torch.ones_like(difficulties, dtype=difficulties.dtype, device=difficulties.device)
    for idx, (advantage, difficulty) in enumerate(zip(advantages, difficulties)):
        if advantage[0] > 0:
            KL_weights[idx] = ref_calculate_kl_weight(difficulty.item())
    kl = ref_compute_approx_kl_k3(action_log_probs, base_action_log_probs)
    kl_mean = ref_masked_mean(kl, action_mask, dim=-1)
    kl_mean = kl_mean * KL_weights
    return kl_mean.mean()


def trl_grpo_kl_part(logps, ref_logps, mask, beta):
    """TRL 1.16 `_compute_loss`, loss_type=grpo, the beta * per_token_kl part only (the surrogate set aside)."""
    per_token_kl = torch.exp(ref_logps - logps) - (ref_logps - logps) - 1
    per_token_loss = beta * per_token_kl
    return ((per_token_loss * mask).sum(-1) / mask.sum(-1).clamp(min=1.0)).mean()


# ---------------------------------------------------------------- hand-made inputs
def _inputs(seed=0, B=6, T=5):
    g = torch.Generator().manual_seed(seed)
    logps = -torch.rand(B, T, generator=g, dtype=torch.float64) * 2
    ref = logps + 0.3 * torch.randn(B, T, generator=g, dtype=torch.float64)
    mask = torch.ones(B, T, dtype=torch.float64)
    mask[1, 3:] = 0
    mask[4, 1:] = 0
    adv = torch.tensor([1.2, -0.5, 0.7, 0.0, 2.0, 0.3], dtype=torch.float64)
    acc = torch.tensor([0.25, 0.25, 0.5, 0.5, 0.875, 1.0], dtype=torch.float64)  # the last: d = 0 -> weight 1
    return logps, ref, mask, adv, acc


def test_weights_match_reference_on_a_grid():
    accs = torch.tensor([0.0, 0.125, 0.25, 0.5, 0.75, 0.875, 1.0], dtype=torch.float64)
    for sign in (1.0, 0.0, -1.0):
        adv = torch.full_like(accs, sign)
        ours = dads_weights(adv, accs)
        ref = torch.tensor([ref_calculate_kl_weight(float(1 - a)) if sign > 0 else 1.0 for a in accs],
                           dtype=torch.float64)
        assert torch.allclose(ours, ref, atol=1e-12, rtol=0), (sign, ours, ref)
    # positive rows of mixed groups are down-weighted (hard prompts most), the rest are not
    w = dads_weights(torch.ones(3, dtype=torch.float64), torch.tensor([0.125, 0.875, 1.0], dtype=torch.float64))
    assert w[0] < w[1] < 1.0 and w[2] == 1.0


def test_k3_matches_reference_estimator():
    logps, ref, _, _, _ = _inputs()
    assert torch.allclose(k3_kl(logps, ref), ref_compute_approx_kl_k3(logps, ref).double(), atol=1e-6)


def _total_loss(term, logps, ref, mask, adv, acc):
    batch = LossBatch.of(logps, logps.detach(), adv, mask, ref_logps=ref, group_accuracy=acc)
    return trl_grpo_kl_part(logps, ref, mask, term.beta) + term.loss(batch), term.metrics()


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_trl_kl_plus_correction_is_the_authors_weighted_kl(seed):
    logps, ref, mask, adv, acc = _inputs(seed)
    term = AsymDadsKL(beta=0.04)
    p = logps.clone().requires_grad_(True)
    ours, metrics = _total_loss(term, p, ref, mask, adv, acc)
    ours.backward()
    q = logps.clone().requires_grad_(True)
    expected = term.beta * ref_dads_kl_loss(q, ref, adv.unsqueeze(1).expand_as(q), 1 - acc, mask)
    expected.backward()
    # the reference's k3 casts to float32 (`.float()`), hence the float32-sized tolerance
    assert float(ours.detach()) == pytest.approx(float(expected.detach()), rel=1e-6)
    assert torch.allclose(p.grad, q.grad, atol=1e-9, rtol=1e-5)
    # and it differs from TRL's uniform KL (the weights act)
    assert abs(float(trl_grpo_kl_part(logps, ref, mask, term.beta)) - float(expected)) > 1e-6
    assert metrics["weighted_kl"] == pytest.approx(float(expected) / term.beta, rel=1e-6)


def test_weighted_share_and_metrics():
    logps, ref, mask, adv, acc = _inputs()
    term = AsymDadsKL()
    term.loss(LossBatch.of(logps, logps, adv, mask, ref_logps=ref, group_accuracy=acc))
    m = term.metrics()
    # rows with A > 0 and 0 < d < 1: 0, 2, 4 (row 5 has accuracy 1)
    assert m["weighted"] == pytest.approx(3 / 6)
    w = dads_weights(adv, acc)
    assert m["weight_mean"] == pytest.approx(float(w.mean()))
    kl = (k3_kl(logps, ref) * mask).sum(1) / mask.sum(1)
    assert m["kl_mean"] == pytest.approx(float(kl.mean()))


def test_config_sets_trl_beta_and_loss_type_and_fields():
    (term,) = build_terms("regularizer", {"asym_dads_kl": {"beta": 0.01}})
    assert term.trl_args() == {"beta": 0.01, "loss_type": "grpo"}
    assert term.fields == {"ref_logps", "group_accuracy"} and term.fields <= set(OPTIONAL_FIELDS)
    with pytest.raises(ConfigError, match="beta must be > 0"):
        build_terms("regularizer", {"asym_dads_kl": {"beta": 0}})


def test_missing_fields_name_the_term():
    logps, ref, mask, adv, acc = _inputs()
    with pytest.raises(ValueError, match="asym_dads_kl needs the loss batch's 'ref_logps'"):
        AsymDadsKL().loss(LossBatch.of(logps, logps, adv, mask, group_accuracy=acc))
