"""`mixed_arithmetic`: a task where a tool pays off on some problems and not on others, and the model picks a mode.

Half the problems (``hard_fraction``) are *hard*: a 3-digit x 2-digit product ("347*86="), which the tiny model
cannot compute reliably in its head or step by step; the rest are *easy*: one-digit a+b / a-b ("7+5="), which it
answers at once. Each completion starts with a mode tag (A^2FM's three modes, cheapest first):

* ``[instant]29842``: answer directly;
* ``[reasoning]<think>347*80=27760. 347*6=2082. 27760+2082=29842</think>29842``: think step by step;
* ``[agentic]`` + a tool call (``calculator`` or ``expert``, run for real by ``workbench.tools``), the tool's
  result, then the answer.

The tiny model is warm-started on traces of all three modes in equal shares (the agentic ones call the calculator
three times in four, the dearer expert otherwise), on easy and hard problems alike, so RL has a choice to make:
which mode, and which tool, is worth its cost on which problem. Agentic traces are chat messages (assistant with
``tool_calls``, ``tool``, assistant): the tiny model's tool chat template renders them, so the warm start sees
exactly the token layout TRL builds during RL (``workbench.models.tiny``).

Examples carry ``difficulty`` (easy | hard), so ``rl eval`` reports accuracy, cost and mode shares per difficulty.
Held-out hard problems never occur in training; the ~200 easy ones all do (see ``_generate``).
Scoring: the last number after ``</think>`` (or in the whole answer without think tags) of the model's own text;
tool results are not model text and never count as an answer.
"""

from __future__ import annotations

import random
from typing import Any

from workbench.config import ConfigError, TaskConfig
from workbench.tasks.base import THINK_CLOSE, THINK_OPEN, Task, held_out_split, numbered_splits
from workbench.tasks.scoring import answer_text, final_number, numbers_equal

#: A^2FM's modes, cheapest first, and the tag that opens a completion in each.
MODES = ("instant", "reasoning", "agentic")
MODE_TAGS = {m: f"[{m}]" for m in MODES}
DIFFICULTIES = ("easy", "hard")
EVAL_SEED_OFFSET = 7919


def mode_instruction(tools: tuple[str, ...]) -> str:
    tool_text = " or ".join(tools) if tools else "a tool"
    return (f"Start with a mode tag: {MODE_TAGS['instant']} to answer at once, {MODE_TAGS['reasoning']} to think "
            f"step by step inside {THINK_OPEN}{THINK_CLOSE}, or {MODE_TAGS['agentic']} to call {tool_text}. "
            "Then give the final answer as a number.")


def product_trace(a: int, b: int) -> str:
    """Step-by-step long multiplication by the tens and ones of `b`.

    >>> product_trace(347, 86)
    '<think>347*80=27760. 347*6=2082. 27760+2082=29842</think>29842'
    """
    tens, ones = b - b % 10, b % 10
    parts = [p for p in (tens, ones) if p]
    if len(parts) < 2:
        return f"{THINK_OPEN}{a}*{b}={a * b}{THINK_CLOSE}{a * b}"
    steps = [f"{a}*{p}={a * p}" for p in parts] + [f"{a * tens}+{a * ones}={a * b}"]
    return f"{THINK_OPEN}{'. '.join(steps)}{THINK_CLOSE}{a * b}"


class MixedArithmeticTask(Task):
    """Easy one-digit +/- mixed with hard 3-digit x 2-digit products; the completion names its mode (see module)."""

    name = "mixed_arithmetic"
    modes = MODES
    defaults = {"hard_fraction": 0.5, "hard_digits": [3, 2], "easy_digits": 1, "expert_fraction": 0.25}

    def __init__(self, cfg: TaskConfig):
        self.cfg = cfg
        unknown = set(cfg.params) - set(self.defaults)
        if unknown:
            raise ConfigError(f"task.params.{sorted(unknown)[0]} is not an option of mixed_arithmetic; valid: "
                              f"{', '.join(self.defaults)}")
        self.params = {**self.defaults, **cfg.params}
        p = self.params
        if not 0.0 <= float(p["hard_fraction"]) <= 1.0:
            raise ConfigError(f"task.params.hard_fraction={p['hard_fraction']} must be in [0, 1]")
        if not 0.0 <= float(p["expert_fraction"]) <= 1.0:
            raise ConfigError(f"task.params.expert_fraction={p['expert_fraction']} must be in [0, 1]")
        hd = list(p["hard_digits"])
        if len(hd) != 2 or not all(1 <= int(d) <= 6 for d in hd):
            raise ConfigError(f"task.params.hard_digits={hd} must be two digit counts between 1 and 6")
        if not 1 <= int(p["easy_digits"]) <= 3:
            raise ConfigError(f"task.params.easy_digits={p['easy_digits']} must be between 1 and 3")
        if cfg.train_size < 1 or cfg.eval_size < 0:
            raise ConfigError("task.train_size must be >= 1 and task.eval_size >= 0")
        self.tools: tuple[str, ...] = tuple(cfg.tools)
        self._cache: dict[str, list[dict[str, Any]]] = {}

    # -- data ----------------------------------------------------------------------------------------------

    def _problem(self, rng: random.Random) -> tuple[str, int, str]:
        p = self.params
        if rng.random() < float(p["hard_fraction"]):
            da, db = (int(d) for d in p["hard_digits"])
            a, b = rng.randint(10 ** (da - 1), 10**da - 1), rng.randint(max(2, 10 ** (db - 1)), 10**db - 1)
            return f"{a}*{b}", a * b, "hard"
        top = 10 ** int(p["easy_digits"]) - 1
        a, b = rng.randint(0, top), rng.randint(0, top)
        if rng.random() < 0.5:
            return f"{a}+{b}", a + b, "easy"
        a, b = max(a, b), min(a, b)  # non-negative results: the easy half is meant to be answerable at once
        return f"{a}-{b}", a - b, "easy"

    def _example(self, expression: str, value: int, difficulty: str) -> dict[str, Any]:
        compact = f"{expression}="
        prompt = compact if self.cfg.prompt_style == "compact" else (
            f"What is {expression}?\n{mode_instruction(self.tools)}")
        return {"prompt": prompt, "answer": str(value), "id": -1, "question": f"What is {expression}?",
                "expression": expression, "difficulty": difficulty}

    def _generate(self) -> None:
        cfg = self.cfg
        rng = random.Random(cfg.seed)
        train = [self._example(*self._problem(rng)) for _ in range(cfg.train_size)]
        # Hard problems in eval are never in train. Easy ones are drawn from only ~200 one-digit sums and
        # differences, which a training set of any size covers, so eval keeps them (distinct within eval): the easy
        # half measures whether the model answers what it knows at once, not generalisation.
        seen = {ex["expression"] for ex in train if ex["difficulty"] == "hard"}
        rng = random.Random(cfg.seed + EVAL_SEED_OFFSET)
        evals = held_out_split(lambda i: self._example(*self._problem(rng)), lambda ex: ex["expression"], seen,
                               cfg.eval_size, 100 * cfg.eval_size + 1000, "problems",
                               "raise task.params.easy_digits or lower task.train_size")
        self._cache.update(numbered_splits(train, evals))

    def examples(self, split: str) -> list[dict[str, Any]]:
        if split not in ("train", "eval"):
            raise ValueError(f"split must be train or eval, got {split!r}")
        if not self._cache:
            self._generate()
        return [dict(ex) for ex in self._cache[split]]

    def fingerprint(self) -> dict[str, Any]:
        return {"params": self.params, "tools": list(self.tools), "prompt_style": self.cfg.prompt_style}

    # -- scoring -------------------------------------------------------------------------------------------

    def extract_answer(self, completion: str) -> str | None:
        text = completion
        for tag in MODE_TAGS.values():  # the tag is not part of the answer
            text = text.replace(tag, "")
        return final_number(answer_text(text))

    def score(self, completion: str, example: dict[str, Any]) -> float:
        return 1.0 if numbers_equal(self.extract_answer(completion), str(example["answer"])) else 0.0

    # -- warm start ----------------------------------------------------------------------------------------

    def warm_start_completion(self, example: dict[str, Any], rng: random.Random, verbose: bool) -> Any:
        """A trace in a mode drawn uniformly (`verbose` is unused: the modes are the styles). The agentic trace
        is a list of chat messages (needs `task.tools`); the others are text."""
        modes = [m for m in MODES if m != "agentic" or self.tools]
        mode = modes[rng.randrange(len(modes))]
        answer = str(example["answer"])
        if mode == "instant":
            return f"{MODE_TAGS['instant']}{answer}"
        if mode == "reasoning":
            expression = example["expression"]
            if "*" in expression:
                a, b = (int(x) for x in expression.split("*"))
                return MODE_TAGS["reasoning"] + product_trace(a, b)
            return f"{MODE_TAGS['reasoning']}{THINK_OPEN}{expression}={answer}{THINK_CLOSE}{answer}"
        use_expert = "expert" in self.tools and (
            "calculator" not in self.tools or rng.random() < float(self.params["expert_fraction"]))
        name, arguments = ("expert", {"question": example["expression"]}) if use_expert else (
            "calculator", {"expression": example["expression"]})
        return [
            {"role": "assistant", "content": MODE_TAGS["agentic"],
             "tool_calls": [{"type": "function", "function": {"name": name, "arguments": arguments}}]},
            {"role": "tool", "name": name, "content": answer},
            {"role": "assistant", "content": answer},
        ]
