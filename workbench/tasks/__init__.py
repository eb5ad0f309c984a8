"""Tasks: prompts plus the scorer shared by training rewards and `rl eval`.

`TASKS` maps the `task.kind` values (or, where `kind` is unset, the `task.name` values) of conf/task/*.yaml to
Task classes; `build_task(cfg)` builds one and turns every configuration mistake (unknown name, missing file or
column, bad reasoning-gym params) into a one-line `ConfigError`. `task=gym` sets `kind: gym`, which frees
`task.name` to name any reasoning-gym dataset. Importing this package is cheap: reasoning-gym, datasets and
math-verify load on first use.

Example dicts carry `prompt`, `answer` (str), `id` (index within the split) and `question` (natural text),
plus task-specific columns (`expression` for arithmetic/chain_sum, `numbers`/`target` for countdown, `entry` for
gym: the reasoning-gym entry as JSON).
"""

from __future__ import annotations

from workbench.config import PROMPT_STYLES, ConfigError, TaskConfig
from workbench.tasks.agentic import MixedArithmeticTask
from workbench.tasks.base import THINK_CLOSE, THINK_OPEN, Task, split_think
from workbench.tasks.explore import ExploreArithmeticTask
from workbench.tasks.files import FileTask
from workbench.tasks.gym import ArithmeticTask, ChainSumTask, CountdownTask, GymDatasetTask
from workbench.tasks.hf import HFTask
from workbench.tasks.orders import SumOrdersTask
from workbench.tasks.pool import ArithmeticPoolTask

TASKS: dict[str, type[Task]] = {
    "arithmetic": ArithmeticTask,
    "arithmetic_explore": ExploreArithmeticTask,
    "arithmetic_pool": ArithmeticPoolTask,
    "chain_sum": ChainSumTask,
    "countdown": CountdownTask,
    "file": FileTask,
    "gym": GymDatasetTask,
    "hf": HFTask,
    "mixed_arithmetic": MixedArithmeticTask,
    "sum_orders": SumOrdersTask,
}


def build_task(cfg: TaskConfig) -> Task:
    """The Task named by `cfg.kind` (or `cfg.name` when kind is unset), configured by `cfg`; raises a one-line
    ConfigError on bad settings."""
    if cfg.kind is not None:
        if cfg.kind not in TASKS:
            raise ConfigError(f"task.kind={cfg.kind!r} is not valid; choose one of: {', '.join(TASKS)}")
    elif cfg.name == "gym":
        raise ConfigError("task.name=gym: pick the reasoning-gym dataset with task=gym task.name=<dataset>")
    elif cfg.name not in TASKS:
        raise ConfigError(f"task.name={cfg.name!r} is not valid; choose one of: {', '.join(TASKS)}")
    if cfg.prompt_style not in PROMPT_STYLES:
        raise ConfigError(
            f"task.prompt_style={cfg.prompt_style!r} is not valid; choose one of: {', '.join(PROMPT_STYLES)}"
        )
    from workbench.tools import check_tools

    try:
        check_tools(list(cfg.tools))
    except ValueError as e:
        raise ConfigError(str(e)) from None
    if cfg.tool_timeout <= 0:
        raise ConfigError(f"task.tool_timeout={cfg.tool_timeout} must be positive (seconds)")
    if cfg.max_tool_calls < 1:
        raise ConfigError(f"task.max_tool_calls={cfg.max_tool_calls} must be at least 1")
    task = TASKS[cfg.kind or cfg.name](cfg)
    task.tools = tuple(cfg.tools)
    return task


__all__ = [
    "TASKS",
    "THINK_CLOSE",
    "THINK_OPEN",
    "ArithmeticPoolTask",
    "ArithmeticTask",
    "ChainSumTask",
    "CountdownTask",
    "ExploreArithmeticTask",
    "FileTask",
    "GymDatasetTask",
    "HFTask",
    "MixedArithmeticTask",
    "SumOrdersTask",
    "Task",
    "build_task",
    "split_think",
]
