"""End-to-end `rl eval` on a tiny run trained by `rl train` (slow: builds/loads the tiny model and trains 3 steps)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from workbench.runs import read_jsonl

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    from conftest import TINY
    from workbench.compose import compose
    from workbench.config import to_train_config
    from workbench.train import train

    overrides = ["experiment=quickstart", *TINY, "logger=none", f"runs_dir={tmp_path_factory.mktemp('runs')}"]
    cfg = to_train_config(compose("train", overrides))
    run = train(cfg, overrides, argv=["rl", "train", *overrides], progress=False)
    assert run.status == "completed"
    return run


def _rl_eval(*args):
    return subprocess.run([sys.executable, "-m", "cli.main", "eval", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=600)


def test_eval_of_a_trained_run(trained_run):
    from workbench.tasks import build_task
    from workbench.runs import load_run_config

    run = trained_run
    res = _rl_eval(str(run.path), "--checkpoint", "all", "eval.n=4", "eval.n_boot=200", "-q")
    assert res.returncode == 0, res.stdout + res.stderr
    labels = [p.name for p in run.checkpoints()] + ["final"]
    assert sorted(p.name for p in run.eval_dir.iterdir()) == sorted(labels)
    for label in labels:
        assert label in res.stdout

    cfg = load_run_config(run)
    task = build_task(cfg.task)
    examples = task.examples("eval")
    for label in labels:
        out = run.eval_dir / label
        assert sorted(p.name for p in out.iterdir()) == ["metrics.json", "samples.jsonl"]
        doc = json.loads((out / "metrics.json").read_text())
        rows = read_jsonl(out / "samples.jsonl")
        assert doc["checkpoint"] == label and doc["n"] == 4 and len(rows) == doc["num_problems"] * 4
        assert doc["num_problems"] == cfg.task.eval_size  # num_problems=null: the whole eval split
        # the evaluation's max_new_tokens is the run's max_completion_length
        assert doc["eval_config"]["generation"]["max_new_tokens"] == cfg.algo.trl["max_completion_length"]
        # the reported accuracy is the task scorer's verdict on the saved samples
        rescored = [task.score(r["completion"], examples[r["problem"]]) for r in rows]
        assert rescored == [r["score"] for r in rows]
        assert doc["metrics"]["eval/accuracy"] == pytest.approx(sum(rescored) / len(rescored))
        m = doc["metrics"]
        assert m["eval/accuracy/ci_low"] <= m["eval/accuracy"] <= m["eval/accuracy/ci_high"]
        assert 0 <= m["eval/pass@1"] <= m["eval/pass@2"] <= m["eval/pass@4"] <= 1
        assert m["eval/entropy/mean"] > 0 and m["eval/cost/mean"] > 0
        # the run's reward terms on the held-out samples: correctness's weighted mean is its weight x the accuracy
        assert set(cfg.reward) <= {k.split("/")[2] for k in m if k.startswith("eval/shaping/")}
        weight = cfg.reward["correctness"].get("weight", 1.0)
        assert m["eval/shaping/correctness/mean"] == pytest.approx(weight * m["eval/accuracy"], abs=1e-6)
    steps = [json.loads((run.eval_dir / c / "metrics.json").read_text())["step"] for c in labels]
    assert steps == sorted(steps) and steps[-1] == json.loads(run.summary_file.read_text())["steps"]

    # the same evaluation again is reused
    res = _rl_eval(str(run.path), "--checkpoint", "all", "eval.n=4", "eval.n_boot=200", "-q")
    assert res.returncode == 0 and res.stdout.count("*") >= len(labels), res.stdout


def test_eval_of_the_final_model_without_the_run(trained_run, tmp_path):
    runs = tmp_path / "runs"
    cfg_overrides = ["task.train_size=200", "task.eval_size=16"]  # the run's task (tests/conftest.py TINY)
    res = _rl_eval("model.kind=hf", f"model.name_or_path={trained_run.final_dir}", *cfg_overrides, "eval.n=2",
                   "eval.max_new_tokens=24", f"runs_dir={runs}", "-q")
    assert res.returncode == 0, res.stdout + res.stderr
    (base,) = (runs / "eval").iterdir()
    doc = json.loads((base / "eval" / "model" / "metrics.json").read_text())
    assert doc["run_dir"] is None and doc["num_problems"] == 16 and "eval/maj@2" in doc["metrics"]
