"""`rl train`, top to bottom: config -> task -> shaping -> TRL args -> model -> run dir -> trainer -> train -> save.

Everything that can be wrong with the user's input is checked before the run directory is created, so a bad
override never leaves a directory behind.
"""

from __future__ import annotations

import os
import sys
import time
import traceback
from pathlib import Path
from dataclasses import dataclass
from typing import Any

import yaml

from workbench.config import ConfigError, TrainConfig, to_dict
from workbench.progress import quiet_imports
from workbench.runs import RunDir, load_run_config, read_jsonl

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def _console():
    from rich.console import Console

    return Console(stderr=False)


def _to_dataset(examples: list[dict[str, Any]], use_chat_template: bool):
    """The TRL dataset; prompts are built by `workbench.prompts.training_prompt`, the definition rl eval shares."""
    from datasets import Dataset

    from workbench.prompts import training_prompt

    return Dataset.from_list([{**x, "prompt": training_prompt(x["prompt"], use_chat_template)} for x in examples])


def _wandb_env(cfg: TrainConfig, run: RunDir, run_id: str, resume: bool) -> None:
    """W&B is configured through its environment variables, which transformers' WandbCallback reads; group, job type
    and name follow `workbench.tracking` (the group: the config without the seed, as rl compare groups runs)."""
    from workbench.tracking import JOB_TRAIN, read_config, run_group

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


def _finish_wandb(exit_code: int = 0) -> None:
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
    from workbench.evaluation.metrics import N_BOOT
    from workbench.evaluation.runner import EvalConfig, evaluate_model
    from workbench.progress import Progress

    e = EvalConfig(n=cfg.eval.n, temperature=cfg.eval.temperature, max_new_tokens=args.max_completion_length,
                   batch_size=cfg.eval.batch_size, seed=seed, n_boot=N_BOOT)  # rl eval's number of resamples
    examples = eval_examples[: cfg.eval.num_problems]
    bar = Progress(label or "eval", len(examples) * e.n, enabled=label is not None, transient=True)
    try:
        metrics, _ = evaluate_model(model, tokenizer, task, examples, e, price=cfg.price,
                                    use_chat_template=cfg.model.use_chat_template,
                                    progress=bar.update if label is not None else None)
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
    import secrets
    import socket
    import warnings

    import transformers
    from transformers import set_seed

    from workbench.checks import check_train
    from workbench.runs import STATUS_RUNNING, now_iso

    warnings.filterwarnings("ignore", category=FutureWarning)
    transformers.utils.logging.disable_progress_bar()

    import torch
    from accelerate import PartialState
    from accelerate.utils import broadcast_object_list

    console = _console()
    argv = argv if argv is not None else sys.argv
    checked = check_train(cfg, new_run=resume is None)  # bad input fails here: no model loaded, nothing written
    set_seed(cfg.seed)
    from workbench.progress import apply_threads

    threads, threads_why = apply_threads(cfg.threads)  # before any torch work; recorded in meta.json
    # Under torchrun / accelerate launch this joins the process group (gloo on CPU); alone it is a no-op.
    state = PartialState(cpu=not torch.cuda.is_available())
    main = state.is_main_process
    lock = None
    run: RunDir | None = None
    if main and resume is not None:
        run = RunDir.open(resume)
        if not os.access(run.path, os.W_OK | os.X_OK):
            raise ConfigError(f"cannot resume {run.path}: the directory is not writable")
        lock = run.acquire(command=" ".join(argv))  # a live process holding it: RunInUse (a ConfigError)
    try:
        with state.main_process_first():  # rank 0 builds (and caches) the tiny model; the others then load it
            prepared = prepare(cfg, progress=progress and main, checked=checked)
        model, tokenizer, info = prepared.model, prepared.tokenizer, prepared.info
        if progress and main:  # after the checks, so a bad input still gets exactly one line
            console.print(f"[dim]torch CPU threads: {threads} ({threads_why})[/dim]")
        if torch.cuda.is_available():  # TRL moves it later; the start evaluation must not run on the CPU
            model.to(state.device)

        # ---- run directory (new, or the one being resumed): made by rank 0, its path broadcast to the others
        segment = {"pid": os.getpid(), "host": socket.gethostname(), "start": now_iso(), "start_ts": time.time(),
                   "from_step": 0, "command": " ".join(argv), "end": None, "seconds": None, "outcome": None}
        shared: list[Any] = [None, None]
        if main and run is not None:
            meta = run.read_meta()
            last = run.last_checkpoint()
            step = 0
            if last is not None:
                import json

                step = json.loads((last / "trainer_state.json").read_text())["global_step"]
            segments = _close_dead_segment(run, meta)
            run.truncate_metrics(step)
            run_id = meta.get("wandb_run_id") or secrets.token_hex(4)
            segment["from_step"] = step
            run.write_meta(status=STATUS_RUNNING, error=None, signal=None, interrupted_checkpoint=None,
                           end_time=None, pid=os.getpid(),
                           host=socket.gethostname(), heartbeat=now_iso(),
                           resumes=[*meta.get("resumes", []), {"time": time.time(), "from_step": step}],
                           segments=[*segments, segment])
            if run.summary_file.exists():
                run.summary_file.unlink()
            shared = [str(run.path), run_id]
        elif main:
            run = RunDir.create(cfg.runs_dir, cfg.experiment_name, cfg.name)
            lock = run.acquire(command=" ".join(argv))  # before anything is written into it
            run_id = secrets.token_hex(4)  # W&B accepts any short [a-z0-9] id
            with open(run.config_file, "w") as f:
                yaml.safe_dump(to_dict(cfg), f, sort_keys=False)
            run.path.joinpath("overrides.txt").write_text("".join(o + "\n" for o in overrides))
            run.start_meta(argv, cfg.seed, PROJECT_ROOT)
            run.write_meta(threads={"threads": threads, "why": threads_why}, model=info, wandb_run_id=run_id if cfg.logger.backend == "wandb" else None,
                           num_processes=state.num_processes, segments=[segment])
            shared = [str(run.path), run_id]
        if lock is not None:
            lock.start_heartbeat()
        if state.num_processes > 1:
            broadcast_object_list(shared)
        run, run_id = RunDir(Path(shared[0])), shared[1]
        from workbench.launch import note_run_dir

        note_run_dir(run.path)  # (rank 0 of a supervised launch) so a sweep job learns where its run lives
        return _run_training(cfg, run, run_id, resume, progress, signals, state, console, prepared.checked, model,
                             tokenizer)
    finally:
        if lock is not None:
            lock.release()


def _close_dead_segment(run: RunDir, meta: dict[str, Any]) -> list[dict[str, Any]]:
    """meta.json's segments, the last one closed if its process died without recording its end (SIGKILL, a crash of
    the machine): it lasted until its last sign of life, the later of its heartbeat and its last metrics row."""
    from workbench.runs import heartbeat_age

    segments = [dict(s) for s in meta.get("segments", [])]
    if segments and segments[-1].get("seconds") is None and segments[-1].get("start_ts"):
        last = segments[-1]
        ends = []
        age = heartbeat_age(meta)
        if age is not None:
            ends.append(time.time() - age)
        rows = read_jsonl(run.metrics_file)
        ends += [r["time"] for r in rows if isinstance(r.get("time"), (int, float)) and r["time"] >= last["start_ts"]]
        end = max(ends) if ends else last["start_ts"]
        last.update(seconds=round(max(0.0, end - last["start_ts"]), 1), outcome="dead",
                    to_step=max([r.get("step", 0) for r in rows], default=None))
    return segments


def _end_segment(run: RunDir, outcome: str, step: int | None, t0: float) -> float:
    """Record the end of this process's segment in meta.json; returns the seconds of all segments together."""
    from workbench.runs import now_iso

    segments = [dict(s) for s in run.read_meta().get("segments", [])]
    if segments and segments[-1].get("pid") == os.getpid() and segments[-1].get("seconds") is None:
        segments[-1].update(end=now_iso(), seconds=round(time.time() - t0, 1), outcome=outcome, to_step=step)
        run.write_meta(segments=segments)
    return sum(float(s.get("seconds") or 0.0) for s in segments)


def _run_training(cfg, run, run_id, resume, progress, signals, state, console, checked, model, tokenizer) -> RunDir:
    """Train in an existing run directory, then save, evaluate and mark it; on any exit the run says why."""
    from workbench.lifecycle import RunInterrupted, graceful_stop_callback

    task, train_examples, eval_examples = checked.task, checked.train_examples, checked.eval_examples
    reward_terms, advantage_terms, regularizers = checked.reward_terms, checked.advantage_terms, checked.regularizers
    args = checked.args

    main = state.is_main_process
    checkpoint = run.last_checkpoint() if resume is not None else None
    use_wandb = cfg.logger.backend == "wandb" and (os.environ.get("WANDB_MODE") or cfg.logger.mode) != "disabled"
    if use_wandb:
        _wandb_env(cfg, run, run_id, resume is not None)
        from workbench.tracking import survive_service_loss

        survive_service_loss()
    # Set in place: dataclasses.replace would re-run __post_init__, which rejects its own derived batch fields.
    args.output_dir = str(run.checkpoints_dir)
    args.run_name = f"{cfg.experiment_name}/{run.path.name}"
    args.report_to = ["wandb"] if use_wandb else []

    from workbench.callbacks import (
        MetricsFileCallback,
        PeriodicEvalCallback,
        RichProgressCallback,
        make_wandb_callback,
    )
    from workbench.trainers import ShapedGRPOTrainer, ShapedRLOOTrainer

    progress_cb = RichProgressCallback(enabled=progress)
    metrics_cb = MetricsFileCallback(run, rollouts_per_step=args.per_device_train_batch_size * args.gradient_accumulation_steps)
    stop_cb = graceful_stop_callback(signals)
    trainer = None
    start_eval: dict[str, float] = {}
    t0 = time.time()
    try:
        signals.stop_if_agreed(state.device)  # a signal while the run was set up: every rank stops here, together
        if cfg.eval.at_start and checkpoint is None and main:
            start_eval = _evaluate(cfg, model, tokenizer, task, eval_examples, args, seed=cfg.seed,
                                   label="eval start" if progress else None)
            run.write_meta(eval_start=start_eval)
            console.print(f"[dim]start: held-out accuracy {start_eval['eval/accuracy']:.3f}, length "
                          f"{start_eval['eval/length/mean']:.1f} tokens ({cfg.eval.num_problems} problems x "
                          f"{cfg.eval.n})[/dim]")
        elif resume is not None and main:
            start_eval = run.read_meta().get("eval_start", {})
        signals.stop_if_agreed(state.device)  # ... or while rank 0 evaluated the start model
        trainer_cls = ShapedGRPOTrainer if cfg.algo.name == "grpo" else ShapedRLOOTrainer
        trainer = _build_trainer(trainer_cls, model, tokenizer, args, train_examples, cfg, reward_terms,
                                 [metrics_cb, progress_cb])
        trainer.setup_shaping(
            task=task,
            reward_terms=reward_terms,
            advantage_terms=advantage_terms,
            regularizers=regularizers,
            run=run,
            samples_every=cfg.samples_every,
            num_samples=cfg.num_samples,
            price_prompt=cfg.price.prompt_per_million,
            price_completion=cfg.price.completion_per_million,
        )
        from transformers.trainer_callback import PrinterCallback

        trainer.remove_callback(PrinterCallback)  # raw log dicts on stdout; the rich bar and metrics.jsonl replace it
        if use_wandb:
            from transformers.integrations import WandbCallback

            trainer.remove_callback(WandbCallback)
            from workbench.tracking import read_config, wandb_config

            # the resolved config, overrides and run directory join W&B's config; tokens/s needs the rollouts per step
            trainer.add_callback(make_wandb_callback(wandb_config(run, read_config(run)), metrics_cb.rollouts_per_step))
        if cfg.eval.every > 0:
            trainer.add_callback(PeriodicEvalCallback(
                trainer, cfg.eval.every,
                lambda model, step: _evaluate(cfg, model, tokenizer, task, eval_examples, args, seed=step),
            ))
        trainer.add_callback(stop_cb)
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
        end_eval = (_evaluate(cfg, final_model, tokenizer, task, eval_examples, args, seed=cfg.seed + 1,
                              label="eval end" if progress else None) if cfg.eval.at_end else {})
        signals.hold()  # from here on the run records its end; a signal no longer interrupts that
        seconds = _end_segment(run, "completed", int(trainer.state.global_step), t0)
        summary = _summary(run, cfg, start_eval, end_eval, seconds, trainer)
        if use_wandb:
            import wandb

            if wandb.run is not None:
                wandb.run.summary.update({k: v for k, v in summary.items() if isinstance(v, (int, float))})
        run.mark_completed(summary)
        _finish_wandb(0)
        if signals.received is not None:  # a signal while the run recorded its end: completed, then stop
            raise RunInterrupted(signals.received, step=int(trainer.state.global_step))
        return run
    except BaseException as e:
        signals.hold()
        progress_cb.close()
        step = int(trainer.state.global_step) if trainer is not None else None
        if isinstance(e, KeyboardInterrupt):  # RunInterrupted too: SIGINT, SIGTERM, SIGHUP
            import signal as _signal

            if not isinstance(e, RunInterrupted):
                e = RunInterrupted(_signal.SIGINT, step=step)
            if main and run.status != "completed":
                last = run.last_checkpoint()
                run.mark_interrupted(e.signame, step=step, checkpoint=last.name if last is not None else None)
                _end_segment(run, f"interrupted ({e.signame})", step, t0)
            _finish_wandb(e.exit_code)
            e.run_dir = run.path
            raise e from None
        err = f"{type(e).__name__}: {e}" if str(e) else type(e).__name__
        if main:
            run.mark_failed(err)
            run.path.joinpath("error.txt").write_text(traceback.format_exc())
            _end_segment(run, "failed", step, t0)
        _finish_wandb(1)
        if main:
            try:
                e.run_dir = run.path  # the CLI points at error.txt only when there is one
            except AttributeError:
                pass
        raise


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


def _build_trainer(trainer_cls, model, tokenizer, args, train_examples, cfg, reward_terms, callbacks):
    """TRL needs named reward functions at construction; the values come from the trainer's `_calculate_rewards`."""
    from workbench.trainers import TermReward

    extra: dict[str, Any] = {}
    if cfg.task.tools:  # TRL runs the tool loop; the environments (workbench.tools) run, price and log each call
        from workbench.tools import environment_factory

        os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")  # the tool loop is TRL's documented API
        extra["environment_factory"] = environment_factory(cfg.task.tools, cfg.price.tools, cfg.task.tool_timeout)
    return trainer_cls(
        model=model,
        reward_funcs=[TermReward(t.name) for t in reward_terms],
        args=args,
        train_dataset=_to_dataset(train_examples, cfg.model.use_chat_template),
        processing_class=tokenizer,
        callbacks=callbacks,
        **extra,
    )


def _summary(run: RunDir, cfg: TrainConfig, start: dict, end: dict, seconds: float, trainer) -> dict[str, Any]:
    rows = read_jsonl(run.metrics_file)
    last: dict[str, Any] = {}
    for r in rows:
        last.update({k: v for k, v in r.items() if v is not None})
    tail = rows[-10:]

    def tail_mean(key):
        vals = [r[key] for r in tail if r.get(key) is not None]
        return sum(vals) / len(vals) if vals else None

    return {
        "run_dir": str(run.path),
        "experiment": cfg.experiment_name,
        "name": cfg.name,
        "seed": cfg.seed,
        "algo": cfg.algo.name,
        "steps": int(trainer.state.global_step),
        # wall-clock seconds of every segment of the run (resumes included, with steps redone after a kill)
        "train_seconds": round(seconds, 1),
        "segments": max(1, len(run.read_meta().get("segments", []))),
        "perf/num_tokens": last.get("perf/num_tokens"),  # cumulative in TRL's state: spans resumed segments
        "eval/accuracy_start": start.get("eval/accuracy"),
        "eval/accuracy_start/ci_low": start.get("eval/accuracy/ci_low"),
        "eval/accuracy_start/ci_high": start.get("eval/accuracy/ci_high"),
        "eval/length/mean_start": start.get("eval/length/mean"),
        # with tools / modes: the start values of the cost measures the summary table shows
        **{f"{k}_start": v for k, v in start.items()
           if k in ("eval/cost_of_pass", "eval/tools/calls_per_problem") or
           (k.startswith("eval/modes/") and not k.endswith(("/ci_low", "/ci_high")))},
        **{k: v for k, v in end.items() if not k.endswith(("/ci_low", "/ci_high")) or k.startswith("eval/accuracy/")},
        # means over the last 10 logged steps: less noisy than the last step alone
        "train/reward": tail_mean("train/reward"),
        "train/accuracy": tail_mean("train/accuracy"),
        "length/mean": tail_mean("length/mean"),
        "entropy/mean": tail_mean("entropy/mean"),
        "cost/mean": tail_mean("cost/mean"),
        "perf/step_time": tail_mean("perf/step_time"),
    }


def print_summary(summary: dict[str, Any]) -> None:
    from rich.table import Table

    console = _console()
    table = Table(title=f"rl train: {summary['experiment']}/{Path(summary['run_dir']).name}", show_header=True)
    table.add_column("metric")
    table.add_column("start", justify="right")
    table.add_column("end", justify="right")

    def fmt(v, spec=".3f"):
        return "-" if v is None else format(v, spec)

    def with_ci(prefix):
        v, lo, hi = (summary.get(prefix + s) for s in ("", "/ci_low", "/ci_high"))
        return fmt(v) if lo is None or hi is None else f"{fmt(v)} [{fmt(lo)}, {fmt(hi)}]"

    table.add_row("held-out accuracy (eval/accuracy, 95% CI)", with_ci("eval/accuracy_start"), with_ci("eval/accuracy"))
    table.add_row("held-out length, tokens", fmt(summary.get("eval/length/mean_start"), ".1f"), fmt(summary.get("eval/length/mean"), ".1f"))
    table.add_row("train reward (last 10 steps)", "", fmt(summary.get("train/reward")))
    table.add_row("train accuracy (last 10 steps)", "", fmt(summary.get("train/accuracy")))
    table.add_row("completion length (length/mean)", "", fmt(summary.get("length/mean"), ".1f"))
    table.add_row("token entropy (entropy/mean)", "", fmt(summary.get("entropy/mean")))
    table.add_row("cost per rollout, $ (cost/mean)", "", fmt(summary.get("cost/mean"), ".2e"))
    if "eval/tools/calls_per_problem" in summary:  # tools ran: the papers' cost measures, held out
        table.add_row("held-out cost of pass, $ (eval/cost_of_pass)", fmt(summary.get("eval/cost_of_pass_start"), ".2e"),
                      fmt(summary.get("eval/cost_of_pass"), ".2e"))
        table.add_row("held-out tool calls per problem", fmt(summary.get("eval/tools/calls_per_problem_start"), ".2f"),
                      fmt(summary.get("eval/tools/calls_per_problem"), ".2f"))
    modes = [k.rsplit("/", 1)[1] for k in summary
             if k.startswith("eval/modes/") and k.count("/") == 2 and not k.endswith("_start")]
    for mode in modes:
        table.add_row(f"held-out share of mode {mode}", fmt(summary.get(f"eval/modes/{mode}_start"), ".2f"),
                      fmt(summary.get(f"eval/modes/{mode}"), ".2f"))
    table.add_row("steps / seconds", "", f"{summary['steps']} / {summary['train_seconds']:.0f}")
    console.print(table)
    console.print(f"run directory: [bold]{summary['run_dir']}[/bold]")
