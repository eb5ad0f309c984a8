"""A^2FM-style mode term on hand-made groups: easy (a cheaper mode solved it), hard (cheaper modes failed), mixed,
no cheaper mode tried, untagged rollouts; and the full reward's ordering correct cheap > correct dear > wrong."""

from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from workbench.rollouts import Rollouts
from workbench.shaping.base import build_terms
from workbench.shaping.reward_cost import ModeCost, mode_penalty

CONF = Path(__file__).resolve().parents[1] / "conf"

MODES = ("instant", "reasoning", "agentic")


def make_rollouts(modes, correct, G=None, mode_names=MODES):
    B = len(modes)
    return Rollouts(
        completions=[f"[{m}]1" if m else "1" for m in modes],
        completion_ids=[[1]] * B,
        lengths=torch.ones(B, dtype=torch.long),
        prompt_lengths=torch.ones(B, dtype=torch.long),
        truncated=torch.zeros(B, dtype=torch.bool),
        correct=torch.tensor(correct, dtype=torch.float32),
        group_size=G or B,
        prompt_keys=[i // (G or B) for i in range(B)],
        max_completion_length=8,
        modes=list(modes),
        mode_names=mode_names,
    )


def test_easy_group_penalises_correct_dear_answers_by_the_cheap_accuracy():
    # instant all correct: correct agentic / reasoning answers lose 1 x acc(instant) = 1; a wrong one loses nothing
    r = make_rollouts(["instant", "instant", "reasoning", "agentic", "agentic"], [1, 1, 1, 1, 0])
    term = ModeCost()
    assert term(r).tolist() == [0.0, 0.0, -1.0, -1.0, 0.0]
    assert term.metrics() == {"penalty": pytest.approx(0.4), "penalised": pytest.approx(0.4)}


def test_hard_group_leaves_dear_answers_alone():
    # instant and reasoning all wrong: acc 0, so the correct agentic answers keep their full reward
    r = make_rollouts(["instant", "instant", "reasoning", "agentic", "agentic", "agentic"], [0, 0, 0, 1, 1, 0])
    assert ModeCost()(r).tolist() == [0.0] * 6


def test_mixed_group_uses_the_best_cheaper_mode():
    # acc(instant) = 1/2, acc(reasoning) = 3/4: agentic correct -> -3/4; reasoning correct -> -1/2 (instant only)
    modes = ["instant", "instant", "reasoning", "reasoning", "reasoning", "reasoning", "agentic", "agentic"]
    correct = [1, 0, 1, 1, 1, 0, 1, 0]
    out = ModeCost()(make_rollouts(modes, correct))
    assert out.tolist() == pytest.approx([0.0, 0.0, -0.5, -0.5, -0.5, 0.0, -0.75, 0.0])


def test_groups_are_separate_and_untried_modes_carry_no_evidence():
    # group 1: only agentic tried (no cheaper evidence) -> 0; group 2: only reasoning and agentic, reasoning 1/2
    modes = ["agentic"] * 4 + ["reasoning", "reasoning", "agentic", "agentic"]
    correct = [1, 1, 0, 1, 1, 0, 1, 1]
    out = ModeCost()(make_rollouts(modes, correct, G=4))
    assert out.tolist() == pytest.approx([0.0] * 4 + [0.0, 0.0, -0.5, -0.5])


def test_untagged_rollouts_penalty_or_dearest_mode():
    modes = ["instant", "instant", None, None, "agentic"]
    correct = [1, 1, 1, 0, 1]
    # default: -1 right or wrong, and no evidence (the agentic answer is judged on instant alone)
    assert ModeCost()(make_rollouts(modes, correct)).tolist() == [0.0, 0.0, -1.0, -1.0, -1.0]
    assert ModeCost(untagged=-0.25)(make_rollouts(modes, correct)).tolist() == [0.0, 0.0, -0.25, -0.25, -1.0]
    # null: untagged counts as the dearest mode: correct -> -acc(instant), wrong -> 0
    assert ModeCost(untagged=None)(make_rollouts(modes, correct)).tolist() == [0.0, 0.0, -1.0, 0.0, -1.0]
    # a mode name the task does not have is untagged too
    assert ModeCost()(make_rollouts(["instant", "turbo"], [1, 1])).tolist() == [0.0, -1.0]
    with pytest.raises(ValueError, match="untagged"):
        ModeCost(untagged=0.5)


def test_task_without_modes_gives_zero_and_missing_signal_raises():
    r = make_rollouts([None, None], [1, 0], mode_names=())
    assert ModeCost()(r).tolist() == [0.0, 0.0]
    r = make_rollouts(["instant", "agentic"], [1, 1])
    r.modes = None
    with pytest.raises(ValueError, match="modes"):
        ModeCost()(r)


def test_full_reward_orders_correct_cheap_above_correct_dear_above_wrong():
    (term,) = build_terms("reward", OmegaConf.to_container(OmegaConf.load(CONF / "reward" / "mode_cost.yaml")))
    assert term.weight == 0.5 and term.untagged == -1.0
    # an easy group: instant mostly right; every kind of rollout in it
    modes = ["instant", "instant", "instant", "reasoning", "agentic", "agentic", None, "instant", None]
    correct = [1, 1, 1, 1, 1, 0, 1, 0, 0]
    reward = torch.tensor(correct, dtype=torch.float32) + term.weight * term(make_rollouts(modes, correct))
    cheap_right, dear_right = reward[:3], reward[[3, 4, 6]]
    wrong = reward[[5, 7, 8]]
    assert cheap_right.min() > dear_right.max() > wrong.max()
    # acc(instant) = 3/4, acc(reasoning) = 1/1: reasoning right loses 0.5 x 3/4, agentic right 0.5 x max(3/4, 1)
    assert reward.tolist() == pytest.approx([1, 1, 1, 1 - 0.5 * 0.75, 0.5, 0, 0.5, 0, -0.5])
    # on random batches: a correct answer always beats a wrong one in the same group, and in the cheapest mode
    # it is never below a correct answer in a dearer mode
    g = torch.Generator().manual_seed(0)
    for _ in range(50):
        ranks = torch.randint(-1, 3, (24,), generator=g)
        c = torch.randint(0, 2, (24,), generator=g).float()
        modes = [MODES[k] if k >= 0 else None for k in ranks.tolist()]
        R = (c + term.weight * term(make_rollouts(modes, c.tolist(), G=6))).view(-1, 6)
        C, K = c.view(-1, 6).bool(), ranks.view(-1, 6)
        for row in range(4):
            if C[row].any() and (~C[row]).any():
                assert R[row][C[row]].min() > R[row][~C[row]].max()
            instant = C[row] & (K[row] == 0)
            if instant.any():
                assert R[row][instant].min() >= R[row][C[row]].max()


def test_mode_penalty_bounds_and_shapes():
    g = torch.Generator().manual_seed(1)
    ranks = torch.randint(-1, 3, (40,), generator=g)
    correct = torch.randint(0, 2, (40,), generator=g).float()
    p = mode_penalty(ranks, correct, 8, 3)
    assert p.shape == (40,) and (p >= 0).all() and (p <= 1).all()
    assert (p[correct == 0] == 0).all() and (p[ranks <= 0] == 0).all()  # wrong, cheapest and untagged: none
    assert mode_penalty(torch.zeros(0, dtype=torch.long), torch.zeros(0), 4, 3).shape == (0,)
