"""`eval/shaping/<term>/mean`: the run's reward terms on held-out rows, through the record and pipeline training
uses, agree with training's path on the same rollouts."""

from __future__ import annotations

import pytest
import torch

from workbench.config import PriceConfig
from workbench.evaluation.shaping import eval_rollouts, shaping_metrics
from workbench.rollouts import build_rollouts
from workbench.shaping.base import build_terms
from workbench.shaping.pipeline import ShapingPipeline
from workbench.signals import fill_signals, phase_masks

TERMS = {"correctness": {"weight": 1.0}, "length_kimi": {"weight": 0.5}, "pear": {"weight": 0.1},
         "cost_tokens": {"weight": 0.2}}


def _rows():
    # 2 problems x 2 samples; ids are the model's own tokens; think_tokens = the </think> boundary
    ids = [[4, 9, 9, 5, 7, 1], [4, 9, 5, 8, 1], [4, 9, 9, 9, 9, 9, 5, 7], [9, 9, 1]]
    ent = [[0.5, 1.0, 0.2, 0.1, 0.3, 0.0], [0.9, 0.4, 0.1, 0.2, 0.0], [1.0] * 8, [0.7, 0.6, 0.1]]
    boundary = [4, 3, 7, None]
    score = [1.0, 0.0, 1.0, 1.0]
    rows = []
    for i in range(4):
        rows.append({"problem": i // 2, "sample": i % 2, "id": f"p{i // 2}", "completion": f"text {i}",
                     "ids": ids[i], "token_entropy": ent[i], "think_tokens": boundary[i], "score": score[i],
                     "correct": score[i] >= 1.0, "length": len(ids[i]), "prompt_tokens": 10 + i // 2,
                     "truncated": i == 2})
    return rows


class Ctx:
    def __init__(self, boundaries):
        self.task = None
        self.splitter = self
        self._b = iter(boundaries)

    def boundary(self, ids):
        return next(self._b)


def test_eval_shaping_matches_the_training_path():
    rows = _rows()
    price = PriceConfig()
    got = shaping_metrics(rows, build_terms("reward", TERMS), task=None, group_size=2, max_completion_length=8,
                          price=price)
    assert set(got) == {f"eval/shaping/{n}/mean" for n in TERMS}
    # training's path: the same facts through build_rollouts with entropies as a tensor, phase from a splitter
    ent = torch.zeros(4, 8)
    for i, r in enumerate(rows):
        ent[i, : len(r["token_entropy"])] = torch.tensor(r["token_entropy"])
    train = build_rollouts(completions=[r["completion"] for r in rows], completion_ids=[r["ids"] for r in rows],
                           prompt_lengths=[r["prompt_tokens"] for r in rows], scores=[r["score"] for r in rows],
                           eos_ids={1}, group_size=2, prompt_keys=[r["id"] for r in rows], max_completion_length=8,
                           entropies=ent)
    assert train.truncated.tolist() == [r["truncated"] for r in rows]  # the EOS rule gives the rows' flags
    fill_signals(train, {"phase"}, Ctx([r["think_tokens"] for r in rows]))
    want = ShapingPipeline(build_terms("reward", TERMS), [], []).rewards(train).metrics
    for name in TERMS:
        assert got[f"eval/shaping/{name}/mean"] == pytest.approx(want[f"shaping/{name}/mean"], abs=1e-7), name
    assert got["eval/shaping/correctness/mean"] == pytest.approx(0.75)


def test_eval_rollouts_phase_and_cost_from_rows():
    rows = _rows()
    r = eval_rollouts(rows, 2, 8, PriceConfig(prompt_per_million=1.0, completion_per_million=2.0))
    think, answer, closed = phase_masks([4, 3, 7, None], [6, 5, 8, 3], 8)
    assert torch.equal(r.think_mask, think) and torch.equal(r.answer_mask, answer)
    assert r.cost[0].item() == pytest.approx((10 * 1.0 + 6 * 2.0) * 1e-6)
    assert r.entropies[2].sum().item() == pytest.approx(8.0)


def test_rows_without_ids_give_no_shaping_metrics():
    rows = [{k: v for k, v in r.items() if k != "ids"} for r in _rows()]
    assert shaping_metrics(rows, build_terms("reward", TERMS), None, 2, 8, PriceConfig()) == {}
    no_entropy = [{**r, "token_entropy": None} for r in _rows()]
    assert shaping_metrics(no_entropy, build_terms("reward", TERMS), None, 2, 8, PriceConfig()) == {}
    only_length = shaping_metrics(no_entropy, build_terms("reward", {"length_kimi": {}}), None, 2, 8, PriceConfig())
    assert set(only_length) == {"eval/shaping/length_kimi/mean"}
