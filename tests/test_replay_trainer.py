"""SPEAR's replay buffer inside a real (tiny, 1-step) ShapedGRPOTrainer: stored rows are the rows of the batch TRL
trains on, over the zero-advantage rows, with their re-scored and scheduled advantages; the buffer is checkpointed;
what cannot be spliced is refused."""

from __future__ import annotations

import json

import pytest
import torch
from test_sampling_trainer import tiny_trainer

from workbench.config import ConfigError
from workbench.sampling_replay import SpearReplay


def _stored(n):
    return [{"prompt_ids": [3, 4 + i, 5], "completion_ids": [6 + i, 7, 8, 1], "tool_mask": None, "reward": 2.0}
            for i in range(n)]


def test_stored_rows_are_spliced_into_the_trained_batch(tmp_path):
    s = SpearReplay(buffer_size=4, coef=0.5, ramp_steps=0, tool_calls_only=False)
    # 7 stored rows with reward 2 over a baseline of 0: size 7 > 1.5 x 4, so step 1 draws 4 of them, A = 2 x 0.5
    s.load_state_dict({"entries": [{"step": 0, "rows": _stored(7)}],
                       "history": [{"step": 0, "means": [0.0, 0.0], "stds": [0.0, 0.0]}]})
    trainer = tiny_trainer(tmp_path, [s], save=True)
    batches = []
    original = type(trainer).replay_step

    def spy(self, out, scored):
        before = {k: v.clone() if isinstance(v, torch.Tensor) else v for k, v in out.items()}
        result = original(self, out, scored)
        batches.append((before, result))
        return result

    type(trainer).replay_step = spy
    try:
        trainer.train()
    finally:
        type(trainer).replay_step = original
    ((before, batch),) = batches
    zero_before = int((before["advantages"] == 0).sum())
    m = min(4, zero_before)
    assert m > 0, "the untrained tiny model should leave all-wrong (zero-advantage) groups"
    logged = trainer.state.log_history[0]
    assert logged["sampler/spear_replay/drawn"] == 4.0 and logged["sampler/spear_replay/replayed"] == float(m)
    stored = {tuple(r["completion_ids"]): r for r in _stored(7)}
    got = []
    for i in range(batch["completion_ids"].size(0)):
        n = int(batch["completion_mask"][i].sum())
        c = tuple(batch["completion_ids"][i, :n].tolist())
        if c in stored:
            p = batch["prompt_ids"][i][batch["prompt_mask"][i].bool()].tolist()
            assert p == stored[c]["prompt_ids"]
            assert float(batch["advantages"][i]) == pytest.approx(1.0)
            got.append(c)
    assert len(got) == m == len(set(got))
    # the rows with nonzero advantage are all still there; the batch keeps its size; the token count is recomputed
    assert int((batch["advantages"] != 0).sum()) == int((before["advantages"] != 0).sum()) + m
    assert batch["completion_ids"].size(0) == before["completion_ids"].size(0)
    assert int(batch["num_items_in_batch"]) == int(batch["completion_mask"].sum())
    assert torch.isfinite(torch.tensor(logged["loss"]))
    state = json.loads((tmp_path / "out" / "checkpoint-1" / "sampling_state.json").read_text())
    assert [h["step"] for h in state["spear_replay"]["history"]] == [0, 1]  # the draw emptied the stored entries


def test_replay_refuses_what_it_cannot_splice(tmp_path):
    from workbench.trainers import ShapedGRPOTrainer

    trainer = tiny_trainer(tmp_path, [])
    trainer.beta = 0.04
    trainer.shaping.regularizers = [object()]
    with pytest.raises(ConfigError, match=r"algo.beta=0 .*no loss regularizers"):
        ShapedGRPOTrainer.setup_sampling(trainer, [SpearReplay(tool_calls_only=False)])
