"""End-to-end `rl sweep` with real tiny trainings: the basic launcher (with W&B), joblib with 2 workers (with a job
that crashes inside training, and --resume), submitit's local executor, and an Optuna search.

Each sweep is as small as it can be (1 GRPO step, no start-of-training eval); `rl sweep` runs as a subprocess, as a
user would run it, so exit codes and the launchers' own processes are real."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import TINY
from workbench.runs import RunDir, read_json, read_jsonl

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parent.parent

# conftest's tiny run, one optimizer step, no start-of-training evaluation (the end one feeds the objective)
SMALL = [o for o in TINY if not o.startswith(("algo.max_steps=", "algo.save_steps="))] + [
    "algo.max_steps=1", "algo.save_steps=1", "eval.at_start=false"]


def rl_sweep(*args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "cli.main", "sweep", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout, env={**os.environ, "COLUMNS": "200"})


def only_sweep(runs: Path) -> Path:
    dirs = sorted((runs / "sweeps").iterdir())
    assert len(dirs) == 1, dirs
    return dirs[0]


def test_grid_2x2_basic_launcher_each_job_its_own_wandb_run(tmp_path):
    res = rl_sweep(*SMALL, "logger=wandb", "logger.mode=offline", "seed=1,2", "algo.learning_rate=1e-5,5e-5",
                   f"runs_dir={tmp_path / 'runs'}", "--name", "grid")
    assert res.returncode == 0, res.stdout + res.stderr
    assert "4 jobs: 4 completed, 0 failed" in res.stdout
    sweep_dir = only_sweep(tmp_path / "runs")
    rows = read_jsonl(sweep_dir / "index.jsonl")
    assert [r["overrides"] for r in rows] == [["seed=1", "algo.learning_rate=1e-05"],
                                              ["seed=1", "algo.learning_rate=5e-05"],
                                              ["seed=2", "algo.learning_rate=1e-05"],
                                              ["seed=2", "algo.learning_rate=5e-05"]]
    from workbench.tracking import read_offline_run

    run_ids, offline_dirs, groups = set(), set(), {}
    for r in rows:
        assert r["status"] == "completed" and r["error"] is None
        assert r["metrics"]["steps"] == 1 and r["metrics"]["eval/accuracy"] is not None
        run = RunDir.open(sweep_dir / r["run_dir"])
        assert run.status == "completed"
        config = yaml.safe_load(run.config_file.read_text())
        assert config["seed"] == int(r["overrides"][0].split("=")[1])
        assert config["logger"]["group"] is None and f"sweep:{sweep_dir.name}" in config["logger"]["tags"]
        # one W&B run per job: its own id, its own offline run folder
        meta = run.read_meta()
        run_ids.add(meta["wandb_run_id"])
        found = list(run.wandb_dir.glob("offline-run-*"))
        assert len(found) == 1 and found[0].name.endswith(meta["wandb_run_id"]), found
        offline_dirs.add(found[0].name)
        # W&B groups by the config without the seed: one group per learning rate, the sweep is a tag
        wb = read_offline_run(found[0])
        groups.setdefault(wb["run"]["group"], []).append(r["overrides"][1])
        assert f"sweep:{sweep_dir.name}" in wb["run"]["tags"]
    assert len(run_ids) == 4 and len(offline_dirs) == 4
    assert sorted(groups.values()) == [["algo.learning_rate=1e-05"] * 2, ["algo.learning_rate=5e-05"] * 2]

    # the sweep directory is an input rl compare understands: two learning rates, two seeds each
    from workbench.compare import group_runs, load_runs

    runs, excluded = load_runs([sweep_dir])
    assert len(runs) == 4 and not excluded
    assert len(group_runs(runs)) == 2


def test_joblib_two_workers_a_crashing_job_and_resume(tmp_path):
    # a job that passes every up-front check but crashes inside training: an optimizer whose package is missing
    # (a bad value such as algo.learning_rate=-1 is refused before the sweep launches; see test_sweep.py)
    import importlib.util

    if importlib.util.find_spec("bitsandbytes") is not None:
        pytest.skip("bitsandbytes is installed: the 8-bit optimizer would not crash")
    args = [*SMALL, "logger=none", "seed=3", "+algo.optim=adamw_torch,adamw_bnb_8bit", f"runs_dir={tmp_path / 'runs'}",
            "hydra/launcher=joblib", "hydra.launcher.n_jobs=2"]
    res = rl_sweep(*args)
    assert res.returncode == 1, res.stdout + res.stderr  # a job failed: the sweep says so in its exit code
    assert "1 completed" in res.stdout and "1 failed" in res.stdout
    sweep_dir = only_sweep(tmp_path / "runs")
    rows = read_jsonl(sweep_dir / "index.jsonl")
    assert [r["status"] for r in rows] == ["completed", "failed"]
    assert "bitsandbytes" in rows[1]["error"]  # raised inside training, in a worker process
    failed_run = RunDir.open(sweep_dir / rows[1]["run_dir"])
    assert failed_run.status == "failed" and (failed_run.path / "error.txt").is_file()
    records = [read_json(sweep_dir / "jobs" / f"{j}.json") for j in (0, 1)]
    assert len({rec["pid"] for rec in records}) == 2 and os.getpid() not in {rec["pid"] for rec in records}
    assert (sweep_dir / records[0]["hydra_dir"] / "job.log").is_file()  # worker output kept off the live display

    res = rl_sweep("--resume", str(sweep_dir))
    assert res.returncode == 1, res.stdout + res.stderr  # the same override fails again
    rows = read_jsonl(sweep_dir / "index.jsonl")
    assert [r["attempts"] for r in rows] == [1, 2]  # only the failed job ran again
    assert [launch["jobs"] for launch in read_json(sweep_dir / "sweep.json")["launches"]] == [[0, 1], [1]]


def test_submitit_local_executor(tmp_path):
    res = rl_sweep(*SMALL, "logger=none", "seed=1,2", f"runs_dir={tmp_path / 'runs'}", "hydra/launcher=submitit_local")
    assert res.returncode == 0, res.stdout + res.stderr
    sweep_dir = only_sweep(tmp_path / "runs")
    rows = read_jsonl(sweep_dir / "index.jsonl")
    assert [r["status"] for r in rows] == ["completed", "completed"]
    assert all(RunDir.open(sweep_dir / r["run_dir"]).status == "completed" for r in rows)
    assert list((sweep_dir / ".submitit").glob("*/*_log.out"))  # submitit ran each job in its own process
    assert len({read_json(sweep_dir / "jobs" / f"{j}.json")["pid"] for j in (0, 1)}) == 2


def test_optuna_sweep_optimises_a_summary_objective(tmp_path):
    res = rl_sweep("sweep=length_weight_optuna", *SMALL, "logger=none", "hydra.sweeper.n_trials=2",
                   f"runs_dir={tmp_path / 'runs'}")
    assert res.returncode == 0, res.stdout + res.stderr
    sweep_dir = only_sweep(tmp_path / "runs")
    rows = read_jsonl(sweep_dir / "index.jsonl")
    assert [r["status"] for r in rows] == ["completed", "completed"]
    for r in rows:
        m = r["metrics"]
        assert r["objective"] == pytest.approx(m["eval/accuracy"] - 0.005 * m["eval/length/mean"])
        assert {o.split("=")[0] for o in r["overrides"]} == {"reward.length_kimi.weight", "algo.learning_rate"}
        config = yaml.safe_load((sweep_dir / r["run_dir"] / "config.yaml").read_text())
        weight = float(next(o for o in r["overrides"] if o.startswith("reward.")).split("=")[1])
        assert config["reward"]["length_kimi"]["weight"] == pytest.approx(weight)
    study = read_json(sweep_dir / "optuna_study.json")
    assert [t["state"] for t in study["trials"]] == ["COMPLETE", "COMPLETE"]
    assert study["best_value"] == pytest.approx(max(r["objective"] for r in rows))
    assert (sweep_dir / "optimization_results.yaml").is_file()
    assert "best (job" in res.stdout
