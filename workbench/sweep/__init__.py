"""`rl sweep`: hyperparameter and seed sweeps as Hydra multiruns (grid or Optuna) on Hydra's launchers.

plan (what will run, validated, nothing written) -> directory (sweep.json, jobs/, index.jsonl) -> launch (Hydra's
multirun) -> job (the task function: train, record) ; objectives, resume and optuna_storage serve them.
Import-light (no torch, no hydra at import): `rl --help` imports the CLI.
"""

from workbench.sweep.directory import (
    INDEX_KEYS,
    STATUS_PENDING,
    counts,
    create_sweep_dir,
    finalize,
    index_rows,
    read_definition,
    read_index,
    read_records,
    read_study,
    rebuild_index,
    running_step,
    write_definition,
    write_record,
)
from workbench.sweep.job import run_job
from workbench.sweep.launch import launch_grid, launch_optuna
from workbench.sweep.objectives import check_objective, describe_objective, objective_metrics, objective_value
from workbench.sweep.plan import (
    Job,
    SweepPlan,
    check_hydra_overrides,
    check_resume_launcher,
    is_hydra,
    override_key,
    plan_sweep,
)
from workbench.sweep.resume import jobs_to_resume, live_jobs, optuna_resume_state
