"""`rl train` as a recipe: config (composed by the CLI) -> checks -> model -> run directory -> trainer -> train ->
final model -> evaluation -> summary.

Everything that can be wrong with the user's input is checked before the run directory is created, so a bad
override never leaves a directory behind. The pieces around the recipe live beside it: the run directory's
bookkeeping (new or resumed, segments, heartbeat, how a run that raised is marked) in `workbench.run_lifecycle`,
the stop signals in `workbench.lifecycle`, W&B in `workbench.tracking`, summary.json and its table in
`workbench.summary`, the algorithm table in `workbench.algorithms`, several processes in `workbench.launch`.
"""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from workbench import run_lifecycle, tracking
from workbench.config import TrainConfig
from workbench.progress import quiet_imports
from workbench.runs import RunDir


def _to_dataset(examples: list[dict[str, Any]], use_chat_template: bool):
    """The TRL dataset; prompts are built by `workbench.prompts.training_prompt`, the definition rl eval shares."""
    from datasets import Dataset

    from workbench.prompts import training_prompt

    return Dataset.from_list([{**x, "prompt": training_prompt(x["prompt"], use_chat_template)} for x in examples])


@dataclass
class Prepared:
    """What `prepare` built: the checked inputs (task, examples, terms, TRL args) and the model."""

    checked: Any  # workbench.checks.Checked
    model: Any
    tokenizer: Any
    info: dict[str, Any]


def prepare(cfg: TrainConfig, progress: bool = True, checked=None) -> Prepared:
    """Everything that can fail on user input (`workbench.checks.check_train`, the very checks `--dry-run` runs),
    then the model; all before any run directory exists. `checked`: the result of an earlier check_train."""
    quiet_imports()
    from workbench.checks import check_train
    from workbench.models import load_model_and_tokenizer

    c = checked if checked is not None else check_train(cfg)
    model, tokenizer, info = load_model_and_tokenizer(cfg.model, c.task, progress=progress)
    if cfg.task.tools:
        from workbench.tools import check_tool_template

        check_tool_template(tokenizer, cfg.model.name_or_path or cfg.model.kind)
    return Prepared(c, model, tokenizer, info)


def _evaluate(cfg, model, tokenizer, task, eval_examples, args, seed: int, label: str | None = None) -> dict[str, float]:
    """Held-out evaluation with rl eval's code (same scorer, metrics and names): {eval/accuracy, eval/pass@k, ...}.

    With a `label`, progress is shown (a bar in a terminal, throttled lines in a log)."""
    from workbench.evaluation.runner import evaluate_model
    from workbench.progress import Progress

    e = cfg.eval.to_eval(args.max_completion_length, seed)
    examples = eval_examples[: cfg.eval.num_problems]
    bar = Progress(label or "eval", len(examples) * e.n, enabled=label is not None, transient=True)
    try:
        metrics, _ = evaluate_model(model, tokenizer, task, examples, e, price=cfg.price,
                                    use_chat_template=cfg.model.use_chat_template,
                                    progress=bar.update if label is not None else None,
                                    reward_config=cfg.reward)
    finally:
        bar.close()
    metrics.pop("perf/tokens_per_s", None)  # generation speed of the eval, not of training
    return metrics


def train(
    cfg: TrainConfig,
    overrides: list[str],
    argv: list[str] | None = None,
    resume: str | Path | None = None,
    progress: bool = True,
) -> RunDir:
    """Run one training job and return its run directory, which ends `completed`, `failed` (the exception is
    re-raised; error.txt has the traceback) or `interrupted` (SIGINT/SIGTERM/SIGHUP: RunInterrupted is raised).

    Every check that needs no model runs first; nothing is written before the model has loaded. The process holds
    the run directory's lock from its creation (or, with `resume`, from before the model loads) to the end, and
    refreshes meta.json's heartbeat meanwhile. With `cfg.launch.num_processes` > 1 (and not already one of several
    processes) this process supervises N workers that run it (`workbench.launch.train_on_processes`).
    """
    from workbench.launch import launched, train_on_processes

    if cfg.launch.num_processes > 1 and not launched():  # supervise N workers that each run this function
        return train_on_processes(cfg, overrides, resume=resume, progress=progress)
    from workbench.lifecycle import StopSignals

    # several processes (torchrun / accelerate launch / launch.num_processes): ranks stop only where they agree
    signals = StopSignals(sync=int(os.environ.get("WORLD_SIZE", "1") or 1) > 1).install()
    try:
        return _train(cfg, overrides, argv, resume, progress, signals)
    finally:
        signals.restore()


def _train(cfg: TrainConfig, overrides: list[str], argv: list[str] | None, resume: str | Path | None, progress: bool,
           signals) -> RunDir:
    import warnings

    import transformers
    from transformers import set_seed

    from workbench.checks import check_train

    warnings.filterwarnings("ignore", category=FutureWarning)
    transformers.utils.logging.disable_progress_bar()

    import torch
    from accelerate import PartialState
    from rich.console import Console

    console = Console(stderr=False)
    argv = argv if argv is not None else sys.argv
    checked = check_train(cfg, new_run=resume is None)  # bad input fails here: no model loaded, nothing written
    set_seed(cfg.seed)
    from workbench.progress import apply_threads

    threads, threads_why = apply_threads(cfg.threads)  # before any torch work; recorded in meta.json
    # Under torchrun / accelerate launch this joins the process group (gloo on CPU); alone it is a no-op.
    state = PartialState(cpu=not torch.cuda.is_available())
    main = state.is_main_process
    run, lock = run_lifecycle.lock_for_resume(resume, argv) if main and resume is not None else (None, None)
    try:
        with state.main_process_first():  # rank 0 builds (and caches) the tiny model; the others then load it
            prepared = prepare(cfg, progress=progress and main, checked=checked)
        if progress and main:  # after the checks, so a bad input still gets exactly one line
            console.print(f"[dim]torch CPU threads: {threads} ({threads_why})[/dim]")
        if torch.cuda.is_available():  # TRL moves it later; the start evaluation must not run on the CPU
            prepared.model.to(state.device)

        # ---- run directory (new, or the one being resumed): made by rank 0, its path broadcast to the others
        run, run_id, lock = run_lifecycle.open_run(cfg, overrides, argv, state, resumed=run, lock=lock,
                                                   threads={"threads": threads, "why": threads_why},
                                                   model=prepared.info)
        from workbench.launch import note_run_dir

        note_run_dir(run.path)  # (rank 0 of a supervised launch) so a sweep job learns where its run lives
        return _run_training(cfg, run, run_id, resume, progress, signals, state, console, prepared)
    finally:
        if lock is not None:
            lock.release()


def _run_training(cfg: TrainConfig, run: RunDir, run_id: str, resume, progress: bool, signals, state, console,
                  prepared: Prepared) -> RunDir:
    """Train in an existing run directory, then save, evaluate and summarise; on any exit the run says why."""
    from workbench.callbacks import MetricsFileCallback, PeriodicEvalCallback, RichProgressCallback
    from workbench.lifecycle import RunInterrupted, graceful_stop_callback

    c = prepared.checked
    model, tokenizer, task, eval_examples, args = prepared.model, prepared.tokenizer, c.task, c.eval_examples, c.args
    main = state.is_main_process
    checkpoint = run.last_checkpoint() if resume is not None else None
    wandb = tracking.uses_wandb(cfg.logger)
    if wandb:
        tracking.start_training(cfg, run, run_id, resume is not None)
    # Set in place: dataclasses.replace would re-run __post_init__, which rejects its own derived batch fields.
    args.output_dir = str(run.checkpoints_dir)
    args.run_name = f"{cfg.experiment_name}/{run.path.name}"
    args.report_to = ["wandb"] if wandb else []

    def evaluate(model, seed: int, label: str | None = None) -> dict[str, float]:
        return _evaluate(cfg, model, tokenizer, task, eval_examples, args, seed=seed,
                         label=label if progress else None)

    progress_cb = RichProgressCallback(enabled=progress)
    metrics_cb = MetricsFileCallback(run, rollouts_per_step=args.per_device_train_batch_size * args.gradient_accumulation_steps)
    trainer = None
    start_eval: dict[str, float] = {}
    t0 = time.time()
    try:
        signals.stop_if_agreed(state.device)  # a signal while the run was set up: every rank stops here, together
        # ---- held-out evaluation of the start model (or, resuming, the one the run began with)
        if cfg.eval.at_start and checkpoint is None and main:
            start_eval = evaluate(model, cfg.seed, "eval start")
            run.write_meta(eval_start=start_eval)
            console.print(f"[dim]start: held-out accuracy {start_eval['eval/accuracy']:.3f}, length "
                          f"{start_eval['eval/length/mean']:.1f} tokens ({cfg.eval.num_problems} problems x "
                          f"{cfg.eval.n})[/dim]")
        elif resume is not None and main:
            start_eval = run.read_meta().get("eval_start", {})
        signals.stop_if_agreed(state.device)  # ... or while rank 0 evaluated the start model
        # ---- the trainer and its callbacks
        trainer = build_trainer(cfg, c, model, tokenizer, run, [metrics_cb, progress_cb])
        from transformers.trainer_callback import PrinterCallback

        trainer.remove_callback(PrinterCallback)  # raw log dicts on stdout; the rich bar and metrics.jsonl replace it
        if wandb:
            tracking.attach(trainer, run, metrics_cb.rollouts_per_step)
        if cfg.eval.every > 0:
            trainer.add_callback(PeriodicEvalCallback(trainer, cfg.eval.every, lambda model, step: evaluate(model, step)))
        trainer.add_callback(graceful_stop_callback(signals))
        # ---- train
        signals.graceful = True  # from here a SIGTERM/SIGHUP saves a checkpoint at the end of the step, then stops
        try:
            trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None)
        finally:
            signals.graceful = False
        progress_cb.close()
        # A signal after the last step's agreement (or on another rank): every rank learns it here and stops too.
        if signals.agree(state.device) is not None:
            _checkpoint_stop_step(trainer, run)
            raise RunInterrupted(signals.received, step=int(trainer.state.global_step))
        # from here a signal stops the rank it reaches at once (the final save, rank 0's end evaluation); under
        # FSDP/DeepSpeed the final gather is still a collective, and the other ranks wait for torchrun's teardown
        signals.sync = False
        state.wait_for_everyone()
        # ---- save the final model (merged if LoRA) so plain transformers can load it. Every rank joins: under
        # FSDP/DeepSpeed the full weights are gathered first (a collective); rank 0 writes final/ (workbench.parallel)
        from workbench.parallel import save_final_model

        final_model = save_final_model(trainer, run.final_dir, tokenizer, lambda m: _set_generation_defaults(m, args),
                                       is_main=main)
        if not main:
            return run
        # ---- held-out evaluation of the final model, then summary.json: the run is completed
        end_eval = evaluate(final_model, cfg.seed + 1, "eval end") if cfg.eval.at_end else {}
        signals.hold()  # from here on the run records its end; a signal no longer interrupts that
        steps = int(trainer.state.global_step)
        seconds = run_lifecycle.end_segment(run, "completed", steps, t0)
        from workbench.summary import summarize

        summary = summarize(run, cfg, start_eval, end_eval, seconds, steps)
        if wandb:
            tracking.record_summary(summary)
        run.mark_completed(summary)
        tracking.finish(0)
        if signals.received is not None:  # a signal while the run recorded its end: completed, then stop
            raise RunInterrupted(signals.received, step=steps)
        return run
    except BaseException as e:
        signals.hold()
        progress_cb.close()
        stop = run_lifecycle.record_exit(e, run, main, int(trainer.state.global_step) if trainer is not None else None,
                                         t0)
        tracking.finish(stop.exit_code if stop is not None else 1)
        if stop is not None:
            raise stop from None
        raise


def build_trainer(cfg: TrainConfig, checked, model, tokenizer, run: RunDir, callbacks: list[Any]):
    """The algorithm's trainer (`workbench.algorithms`) with the run's shaping terms. The terms, with their weights,
    reach the trainer by one road, `setup_shaping` (`workbench.shaping.pipeline`); TRL itself sees one reward
    column, the pipeline's weighted sum (`workbench.trainers`)."""
    from workbench.algorithms import trainer_class

    args = checked.args
    extra: dict[str, Any] = {}
    if cfg.task.tools:  # TRL runs the tool loop; the environments (workbench.tools) run, price and log each call
        from workbench.tools import environment_factory

        os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")  # the tool loop is TRL's documented API
        extra["environment_factory"] = environment_factory(cfg.task.tools, cfg.price.tools, cfg.task.tool_timeout)
    trainer = trainer_class(cfg.algo.name)(
        model=model,
        args=args,
        train_dataset=_to_dataset(checked.train_examples, cfg.model.use_chat_template),
        processing_class=tokenizer,
        callbacks=callbacks,
        **extra,
    )
    trainer.setup_shaping(
        task=checked.task,
        reward_terms=checked.reward_terms,
        advantage_terms=checked.advantage_terms,
        regularizers=checked.regularizers,
        run=run,
        samples_every=cfg.samples_every,
        num_samples=cfg.num_samples,
        price_prompt=cfg.price.prompt_per_million,
        price_completion=cfg.price.completion_per_million,
    )
    if cfg.sampler:
        from workbench.sampling import build_samplers

        trainer.setup_sampling(build_samplers(cfg.sampler))
    return trainer


def _checkpoint_stop_step(trainer, run: RunDir) -> None:
    """Make sure the step the run stops at has a checkpoint (every rank calls this): a stop agreed after the training
    loop's last step callback found none saved for that step, and --resume would redo it."""
    step = int(trainer.state.global_step)
    last = run.last_checkpoint()
    if step > 0 and (last is None or last.name != f"checkpoint-{step}"):
        trainer._save_checkpoint(trainer.model, trial=None)  # what the Trainer itself calls when should_save is set


def _set_generation_defaults(model, args) -> None:
    """What a plain `model.generate()` on final/ should do: sample as the run did (max_completion_length new tokens at
    the rollout temperature, top-k/top-p as trained) and use the KV cache. Without this, generation_config.json holds
    token ids only and transformers falls back to max_length=20 (prompt included), cutting answers mid-thought."""
    gen = model.generation_config
    gen.max_new_tokens = int(args.max_completion_length)
    gen.max_length = None
    gen.do_sample = True
    gen.temperature = float(args.temperature)
    gen.top_p = float(args.top_p if args.top_p is not None else 1.0)
    gen.top_k = int(args.top_k) if args.top_k else 0
    gen.use_cache = True
    model.config.use_cache = True  # training turns it off (gradient checkpointing); inference wants it
