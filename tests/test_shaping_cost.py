"""Cost terms on hand-computed values: token $, Router-R1 percentile reward (with window state), SPEAR tool calls."""

import dataclasses
import json
import math
from collections import deque

import numpy as np
import pytest
import torch

from workbench.rollouts import Rollouts
from workbench.shaping.reward_cost import CostRouter, CostTokens, ToolCalls, token_cost
from workbench.signals import rollout_cost


def make_rollouts(lengths, correct, G=None, *, prompt_lengths=None, cost=None, tool_calls=None, texts=None, step=0):
    lengths = torch.tensor(lengths)
    B = len(lengths)
    return Rollouts(
        completions=texts if texts is not None else ["x"] * B,
        completion_ids=[[1] * int(n) for n in lengths],
        lengths=lengths,
        prompt_lengths=torch.tensor(prompt_lengths if prompt_lengths is not None else [10] * B),
        truncated=torch.zeros(B, dtype=torch.bool),
        correct=torch.tensor(correct, dtype=torch.float32),
        group_size=G or B,
        prompt_keys=[0] * B,
        max_completion_length=100,
        step=step,
        cost=None if cost is None else torch.tensor(cost, dtype=torch.float64),
        tool_calls=None if tool_calls is None else torch.tensor(tool_calls, dtype=torch.float32),
    )


def test_token_cost_prices_per_million():
    c = token_cost(torch.tensor([1000, 0]), torch.tensor([2000, 1_000_000]), 0.5, 2.0)
    assert c.tolist() == pytest.approx([1000 * 0.5e-6 + 2000 * 2e-6, 2.0])


def test_cost_tokens_normalized_and_raw():
    r = make_rollouts([0, 50, 100], [1, 1, 0], prompt_lengths=[10, 10, 10])
    term = CostTokens(price_prompt=1.0, price_completion=3.0)
    # worst = 10*1 + 100*3 = 310 (x1e-6): costs 10, 160, 310
    assert term(r).tolist() == pytest.approx([-10 / 310, -160 / 310, -1.0])
    raw = CostTokens(price_prompt=1.0, price_completion=3.0, normalize=False)(r)
    assert raw.tolist() == pytest.approx([-10e-6, -160e-6, -310e-6])
    assert term.metrics()["dollars"] == pytest.approx(160e-6)


def test_cost_tokens_zero_prices_are_zero_not_nan():
    out = CostTokens(price_prompt=0.0, price_completion=0.0)(make_rollouts([0, 5], [1, 0]))
    assert out.tolist() == [0.0, 0.0]


def test_cost_router_percentiles_and_correct_only():
    term = CostRouter()
    # sqrt(c) = 0, 1, 2, ..., 10 over 11 rollouts; p5 = 0.5, p95 = 9.5
    costs = [float(i * i) for i in range(11)]
    correct = [1.0] * 10 + [0.0]
    r = term(make_rollouts([1] * 11, correct, cost=costs))
    expected = [1 - min(max((i - 0.5) / 9.0, 0.0), 1.0) for i in range(10)] + [0.0]
    assert r.tolist() == pytest.approx(expected, abs=1e-6)
    assert term.metrics()["p5"] == pytest.approx(0.5) and term.metrics()["p95"] == pytest.approx(9.5)


def test_cost_router_degenerate_window_gives_half():
    term = CostRouter()
    r = term(make_rollouts([1, 1, 1], [1, 1, 0], cost=[4.0, 4.0, 4.0]))
    assert r.tolist() == [0.5, 0.5, 0.0]
    single = CostRouter()(make_rollouts([1], [1], cost=[9.0]))
    assert single.tolist() == [0.5]


def test_cost_router_window_rolls_and_resumes():
    term = CostRouter(window=4)
    term(make_rollouts([1] * 3, [1, 1, 1], cost=[0.0, 1.0, 4.0]))
    term(make_rollouts([1] * 3, [1, 1, 1], cost=[9.0, 16.0, 25.0]))
    state = json.loads(json.dumps(term.state_dict()))
    assert state["window"] == pytest.approx([2.0, 3.0, 4.0, 5.0])  # last 4 sqrt-costs
    resumed = CostRouter(window=4)
    resumed.load_state_dict(state)
    batch = make_rollouts([1, 1], [1, 1], cost=[4.0, 36.0])
    assert torch.equal(resumed(batch), term(batch))


def router_reference(costs, history=(), window=1000):
    """Router-R1's normalize_reward (ulab-uiuc/Router-R1 verl/trainer/main_ppo.py), called once per rollout in batch
    order: append sqrt(c) to a deque of `window` values, then p5/p95 with numpy's percentile (min/max for a
    one-value window), 0.5 when p95 - p5 < 1e-8, else 1 - clip((c' - p5) / (p95 - p5), 0, 1)."""
    buffer = deque(history, maxlen=window)
    out = []
    for c in costs:
        x = float(np.sqrt(c))
        buffer.append(x)
        arr = np.array(buffer)
        lo, hi = (np.percentile(arr, 5), np.percentile(arr, 95)) if len(arr) >= 2 else (arr.min(), arr.max())
        out.append(0.5 if hi - lo < 1e-8 else 1.0 - float(np.clip((x - lo) / (hi - lo), 0.0, 1.0)))
    return out


def test_cost_router_first_batch_differs_from_the_reference_as_documented():
    costs = [1.0, 4.0, 9.0, 16.0]  # sqrt: 1, 2, 3, 4
    # the reference: rollout 0 sees a one-value window (0.5); each later one is the dearest so far (0)
    assert router_reference(costs) == pytest.approx([0.5, 0.0, 0.0, 0.0])
    assert router_reference(costs[::-1]) == pytest.approx([0.5, 1.0, 1.0, 1.0])  # order decides the reward
    # here: the whole batch is the window (p5 = 1.15, p95 = 3.85), independent of order
    r = CostRouter()(make_rollouts([1] * 4, [1] * 4, cost=costs))
    assert r.tolist() == pytest.approx([1.0, 1 - 0.85 / 2.7, 1 - 1.85 / 2.7, 0.0], abs=1e-6)
    reversed_batch = CostRouter()(make_rollouts([1] * 4, [1] * 4, cost=costs[::-1]))
    assert reversed_batch.tolist() == pytest.approx(r.tolist()[::-1])


def test_cost_router_with_a_full_window_is_close_to_the_reference():
    history = [float(i) for i in range(100)]  # earlier sqrt-costs 0..99
    costs = [100.0, 2500.0, 8100.0, 9025.0]  # sqrt: 10, 50, 90, 95
    expected = router_reference(costs, history)
    assert expected == pytest.approx([0.94382, 0.49438, 0.04392, 0.0], abs=1e-5)
    term = CostRouter()
    term.load_state_dict({"window": history})
    r = term(make_rollouts([1] * 4, [1] * 4, cost=costs))
    assert r.tolist() == pytest.approx([0.94593, 0.5, 0.05407, 0.0], abs=1e-5)
    assert max(abs(a - b) for a, b in zip(r.tolist(), expected)) < 0.015


def test_cost_router_log1p_transform_uses_micro_dollars():
    term = CostRouter(transform="log1p")
    assert term.transformed(torch.tensor([1e-4])).item() == pytest.approx(math.log1p(0.01 * 100))


def test_cost_router_requires_cost():
    with pytest.raises(ValueError, match="cost"):
        CostRouter()(make_rollouts([1], [1]))


def test_tool_calls_spear_schedule_and_cap():
    r = make_rollouts([1] * 3, [1, 0, 1], tool_calls=[0, 3, 25])
    assert ToolCalls()(r).tolist() == pytest.approx([0.0, 0.3, 1.0])  # step 0: schedule 1
    r.step = 100
    assert ToolCalls()(r).tolist() == pytest.approx([0.0, 0.15, 0.5])
    r.step = 201
    assert ToolCalls()(r).tolist() == [0.0, 0.0, 0.0]
    assert ToolCalls(schedule="constant")(r).tolist() == pytest.approx([0.0, 0.3, 1.0])


def retool_reference_score(correct: bool, k: int, ceiling: float = -0.6) -> float:
    """verl recipe/retool/retool.py::compute_score on a rollout with k tool-calling turns: math_dapo gives 1 / -1;
    a wrong answer gets (num_turns - 2) / 2 * 0.1 added, capped at `ceiling` (-0.6 since verl PR #3175, 0 before),
    with num_turns = user_turns + assistant_turns + 1 = k + (k + 1) + 1 (verl tool_agent_loop.py)."""
    num_turns = k + (k + 1) + 1
    if correct:
        return 1.0
    return min(ceiling, -1.0 + (num_turns - 2) / 2 * 0.1)


def test_tool_calls_retool_variant_matches_the_reference_formula():
    # k = 0, 1, 3 (and 5, past the cap) tool calls, each wrong and correct
    ks = [0, 1, 3, 5]
    assert [retool_reference_score(False, k) for k in ks] == pytest.approx([-1.0, -0.9, -0.7, -0.6])
    assert [retool_reference_score(True, k) for k in ks] == [1.0] * 4
    r = make_rollouts([1] * 8, [0.0] * 4 + [1.0] * 4, tool_calls=ks + ks)
    out = ToolCalls(variant="retool", cap=0.4, schedule="constant")(r)
    # the term is the reference's bonus: its wrong-answer score minus the base score -1; correct answers get 0
    assert out.tolist()[:4] == pytest.approx([retool_reference_score(False, k) + 1.0 for k in ks])
    assert out.tolist() == pytest.approx([0.0, 0.1, 0.3, 0.4, 0.0, 0.0, 0.0, 0.0])
    # the original recipe's ceiling of 0 (bonus <= 1) is cap = 1
    wrong = make_rollouts([1] * 3, [0, 0, 0], tool_calls=[0, 3, 12])
    out = ToolCalls(variant="retool", cap=1.0, schedule="constant")(wrong)
    assert out.tolist() == pytest.approx([retool_reference_score(False, k, ceiling=0.0) + 1.0 for k in (0, 3, 12)])
    # never negative: no tool call is no bonus (not -0.1)
    assert out.min().item() == 0.0


def test_tool_calls_retool_variant_follows_the_schedule():
    r = make_rollouts([1] * 2, [0, 1], tool_calls=[3, 3], step=100)
    assert ToolCalls(variant="retool")(r).tolist() == pytest.approx([0.15, 0.0])  # 0.3 x cosine 0.5


def test_tool_calls_falls_back_to_counting_the_pattern():
    texts = ["<tool_call>a</tool_call><tool_call>b</tool_call>", "no tools", ""]
    term = ToolCalls()
    assert term(make_rollouts([1, 1, 0], [1, 1, 1], texts=texts)).tolist() == pytest.approx([0.2, 0.0, 0.0])
    assert term.metrics()["calls"] == pytest.approx(2 / 3)


# ----------------------------------------------------------------------------------------------- with real tools


def with_tools(r, total_tokens, tool_cost, turns=None):
    """Rollouts as a tool-using trainer fills them: `lengths` = the model's tokens, the rest of `completion_ids` are
    tool-result tokens, `tool_cost` the $ of the calls."""
    return dataclasses.replace(
        r,
        completion_ids=[[1] * n for n in total_tokens],
        tool_cost=torch.tensor(tool_cost, dtype=torch.float32),
        turns=None if turns is None else torch.tensor(turns, dtype=torch.float32),
    )


def test_cost_tokens_with_tools_prices_tool_results_and_calls():
    # model tokens 20, 20, 50; tool-result tokens 0, 30, 10; tool $ 0, 1e-4, 2e-4; prompt 10 at $1, model at $3
    r = with_tools(make_rollouts([20, 20, 50], [1, 1, 0]), [20, 50, 60], [0.0, 1e-4, 2e-4])
    term = CostTokens(price_prompt=1.0, price_completion=3.0, normalize=False)
    dollars = [(10 + 20 * 3) * 1e-6, ((10 + 30) + 20 * 3) * 1e-6 + 1e-4, ((10 + 10) + 50 * 3) * 1e-6 + 2e-4]
    assert (-term(r)).tolist() == pytest.approx(dollars, rel=1e-5)
    # the same $ as the trainer's rollout_cost (rollouts.cost), the one definition
    full = rollout_cost(r.prompt_lengths, r.lengths, torch.tensor([0, 30, 10]), r.tool_cost.double(), 1.0, 3.0)
    assert (-term(r)).tolist() == pytest.approx(full.tolist(), rel=1e-5)
    # normalised: worst = 10 x 1 + 100 x max(1, 3) tokens + the largest tool $ seen so far (2e-4)
    norm = CostTokens(price_prompt=1.0, price_completion=3.0)
    worst = 310e-6 + 2e-4
    assert norm(r).tolist() == pytest.approx([-d / worst for d in dollars], rel=1e-5)
    assert norm.state_dict() == {"tool_max": pytest.approx(2e-4)}


def test_cost_tokens_tool_budget_is_a_running_max_that_resumes_or_a_fixed_budget():
    term = CostTokens(price_prompt=0.0, price_completion=0.0)  # tool $ only
    first = with_tools(make_rollouts([1, 1], [1, 1]), [1, 1], [1e-3, 4e-3])
    assert term(first).tolist() == pytest.approx([-0.25, -1.0])
    cheaper = with_tools(make_rollouts([1, 1], [1, 1]), [1, 1], [0.0, 1e-3])
    assert term(cheaper).tolist() == pytest.approx([0.0, -0.25])  # the scale stays at 4e-3, not the batch max
    resumed = CostTokens(price_prompt=0.0, price_completion=0.0)
    resumed.load_state_dict(json.loads(json.dumps(term.state_dict())))
    assert resumed(cheaper).tolist() == pytest.approx([0.0, -0.25])
    fixed = CostTokens(price_prompt=0.0, price_completion=0.0, tool_budget=2e-3)
    assert fixed(first).tolist() == pytest.approx([-0.5, -1.0])  # 4e-3 > the budget: clamped to -1
    assert fixed(first).min() >= -1.0
    with pytest.raises(ValueError, match="tool_budget"):
        CostTokens(tool_budget=-1.0)


def test_cost_tokens_without_tools_is_unchanged_by_the_tool_state():
    r = make_rollouts([0, 50, 100], [1, 1, 0], prompt_lengths=[10, 10, 10])
    term = CostTokens(price_prompt=1.0, price_completion=3.0, tool_budget=1.0)
    assert term(r).tolist() == pytest.approx([-10 / 310, -160 / 310, -1.0])
    # tools on but no call made: no tool budget yet, and pc >= pp keeps the old worst case
    assert CostTokens(price_prompt=1.0, price_completion=3.0)(with_tools(r, [0, 50, 100], [0.0] * 3)).tolist() == \
        pytest.approx([-10 / 310, -160 / 310, -1.0])


def test_cost_router_reads_the_full_cost():
    # the term scores rollouts.cost as given (the trainer's rollout_cost: tokens and tool $), nothing recomputed
    r = with_tools(make_rollouts([1, 1, 1], [1, 1, 1], cost=[0.0, 1.0, 4.0]), [1, 1, 1], [0.0, 0.9, 3.9])
    assert CostRouter()(r).tolist() == pytest.approx(CostRouter()(make_rollouts([1] * 3, [1] * 3,
                                                                                cost=[0.0, 1.0, 4.0])).tolist())


def test_tool_calls_retool_counts_tool_calling_turns_when_turns_exist():
    # calls 0, 2, 3, 3 made in 0, 1, 2, 3 tool-calling turns (turns = k + 1): the bonus is 0.1 k, as the reference
    r = make_rollouts([1] * 4, [0, 0, 0, 0], tool_calls=[0, 2, 3, 3])
    r.turns = torch.tensor([1.0, 2.0, 3.0, 4.0])
    out = ToolCalls(variant="retool", cap=0.4, schedule="constant")(r)
    assert out.tolist() == pytest.approx([retool_reference_score(False, k) + 1.0 for k in (0, 1, 2, 3)])
    # spear keeps counting the calls the environments ran
    assert ToolCalls(schedule="constant")(r).tolist() == pytest.approx([0.0, 0.2, 0.3, 0.3])
