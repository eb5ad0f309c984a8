"""KL-Cov against TRL's own loss: what the project computes (TRL's clipped surrogate + our penalty) and how it differs
from the reference (PRIME-RL/Entropy-Mechanism-of-RL core_algos.py::compute_policy_loss_kl_cov, no clip anywhere).

TRL's ``GRPOTrainer._compute_loss`` (trl 1.16) runs unbound on a stand-in trainer that serves fixed log-probs, so the
test reads TRL's real surrogate rather than a copy of it; if TRL renames what it reads, this test fails loudly.
"""

from __future__ import annotations

import math
import types
from collections import defaultdict

import pytest
import torch

from workbench.shaping.regularizer_entropy import KLCov, top_cov_mask
from workbench.shaping.loss_batch import LossBatch

grpo_trainer = pytest.importorskip("trl.trainer.grpo_trainer")


class OneProcess:
    """The accelerator calls TRL's loss makes for its metrics, on one process."""

    num_processes = 1
    sync_gradients = True

    def gather(self, x):
        return x

    def reduce(self, x, reduction="sum"):
        return x


def trl_loss(logps, old_logps, advantages, mask, epsilon, epsilon_high):
    """TRL's loss for loss_type dapo, one process, no accumulation, no KL to a reference model."""
    B, T = logps.shape
    trainer = types.SimpleNamespace(
        _get_per_token_logps_and_entropies=lambda *args, **kwargs: (logps, torch.zeros_like(logps), None),
        aux_loss_enabled=False,
        top_entropy_quantile=1.0,
        off_policy_mask_threshold=None,
        importance_sampling_level="token",
        beta=0.0,
        loss_type="dapo",
        epsilon_low=epsilon,
        epsilon_high=epsilon_high,
        args=types.SimpleNamespace(delta=None, steps_per_generation=1),
        use_vllm=False,
        model=types.SimpleNamespace(training=True),
        current_gradient_accumulation_steps=1,
        accelerator=OneProcess(),
        _entropy_bonus_enabled=False,
        _metrics=defaultdict(lambda: defaultdict(list)),
    )
    inputs = {
        "prompt_ids": torch.zeros(B, 1, dtype=torch.long),
        "prompt_mask": torch.ones(B, 1, dtype=torch.long),
        "completion_ids": torch.zeros(B, T, dtype=torch.long),
        "completion_mask": mask.long(),
        "advantages": advantages,  # (B,): one advantage per sequence, as TRL stores them
        "old_per_token_logps": old_logps,
        "num_items_in_batch": mask.sum(),
    }
    return grpo_trainer.GRPOTrainer._compute_loss(trainer, None, inputs)


def project_loss(logps, old_logps, advantages, mask, k_percent, beta, epsilon=0.2, epsilon_high=0.28):
    """TRL's loss plus KLCov.loss, as ShapingMixin._compute_loss adds them (accumulation steps 1)."""
    A = advantages.unsqueeze(1).expand_as(logps)
    return trl_loss(logps, old_logps, advantages, mask, epsilon, epsilon_high) + KLCov(k_percent, beta).loss(
        LossBatch.of(logps, old_logps, A, mask.float(), None)
    )


def reference_loss(logps, old_logps, advantages, mask, k_percent, beta):
    """compute_policy_loss_kl_cov's semantics: -A r on every token (no clip), + beta |logp - old| on the top-k tokens
    by covariance (k = max(1, int(N k_percent / 100))), token-mean over the valid tokens."""
    A = advantages.unsqueeze(1).expand_as(logps)
    ratio = torch.exp(logps - old_logps)
    per_token = -A * ratio
    selected = top_cov_mask(A, logps, mask, k_percent)
    per_token = torch.where(selected, per_token + beta * (logps - old_logps).abs(), per_token)
    return (per_token * mask).sum() / mask.sum()


def case():
    old = torch.full((2, 2), -1.0)
    shift = torch.tensor([[0.5, 0.1], [0.1, -0.5]])  # the policy moved since sampling (num_iterations > 1)
    advantages = torch.tensor([1.0, -1.0])
    mask = torch.ones(2, 2)
    return old + shift, old, advantages, mask


def grad(loss_fn, logps, *args):
    lp = logps.clone().requires_grad_(True)
    loss = loss_fn(lp, *args)
    loss.backward()
    return loss.detach(), lp.grad


def test_selected_tokens_are_the_clipped_ones_in_this_case():
    logps, old, advantages, mask = case()
    A = advantages.unsqueeze(1).expand_as(logps)
    # cov = A (logp - mean logp) = [[0.45, 0.05], [-0.05, 0.55]]: the top 50% are (0, 0) and (1, 1)
    assert top_cov_mask(A, logps, mask, 50.0).tolist() == [[True, False], [False, True]]
    ratio = torch.exp(logps - old)
    # (0, 0): r = e^0.5 = 1.65 > 1.28 with A > 0; (1, 1): r = e^-0.5 = 0.61 < 0.8 with A < 0: both clipped by TRL
    assert ratio[0, 0] > 1.28 and ratio[1, 1] < 0.8 and 0.8 < ratio[0, 1] < 1.28 and 0.8 < ratio[1, 0] < 1.28


def test_project_keeps_trls_clip_on_every_token_reference_has_none():
    logps, old, advantages, mask = case()
    _, g_project = grad(project_loss, logps, old, advantages, mask, 50.0, 1.0)
    _, g_reference = grad(reference_loss, logps, old, advantages, mask, 50.0, 1.0)
    N, e = 4, math.exp
    # reference: d(-A r)/dlogp = -A r on every token, + beta sign(logp - old) on the selected ones; / N
    assert g_reference.tolist() == [
        pytest.approx([(-e(0.5) + 1) / N, -e(0.1) / N]),
        pytest.approx([e(0.1) / N, (e(-0.5) - 1) / N]),
    ]
    # project: the clipped tokens get no policy gradient from TRL, only the penalty's +-beta / N
    assert g_project.tolist() == [pytest.approx([1 / N, -e(0.1) / N]), pytest.approx([e(0.1) / N, -1 / N])]
    # unclipped tokens agree; the clipped (and here selected) ones differ
    assert g_project[0, 1].item() == pytest.approx(g_reference[0, 1].item())
    assert g_project[1, 0].item() == pytest.approx(g_reference[1, 0].item())
    assert g_project[0, 0].item() != pytest.approx(g_reference[0, 0].item())
    assert g_project[1, 1].item() != pytest.approx(g_reference[1, 1].item())


def test_widening_the_clip_reproduces_the_reference():
    logps, old, advantages, mask = case()
    wide = dict(epsilon=1.0, epsilon_high=1e9)  # the docstring's recipe: algo.epsilon=1.0 algo.epsilon_high=1e9
    loss_p, g_p = grad(lambda lp, *a: project_loss(lp, *a, **wide), logps, old, advantages, mask, 50.0, 1.0)
    loss_r, g_r = grad(reference_loss, logps, old, advantages, mask, 50.0, 1.0)
    assert loss_p.item() == pytest.approx(loss_r.item())
    assert torch.allclose(g_p, g_r)


def test_on_policy_both_are_plain_policy_gradient():
    logps, _, advantages, mask = case()
    # old = current (TRL's logps.detach() when num_iterations == 1): ratio 1, nothing clipped, and the penalty and
    # its gradient are 0 (d|x|/dx at 0 is 0 in torch)
    results = []
    for loss_fn in (project_loss, reference_loss):
        results.append(grad(lambda lp: loss_fn(lp, lp.detach(), advantages, mask, 50.0, 1.0), logps))
    (loss_p, g_p), (loss_r, g_r) = results
    assert loss_p.item() == pytest.approx(loss_r.item()) == pytest.approx(0.0)  # -(1 + 1 - 1 - 1) / 4
    assert torch.allclose(g_p, g_r)
    assert g_p.tolist() == [pytest.approx([-0.25, -0.25]), pytest.approx([0.25, 0.25])]
