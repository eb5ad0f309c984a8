"""The task interface: a dataset of prompts plus the scorer that training rewards and `rl eval` share.

One scorer for both keeps reward and evaluation from drifting apart (the nanochat habit).
"""

from __future__ import annotations

import random
from abc import ABC, abstractmethod
from typing import Any

THINK_OPEN = "<think>"
THINK_CLOSE = "</think>"
#: Full credit: only a score of 1 counts as correct (accuracy, pass@k, the `correct` signal). Binary scorers return
#: 0/1; scorers with partial credit (reasoning-gym datasets give e.g. 0.875 for a near miss) pass their score through
#: as the correctness reward, but a near miss is not a correct answer.
CORRECT_THRESHOLD = 1.0 - 1e-9


def is_correct(score: float) -> bool:
    """Whether a task score counts as a correct answer (the one rule for training and `rl eval`)."""
    return float(score) >= CORRECT_THRESHOLD


def split_think(completion: str) -> tuple[str, str, bool]:
    """Split a completion at the first `</think>`: (think part, answer part, whether `</think>` was present).

    Without a closing tag the whole completion counts as thinking and the answer part is empty.

    >>> split_think("<think>2+2=4</think>4")
    ('<think>2+2=4', '4', True)
    """
    head, sep, tail = completion.partition(THINK_CLOSE)
    if not sep:
        return completion, "", False
    return head, tail, True


def padded_trace(concise: str, target_length: int) -> str:
    """A long trace that carries no more information than `concise`: its think part restated, ". "-separated, as
    many times as brings the whole trace closest to `target_length` characters (at least twice).

    The tiny model's `verbose_style=padded` warm start uses it with the length of the task's step-by-step trace,
    so the long style is as long as the step-by-step one but cannot be more accurate: a model can be short and
    right (DESIGN.md: with padding-only long traces a length reward cut length 60% at -0.2 points).

    >>> padded_trace("<think>63-45=18</think>18", 61)  # 61: len(chain_trace("63 - 45", verbose=True))
    '<think>63-45=18. 63-45=18. 63-45=18. 63-45=18. 63-45=18</think>18'
    """
    head, answer, closed = split_think(concise)
    if not closed:
        raise ValueError(f"padded_trace needs a '<think>...</think>answer' trace, got {concise!r}")
    think = head[len(THINK_OPEN):] if head.startswith(THINK_OPEN) else head
    step = len(think) + 2  # one more ". " + restatement
    copies = max(2, 1 + round((target_length - len(concise)) / max(1, step)))
    return f"{THINK_OPEN}{'. '.join([think] * copies)}{THINK_CLOSE}{answer}"


class Task(ABC):
    """A task: examples (dicts with at least `prompt`, `answer`, `id`) and a scorer.

    Examples are plain dicts so they go straight into a `datasets.Dataset` and reach TRL reward functions as
    keyword columns.
    """

    name: str = "task"

    @abstractmethod
    def examples(self, split: str) -> list[dict[str, Any]]:
        """Examples of `split` ("train" or "eval"), deterministic for a given config."""

    @abstractmethod
    def extract_answer(self, completion: str) -> str | None:
        """The final answer in a completion (after `</think>` when present), or None if there is none."""

    @abstractmethod
    def score(self, completion: str, example: dict[str, Any]) -> float:
        """A score in [0, 1] for the completion's final answer: 1.0 correct, 0.0 wrong, in between partial credit
        (only full credit counts as correct: `is_correct`)."""

    def warm_start_completion(self, example: dict[str, Any], rng: random.Random, verbose: bool) -> str | None:
        """A correct reference completion used for the tiny model's supervised warm start.

        `verbose` asks for a step-by-step trace rather than a concise one. Tasks that cannot produce traces
        return None, and the tiny model cannot warm-start on them.
        """
        return None
