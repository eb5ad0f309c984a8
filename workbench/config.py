"""Typed configuration: the Hydra-composed tree is converted once into these dataclasses and validated.

Everything past the CLI boundary works with these objects, never with raw DictConfigs, so a typo in a key
or a wrong type fails here, before any model is built, with a one-line `ConfigError` naming the key.

This module must stay import-light (no torch, no trl): `rl --help` and `rl train --dry-run` use it.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from dataclasses import dataclass, field
from typing import Any

from workbench.algorithms import ALGORITHMS
from workbench.errors import ConfigError  # noqa: F401  (its public home for callers: workbench.config.ConfigError)


# ----------------------------------------------------------------------------------------------- model


@dataclass
class TinyModelConfig:
    """The workbench's own CPU-sized model: a Qwen2-style decoder with a character tokenizer."""

    hidden_size: int = 128
    num_layers: int = 4
    num_heads: int = 4
    num_kv_heads: int = 2
    intermediate_size: int = 512
    max_positions: int = 256
    warm_start_steps: int = 700
    warm_start_batch_size: int = 64
    warm_start_lr: float = 3e-3
    verbose_fraction: float = 0.5
    verbose_style: str = "steps"  # steps | padded (VERBOSE_STYLES): what the verbose half of the warm start holds
    seed: int = 0


@dataclass
class LoraConfig:
    enabled: bool = False
    r: int = 16
    alpha: int = 32
    dropout: float = 0.05
    target_modules: list[str] = field(default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"])


@dataclass
class ModelConfig:
    kind: str = "tiny"  # tiny | hf
    name_or_path: str | None = None
    # hf only: a .gguf file (path, or `package:file` inside an installed package) converted once to an HF directory
    gguf_file: str | None = None
    dtype: str = "float32"  # float32 | bfloat16 | float16
    use_chat_template: bool = False
    tiny: TinyModelConfig = field(default_factory=TinyModelConfig)
    lora: LoraConfig = field(default_factory=LoraConfig)


MODEL_KINDS = ("tiny", "hf")
DTYPES = ("float32", "bfloat16", "float16")

# ----------------------------------------------------------------------------------------------- task


@dataclass
class TaskConfig:
    name: str = "arithmetic"  # a name in workbench.tasks.TASKS; with kind=gym, a reasoning-gym dataset name
    # the Task class (a key of workbench.tasks.TASKS) when it is not `name`: task=gym sets kind=gym, name=<dataset>
    kind: str | None = None
    train_size: int = 2000
    eval_size: int = 200
    seed: int = 0
    prompt_style: str = "compact"  # compact | natural
    # reasoning-gym generator options (e.g. num_terms, num_digits); passed through to the generator
    params: dict[str, Any] = field(default_factory=dict)
    # local file task (name=file): path to .jsonl or .parquet and the column names
    path: str | None = None
    question_key: str = "question"
    answer_key: str = "answer"
    # HF-datasets task (name=hf): dataset name, optional config, splits
    dataset: str | None = None
    dataset_config: str | None = None
    train_split: str = "train"
    eval_split: str = "test"
    # tools the model may call (workbench.tools.TOOL_NAMES: calculator, expert); empty = plain generation
    tools: list[str] = field(default_factory=list)
    # seconds a tool call may take before the model gets "error: ... timed out"
    tool_timeout: float = 5.0
    # most tool-calling turns per rollout (TRL's max_tool_calling_iterations; rl eval uses the same bound)
    max_tool_calls: int = 2


PROMPT_STYLES = ("compact", "natural")
# model.tiny.verbose_style: step-by-step verbose traces, or the concise trace restated to the same length.
VERBOSE_STYLES = ("steps", "padded")

# ----------------------------------------------------------------------------------------------- algo


@dataclass
class AlgoConfig:
    name: str = "grpo"  # grpo | rloo
    # Every other key is passed to TRL's GRPOConfig / RLOOConfig and validated against its fields.
    trl: dict[str, Any] = field(default_factory=dict)


ALGOS = tuple(ALGORITHMS)  # the algorithm table (workbench.algorithms)

# ----------------------------------------------------------------------------------------------- logger


@dataclass
class LoggerConfig:
    backend: str = "wandb"  # wandb | none
    project: str = "rl-workbench"
    entity: str | None = None
    group: str | None = None
    tags: list[str] = field(default_factory=list)
    mode: str = "offline"  # offline | online | disabled


LOGGER_BACKENDS = ("wandb", "none")
WANDB_MODES = ("offline", "online", "disabled")


# ----------------------------------------------------------------------------------------------- eval during training


@dataclass
class TrainEvalConfig:
    """Held-out evaluation inside `rl train` (sampled, scored by the task's scorer): when, on how many problems, and
    the sampling settings it shares with `rl eval`'s `EvalConfig` (`to_eval` makes that one from this)."""

    at_start: bool = True
    at_end: bool = True
    every: int = 0  # also every N optimizer steps (0 = never)
    num_problems: int = 200
    n: int = 2  # samples per problem
    temperature: float = 1.0
    batch_size: int = 128

    def to_eval(self, max_new_tokens: int, seed: int) -> EvalConfig:
        """The `EvalConfig` that `rl eval`'s code (`evaluate_model`) samples and summarises with: this section's n,
        temperature and batch size, the run's completion limit and seed, rl eval's number of resamples (N_BOOT).
        `num_problems` stays with the caller, which picks the problems."""
        return EvalConfig(n=self.n, temperature=self.temperature, max_new_tokens=int(max_new_tokens),
                          batch_size=self.batch_size, seed=seed)


# ----------------------------------------------------------------------------------------------- rl eval

#: Bootstrap resamples for every confidence interval over problems: rl eval (conf/eval.yaml eval.n_boot, which a test
#: keeps equal to this) and the evaluations inside rl train use the same number, so their intervals agree.
#: (`workbench.evaluation.metrics.N_BOOT` is this one.)
N_BOOT = 1000
#: eval.backend: transformers generate (CPU or GPU) | vLLM (`workbench.evaluation.vllm_backend`).
EVAL_BACKENDS = ("hf", "vllm")


@dataclass
class EvalConfig:
    """The `eval:` section of conf/eval.yaml (see the comments there); inside rl train, `TrainEvalConfig.to_eval`."""

    n: int = 8
    k: list[int] | None = None
    maj_k: list[int] | None = None
    temperature: float = 1.0
    max_new_tokens: int | None = None
    batch_size: int = 128
    num_problems: int | None = None
    backend: str = "hf"
    n_boot: int = N_BOOT
    seed: int = 0
    threads: int = 0  # torch CPU threads; 0 = automatic (a speed knob, not part of the result's identity)


@dataclass
class PriceConfig:
    """Token prices in $ per million tokens, for cost/ metrics and cost terms."""

    prompt_per_million: float = 0.15
    completion_per_million: float = 0.60
    # $ per tool call, by tool name (workbench.tools.DEFAULT_TOOL_PRICES fills the ones not given)
    tools: dict[str, float] = field(default_factory=dict)


@dataclass
class LaunchConfig:
    """How many processes train one run (`workbench.launch`): 1 = this process; N > 1 = `accelerate launch` with a
    preset of conf/accelerate/ (`workbench.parallel`)."""

    num_processes: int = 1
    accelerate_config: str = "ddp"  # a preset name (ddp | fsdp2 | zero2 | zero3) or a path to an accelerate yaml


@dataclass
class EvalRootConfig:
    """conf/eval.yaml as a typed config (`to_eval_config`)."""

    runs_dir: str = "runs"
    model: ModelConfig = field(default_factory=ModelConfig)
    task: TaskConfig = field(default_factory=TaskConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    price: PriceConfig = field(default_factory=PriceConfig)


# ----------------------------------------------------------------------------------------------- train


@dataclass
class TrainConfig:
    experiment_name: str = "default"
    name: str = "run"
    seed: int = 0
    runs_dir: str = "runs"
    threads: int = 0  # torch CPU threads; 0 = automatic (workbench.progress.choose_threads)
    samples_every: int = 10
    num_samples: int = 8
    model: ModelConfig = field(default_factory=ModelConfig)
    task: TaskConfig = field(default_factory=TaskConfig)
    algo: AlgoConfig = field(default_factory=AlgoConfig)
    logger: LoggerConfig = field(default_factory=LoggerConfig)
    eval: TrainEvalConfig = field(default_factory=TrainEvalConfig)
    price: PriceConfig = field(default_factory=PriceConfig)
    launch: LaunchConfig = field(default_factory=LaunchConfig)
    # shaping terms by kind: {term_name: {option: value}}; names are keys of the shaping registry
    reward: dict[str, dict[str, Any]] = field(default_factory=dict)
    advantage: dict[str, dict[str, Any]] = field(default_factory=dict)
    regularizer: dict[str, dict[str, Any]] = field(default_factory=dict)
    # samplers (workbench.sampling), filled by the sampler/ group: {sampler_name: {option: value}}
    sampler: dict[str, dict[str, Any]] = field(default_factory=dict)


# ----------------------------------------------------------------------------------------------- conversion


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", str(tp)).replace("typing.", "")


def coerce(value: Any, tp: Any, key: str) -> Any:
    """Check `value` against annotation `tp`, converting ints to floats where a float is expected."""
    origin = typing.get_origin(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return coerce(value, arg, key)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(errors[0] if errors else f"{key}: unexpected value {value!r}")
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {value!r}")
        return from_dict(tp, value, prefix=key)
    if origin is list:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        (arg,) = typing.get_args(tp) or (Any,)
        return [coerce(v, arg, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {value!r}")
        _, varg = typing.get_args(tp) or (str, Any)
        # `term:` with no options in YAML is None; it means "no options" only where a mapping is expected
        empty = {} if typing.get_origin(varg) is dict else None
        return {str(k): coerce(empty if v is None else v, varg, f"{key}.{k}") for k, v in value.items()}
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{key}: expected true/false, got {value!r}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            if not math.isfinite(value):
                raise ConfigError(f"{key}={value}: expected a finite number")
            return float(value)
        raise ConfigError(f"{key}: expected a number, got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(f"{key}: expected an integer, got {value!r}")
    if tp is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"{key}: expected a string, got {value!r}")
    return value


def from_dict(cls: type, data: dict[str, Any], prefix: str = "") -> Any:
    """Build dataclass `cls` from a plain dict, rejecting unknown keys and wrong types with the key's full name."""
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for key, value in data.items():
        full = f"{prefix}.{key}" if prefix else key
        if key not in hints:
            raise ConfigError(f"unknown key '{full}'; valid keys: {', '.join(sorted(names))}")
        kwargs[key] = coerce(value, hints[key], full)
    return cls(**kwargs)


def _check_choice(key: str, value: Any, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ConfigError(f"{key}={value!r} is not valid; choose one of: {', '.join(choices)}")


def to_train_config(data: dict[str, Any]) -> TrainConfig:
    """Convert a resolved config tree (plain dict) into a validated TrainConfig.

    Algorithm keys other than `name` go to `algo.trl`; they are checked against TRL's config class later,
    in `workbench.algorithms.build_trl_args`, because importing TRL here would make `rl --help` slow.
    """
    data = dict(data)
    algo = dict(data.get("algo") or {})
    data["algo"] = {"name": algo.pop("name", "grpo"), "trl": algo}
    data.pop("hydra", None)
    cfg = from_dict(TrainConfig, data)
    _check_choice("task.prompt_style", cfg.task.prompt_style, PROMPT_STYLES)
    _check_choice("algo.name", cfg.algo.name, ALGOS)
    _check_choice("logger.backend", cfg.logger.backend, LOGGER_BACKENDS)
    _check_choice("logger.mode", cfg.logger.mode, WANDB_MODES)
    check_model(cfg.model)
    check_ranges(cfg)
    return cfg


# (key, lowest allowed, whether the lowest itself is allowed, highest allowed or None)
_RANGES: tuple[tuple[str, float, bool, float | None], ...] = (
    ("samples_every", 0, True, None),
    ("launch.num_processes", 1, True, None),
    ("num_samples", 0, True, None),
    ("task.train_size", 1, True, None),
    ("task.eval_size", 1, True, None),
    ("eval.every", 0, True, None),
    ("eval.num_problems", 1, True, None),
    ("eval.n", 1, True, None),
    ("eval.batch_size", 1, True, None),
    ("eval.temperature", 0, True, None),
    ("price.prompt_per_million", 0, True, None),
    ("price.completion_per_million", 0, True, None),
    ("model.tiny.hidden_size", 1, True, None),
    ("model.tiny.num_layers", 1, True, None),
    ("model.tiny.num_heads", 1, True, None),
    ("model.tiny.num_kv_heads", 1, True, None),
    ("model.tiny.intermediate_size", 1, True, None),
    ("model.tiny.max_positions", 1, True, None),
    ("model.tiny.warm_start_steps", 0, True, None),
    ("model.tiny.warm_start_batch_size", 1, True, None),
    ("model.tiny.warm_start_lr", 0, False, None),
    ("model.tiny.verbose_fraction", 0, True, 1),
    ("model.lora.r", 1, True, None),
    ("model.lora.alpha", 0, False, None),
    ("model.lora.dropout", 0, True, 1),
)


def check_range(key: str, value: Any, low: float | None, low_ok: bool = True, high: float | None = None) -> None:
    """One-line ConfigError naming the key unless value >= low (> low when not low_ok) and value <= high."""
    if value is None:
        return
    if (low is not None and (value < low or (value == low and not low_ok))) or (high is not None and value > high):
        lo = "" if low is None else (f">= {low:g}" if low_ok else f"> {low:g}")
        hi = "" if high is None else f"<= {high:g}"
        raise ConfigError(f"{key}={value} is out of range: must be {' and '.join(x for x in (lo, hi) if x)}")


def check_ranges(cfg: TrainConfig) -> None:
    """Numbers that make no sense (zero samples, negative sizes, ...) fail here, before anything is built."""
    for key, low, low_ok, high in _RANGES:
        value: Any = cfg
        for part in key.split("."):
            value = getattr(value, part)
        check_range(key, value, low, low_ok, high)


def check_tool_chat(task: TaskConfig, model: ModelConfig) -> None:
    """Tools need the chat path (shared by rl train and rl eval): calls and results are chat messages."""
    if task.tools and not model.use_chat_template:
        raise ConfigError("task.tools needs model.use_chat_template=true: tool calls and their results are chat "
                          "messages (the tiny model gets a tool chat template of its own)")


def check_model(model: ModelConfig) -> None:
    """Choices and required keys of the model group (shared by rl train and rl eval)."""
    _check_choice("model.kind", model.kind, MODEL_KINDS)
    _check_choice("model.dtype", model.dtype, DTYPES)
    _check_choice("model.tiny.verbose_style", model.tiny.verbose_style, VERBOSE_STYLES)
    if model.kind == "hf" and not (model.name_or_path or model.gguf_file):
        raise ConfigError("model.name_or_path (or model.gguf_file) must be set when model.kind=hf")
    if model.gguf_file and model.name_or_path:
        raise ConfigError("model.gguf_file and model.name_or_path are both set; give one (the GGUF file is converted)")
    if model.gguf_file and model.kind != "hf":
        raise ConfigError("model.gguf_file needs model.kind=hf")


def validate_eval(e: EvalConfig) -> None:
    """One-line ConfigErrors for impossible eval settings (k > n among them)."""
    if e.n < 1:
        raise ConfigError(f"eval.n={e.n} must be at least 1")
    for key in ("k", "maj_k"):
        values = getattr(e, key)
        if values is None:
            continue
        if not values:
            raise ConfigError(f"eval.{key}=[] is empty; give at least one k or null for the default")
        for k in values:
            if k < 1:
                raise ConfigError(f"eval.{key}={values}: k={k} must be at least 1")
            if k > e.n:
                what = "pass@k" if key == "k" else "maj@k"
                raise ConfigError(
                    f"eval.{key}={values}: k={k} is larger than eval.n={e.n} ({what} needs k <= n); "
                    f"raise eval.n or lower k"
                )
    if e.temperature < 0:
        raise ConfigError(f"eval.temperature={e.temperature} must be >= 0 (0 = greedy)")
    if e.max_new_tokens is not None and e.max_new_tokens < 1:
        raise ConfigError(f"eval.max_new_tokens={e.max_new_tokens} must be at least 1")
    if e.batch_size < 1:
        raise ConfigError(f"eval.batch_size={e.batch_size} must be at least 1")
    if e.num_problems is not None and e.num_problems < 1:
        raise ConfigError(f"eval.num_problems={e.num_problems} must be at least 1 (or null = all)")
    if e.threads < 0:
        raise ConfigError(f"eval.threads={e.threads} must be >= 0 (0 = automatic)")
    if e.n_boot < 0:
        raise ConfigError(f"eval.n_boot={e.n_boot} must be >= 0 (0 = no confidence intervals)")
    _check_choice("eval.backend", e.backend, EVAL_BACKENDS)


def to_eval_config(data: dict[str, Any]) -> EvalRootConfig:
    """Validated EvalRootConfig from a composed conf/eval.yaml tree (plain dict)."""
    data = dict(data)
    data.pop("hydra", None)
    cfg = from_dict(EvalRootConfig, data)
    check_model(cfg.model)
    _check_choice("task.prompt_style", cfg.task.prompt_style, PROMPT_STYLES)
    validate_eval(cfg.eval)
    check_tool_chat(cfg.task, cfg.model)
    if cfg.task.tools and cfg.eval.backend == "vllm":
        raise ConfigError("task.tools: eval.backend=vllm does not run tools; use eval.backend=hf")
    return cfg


def to_dict(cfg: Any) -> dict[str, Any]:
    """The inverse of `to_train_config` (algo.trl flattened back into algo)."""
    d = dataclasses.asdict(cfg)
    if "algo" in d and isinstance(d["algo"], dict) and "trl" in d["algo"]:
        algo = d["algo"]
        d["algo"] = {"name": algo["name"], **algo["trl"]}
    return d
