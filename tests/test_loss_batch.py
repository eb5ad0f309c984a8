"""The loss-side batch object: a regularizer that needs an optional field gets it filled from TRL's own training
pass, and SIREN runs on its real top-p entropy."""

from __future__ import annotations

import importlib.util
import sys
import textwrap

import pytest
import torch

from workbench.shaping.base import REGISTRY, build_terms
from workbench.shaping.loss_batch import OPTIONAL_FIELDS, LossBatch
from workbench.shaping.pipeline import ShapingPipeline
from workbench.shaping.regularizer_entropy import SIREN, peak_entropy_mask, selective_entropy, top_p_entropy

PLUGIN = '''
import torch
from workbench.shaping.base import Regularizer, register

SEEN = []

@register
class LogitsProbe(Regularizer):
    """Needs the logits; records what it saw and adds a zero loss that still depends on them."""
    name = "logits_probe_test"
    fields = frozenset({"logits"})

    def loss(self, batch):
        logits = batch.require("logits", "regularizer.logits_probe_test")
        logp = torch.log_softmax(logits, dim=-1)
        sampled = logp.gather(-1, batch.completion_ids.unsqueeze(-1)).squeeze(-1)
        entropy = -(logp.exp() * logp).sum(-1)
        SEEN.append({"sampled": sampled.detach(), "logps": batch.logps.detach(), "mask": batch.mask,
                     "entropy": entropy.detach(), "entropies": batch.entropies.detach(),
                     "index": batch.rollout_index.clone(), "groups": batch.group_ids.clone(),
                     "correct": batch.correct.clone(), "requires_grad": logits.requires_grad})
        return 0.0 * logits.sum()
'''


def _load_plugin(tmp_path):
    path = tmp_path / "probe_plugin.py"
    path.write_text(PLUGIN)
    spec = importlib.util.spec_from_file_location("probe_plugin", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules["probe_plugin"] = module
    spec.loader.exec_module(module)
    return module


def _tiny_trainer(tmp_path, regularizers, steps=1):
    from datasets import Dataset
    from transformers import GenerationConfig
    from trl import GRPOConfig

    from workbench.config import TaskConfig, TinyModelConfig
    from workbench.models.tiny import build_model, build_tokenizer
    from workbench.tasks import build_task
    from workbench.trainers import ShapedGRPOTrainer

    task = build_task(TaskConfig(name="arithmetic", train_size=8, eval_size=0))
    tok = build_tokenizer("")
    torch.manual_seed(0)
    model = build_model(TinyModelConfig(hidden_size=32, num_layers=1, num_heads=2, num_kv_heads=1,
                                        intermediate_size=64), tok)
    model.generation_config = GenerationConfig(pad_token_id=0, eos_token_id=1, bos_token_id=2)
    rows = [{"prompt": ex["prompt"], "answer": ex["answer"], "id": ex.get("id", i)}
            for i, ex in enumerate(task.examples("train")[:4])]
    # 4 prompts x G=2 = 8 rollouts per generation, trained in 2 micro-batches of 4 (TRL shuffles them)
    args = GRPOConfig(output_dir=str(tmp_path / "out"), use_cpu=True, bf16=False, per_device_train_batch_size=4,
                      gradient_accumulation_steps=2, num_generations=2, max_completion_length=12, report_to=[],
                      max_steps=steps, logging_steps=1, save_strategy="no", beta=0.0, temperature=0.7, seed=0)
    trainer = ShapedGRPOTrainer(model=model, args=args, train_dataset=Dataset.from_list(rows), processing_class=tok)
    trainer.setup_shaping(task=task, reward_terms=build_terms("reward", {"correctness": {"weight": 1.0}}),
                          advantage_terms=[], regularizers=regularizers, run=None)
    return trainer


def test_a_plugin_regularizer_gets_the_logits_of_trls_own_pass(tmp_path):
    plugin = _load_plugin(tmp_path)
    try:
        assert REGISTRY["regularizer"]["logits_probe_test"] is plugin.LogitsProbe
        (term,) = build_terms("regularizer", {"logits_probe_test": {}})
        trainer = _tiny_trainer(tmp_path, [term])
        trainer.train()
    finally:
        REGISTRY["regularizer"].pop("logits_probe_test", None)
        sys.modules.pop("probe_plugin", None)
    seen = plugin.SEEN
    assert len(seen) == 2  # one loss call per micro-batch
    for s in seen:
        m = s["mask"].bool()
        assert m.any() and s["requires_grad"]
        # the logits are those TRL's fused head scored: same log-probs of the sampled tokens, same entropies
        assert torch.allclose(s["sampled"][m], s["logps"][m], atol=1e-5)
        assert torch.allclose(s["entropy"][m], s["entropies"][m], atol=1e-4)
    # the group layout survives TRL's shuffle: every rollout of the generation batch once, groups of G = 2
    index = torch.cat([s["index"] for s in seen])
    assert sorted(index.tolist()) == list(range(8))
    assert torch.equal(torch.cat([s["groups"] for s in seen]), index // 2)
    assert set(torch.cat([s["correct"] for s in seen]).tolist()) <= {0.0, 1.0}


def test_siren_top_p_entropy_in_training(tmp_path):
    term = SIREN(coef=0.005)
    assert term.top_p == 0.8 and term.fields == {"logits"}
    trainer = _tiny_trainer(tmp_path, [term])
    trainer.train()
    logged = trainer.state.log_history[0]
    assert logged["shaping/siren/selected_tokens"] > 0 and logged["shaping/siren/anchor"] > 0
    # the anchor is a top-p entropy: below the full-vocabulary entropy TRL logs for the same tokens
    assert term.anchor < logged["entropy"] * 2


def test_siren_top_p_on_hand_made_logits():
    torch.manual_seed(0)
    logits = torch.randn(3, 5, 11, requires_grad=True)
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0], [1, 1, 1, 1, 0]]).float()
    term = SIREN(coef=1.0, quantile=0.8, top_p=0.8, top_k=10000)
    term.load_state_dict({"anchor": 0.3})
    loss = term.loss(LossBatch.of(None, None, None, mask, None, logits=logits))
    Hp = top_p_entropy(logits, p=0.8, k=10000)
    want = (selective_entropy(Hp, peak_entropy_mask(Hp, mask, 0.8)) - 0.3) ** 2
    assert loss.item() == pytest.approx(want.item())
    # and not the full-vocabulary quantity SIREN used before it had the logits
    logp = torch.log_softmax(logits, -1)
    H = -(logp.exp() * logp).sum(-1)
    full = SIREN(coef=1.0, quantile=0.8, top_p=1.0)
    full.load_state_dict({"anchor": 0.3})
    assert full.loss(LossBatch.of(None, None, None, mask, H)).item() != pytest.approx(loss.item())
    loss.backward()
    assert logits.grad.abs().sum() > 0


def test_siren_without_the_logits_names_the_field():
    with pytest.raises(ValueError, match="regularizer.siren needs the loss batch's 'logits'"):
        SIREN().loss(LossBatch.of(None, None, None, torch.ones(1, 2), torch.ones(1, 2)))


def test_unknown_fields_and_reserved_names_are_refused():
    from workbench.shaping.base import Regularizer, RewardTerm, register

    class Bad(Regularizer):
        name = "bad_fields_test"
        fields = frozenset({"hidden_states"})

    with pytest.raises(ValueError, match="unknown loss-batch fields"):
        register(Bad)

    class Total(RewardTerm):
        name = "total"

    with pytest.raises(ValueError, match="reserved"):
        register(Total)
    assert set(OPTIONAL_FIELDS) == {"logits", "ref_logps", "group_accuracy"}


def test_pipeline_owns_the_one_weighted_sum():
    from workbench.rollouts import build_rollouts

    r = build_rollouts(completions=["1", "2", "3", "4"], completion_ids=[[7], [8, 1], [9], [10, 1]],
                       prompt_lengths=[3, 3, 4, 4], scores=[1.0, 0.0, 1.0, 1.0], eos_ids={1}, group_size=2,
                       prompt_keys=[0, 0, 1, 1], max_completion_length=4)
    terms = build_terms("reward", {"correctness": {"weight": 2.0}, "length_penalty": {"weight": 0.5}}) \
        if "length_penalty" in REGISTRY["reward"] else build_terms("reward", {"correctness": {"weight": 2.0}})
    pipe = ShapingPipeline(terms, [], [])
    out = pipe.rewards(r)
    want = sum(t.weight * out.raw[t.name] for t in terms)
    assert torch.allclose(out.total, want)
    assert out.metrics["shaping/correctness/mean"] == pytest.approx(2.0 * 0.75)
    assert out.metrics["rewards/correctness/mean"] == pytest.approx(0.75)
    assert pipe.weights["correctness"] == 2.0
    assert r.truncated.tolist() == [True, False, True, False] and r.lengths.tolist() == [1, 2, 1, 2]
