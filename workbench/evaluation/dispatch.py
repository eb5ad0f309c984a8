"""Generation dispatch for `rl eval` and the evaluations inside `rl train`: which loop samples (transformers'
batched `generate.sample`, the multi-turn tool loop `generate.generate_with_tools`, or vLLM), with what batch size,
then rows and metrics from the samples (`workbench.evaluation.rows`).

    generate_rows(model, tokenizer, task, examples, e, price, ...)   # -> (rows, perf)
    evaluate_model(model, tokenizer, task, examples, e, ...)         # in memory: -> (metrics, rows)

Import-light at module level (no torch): the loops are imported when they run.
"""

from __future__ import annotations

import time
from typing import Any, Callable

from workbench.config import ConfigError, EvalConfig, PriceConfig, TaskConfig, validate_eval
from workbench.evaluation.rows import build_rows, compute_metrics


def progress_bar(enabled: bool, total: int, label: str):
    """(callback(num_done), close()): a rich bar in a terminal, throttled lines in a log (workbench.progress)."""
    if not enabled:
        return None, lambda: None
    from workbench.progress import Progress

    bar = Progress(f"eval {label}", total, transient=True)
    return bar.update, bar.close


def prompt_token_counts(tokenizer: Any, prompts: list[str], use_chat_template: bool,
                        tools: list[Any] | None = None) -> list[int]:
    from workbench.prompts import prompt_token_ids

    return [len(prompt_token_ids(tokenizer, p, use_chat_template, tools)) for p in prompts]


def prompt_tools(tools: tuple[Callable[[], Any], int] | None) -> list[Any] | None:
    """The tool functions prompts are rendered with (those of one environment: every environment offers the same)."""
    if tools is None:
        return None
    from workbench.tools import tool_functions

    return tool_functions(tools[0]())


def tool_settings(task: Any, price: PriceConfig) -> tuple[Callable[[], Any], int] | None:
    """(environment factory, most tool-calling turns) when the task has tools, else None.

    Timeout and turns come from the task's config (`task.tool_timeout`, `task.max_tool_calls`: TRL's
    max_tool_calling_iterations in training); a task object without one uses TaskConfig's defaults."""
    tools = tuple(getattr(task, "tools", ()) or ())
    if not tools:
        return None
    from workbench.tools import environment_factory

    cfg = getattr(task, "cfg", None) or TaskConfig()
    return environment_factory(tools, price.tools, cfg.tool_timeout), int(cfg.max_tool_calls)


def generate_hf(model: Any, tokenizer: Any, prompts: list[str], e: EvalConfig, use_chat_template: bool,
                progress: Callable[[int], None] | None = None, examples: list[dict[str, Any]] | None = None,
                tools: tuple[Callable[[], Any], int] | None = None) -> tuple[list[Any], int]:
    """Batched sampling (left padding, KV cache, chunks fitted to memory) with per-token entropy; with `tools`
    (`tool_settings`) the multi-turn tool loop on `examples` (`generate.generate_with_tools`).

    Returns (samples, chunk size used)."""
    from workbench.evaluation.generate import fit_batch_size, generate_with_tools, sample

    longest = max(prompt_token_counts(tokenizer, prompts[:64], use_chat_template, prompt_tools(tools)) or [0])
    batch = fit_batch_size(model, e.batch_size, longest + int(e.max_new_tokens))  # tool results count in the budget
    common = dict(n=e.n, temperature=e.temperature, max_new_tokens=int(e.max_new_tokens), batch_size=batch,
                  use_chat_template=use_chat_template, with_entropy=True, seed=e.seed, progress=progress)
    if tools is not None:
        make_env, max_tool_calls = tools
        assert examples is not None, "the tool loop needs the examples (environments are reset on them)"
        return generate_with_tools(model, tokenizer, examples, make_env, max_tool_calls=max_tool_calls,
                                   **common), batch
    return sample(model, tokenizer, prompts, **common), batch


def generate_rows(model: Any, tokenizer: Any, task: Any, examples: list[dict[str, Any]], e: EvalConfig,
                  price: PriceConfig, use_chat_template: bool, progress: Callable[[int], None] | None = None,
                  backend: str = "hf", model_path: str | None = None) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Sample e.n completions per example (with the task's tools, if any), score them and return (rows, perf)."""
    prompts = [x["prompt"] for x in examples]
    tools = tool_settings(task, price)
    if tools is not None and backend == "vllm":
        raise ConfigError("task.tools: eval.backend=vllm does not run tools; use eval.backend=hf")
    start = time.perf_counter()
    if backend == "vllm":
        from workbench.evaluation import vllm_backend

        samples = vllm_backend.sample(model, tokenizer, prompts, n=e.n, temperature=e.temperature,
                                      max_new_tokens=int(e.max_new_tokens), seed=e.seed,
                                      use_chat_template=use_chat_template)
        batch = None
    else:
        samples, batch = generate_hf(model, tokenizer, prompts, e, use_chat_template, progress, examples, tools)
    seconds = time.perf_counter() - start
    counts = prompt_token_counts(tokenizer, prompts, use_chat_template, prompt_tools(tools))
    from workbench.signals import ThinkSplitter

    rows = build_rows(samples, examples, task, counts, price, ThinkSplitter(tokenizer))
    tokens = sum(r["length"] for r in rows)  # the model's own tokens
    perf = {
        "backend": backend,
        "batch_size": batch,
        "generate_seconds": round(seconds, 3),
        "completion_tokens": tokens,
        "tokens_per_s": round(tokens / seconds, 1) if seconds > 0 else None,
    }
    return rows, perf


def evaluate_model(model: Any, tokenizer: Any, task: Any, examples: list[dict[str, Any]], e: EvalConfig,
                   price: PriceConfig | None = None, use_chat_template: bool = False,
                   progress: Callable[[int], None] | None = None, reward_config: dict[str, Any] | None = None,
                   ) -> tuple[dict[str, float | None], list[dict[str, Any]]]:
    """In-memory evaluation of a loaded model, nothing written: (eval/... metrics, sample rows).

    For callers that already hold a model, e.g. periodic evaluation inside rl train. e.max_new_tokens must be set;
    e.k / e.maj_k default to powers of two up to n / [n]. `reward_config` (the run's `reward` section) adds
    eval/shaping/<term>/mean (`workbench.evaluation.shaping`)."""
    from workbench.evaluation.metrics import default_ks

    if e.max_new_tokens is None:
        raise ValueError("evaluate_model needs e.max_new_tokens")
    validate_eval(e)
    price = price or PriceConfig()
    rows, perf = generate_rows(model, tokenizer, task, examples, e, price, use_chat_template, progress)
    metrics = compute_metrics(rows, len(examples), e.n, e.k or default_ks(e.n), e.maj_k or [e.n], e.n_boot, e.seed,
                              tuple(getattr(task, "modes", ()) or ()))
    metrics["perf/tokens_per_s"] = perf["tokens_per_s"]
    if reward_config:
        from workbench.evaluation.shaping import reward_terms_of, shaping_metrics

        metrics.update(shaping_metrics(rows, reward_terms_of(reward_config), task, e.n, e.max_new_tokens, price))
    return metrics, rows
