"""End-to-end `rl train` on CPU with a tiny model: the run-directory contract, learning, W&B, resume after SIGKILL."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from workbench.runs import RunDir, read_jsonl

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parent.parent


def _rl(args, **kw):
    return subprocess.Popen([sys.executable, "-m", "cli.main", *args], cwd=ROOT, **kw)


def _only_run(runs: Path) -> RunDir:
    dirs = [p.parent for p in runs.rglob("config.yaml")]
    assert len(dirs) == 1, dirs
    return RunDir(dirs[0])


def test_train_writes_the_run_directory_contract(tiny_overrides, tmp_path):
    import torch
    from safetensors.torch import load_file

    from workbench.compose import compose
    from workbench.config import to_train_config
    from workbench.models import load_model_and_tokenizer
    from workbench.tasks import build_task
    from workbench.train import train

    overrides = ["experiment=quickstart", *tiny_overrides, "name=e2e/../x", "eval.every=2"]
    cfg = to_train_config(compose("train", overrides))
    initial, _, _ = load_model_and_tokenizer(cfg.model, build_task(cfg.task), progress=False)
    run = train(cfg, overrides, argv=["rl", "train", *overrides], progress=False)

    assert run.path.parent == tmp_path / "runs" / "quickstart"
    assert run.path.name.endswith("_e2e-..-x")
    for name in ("config.yaml", "overrides.txt", "meta.json", "metrics.jsonl", "samples.jsonl", "summary.json"):
        assert (run.path / name).is_file(), name
    assert (run.path / "overrides.txt").read_text().splitlines() == overrides
    meta = run.read_meta()
    assert meta["status"] == "completed" and meta["error"] is None
    assert meta["seed"] == cfg.seed and meta["wandb_run_id"]
    assert meta["packages"]["trl"] and "sha" in meta["git"]

    # one metrics row per logged step (logging_steps=1), with the documented names
    rows = read_jsonl(run.metrics_file)
    assert [r["step"] for r in rows] == [1, 2, 3]
    assert [("eval/accuracy" in r) for r in rows] == [False, True, False]  # eval.every=2
    for key in ("train/reward", "train/accuracy", "length/mean", "length/clip_ratio", "entropy/mean",
                "entropy/think", "cost/mean", "shaping/correctness/mean", "perf/step_time"):
        assert key in rows[-1], key
    samples = read_jsonl(run.samples_file)
    assert samples and {"step", "completion", "reward", "advantage", "rewards"} <= set(samples[0])
    assert set(samples[0]["rewards"]) == {"correctness", "format"}

    # checkpoints and a final model that plain transformers loads; parameters changed
    assert [p.name for p in run.checkpoints()] == ["checkpoint-2", "checkpoint-3"]
    from transformers import AutoModelForCausalLM, AutoTokenizer

    final = AutoModelForCausalLM.from_pretrained(run.final_dir)
    AutoTokenizer.from_pretrained(run.final_dir)
    changed = [
        n for n, p in initial.named_parameters() if not torch.equal(p.detach(), dict(final.named_parameters())[n].detach())
    ]
    assert changed, "training did not change any parameter"
    assert load_file(run.final_dir / "model.safetensors")
    # a plain generate() on final/ samples as the run did, with the KV cache (not transformers' max_length=20)
    gen = final.generation_config
    assert gen.max_new_tokens == cfg.algo.trl["max_completion_length"] and gen.do_sample and gen.use_cache
    assert gen.temperature == cfg.algo.trl.get("temperature", 1.0) and final.config.use_cache

    summary = json.loads(run.summary_file.read_text())
    assert summary["steps"] == 3 and summary["eval/accuracy_start"] is not None

    # the offline W&B run exists and holds the logged history
    wandb_runs = list((run.path / "wandb").glob("offline-run-*"))
    assert len(wandb_runs) == 1
    assert wandb_runs[0].name.endswith(meta["wandb_run_id"])
    data = (wandb_runs[0] / f"run-{meta['wandb_run_id']}.wandb").read_bytes()
    assert b"length/mean" in data and b"train/reward" in data
    # read back: the workbench config (flattened), overrides, run dir; grouped by the config without the seed
    import yaml

    from workbench.compare import config_group_id
    from workbench.tracking import read_offline_run

    wb = read_offline_run(wandb_runs[0])
    config = yaml.safe_load(run.config_file.read_text())
    assert wb["run"]["group"] == config_group_id(config) and wb["run"]["job_type"] == "train"
    assert wb["run"]["name"] == f"quickstart/{run.path.name}"
    assert wb["config"]["reward.correctness.weight"] == config["reward"]["correctness"]["weight"]
    assert wb["config"]["overrides"] == overrides and wb["config"]["run_dir"] == str(run.path.resolve())
    logged = [r for r in wb["history"] if "train/reward" in r]
    assert len(logged) == 3 and all(r["perf/tokens_per_s"] > 0 for r in logged)
    assert [r["train/global_step"] for r in logged] == [1, 2, 3]

    # rl eval --checkpoint all: a linked W&B run (job_type eval, same group) with one row per checkpoint at its step
    res = subprocess.run([sys.executable, "-m", "cli.main", "eval", str(run.path), "--checkpoint", "all", "eval.n=1",
                          "eval.num_problems=4", "-q"], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stdout + res.stderr
    (eval_run,) = [p for p in (run.path / "wandb").glob("offline-run-*") if p != wandb_runs[0]]
    ev = read_offline_run(eval_run)
    assert ev["run"]["job_type"] == "eval" and ev["run"]["group"] == wb["run"]["group"]
    assert ev["config"]["train_run_id"] == meta["wandb_run_id"]
    assert [r["train/global_step"] for r in ev["history"] if "eval/accuracy" in r] == [2, 3, 3]  # checkpoints, final


def test_resume_after_sigkill_continues_from_checkpoint(tiny_overrides, tmp_path):
    runs = tmp_path / "runs"
    args = ["train", "experiment=quickstart", *tiny_overrides, "algo.max_steps=6", "algo.save_steps=2",
            "logger=none", "--quiet"]
    proc = _rl(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 600
    run = None
    try:
        while time.time() < deadline:
            dirs = [p.parent for p in runs.rglob("config.yaml")] if runs.exists() else []
            if dirs:
                run = RunDir(dirs[0])
                if run.last_checkpoint() is not None and run.last_checkpoint().name in ("checkpoint-2", "checkpoint-4"):
                    break
            if proc.poll() is not None:
                pytest.fail("training ended before it could be killed")
            time.sleep(0.2)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait()
    assert run is not None
    killed_at = int(run.last_checkpoint().name.split("-")[1])
    assert run.read_meta()["status"] == "running"  # killed: nothing could mark it, and it is not complete
    assert not run.summary_file.exists()

    res = subprocess.run([sys.executable, "-m", "cli.main", "train", "--resume", str(run.path), "--quiet"], cwd=ROOT,
                         capture_output=True, text=True, timeout=900)
    assert res.returncode == 0, res.stderr[-2000:]
    meta = run.read_meta()
    assert meta["status"] == "completed"
    assert meta["resumes"][-1]["from_step"] == killed_at
    steps = [r["step"] for r in read_jsonl(run.metrics_file)]
    assert steps == list(range(1, 7)), steps  # nothing lost, nothing duplicated
    assert json.loads(run.summary_file.read_text())["steps"] == 6
    assert run.last_checkpoint().name == "checkpoint-6"


def test_crash_marks_run_failed(tiny_overrides, tmp_path):
    from workbench.compose import compose
    from workbench.config import to_train_config
    from workbench.train import train

    # a reward weight of NaN makes every reward NaN: TRL trains on garbage unless the run fails loudly
    overrides = ["experiment=quickstart", *tiny_overrides, "algo.max_steps=2", "eval.at_start=false"]  # W&B offline
    cfg = to_train_config(compose("train", overrides))
    from workbench.shaping.reward_task import Format

    original = Format.__call__
    try:
        Format.__call__ = lambda self, r: original(self, r) * float("nan")
        with pytest.raises(FloatingPointError, match="reward term 'format'"):
            train(cfg, overrides, argv=["rl"], progress=False)
    finally:
        Format.__call__ = original
    run = _only_run(tmp_path / "runs")
    meta = run.read_meta()
    assert meta["status"] == "failed" and "format" in meta["error"]
    assert not run.summary_file.exists()
    assert (run.path / "error.txt").read_text().startswith("Traceback")
    import wandb

    assert wandb.run is None  # the failed run's W&B run was closed
    assert list((run.path / "wandb").glob("offline-run-*"))


def test_two_process_run_with_group_terms(tiny_overrides, tmp_path):
    """torchrun with 2 CPU processes (gloo): one run directory, group-wise terms on the gathered batch."""
    runs = tmp_path / "runs"
    cmd = [str(Path(sys.executable).parent / "torchrun"), "--nproc_per_node", "2", "-m", "cli.main", "train",
           "experiment=length_shaping", *tiny_overrides, "logger=none", "--quiet", "advantage=[positive_length]",
           "algo.max_steps=2"]
    res = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert res.returncode == 0, res.stderr[-3000:]
    run = _only_run(runs)
    meta = run.read_meta()
    assert meta["status"] == "completed" and meta["num_processes"] == 2
    rows = read_jsonl(run.metrics_file)
    assert [r["step"] for r in rows] == [1, 2]
    assert all("shaping/length_kimi/mean" in r for r in rows)


def test_rloo_trains(tiny_overrides, tmp_path):
    """algo=rloo through the same trainer mixin (RLOO's _generate returns no tool mask)."""
    from workbench.compose import compose
    from workbench.config import to_train_config
    from workbench.train import train

    overrides = ["experiment=quickstart", *tiny_overrides, "algo=rloo", "logger=none", "algo.max_steps=2"]
    run = train(to_train_config(compose("train", overrides)), overrides, progress=False)
    assert run.read_meta()["status"] == "completed"
    assert [r["step"] for r in read_jsonl(run.metrics_file)] == [1, 2]
