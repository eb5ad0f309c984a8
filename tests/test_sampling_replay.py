"""SPEAR's self-imitation buffer (card 13b, `sampler=[spear_replay]`) against a transcription of the authors' code,
and the adapter's row round trip and splice (`workbench.replay`).

Reference: TencentYoutuResearch/SPEAR `verl/verl/trainer/ppo/ray_trainer_hybrid.py::TrajectoryBufferBatch`
(weight_decay_trajectory_replay <= 0, the run script's -1: advantages re-estimated against the median baseline) and
`verl/verl/workers/actor/dp_actor.py::update_policy` (the replay-loss schedule), transcribed below on plain lists
(their DataProto rows become (reward, advantage, has_tool_call, id) tuples).
"""

from __future__ import annotations

import math
import random

import numpy as np
import pytest
import torch

from workbench.config import ConfigError
from workbench.replay import batch_records, records_batch, rows_first, zero_advantage_rows
from workbench.sampling import SAMPLERS, build_samplers, splice_rows
from workbench.sampling_replay import SpearReplay, lower_power_of_two


# ---------------------------------------------------------------- the authors' logic, transcribed (reference only)
class RefTrajectoryBufferBatch:
    def __init__(self, buffer_size=2048, baseline_buffer_size=10240, tolerate_steps=10, norm_adv_by_std_in_grpo=False):
        self.buffer_size = buffer_size
        self.baseline_buffer_size = baseline_buffer_size
        self.tolerate_steps = min(tolerate_steps, 10)
        self.trajectory_buffer = []  # [rows, rewards, global_step]
        self.reward_mean_history = []
        self.reward_std_history = []
        self.norm_adv_by_std_in_grpo = norm_adv_by_std_in_grpo

    def remove_old(self):
        if len(self.trajectory_buffer):
            step_latest = self.trajectory_buffer[-1][-1]
            self.trajectory_buffer = [
                item for item in self.trajectory_buffer if abs(item[-1] - step_latest) <= self.tolerate_steps
            ]

    def is_full_capacity(self):
        return self.get_buffer_size() > self.buffer_size * 1.5

    def get_buffer_size(self):
        num_buffer = 0
        if len(self.reward_mean_history):
            reward_mean_history = []
            for reward_item in self.reward_mean_history:
                reward_mean_history += reward_item[1]
            reward_mean_50p = np.percentile(reward_mean_history, 50)
        else:
            reward_mean_50p = None
        for traj_pair in self.trajectory_buffer:
            _, reward_tensor, _ = traj_pair
            reward_tensor_sum = torch.tensor(reward_tensor)
            if reward_mean_50p is None:
                reward_tensor_sum_pos = reward_tensor_sum > reward_tensor_sum.mean()
            else:
                reward_tensor_sum_pos = reward_tensor_sum > reward_mean_50p
            num_buffer += int(reward_tensor_sum_pos.sum())
        return num_buffer

    def get_buffer(self):
        def nearest_lower_power_of_2(n):
            if n <= 1:
                return 0
            return 1 << (n.bit_length() - 1)

        rows = [r for pair in self.trajectory_buffer for r in pair[0]]
        rewards = torch.tensor([x for pair in self.trajectory_buffer for x in pair[1]], dtype=torch.float64)
        flat_means = [m for item in self.reward_mean_history for m in item[1]]
        flat_stds = [s for item in self.reward_std_history for s in item[1]]
        reward_mean_50p = np.percentile(flat_means, 50)
        reward_std_50p = np.percentile(flat_stds, 50)
        # prepare_for_selection -> compute_grpo_outcome_advantage(custom_reward_mean_std=...)
        if self.norm_adv_by_std_in_grpo:
            adv = (rewards - reward_mean_50p) / (reward_std_50p + 1e-6)
        else:
            adv = rewards - reward_mean_50p
        mask = adv > 0
        rows = [r for r, m in zip(rows, mask) if m]
        adv = adv[mask]
        len_batch_valid = min(nearest_lower_power_of_2(len(rows)), self.buffer_size)
        idx = torch.randperm(len(rows))[:len_batch_valid]
        return [rows[i] for i in sorted(idx.tolist())], [float(adv[i]) for i in sorted(idx.tolist())]

    def reset_buffer(self):
        self.trajectory_buffer = []

    def update_batch(self, rows, rewards, advantages, has_tool_call, group_size, global_step):
        rm_scores = torch.tensor(rewards, dtype=torch.float64).view(-1, group_size)
        in_group_std = rm_scores.std(dim=-1)
        in_group_mean = rm_scores.mean(dim=-1)
        num_group_mean_all = sum([len(item[1]) for item in self.reward_mean_history])
        while num_group_mean_all > self.baseline_buffer_size and len(self.reward_mean_history):
            self.reward_mean_history.pop(0)
            self.reward_std_history.pop(0)
            num_group_mean_all = sum([len(item[1]) for item in self.reward_mean_history])
        self.reward_mean_history.append([global_step, in_group_mean.tolist()])
        self.reward_std_history.append([global_step, in_group_std.tolist()])
        mask = [a > 0 and t for a, t in zip(advantages, has_tool_call)]
        kept = [r for r, m in zip(rows, mask) if m]
        kept_rewards = [x for x, m in zip(rewards, mask) if m]
        if len(kept_rewards) == 0:
            return
        self.trajectory_buffer.append([kept, kept_rewards, global_step])


def ref_replay_weight(global_steps, replay_loss_coef, max_replay_loss_steps):
    if global_steps <= max_replay_loss_steps:
        return replay_loss_coef * (-np.cos((global_steps / max_replay_loss_steps) * np.pi) + 1) / 2
    return replay_loss_coef


def ref_step(ref, rows, rewards, adv, tools, G, step):
    """One `critic_warmup` step of the authors' trainer: draw (when full), reset, then remove_old + update."""
    drawn = None
    if ref.is_full_capacity():
        drawn = ref.get_buffer()
        ref.reset_buffer()
    ref.remove_old()
    ref.update_batch(rows, rewards, adv, tools, G, step)
    return drawn


# ---------------------------------------------------------------- hand-made steps
G = 4


def _step_inputs(step, rng):
    """4 groups of 4: rewards in {0, 0.5, 1, 1.2}, GRPO mean-centred advantages, tool calls on most rows."""
    rewards = [rng.choice([0.0, 0.5, 1.0, 1.2]) for _ in range(4 * G)]
    adv = []
    for g in range(4):
        grp = rewards[g * G : (g + 1) * G]
        m = sum(grp) / G
        adv += [r - m for r in grp]
    tools = [rng.random() < 0.8 for _ in range(4 * G)]
    rows = [{"id": f"s{step}r{i}", "prompt_ids": [step, i], "completion_ids": [i, i + 1], "tool_mask": None}
            for i in range(4 * G)]
    return rows, rewards, adv, tools


@pytest.mark.parametrize("seed,buffer_size,tolerate,baseline,std", [(0, 4, 2, 6, False), (1, 8, 5, 10240, False),
                                                                      (2, 2, 1, 4, True), (3, 4, 20, 8, True)])
def test_buffer_matches_reference_over_many_steps(seed, buffer_size, tolerate, baseline, std):
    rng = random.Random(seed)
    ref = RefTrajectoryBufferBatch(buffer_size=buffer_size, baseline_buffer_size=baseline, tolerate_steps=tolerate,
                                   norm_adv_by_std_in_grpo=std)
    ours = SpearReplay(buffer_size=buffer_size, baseline_size=baseline, tolerate_steps=tolerate, std_norm=std)
    draws = 0
    for step in range(1, 16):
        rows, rewards, adv, tools = _step_inputs(step, rng)
        assert ours.size() == ref.get_buffer_size(), step
        full = ref.is_full_capacity()
        pool = {}
        if full:  # the reference's positive pool and its re-scored advantages, before the draw
            p50 = float(np.percentile([m for _, ms in ref.reward_mean_history for m in ms], 50))
            s50 = float(np.percentile([v for _, vs in ref.reward_std_history for v in vs], 50)) + 1e-6 if std else 1.0
            pool = {r["id"]: (x - p50) / s50 for pair in ref.trajectory_buffer for r, x in zip(pair[0], pair[1])
                    if x > p50}
        torch.manual_seed(step)
        ref_drawn = ref_step(ref, rows, rewards, adv, tools, G, step)
        got = ours.draw(random.Random(step))
        assert bool(got) == (full and bool(ref_drawn and ref_drawn[0])), step
        if full:
            draws += 1
            assert len(got) == len(ref_drawn[0]) == min(lower_power_of_two(len(pool)), buffer_size)
            for r, a in got:  # the same pool and advantages; which 2^k of it is random on both sides
                assert a == pytest.approx(pool[r["id"]], abs=1e-9)
        ours.admit(rows, rewards, adv, G, step, [int(t) for t in tools])
        assert [e["step"] for e in ours.entries] == [p[-1] for p in ref.trajectory_buffer]
        assert [[r["id"] for r in e["rows"]] for e in ours.entries] == [[r["id"] for r in p[0]]
                                                                         for p in ref.trajectory_buffer]
        assert [h["step"] for h in ours.history] == [st for st, _ in ref.reward_mean_history]
        assert [m for h in ours.history for m in h["means"]] == pytest.approx(
            [m for _, ms in ref.reward_mean_history for m in ms])
        assert ours.baseline()[0] == pytest.approx(float(np.percentile(
            [m for _, ms in ref.reward_mean_history for m in ms], 50)))
    assert draws >= 1  # the cases reach capacity at least once


def test_draw_pool_equals_reference_when_the_whole_pool_is_drawn():
    """Buffer rows with rewards chosen so the positive pool is exactly 4 (a power of two <= buffer_size): both draw
    all of it, with the same re-scored advantages."""
    ref = RefTrajectoryBufferBatch(buffer_size=4, tolerate_steps=5)
    ours = SpearReplay(buffer_size=4, tolerate_steps=5)
    rewards1 = [0.0, 0.0, 1.0, 1.0, 0.0, 0.0, 0.0, 1.0]  # group means 0.5, 0.25
    rewards2 = [1.0, 1.0, 1.0, 0.0, 2.0, 0.0, 0.0, 0.0]  # group means 0.75, 0.5
    for step, rewards in ((1, rewards1), (2, rewards2)):
        rows = [{"id": f"{step}-{i}", "prompt_ids": [], "completion_ids": [], "tool_mask": None} for i in range(8)]
        adv = [r - sum(rewards[g : g + 4]) / 4 for g in (0, 4) for r in rewards[g : g + 4]]
        ref_step(ref, rows, rewards, adv, [True] * 8, 4, step)
        ours.admit(rows, rewards, adv, 4, step, [1] * 8)
    # buffered: step 1 rows 2, 3, 7 (r=1) and step 2 rows 0, 1, 2, 4: 7 rows; baseline median(.5,.25,.75,.5) = 0.5
    assert ours.size() == ref.get_buffer_size() == 7 and ref.is_full_capacity()
    torch.manual_seed(0)
    ref_rows, ref_adv = ref.get_buffer()
    got = ours.draw(random.Random(0))
    assert len(got) == len(ref_rows) == 4  # 7 positives -> 4
    assert ours.entries == [] and len(ours.history) == 2  # emptied, the baseline history kept
    assert {a for _, a in got} <= {0.5, 1.5} and {round(a, 6) for a in ref_adv} <= {0.5, 1.5}


def test_eviction_against_the_newest_entry_and_the_ten_step_cap():
    s = SpearReplay(tolerate_steps=50, tool_calls_only=False)
    row = {"prompt_ids": [1], "completion_ids": [2], "tool_mask": None}
    for step in (1, 5, 12, 13):
        s.admit([row, row], [1.0, 0.0], [0.5, -0.5], 2, step)
    # at step 13's admission the newest entry was 12: entries older than 12 - 10 = 2 are gone (cap 10, not 50)
    assert [e["step"] for e in s.entries] == [5, 12, 13]


def test_tool_calls_only_and_negative_rows_are_not_admitted():
    s = SpearReplay()
    rows = [{"prompt_ids": [i], "completion_ids": [i], "tool_mask": None} for i in range(4)]
    s.admit(rows, [1.0, 1.0, 0.0, 0.0], [0.5, 0.5, -0.5, -0.5], 4, 1, tool_calls=[2, 0, 1, 0])
    assert [r["prompt_ids"] for e in s.entries for r in e["rows"]] == [[0]]


@pytest.mark.parametrize("step", [1, 50, 150, 299, 300, 301, 1000])
def test_schedule_matches_reference(step):
    assert SpearReplay(coef=0.7, ramp_steps=300).weight(step) == pytest.approx(ref_replay_weight(step, 0.7, 300))


def test_state_round_trip_and_config_errors():
    s = SpearReplay(tool_calls_only=False)
    s.admit([{"prompt_ids": [1], "completion_ids": [2, 3], "tool_mask": None}] * 2, [1.0, 0.0], [0.5, -0.5], 2, 3)
    t = SpearReplay(tool_calls_only=False)
    t.load_state_dict(__import__("json").loads(__import__("json").dumps(s.state_dict())))
    assert t.entries == s.entries and t.size() == s.size() and t.baseline() == s.baseline()
    assert "spear_replay" in SAMPLERS
    with pytest.raises(ConfigError, match="buffer_size >= 1"):
        build_samplers({"spear_replay": {"buffer_size": 0}})

    class NoTools:
        tools = ()

    with pytest.raises(ConfigError, match="tool_calls_only=false"):
        SpearReplay().bind_task(NoTools())
    SpearReplay(tool_calls_only=False).bind_task(NoTools())


def test_lower_power_of_two():
    assert [lower_power_of_two(n) for n in (1, 2, 5, 16, 17)] == [0, 2, 4, 16, 16]


# ---------------------------------------------------------------- adapter: rows <-> batch tensors, splice
def _batch(pad=0):
    return {
        "prompt_ids": torch.tensor([[pad, 5, 6], [7, 8, 9], [pad, pad, 4]]),
        "prompt_mask": torch.tensor([[0, 1, 1], [1, 1, 1], [0, 0, 1]]),
        "completion_ids": torch.tensor([[11, 12, pad], [13, pad, pad], [14, 15, 16]]),
        "completion_mask": torch.tensor([[1, 1, 0], [1, 0, 0], [1, 1, 1]]),
        "advantages": torch.tensor([0.5, 0.0, -0.5]),
        "num_items_in_batch": torch.tensor(6),
    }


def test_records_round_trip_and_splice_over_zero_advantage_rows():
    b = _batch()
    recs = batch_records(b)
    assert recs[0] == {"prompt_ids": [5, 6], "completion_ids": [11, 12], "tool_mask": None}
    back = records_batch(recs, [0.5, 0.0, -0.5], b, pad_id=0)
    for k in ("prompt_ids", "prompt_mask", "completion_ids", "completion_mask", "advantages"):
        assert torch.equal(back[k], b[k]), k
    stored = [{"prompt_ids": [1, 2, 3, 4], "completion_ids": [21, 22, 23, 24], "tool_mask": None}]
    slots = zero_advantage_rows(b["advantages"])
    assert slots == [1]
    out = splice_rows(rows_first(b, slots), records_batch(stored, [0.25], b, 0), [0], 0)
    # the zero-advantage row is gone; the stored row is in, the other rows keep their tensors
    assert out["completion_ids"].tolist() == [[21, 22, 23, 24], [11, 12, 0, 0], [14, 15, 16, 0]]
    assert out["prompt_ids"].tolist() == [[1, 2, 3, 4], [0, 0, 5, 6], [0, 0, 0, 4]]
    assert out["advantages"].tolist() == [0.25, 0.5, -0.5]
    assert out["completion_mask"].sum(1).tolist() == [4, 2, 3]
