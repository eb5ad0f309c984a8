"""The RL algorithms `algo.name` chooses between, and their TRL configs."""

from __future__ import annotations

from typing import Any

from workbench.config import ConfigError


def build_trl_args(algo_name: str, options: dict[str, Any], fixed: dict[str, Any]):
    """GRPOConfig/RLOOConfig from the algo/ config group, unknown keys rejected with close matches."""
    import dataclasses
    import difflib

    from trl import GRPOConfig, RLOOConfig

    cls = GRPOConfig if algo_name == "grpo" else RLOOConfig
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
