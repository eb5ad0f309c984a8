"""Statistics across seeds and runs for `rl compare` (numpy/scipy only, no torch).

Sources: Student t interval and Welch's unequal-variance t-test (Welch 1947); bootstrap hypothesis test on a
difference of means (Efron & Tibshirani 1993, "An Introduction to the Bootstrap", sec. 16.4); the two-sample
permutation test (Fisher 1935; Good 2005, "Permutation, Parametric and Bootstrap Tests of Hypotheses"); the entropy-
performance law R = -a * exp(H) + b (Cui et al. 2025, "The Entropy Mechanism of Reinforcement Learning for
Reasoning Language Models"); the paired t-test (Student 1908); Holm's step-down correction for multiple
comparisons (Holm 1979, "A Simple Sequentially Rejective Multiple Test Procedure"); power of the t-test from the
noncentral t distribution (Cohen 1988, "Statistical Power Analysis for the Behavioral Sciences").
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


def std(values: Sequence[float] | np.ndarray) -> float:
    """The sample standard deviation (ddof 1) of the finite values; NaN with fewer than 2."""
    x = _finite(values)
    return float(x.std(ddof=1)) if x.size >= 2 else _NAN


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


# ------------------------------------------------------------------ paired test, multiple comparisons, power

#: The multiple-comparison corrections of `adjust_pvalues` (and `rl compare --correction`); the first is the default.
CORRECTIONS = ("holm", "bonferroni", "none")
#: The power `min_detectable_difference` and `seeds_to_resolve` aim for (Cohen 1988's conventional 0.8).
POWER = 0.8
#: `seeds_to_resolve` gives up beyond this many seeds per group.
MAX_SEEDS = 10_000


def paired_t_test(a: Sequence[float] | np.ndarray, b: Sequence[float] | np.ndarray) -> float:
    """Two-sided p-value of the paired t-test on a[i] - b[i] (scipy.stats.ttest_rel; Student 1908).

    `a` and `b` are aligned (pair i = one seed in both groups); a pair with a non-finite side is dropped. NaN with
    fewer than 2 pairs. When every difference is the same (scipy gives NaN) the p-value is 1.0 for a zero
    difference and 0.0 otherwise.
    """
    x, y = np.asarray(a, dtype=float).ravel(), np.asarray(b, dtype=float).ravel()
    if x.shape != y.shape:
        raise ValueError(f"paired samples differ in length ({x.size} vs {y.size})")
    keep = np.isfinite(x) & np.isfinite(y)
    x, y = x[keep], y[keep]
    if x.size < 2:
        return _NAN
    d = x - y
    if d.std() == 0:
        return 1.0 if d.mean() == 0 else 0.0
    return float(_sps.ttest_rel(x, y).pvalue)


def adjust_pvalues(pvalues: Sequence[float] | np.ndarray, method: str = "holm") -> np.ndarray:
    """p-values adjusted for testing them as one family, in the input order; NaN entries (untestable) stay NaN and
    do not count towards the family size m.

    holm: Holm's step-down (Holm 1979): with the m p-values sorted ascending, p_(i) -> max_{j<=i} min(1, (m-j+1)
    p_(j)); controls the family-wise error rate like Bonferroni, never less powerful. bonferroni: min(1, m p).
    none: unchanged. Rejecting where the adjusted p < alpha is the method's test at family-wise level alpha.
    """
    if method not in CORRECTIONS:
        raise ValueError(f"unknown correction {method!r}; choose {', '.join(CORRECTIONS)}")
    p = np.asarray(pvalues, dtype=float).ravel()
    out = p.copy()
    ok = np.flatnonzero(np.isfinite(p))
    m = ok.size
    if method == "none" or m == 0:
        return out
    if method == "bonferroni":
        out[ok] = np.minimum(1.0, m * p[ok])
        return out
    order = ok[np.argsort(p[ok], kind="stable")]
    stepped = np.minimum(1.0, (m - np.arange(m)) * p[order])
    out[order] = np.maximum.accumulate(stepped)
    return out


def family_alpha(alpha: float, m: int, method: str) -> float:
    """The per-test level a difference must reach to be significant whatever the other tests give: alpha / m for
    holm (its strictest, first step) and bonferroni, alpha for none."""
    if method not in CORRECTIONS:
        raise ValueError(f"unknown correction {method!r}; choose {', '.join(CORRECTIONS)}")
    return alpha if method == "none" or m <= 1 else alpha / m


def t_test_power(delta: float, se: float, df: float, alpha: float) -> float:
    """Power of a two-sided t-test at level alpha to detect a true difference delta when the estimate's standard
    error is se with df degrees of freedom: P(|T| > t_{1-alpha/2, df}) for T ~ noncentral t(df, delta / se)."""
    crit = _sps.t.ppf(1 - alpha / 2, df)
    nc = abs(delta) / se
    upper, lower = _sps.nct.sf(crit, df, nc), _sps.nct.cdf(-crit, df, nc)
    # scipy's nct returns NaN for a far tail (large nc); the normal approximation of that tail is ~0 or ~1 there
    upper = upper if math.isfinite(upper) else _sps.norm.sf(crit - nc)
    lower = lower if math.isfinite(lower) else _sps.norm.cdf(-crit - nc)
    return float(min(1.0, upper + lower))


def _min_noncentrality(df: float, alpha: float, power: float) -> float:
    """The noncentrality lambda at which the two-sided t-test (df, alpha) has the given power."""
    from scipy.optimize import brentq

    def gap(nc: float) -> float:
        return t_test_power(nc, 1.0, df, alpha) - power

    hi = _sps.t.ppf(1 - alpha / 2, df) + _sps.norm.ppf(power) + 1.0
    while gap(hi) < 0:
        hi *= 2
    return float(brentq(gap, 0.0, hi, xtol=1e-10))


def _se_df(sd_a: float, n_a: int, sd_b: float | None = None, n_b: int | None = None) -> tuple[float, float]:
    """(standard error, df) of a mean difference: paired (sd of the differences over n_a pairs; sd_b None) or
    Welch (two samples; Welch-Satterthwaite df)."""
    if sd_b is None:
        return sd_a / math.sqrt(n_a), float(n_a - 1)
    va, vb = sd_a**2 / n_a, sd_b**2 / n_b
    se = math.sqrt(va + vb)
    if se == 0:
        return 0.0, float(n_a + n_b - 2)
    return se, (va + vb) ** 2 / (va**2 / (n_a - 1) + vb**2 / (n_b - 1))


def min_detectable_difference(
    a: Sequence[float] | np.ndarray, b: Sequence[float] | np.ndarray | None = None, alpha: float = 0.05,
    power: float = POWER,
) -> float:
    """The smallest true difference of means the seed count resolves: the difference at which the two-sided t-test
    at level alpha has the given power, with the observed spread taken as the true one.

    b None: `a` are paired differences (paired t-test, df n-1, se = sd(a)/sqrt(n)); else two samples (Welch's
    t-test, se = sqrt(s_a^2/n_a + s_b^2/n_b), Welch-Satterthwaite df). MDE = lambda * se, where lambda solves
    P(|T| > t_{1-alpha/2,df}) = power for T ~ noncentral t(df, lambda) (scipy.stats.nct). NaN with fewer than 2
    values on a side; 0 with zero spread.
    """
    x = _finite(a)
    if x.size < 2:
        return _NAN
    if b is None:
        se, df = _se_df(float(x.std(ddof=1)), x.size)
    else:
        y = _finite(b)
        if y.size < 2:
            return _NAN
        se, df = _se_df(float(x.std(ddof=1)), x.size, float(y.std(ddof=1)), y.size)
    if se == 0:
        return 0.0
    return _min_noncentrality(df, alpha, power) * se


def seeds_to_resolve(
    target: float, sd_a: float, sd_b: float | None = None, alpha: float = 0.05, power: float = POWER
) -> int | None:
    """The fewest seeds per group (>= 2) at which a true difference `target` is detected with the given power by
    the two-sided t-test at level alpha, taking the spreads as known: paired (sd_b None; sd_a = sd of the per-seed
    differences) or Welch with n seeds in both groups (sd_a, sd_b: the groups' per-seed sds). None beyond MAX_SEEDS
    or when a spread is not finite."""
    if not (math.isfinite(target) and target != 0 and math.isfinite(sd_a)
            and (sd_b is None or math.isfinite(sd_b))):
        return None

    def enough(n: int) -> bool:
        se, df = _se_df(sd_a, n) if sd_b is None else _se_df(sd_a, n, sd_b, n)
        return se == 0 or t_test_power(target, se, df, alpha) >= power

    if enough(2):
        return 2
    lo, hi = 2, 4  # enough(lo) is False; double hi until enough(hi), then bisect (power grows with n)
    while not enough(hi):
        if hi >= MAX_SEEDS:
            return None
        lo, hi = hi, min(2 * hi, MAX_SEEDS)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if enough(mid) else (mid, hi)
    return hi
