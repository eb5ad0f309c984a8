"""Reward combiners (PAR, gated G-RA, ensemble): hand-computed values and the earlier-term errors."""

import math

import pytest
import torch

from workbench.config import ConfigError
from workbench.rollouts import Rollouts
from workbench.shaping.base import build_terms
from workbench.shaping.reward_combine import PAR, Ensemble, Gated


def sig(x):
    return 1 / (1 + math.exp(-x))


def make_rollouts(term_rewards, G):
    B = len(next(iter(term_rewards.values())))
    return Rollouts(
        completions=["x"] * B,
        completion_ids=[[1]] * B,
        lengths=torch.ones(B, dtype=torch.long),
        prompt_lengths=torch.ones(B, dtype=torch.long),
        truncated=torch.zeros(B, dtype=torch.bool),
        correct=torch.tensor(term_rewards.get("correctness", [0.0] * B), dtype=torch.float32),
        group_size=G,
        prompt_keys=[i // G for i in range(B)],
        max_completion_length=10,
        term_rewards={k: torch.tensor(v, dtype=torch.float32) for k, v in term_rewards.items()},
    )


def test_par_group_mean_reference():
    r = make_rollouts({"correctness": [1.0, 0.0, 0.0, 0.0, 1.0, 1.0]}, G=3)
    out = PAR(k=2.0)(r)
    # group 0 mean 1/3, group 1 mean 2/3
    expected = [sig(2 * (2 / 3)), sig(2 * (-1 / 3)), sig(2 * (-1 / 3)), sig(2 * (-2 / 3)), sig(2 / 3), sig(2 / 3)]
    assert out.tolist() == pytest.approx(expected, abs=1e-6)


def test_par_group_reference_is_mean_over_all_group_members():
    r = make_rollouts({"correctness": [1.0, 0.0]}, G=2)
    out = PAR(reference="group")(r)
    # rollout 0: mean(sig(0), sig(1)); rollout 1: mean(sig(-1), sig(0))
    assert out.tolist() == pytest.approx([(0.5 + sig(1)) / 2, (sig(-1) + 0.5) / 2], abs=1e-6)


def test_par_all_equal_group_and_g1_give_one_half():
    assert PAR()(make_rollouts({"correctness": [1.0, 1.0]}, G=2)).tolist() == [0.5, 0.5]
    assert PAR()(make_rollouts({"correctness": [0.0, 1.0]}, G=1)).tolist() == [0.5, 0.5]


def test_par_missing_source_names_earlier_terms():
    r = make_rollouts({"format": [1.0, 0.0]}, G=2)
    expected = r"reward\.par\.source='correctness' is not an earlier reward term; earlier terms: format"
    with pytest.raises(ValueError, match=expected):
        PAR()(r)


def test_unknown_term_names_fail_at_build_time():
    with pytest.raises(ConfigError, match=r"reward\.par: source='corectness' is not a reward term"):
        build_terms("reward", {"par": {"source": "corectness"}})
    with pytest.raises(ConfigError, match="terms="):
        build_terms("reward", {"gated": {"terms": ["nope"]}})
    with pytest.raises(ConfigError, match="itself"):
        build_terms("reward", {"ensemble": {"terms": ["ensemble"]}})
    with pytest.raises(ConfigError, match="list"):
        build_terms("reward", {"ensemble": {"terms": "correctness"}})


def test_gated_sums_terms_only_when_gate_open():
    r = make_rollouts(
        {"correctness": [1.0, 0.0, 1.0], "format": [1.0, 1.0, 0.0], "length_kimi": [0.5, 0.5, -0.5]}, G=3
    )
    out = Gated(terms=["format", "length_kimi"])(r)
    assert out.tolist() == pytest.approx([1.5, 0.0, -0.5])
    weighted = Gated(terms={"format": 0.1, "length_kimi": 2.0}, threshold=0.5)(r)
    assert weighted.tolist() == pytest.approx([1.1, 0.0, -1.0])


def test_gated_missing_term_error():
    r = make_rollouts({"correctness": [1.0]}, G=1)
    with pytest.raises(ValueError, match=r"reward\.gated\.terms='format' is not an earlier reward term"):
        Gated()(r)


def test_ensemble_modes():
    r = make_rollouts({"correctness": [1.0, 0.0, 1.0], "format": [0.0, 0.0, 1.0]}, G=3)
    terms = ["correctness", "format"]
    assert Ensemble(terms=terms)(r).tolist() == pytest.approx([0.5, 0.0, 1.0])
    assert Ensemble(terms=terms, mode="worst")(r).tolist() == pytest.approx([0.0, 0.0, 1.0])
    # population variance of {1, 0} is 0.25
    assert Ensemble(terms=terms, mode="uncertainty", lam=2.0)(r).tolist() == pytest.approx([0.0, 0.0, 1.0])


def test_ensemble_normalize_and_single_member():
    r = make_rollouts({"correctness": [1.0, 0.0], "format": [1.0, 1.0]}, G=2)
    out = Ensemble(terms=["correctness", "format"], normalize=True)(r)
    # correctness z = +1, -1; format constant -> 0
    assert out.tolist() == pytest.approx([0.5, -0.5])
    single = Ensemble(terms=["correctness"], mode="uncertainty")(r)
    assert single.tolist() == [1.0, 0.0] and torch.isfinite(single).all()
