"""`arithmetic_explore`: the default a+-b task with a warm start whose long traces explore (issue 23, PEAR).

PEAR (METHODS.md card 1) penalises the mean think-phase entropy, on the premise that long reasoning is the
high-entropy, exploratory kind. In the replication's padded traces the long style restates the working, which
spreads the same few uncertain tokens over more near-certain ones, so long traces have the *lower* mean entropy and
the premise fails. Here the long style is try-and-check: after the working, the trace samples one or two wrong
candidate answers near the result, checks each by the inverse operation and rejects it, then checks the result:

    short  <think>63-40=23. 23-5=18</think>18
    long   <think>63-40=23. 23-5=18. 21+45=66 no. 14+45=59 no. 18+45=63 ok</think>18

The candidates (how many, and which offsets from the result) are drawn from the warm start's random stream, so a
model that imitates the long style has genuine uncertainty at the candidate tokens: about ln 2 nats for the count
plus ln 18 for each candidate's offset (`CANDIDATE_OFFSETS`), where the short style's tokens are all determined by
the problem. Both styles carry the same working and end on the same answer, so neither is more accurate by
construction; the tries only add exploration, which is what PEAR is meant to remove. Generation, prompts, scoring
and the held-out split are exactly `task=arithmetic`'s (2-term sums; the check needs one operation to invert).
"""

from __future__ import annotations

import random
from typing import Any

from workbench.config import ConfigError, TaskConfig
from workbench.tasks.base import THINK_CLOSE, THINK_OPEN
from workbench.tasks.gym import ArithmeticTask, chain_working

#: Offsets of a wrong candidate from the result: -9..-1 and 1..9 (18 values, uniform).
CANDIDATE_OFFSETS = tuple(d for d in range(-9, 10) if d)
#: How many wrong candidates a long trace tries before the result (uniform).
WRONG_TRIES = (1, 2)


def check_step(expression: str, candidate: int) -> str:
    """A candidate answer checked by inverting the operation: for `a-b`, `c+b=a'`; for `a+b`, `c-b=a'`; then `ok`
    when a' is a, else `no`.

    >>> check_step("63 - 45", 21), check_step("63 - 45", 18), check_step("12 + 34", 40)
    ('21+45=66 no', '18+45=63 ok', '40-34=6 no')
    """
    a, op, b = parse_pair(expression)
    undo, back = ("+", candidate + b) if op == "-" else ("-", candidate - b)
    return f"{candidate}{undo}{b}={back} {'ok' if back == a else 'no'}"


def parse_pair(expression: str) -> tuple[int, str, int]:
    """`a op b` of a two-term reasoning-gym expression ("63 - 45"); ValueError for anything else."""
    tokens = expression.split()
    if len(tokens) != 3 or tokens[1] not in ("+", "-"):
        raise ValueError(f"arithmetic_explore needs two-term expressions like '63 - 45', got {expression!r}")
    return int(tokens[0]), tokens[1], int(tokens[2])


def explore_trace(expression: str, rng: random.Random) -> str:
    """The long, exploratory trace: the working, then `WRONG_TRIES` sampled wrong candidates near the result, each
    checked and rejected, then the result checked.

    >>> explore_trace("63 - 45", random.Random(0))
    '<think>63-40=23. 23-5=18. 23+45=68 no. 10+45=55 no. 18+45=63 ok</think>18'
    """
    a, op, b = parse_pair(expression)
    result = a - b if op == "-" else a + b
    working = chain_working(expression)
    think = working[len(THINK_OPEN): working.index(THINK_CLOSE)]
    wrong = rng.sample(CANDIDATE_OFFSETS, rng.choice(WRONG_TRIES))
    tries = [check_step(expression, result + d) for d in wrong] + [check_step(expression, result)]
    return f"{THINK_OPEN}{think}. {'. '.join(tries)}{THINK_CLOSE}{result}"


class ExploreArithmeticTask(ArithmeticTask):
    """`task=arithmetic` with try-and-check long warm-start traces (use with the default `verbose_style=steps`)."""

    name = "arithmetic_explore"

    def __init__(self, cfg: TaskConfig):
        terms = {k: cfg.params[k] for k in ("min_terms", "max_terms") if k in cfg.params}
        if any(v != 2 for v in terms.values()):
            raise ConfigError(f"task=arithmetic_explore needs two-term problems (task.params {terms}); "
                              "its check step inverts one operation")
        super().__init__(cfg)

    def warm_start_completion(self, example: dict[str, Any], rng: random.Random, verbose: bool) -> str | None:
        if verbose:
            return explore_trace(example["expression"], rng)
        return chain_working(example["expression"])
