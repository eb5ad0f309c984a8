"""The sampling extension point inside a real (tiny, 1-step) ShapedGRPOTrainer: the plan reaches TRL's generation,
a forced completion prefix is what the completion starts with, AEPO's second generation is spliced into the batch
and trains, and sampler state goes into checkpoints."""

import dataclasses
import json
from typing import ClassVar

import pytest
import torch

from workbench.sampling import COMPLETION_PREFIX, AEPO, Sampler
from workbench.shaping import build_terms


def tiny_trainer(tmp_path, samplers, steps=1, save=False):
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
    rows = [{"prompt": ex["prompt"], "answer": ex["answer"], "id": i} for i, ex in enumerate(task.examples("train")[:4])]
    args = GRPOConfig(output_dir=str(tmp_path / "out"), use_cpu=True, bf16=False, per_device_train_batch_size=4,
                      gradient_accumulation_steps=2, num_generations=2, max_completion_length=12, report_to=[],
                      max_steps=steps, logging_steps=1, save_strategy="steps" if save else "no", save_steps=1,
                      beta=0.0, temperature=0.7, seed=0)
    trainer = ShapedGRPOTrainer(model=model, args=args, train_dataset=Dataset.from_list(rows), processing_class=tok)
    trainer.setup_shaping(task=task, reward_terms=build_terms("reward", {"correctness": {"weight": 1.0}}),
                          advantage_terms=[], regularizers=[], run=None)
    trainer.setup_sampling(samplers)
    return trainer


@dataclasses.dataclass
class ForcePrefix(Sampler):
    """Test sampler: every prompt's first rollout forced to start with `prefix`; records what it saw."""

    name: ClassVar[str] = "force_prefix_test"
    prefix: str = "7+"

    def __post_init__(self):
        self.planned, self.seen = [], []

    def plan(self, rows, group_size, step, rng):
        out = [{**r, COMPLETION_PREFIX: self.prefix if i % group_size == 0 else None} for i, r in enumerate(rows)]
        self.planned.append(out)
        return out

    def observe(self, rollouts, rows):
        self.seen.append((list(rollouts.completions), [r[COMPLETION_PREFIX] for r in rows]))

    def metrics(self):
        return {"observed": float(len(self.seen))}

    def state_dict(self):
        return {"observed": len(self.seen)}


def test_forced_prefix_starts_the_completion_and_state_is_checkpointed(tmp_path):
    s = ForcePrefix()
    trainer = tiny_trainer(tmp_path, [s], save=True)
    trainer.train()
    (completions, prefixes), = s.seen
    assert len(completions) == 8 and prefixes == ["7+", None] * 4
    forced = [c for c, p in zip(completions, prefixes) if p]
    assert all(c.startswith("7+") for c in forced), forced
    free = [c for c, p in zip(completions, prefixes) if not p]
    assert not all(c.startswith("7+") for c in free)  # only the forced rows (an untrained model rarely says "7+")
    assert trainer.state.log_history[0]["sampler/force_prefix_test/observed"] == 1.0
    state = json.loads((tmp_path / "out" / "checkpoint-1" / "sampling_state.json").read_text())
    assert state == {"force_prefix_test": {"observed": 1}}


def test_aepo_second_generation_is_spliced_and_trains(tmp_path):
    s = AEPO(sample_num=8, threshold=-10.0)  # every second-generation row counts as positive
    trainer = tiny_trainer(tmp_path, [s])
    batches = []
    original = type(trainer)._second_generation

    def spy(self, inputs, out):
        result = original(self, inputs, out)
        batches.append(result)
        return result

    type(trainer)._second_generation = spy
    try:
        trainer.train()
    finally:
        type(trainer)._second_generation = original
    (batch,) = batches
    logged = trainer.state.log_history[0]
    # entropy 0 before the first step: T_high, and min(8, 8 positives) rows replaced
    assert logged["sampler/aepo/temperature"] == 1.2 and logged["sampler/aepo/replaced"] == 8.0
    assert batch["advantages"].tolist() == [1.0] * 8
    assert int(batch["num_items_in_batch"]) == int(batch["completion_mask"].sum())
    assert torch.isfinite(torch.tensor(logged["loss"]))


def test_aepo_refuses_loss_regularizers(tmp_path):
    from workbench.config import ConfigError
    from workbench.trainers import ShapedGRPOTrainer

    trainer = tiny_trainer(tmp_path, [])
    trainer.shaping.regularizers = [object()]
    with pytest.raises(ConfigError, match="no loss regularizers"):
        ShapedGRPOTrainer.setup_sampling(trainer, [AEPO()])
