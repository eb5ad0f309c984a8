"""`rl sweep`: hyperparameter and seed sweeps as Hydra multiruns (grid or Optuna) on Hydra's launchers.

Nothing here schedules jobs. Hydra does:

- a grid sweep runs `Hydra.multirun` with Hydra's BasicSweeper (the cartesian product of `key=a,b` overrides and
  of a preset's `hydra.sweeper.params`); an Optuna sweep runs it with the hydra-optuna-sweeper plugin;
- the configured Hydra launcher runs the jobs: basic (in this process, one after the other), joblib (local worker
  processes), submitit_local / submitit_slurm (one submitit job, or one SLURM job, per run), or ray;
- every job calls `run_job` below, the Hydra task function, which calls the same `workbench.train.train` as
  `rl train`. It never raises for a failed training: it records the failure, so the sweep goes on.

Sweep directory (the contract with `rl compare`, which accepts it as input):

    <runs_dir>/sweeps/<YYYY-MM-DD_HH-MM-SS>_<name>/
      sweep.json          the definition: command, overrides, swept keys, the grid's jobs (or the Optuna search
                          space, trial budget, directions), the objective, and one entry per launch (--resume adds one)
      index.jsonl         one line per job (rebuilt from jobs/ after every job; see INDEX_KEYS)
      jobs/<job>.json     the job's record, written atomically by the job's own process (the index's source)
      runs/<experiment>/<timestamp>_job<N>/   the jobs' run directories: ordinary `rl train` run directories
      hydra/<launch>-<num>/.hydra/   Hydra's per-job config snapshot (config.yaml, overrides.yaml, hydra.yaml)
      multirun.yaml       Hydra's composed multirun config (grid sweeps)
      optuna_study.json   (Optuna) every trial (number = job, params, values, state) and the best parameters;
                          it is also what --resume replays into the new study
      optimization_results.yaml   (Optuna) the plugin's own best parameters / value
      .submitit/          (submitit launchers) the jobs' stdout/stderr and pickles

`run_dir` in the index is relative to the sweep directory (the sweep stays valid when moved or copied).

Resume (`rl sweep --resume DIR`): a grid relaunches exactly the jobs that are not completed (missing, failed, or
left `running` by a killed sweep) through the configured Hydra launcher, in one launch. An Optuna sweep relaunches
the Optuna sweeper: the earlier trials are replayed into the new study (so the sampler continues where it stopped),
failed trials are retried first with the same parameters, and the budget is the trials still missing.

Import-light at module level (no torch, no hydra): `rl --help` imports the CLI, which imports this lazily anyway.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import socket
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from workbench.config import ConfigError
from workbench.runs import (
    STATUS_COMPLETED,
    STATUS_FAILED,
    STATUS_RUNNING,
    RunDir,
    atomic_write_json,
    now_iso,
    read_json,
    read_jsonl,
    sanitize_name,
)

STATUS_PENDING = "pending"
SWEEP_FILE = "sweep.json"
INDEX_FILE = "index.jsonl"
JOBS_DIR = "jobs"
STUDY_FILE = "optuna_study.json"
LAUNCH_ENV = "RL_SWEEP_LAUNCH"  # set per job through hydra.job.env_set: which launch entry of sweep.json a job is in

# Keys of one index line, in order.
INDEX_KEYS = ("job", "overrides", "status", "run_dir", "error", "objective", "metrics", "attempts", "retried_as",
              "start_time", "end_time", "seconds", "host")

# summary.json keys an objective may name (workbench.train._summary).
SUMMARY_METRICS = (
    "eval/accuracy", "eval/accuracy_start", "eval/length/mean", "eval/length/mean_start", "train/reward",
    "train/accuracy", "length/mean", "entropy/mean", "cost/mean", "perf/step_time", "steps", "train_seconds",
)

# The end-of-training evaluation in summary.json carries rl eval's metric names too.
EVAL_METRIC = re.compile(
    r"eval/(pass@\d+|maj@\d+|length/(median|p90|correct_mean|incorrect_mean)|truncation_rate"
    r"|entropy/(mean|think|answer)|cost/mean|cost_of_pass)"
)

BASIC_SWEEPER = "hydra._internal.core_plugins.basic_sweeper.BasicSweeper"
OPTUNA_SWEEPER = "hydra_plugins.hydra_optuna_sweeper.optuna_sweeper.OptunaSweeper"


# ----------------------------------------------------------------------------------------------- small helpers


def _quote(value: str) -> str:
    """A Hydra override value that is taken literally (paths may hold characters the override grammar parses)."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _key(override: str) -> str:
    """'a.b=1' -> 'a.b'; '+x=1' -> '+x'; 'hydra/launcher=joblib' -> 'hydra/launcher'."""
    return override.split("=", 1)[0]


def _bare(key: str) -> str:
    return key.lstrip("+~")


def _is_hydra(override: str) -> bool:
    k = _bare(_key(override))
    return k == "hydra" or k.startswith(("hydra.", "hydra/"))


def normalize_overrides(overrides: list[str]) -> list[str]:
    """`sweep=NAME` selects a preset from conf/sweep/; train.yaml has no `sweep` default, so it is appended (+)."""
    return [f"+{o}" if o.startswith("sweep=") else o for o in overrides]


def sweep_presets() -> list[str]:
    from workbench.compose import CONF_DIR

    return sorted(p.stem for p in (CONF_DIR / "sweep").glob("*.yaml"))


def _one_line(message: str) -> str:
    from workbench.compose import _one_line as rewrite
    from workbench.compose import config_groups

    return rewrite({**config_groups(), "sweep": sweep_presets()}, message)


@contextlib.contextmanager
def hydra_app(job_name: str = "rl_sweep") -> Iterator[Any]:
    """Hydra initialised on conf/ (as @hydra.main would), yielding the Hydra object; cleared on exit."""
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from workbench.compose import CONF_DIR

    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(CONF_DIR), job_name=job_name, version_base="1.3"):
            yield GlobalHydra.instance().hydra
    finally:
        GlobalHydra.instance().clear()


def _compose(overrides: list[str], with_hydra: bool = False):
    from hydra import compose
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    try:
        return compose(config_name="train", overrides=list(overrides), return_hydra_config=with_hydra)
    except (HydraException, OmegaConfBaseException, ValueError) as e:
        raise ConfigError(_one_line(str(e))) from None


def _train_data(cfg) -> dict[str, Any]:
    """A composed job config as a plain dict for to_train_config (the sweep preset's `sweep:` node removed)."""
    from omegaconf import OmegaConf

    # node by node: the hydra node (when composed with it) holds interpolations only a running job can resolve
    data = {}
    for k in cfg:
        if k in ("hydra", "sweep"):
            continue
        v = cfg[k]
        data[str(k)] = OmegaConf.to_container(v, resolve=True) if OmegaConf.is_config(v) else v
    return data


def _to_train_config(data: dict[str, Any]):
    from workbench.config import to_train_config

    return to_train_config(data)


# ----------------------------------------------------------------------------------------------- objective


def check_objective(objective: Any) -> Any:
    """An objective is a summary.json key, a {key: weight} mapping (weighted sum), or a list of those
    (multi-objective Optuna). Returns it unchanged; raises ConfigError naming the bad key."""
    if isinstance(objective, str):
        if objective not in SUMMARY_METRICS and not EVAL_METRIC.fullmatch(objective):
            raise ConfigError(f"objective {objective!r} is not a summary.json metric; choose from: "
                              f"{', '.join(SUMMARY_METRICS)}")
        return objective
    if isinstance(objective, dict) and objective:
        for k, w in objective.items():
            check_objective(str(k))
            if isinstance(w, bool) or not isinstance(w, (int, float)):
                raise ConfigError(f"objective weight for {k!r} must be a number, got {w!r}")
        return objective
    if isinstance(objective, list) and objective and all(not isinstance(o, list) for o in objective):
        for o in objective:
            check_objective(o)
        return objective
    raise ConfigError(f"objective must be a metric name, a {{metric: weight}} mapping or a list of those, "
                      f"got {objective!r}")


def objective_metrics(objective: Any) -> list[str]:
    if objective is None:
        return []
    if isinstance(objective, str):
        return [objective]
    if isinstance(objective, dict):
        return [str(k) for k in objective]
    return [m for o in objective for m in objective_metrics(o)]


def objective_value(objective: Any, summary: dict[str, Any]) -> Any:
    """The objective's value for one run's summary (None when a metric it needs is missing)."""
    if objective is None:
        return None
    if isinstance(objective, list):
        values = [objective_value(o, summary) for o in objective]
        return None if any(v is None for v in values) else values
    if isinstance(objective, str):
        v = summary.get(objective)
        return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None
    total = 0.0
    for k, w in objective.items():
        v = objective_value(str(k), summary)
        if v is None:
            return None
        total += float(w) * v
    return total


def describe_objective(objective: Any) -> str:
    if objective is None:
        return "-"
    if isinstance(objective, str):
        return objective
    if isinstance(objective, dict):
        return " + ".join(f"{w:g}*{k}" for k, w in objective.items()).replace("+ -", "- ")
    return ", ".join(describe_objective(o) for o in objective)


# ----------------------------------------------------------------------------------------------- the plan


@dataclass
class Job:
    job: int
    overrides: list[str]  # the swept keys' values only: what distinguishes this job
    task_overrides: list[str] = field(default_factory=list)  # everything Hydra composes the job from


@dataclass
class SweepPlan:
    """What `rl sweep OVERRIDES` will do, computed without writing anything (--dry-run prints it)."""

    kind: str  # grid | optuna
    name: str
    overrides: list[str]  # as given (sweep=X normalised to +sweep=X)
    task_overrides: list[str]  # the non-hydra overrides, sweeps included
    hydra_overrides: list[str]  # hydra/... and hydra.... overrides
    base_overrides: list[str]  # non-hydra, non-sweep overrides (common to all jobs)
    params: dict[str, str]  # swept key -> sweep expression
    runs_dir: str
    launcher: str
    objective: Any = None
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
    from omegaconf import OmegaConf

    overrides = normalize_overrides(list(overrides))
    hydra_ovs = [o for o in overrides if _is_hydra(o)]
    task_ovs = [o for o in overrides if not _is_hydra(o)]
    parser = OverridesParser.create()
    try:
        parsed = parser.parse_overrides(task_ovs)
        parser.parse_overrides(hydra_ovs)
    except HydraException as e:
        raise ConfigError(_one_line(str(e))) from None
    base = [o for o, p in zip(task_ovs, parsed) if not p.is_sweep_override()]
    # one point of the command line's sweeps (keys may only exist for some of a swept group's options)
    point = [o if not p.is_sweep_override() else _first_value(p) for o, p in zip(task_ovs, parsed)]

    with hydra_app():
        cfg = _compose(point + hydra_ovs, with_hydra=True)
        hcfg = cfg.hydra
        sweeper = OmegaConf.to_container(hcfg.sweeper, resolve=False, enum_to_str=True)
        assert isinstance(sweeper, dict)
        target = sweeper.get("_target_")
        base_data = _train_data(cfg)
        sweep_node = OmegaConf.to_container(cfg.sweep, resolve=True) if "sweep" in cfg else {}
        if sweep_node and not isinstance(sweep_node, dict):
            raise ConfigError("sweep: expected a mapping with an `objective` key")
        unknown = set(sweep_node or {}) - {"objective"}
        if unknown:
            raise ConfigError(f"unknown key 'sweep.{sorted(unknown)[0]}'; valid keys: objective")
        base_cfg = _to_train_config(base_data)
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
        common = dict(name=sweep_name, overrides=overrides, task_overrides=task_ovs, hydra_overrides=hydra_ovs,
                      base_overrides=base, runs_dir=base_cfg.runs_dir, launcher=str(launcher), objective=objective,
                      preset=preset)
        if target == BASIC_SWEEPER:
            plan = _plan_grid(parser, params, task_ovs, common)
            from workbench.checks import check_train

            tasks_seen: set[str] = set()
            for job in plan.jobs:  # Hydra's BasicSweeper composes every job before launching too
                try:
                    job_cfg = _to_train_config(_train_data(_compose(job.task_overrides)))
                    # the checks rl train makes before it loads a model (TRL keys, shaping options, ...); each
                    # distinct task is built once
                    check_train(job_cfg, with_task=repr(job_cfg.task) not in tasks_seen)
                    tasks_seen.add(repr(job_cfg.task))
                except ConfigError as e:
                    raise ConfigError(f"job {job.job} ({' '.join(job.overrides)}): {e}") from None
        elif target == OPTUNA_SWEEPER:
            plan = _plan_optuna(parser, sweeper, params, task_ovs, common)
            _validate_optuna_space(parser, plan)
        else:
            raise ConfigError(f"hydra/sweeper={_choice(hcfg, 'hydra/sweeper')!r} is not supported by rl sweep; "
                              "use basic (grid) or optuna")
    return plan


def _first_value(override) -> str:
    """`key=<first value of the sweep>` (the start of an interval)."""
    key = override.get_key_element()
    if override.is_interval_sweep():
        return f"{key}={override.value().start}"
    return f"{key}={next(iter(override.sweep_string_iterator()))}"


def _swept(parser, params: dict[str, str], task_ovs: list[str]) -> tuple[dict[str, str], list[str], list[Any]]:
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
    return swept, params_conf, parsed


def _plan_grid(parser, params: dict[str, str], task_ovs: list[str], common: dict[str, Any]) -> SweepPlan:
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper

    swept, _, parsed = _swept(parser, params, task_ovs)
    if not swept:
        raise ConfigError("nothing to sweep: give a key with several values (seed=1,2,3) or sweep=<preset>")
    try:
        (batch,) = BasicSweeper.split_arguments(parsed, None)  # the sweeper's own expansion, in its order
    except Exception as e:  # noqa: BLE001 - e.g. interval(), which only a search (Optuna) can sample
        raise ConfigError(f"{_one_line(str(e))}; interval(...) needs hydra/sweeper=optuna") from None
    jobs = [Job(job=i, overrides=[o for o in ovs if _key(o) in swept], task_overrides=list(ovs))
            for i, ovs in enumerate(batch)]
    return SweepPlan(kind="grid", params=swept, jobs=jobs, **common)


def _plan_optuna(parser, sweeper: dict[str, Any], params: dict[str, str], task_ovs: list[str],
                 common: dict[str, Any]) -> SweepPlan:
    swept, _, _ = _swept(parser, params, task_ovs)
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
    point = [_first_value(o) for o in parser.parse_overrides([f"{k}={v}" for k, v in plan.params.items()])]
    try:
        _to_train_config(_train_data(_compose(plan.base_overrides + point)))
    except ConfigError as e:
        raise ConfigError(f"search space ({' '.join(point)}): {e}") from None


# ----------------------------------------------------------------------------------------------- sweep directory


def read_definition(sweep_dir: Path) -> dict[str, Any]:
    f = Path(sweep_dir) / SWEEP_FILE
    if not f.is_file():
        raise ConfigError(f"not a sweep directory (no {SWEEP_FILE}): {sweep_dir}")
    return read_json(f)


def create_sweep_dir(plan: SweepPlan, argv: list[str]) -> Path:
    """runs/sweeps/<timestamp>_<name>/ with sweep.json and an index of pending jobs."""
    path = RunDir.create(plan.runs_dir, "sweeps", plan.name).path.resolve()
    definition = {
        "id": path.name,
        "name": plan.name,
        "kind": plan.kind,
        "preset": plan.preset,
        "command": " ".join(argv),
        "created": now_iso(),
        "cwd": os.getcwd(),
        "overrides": plan.overrides,
        "task_overrides": plan.task_overrides,
        "hydra_overrides": plan.hydra_overrides,
        "base_overrides": plan.base_overrides,
        "params": plan.params,
        "launcher": plan.launcher,
        "objective": plan.objective,
        "jobs": [{"job": j.job, "overrides": j.overrides, "task_overrides": j.task_overrides} for j in plan.jobs],
        "n_trials": plan.n_trials,
        "directions": plan.directions,
        "sampler": plan.sampler,
        "launches": [],
    }
    atomic_write_json(path / SWEEP_FILE, definition)
    (path / JOBS_DIR).mkdir()
    rebuild_index(path)
    return path


def job_file(sweep_dir: Path, job: int) -> Path:
    return Path(sweep_dir) / JOBS_DIR / f"{job}.json"


def read_records(sweep_dir: Path) -> dict[int, dict[str, Any]]:
    out = {}
    folder = Path(sweep_dir) / JOBS_DIR
    if folder.is_dir():
        for f in folder.glob("*.json"):
            try:
                rec = read_json(f)
                out[int(rec["job"])] = rec
            except (OSError, ValueError, KeyError):
                continue
    return out


def _write_record(sweep_dir: Path, record: dict[str, Any]) -> None:
    atomic_write_json(job_file(sweep_dir, record["job"]), record)


def _index_row(job: int, overrides: list[str], rec: dict[str, Any] | None) -> dict[str, Any]:
    rec = rec or {}
    row = {k: rec.get(k) for k in INDEX_KEYS}
    row["job"] = job
    row["overrides"] = overrides
    row["status"] = rec.get("status", STATUS_PENDING)
    row["metrics"] = rec.get("metrics") or {}
    row["attempts"] = rec.get("attempts", 0)
    return row


def index_rows(sweep_dir: Path, definition: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    definition = definition or read_definition(sweep_dir)
    records = read_records(sweep_dir)
    if definition["kind"] == "grid":
        return [_index_row(j["job"], j["overrides"], records.get(j["job"])) for j in definition["jobs"]]
    return [_index_row(n, rec.get("overrides", []), rec) for n, rec in sorted(records.items())]


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """An exclusive lock across processes (jobs of joblib/submitit) where the file system supports it."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not on Linux
        yield
        return
    with open(path, "a") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX)
        except OSError:
            pass
        try:
            yield
        finally:
            with contextlib.suppress(OSError):
                fcntl.flock(f, fcntl.LOCK_UN)


def rebuild_index(sweep_dir: Path) -> list[dict[str, Any]]:
    """Rewrite index.jsonl (atomically) from sweep.json and jobs/*.json."""
    from workbench.runs import atomic_write_text, _json_safe

    sweep_dir = Path(sweep_dir)
    with _locked(sweep_dir / ".index.lock"):
        rows = index_rows(sweep_dir)
        atomic_write_text(sweep_dir / INDEX_FILE, "".join(json.dumps(_json_safe(r)) + "\n" for r in rows))
    return rows


def read_index(sweep_dir: Path) -> list[dict[str, Any]]:
    return read_jsonl(Path(sweep_dir) / INDEX_FILE)


def counts(rows: list[dict[str, Any]]) -> dict[str, int]:
    """Jobs by status; a failed Optuna trial that was retried (retried_as) is not counted."""
    out = {STATUS_COMPLETED: 0, STATUS_FAILED: 0, STATUS_RUNNING: 0, STATUS_PENDING: 0}
    for r in rows:
        if r.get("retried_as") is not None and r["status"] != STATUS_COMPLETED:
            continue
        out[r["status"]] = out.get(r["status"], 0) + 1
    return out


def _job_done(sweep_dir: Path, rec: dict[str, Any] | None) -> bool:
    if not rec or rec.get("status") != STATUS_COMPLETED or not rec.get("run_dir"):
        return False
    return (Path(sweep_dir) / rec["run_dir"] / "summary.json").is_file()


def _add_launch(sweep_dir: Path, entry: dict[str, Any]) -> int:
    definition = read_definition(sweep_dir)
    entry = {"launch": len(definition["launches"]), "time": now_iso(), **entry}
    definition["launches"].append(entry)
    atomic_write_json(Path(sweep_dir) / SWEEP_FILE, definition)
    return entry["launch"]


# ----------------------------------------------------------------------------------------------- the Hydra task


def _find_run_dir(base: Path, name: str, before: set[str]) -> Path | None:
    """The run directory train() created for `name` under base (runs/<experiment>/), absent from `before`."""
    if not base.is_dir():
        return None
    stem = sanitize_name(name)
    new = [p for p in base.iterdir() if p.is_dir() and p.name not in before
           and (p.name.endswith("_" + stem) or "_" + stem + "-" in p.name)]
    return max(new, key=lambda p: p.stat().st_mtime) if new else None


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
    """The Hydra task function of every sweep job: train, record the outcome, return the objective.

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
        "overrides": [o for o in task_overrides if _key(o) in swept],
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
    _write_record(sweep_dir, record)
    rebuild_index(sweep_dir)
    t0 = time.time()
    env = dict(os.environ)
    run_base: Path | None = None
    before: set[str] = set()
    name = f"job{job}"
    try:
        tcfg = _to_train_config(_train_data(cfg))
        name = f"{tcfg.name}-job{job}" if tcfg.name != "run" else f"job{job}"
        # the job's run directory lives in the sweep directory; W&B groups the sweep's runs
        tcfg.runs_dir = str(sweep_dir / "runs")
        tcfg.name = name
        if tcfg.logger.group is None:
            tcfg.logger.group = definition["id"]
        record["max_steps"] = tcfg.algo.trl.get("max_steps")
        record["name"] = name
        record["experiment"] = tcfg.experiment_name
        _write_record(sweep_dir, record)
        run_base = Path(tcfg.runs_dir) / sanitize_name(tcfg.experiment_name)
        before = {p.name for p in run_base.iterdir()} if run_base.is_dir() else set()
        extra = [f"runs_dir={tcfg.runs_dir}", f"name={name}", f"logger.group={tcfg.logger.group}"]
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
        found = _find_run_dir(run_base, name, before) if run_base is not None else None
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
        _write_record(sweep_dir, record)
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


# ----------------------------------------------------------------------------------------------- Optuna study


def _trial_to_json(t) -> dict[str, Any]:
    from optuna.distributions import distribution_to_json

    return {
        "number": t.number,
        "job": t.number,
        "state": t.state.name,
        "params": t.params,
        "distributions": {k: json.loads(distribution_to_json(d)) for k, d in t.distributions.items()},
        "values": t.values,
        "datetime_start": t.datetime_start.isoformat() if t.datetime_start else None,
        "datetime_complete": t.datetime_complete.isoformat() if t.datetime_complete else None,
    }


def _trial_from_json(d: dict[str, Any], state: str | None = None, values: Any = None):
    from optuna.distributions import json_to_distribution
    from optuna.trial import TrialState

    create_trial = _create_trial()

    state = state or d["state"]
    return create_trial(
        state=TrialState[state],
        values=(values if values is not None else d.get("values")) if state == "COMPLETE" else None,
        params=d.get("params") or {},
        distributions={k: json_to_distribution(json.dumps(v)) for k, v in (d.get("distributions") or {}).items()},
    )


def _create_trial():
    """optuna.trial.create_trial without its 'experimental' warning (stable in every 2.x and 3.x release)."""
    import warnings

    from optuna.trial import create_trial

    def quiet(**kwargs):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return create_trial(**kwargs)

    return quiet


def study_storage(sweep_dir: str, launch: int):
    """The Optuna storage of a sweep (hydra.sweeper.storage: {_target_: workbench.sweep.study_storage, ...}).

    In memory (optuna 2.10's SQL storage does not run on SQLAlchemy 2), written to optuna_study.json on every
    change, and seeded on --resume with the earlier trials (replayed) and the failed trials' parameters (enqueued,
    so Optuna's ask() runs them first)."""
    import optuna
    from optuna.trial import TrialState

    create_trial = _create_trial()
    sweep = Path(sweep_dir)
    entry = read_definition(sweep)["launches"][launch]

    class SweepStudyStorage(optuna.storages.InMemoryStorage):
        def __init__(self) -> None:
            super().__init__()
            self._loading = False
            self._study_id: int | None = None

        def create_new_study(self, study_name=None):
            sid = super().create_new_study(study_name)
            self._study_id = sid
            self._loading = True
            try:
                for t in entry.get("replay", []):
                    self.create_new_trial(sid, template_trial=_trial_from_json(t, t["replay_state"],
                                                                                t.get("replay_values")))
                for params in entry.get("retry", []):
                    self.create_new_trial(sid, template_trial=create_trial(
                        state=TrialState.WAITING, system_attrs={"fixed_params": params}))
            finally:
                self._loading = False
            return sid

        def _dump(self) -> None:
            if self._loading or self._study_id is None:
                return
            try:
                self._write()
            except Exception as e:  # noqa: BLE001 - the file is a record; losing one write must not stop the study
                print(f"warning: could not write {STUDY_FILE}: {e}")

        def _write(self) -> None:
            trials = [_trial_to_json(t) for t in self.get_all_trials(self._study_id, deepcopy=False)
                      if t.state != TrialState.WAITING]
            directions = [d.name.lower() for d in self.get_study_directions(self._study_id)]
            data = {"study_name": self.get_study_name_from_id(self._study_id), "directions": directions,
                    "trials": trials, **_best(trials, directions)}
            atomic_write_json(sweep / STUDY_FILE, data)

        def set_trial_param(self, *args, **kwargs):
            out = super().set_trial_param(*args, **kwargs)
            self._dump()
            return out

        def set_trial_state(self, *args, **kwargs):
            out = super().set_trial_state(*args, **kwargs)
            self._dump()
            return out

        def set_trial_values(self, *args, **kwargs):
            out = super().set_trial_values(*args, **kwargs)
            self._dump()
            return out

    return SweepStudyStorage()


def _best(trials: list[dict[str, Any]], directions: list[str]) -> dict[str, Any]:
    done = [t for t in trials if t["state"] == "COMPLETE" and t.get("values")]
    if not done:
        return {"best_params": None, "best_value": None, "best_job": None}
    if len(directions) == 1:
        sign = 1 if directions[0] == "maximize" else -1
        best = max(done, key=lambda t: sign * t["values"][0])
        return {"best_params": best["params"], "best_value": best["values"][0], "best_job": best["number"]}
    signs = [1 if d == "maximize" else -1 for d in directions]

    def dominates(a, b):
        sa = [s * v for s, v in zip(signs, a["values"])]
        sb = [s * v for s, v in zip(signs, b["values"])]
        return all(x >= y for x, y in zip(sa, sb)) and any(x > y for x, y in zip(sa, sb))

    front = [t for t in done if not any(dominates(o, t) for o in done)]
    return {"best_trials": [{"job": t["number"], "params": t["params"], "values": t["values"]} for t in front]}


def read_study(sweep_dir: Path) -> dict[str, Any]:
    f = Path(sweep_dir) / STUDY_FILE
    return read_json(f) if f.is_file() else {}


# ----------------------------------------------------------------------------------------------- launching


def _hydra_settings(sweep_dir: Path, launch: int, name: str, user_hydra: list[str]) -> list[str]:
    given = {_bare(_key(o)) for o in user_hydra}
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
    launch = _add_launch(sweep_dir, {"kind": "grid" if first else "resume", "jobs": ids,
                                     "hydra_overrides": extra_hydra})
    settings = _hydra_settings(sweep_dir, launch, definition["name"], user_hydra)
    with hydra_app(job_name=sanitize_name(definition["name"])) as hydra:
        if first:
            hydra.multirun(config_name="train", task_function=run_job,
                           overrides=definition["task_overrides"] + user_hydra + settings)
        else:
            _launch_list(hydra, definition["base_overrides"] + user_hydra + settings,
                         [jobs[i]["task_overrides"] for i in ids])
    return launch


def _launch_list(hydra, overrides: list[str], job_overrides: list[list[str]]) -> None:
    """Hand an explicit list of jobs to the configured Hydra launcher (what a sweeper does after expanding)."""
    from hydra._internal.callbacks import Callbacks
    from hydra.core.hydra_config import HydraConfig
    from hydra.core.plugins import Plugins
    from hydra.types import HydraContext, RunMode

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


def optuna_resume_state(sweep_dir: Path) -> dict[str, Any]:
    """What an Optuna --resume replays, retries and still has to run."""
    definition = read_definition(sweep_dir)
    records = read_records(sweep_dir)
    study = read_study(sweep_dir)
    replay, retry, retried = [], [], []
    for t in study.get("trials", []):
        rec = records.get(t["number"]) or {}
        done = _job_done(sweep_dir, rec)
        if t["state"] == "COMPLETE":
            replay.append({**t, "replay_state": "COMPLETE"})
        elif done and rec.get("objective") is not None:  # finished, but the sweeper never told the study
            values = rec["objective"] if isinstance(rec["objective"], list) else [rec["objective"]]
            replay.append({**t, "replay_state": "COMPLETE", "replay_values": values})
        else:
            replay.append({**t, "replay_state": "FAIL"})
            if rec.get("retried_as") is None and not done:
                retry.append(t["params"])
                retried.append(t["number"])
    completed = sum(1 for t in replay if t["replay_state"] == "COMPLETE")
    completed += sum(1 for n, r in records.items() if n >= len(replay) and _job_done(sweep_dir, r))
    remaining = max(0, int(definition["n_trials"] or 0) - completed)
    return {"replay": replay, "retry": retry[:remaining], "retried": retried[:remaining], "remaining": remaining,
            "offset": len(replay)}


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
    launch = _add_launch(sweep_dir, {"kind": "resume" if resume else "optuna", "offset": state["offset"],
                                     "n_trials": state["remaining"], "replay": state["replay"],
                                     "retry": state["retry"], "hydra_overrides": extra_hydra})
    # a retried trial's old job points to its new job number (the enqueued trials run first, in order)
    for i, old in enumerate(state["retried"]):
        rec = read_records(sweep_dir).get(old)
        if rec is not None:
            rec["retried_as"] = state["offset"] + i
            _write_record(sweep_dir, rec)
    rebuild_index(sweep_dir)
    settings = _hydra_settings(sweep_dir, launch, definition["name"], user_hydra) + [
        f"hydra.sweeper.n_trials={state['remaining']}",
        f"hydra.sweeper.study_name={sanitize_name(definition['id'])}",
        "hydra.sweeper.storage={_target_:workbench.sweep.study_storage,"
        f"sweep_dir:{_quote(str(sweep_dir))},launch:{launch}}}",
        "hydra.sweeper.max_failure_rate=1.0",  # a failed job never stops the sweep
    ]
    with hydra_app(job_name=sanitize_name(definition["name"])) as hydra:
        try:
            hydra.multirun(config_name="train", task_function=run_job,
                           overrides=definition["task_overrides"] + user_hydra + settings)
        except ValueError as e:
            # the plugin asks the study for its best trial at the end; with every trial failed there is none
            if "No trials are completed yet" not in str(e) and "Record does not exist" not in str(e):
                raise
    return launch


def live_jobs(sweep_dir: Path) -> dict[int, str]:
    """Jobs recorded `running` whose training still runs somewhere: {job: who}. A resume leaves them alone (a run
    directory has one writer). Asked of the job's run directory lock, else of the recorded pid on this host."""
    from workbench.runs import pid_alive

    sweep_dir = Path(sweep_dir)
    out: dict[int, str] = {}
    for job, rec in read_records(sweep_dir).items():
        if rec.get("status") != STATUS_RUNNING:
            continue
        run_path = sweep_dir / rec["run_dir"] if rec.get("run_dir") else None
        if run_path is None and rec.get("name") and rec.get("experiment"):
            run_path = _find_run_dir(sweep_dir / "runs" / sanitize_name(rec["experiment"]), rec["name"], set())
        if run_path is not None and (run_path / "meta.json").is_file():
            run = RunDir(run_path)
            if run.status == STATUS_RUNNING:
                out[job] = run.liveness()[1]
            continue
        pid = rec.get("pid")
        if pid and rec.get("host") == socket.gethostname() and int(pid) != os.getpid() and pid_alive(int(pid)):
            out[job] = f"pid {pid} on {rec['host']} is alive"
    return out


def jobs_to_resume(sweep_dir: Path) -> list[int]:
    """Grid jobs not completed: never started, failed, or left `running` by a sweep that was killed (a job whose
    training still runs is left alone: see `live_jobs`)."""
    definition = read_definition(sweep_dir)
    records = read_records(sweep_dir)
    live = live_jobs(sweep_dir)
    return [j["job"] for j in definition["jobs"] if not _job_done(sweep_dir, records.get(j["job"])) and j["job"] not in live]


def finalize(sweep_dir: Path, launched: bool = True) -> list[dict[str, Any]]:
    """After a launch returned: rebuild the index and record the outcome in sweep.json."""
    rows = rebuild_index(sweep_dir)
    definition = read_definition(sweep_dir)
    if launched and definition["launches"]:
        definition["launches"][-1]["finished"] = now_iso()
        definition["launches"][-1]["counts"] = counts(rows)
        atomic_write_json(Path(sweep_dir) / SWEEP_FILE, definition)
    return rows


# ----------------------------------------------------------------------------------------------- live progress


class SweepMonitor:
    """A rich renderable that reads the sweep directory on every refresh (so it sees jobs of any launcher:
    in-process, joblib workers, submitit/SLURM jobs): a bar of jobs done and a table of running/failed/recent jobs."""

    def __init__(self, sweep_dir: Path, total: int, title: str, max_rows: int = 16) -> None:
        self.sweep_dir = Path(sweep_dir)
        self.total = total
        self.title = title
        self.max_rows = max_rows
        self.start = time.time()
        self.baseline = {r["job"]: (r.get("attempts", 0), r["status"]) for r in index_rows(self.sweep_dir)
                         if r["status"] != STATUS_PENDING}
        self.with_objective = read_definition(self.sweep_dir).get("objective") is not None

    def _step(self, rec: dict[str, Any]) -> str:
        name, exp = rec.get("name"), rec.get("experiment")
        if not name or not exp:
            return ""
        base = self.sweep_dir / "runs" / sanitize_name(exp)
        stem = sanitize_name(name)
        dirs = sorted((p for p in base.glob(f"*_{stem}*") if p.name.endswith("_" + stem) or f"_{stem}-" in p.name),
                      key=lambda p: p.stat().st_mtime) if base.is_dir() else []
        if not dirs:
            return ""
        step = 0
        f = dirs[-1] / "metrics.jsonl"
        if f.is_file():
            with open(f, "rb") as fh:
                fh.seek(max(0, f.stat().st_size - 4096))
                for line in fh.read().decode(errors="ignore").splitlines()[::-1]:
                    try:
                        step = int(json.loads(line).get("step", 0))
                        break
                    except (ValueError, AttributeError):
                        continue
        total = rec.get("max_steps")
        return f"{step}/{total}" if total else str(step)

    def __rich__(self):
        from rich.console import Group
        from rich.progress_bar import ProgressBar
        from rich.table import Table
        from rich.text import Text

        rows = index_rows(self.sweep_dir)
        # only this launch's jobs: those whose attempt count or status changed since it started
        fresh = [r for r in rows if r["status"] != STATUS_PENDING
                 and self.baseline.get(r["job"]) != (r.get("attempts", 0), r["status"])]
        c = counts(fresh)
        done = c[STATUS_COMPLETED] + c[STATUS_FAILED]
        elapsed = time.strftime("%H:%M:%S", time.gmtime(time.time() - self.start))
        head = Table.grid(padding=(0, 2))
        head.add_row(Text(self.title, style="bold"), Text(elapsed, style="dim"))
        head.add_row(ProgressBar(total=max(self.total, 1), completed=done, width=40),
                     Text.assemble(f"{done}/{self.total} done   ", (f"{c[STATUS_COMPLETED]} completed", "green"), "  ",
                                   (f"{c[STATUS_RUNNING]} running", "cyan"), "  ",
                                   (f"{c[STATUS_FAILED]} failed", "red" if c[STATUS_FAILED] else "dim")))
        table = Table(show_header=True, header_style="bold", box=None, pad_edge=False, expand=False)
        table.add_column("job", justify="right", no_wrap=True)
        table.add_column("overrides", overflow="fold", max_width=60)
        table.add_column("status", no_wrap=True)
        table.add_column("step", justify="right", no_wrap=True)
        if self.with_objective:
            table.add_column("objective", justify="right", no_wrap=True)
        table.add_column("accuracy", justify="right", no_wrap=True)
        table.add_column("time", justify="right", no_wrap=True)
        table.add_column("error", overflow="fold", max_width=50)
        records = read_records(self.sweep_dir)
        order = {STATUS_RUNNING: 0, STATUS_FAILED: 1, STATUS_COMPLETED: 2}
        shown = sorted(fresh, key=lambda r: (order.get(r["status"], 3), -(r["job"])))[: self.max_rows]
        for r in sorted(shown, key=lambda r: r["job"]):
            style = {STATUS_RUNNING: "cyan", STATUS_FAILED: "red", STATUS_COMPLETED: "green"}.get(r["status"], "")
            step = self._step(records.get(r["job"], {})) if r["status"] == STATUS_RUNNING else ""
            cells = [str(r["job"]), " ".join(short_override(o) for o in r["overrides"]), Text(r["status"], style=style),
                     step]
            if self.with_objective:
                cells.append(_fmt(r.get("objective")))
            cells += [_fmt((r.get("metrics") or {}).get("eval/accuracy")),
                      f"{r['seconds']:.0f}s" if r.get("seconds") is not None else "", (r.get("error") or "")[:200]]
            table.add_row(*cells)
        hidden = len(fresh) - len(shown)
        parts = [head, table]
        if hidden > 0:
            parts.append(Text(f"... and {hidden} more completed", style="dim"))
        return Group(*parts)


def short_override(override: str) -> str:
    """'a.b=0.45247205937195945' -> 'a.b=0.4525' (display only; the index keeps the exact value)."""
    key, _, value = override.partition("=")
    try:
        f = float(value)
    except ValueError:
        return override
    return f"{key}={f:.4g}" if len(value) > 8 else override


def _fmt(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, list):
        return ", ".join(_fmt(x) for x in v)
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)
