"""`arithmetic_pool`: the default a+-b task whose RL training split is a small pool of its first problems, so that a
run revisits every training prompt many times (issue 23: HAPO's history-aware reward needs prompts seen before).

`task.params.pool_size` (the only option this task adds to the arithmetic task's reasoning-gym params) keeps the
first `pool_size` of the `task.train_size` training problems. Generation is unchanged: problem i is the same as in
`task=arithmetic`, and the held-out split is still drawn outside all `train_size` problems, so it is the same 200
held-out problems as `task=arithmetic` (none of them in the pool, nor in the full training set a tiny model was
warm-started on).

The warm start reads the training split too, so a tiny model built on this task would see only the pool: train a
model warm-started on `task=arithmetic` instead (`model=hf model.name_or_path=<its tiny cache folder>`, as
`scripts/miniatures_hapo_pear.sh` does).
"""

from __future__ import annotations

import dataclasses
from typing import Any

from workbench.config import ConfigError, TaskConfig
from workbench.tasks.gym import ArithmeticTask

#: The task.params key this task reads itself (every other key goes to reasoning-gym's chain_sum).
POOL_KEY = "pool_size"


class ArithmeticPoolTask(ArithmeticTask):
    """The arithmetic task with its training split cut to the first `task.params.pool_size` problems."""

    name = "arithmetic_pool"

    def __init__(self, cfg: TaskConfig):
        params = dict(cfg.params)
        if POOL_KEY not in params:
            raise ConfigError(f"task=arithmetic_pool needs task.params.{POOL_KEY} (the number of training prompts)")
        pool = params.pop(POOL_KEY)
        if not isinstance(pool, int) or isinstance(pool, bool) or not 1 <= pool <= cfg.train_size:
            raise ConfigError(
                f"task.params.{POOL_KEY}={pool!r} must be an integer from 1 to task.train_size={cfg.train_size}"
            )
        self.pool_size = pool
        super().__init__(dataclasses.replace(cfg, params=params))

    def examples(self, split: str) -> list[dict[str, Any]]:
        rows = super().examples(split)
        return rows[: self.pool_size] if split == "train" else rows
