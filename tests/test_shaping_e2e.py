"""Shaping terms inside real (tiny) GRPO training: every family runs, logs its terms, and the extra entropy pass
runs only when an active term needs per-token entropies."""

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
    calls = []
    original = ShapingMixin._reward_time_entropies

    def spy(self, *a, **kw):
        calls.append(1)
        return original(self, *a, **kw)

    monkeypatch.setattr(ShapingMixin, "_reward_time_entropies", spy)
    overrides = [*extra, *tiny_overrides, "logger=none", "algo.max_steps=2", "eval.at_start=false", "eval.at_end=false"]
    cfg = to_train_config(compose("train", overrides))
    run = train(cfg, overrides, argv=["test"], progress=False)
    rows = read_jsonl(run.metrics_file)
    assert [r["step"] for r in rows] == [1, 2]
    for term in cfg.reward:
        assert f"shaping/{term}/mean" in rows[-1], term
    for key in ("length/mean", "length/clip_ratio", "entropy/mean", "entropy/think", "cost/mean"):
        assert key in rows[-1]
    for reg in cfg.regularizer:
        if reg in ("kl_cov", "siren"):
            assert f"shaping/{reg}/loss" in rows[-1], reg
    assert bool(calls) == needs_entropy, (case, len(calls))
    samples = read_jsonl(run.samples_file)
    assert set(samples[0]["rewards"]) == set(cfg.reward)
