"""`rl sweep` without training: grid expansion, dry runs, the sweep directory and index, failure handling, resume,
Optuna bookkeeping. A fake `workbench.train.train` stands in for training; Hydra's multirun, sweepers and the basic
launcher are the real ones (in this process, so the fake is what the jobs call)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from cli.main import app
from workbench import sweep as sw
from workbench.config import ConfigError, to_dict
from workbench.runs import RunDir, read_json, read_jsonl

ROOT = Path(__file__).resolve().parent.parent
runner = CliRunner()


class FakeTrain:
    """Creates a real run directory and a summary, like workbench.train.train, in milliseconds.

    `fail(cfg, attempt)` decides whether the job raises (after its run directory exists, as a crash in training
    would); `accuracy(cfg)` gives summary.json's eval/accuracy."""

    def __init__(self, fail=None, accuracy=None):
        self.calls: list[dict] = []
        self.fail = fail or (lambda cfg, attempt: False)
        self.accuracy = accuracy or (lambda cfg: 0.5)

    def __call__(self, cfg, overrides, argv=None, resume=None, progress=True):
        attempt = 1 + sum(1 for c in self.calls if c["name"] == cfg.name)
        self.calls.append({"name": cfg.name, "seed": cfg.seed, "overrides": list(overrides), "cfg": cfg,
                           "env_run_id": os.environ.get("WANDB_RUN_ID")})
        os.environ["WANDB_RUN_ID"] = f"fake-{len(self.calls)}"  # train() sets W&B variables like this
        run = RunDir.create(cfg.runs_dir, cfg.experiment_name, cfg.name)
        run.config_file.write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False))
        run.path.joinpath("overrides.txt").write_text("".join(o + "\n" for o in overrides))
        run.start_meta(argv or [], cfg.seed, ROOT)
        if self.fail(cfg, attempt):
            run.mark_failed("RuntimeError: boom")
            raise RuntimeError(f"boom in {cfg.name}")
        run.mark_completed({"run_dir": str(run.path), "seed": cfg.seed, "steps": 1, "eval/accuracy": self.accuracy(cfg),
                            "eval/length/mean": 20.0 + cfg.seed, "train/reward": 0.1})
        return run


@pytest.fixture
def fake(monkeypatch):
    import workbench.train

    f = FakeTrain()
    monkeypatch.setattr(workbench.train, "train", f)
    return f


def rl(*args):
    return runner.invoke(app, ["sweep", *args])


def only_sweep(root: Path) -> Path:
    dirs = sorted((root / "sweeps").iterdir())
    assert len(dirs) == 1, dirs
    return dirs[0]


GRID = ["seed=1,2", "algo.learning_rate=1e-5,2e-5", "logger=none"]


# ----------------------------------------------------------------------------------------------- planning


def test_dry_run_lists_the_grid_and_writes_nothing(tmp_path):
    res = rl(*GRID, f"runs_dir={tmp_path / 'runs'}", "--dry-run")
    assert res.exit_code == 0, res.output
    assert "4 jobs" in res.output
    for text in ("seed", "algo.learning_rate", "1e-05", "2e-05"):
        assert text in res.output
    assert not (tmp_path / "runs").exists()


def test_a_key_only_trl_knows_sweeps_as_in_rl_train(tmp_path):
    """rl train force-adds keys the YAML does not hold (most of trl.GRPOConfig); the sweep composes the same way."""
    res = rl("algo.warmup_steps=0,3", f"runs_dir={tmp_path / 'runs'}", "--dry-run")
    assert res.exit_code == 0, res.output
    assert "2 jobs" in res.output and "algo.warmup_steps" in res.output
    plan = sw.plan_sweep(["algo.warmup_steps=0,3", "seed=1,2"])
    assert [j.overrides for j in plan.jobs] == [
        ["++algo.warmup_steps=0", "seed=1"], ["++algo.warmup_steps=0", "seed=2"],
        ["++algo.warmup_steps=3", "seed=1"], ["++algo.warmup_steps=3", "seed=2"]]
    # a key the YAML holds stays as written, so it still replaces a preset's sweep over the same key
    assert len(sw.plan_sweep(["sweep=length_weight_grid", "seed=7,8", "algo.warmup_steps=3"]).jobs) == 6
    with pytest.raises(ConfigError, match="algo.warmup_steps"):
        sw.plan_sweep(["algo.warmup_steps=0,-1"])


def test_grid_expansion_is_hydras_product_in_order():
    plan = sw.plan_sweep(["experiment=length_shaping", "reward.length_kimi.weight=0.1,0.3,1.0", "seed=1,2,3"])
    assert plan.kind == "grid" and plan.name == "length_shaping" and plan.launcher == "basic"
    assert plan.swept_keys == ["reward.length_kimi.weight", "seed"]
    assert [j.overrides for j in plan.jobs][:4] == [
        ["reward.length_kimi.weight=0.1", "seed=1"], ["reward.length_kimi.weight=0.1", "seed=2"],
        ["reward.length_kimi.weight=0.1", "seed=3"], ["reward.length_kimi.weight=0.3", "seed=1"]]
    assert len(plan.jobs) == 9 and [j.job for j in plan.jobs] == list(range(9))
    # a job's full overrides are what Hydra's BasicSweeper hands the launcher
    assert plan.jobs[0].task_overrides == ["experiment=length_shaping", "reward.length_kimi.weight=0.1", "seed=1"]
    assert plan.base_overrides == ["experiment=length_shaping"]


def test_preset_params_expand_and_a_command_line_value_replaces_them():
    plan = sw.plan_sweep(["sweep=length_weight_grid"])
    assert plan.preset == "length_weight_grid" and len(plan.jobs) == 9
    plan = sw.plan_sweep(["sweep=length_weight_grid", "seed=7,8"])
    assert len(plan.jobs) == 6 and {j.overrides[1] for j in plan.jobs} == {"seed=7", "seed=8"}
    with pytest.raises(ConfigError, match="nothing to sweep"):  # a plain value ends the sweep over that key
        sw.plan_sweep(["sweep=seeds", "seed=5"])
    with pytest.raises(ConfigError, match="nothing to sweep"):
        sw.plan_sweep(["seed=5"])


@pytest.mark.parametrize("preset", sorted(p.stem for p in (ROOT / "conf" / "sweep").glob("*.yaml")))
def test_every_sweep_preset_plans(preset):
    try:
        plan = sw.plan_sweep([f"sweep={preset}"])
    except ConfigError as e:  # a preset on a local model folder its script passes (hapo_repeat: a tiny cache folder)
        assert "model.name_or_path" in str(e), e
        plan = sw.plan_sweep([f"sweep={preset}", "model.name_or_path=/tmp/a-local-model"])
    assert plan.total > 0
    if plan.kind == "optuna":
        assert plan.objective is not None and plan.directions


def test_optuna_preset_declares_its_objective_and_space():
    plan = sw.plan_sweep(["sweep=length_weight_optuna"])
    assert plan.kind == "optuna" and plan.directions == ["maximize"] and plan.n_trials == 12
    assert plan.objective == {"eval/accuracy": 1.0, "eval/length/mean": -0.005}
    assert set(plan.params) == {"reward.length_kimi.weight", "algo.learning_rate"}


@pytest.mark.parametrize(
    "overrides, fragment",
    [
        (["seed=1,2", "algo=nope"], "algo='nope' is not a config option"),
        (["seed=1,2", "task.no_such_key=1"], "task.no_such_key"),
        (["seed=1,2", "sweep=nope"], "sweep='nope' is not a config option"),
        (["hydra/sweeper=optuna", "algo.learning_rate=interval(1e-5,1e-4)"], "needs an objective"),
        (["sweep=length_weight_optuna", "eval.at_end=false"], "eval.at_end=false"),
        (["sweep=length_weight_optuna", "hydra.sweeper.direction=[maximize,minimize]"], "direction has 2"),
        (["seed=1,2", "algo.learning_rate=interval(1e-5,1e-4)"], "interval"),
        # the checks rl train makes before loading a model run on every grid job before anything launches
        (["algo.learning_rate=1e-5,-1"], "job 1 (algo.learning_rate=-1): algo.learning_rate=-1.0 is out of range"),
        (["algo.max_steps=5,abc"], "algo.max_steps: expected an integer"),
        (["reward.format.weight=0.5,nan"], "reward.format.weight=nan: expected a finite number"),
    ],
)
def test_bad_sweeps_are_one_line_exit_2_and_write_nothing(tmp_path, overrides, fragment):
    res = rl(*overrides, f"runs_dir={tmp_path / 'runs'}", "--dry-run")
    assert res.exit_code == 2, res.output
    assert fragment in res.output
    assert not (tmp_path / "runs").exists()


def test_objective_checks_and_values():
    with pytest.raises(ConfigError, match="not a summary.json metric"):
        sw.check_objective("eval/acc")
    with pytest.raises(ConfigError, match="must be a number"):
        sw.check_objective({"eval/accuracy": "x"})
    summary = {"eval/accuracy": 0.8, "eval/length/mean": 20.0, "cost/mean": None}
    assert sw.objective_value("eval/accuracy", summary) == 0.8
    assert sw.objective_value({"eval/accuracy": 1.0, "eval/length/mean": -0.01}, summary) == pytest.approx(0.6)
    assert sw.objective_value(["eval/accuracy", "eval/length/mean"], summary) == [0.8, 20.0]
    assert sw.objective_value("cost/mean", summary) is None
    assert sw.objective_value({"eval/accuracy": 1.0, "cost/mean": 1.0}, summary) is None


def test_launcher_presets_compose():
    from workbench.compose import compose_config, hydra_context

    with hydra_context():
        cfg = compose_config(["hydra/launcher=local_pool"], with_hydra=True)
        assert cfg.hydra.launcher._target_.endswith("JoblibLauncher") and cfg.hydra.launcher.n_jobs == 2
        cfg = compose_config(["hydra/launcher=slurm_gpu", "hydra.launcher.partition=a100"], with_hydra=True)
        assert cfg.hydra.launcher._target_.endswith("SlurmLauncher")
        assert cfg.hydra.launcher.partition == "a100" and cfg.hydra.launcher.gpus_per_node == 1


def test_rl_train_does_not_know_the_sweep_group():
    from workbench.compose import compose

    with pytest.raises(ConfigError):
        compose("train", ["sweep=seeds"])
    compose("train", [])  # and train.yaml itself is untouched by the sweep group


# ----------------------------------------------------------------------------------------------- running


def test_grid_sweep_writes_the_index_and_ordinary_run_directories(tmp_path, fake):
    res = rl(*GRID, f"runs_dir={tmp_path / 'runs'}", "--name", "lr grid")
    assert res.exit_code == 0, res.output
    sweep_dir = only_sweep(tmp_path / "runs")
    assert sweep_dir.name.endswith("_lr-grid")
    definition = read_json(sweep_dir / "sweep.json")
    assert definition["kind"] == "grid" and definition["params"] == {"seed": "1,2", "algo.learning_rate": "1e-5,2e-5"}
    assert (sweep_dir / "multirun.yaml").is_file()  # Hydra's BasicSweeper ran the grid

    rows = read_jsonl(sweep_dir / "index.jsonl")
    assert [r["job"] for r in rows] == [0, 1, 2, 3]
    assert [r["overrides"] for r in rows] == [["seed=1", "algo.learning_rate=1e-05"],
                                              ["seed=1", "algo.learning_rate=2e-05"],
                                              ["seed=2", "algo.learning_rate=1e-05"],
                                              ["seed=2", "algo.learning_rate=2e-05"]]
    for r in rows:
        assert set(sw.INDEX_KEYS) <= set(r)
        assert r["status"] == "completed" and r["error"] is None and r["attempts"] == 1
        assert r["metrics"]["eval/accuracy"] == 0.5 and "seed" not in r["metrics"]
        run = RunDir.open(sweep_dir / r["run_dir"])  # relative to the sweep directory
        assert run.status == "completed"
        assert run.path.parent == sweep_dir / "runs" / "default"
        config = yaml.safe_load(run.config_file.read_text())
        # W&B groups by the config without the seed (as rl compare), not by the sweep; the sweep is a tag
        assert config["logger"]["group"] is None and f"sweep:{sweep_dir.name}" in config["logger"]["tags"]
        assert run.read_meta()["sweep"] == {"dir": str(sweep_dir), "id": sweep_dir.name, "job": r["job"]}
    # each job trained with its own overrides; names identify the job
    assert [(c["seed"], c["cfg"].algo.trl["learning_rate"], c["name"]) for c in fake.calls] == [
        (1, 1e-5, "job0"), (1, 2e-5, "job1"), (2, 1e-5, "job2"), (2, 2e-5, "job3")]
    assert "algo.learning_rate=2e-05" in fake.calls[1]["overrides"]
    # train() leaves W&B variables behind; the next job starts without them
    assert [c["env_run_id"] for c in fake.calls] == [os.environ.get("WANDB_RUN_ID")] * 4
    assert "4 jobs: 4 completed, 0 failed" in res.output

    # rl compare reads the sweep directory through its index
    from workbench.compare import resolve_paths

    found, missing = resolve_paths([sweep_dir])
    assert len(found) == 4 and not missing


def test_a_failing_job_does_not_stop_the_sweep_and_resume_reruns_only_it(tmp_path, fake):
    fake.fail = lambda cfg, attempt: cfg.name == "job2" and attempt == 1
    res = rl(*GRID, f"runs_dir={tmp_path / 'runs'}")
    assert res.exit_code == 1, res.output
    assert "3 completed" in res.output and "1 failed" in res.output and "boom in job2" in res.output
    assert "rl sweep --resume" in res.output
    sweep_dir = only_sweep(tmp_path / "runs")
    rows = {r["job"]: r for r in read_jsonl(sweep_dir / "index.jsonl")}
    assert [rows[j]["status"] for j in range(4)] == ["completed", "completed", "failed", "completed"]
    assert rows[2]["error"] == "RuntimeError: boom in job2"
    assert rows[2]["run_dir"] and RunDir.open(sweep_dir / rows[2]["run_dir"]).status == "failed"
    assert "Traceback" in read_json(sweep_dir / "jobs" / "2.json")["traceback"]
    assert len(fake.calls) == 4

    res = rl("--resume", str(sweep_dir), "--dry-run")
    assert res.exit_code == 0 and "job(s) 2" in res.output
    assert len(fake.calls) == 4

    res = rl("--resume", str(sweep_dir))
    assert res.exit_code == 0, res.output
    assert [c["name"] for c in fake.calls[4:]] == ["job2"]  # only the failed job ran again
    assert fake.calls[4]["seed"] == 2 and fake.calls[4]["cfg"].algo.trl["learning_rate"] == 1e-5
    rows = {r["job"]: r for r in read_jsonl(sweep_dir / "index.jsonl")}
    assert all(r["status"] == "completed" for r in rows.values())
    assert rows[2]["attempts"] == 2 and rows[0]["attempts"] == 1
    definition = read_json(sweep_dir / "sweep.json")
    assert [(x["kind"], x["jobs"]) for x in definition["launches"]] == [("grid", [0, 1, 2, 3]), ("resume", [2])]
    # the failed attempt's run directory is kept (never overwritten); the index points at the new one
    assert len(list((sweep_dir / "runs" / "default").iterdir())) == 5

    res = rl("--resume", str(sweep_dir))
    assert res.exit_code == 0 and "nothing to resume" in res.output
    assert len(fake.calls) == 5


def test_resume_reruns_jobs_left_running_or_never_started(tmp_path, fake):
    res = rl(*GRID, f"runs_dir={tmp_path / 'runs'}")
    assert res.exit_code == 0
    sweep_dir = only_sweep(tmp_path / "runs")
    # a killed sweep: job 1 still says running, job 3 never started
    rec = read_json(sweep_dir / "jobs" / "1.json")
    rec["status"] = "running"
    (sweep_dir / "jobs" / "1.json").write_text(json.dumps(rec))
    (sweep_dir / "jobs" / "3.json").unlink()
    assert sw.jobs_to_resume(sweep_dir) == [1, 3]
    res = rl("--resume", str(sweep_dir), "hydra/launcher=basic")
    assert res.exit_code == 0, res.output
    assert [c["name"] for c in fake.calls[4:]] == ["job1", "job3"]
    assert read_json(sweep_dir / "sweep.json")["hydra_overrides"] == ["hydra/launcher=basic"]
    res = rl("--resume", str(sweep_dir), "seed=3")
    assert res.exit_code == 2 and "only hydra overrides" in res.output
    res = rl("--resume", str(tmp_path))
    assert res.exit_code == 2 and "not a sweep directory" in res.output


def test_optuna_sweep_records_trials_best_params_and_resumes_failed_trials(tmp_path, fake):
    # accuracy peaks at weight 0.3; the second trial crashes once
    fake.accuracy = lambda cfg: 1.0 - abs(cfg.reward["length_kimi"]["weight"] - 0.3)
    fake.fail = lambda cfg, attempt: cfg.name == "job1" and attempt == 1
    args = ["sweep=length_weight_optuna", "logger=none", "hydra.sweeper.n_trials=4", f"runs_dir={tmp_path / 'runs'}",
            "--objective", "eval/accuracy"]
    res = rl(*args)
    assert res.exit_code == 1, res.output
    sweep_dir = only_sweep(tmp_path / "runs")
    rows = {r["job"]: r for r in read_jsonl(sweep_dir / "index.jsonl")}
    assert sorted(rows) == [0, 1, 2, 3]
    assert rows[1]["status"] == "failed" and rows[1]["objective"] is None
    for j in (0, 2, 3):
        weight = float(rows[j]["overrides"][0].split("=")[1])
        assert rows[j]["overrides"][0].startswith("reward.length_kimi.weight=")
        assert rows[j]["objective"] == pytest.approx(1.0 - abs(weight - 0.3))
    study = read_json(sweep_dir / "optuna_study.json")
    assert [t["state"] for t in study["trials"]] == ["COMPLETE", "FAIL", "COMPLETE", "COMPLETE"]
    best = max((rows[j] for j in (0, 2, 3)), key=lambda r: r["objective"])
    assert study["best_job"] == best["job"] and study["best_value"] == pytest.approx(best["objective"])
    assert set(study["best_params"]) == {"reward.length_kimi.weight", "algo.learning_rate"}
    assert (sweep_dir / "optimization_results.yaml").is_file()  # the plugin's own result file
    failed_params = study["trials"][1]["params"]

    res = rl("--resume", str(sweep_dir))
    assert res.exit_code == 0, res.output
    assert [c["name"] for c in fake.calls[4:]] == ["job4"]  # one trial missing: the failed one, retried
    rows = {r["job"]: r for r in read_jsonl(sweep_dir / "index.jsonl")}
    assert rows[1]["retried_as"] == 4 and rows[4]["status"] == "completed"
    study = read_json(sweep_dir / "optuna_study.json")
    assert len(study["trials"]) == 5 and study["trials"][4]["params"] == failed_params
    assert [t["state"] for t in study["trials"]][:4] == ["COMPLETE", "FAIL", "COMPLETE", "COMPLETE"]  # replayed
    assert sw.counts(list(rows.values())) == {"completed": 4, "failed": 0, "running": 0, "pending": 0}

    res = rl("--resume", str(sweep_dir))
    assert res.exit_code == 0 and "nothing to resume" in res.output


def test_optuna_resume_continues_the_budget(tmp_path, fake):
    args = ["sweep=length_weight_optuna", "logger=none", "hydra.sweeper.n_trials=3", f"runs_dir={tmp_path / 'runs'}"]
    assert rl(*args).exit_code == 0
    sweep_dir = only_sweep(tmp_path / "runs")
    definition = read_json(sweep_dir / "sweep.json")
    definition["n_trials"] = 5  # as if the first sweep had been stopped after 3 of 5 trials
    (sweep_dir / "sweep.json").write_text(json.dumps(definition))
    res = rl("--resume", str(sweep_dir))
    assert res.exit_code == 0, res.output
    assert [c["name"] for c in fake.calls] == ["job0", "job1", "job2", "job3", "job4"]
    study = read_json(sweep_dir / "optuna_study.json")
    assert [t["number"] for t in study["trials"]] == [0, 1, 2, 3, 4]
    assert all(t["state"] == "COMPLETE" for t in study["trials"])


def test_a_job_that_fails_before_training_is_recorded_without_run_dir(tmp_path, fake, monkeypatch):
    import workbench.train

    def broken(cfg, overrides, argv=None, resume=None, progress=True):
        raise ConfigError("task.path: file not found")

    monkeypatch.setattr(workbench.train, "train", broken)
    res = rl("seed=1,2", "logger=none", f"runs_dir={tmp_path / 'runs'}")
    assert res.exit_code == 1
    rows = read_jsonl(only_sweep(tmp_path / "runs") / "index.jsonl")
    assert [r["status"] for r in rows] == ["failed", "failed"]
    assert rows[0]["run_dir"] is None and rows[0]["error"] == "ConfigError: task.path: file not found"


def test_index_rebuild_and_counts(tmp_path):
    plan = sw.plan_sweep(["seed=1,2,3", f"runs_dir={tmp_path}"])
    sweep_dir = sw.create_sweep_dir(plan, ["rl", "sweep", "seed=1,2,3"])
    rows = read_jsonl(sweep_dir / "index.jsonl")
    assert [(r["job"], r["status"], r["run_dir"]) for r in rows] == [(0, "pending", None), (1, "pending", None),
                                                                      (2, "pending", None)]
    sw.write_record(sweep_dir, {"job": 1, "status": "failed", "error": "x", "attempts": 1})
    rows = sw.rebuild_index(sweep_dir)
    assert rows[1]["status"] == "failed" and rows[1]["overrides"] == ["seed=2"]
    assert sw.counts(rows) == {"completed": 0, "failed": 1, "running": 0, "pending": 2}
    assert read_jsonl(sweep_dir / "index.jsonl") == json.loads(json.dumps(rows))


def test_sweep_help_lists_presets_and_launchers():
    res = runner.invoke(app, ["sweep", "--help"])
    assert res.exit_code == 0
    for text in ("length_weight_optuna", "length_weight_grid", "joblib", "submitit_slurm", "--resume", "--dry-run"):
        assert text in res.output


def test_multi_objective_optuna_keeps_the_pareto_front(tmp_path, fake):
    fake.accuracy = lambda cfg: cfg.reward["length_kimi"]["weight"]
    res = rl("sweep=length_weight_optuna", "logger=none", "hydra.sweeper.n_trials=3",
             "hydra.sweeper.direction=[maximize,minimize]", f"runs_dir={tmp_path / 'runs'}",
             "--objective", "eval/accuracy,eval/length/mean")
    assert res.exit_code == 0, res.output
    sweep_dir = only_sweep(tmp_path / "runs")
    rows = read_jsonl(sweep_dir / "index.jsonl")
    assert all(isinstance(r["objective"], list) and len(r["objective"]) == 2 for r in rows)
    study = read_json(sweep_dir / "optuna_study.json")
    assert study["directions"] == ["maximize", "minimize"] and study["best_trials"]
    assert "pareto (job" in res.output


def test_live_monitor_renders_this_launchs_jobs(tmp_path, fake):
    from rich.console import Console

    assert rl("seed=1,2", "logger=none", f"runs_dir={tmp_path / 'runs'}").exit_code == 0
    sweep_dir = only_sweep(tmp_path / "runs")
    console = Console(width=120, record=True)
    from cli.sweep_view import SweepMonitor

    monitor = SweepMonitor(sweep_dir, total=2, title="rl sweep test")
    console.print(monitor)  # a resumed sweep's monitor does not count the jobs done before it
    assert "0/2 done" in console.export_text()
    monitor.baseline = {}
    console.print(monitor)
    text = console.export_text()
    assert "2/2 done" in text and "2 completed" in text and "seed=2" in text
