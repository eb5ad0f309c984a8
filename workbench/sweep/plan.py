"""What `rl sweep OVERRIDES` will do, computed and validated without writing anything (--dry-run prints it).

A grid is expanded by Hydra's BasicSweeper itself (the cartesian product of `key=a,b` overrides and of a preset's
`hydra.sweeper.params`, in its order), and every job's config is composed and checked as `rl train` would before
anything launches. An Optuna sweep's search space is read from the same places and composed at one point.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from workbench.config import ConfigError, TrainConfig
from workbench.runs import sanitize_name
from workbench.sweep.objectives import check_objective, objective_metrics

BASIC_SWEEPER = "hydra._internal.core_plugins.basic_sweeper.BasicSweeper"  # Hydra's own `_target_` for it
OPTUNA_SWEEPER = "hydra_plugins.hydra_optuna_sweeper.optuna_sweeper.OptunaSweeper"
# Hydra settings rl sweep sets itself (workbench.sweep.launch): a user's value would be overwritten, so it is refused.
RL_HYDRA_KEYS = ("hydra.mode", "hydra.sweep.dir", "hydra.sweep.subdir", "hydra.run.dir", "hydra.job.chdir",
                 "hydra.job.name")
# What a job gets from each launcher, in the order --dry-run prints it (keys of the launcher's config; None = unset).
RESOURCE_KEYS = ("partition", "account", "qos", "nodes", "tasks_per_node", "gpus_per_node", "gpus_per_task", "gres",
                 "cpus_per_task", "cpus_per_gpu", "mem_gb", "mem_per_gpu", "mem_per_cpu", "constraint", "timeout_min",
                 "array_parallelism", "n_jobs")


# ----------------------------------------------------------------------------------------------- overrides


def override_key(override: str) -> str:
    """'a.b=1' -> 'a.b'; '+x=1' -> '+x'; 'hydra/launcher=joblib' -> 'hydra/launcher'."""
    return override.split("=", 1)[0]


def bare_key(key: str) -> str:
    """'++a.b' -> 'a.b' (without Hydra's add / force-add / delete prefix)."""
    return key.lstrip("+~")


def is_hydra(override: str) -> bool:
    """A Hydra setting (hydra/launcher=..., hydra.sweeper....), not a training key."""
    k = bare_key(override_key(override))
    return k == "hydra" or k.startswith(("hydra.", "hydra/"))


def check_hydra_overrides(hydra_overrides: list[str]) -> None:
    """Refuse the Hydra settings rl sweep owns (RL_HYDRA_KEYS) instead of silently overwriting them."""
    for o in hydra_overrides:
        key = bare_key(override_key(o))
        if key in RL_HYDRA_KEYS:
            raise ConfigError(f"{o}: rl sweep sets {key} itself (a sweep lives in <runs_dir>/sweeps/<timestamp>_<name>/, "
                              f"each job's run directory in its runs/); choose the folder with runs_dir=DIR and --name NAME")


def launcher_resources(launcher: dict[str, Any]) -> dict[str, Any]:
    """The resources a job gets from the composed `hydra.launcher` config: the RESOURCE_KEYS that are set."""
    return {k: launcher[k] for k in RESOURCE_KEYS if launcher.get(k) is not None}


def launcher_warnings(launcher: dict[str, Any]) -> list[str]:
    """Launcher settings that are almost surely a mistake: a GPU partition (its name contains "gpu") whose jobs ask
    for no GPU (SLURM would run them on a GPU node without one; submitit_slurm asks for none by default)."""
    partition = str(launcher.get("partition") or "")
    if "gpu" not in partition.lower():
        return []
    extra = launcher.get("additional_parameters") or {}
    asks = [launcher.get("gpus_per_node"), launcher.get("gpus_per_task"), extra.get("gpus"),
            extra.get("gpus_per_node")]
    if any(a not in (None, 0, "0") for a in asks) or "gpu" in str(launcher.get("gres") or "").lower():
        return []
    return [f"partition {partition!r} looks like a GPU partition but each job asks for no GPU: set "
            f"hydra.launcher.gpus_per_node=1 (or use hydra/launcher=slurm_gpu, which does)"]


def normalize_overrides(overrides: list[str]) -> list[str]:
    """`sweep=NAME` selects a preset from conf/sweep/; train.yaml has no `sweep` default, so it is appended (+)."""
    return [f"+{o}" if o.startswith("sweep=") else o for o in overrides]


def job_config(cfg: Any) -> TrainConfig:
    """The TrainConfig of a composed sweep job (the hydra node and the preset's `sweep:` node removed)."""
    from workbench.compose import to_plain
    from workbench.config import to_train_config

    return to_train_config(to_plain(cfg, drop=("hydra", "sweep")))


# ----------------------------------------------------------------------------------------------- the plan


@dataclass
class Job:
    job: int
    overrides: list[str]  # the swept keys' values only: what distinguishes this job
    task_overrides: list[str] = field(default_factory=list)  # everything Hydra composes the job from


@dataclass
class SweepPlan:
    kind: str  # grid | optuna
    name: str
    overrides: list[str]  # as given (sweep=X normalised to +sweep=X)
    task_overrides: list[str]  # the non-hydra overrides, sweeps included, as Hydra gets them (see force_add)
    hydra_overrides: list[str]  # hydra/... and hydra.... overrides
    base_overrides: list[str]  # non-hydra, non-sweep overrides (common to all jobs)
    params: dict[str, str]  # swept key -> sweep expression
    runs_dir: str
    launcher: str
    objective: Any = None
    resources: dict[str, Any] = field(default_factory=dict)  # what each job asks its launcher for
    warnings: list[str] = field(default_factory=list)  # launcher settings that are probably a mistake
    slurm: str | None = None  # submitit_slurm: what each SLURM job asks for (workbench.sweep.slurm.describe_slurm)
    slurm_checked: str | None = None  # against which cluster the SLURM request was checked, or why it was not
    jobs: list[Job] = field(default_factory=list)  # grid
    n_trials: int | None = None  # optuna
    directions: list[str] = field(default_factory=list)  # optuna
    sampler: str | None = None  # optuna
    preset: str | None = None

    @property
    def swept_keys(self) -> list[str]:
        return list(self.params)

    @property
    def total(self) -> int:
        return len(self.jobs) if self.kind == "grid" else int(self.n_trials or 0)


def _choice(hydra_cfg, group: str) -> str | None:
    choices = hydra_cfg.runtime.choices
    return choices.get(group) if group in choices else None


def plan_sweep(overrides: list[str], name: str | None = None, objective: Any = None) -> SweepPlan:
    """Parse and validate a sweep: expand a grid with Hydra's BasicSweeper, read an Optuna search space, compose
    and validate every grid job's config. Raises ConfigError (one line) on bad input; writes nothing."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    from workbench.compose import compose_config, force_add, hydra_context, one_line_error

    overrides = normalize_overrides(list(overrides))
    hydra_ovs = [o for o in overrides if is_hydra(o)]
    check_hydra_overrides(hydra_ovs)
    parser = OverridesParser.create()
    try:
        given = [o for o in overrides if not is_hydra(o)]
        parser.parse_overrides(hydra_ovs)
        with hydra_context():
            # The sweepers compose each job from these overrides themselves: a key absent from the YAML (most of
            # trl.GRPOConfig) gets rl train's force-add `++` here, where compose_config would give it one.
            skeleton = [o for o, f in zip(given, force_add(given)) if o == f]  # groups, +/~ keys, shaping terms
            present = compose_config(_point(skeleton, parser.parse_overrides(skeleton)))
            task_ovs = force_add(given, present=present)
            parsed = parser.parse_overrides(task_ovs)
            base = [o for o, p in zip(task_ovs, parsed) if not p.is_sweep_override()]
            # one point of the command line's sweeps (keys may only exist for some of a swept group's options)
            cfg = compose_config(_point(task_ovs, parsed) + hydra_ovs, with_hydra=True)
            plan = _plan(parser, cfg, overrides, task_ovs, hydra_ovs, base, name, objective)
    except HydraException as e:
        raise ConfigError(one_line_error(str(e))) from None
    return plan


def _plan(parser, cfg, overrides, task_ovs, hydra_ovs, base, name, objective) -> SweepPlan:
    from omegaconf import OmegaConf

    hcfg = cfg.hydra
    sweeper = OmegaConf.to_container(hcfg.sweeper, resolve=False, enum_to_str=True)
    assert isinstance(sweeper, dict)
    target = sweeper.get("_target_")
    sweep_node = OmegaConf.to_container(cfg.sweep, resolve=True) if "sweep" in cfg else {}
    if sweep_node and not isinstance(sweep_node, dict):
        raise ConfigError("sweep: expected a mapping with an `objective` key")
    unknown = set(sweep_node or {}) - {"objective"}
    if unknown:
        raise ConfigError(f"unknown key 'sweep.{sorted(unknown)[0]}'; valid keys: objective")
    base_cfg = job_config(cfg)
    preset = _choice(hcfg, "sweep")
    launcher = _choice(hcfg, "hydra/launcher") or "basic"
    if objective is None:
        objective = (sweep_node or {}).get("objective")
    if objective is not None:
        check_objective(objective)
        needs = objective_metrics(objective)
        if any(m.startswith("eval/") and not m.endswith("_start") for m in needs) and not base_cfg.eval.at_end:
            raise ConfigError("the objective reads eval/... at the end of training, but eval.at_end=false")
        if any(m.startswith("eval/") and m.endswith("_start") for m in needs) and not base_cfg.eval.at_start:
            raise ConfigError("the objective reads eval/..._start, but eval.at_start=false")
    params = {str(k): str(v) for k, v in (sweeper.get("params") or {}).items()}
    sweep_name = sanitize_name(name or preset or (base_cfg.experiment_name if base_cfg.experiment_name != "default"
                                                  else "sweep"))
    launcher_cfg = OmegaConf.to_container(hcfg.launcher, resolve=False)
    assert isinstance(launcher_cfg, dict)
    common = dict(name=sweep_name, overrides=overrides, task_overrides=task_ovs, hydra_overrides=hydra_ovs,
                  base_overrides=base, runs_dir=base_cfg.runs_dir, launcher=str(launcher), objective=objective,
                  preset=preset, resources=launcher_resources(launcher_cfg), warnings=launcher_warnings(launcher_cfg))
    common.update(_plan_slurm(launcher_cfg))
    if target == BASIC_SWEEPER:
        plan = _plan_grid(parser, params, task_ovs, common)
        _validate_grid_jobs(plan)
    elif target == OPTUNA_SWEEPER:
        plan = _plan_optuna(parser, sweeper, params, task_ovs, common)
        _validate_optuna_space(parser, plan)
    else:
        raise ConfigError(f"hydra/sweeper={_choice(hcfg, 'hydra/sweeper')!r} is not supported by rl sweep; "
                          "use basic (grid) or optuna")
    return plan


def _plan_slurm(launcher_cfg: dict[str, Any]) -> dict[str, Any]:
    """For a submitit_slurm launcher: check the request against the cluster (sinfo, where it answers) and describe
    it. A GPU asked of a partition without GPUs, or a partition the cluster lacks, is a ConfigError here, before
    the sweep directory exists, instead of an sbatch error after."""
    from workbench.sweep.slurm import check_slurm, describe_slurm, is_slurm, sinfo_partitions

    if not is_slurm(launcher_cfg):
        return {}
    partitions, why = sinfo_partitions()
    if partitions is not None:
        check_slurm(launcher_cfg, partitions)
        checked = f"checked against this cluster's partitions (sinfo): {partitions.listing()}"
    else:
        checked = f"not checked against a cluster ({why or 'no sinfo on PATH'})"
    return {"slurm": describe_slurm(launcher_cfg, partitions.default if partitions else None),
            "slurm_checked": checked}


def check_resume_launcher(definition: dict[str, Any], hydra_overrides: list[str]) -> None:
    """`rl sweep --resume` with the sweep's (maybe new) launcher: the same SLURM check as a new sweep gets
    (`_plan_slurm`), before anything is submitted."""
    from hydra.errors import HydraException
    from omegaconf import OmegaConf

    from workbench.compose import compose_config, hydra_context, one_line_error

    try:
        with hydra_context():
            cfg = compose_config(list(definition["base_overrides"]) + list(hydra_overrides), with_hydra=True)
    except HydraException as e:
        raise ConfigError(one_line_error(str(e))) from None
    launcher = OmegaConf.to_container(cfg.hydra.launcher, resolve=False)
    assert isinstance(launcher, dict)
    _plan_slurm(launcher)


def _point(overrides: list[str], parsed) -> list[str]:
    """Each sweep override replaced by `key=<its first value>` (the start of an interval)."""
    out = []
    for o, p in zip(overrides, parsed):
        if not p.is_sweep_override():
            out.append(o)
        elif p.is_interval_sweep():
            out.append(f"{p.get_key_element()}={p.value().start}")
        else:
            out.append(f"{p.get_key_element()}={next(iter(p.sweep_string_iterator()))}")
    return out


def _swept(parser, params: dict[str, str], task_ovs: list[str]) -> tuple[dict[str, str], list[Any]]:
    """Swept key -> sweep expression, as both sweepers read them: the preset's params first, then the command
    line's overrides; a later plain value for a key ends its sweep (BasicSweeper and the Optuna sweeper agree)."""
    params_conf = [f"{k}={v}" for k, v in params.items()] + task_ovs
    parsed = parser.parse_overrides(params_conf)
    swept: dict[str, str] = {}
    for o, p in zip(params_conf, parsed):
        k = p.get_key_element()
        if p.is_sweep_override():
            swept[k] = o.split("=", 1)[1]
        else:
            swept.pop(k, None)
    return swept, parsed


def _grid_batches(parsed) -> list[list[str]]:
    """The grid's jobs as BasicSweeper expands them, in its order. Hydra has no public function for this expansion;
    the class comes from its `_target_` the public way and `split_arguments` is the static method its sweep() uses."""
    from hydra.utils import get_class

    (batch,) = get_class(BASIC_SWEEPER).split_arguments(parsed, None)
    return batch


def _plan_grid(parser, params: dict[str, str], task_ovs: list[str], common: dict[str, Any]) -> SweepPlan:
    from workbench.compose import one_line_error

    swept, parsed = _swept(parser, params, task_ovs)
    if not swept:
        raise ConfigError("nothing to sweep: give a key with several values (seed=1,2,3) or sweep=<preset>")
    try:
        batch = _grid_batches(parsed)
    except Exception as e:  # noqa: BLE001 - e.g. interval(), which only a search (Optuna) can sample
        raise ConfigError(f"{one_line_error(str(e))}; interval(...) needs hydra/sweeper=optuna") from None
    jobs = [Job(job=i, overrides=[o for o in ovs if override_key(o) in swept], task_overrides=list(ovs))
            for i, ovs in enumerate(batch)]
    return SweepPlan(kind="grid", params=swept, jobs=jobs, **common)


def _validate_grid_jobs(plan: SweepPlan) -> None:
    """Compose every job and make the checks rl train makes before it loads a model (TRL keys, shaping options,
    ...), as Hydra's BasicSweeper composes every job before launching; each distinct task is built once."""
    from workbench.checks import check_train
    from workbench.compose import compose_config

    tasks_seen: set[str] = set()
    for job in plan.jobs:
        try:
            job_cfg = job_config(compose_config(job.task_overrides))
            check_train(job_cfg, with_task=repr(job_cfg.task) not in tasks_seen)
            tasks_seen.add(repr(job_cfg.task))
        except ConfigError as e:
            raise ConfigError(f"job {job.job} ({' '.join(job.overrides)}): {e}") from None


def _plan_optuna(parser, sweeper: dict[str, Any], params: dict[str, str], task_ovs: list[str],
                 common: dict[str, Any]) -> SweepPlan:
    swept, _ = _swept(parser, params, task_ovs)
    if not swept:
        raise ConfigError("an Optuna sweep needs a search space: hydra.sweeper.params or key=interval(a,b) / a,b,c")
    direction = sweeper.get("direction") or "minimize"
    directions = [str(d) for d in direction] if isinstance(direction, list) else [str(direction)]
    if common["objective"] is None:
        raise ConfigError("an Optuna sweep needs an objective: a sweep preset's sweep.objective or --objective METRIC "
                          "(with hydra.sweeper.direction=maximize for accuracy)")
    n_obj = len(common["objective"]) if isinstance(common["objective"], list) else 1
    if n_obj != len(directions):
        raise ConfigError(f"the objective has {n_obj} value(s) but hydra.sweeper.direction has {len(directions)}")
    sampler = (sweeper.get("sampler") or {}).get("_target_", "?").rsplit(".", 1)[-1]
    return SweepPlan(kind="optuna", params=swept, n_trials=int(sweeper.get("n_trials") or 0), directions=directions,
                     sampler=sampler, **common)


def _validate_optuna_space(parser, plan: SweepPlan) -> None:
    """Compose the job config at one point of the search space (each param at its low end / first choice)."""
    from workbench.compose import compose_config

    space = [f"{k}={v}" for k, v in plan.params.items()]
    point = _point(space, parser.parse_overrides(space))
    try:
        job_config(compose_config(plan.base_overrides + point))
    except ConfigError as e:
        raise ConfigError(f"search space ({' '.join(point)}): {e}") from None
