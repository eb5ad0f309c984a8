"""Advantage transforms: positive_length invariants, BNPO on hand-computed Beta fits, EMPG step modulation."""

import math

import pytest
import torch

from workbench.shaping.advantage import BNPO, EMPG, PositiveLength, beta_log_pdf, segment_index
from workbench.rollouts import Rollouts


def make_rollouts(lengths, correct, G, *, entropies=None, ids=None):
    lengths = torch.tensor(lengths, dtype=torch.long)
    B = len(lengths)
    T = max(1, int(lengths.max()))
    mask = torch.arange(T).unsqueeze(0) < lengths.unsqueeze(1)
    return Rollouts(
        completions=["x"] * B,
        completion_ids=ids if ids is not None else [[1] * int(n) for n in lengths],
        lengths=lengths,
        prompt_lengths=torch.ones(B, dtype=torch.long),
        truncated=torch.zeros(B, dtype=torch.bool),
        correct=torch.tensor(correct, dtype=torch.float32),
        group_size=G,
        prompt_keys=[i // G for i in range(B)],
        max_completion_length=T,
        mask=mask,
        entropies=None if entropies is None else torch.tensor(entropies, dtype=torch.float32),
    )


def grpo_advantages(rewards, G):
    r = torch.tensor(rewards, dtype=torch.float32).view(-1, G)
    return (r - r.mean(dim=1, keepdim=True)).reshape(-1)


# ----------------------------------------------------------------------------------------------- positive_length


def test_positive_length_hand_computed():
    # one group: correct L = 10, 30 (z = +1, -1), wrong L = 20, 40
    correct = [1, 1, 0, 0]
    A = grpo_advantages(correct, 4)  # 0.5, 0.5, -0.5, -0.5
    out = PositiveLength(strength=0.5)(A, make_rollouts([10, 30, 20, 40], correct, 4), A)
    e, f = math.exp(0.5), math.exp(-0.5)
    assert out.tolist() == pytest.approx([0.5 * 2 * e / (e + f), 0.5 * 2 * f / (e + f), -0.5, -0.5])
    assert out.sum().item() == pytest.approx(0.0, abs=1e-6)  # the group still sums to zero


def test_positive_length_invariants_on_random_batches():
    g = torch.Generator().manual_seed(0)
    term = PositiveLength(strength=2.0, clip=3.0)  # strong, to stress the invariant
    for _ in range(50):
        G = int(torch.randint(1, 7, (1,), generator=g))
        B = G * int(torch.randint(1, 5, (1,), generator=g))
        correct = (torch.rand(B, generator=g) < 0.6).float()
        lengths = torch.randint(0, 50, (B,), generator=g)
        rewards = correct + 0.1 * torch.rand(B, generator=g)  # other terms make some correct A <= 0
        A = grpo_advantages(rewards.tolist(), G)
        out = term(A, make_rollouts(lengths.tolist(), correct.tolist(), G), rewards)
        assert torch.isfinite(out).all()
        pos = (correct > 0.5) & (A > 0)
        assert (out[pos] > 0).all()  # a positive correct rollout stays positive
        assert torch.equal(out[~pos], A[~pos])  # incorrect (and non-positive) rollouts unchanged


@pytest.mark.parametrize(
    "lengths,correct,G",
    [([10, 30, 20, 40], [1, 0, 0, 0], 4), ([15, 15, 20, 40], [1, 1, 0, 0], 4), ([10, 30], [1, 1], 1)],
    ids=["single-correct", "equal-correct-lengths", "G=1"],
)
def test_positive_length_leaves_degenerate_groups_unchanged(lengths, correct, G):
    A = grpo_advantages(correct, G)
    assert torch.equal(PositiveLength()(A, make_rollouts(lengths, correct, G), A), A)


def test_positive_length_all_correct_and_all_wrong_groups_unchanged():
    correct = [1, 1, 1, 0, 0, 0]
    A = grpo_advantages(correct, 3)  # all zero
    out = PositiveLength()(A, make_rollouts([5, 10, 50, 5, 10, 50], correct, 3), A)
    assert torch.equal(out, A)


def test_positive_length_rejects_token_level_input():
    with pytest.raises(ValueError, match="before token-level"):
        PositiveLength()(torch.zeros(2, 3), make_rollouts([1, 2], [1, 1], 2), torch.zeros(2))


# ----------------------------------------------------------------------------------------------- BNPO


def test_beta_log_pdf_matches_torch_inside_and_is_finite_at_edges():
    p = torch.tensor([0.1, 0.5, 0.9])
    ref = torch.distributions.Beta(torch.tensor(2.5), torch.tensor(1.5)).log_prob(p)
    assert beta_log_pdf(p, 2.5, 1.5).float().tolist() == pytest.approx(ref.tolist(), abs=1e-5)
    assert beta_log_pdf(torch.tensor([0.0, 1.0]), 1.0, 1.0).tolist() == [0.0, 0.0]


def test_bnpo_hand_computed():
    # group means 0.25, 0.5, 0.75 (G = 4): mu = 0.5, v = 1/16; mu(1-mu)/v - 1 = 3; a = b = 1.5; alpha = beta = 1.5
    rewards = torch.tensor([1, 0, 0, 0, 1, 1, 0, 0, 1, 1, 1, 0], dtype=torch.float32)
    term = BNPO()
    out = term(torch.zeros(12), make_rollouts([1] * 12, rewards.tolist(), 4), rewards)
    assert term.metrics() == pytest.approx({"alpha": 1.5, "beta": 1.5})
    pdf = lambda p: p**0.5 * (1 - p) ** 0.5 / (math.gamma(1.5) ** 2 / math.gamma(3.0))  # noqa: E731
    expected = []
    for g in range(3):
        R = rewards[4 * g : 4 * g + 4].tolist()
        p = sum(R) / 4
        expected += [(r - p) / pdf(p) for r in R]
    assert out.tolist() == pytest.approx(expected, abs=1e-5)


def test_bnpo_uniform_fallbacks_and_edges():
    term = BNPO()
    # one group -> (1, 1): REINFORCE with the group-mean baseline
    out = term(torch.zeros(4), make_rollouts([1] * 4, [1, 0, 0, 0], 4), torch.tensor([1.0, 0, 0, 0]))
    assert out.tolist() == pytest.approx([0.75, -0.25, -0.25, -0.25])
    # all-correct / all-wrong groups at p = 1 / 0 with alpha, beta > 1: pdf 0 -> clamped, times 0 -> 0, no NaN
    rewards = torch.tensor([1.0, 1.0, 0.0, 0.0, 1.0, 0.0, 1.0, 0.0])
    out = term(torch.zeros(8), make_rollouts([1] * 8, rewards.tolist(), 2), rewards)
    assert torch.isfinite(out).all() and out[:4].tolist() == [0.0, 0.0, 0.0, 0.0]
    # G = 1: p_q = R_i -> 0
    out = term(torch.zeros(3), make_rollouts([1] * 3, [1, 0, 1], 1), torch.tensor([1.0, 0.0, 1.0]))
    assert out.tolist() == [0.0, 0.0, 0.0]


def test_bnpo_reward_scaling_rule():
    term = BNPO()
    assert term.scale(torch.tensor([0.0, 0.5, 1.0])).tolist() == [0.0, 0.5, 1.0]  # already in [0, 1]
    assert term.scale(torch.tensor([-1.0, 0.0, 3.0])).tolist() == [0.0, 0.25, 1.0]  # batch min-max
    assert term.scale(torch.tensor([2.0, 2.0])).tolist() == [0.0, 0.0]  # constant
    fixed = BNPO(reward_min=0.0, reward_max=2.0)
    assert fixed.scale(torch.tensor([-1.0, 1.0, 3.0])).tolist() == [0.0, 0.5, 1.0]
    with pytest.raises(ValueError):
        BNPO(reward_min=0.0)


# ----------------------------------------------------------------------------------------------- EMPG


def test_segment_index_delimiter_sequences_and_chunks():
    mask = torch.tensor([[1, 1, 1, 1, 1, 1]])
    assert segment_index([[4, 7, 8, 4, 7, 8]], mask, [[7, 8]]).tolist() == [[0, 0, 0, 1, 1, 1]]
    assert segment_index([[4, 7, 8, 4, 7, 8]], mask, None, 3).tolist() == [[0, 0, 1, 1, 2, 2]]
    assert segment_index([[]], torch.zeros(1, 2), [[7]]).tolist() == [[-1, -1]]


def test_empg_hand_computed():
    # rollout 0: steps [0.0, 0.0 | 2.0] (delimiter id 9 closes step 0); rollout 1: one step [1.0, 1.0]
    r = make_rollouts(
        [3, 2], [1, 0], 2, entropies=[[0.0, 0.0, 2.0], [1.0, 1.0, 0.0]], ids=[[5, 9, 5], [5, 5]]
    )
    term = EMPG(delimiter_ids=[9])
    A = torch.tensor([1.0, -1.0])
    out = term(A, r, A)
    # step entropies 0, 2, 1 -> H_hat 0, 1, 0.5 (eps ignored); g = exp(-H_hat) / mean
    e = [1.0, math.exp(-1), math.exp(-0.5)]
    m = sum(e) / 3
    g = [x / m for x in e]
    f0 = math.exp(-1)  # next step of rollout 0 has H_hat 1; last steps get no bonus
    expected = [[g[0] + 0.1 * f0, g[0] + 0.1 * f0, g[1]], [-g[2], -g[2], 0.0]]
    assert out.tolist() == [pytest.approx(row, abs=1e-5) for row in expected]
    assert term.metrics()["steps_per_rollout"] == 1.5


def test_empg_bind_tokenizer_and_equal_entropies():
    class CharTokenizer:
        def encode(self, s, add_special_tokens=False):
            return [ord(c) for c in s]

    term = EMPG(delimiters=[". "])
    term.bind_tokenizer(CharTokenizer())
    assert term.delimiter_ids == [[46, 32]]
    text = "ab. cd"
    r = make_rollouts([6], [1], 1, entropies=[[0.5] * 6], ids=[[ord(c) for c in text]])
    out = term(torch.tensor([2.0]), r, torch.tensor([1.0]))
    # two steps, equal entropy: g = 1, f = exp(0) = 1 on the first step only
    assert out.tolist() == [pytest.approx([2.1] * 4 + [2.0] * 2)]


def test_empg_edge_cases_are_finite():
    term = EMPG(num_segments=3, delimiters=[])
    r = make_rollouts([0, 1, 4], [1, 0, 1], 1, entropies=[[0.0] * 4, [3.0, 0, 0, 0], [1.0, 2.0, 3.0, 4.0]])
    out = term(torch.tensor([1.0, -1.0, 0.5]), r, torch.zeros(3))
    assert out.shape == (3, 4) and torch.isfinite(out).all()
    assert out[0].tolist() == [0.0] * 4  # zero-length completion: nothing to modulate
    empty = make_rollouts([0, 0], [1, 1], 2, entropies=[[0.0], [0.0]])
    assert term(torch.ones(2), empty, torch.ones(2)).tolist() == [[0.0], [0.0]]


def test_empg_accepts_token_level_advantages():
    r = make_rollouts([2], [1], 1, entropies=[[1.0, 1.0]])
    out = EMPG(num_segments=1, delimiters=[])(torch.tensor([[1.0, 3.0]]), r, torch.zeros(1))
    assert out.tolist() == [[1.0, 3.0]]  # single step: g = 1, no next step


def test_empg_with_tools_steps_are_agent_turns_and_tool_results_get_nothing():
    # rollout 0: turn [0, 0] | tool result (mask 0) | turn [2, 2] | padding; rollout 1: one turn [1, 1, 1]
    # delimiter id 9 appears inside the turns but is not used: with tools the steps are the turns
    r = make_rollouts([6, 3], [1, 0], 2, entropies=[[0.0, 0.0, 5.0, 5.0, 2.0, 2.0, 0.0], [1.0] * 3 + [0.0] * 4],
                      ids=[[9, 5, 7, 7, 9, 5], [9, 5, 5]])
    r.mask = torch.tensor([[1, 1, 0, 0, 1, 1, 0], [1, 1, 1, 0, 0, 0, 0]], dtype=torch.float32)
    r.lengths = torch.tensor([4, 3])  # the model's own tokens
    term = EMPG(delimiter_ids=[9])
    A = torch.tensor([1.0, -1.0])
    out = term(A, r, A)
    # turn entropies 0, 2 (rollout 0) and 1 (rollout 1) -> H_hat 0, 1, 0.5, as in test_empg_hand_computed
    e = [1.0, math.exp(-1), math.exp(-0.5)]
    g = [x / (sum(e) / 3) for x in e]
    f0 = math.exp(-1)
    t0, t1 = g[0] + 0.1 * f0, g[1]
    expected = [[t0, t0, 0.0, 0.0, t1, t1, 0.0], [-g[2]] * 3 + [0.0] * 4]
    assert out.tolist() == [pytest.approx(row, abs=1e-5) for row in expected]
    assert term.metrics() == {"steps_per_rollout": 1.5, "turn_steps": 1.0}
    # the call log marks tool use too: the same turns
    r.tool_log = [[{"name": "calculator"}], []]
    assert term(A, r, A).tolist() == [pytest.approx(row, abs=1e-5) for row in expected]


def test_empg_tool_log_without_gaps_uses_turns_not_delimiters():
    # a tool-using batch in which no rollout called a tool: every rollout is one turn, delimiters ignored
    r = make_rollouts([3], [1], 1, entropies=[[0.0, 3.0, 0.0]], ids=[[5, 9, 5]])
    plain = EMPG(delimiter_ids=[9])
    assert plain(torch.tensor([1.0]), r, torch.ones(1)).tolist() != [[1.0, 1.0, 1.0]]  # two delimiter steps
    r.tool_log = [[]]
    out = plain(torch.tensor([1.0]), r, torch.ones(1))
    assert out.tolist() == [[1.0, 1.0, 1.0]]  # one step: g = 1, no next step
    assert plain.metrics()["steps_per_rollout"] == 1.0
