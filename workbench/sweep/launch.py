"""Launching a sweep's jobs through Hydra. Nothing here schedules jobs; Hydra does:

- a grid runs `Hydra.multirun` with Hydra's BasicSweeper; an Optuna sweep runs it with the hydra-optuna-sweeper
  plugin (its storage: `workbench.sweep.optuna_storage`);
- the configured Hydra launcher runs the jobs: basic (in this process, one after the other), joblib (local worker
  processes), submitit_local / submitit_slurm (one submitit job, or one SLURM job, per run), or ray;
- every job calls `workbench.sweep.job.run_job`, the Hydra task function.

A grid's --resume hands exactly the jobs still to do to the configured launcher, in one launch.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from workbench.compose import hydra_context
from workbench.runs import sanitize_name
from workbench.sweep.directory import add_launch, read_definition, read_records, rebuild_index, write_record
from workbench.sweep.job import LAUNCH_ENV, run_job
from workbench.sweep.plan import bare_key, override_key
from workbench.sweep.resume import optuna_resume_state


def _quote(value: str) -> str:
    """A Hydra override value that is taken literally (paths may hold characters the override grammar parses)."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _hydra_settings(sweep_dir: Path, launch: int, name: str, user_hydra: list[str]) -> list[str]:
    given = {bare_key(override_key(o)) for o in user_hydra}
    out = [
        "hydra.mode=MULTIRUN",
        f"hydra.sweep.dir={_quote(str(sweep_dir))}",
        f"hydra.sweep.subdir=hydra/{launch}-${{hydra.job.num}}",
        "hydra.job.chdir=False",
        f"hydra.job.name={sanitize_name(name)}",
        f"+hydra.job.env_set.{LAUNCH_ENV}={launch}",
    ]
    # rl train does not configure logging; neither do sweep jobs (unless asked: hydra/job_logging=default)
    if "hydra/job_logging" not in given:
        out.append("hydra/job_logging=none")
    if "hydra/hydra_logging" not in given:
        out.append("hydra/hydra_logging=none")
    return out


def launch_grid(sweep_dir: Path, job_ids: list[int] | None = None, extra_hydra: list[str] | None = None) -> int:
    """Run grid jobs: all of them through Hydra's multirun (BasicSweeper + the configured launcher), or, on
    resume, exactly `job_ids` through the configured launcher. Returns the launch number."""
    sweep_dir = Path(sweep_dir)
    definition = read_definition(sweep_dir)
    jobs = {j["job"]: j for j in definition["jobs"]}
    extra_hydra = list(extra_hydra or [])
    user_hydra = definition["hydra_overrides"] + extra_hydra
    first = job_ids is None
    ids = sorted(jobs) if first else list(job_ids)
    launch = add_launch(sweep_dir, {"kind": "grid" if first else "resume", "jobs": ids,
                                    "hydra_overrides": extra_hydra})
    settings = _hydra_settings(sweep_dir, launch, definition["name"], user_hydra)
    with hydra_context(job_name=sanitize_name(definition["name"])):
        if first:
            _multirun(definition["task_overrides"] + user_hydra + settings)
        else:
            _launch_list(definition["base_overrides"] + user_hydra + settings,
                         [jobs[i]["task_overrides"] for i in ids])
    return launch


def launch_optuna(sweep_dir: Path, resume: bool = False, extra_hydra: list[str] | None = None) -> int | None:
    """Run the Optuna sweeper (with the configured launcher) for the trials still to do."""
    sweep_dir = Path(sweep_dir)
    definition = read_definition(sweep_dir)
    extra_hydra = list(extra_hydra or [])
    user_hydra = definition["hydra_overrides"] + extra_hydra
    if resume:
        state = optuna_resume_state(sweep_dir)
    else:
        state = {"replay": [], "retry": [], "retried": [], "remaining": int(definition["n_trials"] or 0), "offset": 0}
    if state["remaining"] <= 0:
        return None
    launch = add_launch(sweep_dir, {"kind": "resume" if resume else "optuna", "offset": state["offset"],
                                    "n_trials": state["remaining"], "replay": state["replay"],
                                    "retry": state["retry"], "hydra_overrides": extra_hydra})
    # a retried trial's old job points to its new job number (the enqueued trials run first, in order)
    for i, old in enumerate(state["retried"]):
        rec = read_records(sweep_dir).get(old)
        if rec is not None:
            rec["retried_as"] = state["offset"] + i
            write_record(sweep_dir, rec)
    rebuild_index(sweep_dir)
    settings = _hydra_settings(sweep_dir, launch, definition["name"], user_hydra) + [
        f"hydra.sweeper.n_trials={state['remaining']}",
        f"hydra.sweeper.study_name={sanitize_name(definition['id'])}",
        "hydra.sweeper.storage={_target_:workbench.sweep.optuna_storage.study_storage,"
        f"sweep_dir:{_quote(str(sweep_dir))},launch:{launch}}}",
        "hydra.sweeper.max_failure_rate=1.0",  # a failed job never stops the sweep
    ]
    with hydra_context(job_name=sanitize_name(definition["name"])):
        try:
            _multirun(definition["task_overrides"] + user_hydra + settings)
        except ValueError as e:
            # the plugin asks the study for its best trial at the end; with every trial failed there is none
            if "No trials are completed yet" not in str(e) and "Record does not exist" not in str(e):
                raise
    return launch


# ----------------------------------------------------------------------------------------------- Hydra's internals
# Hydra's public entry point for a multirun is @hydra.main reading sys.argv; a library that runs one itself goes
# through the Hydra object that `hydra_context` initialised (GlobalHydra.instance().hydra, an internal class).
# Only these two functions touch Hydra's internals.


def _multirun(overrides: list[str]) -> None:
    """Hydra.multirun on conf/train.yaml with `run_job` as the task function (inside `hydra_context`)."""
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().hydra.multirun(config_name="train", task_function=run_job, overrides=overrides)


def _launch_list(overrides: list[str], job_overrides: list[list[str]]) -> None:
    """Hand an explicit list of jobs to the configured Hydra launcher (what a sweeper does after expanding).

    Hydra has no public API for this: a sweeper plugin would have to live in the `hydra_plugins` namespace package,
    and the launcher's context needs `hydra._internal.callbacks.Callbacks`, which only Hydra's internals build."""
    from hydra._internal.callbacks import Callbacks
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.hydra_config import HydraConfig
    from hydra.core.plugins import Plugins
    from hydra.types import HydraContext, RunMode

    hydra: Any = GlobalHydra.instance().hydra
    cfg = hydra.compose_config(config_name="train", overrides=overrides, run_mode=RunMode.MULTIRUN,
                               with_log_configuration=True)
    HydraConfig.instance().set_config(cfg)
    callbacks = Callbacks(cfg)
    callbacks.on_multirun_start(config=cfg, config_name="train")
    launcher = Plugins.instance().instantiate_launcher(
        hydra_context=HydraContext(config_loader=hydra.config_loader, callbacks=callbacks),
        task_function=run_job, config=cfg)
    launcher.launch(job_overrides, initial_job_idx=0)
    callbacks.on_multirun_end(config=cfg, config_name="train")
