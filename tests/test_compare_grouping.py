"""The group identity (workbench.grouping): one rule for rl compare's groups and the W&B group name."""

from __future__ import annotations

from workbench.grouping import config_group_id, flatten, seed_free, setting_key


def test_group_identity_is_one_rule():
    """rl compare's groups and the W&B group name come from the same setting key (workbench.grouping)."""
    a = {"experiment_name": "x", "seed": 1, "name": "a", "algo": {"lr": 1e-4, "seed": 1}, "logger": {"mode": "off"}}
    b = {**a, "seed": 2, "name": "b", "algo": {"lr": 1e-4, "seed": 2}, "logger": {"mode": "online"}}
    c = {**a, "algo": {"lr": 2e-4, "seed": 1}}
    keys = [setting_key(seed_free(flatten(cfg))) for cfg in (a, b, c)]
    assert keys[0] == keys[1] != keys[2]
    assert config_group_id(a) == config_group_id(b) != config_group_id(c) and config_group_id(a).startswith("x-")
