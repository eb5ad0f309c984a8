"""W&B, read back from the offline run files (`run-<id>.wandb`): the workbench config, group, job type and name of a
training run, perf/tokens_per_s in its history, and `rl eval` results in a linked eval run at the checkpoints' steps.
The end-to-end version (a real tiny training, then `rl eval`) is in tests/test_train_e2e.py."""

from __future__ import annotations

import types

import pytest
import yaml

from workbench.compare import config_group_id
from workbench.compose import compose
from workbench.config import to_dict, to_train_config
from workbench.runs import RunDir
from workbench.tracking import log_eval, read_offline_run


def _run_dir(tmp_path, *overrides: str, run_id: str | None = "abcd1234") -> RunDir:
    """A run directory as rl train leaves it (config.yaml, overrides.txt, meta.json), without training."""
    overrides = ["experiment=quickstart", "reward.format.weight=0.2", *overrides]
    cfg = to_train_config(compose("train", overrides))
    run = RunDir.create(tmp_path / "runs", cfg.experiment_name, "wb")
    run.config_file.write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False))
    (run.path / "overrides.txt").write_text("".join(o + "\n" for o in overrides))
    run.write_meta(status="completed", wandb_run_id=run_id)
    return run


def _only(run: RunDir) -> dict:
    found = sorted(run.wandb_dir.glob("offline-run-*"))
    assert len(found) == 1, found
    return read_offline_run(found[0])


def _results():
    return [{"checkpoint": "final", "step": 3, "metrics": {"eval/accuracy": 0.5, "eval/accuracy/ci_low": 0.4,
                                                          "eval/accuracy/ci_high": 0.6, "eval/cost_of_pass": None}},
            {"checkpoint": "checkpoint-2", "step": 2, "metrics": {"eval/accuracy": 0.25}}]


def test_eval_results_reach_wandb_in_a_linked_run_at_the_checkpoint_steps(tmp_path):
    run = _run_dir(tmp_path)
    folder = log_eval(run, _results(), eval_settings={"n": 4, "k": [1, 4]})
    assert folder is not None and folder.parent == run.wandb_dir and folder.name.startswith("offline-run-")
    got = _only(run)
    config = yaml.safe_load(run.config_file.read_text())
    assert got["run"]["job_type"] == "eval"
    assert got["run"]["group"] == config_group_id(config)  # the training run's group
    assert got["run"]["name"] == f"quickstart/{run.path.name}/eval"
    assert got["config"]["train_run_id"] == "abcd1234" and got["config"]["rl_eval.n"] == 4
    assert got["config"]["reward.format.weight"] == 0.2 and got["config"]["run_dir"] == str(run.path.resolve())
    rows = [r for r in got["history"] if "eval/accuracy" in r]
    # in step order, on the training curves' x-axis; intervals too; None (JSON null) left out
    assert [(r["train/global_step"], r["eval/accuracy"]) for r in rows] == [(2, 0.25), (3, 0.5)]
    assert rows[1]["eval/accuracy/ci_low"] == 0.4 and "eval/cost_of_pass" not in rows[1]


@pytest.mark.parametrize("override,run_id", [("logger=none", None), ("logger.mode=disabled", "abcd1234")])
def test_eval_logs_nothing_when_the_run_has_no_wandb(tmp_path, override, run_id, monkeypatch):
    monkeypatch.delenv("WANDB_MODE", raising=False)
    run = _run_dir(tmp_path, override, run_id=run_id)
    assert log_eval(run, _results()) is None
    assert not run.wandb_dir.exists()


def test_training_run_config_group_name_and_tokens_per_s(tmp_path, monkeypatch):
    """rl train's W&B run (transformers' WandbCallback, as the workbench sets it up): the resolved workbench config
    flattened, the overrides and the run directory in its config; group = config without seed; job_type train;
    perf/tokens_per_s in its history (metrics.jsonl has it)."""
    from workbench import tracking
    from workbench.runs import load_run_config
    from workbench.tracking import read_config, wandb_config
    from workbench.callbacks import make_wandb_callback

    import os

    for k in [k for k in os.environ if k.startswith("WANDB_")]:
        monkeypatch.setenv(k, os.environ[k])  # restored after the test: training_env sets W&B's variables
    for k in ("WANDB_RUN_GROUP", "WANDB_JOB_TYPE", "WANDB_DIR", "WANDB_RUN_ID", "WANDB_PROJECT", "WANDB_TAGS",
              "WANDB_RESUME", "WANDB_LOG_MODEL", "WANDB_WATCH", "WANDB_ENTITY"):
        monkeypatch.setenv(k, "")
        monkeypatch.delenv(k)
    run = _run_dir(tmp_path, "seed=5")
    cfg = load_run_config(run)
    tracking.training_env(cfg, run, "abcd1234", resume=False)
    cb = make_wandb_callback(wandb_config(run, read_config(run)), rollouts_per_step=16)
    args = types.SimpleNamespace(to_dict=lambda: {"learning_rate": 5e-5}, run_name=f"quickstart/{run.path.name}",
                                 output_dir=str(run.path / "checkpoints"))
    state = types.SimpleNamespace(is_world_process_zero=True, trial_name=None, logging_steps=1, global_step=1)
    try:
        cb.on_log(args, state, None, model=None, logs={"reward": 0.5, "step_time": 2.0, "length/mean": 10.0})
    finally:
        tracking.finish(0)
    got = _only(run)
    config = yaml.safe_load(run.config_file.read_text())
    assert got["run"]["id"] == "abcd1234" and got["run"]["job_type"] == "train"
    assert got["run"]["group"] == config_group_id(config) == config_group_id({**config, "seed": 0})
    assert got["run"]["name"] == f"quickstart/{run.path.name}"
    c = got["config"]
    assert c["reward.format.weight"] == 0.2 and c["seed"] == 5 and c["algo.name"] == "grpo"
    assert c["overrides"] == ["experiment=quickstart", "reward.format.weight=0.2", "seed=5"]
    assert c["run_dir"] == str(run.path.resolve()) and c["learning_rate"] == 5e-5  # TRL's config is kept
    (row,) = [r for r in got["history"] if "train/reward" in r]
    assert row["perf/tokens_per_s"] == pytest.approx(10.0 * 16 / 2.0) and row["train/global_step"] == 1


def test_an_explicit_logger_group_wins(tmp_path):
    run = _run_dir(tmp_path, "logger.group=my-study")
    log_eval(run, _results())
    assert _only(run)["run"]["group"] == "my-study"
