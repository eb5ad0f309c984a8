"""`sum_orders`: add a few small numbers, where the warm-start traces add them in a random order.

The entropy-collapse miniature's task (README, "Entropy collapse miniature"; issue 23). Every problem has several
equally valid solutions: `7+15+3=` can be worked as `<think>7+15=22. 22+3=25</think>25`,
`<think>3+7=10. 10+15=25</think>25`, or any of the terms' other orders (n! for n terms). The tiny model's warm start
samples an order for every trace (`warm_start_completion`, with the warm start's own random stream): the prompt's
order with probability `in_order_fraction`, else a uniformly random one (default 0: always uniform), so the
warm-started policy has genuine entropy over the orders (ln 3! = 1.79 nats a trace for 3 terms when uniform, 1.35 at
0.5), at the few tokens that pick the next term. Every order is correct; a skewed warm start (0.5) makes the most
likely order also the best learned, the positive covariance between probability and advantage that Cui et al. find
drives entropy collapse. `direct_fraction` mixes in a second strategy, the whole sum in one step
(`<think>7+15+3=25</think>25`), for that fraction of the traces. Whether plain GRPO collapses here, and at which
settings: README, "Entropy collapse miniature".

Problems are generated here (no reasoning-gym dataset has several solutions with a cheap reference trace):
`task.params.terms` numbers drawn uniformly from [`min_value`, `max_value`], prompt `7+15+3=`, answer their sum.
The train split uses `task.seed`, the eval split `task.seed + EVAL_SEED_OFFSET`, and an eval problem whose multiset
of numbers is in the train split (or earlier in eval) is skipped, so the splits share no problem in any order.
"""

from __future__ import annotations

import random
from collections.abc import Hashable
from typing import Any

from workbench.config import ConfigError, TaskConfig
from workbench.tasks.base import THINK_CLOSE, THINK_OPEN, Task, held_out_split, numbered_splits
from workbench.tasks.gym import EVAL_SEED_OFFSET, check_split
from workbench.tasks.scoring import THINK_INSTRUCTION, answer_text, final_number, numbers_equal

DEFAULTS: dict[str, float] = {"terms": 3, "min_value": 1, "max_value": 20, "in_order_fraction": 0.0,
                              "direct_fraction": 0.0}
# Options that enter the fingerprint only when set (models built before they existed keep their cache key).
OPTIONAL = ("in_order_fraction", "direct_fraction")


def direct_trace(numbers: list[int]) -> str:
    """The one-step strategy: the whole sum written at once, no partial sums.

    >>> direct_trace([7, 15, 3])
    '<think>7+15+3=25</think>25'
    """
    total = sum(numbers)
    return f"{THINK_OPEN}{'+'.join(map(str, numbers))}={total}{THINK_CLOSE}{total}"


def order_trace(numbers: list[int], order: list[int]) -> str:
    """The trace that adds `numbers` in `order` (a permutation of their indices), one `a+b=c.` step per addition.

    >>> order_trace([7, 15, 3], [2, 0, 1])
    '<think>3+7=10. 10+15=25</think>25'
    """
    if sorted(order) != list(range(len(numbers))) or len(numbers) < 2:
        raise ValueError(f"order {order} is not a permutation of the indices of {numbers} (2+ numbers)")
    total = numbers[order[0]]
    steps = []
    for i in order[1:]:
        steps.append(f"{total}+{numbers[i]}={total + numbers[i]}")
        total += numbers[i]
    return f"{THINK_OPEN}{'. '.join(steps)}{THINK_CLOSE}{total}"


class SumOrdersTask(Task):
    """Sum `terms` small numbers; the warm-start trace adds them in a uniformly random order (module docstring)."""

    name = "sum_orders"

    def __init__(self, cfg: TaskConfig):
        unknown = sorted(set(cfg.params) - set(DEFAULTS))
        if unknown:
            raise ConfigError(f"task.params.{unknown[0]} is not an option of sum_orders; valid: {', '.join(DEFAULTS)}")
        self.cfg = cfg
        self.params = {**DEFAULTS, **cfg.params}
        terms, lo, hi = (self.params[k] for k in ("terms", "min_value", "max_value"))
        if not (isinstance(terms, int) and 2 <= terms <= 6):
            raise ConfigError(f"task.params.terms={terms!r} must be an integer from 2 to 6")
        if not (isinstance(lo, int) and isinstance(hi, int) and 0 <= lo <= hi):
            raise ConfigError(f"task.params.min_value={lo!r}, max_value={hi!r}: need integers 0 <= min <= max")
        for key in OPTIONAL:
            frac = self.params[key]
            if not (isinstance(frac, (int, float)) and 0.0 <= frac <= 1.0):
                raise ConfigError(f"task.params.{key}={frac!r} must be a number in [0, 1]")
        if cfg.train_size < 1:
            raise ConfigError(f"task.train_size={cfg.train_size} must be at least 1")
        if cfg.eval_size < 0:
            raise ConfigError(f"task.eval_size={cfg.eval_size} must be >= 0")
        self._cache: dict[str, list[dict[str, Any]]] = {}

    def fingerprint(self) -> dict[str, Any]:
        """The options that define the problems and traces (part of the tiny model's cache key); the OPTIONAL ones
        only when set, so models built before they existed keep their key."""
        return {"task": self.name, **{k: v for k, v in self.params.items() if k not in OPTIONAL or v}}

    def _problem(self, rng: random.Random) -> dict[str, Any]:
        numbers = [rng.randint(self.params["min_value"], self.params["max_value"])
                   for _ in range(self.params["terms"])]
        compact = "+".join(map(str, numbers)) + "="
        question = f"What is {' + '.join(map(str, numbers))}?"
        prompt = compact if self.cfg.prompt_style == "compact" else f"{question}\n{THINK_INSTRUCTION}"
        return {"prompt": prompt, "answer": str(sum(numbers)), "id": -1, "question": question, "numbers": numbers}

    @staticmethod
    def _key(example: dict[str, Any]) -> Hashable:
        return tuple(sorted(example["numbers"]))

    def _generate(self) -> None:
        cfg = self.cfg
        train_rng = random.Random(cfg.seed)
        train = [self._problem(train_rng) for _ in range(cfg.train_size)]
        seen = {self._key(ex) for ex in train}
        eval_rng = random.Random(cfg.seed + EVAL_SEED_OFFSET)
        evals = held_out_split(lambda i: self._problem(eval_rng), self._key, seen, cfg.eval_size,
                               50 * cfg.eval_size + 1000, "sum_orders problems",
                               "widen task.params (max_value, terms) or lower task.train_size")
        self._cache.update(numbered_splits(train, evals))

    def examples(self, split: str) -> list[dict[str, Any]]:
        check_split(split)
        if not self._cache:
            self._generate()
        return [{**ex, "numbers": list(ex["numbers"])} for ex in self._cache[split]]

    def extract_answer(self, completion: str) -> str | None:
        return final_number(answer_text(completion))

    def score(self, completion: str, example: dict[str, Any]) -> float:
        return 1.0 if numbers_equal(self.extract_answer(completion), str(example["answer"])) else 0.0

    def warm_start_completion(self, example: dict[str, Any], rng: random.Random, verbose: bool) -> str | None:
        """With probability `direct_fraction` the one-step trace (`direct_trace`, a second strategy; after the warm
        start the tiny model gets it right more often than the stepwise ones, README); otherwise a trace that adds
        the terms in the prompt's order with probability `in_order_fraction`, else in a uniformly random order (the
        prompt's among them). Drawn from `rng` (the warm start's stream), so the warm-start data holds every order.
        `verbose` is ignored: the strategies are the task's only choice of style."""
        direct = self.params["direct_fraction"]
        if direct and rng.random() < direct:  # no draw at 0: the streams of models built without it stay as built
            return direct_trace(list(example["numbers"]))
        order = list(range(len(example["numbers"])))
        frac = self.params["in_order_fraction"]
        if frac == 0 or rng.random() >= frac:  # no draw at 0: the uniform stream (and cached models) stay as built
            rng.shuffle(order)
        return order_trace(list(example["numbers"]), order)

    def solutions(self, example: dict[str, Any]) -> set[str]:
        """Every distinct reference trace of `example` (one per order, fewer when numbers repeat; and the one-step
        trace where the warm start writes it)."""
        import itertools

        numbers = list(example["numbers"])
        traces = {order_trace(numbers, list(p)) for p in itertools.permutations(range(len(numbers)))}
        return traces | ({direct_trace(numbers)} if self.params["direct_fraction"] else set())
