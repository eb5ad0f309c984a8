"""Statistics across seeds and runs for `rl compare` (numpy/scipy only, no torch).

Sources: Student t interval and Welch's unequal-variance t-test (Welch 1947); bootstrap hypothesis test on a
difference of means (Efron & Tibshirani 1993, "An Introduction to the Bootstrap", sec. 16.4); the two-sample
permutation test (Fisher 1935; Good 2005, "Permutation, Parametric and Bootstrap Tests of Hypotheses"); the entropy-
performance law R = -a * exp(H) + b (Cui et al. 2025, "The Entropy Mechanism of Reinforcement Learning for
Reasoning Language Models").
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence

import numpy as np
from scipy import stats as _sps

_NAN = float("nan")


def _finite(values: Sequence[float] | np.ndarray) -> np.ndarray:
    arr = np.asarray(values, dtype=float).ravel()
    return arr[np.isfinite(arr)]


def mean_ci(values: Sequence[float] | np.ndarray, confidence: float = 0.95) -> tuple[float, float, float]:
    """(mean, low, high) with the Student t interval mean +- t_{(1+confidence)/2, n-1} * s / sqrt(n).

    Non-finite values are dropped. n = 0 -> (nan, nan, nan); n = 1 -> (mean, nan, nan) since a single seed
    says nothing about spread. Zero spread gives low = high = mean.
    """
    x = _finite(values)
    if x.size == 0:
        return _NAN, _NAN, _NAN
    mean = float(x.mean())
    if x.size == 1:
        return mean, _NAN, _NAN
    half = float(_sps.t.ppf((1 + confidence) / 2, df=x.size - 1) * x.std(ddof=1) / math.sqrt(x.size))
    return mean, mean - half, mean + half


def welch_test(a: Sequence[float] | np.ndarray, b: Sequence[float] | np.ndarray) -> float:
    """Two-sided p-value of Welch's t-test (scipy.stats.ttest_ind, equal_var=False).

    Non-finite values are dropped; NaN when either side has < 2 values. When both sides have zero variance
    (scipy gives NaN) the p-value is 1.0 for equal means and 0.0 otherwise.
    """
    x, y = _finite(a), _finite(b)
    if x.size < 2 or y.size < 2:
        return _NAN
    if x.std() == 0 and y.std() == 0:
        return 1.0 if x.mean() == y.mean() else 0.0
    return float(_sps.ttest_ind(x, y, equal_var=False).pvalue)


def bootstrap_diff_test(
    a: Sequence[float] | np.ndarray, b: Sequence[float] | np.ndarray, n_boot: int = 10_000, seed: int = 0
) -> float:
    """Two-sided bootstrap p-value for H0: mean(a) == mean(b) (Efron & Tibshirani 1993, alg. 16.2 style).

    Both samples are shifted to the pooled mean (imposing H0), resampled independently with replacement, and
    p = (1 + #{|mean(a*) - mean(b*)| >= |mean(a) - mean(b)|}) / (n_boot + 1). Non-finite values are dropped;
    NaN when either side has < 2 values. With fewer than BOOTSTRAP_MIN_N values on a side it returns the exact
    `permutation_test` instead (a handful of seeds has too few distinct resamples for a bootstrap).
    """
    x, y = _finite(a), _finite(b)
    if x.size < 2 or y.size < 2:
        return _NAN
    if min(x.size, y.size) < BOOTSTRAP_MIN_N:
        return permutation_test(x, y)
    observed = abs(x.mean() - y.mean())
    pooled = np.concatenate([x, y]).mean()
    x0, y0 = x - x.mean() + pooled, y - y.mean() + pooled
    rng = np.random.default_rng(seed)
    xb = x0[rng.integers(0, x.size, size=(n_boot, x.size))].mean(axis=1)
    yb = y0[rng.integers(0, y.size, size=(n_boot, y.size))].mean(axis=1)
    # Small tolerance so exact ties (e.g. observed == 0) count as "at least as extreme".
    extreme = np.abs(xb - yb) >= observed - 1e-12 * max(1.0, observed)
    return float((1 + extreme.sum()) / (n_boot + 1))


#: Below this many values on a side a bootstrap test is replaced by the exact permutation test: with 3 seeds a side
#: has at most 3^3 = 27 distinct resamples (10 distinct means), so the bootstrap p-value is coarse and anti-conservative.
BOOTSTRAP_MIN_N = 5
#: The permutation test enumerates every split of the pooled values up to this many; beyond, random permutations.
PERMUTATION_EXACT_LIMIT = 100_000


def permutation_test(
    a: Sequence[float] | np.ndarray, b: Sequence[float] | np.ndarray, n_resamples: int = 10_000, seed: int = 0
) -> float:
    """Two-sided p-value of the two-sample permutation test on the difference of means (Fisher 1935).

    Under H0 (both samples from one distribution) every split of the pooled values into groups of the observed sizes
    is equally likely; p = #{splits with |mean difference| >= observed} / #splits. Exact (every split enumerated)
    when C(n_a + n_b, n_a) <= PERMUTATION_EXACT_LIMIT, which covers any seed count a study runs (3 vs 3: 20
    splits, so the smallest possible p is 0.1); else `n_resamples` random splits with p = (1 + hits) / (1 +
    n_resamples). Non-finite values are dropped; NaN when either side has < 2 values.

    >>> permutation_test([1, 2, 3], [4, 5, 6])
    0.1
    """
    x, y = _finite(a), _finite(b)
    if x.size < 2 or y.size < 2:
        return _NAN
    pooled = np.concatenate([x, y])
    total, nx = pooled.sum(), x.size
    observed = abs(x.mean() - y.mean())
    tol = 1e-12 * max(1.0, observed)  # exact ties (e.g. the observed split itself) count as "at least as extreme"
    if math.comb(pooled.size, nx) <= PERMUTATION_EXACT_LIMIT:
        idx = np.array(list(itertools.combinations(range(pooled.size), nx)), dtype=np.int64)
        sx = pooled[idx].sum(axis=1)
        diff = np.abs(sx / nx - (total - sx) / y.size)
        return float((diff >= observed - tol).mean())
    rng = np.random.default_rng(seed)
    perm = np.argsort(rng.random((n_resamples, pooled.size)), axis=1)[:, :nx]
    sx = pooled[perm].sum(axis=1)
    diff = np.abs(sx / nx - (total - sx) / y.size)
    return float((1 + (diff >= observed - tol).sum()) / (1 + n_resamples))


def fit_entropy_law(H: Sequence[float] | np.ndarray, R: Sequence[float] | np.ndarray) -> dict[str, float]:
    """Least-squares fit of R = -a * exp(H) + b (Cui et al. 2025) as a linear regression of R on exp(H).

    Returns dict(a, b, ceiling, r2, n): ceiling = b - a is the predicted R at H = 0 (entropy exhausted).
    Pairs with a non-finite H or R are dropped. Fewer than 2 points or constant H -> a, b, ceiling, r2 NaN;
    r2 is NaN when R is constant.
    """
    h = np.asarray(H, dtype=float).ravel()
    r = np.asarray(R, dtype=float).ravel()
    if h.shape != r.shape:
        raise ValueError(f"H ({h.size}) and R ({r.size}) differ in length")
    keep = np.isfinite(h) & np.isfinite(r)
    h, r = h[keep], r[keep]
    out = {"a": _NAN, "b": _NAN, "ceiling": _NAN, "r2": _NAN, "n": int(h.size)}
    if h.size < 2:
        return out
    x = np.exp(h)
    x_c = x - x.mean()
    sxx = float((x_c**2).sum())
    if not np.isfinite(sxx) or sxx <= 1e-12 * max(1.0, float((x**2).sum())):
        return out
    slope = float((x_c * (r - r.mean())).sum() / sxx)
    b = float(r.mean() - slope * x.mean())
    a = -slope
    ss_res = float(((r - (slope * x + b)) ** 2).sum())
    ss_tot = float(((r - r.mean()) ** 2).sum())
    out.update(a=a, b=b, ceiling=b - a, r2=1.0 - ss_res / ss_tot if r.max() > r.min() and ss_tot > 0 else _NAN)
    return out


def non_dominated(points: Sequence[Sequence[float]] | np.ndarray, maximize: Sequence[bool]) -> list[int]:
    """Indices (ascending) of the points on the Pareto front, in any number of dimensions.

    Point i is dominated if some j is at least as good on every axis and strictly better on one (better = larger
    where `maximize[axis]`, smaller elsewhere). Exact duplicates do not dominate each other, so both stay. Points
    with a non-finite coordinate are never on the front.
    """
    pts = np.asarray(points, dtype=float).reshape(-1, len(maximize))
    s = pts * np.where(np.asarray(maximize, dtype=bool), -1.0, 1.0)  # transform so that smaller is better
    ok = np.isfinite(s).all(axis=1)
    others = s[ok]
    front = []
    for i in np.flatnonzero(ok):
        dominated = ((others <= s[i]).all(axis=1) & (others < s[i]).any(axis=1)).any()
        if not dominated:
            front.append(int(i))
    return front


def pareto_front(
    points: Sequence[tuple[float, float]], minimize_x: bool = True, maximize_y: bool = True
) -> list[int]:
    """Indices of the non-dominated points (`non_dominated`) of 2-D points, sorted by x ascending (ties by y
    ascending, then index). x better = smaller when minimize_x, y better = larger when maximize_y."""
    pts = np.asarray(points, dtype=float).reshape(-1, 2)
    front = non_dominated(pts, [not minimize_x, maximize_y])
    return sorted(front, key=lambda i: (pts[i, 0], pts[i, 1], i))
