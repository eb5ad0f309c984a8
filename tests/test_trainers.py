"""Trainer helpers that need no model: metric naming, TRL argument validation (phase masks: test_signals.py)."""

from __future__ import annotations

import pytest
import torch

from workbench.config import ConfigError
from workbench.algorithms import build_trl_args
from workbench.callbacks import canonical_metrics


def test_canonical_metric_names():
    out = canonical_metrics(
        {"reward": 1.0, "entropy": 0.5, "kl": 0.1, "step_time": 2.0, "length/mean": 10.0, "shaping/x/mean": 0.2,
         "rewards/correctness/mean": 0.7, "completion": "text", "_rollouts_per_step": 64}
    )
    assert out["train/reward"] == 1.0 and out["entropy/mean"] == 0.5 and out["train/kl"] == 0.1
    assert out["perf/step_time"] == 2.0 and out["shaping/x/mean"] == 0.2
    assert out["train/rewards/correctness/mean"] == 0.7
    assert "completion" not in out and not any("rollouts_per_step" in k for k in out)


def test_tokens_per_second_from_step_time_and_length():
    out = canonical_metrics({"step_time": 2.0, "length/mean": 10.0, "_rollouts_per_step": 64})
    assert out["perf/tokens_per_s"] == pytest.approx(10.0 * 64 / 2.0)


def test_build_trl_args_rejects_unknown_keys_with_suggestions():
    with pytest.raises(ConfigError, match="did you mean num_generations"):
        build_trl_args("grpo", {"num_generation": 4}, {"output_dir": "/tmp/x", "use_cpu": True, "bf16": False})
    args = build_trl_args("grpo", {"top_k": 5, "loss_type": "dr_grpo"}, {"output_dir": "/tmp/x", "use_cpu": True, "bf16": False})
    assert args.top_k == 5 and args.loss_type == "dr_grpo"


def test_build_trl_args_turns_trl_value_errors_into_config_errors():
    with pytest.raises(ConfigError, match="^algo: "):
        build_trl_args("grpo", {"generation_batch_size": 3, "steps_per_generation": 2},
                       {"output_dir": "/tmp/x", "use_cpu": True, "bf16": False})


def test_build_trl_args_rejects_normalize_then_sum():
    with pytest.raises(ConfigError, match="multi_objective_aggregation"):
        build_trl_args("grpo", {"multi_objective_aggregation": "normalize_then_sum"},
                       {"output_dir": "/tmp/x", "use_cpu": True, "bf16": False})


def test_term_reward_is_a_name_only():
    from workbench.trainers import TermReward

    f = TermReward("pear")
    assert f.__name__ == "pear"
    with pytest.raises(RuntimeError, match="_calculate_rewards"):
        f(prompts=[], completions=[])


def test_epoch_seeded_sampler_gives_a_resumed_epoch_the_uninterrupted_order():
    """TRL's RepeatSampler advances one generator across epochs; a run resumed in epoch 2 re-created it fresh and
    trained epoch 2 in epoch 0's order. With `epoch_seeded`, epoch k's order depends on k only."""
    from trl.trainer.utils import RepeatSampler

    from workbench.callbacks import epoch_seeded

    def make():
        return epoch_seeded(RepeatSampler(list(range(12)), mini_repeat_count=2, batch_size=3, repeat_count=1,
                                          shuffle=True, seed=5))

    uninterrupted = make()
    orders = []
    for epoch in range(3):
        uninterrupted.set_epoch(epoch)
        orders.append(list(uninterrupted))
    resumed = make()
    resumed.set_epoch(2)  # what transformers does when it resumes in epoch 2
    assert list(resumed) == orders[2]
    assert orders[0] == list(RepeatSampler(list(range(12)), mini_repeat_count=2, batch_size=3, repeat_count=1,
                                           shuffle=True, seed=5))  # epoch 0 is TRL's own order
    assert orders[1] != orders[0]
    plain = RepeatSampler(list(range(12)), mini_repeat_count=2, batch_size=3, shuffle=False, seed=5)
    assert type(epoch_seeded(plain)) is RepeatSampler  # nothing to seed without shuffling
