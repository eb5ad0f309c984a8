"""Hand-checked tests for workbench.evaluation.metrics."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from workbench.evaluation.metrics import (
    bootstrap_ci,
    cost_of_pass,
    default_ks,
    length_stats,
    maj_at_k,
    N_BOOT,
    pass_at_k,
    summarize_problems,
    wilson_interval,
)

# ----------------------------------------------------------------------------------------------- pass@k


def _comb_pass(n: int, c: int, k: int) -> float:
    return 1.0 - math.comb(n - c, k) / math.comb(n, k)


def test_pass_at_k_edges():
    assert pass_at_k(10, 0, 1) == 0.0
    assert pass_at_k(10, 0, 10) == 0.0
    assert pass_at_k(10, 10, 1) == 1.0
    assert pass_at_k(10, 10, 5) == 1.0
    assert pass_at_k(10, 1, 10) == 1.0  # k = n: any correct sample passes
    assert pass_at_k(10, 7, 4) == 1.0  # n - c = 3 < k


@pytest.mark.parametrize("n,c", [(10, 3), (16, 5), (5, 1), (100, 37)])
def test_pass_at_1_is_fraction_correct(n, c):
    assert pass_at_k(n, c, 1) == pytest.approx(c / n)


def test_pass_at_k_middle_case():
    # 1 - C(3,2)/C(5,2) = 1 - 3/10
    assert pass_at_k(5, 2, 2) == pytest.approx(0.7)
    for n, c, k in [(20, 4, 5), (64, 10, 8), (200, 3, 50), (16, 8, 7)]:
        assert pass_at_k(n, c, k) == pytest.approx(_comb_pass(n, c, k), rel=1e-12, abs=1e-12)


def test_pass_at_k_invalid():
    with pytest.raises(ValueError):
        pass_at_k(4, 1, 5)
    with pytest.raises(ValueError):
        pass_at_k(4, 1, 0)
    with pytest.raises(ValueError):
        pass_at_k(4, 5, 1)


# ----------------------------------------------------------------------------------------------- maj@k


def test_maj_at_k_full_set_majority():
    assert maj_at_k(["4", "4", "5"], [True, True, False], 3) == 1.0
    assert maj_at_k(["5", "5", "4"], [False, False, True], 3) == 0.0


def test_maj_at_k_tie_is_fraction_of_tied_correct():
    assert maj_at_k(["4", "5"], [True, False], 2) == 0.5
    # three-way tie, one correct
    assert maj_at_k(["a", "b", "c"], [False, True, False], 3) == pytest.approx(1 / 3)
    # tie between two top answers, a third answer with fewer votes does not count
    assert maj_at_k(["a", "a", "b", "b", "c"], [True, True, False, False, False], 5) == 0.5


def test_maj_at_k_none_answers():
    # None never wins, even with more "votes"
    assert maj_at_k([None, None, "4"], [False, False, True], 3) == 1.0
    assert maj_at_k([None, None, "5"], [False, False, False], 3) == 0.0
    # all None counts as wrong
    assert maj_at_k([None, None], [False, False], 2) == 0.0
    # k=1 equals plain accuracy with None wrong
    assert maj_at_k([None, "4", "5"], [False, True, False], 1) == pytest.approx(1 / 3)


def test_maj_at_k_subsets_exact():
    # subsets of 2 from [4,4,5]: {4,4} -> 1, {4,5} -> tie 0.5, {4,5} -> 0.5
    assert maj_at_k(["4", "4", "5"], [True, True, False], 2) == pytest.approx(2 / 3)
    # 3 correct "a", 2 wrong "b", k=3: P(at least two a) = (C(3,2)C(2,1) + C(3,3)) / C(5,3) = 7/10
    assert maj_at_k(["a", "a", "a", "b", "b"], [True] * 3 + [False] * 2, 3) == pytest.approx(0.7)


def test_maj_at_k_sampled_close_to_exact_and_seeded():
    rng = np.random.default_rng(1)
    answers = [str(x) for x in rng.integers(0, 4, size=16)]
    correct = [a == "0" for a in answers]
    exact = maj_at_k(answers, correct, 8, num_subsamples=20_000)  # C(16,8)=12870 <= 20000 -> exact
    sampled = maj_at_k(answers, correct, 8, num_subsamples=2000, rng=0)
    assert sampled == pytest.approx(exact, abs=0.05)
    assert maj_at_k(answers, correct, 8, num_subsamples=300, rng=5) == maj_at_k(
        answers, correct, 8, num_subsamples=300, rng=5
    )


def test_maj_at_k_invalid():
    with pytest.raises(ValueError):
        maj_at_k(["a"], [True], 2)
    with pytest.raises(ValueError):
        maj_at_k(["a", "b"], [True], 1)


# ----------------------------------------------------------------------------------------------- cost / length


def test_cost_of_pass():
    assert cost_of_pass([1, 2, 3, 4], [True, False, True, False]) == pytest.approx(5.0)
    # equals mean cost / pass rate
    assert cost_of_pass([1, 2, 3, 4], [True, False, False, False]) == pytest.approx(2.5 / 0.25)
    assert cost_of_pass([1, 2], [False, False]) == math.inf
    assert math.isnan(cost_of_pass([], []))


def test_length_stats():
    s = length_stats([10, 20, 30, 40], [True, True, False, False], [False, False, False, True])
    assert s == pytest.approx(
        {"mean": 25.0, "median": 25.0, "p90": 37.0, "correct_mean": 15.0, "incorrect_mean": 35.0,
         "truncation_rate": 0.25}
    )
    s = length_stats([10, 20], [True, True], [False, False])
    assert s["incorrect_mean"] is None and s["correct_mean"] == 15.0 and s["truncation_rate"] == 0.0
    empty = length_stats([], [], [])
    assert all(v is None for v in empty.values())


# ----------------------------------------------------------------------------------------------- bootstrap


def test_bootstrap_ci_contains_mean_and_narrows():
    rng = np.random.default_rng(0)
    small = rng.random(20)
    large = rng.random(2000)
    lo_s, hi_s = bootstrap_ci(small)
    lo_l, hi_l = bootstrap_ci(large)
    assert lo_s <= small.mean() <= hi_s
    assert lo_l <= large.mean() <= hi_l
    assert (hi_l - lo_l) < 0.3 * (hi_s - lo_s)
    assert bootstrap_ci(small, seed=3) == bootstrap_ci(small, seed=3)


def test_bootstrap_ci_custom_statistic_and_edges():
    vals = np.arange(50.0)
    lo, hi = bootstrap_ci(vals, statistic=lambda x: float(np.max(x) - np.min(x)), n_boot=200)
    assert 0 <= lo <= hi <= 49
    lo, hi = bootstrap_ci(vals, statistic=np.median, n_boot=200)
    assert lo <= 24.5 <= hi
    assert bootstrap_ci([3.0]) == (3.0, 3.0)
    assert all(math.isnan(v) for v in bootstrap_ci([]))


# ----------------------------------------------------------------------------------------------- summarize


def test_default_ks():
    assert default_ks(1) == [1]
    assert default_ks(8) == [1, 2, 4, 8]
    assert default_ks(10) == [1, 2, 4, 8, 10]


def test_summarize_problems_hand_values():
    correct = np.array([[1, 1, 0, 0], [0, 0, 0, 0], [1, 1, 1, 1]], dtype=bool)
    answers = [["4", "4", "5", None], ["1", "2", "2", None], ["9", "9", "9", "9"]]
    lengths = np.array([[10, 20, 30, 40], [50, 50, 50, 50], [5, 5, 5, 5]], dtype=float)
    truncated = np.zeros((3, 4), dtype=bool)
    truncated[1, :2] = True
    costs = np.ones((3, 4))
    entropy = np.full((3, 4), 0.5)
    think = np.full((3, 4), 1.0)
    think[0, 0] = np.nan  # ignored
    answer_ent = np.full((3, 4), 0.25)
    out = summarize_problems(
        correct, answers=answers, lengths=lengths, truncated=truncated, costs=costs, entropy=entropy,
        entropy_think=think, entropy_answer=answer_ent, n_boot=200,
    )
    base = [
        "eval/accuracy", "eval/pass@1", "eval/pass@2", "eval/pass@4", "eval/maj@4", "eval/length/mean",
        "eval/length/correct_mean", "eval/length/incorrect_mean", "eval/truncation_rate", "eval/entropy/mean",
        "eval/entropy/think", "eval/entropy/answer", "eval/cost/mean", "eval/cost_of_pass",
    ]
    expected_keys = set(base) | {k + s for k in base for s in ("/ci_low", "/ci_high")}
    expected_keys |= {"eval/length/median", "eval/length/p90"}
    assert set(out) == expected_keys
    assert out["eval/accuracy"] == pytest.approx(0.5)
    assert out["eval/pass@1"] == pytest.approx(0.5)
    assert out["eval/pass@2"] == pytest.approx((5 / 6 + 0 + 1) / 3)
    assert out["eval/pass@4"] == pytest.approx(2 / 3)
    # problem 0: "4" wins (correct), problem 1: "2" wins (wrong), problem 2: correct
    assert out["eval/maj@4"] == pytest.approx(2 / 3)
    assert out["eval/length/mean"] == pytest.approx(lengths.mean())
    assert out["eval/length/median"] == pytest.approx(np.median(lengths))
    assert out["eval/length/correct_mean"] == pytest.approx((10 + 20 + 20) / 6)
    assert out["eval/length/incorrect_mean"] == pytest.approx((30 + 40 + 200) / 6)
    assert out["eval/truncation_rate"] == pytest.approx(2 / 12)
    assert out["eval/entropy/mean"] == pytest.approx(0.5)
    assert out["eval/entropy/think"] == pytest.approx(1.0)
    assert out["eval/entropy/answer"] == pytest.approx(0.25)
    assert out["eval/cost/mean"] == pytest.approx(1.0)
    assert out["eval/cost_of_pass"] == pytest.approx(2.0)
    for k in base:
        assert out[k + "/ci_low"] <= out[k] + 1e-12 and out[k] <= out[k + "/ci_high"] + 1e-12, k


def test_summarize_problems_minimal_and_no_correct():
    out = summarize_problems(np.zeros((4, 2), dtype=bool), costs=np.ones((4, 2)), ks=[1, 2, 8], n_boot=50)
    assert "eval/pass@8" not in out  # k > n skipped
    assert out["eval/pass@2"] == 0.0
    assert out["eval/cost_of_pass"] == math.inf
    assert not any(k.startswith("eval/maj") or k.startswith("eval/length") for k in out)
    with pytest.raises(ValueError):
        summarize_problems(np.zeros((2, 2), dtype=bool), lengths=np.zeros((2, 3)))


def test_wilson_interval_known_values():
    assert wilson_interval(0.0, 200) == (0.0, pytest.approx(0.018845, abs=1e-6))  # 3.84 / (200 + 3.84)
    lo, hi = wilson_interval(0.5, 100)
    assert (lo, hi) == (pytest.approx(0.40383, abs=1e-5), pytest.approx(0.59617, abs=1e-5))
    assert wilson_interval(1.0, 10)[1] == 1.0 and wilson_interval(1.0, 10)[0] == pytest.approx(0.72247, abs=1e-5)
    assert all(math.isnan(x) for x in wilson_interval(0.5, 0))


def test_rates_at_zero_get_a_wilson_interval_never_zero_zero():
    """No correct or truncated sample: the bootstrap collapses to [0, 0]; the interval is Wilson's over problems."""
    for n in (1, 4):
        out = summarize_problems(np.zeros((200, n), dtype=bool), lengths=np.ones((200, n)),
                                 truncated=np.zeros((200, n), dtype=bool))
        for key in ("eval/accuracy", "eval/pass@1", "eval/truncation_rate"):
            assert out[key] == 0.0 and out[key + "/ci_low"] == 0.0
            assert out[key + "/ci_high"] == pytest.approx(wilson_interval(0.0, 200)[1]), (n, key)


def test_one_sample_per_problem_uses_wilson_over_problems():
    corr = np.array([[True]] * 30 + [[False]] * 70)
    out = summarize_problems(corr)
    assert (out["eval/accuracy/ci_low"], out["eval/accuracy/ci_high"]) == pytest.approx(wilson_interval(0.3, 100))


def test_several_samples_per_problem_keep_the_bootstrap_over_problems():
    rng = np.random.default_rng(1)
    corr = rng.random((50, 4)) < 0.5
    out = summarize_problems(corr, n_boot=400, seed=3)
    per_problem = corr.mean(axis=1)
    assert (out["eval/accuracy/ci_low"], out["eval/accuracy/ci_high"]) == pytest.approx(
        bootstrap_ci(per_problem, n_boot=400, seed=3))
    assert all(out[k] is None for k in ("eval/accuracy/ci_low", "eval/accuracy/ci_high")
               for out in [summarize_problems(corr, n_boot=0)])  # n_boot=0: no intervals at all


def test_one_number_of_bootstrap_resamples(monkeypatch):
    """rl eval (conf/eval.yaml, EvalConfig) and the evaluations inside rl train use the same N_BOOT."""
    import types

    import yaml

    import workbench.evaluation.runner as runner
    import workbench.train as train_mod
    from workbench.compose import CONF_DIR, compose
    from workbench.config import to_train_config

    assert yaml.safe_load((CONF_DIR / "eval.yaml").read_text())["eval"]["n_boot"] == N_BOOT
    assert runner.EvalConfig().n_boot == N_BOOT
    seen = {}

    def fake_evaluate_model(model, tokenizer, task, examples, e, **kw):
        seen["n_boot"] = e.n_boot
        return {"eval/accuracy": 0.5}, []

    monkeypatch.setattr(runner, "evaluate_model", fake_evaluate_model)
    cfg = to_train_config(compose("train", []))
    train_mod._evaluate(cfg, None, None, None, [{}] * 3, types.SimpleNamespace(max_completion_length=8), seed=0)
    assert seen["n_boot"] == N_BOOT


def test_summarize_problems_ci_narrows_with_more_problems():
    rng = np.random.default_rng(0)
    small = summarize_problems(rng.random((10, 4)) < 0.5, n_boot=300)
    large = summarize_problems(rng.random((1000, 4)) < 0.5, n_boot=300)
    width = lambda o: o["eval/pass@1/ci_high"] - o["eval/pass@1/ci_low"]  # noqa: E731
    assert width(large) < 0.3 * width(small)


def test_evaluation_package_import_is_cheap():
    root = str(Path(__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))}
    code = "import sys, workbench.evaluation; print('numpy' in sys.modules, 'torch' in sys.modules)"
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env)
    assert res.stdout.split() == ["False", "False"]
    code = "import sys, workbench.evaluation.metrics, workbench.stats; print('torch' in sys.modules)"
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env)
    assert res.stdout.strip() == "False"
