"""Answer extraction and comparison shared by all tasks.

Rules for the answer part of a completion (`answer_text`):

* with a `</think>`: everything after the first `</think>`, stripped;
* with no think tags at all: the whole completion, stripped (plain-answer models still get scored);
* with `<think>` opened but never closed: no answer (None) -- unfinished thinking earns nothing.

An empty answer part is also None. Imports of math-verify happen inside functions so `import
workbench.tasks` stays light.
"""

from __future__ import annotations

import re
import threading
from decimal import Decimal, InvalidOperation

from workbench.tasks.base import THINK_CLOSE, THINK_OPEN, split_think

# Appended to natural-style prompts. Plain ASCII so character tokenizers can cover it.
THINK_INSTRUCTION = (
    "Think step by step inside <think> </think>, then write only the final answer after </think>."
)

_NUMBER = re.compile(r"(?<![\d.])-?\d+(?:\.\d+)?")
_THOUSANDS = re.compile(r"(?<=\d),(?=\d{3}(?!\d))")


def answer_text(completion: str | None) -> str | None:
    """The answer part of a completion (see the module docstring), or None."""
    if not completion:
        return None
    _, answer, closed = split_think(completion)
    if not closed:
        if THINK_OPEN in completion:
            return None
        answer = completion
    answer = answer.strip()
    return answer or None


def final_number(text: str | None) -> str | None:
    """The last number in `text` ("-12", "3.5"), thousands commas removed; None if there is none.

    A '-' right after a digit is an operator, not a sign: the last number of "63-45" is "45".
    """
    if not text:
        return None
    found = _NUMBER.findall(_THOUSANDS.sub("", text))
    return found[-1] if found else None


def numbers_equal(pred: str | None, gold: str) -> bool:
    """Exact numeric equality ("18" == "18.0" == "018"); False when either side is not a number."""
    if pred is None:
        return False
    try:
        return Decimal(pred) == Decimal(gold.strip().replace(",", ""))
    except (InvalidOperation, ValueError):
        return False


def gold_answer(raw: object) -> str:
    """A reference answer as a string; GSM8K-style "reasoning #### 72" keeps only what follows '####'."""
    text = str(raw).strip()
    if "####" in text:
        text = text.rsplit("####", 1)[1].strip()
    return text


def _normalize(text: str) -> str:
    return " ".join(text.split()).rstrip(".")


def _parse(text: str, timeout: int | None) -> list:
    from math_verify import parse

    parsed = parse(text, parsing_timeout=timeout)
    if not parsed and "$" not in text:
        parsed = parse(f"${text}$", parsing_timeout=timeout)
    return parsed


def math_equal(pred: str | None, gold: str) -> bool:
    """Whether `pred` matches `gold` under math-verify ("0.5" == "\\frac{1}{2}").

    Identical strings (whitespace and a final period ignored) always match; when math-verify cannot parse
    either side, that exact string match is the whole test. Timeouts use signals, so they are only enabled
    on the main thread.
    """
    if pred is None:
        return False
    if _normalize(pred) == _normalize(gold):
        return True
    from math_verify import verify

    timeout = 5 if threading.current_thread() is threading.main_thread() else None
    try:
        gold_parsed = _parse(gold, timeout)
        pred_parsed = _parse(pred, timeout)
        if not gold_parsed or not pred_parsed:
            return False
        return bool(verify(gold_parsed, pred_parsed, timeout_seconds=timeout))
    except Exception:  # math-verify raises on pathological input or timeouts: count it as wrong
        return False


__all__ = [
    "THINK_CLOSE",
    "THINK_INSTRUCTION",
    "THINK_OPEN",
    "answer_text",
    "final_number",
    "gold_answer",
    "math_equal",
    "numbers_equal",
]
