"""View-R1 STCR (card 15), Stratified GRPO (card G2-5) and RiskPO (card G2-10) against transcriptions of their
authors' functions (Stratified GRPO released none: against a direct per-stratum computation), on hand-made inputs.

References (transcribed below, pure torch, logging and distributed parts left out):
* STCR: Indolent-Kawhi/View-R1 ``openrlhf/trainer/ppo_utils/experience_maker.py::compute_advantages_and_returns``,
  the ``group_norm`` branch with ``--use_stcr`` (float32, as there).
* RiskPO: RTkenny/RiskPO ``verl/trainer/ppo/core_algos.py::``
  ``compute_grpo_bundle_rvar_outcome_advantage_quantile_tracking`` (``use_mixing_risk_measure=True``, ``natural_baseline_adv=True``, ``norm_adv_by_std_in_grpo=True``) and the
  quantile tracker of ``verl/trainer/ppo/ray_trainer.py::fit`` (warm-up to the batch quantiles, then SGD on the
  pinball gradient over the 0.05..0.95 grid).
"""

from __future__ import annotations

import json
from collections import defaultdict

import pytest
import torch

from workbench.rollouts import Rollouts
from workbench.shaping import build_terms
from workbench.shaping.advantage_strata import stratified_advantages


def rollouts(correct, lengths, G, tool_calls=None):
    B = len(correct)
    return Rollouts(
        completions=["x"] * B, completion_ids=[[1] * int(n) for n in lengths],
        lengths=torch.tensor(lengths), prompt_lengths=torch.full((B,), 3), truncated=torch.zeros(B, dtype=torch.bool),
        correct=torch.tensor(correct, dtype=torch.float32), group_size=G, prompt_keys=[i // G for i in range(B)],
        max_completion_length=max(1, max(lengths)),
        tool_calls=None if tool_calls is None else torch.tensor(tool_calls, dtype=torch.float32),
    )


# ----------------------------------------------------------------------------------------------- STCR


def stcr_reference(rewards, complexitys, n, dtype=torch.float32):
    """View-R1's group_norm + STCR (transcribed): returns the z-scored rewards times the STCR weights."""
    rewards = rewards.to(dtype).reshape(-1, n)
    complexitys = complexitys.to(dtype).reshape(-1, n)
    pos_com = complexitys * rewards.trunc()
    pos_com_mean = pos_com.sum(-1, keepdim=True) / (rewards.trunc().sum(-1, keepdim=True) + 1e-9)
    neg_diffs = (complexitys - pos_com_mean) * (1 - rewards.trunc())
    neg_diff_weights = torch.where(neg_diffs > 0, 1 - 1.00001 ** (-neg_diffs), torch.tensor(0.0, dtype=dtype))
    for neg_diff_weight, reward in zip(neg_diff_weights, rewards):
        if reward.trunc().sum(-1) == 0:
            neg_diff_weight *= 0
    neg_diff_weights = neg_diff_weights + 1
    rewards = (rewards - rewards.mean(-1, keepdim=True)) / (rewards.std(-1, keepdim=True) + 1e-9)
    return rewards.reshape(-1), neg_diff_weights.reshape(-1)


def test_stcr_matches_view_r1():
    correct = [1, 0, 0, 1, 0, 0, 0, 0, 1, 1, 1, 1, 1, 0, 0, 0]
    lengths = [900, 3000, 500, 1100, 12000, 40, 700, 800, 100, 200, 300, 400, 2000, 2000, 1999, 9000]
    z, w = stcr_reference(torch.tensor(correct, dtype=torch.float32), torch.tensor(lengths), 4)
    (term,) = build_terms("advantage", {"asym_stcr": {}})
    out = term(z.double(), rollouts(correct, lengths, 4), torch.tensor(correct, dtype=torch.float32))
    ref = z.double() * w.double()
    # float32 base in the reference: (factor - 1) differs by ~1.3e-3 relative, the advantage by 4.4e-5 at most here
    assert (out - ref).abs().max() < 5e-5
    ours = out / z.double().where(z != 0, torch.ones_like(z.double())) - 1
    scaled = w > 1
    assert ((ours[scaled] - (w[scaled].double() - 1)).abs() / (w[scaled].double() - 1)).max() < 1.5e-3
    _, w64 = stcr_reference(torch.tensor(correct, dtype=torch.float64), torch.tensor(lengths), 4, torch.float64)
    assert torch.allclose(out, z.double() * w64, atol=1e-12, rtol=0)  # float64 reference: the same to rounding
    # the structure: group 2 (all wrong) and group 3 (all correct) keep factor 1; the long wrong answers grow
    assert torch.equal(out[4:8], z[4:8].double()) and torch.equal(out[8:12], z[8:12].double())
    assert out[1] < z[1] < 0 and out[2] == z[2] and out[15] < z[15]
    assert term.metrics()["factor_max"] > 1.0


def test_stcr_scales_positive_advantage_of_a_wrong_answer_and_token_level_advantages():
    (term,) = build_terms("advantage", {"asym_stcr": {"base": 1.1}})
    r = rollouts([1, 0], [2, 12], 2)
    out = term(torch.tensor([-0.5, 0.5]), r, torch.zeros(2))  # a wrong answer with a positive advantage (format)
    assert out.tolist() == pytest.approx([-0.5, 0.5 * (2 - 1.1 ** -10)])
    tok = term(torch.tensor([[1.0, 1.0], [2.0, 2.0]]), r, torch.zeros(2))
    assert tok[1].tolist() == pytest.approx([2 * (2 - 1.1 ** -10)] * 2) and tok[0].tolist() == [1.0, 1.0]


# ----------------------------------------------------------------------------------------------- Stratified GRPO


def san_direct(rewards, strata, G, eps=1e-4):
    out = []
    for g in range(len(rewards) // G):
        r, s = rewards[g * G : (g + 1) * G], strata[g * G : (g + 1) * G]
        for i in range(G):
            peers = torch.tensor([r[j] for j in range(G) if s[j] == s[i]], dtype=torch.float64)
            out.append(0.0 if len(peers) < 2 else float((r[i] - peers.mean()) / (peers.std() + eps)))
    return torch.tensor(out, dtype=torch.float64)


def test_stratified_grpo_blends_stratum_and_group_advantages():
    rewards = [1.0, 0.0, 1.0, 0.0, 1.0, 1.0, 0.5, 0.0, 0.0, 1.0, 1.0, 0.0]
    calls = [0, 0, 1, 1, 1, 2, 3, 3, 0, 0, 0, 1]
    G = 6
    R = torch.tensor(rewards)
    grp = R.view(-1, G)
    a_global = ((grp - grp.mean(1, keepdim=True)) / (grp.std(1, keepdim=True) + 1e-4)).reshape(-1)
    ref_san = san_direct(rewards, calls, G)
    assert torch.allclose(stratified_advantages(R.double(), torch.tensor(calls), G), ref_san, atol=1e-12)
    r = rollouts([1] * 12, [3] * 12, G, tool_calls=calls)
    for alpha in (0.0, 0.5, 1.0):
        (term,) = build_terms("advantage", {"stratified_grpo": {"alpha": alpha}})
        out = term(a_global.double(), r, R)
        assert torch.allclose(out, alpha * ref_san + (1 - alpha) * a_global.double(), atol=1e-6)
    assert term.metrics()["strata_per_group"] == pytest.approx((4 + 2) / 2)
    # one stratum per group: SAN is the group z-score itself
    one = rollouts([1] * 12, [3] * 12, G, tool_calls=[2] * 12)
    assert torch.allclose(term(a_global, one, R), a_global, atol=1e-6)


def test_stratified_grpo_needs_tool_calls_and_flat_advantages():
    (term,) = build_terms("advantage", {"stratified_grpo": {}})
    with pytest.raises(ValueError, match="tool_calls"):
        term(torch.zeros(2), rollouts([1, 0], [1, 1], 2), torch.zeros(2))
    with pytest.raises(ValueError, match=r"\(B,\) advantages"):
        term(torch.zeros(2, 3), rollouts([1, 0], [1, 1], 2, tool_calls=[0, 1]), torch.zeros(2))
    with pytest.raises(Exception, match="alpha"):
        build_terms("advantage", {"stratified_grpo": {"alpha": 1.5}})


# ----------------------------------------------------------------------------------------------- RiskPO

ALPHA_LIST = torch.tensor([0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.35, 0.4, 0.45, 0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8,
                           0.85, 0.9, 0.95])


def riskpo_reference(scores, index, bundle_uid, quantile_down, quantile_up, credit, q_track_down=None,
                     q_track_up=None, mode="track", w_mix=1.5, epsilon=1e-6):
    """compute_grpo_bundle_rvar_outcome_advantage_quantile_tracking, transcribed (mixed risk measure, natural
    baseline, std-normalised); returns (advantages (B,), {bundle: paper scores})."""
    scores = scores.clone()
    bundle_to_questions = defaultdict(set)
    bundle_to_question_responses = defaultdict(lambda: defaultdict(list))
    for i in range(len(scores)):
        bundle_to_questions[bundle_uid[i]].add(index[i])
        bundle_to_question_responses[bundle_uid[i]][index[i]].append((i, scores[i]))
    bundle_paper_scores, bundle_paper_combinations, question_stds, question_means = {}, {}, {}, {}
    for bundle_id, questions in bundle_to_questions.items():
        paper_scores, paper_combinations, lists = [], [], []
        for q_id in sorted(questions):
            responses = bundle_to_question_responses[bundle_id][q_id]
            lists.append(responses)
            s = [score for _, score in responses]
            std = torch.std(torch.tensor(s))
            question_stds[q_id] = std if std > 1e-3 else 1.0
            question_means[q_id] = torch.mean(torch.tensor(s))
        for paper_idx in range(min(len(r) for r in lists)):
            idxs, total = [], 0
            for responses in lists:
                ridx, rscore = responses[paper_idx]
                idxs.append(ridx)
                total += rscore
            paper_scores.append(total)
            paper_combinations.append(idxs)
        bundle_paper_scores[bundle_id] = torch.tensor(paper_scores)
        bundle_paper_combinations[bundle_id] = paper_combinations
    qd, qu, bstd = {}, {}, {}
    for bundle_id, ps in bundle_paper_scores.items():
        if len(ps) == 1:
            qd[bundle_id], qu[bundle_id], bstd[bundle_id] = ps[0], ps[0], torch.tensor(1.0)
        else:
            qd[bundle_id] = torch.quantile(ps, quantile_down)
            qu[bundle_id] = torch.quantile(ps, quantile_up)
            bstd[bundle_id] = torch.std(ps)
    advantages = torch.zeros_like(scores)
    for bundle_id in bundle_to_questions:
        if mode == "batch" or q_track_down is None:
            q_down, q_up = qd[bundle_id], qu[bundle_id]
        elif mode == "track":
            q_down, q_up = q_track_down, q_track_up
        else:
            q_down, q_up = (q_track_down + qd[bundle_id]) / 2, (q_track_up + qu[bundle_id]) / 2
        std = bstd[bundle_id]
        for comb in bundle_paper_combinations[bundle_id]:
            paper_score = sum(scores[idx] for idx in comb)
            pa = torch.clamp(paper_score - q_down, min=0) - torch.clamp(paper_score - q_up, min=0) + q_down - q_up
            pa = pa / (quantile_up - quantile_down + epsilon)
            cvar = -torch.clamp(q_down - paper_score, min=0) / (quantile_down + epsilon)
            pa = (w_mix * cvar + pa) / (w_mix + 1)
            pa = pa / (std + epsilon)
            local_indices, local_ratios = [], []
            for ridx in comb:
                if credit == "uniform":
                    advantages[ridx] = pa
                if credit == "std":
                    advantages[ridx] = pa / (question_stds[index[ridx]] + epsilon)
                if credit == "sum-mean":
                    local_indices.append(ridx)
                    local_ratios.append(scores[ridx] - question_means[index[ridx]])
            if credit == "sum-mean" and local_ratios:
                total = torch.stack(local_ratios).sum()
                if total.abs().item() > 1e-6:
                    for ridx, ratio in zip(local_indices, local_ratios):
                        advantages[ridx] = pa * (ratio / total)
                else:
                    for ridx in local_indices:
                        advantages[ridx] = pa / len(local_indices)
    return advantages, bundle_paper_scores


def tracker_reference(q, paper_scores, lr):
    """ray_trainer's tracker: None -> quantiles of all paper scores; else one SGD step on the pinball gradient."""
    flat = torch.cat([x.view(-1) for x in paper_scores.values()])
    if q is None:
        return torch.quantile(flat, ALPHA_LIST.to(flat.dtype))
    q = torch.nn.Parameter(q.clone())
    opt = torch.optim.SGD([q], lr=lr)
    q.grad = -(ALPHA_LIST.to(flat.dtype) - (flat.repeat(q.shape[0], 1) < q.unsqueeze(1)).to(flat.dtype).mean(dim=1))
    opt.step()
    return q.detach()


G, BUNDLE = 4, 2
BATCHES = [  # 5 questions of 4 rollouts: bundles {0, 1}, {2, 3}, {4} (the last one short); no constant bundle
    [1, 0, 1, 1, 0, 0, 1, 0, 1, 1, 1, 0, 0, 1, 0, 0, 1, 1, 0, 1],
    [0, 0, 1, 0, 1, 1, 1, 1, 0, 1, 0, 0, 1, 1, 1, 1, 0, 0, 0, 1],
    [1, 1, 0, 1, 0, 1, 0, 0, 1, 0, 1, 1, 0, 0, 0, 1, 1, 1, 1, 0],
]


def ids():
    index = [i // G for i in range(20)]
    return index, [q // BUNDLE for q in index]


@pytest.mark.parametrize("credit", ["std", "uniform", "sum-mean"])
@pytest.mark.parametrize("mode", ["track", "batch", "mix"])
def test_riskpo_matches_the_authors_code_over_steps(credit, mode):
    (term,) = build_terms("advantage", {"riskpo_mvar": {"bundle_size": BUNDLE, "credit": credit,
                                                        "quantile_mode": mode}})
    index, bundle = ids()
    q = None
    worst = 0.0
    for step, batch in enumerate(BATCHES):
        R = torch.tensor(batch, dtype=torch.float64)
        tracked = (None, None) if q is None or mode == "batch" else (
            q[(ALPHA_LIST - 0.2).abs().argmin()], q[(ALPHA_LIST - 0.9).abs().argmin()])
        ref, papers = riskpo_reference(R, index, bundle, 0.2, 0.9, credit, *tracked, mode=mode)
        out = term(torch.zeros(20, dtype=torch.float64), rollouts(batch, [3] * 20, G), R)
        worst = max(worst, float((out - ref).abs().max()))
        assert torch.allclose(out, ref, rtol=0, atol=1e-5), (step, out, ref)
        if mode != "batch":
            q = tracker_reference(q, papers, 0.1)
            assert torch.allclose(torch.tensor(term.tracked, dtype=torch.float64), q, rtol=0, atol=1e-5)
    # the authors' level grid is float32 (0.05 -> 0.0500000007): the tracked quantiles, and so the advantages,
    # move by 6e-7 at most on these inputs (batch mode, which tracks nothing, agrees exactly)
    assert worst < 1e-5 and (mode != "batch" or worst == 0.0)
    assert (out <= 1e-12).all()  # RiskPO's advantages are never positive


def test_riskpo_state_survives_a_json_round_trip_and_a_constant_bundle_stays_finite():
    (term,) = build_terms("advantage", {"riskpo_mvar": {"bundle_size": BUNDLE}})
    assert term.state_dict() == {}
    term(torch.zeros(20), rollouts(BATCHES[0], [3] * 20, G), torch.tensor(BATCHES[0], dtype=torch.float32))
    state = json.loads(json.dumps(term.state_dict()))
    (fresh,) = build_terms("advantage", {"riskpo_mvar": {"bundle_size": BUNDLE}})
    fresh.load_state_dict(state)
    R = torch.tensor(BATCHES[1], dtype=torch.float32)
    assert torch.equal(fresh(torch.zeros(20), rollouts(BATCHES[1], [3] * 20, G), R),
                       term(torch.zeros(20), rollouts(BATCHES[1], [3] * 20, G), R))
    # a bundle whose papers all score the same: divided by 1, not by 1e-6 (the released code gives ~-2e6 here)
    flat = [1.0, 0.0, 1.0, 0.0, 0.0, 1.0, 0.0, 1.0] + BATCHES[1][8:]  # papers 1, 1, 1, 1
    out = fresh(torch.zeros(20), rollouts(flat, [3] * 20, G), torch.tensor(flat))
    assert torch.isfinite(out).all() and out.abs().max() < 100
    assert set(fresh.metrics()) == {"quantile_down", "quantile_up", "tail_frac"}


def test_riskpo_bad_options_name_the_key():
    with pytest.raises(Exception, match="quantile_mode"):
        build_terms("advantage", {"riskpo_mvar": {"quantile_mode": "ema"}})
    with pytest.raises(Exception, match="credit"):
        build_terms("advantage", {"riskpo_mvar": {"credit": "score"}})
    with pytest.raises(Exception, match="quantile_down"):
        build_terms("advantage", {"riskpo_mvar": {"quantile_down": 0.95}})
