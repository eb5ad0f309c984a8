"""The algorithm table (`workbench.algorithms.ALGORITHMS`): every place that depends on `algo.name` reads it, and a bad
name gets one line naming the choices."""

from __future__ import annotations

import pytest

from workbench.algorithms import ALGORITHMS, algorithm, config_class, supporting, trainer_class
from workbench.compose import compose
from workbench.config import ALGOS, ConfigError, to_train_config


def test_config_checks_algo_name_against_the_table():
    assert ALGOS == tuple(ALGORITHMS)
    with pytest.raises(ConfigError) as e:
        to_train_config(compose("train", ["algo.name=ppo"]))
    assert str(e.value) == "algo.name='ppo' is not valid; choose one of: grpo, rloo"
    with pytest.raises(ConfigError) as e2:
        algorithm("ppo")
    assert str(e2.value) == str(e.value)


def test_table_classes_load_and_match():
    import trl

    from workbench.trainers import ShapedGRPOTrainer, ShapedRLOOTrainer

    assert config_class("grpo") is trl.GRPOConfig and config_class("rloo") is trl.RLOOConfig
    assert trainer_class("grpo") is ShapedGRPOTrainer and trainer_class("rloo") is ShapedRLOOTrainer
    for a in ALGORITHMS.values():  # the trainer extends the TRL trainer the table names
        assert a.trl_trainer in [c.__name__ for c in trainer_class(a.name).__mro__]
        assert set(a.defaults) <= {f for f in config_class(a.name).__dataclass_fields__}
    assert [a.name for a in supporting("tools")] == ["grpo"]
    assert [a.name for a in supporting("loss_regularizers")] == ["grpo"]


def test_checks_read_the_table(tmp_path):
    """The algorithm's defaults reach TRL's config unless algo.* sets them; what rloo lacks is one line each."""
    from workbench.checks import check_train

    base = ["model=tiny", f"runs_dir={tmp_path}"]
    args = check_train(to_train_config(compose("train", base + ["~algo.scale_rewards"])), with_task=False).args
    assert args.scale_rewards == "none"
    args = check_train(to_train_config(compose("train", base + ["algo.scale_rewards=group"])), with_task=False).args
    assert args.scale_rewards == "group"
    with pytest.raises(ConfigError, match=r"^regularizer: loss-side terms \(clip_cov, kl_cov, siren\) work with "
                                          r"algo=grpo only$"):
        check_train(to_train_config(compose("train", base + ["algo=rloo", "regularizer=[clip_cov]"])), with_task=False)
