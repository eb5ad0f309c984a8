"""Shaping terms inside real (tiny) GRPO training: every family runs and logs its terms; per-token entropies are
recorded during generation only when an active term needs them, and match a separate forward pass."""

from __future__ import annotations

import pytest

from workbench.compose import compose
from workbench.config import to_train_config
from workbench.runs import read_jsonl

pytestmark = pytest.mark.slow

CASES = {
    "length": (["experiment=length_shaping",
                "reward=[correctness,format,length_kimi,length_cosine,overlong_dapo,length_hapo]"], False),
    "cost": (["experiment=cost_shaping",
              "reward=[correctness,format,cost_tokens,cost_router,tool_calls,par,gated,ensemble]"], False),
    "entropy": (["experiment=entropy_control", "advantage=[empg]", "regularizer=[kl_cov,clip_cov,siren]"], True),
    "advantage+native": (["experiment=quickstart", "advantage=[positive_length,bnpo]",
                          "regularizer=[forking_tokens,entropy_bonus]", "algo.gradient_accumulation_steps=2",
                          "algo.per_device_train_batch_size=8"], False),
}


@pytest.mark.parametrize("case", list(CASES))
def test_shaping_family_trains_and_logs(case, tiny_overrides, monkeypatch):
    from workbench.trainers import ShapingMixin
    from workbench.train import train

    extra, needs_entropy = CASES[case]
    recorded, extra_passes = [], []
    original_generate, original_pass = ShapingMixin._generate, ShapingMixin._reward_time_entropies

    def spy_generate(self, prompts):
        out = original_generate(self, prompts)
        recorded.append(self._generation["entropies"] is not None)
        return out

    def spy_pass(self, *a, **kw):
        extra_passes.append(1)
        return original_pass(self, *a, **kw)

    monkeypatch.setattr(ShapingMixin, "_generate", spy_generate)
    monkeypatch.setattr(ShapingMixin, "_reward_time_entropies", spy_pass)
    overrides = [*extra, *tiny_overrides, "logger=none", "algo.max_steps=2", "eval.at_start=false", "eval.at_end=false"]
    cfg = to_train_config(compose("train", overrides))
    run = train(cfg, overrides, argv=["test"], progress=False)
    rows = read_jsonl(run.metrics_file)
    assert [r["step"] for r in rows] == [1, 2]
    # reward-side metrics are logged on steps that generate (every num_iterations-th step)
    for term in cfg.reward:
        assert f"shaping/{term}/mean" in rows[0], term
    for key in ("length/mean", "length/clip_ratio", "cost/mean"):
        assert key in rows[0]
    assert all("entropy/mean" in r and "entropy/think" in r for r in rows)
    for reg in cfg.regularizer:
        if reg in ("kl_cov", "siren"):
            assert f"shaping/{reg}/loss" in rows[-1], reg
        if reg == "clip_cov":  # a token-hook-only regularizer: its counters are logged too
            assert all(f"shaping/clip_cov/{k}" in rows[-1] for k in ("candidates", "clipped_tokens")), rows[-1]
    assert recorded and all(r == needs_entropy for r in recorded), (case, recorded)
    assert not extra_passes  # generation with transformers: entropies come from its own forward passes
    samples = read_jsonl(run.samples_file)
    assert set(samples[0]["rewards"]) == set(cfg.reward)


def test_generation_entropies_match_a_separate_forward_pass(tiny_overrides, monkeypatch):
    import torch

    from workbench.trainers import ShapingMixin
    from workbench.train import train

    original = ShapingMixin._calculate_rewards
    diffs = []

    def spy(self, inputs, prompts, completions, completion_ids_list):
        ref = self._reward_time_entropies(self._generation["prompt_ids"], completion_ids_list)
        mask = torch.zeros_like(ref)
        for i, c in enumerate(completion_ids_list):
            mask[i, : len(c)] = 1
        diffs.append(float(((self._generation["entropies"][:, : ref.size(1)] - ref).abs() * mask).max()))
        return original(self, inputs, prompts, completions, completion_ids_list)

    monkeypatch.setattr(ShapingMixin, "_calculate_rewards", spy)
    overrides = ["experiment=quickstart", "reward=[correctness,pear]", *tiny_overrides, "logger=none",
                 "algo.max_steps=2", "eval.at_start=false", "eval.at_end=false"]
    train(to_train_config(compose("train", overrides)), overrides, argv=["test"], progress=False)
    assert len(diffs) == 2 and max(diffs) < 1e-4, diffs
