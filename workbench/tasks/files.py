"""Question/answer tasks from data tables, scored with math-verify: the `file` task and the shared base.

A `file` task reads a local .jsonl, .json or .parquet file. If it has a `split` column whose values include
`task.train_split` / `task.eval_split`, those rows make the splits; otherwise the rows are shuffled with
`task.seed` and the last `task.eval_size` rows become the eval split (with a split column, `task.eval_size`
caps the eval rows, 0 keeping all). Training rows whose question also
appears in eval are dropped, then the train split is cut to `task.train_size` (0 keeps every row).
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

from workbench.config import ConfigError, TaskConfig
from workbench.tasks.base import Task
from workbench.tasks.gym import check_split
from workbench.tasks.scoring import THINK_INSTRUCTION, answer_text, gold_answer, math_equal

SPLIT_COLUMN = "split"


def read_table(path: str | Path, key: str = "task.path") -> list[dict[str, Any]]:
    """Rows of a .jsonl / .json / .parquet file as dicts; one-line ConfigErrors naming `key` and the path."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise ConfigError(f"{key}: file not found: {p}")
    suffix = p.suffix.lower()
    try:
        if suffix == ".parquet":
            import pyarrow.parquet as pq

            return pq.read_table(p).to_pylist()
        if suffix in (".jsonl", ".json"):
            text = p.read_text(encoding="utf-8")
            if suffix == ".json" and text.lstrip().startswith("["):
                rows = json.loads(text)
            else:
                rows = [json.loads(line) for line in text.splitlines() if line.strip()]
            if not all(isinstance(r, dict) for r in rows):
                raise ValueError("every record must be a JSON object")
            return rows
    except (OSError, ValueError) as e:
        msg = " ".join(str(e).split())
        raise ConfigError(f"{key}: could not read {p} ({type(e).__name__}: {msg})") from None
    raise ConfigError(f"{key}: unsupported file type {suffix or '(none)'} for {p}; use .jsonl, .json or .parquet")


def check_columns(columns: list[str], cfg: TaskConfig, source: str) -> None:
    """Raise a one-line ConfigError if the question or answer column is missing."""
    for key in ("question_key", "answer_key"):
        column = getattr(cfg, key)
        if column not in columns:
            raise ConfigError(
                f"task.{key}={column!r} not in columns of {source}: {', '.join(sorted(map(str, columns)))}"
            )


class QATask(Task):
    """Free-form question/answer rows; answers compared with math-verify (exact string match as fallback)."""

    def __init__(self, cfg: TaskConfig):
        self.cfg = cfg
        if cfg.train_size < 0 or cfg.eval_size < 0:
            raise ConfigError(f"task.train_size={cfg.train_size}, task.eval_size={cfg.eval_size}: sizes must be >= 0")
        self._splits: dict[str, list[dict[str, Any]]] = {}

    def _set_splits(self, train_rows: list[dict[str, Any]], eval_rows: list[dict[str, Any]], source: str) -> None:
        evals = [self._example(r) for r in eval_rows]
        eval_questions = {ex["question"] for ex in evals}
        train = [ex for ex in map(self._example, train_rows) if ex["question"] not in eval_questions]
        if self.cfg.train_size:
            train = train[: self.cfg.train_size]
        if not train:
            raise ConfigError(f"task: no training rows left in {source} after setting aside the eval split")
        for rows in (train, evals):
            for i, ex in enumerate(rows):
                ex["id"] = i
        self._splits = {"train": train, "eval": evals}

    def _example(self, row: dict[str, Any]) -> dict[str, Any]:
        question = str(row[self.cfg.question_key]).strip()
        prompt = question if self.cfg.prompt_style == "compact" else f"{question}\n{THINK_INSTRUCTION}"
        return {"prompt": prompt, "answer": gold_answer(row[self.cfg.answer_key]), "id": -1, "question": question}

    def examples(self, split: str) -> list[dict[str, Any]]:
        check_split(split)
        return [dict(ex) for ex in self._splits[split]]

    def extract_answer(self, completion: str) -> str | None:
        return answer_text(completion)

    def score(self, completion: str, example: dict[str, Any]) -> float:
        return 1.0 if math_equal(self.extract_answer(completion), str(example["answer"])) else 0.0


def shuffled(rows: list[dict[str, Any]], seed: int) -> list[dict[str, Any]]:
    rows = list(rows)
    random.Random(seed).shuffle(rows)
    return rows


class FileTask(QATask):
    """Questions and answers from a local file (`task.path`, columns `task.question_key` / `task.answer_key`)."""

    name = "file"

    def __init__(self, cfg: TaskConfig):
        super().__init__(cfg)
        if not cfg.path:
            raise ConfigError("task.path must be set when task.name=file (a .jsonl, .json or .parquet file)")
        source = str(Path(cfg.path).expanduser())
        rows = read_table(cfg.path)
        if not rows:
            raise ConfigError(f"task.path: {source} has no rows")
        columns = sorted({k for r in rows for k in r})
        check_columns(columns, cfg, source)
        rows = [r for r in rows if r.get(cfg.question_key) is not None and r.get(cfg.answer_key) is not None]
        labels = {r.get(SPLIT_COLUMN) for r in rows}
        if SPLIT_COLUMN in columns and cfg.train_split in labels and cfg.eval_split in labels:
            train = shuffled([r for r in rows if r.get(SPLIT_COLUMN) == cfg.train_split], cfg.seed)
            evals = shuffled([r for r in rows if r.get(SPLIT_COLUMN) == cfg.eval_split], cfg.seed)
            if cfg.eval_size:
                evals = evals[: cfg.eval_size]
        else:
            rows = shuffled(rows, cfg.seed)
            if cfg.eval_size >= len(rows):
                raise ConfigError(
                    f"task.eval_size={cfg.eval_size} leaves no training rows in {source} ({len(rows)} rows)"
                )
            cut = len(rows) - cfg.eval_size
            train, evals = rows[:cut], rows[cut:]
        self._set_splits(train, evals, source)
