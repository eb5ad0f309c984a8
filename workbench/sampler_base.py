"""The sampler interface and its registry (the contract is `workbench.sampling`'s docstring).

Apart from `workbench.sampling` so that sampler modules beside it (`workbench.sampling_replay`) can subclass and
register without importing the module that imports them.
"""

from __future__ import annotations

import random
from typing import Any, ClassVar

SAMPLERS: dict[str, type[Sampler]] = {}


def register(cls: type[Sampler]) -> type[Sampler]:
    """Class decorator: make a sampler selectable by its `name` in the ``sampler`` config group."""
    if cls.name in SAMPLERS:
        raise ValueError(f"sampler '{cls.name}' registered twice")
    SAMPLERS[cls.name] = cls
    return cls


class Sampler:
    """Base class (a dataclass subclass holds the options). The contract is `workbench.sampling`'s docstring."""

    name: ClassVar[str] = ""

    def check(self) -> None:
        """Option checks at config time (a one-line ConfigError)."""

    def bind_task(self, task: Any) -> None:
        """Called once with the run's task (a sampler that needs task facts checks them here)."""

    def plan(self, rows: list[dict[str, Any]], group_size: int, step: int, rng: random.Random) -> list[dict[str, Any]]:
        return rows

    def observe(self, rollouts: Any, rows: list[dict[str, Any]]) -> None:
        pass

    def metrics(self) -> dict[str, float]:
        return {}

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass
