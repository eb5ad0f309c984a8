"""PEAR on hand-computed phase entropies, including missing </think>, zero-length completions and empty masks."""

import pytest
import torch

from workbench.rollouts import Rollouts
from workbench.shaping.reward_entropy import PEAR, phase_entropies


def make_rollouts(entropies, lengths, think_lens, correct=None, G=None):
    """think_lens[i]: tokens up to and including </think>, or None when the completion has no </think>."""
    H = torch.tensor(entropies, dtype=torch.float32)
    B, T = H.shape
    lengths = torch.tensor(lengths)
    pos = torch.arange(T).unsqueeze(0)
    mask = pos < lengths.unsqueeze(1)
    has_close = torch.tensor([k is not None for k in think_lens])
    k = torch.tensor([n if n is not None else 0 for n in think_lens]).unsqueeze(1)
    think = (pos < k) & mask & has_close.unsqueeze(1)
    answer = (pos >= k) & mask & has_close.unsqueeze(1)
    return Rollouts(
        completions=["x"] * B,
        completion_ids=[[1] * int(n) for n in lengths],
        lengths=lengths,
        prompt_lengths=torch.full((B,), 3),
        truncated=torch.zeros(B, dtype=torch.bool),
        correct=torch.tensor(correct if correct is not None else [1.0] * B),
        group_size=G or B,
        prompt_keys=[0] * B,
        max_completion_length=T,
        mask=mask,
        entropies=H,
        think_mask=think,
        answer_mask=answer,
        has_think_close=has_close,
    )


def test_pear_penalises_mean_think_entropy():
    r = make_rollouts(
        [[1.0, 2.0, 3.0, 0.5], [0.2, 0.4, 4.0, 4.0]],
        lengths=[4, 4],
        think_lens=[3, 2],
    )
    # think means: 2.0 and 0.3; answer entropy not penalised by default
    assert PEAR()(r).tolist() == pytest.approx([-2.0, -0.3])


def test_pear_answer_allowance_is_capped():
    r = make_rollouts([[1.0, 1.0, 0.5, 0.5], [1.0, 1.0, 3.0, 3.0]], lengths=[4, 4], think_lens=[2, 2])
    term = PEAR(answer_coef=0.5, answer_cap=1.0)
    # -1 + 0.5 * 0.5 ; -1 + 0.5 * min(3, 1)
    assert term(r).tolist() == pytest.approx([-0.75, -0.5])
    assert term.metrics() == pytest.approx({"think_entropy": 1.0, "answer_entropy": 1.75})


def test_pear_missing_think_close_counts_everything_as_thinking():
    r = make_rollouts([[1.0, 2.0, 3.0, 9.0]], lengths=[3], think_lens=[None])
    term = PEAR(answer_coef=1.0)
    assert term(r).tolist() == pytest.approx([-2.0])  # padding (9.0) ignored, answer entropy 0
    assert term.metrics()["answer_entropy"] == 0.0


def test_pear_zero_length_and_empty_mask_are_zero():
    r = make_rollouts([[5.0, 5.0], [5.0, 5.0]], lengths=[0, 0], think_lens=[None, 0])
    out = PEAR(answer_coef=1.0)(r)
    assert out.tolist() == [0.0, 0.0] and torch.isfinite(out).all()


def test_pear_correct_only():
    r = make_rollouts([[1.0, 1.0], [2.0, 2.0]], lengths=[2, 2], think_lens=[None, None], correct=[1.0, 0.0])
    assert PEAR(correct_only=True)(r).tolist() == pytest.approx([-1.0, 0.0])


def test_pear_without_phase_masks_treats_all_as_think():
    H = torch.tensor([[1.0, 3.0, 0.0]])
    think, answer = phase_entropies(H, torch.tensor([[1, 1, 0]]))
    assert think.tolist() == [2.0] and answer.tolist() == [0.0]


def test_pear_requires_entropies():
    r = make_rollouts([[1.0]], lengths=[1], think_lens=[None])
    r.entropies = None
    with pytest.raises(ValueError, match="entropy"):
        PEAR()(r)


@pytest.mark.parametrize("G", [1, 2, 4])
def test_pear_finite_on_mixed_batch(G):
    r = make_rollouts(
        [[0.0, 0.0, 0.0, 0.0], [1.0, 2.0, 0.0, 0.0], [3.0, 3.0, 3.0, 3.0], [0.1, 0.1, 0.1, 0.1]],
        lengths=[0, 2, 4, 4],
        think_lens=[None, 2, 4, 0],
        correct=[0.0, 1.0, 0.0, 1.0],
        G=G,
    )
    assert torch.isfinite(PEAR(answer_coef=0.3)(r)).all()
