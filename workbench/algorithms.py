"""The RL algorithms `algo.name` chooses between: one table (`ALGORITHMS`) says, for each, its TRL config class, the
workbench trainer that runs it and what it supports; every place that depends on the algorithm reads it here
(`workbench.checks`: types and ranges of `algo.*`, what a config may combine; `workbench.train`: the trainer).

Classes are named by import path, so importing this module stays cheap (`rl --help` imports no TRL); they load
when `config_class` / `trainer_class` are called. Adding an algorithm is one row here and one `conf/algo/` file
(`workbench.config.ALGOS`, which checks `algo.name` while the config is converted, is read from this table).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any

from workbench.errors import ConfigError


@dataclass(frozen=True)
class Algorithm:
    name: str
    config_class: str  # import path of the TRL config dataclass that `algo.*` keys are checked against and build
    trainer_class: str  # import path of the workbench trainer (a subclass of TRL's) that trains with it
    trl_trainer: str  # the TRL trainer it extends, as messages name it
    loss_regularizers: bool  # loss-side regularizers (a token hook or a loss term: clip_cov, kl_cov, siren)
    tools: bool  # TRL's multi-turn tool loop (task.tools; the trainer takes an environment_factory)
    # TRL options the workbench sets unless `algo.*` gives them
    defaults: dict[str, Any] = field(default_factory=dict)


ALGORITHMS: dict[str, Algorithm] = {a.name: a for a in (
    Algorithm("grpo", "trl.GRPOConfig", "workbench.trainers.ShapedGRPOTrainer", "GRPOTrainer",
              loss_regularizers=True, tools=True,
              # also when a config leaves conf/algo/grpo.yaml out: per-group std scaling blew up all-wrong groups
              # with a length term and collapsed the model (DESIGN.md prototype); "none" is also Dr. GRPO's choice
              defaults={"scale_rewards": "none"}),
    Algorithm("rloo", "trl.RLOOConfig", "workbench.trainers.ShapedRLOOTrainer", "RLOOTrainer",
              loss_regularizers=False, tools=False),
)}


def algorithm(name: str) -> Algorithm:
    """The table's row for `name`; a name not in it is a one-line ConfigError naming the choices."""
    try:
        return ALGORITHMS[name]
    except KeyError:
        raise ConfigError(f"algo.name={name!r} is not valid; choose one of: {', '.join(ALGORITHMS)}") from None


def supporting(feature: str) -> list[Algorithm]:
    """The algorithms that support `feature` (a boolean field of Algorithm: "tools", "loss_regularizers")."""
    return [a for a in ALGORITHMS.values() if getattr(a, feature)]


def load(path: str) -> Any:
    """The object an import path `package.module.Name` names."""
    module, _, name = path.rpartition(".")
    return getattr(importlib.import_module(module), name)


def config_class(name: str) -> type:
    """The TRL config dataclass of algorithm `name` (imports TRL)."""
    return load(algorithm(name).config_class)


def trainer_class(name: str) -> type:
    """The workbench trainer of algorithm `name` (imports TRL and workbench.trainers)."""
    return load(algorithm(name).trainer_class)


def build_trl_args(algo_name: str, options: dict[str, Any], fixed: dict[str, Any]):
    """GRPOConfig/RLOOConfig from the algo/ config group, unknown keys rejected with close matches."""
    import dataclasses
    import difflib

    cls = config_class(algo_name)
    valid = {f.name for f in dataclasses.fields(cls)}
    for key in options:
        if key not in valid:
            close = difflib.get_close_matches(key, valid, n=3)
            hint = f"; did you mean {', '.join(close)}?" if close else f"; valid keys are the fields of trl.{cls.__name__}"
            raise ConfigError(f"unknown key 'algo.{key}'{hint}")
    kwargs = {**options, **fixed}
    aggregation = kwargs.get("multi_objective_aggregation", "sum_then_normalize")
    if aggregation != "sum_then_normalize":
        # Shaping terms see (and samples.jsonl records) the weighted sum of the terms; TRL's normalize_then_sum would
        # give the policy a different reward than the one they read.
        raise ConfigError(f"algo.multi_objective_aggregation={aggregation!r} is not supported: the workbench's "
                          f"reward is the weighted sum of its terms; use sum_then_normalize")
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as e:
        msg = " ".join(str(e).split())
        raise ConfigError(f"algo: {msg}") from None
