"""Procedural tasks generated offline by reasoning-gym: the arithmetic, chain_sum and countdown presets, and
`gym`, any reasoning-gym dataset by name (`task=gym task.name=gsm_symbolic`).

Generation is deterministic: the train split uses `task.seed`, the eval split `task.seed + EVAL_SEED_OFFSET`,
and eval problems already in the train split (or repeated within eval) are skipped, so the splits never share
a problem. `task.params` override the task's defaults and go to the reasoning-gym dataset config.
"""

from __future__ import annotations

import ast
import dataclasses
import difflib
import json
import math
import random
import re
from fractions import Fraction
from typing import Any, Hashable

from workbench.config import ConfigError, TaskConfig
from workbench.tasks.base import THINK_CLOSE, THINK_OPEN, Task, held_out_split, numbered_splits
from workbench.tasks.scoring import THINK_INSTRUCTION, answer_text, final_number, numbers_equal

# reasoning-gym seeds item i with Random(seed + i), so the eval seed must be far from the train seeds.
EVAL_SEED_OFFSET = 1_000_000_007
SPLITS = ("train", "eval")


def check_split(split: str) -> None:
    if split not in SPLITS:
        raise ValueError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")


class GymTask(Task):
    """A reasoning-gym generator wrapped as a Task; subclasses set `rg_name`, `defaults` and the item mapping."""

    rg_name: str = ""
    defaults: dict[str, Any] = {}

    def __init__(self, cfg: TaskConfig):
        self.cfg = cfg
        if cfg.train_size < 1:
            raise ConfigError(f"task.train_size={cfg.train_size} must be at least 1")
        if cfg.eval_size < 0:
            raise ConfigError(f"task.eval_size={cfg.eval_size} must be >= 0")
        self.params = {**self.defaults, **cfg.params}
        self._rg = self._generator(cfg.seed, 1)  # validates params now, not at first use; also the scorer
        self._cache: dict[str, list[dict[str, Any]]] = {}

    # -- generation ------------------------------------------------------------------------------------

    def _generator(self, seed: int, size: int) -> Any:
        from reasoning_gym.factory import DATASETS

        dataset_cls, config_cls = DATASETS[self.rg_name]
        valid = [f.name for f in dataclasses.fields(config_cls) if f.name not in ("seed", "size")]
        for key in self.params:
            if key in ("seed", "size"):
                raise ConfigError(f"task.params.{key} is managed by the workbench; use task.seed / task.*_size")
            if key not in valid:
                raise ConfigError(
                    f"task.params.{key} is not an option of reasoning-gym {self.rg_name}; valid: {', '.join(valid)}"
                )
        params = {k: tuple(v) if isinstance(v, list) else v for k, v in self.params.items()}
        try:
            config = config_cls(**params, seed=seed, size=max(size, 1))
            return dataset_cls(config=config)  # the constructor runs config.validate()
        except (AssertionError, TypeError, ValueError) as e:
            raise ConfigError(f"task.params for {self.rg_name} are invalid: {e}") from None

    def _item(self, generator: Any, idx: int) -> dict[str, Any]:
        try:
            return generator[idx]
        except ValueError as e:  # e.g. countdown cannot hit a target range
            raise ConfigError(f"task.params for {self.rg_name}: generation failed: {e}") from None

    def _generate(self) -> None:
        cfg = self.cfg
        train_gen = self._generator(cfg.seed, cfg.train_size)
        train = [self._example(self._item(train_gen, i)) for i in range(cfg.train_size)]
        seen: set[Hashable] = {self._key(ex) for ex in train}
        limit = 50 * cfg.eval_size + 1000
        # sized to every index the loop may read: some datasets (gsm_symbolic) raise past their `size`
        eval_gen = self._generator(cfg.seed + EVAL_SEED_OFFSET, limit)
        evals = held_out_split(lambda i: self._example(self._item(eval_gen, i)), self._key, seen, cfg.eval_size,
                               limit, f"{self.name} problems", "widen task.params or lower task.train_size")
        self._cache.update(numbered_splits(train, evals))

    def examples(self, split: str) -> list[dict[str, Any]]:
        check_split(split)
        if not self._cache:
            self._generate()
        return [dict(ex) for ex in self._cache[split]]

    # -- per-task hooks ----------------------------------------------------------------------------------

    def _example(self, item: dict[str, Any]) -> dict[str, Any]:
        raise NotImplementedError

    def _key(self, example: dict[str, Any]) -> Hashable:
        """What makes two problems the same (used to keep eval disjoint from train)."""
        return example["question"]

    def _natural(self, question: str) -> str:
        return f"{question}\n{THINK_INSTRUCTION}"


# ---------------------------------------------------------------------------------------------- chain sums


class ChainSumTask(GymTask):
    """+/- chains from reasoning-gym `chain_sum`; compact prompt "12+34-5=", answer an integer string."""

    name = "chain_sum"
    rg_name = "chain_sum"
    defaults = {"min_terms": 3, "max_terms": 4, "min_digits": 1, "max_digits": 2}

    def _example(self, item: dict[str, Any]) -> dict[str, Any]:
        expression = item["metadata"]["expression"]  # "63 - 45", negatives as "63 - -45"
        compact = expression.replace(" ", "") + "="
        prompt = compact if self.cfg.prompt_style == "compact" else self._natural(item["question"])
        return {"prompt": prompt, "answer": item["answer"], "id": -1, "question": item["question"],
                "expression": expression}

    def extract_answer(self, completion: str) -> str | None:
        return final_number(answer_text(completion))

    def score(self, completion: str, example: dict[str, Any]) -> float:
        return 1.0 if numbers_equal(self.extract_answer(completion), str(example["answer"])) else 0.0

    def warm_start_completion(self, example: dict[str, Any], rng: random.Random, verbose: bool) -> str | None:
        return chain_trace(example["expression"], verbose)

    def warm_start_working(self, example: dict[str, Any], rng: random.Random) -> str | None:
        return chain_working(example["expression"])


class ArithmeticTask(ChainSumTask):
    """Two-term a+b / a-b with two-digit operands (chain_sum restricted): compact prompt "63-45=".

    Results can be negative ("15-43=" -> "-28"), exactly as reasoning-gym generates them.
    """

    name = "arithmetic"
    defaults = {"min_terms": 2, "max_terms": 2, "min_digits": 2, "max_digits": 2}


def chain_working(expression: str) -> str:
    """The shortest trace that shows the working: chain_trace's tens-then-ones steps without restating the problem
    and without the check, e.g. `<think>63-40=23. 23-5=18</think>18` (a one-step sum is the concise trace).

    >>> chain_working("12 + 34 - 5")
    '<think>12+30=42. 42+4=46. 46-5=41</think>41'
    """
    verbose = chain_trace(expression, True)
    head, _, answer = verbose.partition(THINK_CLOSE)
    steps = head[len(THINK_OPEN):].split(" ")[1:]  # drop the restated problem "63-45."
    steps = [s for s in steps if s.endswith(".")]  # the "a+b=c." steps; "check: ... ok" is the rest
    if not steps:
        return chain_trace(expression, False)
    return f"{THINK_OPEN}{' '.join(steps).removesuffix('.')}{THINK_CLOSE}{answer}"


def chain_trace(expression: str, verbose: bool) -> str:
    """A correct trace for a reasoning-gym chain expression such as "63 - 45".

    Concise: `<think>63-45=18</think>18`. Verbose goes term by term, adding tens then ones, and checks the
    last step: `<think>63-45. 63-40=23. 23-5=18. check: 18+45=63 ok</think>18`.
    """
    tokens = expression.split()
    nums = [int(t) for t in tokens[0::2]]
    ops = tokens[1::2]
    total = nums[0]
    for op, n in zip(ops, nums[1:]):
        total = total + n if op == "+" else total - n
    compact = "".join(tokens)
    if not verbose or not ops:
        return f"{THINK_OPEN}{compact}={total}{THINK_CLOSE}{total}"
    steps = [f"{compact}."]
    acc = before_last = nums[0]
    delta = 0
    for op, n in zip(ops, nums[1:]):
        before_last = acc
        delta = n if op == "+" else -n
        sign, mag = ("+" if delta >= 0 else "-"), abs(delta)
        parts = [p for p in (mag - mag % 10, mag % 10) if p] or [0]
        for p in parts:
            new = acc + p if sign == "+" else acc - p
            steps.append(f"{acc}{sign}{p}={new}.")
            acc = new
    undo = "-" if delta >= 0 else "+"
    steps.append(f"check: {acc}{undo}{abs(delta)}={before_last} ok")
    return f"{THINK_OPEN}{' '.join(steps)}{THINK_CLOSE}{total}"


# ---------------------------------------------------------------------------------------------- countdown

_SAFE_EXPRESSION = re.compile(r"^[\d\s+\-*/().]{1,200}$")


class CountdownTask(GymTask):
    """Reach a target with the given numbers (reasoning-gym `countdown`); the answer is an expression.

    Compact prompt: "make 16 from 18 20 7 11:". Scored by reasoning-gym's own `score_answer`, made binary
    (its 0.01/0.05 consolation rewards count as wrong).
    """

    name = "countdown"
    rg_name = "countdown"
    defaults = {"min_numbers": 3, "max_numbers": 4, "min_value": 1, "max_value": 20,
                "min_target": 10, "max_target": 100}

    def _example(self, item: dict[str, Any]) -> dict[str, Any]:
        meta = item["metadata"]
        numbers = [int(n) for n in meta["numbers"]]
        target = int(meta["target"])
        if self.cfg.prompt_style == "compact":
            prompt = f"make {target} from {' '.join(map(str, numbers))}:"
        else:
            prompt = self._natural(item["question"].rstrip())
        return {"prompt": prompt, "answer": item["answer"].replace(" ", ""), "id": -1,
                "question": item["question"], "numbers": numbers, "target": target}

    def _key(self, example: dict[str, Any]) -> Hashable:
        return (tuple(sorted(example["numbers"])), example["target"])

    def extract_answer(self, completion: str) -> str | None:
        return answer_text(completion)

    def score(self, completion: str, example: dict[str, Any]) -> float:
        answer = self.extract_answer(completion)
        # reasoning-gym's scorer runs sympy's parse_expr (an eval): only hand it plain arithmetic, no powers.
        if answer is None or not _SAFE_EXPRESSION.match(answer) or "**" in answer:
            return 0.0
        entry = {"answer": example["answer"],
                 "metadata": {"numbers": list(example["numbers"]), "target": example["target"]}}
        return 1.0 if self._rg.score_answer(answer, entry) >= 1.0 else 0.0

    def warm_start_completion(self, example: dict[str, Any], rng: random.Random, verbose: bool) -> str | None:
        expression = str(example["answer"]).replace(" ", "")
        if not verbose:
            return f"{THINK_OPEN}{expression}={example['target']}{THINK_CLOSE}{expression}"
        steps: list[str] = []
        _evaluate(ast.parse(expression, mode="eval").body, steps)
        return f"{THINK_OPEN}{' '.join(steps)}{THINK_CLOSE}{expression}"


_OPS = {ast.Add: "+", ast.Sub: "-", ast.Mult: "*", ast.Div: "/"}


def _fmt(x: Fraction) -> str:
    return str(x.numerator) if x.denominator == 1 else f"{x.numerator}/{x.denominator}"


def _evaluate(node: ast.AST, steps: list[str]) -> Fraction:
    """Evaluate an arithmetic AST exactly, appending one "a op b=c." step per binary operation."""
    if isinstance(node, ast.Constant):
        return Fraction(node.value)
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
        return -_evaluate(node.operand, steps)
    if isinstance(node, ast.BinOp) and type(node.op) in _OPS:
        left, right = _evaluate(node.left, steps), _evaluate(node.right, steps)
        sym = _OPS[type(node.op)]
        value = {"+": left + right, "-": left - right, "*": left * right}.get(sym)
        if value is None:
            value = left / right
        steps.append(f"{_fmt(left)}{sym}{_fmt(right)}={_fmt(value)}.")
        return value
    raise ValueError(f"unsupported expression node {ast.dump(node)}")


# ---------------------------------------------------------------------------------------------- any dataset

LIST_HINT = "list them with: python -c 'import reasoning_gym; print(sorted(reasoning_gym.factory.DATASETS))'"


class GymDatasetTask(GymTask):
    """Any reasoning-gym dataset, named by `task.name` (conf/task/gym.yaml sets `task.kind=gym`).

    Prompt: the dataset's question, plus the think instruction in natural style (the question alone in compact
    style). Score: the dataset's own `score_answer` on the text after `</think>`, partial credit kept as a float in
    [0, 1]; a scorer that raises scores 0. Each example keeps the whole reasoning-gym entry (question, answer,
    metadata) in its `entry` column as JSON (see `encode_entry`), which is all `score_answer` reads. `answer` is the
    reference answer as a string ("" for datasets that accept any valid solution and have none).

    Warm-start traces for model=tiny, from what the dataset has: the answer alone (`<think></think>ANSWER`) as the
    concise trace, and the dataset's worked solution (a metadata string under one of WORKED_SOLUTION_KEYS, e.g.
    gsm_symbolic's `answer_cot`) as the step-by-step one and as `warm_start_working`; a dataset without worked
    solutions gives the answer-only trace for both. A dataset without reference answers (rush_hour, boxnet, ...:
    any valid solution scores) gives no traces, and `no_traces_reason` says why.
    """

    name = "gym"

    def __init__(self, cfg: TaskConfig):
        from reasoning_gym.factory import DATASETS

        if cfg.name not in DATASETS:
            close = difflib.get_close_matches(cfg.name, list(DATASETS), n=3, cutoff=0.6)
            hint = f"did you mean {', '.join(close)}? " if close else ""
            raise ConfigError(
                f"task.name={cfg.name!r} is not a reasoning-gym dataset (task=gym task.name=<dataset>); "
                f"{hint}{LIST_HINT}"
            )
        self.rg_name = self.name = cfg.name
        super().__init__(cfg)

    def _generator(self, seed: int, size: int) -> Any:
        try:
            return super()._generator(seed, size)
        except ConfigError:
            raise
        except Exception as e:  # any dataset's constructor: report it as a config problem, on one line
            raise ConfigError(f"task.params for {self.rg_name} are invalid: {_one_line(e)}") from None

    def _item(self, generator: Any, idx: int) -> dict[str, Any]:
        try:
            return generator[idx]
        except Exception as e:
            raise ConfigError(f"task.params for {self.rg_name}: generation failed: {_one_line(e)}") from None

    def _example(self, item: dict[str, Any]) -> dict[str, Any]:
        question = str(item["question"])
        prompt = question if self.cfg.prompt_style == "compact" else self._natural(question.rstrip())
        answer = item.get("answer")
        entry = {"question": question, "answer": answer, "metadata": item.get("metadata", {})}
        return {"prompt": prompt, "answer": "" if answer is None else str(answer), "id": -1, "question": question,
                "entry": encode_entry(entry)}

    def extract_answer(self, completion: str) -> str | None:
        return answer_text(completion)

    def score(self, completion: str, example: dict[str, Any]) -> float:
        answer = self.extract_answer(completion)
        if answer is None:
            return 0.0
        try:
            value = float(self._rg.score_answer(answer, decode_entry(example["entry"])))
        except Exception:  # scorers parse free text (some with sympy) and may raise on odd input: wrong
            return 0.0
        return min(max(value, 0.0), 1.0) if math.isfinite(value) else 0.0

    def warm_start_completion(self, example: dict[str, Any], rng: random.Random, verbose: bool) -> str | None:
        answer = str(example["answer"]).strip()
        if not answer:
            return None
        worked = worked_solution(decode_entry(example["entry"])) if verbose else None
        return f"{THINK_OPEN}{worked or ''}{THINK_CLOSE}{answer}"

    def warm_start_working(self, example: dict[str, Any], rng: random.Random) -> str | None:
        worked = worked_solution(decode_entry(example["entry"]))
        answer = str(example["answer"]).strip()
        return f"{THINK_OPEN}{worked}{THINK_CLOSE}{answer}" if worked and answer else None

    def no_traces_reason(self, example: dict[str, Any]) -> str:
        """Why `example` gives no warm-start trace (the tiny model's refusal names it)."""
        return (f"reasoning-gym {self.rg_name} has no reference answer (it accepts any valid solution), so no trace "
                f"can be written for its problems")


#: Metadata keys under which a reasoning-gym entry may carry a worked solution in words (gsm_symbolic: answer_cot).
WORKED_SOLUTION_KEYS = ("answer_cot", "cot", "chain_of_thought", "rationale", "explanation", "worked_solution")
#: A worked solution's closing "#### 42" line (GSM8K's convention) restates the answer: the trace gives it after
#: `</think>` instead.
_FINAL_ANSWER_LINE = re.compile(r"\n?####[^\n]*\s*$")


def worked_solution(entry: dict[str, Any]) -> str | None:
    """The worked solution text of a reasoning-gym entry (first of WORKED_SOLUTION_KEYS that holds a string other
    than the answer), without a closing "#### answer" line and without think tags; None if it has none.

    >>> worked_solution({"answer": "4", "metadata": {"answer_cot": "2 + 2 = 4\\n#### 4"}})
    '2 + 2 = 4'
    """
    meta = entry.get("metadata") or {}
    for key in WORKED_SOLUTION_KEYS:
        text = meta.get(key)
        if isinstance(text, str):
            text = _FINAL_ANSWER_LINE.sub("", text).replace(THINK_OPEN, "").replace(THINK_CLOSE, "").strip()
            if text and text != str(entry.get("answer", "")).strip():
                return text
    return None


def _one_line(e: BaseException) -> str:
    return f"{type(e).__name__}: {' '.join(str(e).split())}"[:300]


# reasoning-gym metadata holds tuples (grids compared by ==), dicts with int keys and numpy scalars: plain JSON
# would turn them into lists / str keys and break some scorers, so those are tagged and restored exactly.
_TUPLE, _SET, _ITEMS = "__tuple__", "__set__", "__items__"


def _plain(obj: Any) -> Any:
    if isinstance(obj, dict):
        if all(isinstance(k, str) for k in obj):
            return {str(k): _plain(v) for k, v in obj.items()}
        return {_ITEMS: [[_plain(k), _plain(v)] for k, v in obj.items()]}
    if isinstance(obj, tuple):
        return {_TUPLE: [_plain(v) for v in obj]}
    if isinstance(obj, (set, frozenset)):
        return {_SET: sorted((_plain(v) for v in obj), key=repr)}
    if isinstance(obj, list):
        return [_plain(v) for v in obj]
    if type(obj).__module__ == "numpy" and hasattr(obj, "item"):  # numpy scalars
        return _plain(obj.item())
    if isinstance(obj, (bool, int, float)) or obj is None:
        return obj
    return str(obj)  # str subclasses (numpy.str_) and anything exotic


def _restore(d: dict[str, Any]) -> Any:
    if len(d) == 1:
        ((key, value),) = d.items()
        if key == _TUPLE:
            return tuple(value)
        if key == _SET:
            return set(value)
        if key == _ITEMS:
            return {k: v for k, v in value}
    return d


def encode_entry(entry: dict[str, Any]) -> str:
    """A reasoning-gym entry as a JSON string (one string column, so `datasets.Dataset` takes any metadata)."""
    return json.dumps(_plain(entry), ensure_ascii=False)


def decode_entry(text: str) -> dict[str, Any]:
    """The inverse of `encode_entry`: tuples, sets and non-string dict keys come back as they were."""
    return json.loads(text, object_hook=_restore)
