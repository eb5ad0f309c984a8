"""Trainer callbacks: the metrics file, periodic held-out evaluation, the progress line, W&B under the
workbench's metric names, and the per-epoch data order a resumed run keeps (`epoch_seeded`, `EpochSeedCallback`).
`canonical_metrics` maps TRL/Trainer log keys to the documented names."""

from __future__ import annotations

import math
import time
from typing import Any

from transformers import TrainerCallback

from workbench import metric_catalog
from workbench.runs import RunDir, append_jsonl

# The progress line: these metrics, by their catalog labels and formats.
PROGRESS_METRICS = ("train/reward", "train/accuracy", "length/mean", "entropy/mean")


def canonical_metrics(logs: dict[str, Any]) -> dict[str, Any]:
    """TRL/Trainer log keys -> the workbench's documented names (README metric table, `metric_catalog`).

    `reward` -> `train/reward`, `entropy` -> `entropy/mean`, `step_time` -> `perf/step_time`; keys already in a
    workbench namespace are kept; everything else goes under `train/` (`metric_catalog.canonical_name`).
    """
    out = {}
    for k, v in logs.items():
        if not isinstance(v, (int, float)) or isinstance(v, bool) or k.startswith("_"):
            continue
        out[metric_catalog.canonical_name(k)] = float(v)
    if "perf/step_time" in out and "length/mean" in out and out["perf/step_time"] > 0:
        # completion tokens generated and trained on per second of step time
        batch = logs.get("_rollouts_per_step")
        if batch:
            out["perf/tokens_per_s"] = out["length/mean"] * batch / out["perf/step_time"]
    return out


class MetricsFileCallback(TrainerCallback):
    """Writes every logged step to metrics.jsonl, whatever the external logger."""

    def __init__(self, run: RunDir, rollouts_per_step: int):
        self.run = run
        self.rollouts_per_step = rollouts_per_step

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not state.is_world_process_zero or not logs:
            return
        if "train_runtime" in logs:  # Trainer's end-of-training totals: not a step; summary.json has them
            return
        row = canonical_metrics({**logs, "_rollouts_per_step": self.rollouts_per_step})
        if not row:
            return
        row = {"step": int(state.global_step), "time": time.time(), **row}
        row = {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in row.items()}
        append_jsonl(self.run.metrics_file, row)


class PeriodicEvalCallback(TrainerCallback):
    """Held-out evaluation every `every` steps; its point estimates join the next log row (eval/accuracy, ...)."""

    def __init__(self, trainer, every: int, evaluate):
        self.trainer, self.every, self.evaluate = trainer, every, evaluate

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step % self.every == 0 and state.is_world_process_zero:
            res = self.evaluate(self.trainer.model, state.global_step)
            for key, value in res.items():  # the intervals stay in rl eval's files
                if value is not None and not key.endswith(("/ci_low", "/ci_high")):
                    self.trainer._metrics["train"][key].append(value)


class RichProgressCallback(TrainerCallback):
    """Training progress: step, reward, accuracy, length, entropy, ETA. A rich bar in a terminal; in a log file or a
    batch job, a plain line at most every 30 s (workbench.progress)."""

    def __init__(self, enabled: bool = True):
        self.enabled = enabled
        self.progress = None

    def on_train_begin(self, args, state, control, **kwargs):
        if not self.enabled or not state.is_world_process_zero:
            return
        from workbench.progress import Progress

        self.progress = Progress("train", state.max_steps)
        self.progress.update(state.global_step)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if self.progress is None or not logs:
            return
        m = canonical_metrics(logs)
        parts = [f"{metric_catalog.label(key)} {metric_catalog.fmt(key, m[key])}"
                 for key in PROGRESS_METRICS if m.get(key) is not None]
        self.progress.update(state.global_step, "  ".join(parts) if parts else None)

    def on_step_end(self, args, state, control, **kwargs):
        if self.progress is not None:
            self.progress.update(state.global_step)

    def on_train_end(self, args, state, control, **kwargs):
        self.close()

    def close(self):
        if self.progress is not None:
            self.progress.close()
            self.progress = None


def make_wandb_callback(config: dict[str, Any] | None = None, rollouts_per_step: int | None = None):
    """Transformers' WandbCallback, logging under the workbench's metric names instead of `train/<key>`, with the
    rows metrics.jsonl gets (`perf/tokens_per_s` needs `rollouts_per_step`) and, after the HF model config and the
    TRL config transformers puts in W&B's config, `config` (the workbench's resolved config, flattened, with the
    overrides and the run directory: `workbench.tracking.wandb_config`)."""
    from transformers.integrations import WandbCallback

    class WorkbenchWandbCallback(WandbCallback):
        def setup(self, args, state, model, **kwargs):
            super().setup(args, state, model, **kwargs)
            if config and state.is_world_process_zero and self._wandb is not None and self._wandb.run is not None:
                self._wandb.config.update(config, allow_val_change=True)

        def on_log(self, args, state, control, model=None, logs=None, **kwargs):
            if self._wandb is None:
                return
            if not self._initialized:
                self.setup(args, state, model)
            if state.is_world_process_zero and logs:
                metrics = canonical_metrics({**logs, "_rollouts_per_step": rollouts_per_step})
                self._wandb.log({**metrics, "train/global_step": state.global_step})

    return WorkbenchWandbCallback()


def epoch_seeded(sampler):
    """TRL's RepeatSampler, with each epoch's order seeded by `seed + epoch` (`set_epoch`, which transformers calls
    through accelerate's dataloader at every epoch start, the resumed one included).

    Why: TRL's sampler draws every epoch's permutation from one generator that advances across epochs, and
    transformers does not replay earlier epochs on resume, so a run resumed in epoch k >= 1 trained epoch k in epoch
    0's order: a SLURM run requeued at step 104 of 25-step epochs diverged from the uninterrupted run at step 105.
    Epoch 0's order is TRL's (seed + 0); later epochs differ from plain TRL's order but are the same whether or not
    the run was resumed. A sampler without a seed or without shuffling is returned unchanged. accelerate's
    `set_epoch` does not reach the sampler through the batch sampler that resumed epochs skip batches with
    (three wrappers deep), so `EpochSeedCallback` also sets it at every epoch start."""
    from trl.trainer.utils import RepeatSampler

    class EpochSeededRepeatSampler(RepeatSampler):
        def set_epoch(self, epoch: int) -> None:
            if self.shuffle and self.seed is not None:
                self.generator.manual_seed(int(self.seed) + int(epoch))

    if type(sampler) is RepeatSampler and sampler.shuffle and sampler.seed is not None:
        sampler.__class__ = EpochSeededRepeatSampler  # same object and arguments; one method added
    return sampler


class EpochSeedCallback(TrainerCallback):
    """At each epoch start (the resumed one included: `state.epoch` is restored from the checkpoint, e.g. 1.12), seed
    the trainer's `epoch_seeded` sampler with that epoch, before the epoch's dataloader iterator is made."""

    def __init__(self, trainer):
        self.trainer = trainer

    def on_epoch_begin(self, args, state, control, **kwargs):
        sampler = getattr(self.trainer, "_epoch_sampler", None)
        if hasattr(sampler, "set_epoch"):
            sampler.set_epoch(math.floor(float(state.epoch or 0.0) + 1e-6))
