"""IGPO (card G2-16): the return-to-go / group-mean advantage against a transcription of the authors' function, the
gain placement on hand-made token ids, the probes, the pass on a tiny model, and (slow) a few steps of real training
on the agentic task through an adapter subclass that runs the pass (`workbench.info_gain.InfoGainMixin`).

Reference (transcribed below, pure torch, the print left out): GuoqingWang1/IGPO
``verl/trainer/ppo/core_algos.py::compute_grpo_outcome_advantage``.
"""

from __future__ import annotations

from collections import defaultdict
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from workbench.config import ConfigError, TinyModelConfig
from workbench.info_gain import (
    InfoGainMixin,
    Probe,
    answer_probabilities,
    mask_tensor,
    prior_lead_text,
    pseudo_answer_ids,
    rollout_probes,
    wants_info_gain,
)
from workbench.rollouts import Rollouts
from workbench.shaping import build_terms
from workbench.shaping.advantage import turn_spans
from workbench.shaping.advantage_info_gain import IGPOInfoGain, return_to_go_advantages, turn_rewards


# ----------------------------------------------------------------------------------------------- the authors' advantage


def igpo_reference(token_level_rewards, response_mask, index, epsilon=1e-6):
    """GuoqingWang1/IGPO core_algos.py::compute_grpo_outcome_advantage, transcribed."""
    bsz, seq_len = token_level_rewards.shape
    gamma = 1.0
    discounted_returns = torch.zeros_like(token_level_rewards)
    next_return = torch.zeros(bsz)
    for t in reversed(range(seq_len)):
        current_reward = token_level_rewards[:, t]
        current_mask = response_mask[:, t]
        current_return = current_reward + gamma * next_return
        discounted_returns[:, t] = current_return
        next_return = current_return * current_mask
    id2returns = defaultdict(list)
    id2mean = {}
    id2std = {}
    with torch.no_grad():
        for i in range(bsz):
            id2returns[index[i]].append(discounted_returns[i])
        for idx, group_returns_list in id2returns.items():
            group_returns_tensor = torch.stack(group_returns_list, dim=0)
            if group_returns_tensor.shape[0] <= 1:
                id2mean[idx] = group_returns_tensor.mean(dim=0)
                id2std[idx] = torch.ones(seq_len)
            else:
                id2mean[idx] = group_returns_tensor.mean(dim=0)
                id2std[idx] = group_returns_tensor.std(dim=0)
    advantages = torch.zeros_like(discounted_returns)
    for i in range(bsz):
        advantages[i] = discounted_returns[i] - id2mean[index[i]]
    advantages = advantages * response_mask
    return advantages, discounted_returns * response_mask


def sparse_rewards(lengths, seed):
    """Hand-made dense rewards: a gain on a few positions inside each completion and an outcome on its last."""
    g = torch.Generator().manual_seed(seed)
    T = max(lengths)
    r = torch.zeros(len(lengths), T, dtype=torch.float64)
    mask = torch.zeros(len(lengths), T, dtype=torch.float64)
    for i, n in enumerate(lengths):
        mask[i, :n] = 1
        for pos in torch.randperm(max(1, n - 1), generator=g)[:2].tolist():
            r[i, pos] = float(torch.rand(1, generator=g) * 2 - 1)
        r[i, n - 1] = float(torch.randint(0, 2, (1,), generator=g))
    return r, mask


@pytest.mark.parametrize("G,lengths", [(3, [5, 9, 2, 7, 7, 1]), (2, [4, 4]), (1, [3, 6]), (4, [8, 1, 3, 8])])
def test_return_to_go_advantage_matches_the_authors(G, lengths):
    r, mask = sparse_rewards(lengths, seed=len(lengths) + G)
    expected, _ = igpo_reference(r, mask, np.array([i // G for i in range(len(lengths))]))
    got = return_to_go_advantages(r, mask, G)
    assert (got - expected).abs().max() < 1e-12
    assert got.abs().sum() > 0 or G == 1  # not trivially zero (G = 1: each rollout is its own baseline)


# ----------------------------------------------------------------------------------------------- turns and placement


@pytest.fixture(scope="module")
def tok():
    from workbench.models.tiny import build_tokenizer

    return build_tokenizer("", tools=True)


def agentic_completion(tok, answer="29842", calls=2):
    """A completion as TRL's tool loop lays it out: model turns (mask 1) through EOS, tool results (mask 0), and the
    final answer turn; built from the tiny tool chat template's own rendering."""
    ids, mask = [], []
    for k in range(calls):
        turn = tok.encode(f"[agentic]<call>calculator expression=347*8{k}</call>", add_special_tokens=False)
        turn += [tok.eos_token_id]
        result = tok.encode(f"<result>{answer}</result>\n", add_special_tokens=False)
        ids += turn + result
        mask += [1] * len(turn) + [0] * len(result)
    final = tok.encode(answer, add_special_tokens=False) + [tok.eos_token_id]
    return ids + final, mask + [1] * len(final)


def test_turn_spans_and_gain_placement_on_token_ids(tok):
    ids, mask = agentic_completion(tok, calls=2)
    instant = tok.encode("[instant]7", add_special_tokens=False) + [tok.eos_token_id]
    m = mask_tensor([mask, [1] * len(instant), []])
    spans = turn_spans(m)
    assert len(spans[0]) == 3 and spans[1] == [(0, len(instant))] and spans[2] == []
    for start, end in spans[0]:  # every turn ends on the model's EOS; the token before a turn is a tool result's
        assert ids[end - 1] == tok.eos_token_id and all(mask[start:end])
        assert start == 0 or mask[start - 1] == 0
    r = turn_rewards(spans, [[0.1, 0.4, 0.9], [], []], torch.tensor([1.0, 0.0, 1.0]), m.size(1))
    ends = [end - 1 for _, end in spans[0]]
    expected = torch.zeros_like(r[0])
    expected[ends[0]], expected[ends[1]], expected[ends[2]] = 0.4 - 0.1, 0.9 - 0.4, 1.0
    assert torch.allclose(r[0], expected) and r[1].abs().sum() == 0 and r[2].abs().sum() == 0
    assert (r[0] * (1 - m[0].double())).abs().sum() == 0  # nothing on tool-result tokens


def test_probes_prior_uses_no_turn(tok):
    ids, mask = agentic_completion(tok, calls=1)
    prompt = tok.encode("347*86=\n", add_special_tokens=False)
    spans = turn_spans(mask_tensor([mask, [1, 1]]))
    answer = pseudo_answer_ids(tok, "29842", "")
    prior = tok.encode("[instant]", add_special_tokens=False)
    probes = rollout_probes([prompt, prompt], [ids, [5, 1]], spans, [answer, answer], prior)
    assert [(p.row, p.turn) for p in probes] == [(0, 0), (0, 1)]  # the one-turn rollout is not probed
    assert probes[0].context == prompt + prior and probes[0].answer == tok.encode("29842", add_special_tokens=False)
    start = spans[0][1][0]
    assert probes[1].context == prompt + ids[:start]  # the tool result is in, the final turn is not
    assert tok.decode(probes[1].context).endswith("</result>\n")


def test_prior_lead_comes_from_the_task_modes():
    assert prior_lead_text(SimpleNamespace(modes=("instant", "reasoning", "agentic")), None) == "[instant]"
    assert prior_lead_text(SimpleNamespace(modes=()), None) is None
    assert prior_lead_text(SimpleNamespace(modes=("instant",)), "") == ""


# ----------------------------------------------------------------------------------------------- the term


def agentic_rollouts(tok, probs=None):
    """Two groups of 2: (3-turn, 1-turn) and (2-turn, 2-turn), with their correctness."""
    rows = [agentic_completion(tok, calls=2), ([7, 8, 1], [1, 1, 1]), agentic_completion(tok, calls=1),
            agentic_completion(tok, "1", calls=1)]
    ids = [r[0] for r in rows]
    B = len(rows)
    r = Rollouts(
        completions=["x"] * B, completion_ids=ids, lengths=torch.tensor([sum(m) for _, m in rows]),
        prompt_lengths=torch.full((B,), 8), truncated=torch.zeros(B, dtype=torch.bool),
        correct=torch.tensor([1.0, 0.0, 1.0, 0.0]), group_size=2, prompt_keys=[0, 0, 1, 1],
        max_completion_length=96, mask=mask_tensor([m for _, m in rows]),
    )
    if probs is not None:
        r.turn_probs = probs
    return r


PROBS = [[0.2, 0.5, 0.95], [], [0.3, 0.9], [0.3, 0.1]]


def test_term_is_the_authors_advantage_of_the_placed_rewards(tok):
    r = agentic_rollouts(tok, PROBS)
    rewards = torch.tensor([1.0, 0.0, 1.0, 0.0])
    (term,) = build_terms("advantage", {"igpo_info_gain": {}})
    out = term(torch.zeros(4), r, rewards)
    spans = turn_spans(r.mask)
    placed = turn_rewards(spans, PROBS, rewards, r.mask.size(1))
    valid = mask_tensor([[1] * len(c) for c in r.completion_ids]).double()
    expected, returns = igpo_reference(placed, valid, np.array([0, 0, 1, 1]))
    assert out.shape == r.mask.shape and (out.double() - expected).abs().max() < 1e-6
    # the first turn of rollout 0 carries everything after it: (p_2 - p_0) + outcome
    assert returns[0, 0] == pytest.approx(0.95 - 0.2 + 1.0)
    m = term.metrics()
    assert m["passes"] == 7 and m["probed_frac"] == 0.75 and m["prior_mean"] == pytest.approx((0.2 + 0.3 + 0.3) / 3)
    assert m["gain_mean"] == pytest.approx((0.3 + 0.45 + 0.6 - 0.2) / 4)
    # outcome=correct reads the task's correctness, not the shaped reward
    (by_correct,) = build_terms("advantage", {"igpo_info_gain": {"outcome": "correct"}})
    assert torch.allclose(by_correct(torch.zeros(4), r, torch.full((4,), 5.0)), out)


def test_term_needs_the_pass_on_multi_turn_rollouts(tok):
    (term,) = build_terms("advantage", {"igpo_info_gain": {}})
    with pytest.raises(ValueError, match="turn_probs"):
        term(torch.zeros(4), agentic_rollouts(tok), torch.zeros(4))
    with pytest.raises(ValueError, match="3 turns but 2"):
        term(torch.zeros(4), agentic_rollouts(tok, [[0.1, 0.2], [], [0.3, 0.9], [0.3, 0.1]]), torch.zeros(4))
    with pytest.raises(ConfigError, match="outcome"):
        build_terms("advantage", {"igpo_info_gain": {"outcome": "f1"}})
    assert wants_info_gain([term]) and not wants_info_gain([object()])


# ----------------------------------------------------------------------------------------------- the pass


@pytest.fixture(scope="module")
def tiny_model(tok):
    from workbench.models.tiny import build_model

    torch.manual_seed(0)
    return build_model(TinyModelConfig(hidden_size=32, num_layers=1, num_heads=2, num_kv_heads=1,
                                       intermediate_size=64), tok).eval()


def plain_logps(model):
    def logps(ids, att, keep):
        logits = model(input_ids=ids, attention_mask=att).logits[:, -keep - 1 : -1].float()
        return torch.log_softmax(logits, -1).gather(-1, ids[:, -keep:, None]).squeeze(-1)

    return logps


def test_pass_gives_probabilities_equal_to_unbatched_forwards(tok, tiny_model):
    ids, mask = agentic_completion(tok, calls=2)
    prompts = [tok.encode("347*86=\n", add_special_tokens=False), tok.encode("5+2=\n", add_special_tokens=False)]
    completions = [ids, agentic_completion(tok, "7", calls=1)[0]]
    masks = [mask, agentic_completion(tok, "7", calls=1)[1]]
    answers = [pseudo_answer_ids(tok, "29842", ""), pseudo_answer_ids(tok, "7", "")]
    probes = rollout_probes(prompts, completions, turn_spans(mask_tensor(masks)), answers,
                            tok.encode("[instant]", add_special_tokens=False))
    probs, batch = answer_probabilities(plain_logps(tiny_model), probes, 2, tok.pad_token_id)
    assert [len(p) for p in probs] == [3, 2] and all(0.0 < x <= 1.0 for p in probs for x in p)
    assert batch.tokens == sum(len(p.context) + len(p.answer) for p in probes)
    for probe in probes:  # each probe alone, no padding: exp(mean log-prob of the answer tokens)
        seq = torch.tensor([probe.context + probe.answer])
        with torch.no_grad():
            logits = tiny_model(input_ids=seq).logits[0].float()
        logp = torch.log_softmax(logits[len(probe.context) - 1 : -1], -1)
        alone = logp.gather(-1, torch.tensor(probe.answer)[:, None]).mean().exp()
        assert probs[probe.row][probe.turn] == pytest.approx(float(alone), rel=1e-5)


class FakeTrainer(InfoGainMixin):
    """What the mixin reads of TRL's trainer; the log-prob function is a plain forward (the real one runs in the
    slow test below)."""

    def __init__(self, model, tok, term):
        self.model, self.processing_class = model, tok
        self.accelerator = SimpleNamespace(device=torch.device("cpu"))
        self.args = SimpleNamespace(per_device_train_batch_size=2)
        self.shaping = SimpleNamespace(terms=[term])
        self.task = SimpleNamespace(modes=("instant", "reasoning", "agentic"))

    def _get_per_token_logps_and_entropies(self, model, ids, att, keep, batch_size=None, compute_entropy=False):
        return plain_logps(model)(ids, att, keep), None, None


def test_mixin_probes_each_turn_with_the_task_prior(tok, tiny_model):
    (term,) = build_terms("advantage", {"igpo_info_gain": {}})
    ids, mask = agentic_completion(tok, calls=1)
    prompt = tok.encode("347*86=\n", add_special_tokens=False)
    probs = FakeTrainer(tiny_model, tok, term).info_gain_probs([prompt, prompt], [ids, [7, 1]], [mask, [1, 1]],
                                                                ["29842", "29842"])
    assert len(probs[0]) == 2 and probs[1] == []
    prior = Probe(0, 0, prompt + tok.encode("[instant]", add_special_tokens=False),
                  tok.encode("29842", add_special_tokens=False))
    (expected,), _ = answer_probabilities(plain_logps(tiny_model), [prior], 1, tok.pad_token_id)
    assert probs[0][0] == pytest.approx(expected[0], rel=1e-5)


# ----------------------------------------------------------------------------------------------- real training


@pytest.mark.slow
def test_igpo_trains_on_the_agentic_task(tiny_overrides):
    from workbench.compose import compose
    from workbench.config import to_train_config
    from workbench.runs import read_jsonl
    from workbench.train import train

    overrides = ["experiment=agentic_plain", *tiny_overrides, "advantage=[igpo_info_gain]",
                 "algo.per_device_train_batch_size=16", "algo.max_completion_length=96",
                 "model.tiny.warm_start_steps=300", "logger=none", "algo.max_steps=3", "eval.at_start=false",
                 "eval.at_end=false"]
    cfg = to_train_config(compose("train", overrides))
    run = train(cfg, overrides, argv=["test"], progress=False)
    assert run.read_meta()["status"] == "completed"
    rows = [m for m in read_jsonl(run.metrics_file) if "shaping/igpo_info_gain/passes" in m]
    assert len(rows) == 3
    assert sum(m["shaping/igpo_info_gain/passes"] for m in rows) > 0, "the warm-started model calls a tool in 3 steps"
    probed = [m for m in rows if m["shaping/igpo_info_gain/probed_frac"] > 0]
    assert all(0.0 < m["shaping/igpo_info_gain/prior_mean"] <= 1.0 for m in probed)
    # the per-token advantages reached TRL's batch: samples.jsonl records each rollout's first-token advantage
    samples = read_jsonl(run.samples_file)
    assert samples and any(abs(s["advantage"]) > 0 for s in samples)


def test_igpo_is_refused_on_a_task_without_tools():
    from workbench.checks import check_train
    from workbench.compose import compose
    from workbench.config import to_train_config

    cfg = to_train_config(compose("train", ["experiment=quickstart", "advantage=[igpo_info_gain]"]))
    with pytest.raises(ConfigError, match=r"advantage=igpo_info_gain acts per agent turn .*task\.tools"):
        check_train(cfg, with_task=False, new_run=False)
    tools = to_train_config(compose("train", ["experiment=agentic_plain", "advantage=[igpo_info_gain]"]))
    check_train(tools, with_task=False, new_run=False)  # the agentic task has tools: accepted
