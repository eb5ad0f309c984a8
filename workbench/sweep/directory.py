"""The sweep directory: the contract between `rl sweep`, its jobs (in any process) and `rl compare`.

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
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from workbench.config import ConfigError
from workbench.runs import (
    STATUS_COMPLETED,
    STATUS_FAILED,
    STATUS_RUNNING,
    RunDir,
    atomic_write_json,
    atomic_write_text,
    json_safe,
    now_iso,
    read_json,
    read_jsonl,
    sanitize_name,
)

if TYPE_CHECKING:
    from workbench.sweep.plan import SweepPlan

STATUS_PENDING = "pending"
SWEEP_FILE = "sweep.json"
INDEX_FILE = "index.jsonl"
JOBS_DIR = "jobs"
STUDY_FILE = "optuna_study.json"

# Keys of one index line, in order.
INDEX_KEYS = ("job", "overrides", "status", "run_dir", "error", "objective", "metrics", "attempts", "retried_as",
              "start_time", "end_time", "seconds", "host")


# ----------------------------------------------------------------------------------------------- sweep.json


def read_definition(sweep_dir: Path) -> dict[str, Any]:
    f = Path(sweep_dir) / SWEEP_FILE
    if not f.is_file():
        raise ConfigError(f"not a sweep directory (no {SWEEP_FILE}): {sweep_dir}")
    return read_json(f)


def write_definition(sweep_dir: Path, definition: dict[str, Any]) -> None:
    atomic_write_json(Path(sweep_dir) / SWEEP_FILE, definition)


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
    write_definition(path, definition)
    (path / JOBS_DIR).mkdir()
    rebuild_index(path)
    return path


def add_launch(sweep_dir: Path, entry: dict[str, Any]) -> int:
    """Record a launch (first run or --resume) in sweep.json; returns its number."""
    definition = read_definition(sweep_dir)
    entry = {"launch": len(definition["launches"]), "time": now_iso(), **entry}
    definition["launches"].append(entry)
    write_definition(sweep_dir, definition)
    return entry["launch"]


def finalize(sweep_dir: Path, launched: bool = True) -> list[dict[str, Any]]:
    """After a launch returned: rebuild the index and record the outcome in sweep.json."""
    rows = rebuild_index(sweep_dir)
    definition = read_definition(sweep_dir)
    if launched and definition["launches"]:
        definition["launches"][-1]["finished"] = now_iso()
        definition["launches"][-1]["counts"] = counts(rows)
        write_definition(sweep_dir, definition)
    return rows


# ----------------------------------------------------------------------------------------------- job records


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


def write_record(sweep_dir: Path, record: dict[str, Any]) -> None:
    atomic_write_json(job_file(sweep_dir, record["job"]), record)


def job_done(sweep_dir: Path, rec: dict[str, Any] | None) -> bool:
    """Completed, and its run directory's summary.json is there."""
    if not rec or rec.get("status") != STATUS_COMPLETED or not rec.get("run_dir"):
        return False
    return (Path(sweep_dir) / rec["run_dir"] / "summary.json").is_file()


def find_run_dir(base: Path, name: str, before: set[str] = frozenset()) -> Path | None:  # type: ignore[assignment]
    """The newest run directory train() created for `name` under base (runs/<experiment>/), absent from `before`."""
    if not base.is_dir():
        return None
    stem = sanitize_name(name)
    new = [p for p in base.iterdir() if p.is_dir() and p.name not in before
           and (p.name.endswith("_" + stem) or "_" + stem + "-" in p.name)]
    return max(new, key=lambda p: p.stat().st_mtime) if new else None


def running_step(sweep_dir: Path, rec: dict[str, Any]) -> tuple[int, int | None] | None:
    """(last logged step, max_steps) of a running job, read from the tail of its metrics.jsonl; None before its
    run directory exists."""
    name, exp = rec.get("name"), rec.get("experiment")
    if not name or not exp:
        return None
    run_path = find_run_dir(Path(sweep_dir) / "runs" / sanitize_name(exp), name)
    if run_path is None:
        return None
    step = 0
    f = run_path / "metrics.jsonl"
    if f.is_file():
        with open(f, "rb") as fh:
            fh.seek(max(0, f.stat().st_size - 4096))
            for line in fh.read().decode(errors="ignore").splitlines()[::-1]:
                try:
                    step = int(json.loads(line).get("step", 0))
                    break
                except (ValueError, AttributeError):
                    continue
    return step, rec.get("max_steps")


# ----------------------------------------------------------------------------------------------- index.jsonl


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
    """The index as it stands in jobs/ (a grid lists every planned job, pending ones too)."""
    definition = definition or read_definition(sweep_dir)
    records = read_records(sweep_dir)
    if definition["kind"] == "grid":
        return [_index_row(j["job"], j["overrides"], records.get(j["job"])) for j in definition["jobs"]]
    return [_index_row(n, rec.get("overrides", []), rec) for n, rec in sorted(records.items())]


def rebuild_index(sweep_dir: Path) -> list[dict[str, Any]]:
    """Rewrite index.jsonl (atomically) from sweep.json and jobs/*.json, one writer at a time: jobs of joblib,
    submitit or SLURM rebuild it from their own processes. filelock raises where the file system cannot lock
    (some NFS mounts) instead of letting two writers race."""
    from filelock import FileLock

    sweep_dir = Path(sweep_dir)
    with FileLock(sweep_dir / ".index.lock"):
        rows = index_rows(sweep_dir)
        atomic_write_text(sweep_dir / INDEX_FILE, "".join(json.dumps(json_safe(r)) + "\n" for r in rows))
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


# ----------------------------------------------------------------------------------------------- optuna_study.json


def read_study(sweep_dir: Path) -> dict[str, Any]:
    f = Path(sweep_dir) / STUDY_FILE
    return read_json(f) if f.is_file() else {}


def write_study(sweep_dir: Path, study: dict[str, Any]) -> None:
    atomic_write_json(Path(sweep_dir) / STUDY_FILE, study)
