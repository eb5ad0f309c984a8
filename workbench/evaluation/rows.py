"""Samples -> `samples.jsonl` rows -> `eval/...` metrics: the per-sample facts of an evaluation (score, length,
entropy by phase, cost, tool use, mode, difficulty) and their summary.

    build_rows(samples, examples, task, prompt_tokens, price, splitter)   # generate.Sample -> row dicts
    reprice(rows, price)                                                   # new prices on saved rows
    compute_metrics(rows, num_problems, n, ks, maj_ks, ...)                # rows -> metrics.summarize_problems

The boundary is the row dict (the samples.jsonl schema in `workbench.evaluation.runner`'s docstring): a builder fed
from another record of the same rollouts only has to replace `build_rows`.

Import-light (no torch); numpy only inside `compute_metrics`.
"""

from __future__ import annotations

from typing import Any

from workbench.config import PriceConfig


def sample_cost(prompt_tokens: int, completion_tokens: int, price: PriceConfig, context_tokens: int = 0,
                tool_dollars: float = 0.0) -> float:
    """$ of one attempt at the run's prices: `workbench.signals.rollout_cost`, the formula training uses (prompt and
    tool results read back at the prompt price, the model's tokens at the completion price, plus the tools' $;
    without tools it is `token_cost`)."""
    from workbench.signals import rollout_cost

    return rollout_cost(prompt_tokens, completion_tokens, context_tokens, tool_dollars, price.prompt_per_million,
                        price.completion_per_million)


def tool_prices(price: PriceConfig) -> dict[str, float]:
    """$ per call by tool: `price.tools` over `workbench.tools.DEFAULT_TOOL_PRICES` (what the environments charge)."""
    from workbench.tools import DEFAULT_TOOL_PRICES

    return {**DEFAULT_TOOL_PRICES, **{k: float(v) for k, v in price.tools.items()}}


def build_rows(samples: list[Any], examples: list[dict[str, Any]], task: Any, prompt_tokens: list[int],
               price: PriceConfig, splitter: Any = None) -> list[dict[str, Any]]:
    """samples.jsonl rows from generate.Sample objects, scored by the task's own scorer.

    `splitter` (a `workbench.signals.ThinkSplitter` for the model's tokenizer) finds the think/answer boundary;
    without one there is no think phase information. With tools (`Sample.tool_mask`), lengths, the think boundary
    and entropies are over the model's own tokens only (tool results are read, not written)."""
    from workbench.signals import assistant_turns, completion_mode, completion_transcript, phase_entropy
    from workbench.tasks.base import is_correct
    from workbench.tools import ToolUsage

    modes = tuple(getattr(task, "modes", ()) or ())
    rows = []
    seen: dict[int, int] = {}
    for s in samples:
        ex = examples[s.problem]
        j = seen.get(s.problem, 0)
        seen[s.problem] = j + 1
        score = float(task.score(s.text, ex))
        tools_on = s.tool_mask is not None
        own = [t for t, m in zip(s.ids, s.tool_mask) if m] if tools_on else s.ids
        boundary = splitter.boundary(own) if splitter is not None else None
        ent, ent_think, ent_answer = phase_entropy(s.entropy, boundary)
        row = {
            "problem": s.problem,
            "id": ex.get("id"),
            "sample": j,
            "prompt": ex["prompt"],
            "target": str(ex["answer"]),
            "completion": s.text,
            "answer": task.extract_answer(s.text),
            "score": score,
            "correct": is_correct(score),
            "length": len(own),
            "prompt_tokens": int(prompt_tokens[s.problem]),
            "truncated": bool(s.truncated),
            "entropy": ent,
            "entropy_think": ent_think,
            "entropy_answer": ent_answer,
            "think_tokens": boundary,
            "ids": list(own),  # the model's own tokens, and their entropies: the rollout record of eval/shaping/*
            "token_entropy": list(s.entropy) if s.entropy is not None else None,
        }
        if "difficulty" in ex:
            row["difficulty"] = ex["difficulty"]
        if modes:
            row["mode"] = completion_mode(s.text, modes)
        if tools_on:
            usage = ToolUsage.of(s.calls)
            row.update(transcript=completion_transcript(s.messages), context_tokens=len(s.ids) - len(own),
                       tool_calls=list(s.calls), num_tool_calls=usage.calls, turns=assistant_turns(s.messages),
                       tool_dollars=usage.dollars)
        row["cost"] = sample_cost(row["prompt_tokens"], row["length"], price, row.get("context_tokens", 0),
                                  row.get("tool_dollars", 0.0))
        rows.append(row)
    return rows


def reprice(rows: list[dict[str, Any]], price: PriceConfig) -> None:
    """New prices on saved rows: token $ and, with tools, each call's $ from `price.tools` (what the environments
    would have charged)."""
    prices = tool_prices(price)
    for r in rows:
        if r.get("tool_calls") is not None:
            for call in r["tool_calls"]:
                call["price"] = float(prices.get(call["name"], 0.0))
            r["tool_dollars"] = float(sum(call["price"] for call in r["tool_calls"]))
        r["cost"] = sample_cost(r["prompt_tokens"], r["length"], price, r.get("context_tokens", 0),
                                r.get("tool_dollars", 0.0))


def compute_metrics(rows: list[dict[str, Any]], num_problems: int, n: int, ks: list[int], maj_ks: list[int],
                    n_boot: int | None = None, seed: int = 0, modes: tuple[str, ...] | list[str] = ()
                    ) -> dict[str, float | None]:
    """The eval/... metrics (with /ci_low, /ci_high) of samples.jsonl rows via metrics.summarize_problems.

    Rows with tool fields add eval/tools/... and eval/turns/mean; `modes` (the task's) with rows carrying `mode`
    add eval/modes/...; rows carrying `difficulty` add eval/by/<difficulty>/... (see summarize_problems)."""
    import numpy as np

    from workbench.evaluation.metrics import N_BOOT, summarize_problems

    P = num_problems
    grid: list[list[dict[str, Any] | None]] = [[None] * n for _ in range(P)]
    for r in rows:
        grid[r["problem"]][r["sample"]] = r
    missing = sum(cell is None for row in grid for cell in row)
    if missing:
        raise ValueError(f"{missing} of {P * n} samples are missing")
    cells = [c for row in grid for c in row]

    def has(key: str) -> bool:
        return bool(cells) and all(key in c for c in cells)

    def mat(key: str, dtype: Any = float) -> Any:
        return np.array([[np.nan if c[key] is None else c[key] for c in row] for row in grid], dtype=dtype)

    tools_on = has("num_tool_calls")
    return summarize_problems(
        correct=mat("correct", bool),
        answers=[[c["answer"] for c in row] for row in grid],
        lengths=mat("length"),
        truncated=mat("truncated", bool),
        costs=mat("cost"),
        entropy=mat("entropy"),
        entropy_think=mat("entropy_think"),
        entropy_answer=mat("entropy_answer"),
        ks=ks,
        maj_ks=maj_ks,
        n_boot=N_BOOT if n_boot is None else n_boot,
        seed=seed,
        tool_calls=mat("num_tool_calls") if tools_on else None,
        tool_dollars=mat("tool_dollars") if tools_on else None,
        turns=mat("turns") if tools_on else None,
        modes=[[c["mode"] for c in row] for row in grid] if modes and has("mode") else None,
        mode_names=tuple(modes),
        groups=[row[0]["difficulty"] for row in grid] if has("difficulty") else None,
    )
