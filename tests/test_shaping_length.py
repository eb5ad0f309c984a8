"""Length reward terms on hand-computed values: Kimi, cosine, DAPO overlong, HAPO (with state round trip)."""

import json
import math

import pytest
import torch

from workbench.rollouts import Rollouts
from workbench.shaping.reward_length import CosineLength, HAPOLength, KimiLength, OverlongDAPO


def make_rollouts(lengths, correct, G, *, max_len=100, step=0, keys=None, truncated=None):
    lengths = torch.tensor(lengths, dtype=torch.long)
    B = len(lengths)
    return Rollouts(
        completions=["x" * int(n) for n in lengths],
        completion_ids=[[1] * int(n) for n in lengths],
        lengths=lengths,
        prompt_lengths=torch.full((B,), 5),
        truncated=torch.tensor(truncated if truncated is not None else [False] * B),
        correct=torch.tensor(correct, dtype=torch.float32),
        group_size=G,
        prompt_keys=keys if keys is not None else [i // G for i in range(B)],
        max_completion_length=max_len,
        step=step,
    )


def approx(t, expected):
    assert t.tolist() == pytest.approx(expected, abs=1e-5)


# ----------------------------------------------------------------------------------------------- Kimi


def test_kimi_per_group_token_lengths():
    # group 0: L = 10, 20, 30 (min 10, max 30); group 1: L = 40, 40, 100
    r = KimiLength()(make_rollouts([10, 20, 30, 40, 40, 100], [1, 0, 1, 1, 0, 0], 3))
    # lambda: 0.5, 0, -0.5 | 0.5, 0.5, -0.5; wrong -> min(0, lambda)
    approx(r, [0.5, 0.0, -0.5, 0.5, 0.0, -0.5])


def test_kimi_groups_do_not_share_min_max():
    # open-r1 takes min/max over the whole batch; here each group is normalised on its own
    r = KimiLength()(make_rollouts([1, 2, 100, 200], [1, 1, 1, 1], 2))
    approx(r, [0.5, -0.5, 0.5, -0.5])


@pytest.mark.parametrize(
    "lengths,correct,G",
    [([7, 7, 7, 7], [1, 0, 1, 0], 4), ([3, 9], [1, 0], 1), ([0, 0], [1, 1], 2)],
    ids=["all-equal", "G=1", "zero-length"],
)
def test_kimi_degenerate_groups_are_zero(lengths, correct, G):
    approx(KimiLength()(make_rollouts(lengths, correct, G)), [0.0] * len(lengths))


def test_kimi_start_step():
    term = KimiLength(start_step=10)
    approx(term(make_rollouts([10, 20], [1, 1], 2, step=9)), [0.0, 0.0])
    approx(term(make_rollouts([10, 20], [1, 1], 2, step=10)), [0.5, -0.5])


# ----------------------------------------------------------------------------------------------- cosine


def test_cosine_defaults_and_cap_from_run():
    r = CosineLength()(make_rollouts([0, 25, 100, 0, 50, 100], [1, 1, 1, 0, 0, 0], 3, max_len=100))
    c25 = 0.5 + 0.25 * (1 + math.cos(math.pi / 4))  # 0.9268
    approx(r, [1.0, c25, 0.5, -1.0, -0.75, -0.5])


def test_cosine_max_length_override_clips_progress():
    r = CosineLength(max_length=10)(make_rollouts([5, 10, 40], [1, 1, 1], 3, max_len=100))
    approx(r, [0.75, 0.5, 0.5])  # 40 > cap: clipped to the cap value, not wrapped around


def test_cosine_exceed_penalty_for_truncated():
    r = CosineLength(exceed_penalty=-10.0)(make_rollouts([5, 10], [1, 0], 2, max_len=10, truncated=[False, True]))
    approx(r, [0.75, -10.0])


# ----------------------------------------------------------------------------------------------- DAPO overlong


def test_overlong_dapo_explicit_cache():
    term = OverlongDAPO(cache=20)
    r = term(make_rollouts([0, 80, 85, 90, 100], [1] * 5, 5, max_len=100))
    # E = 80: 0 up to 80, then -(L - 80)/20
    approx(r, [0.0, 0.0, -0.25, -0.5, -1.0])


def test_overlong_dapo_default_cache_fraction_and_factor():
    term = OverlongDAPO(penalty_factor=2.0)
    assert term.resolve(80) == (80, 16)  # ceil(0.2 * 80)
    approx(term(make_rollouts([64, 72, 80], [1, 1, 1], 3, max_len=80)), [0.0, -1.0, -2.0])


def test_overlong_dapo_cache_larger_than_budget_is_an_error():
    with pytest.raises(ValueError, match="exceeds the length budget"):
        OverlongDAPO(cache=4096)(make_rollouts([10], [1], 1, max_len=80))
    with pytest.raises(ValueError):
        OverlongDAPO(cache=0)


# ----------------------------------------------------------------------------------------------- HAPO


def test_hapo_first_sight_is_zero_then_history_is_min_correct():
    term = HAPOLength()
    # prompt "a": correct lengths 12 and 8, wrong 4 -> history 8 (wrong ones and zero lengths are not recorded)
    r1 = term(make_rollouts([12, 8, 4, 0], [1, 1, 0, 1], 4, keys=["a"] * 4))
    approx(r1, [0.0] * 4)  # scored against the history *before* this batch
    assert term.state_dict()["history"] == {"a": 8.0}
    r2 = term(make_rollouts([4, 8, 12, 20], [1, 1, 0, 1], 4, keys=["a"] * 4))
    # cos(pi/2 * L/8): L=4 -> cos(pi/4); L=8 -> 0; L=12 wrong -> min(0, cos(3pi/4)); L=20 >= 16 -> -1, floored -0.7
    approx(r2, [math.cos(math.pi / 4), 0.0, math.cos(3 * math.pi / 4), -0.7])
    assert term.state_dict()["history"] == {"a": 4.0}


def test_hapo_linear_form():
    term = HAPOLength(form="linear")
    term.load_state_dict({"history": {"1": 10.0}, "counts": {"1": 1}})
    r = term(make_rollouts([5, 10, 10, 30, 15, 30], [1, 1, 0, 1, 0, 0], 6, keys=[1] * 6))
    # correct: 1 - 5/10; within tol -> 0; wrong within tol -> 0; correct -(30 - 11)/10 floored -0.7;
    # wrong -(15 - 11)/10 = -0.4; wrong -(30 - 11)/10 floored -1
    approx(r, [0.5, 0.0, 0.0, -0.7, -0.4, -1.0])


def test_hapo_mean_mode():
    term = HAPOLength(mode="mean")
    term(make_rollouts([10, 20], [1, 1], 2, keys=["q", "q"]))
    term(make_rollouts([60, 5], [1, 0], 2, keys=["q", "q"]))
    assert term.state_dict() == {"history": {"q": 30.0}, "counts": {"q": 3}}


def test_hapo_state_is_json_and_survives_resume():
    term = HAPOLength()
    term(make_rollouts([12, 8, 30, 40], [1, 1, 1, 0], 2, keys=[7, 7, 8, 8]))
    state = json.loads(json.dumps(term.state_dict()))
    assert state["history"] == {"7": 8.0, "8": 30.0}
    resumed = HAPOLength()
    resumed.load_state_dict(state)
    batch = make_rollouts([4, 16, 15, 60], [1, 1, 1, 0], 2, keys=[7, 7, 8, 8])
    assert torch.equal(resumed(batch), term(batch))
    assert resumed.metrics()["with_history"] == 1.0


def test_hapo_rejects_bad_options():
    with pytest.raises(ValueError):
        HAPOLength(form="quadratic")
    with pytest.raises(ValueError):
        HAPOLength(mode="max")


# ----------------------------------------------------------------------------------------------- edge cases


@pytest.mark.parametrize("term_cls", [KimiLength, CosineLength, OverlongDAPO, HAPOLength])
@pytest.mark.parametrize(
    "lengths,correct,G",
    [
        ([5, 5, 5, 5], [1, 1, 1, 1], 4),
        ([5, 9, 5, 9], [0, 0, 0, 0], 2),
        ([3, 9], [1, 0], 1),
        ([0, 0, 0, 0], [1, 0, 1, 0], 2),
        ([100, 0], [1, 1], 2),
    ],
    ids=["all-same-all-correct", "all-wrong", "G=1", "zero-length", "max-and-zero"],
)
def test_length_terms_are_finite(term_cls, lengths, correct, G):
    term = term_cls()
    for _ in range(2):  # twice, so HAPO also runs with a history
        r = term(make_rollouts(lengths, correct, G, max_len=100))
        assert r.shape == (len(lengths),) and torch.isfinite(r).all()
