"""The task's own rewards: correctness (the task scorer, shared with `rl eval`) and format."""

from __future__ import annotations

import torch

from workbench.rollouts import Rollouts
from workbench.shaping.base import RewardTerm, register
from workbench.tasks.base import THINK_CLOSE, THINK_OPEN


@register
class Correctness(RewardTerm):
    """The task scorer's score of the final answer (the scorer `rl eval` uses): 1 correct, 0 wrong, and for
    tasks that give partial credit (reasoning-gym datasets) the score itself, in [0, 1].

    >>> import torch
    >>> r = Rollouts(["a", "b"], [[1], [2]], torch.tensor([1, 1]), torch.tensor([3, 3]),
    ...              torch.tensor([False, False]), torch.tensor([1.0, 0.0]), 2, [0, 0], 8)
    >>> Correctness()(r).tolist()
    [1.0, 0.0]
    """

    name = "correctness"
    needs = frozenset({"correct"})

    def __call__(self, rollouts: Rollouts) -> torch.Tensor:
        return (rollouts.scores if rollouts.scores is not None else rollouts.correct).float()


@register
class Format(RewardTerm):
    """1 when the completion is `<think>...</think>` followed by a non-empty answer, else 0.

    A small weight (0.1 by default in conf/reward/format.yaml) keeps the think/answer structure that the phase
    signals (PEAR, entropy/think, entropy/answer) rely on, without competing with correctness.
    """

    name = "format"

    def __call__(self, rollouts: Rollouts) -> torch.Tensor:
        out = []
        for text in rollouts.completions:
            head, sep, tail = text.partition(THINK_CLOSE)
            ok = bool(sep) and head.lstrip().startswith(THINK_OPEN) and THINK_OPEN not in tail and tail.strip() != ""
            out.append(1.0 if ok else 0.0)
        return torch.tensor(out, dtype=torch.float32)
