"""`rl eval`: evaluate a run's final model or checkpoints, or any model, with the task's own scorer.

    plan_run_eval(RUN_DIR, overrides, checkpoint)   # model/task/prices from RUN_DIR/config.yaml
    plan_model_eval(overrides)                      # model/ and task/ composed from conf/eval.yaml
    execute(plan, force=False)                      # -> one result dict per evaluated model

Planning checks every user input (overrides, k <= n, checkpoint names, the task, the backend) and writes
nothing; `execute` then evaluates each target into `<dir>/eval/<label>/`:

    samples.jsonl   one row per sample: problem, sample, prompt, target, completion, answer, score, correct,
                    length, prompt_tokens, truncated, entropy, entropy_think, entropy_answer, think_tokens, cost,
                    ids and token_entropy (the model's own tokens and their entropies);
                    with `difficulty` when the examples carry one, `mode` when the task has modes, and with tools
                    transcript, context_tokens, tool_calls, num_tool_calls, turns, tool_dollars
    metrics.json    {"metrics": {"eval/...": ...}, "eval_config": {...}, "checkpoint", "step", ...}: written
                    last and atomically, so an interrupted evaluation never leaves a complete-looking result

With `task.tools`, the model calls the tools for real, in the loop training runs (`generate.generate_with_tools`):
`completion` is the model's own text (what is scored), `transcript` the text with calls and results, `length`
the model's own tokens, `context_tokens` the tool-result tokens it read back, and `cost` is
`signals.rollout_cost` (results at the prompt price, plus the calls' $ from `price.tools`), so cost of pass
includes the tools.

Re-running with the same `eval_config` reuses metrics.json; if only metric settings changed (k, maj_k, n_boot,
prices) the metrics are recomputed from samples.jsonl without generating again; `force=True` regenerates.

A model evaluated without a run directory gets `<runs_dir>/eval/<model-name>_<hash>/` (hash of the model and
task config, so the same model on the same task always lands in the same folder and results are reused), with
a config.yaml of what was evaluated and results in `eval/model/`.

The parts, one idea each: the `eval:` schema and its validation are `workbench.config` (EvalConfig, to_eval_config);
planning (overrides through `workbench.compose`, checkpoints, the task) is `plan`; what defines a result (the
reuse key) is `identity`; which loop samples is `dispatch`; samples -> rows -> metrics is `rows`. This module
executes a plan and re-exports the names callers import from it.

Import-light at module level (no torch): the CLI plans and validates before any model code is imported.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any, Callable

# The planning, schema, rows and dispatch names callers have always imported from here (re-exported).
from workbench.config import EvalConfig, EvalRootConfig, to_eval_config, validate_eval
from workbench.evaluation.dispatch import evaluate_model, generate_rows, progress_bar
from workbench.evaluation.plan import EvalPlan, Target, check_backend, plan_model_eval, plan_run_eval
from workbench.evaluation.rows import build_rows, compute_metrics, reprice, sample_cost
from workbench.runs import atomic_write_json, atomic_write_text, now_iso, read_json, read_jsonl

__all__ = [
    "METRICS_FILE", "SAMPLES_FILE", "EvalConfig", "EvalPlan", "EvalRootConfig", "Target", "build_rows",
    "check_backend", "compute_metrics", "evaluate_model", "evaluate_target", "execute", "generate_rows",
    "plan_model_eval", "plan_run_eval", "reprice", "sample_cost", "to_eval_config", "validate_eval",
]

METRICS_FILE, SAMPLES_FILE = "metrics.json", "samples.jsonl"


def _write_samples(path: Path, rows: list[dict[str, Any]]) -> None:
    """samples.jsonl through a temp file + rename (NaN/inf written as null)."""
    from workbench.runs import json_safe

    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w") as f:
        for r in rows:
            f.write(json.dumps(json_safe(r)) + "\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _read_result(path: Path) -> dict[str, Any] | None:
    try:
        doc = read_json(path)
    except (OSError, ValueError):
        return None
    return doc if isinstance(doc, dict) and isinstance(doc.get("metrics"), dict) else None


def _load_model(plan: EvalPlan, target: Target):
    from workbench.models import load_model_and_tokenizer

    if plan.cfg.eval.backend == "vllm":  # an engine handle in place of the model (vllm_backend.load)
        from workbench.evaluation import vllm_backend

        return vllm_backend.load(target.model, plan.task, [x["prompt"] for x in plan.examples],
                                 plan.cfg.eval.max_new_tokens)
    from transformers.utils import logging as hf_logging

    bar = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()  # transformers' "Loading weights" bar; rl eval shows its own progress
    try:
        model, tokenizer, info = load_model_and_tokenizer(target.model, plan.task, progress=True)
    finally:
        if bar:
            hf_logging.enable_progress_bar()
    if getattr(plan.task, "tools", ()):
        from workbench.tools import check_tool_template

        check_tool_template(tokenizer, target.model.name_or_path or target.model.kind)
    import torch

    if torch.cuda.is_available():
        model.to("cuda")
    return model, tokenizer, info.get("cache_path") or target.model.name_or_path


def evaluate_target(plan: EvalPlan, target: Target, force: bool = False, progress: bool = True,
                    command: str | None = None) -> dict[str, Any]:
    """Evaluate one model into target.out_dir; returns the metrics.json document plus "reused" (none | samples |
    all) and "path"."""
    e, cfg = plan.cfg.eval, plan.cfg
    out = target.out_dir
    mfile, sfile = out / METRICS_FILE, out / SAMPLES_FILE
    ident = plan.identity(target)
    P = len(plan.examples)
    old = None if force else _read_result(mfile)
    if old is not None and old.get("eval_config") == ident and sfile.exists():
        return {**old, "reused": "all", "path": str(mfile)}

    rows: list[dict[str, Any]] | None = None
    perf: dict[str, Any] | None = None
    reused = "none"
    if old is not None and (old.get("eval_config") or {}).get("generation") == ident["generation"] and sfile.exists():
        rows = read_jsonl(sfile)
        if len(rows) == P * e.n:
            reprice(rows, cfg.price)
            perf, reused = old.get("perf"), "samples"
        else:
            rows = None
    if rows is None:
        from workbench.progress import apply_threads

        threads, why = apply_threads(e.threads)
        model, tokenizer, model_path = _load_model(plan, target)
        callback, close = progress_bar(progress and e.backend == "hf", P * e.n, target.label)
        try:
            rows, perf = generate_rows(model, tokenizer, plan.task, plan.examples, e, cfg.price,
                                       target.model.use_chat_template, callback, e.backend, model_path)
        finally:
            close()
            if e.backend == "vllm":
                model.close()  # the engine's memory, before the next checkpoint's engine starts
        perf = {**perf, "threads": threads, "threads_why": why}
        del model

    modes = tuple(getattr(plan.task, "modes", ()) or ())
    metrics = compute_metrics(rows, P, e.n, e.k, e.maj_k, e.n_boot, e.seed, modes)
    if plan.run is not None:  # what the run's reward terms say about these samples (workbench.evaluation.shaping)
        from workbench.evaluation.shaping import reward_terms_of, shaping_metrics
        from workbench.runs import load_run_config

        terms = reward_terms_of(load_run_config(plan.run).reward)
        metrics.update(shaping_metrics(rows, terms, plan.task, e.n, e.max_new_tokens, cfg.price))
    doc = {
        "checkpoint": target.label,
        "step": target.step,
        "run_dir": str(plan.run.path) if plan.run is not None else None,
        "model": (target.model.name_or_path or target.model.gguf_file) if target.model.kind == "hf" else "tiny",
        "task": cfg.task.name,
        "num_problems": P,
        "n": e.n,
        "num_samples": len(rows),
        "metrics": metrics,
        "eval_config": ident,
        "perf": perf,
        "time": now_iso(),
        "command": command,
        "samples_file": SAMPLES_FILE,
    }
    if plan.run is None:
        _write_runless_config(plan)  # only now: a model that fails to load leaves nothing behind
    out.mkdir(parents=True, exist_ok=True)
    # metrics.json goes first and comes back last: a crash in between leaves samples without a result.
    mfile.unlink(missing_ok=True)
    _write_samples(sfile, rows)
    atomic_write_json(mfile, doc)
    return {**read_json(mfile), "reused": reused, "path": str(mfile)}


def _write_runless_config(plan: EvalPlan) -> None:
    import yaml

    assert plan.base_dir is not None
    plan.base_dir.mkdir(parents=True, exist_ok=True)
    data = dataclasses.asdict(plan.cfg)
    atomic_write_text(plan.base_dir / "config.yaml", yaml.safe_dump(data, sort_keys=False))
    atomic_write_text(plan.base_dir / "overrides.txt", "".join(o + "\n" for o in plan.overrides))


def execute(plan: EvalPlan, force: bool = False, progress: bool = True, command: str | None = None,
            on_result: Callable[[dict[str, Any]], None] | None = None) -> list[dict[str, Any]]:
    """Evaluate every target of the plan, in order (checkpoints by step, then final)."""
    results = []
    for target in plan.targets:
        res = evaluate_target(plan, target, force=force, progress=progress, command=command)
        results.append(res)
        if on_result is not None:
            on_result(res)
    return results
