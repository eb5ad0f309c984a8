"""Regularizers: TRL option names, Clip-Cov / KL-Cov selection and gradients, SIREN masks, anchor and gradients."""

import importlib.util
import json
import math
import re
from pathlib import Path

import pytest
import torch

from workbench.shaping.loss_batch import LossBatch

from workbench.shaping.regularizer_entropy import (
    SIREN,
    AdaptiveEntropy,
    ClipCov,
    EntropyBonus,
    ForkingTokens,
    KLCov,
    peak_entropy_mask,
    token_covariance,
    top_cov_mask,
    top_p_entropy,
)


def grpo_config_fields() -> set[str]:
    """GRPOConfig's field names, read from the installed source (importing trl takes seconds)."""
    spec = importlib.util.find_spec("trl")
    path = Path(next(iter(spec.submodule_search_locations))) / "trainer" / "grpo_config.py"
    return set(re.findall(r"^    (\w+): [^=\n]+= field\(", path.read_text(), flags=re.M))


def test_trl_native_terms_use_real_grpo_config_fields():
    fields = grpo_config_fields()
    assert {"entropy_coef", "top_entropy_quantile", "use_adaptive_entropy"} <= fields
    for term in (EntropyBonus(), AdaptiveEntropy(), ForkingTokens()):
        assert set(term.trl_args()) <= fields, term.name
        assert not term.has_loss and not term.has_token_hook
    assert EntropyBonus(coef=0.01).trl_args() == {"entropy_coef": 0.01}
    assert ForkingTokens().trl_args() == {"top_entropy_quantile": 0.2}
    assert AdaptiveEntropy(target=0.5).trl_args()["entropy_target"] == 0.5
    with pytest.raises(ValueError):
        ForkingTokens(rho=1.5)


# ----------------------------------------------------------------------------------------------- batch


def batch():
    """Three sequences (one padded). Advantages are per sequence; logps vary per token."""
    A = torch.tensor([[2.0, 2.0, 2.0, 2.0], [-2.0, -2.0, -2.0, -2.0], [0.0, 0.0, 0.0, 0.0]])
    logps = torch.tensor([[-0.5, -1.0, -3.5, -1.5], [-0.5, -4.0, -1.5, -1.0], [-2.0, -1.5, -9.0, -9.0]])
    mask = torch.tensor([[1, 1, 1, 1], [1, 1, 1, 1], [1, 1, 0, 0]])
    return A, logps, mask


def test_token_covariance_spans_all_sequences():
    A, logps, mask = batch()
    cov = token_covariance(A, logps, mask)
    valid = mask.bool()
    a, lp = A[valid].double(), logps[valid].double()
    assert cov.tolist() == pytest.approx(((a - a.mean()) * (lp - lp.mean())).tolist())
    # one sequence alone: constant advantage, covariance identically 0 (card 6 caveat)
    assert token_covariance(A[:1], logps[:1], mask[:1]).abs().max() == 0


def test_clip_cov_selects_candidates_only():
    A, logps, mask = batch()
    cov = token_covariance(A, logps, mask)
    candidates = ((cov > 1) & (cov < 5)).sum().item()
    assert candidates >= 2
    term = ClipCov(ratio=1.0)  # cut every candidate: deterministic
    out = term.token_advantages(LossBatch.of(logps, logps, A, mask))
    zeroed = (out == 0) & (A != 0) & mask.bool()
    assert zeroed.sum().item() == candidates == term.metrics()["clipped_tokens"]
    selected_cov = token_covariance(A, logps, mask)[zeroed[mask.bool()]]
    assert ((selected_cov > 1) & (selected_cov < 5)).all()


def test_clip_cov_count_rule_and_seed():
    A, logps, mask = batch()
    # ratio 2e-4 of 10 tokens floors to 0; min_count=1 still cuts one, min_count=0 cuts none
    one = ClipCov(seed=3).token_advantages(LossBatch.of(logps, logps, A, mask))
    assert ((one == 0) & (A != 0)).sum().item() == 1
    none = ClipCov(min_count=0).token_advantages(LossBatch.of(logps, logps, A, mask))
    assert torch.equal(none, A)
    again = ClipCov(seed=3).token_advantages(LossBatch.of(logps, logps, A, mask))
    assert torch.equal(one, again)


def test_clip_cov_generator_state_round_trips_through_json():
    A, logps, mask = batch()
    term = ClipCov(seed=1)
    term.token_advantages(LossBatch.of(logps, logps, A, mask))
    state = json.loads(json.dumps(term.state_dict()))
    resumed = ClipCov(seed=99)
    resumed.load_state_dict(state)
    assert torch.equal(resumed.token_advantages(LossBatch.of(logps, logps, A, mask)), term.token_advantages(LossBatch.of(logps, logps, A, mask)))


def test_clip_cov_gradient_is_zero_exactly_at_selected_tokens():
    A, logps, mask = batch()
    lp = logps.clone().requires_grad_(True)
    term = ClipCov(ratio=1.0)
    A2 = term.token_advantages(LossBatch.of(lp.detach(), lp.detach(), A, mask))
    (-(A2 * lp * mask).sum()).backward()
    selected = (A2 == 0) & (A != 0)
    assert selected.any()
    assert (lp.grad[selected] == 0).all()
    assert (lp.grad[(A != 0) & ~selected & mask.bool()] != 0).all()


def test_clip_cov_empty_mask():
    A, logps, mask = batch()
    out = ClipCov().token_advantages(LossBatch.of(logps, logps, A, torch.zeros_like(mask)))
    assert torch.equal(out, A)


# ----------------------------------------------------------------------------------------------- KL-Cov


def test_top_cov_mask_k_is_a_percentage():
    A, logps, mask = batch()
    assert top_cov_mask(A, logps, mask, 0.2).sum() == 1  # max(1, floor(10 * 0.002))
    assert top_cov_mask(A, logps, mask, 20.0).sum() == 2  # floor(10 * 0.2)
    cov = token_covariance(A, logps, mask)
    top = top_cov_mask(A, logps, mask, 20.0)[mask.bool()]
    assert set(cov[top].tolist()) == set(torch.topk(cov, 2).values.tolist())


def test_kl_cov_on_policy_penalty_and_gradient_vanish():
    A, logps, mask = batch()
    lp = logps.clone().requires_grad_(True)
    loss = KLCov(k_percent=50.0).loss(LossBatch.of(lp, lp.detach(), A, mask, None))  # TRL's old_logps when on-policy
    loss.backward()
    assert loss.item() == 0.0
    assert (lp.grad == 0).all()  # d|x|/dx at 0 is 0 in torch: no effect on-policy


def test_kl_cov_value_and_gradient_off_policy():
    A, logps, mask = batch()
    lp = logps.clone().requires_grad_(True)
    old = logps - 0.5  # the policy has moved since sampling (num_iterations > 1)
    term = KLCov(k_percent=20.0, beta=2.0)
    loss = term.loss(LossBatch.of(lp, old, A, mask, None))
    selected = top_cov_mask(A, logps, mask, 20.0)
    n_valid = mask.sum().item()
    assert loss.item() == pytest.approx(2.0 * 0.5 * selected.sum().item() / n_valid)
    loss.backward()
    assert lp.grad[selected].tolist() == pytest.approx([2.0 / n_valid] * int(selected.sum()))
    assert (lp.grad[~selected] == 0).all()
    assert term.metrics()["selected_tokens"] == 2


def test_kl_cov_empty_mask_is_zero():
    A, logps, mask = batch()
    lp = logps.clone().requires_grad_(True)
    loss = KLCov().loss(LossBatch.of(lp, logps - 1.0, A, torch.zeros_like(mask), None))
    assert loss.item() == 0.0 and math.isfinite(loss.item())


# ----------------------------------------------------------------------------------------------- SIREN


def test_top_p_entropy_hand_computed_and_gradient():
    probs = torch.tensor([[0.6, 0.3, 0.1], [0.5, 0.25, 0.25]])
    logits = probs.log().requires_grad_(True)
    H = top_p_entropy(logits, p=0.8, chunk_size=1)
    # row 0 nucleus {0.6, 0.3} -> (2/3, 1/3); row 1 nucleus {0.5, 0.25, 0.25} (0.75 < 0.8 before the third)
    h0 = -(2 / 3 * math.log(2 / 3) + 1 / 3 * math.log(1 / 3))
    h1 = -(0.5 * math.log(0.5) + 2 * 0.25 * math.log(0.25))
    assert H.tolist() == pytest.approx([h0, h1], abs=1e-5)
    H.sum().backward()
    assert torch.isfinite(logits.grad).all() and logits.grad.abs().sum() > 0
    full = top_p_entropy(probs.log(), p=1.0)
    assert full[0].item() == pytest.approx(-sum(p * math.log(p) for p in (0.6, 0.3, 0.1)), abs=1e-5)
    assert top_p_entropy(probs.log(), p=0.0).tolist() == [0.0, 0.0]
    assert top_p_entropy(torch.randn(2, 3, 50), p=0.8, k=5).shape == (2, 3)


def test_peak_entropy_mask_per_sequence():
    H = torch.tensor([[0.1, 0.9, 0.5, 0.3, 0.7], [5.0, 1.0, 2.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0, 0.0]])
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0], [0, 0, 0, 0, 0]])
    sel = peak_entropy_mask(H, mask, 0.5)
    # medians 0.5 and 2.0: strictly above them only
    assert sel.int().tolist() == [[0, 1, 0, 0, 1], [1, 0, 0, 0, 0], [0, 0, 0, 0, 0]]


def siren_reference(H, mask, q, anchor, coef):
    """SIREN's loss as the reference computes it (Linn3a/siren dp_actor.py mask_by_quantile + core_algos.py agg_loss
    "seq-mean-token-mean" at fa59a8d): bound = nanquantile over the valid tokens, keep H > bound, per-sequence mean
    over the kept tokens with 0 for a sequence that keeps none, mean over all sequences; coef * (H_sel - anchor)^2.
    The reference's padded entropies are 0 (verl's pad_input), so none passes the bound; here padding is masked."""
    Hm = H.masked_fill(~mask.bool(), float("nan"))
    bound = torch.nanquantile(Hm, q, dim=-1, keepdim=True)
    keep = ((H > bound) & mask.bool()).float()
    n = keep.sum(-1)
    per_seq = torch.zeros(H.shape[0])
    per_seq[n > 0] = (H * keep).sum(-1)[n > 0] / n[n > 0]
    h_sel = per_seq.mean()
    return h_sel, coef * (h_sel - anchor) ** 2


def test_siren_matches_the_reference_on_constant_and_short_sequences():
    H = torch.tensor([[0.2, 0.2, 0.2, 0.2], [1.5, 0.0, 0.0, 0.0], [0.1, 0.9, 0.5, 0.3], [1.0, 3.0, 0.0, 0.0]])
    mask = torch.tensor([[1, 1, 1, 1], [1, 0, 0, 0], [1, 1, 1, 1], [1, 1, 0, 0]])
    sel = peak_entropy_mask(H, mask, 0.8)
    # constant entropy and a single token select nothing (nothing is strictly above its own quantile);
    # row 2: bound 0.5 + 0.4 * 0.4 = 0.66 -> {0.9}; row 3: bound 1 + 0.8 * 2 = 2.6 -> {3.0}
    assert sel.int().tolist() == [[0, 0, 0, 0], [0, 0, 0, 0], [0, 1, 0, 0], [0, 1, 0, 0]]
    h_ref, loss_ref = siren_reference(H, mask, 0.8, anchor=0.5, coef=1.0)
    assert h_ref.item() == pytest.approx((0 + 0 + 0.9 + 3.0) / 4)  # 0.975; `>=` and skipping gave 1.4
    Hg = H.clone().requires_grad_(True)
    term = SIREN(coef=1.0, quantile=0.8, top_p=1.0)
    term.load_state_dict({"anchor": 0.5})
    loss = term.loss(LossBatch.of(None, None, None, mask, Hg))
    assert loss.item() == pytest.approx(loss_ref.item()) == pytest.approx(0.475**2)
    assert term.metrics()["selected_entropy"] == pytest.approx(0.975)
    loss.backward()
    d = 2 * 0.475 / 4  # dL/dH_sel / number of sequences; one token selected per peaked row
    assert Hg.grad.tolist() == [pytest.approx(r) for r in [[0.0] * 4, [0.0] * 4, [0, d, 0, 0], [0, d, 0, 0]]]


def test_siren_without_any_peak_token_is_a_constant_once_anchored():
    H = torch.full((2, 3), 0.7, requires_grad=True)  # constant entropy everywhere: no peak token
    mask = torch.ones(2, 3)
    term = SIREN(coef=2.0, top_p=1.0)
    assert term.loss(LossBatch.of(None, None, None, mask, H)) is None and term.anchor is None  # no anchor from such a batch
    term.load_state_dict({"anchor": 0.5})
    loss = term.loss(LossBatch.of(None, None, None, mask, H))
    _, ref = siren_reference(H.detach(), mask, 0.8, anchor=0.5, coef=2.0)
    assert loss.item() == pytest.approx(ref.item()) == pytest.approx(2.0 * 0.25)  # H_sel = 0
    loss.backward()
    assert (H.grad == 0).all()


def test_siren_anchor_on_first_call_then_fixed_and_saved():
    H = torch.tensor([[1.0, 3.0, 2.0, 0.0]])
    mask = torch.tensor([[1, 1, 1, 1]])
    term = SIREN(coef=1.0, quantile=0.5, top_p=1.0)
    first = term.loss(LossBatch.of(None, None, None, mask, H.clone().requires_grad_(True)))
    assert first.item() == 0.0 and term.state_dict() == {"anchor": 2.5}  # mean of {3, 2}
    later = term.loss(LossBatch.of(None, None, None, mask, (H + 1).requires_grad_(True)))
    assert later.item() == pytest.approx(1.0)  # (3.5 - 2.5)^2
    resumed = SIREN(top_p=1.0)
    resumed.load_state_dict(json.loads(json.dumps(term.state_dict())))
    assert resumed.anchor == 2.5


def test_siren_gradient_only_through_selected_tokens():
    H = torch.tensor([[1.0, 3.0, 2.0, 0.0], [4.0, 4.0, 9.0, 9.0]], requires_grad=True)
    mask = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0]])
    term = SIREN(coef=0.5, quantile=0.5, top_p=1.0)
    term.load_state_dict({"anchor": 1.0})
    loss = term.loss(LossBatch.of(None, None, None, mask, H))
    # selected: row 0 {3, 2} (mean 2.5), row 1 none (valid {4, 4}: nothing above 4) and counts 0 -> H_sel = 1.25
    assert loss.item() == pytest.approx(0.5 * 0.25**2)
    assert loss.item() == pytest.approx(siren_reference(H.detach(), mask, 0.5, 1.0, 0.5)[1].item())
    loss.backward()
    d = 2 * 0.5 * 0.25 / 2  # dL/dH_sel / number of sequences
    expected = [[0.0, d / 2, d / 2, 0.0], [0.0, 0.0, 0.0, 0.0]]
    assert H.grad.tolist() == [pytest.approx(row) for row in expected]


def test_siren_empty_mask_returns_none():
    term = SIREN(top_p=1.0)
    assert term.loss(LossBatch.of(None, None, None, torch.zeros(2, 3), torch.ones(2, 3))) is None
    assert term.anchor is None
