"""`workbench.compose.compose(..., given=)`: a config given in place of a group (rl eval's run directory) takes the
command-line overrides by Hydra's grammar, as every other composition, and leaves no trace in Hydra's ConfigStore."""

from __future__ import annotations

import dataclasses

import pytest

from workbench.compose import GIVEN, compose, parse_overrides
from workbench.config import ConfigError, ModelConfig, PriceConfig, TaskConfig


def _given() -> dict[str, dict]:
    return {
        "model": dataclasses.asdict(ModelConfig(kind="hf", name_or_path="/runs/x/final")),
        "task": dataclasses.asdict(TaskConfig(name="chain_sum", eval_size=30, params={"num_terms": 3})),
        "price": dataclasses.asdict(PriceConfig(prompt_per_million=9.0, tools={"calculator": 0.5})),
    }


def test_given_configs_replace_the_groups_and_take_overrides():
    data = compose("eval", ["eval.n=3", "task.eval_size=50", "task.params.num_digits=2", "price.tools.expert=0.1",
                            "task.tools=[calculator]"], given=_given())
    assert data["model"]["name_or_path"] == "/runs/x/final" and data["model"]["kind"] == "hf"
    # conf/task/arithmetic.yaml (what conf/eval.yaml picks) is replaced, not merged: the given task's values stay
    assert data["task"]["name"] == "chain_sum" and data["task"]["eval_size"] == 50
    assert data["task"]["params"] == {"num_terms": 3, "num_digits": 2} and data["task"]["tools"] == ["calculator"]
    assert data["price"] == {"prompt_per_million": 9.0, "completion_per_million": 0.6,
                             "tools": {"calculator": 0.5, "expert": 0.1}}
    assert data["eval"]["n"] == 3


def test_given_options_are_removed_afterwards():
    from hydra.core.config_store import ConfigStore

    compose("eval", [], given=_given())
    for group in ("model", "task", "price"):
        assert f"{GIVEN}.yaml" not in ConfigStore.instance().repo.get(group, {})
    data = compose("eval", [])
    assert data["model"]["kind"] == "tiny" and data["task"]["name"] == "arithmetic"


def test_given_override_errors_are_one_line():
    with pytest.raises(ConfigError, match="no viable alternative") as e:
        compose("eval", ["price.prompt_per_million=[1"], given=_given())
    assert "\n" not in str(e.value)


def test_parse_overrides_reads_keys_and_kinds():
    plain, added, sweep = parse_overrides(["task.eval_size=5", "+task.x=1", "eval.n=1,2"])
    assert plain.key_or_group == "task.eval_size" and plain.value() == 5 and not plain.is_add()
    assert added.is_add() and sweep.is_sweep_override()
    with pytest.raises(ConfigError):
        parse_overrides(["task.eval_size=[1"])
