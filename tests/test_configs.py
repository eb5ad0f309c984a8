"""Every experiment composes and validates, including its TRL options and shaping terms (LHT habit)."""

from __future__ import annotations

from pathlib import Path

import pytest

from workbench.compose import CONF_DIR, compose, config_groups
from workbench.config import ConfigError, to_train_config

EXPERIMENTS = sorted(p.stem for p in (CONF_DIR / "experiment").glob("*.yaml"))


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_experiment_composes_and_validates(experiment):
    from workbench.shaping import build_terms
    from workbench.algorithms import build_trl_args

    overrides = [f"experiment={experiment}"]
    data = compose("train", overrides)
    if data["model"].get("kind") == "hf" and not (data["model"].get("name_or_path") or data["model"].get("gguf_file")):
        # an experiment on a local model folder its script passes (hapo_repeat: the replication's tiny cache folder)
        overrides.append("model.name_or_path=/tmp/a-local-model")
    cfg = to_train_config(compose("train", overrides))
    assert cfg.experiment_name == experiment
    terms = {kind: build_terms(kind, getattr(cfg, kind)) for kind in ("reward", "advantage", "regularizer")}
    assert terms["reward"], "an experiment needs at least one reward term"
    trl = dict(cfg.algo.trl)
    for reg in terms["regularizer"]:
        trl.update(reg.trl_args())
    build_trl_args(cfg.algo.name, trl, {"output_dir": "/tmp/x", "use_cpu": True, "bf16": False})


def test_experiment_files_start_with_their_command():
    for name in EXPERIMENTS:
        text = (CONF_DIR / "experiment" / f"{name}.yaml").read_text()
        assert f"rl train experiment={name}" in text.split("\n\n")[0], name


@pytest.mark.parametrize("group", ["model", "task", "algo", "logger"])
def test_every_group_option_composes(group):
    for option in config_groups()[group]:
        data = compose("train", [f"{group}={option}"])
        if group == "model" and data["model"].get("kind") == "hf" and not (
            data["model"].get("name_or_path") or data["model"].get("gguf_file")
        ):
            with pytest.raises(ConfigError, match="model.name_or_path"):
                to_train_config(data)
            continue
        to_train_config(data)


def test_list_valued_reward_group_composes():
    cfg = to_train_config(compose("train", ["reward=[correctness,format]", "reward.format.weight=0.5"]))
    assert list(cfg.reward) == ["correctness", "format"]
    assert cfg.reward["format"]["weight"] == 0.5


def test_conf_dir_is_the_projects():
    assert Path(CONF_DIR).joinpath("train.yaml").exists()
