"""Hand-checked tests for workbench.stats."""

from __future__ import annotations

import math

import numpy as np
import pytest

from workbench.stats import (
    bootstrap_diff_test,
    fit_entropy_law,
    mean_ci,
    pareto_front,
    permutation_test,
    welch_test,
)


def test_mean_ci_hand_t_interval():
    # [1,2,3,4]: mean 2.5, s^2 = 5/3, se = sqrt(5/3)/2, t_{0.975,3} = 3.182446305284263
    mean, lo, hi = mean_ci([1, 2, 3, 4])
    half = 3.182446305284263 * math.sqrt(5 / 3) / 2
    assert mean == pytest.approx(2.5)
    assert lo == pytest.approx(2.5 - half)
    assert hi == pytest.approx(2.5 + half)
    # 90 %: t_{0.95,3} = 2.353363434801823
    _, lo90, hi90 = mean_ci([1, 2, 3, 4], confidence=0.90)
    assert hi90 - lo90 == pytest.approx(2 * 2.353363434801823 * math.sqrt(5 / 3) / 2)


def test_mean_ci_edges():
    assert all(math.isnan(v) for v in mean_ci([]))
    m, lo, hi = mean_ci([3.0])
    assert m == 3.0 and math.isnan(lo) and math.isnan(hi)
    assert mean_ci([2.0, 2.0, 2.0]) == (2.0, 2.0, 2.0)
    assert mean_ci([1.0, float("nan"), 3.0])[0] == 2.0


def test_welch_test():
    a = np.array([0.0, 0.1, -0.1, 0.05, -0.05])
    assert welch_test(a, a + 10) < 1e-6
    assert welch_test([1, 2, 3, 4, 5], [5, 4, 3, 2, 1]) == pytest.approx(1.0)
    rng = np.random.default_rng(0)
    assert welch_test(rng.normal(size=50), rng.normal(size=50)) > 0.05
    assert math.isnan(welch_test([1.0], [1.0, 2.0]))
    assert welch_test([1, 1], [1, 1]) == 1.0
    assert welch_test([1, 1], [2, 2]) == 0.0


def test_bootstrap_diff_test():
    a = np.array([0.0, 0.1, -0.1, 0.05, -0.05])
    p = bootstrap_diff_test(a, a + 10, n_boot=2000)
    assert p == pytest.approx(1 / 2001)
    assert bootstrap_diff_test([1, 2, 3, 4, 5], [5, 4, 3, 2, 1], n_boot=2000) == pytest.approx(1.0)
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=30), rng.normal(size=30)
    assert bootstrap_diff_test(x, y, n_boot=2000) > 0.05
    assert bootstrap_diff_test(x, y, n_boot=500, seed=1) == bootstrap_diff_test(x, y, n_boot=500, seed=1)
    assert math.isnan(bootstrap_diff_test([1.0], [1.0, 2.0]))


def test_permutation_test_exact_known_answers():
    # 3 vs 3 seeds: 20 splits of the pooled six values; only the observed one and its mirror are as extreme
    assert permutation_test([1, 2, 3], [4, 5, 6]) == pytest.approx(2 / 20)
    assert permutation_test([1, 2, 3], [1, 2, 3]) == 1.0
    # hand count against brute force: 4 vs 3
    import itertools

    a, b = [0.71, 0.74, 0.69, 0.73], [0.66, 0.70, 0.64]
    pooled = a + b
    obs = abs(np.mean(a) - np.mean(b))
    splits = list(itertools.combinations(range(7), 4))
    hits = sum(abs(np.mean([pooled[i] for i in s]) - np.mean([pooled[i] for i in range(7) if i not in s])) >= obs - 1e-12
               for s in splits)
    assert permutation_test(a, b) == pytest.approx(hits / len(splits))
    assert math.isnan(permutation_test([1.0], [1.0, 2.0]))
    # large samples: random permutations, seeded, and a real difference is found
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=40), rng.normal(1.0, size=40)
    assert permutation_test(x, y) < 0.01 and permutation_test(x, y, seed=3) == permutation_test(x, y, seed=3)


def test_bootstrap_test_is_the_exact_permutation_test_for_few_seeds():
    """With 3 seeds a side a bootstrap has at most 27 resamples: it defers to the exact permutation test."""
    a, b = [0.78, 0.79, 0.77], [0.70, 0.71, 0.69]
    assert bootstrap_diff_test(a, b) == permutation_test(a, b) == pytest.approx(0.1)


def test_fit_entropy_law_recovers_exact_parameters():
    H = np.linspace(0.05, 2.0, 12)
    R = -0.3 * np.exp(H) + 0.9
    fit = fit_entropy_law(H, R)
    assert fit["a"] == pytest.approx(0.3)
    assert fit["b"] == pytest.approx(0.9)
    assert fit["ceiling"] == pytest.approx(0.6)
    assert fit["r2"] == pytest.approx(1.0)
    noisy = fit_entropy_law(H, R + np.random.default_rng(0).normal(scale=0.05, size=H.size))
    assert 0 < noisy["r2"] < 1 and noisy["a"] == pytest.approx(0.3, abs=0.1)


def test_fit_entropy_law_degenerate():
    for H, R in [([], []), ([1.0], [0.5]), ([1.0, 1.0, 1.0], [0.1, 0.2, 0.3])]:
        fit = fit_entropy_law(H, R)
        assert all(math.isnan(fit[k]) for k in ("a", "b", "ceiling", "r2"))
    flat = fit_entropy_law([0.1, 0.5, 1.0], [0.4, 0.4, 0.4])
    assert flat["a"] == pytest.approx(0.0) and flat["b"] == pytest.approx(0.4) and math.isnan(flat["r2"])


def test_pareto_front():
    points = [(1, 0.5), (2, 0.7), (2, 0.6), (3, 0.65), (0.5, 0.2), (4, 0.9), (5, 0.9)]
    # cheaper-is-better x, higher-is-better y: 2 and 3 are dominated by 1, 6 by 5
    assert pareto_front(points) == [4, 0, 1, 5]
    # larger x and larger y better: (5, 0.9) dominates everything
    assert pareto_front(points, minimize_x=False) == [6]
    # smaller x and smaller y better: (0.5, 0.2) dominates everything
    assert pareto_front(points, maximize_y=False) == [4]
    assert pareto_front([(1, 1), (1, 1), (2, 0)]) == [0, 1]
    assert pareto_front([(float("nan"), 1.0), (1, 0.5)]) == [1]
    assert pareto_front([]) == []
