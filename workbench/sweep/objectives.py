"""A sweep's objective: what an Optuna sweep optimises and the index reports for every job.

An objective is a summary.json key, a {key: weight} mapping (the weighted sum) or a list of those (multi-objective
Optuna, one `hydra.sweeper.direction` each). Its value for a job is read from the job's summary.json.
"""

from __future__ import annotations

import re
from typing import Any

from workbench.config import ConfigError

# summary.json keys an objective may name (workbench.summary.summarize).
SUMMARY_METRICS = (
    "eval/accuracy", "eval/accuracy_start", "eval/length/mean", "eval/length/mean_start", "train/reward",
    "train/accuracy", "length/mean", "entropy/mean", "cost/mean", "perf/step_time", "steps", "train_seconds",
)

# The end-of-training evaluation in summary.json carries rl eval's metric names too.
EVAL_METRIC = re.compile(
    r"eval/(pass@\d+|maj@\d+|length/(median|p90|correct_mean|incorrect_mean)|truncation_rate"
    r"|entropy/(mean|think|answer)|cost/mean|cost_of_pass)"
)


def check_objective(objective: Any) -> Any:
    """Returns the objective unchanged; raises ConfigError naming the bad key."""
    if isinstance(objective, str):
        if objective not in SUMMARY_METRICS and not EVAL_METRIC.fullmatch(objective):
            raise ConfigError(f"objective {objective!r} is not a summary.json metric; choose from: "
                              f"{', '.join(SUMMARY_METRICS)}")
        return objective
    if isinstance(objective, dict) and objective:
        for k, w in objective.items():
            check_objective(str(k))
            if isinstance(w, bool) or not isinstance(w, (int, float)):
                raise ConfigError(f"objective weight for {k!r} must be a number, got {w!r}")
        return objective
    if isinstance(objective, list) and objective and all(not isinstance(o, list) for o in objective):
        for o in objective:
            check_objective(o)
        return objective
    raise ConfigError(f"objective must be a metric name, a {{metric: weight}} mapping or a list of those, "
                      f"got {objective!r}")


def objective_metrics(objective: Any) -> list[str]:
    """The summary.json keys an objective reads."""
    if objective is None:
        return []
    if isinstance(objective, str):
        return [objective]
    if isinstance(objective, dict):
        return [str(k) for k in objective]
    return [m for o in objective for m in objective_metrics(o)]


def objective_value(objective: Any, summary: dict[str, Any]) -> Any:
    """The objective's value for one run's summary (None when a metric it needs is missing)."""
    if objective is None:
        return None
    if isinstance(objective, list):
        values = [objective_value(o, summary) for o in objective]
        return None if any(v is None for v in values) else values
    if isinstance(objective, str):
        v = summary.get(objective)
        return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None
    total = 0.0
    for k, w in objective.items():
        v = objective_value(str(k), summary)
        if v is None:
            return None
        total += float(w) * v
    return total


def describe_objective(objective: Any) -> str:
    """'1*eval/accuracy - 0.005*eval/length/mean' (display)."""
    if objective is None:
        return "-"
    if isinstance(objective, str):
        return objective
    if isinstance(objective, dict):
        return " + ".join(f"{w:g}*{k}" for k, w in objective.items()).replace("+ -", "- ")
    return ", ".join(describe_objective(o) for o in objective)
