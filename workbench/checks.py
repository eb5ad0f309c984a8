"""Every check on a training config that needs no model: `rl train` runs it before it loads a model or writes a
directory, `rl train --dry-run` runs exactly this, and `rl sweep` runs it on every grid job before launching.

Bad input raises a one-line `ConfigError` naming the key (exit code 2 in the CLI):

* types, ranges and finiteness of the workbench's own keys (`workbench.config.check_ranges`, run at conversion);
* shaping terms: names, option names, option types and finiteness (`workbench.shaping.build_terms`);
* keys passed through to TRL under `algo.`: names, types against the GRPOConfig/RLOOConfig dataclass fields,
  finiteness, ranges of the ones that have one, then the config object itself is constructed (its own checks);
* the task: it is built and its examples are generated (a missing data file fails here);
* `runs_dir` can be created and written.

Importing TRL costs several seconds, which is why this lives here and not in `workbench.config` (`rl --help`).
"""

from __future__ import annotations

import dataclasses
import os
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from workbench.config import ConfigError, TrainConfig, check_range, check_ranges, check_tool_chat, coerce

# (lowest allowed, whether the lowest itself is allowed, highest allowed or None) for TRL keys that have a range.
# max_steps is special: -1 (TRL's "train for num_train_epochs") or >= 1.
TRL_RANGES: dict[str, tuple[float, bool, float | None]] = {
    "learning_rate": (0, False, None),
    "num_train_epochs": (0, False, None),
    "per_device_train_batch_size": (1, True, None),
    "gradient_accumulation_steps": (1, True, None),
    "num_generations": (2, True, None),  # group-relative advantages need at least two rollouts per prompt
    "num_generations_eval": (1, True, None),
    "max_completion_length": (1, True, None),
    "generation_batch_size": (1, True, None),
    "steps_per_generation": (1, True, None),
    "num_iterations": (1, True, None),
    "logging_steps": (0, False, None),
    "save_steps": (0, False, None),
    "save_total_limit": (1, True, None),
    "warmup_steps": (0, True, None),
    "weight_decay": (0, True, None),
    "max_grad_norm": (0, True, None),
    "adam_beta1": (0, True, 1),
    "adam_beta2": (0, True, 1),
    "adam_epsilon": (0, False, None),
    "temperature": (0, False, None),
    "top_p": (0, False, 1),
    "top_k": (0, True, None),
    "min_p": (0, True, 1),
    "repetition_penalty": (0, False, None),
    "beta": (0, True, None),
    "epsilon": (0, True, None),
    "epsilon_high": (0, True, None),
    "top_entropy_quantile": (0, True, 1),
    "entropy_coef_min": (0, True, None),
    "entropy_coef_max": (0, True, None),
}


@dataclass
class Checked:
    """What the checks built: reused by `prepare` so nothing is built twice."""

    task: Any
    train_examples: list[dict[str, Any]]
    eval_examples: list[dict[str, Any]]
    reward_terms: list[Any]
    advantage_terms: list[Any]
    regularizers: list[Any]
    args: Any  # trl.GRPOConfig | trl.RLOOConfig


def check_runs_dir(runs_dir: str | Path) -> None:
    """`runs_dir` is (or can be created as) a writable directory; checked without writing anything."""
    p = Path(runs_dir).expanduser()
    probe = p
    while not probe.exists():
        if probe.parent == probe:
            break
        probe = probe.parent
    if probe.exists() and not probe.is_dir():
        raise ConfigError(f"runs_dir={runs_dir}: {probe} is a file, not a directory")
    if not os.access(probe, os.W_OK | os.X_OK):
        what = "is not writable" if probe == p else f"cannot be created ({probe} is not writable)"
        raise ConfigError(f"runs_dir={runs_dir} {what}")


def check_trl_options(algo_name: str, options: dict[str, Any]) -> dict[str, Any]:
    """Types (against the TRL config dataclass's annotations), finiteness and ranges of `algo.*` keys; returns the
    options with ints widened to floats where TRL declares a float. Unknown keys are left to `build_trl_args`."""
    from workbench.algorithms import config_class

    cls = config_class(algo_name)
    try:
        hints = typing.get_type_hints(cls)
    except Exception:  # noqa: BLE001 - an unresolvable annotation: fall back to the declared ones
        hints = {f.name: f.type for f in dataclasses.fields(cls) if not isinstance(f.type, str)}
    out = {}
    for key, value in options.items():
        full = f"algo.{key}"
        if key in hints:
            value = coerce(value, hints[key], full)
        if key == "max_steps" and value is not None and isinstance(value, int) and value != -1 and value < 1:
            raise ConfigError(f"algo.max_steps={value} is out of range: must be >= 1 (or -1: train for "
                              "algo.num_train_epochs)")
        if key in TRL_RANGES and isinstance(value, (int, float)) and not isinstance(value, bool):
            check_range(full, value, *TRL_RANGES[key])
        out[key] = value
    return out


def trl_arguments(cfg: TrainConfig, regularizers: list[Any]):
    """The GRPOConfig/RLOOConfig of a run: the user's `algo.*` keys (checked), the regularizers' TRL options, the
    algorithm's defaults (`workbench.algorithms`) and the workbench's fixed settings. output_dir is a placeholder
    until the run directory exists; the reward terms' weights join when the trainer is built (`workbench.train`)."""
    import torch

    from workbench.progress import quiet_imports

    quiet_imports()  # transformers' W&B integration prints an [INFO] line on import
    from workbench.algorithms import algorithm, build_trl_args, supporting

    algo = algorithm(cfg.algo.name)
    trl_options = check_trl_options(algo.name, dict(cfg.algo.trl))
    for reg in regularizers:
        trl_options.update(reg.trl_args())
    on_cpu = not torch.cuda.is_available()
    fixed = {
        "output_dir": "checkpoints",  # replaced by the run directory's checkpoints/ once it exists
        "seed": cfg.seed,
        "report_to": "none",
        "disable_tqdm": True,
        "save_strategy": "steps",
        "logging_strategy": "steps",
    }
    if on_cpu:
        # GRPOConfig defaults to bf16 mixed precision, which needs a GPU.
        fixed.update(use_cpu=True, bf16=False, fp16=False)
    if cfg.task.tools:
        if not algo.tools:
            able = supporting("tools")
            raise ConfigError(f"task.tools: tool calls run in TRL's {' / '.join(a.trl_trainer for a in able)} only; "
                              f"use algo={'|'.join(a.name for a in able)}")
        # one bound for training (TRL's tool loop) and rl eval (workbench.evaluation): task.max_tool_calls
        fixed["max_tool_calling_iterations"] = int(cfg.task.max_tool_calls)
    for key, value in algo.defaults.items():
        trl_options.setdefault(key, value)
    import warnings

    with warnings.catch_warnings():  # transformers' deprecation notices about its own defaults are not the user's
        warnings.simplefilter("ignore", FutureWarning)
        return build_trl_args(algo.name, trl_options, fixed)


def check_vllm_train(cfg: TrainConfig, mode: str) -> None:
    """algo.use_vllm=true: vllm imports, and on CPU (workbench.vllm_cpu, workbench.vllm_server) the mode is colocate
    or server and the model's head size is one vLLM's CPU attention has a kernel for; one line each instead of an
    engine traceback."""
    from workbench.evaluation import vllm_backend

    ok, why = vllm_backend.available()
    if not ok:
        raise ConfigError(f"algo.use_vllm=true: {why}")
    if not vllm_backend.on_cpu():
        return
    if mode not in ("colocate", "server"):
        raise ConfigError(f"algo.vllm_mode={mode!r} is not valid; choose one of: colocate, server")
    m = cfg.model
    said = {"setting": "algo.use_vllm=true", "instead": "algo.use_vllm=false"}
    if m.kind == "tiny":
        head = m.tiny.hidden_size // m.tiny.num_heads
        vllm_backend.check_cpu_head_size(head, f"the tiny model's is {head} (model.tiny.hidden_size "
                                               f"{m.tiny.hidden_size} / model.tiny.num_heads {m.tiny.num_heads})",
                                         **said)
    elif m.kind == "hf" and m.name_or_path and not m.gguf_file:
        try:
            vllm_backend.check_folder_head_size(m.name_or_path, **said)
        except (OSError, ValueError):  # no config.json to read yet (a hub name not in the cache): the engine will say
            pass


def check_train(cfg: TrainConfig, with_task: bool = True, new_run: bool = True) -> Checked:
    """All checks of a training config short of loading the model; see the module docstring. `new_run=False`
    (a resume) skips `runs_dir`, which a resumed run does not use."""
    from workbench.algorithms import algorithm, supporting
    from workbench.shaping import build_terms

    check_ranges(cfg)
    if new_run:
        check_runs_dir(cfg.runs_dir)
    from workbench.parallel import accelerate_config_path, check_accelerate_config

    if cfg.launch.num_processes > 1:  # the launch itself (GPUs, deepspeed, FSDP on CPU), before any process starts
        check_accelerate_config(cfg.launch.accelerate_config, cfg.launch.num_processes)
    else:  # a misspelt preset is an error even where it is not used yet
        accelerate_config_path(cfg.launch.accelerate_config)
    reward_terms = build_terms("reward", cfg.reward)
    if not reward_terms:
        raise ConfigError("reward: no reward terms selected; e.g. reward=[correctness,format]")
    advantage_terms = build_terms("advantage", cfg.advantage)
    regularizers = build_terms("regularizer", cfg.regularizer)
    if not algorithm(cfg.algo.name).loss_regularizers and any(r.has_token_hook or r.has_loss for r in regularizers):
        able = "|".join(a.name for a in supporting("loss_regularizers"))
        raise ConfigError(f"regularizer: loss-side terms (clip_cov, kl_cov, siren) work with algo={able} only")
    per_turn = [f"{t.kind}={t.name}" for t in (*reward_terms, *advantage_terms, *regularizers) if t.requires_tools]
    if per_turn and not cfg.task.tools:
        raise ConfigError(f"{', '.join(per_turn)} acts per agent turn and needs a task with tools (task.tools, e.g. "
                          "experiment=agentic_plain)")
    args = trl_arguments(cfg, regularizers)
    if args.use_vllm:
        check_vllm_train(cfg, args.vllm_mode)
    task, train_examples, eval_examples = None, [], []
    check_tool_chat(cfg.task, cfg.model)
    if with_task:
        from workbench.tasks import build_task

        task = build_task(cfg.task)
        train_examples = task.examples("train")
        eval_examples = task.examples("eval")
        if not train_examples:
            raise ConfigError(f"task {cfg.task.name!r} has no training examples (task.train_size={cfg.task.train_size})")
        if (cfg.eval.at_start or cfg.eval.at_end or cfg.eval.every) and not eval_examples:
            raise ConfigError(f"task {cfg.task.name!r} has no held-out examples to evaluate on "
                              "(set task.eval_size, or eval.at_start=false eval.at_end=false)")
    return Checked(task, train_examples, eval_examples, reward_terms, advantage_terms, regularizers, args)
