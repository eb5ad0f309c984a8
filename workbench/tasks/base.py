"""The task interface: a dataset of prompts plus the scorer that training rewards and `rl eval` share.

One scorer for both keeps reward and evaluation from drifting apart (the nanochat habit).
"""

from __future__ import annotations

import random
from abc import ABC, abstractmethod
from typing import Any, Callable, Hashable

from workbench.errors import ConfigError

THINK_OPEN = "<think>"
THINK_CLOSE = "</think>"
#: Full credit: only a score of 1 counts as correct (accuracy, pass@k, the `correct` signal). Binary scorers return
#: 0/1; scorers with partial credit (reasoning-gym datasets give e.g. 0.875 for a near miss) pass their score through
#: as the correctness reward, but a near miss is not a correct answer.
CORRECT_THRESHOLD = 1.0 - 1e-9


def is_correct(score: float) -> bool:
    """Whether a task score counts as a correct answer (the one rule for training and `rl eval`)."""
    return float(score) >= CORRECT_THRESHOLD


def held_out_split(draw: Callable[[int], dict[str, Any]], key: Callable[[dict[str, Any]], Hashable],
                   seen: set[Hashable], eval_size: int, max_tries: int, what: str, hint: str) -> list[dict[str, Any]]:
    """The eval split of a generated task: `eval_size` problems drawn by `draw(i)` (i = 0, 1, ...), each kept only
    if its `key` is not in `seen` (the training keys; the kept ones are added, so eval problems are distinct too).
    Raises ConfigError after `max_tries` draws, naming `task.eval_size`, what ran short and `hint` (what to widen)."""
    evals: list[dict[str, Any]] = []
    i = 0
    while len(evals) < eval_size and i < max_tries:
        ex = draw(i)
        i += 1
        k = key(ex)
        if k not in seen:
            seen.add(k)
            evals.append(ex)
    if len(evals) < eval_size:
        raise ConfigError(f"task.eval_size={eval_size}: only {len(evals)} distinct {what} outside the training set; "
                          f"{hint}")
    return evals


def numbered_splits(train: list[dict[str, Any]], evals: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """The two splits with each example's `id` its index in its split."""
    for rows in (train, evals):
        for i, ex in enumerate(rows):
            ex["id"] = i
    return {"train": train, "eval": evals}


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


PADDED_COPIES = 3


def padded_trace(short: str, copies: int = PADDED_COPIES) -> str:
    """A long trace that carries no more information than `short`: its think part stated `copies` times,
    ". "-separated, with the same answer.

    The tiny model's `verbose_style=padded` warm start (workbench.models.tiny.warm_start_trace) pairs a short trace
    that shows the working (`Task.warm_start_working`) with this restatement of it, so the long style cannot be
    more accurate than the short one: a model can be short and right (DESIGN.md: with padding-only long traces a
    length reward cut length 60% at -0.2 points).

    >>> padded_trace("<think>63-40=23. 23-5=18</think>18")
    '<think>63-40=23. 23-5=18. 63-40=23. 23-5=18. 63-40=23. 23-5=18</think>18'
    """
    head, answer, closed = split_think(short)
    if not closed:
        raise ValueError(f"padded_trace needs a '<think>...</think>answer' trace, got {short!r}")
    if copies < 2:
        raise ValueError(f"copies must be >= 2, got {copies}")
    think = head[len(THINK_OPEN):] if head.startswith(THINK_OPEN) else head
    return f"{THINK_OPEN}{'. '.join([think] * copies)}{THINK_CLOSE}{answer}"


class Task(ABC):
    """A task: examples (dicts with at least `prompt`, `answer`, `id`) and a scorer.

    Examples are plain dicts so they go straight into a `datasets.Dataset` and reach TRL reward functions as
    keyword columns.
    """

    name: str = "task"
    #: Tools the model may call in this task (`task.tools`; `workbench.tools`). Empty: plain generation.
    tools: tuple[str, ...] = ()
    #: Modes a completion may declare with a leading `[mode]` tag, cheapest first (`signals.completion_mode`).
    modes: tuple[str, ...] = ()

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

    def warm_start_working(self, example: dict[str, Any], rng: random.Random) -> str | None:
        """The shortest correct trace that still shows the working a small model needs (for a+-b: the tens-then-ones
        steps, without restating the problem or checking), or None (then the concise trace stands in).

        Used by the tiny model's `verbose_style=padded` warm start as its short style, restated by `padded_trace`
        for the long one, so that both styles are equally informative.
        """
        return None
