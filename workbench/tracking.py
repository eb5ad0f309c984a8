"""Weights & Biases for `rl train` and `rl eval`: how runs are grouped, named and configured, how a training sets W&B
up and closes it, and how `rl eval`'s results reach W&B. Import-light (wandb, yaml, transformers and the compare
module load inside the functions). The one piece elsewhere: the Trainer callback that logs the rows
(`workbench.callbacks.make_wandb_callback`, beside the other callbacks); `attach` puts it on the trainer.

- **rl train**: `uses_wandb` -> `start_training` (W&B's environment variables, which transformers' callback reads,
  and `survive_service_loss`) -> `attach` -> training -> `record_summary` -> `finish`, also when the run fails or
  stops.

- **group**: `logger.group` when set, else `workbench.grouping.config_group_id(config)` = `<experiment_name>-<hash>`
  of the resolved config without seed, name, paths and logger: the rule `rl compare` groups by. So the seeds of one
  setting share a group, a run of 120 steps and one of 5 steps do not, and a sweep's settings get one group each
  (the sweep itself is a tag, `sweep:<sweep directory name>`).
- **job_type**: `train` for `rl train`, `eval` for `rl eval`.
- **name**: `<experiment_name>/<run directory name>`; `rl eval`'s run adds `/eval`.
- **config**: TRL/transformers log the HF model config and the GRPOConfig; the workbench adds its resolved config
  flattened to dotted keys (`reward.length_kimi.weight`), the `overrides` given and the `run_dir`.
- **rl eval**: a linked W&B run (job_type `eval`, the training run's group, `train_run_id` in its config), written
  into the run directory's `wandb/` in the run's own logger mode, one row per evaluated checkpoint at its training
  step on `train/global_step`, the x-axis of the training curves, so eval curves sit next to them. Why not resume
  the training run by id: W&B cannot resume an offline run, and `wandb sync` of a second offline segment with the
  same id replaces the first one's history (wandb/wandb#4624, #3841); offline is the default here.
"""

from __future__ import annotations

import math
import os
import struct
from pathlib import Path
from typing import Any

from workbench.runs import RunDir

JOB_TRAIN, JOB_EVAL = "train", "eval"
STEP_METRIC = "train/global_step"  # transformers' WandbCallback makes it the x-axis of every logged metric


def wandb_mode(logger: Any) -> str | None:
    """The W&B mode a run uses (a user's WANDB_MODE wins over logger.mode), or None when it has no W&B logging."""
    if logger.backend != "wandb":
        return None
    mode = os.environ.get("WANDB_MODE") or logger.mode
    return None if mode == "disabled" else mode


def uses_wandb(logger: Any) -> bool:
    """Whether a run logs to W&B (see `wandb_mode`)."""
    return wandb_mode(logger) is not None


def new_run_id() -> str:
    """A W&B run id for a new run directory (meta.json `wandb_run_id`): W&B accepts any short [a-z0-9] id."""
    import secrets

    return secrets.token_hex(4)


def start_training(cfg: Any, run: RunDir, run_id: str, resume: bool) -> None:
    """Before the trainer exists: W&B's environment variables (`training_env`) and `survive_service_loss`."""
    training_env(cfg, run, run_id, resume)
    survive_service_loss()


def training_env(cfg: Any, run: RunDir, run_id: str, resume: bool) -> None:
    """W&B is configured through its environment variables, which transformers' WandbCallback reads; group, job type
    and name follow the module docstring (the group: the config without the seed, as rl compare groups runs)."""
    mode = os.environ.get("WANDB_MODE") or cfg.logger.mode  # a user's explicit WANDB_MODE wins
    os.environ["WANDB_MODE"] = mode
    os.environ["WANDB_DIR"] = str(run.path)
    os.environ["WANDB_PROJECT"] = cfg.logger.project
    if cfg.logger.entity:
        os.environ["WANDB_ENTITY"] = cfg.logger.entity
    os.environ["WANDB_RUN_GROUP"] = run_group(read_config(run))  # logger.group, else <experiment>-<config hash>
    os.environ["WANDB_JOB_TYPE"] = JOB_TRAIN
    os.environ["WANDB_TAGS"] = ",".join([cfg.experiment_name, cfg.algo.name, *cfg.logger.tags])
    os.environ["WANDB_RUN_ID"] = run_id
    os.environ["WANDB_RESUME"] = "allow" if resume else "never"
    os.environ.setdefault("WANDB_SILENT", "true")
    os.environ["WANDB_LOG_MODEL"] = "false"
    os.environ["WANDB_WATCH"] = "false"


def attach(trainer: Any, run: RunDir, rollouts_per_step: int) -> None:
    """Replace transformers' WandbCallback on `trainer` by the workbench's (`workbench.callbacks.make_wandb_callback`:
    the workbench's metric names; the resolved config, overrides and run directory join W&B's config; tokens/s
    needs the rollouts per step)."""
    from transformers.integrations import WandbCallback

    from workbench.callbacks import make_wandb_callback

    trainer.remove_callback(WandbCallback)
    trainer.add_callback(make_wandb_callback(wandb_config(run, read_config(run)), rollouts_per_step))


def record_summary(summary: dict[str, Any]) -> None:
    """The numbers of the run's summary.json into the W&B run's summary."""
    import wandb

    if wandb.run is not None:
        wandb.run.summary.update({k: v for k, v in summary.items() if isinstance(v, (int, float))})


def finish(exit_code: int = 0) -> None:
    """Close the W&B run, so a later trainer in this process gets its own run (sweeps, tests)."""
    try:
        import wandb
    except ImportError:
        return
    try:
        if wandb.run is not None:
            wandb.finish(exit_code=exit_code)
    except Exception:  # noqa: BLE001 - closing W&B must never hide the real outcome (its service may be gone)
        pass
    try:
        # W&B reads its settings (WANDB_DIR among them) once per process: without a teardown the next training
        # in this process would write its files into this run's wandb/ folder. Also after a failed finish: else
        # W&B's atexit hook tries again at exit and prints a traceback.
        wandb.teardown()
    except Exception:  # noqa: BLE001
        pass


def survive_service_loss() -> None:
    """Make a lost W&B service cost the W&B rows, not the training: `wandb.Run.log` (what transformers' callback and
    TRL's own profiling and completion tables call) then warns once on stderr and drops the row.

    Why: W&B's logging runs through a service process (wandb-core) that dies on SIGTERM, and a scheduler's SIGTERM
    reaches every process of the job step (SLURM's --signal, scancel, preemption: proctrack signals the whole process
    tree), so the next `log` raised ConnectionResetError mid-step and a run that should have stopped with its
    checkpoint was marked failed. metrics.jsonl keeps every row either way. Idempotent; patches the class once."""
    import sys

    from wandb.sdk import wandb_run

    if getattr(wandb_run.Run.log, "_rl_guarded", False):
        return
    original = wandb_run.Run.log
    warned: list[bool] = []

    def log(self, *args, **kwargs):
        try:
            return original(self, *args, **kwargs)
        except (ConnectionError, OSError) as e:
            if not warned:
                warned.append(True)
                print(f"warning: W&B stopped logging ({type(e).__name__}: its service process ended, e.g. on the "
                      f"scheduler's SIGTERM); metrics.jsonl has every row", file=sys.stderr, flush=True)
            return None

    log._rl_guarded = True  # type: ignore[attr-defined]
    wandb_run.Run.log = log


def run_group(config: dict[str, Any]) -> str:
    """The W&B group of a run from its resolved config (config.yaml): logger.group, else the config-minus-seed id."""
    from workbench.grouping import config_group_id

    group = (config.get("logger") or {}).get("group")
    return str(group) if group else config_group_id(config)


def run_name(run: RunDir, config: dict[str, Any]) -> str:
    """`<experiment_name>/<run directory name>`: the run directory's path under runs_dir."""
    return f"{config.get('experiment_name') or 'default'}/{run.path.name}"


def wandb_config(run: RunDir, config: dict[str, Any]) -> dict[str, Any]:
    """What the workbench adds to a W&B run's config: every resolved key, flattened (`reward.length_kimi.weight`),
    the overrides as given (overrides.txt) and the run directory."""
    from workbench.grouping import flatten

    overrides_file = run.path / "overrides.txt"
    overrides = overrides_file.read_text().splitlines() if overrides_file.exists() else []
    return {**flatten(config), "overrides": overrides, "run_dir": str(run.path.resolve())}


def read_config(run: RunDir) -> dict[str, Any]:
    import yaml

    data = yaml.safe_load(run.config_file.read_text()) or {}
    return data if isinstance(data, dict) else {}


def log_eval(run: RunDir, results: list[dict[str, Any]], eval_settings: dict[str, Any] | None = None) -> Path | None:
    """Log `rl eval` results of a run directory to a linked W&B run (see the module docstring); returns its folder,
    or None when the run logs to no W&B (logger none, mode disabled, or no W&B run id in meta.json)."""
    from workbench.grouping import flatten
    from workbench.runs import load_run_config

    cfg = load_run_config(run)
    mode = wandb_mode(cfg.logger)
    train_id = run.read_meta().get("wandb_run_id")
    if mode is None or not train_id or not results:
        return None
    import wandb

    config = read_config(run)
    extra = {"train_run_id": train_id, **{f"rl_eval.{k}": v for k, v in flatten(eval_settings or {}).items()}}
    wb = wandb.init(
        project=cfg.logger.project, entity=cfg.logger.entity or None, dir=str(run.path), mode=mode,
        group=run_group(config), job_type=JOB_EVAL, name=run_name(run, config) + "/eval",
        tags=list(dict.fromkeys([cfg.experiment_name, cfg.algo.name, *cfg.logger.tags])),
        config={**wandb_config(run, config), **extra}, reinit="create_new",
        settings=wandb.Settings(silent=True),
    )
    try:
        wb.define_metric(STEP_METRIC)
        wb.define_metric("eval/*", step_metric=STEP_METRIC)
        ordered = sorted(results, key=lambda r: (r.get("step") is None, r.get("step") or 0))
        for res in ordered:
            row = {k: float(v) for k, v in (res.get("metrics") or {}).items()
                   if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)}
            if res.get("step") is not None:
                row[STEP_METRIC] = int(res["step"])
            wb.log(row)
        folder = Path(wb.dir).parent  # <run>/wandb/<offline-run-...>/files -> the W&B run's folder
    finally:
        wb.finish()
        wandb.teardown()  # W&B reads its settings once per process: the next run in this process starts clean
    return folder


# ----------------------------------------------------------------------------------------------- reading runs back


def _records(data: bytes):
    """The protobuf records of a W&B transaction log (`run-<id>.wandb`): a 7-byte header (":W&B", magic, version),
    then LevelDB's log format: 32 KiB blocks of chunks, each with a 7-byte header (crc32c, length, type: 1 full,
    2 first, 3 middle, 4 last)."""
    from wandb.proto import wandb_internal_pb2 as pb

    if data[:4] != b":W&B":
        raise ValueError("not a W&B transaction log")
    block, pos, buf = 32768, 7, b""
    while pos + 7 <= len(data):
        left = block - pos % block
        if left < 7:  # a block's tail too short for a chunk header is padding
            pos += left
            continue
        _, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        pos += 7
        if kind == 0 and length == 0:  # zero padding (preallocated space)
            pos += (block - pos % block) % block
            continue
        buf += data[pos:pos + length]
        pos += length
        if kind in (1, 4):
            record = pb.Record()
            record.ParseFromString(buf)
            yield record
            buf = b""


def read_offline_run(path: str | Path) -> dict[str, Any]:
    """An offline W&B run read back without syncing: `path` is a `run-<id>.wandb` file or its `offline-run-*` folder.
    Returns {"run": {id, project, group, job_type, name, tags}, "config": {key: value}, "history": [row, ...],
    "summary": {key: value}} (values JSON-decoded; nested keys joined with "/")."""
    import json

    p = Path(path)
    if p.is_dir():
        (p,) = sorted(p.glob("run-*.wandb"))
    out: dict[str, Any] = {"run": {}, "config": {}, "history": [], "summary": {}}

    def key(item) -> str:
        return "/".join(item.nested_key) if len(item.nested_key) else item.key

    for r in _records(p.read_bytes()):
        kind = r.WhichOneof("record_type")
        if kind == "run":
            out["run"] = {"id": r.run.run_id, "project": r.run.project, "group": r.run.run_group,
                          "job_type": r.run.job_type, "name": r.run.display_name, "tags": list(r.run.tags)}
            out["config"].update({key(u): json.loads(u.value_json) for u in r.run.config.update})
        elif kind == "config":
            out["config"].update({key(u): json.loads(u.value_json) for u in r.config.update})
        elif kind == "history":
            out["history"].append({key(i): json.loads(i.value_json) for i in r.history.item})
        elif kind == "summary":
            out["summary"].update({key(u): json.loads(u.value_json) for u in r.summary.update})
    out["config"].pop("_wandb", None)
    return out
