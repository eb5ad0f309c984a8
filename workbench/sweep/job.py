"""One sweep job: `run_job`, the Hydra task function every launcher calls (in this process, a joblib worker, a
submitit or SLURM job). It calls the same `workbench.train.train` as `rl train` and never raises for a failed
training: it records the failure in the job's record, so the sweep goes on.
"""

from __future__ import annotations

import contextlib
import os
import socket
import time
import traceback
from pathlib import Path
from typing import Any, Iterator

from workbench.runs import STATUS_COMPLETED, STATUS_FAILED, STATUS_RUNNING, now_iso, read_json, sanitize_name
from workbench.sweep.directory import find_run_dir, read_definition, read_records, rebuild_index, write_record
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
    }
    write_record(sweep_dir, record)
    rebuild_index(sweep_dir)
    t0 = time.time()
    env = dict(os.environ)
    run_base: Path | None = None
    before: set[str] = set()
    name = f"job{job}"
    try:
        tcfg = job_config(cfg)
        name = f"{tcfg.name}-job{job}" if tcfg.name != "run" else f"job{job}"
        # the job's run directory lives in the sweep directory. W&B groups runs by their config without the seed
        # (workbench.compare.config_group_id, as rl compare does), so a sweep's seeds of one setting share a group
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
        with _job_output(hc):
            run = train_mod.train(tcfg, task_overrides + extra, argv=["rl", "train", *task_overrides, *extra],
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
        if found is not None:
            record["run_dir"] = os.path.relpath(found, sweep_dir)
        msg = " ".join(str(e).split())
        record["error"] = f"{type(e).__name__}: {msg}"[:1000] if msg else type(e).__name__
        record["status"] = STATUS_FAILED
        record["traceback"] = traceback.format_exc()[-4000:]
    except BaseException as e:  # KeyboardInterrupt, SystemExit: record, then let it stop the sweep
        record["status"] = STATUS_FAILED
        record["error"] = f"interrupted ({type(e).__name__})"
        raise
    finally:
        # train() configures W&B through environment variables: the next job in this process starts clean
        for k in [k for k in os.environ if k not in env]:
            del os.environ[k]
        os.environ.update(env)  # (train() itself finishes and tears down W&B between jobs)
        record["end_time"] = now_iso()
        record["seconds"] = round(time.time() - t0, 1)
        write_record(sweep_dir, record)
        rebuild_index(sweep_dir)
    return record["objective"]


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
