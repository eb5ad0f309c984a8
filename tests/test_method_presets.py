"""The configuration-only method presets (METHODS.md cards G2-18, G2-19): each experiment composes and resolves to
the TRL options its card names, through the same path `rl train` takes (`workbench.checks.trl_arguments`)."""

from __future__ import annotations

import pytest

from workbench.checks import trl_arguments
from workbench.compose import compose
from workbench.config import to_train_config
from workbench.shaping import build_terms


def resolved(overrides: list[str]):
    """(the train config, the GRPOConfig it resolves to) for these overrides."""
    cfg = to_train_config(compose("train", overrides))
    regularizers = build_terms("regularizer", cfg.regularizer)
    return cfg, trl_arguments(cfg, regularizers)


def test_lite_ppo_is_group_mean_batch_std_token_level_with_a_symmetric_clip():
    cfg, args = resolved(["experiment=lite_ppo"])
    assert cfg.experiment_name == "lite_ppo"
    assert args.scale_rewards == "batch"  # group mean, batch std
    assert args.loss_type == "dapo"  # token-level aggregation
    assert (args.epsilon, args.epsilon_high) == (0.2, 0.2)  # vanilla clip, no clip-higher
    assert args.beta == 0.0
    assert not args.sync_ref_model
    # nothing else of the recipe: no shaping term beyond the task's rewards
    assert dict(cfg.advantage) == {} and dict(cfg.regularizer) == {}


def test_lite_ppo_differs_from_the_plain_grpo_defaults_where_the_recipe_says():
    _, plain = resolved([])
    _, lite = resolved(["experiment=lite_ppo"])
    assert plain.scale_rewards != "batch" and plain.epsilon_high != 0.2  # the preset really changes these
    assert lite.num_generations == plain.num_generations and lite.learning_rate == plain.learning_rate


def test_lite_ppo_local_token_level_variant():
    _, args = resolved(["experiment=lite_ppo", "algo.loss_type=bnpo"])
    assert (args.loss_type, args.scale_rewards) == ("bnpo", "batch")


def test_t1_dynamic_anchor_moves_the_kl_reference():
    cfg, args = resolved(["experiment=t1_dynamic_anchor"])
    assert cfg.experiment_name == "t1_dynamic_anchor"
    assert args.beta > 0  # TRL refuses sync_ref_model with beta 0
    assert args.sync_ref_model is True
    assert args.ref_model_mixup_alpha == pytest.approx(0.6)
    assert args.ref_model_sync_steps == 16
    assert cfg.model.lora.enabled is False  # TRL does not sync the reference of a PEFT model


def test_t1_dynamic_anchor_composes_with_the_entropy_bonus():
    _, args = resolved(["experiment=t1_dynamic_anchor", "regularizer=[entropy_bonus]"])
    assert args.sync_ref_model is True and args.entropy_coef == pytest.approx(1e-3)
