"""End to end with real tool calls: `rl train experiment=agentic_cost` (tiny model warm-started on all three modes,
TRL's tool loop, mode_cost + cost_tokens) for a few steps, then `rl eval` on the run: calls are logged per rollout,
priced, and the eval reports cost of pass with tool cost, calls per problem and mode shares per difficulty."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import TINY
from workbench.runs import RunDir, read_jsonl

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parent.parent


def test_agentic_cost_trains_with_real_tools_then_evaluates(tmp_path):
    runs = tmp_path / "runs"
    overrides = [o for o in TINY if not o.startswith(("algo.max_completion_length", "algo.per_device"))]
    args = ["experiment=agentic_cost", *overrides, "algo.per_device_train_batch_size=16",
            "algo.max_completion_length=96", "model.tiny.warm_start_steps=300", f"runs_dir={runs}"]
    res = subprocess.run([sys.executable, "-m", "cli.main", "train", *args, "--quiet"], cwd=ROOT,
                         capture_output=True, text=True, timeout=1200)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    (cfg_file,) = runs.rglob("config.yaml")
    run = RunDir(cfg_file.parent)
    assert run.read_meta()["status"] == "completed"

    metrics = read_jsonl(run.metrics_file)
    assert all("modes/agentic" in m and "tools/calls_mean" in m and "cost/tool_mean" in m for m in metrics)
    rows = read_jsonl(run.samples_file)
    calls = [c for r in rows for c in r.get("tool_calls", [])]
    assert calls, "a model warm-started on agentic traces calls a tool within 3 steps x 16 rollouts"
    assert {c["name"] for c in calls} <= {"calculator", "expert"} and all(c["price"] > 0 for c in calls)
    with_call = next(r for r in rows if r.get("tool_calls"))
    assert "<call>" in with_call["completion"] and "<result>" in with_call["completion"]
    assert with_call["cost"] >= sum(c["price"] for c in with_call["tool_calls"])

    res = subprocess.run([sys.executable, "-m", "cli.main", "eval", str(run.path), "eval.n=2", "eval.num_problems=8",
                          "--quiet"], cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    (result,) = [p for p in run.path.rglob("metrics.json") if "eval" in str(p.relative_to(run.path))]
    m = json.loads(result.read_text())
    m = m.get("metrics", m)
    for key in ("eval/cost_of_pass", "eval/tools/calls_per_problem", "eval/modes/instant", "eval/by/easy/accuracy",
                "eval/by/hard/modes/agentic"):
        assert key in m, key
    assert m["eval/modes/instant"] + m["eval/modes/reasoning"] + m["eval/modes/agentic"] + m["eval/modes/none"] == \
        pytest.approx(1.0)
