"""The seed methods of issues 21 and 22 inside real (tiny) GRPO training: each trains a few steps through `rl train`'s code
and logs its own `shaping/<name>/...` diagnostics (the configuration-only presets: their TRL options take effect).
Reference numbers for each method are in tests/test_method_*.py; this checks they run in the trainer."""

from __future__ import annotations

import pytest

from workbench.compose import compose
from workbench.config import to_train_config
from workbench.runs import read_jsonl

pytestmark = pytest.mark.slow

#: case -> (overrides, the terms whose shaping/<name>/... keys must be logged)
CASES = {
    "drpo": (["regularizer=[drpo]"], ["drpo"]),
    "disco": (["regularizer=[disco]"], ["disco"]),
    "lp_reg": (["regularizer=[lp_reg]"], ["lp_reg"]),
    "steer": (["regularizer=[steer]"], ["steer"]),
    "gtpo": (["regularizer=[conflict_token_gtpo]"], ["conflict_token_gtpo"]),
    # two iterations per generation, so the policy moves off the sampling one and the per-token clip can bind
    "hapo_heterogeneous": (["regularizer=[hetero_entropy_hapo]", "advantage=[hetero_hapo_token_advantage]",
                            "algo.num_iterations=2"], ["hetero_entropy_hapo", "hetero_hapo_token_advantage"]),
    "copo": (["advantage=[copo_consistency]", "algo.scale_rewards=group"], ["copo_consistency"]),
    # multi-turn with real tools; the band of the authors' README (the yaml's 0.8-1.2 leaves 99% of tiny tokens out);
    # the tiny model of tests/test_agentic_e2e.py (same warm start, so one cache entry serves both)
    "epo": (["experiment=agentic_plain", "regularizer=[epo_entropy]", "regularizer.epo_entropy.kappa_low=0",
             "regularizer.epo_entropy.kappa_high=2", "algo.per_device_train_batch_size=16",
             "algo.max_completion_length=96", "model.tiny.warm_start_steps=300"], ["epo_entropy"]),
    "siren_top_p": (["regularizer=[siren]"], ["siren"]),
    # issue 22's reward and advantage methods
    "ares": (["reward=[correctness,format,ares_entropy]", "reward.ares_entropy.triggers=['+','-','=']"], ["ares_entropy"]),
    "empo": (["reward=[empo_agreement,format]"], ["empo_agreement"]),
    "stcr": (["advantage=[asym_stcr]", "advantage.asym_stcr.base=1.05"], ["asym_stcr"]),
    "riskpo": (["advantage=[riskpo_mvar]", "advantage.riskpo_mvar.bundle_size=2"], ["riskpo_mvar"]),
    "stratified_grpo": (["experiment=agentic_plain", "advantage=[stratified_grpo]", "algo.per_device_train_batch_size=16",
                         "algo.max_completion_length=96", "model.tiny.warm_start_steps=300"], ["stratified_grpo"]),
    # issue 22's samplers (workbench/sampling.py): their keys are sampler/<name>/...
    "knapsack": (["sampler=knapsack", "task.train_size=8"], ["sampler:knapsack"]),
    "aepo": (["sampler=aepo", "sampler.aepo.threshold=-10"], ["sampler:aepo"]),
    "apo": (["experiment=agentic_apo", "algo.per_device_train_batch_size=16", "algo.max_completion_length=96",
             "model.tiny.warm_start_steps=300", "sampler.apo.per_mode=1"], ["sampler:apo", "mode_cost"]),
    # SPEAR's replay buffer: a small buffer so it draws within 3 steps on the tiny task (no tools: any positive row)
    "spear_replay": (["sampler=[spear_replay]", "sampler.spear_replay.tool_calls_only=false",
                      "sampler.spear_replay.buffer_size=2"], ["sampler:spear_replay"]),
    "dads": (["regularizer=[asym_dads_kl]"], ["asym_dads_kl"]),
    "lite_ppo": (["experiment=lite_ppo"], []),
    "t1_dynamic_anchor": (["experiment=t1_dynamic_anchor", "algo.ref_model_sync_steps=2"], []),
}


@pytest.mark.parametrize("case", list(CASES))
def test_method_trains_and_logs(case, tiny_overrides):
    from workbench.train import train

    extra, terms = CASES[case]
    base = [] if any(o.startswith("experiment=") for o in extra) else ["experiment=quickstart"]
    overrides = [*base, *tiny_overrides, *extra, "logger=none", "algo.max_steps=3", "eval.at_start=false",
                 "eval.at_end=false"]
    cfg = to_train_config(compose("train", overrides))
    run = train(cfg, overrides, argv=["test"], progress=False)
    assert run.read_meta()["status"] == "completed"
    rows = read_jsonl(run.metrics_file)
    assert [r["step"] for r in rows] == [1, 2, 3]
    keys = set().union(*rows)
    for term in terms:
        prefix = f"sampler/{term[8:]}/" if term.startswith("sampler:") else f"shaping/{term}/"
        logged = sorted(k for k in keys if k.startswith(prefix))
        assert logged, (term, sorted(keys))
    assert all(r.get("train/loss") is not None for r in rows)
    if case == "knapsack":  # prompts are revisited from step 2 (8 prompts), so their success rates are known
        assert rows[-1]["sampler/knapsack/known_prompts"] > 0
    if case == "aepo":  # the second generation at the high temperature (entropy starts at 0 <= the target)
        assert rows[0]["sampler/aepo/temperature"] == pytest.approx(1.2)
    if case == "apo":  # every forced rollout starts with its mode tag
        assert all(r["sampler/apo/compliance"] == 1.0 for r in rows if "sampler/apo/compliance" in r)
    if case == "spear_replay":  # stored rows drawn from step 2 on (the buffer fills at step 1)
        assert rows[0]["sampler/spear_replay/rows"] > 0 and any(r["sampler/spear_replay/drawn"] > 0 for r in rows[1:])
    if case == "dads":  # TRL's reference model is on (beta, loss_type set by the term); weights in (0, 1]
        assert all(0 < r["shaping/asym_dads_kl/weight_mean"] <= 1 for r in rows)
        assert rows[-1]["shaping/asym_dads_kl/kl_mean"] > 0 and all(r.get("train/kl") is not None for r in rows)
        assert all(r["shaping/asym_dads_kl/weighted_kl"] <= r["shaping/asym_dads_kl/kl_mean"] + 1e-12 for r in rows)
    if case == "epo":
        assert max(r.get("shaping/epo_entropy/turns", 0) for r in rows) >= 1
    if case == "t1_dynamic_anchor":
        assert cfg.algo.trl["beta"] > 0 and cfg.algo.trl["sync_ref_model"] is True
        assert all(r.get("train/kl") is not None for r in rows)
