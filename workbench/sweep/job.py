"""One sweep job: `run_job`, the Hydra task function every launcher calls (in this process, a joblib worker, a
submitit or SLURM job). It calls the same `workbench.train.train` as `rl train` and never raises for a failed
training: it records the failure in the job's record, so the sweep goes on.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import threading
import time
import traceback
from pathlib import Path
from typing import Any, Callable, Iterator

from workbench.runs import (
    STATUS_COMPLETED,
    STATUS_DEAD,
    STATUS_FAILED,
    STATUS_INTERRUPTED,
    STATUS_RUNNING,
    RunDir,
    now_iso,
    read_json,
    sanitize_name,
)
from workbench.sweep.directory import (
    STATUS_PENDING,
    find_run_dir,
    read_definition,
    read_records,
    rebuild_index,
    write_record,
)
from workbench.sweep.objectives import objective_value
from workbench.sweep.plan import job_config, override_key

LAUNCH_ENV = "RL_SWEEP_LAUNCH"  # set per job through hydra.job.env_set: which launch entry of sweep.json a job is in


def _identify(definition: dict[str, Any], launch: dict[str, Any], num: int, task_overrides: list[str]) -> int:
    """The sweep's job number of Hydra job `num` of this launch."""
    if "jobs" in launch:  # grid: the launch's jobs in the order they were handed to Hydra
        jobs = {j["job"]: j for j in definition["jobs"]}
        given = set(task_overrides)
        candidate = launch["jobs"][num] if num < len(launch["jobs"]) else None
        if candidate is not None and set(jobs[candidate]["overrides"]) <= given:
            return candidate
        for j in launch["jobs"]:  # the sweeper ordered them differently: match on the swept values
            if set(jobs[j]["overrides"]) <= given:
                return j
        raise RuntimeError(f"sweep job not found for overrides {task_overrides}")
    return int(launch["offset"]) + num  # optuna: job number = trial number


def run_job(cfg) -> Any:
    """Train, record the outcome, return the objective.

    Never raises for a failed training (so the sweep goes on): the job's record says failed with the error, and
    None is returned (the Optuna sweeper marks that trial failed)."""
    from hydra.core.hydra_config import HydraConfig

    hc = HydraConfig.get()
    sweep_dir = Path(hc.sweep.dir)
    definition = read_definition(sweep_dir)
    launch = definition["launches"][int(os.environ.get(LAUNCH_ENV, len(definition["launches"]) - 1))]
    task_overrides = [str(o) for o in hc.overrides.task]
    num = int(hc.job.num)
    job = _identify(definition, launch, num, task_overrides)
    swept = set(definition["params"])
    previous = read_records(sweep_dir).get(job) or {}
    resume_from = resume_point(sweep_dir, previous)
    record: dict[str, Any] = {
        "job": job,
        "overrides": [o for o in task_overrides if override_key(o) in swept],
        "status": STATUS_RUNNING,
        "run_dir": None,
        "error": None,
        "objective": None,
        "metrics": {},
        "attempts": int(previous.get("attempts", 0)) + 1,
        "retried_as": previous.get("retried_as"),
        "start_time": now_iso(),
        "end_time": None,
        "seconds": None,
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "launch": launch["launch"],
        "hydra_dir": os.path.relpath(hc.runtime.output_dir, sweep_dir),
        # under SLURM: the job's id (ARRAY_TASK for an array) and how often SLURM restarted it (a requeue)
        "slurm_job": slurm_job_id(),
        "slurm_restarts": int(os.environ.get("SLURM_RESTART_COUNT") or 0) if "SLURM_JOB_ID" in os.environ else None,
        "resumed_from": os.path.relpath(resume_from, sweep_dir) if resume_from is not None else None,
    }
    write_record(sweep_dir, record)
    rebuild_index(sweep_dir)
    t0 = time.time()
    env = dict(os.environ)
    run_base: Path | None = None
    before: set[str] = set()
    name = f"job{job}"
    limit = _Limit()
    try:
        tcfg = job_config(cfg)
        name = f"{tcfg.name}-job{job}" if tcfg.name != "run" else f"job{job}"
        # the job's run directory lives in the sweep directory. W&B groups runs by their config without the seed
        # (workbench.grouping.config_group_id, as rl compare does), so a sweep's seeds of one setting share a group
        # and its settings do not; the sweep itself is a W&B tag.
        tcfg.runs_dir = str(sweep_dir / "runs")
        tcfg.name = name
        tcfg.logger.tags = [*tcfg.logger.tags, f"sweep:{definition['id']}"[:64]]  # W&B caps a tag at 64 chars
        record["max_steps"] = tcfg.algo.trl.get("max_steps")
        record["name"] = name
        record["experiment"] = tcfg.experiment_name
        write_record(sweep_dir, record)
        run_base = Path(tcfg.runs_dir) / sanitize_name(tcfg.experiment_name)
        before = {p.name for p in run_base.iterdir()} if run_base.is_dir() else set()
        extra = [f"runs_dir={tcfg.runs_dir}", f"name={name}"]
        import workbench.train as train_mod  # looked up at call time (tests replace train)

        _share_cores(hc)
        if resume_from is not None:
            # the same job again (a requeue after its time limit, or --resume after it was killed): continue its
            # run directory from the last checkpoint, with the config that run was started with (as rl train
            # --resume does), instead of training from scratch in a new directory
            from workbench.runs import load_run_config

            record["run_dir"] = os.path.relpath(resume_from, sweep_dir)
            write_record(sweep_dir, record)
            tcfg = load_run_config(RunDir.open(resume_from))
        with _job_output(hc), _time_limit_signal() as limit:
            run = train_mod.train(tcfg, task_overrides + extra, resume=resume_from,
                                  argv=["rl", "train", *(["--resume", str(resume_from)] if resume_from is not None
                                                         else [*task_overrides, *extra])],
                                  progress=False)
        summary = read_json(run.summary_file)
        record["run_dir"] = os.path.relpath(run.path, sweep_dir)
        record["metrics"] = {k: v for k, v in summary.items()
                             if isinstance(v, (int, float)) and not isinstance(v, bool) and k != "seed"}
        record["objective"] = objective_value(definition.get("objective"), summary)
        record["status"] = STATUS_COMPLETED
        with contextlib.suppress(Exception):
            run.write_meta(sweep={"dir": str(sweep_dir), "id": definition["id"], "job": job})
    except Exception as e:  # noqa: BLE001 - a failed job is recorded, never raised: the sweep goes on
        found = find_run_dir(run_base, name, before) if run_base is not None else None
        if found is not None and resume_from is None:
            record["run_dir"] = os.path.relpath(found, sweep_dir)
        if limit.requeue is not None:
            # the time-limit signal came before the training loop and its RunInterrupted surfaced as another
            # exception (raised inside an import, it becomes "ImportError: initialization failed"): requeue all
            # the same, the run directory keeps its last checkpoint
            return _requeue(sweep_dir, record, limit, "", t0)
        msg = " ".join(str(e).split())
        record["error"] = f"{type(e).__name__}: {msg}"[:1000] if msg else type(e).__name__
        record["status"] = STATUS_FAILED
        record["traceback"] = traceback.format_exc()[-4000:]
    except KeyboardInterrupt as e:  # RunInterrupted (SIGTERM/SIGHUP/SIGINT, or the time limit), Ctrl-C
        found = find_run_dir(run_base, name, before) if run_base is not None else None
        if resume_from is None and found is not None:
            record["run_dir"] = os.path.relpath(found, sweep_dir)
        step = getattr(e, "step", None)
        at = f" at step {step}" if step is not None else ""
        if limit.requeue is not None:
            return _requeue(sweep_dir, record, limit, at, t0)
        record["status"] = STATUS_FAILED
        record["error"] = f"interrupted by {getattr(e, 'signame', type(e).__name__)}{at}"
        if os.environ.get("SUBMITIT_EXECUTOR"):
            # a submitit job is its own process (scancel's SIGTERM, a kill): the signal ends this job, not the
            # sweep, which waits for its other jobs and reports this one failed (rl sweep --resume continues its
            # run directory from the checkpoint). Raising would leave submitit no result, and the sweep would
            # abort with an UncompletedJobError instead of a summary.
            return None
        raise
    except BaseException as e:  # SystemExit: record, then let it stop the sweep
        record["status"] = STATUS_FAILED
        record["error"] = f"interrupted ({type(e).__name__})"
        raise
    finally:
        # train() configures W&B through environment variables: the next job in this process starts clean
        for k in [k for k in os.environ if k not in env]:
            del os.environ[k]
        os.environ.update(env)  # (train() itself finishes and tears down W&B between jobs)
        _finish_record(sweep_dir, record, t0)
    return record["objective"]


def _requeue(sweep_dir: Path, record: dict[str, Any], limit: _Limit, at: str, t0: float) -> None:
    """The time limit (or a preemption) is near and the training has stopped (with a checkpoint when it was in its
    loop): hand over to submitit, which requeues the job (SLURM runs it again with SLURM_RESTART_COUNT+1, and
    run_job resumes the run directory) and exits this process. If submitit refuses (no timeouts left), the job is
    recorded failed and None returned."""
    record["status"] = STATUS_PENDING
    record["error"] = f"SLURM's time-limit (or preemption) signal{at}: requeued"
    _finish_record(sweep_dir, record, t0)
    assert limit.requeue is not None
    try:
        limit.requeue()  # raises SystemExit once requeued
    except Exception as err:  # noqa: BLE001 - submitit's UncompletedJobError: "timed-out too many times"
        record["status"] = STATUS_FAILED
        record["error"] = f"SLURM's time-limit signal{at}, not requeued: {' '.join(str(err).split())}"[:1000]
        _finish_record(sweep_dir, record, t0)
    return None


def _finish_record(sweep_dir: Path, record: dict[str, Any], t0: float) -> None:
    record["end_time"] = now_iso()
    record["seconds"] = round(time.time() - t0, 1)
    write_record(sweep_dir, record)
    rebuild_index(sweep_dir)


def slurm_job_id() -> str | None:
    """This SLURM job's id as squeue and sacct name it: ARRAY_TASK for a task of an array, else the job id."""
    if os.environ.get("SLURM_ARRAY_JOB_ID") and os.environ.get("SLURM_ARRAY_TASK_ID"):
        return f"{os.environ['SLURM_ARRAY_JOB_ID']}_{os.environ['SLURM_ARRAY_TASK_ID']}"
    return os.environ.get("SLURM_JOB_ID")


def resume_point(sweep_dir: Path, previous: dict[str, Any]) -> Path | None:
    """The run directory this job continues instead of starting a new training, or None.

    The job's earlier attempt left a run directory that was stopped, not finished: `interrupted` (a signal: the time
    limit, a requeue, scancel; its checkpoint is the resume point) or `dead` (killed outright, e.g. SIGKILL after
    KillWait). A failed run (an exception) or a completed one starts afresh, as before."""
    path = Path(sweep_dir) / previous["run_dir"] if previous.get("run_dir") else None
    if path is None and previous.get("name") and previous.get("experiment"):
        path = find_run_dir(Path(sweep_dir) / "runs" / sanitize_name(previous["experiment"]), previous["name"])
    if path is None or not (path / "config.yaml").is_file() or (path / "summary.json").is_file():
        return None
    return path.resolve() if RunDir(path).status in (STATUS_INTERRUPTED, STATUS_DEAD) else None


class _Limit:
    requeue: Callable[[], None] | None = None  # set once the time-limit signal arrived (submitit's requeue)


@contextlib.contextmanager
def _time_limit_signal() -> Iterator[_Limit]:
    """In a submitit SLURM job: the time-limit signal stops the training gracefully, then submitit requeues it.

    submitit asks SLURM for its signal (`--signal=USR2@signal_delay_s`) and, on it, checkpoints the callable (the
    Hydra launcher resubmits the same job) and requeues the job - at once, in the middle of a training step, which
    would lose the step and leave no checkpoint. SIGTERM is not an option for that signal: SLURM also sends SIGTERM
    on scancel (and submitit ignores it), and a cancelled job must stop, not requeue itself. So USR2 stays
    submitit's signal, and while the training runs it is turned into the training's own SIGTERM (workbench.lifecycle:
    finish the step, save a checkpoint, mark the run interrupted, raise RunInterrupted; its meta.json therefore
    names SIGTERM); only then does run_job hand over to submitit's handler, which requeues and exits. A requeued
    job comes back here and resumes the run directory (resume_point).
    """
    limit = _Limit()
    if os.environ.get("SUBMITIT_EXECUTOR") != "slurm" or threading.current_thread() is not threading.main_thread():
        yield limit
        return
    # submitit's JobEnvironment.USR_SIG: USR2 unless SUBMITIT_PREEMPT_SIGNAL names another (read as submitit reads
    # it, without importing submitit, which only the hydra-submitit-launcher extra brings)
    usr = getattr(signal, "SIG" + os.environ.get("SUBMITIT_PREEMPT_SIGNAL", "USR2"), signal.SIGUSR2)
    submitit_handler = signal.getsignal(usr)

    def on_limit(signum: int, frame: Any) -> None:
        if callable(submitit_handler):
            limit.requeue = lambda: submitit_handler(signum, None)
        signal.raise_signal(signal.SIGTERM)

    signal.signal(usr, on_limit)
    try:
        yield limit
    finally:
        signal.signal(usr, submitit_handler)


def _share_cores(hc) -> None:
    """Parallel joblib workers split the cores: each uses cores // n_jobs torch threads (at least 1).

    With torch's default (all cores per process), two workers on 2 cores made OpenMP threads wait on each other
    and CPU steps 10-40x slower (measured while building the tiny model)."""
    launcher = hc.launcher
    if "joblib" not in str(launcher.get("_target_", "")):
        return
    n_jobs = int(launcher.get("n_jobs") or -1)
    cores = os.cpu_count() or 1
    workers = cores if n_jobs < 1 else min(n_jobs, cores)
    import torch

    torch.set_num_threads(max(1, cores // workers))


@contextlib.contextmanager
def _job_output(hc) -> Iterator[None]:
    """joblib workers share the terminal of `rl sweep`, whose live display they would garble: their output goes to
    the job's Hydra folder (hydra/<launch>-<num>/job.log). In-process jobs print through the display; submitit
    already captures its jobs' output (.submitit/)."""
    if "joblib" not in str(hc.launcher.get("_target_", "")):
        yield
        return
    with open(Path(hc.runtime.output_dir) / "job.log", "a") as f, contextlib.redirect_stdout(f), \
            contextlib.redirect_stderr(f):
        yield
