"""What `rl sweep --resume DIR` reruns.

A grid relaunches exactly the jobs that are not completed (missing, failed, or left `running` by a killed sweep),
leaving alone a job whose training still runs somewhere. An Optuna sweep replays the earlier trials into a new
study (so the sampler continues where it stopped), retries failed trials first with the same parameters, and runs
the trials still missing from the budget.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Any

from workbench.runs import STATUS_RUNNING, RunDir, pid_alive, sanitize_name
from workbench.sweep.directory import find_run_dir, job_done, read_definition, read_records, read_study


def live_jobs(sweep_dir: Path) -> dict[int, str]:
    """Jobs recorded `running` whose training still runs somewhere: {job: who}. A resume leaves them alone (a run
    directory has one writer). Asked of the job's run directory lock, else of the recorded pid on this host."""
    sweep_dir = Path(sweep_dir)
    out: dict[int, str] = {}
    for job, rec in read_records(sweep_dir).items():
        if rec.get("status") != STATUS_RUNNING:
            continue
        run_path = sweep_dir / rec["run_dir"] if rec.get("run_dir") else None
        if run_path is None and rec.get("name") and rec.get("experiment"):
            run_path = find_run_dir(sweep_dir / "runs" / sanitize_name(rec["experiment"]), rec["name"])
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
    return [j["job"] for j in definition["jobs"]
            if not job_done(sweep_dir, records.get(j["job"])) and j["job"] not in live]


def optuna_resume_state(sweep_dir: Path) -> dict[str, Any]:
    """What an Optuna --resume replays, retries and still has to run."""
    definition = read_definition(sweep_dir)
    records = read_records(sweep_dir)
    study = read_study(sweep_dir)
    replay, retry, retried = [], [], []
    for t in study.get("trials", []):
        rec = records.get(t["number"]) or {}
        done = job_done(sweep_dir, rec)
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
    completed += sum(1 for n, r in records.items() if n >= len(replay) and job_done(sweep_dir, r))
    remaining = max(0, int(definition["n_trials"] or 0) - completed)
    return {"replay": replay, "retry": retry[:remaining], "retried": retried[:remaining], "remaining": remaining,
            "offset": len(replay)}
